//! Registration with a trunk (RFC 3261 §10.2): REGISTER with the configured
//! lifetime, digest challenges answered (401/407, nonce counts), 423 honoured
//! (Min-Expires), refreshed at half the granted lifetime on the same Call-ID, and
//! after a failure retried with exponential backoff (5 s doubling to 5 min).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rsip::{Header, Method, Request, Response};

use super::Origin;
use crate::sip::auth::DigestClient;
use crate::sip::message::build::{self, new_branch};
use crate::sip::message::{branch, header_first, header_param, header_values};
use crate::sip::transaction::{ClientEvent, NonInviteClient, earliest};
use crate::sip::trunk_scope::TrunkScope;

/// First retry delay after a failure.
const BACKOFF_MIN: Duration = Duration::from_secs(5);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The registration of one trunk.
#[derive(Debug)]
pub(super) struct Registration {
    /// Call-ID of every REGISTER (RFC 3261 §10.2.4).
    pub call_id: String,
    /// From value with our tag.
    from: String,
    /// Last CSeq used.
    seq: u32,
    /// Lifetime asked for.
    expires: u32,
    /// Digest state.
    auth: DigestClient,
    /// Authenticated resends of the current REGISTER.
    rounds: u32,
    /// The REGISTER in flight: its branch, the request, the transaction.
    pending: Option<(String, Request, NonInviteClient)>,
    /// Next REGISTER (refresh or retry).
    next_at: Option<Instant>,
    /// Delay of the next retry after a failure.
    backoff: Duration,
    /// Registered now.
    registered: bool,
    /// An unregister (Expires: 0) is the last REGISTER.
    stopping: bool,
    /// Outcome not yet polled: registered, and the problem if not.
    outcome: Option<(bool, Option<String>)>,
    /// Index of the target the REGISTER in flight went to.
    sent_to: usize,
    /// A target that failed as a server (timeout, transport, 5xx), not yet polled.
    target_failed: Option<usize>,
    /// Messages to send.
    transmits: VecDeque<Vec<u8>>,
}

impl Registration {
    /// A registration whose first REGISTER goes at `now`.
    pub(super) fn new(now: Instant, origin: &Origin, call_id: String) -> Self {
        Self {
            call_id,
            from: origin.tagged_from(),
            seq: 0,
            expires: origin
                .settings
                .register_expires
                .as_secs()
                .clamp(1, u64::from(u32::MAX)) as u32,
            auth: DigestClient::new(
                origin.settings.credentials.clone(),
                origin.settings.realm.clone(),
                TrunkScope::new(&origin.settings, origin.targets.iter().map(|t| t.addr.ip())),
            ),
            rounds: 0,
            pending: None,
            next_at: Some(now),
            backoff: BACKOFF_MIN,
            registered: false,
            stopping: false,
            outcome: None,
            sent_to: 0,
            target_failed: None,
            transmits: VecDeque::new(),
        }
    }

    fn send(&mut self, now: Instant, origin: &Origin, expires: u32, auth: Option<Vec<Header>>) {
        self.seq += 1;
        let extra = vec![
            Header::Expires(expires.to_string().into()),
            Header::Allow(build::ALLOW.into()),
        ];
        let Some(mut request) = origin.request(
            Method::Register,
            &self.from,
            &origin.aor(),
            &self.call_id,
            self.seq,
            extra,
        ) else {
            return;
        };
        let auth = auth.unwrap_or_else(|| {
            self.auth.authorize(
                "REGISTER",
                &request.uri.to_string(),
                &request.body,
                origin.target().addr,
            )
        });
        if !auth.is_empty() {
            let via = build::via(origin.local, &new_branch());
            request = build::resend(&request, via, self.seq, Some(auth), Vec::new());
        }
        let tx = NonInviteClient::new(
            now,
            &request,
            origin.config.timers,
            origin.target().transport.reliability(),
        );
        tracing::debug!(trunk = %origin.settings.name, target = %origin.target(), expires, "REGISTER");
        self.sent_to = origin.current;
        self.pending = Some((branch(&request).unwrap_or_default(), request, tx));
        self.next_at = None;
    }

    /// Fires due timers (and sends what is due).
    pub(super) fn handle_timeout(&mut self, now: Instant, origin: &Origin) {
        if let Some((_, _, tx)) = self.pending.as_mut() {
            tx.handle_timeout(now);
        }
        if self.pending.is_none() && !self.stopping && self.next_at.is_some_and(|at| now >= at) {
            self.rounds = 0;
            self.send(now, origin, self.expires, None);
        }
    }

    /// A response to the request in flight (matched by branch).
    pub(super) fn handle_response(&mut self, now: Instant, branch: &str, response: Response) {
        if let Some((b, _, tx)) = self.pending.as_mut()
            && b == branch
        {
            let _ = tx.handle_response(now, response);
        }
    }

    /// The request in flight could not be sent.
    pub(super) fn handle_send_error(&mut self, now: Instant, error: String) {
        if let Some((_, _, tx)) = self.pending.as_mut() {
            tx.handle_transport_error(now, error);
        }
    }

