//! Store tests on an in-memory SQLite database (the PostgreSQL variant runs the
//! same operations in `tests/webhooks_postgres.rs`).

use super::*;
use crate::call::registry::{CallInfo, CallState, Direction};
use crate::config::StorageConfig;
use crate::events::event::Event;
use crate::events::record::{CallRecord, from_unix_ms};
use crate::signaling::protocol::EndReason;

fn endpoint(name: &str, events: &[&str]) -> WebhookEndpoint {
    WebhookEndpoint {
        name: name.into(),
        url: "http://127.0.0.1:9/".into(),
        secret: "0123456789abcdef".into(),
        events: events.iter().map(|s| s.to_string()).collect(),
    }
}

async fn memory() -> Store {
    Store::open(&StorageConfig {
        path: ":memory:".into(),
        ..StorageConfig::default()
    })
    .await
    .expect("open")
}

fn info(id: &str, user: &str, started_ms: i64) -> CallInfo {
    CallInfo {
        id: id.into(),
        call_id: "c1".into(),
        session_id: "s-1".into(),
        user: user.into(),
        direction: Direction::Outbound,
        from: user.into(),
        to: "+15551234567".into(),
        trunk: Some("t".into()),
        state: CallState::Answered,
        correlation_id: format!("corr-{id}"),
        sip_call_id: None,
        started_at: from_unix_ms(started_ms),
        ringing_at: None,
        answered_at: Some(from_unix_ms(started_ms + 1000)),
    }
}

fn ended(id: &str, user: &str, started_ms: i64) -> Pending {
    let mut record = CallRecord::new(
        &info(id, user, started_ms),
        EndReason::Hangup,
        Some(200),
        from_unix_ms(started_ms + 61_000),
    );
    record.mos = Some(4.3);
    let event = Event::new(
        EventKind::CallEnded,
        from_unix_ms(started_ms + 61_000),
        &record.correlation_id,
        Some(id),
        &record,
    );
    Pending {
        event,
        cdr: Some(record),
        recording: None,
    }
}

#[tokio::test]
async fn batch_writes_events_outbox_rows_per_matching_endpoint_and_cdrs() {
    let store = memory().await;
    let endpoints = [endpoint("all", &[]), endpoint("starts", &["call.started"])];
    let batch = vec![ended("c-1", "alice", 1_000), ended("c-2", "bob", 2_000)];
    store.write_batch(&batch, &endpoints).await.expect("write");
    // The same batch again (a retried write) changes nothing.
    store
        .write_batch(&batch, &endpoints)
        .await
        .expect("rewrite");
    assert_eq!(
        store.pending_count().await.expect("count"),
        2,
        "only `all` wants call.ended"
    );
    let r = store.cdr("c-1").await.expect("query").expect("stored");
    assert_eq!(r, batch[0].cdr.clone().expect("cdr"));
    assert_eq!(r.duration_ms, 60_000);
    assert_eq!(r.mos, Some(4.3));
}

#[tokio::test]
async fn cdr_pages_filter_by_time_and_user_with_a_cursor() {
    let store = memory().await;
    let batch: Vec<Pending> = (0..5)
        .map(|i| {
            ended(
                &format!("c-{i}"),
                if i % 2 == 0 { "alice" } else { "bob" },
                1_000 * i,
            )
        })
        .collect();
    store.write_batch(&batch, &[]).await.expect("write");
    let mut query = CdrQuery {
        limit: 2,
        ..CdrQuery::default()
    };
    let page = store.cdrs(&query).await.expect("page 1");
    assert_eq!(
        page.items.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["c-0", "c-1"]
    );
    query.after = page.next.clone();
    let cursor = page.next.expect("more").encode();
    assert_eq!(Cursor::decode(&cursor), query.after);
    let page = store.cdrs(&query).await.expect("page 2");
    assert_eq!(
        page.items.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["c-2", "c-3"]
    );
    let only_alice = CdrQuery {
        user: Some("alice".into()),
        from_ms: Some(1_000),
        to_ms: Some(4_000),
        limit: 10,
        ..CdrQuery::default()
    };
    let page = store.cdrs(&only_alice).await.expect("filtered");
    assert_eq!(
        page.items.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["c-2"]
    );
    assert!(page.next.is_none());
}

