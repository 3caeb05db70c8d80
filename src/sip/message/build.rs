//! Builders for the requests and responses the user agent sends.

use std::net::SocketAddr;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response, StatusCode, Uri, Version};

use super::{cseq, header_param};
use crate::sip::transport::Peer;

/// Methods we accept, for `Allow`.
pub(crate) const ALLOW: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, REFER, NOTIFY, PRACK";

/// The standard reason phrase of the status codes we send.
pub(crate) fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        420 => "Bad Extension",
        422 => "Session Interval Too Small",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        _ => "Unknown",
    }
}

/// A status code that rsip serialises with its proper reason phrase (rsip prints its
/// own variants in CamelCase, e.g. `400 BadRequest`).
pub(crate) fn status(code: u16) -> StatusCode {
    StatusCode::Other(code, reason_phrase(code).into())
}

/// `host:port`, with brackets around IPv6 addresses.
pub(crate) fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// A `Via` value for our transport and address with `rport` (RFC 3581).
pub(crate) fn via(local: Peer, branch: &str) -> String {
    format!(
        "SIP/2.0/{} {};branch={branch};rport",
        local.transport.via_name(),
        host_port(local.addr)
    )
}

/// Our `Contact` URI for `user` (with `;transport=` on TCP/TLS).
pub(crate) fn contact_uri(user: &str, local: Peer) -> String {
    let mut uri = format!("sip:{user}@{}", host_port(local.addr));
    if let Some(t) = local.transport.uri_param() {
        uri.push_str(";transport=");
        uri.push_str(t);
    }
    uri
}

/// A random token of `n` hex digits.
pub(crate) fn random_hex(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        out.push_str(&format!("{:016x}", rand::random::<u64>()));
    }
    out.truncate(n);
    out
}

/// A new RFC 3261 branch (magic cookie `z9hG4bK`).
pub(crate) fn new_branch() -> String {
    format!("z9hG4bK{}", random_hex(20))
}

/// Serialises a request.
pub(crate) fn request_bytes(request: &Request) -> Vec<u8> {
    request.to_string().into_bytes()
}

/// Serialises a response.
pub(crate) fn response_bytes(response: &Response) -> Vec<u8> {
    response.to_string().into_bytes()
}

/// Everything an INVITE needs.
#[derive(Debug, Clone)]
pub(crate) struct InviteParts {
    /// Request-URI (also the To URI).
    pub uri: Uri,
    /// `From` value with tag.
    pub from: String,
    /// `To` value (no tag).
    pub to: String,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// `Via` value.
    pub via: String,
    /// `Contact` value.
    pub contact: String,
    /// `User-Agent` value.
    pub user_agent: String,
    /// `X-Correlation-ID` value.
    pub correlation_id: String,
    /// Extra headers (extensions, identity, credentials), before the body headers.
    pub extra: Vec<Header>,
    /// SDP offer.
    pub sdp: String,
}

/// Builds the initial INVITE.
pub(crate) fn invite(p: InviteParts) -> Request {
    let headers = vec![
        Header::Via(p.via.into()),
        Header::MaxForwards("70".into()),
        Header::From(p.from.into()),
        Header::To(p.to.into()),
        Header::CallId(p.call_id.into()),
        Header::CSeq(format!("{} INVITE", p.cseq).into()),
        Header::Contact(p.contact.into()),
        Header::UserAgent(p.user_agent.into()),
        Header::Other("X-Correlation-ID".into(), p.correlation_id),
        Header::Allow(ALLOW.into()),
    ];
    let mut headers = headers;
    headers.extend(p.extra);
    headers.push(Header::ContentType("application/sdp".into()));
    headers.push(Header::ContentLength(p.sdp.len().to_string().into()));
    Request {
        method: Method::Invite,
        uri: p.uri,
        version: Version::V2,
        headers: headers.into(),
        body: p.sdp.into_bytes(),
    }
}

