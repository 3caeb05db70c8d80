//! The INVITE of a leg: building it, its provisional responses (early dialogs and
//! PRACK, RFC 3262), the 2xx (dialog, ACK, session timer), challenges (resend with
//! credentials), 422 (resend with the peer's Min-SE), failures and CANCEL.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rsip::{Header, Method, Request, Response, Uri};

use super::client::Purpose;
use super::session_timer::{self, SessionTimer};
use super::{EarlyDialog, Leg, LegEvent, Phase};
use crate::sip::dialog::Dialog;
use crate::sip::message::build::{self, InviteParts, new_branch, random_hex, request_bytes};
use crate::sip::message::{body_text, branch, cseq, header_first, lists_token, to_tag};
use crate::sip::transaction::{ClientEvent, InviteClient, NonInviteClient};
use crate::sip::transport::Peer;
use crate::sip::user_agent::context::CallContext;
use crate::sip::user_agent::fork::Fork;
use crate::sip::{ReferPolicy, RelPolicy};

/// Escapes a display name for a quoted string.
fn quoted(display: &str) -> String {
    let clean: String = display
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    format!("\"{}\"", clean.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Our address as the host of a URI (IPv6 in brackets), without the port.
fn local_ip(local: Peer) -> String {
    match local.addr {
        std::net::SocketAddr::V4(a) => a.ip().to_string(),
        std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

/// The caller's id as the trunk wants it: P-Asserted-Identity (RFC 3325) and/or
/// Remote-Party-ID (draft-ietf-sip-privacy-04, `privacy=full` when privacy is
/// asked), in the trunk's domain.
fn caller_id_headers(ctx: &CallContext) -> Vec<Header> {
    let Some(id) = &ctx.asserted_identity else {
        return Vec::new();
    };
    let uri = format!("<sip:{id}@{}>", ctx.domain);
    let wanted = ctx.trunk.caller_id_headers;
    let mut headers = Vec::new();
    if wanted.pai {
        headers.push(Header::Other("P-Asserted-Identity".into(), uri.clone()));
    }
    if wanted.rpid {
        let privacy = if ctx.privacy { "full" } else { "off" };
        headers.push(Header::Other(
            "Remote-Party-ID".into(),
            format!("{uri};party=calling;screen=yes;privacy={privacy}"),
        ));
    }
    headers
}

impl Leg {
    /// Builds the INVITE for `uri` (To `to`) and starts its transaction towards
    /// `target`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        now: Instant,
        ctx: Arc<CallContext>,
        call_id: String,
        uri: Uri,
        to: String,
        target: Peer,
        sdp: String,
        referred_by: Option<String>,
    ) -> Leg {
        let from = if ctx.privacy && !ctx.from_account {
            format!(
                "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag={}",
                random_hex(12)
            )
        } else {
            let display = ctx
                .from_display
                .as_deref()
                .map(|d| format!("{} ", quoted(d)))
                .unwrap_or_default();
            let domain = ctx
                .from_domain
                .clone()
                .unwrap_or_else(|| local_ip(ctx.local));
            format!(
                "{display}<sip:{}@{domain}>;tag={}",
                ctx.from_user,
                random_hex(12)
            )
        };
        let se_interval = ctx.trunk.session_timer.session_expires;
        let mut leg = Leg {
            call_id: call_id.clone(),
            target,
            invite: Request {
                method: Method::Invite,
                uri: uri.clone(),
                version: rsip::Version::V2,
                headers: Default::default(),
                body: Vec::new(),
            },
            invite_branch: String::new(),
            invite_tx: None,
            old_invites: Vec::new(),
            invite_rounds: 0,
            se_interval,
            cancel_tx: None,
            early: Vec::new(),
            auth: ctx.digest_client(),
            dialog: None,
            ack: None,
            reinvite_acks: VecDeque::new(),
            forks: Vec::new(),
            clients: Vec::new(),
            local_sdp: sdp.clone(),
            remote_sdp: None,
            peer_allows_update: false,
            session: None,
            queued_reinvites: VecDeque::new(),
            glare_retry: None,
            remote_invite_pending: false,
            queued_infos: VecDeque::new(),
            refer_subscription: None,
            refer_allowed: ctx.trunk.refer == ReferPolicy::Dialplan,
            bye_at: None,
            last_reason: String::new(),
            hung_up: false,
            phase: Phase::Calling,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            ctx: ctx.clone(),
        };
        let mut extra = leg.invite_extensions();
        extra.extend(caller_id_headers(&ctx));
        if ctx.privacy {
            extra.push(Header::Other("Privacy".into(), "id".into()));
        }
        if let Some(by) = referred_by {
            extra.push(Header::Other("Referred-By".into(), by));
        }
        let invite = build::invite(InviteParts {
            uri,
            from,
            to,
            call_id,
            cseq: 1,
            via: build::via(ctx.local, &new_branch()),
            contact: ctx.contact(),
            user_agent: ctx.user_agent.clone(),
            correlation_id: ctx.correlation_id.clone(),
            extra,
            sdp,
        });
        leg.send_invite(now, invite);
        leg.drain_transactions();
        leg
    }

    /// Supported/Require and session timer headers of our INVITEs.
    fn invite_extensions(&self) -> Vec<Header> {
        let policy = self.ctx.trunk.reliable_provisional;
        let mut supported = vec!["timer"];
        if policy != RelPolicy::Disabled {
            supported.insert(0, "100rel");
        }
        let mut extra = vec![Header::Supported(supported.join(", ").into())];
        if policy == RelPolicy::Required {
            extra.push(Header::Require("100rel".into()));
        }
        if self.se_interval > 0 {
            let min_se = self.ctx.trunk.session_timer.min_se;
            extra.extend(session_timer::request_headers(
                self.se_interval,
                min_se,
                false,
            ));
        }
        extra
    }

    /// Starts the transaction of `invite` (first send, or a resend).
    fn send_invite(&mut self, now: Instant, invite: Request) {
        if let Some(old) = self.invite_tx.take() {
            self.old_invites.push((self.invite_branch.clone(), old));
        }
        self.invite_branch = branch(&invite).unwrap_or_default();
        self.invite_tx = Some(InviteClient::new(
            now,
            invite.clone(),
            self.ctx.timers,
            self.target.transport.reliability(),
        ));
        self.invite = invite;
        self.phase = Phase::Calling;
        self.early.clear();
    }

    /// Resends the INVITE with CSeq + 1 and `auth` / `set` headers.
    fn resend_invite(&mut self, now: Instant, auth: Option<Vec<Header>>, set: Vec<Header>) {
        let seq = cseq(&self.invite).map(|(s, _)| s).unwrap_or(1);
        let Some(seq) = seq.checked_add(1) else {
            self.finish(LegEvent::Failed {
                status: 500,
                reason: "CSeq space exhausted".into(),
            });
            return;
        };
        let via = build::via(self.ctx.local, &new_branch());
        let invite = build::resend(&self.invite, via, seq, auth, set);
        self.send_invite(now, invite);
    }

    /// Routes a response to the INVITE, CANCEL, an in-dialog transaction or a fork.
    pub(super) fn route_response(&mut self, now: Instant, response: Response, reason: String) {
        let (Some(branch), Some((seq, method))) = (branch(&response), cseq(&response)) else {
            return;
        };
        let code = response.status_code.code();
        if method == Method::Invite && branch == self.invite_branch {
            self.last_reason = reason;
            match self.invite_tx.as_mut() {
                Some(tx) if !tx.is_terminated() => {
                    if let Err(e) = tx.handle_response(now, response) {
                        tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "INVITE: {e}");
                    }
                }
                // Retransmissions and forked 2xx after the transaction ended (§13.2.2.4).
                _ if (200..300).contains(&code) => self.on_late_2xx(now, &response),
                _ => {}
            }
            return;
        }
        if method == Method::Invite
            && let Some((_, tx)) = self.old_invites.iter_mut().find(|(b, _)| *b == branch)
        {
            let _ = tx.handle_response(now, response);
            return;
        }
        if method == Method::Cancel && branch == self.invite_branch {
            if let Some(tx) = self.cancel_tx.as_mut() {
                let _ = tx.handle_response(now, response);
            }
            return;
        }
        if self.route_client_response(now, &branch, method, response.clone()) {
            return;
        }
        if method == Method::Invite && (200..300).contains(&code) {
            // A retransmitted 2xx to one of our re-INVITEs: the same ACK again.
            if let Some((_, dest, ack)) = self.reinvite_acks.iter().find(|(s, _, _)| *s == seq) {
                let (dest, ack) = (*dest, ack.clone());
                self.send(dest, ack);
            }
            return;
        }
        if method == Method::Bye
            && let Some(fork) = self.forks.iter_mut().find(|f| f.bye_branch == branch)
        {
            let _ = fork.bye.handle_response(now, response);
            return;
        }
        tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, %method, code, "response matches no transaction");
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
                &self.invite,
                response,
                self.ctx.local,
                self.target,
                self.ctx.timers,
            ) {
                Ok(fork) => {
                    tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, remote_tag = %tag, "forked 2xx: ACK and BYE");
                    let ack = Some((fork.dest, fork.ack.clone()));
                    self.forks.push(fork);
                    ack
                }
                Err(e) => {
                    tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "forked 2xx unusable: {e}");
                    None
                }
            }
        } else {
            None
        };
        if let Some((dest, ack)) = resend {
            tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "ACK for 2xx");
            self.send(dest, ack);
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

    /// Applies the INVITE transaction's events.
    pub(super) fn process_setup(&mut self, now: Instant) {
        while let Some(event) = self.invite_tx.as_mut().and_then(InviteClient::poll_event) {
            self.on_invite_event(now, event);
        }
        while let Some(event) = self
            .cancel_tx
            .as_mut()
            .and_then(NonInviteClient::poll_event)
        {
            let outcome = match event {
                ClientEvent::Provisional(r) | ClientEvent::Final(r) => {
                    r.status_code.code().to_string()
                }
                ClientEvent::Timeout => "timeout".into(),
                ClientEvent::TransportError(e) => e,
            };
            tracing::debug!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, %outcome, "CANCEL answered");
        }
        if self
            .invite_tx
            .as_ref()
            .is_some_and(InviteClient::is_terminated)
        {
            self.drain_transactions();
            self.invite_tx = None;
        }
    }

    fn on_invite_event(&mut self, now: Instant, event: ClientEvent) {
        match event {
            ClientEvent::Provisional(response) => self.on_provisional(now, &response),
            ClientEvent::Final(response) if response.status_code.code() < 300 => {
                self.on_2xx(now, &response)
            }
            ClientEvent::Final(response) => self.on_failure(now, &response),
            ClientEvent::Timeout => self.finish(LegEvent::Failed {
                status: 408,
                reason: "Request Timeout".into(),
            }),
            ClientEvent::TransportError(e) => self.finish(LegEvent::Failed {
                status: 503,
                reason: format!("transport error: {e}"),
            }),
        }
    }

    fn on_provisional(&mut self, now: Instant, response: &Response) {
        if self.phase != Phase::Calling && self.phase != Phase::Early {
            return;
        }
        self.phase = Phase::Early;
        if self.hung_up {
            if self.cancel_tx.is_none() {
                self.send_cancel(now);
            }
            return;
        }
        let code = response.status_code.code();
        if code == 100 {
            return;
        }
        let reliable = lists_token(&response.headers, "Require", "100rel");
        if let Err(e) = self.early_dialog(response) {
            // A tagged 1xx without a usable Contact: PRACK and early UPDATE cannot
            // reach the peer; only worth a warning when it asked for reliability.
            if reliable {
                tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "reliable 1xx unusable: {e}");
            }
        }
        if reliable && !self.prack(now, response) {
            return; // a retransmitted or out-of-order reliable provisional
        }
        let sdp = body_text(&response.body);
        if let Some(sdp) = &sdp {
            if reliable
                && let Ok(Some(early)) = self.early_dialog(response)
                && early.session.is_none()
            {
                early.session = Some(sdp.clone());
            }
            self.remote_sdp = Some(sdp.clone());
        }
        self.events.push_back(LegEvent::Provisional { code, sdp });
    }

    /// The early dialog of a tagged provisional, created by its first 1xx; `Ok(None)`
    /// for an untagged one.
    fn early_dialog(&mut self, response: &Response) -> Result<Option<&mut EarlyDialog>, String> {
        let Some(tag) = to_tag(response) else {
            return Ok(None);
        };
        if !self.early.iter().any(|(t, _)| *t == tag) {
            let dialog = Dialog::from_uac_2xx(&self.invite, response).map_err(|e| e.to_string())?;
            self.early.push((
                tag.clone(),
                EarlyDialog {
                    dialog,
                    last_rseq: None,
                    session: None,
                },
            ));
        }
        Ok(self
            .early
            .iter_mut()
            .find(|(t, _)| *t == tag)
            .map(|(_, e)| e))
    }

    /// PRACKs a reliable provisional (RFC 3262 §4); false if it must be ignored.
    fn prack(&mut self, now: Instant, response: &Response) -> bool {
        let Some(rseq) =
            header_first(&response.headers, "RSeq").and_then(|v| v.trim().parse::<u32>().ok())
        else {
            return true;
        };
        let Ok(Some(early)) = self.early_dialog(response) else {
            return true; // no early dialog to PRACK in: treat as unreliable
        };
        // The peer's number: checked, RSeq u32::MAX has no successor (RFC 3262
        // keeps it below 2^31 anyway).
        if let Some(last) = early.last_rseq
            && last.checked_add(1) != Some(rseq)
        {
            return false;
        }
        early.last_rseq = Some(rseq);
        let tag = to_tag(response).unwrap_or_default();
        let invite_seq = cseq(&self.invite).map(|(s, _)| s).unwrap_or(1);
        let rack = Header::Other("RAck".into(), format!("{rseq} {invite_seq} INVITE"));
        self.send_in_dialog(now, Some(&tag), Purpose::Prack, vec![rack], None);
        true
    }

    /// The first 2xx: dialog, ACK, session timer, then Answered (or BYE after hangup).
    fn on_2xx(&mut self, now: Instant, response: &Response) {
        let mut dialog = match Dialog::from_uac_2xx(&self.invite, response) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "unusable 2xx: {e}");
                self.finish(LegEvent::Failed {
                    status: 502,
                    reason: format!("unusable 2xx: {e}"),
                });
                return;
            }
        };
        let tag = to_tag(response).unwrap_or_default();
        let mut early_session = None;
        if let Some((_, early)) = self.early.iter_mut().find(|(t, _)| *t == tag) {
            dialog.bump_local_cseq(early.dialog.local_cseq());
            early_session = early.session.take();
        }
        self.early.clear();
        let dest = self.in_dialog_dest(&dialog);
        // The INVITE's credentials go in the ACK (§13.2.2.4), unless the ACK goes
        // somewhere that is not the trunk (a far end's Contact): never leak them.
        let credentials: Vec<Header> = if self.auth.may_send_to(dest.addr) {
            self.invite
                .headers
                .iter()
                .filter(|h| matches!(h, Header::Authorization(_) | Header::ProxyAuthorization(_)))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let via = build::via(self.ctx.local, &new_branch());
        match dialog.ack_for(dialog.invite_cseq(), via, credentials) {
            Ok(ack) => {
                let bytes = request_bytes(&ack);
                self.send(dest, bytes.clone());
                self.ack = Some((dest, bytes));
            }
            Err(e) => {
                tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "cannot ACK: {e}")
            }
        }
        self.dialog = Some(dialog);
        self.phase = Phase::Confirmed;
        self.peer_allows_update = lists_token(&response.headers, "Allow", "UPDATE");
        // The session is the 2xx's SDP, unless a reliable provisional of this dialog
        // already carried the answer (RFC 3262): then the 2xx has none or repeats that
        // answer, which an early UPDATE may have replaced since. An unreliable 1xx's
        // SDP stands in for a 2xx without one.
        if let Some(sdp) = early_session.or_else(|| body_text(&response.body)) {
            self.remote_sdp = Some(sdp);
        }
        if self.hung_up {
            tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "2xx after hangup: ACK and BYE");
            self.send_bye(now);
            return;
        }
        self.session = SessionTimer::from_uac_response(now, response);
        self.events.push_back(LegEvent::Answered {
            sdp: self.remote_sdp.clone().unwrap_or_default(),
        });
    }

    /// A 3xx-6xx to the INVITE: resend with credentials or a larger Session-Expires,
    /// or fail.
    fn on_failure(&mut self, now: Instant, response: &Response) {
        let code = response.status_code.code();
        if !self.hung_up && (code == 401 || code == 407) {
            match self.auth.on_challenge(
                response,
                &self.invite,
                self.invite_rounds,
                self.target.addr,
            ) {
                Ok(headers) => {
                    self.invite_rounds += 1;
                    tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, code, "INVITE challenged: resending with credentials");
                    self.resend_invite(now, Some(headers), Vec::new());
                    return;
                }
                Err(e) => {
                    tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, code, "INVITE challenge not answered: {e}");
                }
            }
        }
        if !self.hung_up
            && code == 422
            && let Some(min) = session_timer::min_se(response)
            && min > self.se_interval
        {
            tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, min_se = min, "422: resending with the peer's Min-SE");
            self.se_interval = min;
            let set = session_timer::request_headers(min, min, false);
            self.resend_invite(now, None, set);
            return;
        }
        let reason = std::mem::take(&mut self.last_reason);
        let event = if self.hung_up {
            LegEvent::Ended
        } else {
            LegEvent::Failed {
                status: code,
                reason,
            }
        };
        self.finish(event);
    }

    /// CANCELs the pending INVITE (§9.1).
    pub(super) fn send_cancel(&mut self, now: Instant) {
        let cancel = build::cancel(&self.invite);
        self.cancel_tx = Some(NonInviteClient::new(
            now,
            &cancel,
            self.ctx.timers,
            self.target.transport.reliability(),
        ));
        self.phase = Phase::Cancelling {
            guard: now + self.ctx.timers.timeout(),
        };
    }

    /// Ends the confirmed dialog with BYE.
    pub(super) fn send_bye(&mut self, now: Instant) {
        if self.dialog.is_none() {
            return;
        }
        let extra = vec![Header::Other(
            "X-Correlation-ID".into(),
            self.ctx.correlation_id.clone(),
        )];
        if self.send_in_dialog(now, None, Purpose::Bye, extra, None) {
            self.phase = Phase::Terminating;
        } else {
            self.finish(LegEvent::Ended);
        }
    }
}
