//! Which peers the TURN server relays to (the classes are in [`crate::netguard`]).
//!
//! In order, the first rule that applies decides:
//! 1. never: unspecified (`0.0.0.0`, `::`), multicast, broadcast and IPv6 forms of
//!    those or of loopback (`::ffff:0.0.0.0`, 6to4, Teredo, ...) — refused always;
//! 2. `deny_peers` — refused;
//! 3. the gateway itself (loopback, its listen/media/public addresses and every
//!    address of its interfaces): only a live ICE port of one of the requesting
//!    user's own calls, on a media address, is allowed; every other port — SIP, HTTP,
//!    admin, TURN, the RTP range, the relay range, a DNS stub — is refused, and
//!    `allow_peers` cannot change that;
//! 4. `allow_peers` — allowed;
//! 5. internal (private, link-local, CGNAT, unique-local, ...) — refused;
//! 6. anything else (the public internet) — allowed.
//!
//! Ports matter: a TURN permission covers a whole IP address (RFC 8656 §9), so the
//! guard judges every Send indication and ChannelData again with the port it goes to.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::netguard::ice_ports::IcePorts;
use crate::netguard::{self, OwnAddrs, Refusal};

pub use crate::netguard::BadNetwork;

/// The peer address policy of the TURN server.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// `turn.allow_peers`: internal networks opened on purpose.
    allow: Vec<IpNet>,
    /// `turn.deny_peers`: refused on top of the built-in classes.
    deny: Vec<IpNet>,
    /// Addresses that reach the gateway itself.
    own: OwnAddrs,
    /// Addresses the gateway's ICE sockets answer on (media and public address).
    media: OwnAddrs,
    /// Whether every own address counts as a media address (`media_ip` is unspecified).
    media_on_all: bool,
    /// Live ICE ports and their users.
    ice_ports: IcePorts,
}

/// Where the gateway is, for the policy.
#[derive(Debug, Clone, Default)]
pub struct GatewayView {
    /// Every address that reaches the gateway (see [`OwnAddrs`]).
    pub own: OwnAddrs,
    /// `server.media_ip` and `server.public_ip`.
    pub media: Vec<IpAddr>,
    /// Live ICE ports of calls.
    pub ice_ports: IcePorts,
}

impl PeerPolicy {
    /// Builds the policy from the config lists and where the gateway is.
    pub fn new(
        allow: &[String],
        deny: &[String],
        gateway: GatewayView,
    ) -> Result<PeerPolicy, BadNetwork> {
        let media_on_all = gateway.media.iter().any(IpAddr::is_unspecified);
        Ok(PeerPolicy {
            allow: netguard::parse_nets(allow)?,
            deny: netguard::parse_nets(deny)?,
            own: gateway.own,
            media: OwnAddrs::new(gateway.media),
            media_on_all,
            ice_ports: gateway.ice_ports,
        })
    }

