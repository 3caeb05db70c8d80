//! RTP header rewriting for relayed streams: our own SSRC, a continuous sequence and
//! timestamp, whatever the source does (SSRC change, restart, early media → answer).
//!
//! Sans-IO: [`RtpRewriter::rewrite`] takes the arrival time as an argument and never
//! reads the clock. Within one source "segment" (same SSRC, no restart) the output is
//! the input shifted by fixed offsets, so loss and reordering pass through unchanged.
//! When a new segment starts, the offsets are recomputed so that the output sequence
//! goes on at the next number and the timestamp advances by the wall-clock time that
//! passed, rounded to whole packet durations (at least one).

use std::time::Instant;

/// A sequence jump larger than this (forward) starts a new segment (RFC 3550 A.1).
const MAX_DROPOUT: u16 = 3000;
/// A sequence jump larger than this backwards starts a new segment (RFC 3550 A.1).
const MAX_MISORDER: u16 = 100;
/// Timestamp drift from wall-clock time, in seconds, beyond which the source restarted.
const MAX_TS_DRIFT_SECS: u32 = 5;

/// The header fields a rewrite produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Our SSRC for this direction.
    pub ssrc: u32,
    /// The continuous output sequence number.
    pub sequence_number: u16,
    /// The continuous output timestamp.
    pub timestamp: u32,
    /// Set on the first packet of a new segment (a talk spurt start for the receiver).
    pub marker: bool,
}

/// The mapping of the current source segment onto our output stream.
#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Source SSRC of the segment.
    src_ssrc: u32,
    /// Added (wrapping) to the source sequence number.
    seq_offset: u16,
    /// Added (wrapping) to the source timestamp.
    ts_offset: u32,
    /// Highest source sequence number seen in this segment.
    max_src_seq: u16,
    /// Source timestamp of the packet with `max_src_seq`.
    max_src_ts: u32,
    /// Arrival time of the packet with `max_src_seq`.
    max_arrival: Instant,
}

/// Rewrites SSRC, sequence number and timestamp of one relayed direction.
#[derive(Debug, Clone)]
pub struct RtpRewriter {
    /// The fixed SSRC this direction sends with.
    ssrc: u32,
    /// RTP clock rate of the output stream, to turn elapsed time into timestamp units.
    clock_rate: u32,
    /// Timestamp units of one packet; the minimum advance across a segment change.
    frame_ticks: u32,
    /// Output sequence number for the first packet ever (random in production).
    initial_seq: u16,
    /// Output timestamp for the first packet ever (random in production).
    initial_ts: u32,
    /// The current segment, `None` before the first packet.
    segment: Option<Segment>,
    /// Number of segments started after the first (SSRC changes and restarts).
    resyncs: u64,
    /// The next packet starts a new segment whatever it looks like (the stream was
    /// held back, e.g. on hold).
    restart_next: bool,
}

impl RtpRewriter {
    /// A rewriter sending as `ssrc`, starting at `initial_seq`/`initial_ts`, for a stream
    /// at `clock_rate` Hz with packets of `frame_ticks` timestamp units (160 for 20 ms G.711).
    pub fn new(
        ssrc: u32,
        initial_seq: u16,
        initial_ts: u32,
        clock_rate: u32,
        frame_ticks: u32,
    ) -> Self {
        RtpRewriter {
            ssrc,
            clock_rate,
            frame_ticks,
            initial_seq,
            initial_ts,
            segment: None,
            resyncs: 0,
            restart_next: false,
        }
    }

    /// A rewriter with a random SSRC, sequence and timestamp start (RFC 3550 §5.1).
    pub fn random(clock_rate: u32, frame_ticks: u32) -> Self {
        Self::new(
            rand::random(),
            rand::random(),
            rand::random(),
            clock_rate,
            frame_ticks,
        )
    }

    /// The SSRC every rewritten packet carries.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// How many times the source changed SSRC or restarted after the first packet.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Makes the next packet start a new segment (continuous sequence, timestamp
    /// advanced by the time that passed, marker set), as after a source change: the
    /// packets in between were held back on purpose, not lost.
    pub fn restart_next(&mut self) {
        self.restart_next = self.segment.is_some();
    }

    /// Changes the output clock and packet duration (the output codec changed).
    pub fn set_clock(&mut self, clock_rate: u32, frame_ticks: u32) {
        self.clock_rate = clock_rate;
        self.frame_ticks = frame_ticks;
    }

