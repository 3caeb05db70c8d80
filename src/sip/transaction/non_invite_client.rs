//! Non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6), used for BYE and CANCEL.
//!
//! ```text
//!  Trying --1xx--> Proceeding
//!    | E: retransmit (T1, 2*T1, ... capped at T2; every T2 in Proceeding)
//!    | F (64*T1): Timeout
//!    +--200-699 (either state)--> Completed; K (T4): Terminated
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rsip::{Request, Response};

use super::{ClientEvent, Reliability, TimerConfig, TransactionError, earliest};
use crate::sip::message::build::request_bytes;

/// Waiting for a response (Trying) or for the final one (Proceeding).
#[derive(Debug)]
struct Waiting {
    /// Whether a provisional came (Proceeding) or not (Trying).
    provisional: bool,
    /// Next Timer E firing and the interval after it; `None` on reliable transports.
    timer_e: Option<(Instant, Duration)>,
    /// Timer F: give up.
    timer_f: Instant,
}

/// The final response came; absorbing retransmissions until Timer K.
#[derive(Debug)]
struct Completed {
    /// Timer K.
    timer_k: Instant,
}

/// Done; the owner may drop the transaction.
#[derive(Debug)]
struct Terminated;

#[derive(Debug)]
enum State {
    Trying(Waiting),
    Proceeding(Waiting),
    Completed(Completed),
    Terminated(Terminated),
}

/// The non-INVITE client transaction.
#[derive(Debug)]
pub struct NonInviteClient {
    /// The serialised request, for retransmissions.
    request_bytes: Vec<u8>,
    /// Timer values.
    config: TimerConfig,
    /// UDP or not: decides Timer E and K.
    reliability: Reliability,
    /// Current state.
    state: State,
    /// Datagrams to send, oldest first.
    transmits: VecDeque<Vec<u8>>,
    /// Events for the transaction user, oldest first.
    events: VecDeque<ClientEvent>,
}

