//! HTTP surface. Two listeners:
//! - public (`server.listen`, [`router`]): the `/ws` upgrade, `/healthz` (`ok` or
//!   `draining` only, unless an operator token asks), `/readyz`, `/readyz/drain`, `/demo`, and
//!   `/v1/recordings/{id}` (users fetch their own recordings with their token);
//! - admin (`admin.listen`, [`admin_router`]): the operator API under `/v1`
//!   ([`v1`]), `/metrics`, `/healthz` with detail, `/readyz`, `/readyz/drain`.
//!
//! With `admin.enabled = false` the admin routes join the public listener, where
//! `/v1` and `/metrics` need an operator token.
//!
//! I/O contract: the routers are axum `Router`s; [`serve`] serves them over plain
//! TCP or TLS ([`tls`]) with connection caps and timeouts. Every request passes the
//! correlation middleware ([`correlation`]); `/v1` and `/ws` are rate limited per
//! client IP ([`ratelimit`]) and answer errors as problem+json ([`problem`]).

pub mod correlation;
pub mod demo;
pub mod health;
pub mod problem;
pub mod ratelimit;
pub mod serve;
pub mod tls;
pub mod v1;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::server::Gateway;
use crate::signaling::random_id;
use crate::signaling::session::{self, Upgrade};
use problem::Problem;

/// Header carrying the correlation id of a request.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Read buffer of a browser's WebSocket. tungstenite zero-fills its whole read
/// buffer before each read (128 KiB by default: that much resident memory per
/// session); signaling messages are a few KiB, and a larger one grows the buffer.
const WS_READ_BUFFER: usize = 8 * 1024;

/// Builds the router of the public listener (`server.listen`).
pub fn router(gateway: Arc<Gateway>) -> Router {
    let mut router = Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/readyz", get(health::readyz))
        .route("/readyz/drain", get(health::readyz_drain))
        .merge(demo::routes(&gateway.config.demo));
    if gateway.config.admin.enabled {
        router = router
            .route("/healthz", get(health::healthz_public))
            .merge(v1::public_router(Arc::clone(&gateway)));
    } else {
        router = router
            .route("/healthz", get(health::healthz_public))
            .route("/metrics", get(health::metrics_with_token))
            .merge(v1::router(Arc::clone(&gateway)));
    }
    router
        .layer(axum::middleware::from_fn(correlation::correlate))
        .with_state(gateway)
}

/// Builds the router of the admin listener (`admin.listen`).
pub fn admin_router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz_detail))
        .route("/readyz", get(health::readyz))
        .route("/readyz/drain", get(health::readyz_drain))
        .route("/metrics", get(health::metrics))
        .merge(v1::router(Arc::clone(&gateway)))
        .layer(axum::middleware::from_fn(correlation::correlate))
        .with_state(gateway)
}

#[derive(Debug, Deserialize)]
struct WsQuery {
    access_token: Option<String>,
}

/// The correlation id of a request: the client's `X-Correlation-ID` when it is a
/// sane token, else a new one.
pub fn correlation_id(headers: &HeaderMap) -> String {
    headers
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| random_id(""))
}

async fn ws_upgrade(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // The correlation middleware has put the request's id into the headers.
    let correlation_id = correlation_id(&headers);
    if gateway.is_draining() {
        return Problem::unavailable(
            "this instance is draining; connect to another one (the load balancer will)",
            std::time::Duration::from_secs(5),
        )
        .into_response();
    }
    if gateway.calls.registry().at_capacity() {
        return Problem::unavailable(
            format!(
                "this instance is at capacity (server.max_calls = {}); try another one",
                gateway.config.server.max_calls
            ),
            std::time::Duration::from_secs(5),
        )
        .into_response();
    }
    if let Err(wait) = gateway.limits.ws.check(&peer.ip()) {
        gateway
            .metrics
            .rate_limited_total
            .with_label_values(&["ws"])
            .inc();
        tracing::info!(%peer, retry_after_ms = wait.millis(), "WebSocket upgrade rate limit");
        return Problem::too_many_requests(
            format!(
                "too many WebSocket connections per second from {} (ratelimit.ws_per_ip_per_sec); retry after {} ms",
                peer.ip(),
                wait.millis()
            ),
            wait,
        )
        .into_response();
    }
    let limits = &gateway.config.limits;
    let Some(permit) = gateway
        .sessions
        .try_open(peer.ip(), limits.max_sessions_per_ip)
    else {
        tracing::info!(%peer, "too many sessions from this address");
        return Problem::too_many_requests(
            format!(
                "too many WebSocket sessions from {} (limits.max_sessions_per_ip = {}); close one first",
                peer.ip(),
                limits.max_sessions_per_ip
            ),
            ratelimit::RetryAfter(std::time::Duration::from_secs(5)),
        )
        .into_response();
    };
    // Hard cap above the protocol limits, so an oversized message gets a protocol
    // `error` from the session instead of a dropped connection, while a socket's
    // memory stays bounded (larger frames are refused from their header: 1009).
    let hard_cap = limits.ws_hard_cap();
    let upgrade = Upgrade {
        query_token: query.access_token.map(Into::into),
        correlation_id: correlation_id.clone(),
        peer,
    };
    let mut response = ws
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(hard_cap)
        .max_frame_size(hard_cap)
        .on_upgrade(move |socket| session::run(socket, gateway, upgrade, permit));
    if let Ok(v) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert(CORRELATION_HEADER, v);
    }
    response
}
