//! The UDP ports of live browser-facing ICE sockets, each with the user whose call
//! owns it. The WebRTC leg registers a port the moment its socket is bound (before any
//! candidate or SDP names it) and removes it when the socket closes; the TURN peer
//! policy lets a user's allocation reach the gateway's own address only on that
//! user's ports, so a relay-only browser reaches its call's media and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Shared registry of live ICE ports (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct IcePorts {
    /// Port → owners (more than one only when sockets on different addresses share a port).
    inner: Arc<Mutex<HashMap<u16, Vec<String>>>>,
}

impl IcePorts {
    fn lock(&self) -> MutexGuard<'_, HashMap<u16, Vec<String>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A lease through which one leg of `owner` registers its ports.
    pub fn lease(&self, owner: &str) -> Arc<IceLease> {
        Arc::new(IceLease {
            registry: self.clone(),
            owner: owner.to_string(),
            held: Mutex::new(Vec::new()),
        })
    }

    /// Whether `port` is a live ICE port of one of `user`'s calls.
    pub fn owned_by(&self, port: u16, user: &str) -> bool {
        self.lock()
            .get(&port)
            .is_some_and(|owners| owners.iter().any(|o| o == user))
    }

    /// The live ICE ports of `user`'s calls (for tests and diagnostics).
    pub fn ports_of(&self, user: &str) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .lock()
            .iter()
            .filter(|(_, owners)| owners.iter().any(|o| o == user))
            .map(|(port, _)| *port)
            .collect();
        ports.sort_unstable();
        ports
    }

    /// Live registered ports (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.lock().values().map(Vec::len).sum()
    }

    /// Whether no port is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn add(&self, port: u16, owner: &str) {
        self.lock().entry(port).or_default().push(owner.to_string());
    }

    fn remove(&self, port: u16, owner: &str) {
        let mut map = self.lock();
        if let Some(owners) = map.get_mut(&port) {
            if let Some(i) = owners.iter().position(|o| o == owner) {
                owners.swap_remove(i);
            }
            if owners.is_empty() {
                map.remove(&port);
            }
        }
    }
}

/// The ports one leg holds; every port is released on [`IceLease::release`] or drop.
#[derive(Debug)]
pub struct IceLease {
    /// Where the ports are registered.
    registry: IcePorts,
    /// The user the leg belongs to.
    owner: String,
    /// Ports registered through this lease and not yet released.
    held: Mutex<Vec<u16>>,
}

impl IceLease {
    fn held(&self) -> MutexGuard<'_, Vec<u16>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `port` for this lease's owner.
    pub fn add(&self, port: u16) {
        self.held().push(port);
        self.registry.add(port, &self.owner);
    }

    /// Releases `port` (its socket closed); a port not held is ignored.
    pub fn remove(&self, port: u16) {
        let mut held = self.held();
        if let Some(i) = held.iter().position(|p| *p == port) {
            held.swap_remove(i);
            self.registry.remove(port, &self.owner);
        }
    }

    /// Releases every port (the leg closed).
    pub fn release(&self) {
        let ports: Vec<u16> = std::mem::take(&mut *self.held());
        for port in ports {
            self.registry.remove(port, &self.owner);
        }
    }
}

impl Drop for IceLease {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_belong_to_their_owner_until_released() {
        let reg = IcePorts::default();
        let alice = reg.lease("alice");
        let bob = reg.lease("bob");
        alice.add(40000);
        bob.add(40002);
        assert!(reg.owned_by(40000, "alice"));
        assert!(!reg.owned_by(40000, "bob"), "another user's call port");
        assert!(!reg.owned_by(5060, "alice"), "not an ICE port");
        alice.remove(40000);
        assert!(!reg.owned_by(40000, "alice"), "socket closed");
        alice.add(40004);
        drop(alice);
        assert!(!reg.owned_by(40004, "alice"), "dropping the lease releases");
        assert_eq!(reg.len(), 1);
        bob.release();
        bob.release();
        assert!(reg.is_empty());
    }

    #[test]
    fn a_shared_port_stays_until_each_holder_releases() {
        let reg = IcePorts::default();
        let a = reg.lease("alice");
        let b = reg.lease("alice");
        a.add(41000);
        b.add(41000);
        a.release();
        assert!(reg.owned_by(41000, "alice"));
        b.release();
        assert!(!reg.owned_by(41000, "alice"));
    }
}
