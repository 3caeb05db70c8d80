//! The writer task: takes events from the bounded queue the call tasks feed, and
//! writes them in batches (one transaction each: events, outbox rows, call records)
//! before any delivery is attempted.
//!
//! Failures: when the database is unreachable or busy ([`StoreError::is_transient`])
//! the batch is retried with backoff, unchanged (the queue absorbs new events; a
//! full queue drops, it never blocks a call). When the database refuses the batch
//! for its content, its events are written one by one, so one bad event cannot hold
//! back the others; an event refused [`ROW_ATTEMPTS`] times is moved to the
//! dead-letter table (`callbridge_events_dead_letter_total`, an error log) and the
//! writer goes on.

use std::sync::Arc;
use std::time::Duration;

use std::time::SystemTime;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::event::Event;
use super::record::{CallRecord, RecordingInfo, unix_ms};
use super::store::{DeadLetter, Store};
use crate::config::WebhookEndpoint;
use crate::metrics::Metrics;

/// Most events written in one transaction.
const MAX_BATCH: usize = 256;
/// Longest pause between retries of a failed write.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Write attempts of the last batch once shutdown has begun.
const ATTEMPTS_AT_SHUTDOWN: u32 = 3;
/// Times the database may refuse one event (for its content, each attempt in its
/// own transaction, with backoff between) before it is dead-lettered.
pub const ROW_ATTEMPTS: u32 = 3;
/// Pause before the first retry.
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);

/// An event with what is stored alongside it.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The event (and its webhook body).
    pub event: Event,
    /// For `call.ended`: the call record.
    pub cdr: Option<CallRecord>,
    /// For `recording.ready`: the recording.
    pub recording: Option<RecordingInfo>,
}

/// What the queue carries.
#[derive(Debug)]
pub(super) enum Input {
    /// Store this event.
    Event(Box<Pending>),
    /// Answer once everything queued before is written.
    Flush(oneshot::Sender<()>),
}

/// The writer's wiring.
pub(super) struct Writer {
    /// The database.
    pub store: Store,
    /// Endpoints, to fan events out into outbox rows.
    pub endpoints: Arc<[WebhookEndpoint]>,
    /// The queue.
    pub queue: mpsc::Receiver<Input>,
    /// Wakes the delivery worker after a write.
    pub wake: Arc<Notify>,
    /// Set at shutdown: write what is queued, then stop.
    pub stop: CancellationToken,
    /// The dead-letter counter.
    pub metrics: Metrics,
}

/// An event the writer still has to store, with the refusals it has met.
struct Row {
    /// The event.
    pending: Pending,
    /// Times the database refused it for its content.
    refused: u32,
    /// The last error.
    last_error: String,
}

