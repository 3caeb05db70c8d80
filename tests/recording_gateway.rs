//! Recorded calls through a running gateway, both directions: when the call ends
//! at hang-up its recording reaches the call record, the download API and the
//! `recording.ready` webhook; the file, its directory, the data directory and the
//! SQLite database are private to the gateway's user whatever the umask.
//!
//! Before the fix, a recording that ended at hang-up was written but never
//! registered (empty `recording_path`, 404 on download) and inbound calls never
//! sent `recording.ready`.

mod common;
#[path = "common/recorded.rs"]
mod recorded;

use std::path::Path;
use std::time::Duration;

use callbridge::config::{Config, DidConfig, TrunkConfig, WebhookEndpoint};
use common::gateway::{TestGateway, test_config};
use common::http::{admin_get, bearer, request};
use common::receiver::{Policy, Receiver};
use common::sipp::Sipp;
use recorded::{Incoming, assert_valid_wav, mode, talk_and_hang_up, webhook};

const DID: &str = "+15550001111";
const HOOK_SECRET: &str = "recording-test-hook-secret-01";

/// A recording gateway: every call recorded under `dir/recordings`, records in
/// SQLite under `dir/data`, webhooks to `receiver`; outbound through `trunk`,
/// inbound calls to [`DID`] ring alice.
fn config(dir: &Path, trunk: Option<std::net::SocketAddr>, receiver: &Receiver) -> Config {
    let mut c = test_config(trunk);
    c.media.record_all = true;
    c.media.recording_dir = dir.join("recordings");
    c.storage.path = dir.join("data/callbridge.db");
    c.webhooks.initial_backoff = Duration::from_millis(100);
    c.webhooks.endpoints = vec![WebhookEndpoint {
        name: "crm".into(),
        url: receiver.url(),
        secret: HOOK_SECRET.into(),
        events: vec!["recording.ready".into(), "call.ended".into()],
    }];
    c.sip.trunks.push(TrunkConfig {
        name: "carrier".into(),
        address: "127.0.0.1:9".into(),
        ..TrunkConfig::default()
    });
    c.dids.push(DidConfig {
        number: DID.into(),
        user: "alice".into(),
    });
    c
}

/// The recording `id` is in the call record, downloadable by its user, valid; the
/// file is the record's path. Returns the file's length.
async fn assert_registered(gw: &TestGateway, id: &str, user: &str) -> usize {
    let addr = gw.http_addr();
    let cdr = admin_get(gw.admin_addr(), &format!("/v1/cdrs/{id}")).await;
    assert_eq!(cdr.status, 200, "{}", String::from_utf8_lossy(&cdr.body));
    let cdr = cdr.json();
    let path = cdr["recording_path"]
        .as_str()
        .unwrap_or_else(|| panic!("the call record has the recording: {cdr}"))
        .to_string();
    assert!(cdr["recording_skipped"].is_null(), "{cdr}");
    let auth = bearer(user, "recordings:read");
    let got = request(
        addr,
        "GET",
        &format!("/v1/recordings/{id}"),
        &[("authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("content-type"), "audio/wav");
    let audio = assert_valid_wav(&got.body);
    assert!(audio > 0, "the recording holds audio");
    assert_eq!(cdr["recording_bytes"].as_u64(), Some(got.body.len() as u64));
    assert_eq!(
        std::fs::read(&path).expect("file at the record's path"),
        got.body.as_ref()
    );
    assert_eq!(mode(Path::new(&path)), 0o600, "recording file mode");
    got.body.len()
}

#[tokio::test]
async fn outbound_call_recording_is_registered_at_hangup_and_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start(Policy::AcceptAll).await;
    let mut sipp = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let gw = TestGateway::start(config(dir.path(), Some(sipp.addr), &receiver)).await;
    let (mut ws, _) = gw.connect_as("alice", "calls:outbound").await;
    let ended = talk_and_hang_up(&mut ws, "rec-out", "+15551234567", 50, 40).await;
    assert_eq!(ended["reason"], "hangup");
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();

    let hook = webhook(&receiver, "recording.ready", |id| id.starts_with("c-")).await;
    let id = hook["data"]["id"].as_str().expect("id").to_string();
    assert_eq!(hook["data"]["user"], "alice");
    assert_eq!(
        hook["data"]["download_path"],
        format!("/v1/recordings/{id}")
    );
    assert!(hook["data"]["bytes"].as_u64().is_some_and(|b| b > 44));
    let len = assert_registered(&gw, &id, "alice").await;
    assert_eq!(hook["data"]["bytes"].as_u64(), Some(len as u64));
    let ended_hook = webhook(&receiver, "call.ended", |i| i == id).await;
    assert!(ended_hook["data"]["recording_path"].is_string());

    // Private files and directories (the test process's umask is 022).
    let rec = dir.path().join("recordings");
    assert_eq!(mode(&rec), 0o700, "recording directory");
    assert_eq!(mode(&dir.path().join("data")), 0o700, "data directory");
    assert_eq!(
        mode(&dir.path().join("data/callbridge.db")),
        0o600,
        "database"
    );
    let wal = dir.path().join("data/callbridge.db-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600, "database WAL");
    }
    // The crash-recovery note is gone once the recording is stored.
    assert!(!rec.join(format!("{id}.wav.json")).exists());
    gw.stop().await;
}

#[tokio::test]
async fn inbound_call_recording_is_registered_and_announced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start(Policy::AcceptAll).await;
    let gw = TestGateway::start(config(dir.path(), None, &receiver)).await;
    let sip = gw.server.as_ref().expect("running").sip_addr;
    let (mut ws, _) = gw.connect_as("alice", "calls:inbound").await;
    let mut sipp = Sipp::uac(
        &Sipp::scenario("uac_talk.xml"),
        sip,
        DID,
        &[
            "-d",
            "2000",
            "-rtp_echo",
            "-mp",
            &common::ports::port().to_string(),
        ],
    );
    let call = Incoming::accept(&mut ws).await;
    call.until(&mut ws, "answered").await;
    assert!(
        call.browser.wait_connected(Duration::from_secs(10)).await,
        "ICE/DTLS up"
    );
    call.browser.start_sending_tone(40).await.expect("tone");
    assert_eq!(
        call.until(&mut ws, "ended").await["reason"],
        "remote_hangup"
    );
    sipp.wait(Duration::from_secs(20))
        .await
        .assert_one_success();
    call.browser.close().await;

    let hook = webhook(&receiver, "recording.ready", |id| id == call.call_id).await;
    assert_eq!(hook["data"]["user"], "alice");
    assert_registered(&gw, &call.call_id, "alice").await;
    gw.stop().await;
}
