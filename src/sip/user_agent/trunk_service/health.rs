//! OPTIONS pings to a trunk: one at a time, the next `interval` after the previous
//! finished. Any final response but 503 means reachable (a 404/405/501 still proves
//! the trunk is up); a timeout, a transport error or a 503 means unreachable.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rsip::{Header, Method, Response};

use super::Origin;
use crate::sip::message::branch;
use crate::sip::transaction::{ClientEvent, NonInviteClient, earliest};

/// The health check of one trunk.
#[derive(Debug)]
pub(super) struct Health {
    /// Time between the end of a ping and the next.
    interval: Duration,
    /// Call-ID of every ping (CSeq increments).
    pub call_id: String,
    /// Last CSeq used.
    seq: u32,
    /// From value (tag kept across pings).
    from: Option<String>,
    /// The ping in flight and its branch.
    ping: Option<(String, NonInviteClient)>,
    /// When the next ping goes.
    next_at: Option<Instant>,
    /// Outcome of the last finished ping, not yet polled.
    outcome: Option<(bool, Option<String>)>,
    /// Index of the target the ping in flight went to.
    sent_to: usize,
    /// A target whose ping failed, not yet polled.
    target_failed: Option<usize>,
    /// Messages to send.
    transmits: VecDeque<Vec<u8>>,
}

impl Health {
    /// A check whose first ping goes at `now`.
    pub(super) fn new(now: Instant, interval: Duration, call_id: String) -> Self {
        Self {
            interval,
            call_id,
            seq: 0,
            from: None,
            ping: None,
            next_at: Some(now),
            outcome: None,
            sent_to: 0,
            target_failed: None,
            transmits: VecDeque::new(),
        }
    }

    /// Fires due timers (and sends what is due).
    pub(super) fn handle_timeout(&mut self, now: Instant, origin: &Origin) {
        if let Some((_, tx)) = self.ping.as_mut() {
            tx.handle_timeout(now);
        }
        if self.next_at.is_some_and(|at| now >= at) && self.ping.is_none() {
            self.next_at = None;
            self.seq += 1;
            let from = self
                .from
                .get_or_insert_with(|| origin.tagged_from())
                .clone();
            let extra = vec![Header::Accept("application/sdp".into())];
            let Some(request) = origin.request(
                Method::Options,
                &from,
                &origin.aor(),
                &self.call_id,
                self.seq,
                extra,
            ) else {
                return;
            };
            let reliability = origin.target().transport.reliability();
            let tx = NonInviteClient::new(now, &request, origin.config.timers, reliability);
            tracing::debug!(trunk = %origin.settings.name, target = %origin.target(), "OPTIONS ping");
            self.sent_to = origin.current;
            self.ping = Some((branch(&request).unwrap_or_default(), tx));
        }
        self.process(now);
    }

    /// A response to the request in flight (matched by branch).
    pub(super) fn handle_response(&mut self, now: Instant, branch: &str, response: Response) {
        if let Some((b, tx)) = self.ping.as_mut()
            && b == branch
        {
            let _ = tx.handle_response(now, response);
        }
        self.process(now);
    }

    /// The request in flight could not be sent.
    pub(super) fn handle_send_error(&mut self, now: Instant, error: String) {
        if let Some((_, tx)) = self.ping.as_mut() {
            tx.handle_transport_error(now, error);
        }
        self.process(now);
    }

    fn process(&mut self, now: Instant) {
        let Some((_, tx)) = self.ping.as_mut() else {
            return;
        };
        while let Some(bytes) = tx.poll_transmit() {
            self.transmits.push_back(bytes);
        }
        while let Some(event) = tx.poll_event() {
            let outcome = match event {
                ClientEvent::Provisional(_) => continue,
                ClientEvent::Final(r) if r.status_code.code() == 503 => {
                    (false, Some("OPTIONS answered 503".to_string()))
                }
                ClientEvent::Final(_) => (true, None),
                ClientEvent::Timeout => (false, Some("OPTIONS timeout".to_string())),
                ClientEvent::TransportError(e) => {
                    (false, Some(format!("OPTIONS transport error: {e}")))
                }
            };
            if !outcome.0 {
                self.target_failed = Some(self.sent_to);
            }
            self.outcome = Some(outcome);
            self.next_at = Some(now + self.interval);
        }
        if self.outcome.is_some() || tx.is_terminated() {
            // The absorbing state (Timer K) is not worth keeping for a ping.
            self.ping = None;
            if self.next_at.is_none() {
                self.next_at = Some(now + self.interval);
            }
        }
    }

    /// Index of the target the last ping went to.
    pub(super) fn sent_to(&self) -> usize {
        self.sent_to
    }

    /// Pings at `now` instead of after the interval (another address to try).
    pub(super) fn ping_now(&mut self, now: Instant) {
        if self.ping.is_none() {
            self.next_at = Some(now);
        }
    }

    /// The target whose ping last failed, once.
    pub(super) fn poll_target_failed(&mut self) -> Option<usize> {
        self.target_failed.take()
    }

    /// The last ping's outcome: reachable, and the problem if not.
    pub(super) fn poll_outcome(&mut self) -> Option<(bool, Option<String>)> {
        self.outcome.take()
    }

    /// The next message to send.
    pub(super) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        earliest(
            self.ping.as_ref().and_then(|(_, tx)| tx.poll_timeout()),
            self.next_at,
        )
    }
}
