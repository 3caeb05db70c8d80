//! Which new INVITEs become inbound calls, sans-IO. In order:
//!
//! 1. nobody takes inbound calls (`take_incoming` not called): 480, stateless;
//! 2. the source is no trunk's (`inbound_from`, default the trunk's resolved
//!    address): 403, stateless. From a trusted proxy (another instance forwarding
//!    statelessly) the hop before it, read from the second Via, is checked instead;
//! 3. `inbound_auth` trunks: 407 until the `Proxy-Authorization` checks out (not
//!    repeated behind a trusted proxy, which already checked it);
//! 4. INVITEs we cannot serve: 400 (no usable Contact), 420 (`Require` of an
//!    extension we lack), 422 (session interval below the trunk's `min_se`).

use std::net::SocketAddr;
use std::time::Instant;

use ipnet::IpNet;
use rsip::{Header, Request};

use super::leg::Answer;
use super::leg::session_timer::SessionTimer;
use crate::sip::TrunkSettings;
use crate::sip::digest_server::{Binding, DigestFailure, DigestServer};
use crate::sip::message::{addr_uri, call_id, header_values, split_elements, via_peer};
use crate::sip::transport::Peer;

/// Realm of our inbound challenges.
pub(crate) const REALM: &str = "callbridge";
/// The extensions an inbound INVITE may require.
const SUPPORTED: &[&str] = &["timer"];

/// A trunk as inbound admission sees it.
#[derive(Debug, Clone)]
pub(crate) struct InboundTrunk {
    /// Its settings (`inbound_from`, `inbound_auth`, credentials, timers).
    pub settings: TrunkSettings,
    /// Its resolved addresses (all SRV targets), once known.
    pub resolved: Vec<SocketAddr>,
}

impl InboundTrunk {
    /// True if an INVITE from `addr` may come from this trunk.
    fn allows(&self, addr: SocketAddr) -> bool {
        if self.settings.inbound_from.is_empty() {
            self.resolved.iter().any(|r| r.ip() == addr.ip())
        } else {
            self.settings
                .inbound_from
                .iter()
                .any(|net| net.contains(&addr.ip()))
        }
    }
}

/// What admission decided.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Nobody takes inbound calls: 480, stateless.
    Unserved,
    /// Not from a trunk: 403, stateless.
    Forbidden,
    /// From a trunk, but refused with this final answer (sent statefully).
    Refuse {
        /// The trunk's name.
        trunk: String,
        /// The answer (407 with a challenge, 400, 420, 422).
        answer: Answer,
    },
    /// A call.
    Admit(Box<Admitted>),
}

/// An admitted INVITE.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The trunk it came from.
    pub trunk: TrunkSettings,
    /// The trunk's address (the hop before a trusted proxy, else the source).
    pub peer: Peer,
    /// Every address the trunk was resolved to.
    pub resolved: Vec<SocketAddr>,
}

/// The inbound admission policy.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// Somebody takes inbound calls.
    pub accept: bool,
    /// Trunks by configuration order.
    trunks: Vec<InboundTrunk>,
    /// Sources whose INVITEs are judged by the hop before them.
    trusted_proxies: Vec<IpNet>,
    /// Digest challenges and checks.
    digest: DigestServer,
}

impl Admission {
    /// A policy trusting `trusted_proxies` to forward INVITEs.
    pub(crate) fn new(trusted_proxies: Vec<IpNet>) -> Self {
        Self {
            trusted_proxies,
            ..Self::default()
        }
    }

    /// Adds a trunk or replaces the one with the same name.
    pub(crate) fn set_trunk(&mut self, trunk: InboundTrunk) {
        match self
            .trunks
            .iter_mut()
            .find(|t| t.settings.name == trunk.settings.name)
        {
            Some(old) => *old = trunk,
            None => self.trunks.push(trunk),
        }
    }

