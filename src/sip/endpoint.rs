//! The runtime driver: one tokio task owns the UDP socket and the sans-IO
//! [`UserAgent`](super::user_agent::UserAgent). It feeds datagrams, commands and timer
//! expiries in (reading the clock only here), sends what the core wants sent, routes
//! events to each call's channel, and sleeps until the core's earliest deadline.
//! No task per transaction or per call.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::message::{self, build::random_hex};
use super::user_agent::{UaConfig, UserAgent, validate};
use super::{InviteRequest, SipCallEvent, SipEndpointConfig, SipError};

/// What handles ask of the driver task.
#[derive(Debug)]
enum Command {
    /// Place a call.
    Invite {
        call_id: String,
        request: InviteRequest,
        local: SocketAddr,
        events: mpsc::UnboundedSender<SipCallEvent>,
    },
    /// Hang a call up.
    Hangup { call_id: String },
    /// Stop the task.
    Shutdown,
}

/// Direction of a counted SIP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Received from the network.
    Inbound,
    /// Sent to the network.
    Outbound,
}

/// How many SIP messages of one kind went through the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageCount {
    /// Received or sent.
    pub direction: Direction,
    /// Request method, or the CSeq method of a response.
    pub method: String,
    /// Status code for responses, `None` for requests.
    pub status: Option<u16>,
    /// Number of datagrams (retransmissions included).
    pub count: u64,
}

/// Counter map shared between the driver and [`SipEndpoint::message_counts`].
type Counts = Arc<Mutex<HashMap<(Direction, String, Option<u16>), u64>>>;

/// A handle to an outbound call leg.
#[derive(Debug, Clone)]
pub struct SipCallHandle {
    /// SIP Call-ID of the leg.
    call_id: Arc<str>,
    /// The driver's command queue.
    commands: mpsc::UnboundedSender<Command>,
}

impl SipCallHandle {
    /// Hangs up: CANCEL before a final response, BYE after 200 OK. Idempotent.
    pub fn hangup(&self) {
        let command = Command::Hangup {
            call_id: self.call_id.to_string(),
        };
        if self.commands.send(command).is_err() {
            tracing::debug!(sip_call_id = %self.call_id, "hangup after endpoint shutdown");
        }
    }

    /// The SIP Call-ID of the leg.
    pub fn sip_call_id(&self) -> &str {
        &self.call_id
    }
}

/// The SIP user agent endpoint: owns the socket and all transactions and dialogs.
#[derive(Debug)]
pub struct SipEndpoint {
    /// The bound socket address.
    local_addr: SocketAddr,
    /// Advertised IP override (1:1 NAT).
    external_ip: Option<IpAddr>,
    /// The driver's command queue.
    commands: mpsc::UnboundedSender<Command>,
    /// The driver task, taken by `shutdown`.
    task: Mutex<Option<JoinHandle<()>>>,
    /// Message counters.
    counts: Counts,
}

impl SipEndpoint {
    /// Binds the socket and starts the endpoint's task.
    pub async fn bind(config: SipEndpointConfig) -> Result<Arc<SipEndpoint>, SipError> {
        let socket = UdpSocket::bind(config.listen).await?;
        let local_addr = socket.local_addr()?;
        let (commands, rx) = mpsc::unbounded_channel();
        let counts = Counts::default();
        let ua = UserAgent::new(UaConfig {
            timers: config.timers,
            user_agent: config.user_agent,
        });
        let task = tokio::spawn(run(socket, ua, rx, counts.clone()));
        tracing::info!(%local_addr, "SIP endpoint listening (UDP)");
        Ok(Arc::new(SipEndpoint {
            local_addr,
            external_ip: config.external_ip,
            commands,
            task: Mutex::new(Some(task)),
            counts,
        }))
    }

    /// The bound local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sends an INVITE; events arrive on the returned receiver until `Terminated`,
    /// `Failed` or `RemoteHangup` (or the endpoint shuts down: the receiver then ends).
    pub async fn invite(
        &self,
        request: InviteRequest,
    ) -> Result<(SipCallHandle, mpsc::UnboundedReceiver<SipCallEvent>), SipError> {
        validate(&request)?;
        let call_id = random_hex(32);
        let local = SocketAddr::new(self.advertised_ip(request.target), self.local_addr.port());
        let (events, rx) = mpsc::unbounded_channel();
        let command = Command::Invite {
            call_id: call_id.clone(),
            request,
            local,
            events,
        };
        self.commands.send(command).map_err(|_| SipError::Closed)?;
        let handle = SipCallHandle {
            call_id: call_id.into(),
            commands: self.commands.clone(),
        };
        Ok((handle, rx))
    }

