//! Framing of SIP messages on a byte stream (TCP/TLS, RFC 3261 §18.3), sans-IO: the
//! connection task pushes what it reads and takes whole messages out.
//!
//! Every number here comes from the peer, so the arithmetic is checked: a
//! `Content-Length` that is not plain digits, that differs between two headers, or
//! whose message would pass the size limit (`sip.max_message_bytes`) ends the stream
//! with a [`FramingError`] (the connection is then answered, when it can be, and
//! closed). Nothing is rescanned: the search for the end of the header section
//! resumes where the last read left it, and once the header section is read the
//! message's total length is known, so a peer sending one byte at a time costs
//! linear work, not quadratic.

/// Why a byte stream cannot be framed any further (the connection is closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The header section grew past the limit without an end.
    #[error("header section longer than {0} bytes")]
    HeaderTooLong(usize),
    /// `Content-Length` is not a plain decimal number, or two of them differ.
    #[error("bad Content-Length: {0}")]
    ContentLength(String),
    /// The message would be longer than the limit.
    #[error(
        "message of {length} bytes (Content-Length {content_length}) exceeds the {max} byte limit"
    )]
    TooLarge {
        /// The announced body length.
        content_length: u64,
        /// Header section plus body, saturated at `u64::MAX`.
        length: u64,
        /// The limit (`sip.max_message_bytes`).
        max: usize,
    },
}

impl FramingError {
    /// The status code for a reply to the request whose framing failed: 413 when it
    /// is too large, else 400.
    pub fn status(&self) -> u16 {
        match self {
            FramingError::TooLarge { .. } | FramingError::HeaderTooLong(_) => 413,
            FramingError::ContentLength(_) => 400,
        }
    }
}

/// Cuts SIP messages out of a TCP/TLS byte stream by their `Content-Length`.
#[derive(Debug)]
pub struct StreamFramer {
    /// Bytes received and not yet framed.
    buf: Vec<u8>,
    /// Largest message accepted (header section and body).
    max_message: usize,
    /// CRLFs seen since the last message (two make a keepalive ping).
    crlfs: usize,
    /// The last byte pushed was a CR: a CRLF may be split across reads.
    pending_cr: bool,
    /// Keepalive pings (CRLFCRLF, RFC 5626 §4.4.1) seen and not yet taken.
    pings: usize,
    /// Bytes of `buf` already searched for the end of the header section.
    scanned: usize,
    /// Where the header section of the message at the front ends (its blank line
    /// excluded), once found.
    head_end: Option<usize>,
    /// Length of the message at the front, once its header section is read.
    total: Option<usize>,
}

impl Default for StreamFramer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE)
    }
}

/// The default limit on one message, as for a UDP datagram.
pub const DEFAULT_MAX_MESSAGE: usize = 65_535;

impl StreamFramer {
    /// A framer accepting messages up to `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            buf: Vec::new(),
            max_message,
            crlfs: 0,
            pending_cr: false,
            pings: 0,
            scanned: 0,
            head_end: None,
            total: None,
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

    /// The header section of the message being framed (up to and including its
    /// blank line), once it has been read: what a reply to a message whose framing
    /// failed is built from.
    pub fn head(&self) -> Option<&[u8]> {
        let end = self.head_end?.checked_add(4)?;
        self.buf.get(..end)
    }

