//! The first frame of a socket: `auth` (a new session) or `resume` (an existing one),
//! or the `?access_token=` of the upgrade request.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::ws::Message;

use super::protocol::{
    CLOSE_AUTH_FAILED, CLOSE_AUTH_TIMEOUT, CLOSE_FORBIDDEN, ClientMessage, ErrorCode,
};
use super::resume::SessionState;
use super::session::Session;
use crate::auth::{AuthError, Identity, Scope};

/// How a socket joined.
pub enum Joined {
    /// A new session for this identity.
    New(Identity),
    /// An existing session, resumed.
    Resumed(SessionState),
}

enum FirstFrame {
    Token(String),
    Resume { session_id: String, token: String },
    Refuse(ErrorCode, String, u16),
}

impl Session {
    /// Authenticates the socket (query token, `auth` or `resume` frame); refuses it
    /// with an `error` and the protocol's close code otherwise.
    pub(super) async fn handshake(&mut self, query_token: Option<String>) -> Result<Joined, ()> {
        let first = match query_token {
            Some(token) => FirstFrame::Token(token),
            None => self.first_frame().await,
        };
        match first {
            FirstFrame::Token(token) => self.verify(&token).await.map(Joined::New),
            FirstFrame::Resume { session_id, token } => {
                match self.gateway.resumable.take(&session_id, &token).await {
                    Some(state) => Ok(Joined::Resumed(state)),
                    None => {
                        let msg = "unknown or expired session (resume grace over?); authenticate again with auth";
                        self.refuse(ErrorCode::Unauthorized, msg, CLOSE_AUTH_FAILED)
                            .await;
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

    async fn verify(&mut self, token: &str) -> Result<Identity, ()> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let identity = match self.gateway.verifier.verify(token, now) {
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

    async fn first_frame(&mut self) -> FirstFrame {
        let timeout = self.gateway.config.server.auth_timeout;
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
        match ClientMessage::parse(&text) {
            Ok(ClientMessage::Auth { token }) => FirstFrame::Token(token),
            Ok(ClientMessage::Resume {
                session_id,
                resume_token,
            }) => FirstFrame::Resume {
                session_id,
                token: resume_token,
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
