//! One INVITE dialog usage (a "leg"): the INVITE we send and everything in the
//! dialog it creates, or (`uas.rs`) the dialog of an INVITE we answered. Sans-IO:
//! `handle_*(now, ..)` in; `poll_transmit()`, `poll_event()` and `poll_timeout()` out.
//!
//! ```text
//!  Calling --1xx--> Early --2xx/ACK--> Confirmed --hangup: BYE--> Terminating --> Done
//!    |  hangup: wait for a 1xx          | hangup: CANCEL --> Cancelling --487/ACK--> Done
//!    |  401/407: resend with credentials; 422: resend with the peer's Min-SE
//!    +--3xx-6xx, B, transport error --> Done (Failed)   (a 2xx crossing CANCEL: ACK, BYE)
//! ```
//!
//! | file | concern |
//! | --- | --- |
//! | `setup.rs` | the INVITE: provisional (PRACK), 2xx, failures, auth and 422 retries, CANCEL |
//! | `client.rs` | in-dialog client transactions (BYE, re-INVITE, UPDATE, INFO, PRACK, NOTIFY) |
//! | `midcall.rs` | what we send mid-call: re-INVITE, session refresh, INFO, NOTIFY |
//! | `inbound.rs` | what the peer sends in the dialog: BYE, re-INVITE, UPDATE, REFER, INFO |
//! | `session_timer.rs` | RFC 4028 timer arithmetic |
//! | `uas.rs` | a leg for an INVITE we answered (created confirmed) |

mod client;
mod inbound;
mod midcall;
/// RFC 4028 session timers.
pub(crate) mod session_timer;
mod setup;
mod uas;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use rsip::{Request, Response};

use super::Transmit;
use super::context::CallContext;
use super::fork::Fork;
use crate::sip::auth::DigestClient;
use crate::sip::dialog::Dialog;
use crate::sip::transaction::{InviteClient, NonInviteClient, earliest};
use crate::sip::transport::Peer;

use client::ClientEntry;
pub(crate) use inbound::Answer;
use session_timer::SessionTimer;
pub(crate) use uas::UasStart;

/// Where the leg stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// INVITE sent, no response yet (a hangup now waits for a provisional, §9.1).
    Calling,
    /// A provisional came: CANCEL may be sent.
    Early,
    /// CANCEL sent; waiting for the INVITE's final response until `guard`.
    Cancelling {
        /// 64*T1 after the CANCEL: give up on the 487 (§9.1).
        guard: Instant,
    },
    /// 2xx received and ACKed.
    Confirmed,
    /// BYE sent, waiting for its response.
    Terminating,
    /// The leg's final event was reported.
    Done,
}

/// What a leg reports to its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LegEvent {
    /// A 1xx other than 100.
    Provisional {
        /// Status code.
        code: u16,
        /// Early-media SDP, if any.
        sdp: Option<String>,
    },
    /// The 2xx (ACKed).
    Answered {
        /// SDP answer.
        sdp: String,
    },
    /// The INVITE failed (final).
    Failed {
        /// Status (408 timeout, 503 transport error).
        status: u16,
        /// Reason phrase.
        reason: String,
    },
    /// The peer sent BYE (final).
    RemoteBye,
    /// Our hangup completed (final).
    Ended,
    /// The dialog died: 481/408 to an in-dialog request, no ACK, session expiry
    /// (final; a BYE was sent when it made sense).
    Lost {
        /// Status describing why.
        status: u16,
        /// Reason.
        reason: String,
    },
    /// The peer changed the session (re-INVITE/UPDATE offer answered, or the answer
    /// in the ACK of an offerless re-INVITE).
    RemoteSdp {
        /// Their SDP.
        sdp: String,
    },
    /// Outcome of `reinvite()`.
    ReinviteResult {
        /// 2xx received.
        ok: bool,
        /// Final status (0: not sent, no confirmed dialog).
        status: u16,
        /// Their SDP answer on success.
        sdp: Option<String>,
    },
    /// The peer asked us to call `target` (REFER, already answered 202).
    ReferRequested {
        /// Refer-To URI.
        target: String,
        /// Referred-By value, if any.
        referred_by: Option<String>,
    },
}

/// An early dialog (tagged 1xx): reliable provisionals are PRACKed in it and the
/// peer's UPDATE, INFO and OPTIONS before the answer are matched to it.
#[derive(Debug)]
struct EarlyDialog {
    /// The dialog state (CSeq numbering continues into the confirmed dialog).
    dialog: Dialog,
    /// RSeq of the last reliable provisional PRACKed.
    last_rseq: Option<u32>,
    /// The peer's SDP once a reliable provisional carried the answer to our offer
    /// (RFC 3262), updated by early UPDATEs: the 2xx's SDP, if any, only repeats the
    /// first answer then.
    session: Option<String>,
}

