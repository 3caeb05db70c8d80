//! The TURN server runtime: listeners, the guarded connections handed to the `turn`
//! crate, and the allocation-close feed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use turn::relay::relay_range::RelayAddressGeneratorRanges;
use turn::server::config::{ConnConfig, ServerConfig};
use util::Conn;

use super::auth::RestAuthHandler;
use super::guard::{Guard, Quotas, Verdict};
use super::policy::{GatewayView, PeerPolicy};
use super::stream::StreamMux;
use crate::config::TurnConfig;
use crate::config::validate::parse_port_range;

/// Errors starting the TURN server.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// A listener could not be bound.
    #[error("turn: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A config value is unusable (validation normally catches it).
    #[error("turn: {0}")]
    Config(String),
    /// The `turn` crate refused to start.
    #[error("turn server: {0}")]
    Server(#[from] turn::Error),
}

/// Where a guarded connection gets its datagrams from.
enum Inner {
    /// A UDP socket.
    Udp(Arc<UdpSocket>),
    /// The TCP or TLS connections of a listener.
    Stream(Arc<StreamMux>),
}

/// A listener as the `turn` crate sees it, with the [`Guard`] in between.
struct GuardedConn {
    inner: Inner,
    local: SocketAddr,
    guard: Arc<Guard>,
}

fn io(e: std::io::Error) -> util::Error {
    util::Error::from(e)
}

