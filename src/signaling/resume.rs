//! Resumable sessions: what a session owns beyond its socket ([`SessionState`]), and
//! the registry that keeps it for `server.resume_grace` after the socket drops, so a
//! new socket can `resume` it with the session id, the resume token and a still-valid
//! token of the same user ([`super::lifetime::check_fresh_token`]).
//!
//! ```text
//!  Active ──socket lost──> Parked ──resume──> Active (new socket)
//!    │ resume on a new socket while the old one lingers: the old one hands over
//!    └─────────────── Parked ──grace over──> calls end (signaling_lost)
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::lifetime::{FreshTokenError, TokenLifetime, check_fresh_token};
use super::users::UserPermit;
use crate::auth::Identity;
use crate::call::directory::Listing;
use crate::call::{CallCommand, CallHandle, SessionEvent};
use crate::secret::Secret;

/// Everything a session owns that must outlive a dropped socket.
#[derive(Debug)]
pub struct SessionState {
    /// The authenticated user.
    pub identity: Arc<Identity>,
    /// The session id.
    pub session_id: String,
    /// The current resume token (rotated at every `ready`).
    pub resume_token: Secret,
    /// When the session's current token runs out (renewed by `reauth`, `resume`).
    pub lifetime: TokenLifetime,
    /// The session's place in `limits.max_sessions_per_user` (kept while parked).
    pub user_permit: UserPermit,
    /// Calls of the session by call id.
    pub calls: HashMap<String, CallHandle>,
    /// Where calls send events for this session.
    pub events_tx: mpsc::UnboundedSender<SessionEvent>,
    /// Events not yet delivered (buffered while parked).
    pub events_rx: mpsc::UnboundedReceiver<SessionEvent>,
    /// The session's directory entry (sessions that may receive calls).
    pub listing: Option<Listing>,
    /// A message whose send failed when the socket died; resent after `resume`.
    pub undelivered: Option<crate::signaling::protocol::ServerMessage>,
}

impl SessionState {
    /// Extends the session to the `exp` of `fresh` (a verified token that
    /// [`check_fresh_token`] accepted), at Unix time `now_unix` = `now`.
    pub fn renew_token(&mut self, fresh: &Identity, now_unix: u64, now: std::time::Instant) {
        self.lifetime.renew(fresh.expires_at, now_unix, now);
        self.user_permit.renew(fresh.expires_at);
    }

    /// Hangs up every call of the session on the SIP side.
    pub fn hang_up_all(&mut self) {
        for (_, handle) in self.calls.drain() {
            handle.send(CallCommand::SignalingLost);
        }
    }
}

/// How long a resume waits for the old socket to hand the session over (or to park
/// it, when it was going away).
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// A request to the live task of a session to hand its state to a resuming socket.
pub type Takeover = oneshot::Sender<SessionState>;

enum Entry {
    /// A socket serves the session; `takeover` asks it to hand over.
    Active {
        token: Secret,
        identity: Arc<Identity>,
        takeover: mpsc::Sender<Takeover>,
    },
    /// No socket; the state waits until `generation`'s grace timer fires.
    Parked {
        state: Box<SessionState>,
        generation: u64,
    },
}

/// Why a `resume` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeRefused {
    /// No such session, a wrong resume token, or the grace is over.
    Unknown,
    /// The fresh token may not take over this session.
    Token(FreshTokenError),
}

/// Sessions that can be resumed.
#[derive(Default)]
pub struct Resumable {
    /// Sessions by id.
    entries: Mutex<HashMap<String, Entry>>,
    /// Distinguishes park periods, so an old grace timer cannot end a resumed session.
    generations: std::sync::atomic::AtomicU64,
    /// Woken whenever a session is parked (a resume waiting on a socket that was
    /// already going away takes the state from there).
    parked: tokio::sync::Notify,
}

