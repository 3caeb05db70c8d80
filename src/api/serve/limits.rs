//! Connection caps of one listener: a total and a per-client-address count. A
//! connection holds a [`ConnectionPermit`] for as long as its socket lives (an
//! upgraded WebSocket included); dropping the permit frees both counts.
//!
//! Clients are counted by address, IPv6 by /64 (one host usually owns a whole /64),
//! IPv4-mapped IPv6 as the IPv4 address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The listener holds `max_connections` already.
    Total,
    /// This client address holds its `max_connections_per_ip` already.
    PerIp,
}

impl Refused {
    /// The `reason` label of `callbridge_http_connections_closed_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Total => "total_limit",
            Refused::PerIp => "per_ip_limit",
        }
    }
}

/// Counts of open connections, in total and per client.
#[derive(Debug, Default)]
struct Counts {
    /// All open connections.
    total: usize,
    /// Open connections per client key ([`client_key`]); absent means 0.
    per_client: HashMap<IpAddr, usize>,
}

/// The caps of one listener.
#[derive(Debug)]
pub struct ConnectionLimits {
    /// Most connections at once.
    max_total: usize,
    /// Most connections from one client key at once.
    max_per_client: usize,
    /// What is open now.
    counts: Mutex<Counts>,
    /// Set to the total on every change (`callbridge_http_connections{listener}`).
    gauge: Option<prometheus::IntGauge>,
}

impl ConnectionLimits {
    /// Caps of `max_total` connections, `max_per_client` from one client.
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<ConnectionLimits> {
        Self::build(max_total, max_per_client, None)
    }

    /// The same caps, reporting the open connections in `gauge`.
    pub fn with_gauge(
        max_total: usize,
        max_per_client: usize,
        gauge: prometheus::IntGauge,
    ) -> Arc<ConnectionLimits> {
        Self::build(max_total, max_per_client, Some(gauge))
    }

    fn build(
        max_total: usize,
        max_per_client: usize,
        gauge: Option<prometheus::IntGauge>,
    ) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_client,
            counts: Mutex::new(Counts::default()),
            gauge,
        })
    }

    fn report(&self, total: usize) {
        if let Some(gauge) = &self.gauge {
            gauge.set(i64::try_from(total).unwrap_or(i64::MAX));
        }
    }

    /// Admits one connection from `ip`, or says which cap it hit.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, Refused> {
        let key = client_key(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mine = counts.per_client.get(&key).copied().unwrap_or(0);
        if mine >= self.max_per_client {
            return Err(Refused::PerIp);
        }
        if counts.total >= self.max_total {
            return Err(Refused::Total);
        }
        counts.total += 1;
        counts.per_client.insert(key, mine + 1);
        self.report(counts.total);
        Ok(ConnectionPermit {
            limits: Arc::clone(self),
            key,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    /// Open connections of `ip`'s client key now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.per_client.get(&client_key(ip)).copied().unwrap_or(0)
    }

    fn close(&self, key: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_client.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.per_client.remove(&key);
            }
        }
        self.report(counts.total);
    }
}

/// One admitted connection; frees its counts when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    /// Whose counts to give back.
    limits: Arc<ConnectionLimits>,
    /// The client key counted.
    key: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limits.close(self.key);
    }
}

/// The address a client is counted under: IPv4 as is (IPv4-mapped IPv6 too), IPv6
/// by its /64 network.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn per_client_cap_counts_an_ipv6_slash_64_as_one_client() {
        let limits = ConnectionLimits::new(100, 2);
        let a = limits.try_open(ip("2001:db8:1:2::1")).expect("first");
        let _b = limits.try_open(ip("2001:db8:1:2:ffff::9")).expect("second");
        assert_eq!(
            limits
                .try_open(ip("2001:db8:1:2::77"))
                .expect_err("same /64"),
            Refused::PerIp
        );
        limits
            .try_open(ip("2001:db8:1:3::1"))
            .expect("another /64 is another client");
        drop(a);
        limits
            .try_open(ip("2001:db8:1:2::77"))
            .expect("a closed connection frees its place");
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_the_ipv4_address() {
        let limits = ConnectionLimits::new(100, 1);
        let _a = limits.try_open(ip("192.0.2.7")).expect("v4");
        assert_eq!(
            limits.try_open(ip("::ffff:192.0.2.7")).expect_err("mapped"),
            Refused::PerIp
        );
    }

    #[test]
    fn total_cap_and_release() {
        let limits = ConnectionLimits::new(2, 2);
        let a = limits.try_open(ip("192.0.2.1")).expect("1");
        let b = limits.try_open(ip("192.0.2.2")).expect("2");
        assert_eq!(
            limits.try_open(ip("192.0.2.3")).expect_err("full"),
            Refused::Total
        );
        assert_eq!(limits.open(), 2);
        drop((a, b));
        assert_eq!(limits.open(), 0);
        assert_eq!(limits.open_from(ip("192.0.2.1")), 0);
        limits.try_open(ip("192.0.2.3")).expect("room again");
    }
}
