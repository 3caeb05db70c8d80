//! `/healthz` (liveness), `/readyz` (the load balancer's readiness: draining or full),
//! `/readyz/drain` (an orchestrator's readiness: draining only) and `/metrics`.
//!
//! `/healthz` says only `ok` or `draining` to anyone; its detail (active calls,
//! trunk health with the trunks' addresses in error texts) is for operators: on the
//! admin listener, or with an operator token (`auth.admin_audience`) on the public
//! one. `/metrics` is served without a token on the admin listener only; with no
//! admin listener it moves to the public listener behind an operator token.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::problem::Problem;
use super::v1::authorize;
use crate::auth::Scope;
use crate::server::Gateway;

/// Public `/healthz`: `{"status":"ok"|"draining"}`, the detail with an operator
/// token. Always 200 while the process runs (a liveness probe must not fail on a
/// bad token).
pub async fn healthz_public(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let operator = headers.contains_key(header::AUTHORIZATION)
        && authorize(&gateway, &headers, Scope::Admin).is_ok();
    if operator {
        return healthz_detail(State(gateway)).await;
    }
    let status = if gateway.is_draining() {
        "draining"
    } else {
        "ok"
    };
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "status": status })),
    )
        .into_response()
}

/// Admin `/healthz`: liveness with detail (active calls, trunks' health and
/// registration state).
pub async fn healthz_detail(State(gateway): State<Arc<Gateway>>) -> Response {
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
    let draining = gateway.is_draining();
    let body = serde_json::json!({
        "status": if draining { "draining" } else { "ok" },
        "active_calls": gateway.calls.registry().active(),
        "draining": draining,
        "trunks": trunks,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// `/readyz/drain`: 503 only while draining, the readiness probe of an orchestrator
/// that removes not-ready instances first on scale-in (Kubernetes): gating on capacity
/// there would make scale-in stop the fullest instances.
pub async fn readyz_drain(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    if gateway.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// `/readyz`: 503 while draining or at capacity (the load balancer's health check).
pub async fn readyz(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    if gateway.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if gateway.calls.registry().at_capacity() {
        (StatusCode::SERVICE_UNAVAILABLE, "at capacity\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

/// `/metrics` on the public listener when there is no admin listener: operator
/// token required.
pub async fn metrics_with_token(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    authorize(&gateway, &headers, Scope::Admin)?;
    Ok(metrics(State(gateway)).await)
}

/// `/metrics` (Prometheus text) on the admin listener.
pub async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response {
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
        .into_response()
}
