//! Digest authentication as a UAC (RFC 3261 §22.2-22.4, RFC 8760 for SHA-256 and
//! SHA-512/256, RFC 7616 for the computation): parse a 401/407 challenge and build
//! the `Authorization` / `Proxy-Authorization` answer. Sans-IO and clock-free; the
//! cnonce is random.
//!
//! Credentials only go to the trunk they belong to: see [`DigestClient`].
//!
//! Never log a [`Credentials`] password, an answer header or a digest response: the
//! `Debug` of [`Credentials`] redacts the password.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use rsip::{Header, Response};

use crate::sip::message::build::random_hex;
use crate::sip::message::{header_values, split_elements};
use crate::sip::trunk_scope::TrunkScope;

/// Digest credentials of a trunk.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Digest username.
    pub username: String,
    /// Digest password (never logged).
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A digest hash algorithm (RFC 8760 §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    /// MD5 (the default when the challenge names none).
    Md5,
    /// SHA-256.
    Sha256,
    /// SHA-512/256.
    Sha512_256,
}

/// Quality of protection chosen from the challenge's `qop` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Qop {
    /// `qop=auth`.
    Auth,
    /// `qop=auth-int` (body hashed too); only used when `auth` is not offered.
    AuthInt,
}

/// One parsed `WWW-Authenticate` or `Proxy-Authenticate` Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// From `Proxy-Authenticate` (answer with `Proxy-Authorization`).
    pub proxy: bool,
    /// Protection space.
    pub realm: String,
    /// Server nonce.
    pub nonce: String,
    /// Echoed back unchanged.
    pub opaque: Option<String>,
    /// Hash algorithm.
    pub algorithm: Algorithm,
    /// `-sess` variant (HA1 includes nonce and cnonce).
    pub sess: bool,
    /// The algorithm token as the server wrote it, echoed back.
    pub algorithm_token: Option<String>,
    /// Chosen qop, if the server offered one we support.
    pub qop: Option<Qop>,
    /// `stale=true`: the nonce expired but the credentials were right.
    pub stale: bool,
}

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// No credentials configured for this trunk.
    #[error("challenged but no credentials are configured")]
    NoCredentials,
    /// No Digest challenge with an algorithm we support.
    #[error("no supported Digest challenge")]
    Unsupported,
    /// The same realm challenged again without `stale=true`: wrong credentials.
    #[error("credentials rejected for realm {0:?}")]
    Rejected(String),
    /// Too many rounds of challenges for one request.
    #[error("too many authentication rounds")]
    TooManyRounds,
    /// The challenged request did not go to the trunk: credentials stay unsent.
    #[error(
        "challenge for a request to {0}, which is not the trunk's address: credentials not sent"
    )]
    NotTrunk(SocketAddr),
    /// The challenge names another realm than the trunk's.
    #[error(
        "challenge realm {offered:?} is not the trunk's realm {expected:?}: credentials not sent"
    )]
    Realm {
        /// The realms the challenge offered.
        offered: Vec<String>,
        /// The trunk's realm (configured or first seen).
        expected: String,
    },
}

/// Splits `k=v, k2="v, 2"` into lowercase names and unquoted values.
pub(crate) fn params(text: &str) -> HashMap<String, String> {
    split_elements(text)
        .into_iter()
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let v = v.trim();
            let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
                None => v.to_string(),
            };
            Some((k.trim().to_ascii_lowercase(), v))
        })
        .collect()
}

/// Parses one challenge header value; `None` if not Digest or not supported.
pub(crate) fn parse_challenge(value: &str, proxy: bool) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let p = params(rest);
    let algorithm_token = p.get("algorithm").cloned();
    let token = algorithm_token
        .as_deref()
        .unwrap_or("MD5")
        .to_ascii_uppercase();
    let (base, sess) = match token.strip_suffix("-SESS") {
        Some(base) => (base.to_string(), true),
        None => (token, false),
    };
    let algorithm = match base.as_str() {
        "MD5" => Algorithm::Md5,
        "SHA-256" => Algorithm::Sha256,
        "SHA-512-256" => Algorithm::Sha512_256,
        _ => return None,
    };
    let qop = p.get("qop").and_then(|list| {
        let offered: Vec<String> = list
            .split(',')
            .map(|q| q.trim().to_ascii_lowercase())
            .collect();
        if offered.iter().any(|q| q == "auth") {
            Some(Qop::Auth)
        } else if offered.iter().any(|q| q == "auth-int") {
            Some(Qop::AuthInt)
        } else {
            None
        }
    });
    if sess && qop.is_none() {
        return None; // -sess needs a cnonce, which only comes with a qop
    }
    Some(Challenge {
        proxy,
        realm: p.get("realm")?.clone(),
        nonce: p.get("nonce")?.clone(),
        opaque: p.get("opaque").cloned(),
        algorithm,
        sess,
        algorithm_token,
        qop,
        stale: p
            .get("stale")
            .is_some_and(|s| s.eq_ignore_ascii_case("true")),
    })
}

