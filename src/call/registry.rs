//! The call registry: admission against capacity and per-user limits, and the
//! `callbridge_active_calls` gauge. A [`CallSlot`] holds one admitted call and
//! releases it when dropped, so no path can leak a slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::IntGauge;

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

    /// Admits a call of `user` if neither the capacity nor `user_limit` is reached.
    pub fn try_admit(
        self: &Arc<Self>,
        user: &str,
        user_limit: usize,
    ) -> Result<CallSlot, LimitError> {
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
        Ok(CallSlot {
            registry: Arc::clone(self),
            user: user.to_string(),
        })
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

    fn release(&self, user: &str) {
        let mut counts = self.lock();
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

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.registry.release(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(capacity: usize) -> Arc<CallRegistry> {
        CallRegistry::new(capacity, IntGauge::new("g", "g").expect("gauge"))
    }

    #[test]
    fn per_user_limit_and_release() {
        let r = registry(10);
        let a = r.try_admit("alice", 2).expect("first");
        let _b = r.try_admit("alice", 2).expect("second");
        assert_eq!(
            r.try_admit("alice", 2).expect_err("third"),
            LimitError::PerUser(2)
        );
        let _c = r.try_admit("bob", 2).expect("other user unaffected");
        drop(a);
        assert!(r.try_admit("alice", 2).is_ok(), "slot freed on drop");
    }

    #[test]
    fn capacity_counts_everyone_and_drives_the_gauge() {
        let r = registry(2);
        let a = r.try_admit("a", 5).expect("1");
        let _b = r.try_admit("b", 5).expect("2");
        assert!(r.at_capacity());
        assert_eq!(r.gauge.get(), 2);
        assert_eq!(
            r.try_admit("c", 5).expect_err("full"),
            LimitError::Capacity(2)
        );
        drop(a);
        assert_eq!(r.gauge.get(), 1);
        assert_eq!(r.active(), 1);
    }
}
