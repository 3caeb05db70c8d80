//! Wiring: builds the shared [`Gateway`] state from a validated config, binds the
//! listeners, and runs until shut down.
//!
//! ```text
//! start(config) ─> storage + events (writer, webhook worker), SIP endpoint (UDP),
//!                  public HTTP/WS listener (TCP or TLS) and admin listener
//!                  (each with connection caps, see `api::serve`), drain supervisor
//!               └> RunningServer { http_addr, admin_addr, sip_addr, drain(), shutdown() }
//! ```
//!
//! Lifecycle: [`Drain::start`] (SIGTERM or `POST /v1/drain`) makes `/readyz` 503
//! and new sessions/calls `unavailable`; the supervisor waits for the active calls
//! to reach 0 or the drain timeout (then hangs up the calls left), then cancels
//! `shutdown` (sessions close); [`RunningServer::shutdown`] then stops events and SIP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use crate::drain::{Drain, DrainInfo};

use crate::api;
use crate::api::ratelimit::{RateLimits, RetryAfter};
use crate::api::serve::handshake::HandshakeSlots;
use crate::api::serve::limits::ConnectionLimits;
use crate::api::serve::{ConnectionMetrics, ListenerSettings, TlsSettings};
use crate::auth::{AuthError, Verifier, turn_credentials, turn_ttl};
use crate::call::CallManager;
use crate::call::location::{InProcessStore, LocationStore, RedisStore};
use crate::config::Config;
use crate::config::validate::parse_port_range;
use crate::events::{Events, EventsError};
use crate::media::candidates::{CandidatePolicy, GatewayPorts, LegGuard};
use crate::metrics::{Metrics, MetricsError};
use crate::netguard::metrics::PeerRefusals;
use crate::netguard::{self, ice_ports::IcePorts};
use crate::signaling::SessionCounter;
use crate::signaling::protocol::IceServer;
use crate::signaling::resume::Resumable;
use crate::signaling::users::UserSessions;
use crate::sip::echo::EchoUas;
use crate::sip::{SipEndpoint, SipEndpointConfig, SipError, TrunkSettings};
use crate::turn::TurnServer;
use crate::turn::policy::GatewayView;