    /// The resolved addresses of the trunk `name` (empty if unknown).
    pub(crate) fn resolved(&self, name: &str) -> Vec<SocketAddr> {
        self.trunks
            .iter()
            .find(|t| t.settings.name == name)
            .map(|t| t.resolved.clone())
            .unwrap_or_default()
    }

    /// The trunk an INVITE from `addr` belongs to: the one with a resolved address
    /// exactly `addr`, else the first whose networks hold its IP.
    fn trunk_for(&self, addr: SocketAddr) -> Option<&InboundTrunk> {
        self.trunks
            .iter()
            .find(|t| t.resolved.contains(&addr) && t.allows(addr))
            .or_else(|| self.trunks.iter().find(|t| t.allows(addr)))
    }

    /// Judges a new INVITE from `source`.
    pub(crate) fn check(&mut self, now: Instant, source: Peer, request: &Request) -> Verdict {
        if !self.accept {
            return Verdict::Unserved;
        }
        let proxied = self
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&source.addr.ip()));
        let peer = if proxied {
            match second_via(request) {
                Some(peer) => peer,
                None => source,
            }
        } else {
            source
        };
        let Some(trunk) = self.trunk_for(peer.addr).cloned() else {
            return Verdict::Forbidden;
        };
        let settings = trunk.settings;
        let refuse = |answer: Answer| Verdict::Refuse {
            trunk: settings.name.clone(),
            answer,
        };
        if settings.inbound_auth && !(proxied && peer != source) {
            let Some(credentials) = settings.credentials.as_ref() else {
                tracing::warn!(trunk = %settings.name, "inbound_auth without credentials: refusing");
                return Verdict::Forbidden;
            };
            let sip_call_id = call_id(request).unwrap_or_default();
            let binding = Binding {
                realm: REALM,
                source: peer.addr.ip(),
                trunk: &settings.name,
                call_id: &sip_call_id,
            };
            let stale = match self.digest.verify(now, request, credentials, binding) {
                Ok(()) => None,
                Err(DigestFailure::Stale) => Some(true),
                Err(DigestFailure::Missing) => Some(false),
                Err(DigestFailure::Rejected(why)) => {
                    tracing::warn!(%sip_call_id, correlation_id = "-", trunk = %settings.name, %source, "inbound digest refused: {why}");
                    Some(false)
                }
            };
            if let Some(stale) = stale {
                let challenge = self.digest.challenge(now, binding, stale);
                return refuse(Answer {
                    code: 407,
                    headers: vec![challenge],
                    body: None,
                });
            }
        }
        let contact_ok = request
            .headers
            .iter()
            .find(|h| matches!(h, Header::Contact(_)))
            .map(crate::sip::message::header_text)
            .is_some_and(|c| rsip::Uri::try_from(addr_uri(&c)).is_ok());
        if !contact_ok {
            return refuse(Answer::code(400));
        }
        let unsupported: Vec<String> = header_values(&request.headers, "Require")
            .iter()
            .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
            .filter(|t| !t.is_empty() && !SUPPORTED.contains(&t.as_str()))
            .collect();
        if !unsupported.is_empty() {
            return refuse(Answer {
                code: 420,
                headers: vec![Header::Unsupported(unsupported.join(", ").into())],
                body: None,
            });
        }
        if let Err(min) =
            SessionTimer::from_uas_request(now, request, settings.session_timer.min_se)
        {
            return refuse(Answer {
                code: 422,
                headers: vec![Header::Other("Min-SE".into(), min.to_string())],
                body: None,
            });
        }
        Verdict::Admit(Box::new(Admitted {
            trunk: settings,
            peer,
            resolved: trunk.resolved,
        }))
    }
}

/// The address of the second Via element (the hop before the proxy that sent it).
fn second_via(request: &Request) -> Option<Peer> {
    let vias = header_values(&request.headers, "Via");
    let second = vias
        .iter()
        .flat_map(|v| split_elements(v))
        .nth(1)?
        .to_string();
    via_peer(&second)
}
