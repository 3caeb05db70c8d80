//! What the leg sends in a confirmed dialog: our re-INVITEs (hold/unhold, one at a
//! time, 491 glare retry per RFC 3261 §14.1), session refreshes (RFC 4028: UPDATE
//! when the peer allows it, else re-INVITE; BYE on expiry), DTMF as INFO, and the
//! NOTIFYs of a REFER subscription (RFC 3515); plus what their outcomes mean.

use std::time::{Duration, Instant};

use rsip::{Header, Request};

use super::client::{Outcome, Purpose};
use super::session_timer::{self, Refresher, SessionTimer};
use super::{Leg, LegEvent, Phase};
use crate::sip::message::body_text;
use crate::sip::message::build::{self, new_branch, request_bytes};
use crate::sip::transaction::earliest;

impl Leg {
    /// The call module asks for a re-INVITE with `sdp` (hold/unhold).
    pub(crate) fn reinvite(&mut self, now: Instant, sdp: String) {
        if self.phase != Phase::Confirmed {
            self.events.push_back(LegEvent::ReinviteResult {
                ok: false,
                status: 0,
                sdp: None,
            });
            return;
        }
        self.queued_reinvites.push_back(sdp);
        self.kick_reinvites(now);
        self.drain_transactions();
    }

    /// True while an INVITE transaction (ours or the peer's) is unfinished.
    fn invite_in_progress(&self) -> bool {
        self.remote_invite_pending
            || self.glare_retry.is_some()
            || self.clients.iter().any(|e| e.is_pending_invite())
    }

    /// Sends the next queued re-INVITE when no INVITE transaction is in progress.
    pub(super) fn kick_reinvites(&mut self, now: Instant) {
        if self.phase != Phase::Confirmed || self.invite_in_progress() {
            return;
        }
        if let Some(sdp) = self.queued_reinvites.pop_front() {
            self.send_reinvite(now, Purpose::Reinvite { sdp, user: true });
        }
    }

    /// Session timer headers for a request we send, when a timer runs.
    fn refresh_headers(&self) -> Vec<Header> {
        let Some(timer) = &self.session else {
            return Vec::new();
        };
        let mut headers = vec![Header::Supported("timer".into())];
        let interval = u32::try_from(timer.interval.as_secs()).unwrap_or(u32::MAX);
        headers.extend(session_timer::request_headers(
            interval,
            self.ctx.trunk.session_timer.min_se.min(interval),
            timer.refresher == Refresher::Local,
        ));
        headers
    }

    fn send_reinvite(&mut self, now: Instant, purpose: Purpose) {
        let Purpose::Reinvite { sdp, .. } = &purpose else {
            return;
        };
        let body = ("application/sdp", sdp.clone().into_bytes());
        let extra = self.refresh_headers();
        if !self.send_in_dialog(now, None, purpose.clone(), extra, Some(body)) {
            self.events.push_back(LegEvent::ReinviteResult {
                ok: false,
                status: 0,
                sdp: None,
            });
        }
    }