/// One INVITE dialog usage.
#[derive(Debug)]
pub(crate) struct Leg {
    /// SIP Call-ID of this leg.
    pub call_id: String,
    /// Shared call settings.
    ctx: Arc<CallContext>,
    /// Where the INVITE (and CANCEL) go.
    target: Peer,
    /// The current INVITE (replaced by authenticated or 422 resends).
    invite: Request,
    /// Its branch (also the CANCEL's).
    invite_branch: String,
    /// Its client transaction, until it terminates.
    invite_tx: Option<InviteClient>,
    /// Earlier INVITE transactions still absorbing retransmitted challenges.
    old_invites: Vec<(String, InviteClient)>,
    /// How many times the INVITE was resent with credentials.
    invite_rounds: u32,
    /// Session-Expires asked for (raised by a 422).
    se_interval: u32,
    /// The CANCEL transaction, if sent.
    cancel_tx: Option<NonInviteClient>,
    /// Early dialogs by To tag.
    early: Vec<(String, EarlyDialog)>,
    /// Digest state (challenges seen, nonce counts).
    auth: DigestClient,
    /// The confirmed dialog.
    dialog: Option<Dialog>,
    /// The ACK of the first 2xx and where it went, resent for a retransmitted 2xx.
    ack: Option<(Peer, Vec<u8>)>,
    /// ACKs of our re-INVITEs' 2xx by CSeq, resent for retransmissions.
    reinvite_acks: VecDeque<(u32, Peer, Vec<u8>)>,
    /// Dialogs of forked 2xx, ACKed and being BYEd.
    forks: Vec<Fork>,
    /// In-dialog client transactions.
    clients: Vec<ClientEntry>,
    /// Our current SDP (offer sent, or answer given).
    local_sdp: String,
    /// The peer's current SDP.
    remote_sdp: Option<String>,
    /// The peer's 2xx allowed UPDATE (used for session refreshes).
    peer_allows_update: bool,
    /// Session timer, when negotiated.
    session: Option<SessionTimer>,
    /// Our re-INVITEs waiting for the current INVITE transaction to end.
    queued_reinvites: VecDeque<String>,
    /// A re-INVITE to resend after a 491 (RFC 3261 §14.1), and when.
    glare_retry: Option<(Instant, client::Purpose)>,
    /// A re-INVITE from the peer was answered 2xx and waits for its ACK.
    remote_invite_pending: bool,
    /// DTMF digits waiting for the INFO in flight.
    queued_infos: VecDeque<(char, u32)>,
    /// The implicit subscription of an accepted REFER: its `id` (REFER CSeq).
    refer_subscription: Option<u32>,
    /// REFER is accepted (202) and handed to the call: a leg we placed on a trunk
    /// with `refer = "dialplan"`. Otherwise it is declined (603).
    refer_allowed: bool,
    /// When to BYE a transferred-away dialog the transferor has not ended itself.
    bye_at: Option<Instant>,
    /// Reason phrase of the last response to the INVITE.
    last_reason: String,
    /// The call module asked to hang up.
    hung_up: bool,
    /// Where the leg stands.
    phase: Phase,
    /// Datagrams to send.
    transmits: VecDeque<Transmit>,
    /// Events for the call.
    events: VecDeque<LegEvent>,
}

impl Leg {
    /// A response with this leg's Call-ID.
    pub(crate) fn handle_response(&mut self, now: Instant, response: Response, reason: String) {
        self.route_response(now, response, reason);
        self.process(now);
    }

    /// The transport failed to send one of this leg's messages to `dest`.
    pub(crate) fn handle_send_error(&mut self, now: Instant, dest: Peer, error: String) {
        if self.target == dest
            && let Some(tx) = self.invite_tx.as_mut()
        {
            tx.handle_transport_error(now, error.clone());
        }
        for entry in self.clients.iter_mut().filter(|e| e.dest == dest) {
            entry.transport_error(now, error.clone());
        }
        self.process(now);
    }

