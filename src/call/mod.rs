//! Calls: admission (limits, dial plan) and the task that joins a browser leg to a
//! SIP leg for each call.
//!
//! I/O contract: a session calls [`CallManager::start_outbound`]; the call runs on
//! its own task, sends protocol messages to the session's channel, and takes
//! [`CallCommand`]s through the returned [`CallHandle`]. The decisions are made by
//! the sans-IO [`machine::OutboundCall`]; `outbound.rs` only drives it.

pub mod dialplan;
pub mod directory;
pub mod fleet_limits;
pub mod inbound;
mod inbound_job;
pub mod inbound_machine;
pub mod location;
pub mod machine;
pub mod media_plane;
mod outbound;
pub mod recordings;
pub mod registry;
pub mod report;
mod transfer;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::auth::{Identity, Scope};
use crate::config::Config;
use crate::drain::Drain;
use crate::events::Events;
use crate::media::candidates::LegGuard;
use crate::media::webrtc_leg::{IceCandidate, WebRtcLegConfig};
use crate::media::webrtc_setup::DtlsIdentity;
use crate::metrics::Metrics;
use crate::signaling::protocol::{EndReason, ServerMessage};
use crate::sip::SipEndpoint;
use dialplan::Dialplan;
use registry::{CallInfo, CallRegistry, CallState, Direction};

/// How long the browser has to get ICE and DTLS up.
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(20);

/// A call that was refused before it started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallRefused {
    /// The `ended` reason to report.
    pub reason: EndReason,
    /// What was wrong and what to do.
    pub message: String,
}

/// Who is calling and how to find the logs of it.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The authenticated user.
    pub identity: Arc<Identity>,
    /// The WebSocket session the call belongs to.
    pub session_id: String,
    /// Correlation id of the call (logs, SIP `X-Correlation-ID`).
    pub correlation_id: String,
}

/// What the browser asked for in a `call` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    /// The client's call id.
    pub call_id: String,
    /// The number as dialed.
    pub to: String,
    /// The browser's SDP offer.
    pub offer_sdp: String,
    /// Withhold the caller id.
    pub privacy: bool,
}

/// What calls and the inbound router send to a session task.
#[derive(Debug)]
pub enum SessionEvent {
    /// A protocol message for the browser.
    Message(ServerMessage),
    /// An incoming call offered to this session: remember `handle` under `call_id`
    /// (for `accept`/`reject`/`ice`/`hangup`) and send `offer` (an `incoming`).
    Incoming {
        /// The gateway's call id (`i-…`).
        call_id: String,
        /// Commands to the inbound call.
        handle: CallHandle,
        /// The `incoming` message.
        offer: ServerMessage,
    },
}

/// A request from the session to a running call.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallCommand {
    /// The browser hung up.
    Hangup,
    /// A trickled browser ICE candidate (`None`: end of candidates).
    Ice(Option<IceCandidate>),
    /// The session ended without the browser hanging up.
    SignalingLost,
    /// Send DTMF digits to the far end.
    Dtmf(String),
    /// Put the call on hold (`true`) or take it off hold (`false`).
    Hold(bool),
    /// Accept an incoming call with the browser's SDP answer.
    Accept(String),
    /// Reject an incoming call.
    Reject,
    /// The gateway ends the call (operator API, drain timeout): hang up the SIP
    /// leg and tell the browser this reason.
    Terminate(EndReason),
}

/// The session's handle to one call. Dropping it counts as [`CallCommand::SignalingLost`].
#[derive(Debug, Clone)]
pub struct CallHandle {
    commands: mpsc::UnboundedSender<CallCommand>,
}

impl CallHandle {
    /// A handle that delivers commands into `commands`.
    pub fn new(commands: mpsc::UnboundedSender<CallCommand>) -> CallHandle {
        CallHandle { commands }
    }

    /// Sends a command; returns false when the call has already ended.
    pub fn send(&self, command: CallCommand) -> bool {
        self.commands.send(command).is_ok()
    }
}

/// Takes one call attempt of a user from the per-user attempt rate
/// (`ratelimit.calls_*`, shared with browser `call`s); `Err`: how long to wait.
pub type AttemptCheck = Arc<dyn Fn(&str) -> Result<(), Duration> + Send + Sync>;

