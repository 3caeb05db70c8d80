//! One outbound call as the call module sees it: a current leg, maybe a transfer
//! leg being set up (REFER from the peer, RFC 3515), and retired legs finishing
//! their transactions. Turns leg events into `SipCallEvent`s, exactly one final.
//!
//! ```text
//!  REFER on the current leg --> 202, NOTIFY 100 --> new leg INVITEs Refer-To
//!     new leg 2xx:  NOTIFY 200 (terminated), BYE the old leg, Transferred + RemoteSdp
//!     new leg fails: NOTIFY <status> (terminated); the old leg goes on, or, if the
//!                    transferor already hung up, RemoteHangup
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsip::{Request, Response, Uri};

use super::context::CallContext;
use super::leg::{Answer, Leg, LegEvent};
use super::{Transmit, new_call_id};
use crate::sip::SipCallEvent;
use crate::sip::dialog::uri_socket_addr;
use crate::sip::message::build::reason_phrase;
use crate::sip::transaction::earliest;
use crate::sip::transport::Peer;

/// How long the transferor has to end its dialog after a successful transfer
/// before we send the BYE ourselves.
const TRANSFEROR_BYE_GRACE: Duration = Duration::from_secs(4);

/// A transfer in progress.
#[derive(Debug)]
struct Transfer {
    /// The Refer-To URI.
    target: String,
    /// The leg calling it.
    leg: Leg,
    /// The transferor hung up the old leg meanwhile.
    old_gone: bool,
}

/// An outbound call.
#[derive(Debug)]
pub(crate) struct OutboundCall {
    /// Stable id: the first leg's Call-ID (the handle's `sip_call_id`).
    pub id: String,
    /// Shared settings.
    ctx: Arc<CallContext>,
    /// The leg carrying the call.
    current: Leg,
    /// A transfer being set up.
    transfer: Option<Transfer>,
    /// Legs that are over for the call but still finish transactions.
    retired: Vec<Leg>,
    /// The call module hung up: only `Terminated` is reported.
    hung_up: bool,
    /// The final event was reported.
    done: bool,
    /// Events for the call module.
    events: VecDeque<SipCallEvent>,
    /// Datagrams to send.
    transmits: VecDeque<Transmit>,
}

impl OutboundCall {
    /// Starts the call with its first leg.
    pub(crate) fn new(now: Instant, ctx: Arc<CallContext>, leg: Leg) -> Self {
        let mut call = Self {
            id: leg.call_id.clone(),
            ctx,
            current: leg,
            transfer: None,
            retired: Vec::new(),
            hung_up: false,
            done: false,
            events: VecDeque::new(),
            transmits: VecDeque::new(),
        };
        call.collect(now);
        call
    }

    /// The correlation id.
    pub(crate) fn correlation_id(&self) -> &str {
        &self.ctx.correlation_id
    }

    /// The SIP Call-IDs of every leg still held (responses are routed by them).
    pub(crate) fn call_ids(&self) -> Vec<String> {
        self.legs().map(|l| l.call_id.clone()).collect()
    }

    fn legs(&self) -> impl Iterator<Item = &Leg> {
        std::iter::once(&self.current)
            .chain(self.transfer.as_ref().map(|t| &t.leg))
            .chain(self.retired.iter())
    }

    fn legs_mut(&mut self) -> impl Iterator<Item = &mut Leg> {
        std::iter::once(&mut self.current)
            .chain(self.transfer.as_mut().map(|t| &mut t.leg))
            .chain(self.retired.iter_mut())
    }

    fn leg_mut(&mut self, call_id: &str) -> Option<&mut Leg> {
        self.legs_mut().find(|l| l.call_id == call_id)
    }

    /// A response for the leg `call_id`.
    pub(crate) fn handle_response(
        &mut self,
        now: Instant,
        call_id: &str,
        response: Response,
        reason: String,
    ) {
        if let Some(leg) = self.leg_mut(call_id) {
            leg.handle_response(now, response, reason);
        }
        self.collect(now);
    }

    /// A request for the leg `call_id`; `None` if it matches none of its dialogs.
    pub(crate) fn handle_request(
        &mut self,
        now: Instant,
        call_id: &str,
        request: &Request,
    ) -> Option<Answer> {
        self.leg_mut(call_id)?.handle_request(now, request)
    }

