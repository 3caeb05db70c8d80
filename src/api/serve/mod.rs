//! The HTTP server of one listener (public or admin): our own accept loop over
//! hyper's HTTP/1.1 connection, so every connection is bounded.
//!
//! ```text
//! accept (TCP_NODELAY) ─> ConnectionLimits (total, per IP /64) ── over a cap: closed at once
//!        └> [TLS: HandshakeSlots (oldest evicted when full), handshake timeout]
//!        └> hyper http1: header_read_timeout (also between keep-alive requests),
//!           idle timeout (no byte either way), upgrades (WebSocket) ─> the router
//! ```
//!
//! The connection's permit lives in its socket ([`io::Watched`]), so an upgraded
//! WebSocket still counts. On `shutdown` the loop stops accepting, every connection
//! gets a graceful shutdown (an idle keep-alive closes, a request in flight
//! finishes), and the task ends when the last HTTP connection has closed.
//! Upgraded WebSockets end with their sessions, which watch `shutdown` themselves.
//!
//! hyper's `http1` builder is used rather than hyper-util's `auto` builder: `auto`
//! first reads the HTTP/2 preface with no timeout, so a client that sends nothing
//! would never meet the header timeout.

pub mod handshake;
pub mod io;
pub mod limits;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::debug;

use crate::metrics::{Metrics, MetricsError};
use handshake::HandshakeSlots;
use io::{Activity, Watched};
use limits::{ConnectionLimits, ConnectionPermit};

/// Largest request head (request line and headers); a longer one is answered 431
/// and closed. Bounds the memory a connection can make the server hold.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Connection gauges and close reasons of the HTTP listeners.
#[derive(Clone)]
pub struct ConnectionMetrics {
    /// Open connections per listener (`callbridge_http_connections{listener}`).
    pub open: IntGaugeVec,
    /// Connections closed by a limit, per listener and reason
    /// (`callbridge_http_connections_closed_total{listener,reason}`).
    pub closed: IntCounterVec,
}

impl ConnectionMetrics {
    /// Creates the families and registers them with `metrics`.
    pub fn register(metrics: &Metrics) -> Result<ConnectionMetrics, MetricsError> {
        let open = IntGaugeVec::new(
            Opts::new(
                "callbridge_http_connections",
                "Open HTTP connections (upgraded WebSockets included) per listener",
            ),
            &["listener"],
        )?;
        let closed = IntCounterVec::new(
            Opts::new(
                "callbridge_http_connections_closed_total",
                "HTTP connections closed by a limit: per_ip_limit, total_limit, \
                 tls_handshake_evicted, tls_handshake_timeout, tls_handshake_failed, \
                 header_timeout, idle_timeout",
            ),
            &["listener", "reason"],
        )?;
        metrics.register(Box::new(open.clone()))?;
        metrics.register(Box::new(closed.clone()))?;
        Ok(ConnectionMetrics { open, closed })
    }
}

/// TLS on a listener.
pub struct TlsSettings {
    /// The certificate and protocol settings.
    pub acceptor: TlsAcceptor,
    /// Handshakes in progress (`http.max_tls_handshakes`).
    pub slots: Arc<HandshakeSlots>,
    /// `http.tls_handshake_timeout`.
    pub timeout: Duration,
}

/// How one listener serves.
pub struct ListenerSettings {
    /// `public` or `admin`: the `listener` label of the metrics.
    pub name: &'static str,
    /// Its connection caps.
    pub limits: Arc<ConnectionLimits>,
    /// `http.header_read_timeout`.
    pub header_read_timeout: Duration,
    /// `http.idle_timeout`.
    pub idle_timeout: Duration,
    /// TLS, if the listener speaks it.
    pub tls: Option<TlsSettings>,
}

/// What every connection task of a listener shares.
struct Shared {
    /// The listener's settings.
    settings: ListenerSettings,
    /// The routes.
    router: Router,
    /// Metrics.
    metrics: ConnectionMetrics,
    /// Stop accepting and shut connections down gracefully.
    shutdown: CancellationToken,
}

impl Shared {
    /// Counts a connection closed for `reason`.
    fn closed(&self, reason: &'static str) {
        self.metrics
            .closed
            .with_label_values(&[self.settings.name, reason])
            .inc();
    }
}