/// Copies the headers of `request` that `keep` selects, in order.
fn copy_headers(request: &Request, keep: fn(&Header) -> bool) -> Vec<Header> {
    request
        .headers
        .iter()
        .filter(|h| keep(h))
        .cloned()
        .collect()
}

/// The first Via of `request` (for CANCEL and non-2xx ACK, which reuse it).
fn top_via(request: &Request) -> Vec<Header> {
    request
        .headers
        .iter()
        .find(|h| matches!(h, Header::Via(_)))
        .cloned()
        .into_iter()
        .collect()
}

/// A request that reuses the INVITE's top Via (same branch), Request-URI, Call-ID,
/// From and Route, with `To` and CSeq method as given (RFC 3261 §9.1, §17.1.1.3).
fn same_transaction_request(invite: &Request, method: Method, to: Header) -> Request {
    let seq = cseq(invite).map(|(seq, _)| seq).unwrap_or(1);
    let mut headers = top_via(invite);
    headers.push(Header::MaxForwards("70".into()));
    headers.extend(copy_headers(invite, |h| matches!(h, Header::From(_))));
    headers.push(to);
    headers.extend(copy_headers(invite, |h| matches!(h, Header::CallId(_))));
    headers.push(Header::CSeq(format!("{seq} {method}").into()));
    headers.extend(copy_headers(invite, |h| {
        matches!(h, Header::Route(_) | Header::UserAgent(_))
    }));
    headers.push(Header::ContentLength("0".into()));
    Request {
        method,
        uri: invite.uri.clone(),
        version: Version::V2,
        headers: headers.into(),
        body: Vec::new(),
    }
}

/// CANCEL for a pending INVITE (same branch, own transaction, RFC 3261 §9.1).
pub(crate) fn cancel(invite: &Request) -> Request {
    let to = invite
        .headers
        .iter()
        .find(|h| matches!(h, Header::To(_)))
        .cloned()
        .unwrap_or_else(|| Header::To("<sip:unknown@invalid>".into()));
    same_transaction_request(invite, Method::Cancel, to)
}

/// ACK for a 3xx-6xx response, sent by the INVITE client transaction (§17.1.1.3).
pub(crate) fn ack_for_non_2xx(invite: &Request, response: &Response) -> Request {
    let to = response
        .headers
        .iter()
        .find(|h| matches!(h, Header::To(_)))
        .cloned()
        .unwrap_or_else(|| Header::To("<sip:unknown@invalid>".into()));
    same_transaction_request(invite, Method::Ack, to)
}

/// Adds `received`/`rport` to the first Via value (RFC 3261 §18.2.1, RFC 3581).
pub(crate) fn stamp_via(value: &str, source: SocketAddr) -> String {
    let (first, rest) = match value.split_once(',') {
        Some((first, rest)) => (first, Some(rest)),
        None => (value, None),
    };
    let mut parts = first.split(';').map(str::trim);
    let sent = parts.next().unwrap_or_default();
    let sent_host = sent_by_host(sent.split_whitespace().nth(1).unwrap_or_default());
    let wants_rport = header_param(first, "rport").is_some();
    let mut out = sent.to_string();
    for p in parts {
        let name = p.split('=').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("rport") {
            continue;
        }
        out.push(';');
        out.push_str(p);
    }
    if wants_rport || sent_host != source.ip().to_string() {
        out.push_str(&format!(";received={}", source.ip()));
    }
    if wants_rport {
        out.push_str(&format!(";rport={}", source.port()));
    }
    if let Some(rest) = rest {
        out.push(',');
        out.push_str(rest);
    }
    out
}

/// The host of a Via sent-by (`h:p`, `[v6]:p`, `h`), without brackets.
fn sent_by_host(host_port: &str) -> &str {
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    match host_port.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => host_port,
    }
}

/// A response to `request` (Via stamped for `source`, To tag added for non-100).
pub(crate) fn response(
    request: &Request,
    code: u16,
    to_tag: Option<&str>,
    source: SocketAddr,
    extra: Vec<Header>,
) -> Response {
    response_with_body(request, code, to_tag, source, extra, None)
}

