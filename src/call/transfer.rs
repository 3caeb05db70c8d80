//! Far-end transfers of outbound calls: a REFER on a trunk with `refer = "dialplan"`
//! reaches the call as [`SipCallEvent::TransferRequested`] and is decided here like
//! a browser `call` by the same user: the Refer-To user part is the dialed number;
//! it must pass the drain, the `calls:outbound` scope, the per-user attempt rate,
//! the dial plan and the concurrent-call limits; the new INVITE goes to the route's
//! first usable trunk (never to the host in the Refer-To URI), with that trunk's
//! settings and credentials.
//!
//! While the new leg is set up it holds its own admission slot (two SIP legs are up
//! at once, and a user at their limit cannot transfer). When it answers, the slot is
//! released and the call's record moves to the new trunk and number; when it
//! fails, the slot is released and the call goes on with the current party.
//!
//! A refusal answers the transferor with a final NOTIFY:
//!
//! | why | sipfrag status |
//! | --- | --- |
//! | no user part, not a number, no country code | 404 Not Found |
//! | no route matches, or no `calls:outbound` scope | 403 Forbidden |
//! | the user is at their concurrent-call limit | 486 Busy Here |
//! | draining, at capacity, attempt rate exceeded, no usable trunk | 503 Service Unavailable |

use std::net::SocketAddr;

use tracing::{info, warn};

use super::dialplan::{RouteError, Routed};
use super::outbound::OutboundJob;
use super::registry::{CallInfo, CallSlot, CallState, Direction, LimitError};
use crate::auth::Scope;
use crate::sip::{InviteRequest, SipCallEvent, SipCallHandle, TrunkSettings};

/// A transfer the call module allowed, until its new leg answers or fails.
pub(super) struct TransferSlot {
    /// Admission of the new leg (released when dropped).
    _slot: CallSlot,
    /// The trunk the new leg calls.
    trunk: String,
    /// The normalised number it calls.
    number: String,
}

/// Why a transfer was refused: the sipfrag status and what to log.
#[derive(Debug)]
struct Refusal {
    /// Final status NOTIFYed to the transferor.
    status: u16,
    /// What was wrong.
    why: String,
}

impl Refusal {
    fn new(status: u16, why: impl Into<String>) -> Refusal {
        Refusal {
            status,
            why: why.into(),
        }
    }
}

impl OutboundJob {
    /// Handles `TransferRequested`, `Transferred` and `TransferFailed` of `sip`.
    pub(super) async fn on_transfer_event(&mut self, sip: &SipCallHandle, event: SipCallEvent) {
        match event {
            SipCallEvent::TransferRequested { target, user } => {
                self.on_transfer_requested(sip, &target, user.as_deref())
                    .await
            }
            SipCallEvent::Transferred { target } => self.on_transferred(&target),
            SipCallEvent::TransferFailed { status, reason } => {
                self.on_transfer_failed(status, &reason)
            }
            _ => {}
        }
    }

    /// Decides the transfer the far end asked for (`target` as written, `user` its
    /// user part) and tells the SIP layer: a new leg through the route's trunk, or a
    /// refusal NOTIFYed to the transferor. The call goes on either way.
    async fn on_transfer_requested(
        &mut self,
        sip: &SipCallHandle,
        target: &str,
        user: Option<&str>,
    ) {
        let admitted = self.admit_transfer(user).await;
        let refusal = match admitted {
            Ok((request, slot)) => match self.manager.sip.transfer(sip, request) {
                Ok(()) => {
                    info!(refer_to = %target, number = %slot.number, trunk = %slot.trunk, "transfer allowed: calling through the route's trunk");
                    self.transfer = Some(slot);
                    return;
                }
                Err(e) => Refusal::new(503, format!("SIP: {e}")),
            },
            Err(refusal) => refusal,
        };
        warn!(refer_to = %target, status = refusal.status, why = %refusal.why, "transfer refused");
        sip.refuse_transfer(refusal.status);
    }

    /// The transfer's new party answered: its slot is released and the call's
    /// record shows the new trunk and number.
    fn on_transferred(&mut self, target: &str) {
        let Some(t) = self.transfer.take() else {
            return;
        };
        info!(refer_to = %target, number = %t.number, trunk = %t.trunk, "far end transferred the call");
        self.slot.update(|i| {
            i.trunk = Some(t.trunk.clone());
            i.to = t.number.clone();
        });
    }

    /// The transfer's new leg failed: its slot is released; the call goes on.
    fn on_transfer_failed(&mut self, status: u16, reason: &str) {
        if let Some(t) = self.transfer.take() {
            info!(number = %t.number, trunk = %t.trunk, status, %reason, "transfer failed; the call goes on");
        }
    }

