//! One WebSocket session: authentication, then the protocol loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use super::protocol::{
    CLOSE_AUTH_FAILED, CLOSE_AUTH_TIMEOUT, CLOSE_FORBIDDEN, ClientMessage, ErrorCode, ServerMessage,
};
use super::{SessionPermit, random_id};
use crate::auth::{AuthError, Identity, Scope};
use crate::call::directory::LiveSession;
use crate::call::{CallCommand, CallContext, CallHandle, OutboundRequest, SessionEvent};
use crate::server::Gateway;

/// Interval of WebSocket pings from the server.
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// A socket silent for this long is considered dead.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the HTTP layer learned about the connection before the upgrade.
#[derive(Debug, Clone)]
pub struct Upgrade {
    /// Token from `?access_token=`, if given.
    pub query_token: Option<String>,
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
            calls: HashMap::new(),
        };
        match session.authenticate(upgrade.query_token).await {
            Ok(identity) => session.serve(identity).await,
            Err(()) => debug!("session closed during authentication"),
        }
        session.hang_up_all();
        gateway.metrics.ws_sessions.dec();
        drop(permit);
    }
    .instrument(span)
    .await
}

struct Session {
    gateway: Arc<Gateway>,
    socket: WebSocket,
    correlation_id: String,
    /// Calls of this session by the client's call id.
    calls: HashMap<String, CallHandle>,
}

enum AuthOutcome {
    Token(String),
    Refuse(ErrorCode, String, u16),
}

