//! The runtime side of inbound calls: [`IncomingCallHandle`] (commands to the
//! driver), [`SipEndpoint::take_incoming`] and [`SipEndpoint::proxy`], and the
//! construction of an [`IncomingCall`] from what the core reports.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Command, SipEndpoint};
use crate::sip::user_agent::{InboundAction, IncomingInfo, valid_contact};
use crate::sip::{DtmfMode, InboundSipEvent, IncomingCall, SdpAnswerer, SipError};

/// What every clone of a handle shares; the last one dropped ends the call.
#[derive(Debug)]
struct HandleInner {
    /// Handle id in the core.
    id: String,
    /// SIP Call-ID of the INVITE.
    call_id: String,
    /// The trunk's DTMF mode.
    dtmf_mode: DtmfMode,
    /// The driver's command queue.
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::HandleDropped {
            id: std::mem::take(&mut self.id),
        });
    }
}

/// Controls an inbound call. Clones share the call; when the last clone is dropped
/// the call ends (480 before the answer, BYE after).
#[derive(Debug, Clone)]
pub struct IncomingCallHandle {
    /// The shared part.
    inner: Arc<HandleInner>,
}

impl IncomingCallHandle {
    fn action(&self, action: InboundAction) {
        self.send(Command::Respond {
            id: self.inner.id.clone(),
            action,
        });
    }

    fn send(&self, command: Command) {
        if self.inner.commands.send(command).is_err() {
            tracing::debug!(sip_call_id = %self.inner.call_id, "command after endpoint shutdown");
        }
    }

    /// Sends 180 Ringing (again, if called again) until the final response.
    pub fn ringing(&self) {
        self.action(InboundAction::Ringing);
    }

    /// Sends 183 Session Progress with early-media SDP.
    pub fn progress(&self, sdp: String) {
        self.action(InboundAction::Progress(sdp));
    }

    /// Answers with 200 OK and our SDP; `answerer` answers the far end's later offers
    /// (re-INVITE/UPDATE). Events: `Acked`, then the call's life.
    pub fn answer(&self, sdp: String, answerer: SdpAnswerer) {
        self.action(InboundAction::Answer(sdp, answerer));
    }

    /// Refuses the call with a 3xx-6xx final response (e.g. 480, 486, 603); `reason`
    /// replaces the standard reason phrase when not empty.
    pub fn reject(&self, status: u16, reason: &str) -> Result<(), SipError> {
        if !(300..700).contains(&status) {
            return Err(SipError::InvalidRequest(format!(
                "reject status {status} is not 3xx-6xx"
            )));
        }
        self.action(InboundAction::Reject(status, reason.to_string()));
        Ok(())
    }

    /// Redirects the call: 302 with `Contact: <contact_uri>` (e.g. the instance that
    /// holds the user's sessions, `sip:+15551234567@10.0.0.7:5060`).
    pub fn redirect(&self, contact_uri: &str) -> Result<(), SipError> {
        if !valid_contact(contact_uri) {
            return Err(SipError::InvalidRequest(format!(
                "redirect target {contact_uri:?}"
            )));
        }
        self.action(InboundAction::Redirect(contact_uri.to_string()));
        Ok(())
    }

    /// Ends the call: 480 before the answer, BYE after it (sent once the ACK came).
    /// Idempotent.
    pub fn hangup(&self) {
        self.send(Command::Hangup {
            id: self.inner.id.clone(),
        });
    }

    /// Sends a re-INVITE with `sdp` once the call is established; the outcome comes as
    /// `InboundSipEvent::ReinviteResult`.
    pub fn reinvite(&self, sdp: String) {
        self.send(Command::Reinvite {
            id: self.inner.id.clone(),
            sdp,
        });
    }

    /// Sends a DTMF digit (`0-9*#A-D`) as SIP INFO; only on trunks with
    /// `dtmf_mode = info`.
    pub fn send_dtmf_info(&self, digit: char, duration_ms: u32) -> Result<(), SipError> {
        if self.inner.dtmf_mode != DtmfMode::Info {
            return Err(SipError::NotAvailable(
                "INFO DTMF (the trunk uses RFC 4733)",
            ));
        }
        let digit = digit.to_ascii_uppercase();
        if !(digit.is_ascii_digit() || "*#ABCD".contains(digit)) {
            return Err(SipError::InvalidRequest(format!("DTMF digit {digit:?}")));
        }
        self.send(Command::DtmfInfo {
            id: self.inner.id.clone(),
            digit,
            duration_ms: duration_ms.clamp(40, 10_000),
        });
        Ok(())
    }

    /// The SIP Call-ID of the INVITE.
    pub fn sip_call_id(&self) -> &str {
        &self.inner.call_id
    }
}

/// The call module's view of a new inbound call, and the sender of its events.
pub(super) fn incoming_call(
    info: IncomingInfo,
    commands: mpsc::UnboundedSender<Command>,
) -> (IncomingCall, mpsc::UnboundedSender<InboundSipEvent>) {
    let (events_tx, events) = mpsc::unbounded_channel();
    let handle = IncomingCallHandle {
        inner: Arc::new(HandleInner {
            id: info.id,
            call_id: info.sip_call_id.clone(),
            dtmf_mode: info.dtmf_mode,
            commands,
        }),
    };
    let call = IncomingCall {
        from_user: info.from_user,
        from_display: info.from_display,
        asserted_user: info.asserted_user,
        to_user: info.to_user,
        request_uri: info.request_uri,
        sdp: info.sdp,
        source: info.source,
        trunk: Some(info.trunk),
        sip_call_id: info.sip_call_id,
        correlation_id: info.correlation_id,
        handle,
        events,
    };
    (call, events_tx)
}

impl SipEndpoint {
    /// The receiver of new inbound calls (INVITEs that passed admission); `None` if
    /// already taken. Until it is taken every new INVITE gets a stateless 480; once
    /// it is dropped, too.
    pub fn take_incoming(&self) -> Option<mpsc::UnboundedReceiver<IncomingCall>> {
        let taken = match self.incoming.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if taken.is_some() {
            let _ = self.commands.send(Command::AcceptInbound);
        }
        taken
    }

    /// Forwards a ringing inbound call's INVITE statelessly to `target` (the instance
    /// holding the user's sessions), which then handles the dialog with the trunk
    /// directly. Its CANCEL and retransmissions follow; responses come back through
    /// us. Fails if the call was already answered or rejected (the call then ends as
    /// if its handle were dropped).
    pub async fn proxy(&self, incoming: IncomingCall, target: SocketAddr) -> Result<(), SipError> {
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::Proxy {
                id: incoming.handle.inner.id.clone(),
                target,
                done,
            })
            .map_err(|_| SipError::Closed)?;
        let outcome = result.await.map_err(|_| SipError::Closed)?;
        drop(incoming);
        outcome
    }
}
