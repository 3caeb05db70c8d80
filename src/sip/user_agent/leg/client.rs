//! The leg's in-dialog client transactions (BYE, re-INVITE, UPDATE, INFO, PRACK,
//! NOTIFY): sending them, matching their responses by branch, resending them with
//! credentials after a 401/407, and handing each outcome to its purpose.

use std::time::Instant;

use rsip::{Header, Method, Request, Response};

use super::{Leg, LegEvent};
use crate::sip::message::build::{self, new_branch};
use crate::sip::transaction::{ClientEvent, InviteClient, NonInviteClient};
use crate::sip::transport::Peer;

/// Why an in-dialog request was sent (decides what its outcome means).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Hang up.
    Bye,
    /// Acknowledge a reliable provisional (early dialog).
    Prack,
    /// A re-INVITE with `sdp`; `user`: asked by the call module (report the result),
    /// else a session refresh.
    Reinvite {
        /// The offer.
        sdp: String,
        /// Report `ReinviteResult`.
        user: bool,
    },
    /// An UPDATE without body refreshing the session (RFC 4028).
    RefreshUpdate,
    /// A DTMF digit as INFO.
    Info,
    /// A NOTIFY of the REFER subscription; `last`: it terminates it.
    Notify,
}

/// The transaction of an in-dialog request.
#[derive(Debug)]
pub(super) enum ClientTx {
    /// re-INVITE.
    Invite(InviteClient),
    /// Everything else.
    NonInvite(NonInviteClient),
}

/// One in-dialog client transaction.
#[derive(Debug)]
pub(crate) struct ClientEntry {
    /// Branch of the request, to match responses.
    pub branch: String,
    /// The request, kept to resend it with credentials.
    pub request: Request,
    /// Why it was sent.
    pub purpose: Purpose,
    /// Early dialog's To tag for PRACK; `None`: the confirmed dialog.
    pub early_tag: Option<String>,
    /// Where it goes.
    pub dest: Peer,
    /// How many times it was resent with credentials.
    pub rounds: u32,
    /// Its outcome was handled (it may still absorb retransmissions).
    pub done: bool,
    /// The transaction.
    pub tx: ClientTx,
}

impl ClientEntry {
    /// Fires due timers (and sends what is due).
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        match &mut self.tx {
            ClientTx::Invite(t) => t.handle_timeout(now),
            ClientTx::NonInvite(t) => t.handle_timeout(now),
        }
    }

    /// The transport failed to send the request.
    pub(super) fn transport_error(&mut self, now: Instant, error: String) {
        match &mut self.tx {
            ClientTx::Invite(t) => t.handle_transport_error(now, error),
            ClientTx::NonInvite(t) => t.handle_transport_error(now, error),
        }
    }

    /// When `handle_timeout` must be called next.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        match &self.tx {
            ClientTx::Invite(t) => t.poll_timeout(),
            ClientTx::NonInvite(t) => t.poll_timeout(),
        }
    }

    /// The next message to send.
    pub(super) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        match &mut self.tx {
            ClientTx::Invite(t) => t.poll_transmit(),
            ClientTx::NonInvite(t) => t.poll_transmit(),
        }
    }

    fn poll_event(&mut self) -> Option<ClientEvent> {
        match &mut self.tx {
            ClientTx::Invite(t) => t.poll_event(),
            ClientTx::NonInvite(t) => t.poll_event(),
        }
    }

    fn is_terminated(&self) -> bool {
        match &self.tx {
            ClientTx::Invite(t) => t.is_terminated(),
            ClientTx::NonInvite(t) => t.is_terminated(),
        }
    }

    /// True while a re-INVITE of ours has no final response.
    pub(super) fn is_pending_invite(&self) -> bool {
        !self.done && matches!(self.tx, ClientTx::Invite(_))
    }

    /// True while this request of `purpose` has no final response.
    pub(super) fn is_pending(&self, purpose: &Purpose) -> bool {
        !self.done && self.purpose == *purpose
    }
}

/// How an in-dialog request ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// A final response.
    Final(Response),
    /// Timer B/F.
    Timeout,
    /// Could not be sent.
    TransportError(String),
}

