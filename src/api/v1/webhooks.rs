//! `GET /v1/webhooks/deliveries?event_id=&limit=`: the delivery log (every attempt
//! with its status and error; for a pending row, when the next attempt is due).
//! `POST /v1/webhooks/test`: queues a `webhook.test` event for every endpoint.
//! Scope `admin`.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{authorize, json, parse_query};
use crate::api::correlation::CorrelationId;
use crate::api::problem::Problem;
use crate::auth::Scope;
use crate::server::Gateway;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    event_id: Option<String>,
    limit: Option<u32>,
}

/// The delivery log of one event, or the latest attempts of all.
pub async fn deliveries(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, Problem> {
    authorize(&gateway, &headers, Scope::Admin)?;
    let q: LogQuery = parse_query(&uri)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::unprocessable(vec![(
            "limit",
            "must be between 1 and 1000".into(),
        )]));
    }
    let store = gateway.events.store();
    if let Some(id) = q.event_id.as_deref()
        && !store.event_exists(id).await.map_err(Problem::internal)?
    {
        return Err(Problem::not_found(format!(
            "no event `{id}` (unknown, or pruned after webhooks.log_retention)"
        )));
    }
    let attempts = store
        .attempts(q.event_id.as_deref(), limit)
        .await
        .map_err(Problem::internal)?;
    Ok(json(
        StatusCode::OK,
        &json!({"event_id": q.event_id, "attempts": attempts}),
    ))
}

/// Queues a test event for every endpoint.
pub async fn test(
    State(gateway): State<Arc<Gateway>>,
    Extension(correlation): Extension<CorrelationId>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    authorize(&gateway, &headers, Scope::Admin)?;
    if gateway.config.webhooks.endpoints.is_empty() {
        return Err(Problem::conflict(
            "no webhook endpoints are configured; add [[webhooks.endpoints]] first",
        ));
    }
    let id = gateway
        .events
        .test_event(&correlation.0)
        .map_err(Problem::internal)?;
    Ok(json(StatusCode::ACCEPTED, &json!({"event_id": id})))
}
