//! Digest authentication as a UAS (RFC 3261 §22.3, RFC 7616): the 407 challenge we
//! put on inbound INVITEs of trunks with `inbound_auth`, and the check of the
//! `Proxy-Authorization` answer. Sans-IO and clock-free (`now` is an input).
//!
//! Nonces are stateless: `<seconds since the first challenge, 8 hex><HMAC-SHA256 of
//! it, the realm, the source IP, the trunk and the Call-ID>`, valid for
//! [`NONCE_LIFETIME`]; an accepted nonce is remembered until it expires, so each one
//! admits a single INVITE (no replay). Never log an answer header or a digest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use rsip::{Header, Request};

use super::auth::{Algorithm, Challenge, Credentials, DigestInput, Qop, digest_response, params};
use super::message::header_values;

/// How long a nonce we hand out stays valid.
pub(crate) const NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// Most accepted nonces remembered (older ones are forgotten first).
const MAX_USED: usize = 16_384;

/// What a request is bound to: its nonce is only valid for the same values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binding<'a> {
    /// Protection space (our realm).
    pub realm: &'a str,
    /// Source IP of the request.
    pub source: IpAddr,
    /// Trunk name.
    pub trunk: &'a str,
    /// Call-ID of the request.
    pub call_id: &'a str,
}

/// Why an answer was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DigestFailure {
    /// No `Proxy-Authorization` for our realm.
    #[error("no credentials for our realm")]
    Missing,
    /// Our nonce, but too old: challenge again with `stale=true`.
    #[error("nonce expired")]
    Stale,
    /// A nonce we did not issue for this request, one already used, or a wrong digest.
    #[error("{0}")]
    Rejected(&'static str),
}

/// Issues and checks digest challenges.
pub(crate) struct DigestServer {
    /// HMAC key of the nonces (random per endpoint).
    secret: [u8; 32],
    /// Time origin of the nonce timestamps (the first challenge).
    epoch: Option<Instant>,
    /// Accepted nonces and when they were issued.
    used: HashMap<String, Instant>,
}

impl std::fmt::Debug for DigestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The nonce key is deliberately not printed.
        f.debug_struct("DigestServer")
            .field("epoch", &self.epoch)
            .field("nonces", &self.used.len())
            .finish_non_exhaustive()
    }
}

impl Default for DigestServer {
    fn default() -> Self {
        Self {
            secret: rand::random(),
            epoch: None,
            used: HashMap::new(),
        }
    }
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl DigestServer {
    /// The `Proxy-Authenticate` header of a 407 for a request with `binding`.
    pub(crate) fn challenge(&mut self, now: Instant, binding: Binding, stale: bool) -> Header {
        let epoch = *self.epoch.get_or_insert(now);
        let seconds = now.saturating_duration_since(epoch).as_secs() as u32;
        let nonce = self.nonce(seconds, binding);
        let mut value = format!(
            "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"",
            binding.realm
        );
        if stale {
            value.push_str(", stale=true");
        }
        Header::ProxyAuthenticate(value.into())
    }

    fn nonce(&self, seconds: u32, binding: Binding) -> String {
        let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            // HMAC takes keys of any length.
            Err(_) => return format!("{seconds:08x}"),
        };
        for part in [
            seconds.to_string(),
            binding.realm.to_string(),
            binding.source.to_string(),
            binding.trunk.to_string(),
            binding.call_id.to_string(),
        ] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        let tag = hex(&mac.finalize().into_bytes());
        format!("{seconds:08x}{}", &tag[..32])
    }