    /// Whether `user`'s allocation may send to `peer` (`user` is `None` when the
    /// allocation is not known).
    pub fn judge(&self, peer: SocketAddr, user: Option<&str>) -> Result<(), Refusal> {
        let ip = peer.ip();
        if netguard::is_never(ip) {
            return Err(Refusal::Never);
        }
        if netguard::nets_contain(&self.deny, ip) {
            return Err(Refusal::Denied);
        }
        if self.own.reaches_gateway(ip) {
            let media =
                self.media.contains(ip) || (self.media_on_all && !netguard::is_loopback(ip));
            let own_call = user.is_some_and(|u| self.ice_ports.owned_by(peer.port(), u));
            return if media && own_call {
                Ok(())
            } else {
                Err(Refusal::Gateway)
            };
        }
        if netguard::nets_contain(&self.allow, ip) {
            return Ok(());
        }
        if netguard::is_internal(ip) {
            return Err(Refusal::Internal);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn policy(allow: &[&str], deny: &[&str], media: &[&str], ports: &IcePorts) -> PeerPolicy {
        let media: Vec<IpAddr> = media.iter().map(|m| ip(m)).collect();
        let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
        let deny: Vec<String> = deny.iter().map(|s| s.to_string()).collect();
        PeerPolicy::new(
            &allow,
            &deny,
            GatewayView {
                own: OwnAddrs::new(media.iter().copied().chain([ip("192.168.7.7")])),
                media,
                ice_ports: ports.clone(),
            },
        )
        .expect("policy")
    }

    #[test]
    fn internal_and_never_ranges_are_refused_by_default() {
        let p = policy(&[], &[], &["203.0.113.10"], &IcePorts::default());
        for (bad, why) in [
            ("127.0.0.1:9", Refusal::Gateway),
            ("10.1.2.3:5000", Refusal::Internal),
            ("172.16.0.1:5000", Refusal::Internal),
            ("169.254.169.254:80", Refusal::Internal),
            ("100.64.0.1:5000", Refusal::Internal),
            ("[fc00::1]:5000", Refusal::Internal),
            ("[fe80::1]:5000", Refusal::Internal),
            ("224.0.0.1:5000", Refusal::Never),
            ("255.255.255.255:5000", Refusal::Never),
            ("0.0.0.0:5060", Refusal::Never),
            ("[::]:5060", Refusal::Never),
            ("[::1]:5060", Refusal::Gateway),
            ("[::ffff:127.0.0.1]:5060", Refusal::Gateway),
            ("[::ffff:0.0.0.0]:5060", Refusal::Never),
            ("[::127.0.0.1]:5060", Refusal::Gateway),
            ("[64:ff9b::7f00:1]:5060", Refusal::Gateway),
            ("[64:ff9b::a00:1]:5060", Refusal::Internal),
            ("[2002:7f00:1::1]:5060", Refusal::Never),
            ("[::ffff:10.0.0.1]:5000", Refusal::Internal),
        ] {
            assert_eq!(p.judge(addr(bad), Some("alice")), Err(why), "{bad}");
        }
        for good in [
            "8.8.8.8:53",
            "203.0.114.1:3478",
            "[2a00:1450::1]:443",
            "[::ffff:8.8.4.4]:53",
        ] {
            assert_eq!(p.judge(addr(good), Some("alice")), Ok(()), "{good}");
        }
    }

    #[test]
    fn the_gateway_is_reachable_only_on_the_users_own_ice_ports() {
        let ports = IcePorts::default();
        let p = policy(&[], &[], &["203.0.113.10"], &ports);
        let lease = ports.lease("alice");
        lease.add(40000);
        let other = ports.lease("bob");
        other.add(40002);
        assert_eq!(p.judge(addr("203.0.113.10:40000"), Some("alice")), Ok(()));
        assert_eq!(
            p.judge(addr("[::ffff:203.0.113.10]:40000"), Some("alice")),
            Ok(()),
            "mapped form of the media address"
        );
        for (target, user) in [
            ("203.0.113.10:5060", Some("alice")),  // SIP
            ("203.0.113.10:8443", Some("alice")),  // HTTP
            ("203.0.113.10:3478", Some("alice")),  // TURN
            ("203.0.113.10:20000", Some("alice")), // RTP range
            ("203.0.113.10:40002", Some("alice")), // another user's call
            ("203.0.113.10:40000", Some("bob")),
            ("203.0.113.10:40000", None),
            ("127.0.0.1:40000", Some("alice")), // loopback is not the media address
            ("192.168.7.7:40000", Some("alice")), // own, not a media address
            ("0.0.0.0:40000", Some("alice")),
        ] {
            assert!(p.judge(addr(target), user).is_err(), "{target} as {user:?}");
        }
        drop(lease);
        assert_eq!(
            p.judge(addr("203.0.113.10:40000"), Some("alice")),
            Err(Refusal::Gateway),
            "the call ended"
        );
    }

    #[test]
    fn allow_opens_internal_networks_but_never_the_gateway_and_deny_wins() {
        let ports = IcePorts::default();
        let p = policy(
            &["10.20.0.0/16", "192.168.0.0/16", "127.0.0.0/8", "0.0.0.0/0"],
            &["10.20.9.0/24", "8.8.8.8"],
            &["127.0.0.2"],
            &ports,
        );
        assert_eq!(p.judge(addr("10.20.3.4:5000"), None), Ok(()));
        assert_eq!(
            p.judge(addr("10.20.9.1:5000"), None),
            Err(Refusal::Denied),
            "deny wins"
        );
        assert_eq!(p.judge(addr("8.8.8.8:53"), None), Err(Refusal::Denied));
        assert_eq!(p.judge(addr("127.0.0.1:5060"), None), Err(Refusal::Gateway));
        assert_eq!(
            p.judge(addr("192.168.7.7:5060"), None),
            Err(Refusal::Gateway)
        );
        assert_eq!(p.judge(addr("0.0.0.0:5060"), None), Err(Refusal::Never));
        let lease = ports.lease("carol");
        lease.add(41000);
        assert_eq!(
            p.judge(addr("127.0.0.2:41000"), Some("carol")),
            Ok(()),
            "media on loopback (tests, local use): the call's own port"
        );
        assert_eq!(
            p.judge(addr("127.0.0.2:41001"), Some("carol")),
            Err(Refusal::Gateway)
        );
    }

    #[test]
    fn media_on_every_interface() {
        let ports = IcePorts::default();
        let p = PeerPolicy::new(
            &[],
            &[],
            GatewayView {
                own: OwnAddrs::new([ip("198.51.100.4"), ip("203.0.113.10")]),
                media: vec![ip("0.0.0.0"), ip("203.0.113.10")],
                ice_ports: ports.clone(),
            },
        )
        .expect("policy");
        let lease = ports.lease("dan");
        lease.add(42000);
        assert_eq!(p.judge(addr("198.51.100.4:42000"), Some("dan")), Ok(()));
        assert_eq!(
            p.judge(addr("127.0.0.1:42000"), Some("dan")),
            Err(Refusal::Gateway)
        );
        assert_eq!(
            p.judge(addr("0.0.0.0:42000"), Some("dan")),
            Err(Refusal::Never)
        );
    }

    #[test]
    fn bad_networks_are_named() {
        assert_eq!(
            PeerPolicy::new(&["10.0.0.0/33".into()], &[], GatewayView::default()).expect_err("bad"),
            BadNetwork("10.0.0.0/33".into())
        );
    }
}
