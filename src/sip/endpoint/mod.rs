//! The runtime side: [`SipEndpoint`] binds the UDP socket and the TCP listener (same
//! port) and, when configured, a TLS listener, starts the driver task (`driver.rs`), hands out [`SipCallHandle`]s for the
//! calls we place and delivers inbound calls with their handles (`incoming.rs`).
//! Handles talk to the driver through an mpsc queue; no task per transaction or per
//! call, one task per TCP/TLS connection (`connections.rs`).

mod accept;
mod connections;
mod driver;
mod incoming;
mod limits;
mod tls;
mod trunks;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::dns::Locator;
use super::message::{self, build::random_hex};
use super::transport::{Peer, Transport};
use super::user_agent::{ForwardKey, InboundAction, UaConfig, UserAgent, validate};
use super::{
    AvailabilityProbe, DtmfMode, IncomingCall, InviteRequest, SipCallEvent, SipEndpointConfig,
    SipError, TrunkSettings, TrunkStatus,
};
use connections::Connections;
use driver::Driver;
pub use incoming::IncomingCallHandle;
use limits::ConnectionLimits;
pub use limits::{CloseReason, ConnectionConfig, ConnectionStats, Refusal};
use tls::TlsTarget;
pub(crate) use tls::{load_identity, server_config as tls_server_config};

/// What handles ask of the driver task.
enum Command {
    /// Place a call.
    Invite {
        id: String,
        request: Box<InviteRequest>,
        local: Peer,
        target: Peer,
        tls: Option<TlsTarget>,
        events: mpsc::UnboundedSender<SipCallEvent>,
    },
    /// Transfer a call through a trunk (the call module allowed a REFER).
    Transfer {
        id: String,
        request: Box<InviteRequest>,
        local: Peer,
        target: Peer,
        tls: Option<TlsTarget>,
    },
    /// Refuse the transfer a call was asked for with this status.
    RefuseTransfer { id: String, status: u16 },
    /// Hang a call up.
    Hangup { id: String },
    /// re-INVITE with this SDP.
    Reinvite { id: String, sdp: String },
    /// A DTMF digit as INFO.
    DtmfInfo {
        id: String,
        digit: char,
        duration_ms: u32,
    },
    /// The call module's answer to an inbound call.
    Respond { id: String, action: InboundAction },
    /// Forward a ringing inbound call's INVITE to another instance.
    Proxy {
        id: String,
        target: SocketAddr,
        done: oneshot::Sender<Result<(), SipError>>,
    },
    /// Somebody takes inbound calls now.
    AcceptInbound,
    /// Admission rules of trunks (with their resolved address when known).
    SetInbound {
        trunks: Vec<(TrunkSettings, Vec<SocketAddr>)>,
        done: Option<oneshot::Sender<()>>,
    },
    /// The last handle of an inbound call was dropped.
    HandleDropped { id: String },
    /// Start a trunk's REGISTER/OPTIONS services.
    StartTrunk {
        settings: Box<TrunkSettings>,
        /// Its first address and the further ones (SRV).
        targets: (Peer, Vec<Peer>),
        local: Peer,
        tls: Option<TlsTarget>,
    },
    /// Stop the task (after unregistering).
    Shutdown,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Invite { .. } => "Invite",
            Command::Transfer { .. } => "Transfer",
            Command::RefuseTransfer { .. } => "RefuseTransfer",
            Command::Hangup { .. } => "Hangup",
            Command::Reinvite { .. } => "Reinvite",
            Command::DtmfInfo { .. } => "DtmfInfo",
            Command::Respond { .. } => "Respond",
            Command::Proxy { .. } => "Proxy",
            Command::AcceptInbound => "AcceptInbound",
            Command::SetInbound { .. } => "SetInbound",
            Command::HandleDropped { .. } => "HandleDropped",
            Command::StartTrunk { .. } => "StartTrunk",
            Command::Shutdown => "Shutdown",
        })
    }
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
    /// Request method, or the CSeq method of a response, as a bounded label
    /// ([`crate::sip::method_label`]: `other` for methods outside the fixed set).
    pub method: &'static str,
    /// Status as a bounded label ([`crate::sip::status_label`]): `none` for
    /// requests, a well-known code (`"200"`), else its class (`"4xx"`).
    pub status: &'static str,
    /// Number of messages (retransmissions included).
    pub count: u64,
}

