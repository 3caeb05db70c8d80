//! The outbound call state machine, sans-IO: it joins the browser leg and the SIP leg
//! and decides what each side is told. Inputs carry `now`; outputs are drained with
//! [`OutboundCall::poll_output`]; [`OutboundCall::poll_timeout`] says when to call
//! [`OutboundCall::handle_timeout`].
//!
//! ```text
//!  Dialing ──180/183──> Early ──200──> Answered
//!     │  └─ 5xx/408/transport: NextTrunk (while trunks are left)
//!     └── final error / hangup / lost / timeout ──> Finished
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::signaling::protocol::{EndReason, ServerMessage};
use crate::sip::SipCallEvent;

/// What happens to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Progress of the SIP leg.
    Sip(SipCallEvent),
    /// The browser sent `hangup`.
    BrowserHangup,
    /// The browser's WebSocket is gone for good.
    SignalingLost,
    /// The gateway ends the call (operator API, drain timeout) with this reason.
    Terminate(EndReason),
    /// ICE and DTLS with the browser are up.
    MediaConnected,
    /// The browser media failed (ICE/DTLS) or the SIP peer's SDP was unusable.
    MediaFailed(String),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this to the browser.
    ToBrowser(ServerMessage),
    /// Point the media bridge at the SIP peer's SDP (start it, or update it).
    ApplyRemoteSdp(String),
    /// Hang up the SIP leg (CANCEL before answer, BYE after).
    HangupSip,
    /// The current trunk failed over-ably (5xx, 408, transport): INVITE the next one.
    NextTrunk,
    /// The call is over; write the record and release resources.
    Finished(Outcome),
}

/// How a call ended, for records and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Why it ended.
    pub reason: EndReason,
    /// The SIP status that ended it, if any.
    pub sip_status: Option<u16>,
    /// Time from start to answer, if answered.
    pub setup_time: Option<Duration>,
    /// Time from answer to end, if answered.
    pub talk_time: Option<Duration>,
    /// Free text detail for logs.
    pub detail: String,
}

/// Timing limits of a call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Hang up after this long from the answer.
    pub max_duration: Duration,
    /// Fail with `media_failed` if the browser's ICE/DTLS is not up by then.
    pub media_timeout: Duration,
    /// CANCEL and end with `no_answer` if a trunk has not answered by then.
    pub invite_timeout: Duration,
}

/// Whether a final failure from a trunk should move the call to the next trunk:
/// 408, 5xx and transport errors (reported as 503), not 4xx/6xx from the far end.
pub fn fails_over(status: u16) -> bool {
    status == 408 || (500..600).contains(&status)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Dialing,
    Early { rang: bool, progressed: bool },
    Answered { at: Instant },
    Finished,
}

/// One outbound call, browser → SIP.
#[derive(Debug)]
pub struct OutboundCall {
    /// The client's call id (used in every browser message).
    call_id: String,
    /// Where the call stands.
    state: State,
    /// When the browser asked for the call.
    started: Instant,
    /// Whether browser media is up.
    media_up: bool,
    /// Limits in force.
    limits: Limits,
    /// When the INVITE to the current trunk was sent.
    invite_sent: Instant,
    /// Trunks left to try after the current one.
    trunks_left: usize,
    /// Pending outputs.
    outputs: VecDeque<Output>,
}

impl OutboundCall {
    /// A call that has just sent its INVITE to the first of `trunks` trunks.
    pub fn new(
        call_id: impl Into<String>,
        now: Instant,
        limits: Limits,
        trunks: usize,
    ) -> OutboundCall {
        OutboundCall {
            call_id: call_id.into(),
            state: State::Dialing,
            started: now,
            media_up: false,
            limits,
            invite_sent: now,
            trunks_left: trunks.saturating_sub(1),
            outputs: VecDeque::new(),
        }
    }

    /// Sets how many trunks remain after the current one (the driver may skip trunks
    /// it cannot address).
    pub fn set_trunks_left(&mut self, n: usize) {
        self.trunks_left = n;
    }

    /// Whether the call has finished.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Whether the far end answered (and the call has not finished).
    pub fn is_answered(&self) -> bool {
        matches!(self.state, State::Answered { .. })
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: Input) {
        if self.state == State::Finished {
            return;
        }
        match input {
            Input::Sip(event) => self.handle_sip(now, event),
            Input::BrowserHangup => self.hang_up(now, EndReason::Hangup, "browser hung up"),
            Input::Terminate(reason) => self.hang_up(now, reason, "ended by the gateway"),
            Input::SignalingLost => {
                self.outputs.push_back(Output::HangupSip);
                self.finish(
                    now,
                    EndReason::SignalingLost,
                    None,
                    "websocket closed".into(),
                    false,
                );
            }
            Input::MediaConnected => self.media_up = true,
            Input::MediaFailed(detail) => self.hang_up(now, EndReason::MediaFailed, &detail),
        }
    }

