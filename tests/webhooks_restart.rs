//! Durability of the webhook outbox across a crash: the real binary queues events
//! for a receiver that is down, is killed with SIGKILL while they are pending, and
//! delivers every one of them after it is started again.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::gateway::SECRET;
use common::http::{admin_get, admin_post};
use common::process::{GatewayProcess, write_config};
use common::receiver::{Policy, Receiver};

const HOOK_SECRET: &str = "restart-test-hook-secret-0123";

fn config_text(db: &std::path::Path, url: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[sip]
listen = "127.0.0.1:0"
[auth]
hs256_secret = "{SECRET}"
[storage]
path = "{db}"
[webhooks]
initial_backoff = "200ms"
max_backoff = "1s"
timeout = "2s"
[[webhooks.endpoints]]
name = "crm"
url = "{url}"
secret = "{HOOK_SECRET}"
"#,
        db = db.display()
    )
}

#[tokio::test]
async fn pending_events_survive_sigkill_and_are_delivered_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = Receiver::start(Policy::FailAll).await;
    let config = write_config(
        dir.path(),
        &config_text(&dir.path().join("data/callbridge.db"), &receiver.url()),
    );

    let mut first = GatewayProcess::start(&config, dir.path()).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let r = admin_post(first.admin(), "/v1/webhooks/test", None).await;
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        ids.push(r.json()["event_id"].as_str().expect("event id").to_string());
    }
    let wanted: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(wanted.len(), 5, "event ids are unique");
    // Every event has been tried (and refused) at least once: it is in the outbox.
    let expect = wanted.clone();
    receiver
        .wait_for(
            Duration::from_secs(15),
            "a failed attempt of each event",
            move |log| {
                let tried: HashSet<&String> = log.iter().map(|r| &r.event_id).collect();
                expect.iter().all(|id| tried.contains(id))
            },
        )
        .await;
    first.kill().await;
    let attempts_before = receiver.log().len();
    assert!(receiver.accepted().is_empty());

    receiver.set_policy(Policy::AcceptAll);
    let mut second = GatewayProcess::start(&config, dir.path()).await;
    let expect = wanted.clone();
    receiver
        .wait_for(
            Duration::from_secs(20),
            "every event delivered after the restart",
            move |log| {
                let ok: HashSet<&String> = log
                    .iter()
                    .filter(|r| r.answered < 300)
                    .map(|r| &r.event_id)
                    .collect();
                expect.iter().all(|id| ok.contains(id))
            },
        )
        .await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 5, "each event accepted exactly once");
    for r in &accepted {
        r.verify(HOOK_SECRET).expect("signature verifies");
        assert_eq!(r.json()["type"], "webhook.test");
    }
    assert!(receiver.log().len() > attempts_before);

    // The restarted instance's delivery log has the attempts from before the kill.
    // The receiver sees the delivery before the gateway records its outcome: wait
    // for the record.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let outcomes = loop {
        let log = admin_get(
            second.admin(),
            &format!("/v1/webhooks/deliveries?event_id={}", ids[0]),
        )
        .await
        .json();
        let outcomes: Vec<String> = log["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .filter_map(|a| a["outcome"].as_str().map(str::to_owned))
            .collect();
        if outcomes.last().map(String::as_str) == Some("delivered") {
            break outcomes;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery never recorded: {outcomes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        outcomes.len() >= 2 && outcomes[0] == "failed",
        "{outcomes:?}"
    );

    second.signal("TERM");
    let status = second.wait_exit(Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "SIGTERM with no calls exits 0: {status:?}"
    );
}
