//! Token lifetime of a session: a session lives no longer than its JWT.
//!
//! Sans-IO: [`TokenLifetime`] turns the token's `exp` (Unix seconds) plus the
//! configured leeway into a deadline on the monotonic clock, given both clocks'
//! `now` by the caller; `reauth` and `resume` renew it with a fresh token that
//! [`check_fresh_token`] accepts. The session task sleeps until
//! [`TokenLifetime::poll_timeout`] ([`expired`]) and then closes the socket 4001.
//!
//! ```text
//!  auth ──> Valid(exp) ──reauth (same sub, scopes kept)──> Valid(exp')
//!               │ now ≥ exp + leeway
//!               └──> error unauthorized "token expired", close 4001, parked
//! ```

use std::time::{Duration, Instant};

use crate::auth::Identity;

/// When the token of a session runs out, on the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLifetime {
    /// The current token's `exp`, Unix seconds.
    expires_at: u64,
    /// Clock skew tolerated after `exp` (`auth.leeway`).
    leeway: Duration,
    /// `exp + leeway` as an `Instant`.
    deadline: Instant,
}

impl TokenLifetime {
    /// The lifetime of a token expiring at `expires_at` (Unix seconds), at Unix time
    /// `now_unix` which is the instant `now`.
    pub fn new(expires_at: u64, leeway: Duration, now_unix: u64, now: Instant) -> TokenLifetime {
        let mut lifetime = TokenLifetime {
            expires_at,
            leeway,
            deadline: now,
        };
        lifetime.renew(expires_at, now_unix, now);
        lifetime
    }

    /// Moves the deadline to a fresh token's `exp` (already verified).
    pub fn renew(&mut self, expires_at: u64, now_unix: u64, now: Instant) {
        let left = Duration::from_secs(expires_at.saturating_sub(now_unix)) + self.leeway;
        // Past exp already (within leeway): only the leeway part that is left.
        let late = Duration::from_secs(now_unix.saturating_sub(expires_at));
        self.expires_at = expires_at;
        self.deadline = now + left.saturating_sub(late);
    }

    /// The current token's `exp`, Unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// When the session must close unless it is renewed first.
    pub fn poll_timeout(&self) -> Instant {
        self.deadline
    }

    /// Whether the token has run out at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }
}

/// Sleeps until `lifetime` runs out (the session task's timer; tokio time, so
/// tests use paused time).
pub async fn expired(lifetime: &TokenLifetime) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(lifetime.poll_timeout())).await;
}

/// Why a fresh token (`reauth`, `resume`) was refused for a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FreshTokenError {
    /// The token is for another user.
    #[error(
        "the token is for another user (sub `{fresh}`, session of `{session}`); send a token of the same user"
    )]
    OtherUser {
        /// The session's user.
        session: String,
        /// The token's `sub`.
        fresh: String,
    },
    /// The token lacks a scope the session holds.
    #[error(
        "the token lacks scope `{0}` that this session holds; open a new session (auth) to change scopes"
    )]
    ScopeDropped(&'static str),
}

impl FreshTokenError {
    /// Whether the refusal is about permissions (`forbidden`) rather than identity.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, FreshTokenError::ScopeDropped(_))
    }
}

