//! `application/problem+json` (RFC 9457) error bodies. Handlers return a
//! [`Problem`]; the correlation middleware ([`super::correlation`]) renders it with
//! the request's correlation id and path, and turns any other error response of
//! `/v1` and `/ws` (axum's 405, 413, …) into a problem too.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ratelimit::RetryAfter;

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One error response.
#[derive(Debug, Clone)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Short machine-friendly kind, e.g. `rate-limited` (in the `type` URI).
    pub kind: &'static str,
    /// What was wrong and what to do.
    pub detail: String,
    /// Extra headers (`Allow`, `Retry-After`, `WWW-Authenticate`, `Content-Range`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Extra members of the body (`retry_after_ms`, `errors`).
    pub extra: Vec<(&'static str, Value)>,
}

impl Problem {
    /// A problem with `status`, `kind` and `detail`.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            kind,
            detail: detail.into(),
            headers: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: HeaderName, value: &str) -> Problem {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// Adds a body member.
    pub fn with(mut self, key: &'static str, value: Value) -> Problem {
        self.extra.push((key, value));
        self
    }

    /// 400: the request could not be parsed.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", detail)
    }

    /// 401 with a `WWW-Authenticate: Bearer` challenge.
    pub fn unauthorized(detail: impl Into<String>, invalid_token: bool) -> Problem {
        let challenge = if invalid_token {
            r#"Bearer realm="callbridge", error="invalid_token""#
        } else {
            r#"Bearer realm="callbridge""#
        };
        Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
            .with_header(header::WWW_AUTHENTICATE, challenge)
    }

    /// 403: the token lacks a scope.
    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", detail).with_header(
            header::WWW_AUTHENTICATE,
            r#"Bearer realm="callbridge", error="insufficient_scope""#,
        )
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, "conflict", detail)
    }

    /// 415: the body's `Content-Type` is not accepted.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            detail,
        )
        .with_header(header::ACCEPT, "application/json")
    }

    /// 422 with one `errors` entry per invalid field.
    pub fn unprocessable(errors: Vec<(&str, String)>) -> Problem {
        let detail = errors
            .iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect::<Vec<_>>()
            .join("; ");
        let list: Vec<Value> = errors
            .iter()
            .map(|(field, message)| json!({"field": field, "message": message}))
            .collect();
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
            detail,
        )
        .with("errors", Value::Array(list))
    }

    /// 429 with `Retry-After` and `retry_after_ms`.
    pub fn too_many_requests(detail: impl Into<String>, wait: RetryAfter) -> Problem {
        Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", detail)
            .with_header(header::RETRY_AFTER, &wait.secs().to_string())
            .with("retry_after_ms", json!(wait.millis()))
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(detail: impl Into<String>, retry_after: Duration) -> Problem {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail).with_header(
            header::RETRY_AFTER,
            &retry_after.as_secs().max(1).to_string(),
        )
    }

    /// 500, for failures of the gateway itself (the detail is logged, not sent).
    pub fn internal(detail: impl std::fmt::Display) -> Problem {
        tracing::error!(error = %detail, "internal error answering a request");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; quote the correlation id when reporting it",
        )
    }

    /// A generic problem for an error status produced outside the handlers.
    pub fn from_status(status: StatusCode) -> Problem {
        let (kind, detail) = match status {
            StatusCode::NOT_FOUND => ("not-found", "no such resource; see /v1/openapi.json"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method-not-allowed",
                "method not allowed on this resource; see the Allow header",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "request body too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported-media-type",
                "send the body as application/json",
            ),
            StatusCode::BAD_REQUEST => ("bad-request", "the request could not be parsed"),
            StatusCode::UNPROCESSABLE_ENTITY => {
                ("validation-failed", "the request failed validation")
            }
            s if s.is_server_error() => ("internal", "internal error"),
            _ => ("error", "the request failed"),
        };
        Problem::new(status, kind, detail)
    }

    /// The JSON body for a request to `instance` with `correlation_id`.
    pub fn body(&self, instance: &str, correlation_id: &str) -> Value {
        let mut body = json!({
            "type": format!("urn:callbridge:problem:{}", self.kind),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "instance": instance,
            "correlation_id": correlation_id,
        });
        if let Value::Object(map) = &mut body {
            for (key, value) in &self.extra {
                map.insert((*key).to_string(), value.clone());
            }
        }
        body
    }

    /// The full response for a request to `instance` with `correlation_id`.
    pub fn render(&self, instance: &str, correlation_id: &str) -> Response {
        let mut response =
            Response::new(Body::from(self.body(instance, correlation_id).to_string()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        response
    }
}

impl IntoResponse for Problem {
    /// Renders without a correlation id; the middleware re-renders it with one.
    fn into_response(self) -> Response {
        let mut response = self.render("", "");
        response.extensions_mut().insert(self);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_rfc9457_members_and_extras() {
        let p = Problem::too_many_requests("slow down", RetryAfter(Duration::from_millis(1500)));
        let body = p.body("/v1/calls", "corr-1");
        assert_eq!(body["status"], 429);
        assert_eq!(body["type"], "urn:callbridge:problem:rate-limited");
        assert_eq!(body["title"], "Too Many Requests");
        assert_eq!(body["instance"], "/v1/calls");
        assert_eq!(body["correlation_id"], "corr-1");
        assert_eq!(body["retry_after_ms"], 1500);
        let r = p.render("/v1/calls", "corr-1");
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn unprocessable_lists_fields() {
        let p = Problem::unprocessable(vec![("limit", "must be 1..=1000".into())]);
        let body = p.body("/v1/cdrs", "c");
        assert_eq!(body["errors"][0]["field"], "limit");
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
