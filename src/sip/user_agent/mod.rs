//! The user agent core, sans-IO: every call leg and server transaction of the endpoint.
//!
//! Input: `start_call`, `hangup`, `handle_datagram`, `handle_timeout`,
//! `handle_send_error`, each with `now`. Output: `poll_transmit()` (datagram + address),
//! `poll_event()` (call id + `SipCallEvent`), `poll_timeout()`. The driver in
//! `endpoint.rs` owns the socket and the clock.

mod call;
mod fork;
mod inbound;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use rsip::Uri;

use crate::sip::message::build::{self, InviteParts, host_port, new_branch, random_hex};
use crate::sip::message::{self, Incoming, ParseError};
use crate::sip::transaction::{NonInviteServer, TimerConfig, earliest};
use crate::sip::{InviteRequest, SipCallEvent, SipError};

use call::OutboundCall;

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transmit {
    /// Destination.
    pub dest: SocketAddr,
    /// The serialised message.
    pub payload: Vec<u8>,
    /// The call it belongs to, so a send error can be routed back.
    pub call_id: Option<String>,
}

/// Settings of the core.
#[derive(Debug, Clone)]
pub(crate) struct UaConfig {
    /// Timer values.
    pub timers: TimerConfig,
    /// `User-Agent` value.
    pub user_agent: String,
}

/// A server transaction's key: top Via branch and method (RFC 3261 §17.2.3).
type ServerKey = (String, String);

/// The user agent core.
#[derive(Debug)]
pub(crate) struct UserAgent {
    /// Settings.
    config: UaConfig,
    /// Outbound call legs by SIP Call-ID.
    calls: HashMap<String, OutboundCall>,
    /// Non-INVITE server transactions and where their responses go.
    servers: HashMap<ServerKey, (SocketAddr, NonInviteServer)>,
    /// Datagrams to send.
    transmits: VecDeque<Transmit>,
    /// Events for the call module.
    events: VecDeque<(String, SipCallEvent)>,
    /// Random salt of the To tags of our stateless answers.
    tag_salt: u64,
}

/// Checks the caller's request before anything is built; returns the sanitised
/// correlation id.
pub(crate) fn validate(request: &InviteRequest) -> Result<String, SipError> {
    let user_ok = |u: &str| {
        !u.is_empty()
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/%".contains(c))
    };
    if !user_ok(&request.to_user) {
        return Err(SipError::InvalidRequest(format!(
            "to_user {:?}",
            request.to_user
        )));
    }
    if !user_ok(&request.from_user) {
        return Err(SipError::InvalidRequest(format!(
            "from_user {:?}",
            request.from_user
        )));
    }
    let host_ok = !request.target_host.is_empty()
        && request
            .target_host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    if !host_ok {
        return Err(SipError::InvalidRequest(format!(
            "target_host {:?}",
            request.target_host
        )));
    }
    let uri_text = format!("sip:{}@{}", request.to_user, request.target_host);
    Uri::try_from(uri_text.as_str())
        .map_err(|e| SipError::InvalidRequest(format!("Request-URI {uri_text}: {e}")))?;
    let correlation: String = request
        .correlation_id
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(128)
        .collect();
    Ok(if correlation.is_empty() {
        "-".into()
    } else {
        correlation
    })
}

impl UserAgent {
    /// A core with no calls.
    pub(crate) fn new(config: UaConfig) -> Self {
        Self {
            config,
            calls: HashMap::new(),
            servers: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            tag_salt: rand::random(),
        }
    }

