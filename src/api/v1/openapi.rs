//! `GET /v1/openapi.json`: the OpenAPI 3.0 description of `/v1` (no token needed).
//! Written by hand next to the handlers; `tests/api_openapi.rs` checks that every
//! route is described and schemathesis can run against it.

use axum::Json;
use serde_json::{Value, json};

use crate::events::store::Cursor;

/// Serves the document.
pub async fn document() -> Json<Value> {
    Json(spec())
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "headers": {"X-Correlation-ID": {"$ref": "#/components/headers/CorrelationId"}},
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

fn ok(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "headers": {"X-Correlation-ID": {"$ref": "#/components/headers/CorrelationId"}},
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
    })
}

/// The error responses every authenticated operation can give.
fn errors(extra: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    for (code, text) in [
        ("401", "missing, malformed or expired bearer token"),
        ("403", "the token lacks the required scope"),
        ("429", "rate limited (per client IP); see Retry-After"),
    ]
    .iter()
    .chain(extra)
    {
        let mut p = problem(text);
        if *code == "429" {
            p["headers"]["Retry-After"] = json!({"schema": {"type": "integer"}});
        }
        map.insert((*code).to_string(), p);
    }
    map
}

fn operation(
    summary: &str,
    scope: &str,
    params: Value,
    success: (&str, Value),
    extra_errors: &[(&str, &str)],
) -> Value {
    let mut responses = errors(extra_errors);
    responses.insert(success.0.to_string(), success.1);
    json!({
        "summary": summary,
        "description": if scope == "admin" {
            "Requires an operator token: a bearer JWT whose `aud` is `auth.admin_audience` (default `callbridge-admin`) with scope `admin`. Browser tokens are refused (401) whatever their scopes.".to_string()
        } else {
            format!("Requires a bearer JWT with scope `{scope}`.")
        },
        "security": [{"bearer": []}],
        "x-required-scope": scope,
        "parameters": params,
        "responses": responses,
    })
}

fn id_param(what: &str) -> Value {
    json!({"name": "id", "in": "path", "required": true, "description": what,
           "schema": {"type": "string", "minLength": 1}})
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

/// The OpenAPI document.
pub fn spec() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "callbridge operator API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Active calls, call records, recordings, webhook delivery log and drain of one callbridge instance. Served on the admin listener (`admin.listen`, default 127.0.0.1:8081); the public listener answers 404 for everything here except `GET /v1/recordings/{id}`. Operations with scope `admin` need an operator token (`aud` = `auth.admin_audience`). Errors are application/problem+json (RFC 9457) with the request's correlation id; every response echoes X-Correlation-ID."
        },
        "paths": paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "headers": {"CorrelationId": {"description": "the request's correlation id (echoed or generated)",
                "schema": {"type": "string"}}},
            "schemas": schemas(),
        }
    })
}

fn recording_responses() -> Value {
    let binary = json!({"schema": {"type": "string", "format": "binary"}});
    let content = json!({"audio/wav": binary, "application/octet-stream": binary});
    let mut r = errors(&[
        (
            "404",
            "no such recording (or not one of the token user's calls)",
        ),
        ("416", "range not satisfiable"),
    ]);
    r.insert(
        "200".into(),
        json!({"description": "the whole file", "content": content}),
    );
    r.insert(
        "206".into(),
        json!({"description": "one byte range",
               "headers": {"Content-Range": {"schema": {"type": "string"}}},
               "content": content}),
    );
    Value::Object(r)
}

fn drain_responses() -> Value {
    let mut r = errors(&[
        ("400", "body is not JSON"),
        ("409", "already draining"),
        ("413", "body too large"),
        ("415", "body is not application/json"),
        ("422", "invalid timeout"),
    ]);
    r.insert("202".into(), ok("drain started", "DrainState"));
    Value::Object(r)
}

