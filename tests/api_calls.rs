//! The calls and recordings resources with real data: an active call through SIPp is
//! listed, fetched and hung up through the API; a recording is downloaded whole and
//! by byte range.

mod common;

use std::time::Duration;

use callbridge::events::RecordingInfo;
use common::browser::{Browser, BrowserOptions};
use common::call::TestCall;
use common::gateway::{TestGateway, test_config};
use common::http::{admin_get, bearer, operator_bearer, request};
use common::sipp::Sipp;

#[tokio::test]
async fn active_call_is_listed_and_hung_up_through_the_api() {
    let mut sipp = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let mut config = test_config(Some(sipp.addr));
    config.storage.path = ":memory:".into();
    let gw = TestGateway::start(config).await;
    let addr = gw.admin_addr();
    let (mut ws, _) = gw.connect_as("alice", "calls:outbound").await;
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "c1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;

    let list = admin_get(addr, "/v1/calls").await.json();
    assert_eq!(list["active"], 1);
    let listed = &list["calls"][0];
    assert_eq!(listed["user"], "alice");
    assert_eq!(listed["call_id"], "c1");
    assert_eq!(listed["trunk"], "sipp");
    assert_eq!(listed["direction"], "outbound");
    let id = listed["id"].as_str().expect("id").to_string();
    assert!(
        admin_get(addr, "/v1/calls?user=bob").await.json()["calls"]
            .as_array()
            .is_some_and(Vec::is_empty)
    );
    let one = admin_get(addr, &format!("/v1/calls/{id}")).await.json();
    assert_eq!(one["state"], "answered");
    assert!(one["sip_call_id"].is_string());

    let auth = operator_bearer("ops", "admin");
    let r = request(
        addr,
        "DELETE",
        &format!("/v1/calls/{id}"),
        &[("authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let ended = call.until(&mut ws, &["ended"]).await;
    assert_eq!(ended["call_id"], "c1");
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while admin_get(addr, &format!("/v1/calls/{id}")).await.status != 404 {
        assert!(tokio::time::Instant::now() < deadline, "call still listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.close().await;
    gw.stop().await;
}

#[tokio::test]
async fn recording_download_whole_and_by_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rec.wav");
    let content: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).expect("write");
    let mut config = test_config(None);
    config.storage.path = ":memory:".into();
    let gw = TestGateway::start(config).await;
    let addr = gw.http_addr();
    let events = gw.server.as_ref().expect("running").gateway.events.clone();
    events.recording_ready(RecordingInfo {
        id: "c-rec1".into(),
        correlation_id: "corr-rec".into(),
        user: "support".into(),
        path: path.display().to_string(),
        content_type: "audio/wav".into(),
        bytes: 1000,
        duration_ms: 6_250,
        sidecar: None,
    });
    events.flush(Duration::from_secs(5)).await.expect("written");
    let reader = bearer("support", "recordings:read");
    let auth = [("authorization", reader.as_str())];

    let whole = request(addr, "GET", "/v1/recordings/c-rec1", &auth, b"").await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-type"), "audio/wav");
    assert_eq!(whole.header("accept-ranges"), "bytes");
    assert_eq!(whole.body.as_ref(), content.as_slice());

    let ranged = [
        ("authorization", reader.as_str()),
        ("range", "bytes=100-199"),
    ];
    let part = request(addr, "GET", "/v1/recordings/c-rec1", &ranged, b"").await;
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), "bytes 100-199/1000");
    assert_eq!(part.body.as_ref(), &content[100..200]);

    let tail = [("authorization", reader.as_str()), ("range", "bytes=-10")];
    let part = request(addr, "GET", "/v1/recordings/c-rec1", &tail, b"").await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body.as_ref(), &content[990..]);

    let past = [("authorization", reader.as_str()), ("range", "bytes=5000-")];
    let r = request(addr, "GET", "/v1/recordings/c-rec1", &past, b"").await;
    r.problem(416);
    assert_eq!(r.header("content-range"), "bytes */1000");

    request(addr, "GET", "/v1/recordings/c-none", &auth, b"")
        .await
        .problem(404);
    // Another user's token gets the same 404 as for a missing recording.
    let other = bearer("mallory", "recordings:read");
    request(
        addr,
        "GET",
        "/v1/recordings/c-rec1",
        &[("authorization", other.as_str())],
        b"",
    )
    .await
    .problem(404);
    std::fs::remove_file(&path).expect("rm");
    request(addr, "GET", "/v1/recordings/c-rec1", &auth, b"")
        .await
        .problem(404);
    gw.stop().await;
}
