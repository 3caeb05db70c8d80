//! TURN long-term credentials by the TURN REST API convention: username
//! `expiry:user`, password `base64(HMAC-SHA1(secret, username))` (see
//! [`crate::auth::turn_credentials`]). Expired or forged credentials get 401.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::turn_password;

/// Why credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The username is not `expiry:user`.
    #[error("username is not expiry:user")]
    Malformed,
    /// The expiry is in the past.
    #[error("credentials expired at {0}")]
    Expired(u64),
}

/// The long-term key (`MD5(username:realm:password)`) for REST API credentials,
/// checked against `now` (Unix seconds). A forged password simply yields a key the
/// client's MESSAGE-INTEGRITY does not match.
pub fn rest_key(
    secret: &str,
    username: &str,
    realm: &str,
    now: u64,
) -> Result<Vec<u8>, CredentialError> {
    let (expiry, user) = username.split_once(':').ok_or(CredentialError::Malformed)?;
    let expiry: u64 = expiry.parse().map_err(|_| CredentialError::Malformed)?;
    if user.is_empty() {
        return Err(CredentialError::Malformed);
    }
    if expiry < now {
        return Err(CredentialError::Expired(expiry));
    }
    let password = turn_password(secret, username);
    Ok(turn::auth::generate_auth_key(username, realm, &password))
}

/// The user part of a REST API username.
pub fn user_of(username: &str) -> &str {
    username.split_once(':').map(|(_, u)| u).unwrap_or(username)
}

/// The `turn` crate's auth hook for REST API credentials.
pub struct RestAuthHandler {
    /// The shared secret (never logged).
    secret: String,
}

impl RestAuthHandler {
    /// A handler for `secret`.
    pub fn new(secret: String) -> RestAuthHandler {
        RestAuthHandler { secret }
    }

    /// The key for `username`, or `None` when the credentials are unusable.
    pub fn key(&self, username: &str, realm: &str) -> Option<Vec<u8>> {
        rest_key(&self.secret, username, realm, unix_now()).ok()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl turn::auth::AuthHandler for RestAuthHandler {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        rest_key(&self.secret, username, realm, unix_now()).map_err(|e| {
            tracing::info!(%src_addr, user = user_of(username), error = %e, "TURN credentials refused");
            turn::Error::Other(e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::turn_credentials;

    #[test]
    fn issued_credentials_verify_until_they_expire() {
        let creds = turn_credentials("s3cret-s3cret-s3cret", "alice", 1000, 60);
        let key = rest_key("s3cret-s3cret-s3cret", &creds.username, "r", 1000).expect("valid");
        assert_eq!(
            key,
            turn::auth::generate_auth_key(&creds.username, "r", &creds.password)
        );
        assert!(rest_key("s3cret-s3cret-s3cret", &creds.username, "r", 1060).is_ok());
        assert_eq!(
            rest_key("s3cret-s3cret-s3cret", &creds.username, "r", 1061),
            Err(CredentialError::Expired(1060))
        );
        // Another secret gives another key: the client's integrity check fails (401).
        let forged = rest_key("other-secret-other", &creds.username, "r", 1000).expect("computes");
        assert_ne!(forged, key);
    }

    #[test]
    fn malformed_usernames_are_refused() {
        for bad in ["alice", ":alice", "soon:alice", "123:"] {
            assert_eq!(
                rest_key("s", bad, "r", 0),
                Err(CredentialError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(user_of("1700:alice"), "alice");
    }
}
