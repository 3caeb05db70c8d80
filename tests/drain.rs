//! Drain with a call up, on the real binary: SIGTERM turns `/readyz` and new
//! sessions 503 while the call goes on (audio still echoes through SIPp); the
//! process exits 0 when the call ends, or hangs the call up at `drain.timeout` and
//! exits 0. The instance holds one call at most: with it up, the load balancer's
//! `/readyz` and SIP OPTIONS probes (SIPp) say 503 "At Capacity" while the
//! orchestrator's `/readyz/drain` stays 200 until the drain starts.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::browser::Browser;
use common::call::TestCall;
use common::gateway::{WsClient, token};
use common::http::{admin_get, admin_post, request};
use common::process::{GatewayProcess, TrunkGateway, answered_call, trunk_config, write_config};
use common::sipp::Sipp;
use serde_json::json;

/// A gateway holding one call at most, its trunk the SIPp at `trunk`.
fn config_text(
    dir: &std::path::Path,
    sip: SocketAddr,
    trunk: SocketAddr,
    drain_timeout: &'static str,
) -> String {
    let gw = TrunkGateway {
        sip,
        trunk,
        drain_timeout,
        max_calls: Some(1),
    };
    trunk_config(dir, &gw)
}

/// An answered call on `gw` with its media up.
async fn place_call(gw: &GatewayProcess) -> (WsClient, TestCall, std::sync::Arc<Browser>) {
    let (ws, call, browser) = answered_call(gw).await;
    assert!(
        browser.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS up"
    );
    (ws, call, browser)
}

/// A SIP balancer's OPTIONS probe (SIPp) to the gateway at `sip` is answered 503 with
/// `Retry-After: N (reason)`.
async fn options_refused(sip: SocketAddr, reason: &str) {
    let scenario = Sipp::scenario("uac_options_refused.xml");
    let outcome = Sipp::uac(&scenario, sip, "probe", &[])
        .wait(Duration::from_secs(20))
        .await;
    outcome.assert_one_success();
    let expected = format!("Retry-After: 30 ({reason})");
    assert!(outcome.messages.contains(&expected), "{}", outcome.messages);
}

/// The next message of type `kind` on `ws` (others skipped; bounded by `recv`'s wait).
async fn next_of_type(ws: &mut WsClient, kind: &str) -> serde_json::Value {
    for _ in 0..100 {
        let message = ws.recv().await;
        if message["type"] == kind {
            return message;
        }
    }
    panic!("no {kind} among 100 messages");
}

