//! The runtime driver of one inbound call: offers the call to every live session of
//! the user (one WebRTC offer each), feeds the sans-IO [`InboundCall`] machine, and
//! once a session accepts, answers the trunk and bridges the media.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, warn};

use super::directory::LiveSession;
use super::inbound_machine::{InboundCall, InboundInput, InboundOutput};
use super::machine::Outcome;
use super::media_plane::{self, CallMedia, HoldChange};
use super::recordings::{self, Plan};
use super::registry::{CallInfo, CallSlot, CallState, Direction, LimitError};
use super::{CallCommand, CallHandle, CallManager, SessionEvent, report};
use crate::media::bridge::{BridgeReport, DropCounter, Leg, MediaEvent};
use crate::media::rtp_leg::RtpLeg;
use crate::media::sdp::{self, LocalSdp, RemoteMedia};
use crate::media::webrtc_leg::{WebRtcEvent, WebRtcLeg};
use crate::signaling::protocol::{EndReason, HoldParty, ServerMessage};
use crate::signaling::random_id;
use crate::sip::{InboundSipEvent, IncomingCall, IncomingCallHandle};

/// A refused inbound call: its handle, with the status to answer and why.
pub(super) type Refusal = (IncomingCallHandle, u16, String);

/// Everything one inbound call task owns.
pub(super) struct InboundJob {
    manager: Arc<CallManager>,
    /// Our call id (`i-…`), shared by every session offered the call.
    call_id: String,
    /// Controls the SIP side.
    handle: IncomingCallHandle,
    /// SIP progress.
    sip_events: mpsc::UnboundedReceiver<InboundSipEvent>,
    /// The trunk's offer, parsed.
    remote: RemoteMedia,
    /// The trunk's offer, as text.
    offer: String,
    /// The caller.
    from: String,
    /// The called DID (normalised).
    did: String,
    /// The user the DID belongs to (whose sessions ring).
    user: String,
    /// The sessions to ring.
    sessions: Vec<LiveSession>,
    /// Admission slot (registry entry).
    slot: CallSlot,
    /// Commands to the slot's call (for the API hangup).
    api_commands: mpsc::UnboundedReceiver<CallCommand>,
}

impl InboundJob {
    /// Admits the call; refuses it (status, reason) when it cannot be taken.
    pub(super) fn new(
        manager: Arc<CallManager>,
        call: IncomingCall,
        user: String,
        did: String,
        sessions: Vec<LiveSession>,
    ) -> Result<InboundJob, Refusal> {
        let Some(offer) = call.sdp.clone() else {
            return Err((call.handle, 488, "INVITE without SDP offer".into()));
        };
        let codecs = media_plane::codecs(&manager.config.media.sip_codecs);
        let remote = match sdp::parse_answer(&offer, &codecs) {
            Ok(remote) => remote,
            Err(e) => return Err((call.handle, 488, e.to_string())),
        };
        let call_id = random_id("i-");
        let (tx, api_commands) = mpsc::unbounded_channel();
        let info = CallInfo {
            id: call_id.clone(),
            call_id: call_id.clone(),
            session_id: String::new(),
            user: user.clone(),
            direction: Direction::Inbound,
            from: call.from_user.clone(),
            to: did.clone(),
            trunk: call.trunk.clone(),
            state: CallState::Ringing,
            correlation_id: call.correlation_id.clone(),
            sip_call_id: Some(call.sip_call_id.clone()),
            started_at: SystemTime::now(),
            ringing_at: Some(SystemTime::now()),
            answered_at: None,
        };
        let limit = manager.config.limits.max_calls_per_user;
        let slot = match manager.registry.try_admit(info, limit, tx) {
            Ok(slot) => slot,
            Err(LimitError::Capacity(_)) => return Err((call.handle, 503, "at capacity".into())),
            Err(LimitError::PerUser(_)) => {
                return Err((call.handle, 486, "user at call limit".into()));
            }
        };
        Ok(InboundJob {
            manager,
            call_id,
            handle: call.handle,
            sip_events: call.events,
            remote,
            offer,
            from: call.from_user,
            did,
            user,
            sessions,
            slot,
            api_commands,
        })
    }

    /// Runs the call to its end.
    pub(super) async fn run(self) {
        let span = tracing::Span::current();
        span.record("to", self.did.as_str());
        let call_id = self.call_id.clone();
        self.run_inner()
            .instrument(tracing::info_span!("call", %call_id))
            .await
    }

