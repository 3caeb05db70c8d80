//! Rewrites a datagram's header section into the strict form `rsip` 0.4 parses.
//!
//! rsip 0.4 does not understand compact header names (`v:`, `i:`, ...), folded header
//! lines, bare-LF line ends or whitespace before the colon, and it takes every byte after
//! the blank line as body regardless of `Content-Length`. This pass fixes all of those
//! before the bytes reach rsip.

/// A datagram split into its start line, normalised header lines and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawMessage {
    /// The request or status line, without line end.
    pub start_line: String,
    /// `(name, value)` pairs with canonical names for compact forms.
    pub headers: Vec<(String, String)>,
    /// The body, cut to `Content-Length` when that header is present.
    pub body: Vec<u8>,
}

/// Why a datagram could not be split into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SplitError {
    /// The datagram holds only CRLFs (a keepalive), nothing to parse.
    #[error("keepalive")]
    Keepalive,
    /// The header section is not UTF-8.
    #[error("header section is not UTF-8")]
    NotUtf8,
    /// No start line, or a header line without a colon.
    #[error("malformed header section: {0}")]
    Malformed(String),
    /// `Content-Length` is not a number or exceeds the bytes received.
    #[error("bad Content-Length: {0}")]
    ContentLength(String),
}

/// Expands a compact header name (RFC 3261 §7.3.3 and common extensions).
fn canonical_name(name: &str) -> &str {
    match name {
        "i" | "I" => "Call-ID",
        "v" | "V" => "Via",
        "f" | "F" => "From",
        "t" | "T" => "To",
        "m" | "M" => "Contact",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "e" | "E" => "Content-Encoding",
        "k" | "K" => "Supported",
        "s" | "S" => "Subject",
        "o" | "O" => "Event",
        "u" | "U" => "Allow-Events",
        "r" | "R" => "Refer-To",
        "b" | "B" => "Referred-By",
        "x" | "X" => "Session-Expires",
        other => other,
    }
}

/// Splits and normalises a datagram.
pub(crate) fn split(datagram: &[u8]) -> Result<RawMessage, SplitError> {
    let start = datagram
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .ok_or(SplitError::Keepalive)?;
    let data = &datagram[start..];
    let (head, body) = match find(data, b"\r\n\r\n") {
        Some(i) => (&data[..i], &data[i + 4..]),
        None => match find(data, b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &[][..]),
        },
    };
    let (start_line, headers) = split_head(head)?;
    let mut body = body.to_vec();
    let content_length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.clone());
    if let Some(value) = content_length {
        let len: usize = value
            .parse()
            .map_err(|_| SplitError::ContentLength(value.clone()))?;
        if len > body.len() {
            return Err(SplitError::ContentLength(format!(
                "{len} announced, {} received",
                body.len()
            )));
        }
        body.truncate(len);
    }
    Ok(RawMessage {
        start_line,
        headers,
        body,
    })
}

/// The start line and normalised header lines of a header section (without its
/// blank line); `Content-Length` is not checked here.
pub(crate) fn split_head(head: &[u8]) -> Result<(String, Vec<(String, String)>), SplitError> {
    let head = std::str::from_utf8(head).map_err(|_| SplitError::NotUtf8)?;
    let mut lines: Vec<String> = Vec::new();
    for line in head.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.starts_with([' ', '\t']) {
            // Folded continuation of the previous header line (RFC 3261 §7.3.1).
            let has_header = lines.len() > 1;
            match lines.last_mut() {
                Some(prev) if has_header => {
                    prev.push(' ');
                    prev.push_str(line.trim());
                }
                _ => return Err(SplitError::Malformed("continuation without header".into())),
            }
        } else {
            lines.push(line.to_string());
        }
    }
    let mut iter = lines.into_iter();
    let start_line = iter
        .next()
        .filter(|l| !l.trim().is_empty())
        .ok_or_else(|| SplitError::Malformed("no start line".into()))?;
    let mut headers = Vec::new();
    for line in iter {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| SplitError::Malformed(format!("header line without colon: {line}")))?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(SplitError::Malformed(format!("bad header name: {name}")));
        }
        headers.push((canonical_name(name).to_string(), value.trim().to_string()));
    }
    Ok((start_line, headers))
}

impl RawMessage {
    /// Serialises back into the strict CRLF form rsip parses.
    pub(crate) fn to_strict_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        out.extend_from_slice(self.start_line.as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// The first value of a header, by case-insensitive name.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_compact_names_and_unfolds() {
        let raw = b"BYE sip:a@b SIP/2.0\nv : SIP/2.0/UDP h;branch=z9hG4bKx\ni: abc\nSubject: a\n  b\nl: 3\n\nxyzEXTRA";
        let msg = split(raw).unwrap();
        assert_eq!(msg.start_line, "BYE sip:a@b SIP/2.0");
        assert_eq!(msg.header("Via"), Some("SIP/2.0/UDP h;branch=z9hG4bKx"));
        assert_eq!(msg.header("call-id"), Some("abc"));
        assert_eq!(msg.header("Subject"), Some("a b"));
        assert_eq!(msg.body, b"xyz");
    }

    #[test]
    fn rejects_short_body_and_detects_keepalive() {
        assert_eq!(split(b"\r\n\r\n"), Err(SplitError::Keepalive));
        let raw = b"BYE sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nabc";
        assert!(matches!(split(raw), Err(SplitError::ContentLength(_))));
        assert!(matches!(
            split(b"BYE sip:a@b SIP/2.0\r\nno colon here\r\n\r\n"),
            Err(SplitError::Malformed(_))
        ));
    }
}
