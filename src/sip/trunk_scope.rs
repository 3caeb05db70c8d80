//! Which addresses belong to a trunk, sans-IO: where its digest credentials may be
//! sent and where in-dialog requests of its calls may come from.
//!
//! A trunk's addresses are the ones it was located at (the call's target, every
//! DNS SRV target, the source of an inbound INVITE we admitted) and its
//! `inbound_from` networks, which the operator declares as the carrier's. Addresses
//! are compared by IP only: carriers answer and send from other ports of the same
//! host (and TCP peers from ephemeral ports). IPv4-mapped IPv6 forms count as IPv4.

use std::net::IpAddr;

use ipnet::IpNet;

use super::TrunkSettings;

/// The addresses of one trunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrunkScope {
    /// Addresses the trunk was located at, canonical.
    ips: Vec<IpAddr>,
    /// The trunk's `inbound_from` networks.
    nets: Vec<IpNet>,
}

impl TrunkScope {
    /// The scope of `trunk` located at `ips`.
    pub(crate) fn new(trunk: &TrunkSettings, ips: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut scope = TrunkScope {
            ips: Vec::new(),
            nets: trunk.inbound_from.clone(),
        };
        for ip in ips {
            scope.add(ip);
        }
        scope
    }

    /// Adds one address the trunk was located at.
    pub(crate) fn add(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if !self.ips.contains(&ip) {
            self.ips.push(ip);
        }
    }

    /// True if `ip` is one of the trunk's addresses or in its networks.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.ips.contains(&ip) || self.nets.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn located_addresses_and_networks_only() {
        let trunk = TrunkSettings {
            inbound_from: crate::sip::parse_net("198.51.100.0/24")
                .into_iter()
                .collect(),
            ..TrunkSettings::default()
        };
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let mut scope = TrunkScope::new(&trunk, [ip("203.0.113.5")]);
        scope.add(ip("2001:db8::7"));
        assert!(scope.contains(ip("203.0.113.5")));
        assert!(scope.contains(ip("::ffff:203.0.113.5")), "v4-mapped form");
        assert!(scope.contains(ip("2001:db8::7")));
        assert!(scope.contains(ip("198.51.100.200")), "inbound_from network");
        assert!(!scope.contains(ip("203.0.113.6")));
        assert!(!scope.contains(ip("127.0.0.1")));
        assert!(!TrunkScope::default().contains(ip("203.0.113.5")));
    }
}
