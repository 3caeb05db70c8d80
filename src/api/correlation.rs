//! The correlation middleware, outermost on the router: picks the request's
//! correlation id (the client's `X-Correlation-ID` when sane, else a new one),
//! writes it back into the request headers (so the `/ws` upgrade and the session see
//! the same id), runs the request inside a `http` span carrying it, echoes it on the
//! response, and renders error bodies of `/v1` and `/ws` as problem+json with it.

use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::{Instrument, debug, info, info_span};

use super::problem::{PROBLEM_JSON, Problem};
use super::{CORRELATION_HEADER, correlation_id};

/// The correlation id of the request being served (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(pub String);

/// Paths whose error responses are problem+json.
fn wants_problems(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/") || path == "/ws"
}

/// The middleware (see the module doc).
pub async fn correlate(mut request: Request, next: Next) -> Response {
    let id = correlation_id(request.headers());
    let header_value = HeaderValue::from_str(&id).ok();
    if let Some(v) = &header_value {
        request.headers_mut().insert(CORRELATION_HEADER, v.clone());
    }
    request.extensions_mut().insert(CorrelationId(id.clone()));
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let span = info_span!("http", %method, %path, correlation_id = %id);
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;

    let problem = response.extensions_mut().remove::<Problem>();
    let status = response.status();
    let is_problem_body = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    let problem = match problem {
        Some(p) => Some(p),
        None if status.is_client_error() || status.is_server_error() => {
            (wants_problems(&path) && !is_problem_body).then(|| Problem::from_status(status))
        }
        None => None,
    };
    if let Some(problem) = problem {
        let body = problem.body(&path, &id).to_string();
        *response.body_mut() = Body::from(body);
        let headers = response.headers_mut();
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in &problem.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
    if let Some(v) = header_value {
        response.headers_mut().insert(CORRELATION_HEADER, v);
    }
    let status = response.status().as_u16();
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    span.in_scope(|| {
        // Probes and scrapes come every few seconds: keep them out of `info`.
        if wants_problems(&path) {
            info!(status, elapsed_ms, "request");
        } else {
            debug!(status, elapsed_ms, "request");
        }
    });
    response
}
