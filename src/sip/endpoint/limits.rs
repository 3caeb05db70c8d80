//! Who may hold an inbound TCP/TLS connection: caps on connections from one
//! address (IPv6 by /64) and in total, and on TLS handshakes in progress, with room
//! kept apart for the configured trunks' addresses so that a flood from elsewhere
//! never locks a trunk out. No I/O and no clock: the accept loops ask
//! [`ConnectionLimits::admit`] and hold the returned [`ConnectionPermit`] for the
//! connection's life; dropping it gives the room back.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ipnet::IpNet;

use crate::sip::TrunkSettings;
use crate::sip::framer::DEFAULT_MAX_MESSAGE;

/// Limits of the inbound TCP/TLS listeners and of every stream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Inbound connections from addresses that are no trunk's, in total.
    pub max_connections: usize,
    /// Inbound connections from one such IPv4 address or IPv6 /64.
    pub max_connections_per_ip: usize,
    /// Inbound connections from trunk addresses, counted apart from the two caps
    /// above (a flood from elsewhere never takes their room).
    pub max_trunk_connections: usize,
    /// An inbound connection from a non-trunk address whose peer sent no complete
    /// SIP message for this long is closed; CRLF keepalives do not count.
    pub idle_timeout: Duration,
    /// A write that does not complete within this closes the connection (a peer
    /// that stops reading cannot hold our buffers).
    pub write_timeout: Duration,
    /// Longest inbound TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Inbound TLS handshakes in progress from non-trunk addresses; more are
    /// closed at once.
    pub max_tls_handshakes: usize,
    /// Largest SIP message framed on a stream (header section and body).
    pub max_message_bytes: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_ip: 32,
            max_trunk_connections: 256,
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(5),
            max_tls_handshakes: 64,
            max_message_bytes: DEFAULT_MAX_MESSAGE,
        }
    }
}

/// Why an inbound connection was refused (the `reason` label of
/// `callbridge_sip_connections_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address (or /64) already holds `max_connections_per_ip`.
    PerIp,
    /// `max_connections` are open from non-trunk addresses.
    Total,
    /// `max_trunk_connections` are open from trunk addresses.
    TrunkTotal,
    /// `max_tls_handshakes` are in progress.
    TlsHandshakes,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 4] = [
        Refusal::PerIp,
        Refusal::Total,
        Refusal::TrunkTotal,
        Refusal::TlsHandshakes,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::PerIp => "per_ip",
            Refusal::Total => "total",
            Refusal::TrunkTotal => "trunk_total",
            Refusal::TlsHandshakes => "tls_handshakes",
        }
    }
}

/// Why the endpoint closed a stream connection itself (the `reason` label of
/// `callbridge_sip_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No complete SIP message from the peer within the idle limit.
    Idle,
    /// A write did not complete within the write timeout.
    WriteTimeout,
    /// The byte stream could not be framed (bad or huge Content-Length, header
    /// section too long).
    Framing,
    /// The TLS handshake failed or took too long.
    TlsHandshake,
}

impl CloseReason {
    /// Every reason, in label order.
    pub const ALL: [CloseReason; 4] = [
        CloseReason::Idle,
        CloseReason::WriteTimeout,
        CloseReason::Framing,
        CloseReason::TlsHandshake,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::Idle => "idle",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::Framing => "framing",
            CloseReason::TlsHandshake => "tls_handshake",
        }
    }
}

/// Counts of refused and closed connections, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Inbound connections refused, by [`Refusal::label`].
    pub refused: Vec<(&'static str, u64)>,
    /// Connections we closed, by [`CloseReason::label`].
    pub closed: Vec<(&'static str, u64)>,
}

/// Which addresses belong to a trunk, as inbound admission judges INVITEs: its
/// `inbound_from` networks, else its resolved addresses.
#[derive(Debug, Clone)]
struct TrunkSource {
    /// `inbound_from`.
    nets: Vec<IpNet>,
    /// The resolved addresses (used when `nets` is empty).
    resolved: Vec<IpAddr>,
}

/// Open connections by kind.
#[derive(Debug, Default)]
struct Counts {
    /// From non-trunk addresses.
    others: usize,
    /// From trunk addresses.
    trunks: usize,
    /// Non-trunk connections by address key.
    per_ip: HashMap<IpAddr, usize>,
    /// Non-trunk TLS handshakes in progress.
    handshakes: usize,
}

/// The shared connection policy of an endpoint.
#[derive(Debug)]
pub(crate) struct ConnectionLimits {
    /// The caps.
    config: ConnectionConfig,
    /// Trunk sources by trunk name.
    trunks: RwLock<HashMap<String, TrunkSource>>,
    /// What is open now.
    counts: Mutex<Counts>,
    /// Refusals by [`Refusal::ALL`] index.
    refused: [AtomicU64; 4],
    /// Closes by [`CloseReason::ALL`] index.
    closed: [AtomicU64; 4],
}

/// The room one admitted connection holds; dropped with the connection.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    /// The policy to give the room back to.
    limits: Arc<ConnectionLimits>,
    /// The address key counted, for a non-trunk connection.
    key: Option<IpAddr>,
}