    /// The ACK of our 2xx to a re-INVITE on leg `call_id`.
    pub(crate) fn handle_ack(&mut self, now: Instant, call_id: &str, ack: &Request) {
        if let Some(leg) = self.leg_mut(call_id) {
            leg.handle_ack(now, ack);
            leg.after_remote_invite(now);
        }
        self.collect(now);
    }

    /// No ACK came for our 2xx to a re-INVITE on leg `call_id`.
    pub(crate) fn handle_no_ack(&mut self, now: Instant, call_id: &str) {
        if let Some(leg) = self.leg_mut(call_id) {
            leg.on_no_ack(now);
        }
        self.collect(now);
    }

    /// Sending to `dest` failed.
    pub(crate) fn handle_send_error(&mut self, now: Instant, dest: Peer, error: String) {
        for leg in self.legs_mut() {
            leg.handle_send_error(now, dest, error.clone());
        }
        self.collect(now);
    }

    /// Fires due timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        for leg in self.legs_mut() {
            if leg.poll_timeout().is_some_and(|t| t <= now) {
                leg.handle_timeout(now);
            }
        }
        self.collect(now);
    }

    /// The call module hangs up (CANCEL or BYE on every live leg). Idempotent.
    pub(crate) fn hangup(&mut self, now: Instant) {
        if self.hung_up {
            return;
        }
        self.hung_up = true;
        for leg in self.legs_mut() {
            leg.hangup(now);
        }
        self.collect(now);
    }

    /// The call module's re-INVITE (hold/unhold).
    pub(crate) fn reinvite(&mut self, now: Instant, sdp: String) {
        self.current.reinvite(now, sdp);
        self.collect(now);
    }

    /// A DTMF digit as INFO.
    pub(crate) fn send_dtmf_info(&mut self, now: Instant, digit: char, duration_ms: u32) {
        self.current.send_dtmf_info(now, digit, duration_ms);
        self.collect(now);
    }

    /// When `handle_timeout` must be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.legs()
            .fold(None, |at, l| earliest(at, l.poll_timeout()))
    }

    /// The next datagram to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the call module.
    pub(crate) fn poll_event(&mut self) -> Option<SipCallEvent> {
        self.events.pop_front()
    }

    /// True when the final event was reported and no leg has work left.
    pub(crate) fn is_finished(&self) -> bool {
        self.done && self.legs().all(Leg::is_finished)
    }

    /// Reports the final event once (`Terminated` after a hangup).
    fn finish(&mut self, event: SipCallEvent) {
        if self.done {
            return;
        }
        self.done = true;
        let event = if self.hung_up {
            SipCallEvent::Terminated
        } else {
            event
        };
        tracing::info!(sip_call_id = %self.id, correlation_id = %self.ctx.correlation_id, ?event, "call ended");
        self.events.push_back(event);
    }

    /// Handles every leg's events until none is left, then gathers datagrams.
    pub(crate) fn collect(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(event) = self.current.poll_event() {
                progressed = true;
                self.on_current_event(now, event);
            }
            let transfer_events: Vec<LegEvent> = match self.transfer.as_mut() {
                Some(t) => std::iter::from_fn(|| t.leg.poll_event()).collect(),
                None => Vec::new(),
            };
            for event in transfer_events {
                progressed = true;
                self.on_transfer_event(now, event);
            }
            for leg in &mut self.retired {
                while leg.poll_event().is_some() {
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        if self.hung_up
            && self.current.is_done()
            && self.transfer.as_ref().is_none_or(|t| t.leg.is_done())
        {
            self.finish(SipCallEvent::Terminated);
        }
        self.retired.retain(|l| !l.is_finished());
        let mut out = Vec::new();
        for leg in self.legs_mut() {
            while let Some(t) = leg.poll_transmit() {
                out.push(t);
            }
        }
        self.transmits.extend(out);
    }

    fn on_current_event(&mut self, now: Instant, event: LegEvent) {
        let transferring = self.transfer.is_some();
        match event {
            LegEvent::Provisional { .. } | LegEvent::Answered { .. } if self.hung_up => {}
            LegEvent::Provisional { code: 180, sdp } => {
                self.events.push_back(SipCallEvent::Ringing { sdp })
            }
            LegEvent::Provisional { sdp, .. } => {
                self.events.push_back(SipCallEvent::Progress { sdp })
            }
            LegEvent::Answered { sdp } => self.events.push_back(SipCallEvent::Answered { sdp }),
            LegEvent::RemoteSdp { sdp } if !self.hung_up => {
                self.events.push_back(SipCallEvent::RemoteSdp { sdp })
            }
            LegEvent::ReinviteResult { ok, status, sdp } if !self.hung_up => self
                .events
                .push_back(SipCallEvent::ReinviteResult { ok, status, sdp }),
            LegEvent::RemoteSdp { .. } | LegEvent::ReinviteResult { .. } => {}
            LegEvent::ReferRequested {
                target,
                referred_by,
            } => self.start_transfer(now, target, referred_by),
            // The transferor hung up while the transfer goes on: not the end yet.
            LegEvent::RemoteBye | LegEvent::Lost { .. } if transferring => {
                if let Some(t) = self.transfer.as_mut() {
                    t.old_gone = true;
                }
            }
            LegEvent::Failed { status, reason } | LegEvent::Lost { status, reason } => {
                self.finish(SipCallEvent::Failed { status, reason })
            }
            LegEvent::RemoteBye => self.finish(SipCallEvent::RemoteHangup),
            LegEvent::Ended => {
                if !transferring {
                    self.finish(SipCallEvent::Terminated);
                }
            }
        }
    }

    fn start_transfer(&mut self, now: Instant, target: String, referred_by: Option<String>) {
        if self.hung_up || self.transfer.is_some() {
            self.current.notify_refer(now, "SIP/2.0 603 Decline", true);
            return;
        }
        let Ok(uri) = Uri::try_from(target.as_str()) else {
            self.current
                .notify_refer(now, "SIP/2.0 400 Bad Request", true);
            return;
        };
        self.current.notify_refer(now, "SIP/2.0 100 Trying", false);
        let dest = uri_socket_addr(&target)
            .map(|addr| Peer {
                transport: self.ctx.target.transport,
                addr,
            })
            .unwrap_or(self.ctx.target);
        tracing::info!(sip_call_id = %self.id, correlation_id = %self.ctx.correlation_id, %target, %dest, "transfer: calling the REFER target");
        let sdp = self.current.local_sdp().to_string();
        let leg = Leg::start(
            now,
            self.ctx.clone(),
            new_call_id(),
            uri,
            format!("<{target}>"),
            dest,
            sdp,
            referred_by,
        );
        self.transfer = Some(Transfer {
            target,
            leg,
            old_gone: false,
        });
    }

    fn on_transfer_event(&mut self, now: Instant, event: LegEvent) {
        match event {
            LegEvent::Answered { sdp } => {
                let Some(t) = self.transfer.take() else {
                    return;
                };
                self.current.notify_refer(now, "SIP/2.0 200 OK", true);
                let mut old = std::mem::replace(&mut self.current, t.leg);
                old.hangup_at(now + TRANSFEROR_BYE_GRACE);
                self.retired.push(old);
                tracing::info!(sip_call_id = %self.id, correlation_id = %self.ctx.correlation_id, target = %t.target, new_call_id = %self.current.call_id, "transfer completed");
                self.events
                    .push_back(SipCallEvent::Transferred { target: t.target });
                self.events.push_back(SipCallEvent::RemoteSdp { sdp });
            }
            LegEvent::Failed { status, reason } => {
                let Some(t) = self.transfer.take() else {
                    return;
                };
                tracing::info!(sip_call_id = %self.id, correlation_id = %self.ctx.correlation_id, status, %reason, "transfer failed");
                let line = format!("SIP/2.0 {status} {}", phrase(status, &reason));
                self.current.notify_refer(now, &line, true);
                self.retired.push(t.leg);
                if t.old_gone {
                    self.finish(SipCallEvent::RemoteHangup);
                }
            }
            // Hangup during the transfer: the new leg ended its CANCEL/BYE.
            LegEvent::Ended | LegEvent::RemoteBye | LegEvent::Lost { .. } => {
                if let Some(t) = self.transfer.take() {
                    self.retired.push(t.leg);
                }
            }
            LegEvent::Provisional { .. }
            | LegEvent::RemoteSdp { .. }
            | LegEvent::ReinviteResult { .. }
            | LegEvent::ReferRequested { .. } => {}
        }
    }
}

/// A reason phrase for a sipfrag status line (ours when the peer's is empty).
fn phrase(status: u16, reason: &str) -> String {
    let clean: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    if clean.trim().is_empty() {
        reason_phrase(status).to_string()
    } else {
        clean
    }
}
