//! The inbound call state machine, sans-IO: one INVITE from a trunk offered to every
//! live session of the user; the first `accept` wins.
//!
//! ```text
//!  Ringing(sessions) ──accept──> Answering(winner) ──ACK──> Answered(winner)
//!     │  all reject: 603; timeout: 480; CANCEL; nobody left: 480
//!     └───────────────────────────────> Finished
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::machine::Outcome;
use crate::signaling::protocol::{EndReason, ServerMessage};

/// What happens to an inbound call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundInput {
    /// A session accepted (its SDP answer is held by the driver).
    Accept {
        /// The session.
        session: String,
    },
    /// A session rejected the call.
    Reject {
        /// The session.
        session: String,
    },
    /// A session hung up (after answering: ends the call; before: like reject).
    Hangup {
        /// The session.
        session: String,
    },
    /// A session's WebSocket is gone.
    SessionGone {
        /// The session.
        session: String,
    },
    /// The trunk cancelled the INVITE (CANCEL answered, 487 sent by the SIP layer).
    Cancelled,
    /// The trunk acknowledged our 200.
    Acked,
    /// The trunk sent BYE.
    RemoteHangup,
    /// The SIP leg failed (no ACK, transport).
    SipFailed(String),
    /// The winner's media is up.
    MediaConnected,
    /// The winner's media failed.
    MediaFailed(String),
    /// The gateway ends the call (operator API, drain timeout) with this reason.
    Terminate(EndReason),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundOutput {
    /// Send a message to one session.
    ToSession(String, ServerMessage),
    /// Answer the INVITE 200 with the SDP built for this session's accept.
    SipAnswer(String),
    /// Answer the INVITE with a final error status.
    SipReject(u16),
    /// Send BYE.
    SipHangup,
    /// Close the WebRTC leg offered to this session.
    CloseLeg(String),
    /// The call is over.
    Finished(Outcome),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Ringing,
    Answering { winner: String },
    Answered { winner: String, at: Instant },
    Finished,
}

/// One inbound call.
#[derive(Debug)]
pub struct InboundCall {
    /// The gateway's call id (`i-…`), used in every session message.
    call_id: String,
    /// Where the call stands.
    state: State,
    /// When the INVITE arrived.
    started: Instant,
    /// Sessions still ringing.
    ringing: BTreeSet<String>,
    /// Whether a session rejected (for the final status when none is left).
    rejected: bool,
    /// Ring timeout.
    ring_timeout: Duration,
    /// Maximum talk time.
    max_duration: Duration,
    /// Pending outputs.
    outputs: VecDeque<InboundOutput>,
}

impl InboundCall {
    /// A call just offered (with `incoming`) to `sessions`.
    pub fn new(
        call_id: impl Into<String>,
        now: Instant,
        sessions: impl IntoIterator<Item = String>,
        ring_timeout: Duration,
        max_duration: Duration,
    ) -> InboundCall {
        InboundCall {
            call_id: call_id.into(),
            state: State::Ringing,
            started: now,
            ringing: sessions.into_iter().collect(),
            rejected: false,
            ring_timeout,
            max_duration,
            outputs: VecDeque::new(),
        }
    }

    /// Whether the call is over.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// The session that answered, if any.
    pub fn winner(&self) -> Option<&str> {
        match &self.state {
            State::Answering { winner } | State::Answered { winner, .. } => Some(winner),
            _ => None,
        }
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: InboundInput) {
        match (self.state.clone(), input) {
            (State::Finished, _) => {}
            (State::Ringing, InboundInput::Accept { session }) if self.ringing.remove(&session) => {
                for other in std::mem::take(&mut self.ringing) {
                    self.end_session(&other, EndReason::AnsweredElsewhere);
                    self.outputs.push_back(InboundOutput::CloseLeg(other));
                }
                self.outputs
                    .push_back(InboundOutput::SipAnswer(session.clone()));
                self.state = State::Answering { winner: session };
            }
            (
                State::Ringing,
                InboundInput::Reject { session } | InboundInput::Hangup { session },
            ) if self.ringing.remove(&session) => {
                self.rejected = true;
                self.end_session(&session, EndReason::Rejected);
                self.outputs.push_back(InboundOutput::CloseLeg(session));
                self.nobody_left(now);
            }
            (State::Ringing, InboundInput::SessionGone { session })
                if self.ringing.remove(&session) =>
            {
                self.outputs.push_back(InboundOutput::CloseLeg(session));
                self.nobody_left(now);
            }
            (State::Ringing, InboundInput::Cancelled) => {
                self.end_all_ringing(EndReason::RemoteHangup);
                self.finish(now, EndReason::RemoteHangup, Some(487), "caller cancelled");
            }
            (State::Answering { winner }, InboundInput::Acked) => {
                self.outputs.push_back(InboundOutput::ToSession(
                    winner.clone(),
                    ServerMessage::Answered {
                        call_id: self.call_id.clone(),
                    },
                ));
                self.state = State::Answered { winner, at: now };
            }
            (State::Answering { winner } | State::Answered { winner, .. }, input) => {
                self.handle_answered(now, &winner, input);
            }
            (State::Ringing, InboundInput::Terminate(reason)) => {
                // 503 on a drain lets the trunk try elsewhere; 480 otherwise.
                let status = if reason == EndReason::Unavailable {
                    503
                } else {
                    480
                };
                self.end_all_ringing(reason);
                self.outputs.push_back(InboundOutput::SipReject(status));
                self.finish(now, reason, Some(status), "ended by the gateway");
            }
            (State::Ringing, InboundInput::SipFailed(detail)) => {
                self.end_all_ringing(EndReason::Error);
                self.finish(now, EndReason::Error, None, &detail);
            }
            _ => {}
        }
    }

