//! Transports, sans-IO part: which protocol a message travels on, the peer address
//! that goes with it, and the framing of SIP messages on a byte stream (TCP/TLS,
//! RFC 3261 §18.3). Sockets and connections live in `endpoint/`.

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

/// Why a byte stream cannot be framed any further (the connection is closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The header section grew past the limit without an end.
    #[error("header section longer than {0} bytes")]
    HeaderTooLong(usize),
    /// `Content-Length` is missing a number or announces too much.
    #[error("bad Content-Length: {0}")]
    ContentLength(String),
}

/// Cuts SIP messages out of a TCP/TLS byte stream by their `Content-Length`.
#[derive(Debug)]
pub struct StreamFramer {
    /// Bytes received and not yet framed.
    buf: Vec<u8>,
    /// Largest message accepted.
    max_message: usize,
    /// CRLFs seen since the last message (two make a keepalive ping).
    crlfs: usize,
    /// The last byte pushed was a CR: a CRLF may be split across reads.
    pending_cr: bool,
    /// Keepalive pings (CRLFCRLF, RFC 5626 §4.4.1) seen and not yet taken.
    pings: usize,
}

impl Default for StreamFramer {
    fn default() -> Self {
        Self::new(65_535)
    }
}

impl StreamFramer {
    /// A framer accepting messages up to `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_message,
            crlfs: 0,
            pending_cr: false,
            pings: 0,
        }
    }

    /// Keepalive pings (CRLFCRLF between messages) seen since the last call; each
    /// deserves a CRLF pong (RFC 5626 §4.4.1).
    pub fn take_pings(&mut self) -> usize {
        std::mem::take(&mut self.pings)
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        // Between messages, CRLFs from separate reads are separate keepalives (two
        // pongs are no ping), unless a read split one of them.
        if self.buf.is_empty() && !self.pending_cr && !bytes.starts_with(b"\n") {
            self.crlfs = 0;
        }
        self.pending_cr = bytes.last() == Some(&b'\r');
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. CRLF
    /// keepalives between messages (RFC 5626 §3.5.1) are skipped and counted
    /// ([`take_pings`](Self::take_pings)).
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        let skip = self
            .buf
            .iter()
            .position(|b| !matches!(b, b'\r' | b'\n'))
            .unwrap_or(self.buf.len());
        self.crlfs += self.buf[..skip].iter().filter(|b| **b == b'\n').count();
        self.pings += self.crlfs / 2;
        self.crlfs %= 2;
        self.buf.drain(..skip);
        if self.buf.is_empty() {
            return Ok(None);
        }
        self.crlfs = 0; // a message starts: a lone CRLF before it was a pong
        let Some(head_end) = find(&self.buf, b"\r\n\r\n") else {
            if self.buf.len() > self.max_message {
                return Err(FramingError::HeaderTooLong(self.max_message));
            }
            return Ok(None);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]);
        let mut length = 0usize;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim();
            if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
                length = value
                    .trim()
                    .parse()
                    .map_err(|_| FramingError::ContentLength(value.trim().to_string()))?;
            }
        }
        let total = head_end + 4 + length;
        if total > self.max_message {
            return Err(FramingError::ContentLength(format!(
                "{length} bytes of body exceed the {} byte limit",
                self.max_message
            )));
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        Ok(Some(std::mem::replace(&mut self.buf, rest)))
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_keepalive_pings_split_across_reads() {
        let mut f = StreamFramer::default();
        f.push(b"\r\n\r");
        assert_eq!(f.next_message().unwrap(), None);
        assert_eq!(f.take_pings(), 0, "half a ping");
        f.push(b"\n");
        assert_eq!(f.next_message().unwrap(), None);
        assert_eq!(f.take_pings(), 1);
        // Two separate pongs are no ping.
        for _ in 0..2 {
            f.push(b"\r\n");
            assert_eq!(f.next_message().unwrap(), None);
        }
        assert_eq!(f.take_pings(), 0);
        // A lone CRLF (a pong) before a message is no ping; two pings in a row are.
        f.push(b"\r\nOPTIONS x SIP/2.0\r\nl: 0\r\n\r\n\r\n\r\n\r\n\r\n");
        assert!(f.next_message().unwrap().is_some());
        assert_eq!(f.take_pings(), 0);
        assert_eq!(f.next_message().unwrap(), None);
        assert_eq!(f.take_pings(), 2);
        assert_eq!(f.take_pings(), 0, "taken");
    }

    #[test]
    fn frames_split_and_coalesced_messages() {
        let m1 = b"BYE sip:a SIP/2.0\r\nl: 3\r\n\r\nabc".to_vec();
        let m2 = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend(&m1);
        stream.extend(&m2);
        let mut f = StreamFramer::default();
        for chunk in stream.chunks(7) {
            f.push(chunk);
        }
        assert_eq!(f.next_message().unwrap(), Some(m1));
        assert_eq!(f.next_message().unwrap(), Some(m2));
        assert_eq!(f.next_message().unwrap(), None);
        f.push(b"INVITE x SIP/2.0\r\nContent-Length: 10\r\n\r\nabc");
        assert_eq!(f.next_message().unwrap(), None, "waits for the body");
    }

    #[test]
    fn refuses_oversized_and_bad_length() {
        let mut f = StreamFramer::new(100);
        f.push(&[b'a'; 200]);
        assert!(matches!(
            f.next_message(),
            Err(FramingError::HeaderTooLong(100))
        ));
        let mut f = StreamFramer::default();
        f.push(b"BYE x SIP/2.0\r\nContent-Length: x\r\n\r\n");
        assert!(matches!(
            f.next_message(),
            Err(FramingError::ContentLength(_))
        ));
        let mut f = StreamFramer::new(100);
        f.push(b"BYE x SIP/2.0\r\nContent-Length: 1000\r\n\r\n");
        assert!(f.next_message().is_err());
    }

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
