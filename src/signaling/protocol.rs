//! Signaling protocol v1: the JSON messages exchanged with browsers
//! (see `docs/protocol.md`). Shapes here are a public contract: add optional fields,
//! never rename.

use serde::{Deserialize, Serialize};

use crate::media::webrtc_leg::IceCandidate;
use crate::secret::Secret;

/// WebSocket close code: the token is not valid.
pub const CLOSE_AUTH_FAILED: u16 = 4001;
/// WebSocket close code: the token is valid but lacks a needed scope.
pub const CLOSE_FORBIDDEN: u16 = 4003;
/// WebSocket close code: no `auth` frame within `auth_timeout`.
pub const CLOSE_AUTH_TIMEOUT: u16 = 4008;
/// WebSocket close code: rate limited (also: too many sessions of one user).
pub const CLOSE_RATE_LIMITED: u16 = 4029;
/// WebSocket close code (RFC 6455): a frame larger than the socket accepts.
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

/// A message from the browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First frame: authenticate.
    Auth {
        /// The JWT.
        token: Secret,
    },
    /// First frame of a reconnecting socket.
    Resume {
        /// The session to resume.
        session_id: String,
        /// The secret given in `ready`.
        resume_token: Secret,
        /// A still-valid JWT of the session's user (required; optional in the
        /// type only so that a resume without it gets a clear refusal).
        #[serde(default)]
        token: Option<Secret>,
    },
    /// A fresh token for the session before its current one expires.
    Reauth {
        /// The fresh JWT (same `sub`).
        token: Secret,
    },
    /// Place an outbound call.
    Call {
        /// Client-chosen call id.
        call_id: String,
        /// The dialed number.
        to: String,
        /// The browser's SDP offer.
        sdp: String,
        /// Withhold the caller id from the called party (`Privacy: id`).
        #[serde(default)]
        privacy: bool,
    },
    /// Accept an incoming call.
    Accept {
        /// The incoming call's id.
        call_id: String,
        /// The browser's SDP answer.
        sdp: String,
    },
    /// Reject an incoming call.
    Reject {
        /// The incoming call's id.
        call_id: String,
    },
    /// End a call.
    Hangup {
        /// The call to end.
        call_id: String,
    },
    /// A trickled ICE candidate (`null`: end of candidates).
    Ice {
        /// The call it belongs to.
        call_id: String,
        /// The candidate.
        #[serde(default)]
        candidate: Option<IceCandidate>,
    },
    /// Send DTMF digits.
    Dtmf {
        /// The call.
        call_id: String,
        /// Digits from `0-9*#A-D`.
        digits: String,
    },
    /// Put a call on hold.
    Hold {
        /// The call.
        call_id: String,
    },
    /// Resume a held call.
    Unhold {
        /// The call.
        call_id: String,
    },
    /// Keepalive; answered with `pong`.
    Ping,
}

/// One ICE server handed to the browser in `ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` / `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<Secret>,
}