fn paths() -> Value {
    json!({
        "/v1/calls": {"get": operation(
            "Active calls on this instance, oldest first", "admin",
            json!([query("user", "only this user's calls", json!({"type": "string"}))]),
            ("200", ok("active calls", "CallList")),
            &[("400", "malformed query string")])},
        "/v1/calls/{id}": {
            "get": operation("One active call", "admin", json!([id_param("gateway call id (c-…)")]),
                ("200", ok("the call", "Call")), &[("404", "no such active call")]),
            "delete": operation("Hang an active call up", "admin", json!([id_param("gateway call id (c-…)")]),
                ("202", ok("hangup requested", "HangupAccepted")), &[("404", "no such active call")])
        },
        "/v1/cdrs": {"get": operation(
            "Call records, oldest first, paged", "admin",
            json!([
                query("from", "calls started at or after (RFC 3339)", json!({"type": "string", "format": "date-time"})),
                query("to", "calls started before (RFC 3339)", json!({"type": "string", "format": "date-time"})),
                query("user", "only this user's calls", json!({"type": "string", "minLength": 1})),
                query("cursor", "next_cursor of the previous page", json!({"type": "string", "pattern": Cursor::PATTERN})),
                query("limit", "page size (default 100)", json!({"type": "integer", "minimum": 1, "maximum": 1000}))
            ]),
            ("200", ok("a page of records", "CdrPage")),
            &[("400", "malformed query string or cursor"), ("422", "invalid from/to/limit")])},
        "/v1/cdrs/{id}": {"get": operation("One call record", "admin", json!([id_param("gateway call id")]),
            ("200", ok("the record", "CallRecord")), &[("404", "no such record")])},
        "/v1/recordings/{id}": {"get": {
            "summary": "Download a recording (whole, or one byte range)",
            "description": "Requires a bearer JWT with scope `recordings:read` (a user's token: the recordings of its own calls; any other answers 404) or an operator token (`aud` = `auth.admin_audience`) with `admin` (every recording). Served on the public listener too, for users. Supports `Range: bytes=…` (206 with Content-Range; 416 when the range starts past the end).",
            "security": [{"bearer": []}],
            "x-required-scope": "recordings:read",
            "parameters": [id_param("recording id (the call's id)"),
                {"name": "Range", "in": "header", "required": false, "schema": {"type": "string"}}],
            "responses": recording_responses()
        }},
        "/v1/drain": {
            "get": operation("Drain state", "admin", json!([]), ("200", ok("drain state", "DrainState")), &[]),
            "post": {
                "summary": "Start draining: /readyz 503, new sessions and calls refused, exit 0 when calls end or at the timeout",
                "description": "Requires an operator token (`aud` = `auth.admin_audience`) with scope `admin`. The body is optional.",
                "security": [{"bearer": []}],
                "x-required-scope": "admin",
                "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DrainRequest"}}}},
                "responses": drain_responses()
            }
        },
        "/v1/webhooks/deliveries": {"get": operation(
            "Webhook delivery log: every attempt of one event, or the latest attempts", "admin",
            json!([query("event_id", "the event's id (ev-…)", json!({"type": "string"})),
                   query("limit", "entries (default 100)", json!({"type": "integer", "minimum": 1, "maximum": 1000}))]),
            ("200", ok("attempts", "DeliveryLog")),
            &[("400", "malformed query string"), ("404", "unknown event"), ("422", "invalid limit")])},
        "/v1/webhooks/test": {"post": operation(
            "Queue a webhook.test event for every endpoint", "admin", json!([]),
            ("202", ok("queued", "TestEvent")), &[("409", "no endpoints configured")])},
        "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3 document",
            "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    })
}