/// The next sd_notify datagram the gateway sent (bounded by the socket's timeout).
fn next_notification(socket: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification within 10 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

async fn wait_status(addr: SocketAddr, path: &str, status: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if request(addr, "GET", path, &[], b"").await.status == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_drains_until_the_call_ends_then_exits_0() {
    let mut sipp = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let sip = SocketAddr::from(([127, 0, 0, 1], common::ports::port()));
    let config = write_config(dir.path(), &config_text(dir.path(), sip, sipp.addr, "60s"));
    // systemd's side of sd_notify, played by the test (no service manager runs here).
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let notify_env = notify_path.to_str().expect("utf-8 path");
    let mut gw =
        GatewayProcess::start_with_env(&config, dir.path(), &[("NOTIFY_SOCKET", notify_env)]).await;
    let addr = gw.http_addr;
    let admin = gw.admin();
    assert!(next_notification(&notify).starts_with("READY=1\n"));
    assert_eq!(request(addr, "GET", "/readyz", &[], b"").await.status, 200);
    assert_eq!(
        request(addr, "GET", "/readyz/drain", &[], b"").await.status,
        200
    );
    // A session of the same user that will hold no call (opened first: a full
    // instance refuses new sessions too).
    let mut idle = WsClient::connect(&gw.ws_url()).await;
    idle.send(json!({"type": "auth", "token": token("alice", "calls:outbound", 3600)}))
        .await;
    assert_eq!(idle.recv().await["type"], "ready");
    let (mut ws, mut call, browser) = place_call(&gw).await;

    // Full (max_calls = 1): the balancers' probes refuse, the orchestrator's does not.
    assert_eq!(request(addr, "GET", "/readyz", &[], b"").await.status, 503);
    assert_eq!(
        request(addr, "GET", "/readyz/drain", &[], b"").await.status,
        200
    );
    assert_eq!(
        request(admin, "GET", "/readyz/drain", &[], b"")
            .await
            .status,
        200
    );
    options_refused(sip, "At Capacity").await;

    gw.signal("TERM");
    // The stop may take the drain (60 s) and the shutdown after it: systemd is told.
    let stopping = next_notification(&notify);
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping}");
    let extend: u64 = stopping
        .lines()
        .find_map(|l| l.strip_prefix("EXTEND_TIMEOUT_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no EXTEND_TIMEOUT_USEC: {stopping}"));
    assert!(
        (80_000_000..=90_000_000).contains(&extend),
        "60 s drain + 30 s: {extend}"
    );
    wait_status(addr, "/readyz/drain", 503).await;
    // Both sessions are told to move, each after its own delay within 2 s.
    for ws in [&mut idle, &mut ws] {
        let goaway = next_of_type(ws, "goaway").await;
        assert_eq!(goaway["reason"], "draining", "{goaway}");
        assert!(
            goaway["retry_after_ms"]
                .as_u64()
                .is_some_and(|ms| ms < 2000),
            "{goaway}"
        );
    }
    assert_eq!(request(addr, "GET", "/readyz", &[], b"").await.status, 503);
    assert_eq!(
        request(admin, "GET", "/readyz/drain", &[], b"")
            .await
            .status,
        503
    );
    options_refused(sip, "Draining").await;
    // New sessions are refused while draining.
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
    let p = upgrade.problem(503);
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("draining")));
    // A second drain conflicts with the one in progress.
    admin_post(admin, "/v1/drain", None).await.problem(409);
    let state = admin_get(admin, "/v1/drain").await.json();
    assert_eq!(state["draining"], true);
    assert_eq!(state["active_calls"], 1);
    let calls = admin_get(admin, "/v1/calls").await.json();
    assert_eq!(calls["calls"][0]["state"], "answered", "{calls}");
    let metrics = String::from_utf8_lossy(&request(admin, "GET", "/metrics", &[], b"").await.body)
        .to_string();
    assert!(metrics.contains("callbridge_draining 1"), "{metrics}");
    assert!(
        metrics.contains(
            r#"callbridge_sip_messages_total{direction="out",method="INVITE",status="none"}"#
        ),
        "{metrics}"
    );

    // The call goes on: audio still echoes, and the process keeps running.
    let before = browser.received().len();
    let _tone = browser.start_sending_tone(50);
    assert!(
        browser
            .wait_received(before + 40, Duration::from_secs(10))
            .await,
        "audio flows during the drain"
    );
    assert!(gw.running(), "still running while a call is up");

    call.hangup(&mut ws).await;
    let ended = call.until(&mut ws, &["ended"]).await;
    assert_eq!(ended["reason"], "hangup");
    let status = gw.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "exit 0 after the drain: {status:?}");
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
}

#[tokio::test]
async fn drain_timeout_hangs_up_the_call_and_exits_0() {
    let mut sipp = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let sip = SocketAddr::from(([127, 0, 0, 1], common::ports::port()));
    let config = write_config(dir.path(), &config_text(dir.path(), sip, sipp.addr, "2s"));
    let mut gw = GatewayProcess::start(&config, dir.path()).await;
    let (mut ws, mut call, browser) = place_call(&gw).await;

    let started = std::time::Instant::now();
    gw.signal("TERM");
    let ended = call.until(&mut ws, &["ended"]).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the call is left up until the drain timeout"
    );
    assert_eq!(ended["reason"], "unavailable", "{ended}");
    let status = gw.wait_exit(Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "exit 0 after the drain timeout: {status:?}"
    );
    // SIPp got its BYE: the call ended cleanly on the SIP side too.
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    browser.close().await;
}
