//! Authentication: JWT verification of browser tokens, scopes and claims, and
//! minting of development tokens.
//!
//! I/O contract: keys are read once by [`Verifier::from_config`]; verification is a
//! pure function of the token and the current Unix time passed in by the caller.

mod claims;
mod turn;
mod verify;

pub use claims::{Audience, Claims, Identity, Scope};

/// The `aud` claim value for tokens this gateway mints.
pub fn claims_audience(audience: &str) -> Audience {
    Audience::One(audience.to_string())
}
pub use turn::{TurnCredentials, turn_credentials, turn_password, turn_ttl};
pub use verify::{Verifier, mint_hs256};

/// Why a token was refused. Messages say what was wrong and what to do; they never
/// contain the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// Not a JWT at all (wrong shape, bad base64, bad JSON).
    #[error("malformed token: {0}; send a JWT (header.payload.signature)")]
    Malformed(String),
    /// Longer than `auth.max_token_bytes`: refused before any parsing or signature
    /// work.
    #[error("token is longer than {0} bytes (auth.max_token_bytes); issue a smaller token")]
    TooLarge(usize),
    /// The header's `typ` names another kind of token (RFC 8725 §3.11).
    #[error(
        "token type (typ) `{0}` is not accepted; browser tokens have typ JWT or none (auth.token_types)"
    )]
    WrongType(String),
    /// The header lists critical extensions (`crit`, RFC 7515 §4.1.11).
    #[error("token header lists critical extensions (crit) this gateway does not implement")]
    CriticalHeader,
    /// `exp` is further in the future than `auth.max_token_lifetime` allows.
    #[error(
        "token lives too long: exp is more than {0}s from now (auth.max_token_lifetime); issue shorter-lived tokens and refresh them with reauth"
    )]
    TooLongLived(u64),
    /// `alg: none` (unsigned) tokens are never accepted.
    #[error("unsigned tokens (alg none) are not accepted; sign the token")]
    Unsigned,
    /// The token's algorithm has no configured key.
    #[error("algorithm {0} is not accepted by this gateway; sign with a configured algorithm")]
    AlgorithmNotAccepted(String),
    /// The signature does not verify with any configured key.
    #[error("invalid signature; the token was not signed by a trusted issuer key")]
    BadSignature,
    /// `exp` is in the past.
    #[error("token expired; fetch a new token")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not valid yet (nbf in the future); check the issuer's clock")]
    NotYetValid,
    /// `aud` does not name this gateway.
    #[error("wrong audience; the token's aud must include `{0}`")]
    WrongAudience(String),
    /// `iss` is not the configured issuer.
    #[error("wrong issuer; the token's iss must be `{0}`")]
    WrongIssuer(String),
    /// A required claim is missing or has the wrong type.
    #[error("claim `{0}` is missing or invalid")]
    BadClaim(String),
    /// A valid token lacks a scope the operation needs.
    #[error("token lacks scope `{0}`")]
    MissingScope(String),
    /// A configured key could not be loaded.
    #[error("key {path}: {message}")]
    Key {
        /// The key file.
        path: String,
        /// What was wrong.
        message: String,
    },
}

impl AuthError {
    /// True when the token is valid but not allowed (close 4003), false when it is not
    /// valid at all (close 4001).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, AuthError::MissingScope(_))
    }
}

#[cfg(test)]
mod tests;
