//! Locating a trunk (RFC 3263 §4.2, without NAPTR: the transport comes from the
//! trunk's config). A name without a port is looked up as SRV (`_sip._udp`,
//! `_sip._tcp`, `_sips._tcp`); its targets are ordered by priority and weight (RFC
//! 2782) and resolved to addresses, which the call tries in turn on 5xx, 408 or a
//! transport error. Without SRV records, the name's A/AAAA on the transport's
//! default port. A name with a port, or an IP literal, resolves as before (the
//! system resolver, first address).

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, TokioResolver};

use super::TrunkSettings;
use super::transport::Transport;

/// Most addresses one trunk's SRV records expand to (RFC 3263 leaves it open).
const MAX_TARGETS: usize = 8;
/// One DNS query's timeout (two attempts per server).
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a whole location (SRV and the targets' addresses) may take: call
/// setup waits for it.
const LOCATE_TIMEOUT: Duration = Duration::from_secs(6);

/// Why a trunk could not be located.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The name did not resolve.
    #[error("cannot resolve {name}: {message}")]
    Resolve {
        /// The name looked up.
        name: String,
        /// What the resolver said.
        message: String,
    },
    /// The SRV record says the service is not offered (RFC 2782 target ".").
    #[error(
        "{name}: the SRV record's target is \".\", the domain offers no SIP service on this transport; check the trunk's address and transport"
    )]
    NotOffered {
        /// The SRV name.
        name: String,
    },
    /// `sip.dns_servers` could not be used, or the system has no resolver config.
    #[error("DNS resolver: {0}")]
    Config(String),
}

/// One SRV record: where and in which order to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SrvTarget {
    /// Lower is tried first.
    pub priority: u16,
    /// Share of the selections within a priority.
    pub weight: u16,
    /// Port on the target.
    pub port: u16,
    /// Host name of the target.
    pub target: String,
}

/// Orders SRV records as RFC 2782 says: by priority, and within a priority by a
/// weighted random draw (`pick(total)` returns a number in `0..=total`).
pub(crate) fn order_srv(
    mut records: Vec<SrvTarget>,
    mut pick: impl FnMut(u32) -> u32,
) -> Vec<SrvTarget> {
    // Zero weights first within a priority, as the RFC's selection assumes.
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut ordered = Vec::with_capacity(records.len());
    while let Some(first) = records.first() {
        let priority = first.priority;
        let split = records
            .iter()
            .position(|r| r.priority != priority)
            .unwrap_or(records.len());
        let mut group: Vec<SrvTarget> = records.drain(..split).collect();
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let draw = pick(total).min(total);
            let mut running = 0u32;
            let chosen = group
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= draw
                })
                .unwrap_or(0);
            ordered.push(group.remove(chosen));
        }
    }
    ordered
}

/// The SRV name of `host` for `transport` (RFC 3263 §4.2).
pub(crate) fn srv_name(host: &str, transport: Transport) -> String {
    let service = match transport {
        Transport::Udp => "_sip._udp",
        Transport::Tcp => "_sip._tcp",
        Transport::Tls => "_sips._tcp",
    };
    format!("{service}.{}.", host.trim_end_matches('.'))
}

/// Finds the addresses of trunks; one per endpoint (the resolver caches by TTL).
pub struct Locator {
    /// The DNS resolver for SRV; `None` when the system has no resolver config
    /// (then names with a port still resolve through the system resolver).
    dns: Option<TokioResolver>,
}

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locator")
            .field("srv", &self.dns.is_some())
            .finish()
    }
}

