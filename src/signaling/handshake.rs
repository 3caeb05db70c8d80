//! The first frame of a socket: `auth` (a new session) or `resume` (an existing one,
//! with a still-valid token of its user), or the `?access_token=` of the upgrade
//! request. Frames before authentication are held to
//! `limits.max_auth_message_bytes`.

use axum::extract::ws::Message;

use super::protocol::{
    CLOSE_AUTH_FAILED, CLOSE_AUTH_TIMEOUT, CLOSE_FORBIDDEN, CLOSE_MESSAGE_TOO_BIG,
    CLOSE_RATE_LIMITED, ClientMessage, ErrorCode, ServerMessage,
};
use super::resume::{ResumeRefused, SessionState};
use super::session::{Session, is_too_big, unix_now};
use super::users::UserPermit;
use crate::auth::{AuthError, Identity, Scope};
use crate::secret::Secret;

/// How a socket joined.
pub enum Joined {
    /// A new session for this identity, counted for its user.
    New(Identity, UserPermit),
    /// An existing session, resumed (its token already renewed).
    Resumed(Box<SessionState>),
}

enum FirstFrame {
    Token(Secret),
    Resume {
        session_id: String,
        resume_token: Secret,
        token: Option<Secret>,
    },
    Refuse(ErrorCode, String, u16),
}

/// The refusal of a `resume` without `token` (protocol change: resuming used to
/// need only the resume token).
const RESUME_NEEDS_TOKEN: &str = "resume needs `token`: add a still-valid JWT of the session's user to the resume message ({\"type\":\"resume\",\"session_id\":…,\"resume_token\":…,\"token\":…})";

impl Session {
    /// Authenticates the socket (query token, `auth` or `resume` frame); refuses it
    /// with an `error` and the protocol's close code otherwise.
    pub(super) async fn handshake(&mut self, query_token: Option<Secret>) -> Result<Joined, ()> {
        let first = match query_token {
            Some(token) => FirstFrame::Token(token),
            None => self.first_frame().await,
        };
        match first {
            FirstFrame::Token(token) => {
                let identity = self.verify(&token).await?;
                let permit = self.count_user_session(&identity).await?;
                Ok(Joined::New(identity, permit))
            }
            FirstFrame::Resume {
                session_id,
                resume_token,
                token,
            } => {
                let Some(token) = token else {
                    self.refuse(
                        ErrorCode::Unauthorized,
                        RESUME_NEEDS_TOKEN,
                        CLOSE_AUTH_FAILED,
                    )
                    .await;
                    return Err(());
                };
                let identity = self.verify(&token).await?;
                let resumable = &self.gateway.resumable;
                match resumable.take(&session_id, &resume_token, &identity).await {
                    Ok(mut state) => {
                        let now = tokio::time::Instant::now().into_std();
                        state.renew_token(&identity, unix_now(), now);
                        Ok(Joined::Resumed(Box::new(state)))
                    }
                    Err(ResumeRefused::Unknown) => {
                        let msg = "unknown or expired session (resume grace over?); authenticate again with auth";
                        self.refuse(ErrorCode::Unauthorized, msg, CLOSE_AUTH_FAILED)
                            .await;
                        Err(())
                    }
                    Err(ResumeRefused::Token(e)) => {
                        let (code, close) = if e.is_forbidden() {
                            (ErrorCode::Forbidden, CLOSE_FORBIDDEN)
                        } else {
                            (ErrorCode::Unauthorized, CLOSE_AUTH_FAILED)
                        };
                        self.refuse(code, &e.to_string(), close).await;
                        Err(())
                    }
                }
            }
            FirstFrame::Refuse(code, message, close) => {
                self.refuse(code, &message, close).await;
                Err(())
            }
        }
    }

    /// Verifies a token for this socket: signature and claims, then a calling scope.
    pub(super) async fn verify(&mut self, token: &str) -> Result<Identity, ()> {
        let identity = match self.check_token(token) {
            Ok(identity) => identity,
            Err((code, message, close)) => {
                self.refuse(code, &message, close).await;
                return Err(());
            }
        };
        Ok(identity)
    }