/// Checks that `fresh` (a verified token) may extend a session of `session`: the
/// same `sub`, and every scope the session holds. The session keeps the identity it
/// was opened with (scopes, DIDs, caller id, limits); a token with fewer scopes is
/// refused, so a session never holds a scope that its current token does not grant.
pub fn check_fresh_token(session: &Identity, fresh: &Identity) -> Result<(), FreshTokenError> {
    if session.user != fresh.user {
        return Err(FreshTokenError::OtherUser {
            session: session.user.clone(),
            fresh: fresh.user.clone(),
        });
    }
    match session.scopes.iter().find(|s| !fresh.has(**s)) {
        Some(scope) => Err(FreshTokenError::ScopeDropped(scope.as_str())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Scope;

    const T0: u64 = 1_800_000_000;

    fn identity(user: &str, scopes: &[Scope]) -> Identity {
        Identity {
            user: user.into(),
            scopes: scopes.to_vec(),
            caller_id: None,
            dids: vec![],
            max_calls: None,
            record: false,
            expires_at: T0 + 60,
        }
    }

    #[test]
    fn deadline_is_exp_plus_leeway_on_the_monotonic_clock() {
        let now = Instant::now();
        let l = TokenLifetime::new(T0 + 60, Duration::from_secs(5), T0, now);
        assert_eq!(l.poll_timeout(), now + Duration::from_secs(65));
        assert!(!l.is_expired(now + Duration::from_secs(64)));
        assert!(l.is_expired(now + Duration::from_secs(65)));
        assert_eq!(l.expires_at(), T0 + 60);
    }

    #[test]
    fn a_token_already_past_exp_gets_only_the_rest_of_the_leeway() {
        let now = Instant::now();
        let l = TokenLifetime::new(T0 - 3, Duration::from_secs(5), T0, now);
        assert_eq!(l.poll_timeout(), now + Duration::from_secs(2));
        let l = TokenLifetime::new(T0 - 30, Duration::from_secs(5), T0, now);
        assert_eq!(l.poll_timeout(), now, "past the leeway: expired at once");
    }

    #[test]
    fn renew_moves_the_deadline_to_the_fresh_exp() {
        let start = Instant::now();
        let mut l = TokenLifetime::new(T0 + 60, Duration::ZERO, T0, start);
        let later = start + Duration::from_secs(50);
        l.renew(T0 + 50 + 3600, T0 + 50, later);
        assert_eq!(l.poll_timeout(), later + Duration::from_secs(3600));
        assert!(!l.is_expired(start + Duration::from_secs(61)));
        assert_eq!(l.expires_at(), T0 + 3650);
    }

    #[test]
    fn fresh_token_must_be_the_same_user_with_the_same_scopes() {
        let both = [Scope::CallsOutbound, Scope::CallsInbound];
        let session = identity("alice", &both);
        assert_eq!(
            check_fresh_token(&session, &identity("alice", &both)),
            Ok(())
        );
        let more = [Scope::CallsOutbound, Scope::CallsInbound, Scope::Admin];
        assert_eq!(
            check_fresh_token(&session, &identity("alice", &more)),
            Ok(()),
            "extra scopes are fine (and not added to the session)"
        );
        let err = check_fresh_token(&session, &identity("mallory", &both)).expect_err("sub");
        assert!(!err.is_forbidden());
        assert!(err.to_string().contains("mallory"), "{err}");
        let err = check_fresh_token(&session, &identity("alice", &[Scope::CallsOutbound]))
            .expect_err("scope dropped");
        assert_eq!(err, FreshTokenError::ScopeDropped("calls:inbound"));
        assert!(err.is_forbidden());
    }

    /// The session's timer in tokio time: it fires at exp + leeway, and a renewal
    /// before that moves it (what the session loop does with `select!`).
    #[tokio::test(start_paused = true)]
    async fn the_timer_fires_at_the_deadline_and_a_renewal_moves_it() {
        let start = tokio::time::Instant::now();
        let mut lifetime =
            TokenLifetime::new(T0 + 60, Duration::from_secs(5), T0, start.into_std());
        // Renewed at +50 s with a token valid for another hour.
        let renewal = tokio::time::sleep(Duration::from_secs(50));
        tokio::pin!(renewal);
        tokio::select! {
            _ = expired(&lifetime) => panic!("expired before the renewal"),
            _ = &mut renewal => {}
        }
        let now = tokio::time::Instant::now();
        assert_eq!(now - start, Duration::from_secs(50));
        lifetime.renew(T0 + 50 + 3600, T0 + 50, now.into_std());
        // The old deadline (+65 s) passes quietly; the new one fires.
        tokio::time::timeout(Duration::from_secs(3600 + 4), expired(&lifetime))
            .await
            .expect_err("not before exp + leeway");
        expired(&lifetime).await;
        assert_eq!(
            tokio::time::Instant::now() - start,
            Duration::from_secs(50 + 3600 + 5)
        );
    }
}
