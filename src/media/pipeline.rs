//! One direction of the bridge behind one sans-IO interface, whether it relays or
//! transcodes; plus what every direction does regardless: reception statistics of the
//! incoming leg, detection of incoming RFC 4733 events, and insertion of events we
//! generate ourselves.
//!
//! Contract: `handle_packet(now, packet)` / `handle_timeout(now)` /
//! `inject_event(now, event)`, drain `poll_output()`, wait until `poll_timeout()`.
//! Everything a direction sends (relayed or transcoded audio, events it relays, events
//! we generate) leaves through the one `poll_output()` queue, in timeline order. [`Pipeline::reconfigure`] rebuilds the
//! stage for new formats (e.g. the 200 OK chose another codec than the 183) and keeps
//! the output stream continuous by moving the [`RtpRewriter`] over.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use rtc::rtp;

use super::MediaError;
use super::codec::PayloadFormat;
use super::dtmf::{DtmfDetector, EventPacket};
use super::jitter::JitterStats;
use super::relay::{Dropped, Relay, Towards};
use super::rewrite::RtpRewriter;
use super::rtp_stats::{ReceiveSnapshot, ReceiveStats};
use super::transcode::{CodecWork, TranscodeConfig, Transcoder};

/// A leg's payload format and packet duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegFormat {
    /// Codec and payload types.
    pub format: PayloadFormat,
    /// Packet duration, ms.
    pub ptime_ms: u32,
}

/// The processing stage of a direction.
#[derive(Debug)]
enum Stage {
    /// Header rewrite (and G.711 law table) only.
    Relay(Relay),
    /// Jitter buffer, decode, repacketise, encode.
    Transcode(Box<Transcoder>),
    /// Transient while rebuilding.
    Empty,
}

/// One direction of the bridge.
#[derive(Debug)]
pub struct Pipeline {
    /// Which way packets go.
    towards: Towards,
    /// Incoming leg.
    input: LegFormat,
    /// Outgoing leg.
    output: LegFormat,
    /// The stage.
    stage: Stage,
    /// The relay's output (and events we generate while relaying), waiting for
    /// `poll_output`.
    relayed: VecDeque<rtp::Packet>,
    /// Statistics of the incoming stream.
    receive: ReceiveStats,
    /// Incoming RFC 4733 events.
    detector: DtmfDetector,
    /// Output timestamp of the event we are generating.
    event_ts: u32,
    /// Codec work of stages already replaced.
    past_work: CodecWork,
}

impl Pipeline {
    /// A direction from `input` to `output`, transcoding when `transcode` is set (or
    /// when a relay cannot convert the codecs).
    pub fn new(
        towards: Towards,
        input: LegFormat,
        output: LegFormat,
        transcode: bool,
        rewriter: RtpRewriter,
        config: &TranscodeConfig,
    ) -> Result<Pipeline, MediaError> {
        let stage = Self::stage(towards, input, output, transcode, rewriter, config)?;
        Ok(Pipeline {
            towards,
            input,
            output,
            stage,
            relayed: VecDeque::with_capacity(4),
            receive: ReceiveStats::new(input.format.codec.clock_rate()),
            detector: DtmfDetector::default(),
            event_ts: 0,
            past_work: CodecWork::default(),
        })
    }

    /// Builds the stage.
    fn stage(
        towards: Towards,
        input: LegFormat,
        output: LegFormat,
        transcode: bool,
        mut rewriter: RtpRewriter,
        config: &TranscodeConfig,
    ) -> Result<Stage, MediaError> {
        if !transcode {
            let clock = output.format.codec.clock_rate();
            rewriter.set_clock(clock, clock * output.ptime_ms.max(1) / 1000);
            match Relay::new(towards, input.format, output.format, rewriter.clone()) {
                Ok(relay) => return Ok(Stage::Relay(relay)),
                Err(e) => tracing::debug!(error = %e, "relay impossible, transcoding"),
            }
        }
        Ok(Stage::Transcode(Box::new(Transcoder::new(
            input.format,
            output.format,
            output.ptime_ms,
            rewriter,
            config,
        )?)))
    }

