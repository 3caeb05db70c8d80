//! The PostgreSQL variant of storage, against a real server started by the test:
//! migrations, call records through the API, webhook delivery with retries, and two
//! gateways sharing one database delivering each event once (outbox leases).
//!
//! Skipped with a message only when PostgreSQL is not installed (scripts/deps.sh
//! installs it).

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use callbridge::call::registry::{CallInfo, CallState, Direction};
use callbridge::config::WebhookEndpoint;
use callbridge::events::CallRecord;
use callbridge::signaling::protocol::EndReason;
use common::gateway::{TestGateway, test_config};
use common::http::admin_get;
use common::postgres::Postgres;
use common::receiver::{Policy, Receiver};

const HOOK_SECRET: &str = "postgres-test-hook-secret-01";

fn info(n: u32) -> CallInfo {
    CallInfo {
        id: format!("c-pg{n}"),
        call_id: format!("c{n}"),
        session_id: "s-pg".into(),
        user: "alice".into(),
        direction: Direction::Outbound,
        from: "alice".into(),
        to: "+15551234567".into(),
        trunk: None,
        state: CallState::Answered,
        correlation_id: format!("corr-pg-{n}"),
        sip_call_id: None,
        started_at: SystemTime::now(),
        ringing_at: None,
        answered_at: Some(SystemTime::now()),
    }
}

#[tokio::test]
async fn postgres_storage_records_and_delivers_once_across_two_instances() {
    let pg = match Postgres::start() {
        Ok(pg) => pg,
        Err(why) => {
            eprintln!("SKIPPED webhooks_postgres: cannot run PostgreSQL here: {why}");
            return;
        }
    };
    let receiver = Receiver::start(Policy::FailFirst(1)).await;
    let config = || {
        let mut c = test_config(None);
        c.storage.url = pg.url.clone();
        c.webhooks.initial_backoff = Duration::from_millis(100);
        c.webhooks.max_backoff = Duration::from_millis(300);
        c.webhooks.endpoints = vec![WebhookEndpoint {
            name: "crm".into(),
            url: receiver.url(),
            secret: HOOK_SECRET.into(),
            events: vec!["call.ended".into()],
        }];
        c
    };
    // Two instances on one database; both run delivery workers.
    let one = TestGateway::start(config()).await;
    let two = TestGateway::start(config()).await;
    let events = one.server.as_ref().expect("running").gateway.events.clone();
    for n in 0..6 {
        let call = info(n);
        events.call_started(&call);
        events.call_ended(CallRecord::new(
            &call,
            EndReason::RemoteHangup,
            Some(200),
            SystemTime::now(),
        ));
    }
    receiver
        .wait_for(Duration::from_secs(20), "6 call.ended accepted", |log| {
            log.iter()
                .filter(|r| r.answered < 300)
                .map(|r| &r.event_id)
                .collect::<HashSet<_>>()
                .len()
                == 6
        })
        .await;
    // Give a duplicate (if the lease did not work) time to show up.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let accepted = receiver.accepted();
    assert_eq!(
        accepted.len(),
        6,
        "each event accepted once over both instances"
    );
    for r in &accepted {
        r.verify(HOOK_SECRET).expect("signature");
        assert_eq!(r.json()["type"], "call.ended");
    }

    // Records are visible from the other instance (same database).
    let page = admin_get(two.admin_addr(), "/v1/cdrs?user=alice&limit=4").await;
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    let page = page.json();
    assert_eq!(page["items"].as_array().map(Vec::len), Some(4));
    let cursor = page["next_cursor"].as_str().expect("next page").to_string();
    let rest = admin_get(
        two.admin_addr(),
        &format!("/v1/cdrs?user=alice&limit=4&cursor={cursor}"),
    )
    .await
    .json();
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(rest["items"][0]["end_reason"], "remote_hangup");
    one.stop().await;
    two.stop().await;

    // A restart finds the schema migrated and the data there.
    let again = TestGateway::start(config()).await;
    let r = admin_get(again.admin_addr(), "/v1/cdrs/c-pg3").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["correlation_id"], "corr-pg-3");
    again.stop().await;
}
