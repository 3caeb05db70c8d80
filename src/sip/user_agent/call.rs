//! One outbound call leg (UAC): its INVITE, CANCEL and BYE client transactions, its
//! dialog, and the events for the call module. Sans-IO.
//!
//! ```text
//!  Calling --1xx--> Early --2xx/ACK--> Confirmed --hangup: BYE--> Terminating --> Done
//!    |  hangup: wait for a 1xx          | hangup: CANCEL --> Cancelling --487/ACK--> Done
//!    +--3xx-6xx, B, transport error --> Done (Failed)   (a 2xx crossing CANCEL: ACK, BYE)
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use rsip::{Method, Request, Response};

use super::Transmit;
use super::fork::Fork;
use crate::sip::SipCallEvent;
use crate::sip::dialog::Dialog;
use crate::sip::message::build::{self, new_branch, request_bytes};
use crate::sip::message::{body_text, branch, cseq, to_tag};
use crate::sip::transaction::{
    ClientEvent, InviteClient, NonInviteClient, Reliability, TimerConfig, earliest,
};

/// Where the call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE sent, no response yet (a hangup now waits for a provisional, §9.1).
    Calling,
    /// A provisional came: CANCEL may be sent.
    Early,
    /// CANCEL sent; waiting for the INVITE's final response until `guard`.
    Cancelling {
        /// 64*T1 after the CANCEL: give up on the 487 (§9.1).
        guard: Instant,
    },
    /// 2xx received and ACKed.
    Confirmed,
    /// BYE sent, waiting for its response.
    Terminating,
    /// The final event was reported.
    Done,
}

/// An outbound call leg.
#[derive(Debug)]
pub(crate) struct OutboundCall {
    /// SIP Call-ID.
    pub call_id: String,
    /// Correlation id of the request that placed the call.
    pub correlation_id: String,
    /// The trunk the INVITE (and CANCEL) go to.
    target: SocketAddr,
    /// Our advertised address (Via of new requests).
    local: SocketAddr,
    /// Timer values.
    timers: TimerConfig,
    /// Branch of the INVITE (and of the CANCEL).
    invite_branch: String,
    /// The INVITE client transaction, until it terminates.
    invite: Option<InviteClient>,
    /// The INVITE itself (for CANCEL and the dialog).
    invite_request: Request,
    /// The CANCEL client transaction, if one was sent.
    cancel: Option<NonInviteClient>,
    /// The BYE client transaction and its branch, if one was sent.
    bye: Option<(String, NonInviteClient)>,
    /// The dialog, once a 2xx came.
    dialog: Option<Dialog>,
    /// The ACK sent for the 2xx and where, resent when the 2xx is retransmitted.
    ack: Option<(SocketAddr, Vec<u8>)>,
    /// Dialogs of forked 2xx responses, ACKed and being BYEd.
    forks: Vec<Fork>,
    /// Reason phrase of the last response to the INVITE.
    last_reason: String,
    /// The caller asked to hang up: only `Terminated` is reported from then on.
    hung_up: bool,
    /// Where the call stands.
    phase: Phase,
    /// Datagrams to send.
    transmits: VecDeque<Transmit>,
    /// Events for the call module.
    events: VecDeque<SipCallEvent>,
}

