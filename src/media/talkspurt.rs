//! Where the RTP marker bit belongs on a relayed audio stream: on the first packet of
//! a talk spurt (RFC 3551 §4.1), i.e. the first packet after a silence in which the
//! sender sent nothing (DTX, VAD). The incoming marker is not trusted: some senders set
//! it on every packet, and a receiver that sees it resets its playout each time.
//!
//! Sans-IO, per packet: a silence shows as a timestamp that advanced further than the
//! packets in between explain. The packet duration is learnt from the stream (the
//! smallest step between consecutive packets). The first packet and source changes are
//! the rewriter's (it marks every new segment).

/// Finds talk spurt starts in one incoming audio stream.
#[derive(Debug, Clone, Default)]
pub struct TalkSpurts {
    /// SSRC, sequence and timestamp of the newest audio packet.
    last: Option<(u32, u16, u32)>,
    /// Timestamp ticks of one packet, once seen.
    step: Option<u32>,
}

impl TalkSpurts {
    /// A detector knowing nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes an audio packet; true when it starts a talk spurt after a silence.
    pub fn on_audio(&mut self, ssrc: u32, seq: u16, ts: u32) -> bool {
        let Some((last_ssrc, last_seq, last_ts)) = self.last else {
            self.last = Some((ssrc, seq, ts));
            return false;
        };
        if last_ssrc != ssrc {
            // A new source: the rewriter marks it; its packet duration may differ.
            self.last = Some((ssrc, seq, ts));
            self.step = None;
            return false;
        }
        let dseq = seq.wrapping_sub(last_seq);
        if dseq == 0 || dseq >= 0x8000 {
            return false; // duplicate or late: not the newest
        }
        self.last = Some((ssrc, seq, ts));
        let dts = ts.wrapping_sub(last_ts);
        if dts == 0 || dts >= 0x8000_0000 {
            return false; // no advance, or backwards: a restart is the rewriter's
        }
        match self.step {
            Some(step) => {
                let explained = u64::from(dseq) * u64::from(step) + u64::from(step / 2);
                if u64::from(dts) > explained {
                    return true;
                }
                if dseq == 1 && dts < step {
                    self.step = Some(dts);
                }
                false
            }
            None => {
                if dseq == 1 {
                    self.step = Some(dts);
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_stream_has_no_spurt_starts() {
        let mut t = TalkSpurts::new();
        for i in 0..100u16 {
            assert!(!t.on_audio(1, i, u32::from(i) * 160), "packet {i}");
        }
    }

    #[test]
    fn a_silence_starts_a_spurt_once() {
        let mut t = TalkSpurts::new();
        for i in 0..10u16 {
            t.on_audio(1, i, u32::from(i) * 160);
        }
        // DTX: one second without packets, sequence continuous.
        assert!(t.on_audio(1, 10, 9 * 160 + 8000));
        assert!(!t.on_audio(1, 11, 10 * 160 + 8000));
        assert!(!t.on_audio(1, 12, 11 * 160 + 8000));
    }

    #[test]
    fn loss_is_not_silence() {
        let mut t = TalkSpurts::new();
        for i in 0..10u16 {
            t.on_audio(1, i, u32::from(i) * 160);
        }
        // Five packets lost: sequence and timestamp jump together.
        assert!(!t.on_audio(1, 15, 15 * 160));
        // A late one arrives: not the newest.
        assert!(!t.on_audio(1, 12, 12 * 160));
        assert!(!t.on_audio(1, 16, 16 * 160));
    }

    #[test]
    fn the_packet_duration_is_learnt() {
        let mut t = TalkSpurts::new();
        // 60 ms Opus packets at 48 kHz.
        for i in 0..10u16 {
            assert!(!t.on_audio(7, i, u32::from(i) * 2880));
        }
        assert!(t.on_audio(7, 10, 9 * 2880 + 48_000));
    }

    #[test]
    fn a_new_source_starts_over() {
        let mut t = TalkSpurts::new();
        for i in 0..5u16 {
            t.on_audio(1, i, u32::from(i) * 160);
        }
        assert!(!t.on_audio(2, 900, 77));
        assert!(!t.on_audio(2, 901, 77 + 320));
        assert!(!t.on_audio(2, 902, 77 + 640));
        assert!(t.on_audio(2, 903, 77 + 640 + 8000));
    }
}
