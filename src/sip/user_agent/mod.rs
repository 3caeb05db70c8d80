//! The user agent core, sans-IO: every call, server transaction and trunk service
//! of the endpoint.
//!
//! Input: `start_call`, `respond`, `proxy`, `hangup`, `reinvite`, `send_dtmf_info`,
//! `start_trunk`, `set_inbound_trunk`, `handle_message`, `handle_timeout`,
//! `handle_send_error`, each with `now`.
//! Output: `poll_transmit()` (message + peer), `poll_event()` ([`UaEvent`]: new
//! inbound calls, call events, trunk statuses), `poll_timeout()`. The driver in
//! `endpoint/` owns the sockets and the clock.
//! Deadlines sit in one ordered [`TimerQueue`], so finding the next is O(log n).

mod admission;
mod call;
mod called;
mod calls;
mod context;
mod fork;
mod forwarded;
mod fuzz;
mod inbound;
mod leg;
mod new_invite;
mod proxy;
mod servers;
mod trunk_service;
mod uas_call;
mod validate;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use rsip::Uri;

use crate::sip::message::build::random_hex;
use crate::sip::message::{self, Incoming, ParseError};
use crate::sip::timers::TimerQueue;
use crate::sip::transaction::TimerConfig;
use crate::sip::transport::{Peer, Transport};
use crate::sip::trunk_scope::TrunkScope;
use crate::sip::{
    InboundSipEvent, InviteRequest, SipCallEvent, SipError, TrunkSettings, TrunkStatus,
};

pub(crate) use forwarded::ForwardKey;
pub(crate) use fuzz::fuzz;
pub(crate) use new_invite::IncomingInfo;
pub(crate) use uas_call::{InboundAction, valid_contact};
pub(crate) use validate::validate;

use admission::Admission;
use call::OutboundCall;
use calls::Call;
use context::CallContext;
use leg::Leg;
use servers::{ServerKey, Servers};
use trunk_service::TrunkService;

/// Who a datagram belongs to, so a send error can be routed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A response or stateless answer.
    None,
    /// A leg, by SIP Call-ID.
    Call(String),
    /// A trunk service (REGISTER, OPTIONS), by trunk name.
    Trunk(String),
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transmit {
    /// Destination (and transport / connection).
    pub dest: Peer,
    /// The serialised message.
    pub payload: Vec<u8>,
    /// Who sent it.
    pub owner: Owner,
}

/// Our address (Via, Contact) as a peer on `transport` at that address sees it.
pub(crate) type Advertise = Arc<dyn Fn(Transport, SocketAddr) -> Peer + Send + Sync>;

/// Settings of the core.
#[derive(Clone)]
pub(crate) struct UaConfig {
    /// Timer values.
    pub timers: TimerConfig,
    /// `User-Agent` value.
    pub user_agent: String,
    /// Our advertised address for inbound calls and forwarded requests.
    pub advertise: Advertise,
    /// Other instances, whose signed `X-Callbridge-Forwarded` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// The cluster's forwarding key: signs the INVITEs we forward and checks those
    /// forwarded to us; `None`: we forward nothing and believe no header.
    pub forward: Option<ForwardKey>,
}

impl UaConfig {
    /// Settings advertising `local` as is (tests, fuzzing).
    pub(crate) fn fixed(timers: TimerConfig, user_agent: &str, local: SocketAddr) -> Self {
        Self {
            timers,
            user_agent: user_agent.into(),
            advertise: Arc::new(move |transport, _| Peer {
                transport,
                addr: local,
            }),
            trusted_proxies: Vec::new(),
            forward: None,
        }
    }
}

impl std::fmt::Debug for UaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UaConfig")
            .field("timers", &self.timers)
            .field("user_agent", &self.user_agent)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("forward", &self.forward)
            .finish_non_exhaustive()
    }
}

