//! Webhook signatures: `X-Callbridge-Signature: t=TIMESTAMP,v1=HEX` where
//! `HEX = HMAC-SHA256(secret, "TIMESTAMP.BODY")` and `TIMESTAMP` is Unix seconds at
//! the attempt. A receiver recomputes the HMAC over the raw body, compares in
//! constant time, and refuses a timestamp more than [`REPLAY_WINDOW_SECS`] away
//! from its clock (replay protection); the event `id` makes redelivery idempotent.
//!
//! Pure functions of their inputs; time is passed in.

use hmac::{KeyInit, Mac};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-callbridge-signature";

/// Tolerance receivers should apply to `t` (seconds), as documented.
pub const REPLAY_WINDOW_SECS: u64 = 300;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header is not `t=…,v1=…`.
    #[error("malformed signature header; expected t=TIMESTAMP,v1=HEX")]
    Malformed,
    /// The timestamp is outside the replay window.
    #[error("timestamp {0} is outside the replay window")]
    Stale(u64),
    /// No `v1` value matches.
    #[error("signature does not match")]
    Mismatch,
}

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Option<HmacSha256> {
    // HMAC takes keys of any length, so this is always `Some`.
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The header value for `body` signed with `secret` at Unix second `timestamp`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body)
        .map(|m| hex(&m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={timestamp},v1={digest}")
}

/// Verifies a header value against `body` at Unix second `now`; accepts any of
/// several `v1=` values (secret rotation).
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = v.parse::<u64>().ok(),
            Some(("v1", v)) => candidates.push(v),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(timestamp) > tolerance_secs {
        return Err(SignatureError::Stale(timestamp));
    }
    for candidate in candidates {
        let Some(bytes) = unhex(candidate) else {
            continue;
        };
        if mac(secret, timestamp, body).is_some_and(|m| m.verify_slice(&bytes).is_ok()) {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // HMAC-SHA256("secret", "1700000000.{}"), computed independently
        // (`printf '1700000000.{}' | openssl dgst -sha256 -hmac secret`).
        assert_eq!(
            sign(b"secret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn verify_accepts_good_and_refuses_tampered_stale_and_malformed() {
        let body = br#"{"id":"ev-1"}"#;
        let header = sign(b"k", 1000, body);
        assert_eq!(verify(b"k", &header, body, 1100, 300), Ok(()));
        assert_eq!(
            verify(b"k", &header, b"{\"id\":\"ev-2\"}", 1100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &header, body, 1100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"k", &header, body, 2000, 300),
            Err(SignatureError::Stale(1000))
        );
        assert_eq!(
            verify(b"k", "v1=00", body, 1000, 300),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"k", "garbage", body, 1000, 300),
            Err(SignatureError::Malformed)
        );
        let rotated = format!("{header},v1=deadbeef");
        assert_eq!(verify(b"k", &rotated, body, 1000, 300), Ok(()));
    }
}
