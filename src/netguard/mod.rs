//! Where the gateway may send on behalf of a client: the address classes shared by
//! the TURN peer policy (`turn::policy`) and the browser ICE candidate policy
//! (`media::candidates`), the gateway's own addresses, and the registry of live ICE
//! ports (`ice_ports`).
//!
//! Sans-IO: every decision is a plain function of an address and the sets built at
//! start. Only [`OwnAddrs::with_interfaces`] reads the host's interfaces, once.
//!
//! Classes, most severe first:
//! - never: unspecified (`0.0.0.0/8`, `::`), multicast, broadcast, and IPv6 forms that
//!   carry one of those or a loopback address (IPv4-mapped `::ffff:a.b.c.d`,
//!   IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo).
//!   No configuration re-opens them.
//! - the gateway itself: loopback and the gateway's own addresses. Each policy says
//!   which few ports there are reachable (its own rule).
//! - internal: private, link-local, CGNAT, unique-local, documentation, benchmarking,
//!   reserved, NAT64 local-use, 6to4 and Teredo: refused unless configured.

pub mod ice_ports;
pub mod metrics;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address was refused (for logs and counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unspecified, multicast or broadcast, or an IPv6 form carrying such or loopback.
    Never,
    /// Loopback or one of the gateway's own addresses, on a port not open to this use.
    Gateway,
    /// In a configured deny list.
    Denied,
    /// A private/internal network that is not configured as allowed.
    Internal,
    /// Not an IP address (a host name or mDNS `.local` name): never resolved.
    NotAnAddress,
}

impl Refusal {
    /// A short label, for logs and the metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Never => "unspecified_or_multicast",
            Refusal::Gateway => "gateway_itself",
            Refusal::Denied => "denied",
            Refusal::Internal => "internal",
            Refusal::NotAnAddress => "not_an_address",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A network that is not a valid CIDR or address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an address or CIDR network")]
pub struct BadNetwork(pub String);

/// Parses `10.0.0.0/8` or a single address (`10.1.2.3` is `10.1.2.3/32`).
pub fn parse_net(text: &str) -> Result<IpNet, BadNetwork> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| BadNetwork(text.to_string()))
}

/// Parses a list of networks.
pub fn parse_nets(list: &[String]) -> Result<Vec<IpNet>, BadNetwork> {
    list.iter().map(|s| parse_net(s)).collect()
}

/// The address a packet to `ip` really reaches: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`) and NAT64 well-known-prefix (`64:ff9b::a.b.c.d`)
/// addresses are the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    if v6.is_loopback() || v6.is_unspecified() {
        return ip;
    }
    if s[..6] == [0; 6] || (s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0; 4]) {
        return IpAddr::V4(low_v4(&v6));
    }
    ip
}

fn low_v4(v6: &Ipv6Addr) -> Ipv4Addr {
    let o = v6.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

/// IPv4 addresses a 6to4 (`2002:a.b.c.d::/48`) or Teredo (`2001:0::/32`: server and
/// obfuscated client) address leads to.
pub fn tunnelled_v4(ip: IpAddr) -> Vec<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else {
        return Vec::new();
    };
    let o = v6.octets();
    let s = v6.segments();
    if s[0] == 0x2002 {
        return vec![Ipv4Addr::new(o[2], o[3], o[4], o[5])];
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return vec![
            Ipv4Addr::new(o[4], o[5], o[6], o[7]),
            Ipv4Addr::new(!o[12], !o[13], !o[14], !o[15]),
        ];
    }
    Vec::new()
}

/// Unspecified (`0.0.0.0/8`, `::`), multicast or broadcast (after [`canonical`]), or
/// a tunnelled form of one of those or of loopback. Never a legitimate peer.
pub fn is_never(ip: IpAddr) -> bool {
    let tunnelled = tunnelled_v4(ip)
        .into_iter()
        .any(|v4| v4.is_loopback() || never_v4(v4));
    tunnelled
        || match canonical(ip) {
            IpAddr::V4(v4) => never_v4(v4),
            IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
        }
}

fn never_v4(v4: Ipv4Addr) -> bool {
    v4.octets()[0] == 0 || v4.is_multicast() || v4.is_broadcast()
}

