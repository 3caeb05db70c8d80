//! SIP messages: parsing datagrams with `rsip` (after a normalising pass), header
//! accessors, and builders for the requests and responses the user agent sends.
//!
//! rsip 0.4 gotchas handled here: it drops the reason phrase of well-known status codes
//! (we read it from the raw status line), prints `StatusCode` names in CamelCase (we send
//! `StatusCode::Other(code, phrase)`), has no compact header forms, and its typed
//! parameter parser rejects quoted or IPv6 values (tags, branches and Contact URIs are
//! read with the small scanners below instead).

pub(crate) mod build;
pub(crate) mod fallback;
pub(crate) mod normalize;

use rsip::headers::UntypedHeader;
use rsip::message::HeadersExt;
use rsip::{Header, Method, Request, Response, SipMessage};

pub(crate) use normalize::{RawMessage, SplitError};

/// A parsed inbound datagram.
#[derive(Debug, Clone)]
pub(crate) enum Incoming {
    /// A request.
    Request(Request),
    /// A response with its reason phrase as received.
    Response(Response, String),
}

/// Why a datagram could not be parsed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ParseError {
    /// CRLF keepalive: not an error, nothing to do.
    #[error("keepalive")]
    Keepalive,
    /// The datagram could not be split into start line, headers and body.
    #[error(transparent)]
    Split(SplitError),
    /// rsip refused the normalised message (the raw form is kept to answer 400).
    #[error("rsip: {error}")]
    Rsip {
        /// The normalised message.
        raw: Box<RawMessage>,
        /// rsip's error text.
        error: String,
    },
    /// A mandatory header is missing or unreadable.
    #[error("missing or bad {header}")]
    MissingHeader {
        /// The normalised message.
        raw: Box<RawMessage>,
        /// Which header.
        header: &'static str,
    },
}

/// Parses a datagram into a request or a response.
pub(crate) fn parse(datagram: &[u8]) -> Result<Incoming, ParseError> {
    let raw = normalize::split(datagram).map_err(|e| match e {
        SplitError::Keepalive => ParseError::Keepalive,
        other => ParseError::Split(other),
    })?;
    if let Some(error) = control_character(&raw) {
        return Err(ParseError::Rsip {
            raw: Box::new(raw),
            error,
        });
    }
    let message = SipMessage::try_from(raw.to_strict_bytes()).map_err(|e| ParseError::Rsip {
        raw: Box::new(raw.clone()),
        error: e.to_string(),
    })?;
    for header in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if raw.header(header).is_none() {
            return Err(ParseError::MissingHeader {
                raw: Box::new(raw),
                header,
            });
        }
    }
    if cseq(&message).is_none() || branch(&message).is_none() {
        let header = if cseq(&message).is_none() {
            "CSeq"
        } else {
            "Via branch"
        };
        return Err(ParseError::MissingHeader {
            raw: Box::new(raw),
            header,
        });
    }
    Ok(match message {
        SipMessage::Request(request) => Incoming::Request(request),
        SipMessage::Response(response) => {
            let reason = raw
                .start_line
                .splitn(3, ' ')
                .nth(2)
                .unwrap_or_default()
                .trim()
                .to_string();
            Incoming::Response(response, reason)
        }
    })
}

/// Names the first control character (other than tab) in the start line or a header
/// value: RFC 3261 §25.1 allows none there, and one that got through would reach call
/// records, logs and other peers (a NUL in a Call-ID made PostgreSQL refuse the row).
fn control_character(raw: &RawMessage) -> Option<String> {
    let bad = |text: &str| text.chars().find(|c| c.is_control() && *c != '\t');
    if let Some(c) = bad(&raw.start_line) {
        return Some(format!(
            "the start line holds control character U+{:04X}; SIP allows none there",
            u32::from(c)
        ));
    }
    raw.headers.iter().find_map(|(name, value)| {
        bad(value).map(|c| {
            format!(
                "header {name} holds control character U+{:04X}; SIP header values allow none (RFC 3261 §25.1)",
                u32::from(c)
            )
        })
    })
}

/// The value of `;name=value` (or `Some("")` for a bare `;name`) in a header value's
/// parameters (after the `>` of a name-addr, or after the first `;` otherwise).
pub(crate) fn header_param(value: &str, name: &str) -> Option<String> {
    let first = first_element(value);
    let params = match outside_quotes(first, '<') {
        Some(lt) => outside_quotes(&first[lt..], '>').map(|gt| &first[lt + gt + 1..])?,
        None => outside_quotes(first, ';').map(|i| &first[i..])?,
    };
    split_outside_quotes(params, ';')
        .into_iter()
        .map(str::trim)
        .find_map(|p| match p.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case(name) => {
                Some(v.trim().trim_matches('"').to_string())
            }
            None if p.eq_ignore_ascii_case(name) => Some(String::new()),
            _ => None,
        })
}

