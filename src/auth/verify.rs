//! Signature and claim checks after RFC 8725 (JWT best current practice). Time is an
//! input (`now`, Unix seconds), so the checks are tested without a clock.
//!
//! Order: size (before any parsing), header (`alg` not `none` and configured, `typ`,
//! no `crit`), signature with the keys of that one algorithm only (so an HS256
//! token can never be checked against an RSA public key), then the claims.

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use super::{AuthError, Claims, Identity, Scope};
use crate::config::AuthConfig;

/// Verifies browser tokens against the configured keys, audience and issuer, and
/// operator tokens against the operator audience.
pub struct Verifier {
    /// Configured keys with the one algorithm each accepts.
    keys: Vec<(Algorithm, DecodingKey)>,
    /// Required `aud` value of browser tokens.
    audience: String,
    /// Required `aud` value of operator tokens; only they keep the `admin` scope.
    admin_audience: String,
    /// Required `iss`, if configured.
    issuer: Option<String>,
    /// Tolerated clock skew, seconds.
    leeway: u64,
    /// Longest token, bytes.
    max_token_bytes: usize,
    /// Longest remaining life (`exp - now`), seconds.
    max_lifetime: u64,
    /// Accepted `typ` values, lower case without `application/`.
    token_types: Vec<String>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys (and the HS256 secret) are deliberately not printed.
        f.debug_struct("Verifier")
            .field("algorithms", &self.algorithms())
            .field("audience", &self.audience)
            .field("admin_audience", &self.admin_audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .field("max_token_bytes", &self.max_token_bytes)
            .field("max_lifetime", &self.max_lifetime)
            .field("token_types", &self.token_types)
            .finish()
    }
}

impl Verifier {
    /// Loads the keys named by the `[auth]` section.
    pub fn from_config(config: &AuthConfig) -> Result<Verifier, AuthError> {
        let mut keys = Vec::new();
        if !config.hs256_secret.is_empty() {
            keys.push((
                Algorithm::HS256,
                DecodingKey::from_secret(config.hs256_secret.as_bytes()),
            ));
        }
        for path in &config.public_keys {
            let pem = std::fs::read(path).map_err(|e| AuthError::Key {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            keys.push(load_public_key(&pem).map_err(|message| AuthError::Key {
                path: path.display().to_string(),
                message,
            })?);
        }
        Ok(Verifier {
            keys,
            audience: config.audience.clone(),
            admin_audience: config.admin_audience.clone(),
            issuer: (!config.issuer.is_empty()).then(|| config.issuer.clone()),
            leeway: config.leeway.as_secs(),
            max_token_bytes: config.max_token_bytes,
            max_lifetime: config.max_token_lifetime.as_secs(),
            token_types: config.token_types.iter().map(|t| media_type(t)).collect(),
        })
    }

    /// The algorithms this verifier accepts.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        self.keys.iter().map(|(a, _)| *a).collect()
    }

    /// Verifies a browser token (`aud` = `auth.audience`) at Unix time `now` and
    /// returns who it is for. The `admin` scope is dropped unless the token also
    /// names the operator audience: a browser token never acts as an operator.
    pub fn verify(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let claims = self.verified_claims(token, now)?;
        self.identity_for(claims, &self.audience)
    }

    /// Verifies an operator token (`aud` = `auth.admin_audience`) at Unix time `now`.
    pub fn verify_operator(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let claims = self.verified_claims(token, now)?;
        self.identity_for(claims, &self.admin_audience)
    }

    /// Verifies a token for either audience: an operator token keeps its `admin`
    /// scope, a browser token loses it (for endpoints both may use).
    pub fn verify_any(&self, token: &str, now: u64) -> Result<Identity, AuthError> {
        let claims = self.verified_claims(token, now)?;
        let operator = claims
            .aud
            .as_ref()
            .is_some_and(|a| a.contains(&self.admin_audience));
        let audience = if operator {
            &self.admin_audience
        } else {
            &self.audience
        };
        self.identity_for(claims, audience)
    }

    /// Checks the audience and `sub`, then builds the identity (without `admin`
    /// unless the token names the operator audience).
    fn identity_for(&self, claims: Claims, audience: &str) -> Result<Identity, AuthError> {
        match &claims.aud {
            Some(aud) if aud.contains(audience) => {}
            _ => return Err(AuthError::WrongAudience(audience.to_string())),
        }
        if claims.sub.trim().is_empty() {
            return Err(AuthError::BadClaim("sub".into()));
        }
        let operator = claims
            .aud
            .as_ref()
            .is_some_and(|a| a.contains(&self.admin_audience));
        let mut identity = Identity::from(claims);
        if !operator {
            identity.scopes.retain(|s| *s != Scope::Admin);
        }
        Ok(identity)
    }

    /// Checks the signature, `exp`, `nbf` and `iss` (not `aud`).
    fn verified_claims(&self, token: &str, now: u64) -> Result<Claims, AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge(self.max_token_bytes));
        }
        let header = UntrustedHeader::parse(token)?;
        let alg = header.alg;
        if alg.eq_ignore_ascii_case("none") {
            return Err(AuthError::Unsigned);
        }
        if let Some(typ) = &header.typ
            && !self.token_types.contains(&media_type(typ))
        {
            return Err(AuthError::WrongType(typ.chars().take(40).collect()));
        }
        if header.crit {
            return Err(AuthError::CriticalHeader);
        }
        let algorithm: Algorithm = alg
            .parse()
            .map_err(|_| AuthError::AlgorithmNotAccepted(alg.clone()))?;
        let mut validation = Validation::new(algorithm);
        // Claims are checked below against `now`, with precise errors.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();

        let mut tried = false;
        let mut claims = None;
        for (_, key) in self.keys.iter().filter(|(a, _)| *a == algorithm) {
            tried = true;
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature
                    | ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidKeyFormat
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidEddsaKey
                    | ErrorKind::InvalidRsaKey(_) => continue,
                    ErrorKind::Json(inner) => return Err(AuthError::BadClaim(claim_of(inner))),
                    ErrorKind::MissingRequiredClaim(c) | ErrorKind::InvalidClaimFormat(c) => {
                        return Err(AuthError::BadClaim(c.clone()));
                    }
                    _ => return Err(AuthError::Malformed(e.to_string())),
                },
            }
        }
        if !tried {
            return Err(AuthError::AlgorithmNotAccepted(alg));
        }
        let claims = claims.ok_or(AuthError::BadSignature)?;
        self.check_claims(&claims, now)?;
        Ok(claims)
    }

    fn check_claims(&self, claims: &Claims, now: u64) -> Result<(), AuthError> {
        if claims.exp.saturating_add(self.leeway) <= now {
            return Err(AuthError::Expired);
        }
        if claims.exp.saturating_sub(now) > self.max_lifetime.saturating_add(self.leeway) {
            return Err(AuthError::TooLongLived(self.max_lifetime));
        }
        if let Some(nbf) = claims.nbf
            && nbf > now.saturating_add(self.leeway)
        {
            return Err(AuthError::NotYetValid);
        }
        if let Some(issuer) = &self.issuer
            && claims.iss.as_deref() != Some(issuer.as_str())
        {
            return Err(AuthError::WrongIssuer(issuer.clone()));
        }
        Ok(())
    }
}

