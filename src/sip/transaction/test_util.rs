//! Fake-time harness and message fixtures for the transaction tests.

use std::time::{Duration, Instant};

use rsip::{Request, Response};

use super::{InviteClient, InviteServer, NonInviteClient, NonInviteServer};
use crate::sip::message::{Incoming, parse};

/// The sans-IO surface the harness drives.
pub(crate) trait Machine {
    fn timeout(&self) -> Option<Instant>;
    fn fire(&mut self, now: Instant);
    fn transmit(&mut self) -> Option<Vec<u8>>;
}

macro_rules! machine {
    ($t:ty) => {
        impl Machine for $t {
            fn timeout(&self) -> Option<Instant> {
                self.poll_timeout()
            }
            fn fire(&mut self, now: Instant) {
                self.handle_timeout(now)
            }
            fn transmit(&mut self) -> Option<Vec<u8>> {
                self.poll_transmit()
            }
        }
    };
}
machine!(InviteClient);
machine!(NonInviteClient);
machine!(NonInviteServer);
machine!(InviteServer);

/// Jumps fake time from deadline to deadline until `limit` after `start` (or until the
/// machine has no deadline), returning the offsets at which datagrams were sent.
pub(crate) fn run_until(m: &mut impl Machine, start: Instant, limit: Duration) -> Vec<Duration> {
    let mut sent = Vec::new();
    while m.transmit().is_some() {
        sent.push(Duration::ZERO);
    }
    while let Some(at) = m.timeout() {
        if at > start + limit {
            break;
        }
        m.fire(at);
        while m.transmit().is_some() {
            sent.push(at - start);
        }
    }
    sent
}

/// Milliseconds, for readable assertions.
pub(crate) fn ms(v: &[Duration]) -> Vec<u128> {
    v.iter().map(|d| d.as_millis()).collect()
}

/// A request of the given method, as the UAC would send it.
pub(crate) fn request(method: &str) -> Request {
    let raw = format!(
        "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtest;rport\r\nMax-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=ft\r\nTo: <sip:bob@example.com>\r\nCall-ID: cid-1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    );
    match parse(raw.as_bytes()) {
        Ok(Incoming::Request(r)) => r,
        other => panic!("fixture: {other:?}"),
    }
}

/// A response with `code` to `method`.
pub(crate) fn response(method: &str, code: u16) -> Response {
    let raw = format!(
        "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKtest;rport=5070\r\nFrom: <sip:alice@127.0.0.1>;tag=ft\r\nTo: <sip:bob@example.com>;tag=tt\r\nCall-ID: cid-1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    );
    match parse(raw.as_bytes()) {
        Ok(Incoming::Response(r, _)) => r,
        other => panic!("fixture: {other:?}"),
    }
}

/// The start line of a datagram.
pub(crate) fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}
