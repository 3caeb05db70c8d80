//! Crash recovery of recordings with the real binary: a gateway recording a call
//! is killed with SIGKILL mid-call, leaving a WAV whose header still says "no
//! audio" and the note written beside it when recording began. A gateway started
//! on the same directories repairs the header, writes the call's record (the
//! process died before it could: reason `error`), registers the recording and
//! announces it; it is then downloadable and valid.
//!
//! Before the fix such a file stayed on disk, unregistered and unreachable.

mod common;
#[path = "common/recorded.rs"]
mod recorded;

use std::path::Path;
use std::time::Duration;

use common::browser::{Browser, BrowserOptions};
use common::call::TestCall;
use common::gateway::{SECRET, WsClient, token};
use common::http::{admin_get, bearer, operator_bearer, request};
use common::process::{GatewayProcess, write_config};
use common::receiver::{Policy, Receiver};
use common::sipp::Sipp;
use recorded::{assert_valid_wav, mode, webhook};
use serde_json::json;

const HOOK_SECRET: &str = "recovery-test-hook-secret-012";

fn config_text(dir: &Path, trunk: std::net::SocketAddr, hook: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[sip]
listen = "127.0.0.1:0"
rtp_ports = "40000-49999"
[[sip.trunks]]
name = "sipp"
address = "{trunk}"
[[dialplan.routes]]
pattern = '^\+[1-8][0-9]*$'
trunks = ["sipp"]
[auth]
hs256_secret = "{SECRET}"
[storage]
path = "{dir}/data/callbridge.db"
[media]
# The test browser is on loopback.
allow_candidate_networks = ["127.0.0.0/8"]
record_all = true
recording_dir = "{dir}/recordings"
[webhooks]
initial_backoff = "200ms"
max_backoff = "1s"
[[webhooks.endpoints]]
name = "crm"
url = "{hook}"
secret = "{HOOK_SECRET}"
events = ["recording.ready", "call.ended"]
"#,
        dir = dir.display()
    )
}

/// The only `*.wav` in `dir` and its length, once it holds more than `min` bytes.
async fn recording_growing_past(dir: &Path, min: u64) -> (std::path::PathBuf, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = std::fs::read_dir(dir).ok().and_then(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "wav"))
        });
        if let Some(path) = found {
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len > min {
                return (path, len);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no recording grew past {min} bytes in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn recording_of_a_killed_gateway_is_repaired_and_registered_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start(Policy::AcceptAll).await;
    let sipp = Sipp::uas(
        None,
        &["-rtp_echo", "-mp", &common::ports::port().to_string()],
    );
    let config = write_config(
        dir.path(),
        &config_text(dir.path(), sipp.addr, &receiver.url()),
    );
    let recordings = dir.path().join("recordings");

    let mut first = GatewayProcess::start(&config, dir.path()).await;
    let mut ws = WsClient::connect(&first.ws_url()).await;
    ws.send(json!({"type": "auth", "token": token("alice", "calls:outbound", 3600)}))
        .await;
    assert_eq!(ws.recv().await["type"], "ready");
    let browser = Browser::new(BrowserOptions::default()).await;
    let mut call = TestCall::place(&mut ws, browser.clone(), "k1", "+15551234567").await;
    call.until(&mut ws, &["answered"]).await;
    assert!(browser.wait_connected(Duration::from_secs(10)).await);
    let _tone = browser.start_sending_tone(500);
    // Half a second of audio on disk, then the process dies mid-call.
    let (wav, _) = recording_growing_past(&recordings, 44 + 16_000).await;
    first.kill().await;
    browser.close().await;

    let id = wav
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("file named after the call")
        .to_string();
    let note = recordings.join(format!("{id}.wav.json"));
    assert!(note.exists(), "the note written when recording began");
    let left = std::fs::read(&wav).expect("wav");
    assert!(left.len() > 44 + 16_000);
    assert_eq!(&left[40..44], &[0, 0, 0, 0], "header never completed");

    let mut second = GatewayProcess::start(&config, dir.path()).await;
    let hook = webhook(&receiver, "recording.ready", |i| i == id).await;
    assert_eq!(hook["data"]["user"], "alice");
    let ended = webhook(&receiver, "call.ended", |i| i == id).await;
    assert_eq!(ended["data"]["end_reason"], "error");

    for auth in [
        operator_bearer("ops", "admin"),
        bearer("alice", "recordings:read"),
    ] {
        let got = request(
            second.http_addr,
            "GET",
            &format!("/v1/recordings/{id}"),
            &[("authorization", &auth)],
            b"",
        )
        .await;
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        let audio = assert_valid_wav(&got.body);
        assert!(
            audio >= 16_000,
            "the audio written before the kill is there"
        );
        assert_eq!(hook["data"]["bytes"].as_u64(), Some(got.body.len() as u64));
    }
    let cdr = admin_get(second.admin(), &format!("/v1/cdrs/{id}"))
        .await
        .json();
    assert_eq!(cdr["user"], "alice");
    assert_eq!(cdr["recording_path"], wav.display().to_string());
    assert!(!note.exists(), "note deleted once registered");
    assert_eq!(mode(&wav), 0o600);

    second.signal("TERM");
    assert!(second.wait_exit(Duration::from_secs(15)).await.success());
    drop(sipp);
}