/// Byte index of the first `c` that is not inside double quotes.
fn outside_quotes(s: &str, c: char) -> Option<usize> {
    let mut quoted = false;
    s.char_indices().find_map(|(i, ch)| {
        if ch == '"' {
            quoted = !quoted;
        }
        (!quoted && ch == c).then_some(i)
    })
}

/// Splits on `sep` outside double quotes.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let (mut out, mut quoted, mut start) = (Vec::new(), false, 0);
    for (i, ch) in s.char_indices() {
        if ch == '"' {
            quoted = !quoted;
        } else if ch == sep && !quoted {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// The first element of a comma-separated header value (commas inside `<>` or quotes
/// do not split).
pub(crate) fn first_element(value: &str) -> &str {
    split_elements(value).into_iter().next().unwrap_or(value)
}

/// Splits a comma-separated header value into its elements.
pub(crate) fn split_elements(value: &str) -> Vec<&str> {
    let (mut out, mut depth, mut quoted, mut start) = (Vec::new(), 0i32, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// The URI of a name-addr or addr-spec (`"Bob" <sip:b@h>;x` gives `sip:b@h`).
pub(crate) fn addr_uri(value: &str) -> &str {
    let first = first_element(value);
    if let Some(lt) = outside_quotes(first, '<') {
        let inner = &first[lt + 1..];
        return inner.split('>').next().unwrap_or(inner).trim();
    }
    first.split(';').next().unwrap_or(first).trim()
}

/// Where responses for a Via value's first element go (RFC 3261 §18.2.2, RFC 3581):
/// its transport, `received` (else the sent-by host, which must be an IP literal)
/// and `rport` (else the sent-by port, else 5060 or 5061 for TLS).
pub(crate) fn via_peer(value: &str) -> Option<crate::sip::transport::Peer> {
    use crate::sip::transport::{Peer, Transport};
    let first = first_element(value);
    let sent = first.split(';').next()?.trim();
    let mut words = sent.split_whitespace();
    let transport = Transport::parse(words.next()?.rsplit('/').next()?)?;
    let host_port = words.next()?;
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    let ip: std::net::IpAddr = match header_param(first, "received") {
        Some(received) => received.parse().ok()?,
        None => host.parse().ok()?,
    };
    let default_port = if transport == Transport::Tls {
        5061
    } else {
        5060
    };
    let port = match header_param(first, "rport").and_then(|p| p.parse::<u16>().ok()) {
        Some(rport) => rport,
        None => match port {
            Some(p) => p.parse().ok()?,
            None => default_port,
        },
    };
    Some(Peer {
        transport,
        addr: std::net::SocketAddr::new(ip, port),
    })
}

/// The top Via's branch.
pub(crate) fn branch(message: &impl HeadersExt) -> Option<String> {
    let via = message.via_header().ok()?;
    header_param(via.value(), "branch").filter(|b| !b.is_empty())
}

/// The Call-ID.
pub(crate) fn call_id(message: &impl HeadersExt) -> Option<String> {
    Some(message.call_id_header().ok()?.value().trim().to_string())
}

/// CSeq number and method.
pub(crate) fn cseq(message: &impl HeadersExt) -> Option<(u32, Method)> {
    use rsip::headers::ToTypedHeader;
    let typed = message.cseq_header().ok()?.typed().ok()?;
    Some((typed.seq, typed.method))
}

/// The From tag.
pub(crate) fn from_tag(message: &impl HeadersExt) -> Option<String> {
    header_param(message.from_header().ok()?.value(), "tag").filter(|t| !t.is_empty())
}

/// The To tag.
pub(crate) fn to_tag(message: &impl HeadersExt) -> Option<String> {
    header_param(message.to_header().ok()?.value(), "tag").filter(|t| !t.is_empty())
}

/// The value of the first header matching `pick`.
pub(crate) fn header_value(headers: &rsip::Headers, pick: fn(&Header) -> bool) -> Option<String> {
    headers.iter().find(|h| pick(h)).map(header_text)
}

/// A header's value as text (`Other` headers included).
pub(crate) fn header_text(header: &Header) -> String {
    let line = header.to_string();
    match line.split_once(':') {
        Some((_, value)) => value.trim().to_string(),
        None => line,
    }
}

/// Every value of the headers called `name` (case-insensitive), typed or not, in order.
pub(crate) fn header_values(headers: &rsip::Headers, name: &str) -> Vec<String> {
    headers
        .iter()
        .filter_map(|h| {
            let line = h.to_string();
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
        .collect()
}

/// The first value of the header called `name`, if any.
pub(crate) fn header_first(headers: &rsip::Headers, name: &str) -> Option<String> {
    header_values(headers, name).into_iter().next()
}

/// True if a comma-separated option-tag header (`Supported`, `Require`, `Allow`...)
/// lists `tag` (case-insensitive).
pub(crate) fn lists_token(headers: &rsip::Headers, name: &str, tag: &str) -> bool {
    header_values(headers, name)
        .iter()
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(tag))
}

/// The body as UTF-8 text, or `None` if empty.
pub(crate) fn body_text(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        None
    } else {
        Some(String::from_utf8_lossy(body).into_owned())
    }
}

/// A short label (method, status) for logs and counters, read from raw bytes.
pub(crate) fn label(datagram: &[u8]) -> Option<(String, Option<u16>)> {
    let text = String::from_utf8_lossy(&datagram[..datagram.len().min(2048)]);
    let mut lines = text.lines();
    let first = lines.next()?;
    let cseq_method = || {
        text.lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("CSeq")
                    .then(|| value.split_whitespace().nth(1).map(str::to_string))?
            })
            .unwrap_or_else(|| "UNKNOWN".into())
    };
    if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
        let code = rest.get(..3)?.parse().ok()?;
        Some((cseq_method(), Some(code)))
    } else {
        Some((first.split(' ').next()?.to_string(), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_response_keeping_reason_phrase() {
        let raw = "SIP/2.0 486 Busy Here\r\nv: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport=5060\r\nf: <sip:a@h>;tag=1\r\nt: <sip:b@h>;tag=2\r\ni: cid\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n";
        match parse(raw.as_bytes()).unwrap() {
            Incoming::Response(r, reason) => {
                assert_eq!(r.status_code.code(), 486);
                assert_eq!(reason, "Busy Here");
                assert_eq!(branch(&r).as_deref(), Some("z9hG4bKabc"));
                assert_eq!(to_tag(&r).as_deref(), Some("2"));
                assert_eq!(call_id(&r).as_deref(), Some("cid"));
                assert_eq!(cseq(&r), Some((1, Method::Invite)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_headers_are_reported() {
        let raw =
            "BYE sip:a@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 BYE\r\n\r\n";
        assert!(matches!(
            parse(raw.as_bytes()),
            Err(ParseError::MissingHeader { .. })
        ));
        assert!(matches!(parse(b"\r\n\r\n"), Err(ParseError::Keepalive)));
        assert!(parse(b"\xff\xfe garbage").is_err());
    }

    #[test]
    fn control_characters_in_headers_are_refused_with_the_header_named() {
        let with = |call_id: &str| {
            format!(
                "INVITE sip:+1555@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            )
        };
        for bad in ["nul\0call", "esc\x1b[31m", "del\x7f", "bell\x07"] {
            match parse(with(bad).as_bytes()) {
                Err(ParseError::Rsip { error, raw }) => {
                    assert!(error.contains("Call-ID") && error.contains("U+"), "{error}");
                    assert!(!error.chars().any(|c| c.is_control()), "{error:?}");
                    // Still answerable: the 400 copies the headers it needs.
                    assert!(raw.header("Via").is_some());
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        // A tab is linear whitespace, not a control character to refuse.
        assert!(matches!(
            parse(with("tab\tok").as_bytes()),
            Ok(Incoming::Request(_))
        ));
    }

    #[test]
    fn scanners_handle_name_addr_and_lists() {
        let v = "\"A, B\" <sip:a@[::1]:5060;lr>;tag=\"x y\";+sip.instance=\"<urn:1>\"";
        assert_eq!(header_param(v, "tag").as_deref(), Some("x y"));
        assert_eq!(addr_uri(v), "sip:a@[::1]:5060;lr");
        assert_eq!(
            split_elements("<sip:p1;lr>, <sip:p2;lr>"),
            vec!["<sip:p1;lr>", "<sip:p2;lr>"]
        );
        assert_eq!(
            header_param("SIP/2.0/UDP h:1;rport;branch=z9hG4bK2", "rport").as_deref(),
            Some("")
        );
        assert_eq!(addr_uri("sip:x@h;transport=udp"), "sip:x@h");
    }

    #[test]
    fn via_peer_prefers_received_and_rport() {
        let p = via_peer("SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;received=192.0.2.1;rport=40000, SIP/2.0/UDP x").unwrap();
        assert_eq!(p.addr.to_string(), "192.0.2.1:40000");
        let p = via_peer("SIP/2.0/TCP [::1]:5080;branch=z9hG4bK1").unwrap();
        assert_eq!(
            p,
            crate::sip::transport::Peer {
                transport: crate::sip::transport::Transport::Tcp,
                addr: "[::1]:5080".parse().unwrap()
            }
        );
        assert_eq!(
            via_peer("SIP/2.0/TLS 10.0.0.1;branch=z9hG4bK1")
                .unwrap()
                .addr
                .port(),
            5061
        );
        assert_eq!(via_peer("SIP/2.0/UDP host.example;branch=z9hG4bK1"), None);
        assert_eq!(
            via_peer("SIP/2.0/UDP host.example;rport=1;received=10.1.1.1")
                .unwrap()
                .addr
                .to_string(),
            "10.1.1.1:1"
        );
    }

    #[test]
    fn labels_requests_and_responses() {
        assert_eq!(label(b"BYE sip:x SIP/2.0\r\n"), Some(("BYE".into(), None)));
        assert_eq!(
            label(b"SIP/2.0 200 OK\r\nCSeq: 2 BYE\r\n\r\n"),
            Some(("BYE".into(), Some(200)))
        );
    }
}
