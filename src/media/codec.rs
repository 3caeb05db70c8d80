//! Audio codecs the gateway knows and the payload format negotiated on one leg.

/// An audio codec callbridge can negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// G.711 µ-law, static payload type 0, 8 kHz.
    Pcmu,
    /// G.711 A-law, static payload type 8, 8 kHz.
    Pcma,
    /// Opus, dynamic payload type, 48 kHz RTP clock.
    Opus,
}

impl AudioCodec {
    /// The SDP encoding name (`a=rtpmap` name).
    pub fn encoding_name(self) -> &'static str {
        match self {
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
            AudioCodec::Opus => "opus",
        }
    }

    /// The RTP clock rate in Hz.
    pub fn clock_rate(self) -> u32 {
        match self {
            AudioCodec::Pcmu | AudioCodec::Pcma => 8000,
            AudioCodec::Opus => 48000,
        }
    }

    /// The static payload type, if the codec has one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            AudioCodec::Pcmu => Some(0),
            AudioCodec::Pcma => Some(8),
            AudioCodec::Opus => None,
        }
    }

    /// Parses an SDP encoding name, case-insensitively.
    pub fn from_encoding_name(name: &str) -> Option<AudioCodec> {
        match name.to_ascii_lowercase().as_str() {
            "pcmu" => Some(AudioCodec::Pcmu),
            "pcma" => Some(AudioCodec::Pcma),
            "opus" => Some(AudioCodec::Opus),
            _ => None,
        }
    }
}

impl std::fmt::Display for AudioCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.encoding_name())
    }
}

/// The payload format negotiated on one leg: codec, its payload type, and the
/// telephone-event payload type when DTMF events were negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadFormat {
    /// The audio codec in use.
    pub codec: AudioCodec,
    /// The RTP payload type that carries it on this leg.
    pub payload_type: u8,
    /// The RTP payload type of `telephone-event/8000` (RFC 4733), if negotiated.
    pub dtmf_payload_type: Option<u8>,
}
