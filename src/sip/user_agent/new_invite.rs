//! New INVITEs from the network (no To tag): admission, then an inbound call whose
//! INVITE server transaction waits for the call module's answer; the call module's
//! answers (`respond`); and stateless forwarding to another instance (`proxy`).

use std::net::SocketAddr;
use std::time::Instant;

use rsip::{Request, Response};

use super::admission::{Admitted, InboundTrunk, Verdict};
use super::calls::Call;
use super::context::CallContext;
use super::leg::Answer;
use super::servers::{ServerEntry, ServerKey, ServerTx};
use super::uas_call::{InboundAction, UasCall};
use super::{Owner, Transmit, UaEvent, UserAgent, new_call_id, proxy};
use crate::sip::message::build::{self, random_hex, response_bytes};
use crate::sip::message::{addr_uri, body_text, call_id, cseq, first_element, header_first};
use crate::sip::transaction::InviteServer;
use crate::sip::transport::{Peer, Transport};
use crate::sip::{DtmfMode, SipError, TrunkSettings};

/// What the driver needs to hand a new inbound call to the call module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IncomingInfo {
    /// Handle id.
    pub id: String,
    /// SIP Call-ID.
    pub sip_call_id: String,
    /// Correlation id (received or generated).
    pub correlation_id: String,
    /// Caller: From URI user.
    pub from_user: String,
    /// From display name.
    pub from_display: Option<String>,
    /// P-Asserted-Identity URI user.
    pub asserted_user: Option<String>,
    /// Called: as the trunk's `called_number_from` says (see `called`).
    pub to_user: String,
    /// Request-URI.
    pub request_uri: String,
    /// SDP offer.
    pub sdp: Option<String>,
    /// The trunk's address.
    pub source: SocketAddr,
    /// The trunk's name.
    pub trunk: String,
    /// The trunk's DTMF mode.
    pub dtmf_mode: DtmfMode,
}

/// The user part of a SIP or tel URI (`sip:+1555@h;x` → `+1555`).
pub(super) fn uri_user(uri: &str) -> Option<String> {
    let rest = uri.split_once(':')?.1;
    let user = match rest.split_once('@') {
        Some((user, _)) => user,
        None if uri.starts_with("tel:") => rest,
        None => return None,
    };
    let user = user.split([';', '?']).next().unwrap_or(user);
    let clean: String = user
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(128)
        .collect();
    (!clean.is_empty()).then_some(clean)
}

/// The display name of a name-addr (`"Bob" <sip:b@h>` → `Bob`).
fn display_name(value: &str) -> Option<String> {
    let first = first_element(value);
    let (name, _) = first.split_once('<')?;
    let name = name.trim().trim_matches('"').replace("\\\"", "\"");
    let clean: String = name.chars().filter(|c| !c.is_control()).take(64).collect();
    (!clean.trim().is_empty()).then(|| clean.trim().to_string())
}

impl UserAgent {
    /// Somebody takes inbound calls (or nobody any more: stateless 480s).
    pub(crate) fn set_accept_inbound(&mut self, accept: bool) {
        self.admission.accept = accept;
    }

    /// Adds (or replaces) a trunk's inbound admission rule.
    pub(crate) fn set_inbound_trunk(&mut self, settings: TrunkSettings, resolved: Vec<SocketAddr>) {
        self.admission
            .set_trunk(InboundTrunk { settings, resolved });
    }

    /// A new INVITE (no To tag, no transaction yet) from `source`.
    pub(super) fn handle_new_invite(
        &mut self,
        now: Instant,
        source: Peer,
        request: Request,
        key: ServerKey,
    ) {
        let sip_call_id = call_id(&request).unwrap_or_default();
        match self.admission.check(now, self.unix, source, &request) {
            Verdict::Unserved => {
                tracing::info!(%sip_call_id, correlation_id = "-", %source, "inbound INVITE: nobody takes inbound calls: 480");
                self.answer_stateless(source, &request, 480);
            }
            Verdict::Forbidden => {
                tracing::warn!(%sip_call_id, correlation_id = "-", %source, uri = %request.uri, "inbound INVITE from no trunk's address: 403");
                self.answer_stateless(source, &request, 403);
            }
            Verdict::Refuse { trunk, answer } => {
                tracing::info!(%sip_call_id, correlation_id = "-", %source, %trunk, code = answer.code, "inbound INVITE refused");
                self.answer_final(now, source, &request, key, answer);
            }
            Verdict::Admit(_) if self.call_index.contains_key(&sip_call_id) => {
                // Same Call-ID as a call we hold, not a retransmission: a loop or a
                // merged request (RFC 3261 §8.2.2.2).
                tracing::warn!(%sip_call_id, correlation_id = "-", %source, "inbound INVITE with a Call-ID in use: 482");
                self.answer_final(now, source, &request, key, Answer::code(482));
            }
            Verdict::Admit(_) if !self.servers.has_room() => {
                self.answer_stateless(source, &request, 503);
            }
            Verdict::Admit(admitted) => self.start_inbound(now, source, request, key, *admitted),
        }
    }