/// What the core reports to the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UaEvent {
    /// A new inbound call (the INVITE passed admission).
    Incoming(Box<IncomingInfo>),
    /// An event of the outbound call with this handle id.
    Call(String, SipCallEvent),
    /// An event of the inbound call with this handle id.
    Inbound(String, InboundSipEvent),
    /// A trunk's status changed.
    Trunk(String, TrunkStatus),
}

/// Whose deadline an entry of the timer queue is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TimerKey {
    Call(String),
    Server(ServerKey),
    Trunk(String),
}

/// The user agent core.
#[derive(Debug)]
pub(crate) struct UserAgent {
    /// Settings.
    config: UaConfig,
    /// Calls (placed and answered) by handle id.
    calls: HashMap<String, Call>,
    /// SIP Call-ID of every leg → handle id.
    call_index: HashMap<String, String>,
    /// Server transactions.
    servers: Servers,
    /// Trunk services by trunk name.
    trunks: HashMap<String, TrunkService>,
    /// SIP Call-ID of every trunk service → trunk name.
    trunk_index: HashMap<String, String>,
    /// Every deadline.
    timers: TimerQueue<TimerKey>,
    /// Messages to send.
    transmits: VecDeque<Transmit>,
    /// Events for the driver.
    events: VecDeque<UaEvent>,
    /// Random salt of the To tags of our stateless answers.
    tag_salt: u64,
    /// Which new INVITEs become inbound calls.
    admission: Admission,
    /// Where the INVITEs we forwarded went.
    routes: proxy::Routes,
    /// The Unix time (seconds) as the driver last said, for forwarding headers.
    unix: u64,
    /// Whether the gateway takes new calls, as the driver last said (OPTIONS answers).
    availability: crate::sip::Availability,
}

/// A fresh Call-ID.
pub(crate) fn new_call_id() -> String {
    random_hex(32)
}

impl UserAgent {
    /// A core with no calls.
    pub(crate) fn new(config: UaConfig) -> Self {
        Self {
            admission: Admission::new(config.trusted_proxies.clone(), config.forward.clone()),
            routes: proxy::Routes::default(),
            config,
            calls: HashMap::new(),
            call_index: HashMap::new(),
            servers: Servers::default(),
            trunks: HashMap::new(),
            trunk_index: HashMap::new(),
            timers: TimerQueue::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            tag_salt: rand::random(),
            unix: 0,
            availability: crate::sip::Availability::Available,
        }
    }

    /// The wall-clock time in Unix seconds, given by the driver before each input:
    /// forwarding headers between instances are stamped and checked with it (the
    /// core reads no clock).
    pub(crate) fn set_unix_time(&mut self, unix: u64) {
        self.unix = unix;
    }

    /// Whether the gateway takes new calls: out-of-dialog OPTIONS are answered 503
    /// while it does not (the driver says so before each message).
    pub(crate) fn set_availability(&mut self, availability: crate::sip::Availability) {
        self.availability = availability;
    }

    /// Places an outbound call with handle id (and first Call-ID) `id`: builds the
    /// INVITE and starts its transaction. `local` is our advertised address on the
    /// trunk's transport; `target` the trunk's.
    pub(crate) fn start_call(
        &mut self,
        now: Instant,
        id: String,
        request: InviteRequest,
        local: Peer,
        target: Peer,
    ) -> Result<(), SipError> {
        if self.calls.contains_key(&id) || self.call_index.contains_key(&id) {
            return Err(SipError::InvalidRequest(format!("duplicate Call-ID {id}")));
        }
        let sdp = request.sdp.clone();
        let (ctx, uri, to) = self.call_context(request, local, target)?;
        tracing::info!(sip_call_id = %id, correlation_id = %ctx.correlation_id, %target, "sending INVITE");
        let leg = Leg::start(now, ctx.clone(), id.clone(), uri, to, target, sdp, None);
        let call = OutboundCall::new(now, ctx, leg);
        self.calls.insert(id.clone(), Call::Out(Box::new(call)));
        self.collect(&id);
        Ok(())
    }

