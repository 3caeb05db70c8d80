//! Authentication and protocol robustness of the WebSocket endpoint, against a real
//! in-process gateway over loopback.

mod common;

use base64::Engine;
use common::gateway::{Closed, TestGateway, WsClient, claims, http_get, test_config, token};
use serde_json::json;

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

async fn auth_and_expect_close(gw: &TestGateway, token: &str) -> (serde_json::Value, Closed) {
    let mut ws = gw.connect().await;
    ws.send(json!({"type": "auth", "token": token})).await;
    let error = ws.recv().await;
    let closed = ws.closed().await;
    (error, closed)
}

#[tokio::test]
async fn bad_tokens_close_4001_with_a_reason() {
    let gw = TestGateway::start(test_config(None)).await;

    let expired = token("alice", "calls:outbound", -3600);
    let forged = callbridge::auth::mint_hs256(
        "some-other-secret-some-other-secret-0000",
        &claims("alice", "calls:outbound", 3600),
    )
    .expect("mint");
    let mut wrong_aud = claims("alice", "calls:outbound", 3600);
    wrong_aud.aud = Some(callbridge::auth::Audience::One("someone-else".into()));
    let wrong_aud =
        callbridge::auth::mint_hs256(common::gateway::SECRET, &wrong_aud).expect("mint");
    let payload = serde_json::to_vec(&claims("alice", "calls:outbound", 3600)).expect("json");
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(&payload)
    );

    for (name, token, needle) in [
        ("expired", expired.as_str(), "expired"),
        ("forged", forged.as_str(), "signature"),
        ("wrong audience", wrong_aud.as_str(), "audience"),
        ("alg none", alg_none.as_str(), "unsigned"),
        ("garbage", "not-a-jwt", "malformed"),
    ] {
        let (error, closed) = auth_and_expect_close(&gw, token).await;
        assert_eq!(error["type"], "error", "{name}: {error}");
        assert_eq!(error["code"], "unauthorized", "{name}: {error}");
        let message = error["message"].as_str().expect("message");
        assert!(
            message.contains(needle),
            "{name}: message `{message}` lacks `{needle}`"
        );
        assert!(
            !message.contains(token) || token.len() < 12,
            "{name}: token echoed back"
        );
        assert!(
            error["correlation_id"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        );
        assert_eq!(closed, Closed::Code(4001), "{name}");
    }
    gw.stop().await;
}

#[tokio::test]
async fn token_without_call_scope_closes_4003() {
    let gw = TestGateway::start(test_config(None)).await;
    let (error, closed) = auth_and_expect_close(&gw, &token("bob", "recordings:read", 3600)).await;
    assert_eq!(error["code"], "forbidden", "{error}");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("calls:outbound")
    );
    assert_eq!(closed, Closed::Code(4003));
    gw.stop().await;
}

#[tokio::test]
async fn no_auth_frame_closes_4008() {
    let mut config = test_config(None);
    config.server.auth_timeout = std::time::Duration::from_millis(300);
    let gw = TestGateway::start(config).await;
    let mut ws = gw.connect().await;
    let error = ws.recv().await;
    assert_eq!(error["code"], "unauthorized");
    assert!(error["message"].as_str().expect("message").contains("auth"));
    assert_eq!(ws.closed().await, Closed::Code(4008));
    gw.stop().await;
}

#[tokio::test]
async fn query_token_is_accepted() {
    let gw = TestGateway::start(test_config(None)).await;
    let url = format!(
        "{}?access_token={}",
        gw.ws_url(),
        token("carol", "calls:outbound", 60)
    );
    let mut ws = WsClient::connect(&url).await;
    let ready = ws.recv().await;
    assert_eq!(ready["type"], "ready");
    assert_eq!(ready["user"], "carol");
    assert!(
        ready["session_id"]
            .as_str()
            .expect("session id")
            .starts_with("s-")
    );
    assert!(
        ready["resume_token"]
            .as_str()
            .is_some_and(|t| t.len() >= 32)
    );
    assert_eq!(
        ready["ice_servers"],
        json!([]),
        "no public STUN server is ever handed out"
    );
    gw.stop().await;
}

