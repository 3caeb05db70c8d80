//! Webhooks against real HTTP receivers: a receiver that fails the first attempts
//! gets every event in the end, signed, each id once accepted; a filtered endpoint
//! gets only its events; the delivery log and the CDR API show what happened; a
//! receiver that never answers costs the calls nothing and is given up after
//! `webhooks.max_age`.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use callbridge::call::registry::{CallInfo, CallState, Direction};
use callbridge::config::{Config, WebhookEndpoint};
use callbridge::events::{CallRecord, MediaMode, RecordingInfo};
use callbridge::signaling::protocol::EndReason;
use common::gateway::{TestGateway, test_config};
use common::http::admin_get;
use common::receiver::{Policy, Receiver};

const SECRET_A: &str = "receiver-a-secret-0123456789";
const SECRET_B: &str = "receiver-b-secret-0123456789";

fn config(endpoints: Vec<WebhookEndpoint>) -> Config {
    let mut config = test_config(None);
    config.storage.path = ":memory:".into();
    config.webhooks.initial_backoff = Duration::from_millis(100);
    config.webhooks.max_backoff = Duration::from_millis(400);
    config.webhooks.timeout = Duration::from_secs(2);
    config.webhooks.endpoints = endpoints;
    config.ratelimit.http_burst = 1000;
    config
}

fn endpoint(name: &str, url: String, secret: &str, events: &[&str]) -> WebhookEndpoint {
    WebhookEndpoint {
        name: name.into(),
        url,
        secret: secret.into(),
        events: events.iter().map(|e| e.to_string()).collect(),
    }
}

fn call(n: u32) -> CallInfo {
    CallInfo {
        id: format!("c-test{n}"),
        call_id: format!("c{n}"),
        session_id: "s-test".into(),
        user: format!("user{}", n % 2),
        direction: Direction::Outbound,
        from: "alice".into(),
        to: "+15551234567".into(),
        trunk: Some("carrier-a".into()),
        state: CallState::Dialing,
        correlation_id: format!("corr-{n}"),
        sip_call_id: Some(format!("sip-{n}")),
        started_at: SystemTime::now(),
        ringing_at: None,
        answered_at: None,
    }
}

