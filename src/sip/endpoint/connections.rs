//! TCP and TLS connections, ours to trunks and accepted ones: one per peer, reused for every message (RFC 3261 §18,
//! responses go back on the connection the request came in on). Each connection is
//! a task that writes what the driver queues and frames what it reads
//! ([`StreamFramer`]); the driver learns about messages, failed sends and closed
//! connections through [`NetEvent`]s. Outbound connects time out after
//! [`CONNECT_TIMEOUT`] so a dead trunk fails over quickly; every write times out
//! after `sip.tcp_write_timeout`. Accepting (caps, TLS handshakes) is `accept.rs`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::limits::{CloseReason, ConnectionLimits};
use super::tls::TlsTarget;
use crate::sip::framer::StreamFramer;
use crate::sip::message::fallback::reply_to_unframable;
use crate::sip::transport::{Peer, Transport};
use crate::sip::user_agent::Owner;

/// How long an outbound TCP connect plus TLS handshake may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An inbound connection from a trunk's address with no traffic either way for
/// this long is closed (its keepalives count: it may carry a call's dialog).
pub(super) const TRUNK_IDLE: Duration = Duration::from_secs(900);
/// Same for our connections to trunks: longer than any session refresh interval, so
/// an idle call's trunk can still reach us on it.
const OUTBOUND_IDLE: Duration = Duration::from_secs(7200);
/// How long a keepalive ping waits for its pong (RFC 5626 §4.4.1) once the peer
/// has shown that it answers them.
const PONG_WAIT: Duration = Duration::from_secs(10);
/// A keepalive ping (RFC 5626 §3.5.1).
const PING: &[u8] = b"\r\n\r\n";
/// Its answer.
const PONG: &[u8] = b"\r\n";
/// Most owners a connection remembers for reporting its loss.
const MAX_OWNERS: usize = 64;

/// A message to write and who it belongs to (for error reports).
pub(super) type Outgoing = (Vec<u8>, Owner);

/// What connection tasks tell the driver.
#[derive(Debug)]
pub(crate) enum NetEvent {
    /// A framed message arrived.
    Message {
        /// The connection it came on.
        source: Peer,
        /// The message.
        bytes: Vec<u8>,
    },
    /// A message could not be written (connect failed, connection broke).
    SendFailed {
        /// Where it was going.
        dest: Peer,
        /// Whose it was.
        owner: Owner,
        /// Why.
        error: String,
    },
    /// An inbound connection was accepted.
    Accepted {
        /// The peer.
        peer: Peer,
        /// Id of the connection task.
        id: u64,
        /// Its write queue.
        sender: mpsc::UnboundedSender<Outgoing>,
    },
    /// A connection ended.
    Closed {
        /// The peer.
        peer: Peer,
        /// Id of the connection task (a newer one may exist for the same peer).
        id: u64,
    },
}

/// The driver's view of the open connections.
pub(crate) struct Connections {
    /// Write queue of each connection by peer.
    conns: HashMap<Peer, (u64, mpsc::UnboundedSender<Outgoing>)>,
    /// TLS settings by trunk address.
    tls: HashMap<SocketAddr, TlsTarget>,
    /// Where connection tasks report.
    net: mpsc::UnboundedSender<NetEvent>,
    /// Next connection id.
    next_id: u64,
    /// Keepalive ping interval on our connections to trunks; `None`: no pings.
    keepalive: Option<Duration>,
    /// Caps, trunk addresses and counters, shared with the accept loops.
    limits: Arc<ConnectionLimits>,
    /// Connection and listener tasks, aborted on drop.
    tasks: JoinSet<()>,
}

impl Connections {
    /// No connections yet; tasks report to `net`; our connections send keepalive
    /// pings after `keepalive` without traffic; `limits` bound them all.
    pub(crate) fn new(
        net: mpsc::UnboundedSender<NetEvent>,
        keepalive: Option<Duration>,
        limits: Arc<ConnectionLimits>,
    ) -> Self {
        Self {
            conns: HashMap::new(),
            tls: HashMap::new(),
            net,
            next_id: 0,
            keepalive,
            limits,
            tasks: JoinSet::new(),
        }
    }

