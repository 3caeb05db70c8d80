//! TURN REST API credentials (draft-uberti-behave-turn-rest): username
//! `expiry:user`, password `base64(HMAC-SHA1(secret, username))`.

use base64::Engine;
use hmac::{KeyInit, Mac};

use crate::secret::Secret;

/// Ephemeral TURN credentials for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    /// `expiry:user`.
    pub username: String,
    /// The HMAC password (redacted in `Debug`).
    pub password: Secret,
}

/// Issues credentials valid until `now + ttl_secs` (Unix seconds).
pub fn turn_credentials(secret: &str, user: &str, now: u64, ttl_secs: u64) -> TurnCredentials {
    let username = format!("{}:{user}", now.saturating_add(ttl_secs));
    TurnCredentials {
        password: turn_password(secret, &username).into(),
        username,
    }
}

/// Lifetime of TURN credentials for a session whose token expires at
/// `token_expires_at` (Unix seconds), at `now`: the configured TTL, but never past
/// the token.
pub fn turn_ttl(configured_secs: u64, token_expires_at: u64, now: u64) -> u64 {
    configured_secs.min(token_expires_at.saturating_sub(now))
}

/// The password the server expects for `username`.
pub fn turn_password(secret: &str, username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_rest_api_convention() {
        let c = turn_credentials("north", "alice", 1_700_000_000, 3600);
        assert_eq!(c.username, "1700003600:alice");
        // Reference value computed with: printf '1700003600:alice' | openssl dgst -sha1 -hmac north -binary | base64
        assert_eq!(c.password, "wjwSXO2ch1B6VaLTLMy2Avn5O9o=");
        assert_eq!(c.password.len(), 28, "base64 of a 20-byte SHA-1 HMAC");
        assert_ne!(
            c.password.expose(),
            turn_password("south", "1700003600:alice")
        );
        assert!(!format!("{c:?}").contains(c.password.expose()));
    }

    #[test]
    fn ttl_never_outlives_the_token() {
        assert_eq!(turn_ttl(86_400, 1_000 + 3_600, 1_000), 3_600);
        assert_eq!(turn_ttl(600, 1_000 + 3_600, 1_000), 600);
        assert_eq!(turn_ttl(86_400, 990, 1_000), 0, "token already past exp");
    }
}
