//! One outbound call as the call module sees it: a current leg, maybe a transfer
//! (REFER from the peer, RFC 3515) waiting for the call module's decision or being
//! set up on a new leg, and retired legs finishing their transactions. Turns leg
//! events into `SipCallEvent`s, exactly one final.
//!
//! A transfer never goes where the Refer-To points: the call module dials its user
//! part through the dial plan and the user's limits, and the new leg calls the
//! route's trunk with that trunk's settings and credentials.
//!
//! ```text
//!  REFER on the current leg (trunk refer = "dialplan") --> 202, NOTIFY 100,
//!     TransferRequested --> the call module decides:
//!       transfer_to(trunk):  new leg INVITEs the trunk
//!          new leg 2xx:  NOTIFY 200 (terminated), BYE the old leg, Transferred + RemoteSdp
//!          new leg fails: NOTIFY <status> (terminated), TransferFailed; the old leg
//!                         goes on, or, if the transferor already hung up, RemoteHangup
//!       refuse_transfer(status), or no decision in 64*T1 (408): NOTIFY <status>
//!          (terminated); the call goes on (RemoteHangup if the transferor hung up)
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsip::{Request, Response, Uri};

use super::context::CallContext;
use super::leg::{Answer, Leg, LegEvent};
use super::{Transmit, new_call_id};
use crate::sip::SipCallEvent;
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
    /// The REFER's Referred-By, passed on in the new INVITE.
    referred_by: Option<String>,
    /// The leg calling the route's trunk, once the call module allowed the transfer.
    leg: Option<Leg>,
    /// The call module decides by then, else the transfer fails with 408.
    decide_by: Instant,
    /// The transferor hung up the old leg meanwhile.
    old_gone: bool,
}