    /// Sends Expires: 0 and stops refreshing.
    pub(super) fn unregister(&mut self, now: Instant, origin: &Origin) {
        self.stopping = true;
        self.next_at = None;
        if self.registered {
            self.rounds = 0;
            self.send(now, origin, 0, None);
        }
    }

    /// Applies the REGISTER transaction's outcome.
    pub(super) fn process(&mut self, now: Instant, origin: &Origin) {
        let mut finals = Vec::new();
        if let Some((_, request, tx)) = self.pending.as_mut() {
            while let Some(bytes) = tx.poll_transmit() {
                self.transmits.push_back(bytes);
            }
            while let Some(event) = tx.poll_event() {
                if !matches!(event, ClientEvent::Provisional(_)) {
                    finals.push((request.clone(), event));
                }
            }
        }
        if !finals.is_empty() {
            self.pending = None;
        }
        for (request, event) in finals {
            self.on_final(now, origin, &request, event);
        }
        if let Some((_, _, tx)) = self.pending.as_mut() {
            while let Some(bytes) = tx.poll_transmit() {
                self.transmits.push_back(bytes);
            }
        }
    }

    fn on_final(&mut self, now: Instant, origin: &Origin, request: &Request, event: ClientEvent) {
        let name = &origin.settings.name;
        let response = match event {
            ClientEvent::Final(r) => r,
            ClientEvent::Timeout => {
                return self.failed(now, name, "REGISTER timeout".into(), true);
            }
            ClientEvent::TransportError(e) => {
                let detail = format!("REGISTER transport error: {e}");
                return self.failed(now, name, detail, true);
            }
            ClientEvent::Provisional(_) => return,
        };
        let code = response.status_code.code();
        let asked = header_first(&request.headers, "Expires")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(self.expires);
        match code {
            200..=299 if self.stopping => {
                tracing::info!(trunk = %name, "unregistered");
                self.registered = false;
            }
            200..=299 => {
                let granted = granted_expires(&response, origin).unwrap_or(asked).max(1);
                tracing::info!(trunk = %name, granted, "registered");
                self.registered = true;
                self.backoff = BACKOFF_MIN;
                self.outcome = Some((true, None));
                let refresh = Duration::from_secs(u64::from(granted)) / 2;
                self.next_at = Some(now + refresh.max(Duration::from_secs(1)));
            }
            401 | 407 => match self.auth.on_challenge(
                &response,
                request,
                self.rounds,
                origin
                    .targets
                    .get(self.sent_to)
                    .map_or(origin.target().addr, |t| t.addr),
            ) {
                Ok(headers) => {
                    self.rounds += 1;
                    self.send(now, origin, asked, Some(headers));
                }
                Err(e) => self.failed(now, name, format!("REGISTER {code}: {e}"), false),
            },
            423 => match header_first(&response.headers, "Min-Expires")
                .and_then(|v| v.trim().parse::<u32>().ok())
            {
                Some(min) if min > asked && !self.stopping => {
                    self.expires = min;
                    self.send(now, origin, min, None);
                }
                _ => {
                    let detail = "REGISTER 423 without usable Min-Expires".into();
                    self.failed(now, name, detail, false)
                }
            },
            _ => {
                let server = code >= 500 || code == 408;
                self.failed(now, name, format!("REGISTER answered {code}"), server)
            }
        }
    }

    /// A failed REGISTER; `server`: the registrar failed (not our credentials), so
    /// the retry may go to the trunk's next address.
    fn failed(&mut self, now: Instant, trunk: &str, detail: String, server: bool) {
        if self.stopping {
            return;
        }
        if server {
            self.target_failed = Some(self.sent_to);
        }
        tracing::warn!(%trunk, retry_in = ?self.backoff, "{detail}");
        self.registered = false;
        self.outcome = Some((false, Some(detail)));
        self.next_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Index of the target the last REGISTER went to.
    pub(super) fn sent_to(&self) -> usize {
        self.sent_to
    }

    /// The target that last failed as a server, once.
    pub(super) fn poll_target_failed(&mut self) -> Option<usize> {
        self.target_failed.take()
    }

    /// The last outcome: registered, and the problem if not.
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
            self.pending
                .as_ref()
                .and_then(|(_, _, tx)| tx.poll_timeout()),
            self.next_at,
        )
    }
}

/// The lifetime the registrar granted our Contact: its `expires` parameter in the
/// 2xx's Contact list, else the Expires header.
fn granted_expires(response: &Response, origin: &Origin) -> Option<u32> {
    let ours = crate::sip::message::build::host_port(origin.local.addr);
    for contact in header_values(&response.headers, "Contact") {
        for element in crate::sip::message::split_elements(&contact) {
            if element.contains(&ours)
                && let Some(v) = header_param(element, "expires")
                && let Ok(n) = v.parse()
            {
                return Some(n);
            }
        }
    }
    header_first(&response.headers, "Expires").and_then(|v| v.trim().parse().ok())
}
