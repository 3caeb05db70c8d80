//! A call of the core, placed by us or answered by us: what the core asks of
//! either kind goes through here.

use std::time::Instant;

use rsip::{Request, Response};

use super::Transmit;
use super::call::OutboundCall;
use super::leg::Answer;
use super::uas_call::UasCall;
use crate::sip::transport::Peer;

/// An outbound or an inbound call.
#[derive(Debug)]
pub(crate) enum Call {
    /// We placed it (`SipEndpoint::invite`).
    Out(Box<OutboundCall>),
    /// We answer it (`IncomingCall`).
    In(Box<UasCall>),
}

impl Call {
    /// The correlation id.
    pub(crate) fn correlation_id(&self) -> &str {
        match self {
            Call::Out(c) => c.correlation_id(),
            Call::In(c) => c.correlation_id(),
        }
    }

    /// SIP Call-IDs of every leg still held.
    pub(crate) fn call_ids(&self) -> Vec<String> {
        match self {
            Call::Out(c) => c.call_ids(),
            Call::In(c) => vec![c.call_id.clone()],
        }
    }

    /// A response for the leg `call_id`.
    pub(crate) fn handle_response(
        &mut self,
        now: Instant,
        call_id: &str,
        response: Response,
        reason: String,
    ) {
        match self {
            Call::Out(c) => c.handle_response(now, call_id, response, reason),
            Call::In(c) => {
                c.handle_response(now, response, reason);
                c.collect(now);
            }
        }
    }

    /// A request from `source` for the leg `call_id`; `None` if it matches none of
    /// its dialogs.
    pub(crate) fn handle_request(
        &mut self,
        now: Instant,
        call_id: &str,
        source: Peer,
        request: &Request,
    ) -> Option<Answer> {
        match self {
            Call::Out(c) => c.handle_request(now, call_id, source, request),
            Call::In(c) => c.handle_request(now, source, request),
        }
    }

    /// True if leg `call_id` takes in-dialog messages from `source`.
    pub(crate) fn accepts_from(&self, call_id: &str, source: Peer) -> bool {
        match self {
            Call::Out(c) => c.accepts_from(call_id, source),
            Call::In(c) => c.accepts_from(source),
        }
    }

    /// The ACK (from `source`) of a 2xx of ours on leg `call_id`.
    pub(crate) fn handle_ack(&mut self, now: Instant, call_id: &str, source: Peer, ack: &Request) {
        match self {
            Call::Out(c) => c.handle_ack(now, call_id, source, ack),
            Call::In(c) => {
                c.handle_ack(now, source, ack);
                c.collect(now);
            }
        }
    }

    /// No ACK came for a 2xx of ours on leg `call_id`.
    pub(crate) fn handle_no_ack(&mut self, now: Instant, call_id: &str) {
        match self {
            Call::Out(c) => c.handle_no_ack(now, call_id),
            Call::In(c) => {
                c.handle_no_ack(now);
                c.collect(now);
            }
        }
    }

    /// Sending to `dest` failed.
    pub(crate) fn handle_send_error(&mut self, now: Instant, dest: Peer, error: String) {
        match self {
            Call::Out(c) => c.handle_send_error(now, dest, error),
            Call::In(c) => {
                c.handle_send_error(now, dest, error);
                c.collect(now);
            }
        }
    }

    /// Fires due timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        match self {
            Call::Out(c) => c.handle_timeout(now),
            Call::In(c) => {
                c.handle_timeout(now);
                c.collect(now);
            }
        }
    }

    /// The call module hangs up.
    pub(crate) fn hangup(&mut self, now: Instant) {
        match self {
            Call::Out(c) => c.hangup(now),
            Call::In(c) => {
                c.hangup(now);
                c.collect(now);
            }
        }
    }

    /// The call module's re-INVITE.
    pub(crate) fn reinvite(&mut self, now: Instant, sdp: String) {
        match self {
            Call::Out(c) => c.reinvite(now, sdp),
            Call::In(c) => {
                c.reinvite(now, sdp);
                c.collect(now);
            }
        }
    }

    /// A DTMF digit as INFO.
    pub(crate) fn send_dtmf_info(&mut self, now: Instant, digit: char, duration_ms: u32) {
        match self {
            Call::Out(c) => c.send_dtmf_info(now, digit, duration_ms),
            Call::In(c) => {
                c.send_dtmf_info(now, digit, duration_ms);
                c.collect(now);
            }
        }
    }

    /// Handles the legs' events after a request was answered.
    pub(crate) fn collect(&mut self, now: Instant) {
        match self {
            Call::Out(c) => c.collect(now),
            Call::In(c) => c.collect(now),
        }
    }

    /// When `handle_timeout` must be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Call::Out(c) => c.poll_timeout(),
            Call::In(c) => c.poll_timeout(),
        }
    }

    /// The next message to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            Call::Out(c) => c.poll_transmit(),
            Call::In(c) => c.poll_transmit(),
        }
    }

    /// True once it may be forgotten.
    pub(crate) fn is_finished(&self) -> bool {
        match self {
            Call::Out(c) => c.is_finished(),
            Call::In(c) => c.is_finished(),
        }
    }
}