impl Writer {
    /// Runs until `stop` and the queue is empty (or every sender is gone).
    pub async fn run(mut self) {
        loop {
            let first = tokio::select! {
                biased;
                input = self.queue.recv() => input,
                _ = self.stop.cancelled() => self.queue.try_recv().ok(),
            };
            let Some(first) = first else {
                break;
            };
            let mut batch = Vec::new();
            let mut flushes = Vec::new();
            let mut next = Some(first);
            while let Some(input) = next.take() {
                match input {
                    Input::Event(p) => batch.push(*p),
                    Input::Flush(done) => flushes.push(done),
                }
                if batch.len() < MAX_BATCH {
                    next = self.queue.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.write(batch).await;
                self.wake.notify_one();
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    /// Writes `batch`: whole when it can, else event by event, dead-lettering an
    /// event the database keeps refusing. Returns once every event is stored (or
    /// dead-lettered), or at shutdown after a few attempts.
    async fn write(&self, batch: Vec<Pending>) {
        let mut rows: Vec<Row> = batch
            .into_iter()
            .map(|pending| Row {
                pending,
                refused: 0,
                last_error: String::new(),
            })
            .collect();
        let mut delay = FIRST_RETRY_DELAY;
        let mut attempts_after_stop = 0;
        loop {
            let last_error = match self.write_rows(&mut rows).await {
                Ok(()) => return,
                Err(e) => e,
            };
            if self.stop.is_cancelled() {
                attempts_after_stop += 1;
                if attempts_after_stop >= ATTEMPTS_AT_SHUTDOWN {
                    error!(error = %last_error, events = rows.len(), "events lost at shutdown: database unavailable");
                    return;
                }
            } else {
                warn!(error = %last_error, events = rows.len(), retry_in = ?delay, "writing events failed");
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }

    /// One round: the whole batch in one transaction; if the database refuses it,
    /// each event on its own. Keeps in `rows` what is still to write; the error
    /// that ends the round when some are left.
    async fn write_rows(&self, rows: &mut Vec<Row>) -> Result<(), String> {
        let batch: Vec<Pending> = rows.iter().map(|r| r.pending.clone()).collect();
        match self.store.write_batch(&batch, &self.endpoints).await {
            Ok(()) => {
                self.written(&batch).await;
                rows.clear();
                return Ok(());
            }
            Err(e) if e.is_transient() => return Err(e.to_string()),
            Err(e) if rows.len() > 1 => {
                warn!(error = %e, events = rows.len(), "database refused a batch; writing its events one by one");
            }
            Err(_) => {}
        }
        let mut left = Vec::new();
        let mut last = String::new();
        let mut todo = std::mem::take(rows).into_iter();
        for mut row in todo.by_ref() {
            match self
                .store
                .write_batch(std::slice::from_ref(&row.pending), &self.endpoints)
                .await
            {
                Ok(()) => self.written(std::slice::from_ref(&row.pending)).await,
                Err(e) => {
                    let transient = e.is_transient();
                    row.last_error = e.to_string();
                    last = row.last_error.clone();
                    if !transient {
                        row.refused += 1;
                    }
                    if row.refused >= ROW_ATTEMPTS && self.dead_letter(&row).await {
                        continue;
                    }
                    left.push(row);
                    if transient {
                        // The database is down or busy: the rest would fail too.
                        break;
                    }
                }
            }
        }
        left.extend(todo);
        *rows = left;
        if rows.is_empty() { Ok(()) } else { Err(last) }
    }

    /// Moves a refused event to the dead-letter table; false when even that failed
    /// (the event is then tried again in the next round).
    async fn dead_letter(&self, row: &Row) -> bool {
        let event = &row.pending.event;
        let payload = serde_json::json!({
            "event": {
                "id": event.id,
                "type": event.kind.as_str(),
                "created_at_ms": event.created_at_ms,
                "correlation_id": event.correlation_id,
                "call_id": event.call_id,
                "body": event.body,
            },
            "cdr": row.pending.cdr,
            "recording": row.pending.recording.as_ref().map(|r| serde_json::json!({
                "info": r,
                "path": r.path,
            })),
        });
        let letter = DeadLetter {
            event_id: event.id.clone(),
            event_type: event.kind.as_str().to_string(),
            created_at_ms: event.created_at_ms,
            failed_at_ms: unix_ms(SystemTime::now()),
            attempts: row.refused,
            error: row.last_error.clone(),
            payload: payload.to_string(),
        };
        match self.store.dead_letter(&letter).await {
            Ok(()) => {
                self.metrics
                    .events_dead_letter_total
                    .with_label_values(&[event.kind.as_str()])
                    .inc();
                error!(
                    event = event.kind.as_str(),
                    event_id = %event.id,
                    call = ?event.call_id,
                    attempts = row.refused,
                    error = %row.last_error,
                    "database keeps refusing an event: moved to events_dead_letter"
                );
                true
            }
            Err(e) => {
                error!(event_id = %event.id, error = %e, "dead-lettering an event failed; will retry");
                false
            }
        }
    }

    /// After a write: deletes the crash-recovery notes of recordings now stored.
    async fn written(&self, batch: &[Pending]) {
        for sidecar in batch
            .iter()
            .filter_map(|p| p.recording.as_ref()?.sidecar.as_ref())
        {
            match tokio::fs::remove_file(sidecar).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(path = %sidecar.display(), error = %e, "cannot delete a recording note")
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