/// A response with an optional body (`content_type`, bytes).
pub(crate) fn response_with_body(
    request: &Request,
    code: u16,
    to_tag: Option<&str>,
    source: SocketAddr,
    extra: Vec<Header>,
    body: Option<(String, Vec<u8>)>,
) -> Response {
    let mut headers = Vec::new();
    let mut first_via = true;
    for header in request.headers.iter() {
        match header {
            Header::Via(via) if first_via => {
                first_via = false;
                headers.push(Header::Via(stamp_via(via.value(), source).into()));
            }
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(header.clone())
            }
            Header::To(to) => {
                let value = to.value();
                match to_tag {
                    Some(tag) if code > 100 && header_param(value, "tag").is_none() => {
                        headers.push(Header::To(format!("{value};tag={tag}").into()))
                    }
                    _ => headers.push(header.clone()),
                }
            }
            _ => {}
        }
    }
    headers.extend(extra);
    let body = match body {
        Some((content_type, bytes)) => {
            headers.push(Header::ContentType(content_type.into()));
            bytes
        }
        None => Vec::new(),
    };
    headers.push(Header::ContentLength(body.len().to_string().into()));
    Response {
        status_code: status(code),
        version: Version::V2,
        headers: headers.into(),
        body,
    }
}

/// The same request again after a 401/407 or a 422 (RFC 3261 §22.2, RFC 4028 §7.4):
/// a new top Via (`via`), CSeq number `seq`, the old credentials replaced by `auth`
/// (when given) and the headers named in `replace` swapped for `set`.
pub(crate) fn resend(
    request: &Request,
    via: String,
    seq: u32,
    auth: Option<Vec<Header>>,
    set: Vec<Header>,
) -> Request {
    let is_auth =
        |h: &Header| matches!(h, Header::Authorization(_) | Header::ProxyAuthorization(_));
    let set_names: Vec<String> = set.iter().map(header_name).collect();
    let mut headers: Vec<Header> = Vec::new();
    let mut via_done = false;
    for h in request.headers.iter() {
        match h {
            Header::Via(_) if !via_done => {
                via_done = true;
                headers.push(Header::Via(via.clone().into()));
            }
            Header::CSeq(_) => {
                headers.push(Header::CSeq(format!("{seq} {}", request.method).into()))
            }
            h if auth.is_some() && is_auth(h) => {}
            h if set_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&header_name(h))) => {}
            Header::ContentType(_) | Header::ContentLength(_) => {}
            h => headers.push(h.clone()),
        }
    }
    headers.extend(set);
    headers.extend(auth.unwrap_or_default());
    if let Some(ct) = request
        .headers
        .iter()
        .find(|h| matches!(h, Header::ContentType(_)))
    {
        headers.push(ct.clone());
    }
    headers.push(Header::ContentLength(request.body.len().to_string().into()));
    Request {
        method: request.method,
        uri: request.uri.clone(),
        version: Version::V2,
        headers: headers.into(),
        body: request.body.clone(),
    }
}

/// A header's name as it is written.
pub(crate) fn header_name(header: &Header) -> String {
    let line = header.to_string();
    line.split_once(':')
        .map(|(n, _)| n.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_received_and_rport() {
        let src: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        assert_eq!(
            stamp_via("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport", src),
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;received=192.0.2.1;rport=40000"
        );
        assert_eq!(
            stamp_via(
                "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1, SIP/2.0/UDP x",
                src
            ),
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1, SIP/2.0/UDP x"
        );
    }

    #[test]
    fn status_keeps_reason_phrase() {
        assert_eq!(
            status(481).to_string(),
            "481 Call/Transaction Does Not Exist"
        );
        assert_eq!(status(481).code(), 481);
        assert!(new_branch().starts_with("z9hG4bK"));
        assert_eq!(host_port("[::1]:5060".parse().unwrap()), "[::1]:5060");
    }
}
