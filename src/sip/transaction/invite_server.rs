//! INVITE server transaction (RFC 3261 §17.2.1, Figure 7, with the Accepted state of
//! RFC 6026 §7.1).
//!
//! ```text
//!  Proceeding --1xx from TU--> Proceeding (INVITE again: resend the 1xx; 100 Trying
//!    |                                     sent by itself if the TU is silent 200 ms)
//!    +--2xx from TU--> Accepted: G resends the 2xx (T1, 2*T1 .. T2, UDP only)
//!    |                   ACK: Terminated     H (64*T1): NoAck, Terminated
//!    +--3xx-6xx from TU--> Completed: G resends it (UDP)  H (64*T1): NoAck
//!                            ACK: Confirmed; I (T4, 0 on TCP/TLS): Terminated
//! ```
//!
//! Resending the 2xx until the ACK is strictly the TU's job (§13.3.1.4); it is done
//! here with the same timers because it is the same mechanism.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rsip::Response;

use super::{Reliability, TimerConfig, TransactionError, earliest};
use crate::sip::message::build::response_bytes;

/// How long the TU may stay silent before 100 Trying is sent (§17.2.1).
const TRYING_AFTER: Duration = Duration::from_millis(200);

/// Waiting for the TU's final answer.
#[derive(Debug)]
struct Proceeding {
    /// The last response sent (a provisional), resent on a retransmitted INVITE.
    last: Option<Vec<u8>>,
    /// When to send 100 Trying by ourselves, until the TU answers.
    trying_at: Option<Instant>,
}

/// A final response was sent; resending it until the ACK.
#[derive(Debug)]
struct AwaitingAck {
    /// The final response.
    last: Vec<u8>,
    /// Timer G: next resend and interval; `None` on reliable transports.
    timer_g: Option<(Instant, Duration)>,
    /// Timer H: give up waiting for the ACK.
    timer_h: Instant,
}

/// The ACK for a 3xx-6xx came; absorbing ACK retransmissions until Timer I.
#[derive(Debug)]
struct Confirmed {
    /// Timer I.
    timer_i: Instant,
}

#[derive(Debug)]
enum State {
    Proceeding(Proceeding),
    /// 2xx sent (RFC 6026 Accepted).
    Accepted(AwaitingAck),
    /// 3xx-6xx sent.
    Completed(AwaitingAck),
    Confirmed(Confirmed),
    Terminated,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Proceeding(_) => "Proceeding",
            State::Accepted(_) => "Accepted",
            State::Completed(_) => "Completed",
            State::Confirmed(_) => "Confirmed",
            State::Terminated => "Terminated",
        }
    }
}

/// What the INVITE server transaction reports to its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// Timer H fired: the final response was never ACKed.
    NoAck,
}

/// The INVITE server transaction.
#[derive(Debug)]
pub struct InviteServer {
    /// Timer values.
    config: TimerConfig,
    /// UDP or not: decides timers G and I.
    reliability: Reliability,
    /// 100 Trying, sent if the TU stays silent.
    trying: Vec<u8>,
    /// Current state.
    state: State,
    /// Datagrams to send, oldest first.
    transmits: VecDeque<Vec<u8>>,
    /// Events for the TU.
    events: VecDeque<ServerEvent>,
}

impl InviteServer {
    /// Creates the transaction for an INVITE that just arrived; `trying` is the
    /// 100 Trying to send if the TU does not answer within 200 ms.
    pub fn new(
        now: Instant,
        trying: &Response,
        config: TimerConfig,
        reliability: Reliability,
    ) -> Self {
        Self {
            config,
            reliability,
            trying: response_bytes(trying),
            state: State::Proceeding(Proceeding {
                last: None,
                trying_at: Some(now + TRYING_AFTER),
            }),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// The INVITE was retransmitted: resend the last response, if any.
    pub fn handle_request(&mut self, _now: Instant) {
        match &self.state {
            State::Proceeding(Proceeding {
                last: Some(last), ..
            })
            | State::Accepted(AwaitingAck { last, .. })
            | State::Completed(AwaitingAck { last, .. }) => self.transmits.push_back(last.clone()),
            _ => {}
        }
    }

    /// The TU answers.
    pub fn send_response(
        &mut self,
        now: Instant,
        response: &Response,
    ) -> Result<(), TransactionError> {
        let code = response.status_code.code();
        let State::Proceeding(_) = self.state else {
            return Err(TransactionError::Unexpected {
                state: self.state.name(),
                expected: "no response (already final)",
                got: code.to_string(),
            });
        };
        let bytes = response_bytes(response);
        self.transmits.push_back(bytes.clone());
        self.state = if code < 200 {
            State::Proceeding(Proceeding {
                last: Some(bytes),
                trying_at: None,
            })
        } else {
            let awaiting = AwaitingAck {
                last: bytes,
                timer_g: (self.reliability == Reliability::Unreliable)
                    .then(|| (now + self.config.t1, self.config.t1)),
                timer_h: now + self.config.timeout(),
            };
            if code < 300 {
                State::Accepted(awaiting)
            } else {
                State::Completed(awaiting)
            }
        };
        Ok(())
    }

    /// The ACK for the final response arrived (same branch for 3xx-6xx; matched by
    /// dialog and CSeq for 2xx).
    pub fn handle_ack(&mut self, now: Instant) {
        self.state = match std::mem::replace(&mut self.state, State::Terminated) {
            State::Completed(_) => match self.reliability {
                Reliability::Reliable => State::Terminated,
                Reliability::Unreliable => State::Confirmed(Confirmed {
                    timer_i: now + self.config.t4,
                }),
            },
            State::Accepted(_) => State::Terminated,
            other => other,
        };
    }

    /// Fires the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.state = match std::mem::replace(&mut self.state, State::Terminated) {
            State::Proceeding(Proceeding {
                trying_at: Some(at),
                ..
            }) if now >= at => {
                self.transmits.push_back(self.trying.clone());
                State::Proceeding(Proceeding {
                    last: Some(self.trying.clone()),
                    trying_at: None,
                })
            }
            State::Accepted(a) | State::Completed(a) if now >= a.timer_h => {
                self.events.push_back(ServerEvent::NoAck);
                State::Terminated
            }
            State::Accepted(a) => State::Accepted(self.timer_g(now, a)),
            State::Completed(a) => State::Completed(self.timer_g(now, a)),
            State::Confirmed(c) if now >= c.timer_i => State::Terminated,
            other => other,
        };
    }

    /// Resends the final response if Timer G is due; the interval doubles up to T2.
    fn timer_g(&mut self, now: Instant, mut a: AwaitingAck) -> AwaitingAck {
        if let Some((at, interval)) = a.timer_g
            && now >= at
        {
            self.transmits.push_back(a.last.clone());
            let next = (interval * 2).min(self.config.t2);
            a.timer_g = Some((at + next, next));
        }
        a
    }

    /// The transport failed to send a response (§17.2.4): the transaction ends.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        self.state = State::Terminated;
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Proceeding(p) => p.trying_at,
            State::Accepted(a) | State::Completed(a) => {
                earliest(a.timer_g.map(|(at, _)| at), Some(a.timer_h))
            }
            State::Confirmed(c) => Some(c.timer_i),
            State::Terminated => None,
        }
    }

    /// True while a 2xx waits for its ACK (RFC 6026 Accepted).
    pub fn is_accepted(&self) -> bool {
        matches!(self.state, State::Accepted(_))
    }

    /// True once the transaction is over and may be dropped.
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated)
    }
}

#[cfg(test)]
#[path = "invite_server_tests.rs"]
mod tests;
