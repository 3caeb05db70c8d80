//! SIP user agent: transactions (RFC 3261 §17, sans-IO), dialogs, and the UDP transport.
//!
//! ```text
//!  call module ──invite()/hangup()──> SipEndpoint ──mpsc──> driver task (endpoint.rs)
//!                                                            │ owns UdpSocket + UserAgent
//!   SipCallEvent <──────── per-call mpsc <───────────────────┤ sleeps until poll_timeout()
//!                                                            ▼
//!  user_agent (sans-IO core): calls ─ transaction/{invite_client, non_invite_client,
//!                                       non_invite_server} ─ dialog ─ message (rsip)
//! ```
//!
//! Everything below `endpoint.rs` is sans-IO: it takes `now: Instant` and datagrams as
//! input and is drained with `poll_transmit()` / `poll_event()` / `poll_timeout()`.

mod dialog;
mod endpoint;
mod message;
pub mod transaction;
mod user_agent;

use std::net::{IpAddr, SocketAddr};

pub use endpoint::{Direction, MessageCount, SipCallHandle, SipEndpoint};
pub use transaction::TimerConfig;

/// Errors of the SIP user agent.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    /// A socket error.
    #[error("SIP transport: {0}")]
    Io(#[from] std::io::Error),
    /// The endpoint has shut down.
    #[error("SIP endpoint is shut down")]
    Closed,
    /// The caller asked for something that cannot be put in a SIP request.
    #[error("invalid SIP request: {0}")]
    InvalidRequest(String),
}

/// Settings of the SIP endpoint.
#[derive(Debug, Clone)]
pub struct SipEndpointConfig {
    /// Local UDP address to bind (port 0: ephemeral).
    pub listen: SocketAddr,
    /// Address put in Via and Contact instead of the bound one (1:1 NAT), if any.
    pub external_ip: Option<IpAddr>,
    /// `User-Agent` header value.
    pub user_agent: String,
    /// RFC 3261 timer values (T1, T2, T4, D).
    pub timers: TimerConfig,
}

impl Default for SipEndpointConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            external_ip: None,
            user_agent: concat!("callbridge/", env!("CARGO_PKG_VERSION")).to_string(),
            timers: TimerConfig::default(),
        }
    }
}

/// What the call module asks for when placing an outbound call.
#[derive(Debug, Clone)]
pub struct InviteRequest {
    /// Where to send the INVITE (the trunk, resolved).
    pub target: SocketAddr,
    /// Host part of the Request-URI and To (the trunk's configured host name).
    pub target_host: String,
    /// User part of the Request-URI and To (the dialed number after the dial plan).
    pub to_user: String,
    /// User part of From.
    pub from_user: String,
    /// SDP offer body.
    pub sdp: String,
    /// Correlation id, sent as `X-Correlation-ID`.
    pub correlation_id: String,
}

/// Progress of an outbound call leg, reported to the call module.
///
/// Exactly one of `Failed`, `RemoteHangup` or `Terminated` ends the stream. After
/// `hangup()` the only event still reported is the final `Terminated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipCallEvent {
    /// 180 Ringing (with SDP if the peer sent one).
    Ringing {
        /// Early-media SDP answer, if any.
        sdp: Option<String>,
    },
    /// 183 Session Progress, or another 1xx except 100 (with SDP for early media, if any).
    Progress {
        /// Early-media SDP answer, if any.
        sdp: Option<String>,
    },
    /// 200 OK to the INVITE (ACK already sent).
    Answered {
        /// The SDP answer (empty if the peer sent none).
        sdp: String,
    },
    /// The INVITE failed with a final response (3xx-6xx), a timeout (408) or a
    /// transport error (503 is reported for those).
    Failed {
        /// SIP status code.
        status: u16,
        /// Reason phrase as received (or describing the local failure).
        reason: String,
    },
    /// The peer sent BYE (already answered with 200).
    RemoteHangup,
    /// The dialog is over after our own hangup (BYE answered, or CANCEL/487 done).
    Terminated,
}

impl SipCallEvent {
    /// True for the events that end a call's event stream.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Failed { .. } | Self::RemoteHangup | Self::Terminated
        )
    }
}