    /// The call module allows the transfer its call `id` was asked for: a new leg
    /// INVITEs `request`'s number through `request`'s trunk at `target` (never the
    /// Refer-To host). Ignored unless that call waits for a transfer decision.
    pub(crate) fn transfer(
        &mut self,
        now: Instant,
        id: &str,
        request: InviteRequest,
        local: Peer,
        target: Peer,
    ) -> Result<(), SipError> {
        let (ctx, uri, to) = self.call_context(request, local, target)?;
        if let Some(Call::Out(call)) = self.calls.get_mut(id) {
            call.transfer_to(now, ctx, uri, to);
            self.collect(id);
        }
        Ok(())
    }

    /// The call module refuses the transfer its call `id` was asked for: the
    /// transferor is NOTIFYed `status`; the call goes on.
    pub(crate) fn refuse_transfer(&mut self, now: Instant, id: &str, status: u16) {
        if let Some(Call::Out(call)) = self.calls.get_mut(id) {
            call.refuse_transfer(now, status);
            self.collect(id);
        }
    }

    /// The settings of a call (or transfer) leg for `request` to `target`, with its
    /// Request-URI and To value.
    fn call_context(
        &self,
        request: InviteRequest,
        local: Peer,
        target: Peer,
    ) -> Result<(Arc<CallContext>, Uri, String), SipError> {
        let correlation_id = validate(&request)?;
        let sips = request.trunk.sips;
        let scheme = if sips { "sips" } else { "sip" };
        let uri_text = format!("{scheme}:{}@{}", request.to_user, request.target_host);
        let uri = Uri::try_from(uri_text.as_str())
            .map_err(|e| SipError::InvalidRequest(format!("Request-URI {uri_text}: {e}")))?;
        // A trunk with an account (credentials or `from_user`) gets it in From, in
        // its own domain: carriers check that From is the authenticated account.
        // The caller's id then goes in P-Asserted-Identity / Remote-Party-ID only.
        let (from_user, from_domain, asserted_identity) = match request.trunk.account() {
            Some(account) => (
                account.to_string(),
                Some(request.trunk.account_domain()),
                request.asserted_identity.or(Some(request.from_user)),
            ),
            None => (
                request.from_user,
                request.trunk.from_domain.clone(),
                request.asserted_identity,
            ),
        };
        let from_account = request.trunk.account().is_some();
        let located = std::iter::once(target.addr)
            .chain(request.trunk_addresses.iter().copied())
            .chain(self.admission.resolved(&request.trunk.name))
            .map(|a| a.ip());
        let scope = TrunkScope::new(&request.trunk, located);
        let ctx = Arc::new(CallContext {
            trunk: request.trunk,
            target,
            scope,
            local,
            domain: request.target_host,
            timers: self.config.timers,
            user_agent: self.config.user_agent.clone(),
            correlation_id,
            from_user,
            from_domain,
            from_account,
            from_display: request.from_display,
            asserted_identity,
            privacy: request.privacy,
            secure: sips,
            answerer: request.answerer,
        });
        Ok((ctx, uri, format!("<{uri_text}>")))
    }

    /// The call module hangs up a call (CANCEL or BYE). Unknown calls are ignored.
    pub(crate) fn hangup(&mut self, now: Instant, id: &str) {
        if let Some(call) = self.calls.get_mut(id) {
            call.hangup(now);
            self.collect(id);
        }
    }

    /// The call module asks for a re-INVITE with `sdp`.
    pub(crate) fn reinvite(&mut self, now: Instant, id: &str, sdp: String) {
        if let Some(call) = self.calls.get_mut(id) {
            call.reinvite(now, sdp);
            self.collect(id);
        }
    }

    /// The call module sends a DTMF digit as SIP INFO.
    pub(crate) fn send_dtmf_info(&mut self, now: Instant, id: &str, digit: char, duration_ms: u32) {
        if let Some(call) = self.calls.get_mut(id) {
            call.send_dtmf_info(now, digit, duration_ms);
            self.collect(id);
        }
    }