    fn handle_sip(&mut self, now: Instant, event: SipCallEvent) {
        match event {
            SipCallEvent::Ringing { sdp } => {
                self.early(true, false);
                if let Some(sdp) = sdp {
                    self.outputs.push_back(Output::ApplyRemoteSdp(sdp));
                }
            }
            SipCallEvent::Progress { sdp } => {
                self.early(false, true);
                if let Some(sdp) = sdp {
                    self.outputs.push_back(Output::ApplyRemoteSdp(sdp));
                }
            }
            SipCallEvent::Answered { sdp } => {
                if matches!(self.state, State::Answered { .. }) {
                    return;
                }
                self.state = State::Answered { at: now };
                self.outputs.push_back(Output::ApplyRemoteSdp(sdp));
                self.tell_browser(ServerMessage::Answered {
                    call_id: self.call_id.clone(),
                });
            }
            // Failover only before the answer: an answered call whose dialog dies
            // (408/481/500 to an in-dialog request) ends; it is not re-dialled.
            SipCallEvent::Failed { status, .. }
                if fails_over(status) && self.trunks_left > 0 && !self.is_answered() =>
            {
                self.trunks_left -= 1;
                self.invite_sent = now;
                self.outputs.push_back(Output::NextTrunk);
            }
            SipCallEvent::Failed { status, reason } => {
                // After the answer a failure means the dialog died (481/408 to an
                // in-dialog request, no ACK, session timer expiry): not "no answer".
                let end = if self.is_answered() {
                    EndReason::Error
                } else {
                    EndReason::from_sip_status(status)
                };
                self.finish(now, end, Some(status), format!("{status} {reason}"), true);
            }
            SipCallEvent::RemoteHangup => {
                self.finish(
                    now,
                    EndReason::RemoteHangup,
                    None,
                    "far end sent BYE".into(),
                    true,
                );
            }
            SipCallEvent::RemoteSdp { sdp } => {
                self.outputs.push_back(Output::ApplyRemoteSdp(sdp));
            }
            // Transfers are decided by the driver (dial plan, limits); the call goes on.
            SipCallEvent::ReinviteResult { .. }
            | SipCallEvent::Transferred { .. }
            | SipCallEvent::TransferRequested { .. }
            | SipCallEvent::TransferFailed { .. } => {}
            SipCallEvent::Terminated => {
                // Only expected after our own hangup, when we are already finished.
                self.finish(
                    now,
                    EndReason::Error,
                    None,
                    "SIP leg ended unexpectedly".into(),
                    true,
                );
            }
        }
    }

    fn early(&mut self, ringing: bool, progress: bool) {
        let (rang, progressed) = match self.state {
            State::Dialing => (false, false),
            State::Early { rang, progressed } => (rang, progressed),
            State::Answered { .. } | State::Finished => return,
        };
        if ringing && !rang {
            self.tell_browser(ServerMessage::Ringing {
                call_id: self.call_id.clone(),
            });
        }
        if progress && !progressed {
            self.tell_browser(ServerMessage::Progress {
                call_id: self.call_id.clone(),
            });
        }
        self.state = State::Early {
            rang: rang || ringing,
            progressed: progressed || progress,
        };
    }

    /// Advances timers; call when [`Self::poll_timeout`] is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state == State::Finished {
            return;
        }
        if !self.media_up && now >= self.started + self.limits.media_timeout {
            self.hang_up(
                now,
                EndReason::MediaFailed,
                "browser media did not connect in time",
            );
            return;
        }
        match self.state {
            State::Answered { at } if now >= at + self.limits.max_duration => {
                self.hang_up(now, EndReason::Limit, "maximum call duration reached");
            }
            State::Dialing | State::Early { .. }
                if now >= self.invite_sent + self.limits.invite_timeout =>
            {
                let detail = format!("no answer within {}s", self.limits.invite_timeout.as_secs());
                self.hang_up(now, EndReason::NoAnswer, &detail);
            }
            _ => {}
        }
    }

    /// The next instant [`Self::handle_timeout`] must be called at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let media = (!self.media_up).then(|| self.started + self.limits.media_timeout);
        let state = match self.state {
            State::Finished => return None,
            State::Answered { at } => at + self.limits.max_duration,
            State::Dialing | State::Early { .. } => self.invite_sent + self.limits.invite_timeout,
        };
        Some(media.map_or(state, |m| m.min(state)))
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn hang_up(&mut self, now: Instant, reason: EndReason, detail: &str) {
        self.outputs.push_back(Output::HangupSip);
        self.finish(now, reason, None, detail.into(), true);
    }

    fn tell_browser(&mut self, message: ServerMessage) {
        self.outputs.push_back(Output::ToBrowser(message));
    }

    fn finish(
        &mut self,
        now: Instant,
        reason: EndReason,
        sip_status: Option<u16>,
        detail: String,
        tell_browser: bool,
    ) {
        let (setup_time, talk_time) = match self.state {
            State::Answered { at } => (Some(at - self.started), Some(now - at)),
            _ => (None, None),
        };
        self.state = State::Finished;
        if tell_browser {
            self.tell_browser(ServerMessage::Ended {
                call_id: self.call_id.clone(),
                reason,
                sip_status,
            });
        }
        self.outputs.push_back(Output::Finished(Outcome {
            reason,
            sip_status,
            setup_time,
            talk_time,
            detail,
        }));
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