    /// Accepts inbound TCP connections on `listener`, or TLS ones with `tls`.
    pub(crate) fn listen(&mut self, listener: TcpListener, tls: Option<TlsAcceptor>) {
        let net = self.net.clone();
        // Inbound ids never collide with outbound ones, nor TCP with TLS ones.
        let first_id = if tls.is_some() {
            2u64 << 40
        } else {
            1u64 << 40
        };
        let limits = Arc::clone(&self.limits);
        self.tasks.spawn(super::accept::accept_loop(
            listener, tls, net, first_id, limits,
        ));
    }

    /// The shared connection policy (trunk addresses are set through it).
    pub(crate) fn limits(&self) -> &Arc<ConnectionLimits> {
        &self.limits
    }

    /// Remembers how to reach a TLS trunk at `addr`.
    pub(crate) fn register_tls(&mut self, addr: SocketAddr, target: TlsTarget) {
        self.tls.insert(addr, target);
    }

    /// Number of connections held.
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    /// Queues a message on the connection to `dest`, opening it when needed.
    pub(crate) fn send(&mut self, dest: Peer, bytes: Vec<u8>, owner: Owner) {
        let mut message = (bytes, owner);
        if let Some((_, sender)) = self.conns.get(&dest) {
            match sender.send(message) {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => message = back,
            }
        }
        let tls = match dest.transport {
            Transport::Tls => {
                let target = self.tls.get(&dest.addr).cloned().or_else(|| {
                    // An address we were not told about: verify its IP with webpki roots.
                    super::tls::target(&dest.addr.ip().to_string(), None, None).ok()
                });
                match target {
                    Some(t) => Some(t),
                    None => {
                        let _ = self.net.send(NetEvent::SendFailed {
                            dest,
                            owner: message.1,
                            error: "no TLS settings".into(),
                        });
                        return;
                    }
                }
            }
            _ => None,
        };
        self.next_id += 1;
        let id = self.next_id;
        let (sender, queue) = mpsc::unbounded_channel();
        let _ = sender.send(message);
        self.conns.insert(dest, (id, sender));
        let limits = Liveness::outbound(self.keepalive, &self.limits);
        let counters = Arc::clone(&self.limits);
        self.tasks.spawn(outbound(
            dest,
            id,
            tls,
            limits,
            counters,
            queue,
            self.net.clone(),
        ));
    }

    /// A connection task reported its end.
    pub(crate) fn closed(&mut self, peer: Peer, id: u64) {
        if self.conns.get(&peer).is_some_and(|(i, _)| *i == id) {
            self.conns.remove(&peer);
        }
    }

    /// An inbound connection's write queue.
    pub(crate) fn accepted(
        &mut self,
        peer: Peer,
        id: u64,
        sender: mpsc::UnboundedSender<Outgoing>,
    ) {
        self.conns.insert(peer, (id, sender));
    }
}

/// Connects (TCP, then TLS when asked) and runs the connection.
async fn outbound(
    dest: Peer,
    id: u64,
    tls: Option<TlsTarget>,
    liveness: Liveness,
    limits: Arc<ConnectionLimits>,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    net: mpsc::UnboundedSender<NetEvent>,
) {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = TcpStream::connect(dest.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", dest.addr))?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(Stream::Tcp(tcp)),
            Some(t) => tokio_rustls::TlsConnector::from(t.config)
                .connect(t.server_name, tcp)
                .await
                .map(|s| Stream::Tls(Box::new(s)))
                .map_err(|e| format!("TLS handshake with {}: {e}", dest.addr)),
        }
    })
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "connect {}: timed out after {CONNECT_TIMEOUT:?}",
            dest.addr
        ))
    });
    let mut owners = Vec::new();
    let error = match connected {
        Ok(Stream::Tcp(s)) => {
            tracing::debug!(peer = %dest, "connected");
            let link = Link::new(dest, &net, &limits);
            run(s, link, &mut queue, liveness, &mut owners).await
        }
        Ok(Stream::Tls(s)) => {
            tracing::debug!(peer = %dest, "TLS connected");
            let link = Link::new(dest, &net, &limits);
            run(*s, link, &mut queue, liveness, &mut owners).await
        }
        Err(e) => {
            tracing::warn!(peer = %dest, "{e}");
            e
        }
    };
    fail_queued(dest, &mut queue, &net, &error);
    if error != CLOSED && error != IDLE {
        // The connection broke (reset, TLS alert, missing pong): requests sent on
        // it can get no answer on it. Their owners hear it as a send error, which
        // ends only transactions still waiting (e.g. an INVITE a trunk refused at
        // the TLS layer after the handshake: a prompt 503 and failover, not Timer B).
        for owner in owners {
            let error = format!("connection lost: {error}");
            let _ = net.send(NetEvent::SendFailed { dest, owner, error });
        }
    }
    let _ = net.send(NetEvent::Closed { peer: dest, id });
}

