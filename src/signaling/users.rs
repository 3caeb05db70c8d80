//! Sessions per user on this instance: the `limits.max_sessions_per_user` cap (every
//! incoming call builds one WebRTC leg per live session of its user, so the count
//! bounds what one token can make the gateway allocate), and how long the user's
//! tokens are valid (TURN accepts a user's credentials past their expiry only while
//! one of the user's sessions holds a valid token, see [`UserSessions::valid_until`]).
//!
//! A parked session (socket dropped, waiting for `resume`) keeps its permit: it
//! still has calls and a directory entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The sessions of each user: permit id → the session's token `exp`.
#[derive(Debug, Default)]
pub struct UserSessions {
    /// Sessions by user.
    users: Mutex<HashMap<String, HashMap<u64, u64>>>,
    /// Next permit id.
    next_id: AtomicU64,
}

/// One counted session of a user; dropping it releases the count.
#[derive(Debug)]
pub struct UserPermit {
    /// The registry it counts in.
    registry: Arc<UserSessions>,
    /// The user.
    user: String,
    /// Distinguishes the user's sessions.
    id: u64,
}

impl UserSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, u64>>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new session of `user` (token valid until `expires_at`, Unix seconds)
    /// unless `limit` sessions of the user are already open.
    pub fn try_open(
        self: &Arc<Self>,
        user: &str,
        limit: usize,
        expires_at: u64,
    ) -> Option<UserPermit> {
        let mut users = self.lock();
        let sessions = users.entry(user.to_string()).or_default();
        if sessions.len() >= limit {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        sessions.insert(id, expires_at);
        Some(UserPermit {
            registry: Arc::clone(self),
            user: user.to_string(),
            id,
        })
    }

    /// Open (and parked) sessions of `user`.
    pub fn count(&self, user: &str) -> usize {
        self.lock().get(user).map_or(0, HashMap::len)
    }

    /// The latest token `exp` among the user's sessions, if the user has any.
    pub fn valid_until(&self, user: &str) -> Option<u64> {
        self.lock()
            .get(user)
            .and_then(|sessions| sessions.values().max().copied())
    }
}

impl UserPermit {
    /// Records the `exp` of the session's fresh token (`reauth`, `resume`).
    pub fn renew(&self, expires_at: u64) {
        if let Some(exp) = self
            .registry
            .lock()
            .get_mut(&self.user)
            .and_then(|sessions| sessions.get_mut(&self.id))
        {
            *exp = expires_at;
        }
    }
}

impl Drop for UserPermit {
    fn drop(&mut self) {
        let mut users = self.registry.lock();
        if let Some(sessions) = users.get_mut(&self.user) {
            sessions.remove(&self.id);
            if sessions.is_empty() {
                users.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_per_user_and_released_on_drop() {
        let r = Arc::new(UserSessions::default());
        let a = r.try_open("alice", 2, 100).expect("1");
        let _b = r.try_open("alice", 2, 200).expect("2");
        assert!(r.try_open("alice", 2, 300).is_none(), "third refused");
        assert!(
            r.try_open("bob", 2, 100).is_some(),
            "other users unaffected"
        );
        assert_eq!(r.count("alice"), 2);
        drop(a);
        assert_eq!(r.count("alice"), 1);
        assert!(r.try_open("alice", 2, 300).is_some());
    }

    #[test]
    fn valid_until_follows_the_latest_token() {
        let r = Arc::new(UserSessions::default());
        assert_eq!(r.valid_until("alice"), None);
        let a = r.try_open("alice", 5, 100).expect("a");
        let b = r.try_open("alice", 5, 150).expect("b");
        assert_eq!(r.valid_until("alice"), Some(150));
        a.renew(400);
        assert_eq!(r.valid_until("alice"), Some(400));
        drop(a);
        assert_eq!(r.valid_until("alice"), Some(150));
        drop(b);
        assert_eq!(r.valid_until("alice"), None);
        assert_eq!(r.count("alice"), 0, "no empty entries left behind");
    }
}
