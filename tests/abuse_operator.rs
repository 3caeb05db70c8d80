//! Issue 12, item 10 (operator surface) and the `/healthz` detail of item 12,
//! attacked on a running gateway: a browser token claiming `admin`, operator paths
//! on the public listener, `/healthz` probing for internal addresses, and the
//! development conveniences (dev tokens, a catch-all dial plan) on a public listen
//! address. Each test also shows the legitimate path still works: an operator
//! token on the admin listener.

mod common;

use std::process::Command;
use std::time::Duration;

use common::browser::{Browser, BrowserOptions};
use common::call::TestCall;
use common::gateway::{TestGateway, test_config};
use common::http::{admin_get, bearer, operator_bearer, request};
use common::process::BIN;

/// `GET path` on `addr` with `authorization` (if any): status and body.
async fn get(addr: std::net::SocketAddr, path: &str, authorization: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let r = request(addr, "GET", path, &headers, b"").await;
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[tokio::test]
async fn a_browser_token_with_admin_scope_cannot_use_the_operator_api() {
    let gw = TestGateway::start(test_config(None)).await;
    let admin = gw.admin_addr();
    // Signed with the same key as every browser token, scope `admin`, aud callbridge.
    let browser_admin = bearer("mallory", "calls:outbound admin");
    let (status, body) = get(admin, "/v1/calls", Some(&browser_admin)).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("callbridge-admin"),
        "says which audience: {body}"
    );
    // Nor can it start a drain.
    let r = request(
        admin,
        "POST",
        "/v1/drain",
        &[("authorization", &browser_admin)],
        b"",
    )
    .await;
    assert_eq!(r.status, 401);
    let (status, _) = get(gw.http_addr(), "/readyz", None).await;
    assert_eq!(status, 200, "not draining");
    // An operator token (aud callbridge-admin) does.
    let r = admin_get(admin, "/v1/calls").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["active"], 0);
    // And an operator token opens no browser session.
    let mut ws = gw.connect().await;
    ws.send(serde_json::json!({
        "type": "auth",
        "token": common::gateway::operator_token("ops", "admin calls:outbound", 600),
    }))
    .await;
    assert_eq!(ws.closed().await, common::gateway::Closed::Code(4001));
    gw.stop().await;
}