    /// Answers a request without a transaction.
    fn answer_stateless(&mut self, source: Peer, request: &Request, code: u16) {
        let tag = self.response_tag(request);
        let response = build::response(request, code, Some(&tag), source.addr, Vec::new());
        self.transmits.push_back(Transmit {
            dest: source,
            payload: response_bytes(&response),
            owner: Owner::None,
        });
    }

    /// Answers an INVITE finally through a server transaction (resent until ACKed).
    fn answer_final(
        &mut self,
        now: Instant,
        source: Peer,
        request: &Request,
        key: ServerKey,
        answer: Answer,
    ) {
        if !self.servers.has_room() {
            self.answer_stateless(source, request, answer.code);
            return;
        }
        let tag = self.response_tag(request);
        let trying = build::response(request, 100, None, source.addr, Vec::new());
        let response = build::response_with_body(
            request,
            answer.code,
            Some(&tag),
            source.addr,
            answer.headers,
            answer.body,
        );
        let mut tx = InviteServer::new(
            now,
            &trying,
            self.config.timers,
            source.transport.reliability(),
        );
        if let Err(e) = tx.send_response(now, &response) {
            tracing::warn!(correlation_id = "-", "server transaction: {e}");
        }
        self.servers.insert(
            key.clone(),
            ServerEntry {
                dest: source,
                tx: ServerTx::Invite(tx),
                call_id: None,
                ack_key: None,
                owner: Owner::None,
            },
        );
        self.flush_server(&key);
    }

    /// Creates the inbound call of an admitted INVITE and tells the driver.
    fn start_inbound(
        &mut self,
        now: Instant,
        source: Peer,
        request: Request,
        key: ServerKey,
        admitted: Admitted,
    ) {
        let id = new_call_id();
        let sip_call_id = call_id(&request).unwrap_or_default();
        let received: String = header_first(&request.headers, "X-Correlation-ID")
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(128)
            .collect();
        let correlation_id = if received.is_empty() {
            random_hex(32)
        } else {
            received
        };
        let from = header_first(&request.headers, "From").unwrap_or_default();
        let request_uri = request.uri.to_string();
        let to_user = super::called::called_number(&request, &admitted.trunk);
        let local = (self.config.advertise)(source.transport, source.addr);
        let contact_user = if to_user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-_.".contains(c))
            && !to_user.is_empty()
        {
            to_user.clone()
        } else {
            "callbridge".to_string()
        };
        let info = IncomingInfo {
            id: id.clone(),
            sip_call_id: sip_call_id.clone(),
            correlation_id: correlation_id.clone(),
            from_user: uri_user(addr_uri(&from)).unwrap_or_default(),
            from_display: display_name(&from),
            asserted_user: header_first(&request.headers, "P-Asserted-Identity")
                .and_then(|v| uri_user(addr_uri(&v))),
            to_user,
            request_uri,
            sdp: body_text(&request.body),
            source: admitted.peer.addr,
            trunk: admitted.trunk.name.clone(),
            dtmf_mode: admitted.trunk.dtmf_mode,
        };
        let located = admitted
            .resolved
            .iter()
            .map(|a| a.ip())
            .chain([admitted.peer.addr.ip(), source.addr.ip()]);
        let ctx = CallContext {
            domain: request.uri.host_with_port.host.to_string(),
            scope: crate::sip::trunk_scope::TrunkScope::new(&admitted.trunk, located),
            trunk: admitted.trunk,
            target: admitted.peer,
            local,
            timers: self.config.timers,
            user_agent: self.config.user_agent.clone(),
            correlation_id: correlation_id.clone(),
            from_user: contact_user,
            from_domain: None,
            from_account: false,
            from_display: None,
            asserted_identity: None,
            privacy: false,
            secure: request.uri.scheme == Some(rsip::Scheme::Sips)
                && source.transport == crate::sip::transport::Transport::Tls,
            answerer: std::sync::Arc::new(|_| Err("not answered yet".into())),
        };
        tracing::info!(%sip_call_id, %correlation_id, %source, trunk = %info.trunk, to = %info.to_user, "inbound call");
        let trying = build::response(&request, 100, None, source.addr, Vec::new());
        let tx = InviteServer::new(
            now,
            &trying,
            self.config.timers,
            source.transport.reliability(),
        );
        self.servers.insert(
            key.clone(),
            ServerEntry {
                dest: source,
                tx: ServerTx::Invite(tx),
                call_id: Some(sip_call_id.clone()),
                ack_key: None,
                owner: Owner::Call(sip_call_id),
            },
        );
        let tag = self.response_tag(&request);
        let call = UasCall::new(now, ctx, request, source, tag, key.clone());
        self.calls.insert(id.clone(), Call::In(Box::new(call)));
        self.events.push_back(UaEvent::Incoming(Box::new(info)));
        self.flush_server(&key);
        self.collect(&id);
    }

