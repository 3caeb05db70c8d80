//! The runtime driver of one outbound call: creates the two media legs, sends the
//! INVITE, and feeds events into the [`OutboundCall`] machine until it finishes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use super::dialplan::Routed;
use super::machine::{Input, Limits, OutboundCall, Outcome, Output};
use super::registry::{CallSlot, CallState};
use super::{CallCommand, CallContext, CallManager, MEDIA_TIMEOUT, SessionEvent};
use crate::config::validate::split_host_port;
use crate::media::bridge::Bridge;
use crate::media::codec::AudioCodec;
use crate::media::rtp_leg::RtpLeg;
use crate::media::sdp;
use crate::media::webrtc_leg::{WebRtcEvent, WebRtcLeg};
use crate::signaling::protocol::{EndReason, ErrorCode, ServerMessage};
use crate::sip::{InviteRequest, SdpAnswerer, SipCallEvent, SipCallHandle, TrunkSettings};

/// Codecs offered to the trunk, in order of preference.
const SIP_CODECS: &[AudioCodec] = &[AudioCodec::Pcmu, AudioCodec::Pcma];

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
        self.run_inner().instrument(span).await
    }

    async fn run_inner(mut self) {
        let started = Instant::now();
        info!(to = %self.to, dial = %self.routed.dial, route = self.routed.route, trunks = ?self.routed.trunks, privacy = self.privacy, "outbound call");
        let (media_tx, mut media_rx) = mpsc::unbounded_channel();
        let leg = match WebRtcLeg::answer(&self.manager.webrtc, &self.offer_sdp, media_tx).await {
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
        let offer = self.sip_offer(rtp.local_addr().port());
        let mut trunk = 0;
        let (mut sip, mut sip_events) = match self.invite_first(&mut trunk, &offer).await {
            Ok(parts) => parts,
            Err(e) => {
                leg.close().await;
                return self.fail_setup(e);
            }
        };

        let limits = Limits {
            max_duration: self.manager.config.limits.max_call_duration,
            media_timeout: MEDIA_TIMEOUT,
            invite_timeout: self.manager.config.limits.invite_timeout,
        };
        let trunks_left = self.routed.trunks.len() - trunk;
        let mut machine = OutboundCall::new(self.call_id.clone(), started, limits, trunks_left);
        let mut media = MediaState {
            rtp: Some(rtp),
            bridge: None,
        };
        let mut outcome = None;
        loop {
            while let Some(output) = machine.poll_output() {
                match output {
                    Output::ToBrowser(m) => {
                        self.track_state(&m);
                        self.send(m);
                    }
                    Output::ApplyRemoteSdp(sdp) => {
                        if let Err(detail) = media.apply(&leg, &sdp) {
                            warn!(%detail, "SIP peer SDP unusable");
                            machine.handle(Instant::now(), Input::MediaFailed(detail));
                        }
                    }
                    Output::HangupSip => sip.hangup(),
                    Output::NextTrunk => {
                        trunk += 1;
                        match self.invite_first(&mut trunk, &offer).await {
                            Ok((handle, events)) => {
                                (sip, sip_events) = (handle, events);
                                machine.set_trunks_left(self.routed.trunks.len() - trunk - 1);
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
                    Some(CallCommand::Ice(candidate)) => {
                        if let Err(e) = leg.add_remote_candidate(candidate).await {
                            debug!(error = %e, "browser ICE candidate ignored");
                        }
                    }
                    Some(CallCommand::SignalingLost) | None => {
                        machine.handle(Instant::now(), Input::SignalingLost)
                    }
                },
                event = sip_events.recv() => {
                    let event = event.unwrap_or(SipCallEvent::Failed {
                        status: 500,
                        reason: "SIP leg vanished".into(),
                    });
                    machine.handle(Instant::now(), Input::Sip(event));
                }
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
                _ = tokio::time::sleep_until(deadline) => machine.handle_timeout(Instant::now()),
            }
        }
        if let Some(bridge) = media.bridge.take() {
            let stats = bridge.stats();
            debug!(
                to_sip = stats.to_sip,
                to_browser = stats.to_browser,
                "media relayed"
            );
            bridge.stop().await;
        }
        leg.close().await;
        if let Some(outcome) = outcome {
            self.record(&outcome);
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

    /// The SDP offer for the trunks (the same for every trunk tried).
    fn sip_offer(&self, port: u16) -> String {
        let config = &self.manager.config;
        let advertised = config
            .sip
            .external_address
            .unwrap_or_else(|| config.server.advertised_ip());
        sdp::build_offer(
            advertised,
            port,
            u64::from(rand::random::<u32>()),
            SIP_CODECS,
        )
    }

    /// Sends the INVITE to trunk `*index` of the route, moving on to the next trunk
    /// while one cannot even be addressed (unknown, unresolvable, refused locally).
    async fn invite_first(
        &self,
        index: &mut usize,
        offer: &str,
    ) -> Result<(SipCallHandle, mpsc::UnboundedReceiver<SipCallEvent>), SetupError> {
        let mut last = unavailable("route has no trunks".into());
        while *index < self.routed.trunks.len() {
            match self.invite(&self.routed.trunks[*index], offer).await {
                Ok(parts) => return Ok(parts),
                Err(e) => {
                    warn!(trunk = %self.routed.trunks[*index], message = %e.message, "trunk skipped");
                    last = e;
                    *index += 1;
                }
            }
        }
        Err(last)
    }

    /// Resolves one trunk and sends it the INVITE.
    async fn invite(
        &self,
        trunk_name: &str,
        offer: &str,
    ) -> Result<(SipCallHandle, mpsc::UnboundedReceiver<SipCallEvent>), SetupError> {
        let config = &self.manager.config;
        let trunk = config
            .sip
            .trunk(trunk_name)
            .ok_or_else(|| unavailable(format!("trunk `{trunk_name}` is not configured")))?;
        if !self.manager.sip.trunk_usable(trunk_name) {
            return Err(unavailable(format!(
                "trunk `{trunk_name}` is down (health check failing); skipped"
            )));
        }
        let (host, port) = split_host_port(&trunk.address).map_err(unavailable)?;
        let target = resolve(&host, port).await.map_err(|e| {
            unavailable(format!("cannot resolve trunk `{trunk_name}` ({host}): {e}"))
        })?;
        let from_user = self
            .ctx
            .identity
            .caller_id
            .clone()
            .unwrap_or_else(|| self.ctx.identity.user.clone());
        let request = InviteRequest {
            target,
            target_host: host,
            to_user: self.routed.dial.clone(),
            from_user,
            sdp: offer.to_string(),
            correlation_id: self.ctx.correlation_id.clone(),
            trunk: TrunkSettings::from_config(trunk),
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
        self.record(&Outcome {
            reason: e.reason,
            sip_status: None,
            setup_time: None,
            talk_time: None,
            detail: e.message,
        });
    }

    fn record(&self, outcome: &Outcome) {
        let metrics = &self.manager.metrics;
        metrics
            .calls_total
            .with_label_values(&["outbound", outcome.reason.as_str()])
            .inc();
        if let Some(setup) = outcome.setup_time {
            metrics.call_setup_seconds.observe(setup.as_secs_f64());
        }
        info!(
            reason = outcome.reason.as_str(),
            sip_status = outcome.sip_status,
            talk_secs = outcome.talk_time.map(|d| d.as_secs_f64()),
            detail = %outcome.detail,
            "call ended"
        );
    }

    /// Mirrors the call's progress into the registry (for the operator API).
    fn track_state(&self, message: &ServerMessage) {
        match message {
            ServerMessage::Ringing { .. } | ServerMessage::Progress { .. } => {
                self.slot.update(|i| i.state = CallState::Ringing);
            }
            ServerMessage::Answered { .. } => self.slot.update(|i| {
                i.state = CallState::Answered;
                i.answered_at = Some(std::time::SystemTime::now());
            }),
            _ => {}
        }
    }

    fn send(&self, message: ServerMessage) {
        // The session may be gone; the call still runs to its end on the SIP side.
        let _ = self.to_browser.send(SessionEvent::Message(message));
    }
}

/// The SIP-side media of a call: the RTP socket until the bridge takes it.
struct MediaState {
    rtp: Option<RtpLeg>,
    bridge: Option<Bridge>,
}

impl MediaState {
    fn apply(&mut self, leg: &WebRtcLeg, sdp_text: &str) -> Result<(), String> {
        let remote = sdp::parse_answer(sdp_text, SIP_CODECS).map_err(|e| e.to_string())?;
        if let Some(bridge) = &self.bridge {
            bridge.update_remote(remote);
            return Ok(());
        }
        let rtp = self.rtp.take().ok_or("RTP leg already released")?;
        self.bridge = Some(Bridge::start(leg, rtp, remote).map_err(|e| e.to_string())?);
        Ok(())
    }
}

async fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))
}
