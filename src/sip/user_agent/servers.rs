//! The table of server transactions, keyed per RFC 3261 §17.2.3 (top Via branch,
//! sent-by, and method with ACK matching INVITE), bounded in size, with the index
//! that finds the INVITE server transaction a 2xx's ACK belongs to (that ACK has
//! its own branch; it is matched by Call-ID and CSeq).

use std::collections::HashMap;

use rsip::headers::UntypedHeader;
use rsip::message::HeadersExt;
use rsip::{Method, Request};

use crate::sip::message::{branch, call_id, cseq, first_element};
use crate::sip::transaction::{InviteServer, NonInviteServer};
use crate::sip::transport::Peer;
use crate::sip::user_agent::Owner;

/// Most server transactions held at once; beyond, requests are answered statelessly
/// (a retransmission then gets a fresh, identical answer).
pub(crate) const MAX_SERVER_TRANSACTIONS: usize = 4096;

/// `(branch, sent-by, method)`.
pub(crate) type ServerKey = (String, String, String);

/// The key of the server transaction `request` belongs to (ACK → its INVITE's).
pub(crate) fn server_key(request: &Request) -> ServerKey {
    let sent_by = request
        .via_header()
        .ok()
        .map(|v| {
            let first = first_element(v.value());
            first
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let method = match request.method {
        Method::Ack => Method::Invite,
        m => m,
    };
    (
        branch(request).unwrap_or_default(),
        sent_by,
        method.to_string(),
    )
}

/// A server transaction of either kind.
#[derive(Debug)]
pub(crate) enum ServerTx {
    /// INVITE (re-INVITE within a dialog).
    Invite(InviteServer),
    /// Everything else.
    NonInvite(NonInviteServer),
}

/// One server transaction and what it belongs to.
#[derive(Debug)]
pub(crate) struct ServerEntry {
    /// Where its responses go (the connection the request came on).
    pub dest: Peer,
    /// The transaction.
    pub tx: ServerTx,
    /// SIP Call-ID of the leg that answered, if any.
    pub call_id: Option<String>,
    /// `(Call-ID, CSeq)` of an INVITE answered 2xx, to match its ACK.
    pub ack_key: Option<(String, u32)>,
    /// Who hears about failed sends of its responses (an inbound call's INVITE).
    pub owner: Owner,
}

impl ServerEntry {
    /// Resends the last response for a retransmitted request.
    pub(crate) fn handle_request(&mut self, now: std::time::Instant) {
        match &mut self.tx {
            ServerTx::Invite(t) => t.handle_request(now),
            ServerTx::NonInvite(t) => t.handle_request(now),
        }
    }

    /// The next message to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        match &mut self.tx {
            ServerTx::Invite(t) => t.poll_transmit(),
            ServerTx::NonInvite(t) => t.poll_transmit(),
        }
    }

    /// When the transaction needs `handle_timeout`.
    pub(crate) fn poll_timeout(&self) -> Option<std::time::Instant> {
        match &self.tx {
            ServerTx::Invite(t) => t.poll_timeout(),
            ServerTx::NonInvite(t) => t.poll_timeout(),
        }
    }

    /// True once it may be dropped.
    pub(crate) fn is_terminated(&self) -> bool {
        match &self.tx {
            ServerTx::Invite(t) => t.is_terminated(),
            ServerTx::NonInvite(t) => t.is_terminated(),
        }
    }
}

/// The bounded table.
#[derive(Debug, Default)]
pub(crate) struct Servers {
    /// Transactions by key.
    map: HashMap<ServerKey, ServerEntry>,
    /// `(Call-ID, CSeq)` of 2xx-answered INVITEs → their transaction.
    acks: HashMap<(String, u32), ServerKey>,
}

impl Servers {
    /// The transaction with `key`.
    pub(crate) fn get_mut(&mut self, key: &ServerKey) -> Option<&mut ServerEntry> {
        self.map.get_mut(key)
    }

    /// True if a transaction with `key` is held.
    pub(crate) fn contains(&self, key: &ServerKey) -> bool {
        self.map.contains_key(key)
    }

    /// True if the table has room for one more.
    pub(crate) fn has_room(&self) -> bool {
        self.map.len() < MAX_SERVER_TRANSACTIONS
    }

    /// Adds a transaction (the caller checked `has_room`).
    pub(crate) fn insert(&mut self, key: ServerKey, entry: ServerEntry) {
        if let Some(ack) = &entry.ack_key {
            self.acks.insert(ack.clone(), key.clone());
        }
        self.map.insert(key, entry);
    }

    /// Makes the 2xx ACK `(Call-ID, CSeq)` match the transaction `key` (an inbound
    /// call answered after its transaction was created).
    pub(crate) fn set_ack_key(&mut self, key: &ServerKey, ack: (String, u32)) {
        if let Some(entry) = self.map.get_mut(key) {
            entry.ack_key = Some(ack.clone());
            self.acks.insert(ack, key.clone());
        }
    }

    /// The key of the INVITE server transaction a 2xx's ACK belongs to.
    pub(crate) fn key_for_2xx_ack(&self, ack: &Request) -> Option<ServerKey> {
        let id = call_id(ack)?;
        let (seq, _) = cseq(ack)?;
        self.acks.get(&(id, seq)).cloned()
    }

    /// Drops a transaction.
    pub(crate) fn remove(&mut self, key: &ServerKey) -> Option<ServerEntry> {
        let entry = self.map.remove(key)?;
        if let Some(ack) = &entry.ack_key {
            self.acks.remove(ack);
        }
        Some(entry)
    }

    /// Number of transactions held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}
