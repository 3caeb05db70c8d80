//! The plain RTP leg toward the SIP peer: an RTP socket on an even port of the
//! configured range and its RTCP socket on the next (odd) port (RFC 3550 §11).
//!
//! Binding only; the [`super::bridge::Bridge`] takes the sockets over and does the I/O.
//! With `a=rtcp-mux` the RTCP socket stays unused.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

use super::MediaError;

/// A bound RTP socket for the SIP side of one call.
#[derive(Debug)]
pub struct RtpLeg {
    /// The UDP socket RTP is sent from and received on.
    socket: UdpSocket,
    /// The UDP socket of RTCP (RTP port + 1).
    rtcp: UdpSocket,
    /// Its local address, cached (the port goes into our SDP).
    local_addr: SocketAddr,
}

impl RtpLeg {
    /// Binds an even port from `range` (inclusive) on `ip`, and the odd port above it
    /// for RTCP.
    ///
    /// Starts at a random even port of the range and walks it once, so concurrent calls
    /// rarely race for the same port. Fails with [`MediaError::NoPorts`] when no pair is
    /// free and with [`MediaError::Io`] for any other bind error (e.g. an `ip` that is
    /// not local).
    pub async fn bind(ip: IpAddr, range: (u16, u16)) -> Result<RtpLeg, MediaError> {
        let (lo, hi) = range;
        let first_even = u32::from(lo) + u32::from(lo % 2);
        if first_even > u32::from(hi) {
            return Err(MediaError::NoPorts(lo, hi));
        }
        let count = (u32::from(hi) - first_even) / 2 + 1;
        let start = rand::random::<u32>() % count;
        for i in 0..count {
            let port = first_even + 2 * ((start + i) % count);
            let port = u16::try_from(port).map_err(|_| MediaError::NoPorts(lo, hi))?;
            let socket = match UdpSocket::bind(SocketAddr::new(ip, port)).await {
                Ok(socket) => socket,
                Err(e) if e.kind() == ErrorKind::AddrInUse => continue,
                Err(e) => return Err(MediaError::Io(e)),
            };
            let Some(rtcp_port) = port.checked_add(1) else {
                continue;
            };
            let rtcp = match UdpSocket::bind(SocketAddr::new(ip, rtcp_port)).await {
                Ok(rtcp) => rtcp,
                Err(e) if e.kind() == ErrorKind::AddrInUse => continue,
                Err(e) => return Err(MediaError::Io(e)),
            };
            let local_addr = socket.local_addr()?;
            tracing::debug!(%local_addr, "RTP leg bound");
            return Ok(RtpLeg {
                socket,
                rtcp,
                local_addr,
            });
        }
        Err(MediaError::NoPorts(lo, hi))
    }

    /// The socket's local address (the port goes into the SDP offer).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Hands the RTP and RTCP sockets to the bridge.
    pub(crate) fn into_sockets(self) -> (UdpSocket, UdpSocket) {
        (self.socket, self.rtcp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn binds_an_even_port_in_range() {
        let leg = RtpLeg::bind(LOOPBACK, (40_000, 40_999)).await.unwrap();
        let port = leg.local_addr().port();
        assert_eq!(port % 2, 0);
        assert!((40_000..=40_999).contains(&port));
    }

    #[tokio::test]
    async fn rtcp_socket_is_the_next_port() {
        let leg = RtpLeg::bind(LOOPBACK, (40_000, 40_999)).await.unwrap();
        let port = leg.local_addr().port();
        let (_rtp, rtcp) = leg.into_sockets();
        assert_eq!(rtcp.local_addr().unwrap().port(), port + 1);
    }

    #[tokio::test]
    async fn exhausted_range_is_reported() {
        let first = RtpLeg::bind(LOOPBACK, (41_001, 41_002)).await.unwrap();
        assert_eq!(first.local_addr().port(), 41_002);
        let err = RtpLeg::bind(LOOPBACK, (41_001, 41_002)).await.unwrap_err();
        assert!(matches!(err, MediaError::NoPorts(41_001, 41_002)), "{err}");
        assert!(err.to_string().contains("41001-41002"));
    }

    #[tokio::test]
    async fn range_without_even_port_is_reported() {
        let err = RtpLeg::bind(LOOPBACK, (41_101, 41_101)).await.unwrap_err();
        assert!(matches!(err, MediaError::NoPorts(..)));
    }
}
