//! Per-call codec decisions: which codecs each leg is offered, and whether the bridge
//! relays packets untouched or transcodes.
//!
//! Pure functions. The rule:
//! - browser leg: the first codec of the preference list that the browser offers
//!   ([`browser_preference`] builds that list from the trunk's codecs);
//! - SIP leg: the browser's codec first (when the trunk accepts it), then the trunk's
//!   others ([`sip_offer_codecs`]), so the trunk can pick the same codec and no
//!   transcoding is needed;
//! - [`MediaMode::choose`]: relay when both legs carry the same codec at the same packet
//!   duration (PCMU ↔ PCMA counts as relay: a per-byte table, no codec state);
//!   otherwise transcode through 8 kHz PCM.

use super::codec::AudioCodec;

/// Codecs the browser leg accepts when nothing else is configured, in order.
pub const DEFAULT_BROWSER_CODECS: [AudioCodec; 3] =
    [AudioCodec::Pcmu, AudioCodec::Pcma, AudioCodec::Opus];
/// Codecs offered to a trunk when nothing else is configured, in order.
pub const DEFAULT_SIP_CODECS: [AudioCodec; 2] = [AudioCodec::Pcmu, AudioCodec::Pcma];
/// Packet duration assumed when the SDP does not say (RFC 3551 default for G.711).
pub const DEFAULT_PTIME_MS: u32 = 20;

/// The codec and packet duration of one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegMedia {
    /// The codec.
    pub codec: AudioCodec,
    /// Packet duration, ms.
    pub ptime_ms: u32,
}

impl std::fmt::Display for LegMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}ms", self.codec, self.ptime_ms)
    }
}

/// How the bridge moves audio between the legs (for the CDR and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaMode {
    /// Packets are relayed without decoding (header rewrite, PCMU ↔ PCMA table at most).
    Relay {
        /// The browser leg.
        browser: LegMedia,
        /// The SIP leg.
        sip: LegMedia,
    },
    /// Audio is decoded to 8 kHz PCM and re-encoded (codec or ptime differ).
    Transcode {
        /// The browser leg.
        browser: LegMedia,
        /// The SIP leg.
        sip: LegMedia,
    },
}

impl MediaMode {
    /// Relay when the legs can share packets, transcode otherwise.
    pub fn choose(browser: LegMedia, sip: LegMedia) -> MediaMode {
        let g711 = |c: AudioCodec| matches!(c, AudioCodec::Pcmu | AudioCodec::Pcma);
        let relay = match (browser.codec, sip.codec) {
            (a, b) if g711(a) && g711(b) => browser.ptime_ms == sip.ptime_ms,
            // Opus decoders take any frame size: the receiver copes with either ptime.
            (AudioCodec::Opus, AudioCodec::Opus) => true,
            _ => false,
        };
        if relay {
            MediaMode::Relay { browser, sip }
        } else {
            MediaMode::Transcode { browser, sip }
        }
    }

    /// `"relay"` or `"transcode"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MediaMode::Relay { .. } => "relay",
            MediaMode::Transcode { .. } => "transcode",
        }
    }

    /// Whether audio is decoded and re-encoded.
    pub fn is_transcoding(&self) -> bool {
        matches!(self, MediaMode::Transcode { .. })
    }

    /// The browser leg's codec and ptime.
    pub fn browser(&self) -> LegMedia {
        match self {
            MediaMode::Relay { browser, .. } | MediaMode::Transcode { browser, .. } => *browser,
        }
    }

    /// The SIP leg's codec and ptime.
    pub fn sip(&self) -> LegMedia {
        match self {
            MediaMode::Relay { sip, .. } | MediaMode::Transcode { sip, .. } => *sip,
        }
    }
}

impl std::fmt::Display for MediaMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} <-> {}", self.as_str(), self.browser(), self.sip())
    }
}

/// The browser leg's preference list for a call to a trunk accepting `trunk_codecs`:
/// Opus first when the trunk takes Opus (relayed end to end, with FEC on the browser's
/// network), else G.711 first (relayed; Opus-only browsers are transcoded).
pub fn browser_preference(trunk_codecs: &[AudioCodec]) -> Vec<AudioCodec> {
    if trunk_codecs.contains(&AudioCodec::Opus) {
        vec![AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::Pcma]
    } else {
        DEFAULT_BROWSER_CODECS.to_vec()
    }
}

/// The codecs to offer the trunk, in order: `browser`'s codec first when the trunk
/// accepts it, then the rest of `trunk_codecs` (never empty: falls back to G.711).
pub fn sip_offer_codecs(browser: AudioCodec, trunk_codecs: &[AudioCodec]) -> Vec<AudioCodec> {
    let trunk: &[AudioCodec] = if trunk_codecs.is_empty() {
        &DEFAULT_SIP_CODECS
    } else {
        trunk_codecs
    };
    let mut out = Vec::with_capacity(trunk.len());
    if trunk.contains(&browser) {
        out.push(browser);
    }
    out.extend(trunk.iter().copied().filter(|c| *c != browser));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use AudioCodec::{Opus, Pcma, Pcmu};

    fn leg(codec: AudioCodec, ptime_ms: u32) -> LegMedia {
        LegMedia { codec, ptime_ms }
    }

    #[test]
    fn relay_when_packets_can_be_shared() {
        for (b, s) in [
            (leg(Pcmu, 20), leg(Pcmu, 20)),
            (leg(Pcmu, 20), leg(Pcma, 20)),
            (leg(Opus, 20), leg(Opus, 40)),
        ] {
            let m = MediaMode::choose(b, s);
            assert_eq!(m, MediaMode::Relay { browser: b, sip: s });
            assert!(!m.is_transcoding());
        }
    }

    #[test]
    fn transcode_when_codec_or_ptime_differ() {
        for (b, s) in [
            (leg(Opus, 20), leg(Pcmu, 20)),
            (leg(Pcma, 20), leg(Opus, 20)),
            (leg(Pcmu, 20), leg(Pcmu, 30)),
        ] {
            let m = MediaMode::choose(b, s);
            assert!(m.is_transcoding(), "{m}");
            assert_eq!((m.browser(), m.sip()), (b, s));
        }
        let m = MediaMode::choose(leg(Opus, 20), leg(Pcmu, 30));
        assert_eq!(m.to_string(), "transcode opus/20ms <-> PCMU/30ms");
        assert_eq!(m.as_str(), "transcode");
    }

    #[test]
    fn offers_follow_the_browser_codec() {
        assert_eq!(sip_offer_codecs(Pcma, &[Pcmu, Pcma]), vec![Pcma, Pcmu]);
        assert_eq!(sip_offer_codecs(Opus, &[Pcmu, Pcma]), vec![Pcmu, Pcma]);
        assert_eq!(sip_offer_codecs(Opus, &[Pcmu, Opus]), vec![Opus, Pcmu]);
        assert_eq!(sip_offer_codecs(Pcmu, &[]), vec![Pcmu, Pcma]);
        assert_eq!(browser_preference(&[Pcmu]), vec![Pcmu, Pcma, Opus]);
        assert_eq!(browser_preference(&[Opus, Pcmu]), vec![Opus, Pcmu, Pcma]);
    }
}