/// The two kinds of outbound stream.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Reports every message still queued as failed.
pub(super) fn fail_queued(
    dest: Peer,
    queue: &mut mpsc::UnboundedReceiver<Outgoing>,
    net: &mpsc::UnboundedSender<NetEvent>,
    error: &str,
) {
    queue.close();
    while let Ok((_, owner)) = queue.try_recv() {
        let _ = net.send(NetEvent::SendFailed {
            dest,
            owner,
            error: error.to_string(),
        });
    }
}

/// What [`run`] returns when the driver dropped the connection's queue.
const CLOSED: &str = "closed";
/// What [`run`] returns when the idle limit closed the connection.
pub(super) const IDLE: &str = "idle";

/// When a connection is given up: idle without messages, or (ours) silent after a
/// keepalive ping; and how long a write may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct Liveness {
    /// No traffic (as counted below) for this long closes the connection.
    pub idle: Duration,
    /// Only complete SIP messages from the peer count as traffic: its CRLF pings
    /// and our own writes do not (inbound connections from non-trunk addresses,
    /// which carry no dialog). Otherwise pings and writes count too.
    pub strict: bool,
    /// Ping after this long without any bytes either way; `None`: never ping.
    pub keepalive: Option<Duration>,
    /// A write not done within this closes the connection.
    pub write_timeout: Duration,
    /// Largest message framed.
    pub max_message: usize,
}

impl Liveness {
    /// Our connections to trunks.
    fn outbound(keepalive: Option<Duration>, limits: &ConnectionLimits) -> Self {
        Liveness {
            idle: OUTBOUND_IDLE,
            strict: false,
            keepalive,
            write_timeout: limits.config().write_timeout,
            max_message: limits.config().max_message_bytes,
        }
    }

    /// An accepted connection, from a trunk's address or not.
    pub(super) fn inbound(trunk: bool, limits: &ConnectionLimits) -> Self {
        let config = limits.config();
        Liveness {
            idle: if trunk {
                TRUNK_IDLE
            } else {
                config.idle_timeout
            },
            strict: !trunk,
            keepalive: None,
            write_timeout: config.write_timeout,
            max_message: config.max_message_bytes,
        }
    }
}

/// Who a connection task reports to.
pub(super) struct Link<'a> {
    /// The peer.
    pub peer: Peer,
    /// The driver.
    pub net: &'a mpsc::UnboundedSender<NetEvent>,
    /// Where closes are counted.
    pub limits: &'a ConnectionLimits,
}

impl<'a> Link<'a> {
    /// The link of the connection with `peer`.
    pub(super) fn new(
        peer: Peer,
        net: &'a mpsc::UnboundedSender<NetEvent>,
        limits: &'a ConnectionLimits,
    ) -> Self {
        Link { peer, net, limits }
    }
}

