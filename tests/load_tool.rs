//! Smoke test of `callbridge-load` (src/bin/callbridge-load): the built tool starts the
//! built gateway, places 2 calls through it with real WebRTC browsers, answered by the
//! tool's own SIP echo, holds them for a second and writes JSON. Asserts that the
//! calls completed and their audio came back (so the tool cannot rot); never speed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest the tool may run before the test calls it hung.
const HANG: Duration = Duration::from_secs(180);

/// Runs the tool with `args` plus `--json`, returns the parsed JSON.
fn run_tool(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("load.json");
    let mut command = Command::new(env!("CARGO_BIN_EXE_callbridge-load"));
    command
        .args(args)
        .arg("--gateway")
        .arg(env!("CARGO_BIN_EXE_callbridge"))
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The gateway must run on the tool's generated configuration only.
    for (key, _) in std::env::vars() {
        if key.starts_with("CALLBRIDGE_") {
            command.env_remove(key);
        }
    }
    let mut child = command.spawn().expect("start callbridge-load");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the tool") {
            break status;
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            panic!("callbridge-load still running after {HANG:?}: hung");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().expect("tool output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        status.success(),
        "callbridge-load failed ({status}):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("| calls |"),
        "no table on stdout:\n{stdout}"
    );
    read_json(&json)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("the tool wrote --json");
    serde_json::from_str(&text).expect("valid JSON")
}

/// Checks one sweep step of `calls` calls: all up, no failure, audio echoed.
fn assert_step_ok(doc: &Value, calls: u64) -> &Value {
    let step = &doc["results"][0];
    assert_eq!(step["calls"], calls, "{doc:#}");
    assert_eq!(step["failures"], 0, "calls failed: {doc:#}");
    assert_eq!(
        step["audio"]["calls"], calls,
        "not all calls were up: {doc:#}"
    );
    let packets = &step["packets"];
    assert!(packets["sent"].as_u64() > Some(0), "{doc:#}");
    assert!(
        packets["echoed"].as_u64() > Some(0),
        "no audio came back: {doc:#}"
    );
    // Through the tool's SIP echo: the warm-up call and these reached it and hung up.
    let echo = &doc["sip_echo"];
    assert!(echo["invites"].as_u64() >= Some(calls + 1), "{doc:#}");
    assert!(echo["byes"].as_u64() >= Some(calls + 1), "{doc:#}");
    assert!(echo["rtp_echoed"].as_u64() > Some(0), "{doc:#}");
    step
}

#[test]
fn sweep_of_two_relayed_calls_through_the_tools_sip_echo() {
    let doc = run_tool(&[
        "sweep", "--steps", "2", "--hold", "1s", "--settle", "200ms", "--repeat", "1",
    ]);
    let step = assert_step_ok(&doc, 2);
    let packets = &step["packets"];
    // PCMU frames carry their number: what came back is what was sent.
    assert_eq!(packets["corrupt"], 0, "{doc:#}");
    assert_eq!(packets["duplicated"], 0, "{doc:#}");
    assert!(packets["checked"].as_u64() > Some(0), "{doc:#}");
    assert!(step["audio"]["rss_kib"].as_u64() > Some(0), "{doc:#}");
}

/// Also with the browsers on Chrome's RTCP and keepalive intervals (`--chrome-timers`).
#[test]
fn sweep_of_two_transcoded_calls() {
    let doc = run_tool(&[
        "sweep",
        "--steps",
        "2",
        "--hold",
        "1s",
        "--settle",
        "200ms",
        "--codec",
        "opus",
        "--chrome-timers",
    ]);
    assert_eq!(doc["codec"], "opus");
    assert_eq!(doc["chrome_timers"], true, "{doc:#}");
    assert_step_ok(&doc, 2);
}