    /// Places an outbound call: builds the INVITE and starts its transaction.
    /// `local` is the address advertised in Via, From and Contact.
    pub(crate) fn start_call(
        &mut self,
        now: Instant,
        call_id: String,
        request: InviteRequest,
        local: SocketAddr,
    ) -> Result<(), SipError> {
        let correlation_id = validate(&request)?;
        if self.calls.contains_key(&call_id) {
            return Err(SipError::InvalidRequest(format!(
                "duplicate Call-ID {call_id}"
            )));
        }
        let uri_text = format!("sip:{}@{}", request.to_user, request.target_host);
        let uri = Uri::try_from(uri_text.as_str())
            .map_err(|e| SipError::InvalidRequest(format!("Request-URI {uri_text}: {e}")))?;
        let local_host = host_port(local);
        let local_ip = local_host
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&local_host);
        let invite = build::invite(InviteParts {
            uri,
            from: format!(
                "<sip:{}@{local_ip}>;tag={}",
                request.from_user,
                random_hex(12)
            ),
            to: format!("<{uri_text}>"),
            call_id: call_id.clone(),
            cseq: 1,
            via: build::via(local, &new_branch()),
            contact: format!("<sip:{}@{local_host}>", request.from_user),
            user_agent: self.config.user_agent.clone(),
            correlation_id: correlation_id.clone(),
            sdp: request.sdp,
        });
        tracing::info!(sip_call_id = %call_id, correlation_id = %correlation_id, target = %request.target, "sending INVITE");
        let call = OutboundCall::new(
            now,
            invite,
            request.target,
            local,
            correlation_id,
            self.config.timers,
        );
        self.calls.insert(call_id.clone(), call);
        self.collect(&call_id);
        Ok(())
    }

    /// The call module hangs up a call (CANCEL or BYE). Unknown calls are ignored.
    pub(crate) fn hangup(&mut self, now: Instant, call_id: &str) {
        if let Some(call) = self.calls.get_mut(call_id) {
            call.hangup(now);
            self.collect(call_id);
        }
    }

    /// A datagram arrived from `source`.
    pub(crate) fn handle_datagram(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) {
        match message::parse(datagram) {
            Ok(Incoming::Response(response, reason)) => {
                let Some(call_id) = message::call_id(&response) else {
                    return;
                };
                match self.calls.get_mut(&call_id) {
                    Some(call) => {
                        tracing::debug!(sip_call_id = %call_id, correlation_id = %call.correlation_id, code = response.status_code.code(), %reason, "response received");
                        call.handle_response(now, response, reason);
                        self.collect(&call_id);
                    }
                    None => {
                        tracing::debug!(sip_call_id = %call_id, %source, "response for no call: dropped")
                    }
                }
            }
            Ok(Incoming::Request(request)) => self.handle_request(now, source, request),
            Err(ParseError::Keepalive) => {}
            Err(ParseError::Split(e)) => {
                tracing::warn!(%source, "unparseable datagram dropped: {e}");
            }
            Err(ParseError::Rsip { raw, error }) => self.reply_malformed(source, &raw, &error),
            Err(ParseError::MissingHeader { raw, header }) => {
                self.reply_malformed(source, &raw, &format!("missing or bad {header}"))
            }
        }
    }

    fn reply_malformed(&mut self, source: SocketAddr, raw: &message::RawMessage, why: &str) {
        let sip_call_id = raw.header("Call-ID").unwrap_or("-");
        match message::fallback::reply_to_malformed(raw, source, why) {
            Some(payload) => {
                tracing::warn!(sip_call_id, %source, "malformed request answered: {why}");
                self.transmits.push_back(Transmit {
                    dest: source,
                    payload,
                    call_id: None,
                });
            }
            None => tracing::warn!(sip_call_id, %source, "malformed message dropped: {why}"),
        }
    }

    /// Fires every timer due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(call) = self.calls.get_mut(&id) {
                call.handle_timeout(now);
            }
            self.collect(&id);
        }
        for (_, tx) in self.servers.values_mut() {
            tx.handle_timeout(now);
        }
        self.servers.retain(|_, (_, tx)| !tx.is_terminated());
    }

    /// Sending a datagram of `call_id` failed.
    pub(crate) fn handle_send_error(&mut self, now: Instant, call_id: Option<&str>, error: String) {
        let Some(id) = call_id else { return };
        if let Some(call) = self.calls.get_mut(id) {
            call.handle_send_error(now, error);
            self.collect(id);
        }
    }

    /// The next datagram to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, with the SIP Call-ID it belongs to.
    pub(crate) fn poll_event(&mut self) -> Option<(String, SipCallEvent)> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let calls = self
            .calls
            .values()
            .filter_map(OutboundCall::poll_timeout)
            .min();
        let servers = self
            .servers
            .values()
            .filter_map(|(_, tx)| tx.poll_timeout())
            .min();
        earliest(calls, servers)
    }

    /// The correlation id of a call, for the driver's logs.
    pub(crate) fn correlation_id(&self, call_id: &str) -> Option<&str> {
        self.calls.get(call_id).map(|c| c.correlation_id.as_str())
    }

    /// Number of call legs still held (finished ones linger while they absorb
    /// retransmissions).
    pub(crate) fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Moves a call's outputs to the core's queues and forgets it once finished.
    fn collect(&mut self, call_id: &str) {
        let Some(call) = self.calls.get_mut(call_id) else {
            return;
        };
        while let Some(t) = call.poll_transmit() {
            self.transmits.push_back(t);
        }
        while let Some(e) = call.poll_event() {
            self.events.push_back((call_id.to_string(), e));
        }
        if call.is_finished() {
            self.calls.remove(call_id);
        }
    }
}

#[cfg(test)]
#[path = "ua_tests.rs"]
mod tests;
