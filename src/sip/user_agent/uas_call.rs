//! One inbound call (we are the UAS), sans-IO. The INVITE server transaction lives
//! in the core's table (it matches retransmissions, the CANCEL and the ACKs); this
//! decides what it answers, and hands the dialog to a [`Leg`] once answered.
//!
//! ```text
//!  Ringing --answer: 200--> Accepted --ACK--> Confirmed (the leg: BYE, re-INVITE, ...)
//!    | ringing/progress: 180/183   |  Timer H (no ACK): BYE, Failed 408
//!    | reject/redirect/hangup: 3xx-6xx, Terminated      hangup: BYE once ACKed
//!    | CANCEL: 487, Cancelled
//!    + MAX_RINGING: 480, Failed
//! ```

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsip::{Header, Request, Response, Uri};

use super::Transmit;
use super::context::CallContext;
use super::leg::session_timer::SessionTimer;
use super::leg::{Answer, Leg, LegEvent, UasStart};
use super::servers::ServerKey;
use crate::sip::dialog::Dialog;
use crate::sip::message::build::{self, ALLOW};
use crate::sip::message::{body_text, cseq};
use crate::sip::transaction::earliest;
use crate::sip::transport::Peer;
use crate::sip::{InboundSipEvent, SdpAnswerer};

/// How long an inbound call may ring before we give up with 480 ourselves (the call
/// module's ring timeout is normally much shorter).
pub(crate) const MAX_RINGING: Duration = Duration::from_secs(300);

/// What the call module asks of an inbound call before the answer.
#[derive(Clone)]
pub(crate) enum InboundAction {
    /// 180 Ringing.
    Ringing,
    /// 183 Session Progress with early-media SDP.
    Progress(String),
    /// 200 OK with our SDP; `answerer` handles later offers.
    Answer(String, SdpAnswerer),
    /// A 3xx-6xx final response with an optional reason phrase.
    Reject(u16, String),
    /// 302 with this Contact URI.
    Redirect(String),
}

impl std::fmt::Debug for InboundAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ringing => f.write_str("Ringing"),
            Self::Progress(_) => f.write_str("Progress"),
            Self::Answer(..) => f.write_str("Answer"),
            Self::Reject(code, _) => write!(f, "Reject({code})"),
            Self::Redirect(uri) => write!(f, "Redirect({uri})"),
        }
    }
}

/// Where the call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// No final response yet; give up at `deadline`.
    Ringing {
        /// [`MAX_RINGING`] after the INVITE.
        deadline: Instant,
    },
    /// 200 sent, waiting for the ACK.
    Accepted,
    /// ACKed: the leg runs the dialog.
    Confirmed,
    /// A final response other than 2xx went out (or the transport failed).
    Over,
}

/// An inbound call.
#[derive(Debug)]
pub(crate) struct UasCall {
    /// SIP Call-ID of the INVITE.
    pub call_id: String,
    /// Key of the INVITE server transaction.
    pub server_key: ServerKey,
    /// Settings (the answerer is set by `answer`).
    ctx: CallContext,
    /// The INVITE.
    invite: Request,
    /// Where the INVITE came from (responses are stamped for it).
    source: Peer,
    /// Our To tag.
    local_tag: String,
    /// Where the call stands.
    stage: Stage,
    /// The dialog, once answered.
    leg: Option<Leg>,
    /// The call module hung up (final event: `Terminated`).
    hung_up: bool,
    /// The final event was reported.
    done: bool,
    /// Responses for the INVITE server transaction, with when they were made.
    responses: VecDeque<(Instant, Response)>,
    /// Events for the call module.
    events: VecDeque<InboundSipEvent>,
}