impl Locator {
    /// A locator asking `servers` (UDP, then TCP for truncated answers), or the
    /// system's resolvers (`/etc/resolv.conf`) when the list is empty.
    pub fn new(servers: &[SocketAddr]) -> Self {
        let mut builder = if servers.is_empty() {
            match TokioResolver::builder_tokio() {
                Ok(builder) => builder,
                Err(e) => {
                    tracing::warn!(
                        "no system DNS configuration ({e}); trunks need host:port addresses (no SRV)"
                    );
                    return Locator { dns: None };
                }
            }
        } else {
            let mut group = NameServerConfigGroup::new();
            for addr in servers {
                group.push(NameServerConfig::new(*addr, Protocol::Udp));
                group.push(NameServerConfig::new(*addr, Protocol::Tcp));
            }
            let config = ResolverConfig::from_parts(None, Vec::new(), group);
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        };
        builder.options_mut().timeout = QUERY_TIMEOUT;
        builder.options_mut().attempts = 2;
        Locator {
            dns: Some(builder.build()),
        }
    }

    /// The addresses to try for `trunk`, in order; never empty on success. Gives up
    /// after [`LOCATE_TIMEOUT`].
    pub async fn locate(&self, trunk: &TrunkSettings) -> Result<Vec<SocketAddr>, DnsError> {
        let found = tokio::time::timeout(LOCATE_TIMEOUT, self.locate_unbounded(trunk))
            .await
            .unwrap_or_else(|_| {
                Err(DnsError::Resolve {
                    name: trunk.host.clone(),
                    message: format!("no answer within {LOCATE_TIMEOUT:?}"),
                })
            })?;
        if found.is_empty() {
            return Err(DnsError::Resolve {
                name: trunk.host.clone(),
                message: "no address".into(),
            });
        }
        Ok(found)
    }

