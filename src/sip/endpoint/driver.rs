//! The driver loop: one tokio task owns the UDP socket, the connection table and
//! the sans-IO [`UserAgent`]. It feeds datagrams, framed stream messages, commands
//! and timer expiries in (reading the clock only here), sends what the core wants
//! sent, hands new inbound calls to the call module, routes call events to each
//! call's channel and trunk statuses to the shared map, and sleeps until the core's
//! earliest deadline.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::connections::{Connections, NetEvent};
use super::incoming::incoming_call;
use super::{Command, Counts, Direction, Statuses, count};
use crate::sip::transport::{Peer, Transport};
use crate::sip::user_agent::{Owner, UaEvent, UserAgent};
use crate::sip::{AvailabilityProbe, InboundSipEvent, IncomingCall, SipCallEvent};

/// The clock, read only here (tokio's, so paused-time tests work).
pub(super) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The wall clock in Unix seconds (forwarding headers between instances).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Replaces the values of credential headers for logs (never log digest answers).
pub(super) fn redact(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("Authorization")
            || name.eq_ignore_ascii_case("Proxy-Authorization")
        {
            out.push_str(name);
            out.push_str(": <redacted>\r\n");
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Everything the driver task owns.
pub(super) struct Driver {
    /// The UDP socket.
    pub socket: UdpSocket,
    /// The sans-IO core.
    pub ua: UserAgent,
    /// TCP/TLS connections.
    pub connections: Connections,
    /// Connection task reports.
    pub net: mpsc::UnboundedReceiver<NetEvent>,
    /// Commands from handles.
    pub commands: mpsc::UnboundedReceiver<Command>,
    /// Our own command queue, for the handles of inbound calls (weak, so that the
    /// queue closes when the endpoint and every handle are gone).
    pub own_commands: mpsc::WeakUnboundedSender<Command>,
    /// Message counters.
    pub counts: Counts,
    /// Trunk statuses.
    pub statuses: Statuses,
    /// Event channel of each call by handle id.
    pub subscribers: HashMap<String, mpsc::UnboundedSender<SipCallEvent>>,
    /// Event channel of each inbound call by handle id.
    pub inbound: HashMap<String, mpsc::UnboundedSender<InboundSipEvent>>,
    /// Where new inbound calls go.
    pub incoming: mpsc::UnboundedSender<IncomingCall>,
    /// Whether the gateway takes new calls, once the call layer says how to tell.
    pub availability: Arc<OnceLock<AvailabilityProbe>>,
}

impl Driver {
    /// Runs until shutdown.
    pub(super) async fn run(mut self) {
        let mut buf = vec![0u8; 65_535];
        loop {
            self.flush().await;
            let deadline = self.ua.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => break,
                    Some(Command::Shutdown) => {
                        self.ua.stop_trunks(now());
                        self.flush().await;
                        break;
                    }
                    Some(command) => self.command(command),
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, source)) => self.incoming(Peer::udp(source), &buf[..n]),
                    // E.g. ICMP errors surfaced by some platforms: not fatal for the socket.
                    // A short pause keeps a persistent error from spinning the loop.
                    Err(e) => {
                        tracing::warn!("SIP socket receive error: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
                Some(event) = self.net.recv() => self.net_event(event),
                () = sleep_until(deadline) => self.ua.handle_timeout(now()),
            }
        }
        tracing::info!(
            calls = self.ua.call_count(),
            servers = self.ua.server_count(),
            connections = self.connections.len(),
            "SIP endpoint stopped"
        );
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Invite {
                id,
                request,
                local,
                target,
                tls,
                events,
            } => {
                if let Some(t) = tls {
                    self.connections.register_tls(target.addr, t);
                }
                if let Err(e) = self
                    .ua
                    .start_call(now(), id.clone(), *request, local, target)
                {
                    tracing::warn!(sip_call_id = %id, "cannot start call: {e}");
                    let _ = events.send(SipCallEvent::Failed {
                        status: 500,
                        reason: e.to_string(),
                    });
                } else {
                    self.subscribers.insert(id, events);
                }
            }
            Command::Transfer {
                id,
                request,
                local,
                target,
                tls,
            } => {
                if let Some(t) = tls {
                    self.connections.register_tls(target.addr, t);
                }
                if let Err(e) = self.ua.transfer(now(), &id, *request, local, target) {
                    tracing::warn!(sip_call_id = %id, "cannot start the transfer: {e}");
                    self.ua.refuse_transfer(now(), &id, 500);
                }
            }
            Command::RefuseTransfer { id, status } => self.ua.refuse_transfer(now(), &id, status),
            Command::Hangup { id } => self.ua.hangup(now(), &id),
            Command::Reinvite { id, sdp } => self.ua.reinvite(now(), &id, sdp),
            Command::DtmfInfo {
                id,
                digit,
                duration_ms,
            } => self.ua.send_dtmf_info(now(), &id, digit, duration_ms),
            Command::Respond { id, action } => self.ua.respond(now(), &id, action),
            Command::Proxy { id, target, done } => {
                self.ua.set_unix_time(unix_now());
                let _ = done.send(self.ua.proxy(now(), &id, target));
            }
            Command::AcceptInbound => self.ua.set_accept_inbound(true),
            Command::SetInbound { trunks, done } => {
                for (settings, resolved) in trunks {
                    self.connections.limits().set_trunk(&settings, &resolved);
                    self.ua.set_inbound_trunk(settings, resolved);
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Command::HandleDropped { id } => {
                // The call module let go of the call: end it if it is still going.
                self.ua.hangup(now(), &id);
            }
            Command::StartTrunk {
                settings,
                targets,
                local,
                tls,
            } => {
                if let Some(t) = tls {
                    self.connections.register_tls(targets.0.addr, t.clone());
                    for alternate in &targets.1 {
                        self.connections.register_tls(alternate.addr, t.clone());
                    }
                }
                self.ua.start_trunk(now(), *settings, targets, local);
            }
            Command::Shutdown => {}
        }
    }

    fn incoming(&mut self, source: Peer, bytes: &[u8]) {
        count(&self.counts, Direction::Inbound, bytes);
        tracing::trace!(%source, message = %redact(bytes), "SIP in");
        self.ua.set_unix_time(unix_now());
        if let Some(probe) = self.availability.get() {
            self.ua.set_availability(probe.get());
        }
        self.ua.handle_message(now(), source, bytes);
    }

    fn net_event(&mut self, event: NetEvent) {
        match event {
            NetEvent::Message { source, bytes } => self.incoming(source, &bytes),
            NetEvent::SendFailed { dest, owner, error } => {
                tracing::warn!(%dest, "SIP send failed: {error}");
                self.ua.handle_send_error(now(), &owner, dest, error);
            }
            NetEvent::Accepted { peer, id, sender } => {
                tracing::debug!(%peer, "inbound SIP connection");
                self.connections.accepted(peer, id, sender);
            }
            NetEvent::Closed { peer, id } => self.connections.closed(peer, id),
        }
    }

    /// Sends every queued message and delivers every queued event.
    async fn flush(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.ua.poll_transmit() {
                progressed = true;
                let sip_call_id = match &t.owner {
                    Owner::Call(id) => id.clone(),
                    _ => "-".into(),
                };
                let correlation_id = self
                    .ua
                    .correlation_id(&sip_call_id)
                    .unwrap_or("-")
                    .to_string();
                count(&self.counts, Direction::Outbound, &t.payload);
                tracing::trace!(%sip_call_id, %correlation_id, dest = %t.dest, message = %redact(&t.payload), "SIP out");
                match t.dest.transport {
                    Transport::Udp => {
                        if let Err(e) = self.socket.send_to(&t.payload, t.dest.addr).await {
                            tracing::warn!(%sip_call_id, %correlation_id, dest = %t.dest, "SIP send failed: {e}");
                            self.ua
                                .handle_send_error(now(), &t.owner, t.dest, e.to_string());
                        }
                    }
                    Transport::Tcp | Transport::Tls => {
                        self.connections.send(t.dest, t.payload, t.owner)
                    }
                }
            }
            while let Some(event) = self.ua.poll_event() {
                progressed = true;
                match event {
                    UaEvent::Call(id, event) => {
                        let last = event.is_final();
                        if let Some(tx) = self.subscribers.get(&id)
                            && tx.send(event).is_err()
                        {
                            tracing::debug!(sip_call_id = %id, "event receiver dropped");
                        }
                        if last {
                            self.subscribers.remove(&id);
                        }
                    }
                    UaEvent::Incoming(info) => self.deliver(*info),
                    UaEvent::Inbound(id, event) => {
                        let last = event.is_final();
                        if let Some(tx) = self.inbound.get(&id)
                            && tx.send(event).is_err()
                        {
                            tracing::debug!(sip_call_id = %id, "event receiver dropped");
                        }
                        if last {
                            self.inbound.remove(&id);
                        }
                    }
                    UaEvent::Trunk(name, status) => {
                        if let Ok(mut map) = self.statuses.lock() {
                            map.insert(name, status);
                        }
                    }
                }
            }
            if !progressed {
                break;
            }
        }
    }
}

impl Driver {
    /// Hands a new inbound call to the call module (480 if nobody takes it any more).
    fn deliver(&mut self, info: crate::sip::user_agent::IncomingInfo) {
        let id = info.id.clone();
        let sip_call_id = info.sip_call_id.clone();
        let Some(commands) = self.own_commands.upgrade() else {
            self.ua.hangup(now(), &id);
            return;
        };
        let (call, events) = incoming_call(info, commands);
        self.inbound.insert(id.clone(), events);
        if self.incoming.send(call).is_err() {
            tracing::info!(%sip_call_id, "inbound calls are no longer taken: 480");
            self.ua.set_accept_inbound(false);
            self.inbound.remove(&id);
            self.ua.hangup(now(), &id);
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn credentials_are_redacted_in_logs() {
        let text = redact(b"INVITE sip:x SIP/2.0\r\nProxy-Authorization: Digest username=\"a\", response=\"abc\"\r\nVia: x\r\n\r\n");
        assert!(!text.contains("abc"), "{text}");
        assert!(
            text.contains("Proxy-Authorization: <redacted>\r\nVia: x\r\n"),
            "{text}"
        );
    }
}