    /// Switches to new formats, keeping the output stream and the statistics.
    pub fn reconfigure(
        &mut self,
        input: LegFormat,
        output: LegFormat,
        transcode: bool,
        config: &TranscodeConfig,
    ) -> Result<(), MediaError> {
        if input == self.input && output == self.output && transcode == self.is_transcoding() {
            return Ok(());
        }
        self.past_work = self.work();
        let rewriter = match std::mem::replace(&mut self.stage, Stage::Empty) {
            Stage::Relay(r) => r.into_rewriter(),
            Stage::Transcode(t) => t.into_rewriter(),
            Stage::Empty => RtpRewriter::random(8000, 160),
        };
        self.stage = Self::stage(self.towards, input, output, transcode, rewriter, config)?;
        self.input = input;
        self.output = output;
        self.receive.set_clock_rate(input.format.codec.clock_rate());
        Ok(())
    }

    /// Whether this direction decodes and encodes.
    pub fn is_transcoding(&self) -> bool {
        matches!(self.stage, Stage::Transcode(_))
    }

    /// The incoming leg's format.
    pub fn input(&self) -> LegFormat {
        self.input
    }

    /// The outgoing leg's format.
    pub fn output(&self) -> LegFormat {
        self.output
    }

    /// Whether packets of payload type `pt` belong to the incoming leg (its codec, the
    /// other static G.711 law when it is G.711, or its telephone-event type).
    pub fn accepts_payload_type(&self, pt: u8) -> bool {
        match &self.stage {
            Stage::Transcode(t) => t.accepts_payload_type(pt),
            _ => {
                let f = self.input.format;
                let g711 = matches!(
                    f.codec,
                    super::codec::AudioCodec::Pcmu | super::codec::AudioCodec::Pcma
                );
                pt == f.payload_type
                    || f.dtmf_payload_type == Some(pt)
                    || (g711 && (pt == 0 || pt == 8))
            }
        }
    }

    /// The incoming stream was held back on purpose (hold): the next packet starts a
    /// new output segment (continuous sequence, marker set) instead of showing a gap.
    pub fn restart_source(&mut self) {
        match &mut self.stage {
            Stage::Relay(r) => r.restart_next(),
            Stage::Transcode(t) => t.restart_next(),
            Stage::Empty => {}
        }
    }