#[async_trait]
impl Conn for GuardedConn {
    async fn connect(&self, _addr: SocketAddr) -> Result<(), util::Error> {
        Err(util::Error::Other(
            "connect is not supported on a TURN listener".into(),
        ))
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize, util::Error> {
        self.recv_from(buf).await.map(|(n, _)| n)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr), util::Error> {
        loop {
            let (n, src) = match &self.inner {
                Inner::Udp(socket) => socket.recv_from(buf).await.map_err(io)?,
                Inner::Stream(mux) => mux.recv_from(buf).await.map_err(io)?,
            };
            match self.guard.inspect(&buf[..n], src, self.local) {
                Verdict::Pass => return Ok((n, src)),
                Verdict::Reply(reply) => {
                    if let Err(e) = self.send_raw(&reply, src).await {
                        tracing::debug!(%src, error = %e, "TURN refusal not sent");
                    }
                }
                Verdict::Drop => {}
            }
        }
    }

    async fn send(&self, _buf: &[u8]) -> Result<usize, util::Error> {
        Err(util::Error::Other(
            "send needs a target on a TURN listener".into(),
        ))
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> Result<usize, util::Error> {
        self.guard.observe_outgoing(buf, target, self.local);
        self.send_raw(buf, target).await.map_err(io)
    }

    fn local_addr(&self) -> Result<SocketAddr, util::Error> {
        Ok(self.local)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> Result<(), util::Error> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

impl GuardedConn {
    async fn send_raw(&self, buf: &[u8], target: SocketAddr) -> std::io::Result<usize> {
        match &self.inner {
            Inner::Udp(socket) => socket.send_to(buf, target).await,
            Inner::Stream(mux) => mux.send_to(buf, target),
        }
    }
}

/// A running built-in STUN/TURN server.
pub struct TurnServer {
    /// The crate's server.
    server: turn::server::Server,
    /// Policy, quotas and counters.
    guard: Arc<Guard>,
    /// The credential check (shared with the crate's server and the guard).
    auth: Arc<RestAuthHandler>,
    /// UDP listener address.
    pub udp_addr: SocketAddr,
    /// TCP listener address (same port as UDP when it was free).
    pub tcp_addr: SocketAddr,
    /// TLS listener address, if configured.
    pub tls_addr: Option<SocketAddr>,
    /// The UDP listener's receive and send buffer sizes, as read back.
    udp_buffers: (usize, usize),
    /// Stops the stream listeners.
    stop: CancellationToken,
}

impl TurnServer {
    /// Binds UDP and TCP on `turn.listen` (and TLS on `turn.tls_listen` with `tls`),
    /// relaying on `relay_ip` (bind) advertised as `public_ip`. `gateway` says which
    /// addresses are the gateway itself and which of its ports a user may reach (its
    /// calls' ICE ports); see [`PeerPolicy`].
    pub async fn start(
        turn: &TurnConfig,
        relay_ip: IpAddr,
        public_ip: IpAddr,
        gateway: GatewayView,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<TurnServer, TurnError> {
        let policy = PeerPolicy::new(&turn.allow_peers, &turn.deny_peers, gateway)
            .map_err(|e| TurnError::Config(e.to_string()))?;
        let (min_port, max_port) =
            parse_port_range(&turn.relay_ports).map_err(TurnError::Config)?;
        let auth = Arc::new(RestAuthHandler::new(turn.secret.clone()));
        let quotas = Quotas {
            total: turn.max_allocations,
            per_user: turn.max_allocations_per_user,
        };
        let guard = Arc::new(Guard::new(policy, Arc::clone(&auth), quotas));
        let stop = CancellationToken::new();

        let udp = UdpSocket::bind(turn.listen)
            .await
            .map_err(|source| TurnError::Bind {
                addr: turn.listen,
                source,
            })?;
        let udp_addr = udp.local_addr().map_err(|source| TurnError::Bind {
            addr: turn.listen,
            source,
        })?;
        let udp_buffers = size_buffers(&udp, turn.socket_buffer_bytes);
        // TCP on the same port as UDP (an ephemeral UDP port gets the same TCP port).
        let tcp_listen = SocketAddr::new(turn.listen.ip(), udp_addr.port());
        let tcp = tokio::net::TcpListener::bind(tcp_listen)
            .await
            .map_err(|source| TurnError::Bind {
                addr: tcp_listen,
                source,
            })?;
        let tcp_addr = tcp.local_addr().map_err(|source| TurnError::Bind {
            addr: tcp_listen,
            source,
        })?;

        let mut conns: Vec<Arc<dyn Conn + Send + Sync>> = vec![
            Arc::new(GuardedConn {
                inner: Inner::Udp(Arc::new(udp)),
                local: udp_addr,
                guard: Arc::clone(&guard),
            }),
            Arc::new(GuardedConn {
                inner: Inner::Stream(StreamMux::start(tcp, None, stop.clone()).map_err(
                    |source| TurnError::Bind {
                        addr: tcp_addr,
                        source,
                    },
                )?),
                local: tcp_addr,
                guard: Arc::clone(&guard),
            }),
        ];
        let mut tls_addr = None;
        if let (Some(addr), Some(tls)) = (turn.tls_listen, tls) {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| TurnError::Bind { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| TurnError::Bind { addr, source })?;
            let mux = StreamMux::start(
                listener,
                Some(tokio_rustls::TlsAcceptor::from(tls)),
                stop.clone(),
            )
            .map_err(|source| TurnError::Bind { addr, source })?;
            conns.push(Arc::new(GuardedConn {
                inner: Inner::Stream(mux),
                local,
                guard: Arc::clone(&guard),
            }));
            tls_addr = Some(local);
        }

        let (close_tx, mut close_rx) = tokio::sync::mpsc::channel(256);
        let config = ServerConfig {
            conn_configs: conns
                .into_iter()
                .map(|conn| ConnConfig {
                    conn,
                    relay_addr_generator: Box::new(RelayAddressGeneratorRanges {
                        relay_address: public_ip,
                        min_port,
                        max_port,
                        max_retries: 50,
                        address: relay_ip.to_string(),
                        net: Arc::new(util::vnet::net::Net::new(None)),
                    }),
                })
                .collect(),
            realm: turn.realm.clone(),
            auth_handler: Arc::clone(&auth) as _,
            channel_bind_timeout: std::time::Duration::from_secs(0),
            alloc_close_notify: Some(close_tx),
        };
        let server = turn::server::Server::new(config).await?;
        let feed = Arc::clone(&guard);
        tokio::spawn(async move {
            while let Some(info) = close_rx.recv().await {
                feed.released(
                    info.five_tuple.src_addr,
                    info.five_tuple.dst_addr,
                    &info.username,
                    info.relayed_bytes as u64,
                );
            }
        });
        tracing::info!(%udp_addr, %tcp_addr, ?tls_addr, %public_ip, "TURN server listening");
        Ok(TurnServer {
            server,
            guard,
            auth,
            udp_addr,
            tcp_addr,
            tls_addr,
            udp_buffers,
            stop,
        })
    }

    /// The UDP listener's receive and send buffer sizes as the kernel reports them
    /// (Linux reports twice the usable size).
    pub fn udp_buffer_sizes(&self) -> (usize, usize) {
        self.udp_buffers
    }

    /// Lets expired credentials of a user who holds a valid token keep working, up
    /// to `limit` past their expiry (see [`RestAuthHandler::extend_while`]).
    pub fn extend_credentials_while(
        &self,
        valid_until: super::auth::ValidUntil,
        limit: std::time::Duration,
    ) {
        self.auth.extend_while(valid_until, limit);
    }

    /// Live allocations.
    pub fn allocations(&self) -> usize {
        self.guard.allocations()
    }

    /// Bytes relayed by allocations that have ended.
    pub fn relayed_bytes(&self) -> u64 {
        self.guard.stats.relayed_bytes.load(Ordering::Relaxed)
    }

    /// Permissions refused by the peer policy so far.
    pub fn refused_peers(&self) -> u64 {
        self.guard.stats.refused_peers.load(Ordering::Relaxed)
    }

    /// Send indications and ChannelData dropped by the peer policy so far.
    pub fn dropped_data(&self) -> u64 {
        self.guard.stats.dropped_data.load(Ordering::Relaxed)
    }

    /// Stops the server and its listeners.
    pub async fn close(&self) {
        self.stop.cancel();
        if let Err(e) = self.server.close().await {
            tracing::debug!(error = %e, "TURN server close");
        }
    }
}

/// Asks for `bytes` of receive and send buffer on `socket` and reads back what the
/// kernel granted; warns when it is less (capped by `net.core.rmem_max`/`wmem_max`).
/// Failing to set them is not fatal: the listener works with the kernel's default.
fn size_buffers(socket: &UdpSocket, bytes: usize) -> (usize, usize) {
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(bytes) {
        tracing::warn!(error = %e, "cannot set the TURN listener's receive buffer");
    }
    if let Err(e) = sock.set_send_buffer_size(bytes) {
        tracing::warn!(error = %e, "cannot set the TURN listener's send buffer");
    }
    let granted = (
        sock.recv_buffer_size().unwrap_or(0),
        sock.send_buffer_size().unwrap_or(0),
    );
    // Linux doubles the value asked for (bookkeeping overhead) and reports the double.
    let usable = |n: usize| if cfg!(target_os = "linux") { n / 2 } else { n };
    if usable(granted.0) < bytes || usable(granted.1) < bytes {
        tracing::warn!(
            asked = bytes,
            receive = granted.0,
            send = granted.1,
            "the kernel granted the TURN listener smaller buffers than turn.socket_buffer_bytes; \
             raise net.core.rmem_max and net.core.wmem_max (sysctl) or lower the key"
        );
    }
    granted
}