/// Writes queued messages and frames incoming ones until an error, EOF, idleness or
/// a missing pong; returns why it stopped. Pings from the peer get a pong; ours go
/// out after `liveness.keepalive` of silence, and once the peer has answered one, a
/// ping unanswered for [`PONG_WAIT`] ends the connection (the peer or a NAT on the
/// way lost it), so the next request opens a new one. A stream that cannot be
/// framed is answered (400/413, when its header section names a request) and closed.
pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    link: Link<'_>,
    queue: &mut mpsc::UnboundedReceiver<Outgoing>,
    liveness: Liveness,
    owners: &mut Vec<Owner>,
) -> String {
    use tokio::time::{Instant, sleep_until, timeout};
    let Link { peer, net, limits } = link;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut framer = StreamFramer::new(liveness.max_message);
    let mut buf = vec![0u8; 16 * 1024];
    let mut idle_at = Instant::now() + liveness.idle;
    let far = Duration::from_secs(86_400 * 365);
    let mut ping_at = Instant::now() + liveness.keepalive.unwrap_or(far);
    // Set while a ping waits for its pong from a peer known to answer them.
    let mut pong_due: Option<Instant> = None;
    let mut answers_pings = false;
    let write_timeout = liveness.write_timeout;
    // Writes `bytes` within the write timeout; the error names the peer.
    macro_rules! write_within {
        ($bytes:expr, $what:literal) => {
            match timeout(write_timeout, write_flushed(&mut writer, $bytes)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("{} {peer}: {e}", $what)),
                Err(_) => {
                    limits.count_close(CloseReason::WriteTimeout);
                    tracing::warn!(%peer, "closing connection: a write made no progress in {write_timeout:?}");
                    Err(format!("{} {peer}: timed out after {write_timeout:?}", $what))
                }
            }
        };
    }
    loop {
        tokio::select! {
            message = queue.recv() => {
                let Some((bytes, owner)) = message else {
                    return CLOSED.into();
                };
                if let Err(error) = write_within!(&bytes, "write to") {
                    let _ = net.send(NetEvent::SendFailed { dest: peer, owner, error: error.clone() });
                    return error;
                }
                remember(owners, owner);
                if !liveness.strict {
                    idle_at = Instant::now() + liveness.idle;
                }
            }
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) => return format!("{peer} closed the connection"),
                    Ok(n) => n,
                    Err(e) => return format!("read from {peer}: {e}"),
                };
                if let Some(interval) = liveness.keepalive {
                    ping_at = Instant::now() + interval;
                }
                pong_due = None;
                if !liveness.strict {
                    idle_at = Instant::now() + liveness.idle;
                }
                let only_crlf = buf[..n].iter().all(|b| matches!(b, b'\r' | b'\n'));
                framer.push(&buf[..n]);
                loop {
                    match framer.next_message() {
                        Ok(Some(bytes)) => {
                            idle_at = Instant::now() + liveness.idle;
                            let _ = net.send(NetEvent::Message { source: peer, bytes });
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(%peer, "closing connection: {e}");
                            limits.count_close(CloseReason::Framing);
                            let why = e.to_string();
                            if let Some(reply) = framer
                                .head()
                                .and_then(|head| reply_to_unframable(head, peer.addr, e.status(), &why))
                            {
                                let _ = write_within!(&reply, "write to");
                            }
                            return format!("framing: {e}");
                        }
                    }
                }
                let pings = framer.take_pings();
                if only_crlf && pings == 0 {
                    answers_pings = true; // a pong: the peer does RFC 5626 keepalives
                }
                for _ in 0..pings {
                    if let Err(error) = write_within!(PONG, "write to") {
                        return error;
                    }
                }
            }
            () = sleep_until(ping_at), if liveness.keepalive.is_some() && pong_due.is_none() => {
                if let Err(error) = write_within!(PING, "keepalive to") {
                    return error;
                }
                ping_at = Instant::now() + liveness.keepalive.unwrap_or(far);
                if answers_pings {
                    pong_due = Some(Instant::now() + PONG_WAIT);
                }
            }
            () = sleep_until(pong_due.unwrap_or(idle_at)), if pong_due.is_some() => {
                return format!("no keepalive pong from {peer} within {PONG_WAIT:?}");
            }
            () = sleep_until(idle_at) => {
                if liveness.strict {
                    limits.count_close(CloseReason::Idle);
                    tracing::info!(%peer, "closing connection: no SIP message in {:?}", liveness.idle);
                }
                return IDLE.into();
            }
        }
    }
}

/// Adds `owner` to the owners of messages written on a connection (most recent
/// last, at most [`MAX_OWNERS`]).
fn remember(owners: &mut Vec<Owner>, owner: Owner) {
    if owner == Owner::None {
        return;
    }
    owners.retain(|o| *o != owner);
    if owners.len() == MAX_OWNERS {
        owners.remove(0);
    }
    owners.push(owner);
}

/// Writes `bytes` and flushes them: a TLS stream may otherwise keep the last record
/// buffered until the next write.
async fn write_flushed<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}
