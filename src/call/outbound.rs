//! The runtime driver of one outbound call: creates the two media legs, sends the
//! INVITE, and feeds events into the [`OutboundCall`] machine until it finishes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use super::dialplan::Routed;
use super::machine::{Input, Limits, OutboundCall, Outcome, Output};
use super::media_plane::{self, CallMedia, HoldChange};
use super::recordings::{self, Plan};
use super::registry::{CallSlot, CallState};
use super::report;
use super::transfer::TransferSlot;
use super::{CallCommand, CallContext, CallManager, MEDIA_TIMEOUT, SessionEvent};
use crate::media::bridge::{BridgeReport, DropCounter, Leg, MediaEvent};
use crate::media::negotiate;
use crate::media::quality::QualityReport;
use crate::media::rtp_leg::RtpLeg;
use crate::media::sdp::LocalSdp;
use crate::media::webrtc_leg::{WebRtcEvent, WebRtcLeg};
use crate::signaling::protocol::{EndReason, ErrorCode, HoldParty, ServerMessage};
use crate::sip::{InviteRequest, SdpAnswerer, SipCallEvent, SipCallHandle, TrunkSettings};

/// Everything one outbound call task owns.
pub(super) struct OutboundJob {
    /// The manager (config, SIP endpoint, metrics).
    pub manager: Arc<CallManager>,
    /// Caller and correlation.
    pub ctx: CallContext,
    /// The client's call id.
    pub call_id: String,
    /// The number as the browser dialed it.
    pub to: String,
    /// The dial plan's decision: number to send and trunks to try in order.
    pub routed: Routed,
    /// Withhold the caller id (asked by the browser or forced by the route).
    pub privacy: bool,
    /// Answers the trunk's mid-call SDP offers (set once the RTP leg exists).
    pub answerer: SdpAnswerer,
    /// The browser's SDP offer.
    pub offer_sdp: String,
    /// Messages to the browser.
    pub to_browser: mpsc::UnboundedSender<SessionEvent>,
    /// Commands from the session.
    pub commands: mpsc::UnboundedReceiver<CallCommand>,
    /// The admission slot, released when the task ends.
    pub slot: CallSlot,
    /// A sender of `commands`, for the admission of a transfer's new leg.
    pub commands_tx: mpsc::UnboundedSender<CallCommand>,
    /// A far-end transfer being set up (`transfer.rs`).
    pub transfer: Option<TransferSlot>,
    /// The user's concurrent call limit (token claim or `limits.max_calls_per_user`),
    /// checked against the fleet's leases before the call starts.
    pub user_limit: usize,
}

fn internal(message: String) -> SetupError {
    SetupError {
        reason: EndReason::Error,
        code: ErrorCode::Internal,
        message,
    }
}

fn unavailable(message: String) -> SetupError {
    SetupError {
        reason: EndReason::Unavailable,
        code: ErrorCode::Unavailable,
        message,
    }
}

/// A failure before the SIP leg exists: what to tell the browser.
struct SetupError {
    reason: EndReason,
    code: ErrorCode,
    message: String,
}

impl OutboundJob {
    /// Runs the call to its end.
    pub async fn run(self) {
        let span = info_span!(
            "call",
            call_id = %self.call_id,
            correlation_id = %self.ctx.correlation_id,
            session_id = %self.ctx.session_id,
            user = %self.ctx.identity.user,
        );
        let fleet = Arc::clone(&self.manager.fleet);
        let (user, id) = (self.ctx.identity.user.clone(), self.slot.id().to_string());
        async move {
            self.run_inner().await;
            fleet.release(&user, &id).await;
        }
        .instrument(span)
        .await
    }

