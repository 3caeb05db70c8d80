//! One WebSocket session: authentication, then the protocol loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use super::handshake::Joined;
use super::lifetime::{self, TokenLifetime, check_fresh_token};
use super::protocol::{
    CLOSE_AUTH_FAILED, CLOSE_MESSAGE_TOO_BIG, CLOSE_RATE_LIMITED, ClientMessage, EndReason,
    ErrorCode, ServerMessage,
};
use super::resume::{SessionState, Takeover};
use super::users::UserPermit;
use super::{SessionPermit, random_id};
use crate::api::ratelimit::KeyedLimiter;
use crate::auth::{Identity, Scope};
use crate::call::directory::LiveSession;
use crate::call::{CallCommand, CallContext, OutboundRequest, SessionEvent};
use crate::secret::Secret;
use crate::server::Gateway;

/// Interval of WebSocket pings from the server.
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// How long a closing socket waits for the client's Close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Refused messages in a row after which a flooding socket is closed (4029).
const FLOOD_CLOSE_AFTER: u32 = 50;
/// Sessions told to move (`goaway`) reconnect within this spread, so a draining
/// instance's clients do not all arrive on the others in the same instant.
const GOAWAY_SPREAD_MS: u64 = 2000;
/// A socket silent for this long is considered dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the HTTP layer learned about the connection before the upgrade.
#[derive(Debug, Clone)]
pub struct Upgrade {
    /// Token from `?access_token=`, if given.
    pub query_token: Option<Secret>,
    /// Correlation id of the session (from `X-Correlation-ID` or generated).
    pub correlation_id: String,
    /// The client's address.
    pub peer: std::net::SocketAddr,
}

