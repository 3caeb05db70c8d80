//! Requests the peer sends in the leg's dialog and how we answer them: BYE, re-INVITE
//! and UPDATE (offers answered through the call module's answerer, session timer
//! refreshes, glare), REFER (603, or 202 then NOTIFYs), INFO, OPTIONS. Requests
//! from an address that is not the dialog's peer get 403. The server transactions
//! themselves live in the user agent core.

use std::time::Instant;

use rsip::{Header, Method, Request, Uri};

use super::session_timer::SessionTimer;
use super::{Leg, LegEvent, Phase};
use crate::sip::message::build::ALLOW;
use crate::sip::message::{
    addr_uri, body_text, cseq, from_tag, header_first, header_values, lists_token,
};
use crate::sip::transport::Peer;

/// Our answer to a request: status, extra headers and an optional body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Status code.
    pub code: u16,
    /// Extra headers.
    pub headers: Vec<Header>,
    /// `(content type, bytes)`.
    pub body: Option<(String, Vec<u8>)>,
}

impl Answer {
    /// A bodiless answer.
    pub(crate) fn code(code: u16) -> Answer {
        Answer {
            code,
            headers: Vec::new(),
            body: None,
        }
    }

    fn with(code: u16, headers: Vec<Header>) -> Answer {
        Answer {
            code,
            headers,
            body: None,
        }
    }
}

impl Leg {
    /// True if `request` belongs to this leg's confirmed dialog.
    pub(crate) fn dialog_matches(&self, request: &Request) -> bool {
        self.dialog.as_ref().is_some_and(|d| d.matches(request))
    }