fn schemas() -> Value {
    let nullable_string = json!({"type": "string", "nullable": true});
    let time = json!({"type": "string", "format": "date-time"});
    let nullable_time = json!({"type": "string", "format": "date-time", "nullable": true});
    json!({
        "Problem": {"type": "object", "required": ["type", "title", "status", "detail", "correlation_id"],
            "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                "detail": {"type": "string"}, "instance": {"type": "string"}, "correlation_id": {"type": "string"},
                "retry_after_ms": {"type": "integer"},
                "errors": {"type": "array", "items": {"type": "object", "properties": {
                    "field": {"type": "string"}, "message": {"type": "string"}}}}}},
        "Call": {"type": "object", "required": ["id", "call_id", "session_id", "user", "direction", "from", "to", "state", "correlation_id", "started_at"],
            "properties": {"id": {"type": "string"}, "call_id": {"type": "string"}, "session_id": {"type": "string"},
                "user": {"type": "string"}, "direction": {"type": "string", "enum": ["outbound", "inbound"]},
                "from": {"type": "string"}, "to": {"type": "string"}, "trunk": nullable_string,
                "state": {"type": "string", "enum": ["dialing", "ringing", "answered"]},
                "correlation_id": {"type": "string"}, "sip_call_id": nullable_string,
                "started_at": time, "answered_at": nullable_time}},
        "CallList": {"type": "object", "required": ["calls", "active", "capacity"], "properties": {
            "calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}},
            "active": {"type": "integer"}, "capacity": {"type": "integer"}}},
        "HangupAccepted": {"type": "object", "properties": {"id": {"type": "string"}, "status": {"type": "string"}}},
        "CallRecord": {"type": "object", "required": ["id", "user", "direction", "from", "to", "started_at", "ended_at", "duration_ms", "end_reason"],
            "properties": {"id": {"type": "string"}, "call_id": {"type": "string"}, "session_id": {"type": "string"},
                "correlation_id": {"type": "string"}, "sip_call_id": nullable_string, "user": {"type": "string"},
                "direction": {"type": "string", "enum": ["outbound", "inbound"]}, "from": {"type": "string"},
                "to": {"type": "string"}, "trunk": nullable_string, "started_at": time, "ringing_at": nullable_time,
                "answered_at": nullable_time, "ended_at": time, "duration_ms": {"type": "integer"},
                "sip_status": {"type": "integer", "nullable": true}, "end_reason": {"type": "string"},
                "mode": {"type": "string", "enum": ["relay", "transcode"], "nullable": true},
                "browser_codec": nullable_string, "sip_codec": nullable_string,
                "mos": {"type": "number", "nullable": true}, "jitter_ms": {"type": "number", "nullable": true},
                "loss_pct": {"type": "number", "nullable": true}, "rtt_ms": {"type": "number", "nullable": true},
                "recording_path": nullable_string, "recording_bytes": {"type": "integer", "nullable": true},
                "recording_duration_ms": {"type": "integer", "nullable": true},
                "recording_skipped": {"type": "string", "enum": ["quota", "error"], "nullable": true,
                    "description": "why a call that should have been recorded was not: the recording disk quota was full, or the file could not be written"}}},
        "CdrPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/CallRecord"}},
            "next_cursor": nullable_string}},
        "DrainRequest": {"type": "object", "additionalProperties": false, "properties": {
            "timeout": {"type": "string", "description": "e.g. \"90s\"; default drain.timeout"}}},
        "DrainState": {"type": "object", "required": ["draining", "active_calls"], "properties": {
            "draining": {"type": "boolean"}, "active_calls": {"type": "integer"},
            "started_at": nullable_time, "deadline": nullable_time}},
        "Attempt": {"type": "object", "properties": {"event_id": {"type": "string"}, "endpoint": {"type": "string"},
            "attempt": {"type": "integer"}, "attempted_at": time, "duration_ms": {"type": "integer"},
            "status": {"type": "integer", "nullable": true},
            "outcome": {"type": "string", "enum": ["delivered", "failed", "dead"]},
            "error": nullable_string, "next_attempt_at": time}},
        "DeliveryLog": {"type": "object", "required": ["attempts"], "properties": {
            "event_id": nullable_string,
            "attempts": {"type": "array", "items": {"$ref": "#/components/schemas/Attempt"}}}},
        "TestEvent": {"type": "object", "properties": {"event_id": {"type": "string"}}}
    })
}
