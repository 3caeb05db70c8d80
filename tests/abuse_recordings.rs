//! Attacks on recordings against a running gateway:
//!
//! - a user's `recordings:read` token asks for another user's recording (before:
//!   any such token read every recording). Now only the recordings of the token
//!   user's own calls are served; anyone else's answers the same 404 as a missing
//!   id (no existence leak); the operator (`admin`) reads all.
//! - calls that fill the disk: with a tiny `media.recording_max_total_bytes` the
//!   recording in progress is cut at the quota and the next call is not recorded
//!   (its record says `recording_skipped: quota`, a metric counts it), while both
//!   calls themselves go on normally.

mod common;
#[path = "common/recorded.rs"]
mod recorded;

use std::net::SocketAddr;
use std::time::Duration;

use callbridge::config::{Config, RouteConfig, TrunkConfig};
use common::gateway::{TestGateway, test_config};
use common::http::{admin_get, bearer, operator_bearer, request, sample};
use common::sipp::Sipp;
use recorded::{assert_valid_wav, metrics, talk_and_hang_up};

/// A recording gateway with two echo trunks: `+1555111…` goes to `a`, `+1555222…`
/// to `b` (one SIPp each, as each SIPp takes one call).
fn config(dir: &std::path::Path, a: SocketAddr, b: SocketAddr) -> Config {
    let mut c = test_config(None);
    c.media.record_all = true;
    c.media.recording_dir = dir.join("recordings");
    for (name, addr, pattern) in [
        ("a", a, r"^\+1555111[0-9]{4}$"),
        ("b", b, r"^\+1555222[0-9]{4}$"),
    ] {
        c.sip.trunks.push(TrunkConfig {
            name: name.into(),
            address: addr.to_string(),
            ..TrunkConfig::default()
        });
        c.dialplan
            .routes
            .push(RouteConfig::new(pattern, vec![name.into()]));
    }
    c
}

fn echo_trunk() -> Sipp {
    Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    )
}

/// The id of `user`'s only call record.
async fn call_of(gw: &TestGateway, user: &str) -> serde_json::Value {
    let page = admin_get(gw.admin_addr(), &format!("/v1/cdrs?user={user}")).await;
    assert_eq!(page.status, 200);
    let page = page.json();
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    items[0].clone()
}

/// GET a recording with `token`.
async fn get(gw: &TestGateway, id: &str, token: &str) -> common::http::Reply {
    request(
        gw.http_addr(),
        "GET",
        &format!("/v1/recordings/{id}"),
        &[("authorization", token)],
        b"",
    )
    .await
}

#[tokio::test]
async fn a_users_token_reads_only_the_recordings_of_its_own_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut a, mut b) = (echo_trunk(), echo_trunk());
    let gw = TestGateway::start(config(dir.path(), a.addr, b.addr)).await;
    let (mut alice_ws, _) = gw.connect_as("alice", "calls:outbound").await;
    let (mut bob_ws, _) = gw.connect_as("bob", "calls:outbound").await;
    talk_and_hang_up(&mut alice_ws, "a1", "+15551110000", 25, 0).await;
    talk_and_hang_up(&mut bob_ws, "b1", "+15552220000", 25, 0).await;
    a.wait(Duration::from_secs(20)).await.assert_one_success();
    b.wait(Duration::from_secs(20)).await.assert_one_success();
    let events = gw.server.as_ref().expect("running").gateway.events.clone();
    events
        .flush(Duration::from_secs(5))
        .await
        .expect("records written");
    let alice_call = call_of(&gw, "alice").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let bob_call = call_of(&gw, "bob").await["id"]
        .as_str()
        .expect("id")
        .to_string();

    let alice = bearer("alice", "recordings:read");
    let bob = bearer("bob", "recordings:read");
    let operator = operator_bearer("ops", "admin");

    // The attack: alice asks for bob's recording. Same answer as for no recording.
    let stolen = get(&gw, &bob_call, &alice).await;
    let p = stolen.problem(404);
    assert_eq!(p["detail"], format!("no recording `{bob_call}`"));
    let missing = get(&gw, "c-doesnotexist", &alice).await.problem(404);
    assert_eq!(missing["title"], p["title"]);
    assert_eq!(
        get(&gw, &alice_call, &bob).await.status,
        404,
        "and the other way"
    );
    let ranged = request(
        gw.http_addr(),
        "GET",
        &format!("/v1/recordings/{bob_call}"),
        &[("authorization", &alice), ("range", "bytes=0-43")],
        b"",
    )
    .await;
    assert_eq!(ranged.status, 404, "no byte of it either");

    // Legitimate reads: each user its own, the operator both.
    for (id, token) in [
        (&alice_call, &alice),
        (&bob_call, &bob),
        (&alice_call, &operator),
        (&bob_call, &operator),
    ] {
        let r = get(&gw, id, token).await;
        assert_eq!(r.status, 200, "{id}: {}", String::from_utf8_lossy(&r.body));
        assert_valid_wav(&r.body);
    }
    // A token with neither scope is refused outright.
    let caller = bearer("alice", "calls:outbound");
    get(&gw, &alice_call, &caller).await.problem(403);
    gw.stop().await;
}

