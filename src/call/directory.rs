//! The directory of live sessions that may receive calls: which sessions a user has
//! on this instance, and which user a dialed DID belongs to (from `[[dids]]` in the
//! config, or the `dids` claim of a live session's token).
//!
//! Sessions register when they authenticate with `calls:inbound` and are removed when
//! their [`Listing`] is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::SessionEvent;

/// A session that can be offered calls.
#[derive(Debug, Clone)]
pub struct LiveSession {
    /// The session id.
    pub session_id: String,
    /// Delivers events (incoming calls, messages) to the session task.
    pub events: mpsc::UnboundedSender<SessionEvent>,
}

#[derive(Debug, Default)]
struct Entries {
    /// user → sessions.
    by_user: HashMap<String, Vec<LiveSession>>,
    /// DID (normalised) → user, from live tokens.
    token_dids: HashMap<String, (String, usize)>,
}

/// Live inbound-capable sessions of this instance.
#[derive(Debug)]
pub struct Directory {
    /// DID → user from the configuration (checked first).
    configured: HashMap<String, String>,
    /// Live sessions and their DIDs.
    entries: Mutex<Entries>,
    /// Told the presence keys (user, `did:…`) that have no live session left here.
    departures: Mutex<Option<mpsc::UnboundedSender<Vec<String>>>>,
}

/// A session's place in the directory; dropping it removes the session.
#[derive(Debug)]
pub struct Listing {
    directory: Arc<Directory>,
    user: String,
    session_id: String,
    dids: Vec<String>,
}

impl Directory {
    /// A directory with the configured DID owners.
    pub fn new(configured: HashMap<String, String>) -> Arc<Directory> {
        Arc::new(Directory {
            configured,
            entries: Mutex::new(Entries::default()),
            departures: Mutex::new(None),
        })
    }

    /// Where to report presence keys that lost their last session (the location
    /// store removes them at once instead of waiting for them to expire).
    pub fn on_departure(&self, tx: mpsc::UnboundedSender<Vec<String>>) {
        *self.departures.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists a session of `user` owning `dids` (from its token).
    pub fn register(
        self: &Arc<Self>,
        user: &str,
        dids: &[String],
        session: LiveSession,
    ) -> Listing {
        let mut entries = self.lock();
        let session_id = session.session_id.clone();
        entries
            .by_user
            .entry(user.to_string())
            .or_default()
            .push(session);
        for did in dids {
            let slot = entries
                .token_dids
                .entry(did.clone())
                .or_insert_with(|| (user.to_string(), 0));
            if slot.0 == user {
                slot.1 += 1;
            }
        }
        Listing {
            directory: Arc::clone(self),
            user: user.to_string(),
            session_id,
            dids: dids.to_vec(),
        }
    }

    /// The user a DID rings: the configuration first, then live tokens.
    pub fn owner_of(&self, did: &str) -> Option<String> {
        if let Some(user) = self.configured.get(did) {
            return Some(user.clone());
        }
        self.lock()
            .token_dids
            .get(did)
            .map(|(user, _)| user.clone())
    }

    /// The live sessions of `user` on this instance.
    pub fn sessions_of(&self, user: &str) -> Vec<LiveSession> {
        self.lock().by_user.get(user).cloned().unwrap_or_default()
    }

    /// Users with at least one live session (for refreshing the location store).
    pub fn users(&self) -> Vec<String> {
        self.lock().by_user.keys().cloned().collect()
    }

    /// Location-store keys this instance answers for: every user with a live session
    /// and every DID claimed by a live token (`did:+1555…`).
    pub fn presence_keys(&self) -> Vec<String> {
        let entries = self.lock();
        let mut keys: Vec<String> = entries.by_user.keys().cloned().collect();
        keys.extend(
            entries
                .token_dids
                .keys()
                .map(|d| super::inbound::did_key(d)),
        );
        keys
    }

    fn remove(&self, user: &str, session_id: &str, dids: &[String]) {
        let mut gone = Vec::new();
        let mut entries = self.lock();
        if let Some(list) = entries.by_user.get_mut(user) {
            list.retain(|s| s.session_id != session_id);
            if list.is_empty() {
                entries.by_user.remove(user);
                gone.push(user.to_string());
            }
        }
        for did in dids {
            if let Some((owner, count)) = entries.token_dids.get_mut(did)
                && owner == user
            {
                *count -= 1;
                if *count == 0 {
                    entries.token_dids.remove(did);
                    gone.push(super::inbound::did_key(did));
                }
            }
        }
        drop(entries);
        if !gone.is_empty()
            && let Some(tx) = self
                .departures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
        {
            let _ = tx.send(gone);
        }
    }
}

impl Listing {
    /// Whether this was the user's last session here (checked before dropping).
    pub fn is_last(&self) -> bool {
        self.directory.sessions_of(&self.user).len() <= 1
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        self.directory
            .remove(&self.user, &self.session_id, &self.dids);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str) -> LiveSession {
        LiveSession {
            session_id: id.into(),
            events: mpsc::unbounded_channel().0,
        }
    }

    #[test]
    fn sessions_and_dids_come_and_go() {
        let configured = HashMap::from([("+15550001111".to_string(), "alice".to_string())]);
        let d = Directory::new(configured);
        let (tx, mut departures) = mpsc::unbounded_channel();
        d.on_departure(tx);
        assert_eq!(d.owner_of("+15550001111").as_deref(), Some("alice"));
        assert_eq!(d.owner_of("+15550002222"), None);

        let a1 = d.register("bob", &["+15550002222".into()], session("s-1"));
        let a2 = d.register("bob", &["+15550002222".into()], session("s-2"));
        assert_eq!(d.owner_of("+15550002222").as_deref(), Some("bob"));
        assert_eq!(d.sessions_of("bob").len(), 2);
        assert!(!a1.is_last());
        drop(a1);
        assert_eq!(d.sessions_of("bob").len(), 1);
        assert_eq!(
            d.owner_of("+15550002222").as_deref(),
            Some("bob"),
            "still one session"
        );
        assert!(a2.is_last());
        drop(a2);
        assert!(d.sessions_of("bob").is_empty());
        assert_eq!(d.owner_of("+15550002222"), None);
        assert_eq!(
            departures.try_recv().ok(),
            Some(vec!["bob".to_string(), "did:+15550002222".to_string()]),
            "the last session's keys leave the location store"
        );
        assert!(
            departures.try_recv().is_err(),
            "only once, for the last session"
        );
        assert!(d.users().is_empty());
    }

    #[test]
    fn a_token_cannot_take_over_a_did_owned_by_another_live_user() {
        let d = Directory::new(HashMap::new());
        let _bob = d.register("bob", &["+1555".into()], session("s-1"));
        let mallory = d.register("mallory", &["+1555".into()], session("s-2"));
        assert_eq!(d.owner_of("+1555").as_deref(), Some("bob"));
        drop(mallory);
        assert_eq!(d.owner_of("+1555").as_deref(), Some("bob"));
    }
}
