//! Extra 2xx responses from a forking proxy (another To tag than the dialog we kept):
//! RFC 3261 §13.2.2.4 says the UAC ACKs each one and, not wanting that dialog, ends it
//! with a BYE. A `Fork` is that ACK plus the BYE's client transaction.

use std::time::Instant;

use rsip::{Method, Request, Response};

use crate::sip::dialog::{Dialog, DialogError};
use crate::sip::message::branch;
use crate::sip::message::build::{self, new_branch, request_bytes};
use crate::sip::transaction::{NonInviteClient, TimerConfig};
use crate::sip::transport::{Peer, Transport};

/// A dialog created by a forked 2xx that we tear down at once.
#[derive(Debug)]
pub(crate) struct Fork {
    /// The peer's tag of this dialog.
    pub remote_tag: String,
    /// Where its ACK and BYE go.
    pub dest: Peer,
    /// The ACK, resent if this 2xx is retransmitted.
    pub ack: Vec<u8>,
    /// Branch of the BYE, to match its responses.
    pub bye_branch: String,
    /// The BYE's client transaction.
    pub bye: NonInviteClient,
}

impl Fork {
    /// Builds the ACK (to send now) and starts the BYE transaction for `response`.
    pub(crate) fn start(
        now: Instant,
        invite: &Request,
        response: &Response,
        local: Peer,
        target: Peer,
        timers: TimerConfig,
    ) -> Result<Self, DialogError> {
        let mut dialog = Dialog::from_uac_2xx(invite, response)?;
        let dest = match target.transport {
            Transport::Udp => dialog.next_hop().map(Peer::udp).unwrap_or(target),
            _ => target,
        };
        let ack = request_bytes(&dialog.ack(build::via(local, &new_branch()))?);
        let bye = dialog.request(Method::Bye, build::via(local, &new_branch()), Vec::new())?;
        Ok(Self {
            remote_tag: dialog.remote_tag.clone(),
            dest,
            ack,
            bye_branch: branch(&bye).unwrap_or_default(),
            bye: NonInviteClient::new(now, &bye, timers, dest.transport.reliability()),
        })
    }
}
