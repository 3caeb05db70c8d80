//! `GET /v1/cdrs?from=&to=&user=&cursor=&limit=` (paged, oldest first) and
//! `GET /v1/cdrs/{id}` (scope `admin`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::time::parse_rfc3339_ms;
use super::{authorize, json, parse_query};
use crate::api::problem::Problem;
use crate::auth::Scope;
use crate::events::store::{CdrQuery, Cursor};
use crate::server::Gateway;

/// Page size when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;
/// Largest page.
const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    from: Option<String>,
    to: Option<String>,
    user: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

fn parse_time(field: &'static str, text: &str, errors: &mut Vec<(&str, String)>) -> Option<i64> {
    let parsed = parse_rfc3339_ms(text);
    if parsed.is_none() {
        errors.push((
            field,
            format!("`{text}` is not an RFC 3339 time, e.g. 2026-01-31T00:00:00Z"),
        ));
    }
    parsed
}

/// Call records whose call started in `[from, to)`, optionally of one user (an
/// empty interval, `to` ≤ `from`, gives an empty page).
pub async fn list(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, Problem> {
    authorize(&gateway, &headers, Scope::Admin)?;
    let q: ListQuery = parse_query(&uri)?;
    let after = match q.cursor.as_deref() {
        Some(token) => Some(Cursor::decode(token).ok_or_else(|| {
            Problem::bad_request(
                "malformed cursor; pass the next_cursor of the previous page as is",
            )
        })?),
        None => None,
    };
    let mut errors = Vec::new();
    let from_ms = q
        .from
        .as_deref()
        .and_then(|t| parse_time("from", t, &mut errors));
    let to_ms =
        q.to.as_deref()
            .and_then(|t| parse_time("to", t, &mut errors));
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        errors.push(("limit", format!("must be between 1 and {MAX_LIMIT}")));
    }
    if q.user.as_deref().is_some_and(str::is_empty) {
        errors.push(("user", "must not be empty".into()));
    }
    if !errors.is_empty() {
        return Err(Problem::unprocessable(errors));
    }
    let query = CdrQuery {
        from_ms,
        to_ms,
        user: q.user,
        after,
        limit,
    };
    let page = gateway
        .events
        .store()
        .cdrs(&query)
        .await
        .map_err(Problem::internal)?;
    Ok(json(
        StatusCode::OK,
        &json!({
            "items": page.items,
            "next_cursor": page.next.map(|c| c.encode()),
        }),
    ))
}

/// One call record.
pub async fn get(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    authorize(&gateway, &headers, Scope::Admin)?;
    let record = gateway
        .events
        .store()
        .cdr(&id)
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| {
            Problem::not_found(format!(
                "no call record `{id}`; records are written when a call ends"
            ))
        })?;
    Ok(json(StatusCode::OK, &record))
}