    async fn run_inner(mut self) {
        let started = Instant::now();
        let user = self.ctx.identity.user.clone();
        let now = super::inbound::now_ms();
        if let Err(over) = self
            .manager
            .fleet
            .admit(&user, self.slot.id(), self.user_limit, now)
            .await
        {
            return self.fail_setup(SetupError {
                reason: EndReason::Limit,
                code: ErrorCode::Unavailable,
                message: format!(
                    "user has {} calls up across the gateway fleet, the limit; hang one up first",
                    over.held
                ),
            });
        }
        if let Some(info) = self.slot.info() {
            self.manager.events.call_started(&info);
        }
        info!(to = %self.to, dial = %self.routed.dial, route = self.routed.route, trunks = ?self.routed.trunks, privacy = self.privacy, "outbound call");
        let (media_tx, mut media_rx) = mpsc::unbounded_channel();
        let webrtc = self.manager.webrtc.for_user(&self.ctx.identity.user);
        let leg = match WebRtcLeg::answer(&webrtc, &self.offer_sdp, media_tx).await {
            Ok((leg, answer)) => {
                self.send(ServerMessage::Answer {
                    call_id: self.call_id.clone(),
                    sdp: answer,
                });
                leg
            }
            Err(e) => {
                return self.fail_setup(SetupError {
                    reason: EndReason::Error,
                    code: ErrorCode::BadRequest,
                    message: format!("{e}; send a WebRTC audio offer with PCMU or PCMA"),
                });
            }
        };
        let rtp = match self.bind_rtp().await {
            Ok(rtp) => rtp,
            Err(e) => {
                leg.close().await;
                return self.fail_setup(e);
            }
        };
        let (mut media, recording) = self.call_media(&leg, rtp);
        self.answerer = media.answerer();
        let offer = media.local_sdp();
        let mut trunk = 0;
        // The current trunk's addresses not tried yet (SRV targets after the first).
        let mut targets = Vec::new();
        let (mut sip, mut sip_events) =
            match self.invite_first(&mut trunk, &mut targets, &offer).await {
                Ok(parts) => parts,
                Err(e) => {
                    leg.close().await;
                    return self.fail_setup_with(e, &recording);
                }
            };

        let limits = Limits {
            max_duration: self.manager.config.limits.max_call_duration,
            media_timeout: MEDIA_TIMEOUT,
            invite_timeout: self.manager.config.limits.invite_timeout,
        };
        let attempts = 1 + self.attempts_after(trunk, &targets);
        let mut machine = OutboundCall::new(self.call_id.clone(), started, limits, attempts);
        let mut outcome = None;
        // Our own hold/unhold waiting for the re-INVITE's answer.
        let mut pending_hold: Option<bool> = None;
        let mut last_quality = None;
        loop {
            while let Some(output) = machine.poll_output() {
                match output {
                    Output::ToBrowser(m) => {
                        self.track_state(&m);
                        self.send(m);
                    }
                    Output::ApplyRemoteSdp(sdp) => match media.apply(&leg, &sdp) {
                        Ok(Some(change)) => self.tell_hold(change),
                        Ok(None) => {}
                        Err(detail) => {
                            warn!(%detail, "SIP peer SDP unusable");
                            machine.handle(Instant::now(), Input::MediaFailed(detail));
                        }
                    },
                    Output::HangupSip => sip.hangup(),
                    Output::NextTrunk => {
                        // The next address of this trunk, else the next trunk.
                        if targets.is_empty() {
                            trunk += 1;
                        }
                        match self.invite_first(&mut trunk, &mut targets, &offer).await {
                            Ok((handle, events)) => {
                                (sip, sip_events) = (handle, events);
                                machine.set_trunks_left(self.attempts_after(trunk, &targets));
                            }
                            Err(e) => {
                                // No further trunk could be addressed: end the call.
                                warn!(message = %e.message, "failover exhausted");
                                machine.set_trunks_left(0);
                                let failed = SipCallEvent::Failed {
                                    status: 503,
                                    reason: e.message,
                                };
                                machine.handle(Instant::now(), Input::Sip(failed));
                            }
                        }
                    }
                    Output::Finished(o) => outcome = Some(o),
                }
            }
            if machine.is_finished() {
                break;
            }
            let deadline = machine
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + MEDIA_TIMEOUT);
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(CallCommand::Hangup) => machine.handle(Instant::now(), Input::BrowserHangup),
                    Some(CallCommand::Terminate(reason)) => machine.handle(Instant::now(), Input::Terminate(reason)),
                    Some(CallCommand::Ice(candidate)) => {
                        if let Err(e) = leg.add_remote_candidate(candidate).await {
                            debug!(error = %e, "browser ICE candidate ignored");
                        }
                    }
                    Some(CallCommand::Dtmf(digits)) => self.dtmf(&media, &sip, trunk, &digits),
                    Some(CallCommand::Hold(hold)) => {
                        if !machine.is_answered() || pending_hold.is_some() {
                            self.call_error(ErrorCode::Conflict, "hold/unhold needs an answered call with no hold change in progress");
                        } else {
                            sip.reinvite(media.hold_offer(hold));
                            pending_hold = Some(hold);
                        }
                    }
                    Some(CallCommand::Accept(_) | CallCommand::Reject) => {
                        self.call_error(ErrorCode::BadRequest, "accept and reject are for incoming calls; this call is outbound");
                    }
                    Some(CallCommand::SignalingLost) | None => {
                        machine.handle(Instant::now(), Input::SignalingLost)
                    }
                },
                event = sip_events.recv() => match event {
                    Some(SipCallEvent::ReinviteResult { ok, status, sdp }) => {
                        // The answer to our own re-INVITE: media follows it.
                        if let (true, Some(sdp)) = (ok, &sdp)
                            && let Err(detail) = media.apply(&leg, sdp)
                        {
                            warn!(%detail, "re-INVITE answer unusable");
                        }
                        if let Some(hold) = pending_hold.take() {
                            media.hold_done(hold, ok);
                            self.hold_result(hold, ok, status);
                        }
                    }
                    Some(event @ (SipCallEvent::TransferRequested { .. }
                    | SipCallEvent::Transferred { .. }
                    | SipCallEvent::TransferFailed { .. })) => self.on_transfer_event(&sip, event).await,
                    Some(event) => machine.handle(Instant::now(), Input::Sip(event)),
                    None => machine.handle(
                        Instant::now(),
                        Input::Sip(SipCallEvent::Failed { status: 500, reason: "SIP leg vanished".into() }),
                    ),
                },
                Some(event) = media_rx.recv() => match event {
                    WebRtcEvent::LocalCandidate(candidate) => self.send(ServerMessage::Ice {
                        call_id: self.call_id.clone(),
                        candidate,
                    }),
                    WebRtcEvent::Connected => machine.handle(Instant::now(), Input::MediaConnected),
                    WebRtcEvent::Failed(detail) => {
                        machine.handle(Instant::now(), Input::MediaFailed(detail))
                    }
                },
                Some(event) = media.events.recv() => match event {
                    MediaEvent::Quality(report) => {
                        self.send(report::stats_message(&self.call_id, &report));
                        last_quality = Some(*report);
                    }
                    MediaEvent::InactivityTimeout { leg: side, silent_for } => {
                        let detail = format!("no media from the {} leg for {}s", side.as_str(), silent_for.as_secs());
                        machine.handle(Instant::now(), Input::MediaFailed(detail));
                    }
                    MediaEvent::Dtmf { leg: Leg::Sip, digit } => self.send(ServerMessage::Dtmf {
                        call_id: self.call_id.clone(),
                        digits: digit.to_string(),
                    }),
                    MediaEvent::RecordingFinished(info) => info!(truncated = info.truncated, "recording closed before the end of the call"),
                    MediaEvent::RecordingFailed(e) => warn!(error = %e, "recording failed"),
                    other => debug!(event = ?other, "media event"),
                },
                _ = tokio::time::sleep_until(deadline) => machine.handle_timeout(Instant::now()),
            }
        }
        let report = media.stop().await;
        leg.close().await;
        if let Some(outcome) = outcome {
            let quality = report.as_ref().map(|r| r.quality).or(last_quality);
            self.record(&outcome, report.as_ref(), quality.as_ref(), &recording);
        }
    }

    /// Binds the SIP-side RTP socket from the configured port range.
    async fn bind_rtp(&self) -> Result<RtpLeg, SetupError> {
        let config = &self.manager.config;
        let range = config
            .sip
            .rtp_port_range()
            .map_err(|e| internal(e.to_string()))?;
        RtpLeg::bind(config.server.media_ip, range)
            .await
            .map_err(|e| internal(e.to_string()))
    }

    /// The SIP-side media of the call: the trunk offer follows the browser leg's
    /// codec so the call can be relayed; recording when the token or route asks
    /// (and the disk quota has room).
    fn call_media(&self, leg: &WebRtcLeg, rtp: RtpLeg) -> (CallMedia, Plan) {
        let config = &self.manager.config;
        let advertised = config
            .sip
            .external_address
            .unwrap_or_else(|| config.server.advertised_ip());
        let trunk_codecs = media_plane::codecs(&config.media.sip_codecs);
        let offer_codecs = negotiate::sip_offer_codecs(leg.format().codec, &trunk_codecs);
        let local = LocalSdp::offer(
            advertised,
            rtp.local_addr().port(),
            u64::from(rand::random::<u32>()),
            &offer_codecs,
        );
        let record = config.media.record_all || self.ctx.identity.record || self.routed.record;
        let plan = match self.slot.info() {
            Some(info) => recordings::plan(&self.manager, &info, record),
            None => Plan::default(),
        };
        let drops = DropCounter::new(self.manager.metrics.foreign_rtp_drops());
        let bridge = media_plane::bridge_config(&config.media, plan.target.clone(), drops);
        (CallMedia::new(rtp, local, offer_codecs, bridge), plan)
    }

    /// Attempts left after the current one: the trunk's untried addresses and the
    /// route's later trunks (each at least one).
    fn attempts_after(&self, trunk: usize, targets: &[SocketAddr]) -> usize {
        targets.len() + self.routed.trunks.len().saturating_sub(trunk + 1)
    }

    /// Sends the INVITE to the next address of trunk `*index` (locating the trunk
    /// when `targets` is empty), moving on while one cannot even be addressed
    /// (unknown, down, not in DNS, refused locally).
    async fn invite_first(
        &self,
        index: &mut usize,
        targets: &mut Vec<SocketAddr>,
        offer: &str,
    ) -> Result<(SipCallHandle, mpsc::UnboundedReceiver<SipCallEvent>), SetupError> {
        let mut last = unavailable("route has no trunks".into());
        while *index < self.routed.trunks.len() {
            let name = &self.routed.trunks[*index];
            if targets.is_empty() {
                match self.locate(name).await {
                    Ok(found) => *targets = found,
                    Err(e) => {
                        warn!(trunk = %name, message = %e.message, "trunk skipped");
                        last = e;
                        *index += 1;
                        continue;
                    }
                }
            }
            let target = targets.remove(0);
            match self.invite(name, target, targets, offer).await {
                Ok(parts) => return Ok(parts),
                Err(e) => {
                    warn!(trunk = %name, %target, message = %e.message, "trunk address skipped");
                    last = e;
                    if targets.is_empty() {
                        *index += 1;
                    }
                }
            }
        }
        Err(last)
    }

    /// The addresses of a usable trunk, in the order to try them.
    async fn locate(&self, trunk_name: &str) -> Result<Vec<SocketAddr>, SetupError> {
        let trunk = self.trunk_settings(trunk_name)?;
        if !self.manager.sip.trunk_usable(trunk_name) {
            return Err(unavailable(format!(
                "trunk `{trunk_name}` is down (health check failing); skipped"
            )));
        }
        let targets = self
            .manager
            .sip
            .locate(&trunk)
            .await
            .map_err(|e| unavailable(format!("trunk `{trunk_name}`: {e}")))?;
        if targets.len() > 1 {
            info!(trunk = %trunk_name, ?targets, "trunk located by SRV");
        }
        Ok(targets)
    }

    /// A configured trunk's settings.
    fn trunk_settings(&self, trunk_name: &str) -> Result<TrunkSettings, SetupError> {
        self.manager
            .config
            .sip
            .trunk(trunk_name)
            .map(TrunkSettings::from_config)
            .ok_or_else(|| unavailable(format!("trunk `{trunk_name}` is not configured")))
    }

    /// Sends the INVITE to one address of a trunk (`others`: its addresses not
    /// tried yet).
    async fn invite(
        &self,
        trunk_name: &str,
        target: SocketAddr,
        others: &[SocketAddr],
        offer: &str,
    ) -> Result<(SipCallHandle, mpsc::UnboundedReceiver<SipCallEvent>), SetupError> {
        let trunk = self.trunk_settings(trunk_name)?;
        let from_user = self
            .ctx
            .identity
            .caller_id
            .clone()
            .unwrap_or_else(|| self.ctx.identity.user.clone());
        let request = InviteRequest {
            target,
            target_host: trunk.domain(),
            to_user: self.routed.dial.clone(),
            from_user,
            sdp: offer.to_string(),
            correlation_id: self.ctx.correlation_id.clone(),
            trunk,
            trunk_addresses: others.to_vec(),
            from_display: None,
            asserted_identity: self.ctx.identity.caller_id.clone(),
            privacy: self.privacy,
            answerer: self.answerer.clone(),
        };
        let (handle, events) = self
            .manager
            .sip
            .invite(request)
            .await
            .map_err(|e| unavailable(format!("SIP: {e}")))?;
        info!(sip_call_id = %handle.sip_call_id(), trunk = %trunk_name, %target, "INVITE sent");
        self.slot.update(|i| {
            i.trunk = Some(trunk_name.to_string());
            i.sip_call_id = Some(handle.sip_call_id().to_string());
        });
        Ok((handle, events))
    }

    fn fail_setup(self, e: SetupError) {
        self.fail_setup_with(e, &Plan::default());
    }

    /// Like [`Self::fail_setup`] once the recording was planned (a skipped one is
    /// reported in the record).
    fn fail_setup_with(self, e: SetupError, recording: &Plan) {
        warn!(reason = e.reason.as_str(), message = %e.message, "call setup failed");
        let mut error = ServerMessage::error(e.code, e.message.clone(), &self.ctx.correlation_id);
        if let ServerMessage::Error { call_id, .. } = &mut error {
            *call_id = Some(self.call_id.clone());
        }
        self.send(error);
        self.send(ServerMessage::Ended {
            call_id: self.call_id.clone(),
            reason: e.reason,
            sip_status: None,
        });
        let outcome = Outcome {
            reason: e.reason,
            sip_status: None,
            setup_time: None,
            talk_time: None,
            detail: e.message,
        };
        self.record(&outcome, None, None, recording);
    }

    /// Metrics and the end-of-call log line (the call record).
    fn record(
        &self,
        outcome: &Outcome,
        media: Option<&BridgeReport>,
        quality: Option<&QualityReport>,
        recording: &Plan,
    ) {
        let metrics = &self.manager.metrics;
        metrics
            .calls_total
            .with_label_values(&["outbound", outcome.reason.as_str()])
            .inc();
        if let Some(setup) = outcome.setup_time {
            metrics.call_setup_seconds.observe(setup.as_secs_f64());
        }
        let result = media.and_then(|m| m.recording.as_ref());
        if let Some(info) = self.slot.info() {
            let record = report::call_record(&info, outcome, media.map(|m| m.mode), quality);
            recordings::finish_call(&self.manager, &info, record, recording, result);
        }
        info!(
            reason = outcome.reason.as_str(),
            sip_status = outcome.sip_status,
            talk_secs = outcome.talk_time.map(|d| d.as_secs_f64()),
            detail = %outcome.detail,
            media = media.map(|m| m.mode.as_str()),
            codecs = media.map(|m| format!("{:?}", m.mode)),
            mos = quality.map(|q| q.overall.mos),
            jitter_ms = quality.map(|q| q.overall.jitter_ms),
            loss_pct = quality.map(|q| q.overall.loss_pct),
            recording = result.and_then(|r| r.as_ref().ok()).map(|r| r.path.display().to_string()),
            "call ended"
        );
    }

    /// Sends `dtmf` digits: SIP INFO when the trunk wants it, RFC 4733 otherwise.
    fn dtmf(&self, media: &CallMedia, sip: &SipCallHandle, trunk: usize, digits: &str) {
        let config = &self.manager.config;
        let info_mode = self
            .routed
            .trunks
            .get(trunk)
            .and_then(|name| config.sip.trunk(name))
            .is_some_and(|t| t.dtmf_mode == "info");
        let valid = digits
            .chars()
            .all(|d| crate::media::dtmf::digit_to_event(d).is_some());
        // Checked before anything is sent, so a bad string sends nothing.
        let result = if digits.is_empty() || digits.len() > 32 || !valid {
            Err(format!("`{digits}`: send 1-32 digits of 0-9 * # A-D"))
        } else if info_mode {
            digits
                .chars()
                .try_for_each(|d| sip.send_dtmf_info(d, 160).map_err(|e| e.to_string()))
        } else {
            media.send_dtmf(digits)
        };
        match result {
            Ok(()) => info!(digits, info_mode, "DTMF sent"),
            Err(e) => {
                warn!(digits, error = %e, "DTMF not sent");
                self.call_error(ErrorCode::BadRequest, &format!("dtmf: {e}"));
            }
        }
    }

    /// Tells the browser the outcome of its hold/unhold.
    fn hold_result(&self, hold: bool, ok: bool, status: u16) {
        if !ok {
            let what = if hold { "hold" } else { "unhold" };
            let msg = format!("{what} failed: the far end answered the re-INVITE with {status}");
            return self.call_error(ErrorCode::Unavailable, &msg);
        }
        let call_id = self.call_id.clone();
        self.send(if hold {
            ServerMessage::Hold {
                call_id,
                by: HoldParty::Local,
            }
        } else {
            ServerMessage::Unhold {
                call_id,
                by: HoldParty::Local,
            }
        });
    }

    /// Tells the browser the far end changed its hold state.
    fn tell_hold(&self, change: HoldChange) {
        let call_id = self.call_id.clone();
        self.send(match change {
            HoldChange::RemoteHold => ServerMessage::Hold {
                call_id,
                by: HoldParty::Remote,
            },
            HoldChange::RemoteUnhold => ServerMessage::Unhold {
                call_id,
                by: HoldParty::Remote,
            },
        });
    }

    /// An `error` about this call.
    fn call_error(&self, code: ErrorCode, message: &str) {
        let mut error = ServerMessage::error(code, message, &self.ctx.correlation_id);
        if let ServerMessage::Error { call_id, .. } = &mut error {
            *call_id = Some(self.call_id.clone());
        }
        self.send(error);
    }

    /// Mirrors the call's progress into the registry (for the operator API) and
    /// the call events (webhooks).
    fn track_state(&self, message: &ServerMessage) {
        let events = &self.manager.events;
        match message {
            ServerMessage::Ringing { .. } | ServerMessage::Progress { .. } => {
                let first = self.slot.info().is_some_and(|i| i.ringing_at.is_none());
                self.slot.update(|i| {
                    i.state = CallState::Ringing;
                    i.ringing_at.get_or_insert_with(std::time::SystemTime::now);
                });
                if first && let Some(info) = self.slot.info() {
                    if let Some(pdd) = info
                        .ringing_at
                        .and_then(|r| r.duration_since(info.started_at).ok())
                    {
                        self.manager
                            .metrics
                            .call_pdd_seconds
                            .observe(pdd.as_secs_f64());
                    }
                    events.call_ringing(&info);
                }
            }
            ServerMessage::Answered { .. } => {
                self.slot.update(|i| {
                    i.state = CallState::Answered;
                    i.answered_at = Some(std::time::SystemTime::now());
                });
                if let Some(info) = self.slot.info() {
                    events.call_answered(&info);
                }
            }
            _ => {}
        }
    }

    fn send(&self, message: ServerMessage) {
        // The session may be gone; the call still runs to its end on the SIP side.
        let _ = self.to_browser.send(SessionEvent::Message(message));
    }
}
