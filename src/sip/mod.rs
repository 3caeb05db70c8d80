//! SIP user agent: transactions (RFC 3261 §17, sans-IO), dialogs, and the UDP transport.
//!
//! STUB: interface only, to be implemented.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

/// Errors of the SIP user agent.
#[derive(Debug, thiserror::Error)]
pub enum SipError {
    /// A socket error.
    #[error("SIP transport: {0}")]
    Io(#[from] std::io::Error),
    /// The endpoint has shut down.
    #[error("SIP endpoint is shut down")]
    Closed,
}

/// Settings of the SIP endpoint.
#[derive(Debug, Clone)]
pub struct SipEndpointConfig {
    /// Local UDP address to bind (port 0: ephemeral).
    pub listen: SocketAddr,
    /// Address put in Via and Contact instead of the bound one (1:1 NAT), if any.
    pub external_ip: Option<std::net::IpAddr>,
    /// `User-Agent` header value.
    pub user_agent: String,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipCallEvent {
    /// 180 Ringing (with SDP if the peer sent one).
    Ringing { sdp: Option<String> },
    /// 183 Session Progress (with SDP for early media, if any).
    Progress { sdp: Option<String> },
    /// 200 OK to the INVITE (ACK already sent).
    Answered { sdp: String },
    /// The INVITE failed with a final response (3xx-6xx), a timeout (408) or a
    /// transport error (503 is reported for those).
    Failed { status: u16, reason: String },
    /// The peer sent BYE (already answered with 200).
    RemoteHangup,
    /// The dialog is over after our own hangup (BYE answered, or CANCEL/487 done).
    Terminated,
}

/// A handle to an outbound call leg.
#[derive(Debug, Clone)]
pub struct SipCallHandle {}

impl SipCallHandle {
    /// Hangs up: CANCEL before a final response, BYE after 200 OK. Idempotent.
    pub fn hangup(&self) {
        todo!()
    }

    /// The SIP Call-ID of the leg.
    pub fn sip_call_id(&self) -> &str {
        todo!()
    }
}

/// The SIP user agent endpoint: owns the socket and all transactions and dialogs.
pub struct SipEndpoint {}

impl SipEndpoint {
    /// Binds the socket and starts the endpoint's tasks.
    pub async fn bind(_config: SipEndpointConfig) -> Result<Arc<SipEndpoint>, SipError> {
        todo!()
    }

    /// The bound local address.
    pub fn local_addr(&self) -> SocketAddr {
        todo!()
    }

    /// Sends an INVITE; events arrive on the returned receiver until `Terminated`,
    /// `Failed` or `RemoteHangup`.
    pub async fn invite(
        &self,
        _request: InviteRequest,
    ) -> Result<(SipCallHandle, mpsc::UnboundedReceiver<SipCallEvent>), SipError> {
        todo!()
    }

    /// Stops the endpoint's tasks.
    pub async fn shutdown(&self) {
        todo!()
    }
}
