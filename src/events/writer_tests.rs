//! The writer against an in-memory SQLite database with a trigger that refuses
//! one call's record (standing in for PostgreSQL refusing a row): the refused event
//! is dead-lettered after [`ROW_ATTEMPTS`] and the events around it are stored.

use std::time::{Duration, SystemTime};

use super::ROW_ATTEMPTS;
use crate::call::registry::{CallInfo, CallState, Direction};
use crate::config::Config;
use crate::events::{CallRecord, Events, StoreError};
use crate::metrics::Metrics;
use crate::signaling::protocol::EndReason;

fn record(id: &str, to: &str) -> CallRecord {
    let info = CallInfo {
        id: id.into(),
        call_id: id.into(),
        session_id: "s-1".into(),
        user: "alice".into(),
        direction: Direction::Outbound,
        from: "alice".into(),
        to: to.into(),
        trunk: None,
        state: CallState::Answered,
        correlation_id: format!("corr-{id}"),
        sip_call_id: Some(format!("sip\0{id}")),
        started_at: SystemTime::now(),
        ringing_at: None,
        answered_at: None,
    };
    CallRecord::new(&info, EndReason::Hangup, Some(200), SystemTime::now())
}

async fn events() -> (Events, Metrics) {
    let mut config = Config::default();
    config.storage.path = ":memory:".into();
    let metrics = Metrics::new(10).expect("metrics");
    let events = Events::start(&config, metrics.clone())
        .await
        .expect("start");
    (events, metrics)
}

#[tokio::test]
async fn a_refused_event_is_dead_lettered_and_the_others_are_written() {
    let (events, metrics) = events().await;
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON cdrs
         WHEN NEW.to_party = '+15550000666'
         BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END",
    )
    .execute(&events.store().pool)
    .await
    .expect("trigger");
    events.call_ended(record("c-good1", "+15551234567"));
    events.call_ended(record("c-poison", "+15550000666"));
    events.call_ended(record("c-good2", "+15551234567"));
    events
        .flush(Duration::from_secs(10))
        .await
        .expect("flushed");
    let store = events.store();
    for id in ["c-good1", "c-good2"] {
        let r = store.cdr(id).await.expect("query").expect("stored");
        // The NUL of the SIP Call-ID was replaced before storing.
        assert_eq!(
            r.sip_call_id.as_deref(),
            Some(format!("sip\u{FFFD}{id}").as_str())
        );
    }
    assert!(store.cdr("c-poison").await.expect("query").is_none());
    let letters = store.dead_letters(10).await.expect("letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.event_type, "call.ended");
    assert_eq!(letter.attempts, ROW_ATTEMPTS);
    assert!(
        letter.error.contains("refused by test trigger"),
        "{}",
        letter.error
    );
    let payload: serde_json::Value = serde_json::from_str(&letter.payload).expect("json");
    assert_eq!(payload["cdr"]["id"], "c-poison");
    assert!(
        metrics
            .render()
            .contains(r#"callbridge_events_dead_letter_total{event="call.ended"} 1"#),
        "{}",
        metrics.render()
    );
    // The writer goes on: a later event is written at once.
    events.call_ended(record("c-later", "+15551234567"));
    events.flush(Duration::from_secs(5)).await.expect("flushed");
    assert!(store.cdr("c-later").await.expect("query").is_some());
    events.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn content_errors_count_against_a_row_and_outages_do_not() {
    let (events, _) = events().await;
    let refused =
        sqlx::raw_sql("CREATE TABLE t (x BIGINT CHECK (x > 0)); INSERT INTO t VALUES (0)")
            .execute(&events.store().pool)
            .await
            .expect_err("check fails");
    assert!(!StoreError::Query(refused).is_transient());
    assert!(StoreError::Query(sqlx::Error::PoolTimedOut).is_transient());
    assert!(StoreError::Query(sqlx::Error::Io(std::io::Error::other("reset"))).is_transient());
    events.shutdown(Duration::from_secs(5)).await;
}
