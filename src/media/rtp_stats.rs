//! Reception statistics of one incoming RTP stream: extended highest sequence number,
//! expected and received packets, cumulative and per-interval loss, and the RFC 3550
//! interarrival jitter (A.1, A.3, A.8).
//!
//! Sans-IO and a handful of integer operations per packet; `on_packet(now, ..)` never
//! reads the clock.

use std::time::{Duration, Instant};

/// A forward jump beyond this (or a new SSRC) starts counting afresh (RFC 3550 A.1).
const MAX_DROPOUT: u16 = 3000;
/// A backward jump beyond this starts counting afresh (RFC 3550 A.1).
const MAX_MISORDER: u16 = 100;

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReceiveSnapshot {
    /// Packets expected (from sequence numbers), all sources together.
    pub expected: u64,
    /// Packets received (duplicates included, as RFC 3550 counts them).
    pub received: u64,
    /// Interarrival jitter.
    pub jitter: Duration,
    /// SSRC of the current source.
    pub ssrc: Option<u32>,
}

impl ReceiveSnapshot {
    /// Packets lost (never negative).
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }

    /// Loss ratio (0..=1) between `earlier` and `self`.
    pub fn loss_since(&self, earlier: &ReceiveSnapshot) -> f64 {
        let expected = self.expected.saturating_sub(earlier.expected);
        let received = self.received.saturating_sub(earlier.received);
        if expected == 0 {
            return 0.0;
        }
        expected.saturating_sub(received) as f64 / expected as f64
    }
}

/// What an RTCP reception report block says about a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// SSRC of the stream reported on.
    pub ssrc: u32,
    /// Loss since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative loss (24 bits).
    pub total_lost: u32,
    /// Extended highest sequence number received.
    pub ext_max_seq: u32,
    /// Interarrival jitter, timestamp units.
    pub jitter: u32,
}

/// Reception statistics of one stream.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    /// RTP clock rate of the stream.
    clock_rate: u32,
    /// Time origin for arrival timestamps.
    epoch: Option<Instant>,
    /// SSRC of the current source.
    ssrc: Option<u32>,
    /// Highest sequence number seen in the current source.
    max_seq: u16,
    /// Sequence number wraps in the current source.
    cycles: u32,
    /// First sequence number of the current source.
    base_seq: u32,
    /// Packets received from the current source.
    received: u64,
    /// Expected and received of earlier sources (after restarts).
    earlier: (u64, u64),
    /// Expected at the previous report block (for fraction lost).
    expected_prior: u64,
    /// Received at the previous report block.
    received_prior: u64,
    /// Last audio packet's (arrival in ticks, RTP timestamp) for the jitter.
    last_transit: Option<(i64, u32)>,
    /// Jitter in timestamp units, ×16 (RFC 3550 A.8 integer form).
    jitter_x16: u64,
}

impl ReceiveStats {
    /// Statistics for a stream at `clock_rate` Hz.
    pub fn new(clock_rate: u32) -> Self {
        ReceiveStats {
            clock_rate: clock_rate.max(1),
            epoch: None,
            ssrc: None,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            received: 0,
            earlier: (0, 0),
            expected_prior: 0,
            received_prior: 0,
            last_transit: None,
            jitter_x16: 0,
        }
    }

    /// Changes the clock rate (the peer switched codecs); the jitter restarts.
    pub fn set_clock_rate(&mut self, clock_rate: u32) {
        if clock_rate.max(1) != self.clock_rate {
            self.clock_rate = clock_rate.max(1);
            self.last_transit = None;
            self.jitter_x16 = 0;
        }
    }

    /// Extended highest sequence number of the current source.
    fn ext_max(&self) -> u32 {
        (self.cycles << 16) | u32::from(self.max_seq)
    }

    /// Packets expected from the current source.
    fn expected_current(&self) -> u64 {
        if self.ssrc.is_none() {
            return 0;
        }
        u64::from(self.ext_max().wrapping_sub(self.base_seq)) + 1
    }

    /// Starts counting a new source at `seq`.
    fn restart(&mut self, ssrc: u32, seq: u16) {
        let expected = self.expected_current();
        self.earlier = (self.earlier.0 + expected, self.earlier.1 + self.received);
        self.ssrc = Some(ssrc);
        self.max_seq = seq;
        self.cycles = 0;
        self.base_seq = u32::from(seq);
        self.received = 0;
        self.last_transit = None;
    }

