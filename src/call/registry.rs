//! The call registry: admission against capacity and per-user limits, the
//! `callbridge_active_calls` gauge, and what the operator API shows of each active
//! call. A [`CallSlot`] holds one admitted call and releases it when dropped, so no
//! path can leak a slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus::IntGauge;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::signaling::protocol::EndReason;

use super::CallCommand;

/// Which way a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Browser → phone network.
    Outbound,
    /// Phone network → browser.
    Inbound,
}

impl Direction {
    /// The metric label / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Where an active call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    /// INVITE sent or received, nothing back yet.
    Dialing,
    /// 180/183 seen.
    Ringing,
    /// Answered; media flowing.
    Answered,
}

/// What the operator API shows of an active call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallInfo {
    /// Gateway-wide call id (the API's `{id}`).
    pub id: String,
    /// The client's call id within its session.
    pub call_id: String,
    /// The WebSocket session.
    pub session_id: String,
    /// The user.
    pub user: String,
    /// Outbound or inbound.
    pub direction: Direction,
    /// Caller.
    pub from: String,
    /// Callee.
    pub to: String,
    /// The trunk in use, once chosen.
    pub trunk: Option<String>,
    /// Progress.
    pub state: CallState,
    /// Correlation id of the call's logs and webhooks.
    pub correlation_id: String,
    /// SIP Call-ID of the current SIP leg.
    pub sip_call_id: Option<String>,
    /// When the call started.
    #[serde(with = "rfc3339")]
    pub started_at: SystemTime,
    /// First 180/183.
    #[serde(with = "rfc3339_opt")]
    pub ringing_at: Option<SystemTime>,
    /// When it was answered.
    #[serde(with = "rfc3339_opt")]
    pub answered_at: Option<SystemTime>,
}

/// Serialises a time as RFC 3339 with milliseconds (UTC).
pub(crate) mod rfc3339 {
    use std::time::SystemTime;

    /// serde `serialize_with`.
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }
}

/// Serialises an optional time as RFC 3339 with milliseconds, or null.
pub(crate) mod rfc3339_opt {
    use std::time::SystemTime;

    /// serde `serialize_with`.
    pub fn serialize<S: serde::Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.collect_str(&humantime::format_rfc3339_millis(*t)),
            None => s.serialize_none(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    info: CallInfo,
    commands: mpsc::UnboundedSender<CallCommand>,
}

/// Why a call was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The instance is at `server.max_calls`.
    #[error("gateway at capacity ({0} calls); try again later")]
    Capacity(usize),
    /// The user is at their concurrent call limit.
    #[error("user has {0} calls up, the limit; hang one up first")]
    PerUser(usize),
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_user: HashMap<String, usize>,
    calls: HashMap<String, Entry>,
}

/// Counts of calls in progress on this instance.
#[derive(Debug)]
pub struct CallRegistry {
    /// Totals, guarded together so admission is atomic.
    counts: Mutex<Counts>,
    /// `server.max_calls`.
    capacity: usize,
    /// Mirrors `counts.total`.
    gauge: IntGauge,
}

/// One admitted call; dropping it frees the slot.
#[derive(Debug)]
pub struct CallSlot {
    registry: Arc<CallRegistry>,
    user: String,
    id: String,
}

impl CallRegistry {
    /// A registry admitting up to `capacity` calls.
    pub fn new(capacity: usize, gauge: IntGauge) -> Arc<CallRegistry> {
        Arc::new(CallRegistry {
            counts: Mutex::new(Counts::default()),
            capacity,
            gauge,
        })
    }

    /// Admits `info`'s call if neither the capacity nor `user_limit` is reached;
    /// `commands` reaches the call's task (for the API's hangup).
    pub fn try_admit(
        self: &Arc<Self>,
        info: CallInfo,
        user_limit: usize,
        commands: mpsc::UnboundedSender<CallCommand>,
    ) -> Result<CallSlot, LimitError> {
        let user = info.user.clone();
        let user = user.as_str();
        let mut counts = self.lock();
        if counts.total >= self.capacity {
            return Err(LimitError::Capacity(self.capacity));
        }
        let mine = counts.per_user.get(user).copied().unwrap_or(0);
        if mine >= user_limit {
            return Err(LimitError::PerUser(mine));
        }
        counts.total += 1;
        *counts.per_user.entry(user.to_string()).or_insert(0) += 1;
        self.gauge
            .set(i64::try_from(counts.total).unwrap_or(i64::MAX));
        let id = info.id.clone();
        counts.calls.insert(id.clone(), Entry { info, commands });
        Ok(CallSlot {
            registry: Arc::clone(self),
            user: user.to_string(),
            id,
        })
    }

    /// Active calls, oldest first.
    pub fn list(&self) -> Vec<CallInfo> {
        let mut calls: Vec<CallInfo> = self.lock().calls.values().map(|e| e.info.clone()).collect();
        calls.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        calls
    }