    /// The checks of a browser `call`, for the Refer-To user part: the INVITE to
    /// send and the admission slot of the new leg.
    async fn admit_transfer(
        &self,
        user: Option<&str>,
    ) -> Result<(InviteRequest, TransferSlot), Refusal> {
        let manager = &self.manager;
        let identity = &self.ctx.identity;
        let number =
            user.ok_or_else(|| Refusal::new(404, "the Refer-To URI has no user part to dial"))?;
        if manager.drain.is_draining() {
            return Err(Refusal::new(503, "draining: no new calls"));
        }
        if !identity.has(Scope::CallsOutbound) {
            return Err(Refusal::new(403, "the user's token lacks calls:outbound"));
        }
        (manager.attempts)(&identity.user).map_err(|wait| {
            Refusal::new(
                503,
                format!(
                    "call attempt rate of user {} exceeded (ratelimit.calls_*); retry in {} ms",
                    identity.user,
                    wait.as_millis()
                ),
            )
        })?;
        let routed = manager.dialplan.route(number).map_err(|e| {
            let status = match e {
                RouteError::NoRoute(_) => 403,
                RouteError::BadNumber(_) | RouteError::NoCountryCode(_) => 404,
            };
            Refusal::new(status, e.to_string())
        })?;
        let slot = self.admit_leg(&routed)?;
        let (trunk, target, others) = self.first_usable_trunk(&routed).await?;
        let from_user = identity
            .caller_id
            .clone()
            .unwrap_or_else(|| identity.user.clone());
        let name = trunk.name.clone();
        let request = InviteRequest {
            target,
            target_host: trunk.uri_host(),
            to_user: routed.dial.clone(),
            from_user,
            sdp: String::new(),
            correlation_id: self.ctx.correlation_id.clone(),
            trunk,
            trunk_addresses: others,
            from_display: None,
            asserted_identity: identity.caller_id.clone(),
            privacy: self.privacy || routed.privacy,
            answerer: self.answerer.clone(),
        };
        Ok((
            request,
            TransferSlot {
                _slot: slot,
                trunk: name,
                number: routed.normalized,
            },
        ))
    }

    /// Admits the transfer's new leg against capacity and the user's limit.
    fn admit_leg(&self, routed: &Routed) -> Result<CallSlot, Refusal> {
        let manager = &self.manager;
        let identity = &self.ctx.identity;
        let user_limit = identity
            .max_calls
            .map(|n| n as usize)
            .unwrap_or(manager.config.limits.max_calls_per_user);
        let info = CallInfo {
            id: crate::signaling::random_id("c-"),
            call_id: self.call_id.clone(),
            session_id: self.ctx.session_id.clone(),
            user: identity.user.clone(),
            direction: Direction::Outbound,
            from: identity
                .caller_id
                .clone()
                .unwrap_or_else(|| identity.user.clone()),
            to: routed.normalized.clone(),
            trunk: None,
            state: CallState::Dialing,
            correlation_id: self.ctx.correlation_id.clone(),
            sip_call_id: None,
            started_at: std::time::SystemTime::now(),
            ringing_at: None,
            answered_at: None,
        };
        manager
            .registry
            .try_admit(info, user_limit, self.commands_tx.clone())
            .map_err(|e| {
                let status = match e {
                    LimitError::PerUser(_) => 486,
                    LimitError::Capacity(_) => 503,
                };
                Refusal::new(status, e.to_string())
            })
    }

    /// The route's first configured, healthy and locatable trunk: its settings, the
    /// address to call and its other addresses.
    async fn first_usable_trunk(
        &self,
        routed: &Routed,
    ) -> Result<(TrunkSettings, SocketAddr, Vec<SocketAddr>), Refusal> {
        let manager = &self.manager;
        for name in &routed.trunks {
            let Some(config) = manager.config.sip.trunk(name) else {
                continue;
            };
            if !manager.sip.trunk_usable(name) {
                continue;
            }
            let trunk = TrunkSettings::from_config(config);
            match manager.sip.locate(&trunk).await {
                Ok(mut addrs) if !addrs.is_empty() => {
                    let target = addrs.remove(0);
                    return Ok((trunk, target, addrs));
                }
                Ok(_) => {}
                Err(e) => warn!(trunk = %name, "transfer: trunk skipped: {e}"),
            }
        }
        Err(Refusal::new(
            503,
            format!("no trunk of route {} is usable", routed.route),
        ))
    }
}