    /// Allocates the next output sequence number for a packet we generate ourselves (an
    /// RFC 4733 event) and the output timestamp that corresponds to `now`. Later source
    /// packets are shifted by one so the output sequence stays gap-free.
    pub fn insert(&mut self, now: Instant) -> Rewritten {
        let clock_rate = self.clock_rate;
        let Some(seg) = self.segment.as_mut() else {
            let out = Rewritten {
                ssrc: self.ssrc,
                sequence_number: self.initial_seq,
                timestamp: self.initial_ts,
                marker: false,
            };
            self.initial_seq = self.initial_seq.wrapping_add(1);
            return out;
        };
        let elapsed = now.saturating_duration_since(seg.max_arrival);
        let ticks = (elapsed.as_micros() * u128::from(clock_rate) / 1_000_000)
            .min(u128::from(u32::MAX / 2)) as u32;
        seg.seq_offset = seg.seq_offset.wrapping_add(1);
        Rewritten {
            ssrc: self.ssrc,
            sequence_number: seg.max_src_seq.wrapping_add(seg.seq_offset),
            timestamp: seg
                .max_src_ts
                .wrapping_add(seg.ts_offset)
                .wrapping_add(ticks),
            marker: false,
        }
    }

    /// Maps one packet from the source (`src_ssrc`, `src_seq`, `src_ts`) that arrived at `now`.
    pub fn rewrite(&mut self, now: Instant, src_ssrc: u32, src_seq: u16, src_ts: u32) -> Rewritten {
        let Some(seg) = self.segment.as_mut() else {
            self.start_segment(
                now,
                src_ssrc,
                src_seq,
                src_ts,
                self.initial_seq,
                self.initial_ts,
            );
            return self.output(src_seq, src_ts, true);
        };

        let forced = std::mem::take(&mut self.restart_next);
        if !forced
            && seg.src_ssrc == src_ssrc
            && !Self::is_restart(seg, self.clock_rate, now, src_seq, src_ts)
        {
            let ahead = src_seq.wrapping_sub(seg.max_src_seq);
            if ahead != 0 && ahead < 0x8000 {
                seg.max_src_seq = src_seq;
                seg.max_src_ts = src_ts;
                seg.max_arrival = now;
            }
            return self.output(src_seq, src_ts, false);
        }

        // New segment: continue right after the highest output so far.
        let last_out_seq = seg.max_src_seq.wrapping_add(seg.seq_offset);
        let last_out_ts = seg.max_src_ts.wrapping_add(seg.ts_offset);
        let elapsed = now.saturating_duration_since(seg.max_arrival);
        let elapsed_ticks = (elapsed.as_micros() * u128::from(self.clock_rate) / 1_000_000)
            .min(u128::from(u32::MAX / 2)) as u32;
        // Whole frames, at least one, so the receiver's timestamp grid is kept.
        let frames = ((elapsed_ticks + self.frame_ticks / 2) / self.frame_ticks.max(1)).max(1);
        let advance = frames.saturating_mul(self.frame_ticks.max(1));
        self.resyncs += 1;
        self.start_segment(
            now,
            src_ssrc,
            src_seq,
            src_ts,
            last_out_seq.wrapping_add(1),
            last_out_ts.wrapping_add(advance),
        );
        self.output(src_seq, src_ts, true)
    }

    /// Whether a packet of the same SSRC is so far off that the source restarted.
    fn is_restart(seg: &Segment, clock_rate: u32, now: Instant, src_seq: u16, src_ts: u32) -> bool {
        let delta = src_seq.wrapping_sub(seg.max_src_seq);
        if delta > MAX_DROPOUT && delta < u16::MAX - MAX_MISORDER + 1 {
            return true;
        }
        // Timestamp moved far from what the elapsed wall-clock time explains.
        let elapsed = now.saturating_duration_since(seg.max_arrival);
        let expected = (elapsed.as_micros() * u128::from(clock_rate) / 1_000_000) as i64;
        let actual = i64::from(src_ts.wrapping_sub(seg.max_src_ts) as i32);
        (actual - expected).abs() > i64::from(MAX_TS_DRIFT_SECS) * i64::from(clock_rate)
    }

    /// Starts a segment mapping (`src_seq`, `src_ts`) to (`out_seq`, `out_ts`).
    fn start_segment(
        &mut self,
        now: Instant,
        src_ssrc: u32,
        src_seq: u16,
        src_ts: u32,
        out_seq: u16,
        out_ts: u32,
    ) {
        self.segment = Some(Segment {
            src_ssrc,
            seq_offset: out_seq.wrapping_sub(src_seq),
            ts_offset: out_ts.wrapping_sub(src_ts),
            max_src_seq: src_seq,
            max_src_ts: src_ts,
            max_arrival: now,
        });
    }