    /// Checks the `Proxy-Authorization` of `request` against `credentials`; on
    /// success the nonce is used up.
    pub(crate) fn verify(
        &mut self,
        now: Instant,
        request: &Request,
        credentials: &Credentials,
        binding: Binding,
    ) -> Result<(), DigestFailure> {
        let answer = header_values(&request.headers, "Proxy-Authorization")
            .into_iter()
            .filter_map(|v| {
                let (scheme, rest) = v.trim().split_once(char::is_whitespace)?;
                scheme.eq_ignore_ascii_case("Digest").then(|| params(rest))
            })
            .find(|p| p.get("realm").map(String::as_str) == Some(binding.realm))
            .ok_or(DigestFailure::Missing)?;
        let field = |name: &str| answer.get(name).map(String::as_str);
        let nonce = field("nonce").ok_or(DigestFailure::Rejected("no nonce"))?;
        let issued = nonce
            .get(..8)
            .and_then(|s| u32::from_str_radix(s, 16).ok())
            .ok_or(DigestFailure::Rejected("not our nonce"))?;
        let expected_nonce = self.nonce(issued, binding);
        if !constant_time_eq(nonce.as_bytes(), expected_nonce.as_bytes()) {
            return Err(DigestFailure::Rejected("not our nonce for this request"));
        }
        let Some(epoch) = self.epoch else {
            return Err(DigestFailure::Rejected("not our nonce"));
        };
        let issued_at = epoch + Duration::from_secs(u64::from(issued));
        if now.saturating_duration_since(issued_at) > NONCE_LIFETIME {
            return Err(DigestFailure::Stale);
        }
        if self.used.contains_key(nonce) {
            return Err(DigestFailure::Rejected("nonce already used"));
        }
        if field("username") != Some(credentials.username.as_str()) {
            return Err(DigestFailure::Rejected("unknown username"));
        }
        let algorithm = match field("algorithm").map(str::to_ascii_uppercase).as_deref() {
            None | Some("MD5") => Algorithm::Md5,
            Some("SHA-256") => Algorithm::Sha256,
            _ => return Err(DigestFailure::Rejected("unsupported algorithm")),
        };
        let qop = match field("qop") {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => Some(Qop::Auth),
            Some(_) => return Err(DigestFailure::Rejected("unsupported qop")),
        };
        let nc = match qop {
            Some(_) => field("nc")
                .and_then(|n| u32::from_str_radix(n, 16).ok())
                .ok_or(DigestFailure::Rejected("bad nc"))?,
            None => 0,
        };
        let cnonce = field("cnonce").unwrap_or_default();
        let uri = field("uri").ok_or(DigestFailure::Rejected("no uri"))?;
        let response = field("response").ok_or(DigestFailure::Rejected("no response"))?;
        let challenge = Challenge {
            proxy: true,
            realm: binding.realm.to_string(),
            nonce: nonce.to_string(),
            opaque: None,
            algorithm,
            sess: false,
            algorithm_token: None,
            qop,
            stale: false,
        };
        let input = DigestInput {
            method: "INVITE",
            uri,
            body: &request.body,
            cnonce,
            nc,
        };
        let expected = digest_response(&challenge, credentials, input);
        if !constant_time_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        ) {
            return Err(DigestFailure::Rejected("wrong digest"));
        }
        self.remember(now, nonce.to_string(), issued_at);
        Ok(())
    }

    /// Marks a nonce used; forgets expired ones (and the oldest beyond the cap).
    fn remember(&mut self, now: Instant, nonce: String, issued_at: Instant) {
        self.used
            .retain(|_, at| now.saturating_duration_since(*at) <= NONCE_LIFETIME);
        if self.used.len() >= MAX_USED
            && let Some(oldest) = self
                .used
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(n, _)| n.clone())
        {
            self.used.remove(&oldest);
        }
        self.used.insert(nonce, issued_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth::{answer_header, parse_challenge};
    use crate::sip::message::{Incoming, parse};

    const CALL_ID: &str = "c-1";

    fn binding() -> Binding<'static> {
        Binding {
            realm: "callbridge",
            source: "10.0.0.2".parse().unwrap(),
            trunk: "carrier",
            call_id: CALL_ID,
        }
    }

    fn creds(password: &str) -> Credentials {
        Credentials {
            username: "acct".into(),
            password: password.into(),
        }
    }

    /// An INVITE answering `challenge` with `password`.
    fn answered(challenge: &Header, password: &str) -> Request {
        let value = challenge.to_string();
        let value = value.split_once(": ").unwrap().1;
        let c = parse_challenge(value, true).unwrap();
        let input = DigestInput {
            method: "INVITE",
            uri: "sip:+15550001111@gw",
            body: b"",
            cnonce: "abc",
            nc: 1,
        };
        let auth = answer_header(&c, &creds(password), input);
        let raw = format!(
            "INVITE sip:+15550001111@gw SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: {CALL_ID}\r\nCSeq: 2 INVITE\r\n{auth}\r\nContent-Length: 0\r\n\r\n"
        );
        match parse(raw.as_bytes()) {
            Ok(Incoming::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn accepts_the_right_answer_once() {
        let mut server = DigestServer::default();
        let now = Instant::now();
        let challenge = server.challenge(now, binding(), false);
        assert!(challenge.to_string().contains("qop=\"auth\""));
        let request = answered(&challenge, "pw");
        assert_eq!(
            server.verify(now, &request, &creds("pw"), binding()),
            Ok(())
        );
        assert_eq!(
            server.verify(now, &request, &creds("pw"), binding()),
            Err(DigestFailure::Rejected("nonce already used"))
        );
    }

    #[test]
    fn refuses_wrong_password_other_binding_and_old_nonces() {
        let mut server = DigestServer::default();
        let now = Instant::now();
        let challenge = server.challenge(now, binding(), false);
        let wrong = answered(&challenge, "guess");
        assert_eq!(
            server.verify(now, &wrong, &creds("pw"), binding()),
            Err(DigestFailure::Rejected("wrong digest"))
        );
        let good = answered(&challenge, "pw");
        let other = Binding {
            source: "10.0.0.3".parse().unwrap(),
            ..binding()
        };
        assert!(matches!(
            server.verify(now, &good, &creds("pw"), other),
            Err(DigestFailure::Rejected(_))
        ));
        let later = now + NONCE_LIFETIME + Duration::from_secs(1);
        assert_eq!(
            server.verify(later, &good, &creds("pw"), binding()),
            Err(DigestFailure::Stale)
        );
        let fresh = server.challenge(later, binding(), true);
        assert!(fresh.to_string().contains("stale=true"));
        let good = answered(&fresh, "pw");
        assert_eq!(server.verify(later, &good, &creds("pw"), binding()), Ok(()));
    }

    #[test]
    fn missing_or_foreign_realm_is_missing() {
        let mut server = DigestServer::default();
        let now = Instant::now();
        let raw = "INVITE sip:x@gw SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c-1\r\nCSeq: 1 INVITE\r\nProxy-Authorization: Digest username=\"acct\", realm=\"other\", nonce=\"x\", uri=\"sip:x@gw\", response=\"0\"\r\nContent-Length: 0\r\n\r\n";
        let Ok(Incoming::Request(request)) = parse(raw.as_bytes()) else {
            panic!("parse");
        };
        assert_eq!(
            server.verify(now, &request, &creds("pw"), binding()),
            Err(DigestFailure::Missing)
        );
    }
}
