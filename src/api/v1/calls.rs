//! `GET /v1/calls`, `GET /v1/calls/{id}`, `DELETE /v1/calls/{id}` (scope `admin`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::{authorize, json, parse_query};
use crate::api::problem::Problem;
use crate::auth::Scope;
use crate::server::Gateway;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    user: Option<String>,
}

/// Active calls of this instance, oldest first (optionally of one user).
pub async fn list(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, Problem> {
    authorize(&gateway, &headers, Scope::Admin)?;
    let query: ListQuery = parse_query(&uri)?;
    let calls: Vec<_> = gateway
        .calls
        .registry()
        .list()
        .into_iter()
        .filter(|c| query.user.as_deref().is_none_or(|u| c.user == u))
        .collect();
    let registry = gateway.calls.registry();
    Ok(json(
        StatusCode::OK,
        &json!({
            "calls": calls,
            "active": registry.active(),
            "capacity": gateway.config.server.max_calls,
        }),
    ))
}

/// One active call.
pub async fn get(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    authorize(&gateway, &headers, Scope::Admin)?;
    let call = gateway
        .calls
        .registry()
        .get(&id)
        .ok_or_else(|| no_call(&id))?;
    Ok(json(StatusCode::OK, &call))
}

/// Hangs an active call up (BYE or CANCEL toward the trunk, `ended` to the browser).
pub async fn hangup(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let admin = authorize(&gateway, &headers, Scope::Admin)?;
    if !gateway.calls.registry().hangup(&id) {
        return Err(no_call(&id));
    }
    tracing::info!(call = %id, by = %admin.user, "call hung up through the API");
    Ok(json(
        StatusCode::ACCEPTED,
        &json!({"id": id, "status": "hanging_up"}),
    ))
}

fn no_call(id: &str) -> Problem {
    Problem::not_found(format!(
        "no active call `{id}` on this instance; finished calls are under /v1/cdrs/{id}"
    ))
}