impl Leg {
    /// Builds an in-dialog request (in the early dialog `early_tag`, else the
    /// confirmed one) and starts its transaction. False if there is no such dialog.
    pub(super) fn send_in_dialog(
        &mut self,
        now: Instant,
        early_tag: Option<&str>,
        purpose: Purpose,
        mut extra: Vec<Header>,
        body: Option<(&str, Vec<u8>)>,
    ) -> bool {
        let method = match purpose {
            Purpose::Bye => Method::Bye,
            Purpose::Prack => Method::PRack,
            Purpose::Reinvite { .. } => Method::Invite,
            Purpose::RefreshUpdate => Method::Update,
            Purpose::Info => Method::Info,
            Purpose::Notify => Method::Notify,
        };
        if matches!(method, Method::Invite | Method::Update | Method::Notify) {
            extra.push(Header::Contact(self.ctx.contact().into()));
        }
        extra.push(Header::UserAgent(self.ctx.user_agent.clone().into()));
        let branch = new_branch();
        let via = build::via(self.ctx.local, &branch);
        let target = self.target;
        let dialog = match early_tag {
            Some(tag) => self
                .early
                .iter_mut()
                .find(|(t, _)| t == tag)
                .map(|(_, e)| &mut e.dialog),
            None => self.dialog.as_mut(),
        };
        let Some(dialog) = dialog else {
            return false;
        };
        let request = match body {
            Some(body) => dialog.request_with_body(method, via, extra, body),
            None => dialog.request(method, via, extra),
        };
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, %method, "cannot build request: {e}");
                return false;
            }
        };
        let dest = if target.transport == crate::sip::transport::Transport::Udp {
            dialog.next_hop().map(Peer::udp).unwrap_or(target)
        } else {
            target
        };
        // Credentials from earlier challenges, sent preemptively (RFC 3261 §22.3), only
        // when the request goes to the trunk.
        let auth = self.auth.authorize(
            &method.to_string(),
            &request.uri.to_string(),
            &request.body,
            dest.addr,
        );
        let request = if auth.is_empty() {
            request
        } else {
            let seq = crate::sip::message::cseq(&request)
                .map(|(s, _)| s)
                .unwrap_or(1);
            build::resend(&request, via_of(&request), seq, Some(auth), Vec::new())
        };
        self.start_client(
            now,
            request,
            purpose,
            early_tag.map(str::to_string),
            dest,
            0,
        );
        true
    }

    fn start_client(
        &mut self,
        now: Instant,
        request: Request,
        purpose: Purpose,
        early_tag: Option<String>,
        dest: Peer,
        rounds: u32,
    ) {
        let reliability = dest.transport.reliability();
        let tx = if request.method == Method::Invite {
            ClientTx::Invite(InviteClient::new(
                now,
                request.clone(),
                self.ctx.timers,
                reliability,
            ))
        } else {
            ClientTx::NonInvite(NonInviteClient::new(
                now,
                &request,
                self.ctx.timers,
                reliability,
            ))
        };
        tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, method = %request.method, "in-dialog request");
        self.clients.push(ClientEntry {
            branch: crate::sip::message::branch(&request).unwrap_or_default(),
            request,
            purpose,
            early_tag,
            dest,
            rounds,
            done: false,
            tx,
        });
    }

    /// Feeds a response to the matching in-dialog transaction; false if none.
    pub(super) fn route_client_response(
        &mut self,
        now: Instant,
        branch: &str,
        method: Method,
        response: Response,
    ) -> bool {
        let Some(entry) = self
            .clients
            .iter_mut()
            .find(|e| e.branch == branch && e.request.method == method)
        else {
            return false;
        };
        let result = match &mut entry.tx {
            ClientTx::Invite(t) => t.handle_response(now, response),
            ClientTx::NonInvite(t) => t.handle_response(now, response),
        };
        if let Err(e) = result {
            tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, %method, "{e}");
        }
        true
    }

    /// Applies the in-dialog transactions' outcomes and forgets finished ones.
    pub(super) fn process_clients(&mut self, now: Instant) {
        let mut outcomes = Vec::new();
        for entry in &mut self.clients {
            while let Some(event) = entry.poll_event() {
                let outcome = match event {
                    ClientEvent::Provisional(_) => continue,
                    ClientEvent::Final(r) => Outcome::Final(r),
                    ClientEvent::Timeout => Outcome::Timeout,
                    ClientEvent::TransportError(e) => Outcome::TransportError(e),
                };
                outcomes.push((entry.branch.clone(), outcome));
            }
        }
        for (branch, outcome) in outcomes {
            let Some(i) = self.clients.iter().position(|e| e.branch == branch) else {
                continue;
            };
            self.clients[i].done = true;
            let (request, purpose, early_tag, dest, rounds) = {
                let e = &self.clients[i];
                (
                    e.request.clone(),
                    e.purpose.clone(),
                    e.early_tag.clone(),
                    e.dest,
                    e.rounds,
                )
            };
            if let Outcome::Final(r) = &outcome
                && matches!(r.status_code.code(), 401 | 407)
                && self.phase != super::Phase::Done
            {
                match self.auth.on_challenge(r, &request, rounds, dest.addr) {
                    Ok(headers) => {
                        if let Some(seq) = self.next_cseq(early_tag.as_deref()) {
                            let via = build::via(self.ctx.local, &new_branch());
                            let retry =
                                build::resend(&request, via, seq, Some(headers), Vec::new());
                            self.start_client(now, retry, purpose, early_tag, dest, rounds + 1);
                            self.drain_transactions();
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, method = %request.method, "challenge not answered: {e}");
                    }
                }
            }
            self.on_outcome(now, &request, purpose, outcome);
        }
        self.drain_transactions();
        self.clients.retain(|e| !e.is_terminated());
    }

    /// The next CSeq of the early dialog `tag` or of the confirmed dialog.
    fn next_cseq(&mut self, early_tag: Option<&str>) -> Option<u32> {
        match early_tag {
            Some(tag) => self
                .early
                .iter_mut()
                .find(|(t, _)| t == tag)
                .and_then(|(_, e)| e.dialog.next_cseq()),
            None => self.dialog.as_mut().and_then(|d| d.next_cseq()),
        }
    }

    /// 481 or 408 (or no answer) to an in-dialog request: the dialog is gone
    /// (RFC 5057 §5.1); BYE it (unless it answered 481) and report it lost.
    pub(super) fn dialog_failed(&mut self, now: Instant, status: u16, reason: String) {
        if self.phase == super::Phase::Done {
            return;
        }
        if status != 481 && self.phase == super::Phase::Confirmed {
            self.send_bye(now);
        }
        self.finish(LegEvent::Lost { status, reason });
    }
}

/// The top Via value of a request.
fn via_of(request: &Request) -> String {
    request
        .headers
        .iter()
        .find_map(|h| match h {
            Header::Via(v) => Some(rsip::headers::UntypedHeader::value(v).to_string()),
            _ => None,
        })
        .unwrap_or_default()
}