#[tokio::test]
async fn failing_receiver_gets_every_event_signed_once_accepted() {
    let a = Receiver::start(Policy::FailFirst(2)).await;
    let b = Receiver::start(Policy::AcceptAll).await;
    let gw = TestGateway::start(config(vec![
        endpoint("all", a.url(), SECRET_A, &[]),
        endpoint("ended-only", b.url(), SECRET_B, &["call.ended"]),
    ]))
    .await;
    let events = gw.server.as_ref().expect("running").gateway.events.clone();

    // Reporting is synchronous and must never block on the database or receivers
    // (A fails its first deliveries): run it off the runtime and bound the wait, a
    // hang detector rather than a speed check.
    let reporter = events.clone();
    let report = tokio::task::spawn_blocking(move || {
        let events = reporter;
        for n in 0..3 {
            let mut info = call(n);
            events.call_started(&info);
            info.state = CallState::Ringing;
            events.call_ringing(&info);
            info.state = CallState::Answered;
            info.answered_at = Some(SystemTime::now());
            events.call_answered(&info);
            let mut record = CallRecord::new(
                &info,
                EndReason::Hangup,
                Some(200),
                SystemTime::now() + Duration::from_secs(60),
            );
            record.mode = Some(MediaMode::Relay);
            record.mos = Some(4.2);
            record.jitter_ms = Some(3.0);
            record.loss_pct = Some(0.5);
            events.call_ended(record);
        }
        events.recording_ready(RecordingInfo {
            id: "c-test0".into(),
            correlation_id: "corr-0".into(),
            user: "alice".into(),
            path: "/nonexistent.wav".into(),
            content_type: "audio/wav".into(),
            bytes: 1234,
            duration_ms: 60_000,
            sidecar: None,
        });
    });
    tokio::time::timeout(Duration::from_secs(30), report)
        .await
        .expect("reporting events never waits for the database or receivers")
        .expect("reporter");

    a.wait_for(Duration::from_secs(20), "13 events accepted by A", |log| {
        log.iter()
            .filter(|r| r.answered < 300)
            .map(|r| &r.event_id)
            .collect::<HashSet<_>>()
            .len()
            == 13
    })
    .await;
    b.wait_for(Duration::from_secs(10), "3 events accepted by B", |log| {
        log.len() == 3
    })
    .await;

    let log = a.log();
    let accepted = a.accepted();
    let ids: HashSet<&str> = accepted.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(
        ids.len(),
        accepted.len(),
        "each event accepted exactly once"
    );
    let mut attempts: HashMap<&str, usize> = HashMap::new();
    for r in &log {
        *attempts.entry(r.event_id.as_str()).or_default() += 1;
    }
    assert!(
        attempts.values().all(|n| *n == 3),
        "two failures then success: {attempts:?}"
    );
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for r in &accepted {
        r.verify(SECRET_A).expect("signature verifies");
        assert!(
            r.verify(SECRET_B).is_err(),
            "a wrong secret does not verify"
        );
        let body = r.json();
        assert_eq!(body["id"], r.event_id.as_str(), "header and body id agree");
        assert_eq!(body["correlation_id"], r.correlation_id.as_str());
        *kinds
            .entry(body["type"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
        if body["type"] == "call.ended" {
            let data = &body["data"];
            assert_eq!(data["end_reason"], "hangup");
            assert_eq!(data["duration_ms"], 60_000);
            assert_eq!(data["mode"], "relay");
            assert_eq!(data["sip_status"], 200);
        }
        if body["type"] == "recording.ready" {
            assert_eq!(body["data"]["download_path"], "/v1/recordings/c-test0");
            assert!(
                body["data"].get("path").is_none(),
                "no server paths in webhooks"
            );
        }
    }
    let expected: HashMap<String, usize> = [
        ("call.started", 3),
        ("call.ringing", 3),
        ("call.answered", 3),
        ("call.ended", 3),
        ("recording.ready", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(kinds, expected);
    for r in b.log() {
        r.verify(SECRET_B).expect("B's signature");
        assert_eq!(
            r.json()["type"],
            "call.ended",
            "B is filtered to call.ended"
        );
    }

    // The delivery log of one event through the API.
    let ended = accepted
        .iter()
        .find(|r| r.json()["type"] == "call.ended")
        .expect("an ended event");
    let path = format!("/v1/webhooks/deliveries?event_id={}", ended.event_id);
    let deliveries = admin_get(gw.admin_addr(), &path).await;
    assert_eq!(deliveries.status, 200);
    let attempts = deliveries.json()["attempts"]
        .as_array()
        .cloned()
        .expect("attempts");
    let to_a: Vec<_> = attempts
        .iter()
        .filter(|a| a["endpoint"] == "all")
        .map(|a| {
            (
                a["outcome"].as_str().unwrap_or("").to_string(),
                a["status"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        to_a,
        [
            ("failed".to_string(), Some(500)),
            ("failed".to_string(), Some(500)),
            ("delivered".to_string(), Some(204))
        ]
    );
    assert_eq!(
        attempts
            .iter()
            .filter(|a| a["endpoint"] == "ended-only")
            .count(),
        1
    );

    // Call records through the API, paged.
    let page = admin_get(gw.admin_addr(), "/v1/cdrs?limit=2").await.json();
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let page2 = admin_get(
        gw.admin_addr(),
        &format!("/v1/cdrs?limit=2&cursor={cursor}"),
    )
    .await
    .json();
    assert_eq!(page2["items"].as_array().map(Vec::len), Some(1));
    assert!(page2["next_cursor"].is_null());
    let user0 = admin_get(gw.admin_addr(), "/v1/cdrs?user=user0")
        .await
        .json();
    assert_eq!(user0["items"].as_array().map(Vec::len), Some(2));
    let one = admin_get(gw.admin_addr(), "/v1/cdrs/c-test1").await.json();
    assert_eq!(one["correlation_id"], "corr-1");
    assert_eq!(one["mos"], 4.2);
    assert_eq!(one["ringing_at"], serde_json::Value::Null);

    let metrics = common::gateway::http_get(gw.admin_addr(), "/metrics").await;
    assert!(
        metrics.contains(r#"callbridge_webhook_deliveries_total{outcome="delivered"} 16"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"callbridge_webhook_deliveries_total{outcome="failed"} 26"#),
        "{metrics}"
    );
    assert!(metrics.contains("callbridge_call_mos_count 3"), "{metrics}");
    assert!(
        metrics.contains("callbridge_call_jitter_seconds_count 3"),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_given_up_after_max_age() {
    // Accepts TCP connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", silent.local_addr().expect("addr"));
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut config = config(vec![endpoint("silent", url, SECRET_A, &[])]);
    config.webhooks.timeout = Duration::from_millis(300);
    config.webhooks.max_age = Duration::from_secs(1);
    let gw = TestGateway::start(config).await;
    let events = gw.server.as_ref().expect("running").gateway.events.clone();
    // Never blocks on the silent receiver (bounded hang detector, not a speed check).
    let reporter = events.clone();
    tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || reporter.call_started(&call(7))),
    )
    .await
    .expect("reporting never waits for a receiver")
    .expect("reporter");
    let addr = gw.admin_addr();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = admin_get(addr, "/v1/webhooks/deliveries").await.json();
        let attempts = log["attempts"].as_array().cloned().unwrap_or_default();
        if attempts.iter().any(|a| a["outcome"] == "dead") {
            assert!(attempts.iter().all(|a| a["status"].is_null()));
            assert!(
                attempts.iter().any(|a| a["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("no response"))),
                "{attempts:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not given up: {log}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = common::gateway::http_get(addr, "/metrics").await;
    assert!(
        metrics.contains(r#"callbridge_webhook_deliveries_total{outcome="dead"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("callbridge_webhook_outbox_pending 0"),
        "{metrics}"
    );
    hold.abort();
    gw.stop().await;
}