impl UasCall {
    /// A ringing call for `invite` from `source`, answered through `server_key`.
    pub(crate) fn new(
        now: Instant,
        ctx: CallContext,
        invite: Request,
        source: Peer,
        local_tag: String,
        server_key: ServerKey,
    ) -> Self {
        Self {
            call_id: crate::sip::message::call_id(&invite).unwrap_or_default(),
            server_key,
            ctx,
            invite,
            source,
            local_tag,
            stage: Stage::Ringing {
                deadline: now + MAX_RINGING,
            },
            leg: None,
            hung_up: false,
            done: false,
            responses: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The correlation id.
    pub(crate) fn correlation_id(&self) -> &str {
        &self.ctx.correlation_id
    }

    /// True until a final response was decided.
    pub(crate) fn is_ringing(&self) -> bool {
        matches!(self.stage, Stage::Ringing { .. })
    }

    /// The INVITE and where it came from (to forward it).
    pub(crate) fn invite(&self) -> (&Request, Peer) {
        (&self.invite, self.source)
    }

    /// Who sent the INVITE, as we vouch for it when forwarding it to another
    /// instance: the admitted trunk address, and whether its digest was checked.
    pub(crate) fn origin(&self) -> super::forwarded::Origin {
        super::forwarded::Origin {
            source: self.ctx.target,
            // Admitted from an `inbound_auth` trunk: its digest was checked here (or
            // vouched for by the instance that forwarded it to us).
            digest_checked: self.ctx.trunk.inbound_auth,
        }
    }

    /// The call module answers (before the final response).
    pub(crate) fn respond(&mut self, now: Instant, action: InboundAction) {
        if !self.is_ringing() {
            tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, ?action, "already answered: ignored");
            return;
        }
        match action {
            InboundAction::Ringing => self.provisional(now, 180, None),
            InboundAction::Progress(sdp) => self.provisional(now, 183, Some(sdp)),
            InboundAction::Answer(sdp, answerer) => self.answer(now, sdp, answerer),
            InboundAction::Reject(code, reason) => self.reject(now, code, &reason),
            InboundAction::Redirect(contact) => {
                let headers = vec![Header::Contact(format!("<{contact}>").into())];
                self.push(now, 302, "", headers, None);
                self.stage = Stage::Over;
                self.finish(InboundSipEvent::Terminated);
            }
        }
    }

    /// Contact, Allow, Supported and Record-Route of responses that set up the dialog.
    fn dialog_headers(&self) -> Vec<Header> {
        let mut headers: Vec<Header> = self
            .invite
            .headers
            .iter()
            .filter(|h| matches!(h, Header::RecordRoute(_)))
            .cloned()
            .collect();
        headers.push(Header::Contact(self.ctx.contact().into()));
        headers.push(Header::Allow(ALLOW.into()));
        headers.push(Header::Supported("timer".into()));
        headers
    }

    /// Queues a response to the INVITE (`reason`: our phrase, empty for the standard
    /// one).
    fn push(
        &mut self,
        now: Instant,
        code: u16,
        reason: &str,
        mut headers: Vec<Header>,
        sdp: Option<String>,
    ) {
        headers.push(Header::Other("Server".into(), self.ctx.user_agent.clone()));
        headers.push(Header::Other(
            "X-Correlation-ID".into(),
            self.ctx.correlation_id.clone(),
        ));
        let body = sdp.map(|s| ("application/sdp".to_string(), s.into_bytes()));
        let mut response = build::response_with_body(
            &self.invite,
            code,
            Some(&self.local_tag),
            self.source.addr,
            headers,
            body,
        );
        let phrase: String = reason
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        if !phrase.trim().is_empty() {
            response.status_code = rsip::StatusCode::Other(code, phrase.trim().to_string());
        }
        tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, code, "answering INVITE");
        self.responses.push_back((now, response));
    }

    fn provisional(&mut self, now: Instant, code: u16, sdp: Option<String>) {
        let headers = self.dialog_headers();
        self.push(now, code, "", headers, sdp);
    }