/// Counter map shared between the driver and [`SipEndpoint::message_counts`]; its
/// keys come from fixed label sets, so its size is bounded whatever peers send.
type Counts = Arc<Mutex<HashMap<(Direction, &'static str, &'static str), u64>>>;

/// Trunk statuses shared between the driver and [`SipEndpoint::trunk_statuses`].
type Statuses = Arc<Mutex<HashMap<String, TrunkStatus>>>;
/// What a trunk's TLS settings depend on: server name, CA bundle, client
/// certificate or not.
type TlsKey = (String, Option<std::path::PathBuf>, bool);

fn count(counts: &Counts, direction: Direction, bytes: &[u8]) {
    let Some((method, status)) = message::label(bytes) else {
        return;
    };
    let key = (
        direction,
        super::labels::method_label(&method),
        super::labels::status_label(status),
    );
    if let Ok(mut c) = counts.lock() {
        let n = c.entry(key).or_default();
        *n = n.saturating_add(1);
    }
}

/// A handle to an outbound call.
#[derive(Debug, Clone)]
pub struct SipCallHandle {
    /// SIP Call-ID of the first leg (the call's id).
    call_id: Arc<str>,
    /// The trunk's DTMF mode.
    dtmf_mode: DtmfMode,
    /// The driver's command queue.
    commands: mpsc::UnboundedSender<Command>,
}

impl SipCallHandle {
    /// Hangs up: CANCEL before a final response, BYE after 200 OK. Idempotent.
    pub fn hangup(&self) {
        self.send(Command::Hangup {
            id: self.call_id.to_string(),
        });
    }

    /// Sends a re-INVITE with `sdp` (hold: `a=sendonly`, unhold: `a=sendrecv`); the
    /// outcome comes as `SipCallEvent::ReinviteResult`. Queued while another INVITE
    /// transaction is in progress; retried after a 491.
    pub fn reinvite(&self, sdp: String) {
        self.send(Command::Reinvite {
            id: self.call_id.to_string(),
            sdp,
        });
    }

    /// Sends a DTMF digit (`0-9*#A-D`) as SIP INFO (`application/dtmf-relay`); only on
    /// trunks with `dtmf_mode = info`. Digits go one INFO at a time, in order.
    pub fn send_dtmf_info(&self, digit: char, duration_ms: u32) -> Result<(), SipError> {
        if self.dtmf_mode != DtmfMode::Info {
            return Err(SipError::NotAvailable(
                "INFO DTMF (the trunk uses RFC 4733)",
            ));
        }
        let digit = digit.to_ascii_uppercase();
        if !(digit.is_ascii_digit() || "*#ABCD".contains(digit)) {
            return Err(SipError::InvalidRequest(format!("DTMF digit {digit:?}")));
        }
        self.send(Command::DtmfInfo {
            id: self.call_id.to_string(),
            digit,
            duration_ms: duration_ms.clamp(40, 10_000),
        });
        Ok(())
    }

    /// Refuses the transfer asked for by [`SipCallEvent::TransferRequested`]: the
    /// transferor gets a final NOTIFY with `status` (3xx-6xx, else 603) and the call
    /// goes on.
    pub fn refuse_transfer(&self, status: u16) {
        self.send(Command::RefuseTransfer {
            id: self.call_id.to_string(),
            status,
        });
    }

    /// The SIP Call-ID of the call's first leg (a transfer keeps it as the id).
    pub fn sip_call_id(&self) -> &str {
        &self.call_id
    }

