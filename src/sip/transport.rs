//! Transports, sans-IO part: which protocol a message travels on and the peer address
//! that goes with it. The framing of SIP messages on a byte stream is in `framer.rs`;
//! sockets and connections live in `endpoint/`.

use std::fmt;
use std::net::SocketAddr;

use crate::sip::transaction::Reliability;

/// The transport protocol of a trunk or a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Transport {
    /// Datagrams; transactions retransmit.
    #[default]
    Udp,
    /// A TCP connection (reused for every message to the same peer).
    Tcp,
    /// TLS over TCP (rustls), reused like TCP.
    Tls,
}

impl Transport {
    /// The name in a Via header (`SIP/2.0/UDP`).
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The `transport=` URI parameter for Contact, `None` for UDP (the default).
    pub fn uri_param(self) -> Option<&'static str> {
        match self {
            Transport::Udp => None,
            Transport::Tcp => Some("tcp"),
            Transport::Tls => Some("tls"),
        }
    }

    /// Whether transactions must retransmit on this transport.
    pub fn reliability(self) -> Reliability {
        match self {
            Transport::Udp => Reliability::Unreliable,
            Transport::Tcp | Transport::Tls => Reliability::Reliable,
        }
    }

    /// Parses `udp`, `tcp` or `tls` (case-insensitive).
    pub fn parse(text: &str) -> Option<Transport> {
        match text.to_ascii_lowercase().as_str() {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            "tls" => Some(Transport::Tls),
            _ => None,
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        })
    }
}

/// A remote (or our advertised) address together with the transport to reach it.
/// For TCP/TLS it also names the connection: responses go back on the connection
/// the request came in on (RFC 3261 §18.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// Transport protocol.
    pub transport: Transport,
    /// Socket address.
    pub addr: SocketAddr,
}

impl Peer {
    /// A UDP peer.
    pub fn udp(addr: SocketAddr) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr,
        }
    }

    /// The same address on another transport.
    pub fn with_transport(self, transport: Transport) -> Peer {
        Peer { transport, ..self }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names() {
        assert_eq!(Transport::parse("TLS"), Some(Transport::Tls));
        assert_eq!(Transport::Tcp.via_name(), "TCP");
        assert_eq!(Transport::Udp.uri_param(), None);
        assert_eq!(
            Transport::Tcp.reliability(),
            crate::sip::transaction::Reliability::Reliable
        );
    }
}