impl Session {
    async fn send(&mut self, message: &ServerMessage) -> bool {
        self.socket
            .send(Message::Text(message.to_json().into()))
            .await
            .is_ok()
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.chars().take(120).collect::<String>().into(),
        };
        let _ = self.socket.send(Message::Close(Some(frame))).await;
    }

    async fn refuse(&mut self, code: ErrorCode, message: &str, close: u16) {
        info!(close, %message, "session refused");
        let error = ServerMessage::error(code, message, &self.correlation_id);
        self.send(&error).await;
        self.close(close, message).await;
    }

    /// Waits for the `auth` frame (or uses the query token) and verifies it.
    async fn authenticate(&mut self, query_token: Option<String>) -> Result<Identity, ()> {
        let outcome = match query_token {
            Some(token) => AuthOutcome::Token(token),
            None => self.first_frame().await,
        };
        let token = match outcome {
            AuthOutcome::Token(t) => t,
            AuthOutcome::Refuse(code, message, close) => {
                self.refuse(code, &message, close).await;
                return Err(());
            }
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let identity = match self.gateway.verifier.verify(&token, now) {
            Ok(identity) => identity,
            Err(e) => {
                let close = if e.is_forbidden() {
                    CLOSE_FORBIDDEN
                } else {
                    CLOSE_AUTH_FAILED
                };
                self.refuse(ErrorCode::Unauthorized, &e.to_string(), close)
                    .await;
                return Err(());
            }
        };
        if !identity.has(Scope::CallsOutbound) && !identity.has(Scope::CallsInbound) {
            let e = AuthError::MissingScope("calls:outbound".into());
            let message = format!("{e} (or calls:inbound); ask for a token that may make calls");
            self.refuse(ErrorCode::Forbidden, &message, CLOSE_FORBIDDEN)
                .await;
            return Err(());
        }
        Ok(identity)
    }

    async fn first_frame(&mut self) -> AuthOutcome {
        let timeout = self.gateway.config.server.auth_timeout;
        let frame = match tokio::time::timeout(timeout, self.socket.recv()).await {
            Err(_) => {
                return AuthOutcome::Refuse(
                    ErrorCode::Unauthorized,
                    format!(
                        "no auth message within {}s; send {{\"type\":\"auth\",\"token\":…}} first",
                        timeout.as_secs()
                    ),
                    CLOSE_AUTH_TIMEOUT,
                );
            }
            Ok(None) | Ok(Some(Err(_))) => {
                return AuthOutcome::Refuse(
                    ErrorCode::Unauthorized,
                    "socket closed".into(),
                    CLOSE_AUTH_FAILED,
                );
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let text = match frame {
            Message::Text(t) => t,
            _ => {
                return AuthOutcome::Refuse(
                    ErrorCode::Unauthorized,
                    "first message must be a JSON text frame {\"type\":\"auth\",\"token\":…}"
                        .into(),
                    CLOSE_AUTH_FAILED,
                );
            }
        };
        match ClientMessage::parse(&text) {
            Ok(ClientMessage::Auth { token }) => AuthOutcome::Token(token),
            Ok(ClientMessage::Resume { .. }) => AuthOutcome::Refuse(
                ErrorCode::Unauthorized,
                "unknown or expired session; authenticate again with auth".into(),
                CLOSE_AUTH_FAILED,
            ),
            Ok(_) => AuthOutcome::Refuse(
                ErrorCode::Unauthorized,
                "first message must be auth".into(),
                CLOSE_AUTH_FAILED,
            ),
            Err(e) => AuthOutcome::Refuse(
                ErrorCode::Unauthorized,
                format!("{e}; the first message must be auth"),
                CLOSE_AUTH_FAILED,
            ),
        }
    }

    /// The protocol loop of an authenticated session.
    async fn serve(&mut self, identity: Identity) {
        let session_id = random_id("s-");
        let span = tracing::Span::current();
        span.record("session_id", session_id.as_str());
        span.record("user", identity.user.as_str());
        info!("session ready");
        let identity = Arc::new(identity);
        let ready = ServerMessage::Ready {
            session_id: session_id.clone(),
            resume_token: random_id(""),
            user: identity.user.clone(),
            ice_servers: self.gateway.ice_servers(&identity.user),
        };
        if !self.send(&ready).await {
            return;
        }
        let (events_tx, mut events_rx) = mpsc::unbounded_channel::<SessionEvent>();
        // Sessions allowed to receive calls are listed (with their token's DIDs).
        let _listing = identity.has(Scope::CallsInbound).then(|| {
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
            calls.directory().register(&identity.user, &dids, live)
        });

        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let mut last_heard = tokio::time::Instant::now();
        let max_bytes = self.gateway.config.limits.max_message_bytes;
        loop {
            tokio::select! {
                frame = self.socket.recv() => {
                    last_heard = tokio::time::Instant::now();
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | None => break,
                        Some(Ok(Message::Binary(_))) => {
                            self.reply_error(ErrorCode::BadRequest, "binary frames are not part of the protocol; send JSON text", None).await;
                            continue;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => {
                            debug!(error = %e, "websocket read failed");
                            break;
                        }
                    };
                    if text.len() > max_bytes {
                        let msg = format!("message of {} bytes exceeds limits.max_message_bytes ({max_bytes})", text.len());
                        self.reply_error(ErrorCode::BadRequest, &msg, None).await;
                        continue;
                    }
                    match ClientMessage::parse(&text) {
                        Ok(message) => {
                            let ctx = CallContext {
                                identity: Arc::clone(&identity),
                                session_id: session_id.clone(),
                                correlation_id: String::new(),
                            };
                            self.handle(message, ctx, &events_tx).await;
                        }
                        Err(e) => {
                            debug!(error = %e, "bad frame");
                            self.reply_error(ErrorCode::BadRequest, &e.to_string(), None).await;
                        }
                    }
                }
                Some(event) = events_rx.recv() => {
                    let message = match event {
                        SessionEvent::Message(message) => message,
                        SessionEvent::Incoming { call_id, handle, offer } => {
                            self.calls.insert(call_id, handle);
                            offer
                        }
                    };
                    if let ServerMessage::Ended { call_id, .. } = &message {
                        self.calls.remove(call_id);
                    }
                    if !self.send(&message).await {
                        break;
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > IDLE_TIMEOUT {
                        info!("websocket silent for {}s, closing", IDLE_TIMEOUT.as_secs());
                        break;
                    }
                    if self.socket.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                }
                _ = self.gateway.shutdown.cancelled() => {
                    self.close(1001, "server shutting down").await;
                    break;
                }
            }
        }
        info!(calls = self.calls.len(), "session closed");
    }

    async fn handle(
        &mut self,
        message: ClientMessage,
        mut ctx: CallContext,
        events_tx: &mpsc::UnboundedSender<SessionEvent>,
    ) {
        match message {
            ClientMessage::Ping => {
                self.send(&ServerMessage::Pong).await;
            }
            ClientMessage::Auth { .. } | ClientMessage::Resume { .. } => {
                self.reply_error(ErrorCode::BadRequest, "already authenticated", None)
                    .await;
            }
            ClientMessage::Call {
                call_id,
                to,
                sdp,
                privacy,
            } => {
                if self.calls.contains_key(&call_id) {
                    let msg = format!(
                        "call_id `{call_id}` is already in use in this session; pick a new one"
                    );
                    self.reply_error(ErrorCode::Conflict, &msg, Some(&call_id))
                        .await;
                    return;
                }
                ctx.correlation_id = random_id("");
                let manager = Arc::clone(&self.gateway.calls);
                let request = OutboundRequest {
                    call_id: call_id.clone(),
                    to,
                    offer_sdp: sdp,
                    privacy,
                };
                match manager.start_outbound(ctx, request, events_tx.clone()) {
                    Ok(handle) => {
                        self.calls.insert(call_id, handle);
                    }
                    Err(refused) => {
                        let code = match refused.reason {
                            crate::signaling::protocol::EndReason::Forbidden => {
                                ErrorCode::Forbidden
                            }
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
            ClientMessage::Hangup { call_id } => self.command(&call_id, CallCommand::Hangup).await,
            ClientMessage::Ice { call_id, candidate } => {
                self.command(&call_id, CallCommand::Ice(candidate)).await
            }
            ClientMessage::Accept { call_id, .. } | ClientMessage::Reject { call_id } => {
                let msg = format!("no incoming call `{call_id}`");
                self.reply_error(ErrorCode::NotFound, &msg, Some(&call_id))
                    .await;
            }
            ClientMessage::Dtmf { call_id, .. }
            | ClientMessage::Hold { call_id }
            | ClientMessage::Unhold { call_id } => {
                let msg = "dtmf, hold and unhold are not supported by this gateway version yet";
                self.reply_error(ErrorCode::BadRequest, msg, Some(&call_id))
                    .await;
            }
        }
    }

    async fn command(&mut self, call_id: &str, command: CallCommand) {
        let delivered = self.calls.get(call_id).map(|h| h.send(command));
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

    /// Hangs up every call of the session on the SIP side.
    fn hang_up_all(&mut self) {
        for (_, handle) in self.calls.drain() {
            handle.send(CallCommand::SignalingLost);
        }
    }
}
