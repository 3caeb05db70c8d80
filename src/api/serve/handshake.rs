//! Slots for TLS handshakes in progress. At most `capacity` run at once; a new
//! connection arriving when all are taken evicts the oldest handshake (it is
//! cancelled and its socket closed). A client that opens TCP and never sends a
//! ClientHello thus holds a slot only until `capacity` newer connections arrive,
//! while a real client's handshake takes one round trip: stalled handshakes cannot
//! lock new clients out, and their number stays bounded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The handshakes in progress, oldest first.
#[derive(Debug, Default)]
struct Slots {
    /// Id of the next slot (increasing, so the map is ordered by age).
    next_id: u64,
    /// Cancels each waiting handshake, by slot id.
    running: BTreeMap<u64, CancellationToken>,
}

/// The handshake slots of one TLS listener.
#[derive(Debug)]
pub struct HandshakeSlots {
    /// Most handshakes at once.
    capacity: usize,
    /// The slots taken.
    slots: Mutex<Slots>,
}

impl HandshakeSlots {
    /// Room for `capacity` handshakes at once (at least 1).
    pub fn new(capacity: usize) -> Arc<HandshakeSlots> {
        Arc::new(HandshakeSlots {
            capacity: capacity.max(1),
            slots: Mutex::new(Slots::default()),
        })
    }

    /// Takes a slot for a new handshake; when all are taken, the oldest handshake is
    /// evicted first (its [`HandshakeSlot::evicted`] resolves).
    pub fn enter(self: &Arc<Self>) -> HandshakeSlot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        while slots.running.len() >= self.capacity {
            match slots.running.pop_first() {
                Some((_, oldest)) => oldest.cancel(),
                None => break,
            }
        }
        let id = slots.next_id;
        slots.next_id += 1;
        let cancel = CancellationToken::new();
        slots.running.insert(id, cancel.clone());
        HandshakeSlot {
            slots: Arc::clone(self),
            id,
            cancel,
        }
    }

    /// Handshakes in progress.
    pub fn running(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .running
            .len()
    }
}

/// One handshake's slot; given back when dropped.
#[derive(Debug)]
pub struct HandshakeSlot {
    /// Where it came from.
    slots: Arc<HandshakeSlots>,
    /// Its id in `slots`.
    id: u64,
    /// Cancelled when a newer connection evicts this handshake.
    cancel: CancellationToken,
}

impl HandshakeSlot {
    /// Resolves when this handshake is evicted.
    pub async fn evicted(&self) {
        self.cancel.cancelled().await
    }

    /// Whether this handshake has been evicted.
    pub fn is_evicted(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut slots = self.slots.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.running.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_set_evicts_the_oldest_handshake_only() {
        let slots = HandshakeSlots::new(2);
        let a = slots.enter();
        let b = slots.enter();
        assert!(!a.is_evicted() && !b.is_evicted());
        let c = slots.enter();
        assert!(a.is_evicted(), "the third handshake evicts the oldest");
        assert!(!b.is_evicted() && !c.is_evicted());
        assert_eq!(slots.running(), 2);
        drop(a);
        assert_eq!(slots.running(), 2, "an evicted slot is already gone");
        drop(b);
        let d = slots.enter();
        assert!(
            !c.is_evicted() && !d.is_evicted(),
            "a finished handshake made room"
        );
    }
}
