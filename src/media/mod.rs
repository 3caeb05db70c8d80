//! Media plane: the WebRTC leg toward the browser, the plain RTP leg toward the SIP
//! peer, and the bridge that relays or transcodes audio between them.
//!
//! I/O contract: the call module creates one [`webrtc_leg::WebRtcLeg`] and one
//! [`rtp_leg::RtpLeg`] per call, hands their SDPs to signaling and SIP, and then
//! starts a [`bridge::Bridge`] that owns both packet streams until the call ends and
//! reports through [`bridge::MediaEvent`]s and a final [`bridge::BridgeReport`].
//!
//! ```text
//! browser ──SRTP──> WebRtcLeg ──> Pipeline: relay (pt map, G.711 law, RtpRewriter)     ──> RtpLeg ──> SIP peer
//!                                        or jitter buffer → decode → repacketise → encode
//! browser <──SRTP── WebRtcLeg <── Pipeline <── latch, RTCP (SR/RR, RTT) <────────────── RtpLeg <── SIP peer
//! ```
//!
//! Sans-IO parts (no clock, no sockets; `now` is an argument): [`sdp`], `offer`,
//! [`negotiate`], [`rewrite`], [`relay`], [`g711`], [`audio`], [`jitter`],
//! [`repacketize`], [`transcode`], [`pipeline`], [`dtmf`], [`rtp_stats`], [`rtcp`],
//! [`latch`], [`talkspurt`], [`emodel`], [`quality`], [`recording::mixer`]. Runtime parts:
//! [`webrtc_leg`] (with what its peer connections share: [`webrtc_setup`]),
//! [`rtp_leg`], [`bridge`], [`recording`].

pub mod audio;
pub mod bridge;
pub mod browser_media;
pub mod candidates;
pub mod coalesce;
pub mod codec;
pub mod dtmf;
pub mod emodel;
pub mod g711;
pub mod jitter;
pub mod latch;
pub mod negotiate;
pub(crate) mod offer;
pub mod pipeline;
pub mod quality;
pub mod recording;
pub mod relay;
pub mod repacketize;
pub mod rewrite;
pub mod rtcp;
pub mod rtp_leg;
pub mod rtp_stats;
pub mod sdp;
pub mod talkspurt;
pub mod transcode;
pub mod webrtc_leg;
pub mod webrtc_setup;
mod webrtc_worker;
pub mod worker;

use codec::AudioCodec;

/// Errors of the media plane.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The browser's SDP could not be used (parse failure, no audio, no common codec).
    #[error("browser SDP rejected: {0}")]
    BadOffer(String),
    /// The SIP peer's SDP could not be used.
    #[error("SIP peer SDP rejected: {0}")]
    BadRemoteSdp(String),
    /// A trickled ICE candidate from the browser could not be used.
    #[error("browser ICE candidate rejected: {0}")]
    BadCandidate(String),
    /// The two legs negotiated codecs the bridge cannot convert between without transcoding.
    #[error("cannot relay {browser} (browser) to {sip} (SIP peer): transcoding is not supported")]
    CodecMismatch {
        /// The browser leg's codec.
        browser: AudioCodec,
        /// The SIP leg's codec.
        sip: AudioCodec,
    },
    /// No RTP port was free in the configured range.
    #[error("no free RTP port in range {0}-{1}; widen sip.rtp_ports")]
    NoPorts(u16, u16),
    /// An error from the WebRTC stack.
    #[error("webrtc: {0}")]
    WebRtc(String),
    /// A socket error.
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
    /// A codec could not be created or configured.
    #[error("codec: {0}")]
    Codec(String),
    /// The call recording could not be written.
    #[error("recording: {0}")]
    Recording(String),
}

impl MediaError {
    /// Which side caused the error, for the SIP status, `ended` reason and metric label.
    pub fn side(&self) -> ErrorSide {
        match self {
            MediaError::BadOffer(_) | MediaError::BadCandidate(_) => ErrorSide::Browser,
            MediaError::BadRemoteSdp(_) | MediaError::CodecMismatch { .. } => ErrorSide::SipPeer,
            MediaError::NoPorts(..)
            | MediaError::WebRtc(_)
            | MediaError::Io(_)
            | MediaError::Codec(_)
            | MediaError::Recording(_) => ErrorSide::Internal,
        }
    }
}

/// The side an error is attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSide {
    /// The browser sent something we cannot use.
    Browser,
    /// The SIP peer sent something we cannot use.
    SipPeer,
    /// Our own resources or stack failed.
    Internal,
}
