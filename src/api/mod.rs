//! HTTP surface on the main listener: the `/ws` upgrade, `/healthz`, `/readyz`,
//! `/metrics` and the operator API under `/v1` ([`v1`]).
//!
//! I/O contract: [`router`] builds an axum `Router`; the server serves it over
//! plain TCP or TLS ([`tls`]). Every request passes the correlation middleware
//! ([`correlation`]); `/v1` and `/ws` are rate limited per client IP
//! ([`ratelimit`]) and answer errors as problem+json ([`problem`]).

pub mod correlation;
pub mod demo;
pub mod problem;
pub mod ratelimit;
pub mod tls;
pub mod v1;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::server::Gateway;
use crate::signaling::random_id;
use crate::signaling::session::{self, Upgrade};
use problem::Problem;

/// Header carrying the correlation id of a request.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// Builds the router of the main listener.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(v1::router(Arc::clone(&gateway)))
        .merge(demo::routes(&gateway.config.demo))
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
        .max_message_size(hard_cap)
        .max_frame_size(hard_cap)
        .on_upgrade(move |socket| session::run(socket, gateway, upgrade, permit));
    if let Ok(v) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert(CORRELATION_HEADER, v);
    }
    response
}

/// Liveness, with detail: the trunks' health and registration state.
async fn healthz(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    let trunks: Vec<serde_json::Value> = gateway
        .sip
        .trunk_statuses()
        .into_iter()
        .map(|(name, s)| {
            serde_json::json!({
                "name": name,
                "reachable": s.reachable,
                "registered": s.registered,
                "detail": s.detail,
            })
        })
        .collect();
    let body = serde_json::json!({
        "status": "ok",
        "active_calls": gateway.calls.registry().active(),
        "draining": gateway.is_draining(),
        "trunks": trunks,
    });
    (StatusCode::OK, axum::Json(body))
}

async fn readyz(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    if gateway.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if gateway.calls.registry().at_capacity() {
        (StatusCode::SERVICE_UNAVAILABLE, "at capacity\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn metrics(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    let m = &gateway.metrics;
    if let Some(turn) = &gateway.turn {
        m.turn_allocations
            .set(i64::try_from(turn.allocations()).unwrap_or(i64::MAX));
        m.turn_relayed_bytes
            .set(i64::try_from(turn.relayed_bytes()).unwrap_or(i64::MAX));
    }
    for (name, status) in gateway.sip.trunk_statuses() {
        m.trunk_up
            .with_label_values(&[&name])
            .set(i64::from(status.reachable));
        if let Some(registered) = status.registered {
            m.trunk_registered
                .with_label_values(&[&name])
                .set(i64::from(registered));
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        gateway.metrics.render(),
    )
}
