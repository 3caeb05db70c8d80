//! The deadlines of many state machines in one ordered set, so the driver finds the
//! next one without scanning every call (sans-IO: instants are inputs).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

/// One deadline per key, ordered by time.
#[derive(Debug)]
pub(crate) struct TimerQueue<K: Ord + Clone + Hash> {
    /// `(deadline, key)`, earliest first.
    by_time: BTreeSet<(Instant, K)>,
    /// Each key's current deadline, to remove it when it changes.
    by_key: HashMap<K, Instant>,
}

impl<K: Ord + Clone + Hash> Default for TimerQueue<K> {
    fn default() -> Self {
        Self {
            by_time: BTreeSet::new(),
            by_key: HashMap::new(),
        }
    }
}

impl<K: Ord + Clone + Hash> TimerQueue<K> {
    /// Sets (or with `None` clears) the deadline of `key`.
    pub(crate) fn set(&mut self, key: &K, at: Option<Instant>) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
        if let Some(at) = at {
            self.by_key.insert(key.clone(), at);
            self.by_time.insert((at, key.clone()));
        }
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Removes and returns the keys whose deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        while let Some((at, _)) = self.by_time.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.by_time.pop_first() {
                self.by_key.remove(&key);
                due.push(key);
            }
        }
        due
    }

    /// Number of keys with a deadline.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn orders_replaces_and_pops() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut q = TimerQueue::default();
        q.set(&"a", Some(t0 + s(5)));
        q.set(&"b", Some(t0 + s(2)));
        q.set(&"c", Some(t0 + s(9)));
        assert_eq!(q.next(), Some(t0 + s(2)));
        q.set(&"b", Some(t0 + s(7)));
        assert_eq!(q.next(), Some(t0 + s(5)));
        q.set(&"c", None);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop_due(t0 + s(7)), vec!["a", "b"]);
        assert_eq!(q.next(), None);
    }
}