    /// A message arrived from `source` (a datagram, or one framed off a stream).
    pub(crate) fn handle_message(&mut self, now: Instant, source: Peer, bytes: &[u8]) {
        match message::parse(bytes) {
            Ok(Incoming::Response(response, reason)) => {
                self.handle_response(now, source, response, reason)
            }
            Ok(Incoming::Request(request)) => self.handle_request(now, source, request),
            Err(ParseError::Keepalive) => {}
            Err(ParseError::Split(e)) => {
                tracing::warn!(%source, "unparseable message dropped: {e}");
            }
            Err(ParseError::Rsip { raw, error }) => self.reply_malformed(source, &raw, &error),
            Err(ParseError::MissingHeader { raw, header }) => {
                self.reply_malformed(source, &raw, &format!("missing or bad {header}"))
            }
        }
    }

    fn handle_response(
        &mut self,
        now: Instant,
        source: Peer,
        response: rsip::Response,
        reason: String,
    ) {
        if let Some((dest, relayed)) = self.routes.relay_response(now, &response, &reason) {
            tracing::debug!(sip_call_id = %message::call_id(&relayed).unwrap_or_default(), correlation_id = "-", %dest, "relaying a response of a forwarded INVITE");
            self.transmits.push_back(Transmit {
                dest,
                payload: message::build::response_bytes(&relayed),
                owner: Owner::None,
            });
            return;
        }
        let Some(call_id) = message::call_id(&response) else {
            return;
        };
        if let Some(id) = self.call_index.get(&call_id).cloned()
            && let Some(call) = self.calls.get_mut(&id)
        {
            tracing::debug!(sip_call_id = %call_id, correlation_id = %call.correlation_id(), code = response.status_code.code(), %reason, "response received");
            call.handle_response(now, &call_id, response, reason);
            self.collect(&id);
            return;
        }
        if let Some(name) = self.trunk_index.get(&call_id).cloned() {
            if let Some(service) = self.trunks.get_mut(&name) {
                service.handle_response(now, response, reason);
            }
            self.collect_trunk(&name);
            return;
        }
        tracing::debug!(sip_call_id = %call_id, %source, "response for no call: dropped");
    }

    fn reply_malformed(&mut self, source: Peer, raw: &message::RawMessage, why: &str) {
        // Escaped: a malformed message may carry control characters (log injection).
        let sip_call_id = raw
            .header("Call-ID")
            .unwrap_or("-")
            .escape_debug()
            .to_string();
        let sip_call_id = sip_call_id.as_str();
        match message::fallback::reply_to_malformed(raw, source.addr, why) {
            Some(payload) => {
                tracing::warn!(sip_call_id, correlation_id = "-", %source, "malformed request answered: {why}");
                self.transmits.push_back(Transmit {
                    dest: source,
                    payload,
                    owner: Owner::None,
                });
            }
            None => {
                tracing::warn!(sip_call_id, correlation_id = "-", %source, "malformed message dropped: {why}")
            }
        }
    }

