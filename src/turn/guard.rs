//! A guard in front of the `turn` crate's server: it sees every datagram of a
//! listener before the server does, and every response after.
//!
//! - CreatePermission / ChannelBind to a peer the [`PeerPolicy`] refuses: answered
//!   403 Forbidden (signed with the client's key, RFC 8656 §9.1/§12) and never reach
//!   the server.
//! - Send indications and ChannelData to a refused peer: silently dropped, as RFC 8656
//!   §11.2/§12.5 say of data without a permission. A permission covers a whole IP
//!   address, so the port of every relayed datagram is judged again here (the
//!   gateway's own address admits only the user's own ICE ports).
//! - Allocate over the total or per-user quota: answered 486 (Allocation Quota
//!   Reached).
//! - Allocate success responses and the server's close notifications keep the live
//!   allocation counts (the `callbridge_turn_allocations` gauge), with the user of
//!   each allocation (needed to judge its unsigned Send indications and ChannelData).
//!
//! Only requests whose MESSAGE-INTEGRITY verifies are judged; everything else goes to
//! the server untouched (which challenges it with 401).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use stun::agent::TransactionId;
use stun::attributes::{
    ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
};
use stun::error_code::{ErrorCode, ErrorCodeAttribute};
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter,
    MAGIC_COOKIE, METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH,
    METHOD_SEND, Message, MessageType, Method, Setter, is_message,
};
use stun::textattrs::TextAttribute;
use turn::proto::channum::ChannelNumber;

use super::auth::{RestAuthHandler, user_of};
use super::policy::PeerPolicy;

/// ChannelBind requests awaiting the server's answer, at most (a bind not remembered
/// leaves its channel closed: its ChannelData is dropped).
const MAX_PENDING_BINDS: usize = 4096;

/// A client 5-tuple as the guard keys it: (client address, listener address).
type Tuple = (SocketAddr, SocketAddr);

/// What to do with an incoming datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the TURN server.
    Pass,
    /// Answer the sender with these bytes; the server never sees the request.
    Reply(Vec<u8>),
    /// Drop it: the server never sees it and nothing is answered.
    Drop,
}

/// Allocation limits.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    /// All users together.
    pub total: usize,
    /// Per user.
    pub per_user: usize,
}

/// Live allocation bookkeeping.
#[derive(Debug, Default)]
struct Book {
    /// Allocations per user.
    per_user: HashMap<String, usize>,
    /// Client 5-tuples holding an allocation, with the allocation's user.
    live: HashMap<Tuple, String>,
    /// The success response that created each live allocation, with its transaction
    /// id: a retransmitted Allocate gets it again (RFC 5766 §6.2; the `turn` crate
    /// would answer 437 when the first response was lost).
    granted: HashMap<Tuple, ([u8; 12], Vec<u8>)>,
    /// Allocate requests that passed the quota check, by transaction id.
    pending: HashMap<[u8; 12], String>,
    /// Channel bindings the server confirmed, per allocation: number → peer.
    channels: HashMap<Tuple, HashMap<u16, SocketAddr>>,
    /// ChannelBind requests that passed the policy, by transaction id.
    pending_binds: HashMap<[u8; 12], (Tuple, u16, SocketAddr)>,
}

/// Counters the guard keeps (read by metrics and tests).
#[derive(Debug, Default)]
pub struct GuardStats {
    /// Permissions/channels refused by the peer policy.
    pub refused_peers: AtomicU64,
    /// Send indications and ChannelData dropped by the peer policy.
    pub dropped_data: AtomicU64,
    /// Allocations refused by quota.
    pub refused_quota: AtomicU64,
    /// Bytes relayed by allocations that have closed.
    pub relayed_bytes: AtomicU64,
}

/// Policy, quotas and counts shared by every listener of one TURN server.
pub struct Guard {
    /// Peer address policy.
    policy: PeerPolicy,
    /// Credentials check, to judge only authenticated requests.
    auth: Arc<RestAuthHandler>,
    /// Allocation limits.
    quotas: Quotas,
    /// Allocation counts.
    book: Mutex<Book>,
    /// Counters.
    pub stats: GuardStats,
}

