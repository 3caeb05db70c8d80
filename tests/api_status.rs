//! The `/v1` API over real HTTP: each status code an API user expects, every error
//! as problem+json carrying the correlation id, which is echoed on every response.

mod common;

use std::time::Duration;

use common::gateway::{TestGateway, test_config, token};
use common::http::{admin_get, admin_post, bearer, operator_bearer, request};

#[tokio::test]
async fn auth_scopes_correlation_and_client_errors() {
    let mut config = test_config(None);
    config.storage.path = ":memory:".into();
    config.ratelimit.http_burst = 1000;
    let gw = TestGateway::start(config).await;
    let addr = gw.admin_addr();

    // 200, and the client's correlation id is echoed.
    let auth = operator_bearer("ops", "admin");
    let r = request(
        addr,
        "GET",
        "/v1/calls",
        &[
            ("authorization", &auth),
            ("x-correlation-id", "ticket-4711"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-correlation-id"), "ticket-4711");
    let body = r.json();
    assert_eq!(body["calls"].as_array().map(Vec::len), Some(0));
    assert_eq!(body["capacity"], 500);
    // A generated one when absent (or not a sane token).
    let r = request(
        addr,
        "GET",
        "/v1/calls",
        &[
            ("authorization", &auth),
            ("x-correlation-id", "bad id with spaces"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!r.header("x-correlation-id").is_empty());
    assert_ne!(r.header("x-correlation-id"), "bad id with spaces");

    // 401: missing, expired, not bearer, garbage; with a Bearer challenge.
    let r = request(
        addr,
        "GET",
        "/v1/calls",
        &[("x-correlation-id", "c-401")],
        b"",
    )
    .await;
    let p = r.problem(401);
    assert_eq!(p["correlation_id"], "c-401");
    assert!(r.header("www-authenticate").starts_with("Bearer"));
    let expired = format!("Bearer {}", token("ops", "admin", -3600));
    let p = request(
        addr,
        "GET",
        "/v1/calls",
        &[("authorization", &expired)],
        b"",
    )
    .await
    .problem(401);
    assert!(
        p["detail"].as_str().is_some_and(|d| d.contains("expired")),
        "{p}"
    );
    request(
        addr,
        "GET",
        "/v1/cdrs",
        &[("authorization", "Basic b3BzOnB3")],
        b"",
    )
    .await
    .problem(401);
    request(
        addr,
        "GET",
        "/v1/cdrs",
        &[("authorization", "Bearer not.a.jwt")],
        b"",
    )
    .await
    .problem(401);

    // 401: a browser token (aud callbridge) is not an operator token, whatever
    // its scopes.
    let caller = bearer("alice", "calls:outbound admin");
    let r = request(addr, "GET", "/v1/calls", &[("authorization", &caller)], b"").await;
    let p = r.problem(401);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("callbridge-admin")),
        "{p}"
    );
    // 403: an operator token without `admin`; recordings need `recordings:read`.
    let operator = operator_bearer("ops", "recordings:read");
    let r = request(
        addr,
        "GET",
        "/v1/calls",
        &[("authorization", &operator)],
        b"",
    )
    .await;
    let p = r.problem(403);
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("admin")));
    let p = request(
        addr,
        "GET",
        "/v1/recordings/c-1",
        &[("authorization", &caller)],
        b"",
    )
    .await
    .problem(403);
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("recordings:read"))
    );
    request(
        addr,
        "GET",
        "/v1/recordings/c-1",
        &[("authorization", &auth)],
        b"",
    )
    .await
    .problem(404);

    // 401 comes before validation: a bad query without a token is still 401.
    request(addr, "GET", "/v1/cdrs?limit=abc", &[], b"")
        .await
        .problem(401);

    // 400: malformed query, malformed cursor, malformed JSON body.
    admin_get(addr, "/v1/cdrs?limit=abc").await.problem(400);
    admin_get(addr, "/v1/cdrs?cursor=%%%").await.problem(400);
    admin_get(addr, "/v1/calls?nonsense=1").await.problem(400);
    admin_post(addr, "/v1/drain", Some("{not json"))
        .await
        .problem(400);

    // 404: unknown call, record, event, path.
    admin_get(addr, "/v1/calls/c-nope").await.problem(404);
    admin_get(addr, "/v1/cdrs/c-nope").await.problem(404);
    admin_get(addr, "/v1/webhooks/deliveries?event_id=ev-nope")
        .await
        .problem(404);
    let r = request(
        addr,
        "DELETE",
        "/v1/calls/c-nope",
        &[("authorization", &auth)],
        b"",
    )
    .await;
    r.problem(404);
    request(addr, "GET", "/v1/nothing/here", &[], b"")
        .await
        .problem(404);

    // 405 with Allow.
    let r = request(addr, "PUT", "/v1/calls", &[("authorization", &auth)], b"").await;
    r.problem(405);
    assert!(
        r.header("allow").contains("GET"),
        "Allow: {}",
        r.header("allow")
    );
    let r = request(addr, "PATCH", "/v1/drain", &[("authorization", &auth)], b"").await;
    r.problem(405);
    let allow = r.header("allow");
    assert!(
        allow.contains("GET") && allow.contains("POST"),
        "Allow: {allow}"
    );

    // 409: test event without endpoints.
    admin_post(addr, "/v1/webhooks/test", None)
        .await
        .problem(409);

    // 415: a body that is not JSON.
    let r = request(
        addr,
        "POST",
        "/v1/drain",
        &[("authorization", &auth), ("content-type", "text/plain")],
        b"timeout=5s",
    )
    .await;
    r.problem(415);

    // 422: values that parse but make no sense.
    let p = admin_get(addr, "/v1/cdrs?limit=0").await.problem(422);
    assert_eq!(p["errors"][0]["field"], "limit");
    let p = admin_get(addr, "/v1/cdrs?from=yesterday")
        .await
        .problem(422);
    assert_eq!(p["errors"][0]["field"], "from");
    let empty = admin_get(
        addr,
        "/v1/cdrs?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00%2B02:00",
    )
    .await;
    assert_eq!(empty.status, 200, "an empty interval is an empty page");
    assert_eq!(empty.json()["items"].as_array().map(Vec::len), Some(0));
    admin_post(addr, "/v1/drain", Some(r#"{"timeout":"banana"}"#))
        .await
        .problem(422);
    admin_post(addr, "/v1/drain", Some(r#"{"timeoutt":"5s"}"#))
        .await
        .problem(422);

    // Health and metrics are not problem+json and not authenticated.
    let r = request(addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(r.status, 200);
    let r = request(addr, "GET", "/metrics", &[], b"").await;
    assert!(String::from_utf8_lossy(&r.body).contains("callbridge_draining 0"));
    gw.stop().await;
}

#[tokio::test]
async fn drain_with_no_calls_up_stops_the_gateway_at_once() {
    let mut config = test_config(None);
    config.storage.path = ":memory:".into();
    let gw = TestGateway::start(config).await;
    let addr = gw.admin_addr();
    let (ws, _) = gw.connect_as("alice", "calls:outbound").await;
    let r = admin_post(addr, "/v1/drain", Some(r#"{"timeout":"30s"}"#)).await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["draining"], true);
    // No calls were up: the drain finishes and the gateway stops by itself.
    let server = gw.server.as_ref().expect("running");
    tokio::time::timeout(Duration::from_secs(10), server.stopping())
        .await
        .expect("drain with no calls finishes at once");
    // (`/readyz` 503 and 409 for a second drain while calls hold the instance
    // are in tests/drain.rs.)
    gw.stop().await;
    ws.close().await;
}

#[tokio::test]
async fn ws_upgrade_is_rate_limited_per_ip_and_v1_requests_too() {
    let mut config = test_config(None);
    config.storage.path = ":memory:".into();
    config.ratelimit.http_per_ip_per_sec = 1;
    config.ratelimit.http_burst = 3;
    config.ratelimit.ws_per_ip_per_sec = 1;
    config.ratelimit.ws_burst = 1;
    let gw = TestGateway::start(config).await;
    // The per-IP HTTP limit covers /v1 on the admin listener; /ws is public.
    let admin = gw.admin_addr();
    let addr = gw.http_addr();
    for _ in 0..3 {
        assert_eq!(admin_get(admin, "/v1/calls").await.status, 200);
    }
    let r = admin_get(admin, "/v1/calls").await;
    let p = r.problem(429);
    assert_eq!(r.header("retry-after"), "1");
    assert!(
        p["retry_after_ms"]
            .as_u64()
            .is_some_and(|ms| ms > 0 && ms <= 1000)
    );
    // Probes are never limited.
    assert_eq!(request(addr, "GET", "/healthz", &[], b"").await.status, 200);

    let first = gw.connect().await;
    let upgrade = request(
        addr,
        "GET",
        "/ws",
        &[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
        b"",
    )
    .await;
    upgrade.problem(429);
    assert!(!upgrade.header("retry-after").is_empty());
    let metrics = String::from_utf8_lossy(&request(admin, "GET", "/metrics", &[], b"").await.body)
        .to_string();
    assert!(
        metrics.contains(r#"callbridge_rate_limited_total{limit="http"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"callbridge_rate_limited_total{limit="ws"} 1"#),
        "{metrics}"
    );
    first.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn call_attempts_are_rate_limited_per_user() {
    let mut config = test_config(None);
    config.storage.path = ":memory:".into();
    config.ratelimit.calls_per_user_per_sec = 1;
    config.ratelimit.calls_burst = 2;
    let gw = TestGateway::start(config).await;
    let gateway = &gw.server.as_ref().expect("running").gateway;
    assert!(gateway.check_call_rate("alice").is_ok());
    assert!(gateway.check_call_rate("alice").is_ok());
    let wait = gateway.check_call_rate("alice").expect_err("burst used up");
    assert!((1..=1000).contains(&wait.millis()), "{wait:?}");
    assert!(gateway.check_call_rate("bob").is_ok(), "per user");
    let metrics = common::gateway::http_get(gw.admin_addr(), "/metrics").await;
    assert!(
        metrics.contains(r#"callbridge_rate_limited_total{limit="call"} 1"#),
        "{metrics}"
    );
    gw.stop().await;
}
