//! `/demo/`: the demo page and JavaScript client from `demo.dir`, and — on local
//! setups only (`demo.dev_tokens`) — `/demo/dev-token`, a short-lived token for user
//! `dev` so a newcomer can place a first call without an auth service.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::services::ServeDir;

use crate::auth::{Claims, claims_audience, mint_hs256};
use crate::config::DemoConfig;
use crate::server::Gateway;

/// Lifetime of a dev token.
const DEV_TOKEN_SECS: u64 = 3600;

/// The `/demo` routes, or none when the demo is disabled.
pub fn routes(demo: &DemoConfig) -> Router<Arc<Gateway>> {
    if !demo.enabled {
        return Router::new();
    }
    let mut router = Router::new().nest_service(
        "/demo",
        ServeDir::new(&demo.dir).append_index_html_on_directories(true),
    );
    if demo.dev_tokens {
        router = router.route("/demo/dev-token", get(dev_token));
    }
    router
}

async fn dev_token(State(gateway): State<Arc<Gateway>>) -> Response {
    let auth = &gateway.config.auth;
    if auth.hs256_secret.is_empty() {
        return (StatusCode::NOT_FOUND, "no HS256 secret configured\n").into_response();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = Claims {
        sub: "dev".into(),
        exp: now + DEV_TOKEN_SECS,
        nbf: None,
        iat: Some(now),
        aud: Some(claims_audience(&auth.audience)),
        iss: (!auth.issuer.is_empty()).then(|| auth.issuer.clone()),
        scope: "calls:outbound calls:inbound".into(),
        caller_id: None,
        dids: vec!["+15550001000".into()],
        max_calls: None,
        record: None,
    };
    match mint_hs256(&auth.hs256_secret, &claims) {
        Ok(token) => axum::Json(
            serde_json::json!({ "token": token, "user": "dev", "expires_in": DEV_TOKEN_SECS }),
        )
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
