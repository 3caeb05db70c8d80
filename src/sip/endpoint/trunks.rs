//! Trunks at run time: locating them (DNS SRV or host:port, `sip::dns`), starting their REGISTER/OPTIONS
//! services, giving inbound admission each trunk's rule (`inbound_from`, or the
//! resolved address), and the statuses the services report.

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
    /// unresolved name is retried every 30 s. Returns once the rules are in place.
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
                        .resolve_later(trunk, None, false, Duration::ZERO);
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
                    self.background().start(trunk, addrs[0], &addrs[1..], tls)?;
                }
                Err(e) => {
                    tracing::warn!(trunk = %trunk.name, "{e}; retrying every 30 s");
                    self.set_status(&trunk, format!("DNS: {e}"));
                    inbound.push((trunk.clone(), Vec::new()));
                    self.background()
                        .resolve_later(trunk, tls, true, RESOLVE_RETRY);
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
            commands: self.commands.clone(),
            addresses: self.addresses(),
            locator: Arc::clone(&self.locator),
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
    /// The driver's command queue.
    commands: mpsc::UnboundedSender<Command>,
    /// Our addresses.
    addresses: Addresses,
    /// Finds the trunk's addresses.
    locator: Arc<Locator>,
}

impl SipEndpointRef {
    /// Starts a located trunk's services on its first address, the others in
    /// reserve.
    fn start(
        &self,
        trunk: TrunkSettings,
        addr: SocketAddr,
        alternates: &[SocketAddr],
        tls: Option<TlsTarget>,
    ) -> Result<(), SipError> {
        let peer = |addr| Peer {
            transport: trunk.transport,
            addr,
        };
        let targets = (peer(addr), alternates.iter().map(|a| peer(*a)).collect());
        let local = self.addresses.local_peer(trunk.transport, addr);
        self.commands
            .send(Command::StartTrunk {
                settings: Box::new(trunk),
                targets,
                local,
                tls,
            })
            .map_err(|_| SipError::Closed)
    }

    /// Resolves the trunk's name after `first_wait`, then every 30 s until it
    /// works; then updates its inbound rule and (`services`) starts its services.
    fn resolve_later(
        self,
        trunk: TrunkSettings,
        tls: Option<TlsTarget>,
        services: bool,
        first_wait: Duration,
    ) {
        tokio::spawn(async move {
            let mut wait = first_wait;
            loop {
                tokio::time::sleep(wait).await;
                wait = RESOLVE_RETRY;
                if self.commands.is_closed() {
                    return;
                }
                let Ok(addrs) = self.locator.locate(&trunk).await else {
                    continue;
                };
                let _ = self.commands.send(Command::SetInbound {
                    trunks: vec![(trunk.clone(), addrs.clone())],
                    done: None,
                });
                if services {
                    let _ = self.start(trunk, addrs[0], &addrs[1..], tls);
                }
                return;
            }
        });
    }
}