impl ConnectionPermit {
    /// True when the connection comes from a trunk's address.
    pub(crate) fn is_trunk(&self) -> bool {
        self.key.is_none()
    }
}

/// A TLS handshake slot; dropped when the handshake ends.
#[derive(Debug)]
pub(crate) struct HandshakePermit {
    /// The policy, `None` for a trunk's handshake (not counted).
    limits: Option<Arc<ConnectionLimits>>,
}

/// The key an address is counted under: IPv4 as is (IPv4-mapped IPv6 too), IPv6
/// by its /64 (one subscriber usually holds a whole /64).
pub(crate) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

impl ConnectionLimits {
    /// A policy with `config`'s caps and no trunks yet.
    pub(crate) fn new(config: ConnectionConfig) -> Self {
        Self {
            config,
            trunks: RwLock::default(),
            counts: Mutex::default(),
            refused: Default::default(),
            closed: Default::default(),
        }
    }

    /// The caps.
    pub(crate) fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// Adds or replaces the addresses of a trunk.
    pub(crate) fn set_trunk(&self, settings: &TrunkSettings, resolved: &[SocketAddr]) {
        let source = TrunkSource {
            nets: settings.inbound_from.clone(),
            resolved: resolved.iter().map(|a| a.ip()).collect(),
        };
        let mut trunks = match self.trunks.write() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        trunks.insert(settings.name.clone(), source);
    }

    /// True when `ip` is one of a trunk's admitted addresses.
    pub(crate) fn is_trunk(&self, ip: IpAddr) -> bool {
        let ip = ip_key_v4(ip);
        let trunks = match self.trunks.read() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        trunks.values().any(|t| {
            if t.nets.is_empty() {
                t.resolved.iter().any(|r| ip_key_v4(*r) == ip)
            } else {
                t.nets.iter().any(|n| n.contains(&ip))
            }
        })
    }

    /// Admits a new inbound connection from `ip`, or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let trunk = self.is_trunk(ip);
        let mut counts = self.lock();
        let verdict = if trunk {
            if counts.trunks >= self.config.max_trunk_connections {
                Err(Refusal::TrunkTotal)
            } else {
                counts.trunks += 1;
                Ok(None)
            }
        } else {
            let key = ip_key(ip);
            let here = counts.per_ip.get(&key).copied().unwrap_or(0);
            if here >= self.config.max_connections_per_ip {
                Err(Refusal::PerIp)
            } else if counts.others >= self.config.max_connections {
                Err(Refusal::Total)
            } else {
                counts.others += 1;
                *counts.per_ip.entry(key).or_default() += 1;
                Ok(Some(key))
            }
        };
        drop(counts);
        match verdict {
            Ok(key) => Ok(ConnectionPermit {
                limits: Arc::clone(self),
                key,
            }),
            Err(refusal) => {
                self.count_refusal(refusal);
                Err(refusal)
            }
        }
    }

    /// A TLS handshake slot for `permit`'s connection (trunks are not counted).
    pub(crate) fn handshake(
        self: &Arc<Self>,
        permit: &ConnectionPermit,
    ) -> Result<HandshakePermit, Refusal> {
        if permit.is_trunk() {
            return Ok(HandshakePermit { limits: None });
        }
        let mut counts = self.lock();
        if counts.handshakes >= self.config.max_tls_handshakes {
            drop(counts);
            self.count_refusal(Refusal::TlsHandshakes);
            return Err(Refusal::TlsHandshakes);
        }
        counts.handshakes += 1;
        Ok(HandshakePermit {
            limits: Some(Arc::clone(self)),
        })
    }

    /// Counts a connection we closed for `reason`.
    pub(crate) fn count_close(&self, reason: CloseReason) {
        if let Some(i) = CloseReason::ALL.iter().position(|r| *r == reason) {
            self.closed[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The refusal and close counters.
    pub(crate) fn stats(&self) -> ConnectionStats {
        ConnectionStats {
            refused: Refusal::ALL
                .iter()
                .zip(&self.refused)
                .map(|(r, n)| (r.label(), n.load(Ordering::Relaxed)))
                .collect(),
            closed: CloseReason::ALL
                .iter()
                .zip(&self.closed)
                .map(|(r, n)| (r.label(), n.load(Ordering::Relaxed)))
                .collect(),
        }
    }

    fn count_refusal(&self, refusal: Refusal) {
        if let Some(i) = Refusal::ALL.iter().position(|r| *r == refusal) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        match self.counts.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// An IPv4-mapped IPv6 address as IPv4 (a dual-stack listener reports those).
fn ip_key_v4(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.limits.lock();
        match self.key {
            None => counts.trunks = counts.trunks.saturating_sub(1),
            Some(key) => {
                counts.others = counts.others.saturating_sub(1);
                if let Some(n) = counts.per_ip.get_mut(&key) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        counts.per_ip.remove(&key);
                    }
                }
            }
        }
    }
}

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        if let Some(limits) = &self.limits {
            let mut counts = limits.lock();
            counts.handshakes = counts.handshakes.saturating_sub(1);
        }
    }
}

#[cfg(test)]
#[path = "limits_tests.rs"]
mod tests;
