//! The proof that an INVITE was forwarded by another instance of the cluster,
//! sans-IO (the Unix time is passed in). The forwarding instance adds
//!
//! ```text
//! X-Callbridge-Forwarded: v1;ts=<unix seconds>;src=<transport>:<ip:port>;auth=<0|1>;mac=<hex>
//! ```
//!
//! where `src` is the trunk address it admitted the INVITE from, `auth=1` says it
//! checked the trunk's digest, and `mac` is HMAC-SHA256 with `cluster.forward_secret`
//! over those fields, the Call-ID, the CSeq, the From tag and the body. The receiving
//! instance believes `src` and `auth` only from a trusted proxy's address, with a
//! MAC that checks out (compared in constant time) and a timestamp within
//! `cluster.forward_max_age`; anything else leaves the message as the proxy's own,
//! judged by the proxy's address. A Via never decides who sent a request.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use rsip::{Header, Request};

use crate::sip::message::{call_id, cseq, from_tag, header_values};
use crate::sip::transport::{Peer, Transport};

/// The header's name.
pub(crate) const HEADER: &str = "X-Callbridge-Forwarded";
/// What the MAC input starts with (a new format gets a new version).
const DOMAIN: &[u8] = b"callbridge-forwarded-v1\n";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Who first sent a forwarded INVITE, as the forwarding instance vouches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Origin {
    /// The trunk's address (and transport) the forwarding instance admitted.
    pub source: Peer,
    /// The forwarding instance checked the trunk's digest credentials.
    pub digest_checked: bool,
}

/// Why a forwarded INVITE's header was not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ForwardedError {
    /// No header: the message is the proxy's own.
    #[error("no {HEADER} header")]
    Missing,
    /// More than one header.
    #[error("{HEADER} appears more than once")]
    Repeated,
    /// A field is missing or unreadable.
    #[error("{HEADER}: bad or missing `{0}`")]
    Malformed(&'static str),
    /// The MAC does not match (another secret, or a forged or altered message).
    #[error("{HEADER}: signature does not match")]
    BadSignature,
    /// The timestamp is outside the validity window.
    #[error("{HEADER}: timestamp {age_secs}s away from now, more than {max_secs}s")]
    Expired {
        /// How far the timestamp is from now.
        age_secs: u64,
        /// The window.
        max_secs: u64,
    },
}

/// The cluster's forwarding key and validity window.
#[derive(Clone)]
pub(crate) struct ForwardKey {
    /// `cluster.forward_secret`.
    secret: Vec<u8>,
    /// `cluster.forward_max_age`.
    max_age: Duration,
}

impl std::fmt::Debug for ForwardKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardKey")
            .field("secret", &"<redacted>")
            .field("max_age", &self.max_age)
            .finish()
    }
}

impl ForwardKey {
    /// A key from the shared secret, accepting headers up to `max_age` old.
    pub(crate) fn new(secret: &[u8], max_age: Duration) -> Self {
        Self {
            secret: secret.to_vec(),
            max_age,
        }
    }

    /// The header the forwarding instance adds to `request` at Unix time `unix`.
    pub(crate) fn stamp(&self, unix: u64, origin: Origin, request: &Request) -> Option<Header> {
        let fields = Fields::new(unix, origin);
        let mac = self.mac(&fields, request)?;
        let tag = hex(&mac.finalize().into_bytes());
        Some(Header::Other(
            HEADER.into(),
            format!("{};mac={tag}", fields.text()),
        ))
    }

    /// The origin vouched for by `request`'s header, checked at Unix time `unix`.
    pub(crate) fn verify(&self, unix: u64, request: &Request) -> Result<Origin, ForwardedError> {
        let values = header_values(&request.headers, HEADER);
        let value = match values.as_slice() {
            [] => return Err(ForwardedError::Missing),
            [one] => one,
            _ => return Err(ForwardedError::Repeated),
        };
        let (fields, tag) = Fields::parse(value)?;
        let mac = self
            .mac(&fields, request)
            .ok_or(ForwardedError::Malformed("Call-ID or CSeq"))?;
        // `verify_slice` compares in constant time.
        mac.verify_slice(&tag)
            .map_err(|_| ForwardedError::BadSignature)?;
        let age_secs = unix.abs_diff(fields.ts);
        if age_secs > self.max_age.as_secs() {
            return Err(ForwardedError::Expired {
                age_secs,
                max_secs: self.max_age.as_secs(),
            });
        }
        Ok(fields.origin)
    }

    /// The MAC over `fields` and what identifies `request`; `None` without a
    /// Call-ID or CSeq.
    fn mac(&self, fields: &Fields, request: &Request) -> Option<HmacSha256> {
        let mut mac = HmacSha256::new_from_slice(&self.secret).ok()?;
        let (seq, method) = cseq(request)?;
        mac.update(DOMAIN);
        for part in [
            fields.text(),
            call_id(request)?,
            format!("{seq} {method}"),
            from_tag(request).unwrap_or_default(),
        ] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        mac.update(&request.body);
        Some(mac)
    }
}

/// The signed fields of the header.
#[derive(Debug, Clone, Copy)]
struct Fields {
    /// Unix seconds when it was added.
    ts: u64,
    /// What it vouches for.
    origin: Origin,
}

impl Fields {
    fn new(ts: u64, origin: Origin) -> Self {
        Self { ts, origin }
    }

    /// The header value without the MAC.
    fn text(&self) -> String {
        format!(
            "v1;ts={};src={}:{};auth={}",
            self.ts,
            self.origin.source.transport,
            self.origin.source.addr,
            u8::from(self.origin.digest_checked)
        )
    }

    /// The fields and the MAC bytes of a header value.
    fn parse(value: &str) -> Result<(Fields, Vec<u8>), ForwardedError> {
        let mut parts = value.trim().split(';');
        if parts.next() != Some("v1") {
            return Err(ForwardedError::Malformed("version"));
        }
        let (mut ts, mut src, mut auth, mut mac) = (None, None, None, None);
        for part in parts {
            match part.split_once('=') {
                Some(("ts", v)) => ts = v.parse::<u64>().ok(),
                Some(("src", v)) => src = parse_peer(v),
                Some(("auth", "0")) => auth = Some(false),
                Some(("auth", "1")) => auth = Some(true),
                Some(("mac", v)) => mac = unhex(v),
                _ => return Err(ForwardedError::Malformed("field")),
            }
        }
        let fields = Fields {
            ts: ts.ok_or(ForwardedError::Malformed("ts"))?,
            origin: Origin {
                source: src.ok_or(ForwardedError::Malformed("src"))?,
                digest_checked: auth.ok_or(ForwardedError::Malformed("auth"))?,
            },
        };
        Ok((fields, mac.ok_or(ForwardedError::Malformed("mac"))?))
    }
}

/// `udp:192.0.2.1:5060` (or `tcp:`, `tls:`, IPv6 as `[::1]:5060`).
fn parse_peer(text: &str) -> Option<Peer> {
    let (transport, addr) = text.split_once(':')?;
    Some(Peer {
        transport: Transport::parse(transport)?,
        addr: addr.parse().ok()?,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 64 hex digits as 32 bytes.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
#[path = "forwarded_tests.rs"]
mod tests;