impl Transfer {
    /// True once nothing of the transfer is left to run (no leg, or its leg done).
    fn is_done(&self) -> bool {
        self.leg.as_ref().is_none_or(Leg::is_done)
    }
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
            .chain(self.transfer.as_ref().and_then(|t| t.leg.as_ref()))
            .chain(self.retired.iter())
    }

    fn legs_mut(&mut self) -> impl Iterator<Item = &mut Leg> {
        std::iter::once(&mut self.current)
            .chain(self.transfer.as_mut().and_then(|t| t.leg.as_mut()))
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

    /// A request from `source` for the leg `call_id`; `None` if it matches none of
    /// its dialogs.
    pub(crate) fn handle_request(
        &mut self,
        now: Instant,
        call_id: &str,
        source: Peer,
        request: &Request,
    ) -> Option<Answer> {
        self.leg_mut(call_id)?.handle_request(now, source, request)
    }

    /// True if leg `call_id` takes in-dialog messages from `source`.
    pub(crate) fn accepts_from(&self, call_id: &str, source: Peer) -> bool {
        self.legs()
            .find(|l| l.call_id == call_id)
            .is_some_and(|l| l.accepts_from(source))
    }

    /// The ACK of our 2xx to a re-INVITE on leg `call_id`.
    pub(crate) fn handle_ack(&mut self, now: Instant, call_id: &str, source: Peer, ack: &Request) {
        if let Some(leg) = self.leg_mut(call_id) {
            leg.handle_ack(now, source, ack);
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
        if self.pending_decision().is_some_and(|at| at <= now) {
            tracing::warn!(sip_call_id = %self.id, correlation_id = %self.ctx.correlation_id, "no transfer decision in time: 408");
            self.refuse_transfer(now, 408);
        }
        self.collect(now);
    }

    /// When the call module's transfer decision is due, while one is awaited.
    fn pending_decision(&self) -> Option<Instant> {
        self.transfer
            .as_ref()
            .filter(|t| t.leg.is_none())
            .map(|t| t.decide_by)
    }

    /// The call module allows the transfer asked for: a new leg calls `uri` (To
    /// `to`) through the trunk of `ctx` (the route's, never the Refer-To host).
    /// Ignored unless a transfer waits for a decision.
    pub(crate) fn transfer_to(
        &mut self,
        now: Instant,
        ctx: Arc<CallContext>,
        uri: Uri,
        to: String,
    ) {
        let Some(t) = self.transfer.as_mut().filter(|t| t.leg.is_none()) else {
            tracing::debug!(sip_call_id = %self.id, correlation_id = %self.ctx.correlation_id, "no transfer waits for a decision: ignored");
            return;
        };
        let dest = ctx.target;
        tracing::info!(sip_call_id = %self.id, correlation_id = %self.ctx.correlation_id, refer_to = %t.target, trunk = %ctx.trunk.name, %dest, %uri, "transfer: calling through the route's trunk");
        let sdp = self.current.local_sdp().to_string();
        t.leg = Some(Leg::start(
            now,
            ctx,
            new_call_id(),
            uri,
            to,
            dest,
            sdp,
            t.referred_by.clone(),
        ));
        self.collect(now);
    }

    /// The call module refuses the transfer asked for: NOTIFY `status` (final) to the
    /// transferor; the call goes on. Ignored unless a transfer waits for a decision.
    pub(crate) fn refuse_transfer(&mut self, now: Instant, status: u16) {
        if self.pending_decision().is_none() {
            return;
        }
        let Some(t) = self.transfer.take() else {
            return;
        };
        let status = if (300..700).contains(&status) {
            status
        } else {
            603
        };
        tracing::info!(sip_call_id = %self.id, correlation_id = %self.ctx.correlation_id, refer_to = %t.target, status, "transfer refused");
        let line = format!("SIP/2.0 {status} {}", reason_phrase(status));
        self.current.notify_refer(now, &line, true);
        if t.old_gone {
            self.finish(SipCallEvent::RemoteHangup);
        }
        self.collect(now);
    }

    /// The call module hangs up (CANCEL or BYE on every live leg). Idempotent.
    pub(crate) fn hangup(&mut self, now: Instant) {
        if self.hung_up {
            return;
        }
        self.hung_up = true;
        if self.pending_decision().is_some() {
            self.transfer = None; // the BYE ends the REFER subscription too
        }
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
        self.legs().fold(self.pending_decision(), |at, l| {
            earliest(at, l.poll_timeout())
        })
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
            let transfer_events: Vec<LegEvent> =
                match self.transfer.as_mut().and_then(|t| t.leg.as_mut()) {
                    Some(leg) => std::iter::from_fn(|| leg.poll_event()).collect(),
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
            && self.transfer.as_ref().is_none_or(Transfer::is_done)
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

    /// The peer REFERred us (the leg answered 202): NOTIFY 100 and ask the call
    /// module, which answers with `transfer_to` or `refuse_transfer`.
    fn start_transfer(&mut self, now: Instant, target: String, referred_by: Option<String>) {
        if self.hung_up || self.transfer.is_some() {
            self.current.notify_refer(now, "SIP/2.0 603 Decline", true);
            return;
        }
        if Uri::try_from(target.as_str()).is_err() {
            self.current
                .notify_refer(now, "SIP/2.0 400 Bad Request", true);
            return;
        }
        self.current.notify_refer(now, "SIP/2.0 100 Trying", false);
        let user = refer_user(&target);
        tracing::info!(sip_call_id = %self.id, correlation_id = %self.ctx.correlation_id, %target, ?user, "transfer requested: asking the call module");
        self.transfer = Some(Transfer {
            target: target.clone(),
            referred_by,
            leg: None,
            decide_by: now + self.ctx.timers.timeout(),
            old_gone: false,
        });
        self.events
            .push_back(SipCallEvent::TransferRequested { target, user });
    }

    fn on_transfer_event(&mut self, now: Instant, event: LegEvent) {
        match event {
            LegEvent::Answered { sdp } => {
                let Some((target, leg)) =
                    self.transfer.take().and_then(|t| Some((t.target, t.leg?)))
                else {
                    return;
                };
                self.current.notify_refer(now, "SIP/2.0 200 OK", true);
                let mut old = std::mem::replace(&mut self.current, leg);
                old.hangup_at(now + TRANSFEROR_BYE_GRACE);
                self.retired.push(old);
                tracing::info!(sip_call_id = %self.id, correlation_id = %self.ctx.correlation_id, %target, new_call_id = %self.current.call_id, "transfer completed");
                self.events.push_back(SipCallEvent::Transferred { target });
                self.events.push_back(SipCallEvent::RemoteSdp { sdp });
            }
            LegEvent::Failed { status, reason } => {
                let Some(t) = self.transfer.take() else {
                    return;
                };
                tracing::info!(sip_call_id = %self.id, correlation_id = %self.ctx.correlation_id, status, %reason, "transfer failed");
                let line = format!("SIP/2.0 {status} {}", phrase(status, &reason));
                self.current.notify_refer(now, &line, true);
                self.retired.extend(t.leg);
                self.events
                    .push_back(SipCallEvent::TransferFailed { status, reason });
                if t.old_gone {
                    self.finish(SipCallEvent::RemoteHangup);
                }
            }
            // Hangup during the transfer: the new leg ended its CANCEL/BYE.
            LegEvent::Ended | LegEvent::RemoteBye | LegEvent::Lost { .. } => {
                if let Some(t) = self.transfer.take() {
                    self.retired.extend(t.leg);
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

/// The user part of a Refer-To URI, percent-decoded, without user parameters
/// (`sip:%2B15551234567;npdi@host` → `+15551234567`); `None` without one.
pub(crate) fn refer_user(uri: &str) -> Option<String> {
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))?;
    let (user, _) = rest.split_once('@')?;
    let user = user.split([';', ':']).next().unwrap_or_default();
    let mut bytes = Vec::with_capacity(user.len());
    let mut chars = user.bytes();
    while let Some(b) = chars.next() {
        if b == b'%' {
            let hex = [chars.next()?, chars.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    let user = String::from_utf8(bytes).ok()?;
    (!user.is_empty() && !user.chars().any(char::is_control)).then_some(user)
}
