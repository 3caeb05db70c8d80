//! Per-trunk services, sans-IO: registration (RFC 3261 §10, refreshed at half the
//! granted lifetime, retried with backoff) and health checks (an OPTIONS ping every
//! interval; a timeout, transport error or 503 marks the trunk unreachable until it
//! answers again). Status changes are reported as [`TrunkStatus`] values.

mod health;
mod registration;

use std::collections::VecDeque;
use std::time::Instant;

use rsip::{Header, Method, Request, Response, Uri, Version};

use super::{Owner, Transmit, UaConfig, new_call_id};
use crate::sip::message::build::{self, contact_uri, new_branch, random_hex};
use crate::sip::message::{branch, cseq};
use crate::sip::transaction::earliest;
use crate::sip::transport::Peer;
use crate::sip::{TrunkSettings, TrunkStatus};

use health::Health;
use registration::Registration;

/// Identity and addressing every request of a trunk service shares.
#[derive(Debug, Clone)]
struct Origin {
    /// The trunk.
    settings: TrunkSettings,
    /// Its addresses in the order to try them (several from DNS SRV); never empty.
    targets: Vec<Peer>,
    /// Index of the address in use; moves on when it fails as a server.
    current: usize,
    /// Our advertised address.
    local: Peer,
    /// Timers and User-Agent.
    config: UaConfig,
}

impl Origin {
    /// The address in use.
    fn target(&self) -> Peer {
        self.targets[self.current]
    }

    /// After the address at `failed` failed: the next one, if it is still in use
    /// and there is another.
    fn fail_over(&mut self, failed: usize) {
        if failed != self.current || self.targets.len() < 2 {
            return;
        }
        let from = self.target();
        self.current = (self.current + 1) % self.targets.len();
        tracing::warn!(trunk = %self.settings.name, %from, to = %self.target(), "trunk address failed; services move to the next one");
    }

    /// `sip:` and the trunk's domain (with the port when it is not 5060 and the
    /// trunk is not located by SRV).
    fn registrar_uri(&self) -> String {
        format!("sip:{}", self.settings.domain())
    }

    /// The user of From/To/Contact: the trunk's account, else `callbridge`.
    fn user(&self) -> String {
        self.settings.contact_user().to_string()
    }

    /// An out-of-dialog request of the service.
    fn request(
        &self,
        method: Method,
        from: &str,
        to: &str,
        call_id: &str,
        seq: u32,
        extra: Vec<Header>,
    ) -> Option<Request> {
        let uri = Uri::try_from(self.registrar_uri().as_str()).ok()?;
        let mut headers = vec![
            Header::Via(build::via(self.local, &new_branch()).into()),
            Header::MaxForwards("70".into()),
            Header::From(from.to_string().into()),
            Header::To(to.to_string().into()),
            Header::CallId(call_id.to_string().into()),
            Header::CSeq(format!("{seq} {method}").into()),
            Header::Contact(format!("<{}>", contact_uri(&self.user(), self.local)).into()),
            Header::UserAgent(self.config.user_agent.clone().into()),
        ];
        headers.extend(extra);
        headers.push(Header::ContentLength("0".into()));
        Some(Request {
            method,
            uri,
            version: Version::V2,
            headers: headers.into(),
            body: Vec::new(),
        })
    }

    /// The address of record with a fresh tag, for From.
    fn tagged_from(&self) -> String {
        format!("{};tag={}", self.aor(), random_hex(12))
    }

    /// `<sip:user@domain>`: the account in the trunk's domain, port included
    /// (`from_domain` when set), as the INVITEs' From.
    fn aor(&self) -> String {
        format!("<sip:{}@{}>", self.user(), self.settings.account_domain())
    }
}

/// The services of one trunk.
#[derive(Debug)]
pub(crate) struct TrunkService {
    /// Shared addressing.
    origin: Origin,
    /// OPTIONS pings, if configured.
    health: Option<Health>,
    /// Registration, if configured.
    registration: Option<Registration>,
    /// Current status.
    status: TrunkStatus,
    /// Status changes not yet polled.
    changes: VecDeque<TrunkStatus>,
    /// Addresses whose ping failed in a row (the trunk is down when all did).
    failed_in_row: usize,
    /// Messages to send.
    transmits: VecDeque<Transmit>,
}

impl TrunkService {
    /// Starts the services configured in `settings` (first ping and REGISTER now)
    /// toward `target`, moving on to `alternates` in order when it fails.
    pub(crate) fn new(
        now: Instant,
        settings: TrunkSettings,
        (target, alternates): (Peer, Vec<Peer>),
        local: Peer,
        config: UaConfig,
    ) -> Self {
        let mut targets = vec![target];
        targets.extend(alternates);
        let origin = Origin {
            settings,
            targets,
            current: 0,
            local,
            config,
        };

        let health = origin
            .settings
            .options_interval
            .map(|interval| Health::new(now, interval, new_call_id()));
        let registration = origin
            .settings
            .register
            .then(|| Registration::new(now, &origin, new_call_id()));
        let registered = registration.as_ref().map(|_| false);
        let mut service = Self {
            origin,
            health,
            registration,
            status: TrunkStatus {
                reachable: true,
                registered,
                last_change: None,
                detail: None,
                failing: Vec::new(),
            },
            changes: VecDeque::new(),
            failed_in_row: 0,
            transmits: VecDeque::new(),
        };
        tracing::info!(trunk = %service.origin.settings.name, target = %target, register = service.registration.is_some(), ping = service.health.is_some(), "trunk services started");
        service.changes.push_back(service.status.clone());
        service.handle_timeout(now);
        service
    }