/// Runs a session on an upgraded socket until it closes.
pub async fn run(
    socket: WebSocket,
    gateway: Arc<Gateway>,
    upgrade: Upgrade,
    permit: SessionPermit,
) {
    let span = info_span!(
        "session",
        correlation_id = %upgrade.correlation_id,
        peer = %upgrade.peer,
        session_id = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    async move {
        gateway.metrics.ws_sessions.inc();
        let mut session = Session {
            gateway: Arc::clone(&gateway),
            socket,
            correlation_id: upgrade.correlation_id.clone(),
        };
        match session.handshake(upgrade.query_token).await {
            Ok(joined) => {
                let state = match joined {
                    Joined::New(identity, permit) => session.new_state(identity, permit),
                    Joined::Resumed(state) => {
                        info!(calls = state.calls.len(), "session resumed");
                        *state
                    }
                };
                let (mut state, exit) = session.serve(state).await;
                match exit {
                    Exit::SocketLost => {
                        let grace = gateway.config.server.resume_grace;
                        info!(
                            calls = state.calls.len(),
                            grace_secs = grace.as_secs(),
                            "socket lost, session parked"
                        );
                        gateway.resumable.park(state, grace);
                    }
                    Exit::Shutdown => {
                        gateway.resumable.remove(&state.session_id);
                        state.hang_up_all();
                    }
                    Exit::TakenOver(reply) => {
                        info!("session taken over by a resuming socket");
                        let _ = reply.send(state);
                    }
                }
            }
            Err(()) => debug!("session closed during the handshake"),
        }
        gateway.metrics.ws_sessions.dec();
        drop(permit);
    }
    .instrument(span)
    .await
}

/// Why the protocol loop ended.
enum Exit {
    /// The socket closed or went silent: park the session for `resume`.
    SocketLost,
    /// The gateway is shutting down: end the calls.
    Shutdown,
    /// Another socket resumed the session: hand the state over.
    TakenOver(Takeover),
}

/// One socket's view of a session.
pub(super) struct Session {
    /// Shared gateway state.
    pub(super) gateway: Arc<Gateway>,
    /// The socket.
    pub(super) socket: WebSocket,
    /// Correlation id of the connection.
    pub(super) correlation_id: String,
}

/// Seconds since the Unix epoch (token times are Unix seconds).
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Whether a read failed because the frame is larger than the socket's hard cap
/// (tungstenite refuses it from the frame header, before reading the payload).
pub(super) fn is_too_big(error: &axum::Error) -> bool {
    // axum 0.8 reads with tungstenite 0.29; `abuse_session` fails if that changes.
    std::error::Error::source(error)
        .and_then(|e| e.downcast_ref::<tungstenite::Error>())
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

impl Session {
    pub(super) async fn send(&mut self, message: &ServerMessage) -> bool {
        self.socket
            .send(Message::Text(message.to_json().into()))
            .await
            .is_ok()
    }

    /// Sends a Close frame with `code` and `reason` and completes the closing
    /// handshake: reads until the client's Close (or the end), at most
    /// [`CLOSE_HANDSHAKE_TIMEOUT`], before the socket is dropped (RFC 6455 §7.1.1).
    /// Dropping it with a client frame still unread (a pong crossing our Close) makes
    /// the kernel send RST, and the browser may then lose the Close frame and report
    /// 1006 instead of our code.
    pub(super) async fn close(&mut self, code: u16, reason: &str) {
        if !self.send_close(code, reason).await {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
            while let Some(Ok(message)) = self.socket.recv().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    /// Sends a Close frame without waiting for the client's: for a socket that is
    /// probably dead already (another connection resumed its session and must not
    /// wait for it).
    async fn send_close(&mut self, code: u16, reason: &str) -> bool {
        let frame = CloseFrame {
            code,
            reason: reason.chars().take(120).collect::<String>().into(),
        };
        self.socket.send(Message::Close(Some(frame))).await.is_ok()
    }

    pub(super) async fn refuse(&mut self, code: ErrorCode, message: &str, close: u16) {
        info!(close, %message, "session refused");
        let error = ServerMessage::error(code, message, &self.correlation_id);
        self.send(&error).await;
        self.close(close, message).await;
    }

    /// The state of a new session of `identity`, listed in the directory when it
    /// may receive calls.
    fn new_state(&self, identity: Identity, user_permit: UserPermit) -> SessionState {
        let lifetime = TokenLifetime::new(
            identity.expires_at,
            self.gateway.config.auth.leeway,
            unix_now(),
            tokio::time::Instant::now().into_std(),
        );
        let identity = Arc::new(identity);
        let session_id = random_id("s-");
        let (events_tx, events_rx) = mpsc::unbounded_channel::<SessionEvent>();
        let listing = identity.has(Scope::CallsInbound).then(|| {
            let calls = &self.gateway.calls;
            let dids: Vec<String> = identity
                .dids
                .iter()
                .map(|d| calls.normalize_number(d))
                .collect();
            let live = LiveSession {
                session_id: session_id.clone(),
                events: events_tx.clone(),
            };
            calls.announce(&identity.user, &dids);
            calls.directory().register(&identity.user, &dids, live)
        });
        SessionState {
            identity,
            session_id,
            resume_token: Secret::default(),
            lifetime,
            user_permit,
            calls: HashMap::new(),
            events_tx,
            events_rx,
            listing,
            undelivered: None,
        }
    }

    /// The protocol loop: sends `ready` (with a fresh resume token), then serves the
    /// socket until it ends; returns the state and why it ended.
    async fn serve(&mut self, mut state: SessionState) -> (SessionState, Exit) {
        let span = tracing::Span::current();
        span.record("session_id", state.session_id.as_str());
        span.record("user", state.identity.user.as_str());
        state.resume_token = Secret::from(random_id(""));
        let (takeover_tx, mut takeover_rx) = mpsc::channel::<Takeover>(1);
        self.gateway.resumable.activate(
            &state.session_id,
            &state.resume_token,
            &state.identity,
            takeover_tx,
        );
        let expires_at = state.lifetime.expires_at();
        let ready = ServerMessage::Ready {
            session_id: state.session_id.clone(),
            resume_token: state.resume_token.clone(),
            user: state.identity.user.clone(),
            ice_servers: self.gateway.ice_servers(&state.identity.user, expires_at),
            expires_at: Some(expires_at),
        };
        if !self.send(&ready).await {
            return (state, Exit::SocketLost);
        }
        info!("session ready");
        if let Some(message) = state.undelivered.take()
            && !self.send(&message).await
        {
            state.undelivered = Some(message);
            return (state, Exit::SocketLost);
        }

        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let mut last_heard = tokio::time::Instant::now();
        let max_bytes = self.gateway.config.limits.max_message_bytes;
        let rates = &self.gateway.config.ratelimit;
        let flood: KeyedLimiter<()> =
            KeyedLimiter::new(rates.messages_per_session_per_sec, rates.messages_burst);
        let mut refused = 0u32;
        let mut told_to_move = false;
        let exit = loop {
            tokio::select! {
                frame = self.socket.recv() => {
                    last_heard = tokio::time::Instant::now();
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | None => break Exit::SocketLost,
                        Some(Ok(Message::Binary(_))) => {
                            self.reply_error(ErrorCode::BadRequest, "binary frames are not part of the protocol; send JSON text", None).await;
                            continue;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) if is_too_big(&e) => {
                            let msg = format!("message larger than this socket accepts; limits.max_message_bytes is {max_bytes}");
                            info!("oversized frame beyond the hard cap, closing 1009");
                            self.reply_error(ErrorCode::BadRequest, &msg, None).await;
                            self.close(CLOSE_MESSAGE_TOO_BIG, "message too big").await;
                            break Exit::SocketLost;
                        }
                        Some(Err(e)) => {
                            debug!(error = %e, "websocket read failed");
                            break Exit::SocketLost;
                        }
                    };
                    if let Err(wait) = flood.check(&()) {
                        refused += 1;
                        if refused > FLOOD_CLOSE_AFTER {
                            info!(refused, "message flood, closing 4029");
                            self.close(CLOSE_RATE_LIMITED, "too many messages; slow down and reconnect").await;
                            break Exit::SocketLost;
                        }
                        let mut error = ServerMessage::error(ErrorCode::RateLimited, "too many messages on this socket; wait retry_after_ms", &self.correlation_id);
                        if let ServerMessage::Error { retry_after_ms, .. } = &mut error {
                            *retry_after_ms = Some(wait.millis());
                        }
                        self.send(&error).await;
                        continue;
                    }
                    refused = 0;
                    if text.len() > max_bytes {
                        let msg = format!("message of {} bytes exceeds limits.max_message_bytes ({max_bytes})", text.len());
                        self.reply_error(ErrorCode::BadRequest, &msg, None).await;
                        continue;
                    }
                    match ClientMessage::parse(&text) {
                        Ok(message) => self.handle(message, &mut state).await,
                        Err(e) => {
                            debug!(error = %e, "bad frame");
                            self.reply_error(ErrorCode::BadRequest, &e.to_string(), None).await;
                        }
                    }
                }
                Some(event) = state.events_rx.recv() => {
                    let message = match event {
                        SessionEvent::Message(message) => message,
                        SessionEvent::Incoming { call_id, handle, offer } => {
                            state.calls.insert(call_id, handle);
                            offer
                        }
                    };
                    if let ServerMessage::Ended { call_id, .. } = &message {
                        state.calls.remove(call_id);
                    }
                    if !self.send(&message).await {
                        // Kept for a resuming socket, before anything queued after it.
                        state.undelivered = Some(message);
                        break Exit::SocketLost;
                    }
                }
                _ = lifetime::expired(&state.lifetime) => {
                    info!("token expired without reauth, closing 4001");
                    let msg = "token expired; send reauth with a fresh token before exp, or resume with one within the resume grace";
                    self.reply_error(ErrorCode::Unauthorized, msg, None).await;
                    self.close(CLOSE_AUTH_FAILED, "token expired").await;
                    break Exit::SocketLost;
                }
                Some(reply) = takeover_rx.recv() => {
                    self.send_close(4000, "session resumed on another connection").await;
                    break Exit::TakenOver(reply);
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > IDLE_TIMEOUT {
                        info!("websocket silent for {}s, closing", IDLE_TIMEOUT.as_secs());
                        break Exit::SocketLost;
                    }
                    if self.socket.send(Message::Ping(Default::default())).await.is_err() {
                        break Exit::SocketLost;
                    }
                }
                _ = self.gateway.drain.started(), if !told_to_move => {
                    told_to_move = true;
                    let retry_after_ms = rand::random::<u64>() % GOAWAY_SPREAD_MS;
                    info!(calls = state.calls.len(), retry_after_ms, "draining: telling the client to move (goaway)");
                    let goaway = ServerMessage::Goaway { reason: "draining".into(), retry_after_ms };
                    if !self.send(&goaway).await {
                        break Exit::SocketLost;
                    }
                }
                _ = self.gateway.shutdown.cancelled() => {
                    self.close(1001, "server shutting down").await;
                    break Exit::Shutdown;
                }
            }
        };
        info!(calls = state.calls.len(), "socket closed");
        (state, exit)
    }

    async fn handle(&mut self, message: ClientMessage, state: &mut SessionState) {
        match message {
            ClientMessage::Ping => {
                self.send(&ServerMessage::Pong).await;
            }
            ClientMessage::Auth { .. } | ClientMessage::Resume { .. } => {
                self.reply_error(
                    ErrorCode::BadRequest,
                    "already authenticated; send reauth to extend the session with a fresh token",
                    None,
                )
                .await;
            }
            ClientMessage::Reauth { token } => self.reauth(&token, state).await,
            ClientMessage::Call {
                call_id,
                to,
                sdp,
                privacy,
            } => {
                if state.calls.contains_key(&call_id) {
                    let msg = format!(
                        "call_id `{call_id}` is already in use in this session; pick a new one"
                    );
                    self.reply_error(ErrorCode::Conflict, &msg, Some(&call_id))
                        .await;
                    return;
                }
                if let Err(wait) = self.gateway.check_call_rate(&state.identity.user) {
                    let msg = "too many call attempts; wait retry_after_ms and call again";
                    let mut error =
                        ServerMessage::error(ErrorCode::RateLimited, msg, &self.correlation_id);
                    if let ServerMessage::Error {
                        call_id: id,
                        retry_after_ms,
                        ..
                    } = &mut error
                    {
                        *id = Some(call_id.clone());
                        *retry_after_ms = Some(wait.millis());
                    }
                    self.send(&error).await;
                    self.send(&ServerMessage::Ended {
                        call_id,
                        reason: EndReason::Limit,
                        sip_status: None,
                    })
                    .await;
                    return;
                }
                // The connection's correlation id (from X-Correlation-ID or generated)
                // plus the call id: one id per call, traceable to its session.
                let ctx = CallContext {
                    identity: Arc::clone(&state.identity),
                    session_id: state.session_id.clone(),
                    correlation_id: format!("{}.{call_id}", self.correlation_id),
                };
                let request = OutboundRequest {
                    call_id: call_id.clone(),
                    to,
                    offer_sdp: sdp,
                    privacy,
                };
                let manager = Arc::clone(&self.gateway.calls);
                match manager.start_outbound(ctx, request, state.events_tx.clone()) {
                    Ok(handle) => {
                        state.calls.insert(call_id, handle);
                    }
                    Err(refused) => {
                        let code = match refused.reason {
                            EndReason::Forbidden => ErrorCode::Forbidden,
                            _ => ErrorCode::Unavailable,
                        };
                        self.reply_error(code, &refused.message, Some(&call_id))
                            .await;
                        self.send(&ServerMessage::Ended {
                            call_id,
                            reason: refused.reason,
                            sip_status: None,
                        })
                        .await;
                    }
                }
            }
            ClientMessage::Hangup { call_id } => {
                self.command(state, &call_id, CallCommand::Hangup).await
            }
            ClientMessage::Ice { call_id, candidate } => {
                self.command(state, &call_id, CallCommand::Ice(candidate))
                    .await
            }
            ClientMessage::Accept { call_id, sdp } => {
                self.command(state, &call_id, CallCommand::Accept(sdp))
                    .await
            }
            ClientMessage::Reject { call_id } => {
                self.command(state, &call_id, CallCommand::Reject).await
            }
            ClientMessage::Dtmf { call_id, digits } => {
                self.command(state, &call_id, CallCommand::Dtmf(digits))
                    .await
            }
            ClientMessage::Hold { call_id } => {
                self.command(state, &call_id, CallCommand::Hold(true)).await
            }
            ClientMessage::Unhold { call_id } => {
                self.command(state, &call_id, CallCommand::Hold(false))
                    .await
            }
        }
    }

    /// `reauth`: a fresh token of the same user (with the session's scopes) moves the
    /// session's expiry; a refused one leaves the old expiry standing.
    async fn reauth(&mut self, token: &str, state: &mut SessionState) {
        let fresh = match self.check_token(token) {
            Ok(identity) => identity,
            Err((code, message, _)) => {
                let msg =
                    format!("{message}; the session still ends when its current token expires");
                self.reply_error(code, &msg, None).await;
                return;
            }
        };
        if let Err(e) = check_fresh_token(&state.identity, &fresh) {
            let code = if e.is_forbidden() {
                ErrorCode::Forbidden
            } else {
                ErrorCode::Unauthorized
            };
            info!(error = %e, "reauth refused");
            self.reply_error(code, &e.to_string(), None).await;
            return;
        }
        state.renew_token(&fresh, unix_now(), tokio::time::Instant::now().into_std());
        let expires_at = state.lifetime.expires_at();
        info!(expires_at, "session reauthenticated");
        let reauthed = ServerMessage::Reauthed {
            expires_at,
            ice_servers: self.gateway.ice_servers(&state.identity.user, expires_at),
        };
        self.send(&reauthed).await;
    }

    async fn command(&mut self, state: &SessionState, call_id: &str, command: CallCommand) {
        let delivered = state.calls.get(call_id).map(|h| h.send(command));
        if delivered != Some(true) {
            let msg = format!("no active call `{call_id}` in this session");
            self.reply_error(ErrorCode::NotFound, &msg, Some(call_id))
                .await;
        }
    }

    async fn reply_error(&mut self, code: ErrorCode, message: &str, call_id: Option<&str>) {
        let mut error = ServerMessage::error(code, message, &self.correlation_id);
        if let ServerMessage::Error { call_id: id, .. } = &mut error {
            *id = call_id.map(str::to_owned);
        }
        if !self.send(&error).await {
            warn!("could not send error to browser");
        }
    }
}
