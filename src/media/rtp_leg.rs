//! The plain RTP leg toward the SIP peer: one UDP socket from the configured port range.
//!
//! STUB: interface only, to be implemented.

use std::net::{IpAddr, SocketAddr};

use super::MediaError;

/// A bound RTP socket for the SIP side of one call.
pub struct RtpLeg {}

impl RtpLeg {
    /// Binds an even port from `range` (inclusive) on `ip`.
    pub async fn bind(_ip: IpAddr, _range: (u16, u16)) -> Result<RtpLeg, MediaError> {
        todo!()
    }

    /// The socket's local address (the port goes into the SDP offer).
    pub fn local_addr(&self) -> SocketAddr {
        todo!()
    }
}