/// Compares secrets without an early exit.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Resumable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that a socket serves `session_id` of `identity` with resume `token`.
    pub fn activate(
        &self,
        session_id: &str,
        token: &Secret,
        identity: &Arc<Identity>,
        takeover: mpsc::Sender<Takeover>,
    ) {
        self.lock().insert(
            session_id.to_string(),
            Entry::Active {
                token: token.clone(),
                identity: Arc::clone(identity),
                takeover,
            },
        );
    }

    /// Keeps `state` for `grace`; after that its calls end.
    pub fn park(self: &Arc<Self>, state: SessionState, grace: Duration) {
        let mut state = state;
        if grace.is_zero() {
            self.lock().remove(&state.session_id);
            state.hang_up_all();
            return;
        }
        let generation = self
            .generations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let session_id = state.session_id.clone();
        self.lock().insert(
            session_id.clone(),
            Entry::Parked {
                state: Box::new(state),
                generation,
            },
        );
        self.parked.notify_waiters();
        let this = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let expired = {
                let mut entries = this.lock();
                match entries.get(&session_id) {
                    Some(Entry::Parked { generation: g, .. }) if *g == generation => {
                        entries.remove(&session_id)
                    }
                    _ => None,
                }
            };
            if let Some(Entry::Parked { mut state, .. }) = expired {
                tracing::info!(%session_id, calls = state.calls.len(), "resume grace over, ending calls");
                state.hang_up_all();
            }
        });
    }

    /// Forgets a session (it ended for good).
    pub fn remove(&self, session_id: &str) {
        self.lock().remove(session_id);
    }

    /// Takes a session for a resuming socket, if `token` is right and `fresh` (the
    /// verified identity of the socket's token) may take it over: a parked one at
    /// once, an active one after its old socket hands it over. A refused attempt
    /// leaves the session where it was.
    ///
    /// The old socket may be on its way out when the resume comes (its client closed
    /// it and reconnected at once): it no longer hears the takeover, but parks the
    /// state a moment later. The resume then waits for that park (at most
    /// [`TAKEOVER_WAIT`]) and takes the state from there.
    pub async fn take(
        &self,
        session_id: &str,
        token: &str,
        fresh: &Identity,
    ) -> Result<SessionState, ResumeRefused> {
        let deadline = tokio::time::Instant::now() + TAKEOVER_WAIT;
        loop {
            let parked = self.parked.notified();
            tokio::pin!(parked);
            parked.as_mut().enable();
            if let Some(state) = self.take_once(session_id, token, fresh).await? {
                return Ok(state);
            }
            if tokio::time::timeout_at(deadline, parked).await.is_err() {
                return Err(ResumeRefused::Unknown);
            }
        }
    }

    /// One attempt of [`Resumable::take`]: the state, or None when the socket that
    /// served the session went away without handing it over.
    async fn take_once(
        &self,
        session_id: &str,
        token: &str,
        fresh: &Identity,
    ) -> Result<Option<SessionState>, ResumeRefused> {
        let takeover = {
            let mut entries = self.lock();
            let (identity, takeover) = match entries.get(session_id) {
                Some(Entry::Parked { state, .. }) if same_secret(&state.resume_token, token) => {
                    (&state.identity, None)
                }
                Some(Entry::Active {
                    token: t,
                    identity,
                    takeover,
                }) if same_secret(t, token) => (identity, Some(takeover.clone())),
                _ => return Err(ResumeRefused::Unknown),
            };
            check_fresh_token(identity, fresh).map_err(ResumeRefused::Token)?;
            match takeover {
                Some(takeover) => takeover,
                None => {
                    return match entries.remove(session_id) {
                        Some(Entry::Parked { state, .. }) => Ok(Some(*state)),
                        _ => Err(ResumeRefused::Unknown),
                    };
                }
            }
        };
        let (tx, rx) = oneshot::channel();
        if takeover.send(tx).await.is_err() {
            return Ok(None);
        }
        match tokio::time::timeout(TAKEOVER_WAIT, rx).await {
            Ok(Ok(state)) => Ok(Some(state)),
            // Dropped without an answer: the socket was going away.
            Ok(Err(_)) => Ok(None),
            Err(_) => Err(ResumeRefused::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Identity;

    fn state(id: &str, token: &str) -> (SessionState, mpsc::UnboundedReceiver<CallCommand>) {
        let users = Arc::new(super::super::users::UserSessions::default());
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (call_tx, call_rx) = mpsc::unbounded_channel();
        let mut calls = HashMap::new();
        calls.insert("c1".to_string(), CallHandle::new(call_tx));
        let identity = alice();
        let lifetime = TokenLifetime::new(60, Duration::ZERO, 0, std::time::Instant::now());
        let s = SessionState {
            identity: Arc::new(identity),
            session_id: id.into(),
            resume_token: token.into(),
            lifetime,
            user_permit: users.try_open("alice", 10, 60).expect("permit"),
            calls,
            events_tx,
            events_rx,
            listing: None,
            undelivered: None,
        };
        (s, call_rx)
    }

    fn alice() -> Identity {
        Identity {
            user: "alice".into(),
            scopes: vec![],
            caller_id: None,
            dids: vec![],
            max_calls: None,
            record: false,
            expires_at: 3600,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn parked_session_resumes_with_the_right_token_only() {
        let r = Arc::new(Resumable::default());
        let (s, mut calls) = state("s-1", "secret");
        r.park(s, Duration::from_secs(30));
        let alice = alice();
        assert_eq!(
            r.take("s-1", "wrong", &alice).await.err(),
            Some(ResumeRefused::Unknown)
        );
        assert_eq!(
            r.take("s-2", "secret", &alice).await.err(),
            Some(ResumeRefused::Unknown)
        );
        let mut mallory = alice.clone();
        mallory.user = "mallory".into();
        assert!(matches!(
            r.take("s-1", "secret", &mallory).await,
            Err(ResumeRefused::Token(FreshTokenError::OtherUser { .. }))
        ));
        let back = r
            .take("s-1", "secret", &alice)
            .await
            .expect("resumed after a refusal");
        assert_eq!(back.calls.len(), 1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            calls.try_recv().is_err(),
            "the old grace timer must not end a resumed session"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn grace_over_ends_the_calls() {
        let r = Arc::new(Resumable::default());
        let (s, mut calls) = state("s-1", "secret");
        r.park(s, Duration::from_secs(30));
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(calls.try_recv().is_err());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(calls.recv().await, Some(CallCommand::SignalingLost));
        assert_eq!(
            r.take("s-1", "secret", &alice()).await.err(),
            Some(ResumeRefused::Unknown),
            "gone after the grace"
        );
    }

    #[tokio::test]
    async fn active_session_hands_over_to_a_resuming_socket() {
        let r = Arc::new(Resumable::default());
        let (tx, mut rx) = mpsc::channel::<Takeover>(1);
        let (s, _calls) = state("s-1", "secret");
        r.activate("s-1", &"secret".into(), &s.identity, tx);
        let old_socket = tokio::spawn(async move {
            let reply = rx.recv().await.expect("takeover asked");
            let _ = reply.send(s);
        });
        let taken = r
            .take("s-1", "secret", &alice())
            .await
            .expect("handed over");
        assert_eq!(taken.session_id, "s-1");
        old_socket.await.expect("old socket task");
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_resume_racing_the_old_sockets_exit_waits_for_the_park() {
        let r = Arc::new(Resumable::default());
        let (tx, rx) = mpsc::channel::<Takeover>(1);
        let (s, _calls) = state("s-1", "secret");
        r.activate("s-1", &"secret".into(), &s.identity, tx);
        // The old socket's loop has ended (no takeover heard any more); it parks the
        // state a moment later.
        drop(rx);
        let parker = Arc::clone(&r);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            parker.park(s, Duration::from_secs(30));
        });
        let taken = r
            .take("s-1", "secret", &alice())
            .await
            .expect("taken from the park");
        assert_eq!(taken.session_id, "s-1");
        // Nothing parks a session nobody serves: refused after the bounded wait.
        let (tx, rx) = mpsc::channel::<Takeover>(1);
        let (s2, _calls2) = state("s-2", "secret");
        r.activate("s-2", &"secret".into(), &s2.identity, tx);
        drop(rx);
        assert_eq!(
            r.take("s-2", "secret", &alice()).await.err(),
            Some(ResumeRefused::Unknown)
        );
    }
}