/// What the verifier reads from a token's header before checking the signature.
struct UntrustedHeader {
    /// `alg`.
    alg: String,
    /// `typ`, if present.
    typ: Option<String>,
    /// Whether `crit` is present.
    crit: bool,
}

impl UntrustedHeader {
    /// Reads the header of `token` without trusting anything in it.
    fn parse(token: &str) -> Result<UntrustedHeader, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_payload), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed(
                "expected three dot-separated parts".into(),
            ));
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header.trim_end_matches('='))
            .map_err(|_| AuthError::Malformed("header is not base64url".into()))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|_| AuthError::Malformed("header is not JSON".into()))?;
        let alg = value
            .get("alg")
            .and_then(|a| a.as_str())
            .map(str::to_owned)
            .ok_or_else(|| AuthError::Malformed("header has no alg".into()))?;
        let typ = match value.get("typ") {
            None => None,
            Some(serde_json::Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(AuthError::Malformed("header typ is not a string".into())),
        };
        Ok(UntrustedHeader {
            alg,
            typ,
            crit: value.get("crit").is_some(),
        })
    }
}

/// A `typ` value as compared: lower case, without `application/` (RFC 7515 §4.1.9).
fn media_type(typ: &str) -> String {
    let lower = typ.trim().to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_string(),
        None => lower,
    }
}

fn claim_of(e: &serde_json::Error) -> String {
    let text = e.to_string();
    // serde names the field in "missing field `exp`" / "invalid type ... for key `x`".
    text.split('`')
        .nth(1)
        .map(str::to_owned)
        .unwrap_or_else(|| "payload".into())
}

/// Classifies a PEM public key: RSA → RS256, EC → ES256, Ed25519 → EdDSA.
fn load_public_key(pem: &[u8]) -> Result<(Algorithm, DecodingKey), String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((Algorithm::RS256, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok((Algorithm::ES256, key));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok((Algorithm::EdDSA, key));
    }
    Err("not a PEM RSA, EC P-256 or Ed25519 public key".into())
}

/// Signs `claims` with HS256 (used by `callbridge token` and tests).
pub fn mint_hs256(secret: &str, claims: &Claims) -> Result<String, AuthError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| AuthError::Malformed(format!("cannot sign: {e}")))
}