    /// Records a packet that arrived at `now`; `audio` packets feed the jitter.
    pub fn on_packet(&mut self, now: Instant, ssrc: u32, seq: u16, ts: u32, audio: bool) {
        if self.ssrc != Some(ssrc) {
            self.restart(ssrc, seq);
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            if delta != 0 && delta < MAX_DROPOUT {
                if seq < self.max_seq {
                    self.cycles += 1;
                }
                self.max_seq = seq;
            } else if delta != 0 && delta <= u16::MAX - MAX_MISORDER {
                // A big jump: the source restarted with the same SSRC.
                self.restart(ssrc, seq);
            }
        }
        self.received += 1;
        if !audio {
            return;
        }
        let epoch = *self.epoch.get_or_insert(now);
        let arrival = (now.saturating_duration_since(epoch).as_micros()
            * u128::from(self.clock_rate)
            / 1_000_000) as i64;
        if let Some((last_arrival, last_ts)) = self.last_transit {
            let d = (arrival - last_arrival) - i64::from(ts.wrapping_sub(last_ts) as i32);
            let d = d.unsigned_abs();
            // J += (|D| - J) / 16, kept ×16 as in RFC 3550 A.8.
            self.jitter_x16 = self.jitter_x16 + d - ((self.jitter_x16 + 8) >> 4);
        }
        self.last_transit = Some((arrival, ts));
    }

    /// Jitter in timestamp units.
    fn jitter_ticks(&self) -> u32 {
        (self.jitter_x16 / 16).min(u64::from(u32::MAX)) as u32
    }

    /// The counters now.
    pub fn snapshot(&self) -> ReceiveSnapshot {
        ReceiveSnapshot {
            expected: self.earlier.0 + self.expected_current(),
            received: self.earlier.1 + self.received,
            jitter: Duration::from_micros(
                u64::from(self.jitter_ticks()) * 1_000_000 / u64::from(self.clock_rate),
            ),
            ssrc: self.ssrc,
        }
    }

    /// A reception report block, advancing the interval for the fraction lost (`None`
    /// before the first packet).
    pub fn report_block(&mut self) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let snap = self.snapshot();
        let expected_interval = snap.expected.saturating_sub(self.expected_prior);
        let received_interval = snap.received.saturating_sub(self.received_prior);
        self.expected_prior = snap.expected;
        self.received_prior = snap.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            total_lost: snap.lost().min(0x7F_FFFF) as u32,
            ext_max_seq: self.ext_max(),
            jitter: self.jitter_ticks(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn counts_loss_across_sequence_wrap() {
        let mut s = ReceiveStats::new(8000);
        let t0 = Instant::now();
        for i in 0..100u16 {
            if i % 10 == 3 {
                continue; // 10 % loss
            }
            let seq = 65_500u16.wrapping_add(i);
            s.on_packet(
                t0 + 20 * MS * u32::from(i),
                1,
                seq,
                u32::from(i) * 160,
                true,
            );
        }
        let snap = s.snapshot();
        assert_eq!((snap.expected, snap.received, snap.lost()), (100, 90, 10));
        assert_eq!(snap.jitter, Duration::ZERO);
        let b = s.report_block().unwrap();
        assert_eq!(b.fraction_lost, 25); // 10 % of 256
        assert_eq!(b.total_lost, 10);
        assert_eq!(
            b.ext_max_seq,
            (1 << 16) | u32::from(65_500u16.wrapping_add(99))
        );
        // Next interval: no packets, no loss.
        assert_eq!(s.report_block().unwrap().fraction_lost, 0);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let mut s = ReceiveStats::new(8000);
        let t0 = Instant::now();
        // Alternating 0 / 10 ms extra delay: |D| = 80 ticks on every packet after the first.
        for i in 0..400u32 {
            let extra = if i % 2 == 1 { 10 * MS } else { Duration::ZERO };
            s.on_packet(t0 + 20 * MS * i + extra, 9, i as u16, i * 160, true);
        }
        let j = s.snapshot().jitter;
        // J converges to |D| = 10 ms.
        assert!(j >= 9 * MS && j <= 10 * MS, "{j:?}");
        assert_eq!(
            s.report_block().unwrap().jitter,
            (j.as_micros() * 8 / 1000) as u32
        );
    }

    #[test]
    fn new_ssrc_keeps_earlier_totals() {
        let mut s = ReceiveStats::new(8000);
        let t0 = Instant::now();
        for i in 0..10u16 {
            s.on_packet(t0, 1, i, 0, true);
        }
        for i in [500u16, 501, 503] {
            s.on_packet(t0, 2, i, 0, true);
        }
        let snap = s.snapshot();
        assert_eq!((snap.expected, snap.received), (14, 13));
        assert_eq!(snap.ssrc, Some(2));
        let earlier = ReceiveSnapshot {
            expected: 10,
            received: 10,
            ..Default::default()
        };
        assert!((snap.loss_since(&earlier) - 0.25).abs() < 1e-9);
    }

    #[test]
    fn events_do_not_count_as_jitter() {
        let mut s = ReceiveStats::new(8000);
        let t0 = Instant::now();
        for i in 0..50u32 {
            s.on_packet(t0 + 20 * MS * i, 1, i as u16, i * 160, true);
        }
        // An event: repeated start timestamp over 100 ms.
        for k in 0..5u32 {
            s.on_packet(t0 + 20 * MS * (50 + k), 1, (50 + k) as u16, 50 * 160, false);
        }
        assert_eq!(s.snapshot().jitter, Duration::ZERO);
        assert_eq!(s.snapshot().received, 55);
    }
}
