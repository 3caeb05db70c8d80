//! Media plane: the WebRTC leg toward the browser, the plain RTP leg toward the SIP
//! peer, and the bridge that relays audio between them.
//!
//! I/O contract: the call module creates one [`webrtc_leg::WebRtcLeg`] and one
//! [`rtp_leg::RtpLeg`] per call, hands their SDPs to signaling and SIP, and then
//! starts a [`bridge::Bridge`] that owns both packet streams until the call ends.

pub mod bridge;
pub mod codec;
pub mod rewrite;
pub mod rtp_leg;
pub mod sdp;
pub mod webrtc_leg;

/// Errors of the media plane.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The browser's SDP could not be used (parse failure, no audio, no common codec).
    #[error("browser SDP rejected: {0}")]
    BadOffer(String),
    /// The SIP peer's SDP could not be used.
    #[error("SIP peer SDP rejected: {0}")]
    BadRemoteSdp(String),
    /// No RTP port was free in the configured range.
    #[error("no free RTP port in range {0}-{1}; widen sip.rtp_ports")]
    NoPorts(u16, u16),
    /// An error from the WebRTC stack.
    #[error("webrtc: {0}")]
    WebRtc(String),
    /// A socket error.
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
}