    /// Sends a session refresh (UPDATE if the peer allows it, else re-INVITE).
    fn send_refresh(&mut self, now: Instant) {
        if let Some(timer) = self.session.as_mut() {
            timer.refreshing = true;
        }
        tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, update = self.peer_allows_update, "session refresh");
        if self.peer_allows_update {
            let extra = self.refresh_headers();
            self.send_in_dialog(now, None, Purpose::RefreshUpdate, extra, None);
        } else {
            let sdp = self.local_sdp.clone();
            self.send_reinvite(now, Purpose::Reinvite { sdp, user: false });
        }
    }

    /// The call module sends a DTMF digit as INFO (`application/dtmf-relay`).
    pub(crate) fn send_dtmf_info(&mut self, now: Instant, digit: char, duration_ms: u32) {
        if self.phase != Phase::Confirmed {
            return;
        }
        self.queued_infos.push_back((digit, duration_ms));
        self.kick_infos(now);
        self.drain_transactions();
    }

    /// Sends the next queued INFO when none is in flight (keeps digits in order).
    fn kick_infos(&mut self, now: Instant) {
        if self.clients.iter().any(|e| e.is_pending(&Purpose::Info)) {
            return;
        }
        if let Some((digit, duration)) = self.queued_infos.pop_front() {
            let body = format!("Signal={digit}\r\nDuration={duration}\r\n");
            self.send_in_dialog(
                now,
                None,
                Purpose::Info,
                Vec::new(),
                Some(("application/dtmf-relay", body.into_bytes())),
            );
        }
    }

    /// A NOTIFY of the REFER subscription with `status_line` (message/sipfrag);
    /// `last` terminates the subscription.
    pub(crate) fn notify_refer(&mut self, now: Instant, status_line: &str, last: bool) {
        let Some(id) = self.refer_subscription else {
            return;
        };
        if !matches!(self.phase, Phase::Confirmed) {
            return;
        }
        let state = if last {
            self.refer_subscription = None;
            "terminated;reason=noresource".to_string()
        } else {
            "active;expires=60".to_string()
        };
        let extra = vec![
            Header::Event(format!("refer;id={id}").into()),
            Header::SubscriptionState(state.into()),
        ];
        let body = format!("{status_line}\r\n").into_bytes();
        self.send_in_dialog(
            now,
            None,
            Purpose::Notify,
            extra,
            Some(("message/sipfrag;version=2.0", body)),
        );
        self.drain_transactions();
    }

    /// What an in-dialog request's outcome means.
    pub(super) fn on_outcome(
        &mut self,
        now: Instant,
        request: &Request,
        purpose: Purpose,
        outcome: Outcome,
    ) {
        let (status, response) = match &outcome {
            Outcome::Final(r) => (r.status_code.code(), Some(r)),
            Outcome::Timeout => (408, None),
            Outcome::TransportError(e) => {
                tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, method = %request.method, "transport error: {e}");
                (503, None)
            }
        };
        match purpose {
            Purpose::Bye => self.finish(LegEvent::Ended),
            Purpose::Prack | Purpose::Notify => {
                tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, method = %request.method, status, "answered");
            }
            Purpose::Info => {
                if matches!(status, 408 | 481) {
                    self.dialog_failed(now, status, format!("INFO answered {status}"));
                }
                self.kick_infos(now);
            }
            Purpose::RefreshUpdate => {
                if let Some(timer) = self.session.as_mut() {
                    timer.refreshing = false;
                }
                match response {
                    Some(r) if status < 300 => {
                        self.session = SessionTimer::from_uac_response(now, r);
                    }
                    Some(r) if status == 422 => self.raise_interval(now, r),
                    _ if matches!(status, 408 | 481) => self.dialog_failed(
                        now,
                        status,
                        format!("session refresh answered {status}"),
                    ),
                    _ => {
                        // The peer does not like UPDATE after all: refresh with re-INVITE.
                        self.peer_allows_update = false;
                        self.send_refresh(now);
                    }
                }
            }
            Purpose::Reinvite { sdp, user } => {
                self.on_reinvite_outcome(now, request, sdp, user, status, response.cloned());
                self.kick_reinvites(now);
            }
        }
    }

    fn on_reinvite_outcome(
        &mut self,
        now: Instant,
        request: &Request,
        sdp: String,
        user: bool,
        status: u16,
        response: Option<rsip::Response>,
    ) {
        if let Some(timer) = self.session.as_mut() {
            timer.refreshing = false;
        }
        let report = |leg: &mut Leg, ok: bool, sdp: Option<String>| {
            if user {
                leg.events
                    .push_back(LegEvent::ReinviteResult { ok, status, sdp });
            }
        };
        match response {
            Some(r) if status < 300 => {
                self.ack_reinvite(request);
                let answer = body_text(&r.body);
                self.local_sdp = sdp;
                if !user
                    && answer != self.remote_sdp
                    && let Some(s) = answer.clone()
                {
                    self.events.push_back(LegEvent::RemoteSdp { sdp: s });
                }
                if answer.is_some() {
                    self.remote_sdp = answer.clone();
                }
                if self.session.is_some() || !user {
                    self.session = SessionTimer::from_uac_response(now, &r);
                }
                report(self, true, answer);
            }
            Some(r) if status == 491 => {
                // Glare: we own the Call-ID, so wait 2.1-4 s (RFC 3261 §14.1).
                let wait = Duration::from_millis(2100 + u64::from(rand::random::<u16>() % 1900));
                self.glare_retry = Some((now + wait, Purpose::Reinvite { sdp, user }));
                tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, ?wait, "re-INVITE glare (491): retrying");
                let _ = r;
            }
            Some(r) if status == 422 && !user => self.raise_interval(now, &r),
            _ if matches!(status, 408 | 481) => {
                report(self, false, None);
                self.dialog_failed(now, status, format!("re-INVITE answered {status}"));
            }
            _ => report(self, false, None),
        }
    }

    /// 422 to a refresh: ask again with the peer's Min-SE.
    fn raise_interval(&mut self, now: Instant, response: &rsip::Response) {
        if let (Some(min), Some(timer)) = (session_timer::min_se(response), self.session.as_mut())
            && u64::from(min) > timer.interval.as_secs()
        {
            timer.interval = Duration::from_secs(u64::from(min));
            self.se_interval = min;
            self.send_refresh(now);
        }
    }

    /// ACKs the 2xx of our re-INVITE (CSeq of the re-INVITE, own branch).
    fn ack_reinvite(&mut self, request: &Request) {
        let Some(seq) = crate::sip::message::cseq(request).map(|(s, _)| s) else {
            return;
        };
        let credentials: Vec<Header> = request
            .headers
            .iter()
            .filter(|h| matches!(h, Header::Authorization(_) | Header::ProxyAuthorization(_)))
            .cloned()
            .collect();
        let Some(dialog) = self.dialog.as_ref() else {
            return;
        };
        let dest = self.in_dialog_dest(dialog);
        match dialog.ack_for(seq, build::via(self.ctx.local, &new_branch()), credentials) {
            Ok(ack) => {
                let bytes = request_bytes(&ack);
                self.send(dest, bytes.clone());
                self.reinvite_acks.push_back((seq, dest, bytes));
                while self.reinvite_acks.len() > 4 {
                    self.reinvite_acks.pop_front();
                }
            }
            Err(e) => {
                tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "cannot ACK re-INVITE: {e}")
            }
        }
    }

    /// Hangs up at `at` unless the peer ends the dialog first (the transferor's
    /// dialog after a transfer, RFC 5589 §6.1: the transferor normally sends BYE).
    pub(crate) fn hangup_at(&mut self, at: Instant) {
        self.bye_at = Some(at);
    }

    /// Session timer, glare retry and delayed BYE deadlines.
    pub(super) fn midcall_timeout(&mut self, now: Instant) {
        if self.phase != Phase::Confirmed {
            return;
        }
        if self.bye_at.is_some_and(|at| now >= at) {
            self.bye_at = None;
            self.hangup(now);
            return;
        }
        if let Some((at, _)) = &self.glare_retry
            && now >= *at
            && let Some((_, purpose)) = self.glare_retry.take()
        {
            self.send_reinvite(now, purpose);
        }
        let Some(timer) = self.session else {
            return;
        };
        if now >= timer.expires_at() {
            tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "session timer expired without refresh: BYE");
            self.send_bye(now);
            self.finish(LegEvent::Lost {
                status: 408,
                reason: "session timer expired".into(),
            });
            return;
        }
        if timer.refresh_at().is_some_and(|at| now >= at) {
            if self.invite_in_progress() {
                // The INVITE in progress refreshes the session when it succeeds.
                if let Some(t) = self.session.as_mut() {
                    t.refreshing = true;
                }
            } else {
                self.send_refresh(now);
            }
        }
    }

    /// The next session timer or glare deadline.
    pub(super) fn midcall_poll_timeout(&self) -> Option<Instant> {
        if self.phase != Phase::Confirmed {
            return None;
        }
        let at = earliest(
            self.glare_retry.as_ref().map(|(at, _)| *at),
            self.session.as_ref().map(SessionTimer::poll_timeout),
        );
        earliest(at, self.bye_at)
    }
}
