//! Inbound calls as the call module sees them: each new INVITE from a trunk that
//! passed admission (source network, digest) arrives as an [`IncomingCall`] on the
//! receiver of [`SipEndpoint::take_incoming`](super::SipEndpoint::take_incoming).
//!
//! ```text
//!  INVITE ──> 100 ──> IncomingCall ── ringing()/progress() ──> 180/183
//!                        │ answer(sdp)  ──> 200 ──ACK──> Acked ... RemoteHangup | Terminated
//!                        │ reject(603) / redirect(uri) / hangup() ──> final ──> Terminated
//!                        │ trunk CANCELs ──> 200 + 487 ──> Cancelled
//!                        └ SipEndpoint::proxy(call, instance) ──> forwarded statelessly
//! ```

use std::net::SocketAddr;

use tokio::sync::mpsc::UnboundedReceiver;

pub use super::endpoint::IncomingCallHandle;

/// A new inbound call, not answered yet (the trunk has had 100 Trying).
#[derive(Debug)]
pub struct IncomingCall {
    /// User part of the From URI (the caller's number).
    pub from_user: String,
    /// Display name of From, if any.
    pub from_display: Option<String>,
    /// User part of `P-Asserted-Identity`, if the trunk sent one.
    pub asserted_user: Option<String>,
    /// The called number, read where the trunk's `called_number_from` says: by
    /// default the Request-URI user, or `To` when the Request-URI is our registered
    /// contact (a registrar's call to the account).
    pub to_user: String,
    /// The Request-URI as received.
    pub request_uri: String,
    /// The SDP offer, if the INVITE carried one (else `answer` must carry an offer
    /// and the trunk's answer comes as `RemoteSdp` with the ACK).
    pub sdp: Option<String>,
    /// Address of the trunk that sent it (behind a trusted proxy: the one its
    /// signed forwarding header vouches for).
    pub source: SocketAddr,
    /// Name of the trunk it came from.
    pub trunk: Option<String>,
    /// SIP Call-ID of the INVITE.
    pub sip_call_id: String,
    /// `X-Correlation-ID` of the INVITE, or a generated one.
    pub correlation_id: String,
    /// Controls the call (clone it freely; dropping every clone ends the call).
    pub handle: IncomingCallHandle,
    /// Progress of the call until exactly one final event.
    pub events: UnboundedReceiver<InboundSipEvent>,
}

/// Progress of an inbound call, reported to the call module.
///
/// Exactly one of `Cancelled`, `RemoteHangup`, `Failed` or `Terminated` ends the
/// stream. After our own `reject`, `redirect` or `hangup` the final event is
/// `Terminated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundSipEvent {
    /// The trunk cancelled before the answer (we answered 200 to the CANCEL and 487
    /// to the INVITE).
    Cancelled,
    /// The ACK for our 200 arrived: the call is established.
    Acked,
    /// The trunk sent BYE (answered with 200).
    RemoteHangup,
    /// The far end changed the media (re-INVITE/UPDATE offer we answered with the
    /// answerer), or its answer in the ACK when our 200 carried the offer.
    RemoteSdp {
        /// The far end's SDP.
        sdp: String,
    },
    /// Outcome of `IncomingCallHandle::reinvite`.
    ReinviteResult {
        /// The far end accepted (2xx).
        ok: bool,
        /// Final status; 0 if nothing was sent (no confirmed dialog).
        status: u16,
        /// The far end's SDP answer, on success.
        sdp: Option<String>,
    },
    /// The call failed: no ACK for our 200 within 64·T1 (a BYE was sent), a transport
    /// error, the dialog died (481/408 mid-call), or nobody answered in time.
    Failed {
        /// SIP status describing it (408 no ACK, 503 transport, 480 not answered).
        status: u16,
        /// What happened.
        reason: String,
    },
    /// The call is over after our own reject, redirect or hangup.
    Terminated,
}

impl InboundSipEvent {
    /// True for the events that end a call's event stream.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Cancelled | Self::RemoteHangup | Self::Failed { .. } | Self::Terminated
        )
    }
}