    fn send(&self, command: Command) {
        if self.commands.send(command).is_err() {
            tracing::debug!(sip_call_id = %self.call_id, "command after endpoint shutdown");
        }
    }
}

/// The SIP user agent endpoint: owns the sockets and all transactions and dialogs.
#[derive(Debug)]
pub struct SipEndpoint {
    /// The bound socket address (UDP and TCP).
    local_addr: SocketAddr,
    /// Advertised IP override (1:1 NAT).
    external_ip: Option<IpAddr>,
    /// The bound TLS listener's address, if any.
    tls_addr: Option<SocketAddr>,
    /// Finds trunks' addresses (SRV).
    locator: Arc<Locator>,
    /// How often trunk names are looked up again.
    dns_refresh: std::time::Duration,
    /// The driver's command queue.
    commands: mpsc::UnboundedSender<Command>,
    /// The driver task, taken by `shutdown`.
    task: Mutex<Option<JoinHandle<()>>>,
    /// Message counters.
    counts: Counts,
    /// Trunk statuses.
    statuses: Statuses,
    /// TLS settings built so far.
    tls_cache: Mutex<HashMap<TlsKey, TlsTarget>>,
    /// Our client certificate for trunks with `tls_client_auth`.
    tls_identity: Option<crate::sip::TlsIdentity>,
    /// New inbound calls, until `take_incoming`.
    incoming: Mutex<Option<mpsc::UnboundedReceiver<IncomingCall>>>,
    /// Connection caps and their refusal/close counters.
    limits: Arc<ConnectionLimits>,
    /// Whether the gateway takes new calls (OPTIONS answers), shared with the driver.
    availability: Arc<OnceLock<AvailabilityProbe>>,
}

/// Binds UDP on `listen` and TCP on the same port (for an ephemeral port, retries
/// until both are free).
async fn bind_sockets(listen: SocketAddr) -> Result<(UdpSocket, Option<TcpListener>), SipError> {
    for _ in 0..8 {
        let udp = UdpSocket::bind(listen).await?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, Some(tcp))),
            Err(e) if listen.port() == 0 => {
                tracing::debug!(%addr, "TCP port taken, trying another: {e}");
            }
            Err(e) => {
                tracing::warn!(%addr, "SIP TCP listener not bound ({e}); outbound TCP/TLS still works");
                return Ok((udp, None));
            }
        }
    }
    Err(SipError::Io(std::io::Error::other(
        "no port free for both UDP and TCP",
    )))
}

