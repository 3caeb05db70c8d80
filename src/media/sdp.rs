//! SDP for the plain RTP leg: the offer we send to the SIP peer and the parsing of its
//! answer (connection address, port, chosen codec, telephone-event).
//!
//! STUB: interface only, to be implemented.

use std::net::{IpAddr, SocketAddr};

use super::MediaError;
use super::codec::{AudioCodec, PayloadFormat};

/// Media direction from an SDP `a=sendrecv|sendonly|recvonly|inactive` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways.
    SendRecv,
    /// The SDP's author only sends.
    SendOnly,
    /// The SDP's author only receives.
    RecvOnly,
    /// No media either way.
    Inactive,
}

/// What the SIP peer's SDP says about where and how to send audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMedia {
    /// Where to send RTP.
    pub addr: SocketAddr,
    /// The codec and payload types the peer chose.
    pub format: PayloadFormat,
    /// The peer's declared direction.
    pub direction: Direction,
}

/// Builds an SDP offer for the SIP leg.
pub fn build_offer(_ip: IpAddr, _port: u16, _session_id: u64, _codecs: &[AudioCodec]) -> String {
    todo!()
}

/// Parses the SIP peer's SDP answer to our offer.
pub fn parse_answer(_sdp: &str, _offered: &[AudioCodec]) -> Result<RemoteMedia, MediaError> {
    todo!()
}