    /// Fires due timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some(tx) = self.invite_tx.as_mut() {
            tx.handle_timeout(now);
        }
        for (_, tx) in &mut self.old_invites {
            tx.handle_timeout(now);
        }
        if let Some(tx) = self.cancel_tx.as_mut() {
            tx.handle_timeout(now);
        }
        for entry in &mut self.clients {
            entry.handle_timeout(now);
        }
        for fork in &mut self.forks {
            fork.bye.handle_timeout(now);
        }
        if let Phase::Cancelling { guard } = self.phase
            && now >= guard
        {
            tracing::warn!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, "no final response 64*T1 after CANCEL");
            self.invite_tx = None;
            self.finish(LegEvent::Ended);
        }
        self.midcall_timeout(now);
        self.process(now);
    }

    /// When `handle_timeout` must be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut at = self.invite_tx.as_ref().and_then(InviteClient::poll_timeout);
        for (_, tx) in &self.old_invites {
            at = earliest(at, tx.poll_timeout());
        }
        at = earliest(
            at,
            self.cancel_tx
                .as_ref()
                .and_then(NonInviteClient::poll_timeout),
        );
        for entry in &self.clients {
            at = earliest(at, entry.poll_timeout());
        }
        for fork in &self.forks {
            at = earliest(at, fork.bye.poll_timeout());
        }
        if let Phase::Cancelling { guard } = self.phase {
            at = earliest(at, Some(guard));
        }
        earliest(at, self.midcall_poll_timeout())
    }

    /// The next datagram to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the call.
    pub(crate) fn poll_event(&mut self) -> Option<LegEvent> {
        self.events.pop_front()
    }

    /// True once the final event was reported.
    pub(crate) fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// True once done and no transaction is left.
    pub(crate) fn is_finished(&self) -> bool {
        self.phase == Phase::Done
            && self
                .invite_tx
                .as_ref()
                .is_none_or(InviteClient::is_terminated)
            && self.old_invites.is_empty()
            && self
                .cancel_tx
                .as_ref()
                .is_none_or(NonInviteClient::is_terminated)
            && self.clients.is_empty()
            && self.forks.iter().all(|f| f.bye.is_terminated())
    }

    /// Our current SDP.
    pub(crate) fn local_sdp(&self) -> &str {
        &self.local_sdp
    }

    /// Reports the leg's final event once.
    fn finish(&mut self, event: LegEvent) {
        if self.phase == Phase::Done {
            return;
        }
        self.phase = Phase::Done;
        self.session = None;
        self.queued_reinvites.clear();
        self.queued_infos.clear();
        self.glare_retry = None;
        tracing::info!(sip_call_id = %self.call_id, correlation_id = %self.ctx.correlation_id, ?event, "leg ended");
        self.events.push_back(event);
    }

    /// Applies the transactions' events, then collects their datagrams.
    fn process(&mut self, now: Instant) {
        self.process_setup(now);
        self.process_clients(now);
        self.old_invites.retain(|(_, tx)| !tx.is_terminated());
        self.drain_transactions();
    }

    /// Moves the transactions' datagrams to the leg's queue with their destination.
    fn drain_transactions(&mut self) {
        let mut out = Vec::new();
        // The ACK of a challenged INVITE goes before the resent INVITE.
        for (_, tx) in &mut self.old_invites {
            while let Some(bytes) = tx.poll_transmit() {
                out.push((self.target, bytes));
            }
        }
        if let Some(tx) = self.invite_tx.as_mut() {
            while let Some(bytes) = tx.poll_transmit() {
                out.push((self.target, bytes));
            }
        }
        if let Some(tx) = self.cancel_tx.as_mut() {
            while let Some(bytes) = tx.poll_transmit() {
                out.push((self.target, bytes));
            }
        }
        for entry in &mut self.clients {
            while let Some(bytes) = entry.poll_transmit() {
                out.push((entry.dest, bytes));
            }
        }
        for fork in &mut self.forks {
            while fork.bye.poll_event().is_some() {}
            while let Some(bytes) = fork.bye.poll_transmit() {
                out.push((fork.dest, bytes));
            }
        }
        for (dest, bytes) in out {
            self.send(dest, bytes);
        }
    }

    /// Queues a datagram of this leg.
    fn send(&mut self, dest: Peer, payload: Vec<u8>) {
        self.transmits.push_back(Transmit {
            dest,
            payload,
            owner: super::Owner::Call(self.call_id.clone()),
        });
    }

    /// True if an in-dialog request from `source` may come from this leg's peer: one
    /// of the trunk's addresses (the INVITE's target, SRV targets, `inbound_from`),
    /// or the dialog's next hop (first route) or remote target. Compared by IP;
    /// a dialog over TLS takes requests over TLS only.
    pub(crate) fn accepts_from(&self, source: Peer) -> bool {
        use crate::sip::transport::Transport;
        if self.target.transport == Transport::Tls && source.transport != Transport::Tls {
            return false;
        }
        let ip = source.addr.ip().to_canonical();
        if self.target.addr.ip().to_canonical() == ip || self.ctx.scope.contains(ip) {
            return true;
        }
        self.dialog
            .iter()
            .chain(self.early.iter().map(|(_, e)| &e.dialog))
            .any(|d| d.peer_ips().contains(&ip))
    }

    /// Where in-dialog requests go: over TCP/TLS the trunk connection is reused;
    /// over UDP the first route or the remote target when it is an IP literal.
    fn in_dialog_dest(&self, dialog: &Dialog) -> Peer {
        if self.target.transport != crate::sip::transport::Transport::Udp {
            return self.target;
        }
        dialog.next_hop().map(Peer::udp).unwrap_or(self.target)
    }
}
