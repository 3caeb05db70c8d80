//! Call quality per leg and end to end: jitter, loss and RTT from what each leg's
//! incoming stream and RTCP tell us, and a MOS from the E-model ([`super::emodel`]).
//!
//! Pure computation over snapshots taken by the bridge. One-way delay of a leg (Ta) is
//! estimated as `RTT/2 + our jitter-buffer delay on that leg + one packet duration`;
//! end to end it is the sum over both legs. Loss is the interval loss since the
//! previous report. An unknown RTT counts as zero.

use std::time::Duration;

use serde::Serialize;

use super::codec::AudioCodec;
use super::emodel::{self, CodecImpairment, EModelInput};
use super::rtp_stats::ReceiveSnapshot;

/// Quality of one leg (or of the whole call).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LegQuality {
    /// Interarrival jitter of the stream we receive, ms.
    pub jitter_ms: f64,
    /// Packet loss of the stream we receive over the last interval, percent.
    pub loss_pct: f64,
    /// Round-trip time, ms, when measured.
    pub rtt_ms: Option<f64>,
    /// Loss the other side reports for the stream we send it, percent (RTCP), if known.
    pub remote_loss_pct: Option<f64>,
    /// E-model MOS (1..=4.5).
    pub mos: f64,
    /// Packets received in total.
    pub packets_received: u64,
    /// Packets lost in total.
    pub packets_lost: u64,
}

/// Quality of both legs and of the call end to end.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QualityReport {
    /// Browser ↔ gateway.
    pub browser: LegQuality,
    /// Gateway ↔ SIP peer.
    pub sip: LegQuality,
    /// Browser ↔ SIP peer through the gateway (for protocol `stats`).
    pub overall: LegQuality,
}

/// What is known about one leg at report time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LegMeasure {
    /// The leg's codec.
    pub codec: AudioCodec,
    /// The leg's packet duration, ms.
    pub ptime_ms: u32,
    /// Reception counters now.
    pub now: ReceiveSnapshot,
    /// Reception counters at the previous report.
    pub before: ReceiveSnapshot,
    /// Round-trip time, when measured.
    pub rtt: Option<Duration>,
    /// Our jitter-buffer delay on this leg's incoming stream (zero when relaying).
    pub buffer_delay: Duration,
    /// Loss ratio the other side reports for our stream, if known.
    pub remote_loss: Option<f64>,
}

impl LegMeasure {
    /// Estimated one-way mouth-to-ear delay contribution of this leg.
    fn one_way(&self) -> Duration {
        self.rtt.unwrap_or_default() / 2
            + self.buffer_delay
            + Duration::from_millis(u64::from(self.ptime_ms))
    }

    /// Interval loss ratio.
    fn loss(&self) -> f64 {
        self.now.loss_since(&self.before)
    }
}

/// Rounds to 2 decimals (values go to JSON and logs).
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The quality of one leg judged on its own.
fn leg_quality(m: &LegMeasure) -> LegQuality {
    let mos = emodel::mos(&EModelInput {
        one_way_delay: m.one_way(),
        loss: m.loss(),
        burst_ratio: 1.0,
        codec: emodel::codec_impairment(m.codec),
    });
    LegQuality {
        jitter_ms: round2(m.now.jitter.as_secs_f64() * 1000.0),
        loss_pct: round2(m.loss() * 100.0),
        rtt_ms: m.rtt.map(|r| round2(r.as_secs_f64() * 1000.0)),
        remote_loss_pct: m.remote_loss.map(|l| round2(l * 100.0)),
        mos: round2(mos),
        packets_received: m.now.received,
        packets_lost: m.now.lost(),
    }
}