    /// Messages sent and received so far, by direction, method and status.
    pub fn message_counts(&self) -> Vec<MessageCount> {
        let counts = match self.counts.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut out: Vec<MessageCount> = counts
            .iter()
            .map(|((direction, method, status), count)| MessageCount {
                direction: *direction,
                method: method.clone(),
                status: *status,
                count: *count,
            })
            .collect();
        out.sort_by(|a, b| {
            (a.direction, &a.method, a.status).cmp(&(b.direction, &b.method, b.status))
        });
        out
    }

    /// Stops the endpoint's task; open calls' event receivers end without a final
    /// event and nothing more is sent.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let task = match self.task.lock() {
            Ok(mut t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::warn!("SIP endpoint task ended abnormally: {e}");
        }
    }

    /// The IP to put in Via/Contact/From for a call to `target`.
    fn advertised_ip(&self, target: SocketAddr) -> IpAddr {
        if let Some(ip) = self.external_ip {
            return ip;
        }
        if !self.local_addr.ip().is_unspecified() {
            return self.local_addr.ip();
        }
        // Bound to 0.0.0.0: ask the routing table which source address reaches the
        // target (connect() on UDP sends nothing).
        let probe = match target {
            SocketAddr::V4(_) => std::net::UdpSocket::bind(("0.0.0.0", 0)),
            SocketAddr::V6(_) => std::net::UdpSocket::bind(("::", 0)),
        };
        probe
            .and_then(|s| s.connect(target).and_then(|_| s.local_addr()))
            .map(|a| a.ip())
            .unwrap_or(self.local_addr.ip())
    }
}

/// The clock, read only here (tokio's, so paused-time tests work).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn count(counts: &Counts, direction: Direction, datagram: &[u8]) {
    let Some((method, status)) = message::label(datagram) else {
        return;
    };
    if let Ok(mut c) = counts.lock() {
        *c.entry((direction, method, status)).or_default() += 1;
    }
}

/// The driver loop.
async fn run(
    socket: UdpSocket,
    mut ua: UserAgent,
    mut commands: mpsc::UnboundedReceiver<Command>,
    counts: Counts,
) {
    let mut subscribers: HashMap<String, mpsc::UnboundedSender<SipCallEvent>> = HashMap::new();
    let mut buf = vec![0u8; 65_535];
    loop {
        flush(&socket, &mut ua, &mut subscribers, &counts).await;
        let deadline = ua.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            command = commands.recv() => match command {
                None | Some(Command::Shutdown) => break,
                Some(Command::Invite { call_id, request, local, events }) => {
                    if let Err(e) = ua.start_call(now(), call_id.clone(), request, local) {
                        tracing::warn!(sip_call_id = %call_id, "cannot start call: {e}");
                        let _ = events.send(SipCallEvent::Failed { status: 500, reason: e.to_string() });
                    } else {
                        subscribers.insert(call_id, events);
                    }
                }
                Some(Command::Hangup { call_id }) => ua.hangup(now(), &call_id),
            },
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, source)) => {
                    count(&counts, Direction::Inbound, &buf[..n]);
                    tracing::trace!(%source, message = %String::from_utf8_lossy(&buf[..n]), "SIP in");
                    ua.handle_datagram(now(), source, &buf[..n]);
                }
                // E.g. ICMP errors surfaced by some platforms: not fatal for the socket.
                // A short pause keeps a persistent error from spinning the loop.
                Err(e) => {
                    tracing::warn!("SIP socket receive error: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            () = sleep_until(deadline) => ua.handle_timeout(now()),
        }
    }
    tracing::info!(calls = ua.call_count(), "SIP endpoint stopped");
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends every queued datagram and delivers every queued event.
async fn flush(
    socket: &UdpSocket,
    ua: &mut UserAgent,
    subscribers: &mut HashMap<String, mpsc::UnboundedSender<SipCallEvent>>,
    counts: &Counts,
) {
    loop {
        let mut progressed = false;
        while let Some(t) = ua.poll_transmit() {
            progressed = true;
            let sip_call_id = t.call_id.as_deref().unwrap_or("-");
            let correlation_id = ua.correlation_id(sip_call_id).unwrap_or("-").to_string();
            match socket.send_to(&t.payload, t.dest).await {
                Ok(_) => {
                    count(counts, Direction::Outbound, &t.payload);
                    tracing::trace!(sip_call_id, %correlation_id, dest = %t.dest, message = %String::from_utf8_lossy(&t.payload), "SIP out");
                }
                Err(e) => {
                    tracing::warn!(sip_call_id, %correlation_id, dest = %t.dest, "SIP send failed: {e}");
                    ua.handle_send_error(now(), t.call_id.as_deref(), e.to_string());
                }
            }
        }
        while let Some((call_id, event)) = ua.poll_event() {
            progressed = true;
            let last = event.is_final();
            if let Some(tx) = subscribers.get(&call_id)
                && tx.send(event).is_err()
            {
                tracing::debug!(sip_call_id = %call_id, "event receiver dropped");
            }
            if last {
                subscribers.remove(&call_id);
            }
        }
        if !progressed {
            break;
        }
    }
}