    async fn run_inner(mut self) {
        let started = Instant::now();
        if let Some(info) = self.slot.info() {
            self.manager.events.call_started(&info);
        }
        let (legs, mut web_rx, mut cmd_rx) = self.offer_to_sessions().await;
        let mut legs = legs;
        if legs.is_empty() {
            warn!("no session could be offered the call");
            let _ = self.handle.reject(480, "");
            let outcome = Outcome {
                reason: EndReason::NoAnswer,
                sip_status: Some(480),
                setup_time: None,
                talk_time: None,
                detail: "no session could be offered the call".into(),
            };
            return self.record(&outcome, None);
        }
        self.handle.ringing();
        let config = &self.manager.config;
        let mut machine = InboundCall::new(
            self.call_id.clone(),
            started,
            legs.keys().cloned(),
            config.inbound.ring_timeout,
            config.limits.max_call_duration,
        );
        let mut answers: HashMap<String, String> = HashMap::new();
        let mut media: Option<CallMedia> = None;
        let mut recording = Plan::default();
        let mut pending_hold: Option<bool> = None;
        let mut outcome = None;
        loop {
            while let Some(output) = machine.poll_output() {
                match output {
                    InboundOutput::ToSession(s, m) => self.to_session(&s, m),
                    InboundOutput::SipReject(status) => {
                        let _ = self.handle.reject(status, "");
                    }
                    InboundOutput::SipHangup => self.handle.hangup(),
                    InboundOutput::CloseLeg(s) => {
                        if let Some(leg) = legs.remove(&s) {
                            leg.close().await;
                        }
                    }
                    InboundOutput::SipAnswer(s) => {
                        let sdp = answers.remove(&s).unwrap_or_default();
                        match self.answer(legs.get(&s), &sdp).await {
                            Ok((m, plan)) => {
                                media = Some(m);
                                recording = plan;
                            }
                            Err(detail) => {
                                warn!(%detail, "cannot answer the trunk");
                                machine.handle(Instant::now(), InboundInput::SipFailed(detail));
                            }
                        }
                    }
                    InboundOutput::Finished(o) => outcome = Some(o),
                }
            }
            if machine.is_finished() {
                break;
            }
            let deadline = machine
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + super::MEDIA_TIMEOUT);
            let winner = machine.winner().map(str::to_owned);
            tokio::select! {
                Some((s, command)) = cmd_rx.recv() => {
                    let now = Instant::now();
                    match command {
                        CallCommand::Accept(sdp) => {
                            answers.insert(s.clone(), sdp);
                            machine.handle(now, InboundInput::Accept { session: s });
                        }
                        CallCommand::Reject => machine.handle(now, InboundInput::Reject { session: s }),
                        CallCommand::Hangup => machine.handle(now, InboundInput::Hangup { session: s }),
                        CallCommand::SignalingLost => machine.handle(now, InboundInput::SessionGone { session: s }),
                        CallCommand::Terminate(reason) => machine.handle(now, InboundInput::Terminate(reason)),
                        CallCommand::Ice(c) => {
                            if let Some(leg) = legs.get(&s)
                                && let Err(e) = leg.add_remote_candidate(c).await
                            {
                                debug!(error = %e, "browser ICE candidate ignored");
                            }
                        }
                        CallCommand::Dtmf(digits) if winner.as_deref() == Some(s.as_str()) => {
                            if let Some(Err(e)) = media.as_ref().map(|m| m.send_dtmf(&digits)) {
                                self.session_error(&s, &format!("dtmf: {e}"));
                            }
                        }
                        CallCommand::Hold(hold) if winner.as_deref() == Some(s.as_str()) => {
                            if let (Some(m), None) = (media.as_mut(), pending_hold) {
                                self.handle.reinvite(m.hold_offer(hold));
                                pending_hold = Some(hold);
                            }
                        }
                        CallCommand::Dtmf(_) | CallCommand::Hold(_) => {
                            self.session_error(&s, "dtmf and hold need the answered call");
                        }
                    }
                }
                Some(command) = self.api_commands.recv() => {
                    if let CallCommand::Terminate(reason) = command {
                        machine.handle(Instant::now(), InboundInput::Terminate(reason));
                    }
                }
                Some((s, event)) = web_rx.recv() => match event {
                    WebRtcEvent::LocalCandidate(candidate) => self.to_session(&s, ServerMessage::Ice {
                        call_id: self.call_id.clone(),
                        candidate,
                    }),
                    WebRtcEvent::Connected if winner.as_deref() == Some(s.as_str()) => {
                        machine.handle(Instant::now(), InboundInput::MediaConnected)
                    }
                    WebRtcEvent::Failed(d) if winner.as_deref() == Some(s.as_str()) => {
                        machine.handle(Instant::now(), InboundInput::MediaFailed(d))
                    }
                    _ => {}
                },
                event = self.sip_events.recv() => {
                    let now = Instant::now();
                    match event {
                        Some(InboundSipEvent::Cancelled) => machine.handle(now, InboundInput::Cancelled),
                        Some(InboundSipEvent::Acked) => {
                            self.answered();
                            machine.handle(now, InboundInput::Acked);
                        }
                        Some(InboundSipEvent::RemoteHangup) => machine.handle(now, InboundInput::RemoteHangup),
                        Some(InboundSipEvent::Failed { status, reason }) => {
                            machine.handle(now, InboundInput::SipFailed(format!("{status} {reason}")))
                        }
                        Some(InboundSipEvent::RemoteSdp { sdp }) => {
                            if let (Some(m), Some(w)) = (media.as_mut(), winner.as_deref())
                                && let Some(leg) = legs.get(w)
                            {
                                match m.apply(leg, &sdp) {
                                    Ok(Some(change)) => self.tell_hold(w, change, HoldParty::Remote),
                                    Ok(None) => {}
                                    Err(d) => warn!(detail = %d, "trunk SDP unusable"),
                                }
                            }
                        }
                        Some(InboundSipEvent::ReinviteResult { ok, .. }) => {
                            if let (Some(hold), Some(w)) = (pending_hold.take(), winner.as_deref()) {
                                if let Some(m) = media.as_mut() {
                                    m.hold_done(hold, ok);
                                }
                                if ok {
                                    let change = if hold { HoldChange::RemoteHold } else { HoldChange::RemoteUnhold };
                                    self.tell_hold(w, change, HoldParty::Local);
                                } else {
                                    self.session_error(w, "the far end refused the hold re-INVITE");
                                }
                            }
                        }
                        Some(InboundSipEvent::Terminated) => {}
                        None => machine.handle(now, InboundInput::SipFailed("SIP leg vanished".into())),
                    }
                }
                Some(event) = async { match media.as_mut() { Some(m) => m.events.recv().await, None => std::future::pending().await } } => {
                    match event {
                        MediaEvent::Quality(report) => {
                            if let Some(w) = winner.as_deref() {
                                self.to_session(w, report::stats_message(&self.call_id, &report));
                            }
                        }
                        MediaEvent::InactivityTimeout { leg, silent_for } => {
                            let detail = format!("no media from the {} leg for {}s", leg.as_str(), silent_for.as_secs());
                            machine.handle(Instant::now(), InboundInput::MediaFailed(detail));
                        }
                        MediaEvent::Dtmf { leg: Leg::Sip, digit } => {
                            if let Some(w) = winner.as_deref() {
                                self.to_session(w, ServerMessage::Dtmf { call_id: self.call_id.clone(), digits: digit.to_string() });
                            }
                        }
                        other => debug!(event = ?other, "media event"),
                    }
                }
                _ = tokio::time::sleep_until(deadline) => machine.handle_timeout(Instant::now()),
            }
        }
        let report = match media.as_mut() {
            Some(m) => m.stop().await,
            None => None,
        };
        for (_, leg) in legs.drain() {
            leg.close().await;
        }
        if let Some(outcome) = outcome {
            info!(
                reason = outcome.reason.as_str(),
                sip_status = outcome.sip_status,
                media = report.as_ref().map(|r| r.mode.as_str()),
                detail = %outcome.detail,
                "inbound call ended"
            );
            self.record_with(&outcome, report.as_ref(), &recording);
        }
    }

    /// Makes a WebRTC offer for every session and sends each its `incoming`.
    #[allow(clippy::type_complexity)]
    async fn offer_to_sessions(
        &self,
    ) -> (
        HashMap<String, WebRtcLeg>,
        mpsc::UnboundedReceiver<(String, WebRtcEvent)>,
        mpsc::UnboundedReceiver<(String, CallCommand)>,
    ) {
        let (web_tx, web_rx) = mpsc::unbounded_channel();
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let mut legs = HashMap::new();
        for session in &self.sessions {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let config = self.manager.webrtc.for_user(&self.user);
            let leg = match WebRtcLeg::offer(&config, self.remote.format.codec, tx).await {
                Ok((leg, offer)) => {
                    let (handle_tx, mut handle_rx) = mpsc::unbounded_channel();
                    let message = ServerMessage::Incoming {
                        call_id: self.call_id.clone(),
                        from: self.from.clone(),
                        to: self.did.clone(),
                        sdp: offer,
                    };
                    let event = SessionEvent::Incoming {
                        call_id: self.call_id.clone(),
                        handle: CallHandle::new(handle_tx),
                        offer: message,
                    };
                    if session.events.send(event).is_err() {
                        leg.close().await;
                        continue;
                    }
                    let (sid, cmd_tx) = (session.session_id.clone(), cmd_tx.clone());
                    tokio::spawn(async move {
                        while let Some(c) = handle_rx.recv().await {
                            let _ = cmd_tx.send((sid.clone(), c));
                        }
                        let _ = cmd_tx.send((sid, CallCommand::SignalingLost));
                    });
                    leg
                }
                Err(e) => {
                    warn!(session = %session.session_id, error = %e, "cannot make the WebRTC offer");
                    continue;
                }
            };
            let (sid, web_tx) = (session.session_id.clone(), web_tx.clone());
            tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    let _ = web_tx.send((sid.clone(), e));
                }
            });
            legs.insert(session.session_id.clone(), leg);
        }
        (legs, web_rx, cmd_rx)
    }

    /// Applies the winner's answer, binds the RTP leg, answers the trunk 200 and
    /// starts the bridge.
    async fn answer(
        &self,
        leg: Option<&WebRtcLeg>,
        browser_sdp: &str,
    ) -> Result<(CallMedia, Plan), String> {
        let leg = leg.ok_or("the accepting session has no media leg")?;
        leg.accept_answer(browser_sdp)
            .await
            .map_err(|e| e.to_string())?;
        let config = &self.manager.config;
        let range = config.sip.rtp_port_range().map_err(|e| e.to_string())?;
        let rtp = RtpLeg::bind(config.server.media_ip, range)
            .await
            .map_err(|e| e.to_string())?;
        let advertised = config
            .sip
            .external_address
            .unwrap_or_else(|| config.server.advertised_ip());
        let codec = self.remote.format.codec;
        let ours = LocalSdp::offer(
            advertised,
            rtp.local_addr().port(),
            u64::from(rand::random::<u32>()),
            &[codec],
        );
        let answer = ours.answer_to(&self.remote);
        let plan = match self.slot.info() {
            Some(info) => recordings::plan(&self.manager, &info, config.media.record_all),
            None => Plan::default(),
        };
        let mut media = CallMedia::new(
            rtp,
            answer,
            media_plane::codecs(&config.media.sip_codecs),
            media_plane::bridge_config(
                &config.media,
                plan.target.clone(),
                DropCounter::new(self.manager.metrics.foreign_rtp_drops()),
            ),
        );
        media.apply(leg, &self.offer)?;
        self.handle.answer(media.local_sdp(), media.answerer());
        Ok((media, plan))
    }

    fn answered(&self) {
        self.slot.update(|i| {
            i.state = CallState::Answered;
            i.answered_at = Some(SystemTime::now());
        });
        if let Some(info) = self.slot.info() {
            self.manager.events.call_answered(&info);
        }
    }

    fn to_session(&self, session: &str, message: ServerMessage) {
        if let Some(s) = self.sessions.iter().find(|s| s.session_id == session) {
            let _ = s.events.send(SessionEvent::Message(message));
        }
    }

    fn session_error(&self, session: &str, message: &str) {
        let mut error = ServerMessage::error(
            crate::signaling::protocol::ErrorCode::BadRequest,
            message,
            &self
                .slot
                .info()
                .map(|i| i.correlation_id)
                .unwrap_or_default(),
        );
        if let ServerMessage::Error { call_id, .. } = &mut error {
            *call_id = Some(self.call_id.clone());
        }
        self.to_session(session, error);
    }

    fn tell_hold(&self, session: &str, change: HoldChange, by: HoldParty) {
        let call_id = self.call_id.clone();
        self.to_session(
            session,
            match change {
                HoldChange::RemoteHold => ServerMessage::Hold { call_id, by },
                HoldChange::RemoteUnhold => ServerMessage::Unhold { call_id, by },
            },
        );
    }

    /// Metrics and the call record (no recording planned).
    fn record(&self, outcome: &Outcome, media: Option<&BridgeReport>) {
        self.record_with(outcome, media, &Plan::default());
    }

    /// Metrics, the call record and the recording (`recording.ready`).
    fn record_with(&self, outcome: &Outcome, media: Option<&BridgeReport>, recording: &Plan) {
        self.manager
            .metrics
            .calls_total
            .with_label_values(&["inbound", outcome.reason.as_str()])
            .inc();
        if let Some(info) = self.slot.info() {
            let quality = media.map(|m| &m.quality);
            let result = media.and_then(|m| m.recording.as_ref());
            let record = report::call_record(&info, outcome, media.map(|m| m.mode), quality);
            recordings::finish_call(&self.manager, &info, record, recording, result);
        }
    }
}