/// The challenges of a 401 (`WWW-Authenticate`) or 407 (`Proxy-Authenticate`): per
/// realm the first one we support (RFC 8760 §2.4: the topmost supported).
pub(crate) fn challenges(response: &Response) -> Vec<Challenge> {
    let proxy = response.status_code.code() == 407;
    let name = if proxy {
        "Proxy-Authenticate"
    } else {
        "WWW-Authenticate"
    };
    let mut out: Vec<Challenge> = Vec::new();
    for value in header_values(&response.headers, name) {
        if let Some(c) = parse_challenge(&value, proxy)
            && !out.iter().any(|o| o.realm == c.realm)
        {
            out.push(c);
        }
    }
    out
}

fn hex_hash(algorithm: Algorithm, data: &[u8]) -> String {
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
    match algorithm {
        Algorithm::Md5 => {
            use md5::Digest as _;
            hex(&md5::Md5::digest(data))
        }
        Algorithm::Sha256 => {
            use sha2::Digest as _;
            hex(&sha2::Sha256::digest(data))
        }
        Algorithm::Sha512_256 => {
            use sha2::Digest as _;
            hex(&sha2::Sha512_256::digest(data))
        }
    }
}

/// The inputs of one digest response besides the challenge.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DigestInput<'a> {
    /// Request method.
    pub method: &'a str,
    /// Digest URI (the Request-URI).
    pub uri: &'a str,
    /// Request body (for `auth-int`).
    pub body: &'a [u8],
    /// Client nonce.
    pub cnonce: &'a str,
    /// Nonce count.
    pub nc: u32,
}

