//! Trunks at run time: locating them (DNS SRV or host:port, `sip::dns`) and
//! watching their names, starting their REGISTER/OPTIONS services, giving inbound
//! admission each trunk's rule (`inbound_from`, or the resolved addresses), and the
//! statuses the services report.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::tls::TlsTarget;
use super::{Addresses, Command, SipEndpoint, driver};
use crate::sip::dns::Locator;
use crate::sip::transport::{Peer, Transport};
use crate::sip::{SipError, TrunkSettings, TrunkStatus};

/// How often an unresolvable trunk name is tried again.
const RESOLVE_RETRY: Duration = Duration::from_secs(30);

impl SipEndpoint {
    /// Gives inbound admission every trunk's rule and starts REGISTER and OPTIONS
    /// services for the trunks that ask for them (`register`, `options_interval`).
    /// Names are resolved here (in the background for trunks without services); a
    /// service trunk whose name does not resolve is reported unreachable, and every
    /// unresolved name is retried every 30 s. Resolved names are looked up again
    /// every `dns_refresh`: new addresses replace the admission rule and restart the
    /// services on them. Returns once the rules are in place.
    pub async fn start_trunks(&self, trunks: Vec<TrunkSettings>) -> Result<(), SipError> {
        let mut inbound = Vec::new();
        for trunk in trunks {
            let services = trunk.register || trunk.options_interval.is_some();
            let literal = trunk
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, trunk.port));
            if !services {
                inbound.push((trunk.clone(), literal.into_iter().collect()));
                if literal.is_none() {
                    self.background()
                        .watch(trunk, None, false, Vec::new(), Duration::ZERO);
                }
                continue;
            }
            let tls = match trunk.transport {
                Transport::Tls => Some(self.tls_target(&trunk)?),
                _ => None,
            };
            match self.locator.locate(&trunk).await {
                Ok(addrs) => {
                    inbound.push((trunk.clone(), addrs.clone()));
                    let background = self.background();
                    background.start(trunk.clone(), &addrs, tls.clone())?;
                    if literal.is_none() {
                        let refresh = background.dns_refresh;
                        background.watch(trunk, tls, true, addrs, refresh);
                    }
                }
                Err(e) => {
                    tracing::warn!(trunk = %trunk.name, "{e}; retrying every 30 s");
                    self.set_status(&trunk, format!("DNS: {e}"));
                    inbound.push((trunk.clone(), Vec::new()));
                    self.background()
                        .watch(trunk, tls, true, Vec::new(), RESOLVE_RETRY);
                }
            }
        }
        let (done, applied) = oneshot::channel();
        self.commands
            .send(Command::SetInbound {
                trunks: inbound,
                done: Some(done),
            })
            .map_err(|_| SipError::Closed)?;
        applied.await.map_err(|_| SipError::Closed)
    }

    fn background(&self) -> SipEndpointRef {
        SipEndpointRef {
            commands: self.commands.downgrade(),
            addresses: self.addresses(),
            locator: Arc::clone(&self.locator),
            dns_refresh: self.dns_refresh,
        }
    }

    fn set_status(&self, trunk: &TrunkSettings, detail: String) {
        if let Ok(mut map) = self.statuses.lock() {
            map.insert(
                trunk.name.clone(),
                TrunkStatus {
                    reachable: false,
                    registered: trunk.register.then_some(false),
                    last_change: Some(driver::now()),
                    detail: Some(detail),
                    failing: Vec::new(),
                },
            );
        }
    }

    /// The status of a trunk started with [`start_trunks`](Self::start_trunks).
    pub fn trunk_status(&self, name: &str) -> Option<TrunkStatus> {
        self.statuses.lock().ok()?.get(name).cloned()
    }

    /// Every started trunk's status, by name.
    pub fn trunk_statuses(&self) -> Vec<(String, TrunkStatus)> {
        let Ok(map) = self.statuses.lock() else {
            return Vec::new();
        };
        let mut out: Vec<(String, TrunkStatus)> =
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// True unless the trunk is known to be unreachable (routing skips it then).
    pub fn trunk_usable(&self, name: &str) -> bool {
        self.trunk_status(name).is_none_or(|s| s.reachable)
    }
}

/// What a background task needs of the endpoint.
struct SipEndpointRef {
    /// The driver's command queue (weak: background tasks must not keep the driver
    /// alive).
    commands: mpsc::WeakUnboundedSender<Command>,
    /// Our addresses.
    addresses: Addresses,
    /// Finds the trunk's addresses.
    locator: Arc<Locator>,
    /// How often located names are looked up again.
    dns_refresh: Duration,
}

impl SipEndpointRef {
    /// Starts a located trunk's services on its first address, the others in
    /// reserve (`addrs` is never empty: [`Locator::locate`] says so).
    fn start(
        &self,
        trunk: TrunkSettings,
        addrs: &[SocketAddr],
        tls: Option<TlsTarget>,
    ) -> Result<(), SipError> {
        let Some((&addr, alternates)) = addrs.split_first() else {
            return Ok(());
        };
        let peer = |addr| Peer {
            transport: trunk.transport,
            addr,
        };
        let targets = (peer(addr), alternates.iter().map(|a| peer(*a)).collect());
        let local = self.addresses.local_peer(trunk.transport, addr);
        self.commands
            .upgrade()
            .ok_or(SipError::Closed)?
            .send(Command::StartTrunk {
                settings: Box::new(trunk),
                targets,
                local,
                tls,
            })
            .map_err(|_| SipError::Closed)
    }

    /// Looks the trunk's name up after `first_wait`, then every 30 s while it does
    /// not resolve and every `dns_refresh` once it does. When the set of addresses
    /// differs from `known`, the inbound rule takes the new ones and (`services`)
    /// the services restart on them; a failed lookup keeps the known addresses.
    fn watch(
        self,
        trunk: TrunkSettings,
        tls: Option<TlsTarget>,
        services: bool,
        mut known: Vec<SocketAddr>,
        first_wait: Duration,
    ) {
        tokio::spawn(async move {
            let mut wait = first_wait;
            loop {
                tokio::time::sleep(wait).await;
                if self.commands.upgrade().is_none_or(|c| c.is_closed()) {
                    return;
                }
                let addrs = match self.locator.locate(&trunk).await {
                    Ok(addrs) => addrs,
                    Err(e) => {
                        tracing::debug!(trunk = %trunk.name, "lookup failed, keeping {known:?}: {e}");
                        wait = if known.is_empty() {
                            RESOLVE_RETRY
                        } else {
                            self.dns_refresh
                        };
                        continue;
                    }
                };
                wait = self.dns_refresh;
                if same_set(&addrs, &known) {
                    continue;
                }
                if !known.is_empty() {
                    tracing::info!(trunk = %trunk.name, from = ?known, to = ?addrs, "trunk addresses changed");
                }
                let Some(commands) = self.commands.upgrade() else {
                    return;
                };
                let _ = commands.send(Command::SetInbound {
                    trunks: vec![(trunk.clone(), addrs.clone())],
                    done: None,
                });
                if services {
                    let _ = self.start(trunk.clone(), &addrs, tls.clone());
                }
                known = addrs;
            }
        });
    }
}

/// Whether two address lists hold the same addresses (SRV order varies by draw).
fn same_set(a: &[SocketAddr], b: &[SocketAddr]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}