/// Loopback, after [`canonical`] (`127.0.0.0/8`, `::1`, `::ffff:127.0.0.1`, ...).
pub fn is_loopback(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

/// Addresses that are not on the public internet (after [`canonical`]); includes
/// loopback and every [`is_never`] address.
pub fn is_internal(ip: IpAddr) -> bool {
    if is_never(ip) {
        return true;
    }
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_documentation()
                || (o[0] == 100 && (o[1] & 0xC0) == 64) // 100.64.0.0/10 CGNAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24 IETF
                || (o[0] == 198 && (o[1] & 0xFE) == 18) // 198.18.0.0/15 benchmarking
                || o[0] >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || (s[0] & 0xFE00) == 0xFC00 // fc00::/7 unique local
                || (s[0] & 0xFFC0) == 0xFE80 // fe80::/10 link local
                || (s[0] & 0xFFC0) == 0xFEC0 // fec0::/10 site local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0DB8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xFF9B) // NAT64 (local-use /48 too)
                || s[0] == 0x2002 // 6to4
                || (s[0] == 0x2001 && s[1] == 0) // Teredo
        }
    }
}

/// Whether `net` contains `ip` or its [`canonical`] form.
pub fn nets_contain(nets: &[IpNet], ip: IpAddr) -> bool {
    let c = canonical(ip);
    nets.iter().any(|n| n.contains(&ip) || n.contains(&c))
}

/// Networks that a configured allow list can never open (for config validation):
/// unspecified, loopback and multicast, in both families and mapped forms.
pub fn never_networks() -> Vec<IpNet> {
    [
        "0.0.0.0/8",
        "127.0.0.0/8",
        "224.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "::1/128",
        "::ffff:0.0.0.0/104",
        "::ffff:127.0.0.0/104",
        "ff00::/8",
    ]
    .iter()
    .filter_map(|n| n.parse().ok())
    .collect()
}

/// The first of [`never_networks`] that `net` overlaps, if any.
pub fn overlaps_never(net: &IpNet) -> Option<IpNet> {
    never_networks()
        .into_iter()
        .find(|n| net.contains(n) || n.contains(net))
}

/// The gateway's own addresses: configured listen/media/public addresses and, with
/// [`OwnAddrs::with_interfaces`], every address of the host's interfaces (a service
/// listening on `0.0.0.0` answers on all of them). Loopback always counts as own.
#[derive(Debug, Clone, Default)]
pub struct OwnAddrs {
    /// Canonical own addresses (unspecified ones are never stored).
    ips: HashSet<IpAddr>,
}

/// Every IP address of this host's interfaces with its interface's flags (up,
/// loopback, ...), read now.
pub fn interface_addresses() -> std::io::Result<Vec<(IpAddr, nix::net::if_::InterfaceFlags)>> {
    let list = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(list
        .filter_map(|ifa| {
            let addr = ifa.address.as_ref()?;
            let ip = if let Some(sin) = addr.as_sockaddr_in() {
                IpAddr::V4(sin.ip())
            } else {
                IpAddr::V6(addr.as_sockaddr_in6()?.ip())
            };
            Some((ip, ifa.flags))
        })
        .collect())
}

impl OwnAddrs {
    /// The given addresses (unspecified ones skipped: they stand for every interface).
    pub fn new(ips: impl IntoIterator<Item = IpAddr>) -> OwnAddrs {
        OwnAddrs {
            ips: ips
                .into_iter()
                .map(canonical)
                .filter(|ip| !ip.is_unspecified())
                .collect(),
        }
    }

    /// Adds the addresses of the host's interfaces, up or down (read once, now).
    pub fn with_interfaces(mut self) -> OwnAddrs {
        match interface_addresses() {
            Ok(list) => {
                for (ip, _) in list {
                    let ip = canonical(ip);
                    if !ip.is_unspecified() {
                        self.ips.insert(ip);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list network interfaces; only configured addresses count as the gateway's own")
            }
        }
        self
    }

    /// Whether a packet to `ip` reaches this host: loopback, unspecified or an own address.
    pub fn reaches_gateway(&self, ip: IpAddr) -> bool {
        let c = canonical(ip);
        c.is_loopback() || c.is_unspecified() || self.ips.contains(&c)
    }

    /// Whether `ip` is one of the listed own addresses (loopback only when listed).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ips.contains(&canonical(ip))
    }
}

/// The gateway's own addresses from its configuration (every listen, media, public
/// and SIP external address) and the host's interfaces.
pub fn own_addrs(config: &crate::config::Config) -> OwnAddrs {
    let mut ips = vec![
        config.server.listen.ip(),
        config.server.media_ip,
        config.sip.listen.ip(),
    ];
    ips.extend(config.server.public_ip);
    ips.extend(config.sip.external_address);
    ips.extend(config.sip.tls_listen.map(|a| a.ip()));
    if let Some(turn) = &config.turn {
        ips.push(turn.listen.ip());
        ips.extend(turn.tls_listen.map(|a| a.ip()));
    }
    OwnAddrs::new(ips).with_interfaces()
}

#[cfg(test)]
mod tests;
