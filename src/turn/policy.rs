//! Which peer addresses the TURN server relays to. By default loopback, private,
//! link-local, CGNAT, multicast, broadcast and unspecified addresses are refused —
//! except the gateway's own media addresses — so the relay never opens a way into
//! the operator's network. `allow_peers` overrides, `deny_peers` adds.

use std::net::IpAddr;

use ipnet::IpNet;

/// The peer address policy of the TURN server.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Always allowed (checked first).
    allow: Vec<IpNet>,
    /// Always refused.
    deny: Vec<IpNet>,
    /// The gateway's own media addresses (allowed even when private).
    own: Vec<IpAddr>,
}

/// A network that is not a valid CIDR or address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an address or CIDR network")]
pub struct BadNetwork(pub String);

fn parse_net(text: &str) -> Result<IpNet, BadNetwork> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| BadNetwork(text.to_string()))
}

impl PeerPolicy {
    /// Builds the policy from config lists and the gateway's own addresses.
    pub fn new(
        allow: &[String],
        deny: &[String],
        own: Vec<IpAddr>,
    ) -> Result<PeerPolicy, BadNetwork> {
        Ok(PeerPolicy {
            allow: allow
                .iter()
                .map(|s| parse_net(s))
                .collect::<Result<_, _>>()?,
            deny: deny
                .iter()
                .map(|s| parse_net(s))
                .collect::<Result<_, _>>()?,
            own,
        })
    }

    /// Whether a permission or channel to `peer` may be created.
    pub fn permits(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        if self.allow.iter().any(|n| n.contains(&peer)) {
            return true;
        }
        if self.deny.iter().any(|n| n.contains(&peer)) {
            return false;
        }
        if self.own.iter().any(|own| canonical(*own) == peer) {
            return true;
        }
        !is_internal(peer)
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Addresses that are not on the public internet.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xC0) == 64) // 100.64.0.0/10 CGNAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 IETF
                || (o[0] == 198 && (o[1] & 0xFE) == 18) // 198.18.0.0/15 benchmarking
                || o[0] >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xFE00) == 0xFC00 // fc00::/7 unique local
                || (s[0] & 0xFFC0) == 0xFE80 // fe80::/10 link local
                || (s[0] == 0x2001 && s[1] == 0x0DB8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xFF9B) // NAT64 (would reach IPv4 internals)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn internal_ranges_are_refused_by_default() {
        let p = PeerPolicy::new(&[], &[], vec![]).expect("policy");
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!p.permits(ip(bad)), "{bad} must be refused");
        }
        for good in ["8.8.8.8", "203.0.114.1", "2a00:1450::1", "::ffff:8.8.4.4"] {
            assert!(p.permits(ip(good)), "{good} must be allowed");
        }
    }

    #[test]
    fn own_addresses_allow_and_deny_lists() {
        let p = PeerPolicy::new(
            &["10.20.0.0/16".into()],
            &["8.8.8.0/24".into(), "1.1.1.1".into()],
            vec![ip("127.0.0.1"), ip("192.168.7.7")],
        )
        .expect("policy");
        assert!(
            p.permits(ip("127.0.0.1")),
            "the gateway's own media address"
        );
        assert!(p.permits(ip("192.168.7.7")));
        assert!(!p.permits(ip("127.0.0.2")), "only the exact own address");
        assert!(p.permits(ip("10.20.3.4")), "allowlisted private network");
        assert!(!p.permits(ip("10.21.3.4")));
        assert!(!p.permits(ip("8.8.8.8")), "denylisted public address");
        assert!(!p.permits(ip("1.1.1.1")));
        assert!(p.permits(ip("1.1.1.2")));
    }

    #[test]
    fn bad_networks_are_named() {
        assert_eq!(
            PeerPolicy::new(&["10.0.0.0/33".into()], &[], vec![]).expect_err("bad"),
            BadNetwork("10.0.0.0/33".into())
        );
    }
}