/// A message to the browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Authentication succeeded.
    Ready {
        /// The session id (for `resume`).
        session_id: String,
        /// Secret for `resume`.
        resume_token: Secret,
        /// The authenticated user.
        user: String,
        /// STUN/TURN servers for the browser's peer connection.
        ice_servers: Vec<IceServer>,
        /// The token's `exp` (Unix seconds): send `reauth` before it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
    /// A `reauth` succeeded: the session now lives until the fresh token's `exp`.
    Reauthed {
        /// The fresh token's `exp` (Unix seconds).
        expires_at: u64,
        /// STUN/TURN servers with credentials valid for the fresh token's life (for
        /// peer connections created from now on).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
    },
    /// The gateway's SDP answer to a `call`.
    Answer {
        /// The call.
        call_id: String,
        /// SDP answer.
        sdp: String,
    },
    /// The far end is ringing (180).
    Ringing {
        /// The call.
        call_id: String,
    },
    /// Session progress (183), early media may flow.
    Progress {
        /// The call.
        call_id: String,
    },
    /// The far end answered (200).
    Answered {
        /// The call.
        call_id: String,
    },
    /// The call is over.
    Ended {
        /// The call.
        call_id: String,
        /// Why (see [`EndReason`]).
        reason: EndReason,
        /// The SIP status that ended it, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sip_status: Option<u16>,
    },
    /// A trickled ICE candidate of the gateway (`null`: end of candidates).
    Ice {
        /// The call.
        call_id: String,
        /// The candidate.
        candidate: Option<IceCandidate>,
    },
    /// An incoming call.
    Incoming {
        /// Gateway-chosen call id.
        call_id: String,
        /// Caller number.
        from: String,
        /// Called number.
        to: String,
        /// The gateway's SDP offer.
        sdp: String,
    },
    /// The call is on hold: `by` is `local` (our `hold` succeeded) or `remote` (the
    /// far end put it on hold).
    Hold {
        /// The call.
        call_id: String,
        /// Who holds it.
        by: HoldParty,
    },
    /// The call is off hold again (`by` as for `hold`).
    Unhold {
        /// The call.
        call_id: String,
        /// Who released it.
        by: HoldParty,
    },
    /// A DTMF digit received from the far end (RFC 4733).
    Dtmf {
        /// The call.
        call_id: String,
        /// The digit (`0-9*#A-D`).
        digits: String,
    },
    /// Call quality, sent periodically.
    Stats {
        /// The call.
        call_id: String,
        /// Mean opinion score (1-5).
        mos: f64,
        /// Interarrival jitter, ms.
        jitter_ms: f64,
        /// Packet loss, percent.
        loss_pct: f64,
        /// Round-trip time, ms.
        rtt_ms: f64,
    },
    /// A request failed.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// What was wrong and what to do.
        message: String,
        /// Correlation id to quote in support requests.
        correlation_id: String,
        /// The call the error is about, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        /// For `rate_limited`: when to retry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// Answer to `ping`.
    Pong,
    /// This instance drains: reconnect through the load balancer (at once without a
    /// call, after the calls end with one), after `retry_after_ms`.
    Goaway {
        /// Why (`draining`).
        reason: String,
        /// How long to wait before reconnecting (spreads the sessions' reconnections).
        retry_after_ms: u64,
    },
}

/// Who put a call on hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldParty {
    /// This browser.
    Local,
    /// The far end.
    Remote,
}

/// Why a call ended (protocol v1 `ended.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The browser hung up.
    Hangup,
    /// The far end hung up.
    RemoteHangup,
    /// 486 / 600.
    Busy,
    /// 603.
    Rejected,
    /// 408 / 480 / 487 after a timeout.
    NoAnswer,
    /// 404 / 484.
    NotFound,
    /// 502 / 503 / 504, no trunk reachable.
    Unavailable,
    /// 403, dial plan or scope.
    Forbidden,
    /// Per-user or capacity limit.
    Limit,
    /// ICE/DTLS failed or media stopped.
    MediaFailed,
    /// The WebSocket went away and was not resumed.
    SignalingLost,
    /// An incoming call was accepted by another session of the same user.
    AnsweredElsewhere,
    /// Anything else.
    Error,
}

impl EndReason {
    /// The reason for a final SIP failure status.
    pub fn from_sip_status(status: u16) -> EndReason {
        match status {
            486 | 600 => EndReason::Busy,
            603 => EndReason::Rejected,
            408 | 480 | 487 => EndReason::NoAnswer,
            404 | 484 | 604 => EndReason::NotFound,
            403 => EndReason::Forbidden,
            502..=504 => EndReason::Unavailable,
            _ => EndReason::Error,
        }
    }