/// Both legs and the end-to-end view; `transcoding` adds both codecs' impairments.
pub fn report(browser: &LegMeasure, sip: &LegMeasure, transcoding: bool) -> QualityReport {
    let b = leg_quality(browser);
    let s = leg_quality(sip);
    let (ib, is) = (
        emodel::codec_impairment(browser.codec),
        emodel::codec_impairment(sip.codec),
    );
    let codec = if transcoding {
        CodecImpairment {
            ie: ib.ie + is.ie,
            bpl: ib.bpl.min(is.bpl),
        }
    } else {
        is
    };
    let loss = 1.0 - (1.0 - browser.loss()) * (1.0 - sip.loss());
    let mos = emodel::mos(&EModelInput {
        one_way_delay: browser.one_way() + sip.one_way(),
        loss,
        burst_ratio: 1.0,
        codec,
    });
    let rtt_ms = match (browser.rtt, sip.rtt) {
        (None, None) => None,
        (a, b) => Some(round2(
            (a.unwrap_or_default() + b.unwrap_or_default()).as_secs_f64() * 1000.0,
        )),
    };
    QualityReport {
        browser: b,
        sip: s,
        overall: LegQuality {
            jitter_ms: b.jitter_ms.max(s.jitter_ms),
            loss_pct: round2(loss * 100.0),
            rtt_ms,
            remote_loss_pct: match (b.remote_loss_pct, s.remote_loss_pct) {
                (None, None) => None,
                (x, y) => Some(x.unwrap_or(0.0).max(y.unwrap_or(0.0))),
            },
            mos: round2(mos),
            packets_received: b.packets_received + s.packets_received,
            packets_lost: b.packets_lost + s.packets_lost,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(codec: AudioCodec, expected: u64, received: u64, rtt_ms: Option<u64>) -> LegMeasure {
        LegMeasure {
            codec,
            ptime_ms: 20,
            now: ReceiveSnapshot {
                expected,
                received,
                jitter: Duration::from_millis(4),
                ssrc: Some(1),
            },
            before: ReceiveSnapshot::default(),
            rtt: rtt_ms.map(Duration::from_millis),
            buffer_delay: Duration::ZERO,
            remote_loss: None,
        }
    }

    #[test]
    fn clean_relayed_call_scores_high() {
        let b = measure(AudioCodec::Pcmu, 250, 250, Some(40));
        let s = measure(AudioCodec::Pcmu, 250, 250, Some(20));
        let r = report(&b, &s, false);
        assert!(r.overall.mos > 4.3, "{r:?}");
        assert_eq!(r.overall.loss_pct, 0.0);
        assert_eq!(r.overall.rtt_ms, Some(60.0));
        assert_eq!(r.browser.jitter_ms, 4.0);
        assert_eq!(r.sip.packets_received, 250);
    }

    #[test]
    fn loss_on_either_leg_lowers_the_overall_score() {
        let clean = measure(AudioCodec::Opus, 250, 250, None);
        let lossy = measure(AudioCodec::Pcmu, 250, 225, None);
        let r = report(&clean, &lossy, true);
        assert_eq!(r.sip.loss_pct, 10.0);
        assert_eq!(r.sip.packets_lost, 25);
        assert!(r.overall.loss_pct >= 10.0);
        assert!(r.overall.mos < r.browser.mos);
        assert!(r.overall.mos <= r.sip.mos + 0.01);
        assert_eq!(r.overall.rtt_ms, None);
    }

    #[test]
    fn interval_loss_ignores_earlier_losses() {
        let mut m = measure(AudioCodec::Pcmu, 500, 450, None);
        m.before = ReceiveSnapshot {
            expected: 250,
            received: 200,
            ..Default::default()
        };
        assert_eq!(leg_quality(&m).loss_pct, 0.0);
        assert_eq!(leg_quality(&m).packets_lost, 50);
    }

    #[test]
    fn serialises_for_the_call_record() {
        let m = measure(AudioCodec::Pcmu, 10, 10, Some(10));
        let json = serde_json::to_value(report(&m, &m, false)).unwrap();
        assert!(json["overall"]["mos"].as_f64().unwrap() > 4.0);
        assert_eq!(json["sip"]["rtt_ms"], 10.0);
    }
}