/// What decides whether a new call (a browser `call`, or a far end's transfer) may
/// start, besides the dial plan and capacity.
pub struct CallAdmission {
    /// Set while draining: new calls are refused.
    pub drain: Arc<Drain>,
    /// The per-user call attempt rate the sessions also check.
    pub attempts: AttemptCheck,
    /// Per-user concurrent outbound calls across the fleet (Redis), or per instance.
    pub fleet: Arc<fleet_limits::FleetLimits>,
}

/// Starts and tracks calls for all sessions of this instance.
pub struct CallManager {
    /// The gateway configuration.
    config: Arc<Config>,
    /// The SIP user agent.
    sip: Arc<SipEndpoint>,
    /// Compiled routes.
    dialplan: Dialplan,
    /// Admission and the active-calls gauge.
    registry: Arc<CallRegistry>,
    /// Metrics of the instance.
    metrics: Metrics,
    /// WebRTC leg settings derived from the config.
    webrtc: WebRtcLegConfig,
    /// Every call task, so shutdown can wait for them.
    tasks: TaskTracker,
    /// Live sessions that may receive calls, and DID owners.
    directory: Arc<directory::Directory>,
    /// Call records and webhooks.
    events: Events,
    /// Set while draining: new calls are refused.
    drain: Arc<Drain>,
    /// Which instance holds which users' sessions.
    location: Arc<dyn location::LocationStore>,
    /// Stops the presence refresh, the fleet lease renewal and the recording
    /// directory rescans.
    presence_stop: tokio_util::sync::CancellationToken,
    /// Per-user concurrent outbound calls across the fleet.
    fleet: Arc<fleet_limits::FleetLimits>,
    /// The disk budget of all recordings (`media.recording_max_total_bytes`).
    recording_quota: crate::media::recording::DiskQuota,
    /// The per-user call attempt rate (far-end transfers count as attempts).
    attempts: AttemptCheck,
}

impl CallManager {
    /// Creates the manager; `config` must be validated. `guard` decides which browser
    /// candidates the WebRTC legs use and where their ICE ports are registered.
    pub fn new(
        config: Arc<Config>,
        sip: Arc<SipEndpoint>,
        metrics: Metrics,
        events: Events,
        admission: CallAdmission,
        location: Arc<dyn location::LocationStore>,
        guard: LegGuard,
    ) -> Result<Arc<CallManager>, dialplan::DialplanError> {
        let CallAdmission {
            drain,
            attempts,
            fleet,
        } = admission;
        let dialplan = Dialplan::from_config(&config.dialplan)?;
        let registry = CallRegistry::new(config.server.max_calls, metrics.active_calls.clone());
        let webrtc = WebRtcLegConfig {
            codecs: {
                let allowed = media_plane::codecs(&config.media.browser_codecs);
                let trunk_codecs = media_plane::codecs(&config.media.sip_codecs);
                crate::media::negotiate::browser_preference(&trunk_codecs)
                    .into_iter()
                    .filter(|c| allowed.contains(c))
                    .collect()
            },
            candidates: guard.candidates,
            ice_ports: guard.ice_ports,
            owner: String::new(),
            identity: DtlsIdentity::new(),
            rtcp_interval: config.media.rtcp_interval,
            ice_lite: config.media.ice_lite,
            workers: guard.workers,
        };
        // One DTLS certificate for every call of this process, made now rather than
        // by the first call; kept until the process exits. Should this fail, each
        // leg tries again and a call that cannot get one fails with the reason.
        match webrtc.identity.fingerprint() {
            Ok(fingerprint) => tracing::info!(%fingerprint, "DTLS certificate of the WebRTC legs"),
            Err(e) => tracing::error!(error = %e, "cannot make the DTLS certificate"),
        }
        let dids = config
            .dids
            .iter()
            .map(|d| {
                (
                    dialplan
                        .normalize(&d.number)
                        .unwrap_or_else(|_| d.number.clone()),
                    d.user.clone(),
                )
            })
            .collect();
        let recording_quota = recordings::quota_for(&config.media, &metrics);
        let presence_stop = tokio_util::sync::CancellationToken::new();
        fleet_limits::spawn_renewal(
            Arc::clone(&fleet),
            Arc::clone(&registry),
            presence_stop.clone(),
        );
        Ok(Arc::new(CallManager {
            recording_quota,
            directory: directory::Directory::new(dids),
            events,
            drain,
            location,
            presence_stop,
            attempts,
            fleet,
            config,
            sip,
            dialplan,
            registry,
            metrics,
            webrtc,
            tasks: TaskTracker::new(),
        }))
    }