/// Errors starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Token verification keys could not be loaded.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The dial plan did not compile.
    #[error(transparent)]
    Dialplan(#[from] crate::call::dialplan::DialplanError),
    /// The SIP endpoint could not start.
    #[error("SIP endpoint: {0}")]
    Sip(#[from] SipError),
    /// TLS could not be configured.
    #[error(transparent)]
    Tls(#[from] api::tls::TlsError),
    /// The location store (Redis) is unreachable.
    #[error(transparent)]
    Location(#[from] crate::call::location::LocationError),
    /// Redis for the fleet's per-user call limits could not be reached at start.
    #[error("fleet call limits: {0}")]
    FleetLimits(#[from] crate::call::fleet_limits::FleetLimitError),
    /// The TURN server could not start.
    #[error(transparent)]
    Turn(#[from] crate::turn::TurnError),
    /// The media workers' sockets or threads could not be set up.
    #[error("media workers: {0}; check server.media_ip and media.worker_port_base")]
    MediaWorkers(std::io::Error),

    /// Metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The call record / webhook database could not be opened.
    #[error(transparent)]
    Events(#[from] EventsError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// State shared by every session and request of one gateway instance.
pub struct Gateway {
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Token verification.
    pub verifier: Verifier,
    /// Calls of this instance.
    pub calls: Arc<CallManager>,
    /// Metrics of this instance.
    pub metrics: Metrics,
    /// Sessions per client IP.
    pub sessions: Arc<SessionCounter>,
    /// Sessions per user (`limits.max_sessions_per_user`) and their tokens' expiry.
    pub user_sessions: Arc<UserSessions>,
    /// Cancelled when the gateway shuts down (sessions close, calls hang up).
    pub shutdown: CancellationToken,
    /// Draining: no new sessions or calls; set before `shutdown`.
    pub drain: Arc<Drain>,
    /// Call records and webhooks: the call tasks report through it.
    pub events: Events,
    /// Per-IP and per-user rate limits.
    pub limits: RateLimits,
    /// The SIP user agent (metrics read its message counters).
    pub sip: Arc<SipEndpoint>,
    /// The built-in STUN/TURN server, when `[turn]` is configured.
    pub turn: Option<Arc<TurnServer>>,
    /// Sessions that can be resumed after their socket dropped.
    pub resumable: Arc<Resumable>,
}

impl Gateway {
    /// Whether new sessions and calls are refused: draining or shutting down.
    pub fn is_draining(&self) -> bool {
        self.drain.is_draining() || self.shutdown.is_cancelled()
    }

    /// Takes one call attempt of `user` from `ratelimit.calls_*`. On `Err`, answer
    /// `error` `rate_limited` with `retry_after_ms = wait.millis()` (counted in
    /// `callbridge_rate_limited_total{limit="call"}`).
    pub fn check_call_rate(&self, user: &str) -> Result<(), RetryAfter> {
        self.limits.calls.check(&user.to_string()).inspect_err(|_| {
            self.metrics
                .rate_limited_total
                .with_label_values(&["call"])
                .inc();
        })
    }

    /// The ICE servers for a user's `ready`/`reauthed` message: the built-in
    /// STUN/TURN with fresh REST credentials that expire no later than the session's
    /// token (`token_expires_at`, Unix seconds) when `[turn]` is configured, else none.
    pub fn ice_servers(&self, user: &str, token_expires_at: u64) -> Vec<IceServer> {
        let (Some(turn), Some(server)) = (&self.config.turn, &self.turn) else {
            return Vec::new();
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let ttl = turn_ttl(turn.credential_ttl.as_secs(), token_expires_at, now);
        let creds = turn_credentials(&turn.secret, user, now, ttl);
        let host = self.config.server.advertised_ip();
        let port = server.udp_addr.port();
        let host = match host {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        vec![IceServer {
            urls: vec![
                format!("stun:{host}:{port}"),
                format!("turn:{host}:{port}?transport=udp"),
                format!("turn:{host}:{}?transport=tcp", server.tcp_addr.port()),
            ],
            username: Some(creds.username),
            credential: Some(creds.password),
        }]
    }
}

/// A started gateway.
pub struct RunningServer {
    /// The shared state.
    pub gateway: Arc<Gateway>,
    /// The public HTTP/WebSocket listener's address.
    pub http_addr: SocketAddr,
    /// The admin listener's address (`/v1`, `/metrics`), when `admin.enabled`.
    pub admin_addr: Option<SocketAddr>,
    /// The SIP endpoint's address.
    pub sip_addr: SocketAddr,
    /// Whether the listener speaks TLS.
    pub tls: bool,
    /// The HTTP server tasks (public, then admin); each ends when its last HTTP
    /// connection has closed after `shutdown`.
    http_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The SIP endpoint (stopped on shutdown).
    sip: Arc<SipEndpoint>,
    /// The built-in echo UAS, when `[echo]` is enabled.
    echo: Option<EchoUas>,
}

impl RunningServer {
    /// The `ws://` or `wss://` URL of the signaling endpoint.
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}/ws", self.http_addr)
    }

    /// Resolves when the gateway is shutting down (e.g. a drain finished).
    pub async fn stopping(&self) {
        self.gateway.shutdown.cancelled().await
    }

    /// Drains (see [`Drain`]) with `timeout`, then shuts down with `grace`.
    pub async fn drain(self, timeout: Duration, grace: Duration) {
        self.gateway.drain.start(timeout);
        self.stopping().await;
        self.shutdown(grace).await;
    }

    /// Stops accepting, closes sessions (their calls hang up), waits for the calls to
    /// end (at most `grace`), writes the queued events, then stops the SIP endpoint.
    pub async fn shutdown(self, grace: Duration) {
        self.gateway.shutdown.cancel();
        let calls = Arc::clone(&self.gateway.calls);
        let _ = tokio::time::timeout(grace, calls.wait_idle()).await;
        // Give the SIP layer a moment to send the BYE/CANCEL the calls asked for.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = tokio::time::timeout(grace, futures_util::future::join_all(self.http_tasks)).await;
        self.gateway.events.shutdown(grace).await;
        self.gateway.calls.stop_presence();
        self.sip.shutdown().await;
        if let Some(echo) = &self.echo {
            echo.shutdown().await;
        }
        if let Some(turn) = &self.gateway.turn {
            turn.close().await;
        }
        info!("gateway stopped");
    }
}

/// Starts a gateway from a validated configuration.
pub async fn start(config: Config) -> Result<RunningServer, ServerError> {
    let mut config = config;
    let echo = match config.echo.enabled {
        true => Some(start_echo(&mut config).await?),
        false => None,
    };
    let config = Arc::new(config);
    let verifier = Verifier::from_config(&config.auth)?;
    let metrics = Metrics::new(config.server.max_calls)?;
    if let Some(turn) = &config.turn {
        metrics
            .turn_allocations_max
            .set(i64::try_from(turn.max_allocations).unwrap_or(i64::MAX));
    }
    let events = Events::start(&config, metrics.clone()).await?;
    let (tls, tls_identity) = sip_tls(&config)?;
    let sip = SipEndpoint::bind(SipEndpointConfig {
        listen: config.sip.listen,
        external_ip: config.sip.external_address.or(config.server.public_ip),
        user_agent: config.sip.user_agent.clone(),
        trusted_proxies: config
            .sip
            .trusted_proxies
            .iter()
            .filter_map(|n| crate::sip::parse_net(n))
            .collect(),
        tls,
        tls_identity,
        dns_servers: config.sip.dns_servers.clone(),
        dns_refresh: config.sip.dns_refresh,
        keepalive: Some(config.sip.keepalive_interval).filter(|d| !d.is_zero()),
        connections: config.sip.connections(),
        forward: config.cluster.forward_auth(),
        ..SipEndpointConfig::default()
    })
    .await?;
    let sip_addr = sip.local_addr();
    metrics.register_sip(Arc::clone(&sip))?;
    let trunks = config
        .sip
        .trunks
        .iter()
        .map(TrunkSettings::from_config)
        .collect();
    sip.start_trunks(trunks).await?;
    // Created before the call manager, which needs both (refuse calls while
    // draining; report call events).
    let drain = Arc::new(Drain::default());
    let fleet = {
        use crate::call::fleet_limits::FleetLimits;
        let unchecked = metrics.fleet_limit_unchecked_total.clone();
        Arc::new(match &config.cluster.redis_url {
            Some(url) => FleetLimits::redis(url, unchecked).await?,
            None => FleetLimits::local(unchecked),
        })
    };
    let location: Arc<dyn LocationStore> = match &config.cluster.redis_url {
        Some(url) => Arc::new(RedisStore::connect(url).await?),
        None => Arc::new(InProcessStore::default()),
    };
    // Where a client may make the gateway send (TURN relay, ICE checks): needs every
    // listener bound first, so it knows the gateway's own ports.
    let own = netguard::own_addrs(&config);
    let ice_ports = IcePorts::default();
    let limits = RateLimits::from_config(&config.ratelimit);
    let attempts: crate::call::AttemptCheck = {
        let calls = Arc::clone(&limits.calls);
        let limited = metrics.rate_limited_total.clone();
        Arc::new(move |user: &str| {
            calls.check(&user.to_string()).map_err(|wait| {
                limited.with_label_values(&["call"]).inc();
                wait.0
            })
        })
    };
    let turn = match &config.turn {
        Some(turn_config) => {
            let tls = match (&turn_config.tls_listen, &config.tls) {
                (Some(_), Some(tls)) => Some(api::tls::server_config(&tls.cert, &tls.key)?),
                _ => None,
            };
            let view = GatewayView {
                own: own.clone(),
                media: [config.server.media_ip]
                    .into_iter()
                    .chain(config.server.public_ip)
                    .collect(),
                ice_ports: ice_ports.clone(),
            };
            let server = TurnServer::start(
                turn_config,
                config.server.media_ip,
                config.server.advertised_ip(),
                view,
                tls,
            )
            .await?;
            Some(Arc::new(server))
        }
        None => None,
    };
    let (public_tcp, http_addr) = bind(config.server.listen).await?;
    let admin_tcp = match config.admin.enabled {
        true => Some(bind(config.admin.listen).await?),
        false => None,
    };
    let admin_addr = admin_tcp.as_ref().map(|(_, addr)| *addr);
    let service_ports = [
        Some(http_addr),
        admin_addr,
        Some(sip_addr),
        sip.tls_local_addr(),
    ]
    .into_iter()
    .chain(echo.as_ref().map(|e| Some(e.addr())))
    .chain(
        turn.iter()
            .flat_map(|t| [Some(t.udp_addr), Some(t.tcp_addr), t.tls_addr]),
    )
    .flatten()
    .map(|a| a.port())
    .collect();
    let candidates = CandidatePolicy::new(
        // Validated already; an entry that did not parse would only allow less.
        config
            .media
            .allow_candidate_networks
            .iter()
            .filter_map(|n| netguard::parse_net(n).ok())
            .collect(),
        GatewayPorts {
            own,
            service_ports,
            rtp_ports: parse_port_range(&config.sip.rtp_ports).ok(),
        },
    );
    let candidates = Arc::new(candidates);
    let refusals = PeerRefusals::of(&candidates, turn.clone()).map_err(MetricsError::from)?;
    metrics.register(Box::new(refusals))?;
    let workers =
        crate::media::worker::MediaWorkers::start(&crate::media::worker::WorkerPoolConfig {
            workers: config.media.worker_count(),
            bind_ip: config.server.media_ip,
            port_base: config.media.worker_port_base,
            public_ip: config.server.public_ip,
            host_ips: worker_host_ips(&config).map_err(ServerError::MediaWorkers)?,
            socket_buffer_bytes: config.media.worker_socket_buffer_bytes,
            policy: Arc::clone(&candidates),
            dropped: metrics.webrtc_dropped_total.clone(),
            handshakes_per_turn: config.media.worker_handshakes_per_turn,
        })
        .map_err(ServerError::MediaWorkers)?;
    let calls = CallManager::new(
        Arc::clone(&config),
        Arc::clone(&sip),
        metrics.clone(),
        events.clone(),
        crate::call::CallAdmission {
            drain: Arc::clone(&drain),
            attempts,
            fleet,
        },
        location,
        LegGuard {
            candidates,
            ice_ports,
            workers,
        },
    )?;
    // SIP-side balancers probe with OPTIONS: 503 while draining or full.
    sip.set_availability_probe({
        let (drain, registry) = (Arc::clone(&drain), Arc::clone(calls.registry()));
        crate::sip::AvailabilityProbe::new(move || {
            if drain.is_draining() {
                crate::sip::Availability::Draining
            } else if registry.at_capacity() {
                crate::sip::Availability::AtCapacity
            } else {
                crate::sip::Availability::Available
            }
        })
    });
    crate::call::inbound::start(&calls);
    crate::call::recordings::start(&calls);
    let gateway = Arc::new(Gateway {
        config: Arc::clone(&config),
        verifier,
        calls,
        metrics,
        sessions: Arc::new(SessionCounter::default()),
        user_sessions: Arc::new(UserSessions::default()),
        shutdown: CancellationToken::new(),
        drain,
        events,
        limits,
        sip: Arc::clone(&sip),
        turn,
        resumable: Arc::new(Resumable::default()),
    });
    if let (Some(turn), Some(turn_config)) = (&gateway.turn, &config.turn) {
        // Credentials end with the token they were issued under; a user who
        // reauthenticated keeps the relays of calls already up (their allocations
        // refresh with the old credentials), up to credential_ttl past expiry.
        let users = Arc::clone(&gateway.user_sessions);
        turn.extend_credentials_while(
            Arc::new(move |user: &str| users.valid_until(user)),
            turn_config.credential_ttl,
        );
    }
    tokio::spawn(supervise_drain(Arc::clone(&gateway)));
    tokio::spawn(forget_idle_limits(Arc::clone(&gateway)));

    let http_tasks = start_http(&gateway, public_tcp, admin_tcp.map(|(tcp, _)| tcp))?;
    let tls = config.tls.is_some();
    info!(%http_addr, admin = ?admin_addr, %sip_addr, tls, "gateway listening");
    Ok(RunningServer {
        gateway,
        http_addr,
        admin_addr,
        sip_addr,
        tls,
        http_tasks,
        sip,
        echo,
    })
}

/// Serves the public listener and, when `admin.enabled`, the admin listener (see
/// [`api::serve`]). Returns their tasks.
/// The host candidates of media workers bound to a wildcard `media_ip` without
/// `public_ip`: `media.host_candidate_ips`, else the interfaces' addresses.
fn worker_host_ips(config: &Config) -> std::io::Result<Vec<std::net::IpAddr>> {
    let media_ip = config.server.media_ip;
    if !media_ip.is_unspecified() || config.server.public_ip.is_some() {
        return Ok(Vec::new());
    }
    if !config.media.host_candidate_ips.is_empty() {
        return Ok(config.media.host_candidate_ips.clone());
    }
    crate::media::worker::interface_addresses(media_ip.is_ipv4())
}

fn start_http(
    gateway: &Arc<Gateway>,
    public_tcp: tokio::net::TcpListener,
    admin_tcp: Option<tokio::net::TcpListener>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ServerError> {
    let config = &gateway.config;
    let http = &config.http;
    let metrics = ConnectionMetrics::register(&gateway.metrics)?;
    let tls = match &config.tls {
        Some(tls) => Some(TlsSettings {
            acceptor: tokio_rustls::TlsAcceptor::from(api::tls::server_config(
                &tls.cert, &tls.key,
            )?),
            slots: HandshakeSlots::new(http.max_tls_handshakes),
            timeout: http.tls_handshake_timeout,
        }),
        None => None,
    };
    let public = ListenerSettings {
        name: "public",
        limits: ConnectionLimits::with_gauge(
            http.max_connections,
            http.max_connections_per_ip,
            metrics.open.with_label_values(&["public"]),
        ),
        header_read_timeout: http.header_read_timeout,
        idle_timeout: http.idle_timeout,
        tls,
    };
    let mut tasks = vec![api::serve::spawn(
        public_tcp,
        api::router(Arc::clone(gateway)),
        public,
        metrics.clone(),
        gateway.shutdown.clone(),
    )];
    if let Some(tcp) = admin_tcp {
        let admin = &config.admin;
        let settings = ListenerSettings {
            name: "admin",
            limits: ConnectionLimits::with_gauge(
                admin.max_connections,
                admin.max_connections,
                metrics.open.with_label_values(&["admin"]),
            ),
            header_read_timeout: http.header_read_timeout,
            idle_timeout: http.idle_timeout,
            tls: None,
        };
        tasks.push(api::serve::spawn(
            tcp,
            api::admin_router(Arc::clone(gateway)),
            settings,
            metrics,
            gateway.shutdown.clone(),
        ));
    }
    Ok(tasks)
}

/// Binds a TCP listener and reads back its address.
async fn bind(listen: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), ServerError> {
    let bind_error = |source| ServerError::Bind {
        addr: listen,
        source,
    };
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(bind_error)?;
    let addr = tcp.local_addr().map_err(bind_error)?;
    Ok((tcp, addr))
}

/// Waits for a drain, then for the calls to end or the deadline, then cancels
/// `shutdown`.
async fn supervise_drain(gateway: Arc<Gateway>) {
    tokio::select! {
        _ = gateway.drain.started() => {}
        _ = gateway.shutdown.cancelled() => return,
    }
    gateway.metrics.draining.set(1);
    let Some(info) = gateway.drain.info() else {
        return;
    };
    let left = info
        .deadline_instant()
        .saturating_duration_since(Instant::now());
    crate::service_manager::notify(&crate::service_manager::stopping_message(
        crate::service_manager::stop_budget(left),
    ));
    info!(active_calls = gateway.calls.registry().active(), deadline = %humantime::format_rfc3339_seconds(info.deadline), "draining: no new sessions or calls");
    loop {
        let active = gateway.calls.registry().active();
        if active == 0 {
            info!("drained: no calls left");
            break;
        }
        if Instant::now() >= info.deadline_instant() {
            warn!(
                active_calls = active,
                "drain timeout: hanging up the remaining calls"
            );
            let registry = gateway.calls.registry();
            for call in registry.list() {
                registry.terminate(&call.id, crate::signaling::protocol::EndReason::Unavailable);
            }
            // Let the hangups (BYE/CANCEL) go out before sessions are closed.
            let settle = Instant::now() + Duration::from_secs(5);
            while registry.active() > 0 && Instant::now() < settle {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = gateway.shutdown.cancelled() => return,
        }
    }
    gateway.shutdown.cancel();
}

/// Bounds the memory of the rate limiters: forgets idle keys every minute.
async fn forget_idle_limits(gateway: Arc<Gateway>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => gateway.limits.forget_idle(),
            _ = gateway.shutdown.cancelled() => return,
        }
    }
}

/// Name of the trunk that reaches the built-in echo.
pub const ECHO_TRUNK: &str = "builtin-echo";

/// Starts the echo UAS on loopback and routes `echo.numbers` to it, before every
/// configured route.
async fn start_echo(config: &mut Config) -> Result<EchoUas, ServerError> {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let echo = EchoUas::start(SocketAddr::new(loopback, 0), loopback).await?;
    config.sip.trunks.push(crate::config::TrunkConfig {
        name: ECHO_TRUNK.into(),
        address: echo.addr().to_string(),
        ..crate::config::TrunkConfig::default()
    });
    let names: Vec<String> = config
        .echo
        .numbers
        .iter()
        .map(|n| regex::escape(n))
        .collect();
    let pattern = format!("^({})$", names.join("|"));
    config.dialplan.routes.insert(
        0,
        crate::config::RouteConfig::new(pattern, vec![ECHO_TRUNK.into()]),
    );
    info!(addr = %echo.addr(), numbers = ?config.echo.numbers, "built-in echo destination");
    Ok(echo)
}

/// The SIP TLS listener and our TLS client identity, if configured.
type SipTls = (
    Option<crate::sip::SipTlsListener>,
    Option<crate::sip::TlsIdentity>,
);

/// The SIP side's use of the `[tls]` certificate, loaded once: the listener of
/// `sip.tls_listen` (client certificates required when `sip.tls_client_ca` is set)
/// and our client certificate for trunks with `tls_client_auth`.
fn sip_tls(config: &Config) -> Result<SipTls, ServerError> {
    let client_auth = config.sip.trunks.iter().any(|t| t.tls_client_auth);
    let Some(tls) = config
        .tls
        .as_ref()
        .filter(|_| client_auth || config.sip.tls_listen.is_some())
    else {
        return Ok((None, None));
    };
    let identity = crate::sip::TlsIdentity::from_pem_files(&tls.cert, &tls.key)?;
    let listener = match config.sip.tls_listen {
        Some(listen) => Some(crate::sip::SipTlsListener::new(
            listen,
            &identity,
            config.sip.tls_client_ca.as_deref(),
        )?),
        None => None,
    };
    Ok((listener, client_auth.then_some(identity)))
}