impl NonInviteClient {
    /// Starts the transaction: the request is queued for sending at `now`.
    pub fn new(
        now: Instant,
        request: &Request,
        config: TimerConfig,
        reliability: Reliability,
    ) -> Self {
        let request_bytes = request_bytes(request);
        let timer_e =
            (reliability == Reliability::Unreliable).then(|| (now + config.t1, config.t1));
        Self {
            transmits: VecDeque::from([request_bytes.clone()]),
            request_bytes,
            config,
            reliability,
            state: State::Trying(Waiting {
                provisional: false,
                timer_e,
                timer_f: now + config.timeout(),
            }),
            events: VecDeque::new(),
        }
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
            State::Trying(w) | State::Proceeding(w) if code < 200 => {
                self.events.push_back(ClientEvent::Provisional(response));
                // In Proceeding, Timer E fires every T2 (§17.1.2.2).
                let timer_e = w.timer_e.map(|(at, _)| (at, self.config.t2));
                (
                    State::Proceeding(Waiting {
                        provisional: true,
                        timer_e,
                        ..w
                    }),
                    Ok(()),
                )
            }
            State::Trying(_) | State::Proceeding(_) => {
                self.events.push_back(ClientEvent::Final(response));
                (self.completed(now), Ok(()))
            }
            State::Completed(c) => (State::Completed(c), Ok(())),
            State::Terminated(t) => (
                State::Terminated(t),
                Err(TransactionError::Unexpected {
                    state: "Terminated",
                    expected: "nothing",
                    got: code.to_string(),
                }),
            ),
        };
        self.state = next;
        result
    }

    fn completed(&self, now: Instant) -> State {
        match self.reliability {
            Reliability::Reliable => State::Terminated(Terminated),
            Reliability::Unreliable => State::Completed(Completed {
                timer_k: now + self.config.t4,
            }),
        }
    }

    /// Fires the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let state = std::mem::replace(&mut self.state, State::Terminated(Terminated));
        self.state = match state {
            State::Trying(w) | State::Proceeding(w) if now >= w.timer_f => {
                self.events.push_back(ClientEvent::Timeout);
                State::Terminated(Terminated)
            }
            State::Trying(w) | State::Proceeding(w) => match w.timer_e {
                Some((at, interval)) if now >= at => {
                    self.transmits.push_back(self.request_bytes.clone());
                    let next = if w.provisional {
                        self.config.t2
                    } else {
                        (interval * 2).min(self.config.t2)
                    };
                    let w = Waiting {
                        timer_e: Some((at + next, next)),
                        ..w
                    };
                    if w.provisional {
                        State::Proceeding(w)
                    } else {
                        State::Trying(w)
                    }
                }
                _ if w.provisional => State::Proceeding(w),
                _ => State::Trying(w),
            },
            State::Completed(c) if now >= c.timer_k => State::Terminated(Terminated),
            other => other,
        };
    }

    /// The transport failed to send for this transaction (RFC 3261 §17.1.4).
    pub fn handle_transport_error(&mut self, _now: Instant, error: String) {
        if matches!(self.state, State::Trying(_) | State::Proceeding(_)) {
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
            State::Trying(w) | State::Proceeding(w) => {
                earliest(w.timer_e.map(|(at, _)| at), Some(w.timer_f))
            }
            State::Completed(c) => Some(c.timer_k),
            State::Terminated(_) => None,
        }
    }

    /// True once the transaction is over and may be dropped.
    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated(_))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ms, request, response, run_until};
    use super::*;

    fn start(reliability: Reliability) -> (Instant, NonInviteClient) {
        let now = Instant::now();
        let tx = NonInviteClient::new(now, &request("BYE"), TimerConfig::default(), reliability);
        (now, tx)
    }

    #[test]
    fn timer_e_doubles_to_t2_and_timer_f_times_out() {
        let (now, mut tx) = start(Reliability::Unreliable);
        let sent = run_until(&mut tx, now, Duration::from_secs(60));
        // 0, then E at +T1, +2T1, +4T1, then every T2 (4 s) until F at 64*T1 = 32 s.
        assert_eq!(
            ms(&sent),
            vec![
                0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(tx.poll_event(), Some(ClientEvent::Timeout));
        assert!(tx.is_terminated());
    }

    #[test]
    fn proceeding_retransmits_every_t2() {
        let (now, mut tx) = start(Reliability::Unreliable);
        tx.poll_transmit();
        tx.handle_response(now, response("BYE", 100)).unwrap();
        assert!(matches!(tx.poll_event(), Some(ClientEvent::Provisional(_))));
        let sent = run_until(&mut tx, now, Duration::from_secs(10));
        assert_eq!(ms(&sent), vec![500, 4500, 8500]);
    }

    #[test]
    fn final_response_then_timer_k() {
        let (now, mut tx) = start(Reliability::Unreliable);
        tx.poll_transmit();
        tx.handle_response(now, response("BYE", 200)).unwrap();
        assert!(matches!(tx.poll_event(), Some(ClientEvent::Final(_))));
        tx.handle_response(now, response("BYE", 200)).unwrap();
        assert_eq!(tx.poll_event(), None, "retransmission absorbed");
        assert_eq!(tx.poll_timeout(), Some(now + Duration::from_secs(5)));
        tx.handle_timeout(now + Duration::from_secs(5));
        assert!(tx.is_terminated());
        assert!(tx.handle_response(now, response("BYE", 200)).is_err());
    }

    #[test]
    fn reliable_has_no_e_and_no_k() {
        let (now, mut tx) = start(Reliability::Reliable);
        assert_eq!(
            ms(&run_until(&mut tx, now, Duration::from_secs(1))),
            vec![0]
        );
        tx.handle_response(now, response("BYE", 481)).unwrap();
        assert!(tx.is_terminated());
    }
}