#[tokio::test]
async fn malformed_frames_get_bad_request_and_the_session_keeps_working() {
    let gw = TestGateway::start(test_config(None)).await;
    let (mut ws, _) = gw.connect_as("dave", "calls:outbound").await;

    ws.send_text("{this is not json").await;
    let e = ws.recv().await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );
    assert!(e["message"].as_str().expect("message").contains("JSON"));

    ws.send(json!({"type": "warp", "call_id": "c1"})).await;
    let e = ws.recv().await;
    assert_eq!(e["code"], "bad_request");
    assert!(e["message"].as_str().expect("message").contains("warp"));

    ws.send(json!({"type": "call", "call_id": "c1", "sdp": "v=0"}))
        .await;
    let e = ws.recv().await;
    assert_eq!(e["code"], "bad_request");
    assert!(
        e["message"].as_str().expect("message").contains("`to`"),
        "{e}"
    );

    ws.send(json!({"type": "hangup", "call_id": "nope"})).await;
    let e = ws.recv().await;
    assert_eq!(e["code"], "not_found");

    let big = "x".repeat(70 * 1024);
    ws.send(json!({"type": "ping", "pad": big})).await;
    let e = ws.recv().await;
    assert_eq!(e["code"], "bad_request");
    assert!(
        e["message"]
            .as_str()
            .expect("message")
            .contains("max_message_bytes")
    );

    ws.send(json!({"type": "ping"})).await;
    assert_eq!(
        ws.recv().await["type"],
        "pong",
        "session still works after bad input"
    );
    ws.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn unrouted_number_ends_forbidden() {
    let gw = TestGateway::start(test_config(Some("127.0.0.1:9".parse().expect("addr")))).await;
    let (mut ws, _) = gw.connect_as("erin", "calls:outbound").await;
    ws.send(json!({"type": "call", "call_id": "c9", "to": "+999123", "sdp": "v=0"}))
        .await;
    let ended = ws.recv_type("ended", |_| {}).await;
    assert_eq!(ended["call_id"], "c9");
    assert_eq!(ended["reason"], "forbidden");
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
    gw.stop().await;
}

