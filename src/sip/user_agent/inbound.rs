//! Requests from the network. In-dialog requests go to their call's leg, which
//! decides the answer (403 when they come from no address of the dialog's peer); the answer is sent through a server transaction (INVITE:
//! timers G/H/I and the ACK of a 2xx; others: Timer J). New INVITEs go to
//! admission (`new_invite.rs`); the CANCEL of a ringing inbound call ends it with
//! 487; requests of an INVITE we forwarded are forwarded again. Out-of-dialog
//! OPTIONS are answered statelessly; unknown dialogs get 481, methods we do not
//! serve 405.

use std::time::Instant;

use rsip::{Header, Method, Request};

use super::calls::Call;
use super::leg::Answer;
use super::servers::{ServerEntry, ServerKey, ServerTx, server_key};
use super::{Owner, TimerKey, Transmit, UserAgent};
use crate::sip::message::build::{self, ALLOW, response_bytes};
use crate::sip::message::{branch, call_id, cseq, to_tag};
use crate::sip::transaction::{InviteServer, NonInviteServer, ServerEvent};
use crate::sip::transport::Peer;

/// `Retry-After` of the 503 that answers an OPTIONS probe while we take no new calls,
/// seconds (a hint: balancers keep probing at their own interval).
const OPTIONS_RETRY_AFTER_SECS: u32 = 30;

impl UserAgent {
    /// Handles a parsed request from `source`.
    pub(super) fn handle_request(&mut self, now: Instant, source: Peer, request: Request) {
        let method = request.method;
        let sip_call_id = call_id(&request).unwrap_or_default();
        let correlation_id = self.correlation_id(&sip_call_id).unwrap_or("-").to_string();
        let key = server_key(&request);
        if matches!(method, Method::Invite | Method::Ack | Method::Cancel)
            && self.forward_again(now, source, &request, &key)
        {
            return;
        }
        if method == Method::Ack {
            self.handle_ack(now, source, &key, &request);
            return;
        }
        if let Some(entry) = self.servers.get_mut(&key) {
            tracing::debug!(%sip_call_id, %correlation_id, %method, "request retransmitted");
            entry.handle_request(now);
            self.flush_server(&key);
            return;
        }
        if method == Method::Invite && to_tag(&request).is_none() {
            self.handle_new_invite(now, source, request, key);
            return;
        }
        let id = self.call_index.get(&sip_call_id).cloned();
        if method == Method::Cancel
            && let Some(id) = &id
            && self
                .servers
                .contains(&(key.0.clone(), key.1.clone(), Method::Invite.to_string()))
            && let Some(Call::In(call)) = self.calls.get_mut(id)
        {
            call.handle_cancel(now);
        }
        let from_call = match (&id, method) {
            (_, Method::Cancel) => None,
            (Some(id), _) => self
                .calls
                .get_mut(id)
                .and_then(|c| c.handle_request(now, &sip_call_id, source, &request)),
            (None, _) => None,
        };
        let in_call = from_call.is_some();
        let answer = match from_call {
            Some(answer) => answer,
            None => self.out_of_dialog(&request, &key),
        };
        tracing::info!(%sip_call_id, %correlation_id, %method, %source, code = answer.code, "answering request");
        let tag = self.response_tag(&request);
        let response = build::response_with_body(
            &request,
            answer.code,
            Some(&tag),
            source.addr,
            answer.headers,
            answer.body,
        );
        let stateless = !in_call && matches!(method, Method::Invite | Method::Options);
        if stateless || !self.servers.has_room() {
            self.transmits.push_back(Transmit {
                dest: source,
                payload: response_bytes(&response),
                owner: Owner::None,
            });
        } else {
            let reliability = source.transport.reliability();
            let mut ack_key = None;
            let tx = if method == Method::Invite {
                let trying = build::response(&request, 100, None, source.addr, Vec::new());
                let mut tx = InviteServer::new(now, &trying, self.config.timers, reliability);
                if let Err(e) = tx.send_response(now, &response) {
                    tracing::warn!(%sip_call_id, %correlation_id, "server transaction: {e}");
                }
                if tx.is_accepted() {
                    ack_key = cseq(&request).map(|(seq, _)| (sip_call_id.clone(), seq));
                }
                ServerTx::Invite(tx)
            } else {
                let mut tx = NonInviteServer::new(now, self.config.timers, reliability);
                if let Err(e) = tx.send_response(now, &response) {
                    tracing::warn!(%sip_call_id, %correlation_id, "server transaction: {e}");
                }
                ServerTx::NonInvite(tx)
            };
            let entry = ServerEntry {
                dest: source,
                tx,
                call_id: in_call.then(|| sip_call_id.clone()),
                ack_key,
                owner: Owner::None,
            };
            self.servers.insert(key.clone(), entry);
            self.flush_server(&key);
        }
        if let Some(id) = id {
            // After the response went out, so e.g. the 202 precedes the REFER's NOTIFY.
            if let Some(call) = self.calls.get_mut(&id) {
                call.collect(now);
            }
            self.collect(&id);
        }
    }