impl Guard {
    /// A guard with `policy` and `quotas`.
    pub fn new(policy: PeerPolicy, auth: Arc<RestAuthHandler>, quotas: Quotas) -> Guard {
        Guard {
            policy,
            auth,
            quotas,
            book: Mutex::new(Book::default()),
            stats: GuardStats::default(),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Live allocations.
    pub fn allocations(&self) -> usize {
        self.book().live.len()
    }

    /// Judges a datagram from `src` arriving on the listener at `local`.
    pub fn inspect(&self, data: &[u8], src: SocketAddr, local: SocketAddr) -> Verdict {
        if !is_message(data) {
            return self.inspect_channel_data(data, (src, local));
        }
        let mut m = Message::new();
        if m.unmarshal_binary(data).is_err() {
            return Verdict::Pass;
        }
        if m.typ.class == CLASS_INDICATION && m.typ.method == METHOD_SEND {
            return self.inspect_send(&m, (src, local));
        }
        if m.typ.class != CLASS_REQUEST {
            return Verdict::Pass;
        }
        let method = m.typ.method;
        if ![
            METHOD_ALLOCATE,
            METHOD_REFRESH,
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
        ]
        .contains(&method)
        {
            return Verdict::Pass;
        }
        let (username, key) = match self.verified_key(&mut m) {
            Credentials::Absent => return Verdict::Pass,
            // RFC 5389 §10.2.2: a bad MESSAGE-INTEGRITY or unknown/expired username
            // is answered 401 (the crate would say 400), realm and nonce included.
            Credentials::Invalid => return unauthorized(&m, method),
            Credentials::Valid(username, key) => (username, key),
        };
        if method == METHOD_REFRESH {
            return Verdict::Pass;
        }
        if method == METHOD_ALLOCATE {
            if let Some((tid, response)) = self.book().granted.get(&(src, local))
                && *tid == m.transaction_id.0
            {
                tracing::debug!(%src, "retransmitted TURN Allocate answered with its success");
                return Verdict::Reply(response.clone());
            }
            return self.check_quota(&m, &username, (src, local), &key);
        }
        let user = user_of(&username);
        let peers = peer_addresses(&m);
        let refused = peers
            .iter()
            .find_map(|p| self.policy.judge(*p, Some(user)).err().map(|why| (*p, why)));
        match refused {
            Some((peer, why)) => {
                self.stats.refused_peers.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%src, user, %peer, %why, "TURN peer refused by policy");
                error_reply(&m, method, 403, "Forbidden: peer address not allowed", &key)
            }
            None => {
                if method == METHOD_CHANNEL_BIND {
                    self.remember_bind(&m, (src, local), &peers);
                }
                Verdict::Pass
            }
        }
    }

    /// A Send indication: every XOR-PEER-ADDRESS is judged with the allocation's user.
    fn inspect_send(&self, m: &Message, tuple: Tuple) -> Verdict {
        let user = self.book().live.get(&tuple).cloned();
        let refused = peer_addresses(m).into_iter().find_map(|p| {
            self.policy
                .judge(p, user.as_deref())
                .err()
                .map(|why| (p, why))
        });
        match refused {
            Some((peer, why)) => {
                self.stats.dropped_data.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(src = %tuple.0, ?user, %peer, %why, "TURN Send indication dropped by policy");
                Verdict::Drop
            }
            None => Verdict::Pass,
        }
    }

    /// ChannelData: judged again against the peer its channel is bound to (the ports
    /// open on the gateway change as calls start and end).
    fn inspect_channel_data(&self, data: &[u8], tuple: Tuple) -> Verdict {
        let (Some(&b0), Some(&b1)) = (data.first(), data.get(1)) else {
            return Verdict::Pass;
        };
        if !(0x40..=0x7F).contains(&b0) {
            return Verdict::Pass;
        }
        let number = u16::from_be_bytes([b0, b1]);
        let (peer, user) = {
            let book = self.book();
            let peer = book
                .channels
                .get(&tuple)
                .and_then(|c| c.get(&number))
                .copied();
            (peer, book.live.get(&tuple).cloned())
        };
        let Some(peer) = peer else {
            // Not a binding the server confirmed: it would drop it too. Failing closed
            // here also covers a binding the guard could not remember.
            return Verdict::Drop;
        };
        match self.policy.judge(peer, user.as_deref()) {
            Ok(()) => Verdict::Pass,
            Err(why) => {
                self.stats.dropped_data.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(src = %tuple.0, ?user, %peer, %why, "TURN ChannelData dropped by policy");
                Verdict::Drop
            }
        }
    }

    /// Keeps a ChannelBind that passed, until the server confirms it.
    fn remember_bind(&self, m: &Message, tuple: Tuple, peers: &[SocketAddr]) {
        let mut number = ChannelNumber::default();
        // The server takes the first XOR-PEER-ADDRESS.
        if number.get_from(m).is_err() {
            return;
        }
        let mut book = self.book();
        if let Some(peer) = peers.first()
            && book.live.contains_key(&tuple)
            && book.pending_binds.len() < MAX_PENDING_BINDS
        {
            book.pending_binds
                .insert(m.transaction_id.0, (tuple, number.0, *peer));
        }
    }

    fn check_quota(
        &self,
        m: &Message,
        username: &str,
        tuple: (SocketAddr, SocketAddr),
        key: &[u8],
    ) -> Verdict {
        let user = user_of(username).to_string();
        let mut book = self.book();
        if book.live.contains_key(&tuple) {
            return Verdict::Pass; // the server answers 437 or a retransmission itself
        }
        let mine = book.per_user.get(&user).copied().unwrap_or(0);
        let over = if book.live.len() >= self.quotas.total {
            Some("server allocation quota reached")
        } else if mine >= self.quotas.per_user {
            Some("user allocation quota reached")
        } else {
            None
        };
        if let Some(why) = over {
            drop(book);
            self.stats.refused_quota.fetch_add(1, Ordering::Relaxed);
            tracing::info!(src = %tuple.0, %user, why, "TURN allocation refused");
            return error_reply(m, METHOD_ALLOCATE, 486, "Allocation Quota Reached", key);
        }
        book.pending.insert(m.transaction_id.0, user);
        Verdict::Pass
    }

    /// Looks at a datagram the server sends to `target` from the listener at `local`.
    pub fn observe_outgoing(&self, data: &[u8], target: SocketAddr, local: SocketAddr) {
        if !is_message(data) {
            return;
        }
        let mut m = Message::new();
        if m.unmarshal_binary(data).is_err() {
            return;
        }
        let method = m.typ.method;
        if method != METHOD_ALLOCATE && method != METHOD_CHANNEL_BIND {
            return;
        }
        let mut book = self.book();
        if method == METHOD_CHANNEL_BIND {
            if let Some((tuple, number, peer)) = book.pending_binds.remove(&m.transaction_id.0)
                && m.typ.class == CLASS_SUCCESS_RESPONSE
                && book.live.contains_key(&tuple)
            {
                book.channels.entry(tuple).or_default().insert(number, peer);
            }
            return;
        }
        let Some(user) = book.pending.remove(&m.transaction_id.0) else {
            return;
        };
        let tuple = (target, local);
        if m.typ.class == CLASS_SUCCESS_RESPONSE && !book.live.contains_key(&tuple) {
            *book.per_user.entry(user.clone()).or_insert(0) += 1;
            book.live.insert(tuple, user);
            book.granted
                .insert(tuple, (m.transaction_id.0, data.to_vec()));
        }
    }

    /// Records that the server closed an allocation.
    pub fn released(&self, client: SocketAddr, local: SocketAddr, username: &str, relayed: u64) {
        self.stats
            .relayed_bytes
            .fetch_add(relayed, Ordering::Relaxed);
        let mut book = self.book();
        book.channels.remove(&(client, local));
        book.granted.remove(&(client, local));
        book.pending_binds
            .retain(|_, (t, _, _)| *t != (client, local));
        if book.live.remove(&(client, local)).is_some() {
            let user = user_of(username);
            if let Some(n) = book.per_user.get_mut(user) {
                *n -= 1;
                if *n == 0 {
                    book.per_user.remove(user);
                }
            }
        }
    }

    /// Judges the credentials of a request.
    fn verified_key(&self, m: &mut Message) -> Credentials {
        if !m.contains(ATTR_MESSAGE_INTEGRITY) {
            return Credentials::Absent;
        }
        let (Ok(username), Ok(realm)) = (
            TextAttribute::get_from_as(m, ATTR_USERNAME),
            TextAttribute::get_from_as(m, ATTR_REALM),
        ) else {
            return Credentials::Absent; // the server answers 400
        };
        let Some(key) = self.auth.key(&username.text, &realm.text) else {
            return Credentials::Invalid;
        };
        if MessageIntegrity(key.clone()).check(m).is_err() {
            return Credentials::Invalid;
        }
        Credentials::Valid(username.text, key)
    }
}

/// The credentials of a request, as far as the guard can tell.
enum Credentials {
    /// No MESSAGE-INTEGRITY (or no username/realm): the server challenges.
    Absent,
    /// Unknown, expired or forged.
    Invalid,
    /// Verified: username and long-term key.
    Valid(String, Vec<u8>),
}

/// An unsigned 401 with the realm and nonce the client sent.
fn unauthorized(request: &Message, method: Method) -> Verdict {
    let mut setters: Vec<Box<dyn Setter>> = vec![
        Box::new(Message {
            transaction_id: request.transaction_id,
            ..Default::default()
        }),
        Box::new(MessageType::new(method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code: ErrorCode(401),
            reason: b"Unauthorized: invalid or expired credentials".to_vec(),
        }),
    ];
    for attr in [ATTR_REALM, ATTR_NONCE] {
        if let Ok(t) = TextAttribute::get_from_as(request, attr) {
            setters.push(Box::new(t));
        }
    }
    let mut reply = Message::new();
    match reply.build(&setters) {
        Ok(()) => Verdict::Reply(reply.raw),
        Err(_) => Verdict::Pass,
    }
}

/// Every XOR-PEER-ADDRESS of a request (RFC 5766 §14.3). One this guard cannot decode
/// stands as `0.0.0.0:0`, which the policy refuses: what the guard cannot read must
/// not reach the server, whose parser might read it differently.
fn peer_addresses(m: &Message) -> Vec<SocketAddr> {
    m.attributes
        .0
        .iter()
        .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
        .map(|a| {
            xor_address(&a.value, &m.transaction_id).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)))
        })
        .collect()
}