    /// True when no partial message is held (only keepalive CRLFs at most).
    pub fn is_idle(&self) -> bool {
        self.buf.iter().all(|b| matches!(b, b'\r' | b'\n'))
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. CRLF
    /// keepalives between messages (RFC 5626 §3.5.1) are skipped and counted
    /// ([`take_pings`](Self::take_pings)). After an error the stream cannot be
    /// framed any more.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        if self.head_end.is_none() && self.scanned == 0 {
            self.skip_keepalives();
            if self.buf.is_empty() {
                return Ok(None);
            }
            self.crlfs = 0; // a message starts: a lone CRLF before it was a pong
        }
        let total = match self.total {
            Some(total) => total,
            None => {
                let Some(head_end) = self.find_head_end() else {
                    if self.buf.len() > self.max_message {
                        return Err(FramingError::HeaderTooLong(self.max_message));
                    }
                    return Ok(None);
                };
                self.head_end = Some(head_end);
                let total = self.message_length(head_end)?;
                self.total = Some(total);
                total
            }
        };
        if self.buf.len() < total {
            return Ok(None);
        }
        let rest = self.buf.split_off(total);
        self.scanned = 0;
        self.head_end = None;
        self.total = None;
        Ok(Some(std::mem::replace(&mut self.buf, rest)))
    }

    /// Drops the CRLFs in front of a message, counting pings.
    fn skip_keepalives(&mut self) {
        let skip = self
            .buf
            .iter()
            .position(|b| !matches!(b, b'\r' | b'\n'))
            .unwrap_or(self.buf.len());
        self.crlfs += self.buf[..skip].iter().filter(|b| **b == b'\n').count();
        self.pings += self.crlfs / 2;
        self.crlfs %= 2;
        self.buf.drain(..skip);
    }

    /// Where the header section ends (the index of its CRLFCRLF), searching only
    /// bytes not searched before (three back, for a CRLFCRLF split across reads).
    fn find_head_end(&mut self) -> Option<usize> {
        let from = self.scanned.saturating_sub(3);
        let found = self.buf[from..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| from + i);
        if found.is_none() {
            self.scanned = self.buf.len();
        }
        found
    }

    /// The whole length of the message whose header section ends at `head_end`,
    /// checked against the limit.
    fn message_length(&self, head_end: usize) -> Result<usize, FramingError> {
        let head = String::from_utf8_lossy(&self.buf[..head_end]);
        let mut content_length: Option<u64> = None;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim();
            if !(name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l")) {
                continue;
            }
            let length = parse_content_length(value)?;
            match content_length {
                Some(earlier) if earlier != length => {
                    return Err(FramingError::ContentLength(format!(
                        "two Content-Length headers ({earlier} and {length})"
                    )));
                }
                _ => content_length = Some(length),
            }
        }
        // RFC 3261 §18.3: on a stream the header is mandatory; without it, no body.
        let content_length = content_length.unwrap_or(0);
        let head_len = u64::try_from(head_end)
            .unwrap_or(u64::MAX)
            .saturating_add(4);
        let length = head_len.saturating_add(content_length);
        let too_large = FramingError::TooLarge {
            content_length,
            length,
            max: self.max_message,
        };
        match usize::try_from(length) {
            Ok(total) if total <= self.max_message => Ok(total),
            _ => Err(too_large),
        }
    }
}

/// A `Content-Length` value: decimal digits only (no sign, no fraction, no space
/// inside); more digits than a `u64` holds read as `u64::MAX` (too large anyway).
fn parse_content_length(value: &str) -> Result<u64, FramingError> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FramingError::ContentLength(
            value.chars().take(40).collect(),
        ));
    }
    Ok(value.parse().unwrap_or(u64::MAX))
}

/// What framing `stream` yields: the messages, and whether it ended in an error.
fn frame_all(chunks: &mut dyn Iterator<Item = &[u8]>, max: usize) -> (Vec<Vec<u8>>, bool) {
    let mut framer = StreamFramer::new(max);
    let mut out = Vec::new();
    for chunk in chunks {
        framer.push(chunk);
        loop {
            match framer.next_message() {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

/// The stream fuzz target's body (see `fuzz/fuzz_targets/sip_stream.rs`): the first
/// byte seeds the read sizes, the rest is the byte stream. It is framed whole and in
/// reads of varying sizes (1 to 64 bytes); both must give the same messages and both
/// fail or neither, every message must fit the limit and start with no CRLF, and
/// each is parsed like the endpoint parses it. Returns the number of messages.
pub fn fuzz_stream(data: &[u8]) -> usize {
    const MAX: usize = 4096;
    let Some((&seed, stream)) = data.split_first() else {
        return 0;
    };
    let (whole, whole_failed) = frame_all(&mut std::iter::once(stream), MAX);
    let mut state = u32::from(seed) | 1;
    let mut rest = stream;
    let mut chunks = std::iter::from_fn(|| {
        if rest.is_empty() {
            return None;
        }
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let size = usize::try_from(state >> 16).unwrap_or(1) % 64 + 1;
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        Some(chunk)
    });
    let (split, split_failed) = frame_all(&mut chunks, MAX);
    assert_eq!(whole_failed, split_failed, "framing failed one way only");
    let shorter = whole.len().min(split.len());
    assert_eq!(
        whole[..shorter],
        split[..shorter],
        "reads changed the messages"
    );
    if !whole_failed {
        assert_eq!(whole.len(), split.len(), "reads changed the message count");
    }
    for message in &whole {
        assert!(message.len() <= MAX, "message over the limit");
        assert!(!message.starts_with(b"\r") && !message.starts_with(b"\n"));
        let _ = crate::sip::parse_message(message);
    }
    whole.len()
}

#[cfg(test)]
#[path = "framer_tests.rs"]
mod tests;
