//! Requests from the network: BYE in a dialog, OPTIONS keepalives, and the refusals
//! (481 for unknown dialogs, 405 for methods we do not serve). Non-INVITE requests get
//! a server transaction (Timer J absorbs retransmissions); INVITEs are answered
//! statelessly until the INVITE server transaction arrives with inbound calls.

use std::net::SocketAddr;
use std::time::Instant;

use rsip::{Header, Method, Request};

use super::{Transmit, UserAgent};
use crate::sip::message::build::{self, ALLOW, response_bytes};
use crate::sip::message::{branch, call_id, to_tag};
use crate::sip::transaction::{NonInviteServer, Reliability};

impl UserAgent {
    /// Handles a parsed request from `source`.
    pub(super) fn handle_request(&mut self, now: Instant, source: SocketAddr, request: Request) {
        let method = request.method;
        let sip_call_id = call_id(&request).unwrap_or_default();
        if method == Method::Ack {
            // ACKs are never answered; we hold no INVITE server transaction yet.
            tracing::debug!(%sip_call_id, correlation_id = "-", %source, "ACK ignored");
            return;
        }
        let key = (branch(&request).unwrap_or_default(), method.to_string());
        let correlation_id = self
            .calls
            .get(&sip_call_id)
            .map(|c| c.correlation_id.clone())
            .unwrap_or_else(|| "-".into());
        if let Some((dest, tx)) = self.servers.get_mut(&key) {
            tracing::debug!(%sip_call_id, %correlation_id, %method, "request retransmitted");
            tx.handle_request(now);
            let dest = *dest;
            while let Some(payload) = tx.poll_transmit() {
                self.transmits.push_back(Transmit {
                    dest,
                    payload,
                    call_id: None,
                });
            }
            return;
        }
        let (code, extra) = self.answer(&request, &sip_call_id);
        tracing::info!(%sip_call_id, %correlation_id, %method, %source, code, "answering request");
        let tag = self.response_tag(&request);
        let response = build::response(&request, code, Some(&tag), source, extra);
        if method == Method::Invite {
            self.transmits.push_back(Transmit {
                dest: source,
                payload: response_bytes(&response),
                call_id: None,
            });
            return;
        }
        let mut tx = NonInviteServer::new(now, self.config.timers, Reliability::Unreliable);
        if let Err(e) = tx.send_response(now, &response) {
            tracing::warn!(%sip_call_id, %correlation_id, "server transaction: {e}");
        }
        while let Some(payload) = tx.poll_transmit() {
            self.transmits.push_back(Transmit {
                dest: source,
                payload,
                call_id: None,
            });
        }
        self.servers.insert(key, (source, tx));
        if self.calls.contains_key(&sip_call_id) {
            self.collect(&sip_call_id);
        }
    }

    /// The To tag we add to a response: the same for every retransmission of a request
    /// (stateless INVITE answers included), unguessable thanks to the per-UA salt.
    fn response_tag(&self, request: &Request) -> String {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.tag_salt.hash(&mut hasher);
        branch(request).hash(&mut hasher);
        call_id(request).hash(&mut hasher);
        format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
    }

    /// Status code and extra headers for a new request.
    fn answer(&mut self, request: &Request, sip_call_id: &str) -> (u16, Vec<Header>) {
        let in_dialog = to_tag(request).is_some();
        let call = self.calls.get_mut(sip_call_id);
        let dialog_known = call.as_ref().is_some_and(|c| c.dialog_matches(request));
        let allow = || vec![Header::Allow(ALLOW.into())];
        match request.method {
            Method::Bye => match call {
                Some(call) => (call.handle_bye(request), Vec::new()),
                None => (481, Vec::new()),
            },
            _ if in_dialog && !dialog_known => (481, Vec::new()),
            Method::Options => {
                let mut extra = allow();
                extra.push(Header::Accept("application/sdp".into()));
                (200, extra)
            }
            // We hold no INVITE server transaction: nothing to cancel.
            Method::Cancel => (481, Vec::new()),
            // re-INVITE: keep the current session (next issue: real re-INVITE).
            Method::Invite if in_dialog => (488, Vec::new()),
            // Inbound calls are not served yet.
            Method::Invite => (480, Vec::new()),
            _ => (405, allow()),
        }
    }
}