fn xor_address(v: &[u8], tid: &TransactionId) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([*v.get(2)?, *v.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match *v.get(1)? {
        0x01 => {
            let b = v.get(4..8)?;
            IpAddr::V4(Ipv4Addr::new(
                b[0] ^ cookie[0],
                b[1] ^ cookie[1],
                b[2] ^ cookie[2],
                b[3] ^ cookie[3],
            ))
        }
        0x02 => {
            let b = v.get(4..20)?;
            let mut mask = [0u8; 16];
            mask[..4].copy_from_slice(&cookie);
            mask[4..].copy_from_slice(&tid.0);
            let mut out = [0u8; 16];
            for i in 0..16 {
                out[i] = b[i] ^ mask[i];
            }
            IpAddr::V6(Ipv6Addr::from(out))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// An error response to `request`, signed with `key`.
fn error_reply(request: &Message, method: Method, code: u16, reason: &str, key: &[u8]) -> Verdict {
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(Message {
            transaction_id: request.transaction_id,
            ..Default::default()
        }),
        Box::new(MessageType::new(method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code: ErrorCode(code),
            reason: reason.as_bytes().to_vec(),
        }),
        Box::new(MessageIntegrity(key.to_vec())),
    ];
    let mut reply = Message::new();
    match reply.build(&setters) {
        Ok(()) => Verdict::Reply(reply.raw),
        // Building a fixed message cannot fail; if it did, let the server handle it.
        Err(_) => Verdict::Pass,
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