    /// The directory of sessions that may receive calls.
    pub fn directory(&self) -> &Arc<directory::Directory> {
        &self.directory
    }

    /// Normalises a number as the dial plan does (E.164 when configured).
    pub fn normalize_number(&self, number: &str) -> String {
        self.dialplan
            .normalize(number)
            .unwrap_or_else(|_| number.to_string())
    }

    /// The browser candidate policy of the WebRTC legs (its counters show refusals).
    pub fn candidate_policy(&self) -> &Arc<crate::media::candidates::CandidatePolicy> {
        &self.webrtc.candidates
    }

    /// The DTLS certificate every WebRTC leg of this manager uses.
    pub fn dtls_identity(&self) -> &DtlsIdentity {
        &self.webrtc.identity
    }

    /// The live ICE ports of the WebRTC legs, by user (read by the TURN peer policy).
    pub fn ice_ports(&self) -> &crate::netguard::ice_ports::IcePorts {
        &self.webrtc.ice_ports
    }

    /// The registry of active calls.
    pub fn registry(&self) -> &Arc<CallRegistry> {
        &self.registry
    }

    /// Admits and starts an outbound call; its messages go to `to_browser`.
    pub fn start_outbound(
        self: &Arc<Self>,
        ctx: CallContext,
        request: OutboundRequest,
        to_browser: mpsc::UnboundedSender<SessionEvent>,
    ) -> Result<CallHandle, CallRefused> {
        if self.drain.is_draining() {
            return Err(CallRefused {
                reason: EndReason::Unavailable,
                message: "this gateway instance is draining; place the call again (the load balancer sends it elsewhere)".into(),
            });
        }
        if !ctx.identity.has(Scope::CallsOutbound) {
            return Err(CallRefused {
                reason: EndReason::Forbidden,
                message: "token lacks scope calls:outbound; ask for a token that may place calls"
                    .into(),
            });
        }
        let routed = self.dialplan.route(&request.to).map_err(|e| CallRefused {
            reason: match e {
                dialplan::RouteError::NoRoute(_) => EndReason::Forbidden,
                dialplan::RouteError::BadNumber(_) | dialplan::RouteError::NoCountryCode(_) => {
                    EndReason::NotFound
                }
            },
            message: e.to_string(),
        })?;
        let user_limit = ctx
            .identity
            .max_calls
            .map(|n| n as usize)
            .unwrap_or(self.config.limits.max_calls_per_user);
        let (tx, rx) = mpsc::unbounded_channel();
        let info = CallInfo {
            id: crate::signaling::random_id("c-"),
            call_id: request.call_id.clone(),
            session_id: ctx.session_id.clone(),
            user: ctx.identity.user.clone(),
            direction: Direction::Outbound,
            from: ctx
                .identity
                .caller_id
                .clone()
                .unwrap_or_else(|| ctx.identity.user.clone()),
            to: routed.normalized.clone(),
            trunk: None,
            state: CallState::Dialing,
            correlation_id: ctx.correlation_id.clone(),
            sip_call_id: None,
            started_at: std::time::SystemTime::now(),
            ringing_at: None,
            answered_at: None,
        };
        let slot = self
            .registry
            .try_admit(info, user_limit, tx.clone())
            .map_err(|e| CallRefused {
                reason: EndReason::Limit,
                message: e.to_string(),
            })?;
        let job = outbound::OutboundJob {
            manager: Arc::clone(self),
            ctx,
            privacy: request.privacy || routed.privacy,
            call_id: request.call_id,
            to: request.to,
            routed,
            offer_sdp: request.offer_sdp,
            to_browser,
            commands: rx,
            slot,
            commands_tx: tx.clone(),
            transfer: None,
            user_limit,
            answerer: std::sync::Arc::new(|_| {
                Err("mid-call SDP offers are not accepted by this gateway version".into())
            }),
        };
        self.tasks.spawn(job.run());
        Ok(CallHandle::new(tx))
    }

    /// Stops the presence refresh (at shutdown).
    pub fn stop_presence(&self) {
        self.presence_stop.cancel();
    }

    /// Waits until every call task has finished (after their sessions closed).
    pub async fn wait_idle(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }
}
