//! The operator API under `/v1` (described by `/v1/openapi.json`): active calls,
//! call records, recordings, webhook delivery log, drain.
//!
//! Every handler authorizes first (401 before any validation error), then parses
//! its query or body (400 malformed, 415 wrong `Content-Type`, 422 invalid), then
//! acts. Errors are [`Problem`]s; the correlation middleware adds the correlation
//! id. The per-IP rate limit applies to everything here except the OpenAPI document.

mod calls;
mod cdrs;
mod drain;
pub mod openapi;
pub mod range;
mod recordings;
pub mod time;
mod webhooks;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use super::problem::Problem;
use crate::auth::{Identity, Scope};
use crate::server::Gateway;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The `/v1` routes of the public listener when the admin listener runs: only
/// `GET /v1/recordings/{id}` (a user's token fetches its recordings); everything
/// else under `/v1` is 404 there.
pub fn public_router(gateway: Arc<Gateway>) -> Router<Arc<Gateway>> {
    Router::new()
        .route("/v1/recordings/{id}", get(recordings::download))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            gateway,
            super::ratelimit::per_ip_http,
        ))
}

/// The `/v1` routes (without the `/v1` prefix applied: paths are absolute).
pub fn router(gateway: Arc<Gateway>) -> Router<Arc<Gateway>> {
    let limited = Router::new()
        .route("/v1/calls", get(calls::list))
        .route("/v1/calls/{id}", get(calls::get).delete(calls::hangup))
        .route("/v1/cdrs", get(cdrs::list))
        .route("/v1/cdrs/{id}", get(cdrs::get))
        .route("/v1/recordings/{id}", get(recordings::download))
        .route("/v1/drain", post(drain::start).get(drain::status))
        .route("/v1/webhooks/deliveries", get(webhooks::deliveries))
        .route("/v1/webhooks/test", post(webhooks::test))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            gateway,
            super::ratelimit::per_ip_http,
        ));
    Router::new()
        .route("/v1/openapi.json", get(openapi::document))
        .merge(limited)
}

async fn not_found(uri: Uri) -> Problem {
    Problem::not_found(format!(
        "no resource at {}; the API is described at /v1/openapi.json",
        uri.path()
    ))
}

/// Checks the bearer token and that it carries `scope`. The `admin` scope needs an
/// operator token (`aud` = `auth.admin_audience`); other scopes accept a browser
/// token too (an operator token keeps `admin`, a browser token never has it).
pub fn authorize(
    gateway: &Gateway,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<Identity, Problem> {
    let accept = match scope {
        Scope::Admin => Accept::Operator,
        _ => Accept::Any,
    };
    let identity = verify_bearer(gateway, headers, accept)?;
    if !identity.has(scope) {
        return Err(missing_scope(&identity, scope));
    }
    Ok(identity)
}

/// Who made a request, once its token is verified: the operator, or a user who
/// only sees what is theirs.
#[derive(Debug, Clone)]
pub enum Principal {
    /// An operator token (`aud` = `auth.admin_audience`) with the `admin` scope:
    /// sees everything.
    Operator(Identity),
    /// A user's token with the resource's scope: sees its own.
    User(Identity),
}

impl Principal {
    /// The identity behind the request.
    pub fn identity(&self) -> &Identity {
        match self {
            Principal::Operator(i) | Principal::User(i) => i,
        }
    }

    /// Whether `owner` (a resource's user, `None` when unknown) may be shown to
    /// this principal: the operator sees all, a user only its own.
    pub fn may_see(&self, owner: Option<&str>) -> bool {
        match self {
            Principal::Operator(_) => true,
            Principal::User(i) => owner == Some(i.user.as_str()),
        }
    }
}

/// Checks the bearer token: the operator (an operator token with the `admin`
/// scope) or a user holding `user_scope`; 403 for anyone else. A browser token
/// never has `admin` (see [`crate::auth::Verifier::verify_any`]).
pub fn principal(
    gateway: &Gateway,
    headers: &HeaderMap,
    user_scope: Scope,
) -> Result<Principal, Problem> {
    let identity = verify_bearer(gateway, headers, Accept::Any)?;
    if identity.has(Scope::Admin) {
        Ok(Principal::Operator(identity))
    } else if identity.has(user_scope) {
        Ok(Principal::User(identity))
    } else {
        Err(missing_scope(&identity, user_scope))
    }
}

/// 403 for a token without `scope` (logged without the token).
fn missing_scope(identity: &Identity, scope: Scope) -> Problem {
    tracing::info!(user = %identity.user, scope = scope.as_str(), "API request without the needed scope");
    Problem::forbidden(format!(
        "token lacks scope `{}`; ask for a token with it",
        scope.as_str()
    ))
}

/// Which tokens a request accepts.
#[derive(Debug, Clone, Copy)]
enum Accept {
    /// Operator tokens only (`aud` = `auth.admin_audience`).
    Operator,
    /// Browser or operator tokens (`admin` kept only in operator tokens).
    Any,
}

/// Verifies the `Authorization: Bearer` token (401 when missing or invalid).
fn verify_bearer(
    gateway: &Gateway,
    headers: &HeaderMap,
    accept: Accept,
) -> Result<Identity, Problem> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Problem::unauthorized(
            "missing Authorization header; send `Authorization: Bearer <JWT>`",
            false,
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Problem::unauthorized(
                "Authorization is not a bearer token; send `Authorization: Bearer <JWT>`",
                true,
            )
        })?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let verified = match accept {
        Accept::Operator => gateway.verifier.verify_operator(token, now),
        Accept::Any => gateway.verifier.verify_any(token, now),
    };
    verified.map_err(|e| Problem::unauthorized(e.to_string(), true))
}

/// Parses the query string into `T` (400 when it does not fit).
pub fn parse_query<T: DeserializeOwned>(uri: &Uri) -> Result<T, Problem> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| Problem::bad_request(format!("malformed query string: {}", e.body_text())))
}

/// Parses an optional JSON body: empty is `None`; a body needs `Content-Type:
/// application/json` (415), must be JSON (400) and fit `T` (422).
pub fn parse_json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<T>, Problem> {
    if body.is_empty() {
        return Ok(None);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(Problem::unsupported_media_type(format!(
            "body has Content-Type `{content_type}`; send application/json"
        )));
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            Problem::unprocessable(vec![("body", e.to_string())])
        } else {
            Problem::bad_request(format!("body is not valid JSON: {e}"))
        }
    })
}

/// A JSON response with `status`.
pub fn json(status: axum::http::StatusCode, value: &impl serde::Serialize) -> Response {
    (status, axum::Json(value)).into_response()
}