    /// The call module answers an inbound call (before its final response).
    pub(crate) fn respond(&mut self, now: Instant, id: &str, action: InboundAction) {
        if let Some(Call::In(call)) = self.calls.get_mut(id) {
            call.respond(now, action);
            self.collect(id);
        }
    }

    /// Puts a response of an inbound call on its INVITE server transaction.
    pub(super) fn send_final_or_provisional(
        &mut self,
        now: Instant,
        key: &ServerKey,
        sip_call_id: String,
        response: &Response,
    ) {
        let Some(entry) = self.servers.get_mut(key) else {
            tracing::warn!(%sip_call_id, correlation_id = "-", "INVITE transaction gone: response dropped");
            return;
        };
        let code = response.status_code.code();
        if let ServerTx::Invite(tx) = &mut entry.tx
            && let Err(e) = tx.send_response(now, response)
        {
            tracing::warn!(%sip_call_id, correlation_id = "-", code, "server transaction: {e}");
        }
        if (200..300).contains(&code)
            && let Some((seq, _)) = cseq(response)
        {
            self.servers.set_ack_key(key, (sip_call_id, seq));
        }
        self.flush_server(key);
    }

    /// Forwards a ringing inbound call's INVITE statelessly to `target` (another
    /// instance); the call is forgotten here.
    pub(crate) fn proxy(
        &mut self,
        now: Instant,
        id: &str,
        target: SocketAddr,
    ) -> Result<(), SipError> {
        let Some(Call::In(call)) = self.calls.get(id) else {
            return Err(SipError::InvalidRequest(format!("no inbound call {id}")));
        };
        if !call.is_ringing() {
            return Err(SipError::InvalidRequest("already answered".into()));
        }
        let Some(key) = self.config.forward.clone() else {
            return Err(SipError::InvalidRequest(
                "cannot forward to another instance: cluster.forward_secret is not set".into(),
            ));
        };
        let (invite, source) = call.invite();
        let (invite, source) = (invite.clone(), source);
        let origin = call.origin();
        let server_key = call.server_key.clone();
        let correlation_id = call.correlation_id().to_string();
        let target = Peer::udp(target);
        let local = (self.config.advertise)(Transport::Udp, target.addr);
        let route_key: proxy::RouteKey = (server_key.0.clone(), server_key.1.clone());
        let branch = self.routes.branch_for(&route_key);
        let stamp = key.stamp(self.unix, origin, &invite);
        match proxy::forward_request(&invite, source, local, &branch, stamp) {
            Ok(forwarded) => {
                tracing::info!(sip_call_id = %call_id(&invite).unwrap_or_default(), %correlation_id, %target, "INVITE forwarded to another instance");
                self.routes.insert(now, route_key, target, local, origin);
                self.transmits.push_back(Transmit {
                    dest: target,
                    payload: build::request_bytes(&forwarded),
                    owner: Owner::None,
                });
            }
            Err(e) => {
                tracing::warn!(sip_call_id = %call_id(&invite).unwrap_or_default(), %correlation_id, "cannot forward: {e}");
                self.respond(now, id, InboundAction::Reject(483, String::new()));
                return Ok(());
            }
        }
        self.calls.remove(id);
        self.call_index.retain(|_, v| v != id);
        self.timers
            .set(&super::TimerKey::Call(id.to_string()), None);
        self.servers.remove(&server_key);
        self.timers.set(&super::TimerKey::Server(server_key), None);
        Ok(())
    }

    /// A retransmitted INVITE, its CANCEL or its non-2xx ACK, for an INVITE we
    /// forwarded: forwarded the same way. False if `key` is no forwarded INVITE's.
    pub(super) fn forward_again(
        &mut self,
        now: Instant,
        source: Peer,
        request: &Request,
        key: &ServerKey,
    ) -> bool {
        let route_key: proxy::RouteKey = (key.0.clone(), key.1.clone());
        let Some(route) = self.routes.get(now, &route_key) else {
            return false;
        };
        let branch = self.routes.branch_for(&route_key);
        // A retransmitted INVITE is signed again (the first may have been lost);
        // CANCEL and ACK match the other instance's transaction by branch.
        let stamp = match (&self.config.forward, request.method) {
            (Some(key), rsip::Method::Invite) => key.stamp(self.unix, route.origin, request),
            _ => None,
        };
        match proxy::forward_request(request, source, route.local, &branch, stamp) {
            Ok(forwarded) => {
                tracing::debug!(sip_call_id = %call_id(request).unwrap_or_default(), correlation_id = "-", method = %request.method, target = %route.target, "forwarded");
                self.transmits.push_back(Transmit {
                    dest: route.target,
                    payload: build::request_bytes(&forwarded),
                    owner: Owner::None,
                });
            }
            Err(e) => tracing::debug!(correlation_id = "-", "not forwarded: {e}"),
        }
        true
    }
}