#[tokio::test]
async fn outbox_lease_attempt_retry_and_delivery() {
    let store = memory().await;
    store
        .write_batch(&[ended("c-1", "alice", 1_000)], &[endpoint("crm", &[])])
        .await
        .expect("write");
    let now = 100_000;
    let due = store.due(now, 10).await.expect("due");
    assert_eq!(due.len(), 1);
    let row = &due[0];
    assert!(
        store
            .claim(&row.event_id, "crm", now, now + 15_000)
            .await
            .expect("claim")
    );
    assert!(
        !store
            .claim(&row.event_id, "crm", now, now + 15_000)
            .await
            .expect("claim"),
        "leased"
    );
    assert!(
        store.due(now, 10).await.expect("due").is_empty(),
        "leased rows are not due"
    );
    assert_eq!(store.next_due_ms().await.expect("next"), Some(now + 15_000));

    let failed = Attempt {
        event_id: row.event_id.clone(),
        endpoint: "crm".into(),
        attempt: 1,
        attempted_at: String::new(),
        duration_ms: 3,
        status: Some(500),
        outcome: AttemptOutcome::Failed,
        error: Some("receiver answered 500".into()),
        next_attempt_at: None,
    };
    store
        .finish_attempt(&failed, now, Some(now + 2_000))
        .await
        .expect("finish");
    assert!(store.due(now + 1_999, 10).await.expect("due").is_empty());
    let again = store.due(now + 2_000, 10).await.expect("due");
    assert_eq!(again[0].attempts, 1);
    let log = store.attempts(Some(&row.event_id), 10).await.expect("log");
    assert_eq!(log.len(), 1);
    assert!(log[0].next_attempt_at.is_some(), "{log:?}");

    let delivered = Attempt {
        attempt: 2,
        status: Some(204),
        outcome: AttemptOutcome::Delivered,
        error: None,
        ..failed
    };
    store
        .finish_attempt(&delivered, now + 2_000, None)
        .await
        .expect("finish");
    assert_eq!(store.pending_count().await.expect("count"), 0);
    assert_eq!(store.next_due_ms().await.expect("next"), None);
    let log = store.attempts(Some(&row.event_id), 10).await.expect("log");
    assert_eq!(
        log.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        [AttemptOutcome::Failed, AttemptOutcome::Delivered]
    );
    assert!(
        log[0].next_attempt_at.is_none(),
        "no next attempt once delivered"
    );
    let pruned = store.prune(i64::MAX).await.expect("prune");
    assert_eq!(pruned, 2);
    assert!(!store.event_exists(&row.event_id).await.expect("exists"));
    assert!(
        store.cdr("c-1").await.expect("cdr").is_some(),
        "records are kept"
    );
}

#[tokio::test]
async fn sqlite_file_is_created_and_reopened_without_remigrating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StorageConfig {
        path: dir.path().join("sub dir/cb.db"),
        ..StorageConfig::default()
    };
    let store = Store::open(&config).await.expect("open");
    store
        .write_batch(&[ended("c-1", "a", 1)], &[])
        .await
        .expect("write");
    drop(store);
    let store = Store::open(&config).await.expect("reopen");
    assert!(store.cdr("c-1").await.expect("cdr").is_some());
}

#[tokio::test]
async fn instances_opening_one_sqlite_file_together_all_migrate_and_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StorageConfig {
        path: dir.path().join("shared.db"),
        ..StorageConfig::default()
    };
    let opens = (0..6).map(|_| Store::open(&config));
    let stores: Vec<Store> = futures_util::future::join_all(opens)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every instance opens");
    let writes = stores.iter().enumerate().map(|(i, s)| async move {
        s.write_batch(&[ended(&format!("c-{i}"), "u", 1)], &[])
            .await
    });
    for result in futures_util::future::join_all(writes).await {
        result.expect("concurrent writers wait for each other");
    }
    let page = stores[0]
        .cdrs(&CdrQuery {
            limit: 10,
            ..CdrQuery::default()
        })
        .await
        .expect("read");
    assert_eq!(page.items.len(), 6);
}
