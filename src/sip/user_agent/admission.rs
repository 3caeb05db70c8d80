//! Which new INVITEs become inbound calls, sans-IO. In order:
//!
//! 1. nobody takes inbound calls (`take_incoming` not called): 480, stateless;
//! 2. the source is no trunk's (`inbound_from`, default the trunk's resolved
//!    address): 403, stateless. From a trusted proxy (another instance forwarding
//!    statelessly) with a valid `X-Callbridge-Forwarded` header (`forwarded.rs`),
//!    the trunk address that header vouches for is checked instead; without one
//!    the INVITE is the proxy's own. A Via never decides who sent it;
//! 3. `inbound_auth` trunks: 407 until the `Proxy-Authorization` checks out, unless
//!    the forwarding instance's signed header says it checked the digest itself;
//! 4. INVITEs we cannot serve: 400 (no usable Contact), 420 (`Require` of an
//!    extension we lack), 422 (session interval below the trunk's `min_se`).

use std::net::SocketAddr;
use std::time::Instant;

use ipnet::IpNet;
use rsip::{Header, Request};

use super::forwarded::{ForwardKey, ForwardedError, Origin};
use super::leg::Answer;
use super::leg::session_timer::SessionTimer;
use crate::sip::TrunkSettings;
use crate::sip::digest_server::{Binding, DigestFailure, DigestServer};
use crate::sip::message::{addr_uri, call_id, header_values};
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
    /// The trunk's address: the one a trusted proxy's signed header vouches for,
    /// else the source.
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
    /// Sources whose signed forwarding headers are believed (other instances).
    trusted_proxies: Vec<IpNet>,
    /// The key those headers are signed with; `None`: none is believed.
    forward: Option<ForwardKey>,
    /// Digest challenges and checks.
    digest: DigestServer,
}

impl Admission {
    /// A policy trusting `trusted_proxies` to forward INVITEs signed with `forward`.
    pub(crate) fn new(trusted_proxies: Vec<IpNet>, forward: Option<ForwardKey>) -> Self {
        Self {
            trusted_proxies,
            forward,
            ..Self::default()
        }
    }

    /// The trunk address a trusted proxy vouches for in `request`, if its signed
    /// header checks out at Unix time `unix`.
    fn vouched(&self, unix: u64, source: Peer, request: &Request) -> Option<Origin> {
        let proxied = self
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&source.addr.ip()));
        if !proxied {
            return None;
        }
        let Some(key) = &self.forward else {
            tracing::warn!(%source, "INVITE from a trusted proxy, but cluster.forward_secret is not set: judged as the proxy's own");
            return None;
        };
        match key.verify(unix, request) {
            Ok(origin) => Some(origin),
            Err(ForwardedError::Missing) => None,
            Err(e) => {
                let sip_call_id = call_id(request).unwrap_or_default();
                tracing::warn!(%sip_call_id, correlation_id = "-", %source, "forwarded INVITE not believed ({e}): judged as the proxy's own");
                None
            }
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

    /// Judges a new INVITE from `source` at `now` (Unix time `unix`, for the
    /// forwarding header's window).
    pub(crate) fn check(
        &mut self,
        now: Instant,
        unix: u64,
        source: Peer,
        request: &Request,
    ) -> Verdict {
        if !self.accept {
            return Verdict::Unserved;
        }
        let vouched = self.vouched(unix, source, request);
        let peer = vouched.map_or(source, |o| o.source);
        let Some(trunk) = self.trunk_for(peer.addr).cloned() else {
            return Verdict::Forbidden;
        };
        let settings = trunk.settings;
        let refuse = |answer: Answer| Verdict::Refuse {
            trunk: settings.name.clone(),
            answer,
        };
        if settings.inbound_auth && !vouched.is_some_and(|o| o.digest_checked) {
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
