//! Non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8), for the BYE and OPTIONS
//! we answer.
//!
//! ```text
//!  Trying --1xx from TU--> Proceeding --request again--> resend 1xx
//!    +--200-699 from TU (either state)--> Completed --request again--> resend final
//!                                           J (64*T1, UDP): Terminated
//! ```

use std::collections::VecDeque;
use std::time::Instant;

use rsip::Response;

use super::{Reliability, TimerConfig, TransactionError};
use crate::sip::message::build::response_bytes;

/// The state of the transaction; each variant holds what it needs.
#[derive(Debug)]
enum State {
    /// The request came; the TU has not answered yet. Retransmissions are absorbed.
    Trying,
    /// A provisional was sent; it is resent on each retransmitted request.
    Proceeding {
        /// The last provisional response.
        last: Vec<u8>,
    },
    /// The final response was sent; it is resent until Timer J.
    Completed {
        /// The final response.
        last: Vec<u8>,
        /// Timer J.
        timer_j: Instant,
    },
    /// Done; the owner may drop the transaction.
    Terminated,
}

/// The non-INVITE server transaction.
#[derive(Debug)]
pub struct NonInviteServer {
    /// Timer values.
    config: TimerConfig,
    /// UDP or not: decides Timer J.
    reliability: Reliability,
    /// Current state.
    state: State,
    /// Datagrams to send, oldest first.
    transmits: VecDeque<Vec<u8>>,
}

impl NonInviteServer {
    /// Creates the transaction for a request that just arrived.
    pub fn new(_now: Instant, config: TimerConfig, reliability: Reliability) -> Self {
        Self {
            config,
            reliability,
            state: State::Trying,
            transmits: VecDeque::new(),
        }
    }

    /// A retransmission of the request arrived: resend the last response, if any.
    pub fn handle_request(&mut self, _now: Instant) {
        match &self.state {
            State::Proceeding { last } | State::Completed { last, .. } => {
                self.transmits.push_back(last.clone())
            }
            State::Trying | State::Terminated => {}
        }
    }

    /// The transaction user answers.
    pub fn send_response(
        &mut self,
        now: Instant,
        response: &Response,
    ) -> Result<(), TransactionError> {
        let code = response.status_code.code();
        let bytes = response_bytes(response);
        let state = std::mem::replace(&mut self.state, State::Terminated);
        let (next, result) = match state {
            State::Trying | State::Proceeding { .. } => {
                self.transmits.push_back(bytes.clone());
                let next = if code < 200 {
                    State::Proceeding { last: bytes }
                } else if self.reliability == Reliability::Reliable {
                    State::Terminated
                } else {
                    State::Completed {
                        last: bytes,
                        timer_j: now + self.config.timeout(),
                    }
                };
                (next, Ok(()))
            }
            other => {
                let name = if matches!(other, State::Terminated) {
                    "Terminated"
                } else {
                    "Completed"
                };
                let err = TransactionError::Unexpected {
                    state: name,
                    expected: "no response (already final)",
                    got: code.to_string(),
                };
                (other, Err(err))
            }
        };
        self.state = next;
        result
    }

    /// Fires Timer J when due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let State::Completed { timer_j, .. } = self.state
            && now >= timer_j
        {
            self.state = State::Terminated;
        }
    }

    /// The transport failed to send the response (§17.2.4): the transaction ends.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        self.state = State::Terminated;
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Completed { timer_j, .. } => Some(timer_j),
            _ => None,
        }
    }

    /// True once the transaction is over and may be dropped.
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_util::{first_line, response};
    use super::*;

    #[test]
    fn absorbs_retransmissions_then_timer_j() {
        let now = Instant::now();
        let mut tx = NonInviteServer::new(now, TimerConfig::default(), Reliability::Unreliable);
        tx.handle_request(now);
        assert!(tx.poll_transmit().is_none(), "nothing to resend in Trying");
        tx.send_response(now, &response("BYE", 100)).unwrap();
        // rsip drops a parsed reason phrase and prints its own for known codes.
        assert_eq!(
            first_line(&tx.poll_transmit().unwrap()),
            "SIP/2.0 100 Trying"
        );
        tx.handle_request(now);
        assert!(tx.poll_transmit().is_some(), "1xx resent in Proceeding");

        tx.send_response(now, &response("BYE", 200)).unwrap();
        assert!(tx.poll_transmit().is_some());
        tx.handle_request(now + Duration::from_secs(1));
        assert_eq!(first_line(&tx.poll_transmit().unwrap()), "SIP/2.0 200 OK");
        assert!(tx.send_response(now, &response("BYE", 500)).is_err());

        assert_eq!(tx.poll_timeout(), Some(now + Duration::from_secs(32)));
        tx.handle_timeout(now + Duration::from_millis(31_999));
        assert!(!tx.is_terminated());
        tx.handle_timeout(now + Duration::from_secs(32));
        assert!(tx.is_terminated());
    }

    #[test]
    fn reliable_terminates_on_final() {
        let now = Instant::now();
        let mut tx = NonInviteServer::new(now, TimerConfig::default(), Reliability::Reliable);
        tx.send_response(now, &response("OPTIONS", 200)).unwrap();
        assert!(tx.is_terminated());
        assert!(tx.poll_transmit().is_some());
    }
}
