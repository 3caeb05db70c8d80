//! INVITE client transaction (RFC 3261 §17.1.1, Figure 5).
//!
//! ```text
//!  Calling --1xx--> Proceeding --1xx--> Proceeding
//!    |  A: retransmit INVITE (T1, 2*T1, 4*T1, ...)   B (64*T1): Timeout
//!    +--2xx (either state)--> Terminated (the TU ACKs the 2xx)
//!    +--3xx-6xx (either state)--> Completed: send ACK; D: Terminated
//!                                 3xx-6xx again: resend ACK
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rsip::{Request, Response};

use super::{ClientEvent, Reliability, TimerConfig, TransactionError, earliest};
use crate::sip::message::build::{ack_for_non_2xx, request_bytes};

/// Waiting for any response; retransmitting over UDP.
#[derive(Debug)]
struct Calling {
    /// Next Timer A firing and the interval after it; `None` on reliable transports.
    timer_a: Option<(Instant, Duration)>,
    /// Timer B: give up.
    timer_b: Instant,
}

/// A provisional response came; waiting for the final one without retransmitting.
#[derive(Debug)]
struct Proceeding;

/// A 3xx-6xx was ACKed; absorbing its retransmissions until Timer D.
#[derive(Debug)]
struct Completed {
    /// The ACK, resent for each retransmitted final response.
    ack: Vec<u8>,
    /// Timer D: end of the absorbing period.
    timer_d: Instant,
}

/// Done; the owner may drop the transaction.
#[derive(Debug)]
struct Terminated;

#[derive(Debug)]
enum State {
    Calling(Calling),
    Proceeding(Proceeding),
    Completed(Completed),
    Terminated(Terminated),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Calling(_) => "Calling",
            State::Proceeding(_) => "Proceeding",
            State::Completed(_) => "Completed",
            State::Terminated(_) => "Terminated",
        }
    }
}

/// The INVITE client transaction.
#[derive(Debug)]
pub struct InviteClient {
    /// The INVITE, kept to build the ACK for a non-2xx final response.
    request: Request,
    /// The serialised INVITE, for retransmissions.
    request_bytes: Vec<u8>,
    /// Timer values.
    config: TimerConfig,
    /// UDP or not: decides Timer A and D.
    reliability: Reliability,
    /// Current state.
    state: State,
    /// Datagrams to send, oldest first.
    transmits: VecDeque<Vec<u8>>,
    /// Events for the transaction user, oldest first.
    events: VecDeque<ClientEvent>,
}

impl InviteClient {
    /// Starts the transaction: the INVITE is queued for sending at `now`.
    pub fn new(
        now: Instant,
        request: Request,
        config: TimerConfig,
        reliability: Reliability,
    ) -> Self {
        let request_bytes = request_bytes(&request);
        let timer_a =
            (reliability == Reliability::Unreliable).then(|| (now + config.t1, config.t1));
        Self {
            request,
            transmits: VecDeque::from([request_bytes.clone()]),
            request_bytes,
            config,
            reliability,
            state: State::Calling(Calling {
                timer_a,
                timer_b: now + config.timeout(),
            }),
            events: VecDeque::new(),
        }
    }

    /// The INVITE this transaction sends.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Feeds a response whose branch and CSeq method matched this transaction.
    pub fn handle_response(
        &mut self,
        now: Instant,
        response: Response,
    ) -> Result<(), TransactionError> {
        let code = response.status_code.code();
        let state = std::mem::replace(&mut self.state, State::Terminated(Terminated));
        let (next, result) = match state {
            State::Calling(_) | State::Proceeding(_) => (self.on_response(now, response), Ok(())),
            State::Completed(completed) if code >= 300 => {
                self.transmits.push_back(completed.ack.clone());
                (State::Completed(completed), Ok(()))
            }
            other => {
                let err = TransactionError::Unexpected {
                    state: other.name(),
                    expected: "a retransmitted 3xx-6xx",
                    got: code.to_string(),
                };
                (other, Err(err))
            }
        };
        self.state = next;
        result
    }

    /// A response in Calling or Proceeding.
    fn on_response(&mut self, now: Instant, response: Response) -> State {
        match response.status_code.code() {
            0..=199 => {
                self.events.push_back(ClientEvent::Provisional(response));
                State::Proceeding(Proceeding)
            }
            200..=299 => {
                self.events.push_back(ClientEvent::Final(response));
                State::Terminated(Terminated)
            }
            _ => {
                let ack = request_bytes(&ack_for_non_2xx(&self.request, &response));
                self.transmits.push_back(ack.clone());
                self.events.push_back(ClientEvent::Final(response));
                match self.reliability {
                    Reliability::Reliable => State::Terminated(Terminated),
                    Reliability::Unreliable => State::Completed(Completed {
                        ack,
                        timer_d: now + self.config.timer_d,
                    }),
                }
            }
        }
    }

    /// Fires the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let state = std::mem::replace(&mut self.state, State::Terminated(Terminated));
        self.state = match state {
            State::Calling(calling) if now >= calling.timer_b => {
                self.events.push_back(ClientEvent::Timeout);
                State::Terminated(Terminated)
            }
            State::Calling(Calling {
                timer_a: Some((at, interval)),
                timer_b,
            }) if now >= at => {
                self.transmits.push_back(self.request_bytes.clone());
                State::Calling(Calling {
                    timer_a: Some((at + interval * 2, interval * 2)),
                    timer_b,
                })
            }
            State::Completed(completed) if now >= completed.timer_d => {
                State::Terminated(Terminated)
            }
            other => other,
        };
    }

    /// The transport failed to send for this transaction (RFC 3261 §17.1.4).
    pub fn handle_transport_error(&mut self, _now: Instant, error: String) {
        if matches!(self.state, State::Calling(_) | State::Proceeding(_)) {
            self.events.push_back(ClientEvent::TransportError(error));
        }
        self.state = State::Terminated(Terminated);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Calling(c) => earliest(c.timer_a.map(|(at, _)| at), Some(c.timer_b)),
            State::Completed(c) => Some(c.timer_d),
            State::Proceeding(_) | State::Terminated(_) => None,
        }
    }

    /// True once the transaction is over and may be dropped.
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated(_))
    }

    /// True until a provisional or final response has been received.
    pub fn is_calling(&self) -> bool {
        matches!(self.state, State::Calling(_))
    }
}

#[cfg(test)]
#[path = "invite_client_tests.rs"]
mod tests;