impl SipEndpoint {
    /// Binds the sockets and starts the endpoint's task.
    pub async fn bind(config: SipEndpointConfig) -> Result<Arc<SipEndpoint>, SipError> {
        let (socket, listener) = bind_sockets(config.listen).await?;
        let local_addr = socket.local_addr()?;
        let (commands, rx) = mpsc::unbounded_channel();
        let (net_tx, net_rx) = mpsc::unbounded_channel();
        let limits = Arc::new(ConnectionLimits::new(config.connections));
        let mut connections = Connections::new(net_tx, config.keepalive, Arc::clone(&limits));
        let tcp = listener.is_some();
        if let Some(listener) = listener {
            connections.listen(listener, None);
        }
        let mut tls_addr = None;
        if let Some(tls) = &config.tls {
            let listener = TcpListener::bind(tls.listen).await?;
            tls_addr = Some(listener.local_addr()?);
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.config));
            connections.listen(listener, Some(acceptor));
        }
        let counts = Counts::default();
        let statuses = Statuses::default();
        let addresses = Addresses {
            local_addr,
            external_ip: config.external_ip,
            tls_port: tls_addr.map(|a| a.port()),
        };
        let advertise = Arc::new(move |transport, target| addresses.local_peer(transport, target));
        let (incoming_tx, incoming_rx) = mpsc::unbounded_channel();
        let availability = Arc::new(OnceLock::new());
        let driver = Driver {
            socket,
            ua: UserAgent::new(UaConfig {
                timers: config.timers,
                user_agent: config.user_agent,
                advertise,
                trusted_proxies: config.trusted_proxies,
                forward: config
                    .forward
                    .as_ref()
                    .map(|f| ForwardKey::new(&f.secret, f.max_age)),
            }),
            connections,
            net: net_rx,
            commands: rx,
            own_commands: commands.downgrade(),
            counts: counts.clone(),
            statuses: statuses.clone(),
            subscribers: HashMap::new(),
            inbound: HashMap::new(),
            incoming: incoming_tx,
            availability: Arc::clone(&availability),
        };
        let task = tokio::spawn(driver.run());
        tracing::info!(%local_addr, tcp, ?tls_addr, "SIP endpoint listening");
        Ok(Arc::new(SipEndpoint {
            local_addr,
            external_ip: config.external_ip,
            tls_addr,
            locator: Arc::new(Locator::new(&config.dns_servers)),
            dns_refresh: config.dns_refresh,
            commands,
            task: Mutex::new(Some(task)),
            counts,
            statuses,
            tls_cache: Mutex::default(),
            tls_identity: config.tls_identity.clone(),
            incoming: Mutex::new(Some(incoming_rx)),
            limits,
            availability,
        }))
    }

    /// How to tell whether the gateway takes new calls: asked before each SIP message;
    /// out-of-dialog OPTIONS are answered 503 while it does not. Until set, the
    /// gateway is taken to be available. Only the first probe set counts.
    pub fn set_availability_probe(&self, probe: AvailabilityProbe) {
        if self.availability.set(probe).is_err() {
            tracing::warn!("SIP availability probe set twice; the first one stays");
        }
    }

    /// The bound local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The addresses to try for `trunk`, in order (SRV targets for a name without a
    /// port, else the first address of host:port); those whose last OPTIONS ping
    /// failed come last.
    pub async fn locate(&self, trunk: &TrunkSettings) -> Result<Vec<SocketAddr>, SipError> {
        let mut addrs = self.locator.locate(trunk).await?;
        // Addresses whose last health ping failed go last (stable: SRV order kept).
        if let Some(status) = self.trunk_status(&trunk.name)
            && !status.failing.is_empty()
        {
            addrs.sort_by_key(|a| status.failing.contains(a));
        }
        Ok(addrs)
    }

    /// The bound address of the SIP over TLS listener, if one is configured.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Our SIP address as a peer at `toward` sees it (the external IP when set, else
    /// the bound one, else the route's source address): what other instances put in
    /// a redirect's Contact or forward to.
    pub fn advertised_addr(&self, toward: SocketAddr) -> SocketAddr {
        self.local_peer(Transport::Udp, toward).addr
    }

    /// Sends an INVITE; events arrive on the returned receiver until `Terminated`,
    /// `Failed` or `RemoteHangup` (or the endpoint shuts down: the receiver then ends).
    pub async fn invite(
        &self,
        request: InviteRequest,
    ) -> Result<(SipCallHandle, mpsc::UnboundedReceiver<SipCallEvent>), SipError> {
        validate(&request)?;
        let id = random_hex(32);
        let transport = request.trunk.transport;
        let target = Peer {
            transport,
            addr: request.target,
        };
        let local = self.local_peer(transport, request.target);
        let tls = match transport {
            Transport::Tls => Some(self.tls_target(&request.trunk)?),
            _ => None,
        };
        let (events, rx) = mpsc::unbounded_channel();
        let handle = SipCallHandle {
            call_id: id.clone().into(),
            dtmf_mode: request.trunk.dtmf_mode,
            commands: self.commands.clone(),
        };
        let command = Command::Invite {
            id,
            request: Box::new(request),
            local,
            target,
            tls,
            events,
        };
        self.commands.send(command).map_err(|_| SipError::Closed)?;
        Ok((handle, rx))
    }

    /// Carries out the transfer `call` was asked for ([`SipCallEvent::TransferRequested`])
    /// by INVITEing `request` (the number and trunk the call module chose; its `sdp`
    /// is ignored: the call's current SDP is offered). The outcome comes as
    /// `Transferred` or `TransferFailed`. Ignored when no transfer waits.
    pub fn transfer(&self, call: &SipCallHandle, request: InviteRequest) -> Result<(), SipError> {
        validate(&request)?;
        let transport = request.trunk.transport;
        let target = Peer {
            transport,
            addr: request.target,
        };
        let local = self.local_peer(transport, request.target);
        let tls = match transport {
            Transport::Tls => Some(self.tls_target(&request.trunk)?),
            _ => None,
        };
        let command = Command::Transfer {
            id: call.call_id.to_string(),
            request: Box::new(request),
            local,
            target,
            tls,
        };
        self.commands.send(command).map_err(|_| SipError::Closed)
    }

    /// The TLS settings of a trunk (built once: the CA file is read the first time).
    fn tls_target(&self, trunk: &TrunkSettings) -> Result<TlsTarget, SipError> {
        let key = (
            trunk.server_name().to_string(),
            trunk.tls_ca.clone(),
            trunk.tls_client_auth,
        );
        if let Ok(cache) = self.tls_cache.lock()
            && let Some(t) = cache.get(&key)
        {
            return Ok(t.clone());
        }
        let identity = match (trunk.tls_client_auth, &self.tls_identity) {
            (false, _) => None,
            (true, Some(identity)) => Some(identity),
            (true, None) => {
                return Err(SipError::InvalidRequest(format!(
                    "trunk `{}` has tls_client_auth but no client certificate is configured ([tls] cert and key)",
                    trunk.name
                )));
            }
        };
        let target = tls::target(trunk.server_name(), trunk.tls_ca.as_deref(), identity)
            .map_err(SipError::InvalidRequest)?;
        if let Ok(mut cache) = self.tls_cache.lock() {
            cache.insert(key, target.clone());
        }
        Ok(target)
    }

    /// Inbound connections refused and connections closed by us, by reason.
    pub fn connection_stats(&self) -> ConnectionStats {
        self.limits.stats()
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
                method,
                status,
                count: *count,
            })
            .collect();
        out.sort_by(|a, b| {
            (a.direction, &a.method, a.status).cmp(&(b.direction, &b.method, b.status))
        });
        out
    }

    /// Unregisters the trunks, then stops the endpoint's task; open calls' event
    /// receivers end without a final event and nothing more is sent.
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

    /// Our address on `transport` as the peer at `target` should see it.
    fn local_peer(&self, transport: Transport, target: SocketAddr) -> Peer {
        self.addresses().local_peer(transport, target)
    }

    fn addresses(&self) -> Addresses {
        Addresses {
            local_addr: self.local_addr,
            external_ip: self.external_ip,
            tls_port: self.tls_addr.map(|a| a.port()),
        }
    }
}

/// Our bound address and its advertised override: what Via and Contact say.
#[derive(Debug, Clone, Copy)]
struct Addresses {
    /// The bound address.
    local_addr: SocketAddr,
    /// Advertised IP override (1:1 NAT).
    external_ip: Option<IpAddr>,
    /// Port of our TLS listener, if any.
    tls_port: Option<u16>,
}

impl Addresses {
    /// Our address on `transport` as the peer at `target` should see it: the TLS
    /// listener's port for TLS when there is one (a trunk opening a connection to our
    /// Contact reaches it), else the UDP/TCP port.
    fn local_peer(&self, transport: Transport, target: SocketAddr) -> Peer {
        let port = match (transport, self.tls_port) {
            (Transport::Tls, Some(port)) => port,
            _ => self.local_addr.port(),
        };
        Peer {
            transport,
            addr: SocketAddr::new(self.advertised_ip(target), port),
        }
    }

    /// The IP to put in Via/Contact/From for a peer at `target`.
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
