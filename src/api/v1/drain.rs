//! `POST /v1/drain` starts a drain (scope `admin`): `/readyz` turns 503, new
//! sessions and calls are refused with `unavailable`, calls in progress continue
//! until they end or the drain timeout passes; then the process exits 0.
//! `GET /v1/drain` shows the state.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{authorize, json, parse_json_body};
use crate::api::problem::Problem;
use crate::auth::Scope;
use crate::events::record::{millis, rfc3339};
use crate::server::Gateway;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainRequest {
    /// Overrides `drain.timeout`, e.g. "30s".
    timeout: Option<String>,
}

fn state(gateway: &Gateway) -> Value {
    let info = gateway.drain.info();
    json!({
        "draining": info.is_some() || gateway.shutdown.is_cancelled(),
        "active_calls": gateway.calls.registry().active(),
        "started_at": info.map(|i| rfc3339(i.started_at)),
        "deadline": info.map(|i| rfc3339(i.deadline)),
    })
}

/// Starts draining.
pub async fn start(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Problem> {
    let admin = authorize(&gateway, &headers, Scope::Admin)?;
    let request: Option<DrainRequest> = parse_json_body(&headers, &body)?;
    let timeout = match request.and_then(|r| r.timeout) {
        None => gateway.config.drain.timeout,
        Some(text) => match humantime::parse_duration(&text) {
            Ok(d) if d > Duration::ZERO && d <= Duration::from_secs(24 * 3600) => d,
            Ok(_) => {
                return Err(Problem::unprocessable(vec![(
                    "timeout",
                    "must be more than 0s and at most 24h".into(),
                )]));
            }
            Err(e) => {
                return Err(Problem::unprocessable(vec![(
                    "timeout",
                    format!("`{text}` is not a duration ({e}), e.g. \"90s\""),
                )]));
            }
        },
    };
    if !gateway.drain.start(timeout) || gateway.shutdown.is_cancelled() {
        return Err(Problem::conflict(
            "the gateway is already draining; watch GET /v1/drain or /readyz",
        ));
    }
    tracing::warn!(by = %admin.user, timeout_ms = millis(timeout), "drain started through the API");
    Ok(json(StatusCode::ACCEPTED, &state(&gateway)))
}

/// The drain state.
pub async fn status(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    authorize(&gateway, &headers, Scope::Admin)?;
    Ok(json(StatusCode::OK, &state(&gateway)))
}
