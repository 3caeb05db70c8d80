//! TURN long-term credentials by the TURN REST API convention: username
//! `expiry:user`, password `base64(HMAC-SHA1(secret, username))` (see
//! [`crate::auth::turn_credentials`]). Expired or forged credentials get 401.
//!
//! Credentials are issued to expire with the session's token. An allocation
//! refreshes with the credentials it was made with, so the relay of a call that
//! outlives them would die although the session reauthenticated; the gateway
//! therefore tells the handler ([`RestAuthHandler::extend_while`]) until when each
//! user holds a valid token, and expired credentials of such a user keep working,
//! up to a limit past their expiry.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::auth::turn_password;
use crate::secret::Secret;

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

/// Until when (Unix seconds) a user holds a valid token, if the user has a session.
pub type ValidUntil = Arc<dyn Fn(&str) -> Option<u64> + Send + Sync>;

/// The `turn` crate's auth hook for REST API credentials.
pub struct RestAuthHandler {
    /// The shared secret (never logged).
    secret: Secret,
    /// Set by the gateway: whose expired credentials still work, and for how long
    /// past their expiry at most.
    extension: OnceLock<(ValidUntil, u64)>,
}

impl RestAuthHandler {
    /// A handler for `secret`.
    pub fn new(secret: Secret) -> RestAuthHandler {
        RestAuthHandler {
            secret,
            extension: OnceLock::new(),
        }
    }

    /// Lets credentials of a user who holds a valid token (`valid_until`) work past
    /// their expiry, for at most `limit` past it. Set once; later calls are ignored.
    pub fn extend_while(&self, valid_until: ValidUntil, limit: Duration) {
        let _ = self.extension.set((valid_until, limit.as_secs()));
    }

    /// The key for `username`, or `None` when the credentials are unusable.
    pub fn key(&self, username: &str, realm: &str) -> Option<Vec<u8>> {
        self.key_at(username, realm, unix_now()).ok()
    }

    /// The key for `username` at Unix time `now`.
    pub fn key_at(
        &self,
        username: &str,
        realm: &str,
        now: u64,
    ) -> Result<Vec<u8>, CredentialError> {
        match rest_key(&self.secret, username, realm, now) {
            Err(CredentialError::Expired(expiry)) if self.extended(username, expiry, now) => {
                rest_key(&self.secret, username, realm, expiry)
            }
            other => other,
        }
    }

    fn extended(&self, username: &str, expiry: u64, now: u64) -> bool {
        let Some((valid_until, limit)) = self.extension.get() else {
            return false;
        };
        now <= expiry.saturating_add(*limit)
            && valid_until(user_of(username)).is_some_and(|until| until >= now)
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
        self.key_at(username, realm, unix_now()).map_err(|e| {
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
    fn expired_credentials_work_only_while_their_user_holds_a_valid_token() {
        let secret = "s3cret-s3cret-s3cret";
        let handler = RestAuthHandler::new(secret.into());
        let creds = turn_credentials(secret, "alice", 1000, 60);
        let expired = handler.key_at(&creds.username, "r", 1100);
        assert_eq!(
            expired,
            Err(CredentialError::Expired(1060)),
            "no extension yet"
        );
        // alice reauthenticated: her token is valid until 5000; bob has no session.
        handler.extend_while(
            Arc::new(|user: &str| (user == "alice").then_some(5000)),
            Duration::from_secs(3600),
        );
        let key = handler
            .key_at(&creds.username, "r", 1100)
            .expect("extended");
        assert_eq!(
            key,
            turn::auth::generate_auth_key(&creds.username, "r", &creds.password)
        );
        assert!(
            handler.key_at(&creds.username, "r", 5001).is_err(),
            "not past the user's token"
        );
        assert!(
            handler.key_at(&creds.username, "r", 1060 + 3601).is_err(),
            "not beyond the limit past expiry"
        );
        let bob = turn_credentials(secret, "bob", 1000, 60);
        assert!(
            handler.key_at(&bob.username, "r", 1100).is_err(),
            "a user without a session gets no extension"
        );
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