impl OutboundCall {
    /// Starts the call: the INVITE transaction is created and its first send queued.
    pub(crate) fn new(
        now: Instant,
        invite: Request,
        target: SocketAddr,
        local: SocketAddr,
        correlation_id: String,
        timers: TimerConfig,
    ) -> Self {
        let mut call = Self {
            call_id: crate::sip::message::call_id(&invite).unwrap_or_default(),
            correlation_id,
            target,
            local,
            timers,
            invite_branch: branch(&invite).unwrap_or_default(),
            invite: Some(InviteClient::new(
                now,
                invite.clone(),
                timers,
                Reliability::Unreliable,
            )),
            invite_request: invite,
            cancel: None,
            bye: None,
            dialog: None,
            ack: None,
            forks: Vec::new(),
            last_reason: String::new(),
            hung_up: false,
            phase: Phase::Calling,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        call.drain_transactions();
        call
    }

    /// A response with this call's Call-ID.
    pub(crate) fn handle_response(&mut self, now: Instant, response: Response, reason: String) {
        let (Some(branch), Some((_, method))) = (branch(&response), cseq(&response)) else {
            return;
        };
        let code = response.status_code.code();
        match method {
            Method::Invite if branch == self.invite_branch => {
                self.last_reason = reason;
                match self.invite.as_mut() {
                    Some(tx) if !tx.is_terminated() => {
                        if let Err(e) = tx.handle_response(now, response) {
                            tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.correlation_id, "INVITE: {e}");
                        }
                    }
                    // The transaction ended with the first 2xx; retransmissions and
                    // forked 2xx reach us here (§13.2.2.4).
                    _ if (200..300).contains(&code) => self.on_late_2xx(now, &response),
                    _ => {}
                }
            }
            Method::Cancel if branch == self.invite_branch => {
                if let Some(tx) = self.cancel.as_mut() {
                    let _ = tx.handle_response(now, response);
                }
            }
            Method::Bye => match self.bye.as_mut() {
                Some((b, tx)) if *b == branch => {
                    let _ = tx.handle_response(now, response);
                }
                _ => {
                    if let Some(fork) = self.forks.iter_mut().find(|f| f.bye_branch == branch) {
                        let _ = fork.bye.handle_response(now, response);
                    }
                }
            },
            _ => {
                tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.correlation_id, %method, code, "response matches no transaction");
            }
        }
        self.process(now);
    }

    /// A 2xx after the INVITE transaction ended: the same ACK again for a
    /// retransmission; ACK and BYE for a 2xx from another fork.
    fn on_late_2xx(&mut self, now: Instant, response: &Response) {
        let tag = to_tag(response).unwrap_or_default();
        let ours = self.dialog.as_ref().is_some_and(|d| d.remote_tag == tag);
        let resend = if ours {
            self.ack.clone()
        } else if let Some(fork) = self.forks.iter().find(|f| f.remote_tag == tag) {
            Some((fork.dest, fork.ack.clone()))
        } else if self.dialog.is_some() {
            match Fork::start(
                now,
                &self.invite_request,
                response,
                self.local,
                self.target,
                self.timers,
            ) {
                Ok(fork) => {
                    tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.correlation_id, remote_tag = %tag, "forked 2xx: ACK and BYE");
                    let ack = Some((fork.dest, fork.ack.clone()));
                    self.forks.push(fork);
                    ack
                }
                Err(e) => {
                    tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.correlation_id, "forked 2xx unusable: {e}");
                    None
                }
            }
        } else {
            None
        };
        if let Some((dest, ack)) = resend {
            tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.correlation_id, "ACK for 2xx");
            self.transmits.push_back(self.transmit(dest, ack));
        }
    }

    /// The call module hangs up. Idempotent.
    pub(crate) fn hangup(&mut self, now: Instant) {
        if self.hung_up {
            return;
        }
        self.hung_up = true;
        match self.phase {
            // No provisional yet: the CANCEL waits for one (§9.1).
            Phase::Calling => {}
            Phase::Early => self.send_cancel(now),
            Phase::Confirmed => self.send_bye(now),
            Phase::Cancelling { .. } | Phase::Terminating | Phase::Done => {}
        }
        self.drain_transactions();
    }

    /// A BYE from the peer; returns the status code to answer.
    pub(crate) fn handle_bye(&mut self, request: &Request) -> u16 {
        let Some(dialog) = self.dialog.as_mut().filter(|d| d.matches(request)) else {
            return 481;
        };
        if dialog.check_remote_cseq(request).is_err() {
            return 500;
        }
        match self.phase {
            Phase::Confirmed => {
                self.finish(SipCallEvent::RemoteHangup);
                200
            }
            // Our own BYE is in flight: answer, and end when ours is answered.
            Phase::Terminating => 200,
            _ => 481,
        }
    }

    /// True if `request` is within this call's dialog.
    pub(crate) fn dialog_matches(&self, request: &Request) -> bool {
        self.dialog.as_ref().is_some_and(|d| d.matches(request))
    }

    /// The transport failed to send one of this call's datagrams.
    pub(crate) fn handle_send_error(&mut self, now: Instant, error: String) {
        match self.phase {
            Phase::Calling | Phase::Early => {
                if let Some(tx) = self.invite.as_mut() {
                    tx.handle_transport_error(now, error);
                }
            }
            Phase::Terminating => {
                if let Some((_, tx)) = self.bye.as_mut() {
                    tx.handle_transport_error(now, error);
                }
            }
            _ => {}
        }
        self.process(now);
    }

    /// Fires due timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some(tx) = self.invite.as_mut() {
            tx.handle_timeout(now);
        }
        if let Some(tx) = self.cancel.as_mut() {
            tx.handle_timeout(now);
        }
        if let Some((_, tx)) = self.bye.as_mut() {
            tx.handle_timeout(now);
        }
        for fork in &mut self.forks {
            fork.bye.handle_timeout(now);
        }
        if let Phase::Cancelling { guard } = self.phase
            && now >= guard
        {
            tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.correlation_id, "no final response 64*T1 after CANCEL");
            self.invite = None;
            self.finish(SipCallEvent::Terminated);
        }
        self.process(now);
    }

    /// When `handle_timeout` must be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.invite.as_ref().and_then(InviteClient::poll_timeout);
        at = earliest(
            at,
            self.cancel.as_ref().and_then(NonInviteClient::poll_timeout),
        );
        at = earliest(at, self.bye.as_ref().and_then(|(_, t)| t.poll_timeout()));
        if let Phase::Cancelling { guard } = self.phase {
            at = earliest(at, Some(guard));
        }
        for fork in &self.forks {
            at = earliest(at, fork.bye.poll_timeout());
        }
        at
    }

    /// The next datagram to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the call module.
    pub(crate) fn poll_event(&mut self) -> Option<SipCallEvent> {
        self.events.pop_front()
    }

    /// True when the final event was reported and no transaction is left.
    pub(crate) fn is_finished(&self) -> bool {
        self.phase == Phase::Done
            && self.invite.as_ref().is_none_or(InviteClient::is_terminated)
            && self
                .cancel
                .as_ref()
                .is_none_or(NonInviteClient::is_terminated)
            && self.bye.as_ref().is_none_or(|(_, t)| t.is_terminated())
            && self.forks.iter().all(|f| f.bye.is_terminated())
    }

    /// Applies the events of all transactions, then collects their datagrams.
    fn process(&mut self, now: Instant) {
        while let Some(event) = self.invite.as_mut().and_then(InviteClient::poll_event) {
            self.on_invite_event(now, event);
        }
        while let Some(event) = self.cancel.as_mut().and_then(NonInviteClient::poll_event) {
            let outcome = match event {
                ClientEvent::Provisional(r) | ClientEvent::Final(r) => {
                    r.status_code.code().to_string()
                }
                ClientEvent::Timeout => "timeout".into(),
                ClientEvent::TransportError(e) => e,
            };
            tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.correlation_id, %outcome, "CANCEL answered");
        }
        while let Some(event) = self.bye.as_mut().and_then(|(_, t)| t.poll_event()) {
            if matches!(event, ClientEvent::Provisional(_)) {
                continue;
            }
            if let ClientEvent::Timeout | ClientEvent::TransportError(_) = event {
                tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.correlation_id, "BYE got no answer");
            }
            self.finish(SipCallEvent::Terminated);
        }
        if self
            .invite
            .as_ref()
            .is_some_and(InviteClient::is_terminated)
        {
            self.drain_transactions();
            self.invite = None;
        }
        self.drain_transactions();
    }

    fn on_invite_event(&mut self, now: Instant, event: ClientEvent) {
        match event {
            ClientEvent::Provisional(response) => {
                if self.phase != Phase::Calling && self.phase != Phase::Early {
                    return;
                }
                self.phase = Phase::Early;
                if self.hung_up {
                    self.send_cancel(now);
                    return;
                }
                let sdp = body_text(&response.body);
                match response.status_code.code() {
                    100 => {}
                    180 => self.events.push_back(SipCallEvent::Ringing { sdp }),
                    _ => self.events.push_back(SipCallEvent::Progress { sdp }),
                }
            }
            ClientEvent::Final(response) if response.status_code.code() < 300 => {
                self.on_2xx(now, &response)
            }
            ClientEvent::Final(response) => {
                let reason = std::mem::take(&mut self.last_reason);
                self.finish(SipCallEvent::Failed {
                    status: response.status_code.code(),
                    reason,
                })
            }
            ClientEvent::Timeout => self.finish(SipCallEvent::Failed {
                status: 408,
                reason: "Request Timeout".into(),
            }),
            ClientEvent::TransportError(e) => self.finish(SipCallEvent::Failed {
                status: 503,
                reason: format!("transport error: {e}"),
            }),
        }
    }

    /// The first 2xx: dialog, ACK, then Answered (or BYE if we hung up meanwhile).
    fn on_2xx(&mut self, now: Instant, response: &Response) {
        let dialog = match Dialog::from_uac_2xx(&self.invite_request, response) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.correlation_id, "unusable 2xx: {e}");
                self.finish(SipCallEvent::Failed {
                    status: 502,
                    reason: format!("unusable 2xx: {e}"),
                });
                return;
            }
        };
        let dest = dialog.next_hop().unwrap_or(self.target);
        match dialog.ack(build::via(self.local, &new_branch())) {
            Ok(ack) => {
                let bytes = request_bytes(&ack);
                self.transmits.push_back(self.transmit(dest, bytes.clone()));
                self.ack = Some((dest, bytes));
            }
            Err(e) => {
                tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.correlation_id, "cannot ACK: {e}")
            }
        }
        self.dialog = Some(dialog);
        if self.hung_up {
            tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.correlation_id, "2xx after hangup: ACK and BYE");
            self.phase = Phase::Confirmed;
            self.send_bye(now);
        } else {
            self.phase = Phase::Confirmed;
            self.events.push_back(SipCallEvent::Answered {
                sdp: body_text(&response.body).unwrap_or_default(),
            });
        }
    }

    fn send_cancel(&mut self, now: Instant) {
        let cancel = build::cancel(&self.invite_request);
        self.cancel = Some(NonInviteClient::new(
            now,
            &cancel,
            self.timers,
            Reliability::Unreliable,
        ));
        self.phase = Phase::Cancelling {
            guard: now + self.timers.timeout(),
        };
    }

    fn send_bye(&mut self, now: Instant) {
        let Some(dialog) = self.dialog.as_mut() else {
            return;
        };
        let bye_branch = new_branch();
        let extra = vec![rsip::Header::Other(
            "X-Correlation-ID".into(),
            self.correlation_id.clone(),
        )];
        match dialog.request(Method::Bye, build::via(self.local, &bye_branch), extra) {
            Ok(bye) => {
                let tx = NonInviteClient::new(now, &bye, self.timers, Reliability::Unreliable);
                self.bye = Some((bye_branch, tx));
                self.phase = Phase::Terminating;
            }
            Err(e) => {
                tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.correlation_id, "cannot build BYE: {e}");
                self.finish(SipCallEvent::Terminated);
            }
        }
    }

    /// Reports the final event once (`Terminated` if the caller hung up).
    fn finish(&mut self, event: SipCallEvent) {
        if self.phase == Phase::Done {
            return;
        }
        self.phase = Phase::Done;
        let event = if self.hung_up {
            SipCallEvent::Terminated
        } else {
            event
        };
        tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.correlation_id, ?event, "call ended");
        self.events.push_back(event);
    }

    /// Moves the transactions' datagrams to the call's queue with their destination.
    fn drain_transactions(&mut self) {
        let mut out = Vec::new();
        if let Some(tx) = self.invite.as_mut() {
            while let Some(bytes) = tx.poll_transmit() {
                out.push((self.target, bytes));
            }
        }
        if let Some(tx) = self.cancel.as_mut() {
            while let Some(bytes) = tx.poll_transmit() {
                out.push((self.target, bytes));
            }
        }
        let bye_dest = self
            .dialog
            .as_ref()
            .and_then(Dialog::next_hop)
            .unwrap_or(self.target);
        if let Some((_, tx)) = self.bye.as_mut() {
            while let Some(bytes) = tx.poll_transmit() {
                out.push((bye_dest, bytes));
            }
        }
        for fork in &mut self.forks {
            while fork.bye.poll_event().is_some() {}
            while let Some(bytes) = fork.bye.poll_transmit() {
                out.push((fork.dest, bytes));
            }
        }
        for (dest, bytes) in out {
            let t = self.transmit(dest, bytes);
            self.transmits.push_back(t);
        }
    }

    fn transmit(&self, dest: SocketAddr, payload: Vec<u8>) -> Transmit {
        Transmit {
            dest,
            payload,
            call_id: Some(self.call_id.clone()),
        }
    }
}
