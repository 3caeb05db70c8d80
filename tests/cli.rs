//! The `callbridge` binary: `check-config`, `token`, and `serve` on embedded defaults.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_callbridge");
const SECRET: &str = "cli-test-secret-cli-test-secret-0123456789";

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("c.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn minimal_config() -> String {
    format!(
        "[auth]\nhs256_secret = \"{SECRET}\"\n[[sip.trunks]]\nname = \"a\"\naddress = \"127.0.0.1:5070\"\n\
         [[dialplan.routes]]\npattern = \".*\"\ntrunks = [\"a\"]\n"
    )
}

#[test]
fn check_config_accepts_a_good_file_and_names_the_bad_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write_config(dir.path(), &minimal_config());
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let bad = write_config(
        dir.path(),
        &minimal_config().replace("trunks = [\"a\"]", "trunks = [\"zz\"]"),
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dialplan.routes[0].trunks") && stderr.contains("zz"),
        "{stderr}"
    );

    // The example refers to key and certificate files an operator provides: the
    // error says which key points at a missing file.
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/callbridge.example.toml"
    );
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(example)
        .env("CARRIER_A_SIP_PASSWORD", "from-the-environment")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("auth.public_keys[0]"),
        "{stderr}"
    );
}

#[test]
fn token_is_signed_with_the_configured_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_config(dir.path(), &minimal_config());
    let out = Command::new(BIN)
        .args([
            "token",
            "--sub",
            "alice",
            "--scope",
            "calls:outbound",
            "--ttl",
            "1h",
            "--config",
        ])
        .arg(&path)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let config = callbridge::config::AuthConfig {
        hs256_secret: SECRET.into(),
        ..Default::default()
    };
    let verifier = callbridge::auth::Verifier::from_config(&config).expect("verifier");
    let id = verifier
        .verify(&token, common::gateway::now())
        .expect("token verifies");
    assert_eq!(id.user, "alice");
    assert!(id.has(callbridge::auth::Scope::CallsOutbound));
    assert!(!id.has(callbridge::auth::Scope::CallsInbound));
    assert!(id.expires_at >= common::gateway::now() + 3500);

    // Scope admin needs --operator; the operator token has the operator audience.
    let mint = |extra: &[&str]| {
        Command::new(BIN)
            .args(["token", "--sub", "ops", "--scope", "admin", "--config"])
            .arg(&path)
            .args(extra)
            .output()
            .expect("run")
    };
    let out = mint(&[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--operator"), "{stderr}");
    let out = mint(&["--operator"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let now = common::gateway::now();
    let ops = verifier
        .verify_operator(&token, now)
        .expect("operator token");
    assert!(ops.has(callbridge::auth::Scope::Admin));
    assert!(
        verifier.verify(&token, now).is_err(),
        "an operator token is no browser token"
    );
}

/// Kills the child on drop, so a failing test leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_on_embedded_defaults_prints_url_and_a_working_dev_token() {
    // Embedded defaults, moved to ephemeral ports so the test cannot collide.
    let mut child = Child(
        Command::new(BIN)
            .arg("serve")
            .env("CALLBRIDGE_SERVER__LISTEN", "127.0.0.1:0")
            .env("CALLBRIDGE_ADMIN__LISTEN", "127.0.0.1:0")
            .env("CALLBRIDGE_SIP__LISTEN", "127.0.0.1:0")
            .env("CALLBRIDGE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn serve"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            let done = lines
                .last()
                .is_some_and(|l: &String| l.starts_with("dev token"));
            lines.push(line);
            if done || Instant::now() > deadline {
                break;
            }
        }
        lines
    })
    .await
    .expect("reader");
    let url = lines
        .iter()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("ws://")))
        .expect("prints the ws:// URL")
        .to_string();
    let token = lines.last().expect("token line").trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{lines:?}");

    let mut ws = common::gateway::WsClient::connect(&url).await;
    ws.send(json!({"type": "auth", "token": token})).await;
    let ready = ws.recv().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["user"], "dev");
    ws.close().await;

    // SIGTERM stops it cleanly.
    let pid = child.0.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}