    /// An ACK: for a 3xx-6xx it shares the INVITE's branch; for a 2xx it is matched by
    /// Call-ID and CSeq and also handed to the leg (it may carry the SDP answer).
    fn handle_ack(&mut self, now: Instant, source: Peer, key: &ServerKey, ack: &Request) {
        let key = match self.servers.get_mut(key) {
            Some(_) => key.clone(),
            None => match self.servers.key_for_2xx_ack(ack) {
                Some(k) => k,
                None => {
                    tracing::debug!(sip_call_id = %call_id(ack).unwrap_or_default(), correlation_id = "-", "ACK matches no transaction: ignored");
                    return;
                }
            },
        };
        let Some(entry) = self.servers.get_mut(&key) else {
            return;
        };
        let accepted = matches!(&entry.tx, ServerTx::Invite(t) if t.is_accepted());
        let leg = entry.call_id.clone();
        // The ACK of a 2xx is an in-dialog request: only from the dialog's peer.
        if accepted
            && let Some(leg_call_id) = &leg
            && let Some(call) = self
                .call_index
                .get(leg_call_id)
                .and_then(|id| self.calls.get(id))
            && !call.accepts_from(leg_call_id, source)
        {
            tracing::warn!(sip_call_id = %leg_call_id, correlation_id = %call.correlation_id(), %source, "ACK from an address that is not the dialog's peer: ignored");
            return;
        }
        let Some(entry) = self.servers.get_mut(&key) else {
            return;
        };
        if let ServerTx::Invite(t) = &mut entry.tx {
            t.handle_ack(now);
        }
        self.flush_server(&key);
        if accepted
            && let Some(leg_call_id) = leg
            && let Some(id) = self.call_index.get(&leg_call_id).cloned()
        {
            if let Some(call) = self.calls.get_mut(&id) {
                call.handle_ack(now, &leg_call_id, source, ack);
            }
            self.collect(&id);
        }
    }

    /// A server transaction's timer fired.
    pub(super) fn server_timeout(&mut self, now: Instant, key: ServerKey) {
        let Some(entry) = self.servers.get_mut(&key) else {
            return;
        };
        let mut no_ack = false;
        match &mut entry.tx {
            ServerTx::Invite(t) => {
                t.handle_timeout(now);
                while let Some(event) = t.poll_event() {
                    no_ack |= event == ServerEvent::NoAck;
                }
            }
            ServerTx::NonInvite(t) => t.handle_timeout(now),
        }
        let leg = entry.call_id.clone();
        self.flush_server(&key);
        if no_ack
            && let Some(leg_call_id) = leg
            && let Some(id) = self.call_index.get(&leg_call_id).cloned()
        {
            if let Some(call) = self.calls.get_mut(&id) {
                call.handle_no_ack(now, &leg_call_id);
            }
            self.collect(&id);
        }
    }

    /// Sends a server transaction's queued responses, reschedules or forgets it.
    pub(super) fn flush_server(&mut self, key: &ServerKey) {
        let timer = TimerKey::Server(key.clone());
        let Some(entry) = self.servers.get_mut(key) else {
            self.timers.set(&timer, None);
            return;
        };
        let dest = entry.dest;
        while let Some(payload) = entry.poll_transmit() {
            self.transmits.push_back(Transmit {
                dest,
                payload,
                owner: entry.owner.clone(),
            });
        }
        if entry.is_terminated() {
            self.servers.remove(key);
            self.timers.set(&timer, None);
        } else {
            let at = entry.poll_timeout();
            self.timers.set(&timer, at);
        }
    }

    /// The To tag we add to a response: the same for every retransmission of a request
    /// (stateless answers included), unguessable thanks to the per-UA salt.
    pub(super) fn response_tag(&self, request: &Request) -> String {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.tag_salt.hash(&mut hasher);
        branch(request).hash(&mut hasher);
        call_id(request).hash(&mut hasher);
        format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
    }

    /// The answer to a request that belongs to no dialog of ours.
    fn out_of_dialog(&self, request: &Request, key: &ServerKey) -> Answer {
        let in_dialog = to_tag(request).is_some();
        let allow = || vec![Header::Allow(ALLOW.into())];
        match request.method {
            // CANCEL of an INVITE we hold: the INVITE was already answered finally.
            Method::Cancel => {
                let invite_key = (key.0.clone(), key.1.clone(), Method::Invite.to_string());
                let known = self.servers.contains(&invite_key);
                Answer::code(if known { 200 } else { 481 })
            }
            Method::Bye => Answer::code(481),
            _ if in_dialog => Answer::code(481),
            // A probe while we take no new calls: a balancer should send them elsewhere.
            Method::Options if self.availability.refusal().is_some() => Answer {
                code: 503,
                headers: {
                    let reason = self.availability.refusal().unwrap_or_default();
                    let mut h = allow();
                    h.push(Header::RetryAfter(
                        format!("{OPTIONS_RETRY_AFTER_SECS} ({reason})").into(),
                    ));
                    h
                },
                body: None,
            },
            Method::Options => Answer {
                code: 200,
                headers: {
                    let mut h = allow();
                    h.push(Header::Accept("application/sdp".into()));
                    h
                },
                body: None,
            },
            // New INVITEs went to admission; this one has a To tag of no dialog.
            Method::Invite => Answer::code(481),
            _ => Answer {
                code: 405,
                headers: allow(),
                body: None,
            },
        }
    }
}