    /// [`Session::verify`] without the refusal: the error code, message and close
    /// code to use (the socket stays open when a `reauth` is refused).
    pub(super) fn check_token(&self, token: &str) -> Result<Identity, (ErrorCode, String, u16)> {
        let identity = self
            .gateway
            .verifier
            .verify(token, unix_now())
            .map_err(|e| {
                let close = if e.is_forbidden() {
                    CLOSE_FORBIDDEN
                } else {
                    CLOSE_AUTH_FAILED
                };
                (ErrorCode::Unauthorized, e.to_string(), close)
            })?;
        if !identity.has(Scope::CallsOutbound) && !identity.has(Scope::CallsInbound) {
            let e = AuthError::MissingScope("calls:outbound".into());
            let message = format!("{e} (or calls:inbound); ask for a token that may make calls");
            return Err((ErrorCode::Forbidden, message, CLOSE_FORBIDDEN));
        }
        Ok(identity)
    }

    /// Counts a new session of the identity's user against
    /// `limits.max_sessions_per_user`; refuses the socket (4029) beyond it.
    async fn count_user_session(&mut self, identity: &Identity) -> Result<UserPermit, ()> {
        let limit = self.gateway.config.limits.max_sessions_per_user;
        if let Some(permit) =
            self.gateway
                .user_sessions
                .try_open(&identity.user, limit, identity.expires_at)
        {
            return Ok(permit);
        }
        let grace = self.gateway.config.server.resume_grace;
        let message = format!(
            "too many sessions of user `{}` on this gateway (limits.max_sessions_per_user = {limit}); close another session, or wait up to retry_after_ms for a dropped one to expire",
            identity.user
        );
        tracing::info!(user = %identity.user, limit, "too many sessions of this user");
        self.gateway
            .metrics
            .rate_limited_total
            .with_label_values(&["session"])
            .inc();
        let mut error =
            ServerMessage::error(ErrorCode::RateLimited, &message, &self.correlation_id);
        if let ServerMessage::Error { retry_after_ms, .. } = &mut error {
            *retry_after_ms = Some(u64::try_from(grace.as_millis()).unwrap_or(u64::MAX));
        }
        self.send(&error).await;
        self.close(CLOSE_RATE_LIMITED, "too many sessions of this user")
            .await;
        Err(())
    }

    async fn first_frame(&mut self) -> FirstFrame {
        let timeout = self.gateway.config.server.auth_timeout;
        let limit = self.gateway.config.limits.max_auth_message_bytes;
        let frame = match tokio::time::timeout(timeout, self.socket.recv()).await {
            Err(_) => {
                return FirstFrame::Refuse(
                    ErrorCode::Unauthorized,
                    format!(
                        "no auth message within {}s; send {{\"type\":\"auth\",\"token\":…}} first",
                        timeout.as_secs()
                    ),
                    CLOSE_AUTH_TIMEOUT,
                );
            }
            Ok(Some(Err(e))) if is_too_big(&e) => {
                return FirstFrame::Refuse(
                    ErrorCode::BadRequest,
                    format!(
                        "first message is larger than this socket accepts; the auth message may have at most {limit} bytes (limits.max_auth_message_bytes)"
                    ),
                    CLOSE_MESSAGE_TOO_BIG,
                );
            }
            Ok(None) | Ok(Some(Err(_))) => {
                return FirstFrame::Refuse(
                    ErrorCode::Unauthorized,
                    "socket closed".into(),
                    CLOSE_AUTH_FAILED,
                );
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Message::Text(text) = frame else {
            return FirstFrame::Refuse(
                ErrorCode::Unauthorized,
                "first message must be a JSON text frame {\"type\":\"auth\",\"token\":…}".into(),
                CLOSE_AUTH_FAILED,
            );
        };
        if text.len() > limit {
            return FirstFrame::Refuse(
                ErrorCode::BadRequest,
                format!(
                    "first message of {} bytes exceeds limits.max_auth_message_bytes ({limit}); send {{\"type\":\"auth\",\"token\":…}} with a token of at most auth.max_token_bytes",
                    text.len()
                ),
                CLOSE_MESSAGE_TOO_BIG,
            );
        }
        match ClientMessage::parse(&text) {
            Ok(ClientMessage::Auth { token }) => FirstFrame::Token(token),
            Ok(ClientMessage::Resume {
                session_id,
                resume_token,
                token,
            }) => FirstFrame::Resume {
                session_id,
                resume_token,
                token,
            },
            Ok(_) => FirstFrame::Refuse(
                ErrorCode::Unauthorized,
                "first message must be auth (or resume)".into(),
                CLOSE_AUTH_FAILED,
            ),
            Err(e) => FirstFrame::Refuse(
                ErrorCode::Unauthorized,
                format!("{e}; the first message must be auth"),
                CLOSE_AUTH_FAILED,
            ),
        }
    }
}
