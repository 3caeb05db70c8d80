//! A leg for an INVITE we answered (we are the UAS): created confirmed when our 2xx
//! goes out. Everything in the dialog afterwards (BYE either way, re-INVITE, UPDATE,
//! INFO, session refreshes) is the same as on a leg we placed. Until the ACK comes
//! the initial INVITE counts as the peer's INVITE in progress, so our own
//! re-INVITEs wait for it (RFC 3261 §14.1).

use std::collections::VecDeque;
use std::sync::Arc;

use rsip::Request;

use super::session_timer::SessionTimer;
use super::{Leg, Phase};
use crate::sip::dialog::Dialog;
use crate::sip::message::lists_token;
use crate::sip::transport::Peer;
use crate::sip::user_agent::context::CallContext;

/// What a leg answered as UAS starts with.
#[derive(Debug)]
pub(crate) struct UasStart {
    /// The INVITE we answered.
    pub invite: Request,
    /// Where in-dialog requests go when the dialog gives no IP literal (and over
    /// TCP/TLS: the connection).
    pub target: Peer,
    /// The dialog of our 2xx.
    pub dialog: Dialog,
    /// Our SDP in the 2xx.
    pub local_sdp: String,
    /// The peer's offer in the INVITE, if any.
    pub remote_sdp: Option<String>,
    /// Session timer negotiated in the 2xx, if any.
    pub session: Option<SessionTimer>,
}

impl Leg {
    /// A confirmed leg for the INVITE we answered 2xx (the ACK is still to come).
    pub(crate) fn from_uas(ctx: Arc<CallContext>, call_id: String, start: UasStart) -> Leg {
        let peer_allows_update = lists_token(&start.invite.headers, "Allow", "UPDATE");
        Leg {
            call_id,
            target: start.target,
            invite: start.invite,
            invite_branch: String::new(),
            invite_tx: None,
            old_invites: Vec::new(),
            invite_rounds: 0,
            se_interval: ctx.trunk.session_timer.session_expires,
            cancel_tx: None,
            early: Vec::new(),
            auth: ctx.digest_client(),
            dialog: Some(start.dialog),
            ack: None,
            reinvite_acks: VecDeque::new(),
            forks: Vec::new(),
            clients: Vec::new(),
            local_sdp: start.local_sdp,
            remote_sdp: start.remote_sdp,
            peer_allows_update,
            session: start.session,
            queued_reinvites: VecDeque::new(),
            glare_retry: None,
            remote_invite_pending: true,
            queued_infos: VecDeque::new(),
            refer_subscription: None,
            // Transfers are for the calls we place: REFER on an inbound call is declined.
            refer_allowed: false,
            bye_at: None,
            last_reason: String::new(),
            hung_up: false,
            phase: Phase::Confirmed,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            ctx,
        }
    }
}