    /// One active call.
    pub fn get(&self, id: &str) -> Option<CallInfo> {
        self.lock().calls.get(id).map(|e| e.info.clone())
    }

    /// Asks an active call to hang up (the browser is told `hangup`); false when
    /// there is no such call.
    pub fn hangup(&self, id: &str) -> bool {
        self.terminate(id, EndReason::Hangup)
    }

    /// Ends an active call with `reason` for the browser (e.g. `unavailable` when a
    /// drain runs out of time); false when there is no such call.
    pub fn terminate(&self, id: &str, reason: EndReason) -> bool {
        self.lock()
            .calls
            .get(id)
            .is_some_and(|e| e.commands.send(CallCommand::Terminate(reason)).is_ok())
    }

    /// Calls in progress.
    pub fn active(&self) -> usize {
        self.lock().total
    }

    /// Whether the instance is at capacity.
    pub fn at_capacity(&self) -> bool {
        self.active() >= self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic while holding this lock cannot leave counts half-updated.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn release(&self, user: &str, id: &str) {
        let mut counts = self.lock();
        counts.calls.remove(id);
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                counts.per_user.remove(user);
            }
        }
        self.gauge
            .set(i64::try_from(counts.total).unwrap_or(i64::MAX));
    }
}

impl CallSlot {
    /// The call's gateway-wide id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the API shows of this call now.
    pub fn info(&self) -> Option<CallInfo> {
        self.registry.get(&self.id)
    }

    /// Updates what the API shows of this call.
    pub fn update(&self, change: impl FnOnce(&mut CallInfo)) {
        if let Some(entry) = self.registry.lock().calls.get_mut(&self.id) {
            change(&mut entry.info);
        }
    }
}

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.registry.release(&self.user, &self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(capacity: usize) -> Arc<CallRegistry> {
        CallRegistry::new(capacity, IntGauge::new("g", "g").expect("gauge"))
    }

    fn info(id: &str, user: &str) -> CallInfo {
        CallInfo {
            id: id.into(),
            call_id: "c1".into(),
            session_id: "s-1".into(),
            user: user.into(),
            direction: Direction::Outbound,
            from: user.into(),
            to: "+15551234567".into(),
            trunk: None,
            state: CallState::Dialing,
            correlation_id: "corr".into(),
            sip_call_id: None,
            started_at: SystemTime::UNIX_EPOCH,
            ringing_at: None,
            answered_at: None,
        }
    }

    fn admit(
        r: &Arc<CallRegistry>,
        id: &str,
        user: &str,
        limit: usize,
    ) -> Result<CallSlot, LimitError> {
        r.try_admit(info(id, user), limit, mpsc::unbounded_channel().0)
    }

    #[test]
    fn list_get_update_and_hangup() {
        let r = registry(10);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let slot = r.try_admit(info("c-1", "alice"), 5, tx).expect("admit");
        slot.update(|i| i.state = CallState::Answered);
        assert_eq!(r.get("c-1").expect("listed").state, CallState::Answered);
        assert_eq!(r.list().len(), 1);
        assert!(r.hangup("c-1"));
        assert_eq!(
            rx.try_recv().ok(),
            Some(CallCommand::Terminate(EndReason::Hangup))
        );
        assert!(r.terminate("c-1", EndReason::Unavailable));
        assert_eq!(
            rx.try_recv().ok(),
            Some(CallCommand::Terminate(EndReason::Unavailable))
        );
        assert!(!r.hangup("c-2"));
        drop(slot);
        assert!(r.get("c-1").is_none() && r.list().is_empty());
    }

    #[test]
    fn per_user_limit_and_release() {
        let r = registry(10);
        let a = admit(&r, "a1", "alice", 2).expect("first");
        let _b = admit(&r, "a2", "alice", 2).expect("second");
        assert_eq!(
            admit(&r, "a3", "alice", 2).expect_err("third"),
            LimitError::PerUser(2)
        );
        let _c = admit(&r, "b1", "bob", 2).expect("other user unaffected");
        drop(a);
        assert!(admit(&r, "a4", "alice", 2).is_ok(), "slot freed on drop");
    }

    #[test]
    fn capacity_counts_everyone_and_drives_the_gauge() {
        let r = registry(2);
        let a = admit(&r, "1", "a", 5).expect("1");
        let _b = admit(&r, "2", "b", 5).expect("2");
        assert!(r.at_capacity());
        assert_eq!(r.gauge.get(), 2);
        assert_eq!(
            admit(&r, "3", "c", 5).expect_err("full"),
            LimitError::Capacity(2)
        );
        drop(a);
        assert_eq!(r.gauge.get(), 1);
        assert_eq!(r.active(), 1);
    }
}