/// Serves `router` on `tcp` until `shutdown`; the task ends when the last HTTP
/// connection has closed.
pub fn spawn(
    tcp: TcpListener,
    router: Router,
    settings: ListenerSettings,
    metrics: ConnectionMetrics,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let shared = Arc::new(Shared {
        settings,
        router,
        metrics,
        shutdown,
    });
    tokio::spawn(accept_loop(tcp, shared))
}

async fn accept_loop(tcp: TcpListener, shared: Arc<Shared>) {
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            accepted = accept(&tcp) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(listener = shared.settings.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match shared.settings.limits.try_open(peer.ip()) {
            Ok(permit) => {
                tracker.spawn(serve_connection(stream, peer, permit, Arc::clone(&shared)));
            }
            Err(refused) => {
                // Closed at once, before any byte is read.
                debug!(listener = shared.settings.name, %peer, reason = refused.label(), "connection refused");
                shared.closed(refused.label());
                drop(stream);
            }
        }
    }
    drop(tcp);
    tracker.close();
    tracker.wait().await;
}

/// Accepts the next connection, with `TCP_NODELAY` on. Protocol v1 answers a `call`
/// with several small frames in a row (`answer`, trickled `ice`, `ringing`,
/// `answered`); with Nagle's algorithm each one after the first waits until the
/// client ACKs the previous one, which a client delays by up to ~40 ms.
///
/// The peer address comes back canonical: an IPv4 client of a dual-stack listener is
/// seen as `a.b.c.d`, not `::ffff:a.b.c.d`.
async fn accept(tcp: &TcpListener) -> std::io::Result<(TcpStream, SocketAddr)> {
    let (stream, peer) = tcp.accept().await?;
    if let Err(e) = stream.set_nodelay(true) {
        // Still servable (only slower); a socket already reset fails on its own.
        debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    Ok((
        stream,
        SocketAddr::new(peer.ip().to_canonical(), peer.port()),
    ))
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    permit: ConnectionPermit,
    shared: Arc<Shared>,
) {
    let activity = Activity::new();
    let io = match &shared.settings.tls {
        None => Either::Left(stream),
        Some(tls) => match tls_handshake(tls, stream, peer, &shared).await {
            Some(tls) => Either::Right(tls),
            None => return,
        },
    };
    let io = TokioIo::new(Watched::new(io, activity.clone(), permit));
    let router = shared.router.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(request)
    });
    let settings = &shared.settings;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        let idle_at = activity.last() + settings.idle_timeout;
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    if e.is_timeout() {
                        debug!(listener = settings.name, %peer, "request head not received in time");
                        shared.closed("header_timeout");
                    } else {
                        debug!(listener = settings.name, %peer, error = %e, "connection ended");
                    }
                }
                break;
            }
            _ = tokio::time::sleep_until(idle_at) => {
                if activity.last() + settings.idle_timeout <= tokio::time::Instant::now() {
                    debug!(listener = settings.name, %peer, "idle connection closed");
                    shared.closed("idle_timeout");
                    break;
                }
            }
            _ = shared.shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Runs the TLS handshake in a slot; `None` when it failed, timed out, was evicted
/// by a newer connection, or the server is shutting down.
async fn tls_handshake(
    tls: &TlsSettings,
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> Option<TlsStream<TcpStream>> {
    let slot = tls.slots.enter();
    let name = shared.settings.name;
    tokio::select! {
        result = tokio::time::timeout(tls.timeout, tls.acceptor.accept(stream)) => match result {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(e)) => {
                debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                shared.closed("tls_handshake_failed");
                None
            }
            Err(_) => {
                debug!(listener = name, %peer, "TLS handshake timed out");
                shared.closed("tls_handshake_timeout");
                None
            }
        },
        _ = slot.evicted() => {
            debug!(listener = name, %peer, "TLS handshake evicted by a newer connection");
            shared.closed("tls_handshake_evicted");
            None
        }
        _ = shared.shutdown.cancelled() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // The kernel's default, so the assertion below shows what `accept` changes.
        let _plain_client = TcpStream::connect(addr).await.expect("connect");
        let (plain, _) = listener.accept().await.expect("accept");
        assert!(
            !plain.nodelay().expect("getsockopt"),
            "Nagle is on by default"
        );

        let client = TcpStream::connect(addr).await.expect("connect");
        let (stream, peer) = accept(&listener).await.expect("accept");
        assert!(stream.nodelay().expect("getsockopt"), "TCP_NODELAY set");
        assert_eq!(peer, client.local_addr().expect("client addr"));
    }
}