    /// The SIP Call-IDs the services use (responses are routed by them).
    pub(crate) fn call_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        if let Some(h) = &self.health {
            ids.push(h.call_id.clone());
        }
        if let Some(r) = &self.registration {
            ids.push(r.call_id.clone());
        }
        ids
    }

    /// A response with one of the services' Call-IDs.
    pub(crate) fn handle_response(&mut self, now: Instant, response: Response, _reason: String) {
        let (Some(branch), Some((_, method))) = (branch(&response), cseq(&response)) else {
            return;
        };
        match method {
            Method::Options => {
                if let Some(h) = self.health.as_mut() {
                    h.handle_response(now, &branch, response);
                }
            }
            Method::Register => {
                if let Some(r) = self.registration.as_mut() {
                    r.handle_response(now, &branch, response);
                }
            }
            _ => {}
        }
        self.process(now);
    }

    /// Sending failed (connection refused, unreachable...).
    pub(crate) fn handle_send_error(&mut self, now: Instant, error: String) {
        if let Some(h) = self.health.as_mut() {
            h.handle_send_error(now, error.clone());
        }
        if let Some(r) = self.registration.as_mut() {
            r.handle_send_error(now, error);
        }
        self.process(now);
    }

    /// Fires due timers (pings, refreshes, retries, transactions).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if let Some(h) = self.health.as_mut() {
            h.handle_timeout(now, &self.origin);
        }
        if let Some(r) = self.registration.as_mut() {
            r.handle_timeout(now, &self.origin);
        }
        self.process(now);
    }

    /// Unregisters (Expires: 0) and stops pinging.
    pub(crate) fn stop(&mut self, now: Instant) {
        self.health = None;
        if let Some(r) = self.registration.as_mut() {
            r.unregister(now, &self.origin);
        }
        self.process(now);
    }

    /// Applies the services' outcomes to the status and gathers their messages.
    fn process(&mut self, now: Instant) {
        let mut status = self.status.clone();
        if let Some(h) = self.health.as_mut() {
            let failed = h.poll_target_failed();
            let pinged = self.origin.targets.get(h.sent_to()).map(|p| p.addr);
            if let Some((reachable, detail)) = h.poll_outcome() {
                if let Some(addr) = pinged {
                    status.failing.retain(|a| *a != addr);
                    if !reachable {
                        status.failing.push(addr);
                    }
                }
                // With several addresses (SRV) the trunk is down only when a ping to
                // each failed in a row: a failed one moves the pings to the next
                // address at once.
                let others_left = self.origin.targets.len() - 1 - self.failed_in_row;
                if reachable {
                    self.failed_in_row = 0;
                } else if others_left > 0 {
                    self.failed_in_row += 1;
                    if let Some(failed) = failed {
                        self.origin.fail_over(failed);
                    }
                    h.ping_now(now);
                    h.handle_timeout(now, &self.origin);
                } else {
                    self.failed_in_row = 0;
                    if let Some(failed) = failed {
                        self.origin.fail_over(failed);
                    }
                }
                if reachable || others_left == 0 {
                    status.reachable = reachable;
                }
                if !reachable && others_left == 0
                    || status
                        .detail
                        .as_deref()
                        .is_some_and(|d| d.starts_with("OPTIONS"))
                {
                    status.detail = detail;
                }
            }
            while let Some(bytes) = h.poll_transmit() {
                self.transmits
                    .push_back(transmit(&self.origin, h.sent_to(), bytes));
            }
        }
        if let Some(r) = self.registration.as_mut() {
            r.process(now, &self.origin);
            if let Some((registered, detail)) = r.poll_outcome() {
                status.registered = Some(registered);
                if !registered
                    || status
                        .detail
                        .as_deref()
                        .is_some_and(|d| d.starts_with("REGISTER"))
                {
                    status.detail = detail;
                }
            }
            while let Some(bytes) = r.poll_transmit() {
                self.transmits
                    .push_back(transmit(&self.origin, r.sent_to(), bytes));
            }
            if let Some(failed) = r.poll_target_failed() {
                self.origin.fail_over(failed);
            }
        }
        let changed = status.reachable != self.status.reachable
            || status.registered != self.status.registered;
        if changed {
            status.last_change = Some(now);
        }
        if changed || status.failing != self.status.failing {
            tracing::info!(trunk = %self.origin.settings.name, reachable = status.reachable, registered = ?status.registered, failing = ?status.failing, detail = ?status.detail, "trunk status changed");
            self.changes.push_back(status.clone());
        }
        self.status = status;
    }

    /// The next message to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next status change.
    pub(crate) fn poll_status(&mut self) -> Option<TrunkStatus> {
        self.changes.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        earliest(
            self.health.as_ref().and_then(Health::poll_timeout),
            self.registration
                .as_ref()
                .and_then(Registration::poll_timeout),
        )
    }
}

/// A message of the trunk's services to the address at `target` (where its request
/// went: retransmissions follow it even after the services moved on).
fn transmit(origin: &Origin, target: usize, payload: Vec<u8>) -> Transmit {
    Transmit {
        dest: origin
            .targets
            .get(target)
            .copied()
            .unwrap_or(origin.target()),
        payload,
        owner: Owner::Trunk(origin.settings.name.clone()),
    }
}