    fn handle_answered(&mut self, now: Instant, winner: &str, input: InboundInput) {
        let (reason, hang_up, tell, detail) = match input {
            InboundInput::Hangup { session } if session == winner => {
                (EndReason::Hangup, true, true, "browser hung up".to_string())
            }
            InboundInput::SessionGone { session } if session == winner => (
                EndReason::SignalingLost,
                true,
                false,
                "websocket closed".to_string(),
            ),
            InboundInput::RemoteHangup | InboundInput::Cancelled => (
                EndReason::RemoteHangup,
                false,
                true,
                "caller hung up".to_string(),
            ),
            InboundInput::SipFailed(d) => (EndReason::Error, true, true, d),
            InboundInput::Terminate(reason) => {
                (reason, true, true, "ended by the gateway".to_string())
            }
            InboundInput::MediaFailed(d) => (EndReason::MediaFailed, true, true, d),
            _ => return,
        };
        if hang_up {
            self.outputs.push_back(InboundOutput::SipHangup);
        }
        if tell {
            self.end_session(winner, reason);
        }
        self.finish(now, reason, None, &detail);
    }

    fn nobody_left(&mut self, now: Instant) {
        if !self.ringing.is_empty() {
            return;
        }
        let (status, reason, detail) = if self.rejected {
            (603, EndReason::Rejected, "declined by the user")
        } else {
            (480, EndReason::NoAnswer, "no session left to ring")
        };
        self.outputs.push_back(InboundOutput::SipReject(status));
        self.finish(now, reason, Some(status), detail);
    }

    fn end_all_ringing(&mut self, reason: EndReason) {
        for session in std::mem::take(&mut self.ringing) {
            self.end_session(&session, reason);
            self.outputs.push_back(InboundOutput::CloseLeg(session));
        }
    }

    /// Advances timers; call when [`Self::poll_timeout`] is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state.clone() {
            State::Ringing if now >= self.started + self.ring_timeout => {
                self.end_all_ringing(EndReason::NoAnswer);
                self.outputs.push_back(InboundOutput::SipReject(480));
                let detail = format!("not answered within {}s", self.ring_timeout.as_secs());
                self.finish(now, EndReason::NoAnswer, Some(480), &detail);
            }
            State::Answered { winner, at } if now >= at + self.max_duration => {
                self.outputs.push_back(InboundOutput::SipHangup);
                self.end_session(&winner, EndReason::Limit);
                self.finish(now, EndReason::Limit, None, "maximum call duration reached");
            }
            _ => {}
        }
    }

    /// When [`Self::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Ringing => Some(self.started + self.ring_timeout),
            State::Answered { at, .. } => Some(*at + self.max_duration),
            State::Answering { .. } | State::Finished => None,
        }
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<InboundOutput> {
        self.outputs.pop_front()
    }

    fn end_session(&mut self, session: &str, reason: EndReason) {
        self.outputs.push_back(InboundOutput::ToSession(
            session.to_string(),
            ServerMessage::Ended {
                call_id: self.call_id.clone(),
                reason,
                sip_status: None,
            },
        ));
    }

    fn finish(&mut self, now: Instant, reason: EndReason, sip_status: Option<u16>, detail: &str) {
        let (setup_time, talk_time) = match &self.state {
            State::Answered { at, .. } => (Some(*at - self.started), Some(now - *at)),
            _ => (None, None),
        };
        self.state = State::Finished;
        self.outputs.push_back(InboundOutput::Finished(Outcome {
            reason,
            sip_status,
            setup_time,
            talk_time,
            detail: detail.to_string(),
        }));
    }
}

#[cfg(test)]
#[path = "inbound_machine_tests.rs"]
mod tests;