    /// Answers a request of the peer (from `source`) in this leg's dialog; `None` if
    /// it is not in it. A request from an address that is not the peer's is refused
    /// with 403 and changes nothing (see [`Leg::accepts_from`]).
    pub(crate) fn handle_request(
        &mut self,
        now: Instant,
        source: Peer,
        request: &Request,
    ) -> Option<Answer> {
        if !self.dialog_matches(request) {
            return self.handle_early_request(source, request);
        }
        if !self.accepts_from(source) {
            return Some(self.refuse_source(source, request));
        }
        let dialog = self.dialog.as_mut()?;
        if dialog.check_remote_cseq(request).is_err() {
            return Some(Answer::code(500));
        }
        let answer = match request.method {
            Method::Bye => self.on_bye(),
            _ if !matches!(self.phase, Phase::Confirmed | Phase::Terminating) => Answer::code(481),
            Method::Invite => self.on_reinvite(now, request),
            Method::Update => self.on_update(now, request),
            Method::Refer => self.on_refer(request),
            Method::Info | Method::Options => {
                tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, method = %request.method, "answered 200");
                Answer::with(200, vec![Header::Allow(ALLOW.into())])
            }
            // We never send reliable provisionals, nor subscribe.
            Method::PRack | Method::Notify => Answer::code(481),
            _ => Answer::with(405, vec![Header::Allow(ALLOW.into())]),
        };
        self.drain_transactions();
        Some(answer)
    }

    /// A request in one of our early dialogs, before the 2xx: UPDATE (RFC 3311 §5.1:
    /// a new offer once a reliable provisional settled the first one), INFO and
    /// OPTIONS. `None` if it matches none of them.
    fn handle_early_request(&mut self, source: Peer, request: &Request) -> Option<Answer> {
        if self.phase != Phase::Early || !self.early.iter().any(|(_, e)| e.dialog.matches(request))
        {
            return None;
        }
        if !self.accepts_from(source) {
            return Some(self.refuse_source(source, request));
        }
        let early = self
            .early
            .iter_mut()
            .map(|(_, e)| e)
            .find(|e| e.dialog.matches(request))?;
        if early.dialog.check_remote_cseq(request).is_err() {
            return Some(Answer::code(500));
        }
        let answer = match request.method {
            Method::Update => {
                early.dialog.refresh_target(request);
                let settled = early.session.is_some();
                self.on_early_update(request, settled)
            }
            Method::Info | Method::Options => Answer::with(200, vec![Header::Allow(ALLOW.into())]),
            // The callee must not BYE an early dialog (RFC 3261 §15); re-INVITE, REFER
            // and the rest need a confirmed one.
            Method::Bye | Method::Invite | Method::Refer | Method::PRack | Method::Notify => {
                Answer::code(481)
            }
            _ => Answer::with(405, vec![Header::Allow(ALLOW.into())]),
        };
        tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, method = %request.method, code = answer.code, "early-dialog request answered");
        Some(answer)
    }

    /// UPDATE in an early dialog: `settled` when a reliable provisional carried the
    /// answer to our INVITE's offer, which an offer in UPDATE needs (else 491, RFC
    /// 3311 §5.2: our offer is still outstanding).
    fn on_early_update(&mut self, request: &Request, settled: bool) -> Answer {
        let headers = self.ok_headers();
        let Some(offer) = body_text(&request.body) else {
            return Answer::with(200, headers);
        };
        if !settled {
            return Answer::with(491, Vec::new());
        }
        match self.accept_offer(offer.clone()) {
            Ok(answer) => {
                tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "early UPDATE offer answered 200");
                let tag = from_tag(request).unwrap_or_default();
                if let Some((_, early)) = self.early.iter_mut().find(|(t, _)| *t == tag) {
                    early.session = Some(offer);
                }
                with_sdp(headers, answer)
            }
            Err(refusal) => refusal,
        }
    }

    /// 403 to an in-dialog request from an address that is not the peer's (a
    /// stranger who learned the Call-ID and tags): logged, nothing else changes.
    fn refuse_source(&self, source: Peer, request: &Request) -> Answer {
        tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, method = %request.method, %source, "in-dialog request from an address that is not the dialog's peer or the trunk's: 403");
        Answer::with(
            403,
            vec![Header::Other(
                "Warning".into(),
                "399 callbridge \"request not from this dialog's peer\"".into(),
            )],
        )
    }

    fn on_bye(&mut self) -> Answer {
        match self.phase {
            Phase::Confirmed => {
                self.finish(LegEvent::RemoteBye);
                Answer::code(200)
            }
            // Our own BYE is in flight: answer, and end when ours is answered.
            Phase::Terminating => Answer::code(200),
            _ => Answer::code(481),
        }
    }

    /// Headers of our 2xx to a re-INVITE or UPDATE.
    fn ok_headers(&self) -> Vec<Header> {
        vec![
            Header::Contact(self.ctx.contact().into()),
            Header::Allow(ALLOW.into()),
            Header::Supported("timer".into()),
        ]
    }

    /// Session timer of a refresh request: our 2xx headers, or a 422 answer.
    fn session_from_request(
        &mut self,
        now: Instant,
        request: &Request,
    ) -> Result<Vec<Header>, Answer> {
        match SessionTimer::from_uas_request(now, request, self.ctx.trunk.session_timer.min_se) {
            Ok(Some((timer, headers))) => {
                self.session = Some(timer);
                Ok(headers)
            }
            Ok(None) => {
                self.session = None;
                Ok(Vec::new())
            }
            Err(min) => Err(Answer::with(
                422,
                vec![Header::Other("Min-SE".into(), min.to_string())],
            )),
        }
    }

    /// Answers the peer's SDP offer through the call module and makes offer and
    /// answer the session (the call told when the peer's SDP changed); 488 if the
    /// call module refuses.
    fn accept_offer(&mut self, offer: String) -> Result<String, Answer> {
        match self.ctx.answer(&offer) {
            Ok(answer) => {
                self.remote_offer(offer);
                self.local_sdp = answer.clone();
                Ok(answer)
            }
            Err(why) => {
                tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, %why, "offer refused: 488");
                Err(Answer::code(488))
            }
        }
    }

    /// A new offer from the peer: remember it and tell the call when it changed.
    fn remote_offer(&mut self, sdp: String) {
        if self.remote_sdp.as_deref() != Some(sdp.as_str()) {
            self.events
                .push_back(LegEvent::RemoteSdp { sdp: sdp.clone() });
        }
        self.remote_sdp = Some(sdp);
    }

    fn on_reinvite(&mut self, now: Instant, request: &Request) -> Answer {
        if self.phase != Phase::Confirmed {
            return Answer::code(481);
        }
        if self.clients.iter().any(|e| e.is_pending_invite()) {
            return Answer::code(491); // glare (RFC 3261 §14.2)
        }
        if self.remote_invite_pending {
            return Answer::with(500, vec![Header::RetryAfter("1".into())]);
        }
        let mut headers = match self.session_from_request(now, request) {
            Ok(h) => h,
            Err(answer) => return answer,
        };
        let body = match body_text(&request.body) {
            Some(offer) => match self.accept_offer(offer) {
                Ok(answer) => answer,
                Err(refusal) => return refusal,
            },
            // Offerless re-INVITE: our SDP is the offer, the answer comes in the ACK.
            None => self.local_sdp.clone(),
        };
        if let Some(dialog) = self.dialog.as_mut() {
            dialog.refresh_target(request);
        }
        self.remote_invite_pending = true;
        headers.extend(self.ok_headers());
        tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "re-INVITE answered 200");
        with_sdp(headers, body)
    }

    fn on_update(&mut self, now: Instant, request: &Request) -> Answer {
        let mut headers = match self.session_from_request(now, request) {
            Ok(h) => h,
            Err(answer) => return answer,
        };
        headers.extend(self.ok_headers());
        if let Some(dialog) = self.dialog.as_mut() {
            dialog.refresh_target(request);
        }
        match body_text(&request.body) {
            Some(offer) => {
                if self.clients.iter().any(|e| e.is_pending_invite()) {
                    return Answer::code(491);
                }
                match self.accept_offer(offer) {
                    Ok(answer) => with_sdp(headers, answer),
                    Err(refusal) => refusal,
                }
            }
            None => Answer::with(200, headers),
        }
    }

    /// REFER (RFC 3515): exactly one Refer-To (else 400); declined with 603 unless
    /// the leg takes transfers, else 202 and `ReferRequested` for the call.
    ///
    /// 603 rather than 403: RFC 3515 §2.4.2 lets a UA whose (here: configured)
    /// approval is denied decline the REFER, and 603 Decline says exactly that
    /// ("the request is understood, and will not be carried out"); 403 is kept for
    /// requests that come from someone who may not send them at all (a stranger's
    /// address). Either way only the REFER transaction fails (RFC 5057): the call
    /// goes on.
    fn on_refer(&mut self, request: &Request) -> Answer {
        if self.phase != Phase::Confirmed {
            return Answer::code(481);
        }
        if self.refer_subscription.is_some() {
            return Answer::code(491);
        }
        let refer_tos = header_values(&request.headers, "Refer-To");
        let [refer_to] = refer_tos.as_slice() else {
            return Answer::code(400);
        };
        let refer_to = refer_to.clone();
        if !self.refer_allowed {
            tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, trunk = %self.ctx.trunk.name, refer_to = %refer_to.chars().filter(|c| !c.is_control()).take(128).collect::<String>(), "REFER declined: transfers are off for this call (trunk refer = \"reject\", or an inbound call)");
            return Answer::with(
                603,
                vec![Header::Other(
                    "Warning".into(),
                    "399 callbridge \"call transfer (REFER) is not allowed on this trunk\"".into(),
                )],
            );
        }
        let uri = addr_uri(&refer_to);
        let uri = uri.split('?').next().unwrap_or(uri).to_string();
        if !uri.starts_with("sip:") || Uri::try_from(uri.as_str()).is_err() {
            tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, refer_to = %refer_to, "REFER target refused");
            return Answer::code(400);
        }
        if lists_token(&request.headers, "Require", "norefersub") {
            return Answer::with(420, vec![Header::Unsupported("norefersub".into())]);
        }
        self.refer_subscription = cseq(request).map(|(s, _)| s);
        tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, target = %uri, "REFER accepted");
        self.events.push_back(LegEvent::ReferRequested {
            target: uri,
            referred_by: header_first(&request.headers, "Referred-By"),
        });
        Answer::code(202)
    }

    /// The ACK of our 2xx to the peer's re-INVITE (it may carry their answer); one
    /// from an address that is not the peer's is ignored.
    pub(crate) fn handle_ack(&mut self, _now: Instant, source: Peer, ack: &Request) {
        if !self.dialog_matches(ack) || !self.accepts_from(source) {
            return;
        }
        self.remote_invite_pending = false;
        if let Some(answer) = body_text(&ack.body) {
            self.remote_offer(answer);
        }
    }

    /// Our 2xx to the peer's re-INVITE was never ACKed (Timer H): the dialog is
    /// unusable (RFC 3261 §13.3.1.4): BYE.
    pub(crate) fn on_no_ack(&mut self, now: Instant) {
        self.remote_invite_pending = false;
        tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "no ACK for our 2xx to a re-INVITE");
        self.dialog_failed(now, 408, "no ACK for 2xx to re-INVITE".into());
        self.drain_transactions();
    }

    /// After the ACK (or its timeout), queued re-INVITEs may go.
    pub(crate) fn after_remote_invite(&mut self, now: Instant) {
        self.kick_reinvites(now);
        self.drain_transactions();
    }
}

/// A 200 with `headers` and `sdp` as its body.
fn with_sdp(headers: Vec<Header>, sdp: String) -> Answer {
    Answer {
        code: 200,
        headers,
        body: Some(("application/sdp".into(), sdp.into_bytes())),
    }
}