    /// Fires every timer due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        for key in self.timers.pop_due(now) {
            match key {
                TimerKey::Call(id) => {
                    if let Some(call) = self.calls.get_mut(&id) {
                        call.handle_timeout(now);
                    }
                    self.collect(&id);
                }
                TimerKey::Server(key) => self.server_timeout(now, key),
                TimerKey::Trunk(name) => {
                    if let Some(service) = self.trunks.get_mut(&name) {
                        service.handle_timeout(now);
                    }
                    self.collect_trunk(&name);
                }
            }
        }
    }

    /// Sending a message of `owner` to `dest` failed.
    pub(crate) fn handle_send_error(
        &mut self,
        now: Instant,
        owner: &Owner,
        dest: Peer,
        error: String,
    ) {
        match owner {
            Owner::Call(call_id) => {
                let Some(id) = self.call_index.get(call_id).cloned() else {
                    return;
                };
                if let Some(call) = self.calls.get_mut(&id) {
                    call.handle_send_error(now, dest, error);
                }
                self.collect(&id);
            }
            Owner::Trunk(name) => {
                if let Some(service) = self.trunks.get_mut(name) {
                    service.handle_send_error(now, error);
                }
                self.collect_trunk(&name.clone());
            }
            Owner::None => {}
        }
    }

    /// The next message to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub(crate) fn poll_event(&mut self) -> Option<UaEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// The correlation id of the call owning a SIP Call-ID, for the driver's logs.
    pub(crate) fn correlation_id(&self, call_id: &str) -> Option<&str> {
        let id = self.call_index.get(call_id)?;
        self.calls.get(id).map(Call::correlation_id)
    }

    /// Number of calls still held (finished ones linger while they absorb
    /// retransmissions).
    pub(crate) fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Number of server transactions held.
    pub(crate) fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// Moves a call's outputs to the core's queues, refreshes its Call-ID index and
    /// deadline, and forgets it once finished.
    fn collect(&mut self, id: &str) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let mut responses = Vec::new();
        match call {
            Call::Out(c) => {
                while let Some(e) = c.poll_event() {
                    self.events.push_back(UaEvent::Call(id.to_string(), e));
                }
            }
            Call::In(c) => {
                while let Some(e) = c.poll_event() {
                    self.events.push_back(UaEvent::Inbound(id.to_string(), e));
                }
                while let Some((at, response)) = c.poll_response() {
                    responses.push((at, c.server_key.clone(), c.call_id.clone(), response));
                }
            }
        }
        while let Some(t) = call.poll_transmit() {
            self.transmits.push_back(t);
        }
        for (at, key, call_id, response) in responses {
            self.send_final_or_provisional(at, &key, call_id, &response);
        }
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        let key = TimerKey::Call(id.to_string());
        if call.is_finished() {
            self.calls.remove(id);
            self.call_index.retain(|_, v| v != id);
            self.timers.set(&key, None);
            return;
        }
        let at = call.poll_timeout();
        let ids = call.call_ids();
        self.call_index.retain(|k, v| v != id || ids.contains(k));
        for call_id in ids {
            self.call_index.insert(call_id, id.to_string());
        }
        self.timers.set(&key, at);
    }

    /// Registers the services (REGISTER, OPTIONS) of a trunk resolved to a target
    /// and its alternates (further SRV addresses).
    pub(crate) fn start_trunk(
        &mut self,
        now: Instant,
        settings: TrunkSettings,
        targets: (Peer, Vec<Peer>),
        local: Peer,
    ) {
        let name = settings.name.clone();
        if let Some(old) = self.trunks.remove(&name) {
            self.trunk_index.retain(|_, v| *v != name);
            drop(old);
        }
        let service = TrunkService::new(now, settings, targets, local, self.config.clone());
        for call_id in service.call_ids() {
            self.trunk_index.insert(call_id, name.clone());
        }
        self.trunks.insert(name.clone(), service);
        self.collect_trunk(&name);
    }

    /// Stops every trunk service (unregistering where registered).
    pub(crate) fn stop_trunks(&mut self, now: Instant) {
        let names: Vec<String> = self.trunks.keys().cloned().collect();
        for name in names {
            if let Some(service) = self.trunks.get_mut(&name) {
                service.stop(now);
            }
            self.collect_trunk(&name);
        }
    }

    /// Moves a trunk service's outputs to the core's queues.
    fn collect_trunk(&mut self, name: &str) {
        let Some(service) = self.trunks.get_mut(name) else {
            return;
        };
        while let Some(t) = service.poll_transmit() {
            self.transmits.push_back(t);
        }
        while let Some(status) = service.poll_status() {
            self.events
                .push_back(UaEvent::Trunk(name.to_string(), status));
        }
        let at = service.poll_timeout();
        self.timers.set(&TimerKey::Trunk(name.to_string()), at);
    }
}

#[cfg(test)]
mod tests;
