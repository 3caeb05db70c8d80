//! Answers for requests that rsip could not parse (RFC 3261 §8.2: 400 or 501 when the
//! headers needed to route a response can still be read). Written as raw text because
//! there is no rsip `Request` to build from.

use std::net::SocketAddr;

use super::RawMessage;
use super::build::{reason_phrase, stamp_via};

/// Methods rsip 0.4 knows; any other token in a request line earns 501.
const KNOWN_METHODS: [&str; 14] = [
    "ACK",
    "BYE",
    "CANCEL",
    "INFO",
    "INVITE",
    "MESSAGE",
    "NOTIFY",
    "OPTIONS",
    "PRACK",
    "PUBLISH",
    "REFER",
    "REGISTER",
    "SUBSCRIBE",
    "UPDATE",
];

/// A raw 400/501 reply to a malformed request, or `None` when the datagram is a
/// response, an ACK, or lacks the headers needed to answer.
pub(crate) fn reply_to_malformed(
    raw: &RawMessage,
    source: SocketAddr,
    why: &str,
) -> Option<Vec<u8>> {
    let mut words = raw.start_line.split_whitespace();
    let method = words.next()?;
    if method.starts_with("SIP/") || method.eq_ignore_ascii_case("ACK") {
        return None;
    }
    let code = if KNOWN_METHODS.iter().any(|m| m.eq_ignore_ascii_case(method)) {
        400
    } else {
        501
    };
    reply_with(raw, source, code, why)
}

/// A raw `code` reply (400 or 413) to a request whose framing on a stream failed,
/// built from its header section `head` (blank line included); `None` when `head`
/// is a response, an ACK, or lacks the headers needed to answer. The connection is
/// closed after it.
pub(crate) fn reply_to_unframable(
    head: &[u8],
    source: SocketAddr,
    code: u16,
    why: &str,
) -> Option<Vec<u8>> {
    let head = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
    let (start_line, headers) = super::normalize::split_head(head).ok()?;
    let method = start_line.split_whitespace().next()?;
    if method.starts_with("SIP/") || method.eq_ignore_ascii_case("ACK") {
        return None;
    }
    let raw = RawMessage {
        start_line,
        headers,
        body: Vec::new(),
    };
    reply_with(&raw, source, code, why)
}

/// The raw reply with `code` and a `Warning` saying `why`.
fn reply_with(raw: &RawMessage, source: SocketAddr, code: u16, why: &str) -> Option<Vec<u8>> {
    let mut out = format!("SIP/2.0 {code} {}\r\n", reason_phrase(code));
    let mut first_via = true;
    for (name, value) in &raw.headers {
        if name.eq_ignore_ascii_case("Via") {
            let value = if first_via {
                stamp_via(value, source)
            } else {
                value.clone()
            };
            first_via = false;
            out.push_str(&format!("Via: {value}\r\n"));
        }
    }
    if first_via {
        return None;
    }
    for name in ["From", "To", "Call-ID", "CSeq"] {
        let value = raw.header(name)?;
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    let why: String = why
        .chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .take(120)
        .collect();
    out.push_str(&format!("Warning: 399 callbridge \"{why}\"\r\n"));
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::super::normalize::split;
    use super::*;

    const HEADERS: &str = "Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK7\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c1\r\nCSeq: 5 FOO\r\n\r\n";

    #[test]
    fn unknown_method_gets_501_and_bad_uri_400() {
        let src: SocketAddr = "10.0.0.9:5060".parse().unwrap();
        let raw = split(format!("FOO sip:b@h SIP/2.0\r\n{HEADERS}").as_bytes()).unwrap();
        let reply = String::from_utf8(reply_to_malformed(&raw, src, "x").unwrap()).unwrap();
        assert!(
            reply.starts_with("SIP/2.0 501 Not Implemented\r\n"),
            "{reply}"
        );
        assert!(reply.contains("Call-ID: c1\r\n"));
        let raw = split(format!("BYE <<bad SIP/2.0\r\n{HEADERS}").as_bytes()).unwrap();
        let reply = String::from_utf8(reply_to_malformed(&raw, src, "bad").unwrap()).unwrap();
        assert!(reply.starts_with("SIP/2.0 400 Bad Request\r\n"), "{reply}");
    }

    #[test]
    fn an_unframable_request_gets_413_from_its_head() {
        let src: SocketAddr = "10.0.0.9:5060".parse().unwrap();
        let head = format!("OPTIONS sip:b@h SIP/2.0\r\nl: 18446744073709551615\r\n{HEADERS}");
        let reply = reply_to_unframable(head.as_bytes(), src, 413, "too \"big\"\r\n").unwrap();
        let reply = String::from_utf8(reply).unwrap();
        assert!(
            reply.starts_with("SIP/2.0 413 Request Entity Too Large\r\n"),
            "{reply}"
        );
        assert!(reply.contains("Call-ID: c1\r\n"), "{reply}");
        assert!(
            reply.contains("Warning: 399 callbridge \"too big\"\r\n"),
            "{reply}"
        );
        assert!(reply.ends_with("Content-Length: 0\r\n\r\n"), "{reply}");
        let response = format!("SIP/2.0 200 OK\r\n{HEADERS}");
        assert!(reply_to_unframable(response.as_bytes(), src, 400, "x").is_none());
    }

    #[test]
    fn ack_responses_and_headerless_requests_get_nothing() {
        let src: SocketAddr = "10.0.0.9:5060".parse().unwrap();
        let raw = split(format!("ACK sip:b@h SIP/2.0\r\n{HEADERS}").as_bytes()).unwrap();
        assert!(reply_to_malformed(&raw, src, "x").is_none());
        let raw = split(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n\r\n").unwrap();
        assert!(reply_to_malformed(&raw, src, "x").is_none());
        let raw = split(b"BYE sip:b@h SIP/2.0\r\nCall-ID: x\r\n\r\n").unwrap();
        assert!(reply_to_malformed(&raw, src, "x").is_none());
    }
}