    /// The reason's wire name (also used as a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Hangup => "hangup",
            EndReason::RemoteHangup => "remote_hangup",
            EndReason::Busy => "busy",
            EndReason::Rejected => "rejected",
            EndReason::NoAnswer => "no_answer",
            EndReason::NotFound => "not_found",
            EndReason::Unavailable => "unavailable",
            EndReason::Forbidden => "forbidden",
            EndReason::Limit => "limit",
            EndReason::MediaFailed => "media_failed",
            EndReason::SignalingLost => "signaling_lost",
            EndReason::AnsweredElsewhere => "answered_elsewhere",
            EndReason::Error => "error",
        }
    }
}

/// Protocol v1 `error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame could not be understood.
    BadRequest,
    /// Authentication failed.
    Unauthorized,
    /// Not allowed.
    Forbidden,
    /// Unknown call id.
    NotFound,
    /// Duplicate call id.
    Conflict,
    /// Too many requests.
    RateLimited,
    /// Draining or at capacity.
    Unavailable,
    /// A bug or internal failure.
    Internal,
}

/// Why a frame could not be turned into a [`ClientMessage`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON.
    #[error("frame is not valid JSON ({0}); send one JSON object per text frame")]
    NotJson(String),
    /// JSON but not an object with a string `type`.
    #[error("frame has no string `type` field; every message needs one")]
    NoType,
    /// A `type` this server does not know.
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    /// Known type, wrong fields.
    #[error("bad `{kind}` message: {detail}")]
    BadFields {
        /// The message type.
        kind: String,
        /// What serde said (names the field).
        detail: String,
    },
    /// A `call_id` outside the allowed alphabet or length.
    #[error("call_id must be 1-64 characters of A-Z a-z 0-9 _ . -")]
    BadCallId,
}

const KNOWN_TYPES: &[&str] = &[
    "auth", "resume", "reauth", "call", "accept", "reject", "hangup", "ice", "dtmf", "hold",
    "unhold", "ping",
];

impl ClientMessage {
    /// Parses one text frame with errors that say what was wrong.
    pub fn parse(text: &str) -> Result<ClientMessage, ParseError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ParseError::NotJson(e.to_string()))?;
        let kind = value
            .get("type")
            .and_then(|t| t.as_str())
            .ok_or(ParseError::NoType)?
            .to_owned();
        if !KNOWN_TYPES.contains(&kind.as_str()) {
            return Err(ParseError::UnknownType(kind));
        }
        let message: ClientMessage =
            serde_json::from_value(value).map_err(|e| ParseError::BadFields {
                kind: kind.clone(),
                detail: e.to_string(),
            })?;
        if let Some(id) = message.call_id()
            && !valid_call_id(id)
        {
            return Err(ParseError::BadCallId);
        }
        Ok(message)
    }

    /// The call id the message refers to, if any.
    pub fn call_id(&self) -> Option<&str> {
        match self {
            ClientMessage::Call { call_id, .. }
            | ClientMessage::Accept { call_id, .. }
            | ClientMessage::Reject { call_id }
            | ClientMessage::Hangup { call_id }
            | ClientMessage::Ice { call_id, .. }
            | ClientMessage::Dtmf { call_id, .. }
            | ClientMessage::Hold { call_id }
            | ClientMessage::Unhold { call_id } => Some(call_id),
            ClientMessage::Auth { .. }
            | ClientMessage::Resume { .. }
            | ClientMessage::Reauth { .. }
            | ClientMessage::Ping => None,
        }
    }
}

/// Whether `id` is 1-64 characters of `[A-Za-z0-9_.-]`.
pub fn valid_call_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl ServerMessage {
    /// Serialises to a JSON text frame.
    pub fn to_json(&self) -> String {
        // Serialising these plain structs cannot fail; fall back to a fixed frame anyway.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"serialisation failed","correlation_id":""}"#
                .into()
        })
    }

    /// Builds an `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>, correlation_id: &str) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
            correlation_id: correlation_id.into(),
            call_id: None,
            retry_after_ms: None,
        }
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
