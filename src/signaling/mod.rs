//! Browser signaling: protocol v1 over WebSocket, one task per session.
//!
//! I/O contract: [`session::run`] owns one upgraded WebSocket. It authenticates the
//! first frame, answers `ready`, then turns client messages into call commands and
//! call events into server messages. It holds no call state beyond a map from the
//! client's call ids to call handles.

mod handshake;
pub mod lifetime;
pub mod protocol;
pub mod resume;
pub mod session;
pub mod users;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts open sessions per client IP to enforce `limits.max_sessions_per_ip`.
#[derive(Debug, Default)]
pub struct SessionCounter {
    /// Open sessions by IP.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted session; dropping it releases the count.
#[derive(Debug)]
pub struct SessionPermit {
    counter: Arc<SessionCounter>,
    ip: IpAddr,
}

impl SessionCounter {
    /// Counts a session from `ip` unless `limit` sessions are already open.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<SessionPermit> {
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(SessionPermit {
            counter: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for SessionPermit {
    fn drop(&mut self) {
        let mut map = self
            .counter
            .per_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// A random identifier with a prefix, e.g. `s-3f2a…` (128 bits, hex).
pub fn random_id(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_limit_is_enforced_and_released() {
        let c = Arc::new(SessionCounter::default());
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let other: IpAddr = "127.0.0.2".parse().expect("ip");
        let a = c.try_open(ip, 2).expect("1");
        let _b = c.try_open(ip, 2).expect("2");
        assert!(c.try_open(ip, 2).is_none());
        assert!(c.try_open(other, 2).is_some());
        drop(a);
        assert!(c.try_open(ip, 2).is_some());
    }

    #[test]
    fn random_ids_are_distinct() {
        let a = random_id("s-");
        assert!(a.starts_with("s-") && a.len() == 34);
        assert_ne!(a, random_id("s-"));
    }
}