    /// Accepts one packet that arrived at `now`; returns the DTMF digit it starts, if any.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        packet: rtp::Packet,
    ) -> Result<Option<char>, Dropped> {
        let h = &packet.header;
        let is_event = self.input.format.dtmf_payload_type == Some(h.payload_type);
        self.receive
            .on_packet(now, h.ssrc, h.sequence_number, h.timestamp, !is_event);
        let digit = if is_event {
            self.detector.on_packet(h.timestamp, &packet.payload)
        } else {
            None
        };
        match &mut self.stage {
            Stage::Relay(r) => self.relayed.push_back(r.relay(now, packet)?),
            Stage::Transcode(t) => t.handle_packet(now, packet)?,
            Stage::Empty => {}
        }
        Ok(digit)
    }

    /// Runs timers due at `now` (jitter buffer releases).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Stage::Transcode(t) = &mut self.stage {
            t.handle_timeout(now);
        }
    }

    /// The next packet to send.
    pub fn poll_output(&mut self) -> Option<rtp::Packet> {
        match &mut self.stage {
            Stage::Transcode(t) => t.poll_output(),
            _ => self.relayed.pop_front(),
        }
    }

    /// When [`Pipeline::handle_timeout`] has work next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Transcode(t) => t.poll_timeout(),
            _ => None,
        }
    }

    /// Queues a generated event packet on the output stream, after the audio that
    /// precedes it (false when the output leg has no telephone-event). Drain
    /// [`Pipeline::poll_output`] afterwards.
    pub fn inject_event(&mut self, now: Instant, event: EventPacket) -> bool {
        let Some(pt) = self.output.format.dtmf_payload_type else {
            return false;
        };
        let rw = match &mut self.stage {
            Stage::Relay(r) => r.insert(now),
            Stage::Transcode(t) => {
                t.inject_event(now, pt, &event);
                return true;
            }
            Stage::Empty => return false,
        };
        if event.first {
            self.event_ts = rw.timestamp;
        }
        self.relayed.push_back(rtp::Packet {
            header: rtp::Header {
                version: 2,
                marker: event.marker,
                payload_type: pt,
                sequence_number: rw.sequence_number,
                timestamp: self.event_ts,
                ssrc: rw.ssrc,
                ..Default::default()
            },
            payload: Bytes::copy_from_slice(&event.payload),
        });
        true
    }

    /// Codec work so far (zero while relaying).
    pub fn work(&self) -> CodecWork {
        match &self.stage {
            Stage::Transcode(t) => self.past_work + t.work(),
            _ => self.past_work,
        }
    }

    /// The jitter buffer's counters, when transcoding.
    pub fn jitter_stats(&self) -> Option<JitterStats> {
        match &self.stage {
            Stage::Transcode(t) => Some(t.jitter_stats()),
            _ => None,
        }
    }

    /// Reception statistics of the incoming stream.
    pub fn receive_stats(&self) -> ReceiveSnapshot {
        self.receive.snapshot()
    }

    /// The incoming stream's statistics, for RTCP report blocks.
    pub fn receive_stats_mut(&mut self) -> &mut ReceiveStats {
        &mut self.receive
    }

    /// Source restarts hidden by the rewriter.
    pub fn resyncs(&self) -> u64 {
        match &self.stage {
            Stage::Relay(r) => r.resyncs(),
            Stage::Transcode(t) => t.resyncs(),
            Stage::Empty => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::AudioCodec;
    use crate::media::dtmf::{DtmfSender, DtmfTiming};
    use std::time::Duration;

    const PCMU: PayloadFormat = PayloadFormat {
        codec: AudioCodec::Pcmu,
        payload_type: 0,
        dtmf_payload_type: Some(101),
    };
    const OPUS: PayloadFormat = PayloadFormat {
        codec: AudioCodec::Opus,
        payload_type: 111,
        dtmf_payload_type: Some(126),
    };

    fn leg(format: PayloadFormat) -> LegFormat {
        LegFormat {
            format,
            ptime_ms: 20,
        }
    }

    fn pkt(pt: u8, seq: u16, ts: u32) -> rtp::Packet {
        rtp::Packet {
            header: rtp::Header {
                version: 2,
                payload_type: pt,
                sequence_number: seq,
                timestamp: ts,
                ssrc: 3,
                ..Default::default()
            },
            payload: Bytes::from(vec![0xFFu8; 160]),
        }
    }

    #[test]
    fn relay_does_no_codec_work() {
        let rw = RtpRewriter::new(9, 1, 1, 8000, 160);
        let mut p = Pipeline::new(
            Towards::Sip,
            leg(PCMU),
            leg(PCMU),
            false,
            rw,
            &TranscodeConfig::default(),
        )
        .unwrap();
        let t0 = Instant::now();
        for i in 0..50u16 {
            p.handle_packet(
                t0 + Duration::from_millis(20 * u64::from(i)),
                pkt(0, i, u32::from(i) * 160),
            )
            .unwrap();
            assert!(p.poll_output().is_some());
            assert!(p.poll_output().is_none());
        }
        assert!(!p.is_transcoding());
        assert_eq!(p.work(), CodecWork::default());
        assert_eq!(p.receive_stats().received, 50);
        assert!(p.jitter_stats().is_none());
    }

    #[test]
    fn reconfigure_to_transcoding_keeps_the_output_continuous() {
        let rw = RtpRewriter::new(9, 500, 8000, 8000, 160);
        let cfg = TranscodeConfig::default();
        let mut p = Pipeline::new(Towards::Browser, leg(PCMU), leg(PCMU), false, rw, &cfg).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let ms20 = Duration::from_millis(20);
        for i in 0..10u16 {
            p.handle_packet(t0 + ms20 * u32::from(i), pkt(0, i, u32::from(i) * 160))
                .unwrap();
            out.extend(std::iter::from_fn(|| p.poll_output()));
        }
        p.reconfigure(leg(PCMU), leg(OPUS), true, &cfg).unwrap();
        assert!(p.is_transcoding());
        for i in 10..30u16 {
            let now = t0 + ms20 * u32::from(i);
            while let Some(t) = p.poll_timeout().filter(|t| *t <= now) {
                p.handle_timeout(t);
            }
            p.handle_packet(now, pkt(0, i, u32::from(i) * 160)).unwrap();
            out.extend(std::iter::from_fn(|| p.poll_output()));
        }
        let seqs: Vec<u16> = out.iter().map(|p| p.header.sequence_number).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        assert!(out.iter().all(|p| p.header.ssrc == 9));
        assert_eq!(out[9].header.payload_type, 0);
        assert_eq!(out[10].header.payload_type, 111);
        assert!(p.work().encoded > 0);
        assert_eq!(p.receive_stats().received, 30);
    }

    #[test]
    fn injected_events_share_one_timestamp_and_continue_the_sequence() {
        let rw = RtpRewriter::new(9, 100, 1000, 8000, 160);
        let cfg = TranscodeConfig::default();
        let mut p = Pipeline::new(Towards::Sip, leg(PCMU), leg(PCMU), false, rw, &cfg).unwrap();
        let t0 = Instant::now();
        p.handle_packet(t0, pkt(0, 1, 0)).unwrap();
        let a = p.poll_output().unwrap();
        let mut dtmf = DtmfSender::new(DtmfTiming::default());
        dtmf.push_digits(t0, "7").unwrap();
        let mut events = Vec::new();
        while let Some(t) = dtmf.poll_timeout() {
            while let Some(e) = dtmf.poll_output(t) {
                assert!(p.inject_event(t, e));
                events.extend(std::iter::from_fn(|| p.poll_output()));
            }
        }
        assert_eq!(events.len(), 7);
        assert!(events.iter().all(|e| e.header.payload_type == 101));
        assert!(
            events
                .iter()
                .all(|e| e.header.timestamp == a.header.timestamp)
        );
        assert!(events[0].header.marker && !events[1].header.marker);
        assert_eq!(
            events[0].header.sequence_number,
            a.header.sequence_number + 1
        );
        p.handle_packet(t0 + Duration::from_millis(140), pkt(0, 2, 160))
            .unwrap();
        let b = p.poll_output().unwrap();
        assert_eq!(b.header.sequence_number, a.header.sequence_number + 8);
    }

    #[test]
    fn generated_events_leave_in_timeline_order_when_transcoding() {
        // 20 ms in, 30 ms out: audio waits in the repacketiser while digits are due.
        // Driven like the bridge with fake time: audio due first, then events, then
        // one drain. (Before, the event was sent ahead of the queued audio.)
        let rw = RtpRewriter::new(9, 100, 1000, 8000, 240);
        let cfg = TranscodeConfig::default();
        let sip30 = LegFormat {
            format: PCMU,
            ptime_ms: 30,
        };
        let mut p = Pipeline::new(Towards::Sip, leg(PCMU), sip30, true, rw, &cfg).unwrap();
        let mut dtmf = DtmfSender::new(DtmfTiming::default());
        let t0 = Instant::now();
        dtmf.push_digits(t0 + Duration::from_millis(105), "5#")
            .unwrap();
        let mut out = Vec::new();
        for ms in 0..800u32 {
            let now = t0 + Duration::from_millis(u64::from(ms));
            if ms % 20 == 3 && ms < 700 {
                let k = ms / 20;
                p.handle_packet(now, pkt(0, k as u16, k * 160)).unwrap();
            }
            if p.poll_timeout().is_some_and(|d| d <= now) {
                p.handle_timeout(now);
            }
            while let Some(e) = dtmf.poll_output(now) {
                assert!(p.inject_event(now, e));
            }
            out.extend(std::iter::from_fn(|| p.poll_output()));
        }
        let seqs: Vec<u16> = out.iter().map(|p| p.header.sequence_number).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        let mut starts = 0;
        for (i, e) in out.iter().enumerate() {
            let first = e.header.payload_type == 101 && e.header.marker;
            if !first {
                continue;
            }
            starts += 1;
            let ets = e.header.timestamp;
            for (j, a) in out
                .iter()
                .enumerate()
                .filter(|(_, a)| a.header.payload_type == 0)
            {
                let ats = a.header.timestamp;
                assert!(
                    if j < i { ats <= ets } else { ats >= ets },
                    "audio {j} at {ats} vs event {i} at {ets}"
                );
            }
        }
        assert_eq!(starts, 2);
    }

    #[test]
    fn incoming_events_are_reported_once() {
        let rw = RtpRewriter::new(9, 100, 1000, 8000, 160);
        let cfg = TranscodeConfig::default();
        let mut p = Pipeline::new(Towards::Browser, leg(PCMU), leg(OPUS), false, rw, &cfg).unwrap();
        let mut ev = pkt(101, 1, 500);
        ev.payload = Bytes::from_static(&[11, 10, 0, 160]);
        assert_eq!(p.handle_packet(Instant::now(), ev.clone()), Ok(Some('#')));
        ev.header.sequence_number = 2;
        assert_eq!(p.handle_packet(Instant::now(), ev), Ok(None));
        assert!(p.is_transcoding(), "PCMU -> Opus cannot be relayed");
    }
}
