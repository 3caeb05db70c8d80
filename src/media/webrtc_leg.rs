//! The WebRTC leg: answers the browser's offer with the `webrtc` crate, trickles ICE
//! candidates both ways and exposes the audio track as RTP packet streams.
//!
//! STUB: interface only, to be implemented.

use std::net::IpAddr;

use tokio::sync::mpsc;

use super::MediaError;
use super::codec::{AudioCodec, PayloadFormat};

/// Settings for WebRTC legs, derived from the gateway config.
#[derive(Debug, Clone)]
pub struct WebRtcLegConfig {
    /// Local address the ICE UDP sockets bind to.
    pub bind_ip: IpAddr,
    /// Address advertised in host candidates instead of `bind_ip` (1:1 NAT), if any.
    pub public_ip: Option<IpAddr>,
    /// Codecs the gateway accepts from the browser, in order of preference.
    pub codecs: Vec<AudioCodec>,
}

/// An ICE candidate as exchanged in protocol v1 `ice` messages (browser JSON shape).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IceCandidate {
    /// The `candidate:` attribute line.
    pub candidate: String,
    /// The media stream identification tag.
    #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// The m-line index.
    #[serde(
        rename = "sdpMLineIndex",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub sdp_mline_index: Option<u16>,
}

/// Events a WebRTC leg reports to its call.
#[derive(Debug, Clone)]
pub enum WebRtcEvent {
    /// A local ICE candidate to trickle to the browser; `None` ends gathering.
    LocalCandidate(Option<IceCandidate>),
    /// ICE and DTLS are up; media can flow.
    Connected,
    /// ICE or DTLS failed, or the peer connection closed on its own.
    Failed(String),
}

/// One browser-facing peer connection with a single audio track.
pub struct WebRtcLeg {}

impl WebRtcLeg {
    /// Answers `offer_sdp`; returns the leg and the SDP answer to send to the browser.
    pub async fn answer(
        _config: &WebRtcLegConfig,
        _offer_sdp: &str,
        _events: mpsc::UnboundedSender<WebRtcEvent>,
    ) -> Result<(WebRtcLeg, String), MediaError> {
        todo!()
    }

    /// The payload format negotiated with the browser.
    pub fn format(&self) -> PayloadFormat {
        todo!()
    }

    /// Adds a remote candidate trickled by the browser (`None`: end of candidates).
    pub async fn add_remote_candidate(&self, _c: Option<IceCandidate>) -> Result<(), MediaError> {
        todo!()
    }

    /// Closes the peer connection.
    pub async fn close(&self) {
        todo!()
    }
}