    /// Applies the current segment's offsets.
    fn output(&self, src_seq: u16, src_ts: u32, marker: bool) -> Rewritten {
        let (seq_offset, ts_offset) = self
            .segment
            .map(|s| (s.seq_offset, s.ts_offset))
            .unwrap_or((0, 0));
        Rewritten {
            ssrc: self.ssrc,
            sequence_number: src_seq.wrapping_add(seq_offset),
            timestamp: src_ts.wrapping_add(ts_offset),
            marker,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SSRC: u32 = 0xCAFE_F00D;

    fn rw() -> RtpRewriter {
        RtpRewriter::new(SSRC, 1000, 50_000, 8000, 160)
    }

    /// Feeds `n` 20 ms packets of source (`ssrc`, seq from `seq0`, ts from `ts0`), one every
    /// 20 ms from `t0`; returns the outputs and the time after the last one.
    fn feed(
        r: &mut RtpRewriter,
        t0: Instant,
        ssrc: u32,
        seq0: u16,
        ts0: u32,
        n: u16,
    ) -> (Vec<Rewritten>, Instant) {
        let mut out = Vec::new();
        let mut t = t0;
        for i in 0..n {
            out.push(r.rewrite(
                t,
                ssrc,
                seq0.wrapping_add(i),
                ts0.wrapping_add(u32::from(i) * 160),
            ));
            t += Duration::from_millis(20);
        }
        (out, t)
    }

    fn assert_continuous(out: &[Rewritten]) {
        for w in out.windows(2) {
            assert_eq!(
                w[1].sequence_number,
                w[0].sequence_number.wrapping_add(1),
                "{w:?}"
            );
            let dts = w[1].timestamp.wrapping_sub(w[0].timestamp);
            assert!((160..=480).contains(&dts), "timestamp step {dts}: {w:?}");
            assert_eq!(w[1].ssrc, SSRC);
        }
    }

    #[test]
    fn first_packet_maps_to_initial_values_with_marker() {
        let mut r = rw();
        let out = r.rewrite(Instant::now(), 42, 7, 999);
        assert_eq!(
            out,
            Rewritten {
                ssrc: SSRC,
                sequence_number: 1000,
                timestamp: 50_000,
                marker: true
            }
        );
    }

    #[test]
    fn steady_stream_is_shifted() {
        let mut r = rw();
        let (out, _) = feed(&mut r, Instant::now(), 42, 10, 1234, 50);
        assert_continuous(&out);
        assert!(out.iter().skip(1).all(|o| !o.marker));
        assert_eq!(out[49].sequence_number, 1049);
        assert_eq!(out[49].timestamp, 50_000 + 49 * 160);
        assert_eq!(r.resyncs(), 0);
    }

    #[test]
    fn ssrc_change_keeps_sequence_and_timestamp_continuous() {
        let mut r = rw();
        let (mut out, t) = feed(&mut r, Instant::now(), 42, 10, 1234, 20);
        let (out2, _) = feed(&mut r, t, 43, 60_000, 3_000_000_000, 20);
        assert!(out2[0].marker);
        out.extend(out2);
        assert_continuous(&out);
        // Exactly one frame later in time -> exactly one frame of timestamp.
        assert_eq!(out[20].timestamp.wrapping_sub(out[19].timestamp), 160);
        assert_eq!(r.resyncs(), 1);
    }

    #[test]
    fn timestamp_advance_follows_wall_clock_across_a_gap() {
        let mut r = rw();
        let (out, t) = feed(&mut r, Instant::now(), 42, 10, 1234, 5);
        // New source after a 1 s silence.
        let later = t + Duration::from_millis(980);
        let o = r.rewrite(later, 77, 5, 5);
        assert_eq!(o.sequence_number, out[4].sequence_number.wrapping_add(1));
        assert_eq!(o.timestamp.wrapping_sub(out[4].timestamp), 8000);
    }

    #[test]
    fn advance_is_rounded_to_whole_frames() {
        let mut r = rw();
        let t = Instant::now();
        let a = r.rewrite(t, 1, 100, 100);
        let b = r.rewrite(t + Duration::from_millis(22), 2, 9, 9);
        assert_eq!(b.timestamp.wrapping_sub(a.timestamp), 160);
        let c = r.rewrite(t + Duration::from_millis(22 + 51), 3, 9, 9);
        assert_eq!(c.timestamp.wrapping_sub(b.timestamp), 480);
    }

    #[test]
    fn burst_after_change_advances_at_least_one_frame() {
        let mut r = rw();
        let t = Instant::now();
        let a = r.rewrite(t, 1, 100, 100);
        let b = r.rewrite(t, 2, 9, 9);
        assert_eq!(b.sequence_number, a.sequence_number.wrapping_add(1));
        assert_eq!(b.timestamp.wrapping_sub(a.timestamp), 160);
    }

    #[test]
    fn sequence_wraps_on_input_and_output() {
        let mut r = RtpRewriter::new(SSRC, 65_530, u32::MAX - 400, 8000, 160);
        let (out, _) = feed(&mut r, Instant::now(), 42, 65_520, u32::MAX - 800, 40);
        assert_continuous(&out);
        assert_eq!(out[39].sequence_number, 65_530u16.wrapping_add(39));
    }

    #[test]
    fn same_ssrc_restart_is_detected_by_sequence_jump() {
        let mut r = rw();
        let (mut out, t) = feed(&mut r, Instant::now(), 42, 10, 1234, 10);
        // Same SSRC, new random base (e.g. a PBX restarting the stream on re-INVITE).
        let (out2, _) = feed(&mut r, t, 42, 40_000, 1234 + 10 * 160, 10);
        out.extend(out2);
        assert_continuous(&out);
        assert_eq!(r.resyncs(), 1);
    }

    #[test]
    fn same_ssrc_restart_is_detected_by_timestamp_jump() {
        let mut r = rw();
        let (mut out, t) = feed(&mut r, Instant::now(), 42, 10, 1234, 10);
        let (out2, _) = feed(&mut r, t, 42, 20, 2_000_000_000, 10);
        out.extend(out2);
        assert_continuous(&out);
        assert_eq!(r.resyncs(), 1);
    }

    #[test]
    fn loss_and_reordering_pass_through() {
        let mut r = rw();
        let t = Instant::now();
        let ms = Duration::from_millis(20);
        let a = r.rewrite(t, 42, 10, 0);
        // 11 lost, 13 before 12.
        let c = r.rewrite(t + ms * 3, 42, 13, 480);
        let b = r.rewrite(t + ms * 4, 42, 12, 320);
        assert_eq!(c.sequence_number, a.sequence_number + 3);
        assert_eq!(b.sequence_number, a.sequence_number + 2);
        assert_eq!(b.timestamp, a.timestamp + 320);
        assert!(!b.marker && !c.marker);
        assert_eq!(r.resyncs(), 0);
        // The late packet did not move the segment's high-water mark back.
        let d = r.rewrite(t + ms * 5, 42, 14, 640);
        assert_eq!(d.sequence_number, a.sequence_number + 4);
    }

    #[test]
    fn inserted_packets_take_the_next_sequence_number() {
        let mut r = rw();
        let t = Instant::now();
        let ms = Duration::from_millis(20);
        let a = r.rewrite(t, 42, 10, 0);
        let e = r.insert(t + ms / 2);
        assert_eq!(e.sequence_number, a.sequence_number + 1);
        assert_eq!(e.timestamp, a.timestamp + 80);
        let b = r.rewrite(t + ms, 42, 11, 160);
        assert_eq!(b.sequence_number, a.sequence_number + 2);
        assert_eq!(b.timestamp, a.timestamp + 160);
        assert_eq!(r.resyncs(), 0);
        let mut fresh = rw();
        assert_eq!(fresh.insert(t).sequence_number, 1000);
        assert_eq!(fresh.rewrite(t, 1, 5, 5).sequence_number, 1001);
    }

    #[test]
    fn a_forced_restart_continues_the_sequence_with_a_marker() {
        let mut r = rw();
        let (out, t) = feed(&mut r, Instant::now(), 42, 10, 0, 5);
        // 50 packets held back (hold), then the same source goes on.
        r.restart_next();
        let later = t + Duration::from_secs(1);
        let o = r.rewrite(later, 42, 15 + 50, (5 + 50) * 160);
        assert!(o.marker);
        assert_eq!(o.sequence_number, out[4].sequence_number.wrapping_add(1));
        assert_eq!(o.timestamp.wrapping_sub(out[4].timestamp), 160 + 8000);
        let p = r.rewrite(later + Duration::from_millis(20), 42, 66, 56 * 160);
        assert!(!p.marker);
        assert_eq!(p.sequence_number, o.sequence_number.wrapping_add(1));
    }

    #[test]
    fn silence_gap_with_consistent_timestamp_is_not_a_restart() {
        let mut r = rw();
        let (out, t) = feed(&mut r, Instant::now(), 42, 10, 0, 5);
        // DTX: 3 s without packets, timestamp advanced accordingly, sequence continuous.
        let o = r.rewrite(t + Duration::from_secs(3), 42, 15, 5 * 160 + 3 * 8000);
        assert_eq!(r.resyncs(), 0);
        assert_eq!(o.timestamp.wrapping_sub(out[4].timestamp), 160 + 3 * 8000);
    }
}