#[tokio::test]
async fn disk_quota_cuts_the_recording_then_skips_the_next_and_calls_go_on() {
    const QUOTA: u64 = 64 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut a, mut b) = (echo_trunk(), echo_trunk());
    let mut config = config(dir.path(), a.addr, b.addr);
    config.media.recording_max_total_bytes = QUOTA;
    let gw = TestGateway::start(config).await;
    let (mut ws, _) = gw.connect_as("alice", "calls:outbound").await;

    // First call: talks until its recording has filled the quota, then hangs up.
    let browser = common::browser::Browser::new(Default::default()).await;
    let mut call =
        common::call::TestCall::place(&mut ws, browser.clone(), "q1", "+15551110000").await;
    call.until(&mut ws, &["answered"]).await;
    assert!(browser.wait_connected(Duration::from_secs(10)).await);
    let _tone = browser.start_sending_tone(200);
    let disk = "callbridge_recordings_disk_bytes";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sample(&metrics(&gw), disk).unwrap_or(0.0) < (QUOTA - 4) as f64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "recording never reached the quota: {:?}",
            sample(&metrics(&gw), disk)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    call.hangup(&mut ws).await;
    assert_eq!(call.until(&mut ws, &["ended"]).await["reason"], "hangup");
    browser.close().await;
    a.wait(Duration::from_secs(20)).await.assert_one_success();

    // Second call: the quota is full; the call is still placed and answered.
    let ended = talk_and_hang_up(&mut ws, "q2", "+15552220000", 25, 20).await;
    assert_eq!(ended["reason"], "hangup", "the call itself is not affected");
    b.wait(Duration::from_secs(20)).await.assert_one_success();
    let events = gw.server.as_ref().expect("running").gateway.events.clone();
    events
        .flush(Duration::from_secs(5))
        .await
        .expect("records written");

    let page = admin_get(gw.admin_addr(), "/v1/cdrs?user=alice")
        .await
        .json();
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{page}");
    let (first, second) = (&items[0], &items[1]);
    assert_eq!(first["call_id"], "q1");
    let bytes = first["recording_bytes"]
        .as_u64()
        .expect("first call recorded");
    assert!(bytes > 44 && bytes <= QUOTA, "cut at the quota: {bytes}");
    let wav = std::fs::read(first["recording_path"].as_str().expect("path")).expect("file");
    assert_eq!(assert_valid_wav(&wav) as u64 + 44, bytes);
    assert_eq!(second["call_id"], "q2");
    assert!(second["recording_path"].is_null(), "{second}");
    assert_eq!(second["recording_skipped"], "quota");
    let id = second["id"].as_str().expect("id");
    let r = admin_get(gw.admin_addr(), &format!("/v1/recordings/{id}")).await;
    assert_eq!(r.status, 404, "nothing registered for the skipped call");

    let m = metrics(&gw);
    assert_eq!(
        sample(
            &m,
            r#"callbridge_recordings_skipped_total{reason="quota_cut"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, r#"callbridge_recordings_skipped_total{reason="quota"}"#),
        Some(1.0),
        "{m}"
    );
    assert!(sample(&m, disk).is_some_and(|used| used <= QUOTA as f64));
    gw.stop().await;
}
