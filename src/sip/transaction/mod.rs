//! SIP transactions (RFC 3261 §17), sans-IO.
//!
//! Each transaction is a state machine with one contract:
//! `handle_*(now, input)` mutates it, `poll_transmit()` yields the datagrams to send
//! (the owner knows where to), `poll_event()` yields what the transaction user must
//! know, and `poll_timeout()` says when `handle_timeout(now)` must be called next.
//! No clock is read and no socket is touched here.
//!
//! | file | RFC 3261 | timers |
//! | --- | --- | --- |
//! | `invite_client.rs` | §17.1.1 | A (retransmit), B (timeout), D (absorb) |
//! | `non_invite_client.rs` | §17.1.2 | E (retransmit), F (timeout), K (absorb) |
//! | `invite_server.rs` | §17.2.1, RFC 6026 | G (retransmit), H (ACK timeout), I (absorb) |
//! | `non_invite_server.rs` | §17.2.2 | J (absorb) |
//!
//! On reliable transports (TCP/TLS) nothing is retransmitted (no A, E, G) and the
//! absorbing timers (D, I, J, K) are zero; the timeouts (B, F, H) stay.

mod invite_client;
mod invite_server;
mod non_invite_client;
mod non_invite_server;

#[cfg(test)]
mod test_util;

use std::time::Duration;

pub use invite_client::InviteClient;
pub use invite_server::{InviteServer, ServerEvent};
pub use non_invite_client::NonInviteClient;
pub use non_invite_server::NonInviteServer;

/// RFC 3261 timer base values (§17.1.1.1, Table 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate; retransmissions start at T1 and timeouts are 64*T1 (default 500 ms).
    pub t1: Duration,
    /// Cap of the non-INVITE retransmission interval (default 4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network; Timer K (default 5 s).
    pub t4: Duration,
    /// Timer D, how long non-2xx INVITE responses are absorbed over UDP (default 32 s).
    pub timer_d: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
        }
    }
}

impl TimerConfig {
    /// 64*T1: timers B, F, H and J.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Whether the transport retransmits for us (TCP/TLS) or not (UDP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    /// UDP: the transaction retransmits and absorbs duplicates.
    Unreliable,
    /// TCP/TLS: no retransmission, absorbing timers are zero.
    Reliable,
}

/// What a client transaction reports to its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A 1xx response.
    Provisional(rsip::Response),
    /// The final response (2xx for INVITE ends the transaction; 3xx-6xx was ACKed).
    Final(rsip::Response),
    /// Timer B or F fired without a final response.
    Timeout,
    /// The transport could not send the request.
    TransportError(String),
}

/// A message that the transaction's state does not expect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// Input that does not fit the current state.
    #[error("transaction in state {state} expected {expected}, got {got}")]
    Unexpected {
        /// The current state.
        state: &'static str,
        /// What the state accepts.
        expected: &'static str,
        /// What came.
        got: String,
    },
}

/// Earliest of two optional deadlines.
pub(crate) fn earliest(
    a: Option<std::time::Instant>,
    b: Option<std::time::Instant>,
) -> Option<std::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