    fn answer(&mut self, now: Instant, sdp: String, answerer: SdpAnswerer) {
        let dialog = match Dialog::from_uas_invite(&self.invite, &self.local_tag) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "cannot answer: {e}");
                self.push(now, 500, "", Vec::new(), None);
                self.stage = Stage::Over;
                self.finish(InboundSipEvent::Failed {
                    status: 500,
                    reason: e.to_string(),
                });
                return;
            }
        };
        let mut headers = self.dialog_headers();
        let min_se = self.ctx.trunk.session_timer.min_se;
        let session = match SessionTimer::from_uas_request(now, &self.invite, min_se) {
            Ok(Some((timer, session_headers))) => {
                headers.extend(session_headers);
                Some(timer)
            }
            _ => None,
        };
        self.push(now, 200, "", headers, Some(sdp.clone()));
        let ctx = Arc::new(CallContext {
            answerer,
            ..self.ctx.clone()
        });
        let start = UasStart {
            invite: self.invite.clone(),
            target: self.ctx.target,
            dialog,
            local_sdp: sdp,
            remote_sdp: body_text(&self.invite.body),
            session,
        };
        self.leg = Some(Leg::from_uas(ctx, self.call_id.clone(), start));
        self.stage = Stage::Accepted;
    }

    fn reject(&mut self, now: Instant, code: u16, reason: &str) {
        let code = if (300..700).contains(&code) {
            code
        } else {
            500
        };
        self.push(now, code, reason, Vec::new(), None);
        self.stage = Stage::Over;
        self.finish(InboundSipEvent::Terminated);
    }

    /// The trunk CANCELled the INVITE: 487 while ringing.
    pub(crate) fn handle_cancel(&mut self, now: Instant) {
        if self.is_ringing() {
            tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "INVITE cancelled");
            self.push(now, 487, "", Vec::new(), None);
            self.stage = Stage::Over;
            self.finish(InboundSipEvent::Cancelled);
        }
    }

    /// The call module hangs up: 480 before the answer, BYE after (once ACKed).
    pub(crate) fn hangup(&mut self, now: Instant) {
        if self.hung_up {
            return;
        }
        match self.stage {
            Stage::Ringing { .. } => {
                self.hung_up = true;
                self.reject(now, 480, "");
            }
            Stage::Accepted => self.hung_up = true,
            Stage::Confirmed => {
                self.hung_up = true;
                if let Some(leg) = self.leg.as_mut() {
                    leg.hangup(now);
                }
            }
            Stage::Over => {}
        }
    }

    /// The call module's re-INVITE (queued until the ACK of our 200).
    pub(crate) fn reinvite(&mut self, now: Instant, sdp: String) {
        match self.leg.as_mut() {
            Some(leg) if !self.done => leg.reinvite(now, sdp),
            _ => self.events.push_back(InboundSipEvent::ReinviteResult {
                ok: false,
                status: 0,
                sdp: None,
            }),
        }
    }

    /// A DTMF digit as INFO.
    pub(crate) fn send_dtmf_info(&mut self, now: Instant, digit: char, duration_ms: u32) {
        if self.stage == Stage::Confirmed
            && let Some(leg) = self.leg.as_mut()
        {
            leg.send_dtmf_info(now, digit, duration_ms);
        }
    }

    /// A request from `source` in the dialog; `None` if it is not in it.
    pub(crate) fn handle_request(
        &mut self,
        now: Instant,
        source: Peer,
        request: &Request,
    ) -> Option<Answer> {
        self.leg.as_mut()?.handle_request(now, source, request)
    }

    /// True if in-dialog messages from `source` may be the trunk's (see
    /// `Leg::accepts_from`); before the answer, only the INVITE's source counts.
    pub(crate) fn accepts_from(&self, source: Peer) -> bool {
        match &self.leg {
            Some(leg) => leg.accepts_from(source),
            None => source.addr.ip() == self.source.addr.ip(),
        }
    }

    /// A response to one of the leg's requests.
    pub(crate) fn handle_response(&mut self, now: Instant, response: Response, reason: String) {
        if let Some(leg) = self.leg.as_mut() {
            leg.handle_response(now, response, reason);
        }
    }

    /// The ACK of our 200 (or of a 2xx to the peer's re-INVITE), from `source`.
    pub(crate) fn handle_ack(&mut self, now: Instant, source: Peer, ack: &Request) {
        let Some(leg) = self.leg.as_mut() else {
            return;
        };
        if !leg.accepts_from(source) {
            return;
        }
        leg.handle_ack(now, source, ack);
        leg.after_remote_invite(now);
        let initial = cseq(ack).map(|(s, _)| s) == cseq(&self.invite).map(|(s, _)| s);
        if self.stage == Stage::Accepted && initial {
            self.stage = Stage::Confirmed;
            tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "ACK received: call established");
            self.collect(now);
            if self.hung_up {
                if let Some(leg) = self.leg.as_mut() {
                    leg.hangup(now);
                }
            } else {
                self.events.push_back(InboundSipEvent::Acked);
            }
        }
    }

    /// Timer H: our 2xx (to the INVITE or a re-INVITE) was never ACKed.
    pub(crate) fn handle_no_ack(&mut self, now: Instant) {
        if let Some(leg) = self.leg.as_mut() {
            leg.on_no_ack(now);
        }
    }

    /// Sending to `dest` failed.
    pub(crate) fn handle_send_error(&mut self, now: Instant, dest: Peer, error: String) {
        if matches!(self.stage, Stage::Ringing { .. } | Stage::Accepted) && dest == self.source {
            tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "cannot answer the INVITE: {error}");
            self.stage = Stage::Over;
            self.leg = None;
            self.finish(InboundSipEvent::Failed {
                status: 503,
                reason: format!("transport error: {error}"),
            });
        } else if let Some(leg) = self.leg.as_mut() {
            leg.handle_send_error(now, dest, error);
        }
    }

    /// Fires due timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Stage::Ringing { deadline } = self.stage
            && now >= deadline
        {
            tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "not answered within {MAX_RINGING:?}: 480");
            self.push(now, 480, "", Vec::new(), None);
            self.stage = Stage::Over;
            self.finish(InboundSipEvent::Failed {
                status: 480,
                reason: "not answered in time".into(),
            });
        }
        if let Some(leg) = self.leg.as_mut()
            && leg.poll_timeout().is_some_and(|t| t <= now)
        {
            leg.handle_timeout(now);
        }
    }

    /// When `handle_timeout` must be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let ringing = match self.stage {
            Stage::Ringing { deadline } => Some(deadline),
            _ => None,
        };
        earliest(ringing, self.leg.as_ref().and_then(Leg::poll_timeout))
    }

    /// The next response for the INVITE server transaction.
    pub(crate) fn poll_response(&mut self) -> Option<(Instant, Response)> {
        self.responses.pop_front()
    }

    /// The next in-dialog message to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.leg.as_mut()?.poll_transmit()
    }

    /// The next event for the call module.
    pub(crate) fn poll_event(&mut self) -> Option<InboundSipEvent> {
        self.events.pop_front()
    }

    /// True once the final event was reported and the leg has no work left.
    pub(crate) fn is_finished(&self) -> bool {
        self.done && self.leg.as_ref().is_none_or(Leg::is_finished)
    }

    /// Reports the final event once (`Terminated` after a hangup).
    fn finish(&mut self, event: InboundSipEvent) {
        if self.done {
            return;
        }
        self.done = true;
        let event = if self.hung_up {
            InboundSipEvent::Terminated
        } else {
            event
        };
        tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, ?event, "inbound call ended");
        self.events.push_back(event);
    }

    /// Turns the leg's events into the call module's.
    pub(crate) fn collect(&mut self, now: Instant) {
        let Some(leg) = self.leg.as_mut() else {
            return;
        };
        let events: Vec<LegEvent> = std::iter::from_fn(|| leg.poll_event()).collect();
        for event in events {
            match event {
                LegEvent::RemoteBye => self.finish(InboundSipEvent::RemoteHangup),
                LegEvent::Ended => self.finish(InboundSipEvent::Terminated),
                LegEvent::Lost { status, reason } | LegEvent::Failed { status, reason } => {
                    self.finish(InboundSipEvent::Failed { status, reason })
                }
                LegEvent::RemoteSdp { sdp } if !self.hung_up && !self.done => {
                    self.events.push_back(InboundSipEvent::RemoteSdp { sdp })
                }
                LegEvent::ReinviteResult { ok, status, sdp } if !self.hung_up && !self.done => self
                    .events
                    .push_back(InboundSipEvent::ReinviteResult { ok, status, sdp }),
                // Transfers are for the calls we place; decline this one.
                LegEvent::ReferRequested { target, .. } => {
                    tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, %target, "REFER on an inbound call declined");
                    if let Some(leg) = self.leg.as_mut() {
                        leg.notify_refer(now, "SIP/2.0 603 Decline", true);
                    }
                }
                LegEvent::RemoteSdp { .. }
                | LegEvent::ReinviteResult { .. }
                | LegEvent::Provisional { .. }
                | LegEvent::Answered { .. } => {}
            }
        }
    }
}

/// Checks a redirect target before it goes into a Contact.
pub(crate) fn valid_contact(uri: &str) -> bool {
    (uri.starts_with("sip:") || uri.starts_with("sips:"))
        && !uri.chars().any(|c| c.is_control() || c == '<' || c == '>')
        && Uri::try_from(uri).is_ok()
}
