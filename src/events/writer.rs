//! The writer task: takes events from the bounded queue the call tasks feed, and
//! writes them in batches (one transaction each: events, outbox rows, call records)
//! before any delivery is attempted. A database error is retried with backoff; the
//! batch stays in memory meanwhile and the queue absorbs new events (a full queue
//! drops, it never blocks a call).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::event::Event;
use super::record::{CallRecord, RecordingInfo};
use super::store::Store;
use crate::config::WebhookEndpoint;

/// Most events written in one transaction.
const MAX_BATCH: usize = 256;
/// Longest pause between retries of a failed write.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// Write attempts of the last batch once shutdown has begun.
const ATTEMPTS_AT_SHUTDOWN: u32 = 3;

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
                self.write(&batch).await;
                self.wake.notify_one();
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    async fn write(&self, batch: &[Pending]) {
        let mut delay = Duration::from_millis(200);
        let mut attempts_after_stop = 0;
        loop {
            match self.store.write_batch(batch, &self.endpoints).await {
                Ok(()) => return,
                Err(e) if self.stop.is_cancelled() => {
                    attempts_after_stop += 1;
                    if attempts_after_stop >= ATTEMPTS_AT_SHUTDOWN {
                        error!(error = %e, events = batch.len(), "events lost at shutdown: database unavailable");
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, events = batch.len(), retry_in = ?delay, "writing events failed")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }
}