    async fn locate_unbounded(&self, trunk: &TrunkSettings) -> Result<Vec<SocketAddr>, DnsError> {
        let dns = match (&self.dns, trunk.srv) {
            (Some(dns), true) => dns,
            (None, true) => {
                return Err(DnsError::Config(format!(
                    "trunk `{}` has no port, which needs an SRV lookup, but the system has no DNS configuration; set sip.dns_servers or write host:port",
                    trunk.name
                )));
            }
            (_, false) => {
                return first_address(&trunk.host, trunk.port)
                    .await
                    .map(|a| vec![a]);
            }
        };
        let name = srv_name(&trunk.host, trunk.transport);
        let records = match dns.srv_lookup(name.as_str()).await {
            Ok(lookup) => lookup
                .iter()
                .map(|srv| SrvTarget {
                    priority: srv.priority(),
                    weight: srv.weight(),
                    port: srv.port(),
                    target: srv.target().to_utf8(),
                })
                .collect::<Vec<_>>(),
            Err(e) if no_such_records(&e) => Vec::new(),
            Err(e) => {
                return Err(DnsError::Resolve {
                    name,
                    message: e.to_string(),
                });
            }
        };
        if records.is_empty() {
            // No SRV: the name's own addresses on the default port (RFC 3263 §4.2).
            tracing::debug!(trunk = %trunk.name, %name, "no SRV records; using A/AAAA");
            let addrs = lookup_addresses(dns, &trunk.host, trunk.port).await?;
            return Ok(addrs.into_iter().take(MAX_TARGETS).collect());
        }
        if records.len() == 1 && records[0].target.trim_end_matches('.').is_empty() {
            return Err(DnsError::NotOffered { name });
        }
        let mut ordered = order_srv(records, |total| rand::random_range(0..=total));
        ordered.truncate(MAX_TARGETS);
        // The targets' addresses in parallel, kept in SRV order.
        let lookups = ordered
            .iter()
            .map(|record| lookup_addresses(dns, &record.target, record.port));
        let mut addrs = Vec::new();
        let mut errors = Vec::new();
        for result in futures_util::future::join_all(lookups).await {
            match result {
                Ok(found) => {
                    for addr in found {
                        if !addrs.contains(&addr) && addrs.len() < MAX_TARGETS {
                            addrs.push(addr);
                        }
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        if addrs.is_empty() {
            return Err(DnsError::Resolve {
                name,
                message: format!("no SRV target has an address ({})", errors.join("; ")),
            });
        }
        tracing::debug!(trunk = %trunk.name, %name, targets = ?addrs, "located by SRV");
        Ok(addrs)
    }
}

/// True when the name has no such records (NXDOMAIN, or NOERROR without them);
/// false for server failures (SERVFAIL, REFUSED...), which must not send the call
/// to the domain's A record instead.
fn no_such_records(e: &ResolveError) -> bool {
    matches!(
        e.proto().map(|p| p.kind()),
        Some(ProtoErrorKind::NoRecordsFound {
            response_code: ResponseCode::NXDomain | ResponseCode::NoError,
            ..
        })
    )
}

/// Every A/AAAA address of `host` (IPv4 first) on `port`.
async fn lookup_addresses(
    dns: &TokioResolver,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, DnsError> {
    let fqdn = format!("{}.", host.trim_end_matches('.'));
    let ips = dns
        .lookup_ip(fqdn.as_str())
        .await
        .map_err(|e| DnsError::Resolve {
            name: host.to_string(),
            message: e.to_string(),
        })?;
    let mut addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    Ok(addrs)
}

/// The first address of `host:port` from the system resolver.
async fn first_address(host: &str, port: u16) -> Result<SocketAddr, DnsError> {
    let error = |message: String| DnsError::Resolve {
        name: host.to_string(),
        message,
    };
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| error(e.to_string()))?
        .next()
        .ok_or_else(|| error("no address".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn srv(priority: u16, weight: u16, target: &str) -> SrvTarget {
        SrvTarget {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        }
    }

    fn names(records: &[SrvTarget]) -> Vec<&str> {
        records.iter().map(|r| r.target.as_str()).collect()
    }

    #[test]
    fn priority_first_then_weight() {
        let records = vec![srv(20, 0, "backup"), srv(10, 10, "a"), srv(10, 30, "b")];
        // Draws at the low end pick the first record left in the group.
        assert_eq!(
            names(&order_srv(records.clone(), |_| 0)),
            ["a", "b", "backup"]
        );
        // Draws at the high end pick the last one.
        assert_eq!(names(&order_srv(records, |t| t)), ["b", "a", "backup"]);
    }

    #[test]
    fn weights_share_the_draws() {
        // A draw of 1..=10 lands on `a` (weight 10), 11..=40 on `b` (weight 30).
        let records = vec![srv(10, 10, "a"), srv(10, 30, "b")];
        assert_eq!(names(&order_srv(records.clone(), |_| 10)), ["a", "b"]);
        assert_eq!(names(&order_srv(records.clone(), |_| 11)), ["b", "a"]);
        // Uniform draws: `b` first about three times in four.
        let mut seed = 0u32;
        let b_first = (0..4000)
            .filter(|_| {
                let ordered = order_srv(records.clone(), |total| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (seed >> 8) % (total + 1)
                });
                ordered[0].target == "b"
            })
            .count();
        assert!((2700..=3300).contains(&b_first), "{b_first} of 4000");
    }

    #[test]
    fn zero_weight_goes_first_only_on_a_zero_draw() {
        let records = vec![srv(10, 5, "weighted"), srv(10, 0, "zero")];
        assert_eq!(
            names(&order_srv(records.clone(), |_| 0)),
            ["zero", "weighted"]
        );
        assert_eq!(names(&order_srv(records, |_| 1)), ["weighted", "zero"]);
    }

    #[test]
    fn srv_names_per_transport() {
        assert_eq!(
            srv_name("carrier.example", Transport::Udp),
            "_sip._udp.carrier.example."
        );
        assert_eq!(
            srv_name("carrier.example.", Transport::Tcp),
            "_sip._tcp.carrier.example."
        );
        assert_eq!(
            srv_name("carrier.example", Transport::Tls),
            "_sips._tcp.carrier.example."
        );
    }
}