/// The `response` value (RFC 7616 §3.4.1).
pub(crate) fn digest_response(c: &Challenge, creds: &Credentials, input: DigestInput) -> String {
    let h = |s: &[u8]| hex_hash(c.algorithm, s);
    let mut ha1 = h(format!("{}:{}:{}", creds.username, c.realm, creds.password).as_bytes());
    if c.sess {
        ha1 = h(format!("{ha1}:{}:{}", c.nonce, input.cnonce).as_bytes());
    }
    let ha2 = match c.qop {
        Some(Qop::AuthInt) => {
            h(format!("{}:{}:{}", input.method, input.uri, h(input.body)).as_bytes())
        }
        _ => h(format!("{}:{}", input.method, input.uri).as_bytes()),
    };
    match c.qop {
        Some(qop) => {
            let qop = if qop == Qop::Auth { "auth" } else { "auth-int" };
            h(format!(
                "{ha1}:{}:{:08x}:{}:{qop}:{ha2}",
                c.nonce, input.nc, input.cnonce
            )
            .as_bytes())
        }
        None => h(format!("{ha1}:{}:{ha2}", c.nonce).as_bytes()),
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The `Authorization` / `Proxy-Authorization` header answering `c`.
pub(crate) fn answer_header(c: &Challenge, creds: &Credentials, input: DigestInput) -> Header {
    let response = digest_response(c, creds, input);
    let mut v = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\"",
        quote(&creds.username),
        quote(&c.realm),
        quote(&c.nonce),
        quote(input.uri),
    );
    if let Some(token) = &c.algorithm_token {
        v.push_str(&format!(", algorithm={token}"));
    }
    if let Some(qop) = c.qop {
        let qop = if qop == Qop::Auth { "auth" } else { "auth-int" };
        v.push_str(&format!(
            ", cnonce={}, qop={qop}, nc={:08x}",
            quote(input.cnonce),
            input.nc
        ));
    }
    if let Some(opaque) = &c.opaque {
        v.push_str(&format!(", opaque={}", quote(opaque)));
    }
    if c.proxy {
        Header::ProxyAuthorization(v.into())
    } else {
        Header::Authorization(v.into())
    }
}

/// The realms a request already answered (from its own authorization headers).
pub(crate) fn answered_realms(headers: &rsip::Headers) -> Vec<String> {
    ["Authorization", "Proxy-Authorization"]
        .iter()
        .flat_map(|name| header_values(headers, name))
        .filter_map(|v| {
            let (_, rest) = v.split_once(char::is_whitespace)?;
            params(rest).get("realm").cloned()
        })
        .collect()
}

/// A UAC's digest state for one trunk or call: the credentials, where they may go
/// (the trunk's addresses, one realm), the challenges seen (reused preemptively
/// for later requests) and the nonce counts.
///
/// Credentials answer a challenge only when the challenged request went to one of
/// the trunk's addresses ([`TrunkScope`]) and the realm is the trunk's: the
/// configured `realm`, else the realm of the first challenge answered (pinned).
/// Anything else (a REFER target, a far end's Contact, a second realm) is refused,
/// so a stranger never gets a digest response to crack offline.
#[derive(Debug, Clone, Default)]
pub(crate) struct DigestClient {
    /// The trunk's credentials, if any.
    credentials: Option<Credentials>,
    /// The trunk's addresses: challenged requests to other addresses are not answered.
    scope: TrunkScope,
    /// The only realm answered: configured, or pinned by the first challenge.
    realm: Option<String>,
    /// Last challenge per realm (of the one realm answered).
    challenges: Vec<Challenge>,
    /// Nonce count per nonce.
    counts: HashMap<String, u32>,
}

impl DigestClient {
    /// A client with these credentials (none: every challenge fails) for a trunk at
    /// `scope`, answering only `realm` when given.
    pub(crate) fn new(
        credentials: Option<Credentials>,
        realm: Option<String>,
        scope: TrunkScope,
    ) -> Self {
        Self {
            credentials,
            scope,
            realm,
            ..Self::default()
        }
    }

    /// True if credentials exist and may go to `dest` (one of the trunk's addresses).
    pub(crate) fn may_send_to(&self, dest: SocketAddr) -> bool {
        self.credentials.is_some() && self.scope.contains(dest.ip())
    }

    /// Learns the challenges of a 401/407 to `challenged` (the request that got it,
    /// sent to `dest`) and returns the headers for the retried request, or why it
    /// must not be retried. `rounds` is how many times this request was already
    /// retried.
    pub(crate) fn on_challenge(
        &mut self,
        response: &Response,
        challenged: &rsip::Request,
        rounds: u32,
        dest: SocketAddr,
    ) -> Result<Vec<Header>, AuthError> {
        if self.credentials.is_none() {
            return Err(AuthError::NoCredentials);
        }
        if !self.scope.contains(dest.ip()) {
            return Err(AuthError::NotTrunk(dest));
        }
        if rounds >= 3 {
            return Err(AuthError::TooManyRounds);
        }
        let mut new = challenges(response);
        if new.is_empty() {
            return Err(AuthError::Unsupported);
        }
        let realm = match &self.realm {
            Some(realm) => realm.clone(),
            None => new[0].realm.clone(),
        };
        let offered: Vec<String> = new.iter().map(|c| c.realm.clone()).collect();
        new.retain(|c| c.realm == realm);
        if new.is_empty() {
            return Err(AuthError::Realm {
                offered,
                expected: realm,
            });
        }
        self.realm = Some(realm);
        let answered = answered_realms(&challenged.headers);
        for c in &new {
            if answered.contains(&c.realm) && !c.stale {
                return Err(AuthError::Rejected(c.realm.clone()));
            }
        }
        for c in new {
            self.challenges.retain(|o| o.realm != c.realm);
            self.challenges.push(c);
        }
        Ok(self.authorize(
            &challenged.method.to_string(),
            &challenged.uri.to_string(),
            &challenged.body,
            dest,
        ))
    }

    /// Authorization headers for a new request to `dest` from the challenges already
    /// seen (empty before the first challenge, or when `dest` is not the trunk's).
    /// Each use bumps the nonce count.
    pub(crate) fn authorize(
        &mut self,
        method: &str,
        uri: &str,
        body: &[u8],
        dest: SocketAddr,
    ) -> Vec<Header> {
        if !self.may_send_to(dest) {
            return Vec::new();
        }
        let Some(creds) = self.credentials.clone() else {
            return Vec::new();
        };
        let challenges = self.challenges.clone();
        challenges
            .iter()
            .map(|c| {
                let nc = self.counts.entry(c.nonce.clone()).or_insert(0);
                // Our own count; 8 hex digits on the wire, so it wraps rather than panics.
                *nc = nc.wrapping_add(1).max(1);
                let cnonce = random_hex(16);
                let input = DigestInput {
                    method,
                    uri,
                    body,
                    cnonce: &cnonce,
                    nc: *nc,
                };
                answer_header(c, &creds, input)
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