#[tokio::test]
async fn healthz_on_the_public_listener_and_metrics_on_the_admin_listener() {
    let gw = TestGateway::start(test_config(None)).await;
    let (mut ws, _) = gw.connect_as("frank", "calls:outbound").await;
    let body = http_get(gw.admin_addr(), "/metrics").await;
    assert!(body.contains("callbridge_active_calls 0"), "{body}");
    assert!(body.contains("callbridge_ws_sessions 1"), "{body}");
    let public = http_get(gw.http_addr(), "/metrics").await;
    assert!(public.starts_with("HTTP/1.1 404"), "{public}");
    let health = http_get(gw.http_addr(), "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with(r#"{"status":"ok"}"#), "{health}");
    ws.send(json!({"type": "ping"})).await;
    ws.recv().await;
    gw.stop().await;
}

#[tokio::test]
async fn healthz_and_metrics_report_a_trunk_that_is_down() {
    // A TCP trunk nobody listens on: its OPTIONS check fails at once (refused).
    let mut config = test_config(None);
    config.sip.trunks.push(callbridge::config::TrunkConfig {
        name: "dead".into(),
        address: "127.0.0.1:9".into(),
        transport: "tcp".into(),
        options_interval: Some(std::time::Duration::from_secs(1)),
        ..callbridge::config::TrunkConfig::default()
    });
    let gw = TestGateway::start(config).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    let health = loop {
        let response = http_get(gw.admin_addr(), "/healthz").await;
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if json["trunks"][0]["reachable"] == false {
            break json;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "trunk never reported down: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(health["trunks"][0]["name"], "dead");
    assert_eq!(health["status"], "ok", "the gateway itself is alive");
    let metrics = http_get(gw.admin_addr(), "/metrics").await;
    assert!(
        metrics.contains(r#"callbridge_trunk_up{trunk="dead"} 0"#),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_message_flood_is_rate_limited_then_closed_4029() {
    let mut config = test_config(None);
    config.ratelimit.messages_per_session_per_sec = 5;
    config.ratelimit.messages_burst = 5;
    let gw = TestGateway::start(config).await;
    let (mut ws, _) = gw.connect_as("flo", "calls:outbound").await;
    for _ in 0..80 {
        ws.send_text(r#"{"type":"ping"}"#).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    let closed = loop {
        match ws.message_or_close().await {
            Ok(m) if m["type"] == "pong" => pongs += 1,
            Ok(m) if m["code"] == "rate_limited" => {
                assert!(m["retry_after_ms"].as_u64().is_some(), "{m}");
                limited += 1;
            }
            Ok(m) => panic!("unexpected {m}"),
            Err(closed) => break closed,
        }
    };
    assert!((5..=10).contains(&pongs), "the burst gets through: {pongs}");
    assert!(limited >= 40, "the rest is refused: {limited}");
    assert_eq!(closed, Closed::Code(4029));
    gw.stop().await;
}

/// RFC 8725 sanity against a running gateway configured with an RSA public key and
/// an HS256 secret (the unit suite in src/auth/tests.rs covers each check).
#[tokio::test]
async fn rfc8725_forgeries_are_refused_by_a_running_gateway() {
    use hmac::{KeyInit, Mac};
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
    let mut config = test_config(None);
    config.auth.public_keys = vec![fixtures.join("rsa.pub")];
    let gw = TestGateway::start(config).await;
    let payload = serde_json::to_string(&claims("alice", "calls:outbound", 3600)).expect("json");
    let sign = |header: &str, key: &[u8]| {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    };
    let pem = std::fs::read(fixtures.join("rsa.pub")).expect("fixture");
    let confused = sign(r#"{"alg":"HS256","typ":"JWT"}"#, &pem);
    let access_token = sign(
        r#"{"alg":"HS256","typ":"at+jwt"}"#,
        common::gateway::SECRET.as_bytes(),
    );
    let mut huge = claims("alice", "calls:outbound", 3600);
    // URIs are limited to 64 KiB by the http crate, so 20 KiB here; still well over
    // auth.max_token_bytes (8 KiB).
    huge.caller_id = Some("1".repeat(15 * 1024));
    let huge = callbridge::auth::mint_hs256(common::gateway::SECRET, &huge).expect("mint");
    assert!(huge.len() >= 20 * 1024);
    for (name, token, needle) in [
        (
            "HS256 with the RSA public key",
            confused.as_str(),
            "signature",
        ),
        ("typ at+jwt", access_token.as_str(), "typ"),
    ] {
        let (error, closed) = auth_and_expect_close(&gw, token).await;
        assert_eq!(error["code"], "unauthorized", "{name}: {error}");
        assert!(
            error["message"].as_str().expect("message").contains(needle),
            "{name}: {error}"
        );
        assert_eq!(closed, Closed::Code(4001), "{name}");
    }
    // An oversized token in the query (the first-frame limit does not apply there).
    let mut ws = WsClient::connect(&format!("{}?access_token={huge}", gw.ws_url())).await;
    let error = ws.recv().await;
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("auth.max_token_bytes"),
        "{error}"
    );
    assert_eq!(ws.closed().await, Closed::Code(4001));
    // The correct tokens of both algorithms are accepted.
    let rs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims("alice", "calls:outbound", 3600),
        &jsonwebtoken::EncodingKey::from_rsa_pem(
            &std::fs::read(fixtures.join("rsa.key")).expect("fixture"),
        )
        .expect("rsa"),
    )
    .expect("sign");
    for good in [rs256, token("alice", "calls:outbound", 3600)] {
        let mut ws = gw.connect().await;
        ws.send(json!({"type": "auth", "token": good})).await;
        assert_eq!(ws.recv().await["type"], "ready");
    }
    gw.stop().await;
}