#[tokio::test]
async fn operator_paths_are_404_on_the_public_listener() {
    let gw = TestGateway::start(test_config(None)).await;
    let public = gw.http_addr();
    let operator = operator_bearer("ops", "admin");
    for path in [
        "/v1/calls",
        "/v1/cdrs",
        "/v1/drain",
        "/v1/openapi.json",
        "/metrics",
    ] {
        let (status, body) = get(public, path, Some(&operator)).await;
        assert_eq!(status, 404, "{path} on the public listener: {body}");
        assert!(!body.contains("callbridge_"), "{path}: {body}");
    }
    let r = request(
        public,
        "POST",
        "/v1/drain",
        &[("authorization", &operator)],
        b"",
    )
    .await;
    assert_eq!(r.status, 404, "no drain through the public listener");
    assert_eq!(get(public, "/readyz", None).await.0, 200);
    // The same requests on the admin listener work.
    let (status, metrics) = get(gw.admin_addr(), "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("callbridge_active_calls 0"), "{metrics}");
    assert_eq!(
        admin_get(gw.admin_addr(), "/v1/openapi.json").await.status,
        200
    );
    assert_eq!(admin_get(gw.admin_addr(), "/v1/drain").await.status, 200);
    gw.stop().await;
}

#[tokio::test]
async fn public_healthz_reveals_no_detail_without_an_operator_token() {
    // A trunk nobody listens on: its health detail names what failed.
    let mut config = test_config(None);
    config.echo.enabled = true;
    config.sip.trunks.push(callbridge::config::TrunkConfig {
        name: "internal-pbx".into(),
        address: "127.0.0.1:9".into(),
        transport: "tcp".into(),
        options_interval: Some(Duration::from_secs(1)),
        ..callbridge::config::TrunkConfig::default()
    });
    let gw = TestGateway::start(config).await;
    let public = gw.http_addr();
    // The admin listener has the detail (wait until the trunk is known down).
    let deadline = tokio::time::Instant::now() + common::gateway::WAIT;
    let detail = loop {
        let (_, body) = get(gw.admin_addr(), "/healthz", None).await;
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        if json["trunks"][0]["reachable"] == false {
            break json;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(detail["trunks"][0]["name"], "internal-pbx");

    // Anyone, a browser token, a forged or expired operator token: ok, nothing more.
    let expired = format!(
        "Bearer {}",
        common::gateway::operator_token("ops", "admin", -3600)
    );
    for auth in [
        None,
        Some(bearer("alice", "calls:outbound admin")),
        Some("Bearer not.a.jwt".to_string()),
        Some(expired),
    ] {
        let (status, body) = get(public, "/healthz", auth.as_deref()).await;
        assert_eq!(status, 200, "liveness never fails on a bad token");
        assert_eq!(body, r#"{"status":"ok"}"#, "{auth:?}");
    }
    // An operator token gets the detail on the public listener too.
    let (_, body) = get(public, "/healthz", Some(&operator_bearer("ops", "admin"))).await;
    assert!(body.contains("internal-pbx"), "{body}");

    // Draining is the one thing the public learns (a call holds the instance up,
    // or the drain would end it at once).
    let (mut ws, _) = gw.connect_as("alice", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, std::sync::Arc::clone(&browser), "c1", "echo").await;
    call.until(&mut ws, &["answered"]).await;
    let gateway = std::sync::Arc::clone(&gw.server.as_ref().expect("running").gateway);
    gateway.drain.start(Duration::from_secs(60));
    let (_, body) = get(public, "/healthz", None).await;
    assert_eq!(body, r#"{"status":"draining"}"#);
    call.hangup(&mut ws).await;
    call.until(&mut ws, &["ended"]).await;
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn without_an_admin_listener_v1_and_metrics_need_an_operator_token() {
    let mut config = test_config(None);
    config.admin.enabled = false;
    let gw = TestGateway::start(config).await;
    assert!(gw.server.as_ref().expect("running").admin_addr.is_none());
    let public = gw.http_addr();
    for auth in [None, Some(bearer("mallory", "admin"))] {
        let (status, body) = get(public, "/metrics", auth.as_deref()).await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert!(!body.contains("callbridge_active_calls"));
        assert_eq!(get(public, "/v1/calls", auth.as_deref()).await.0, 401);
    }
    let operator = operator_bearer("ops", "admin");
    let (status, metrics) = get(public, "/metrics", Some(&operator)).await;
    assert_eq!(status, 200);
    assert!(metrics.contains("callbridge_active_calls 0"), "{metrics}");
    assert_eq!(admin_get(public, "/v1/calls").await.status, 200);
    gw.stop().await;
}

#[test]
fn embedded_defaults_refuse_to_serve_dev_tokens_on_a_public_address() {
    // `serve` without a config file (embedded defaults: dev tokens, `.*` route),
    // moved to every interface by an environment override.
    let out = Command::new(BIN)
        .arg("serve")
        .env("CALLBRIDGE_SERVER__LISTEN", "0.0.0.0:0")
        .env("CALLBRIDGE_ADMIN__LISTEN", "127.0.0.1:0")
        .env("CALLBRIDGE_SIP__LISTEN", "127.0.0.1:0")
        .output()
        .expect("run serve");
    assert!(!out.status.success(), "refused to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("demo.dev_tokens") && stderr.contains("listen on 127.0.0.1"),
        "{stderr}"
    );
    // With the dev tokens off, the catch-all route is refused next.
    let out = Command::new(BIN)
        .arg("serve")
        .env("CALLBRIDGE_SERVER__LISTEN", "0.0.0.0:0")
        .env("CALLBRIDGE_DEMO__DEV_TOKENS", "false")
        .env("CALLBRIDGE_ADMIN__LISTEN", "127.0.0.1:0")
        .env("CALLBRIDGE_SIP__LISTEN", "127.0.0.1:0")
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dialplan.routes[0].pattern") && stderr.contains("allow_catch_all"),
        "{stderr}"
    );
}

#[test]
fn check_config_refuses_dev_tokens_and_a_catch_all_off_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |text: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).expect("write");
        path
    };
    let base = |listen: &str, extra: &str| {
        format!(
            "[server]\nlisten = \"{listen}\"\n[auth]\nhs256_secret = \"{}\"\n\
             [[sip.trunks]]\nname = \"a\"\naddress = \"127.0.0.1:5070\"\n{extra}",
            common::gateway::SECRET
        )
    };
    let check = |path: &std::path::Path| {
        let out = Command::new(BIN)
            .arg("check-config")
            .arg(path)
            .output()
            .expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let dev = "[demo]\nenabled = true\ndev_tokens = true\n";
    let (ok, stderr) = check(&write(&base("0.0.0.0:8443", dev)));
    assert!(!ok && stderr.contains("demo.dev_tokens"), "{stderr}");
    let (ok, stderr) = check(&write(&base("127.0.0.1:8443", dev)));
    assert!(ok, "loopback is fine: {stderr}");

    let catch_all = "[[dialplan.routes]]\npattern = '.*'\ntrunks = [\"a\"]\n";
    let (ok, stderr) = check(&write(&base("0.0.0.0:8443", catch_all)));
    assert!(
        !ok && stderr.contains("dialplan.routes[0].pattern"),
        "{stderr}"
    );
    let allowed = format!("[dialplan]\nallow_catch_all = true\n{catch_all}");
    let (ok, stderr) = check(&write(&base("0.0.0.0:8443", &allowed)));
    assert!(ok, "an explicit opt-in is accepted: {stderr}");
    let numbers = "[[dialplan.routes]]\npattern = '^\\+1[0-9]{10}$'\ntrunks = [\"a\"]\n";
    let (ok, stderr) = check(&write(&base("0.0.0.0:8443", numbers)));
    assert!(ok, "a real dial plan is fine anywhere: {stderr}");
}
