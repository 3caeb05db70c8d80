//! Call records (CDRs) and webhooks with a durable outbox.
//!
//! ```text
//! call task ──Events::call_*() (try_send, never blocks)──> bounded queue
//!     └> writer task: one transaction per batch = events + outbox rows + CDRs
//!          └> delivery worker: lease due rows, POST signed body, log the attempt,
//!             retry with backoff + jitter until 2xx or webhooks.max_age
//! ```
//!
//! I/O contract: [`Events::start`] opens the database (running migrations) and
//! spawns the writer and the delivery worker; the handle's `call_*` methods only
//! enqueue. [`Events::shutdown`] writes what is queued and stops both tasks.

mod delivery;
mod event;
mod http;
pub mod record;
pub mod sanitize;
pub mod schedule;
pub mod signature;
pub mod store;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::call::registry::CallInfo;
use crate::config::Config;
use crate::metrics::Metrics;

pub use event::{Event, EventKind};
pub use http::{HttpClient, HttpError};
pub use record::{CallRecord, MediaMode, RecordingInfo};
pub use store::{DeadLetter, Store, StoreError};
pub use writer::{Pending, ROW_ATTEMPTS};

/// Errors of the events service.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// The database could not be opened or migrated.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The queue is full (the database is slow or down); the event was dropped.
    #[error("event queue full; event dropped")]
    QueueFull,
    /// The service has stopped.
    #[error("events service stopped")]
    Stopped,
}

/// The handle the rest of the gateway uses (cheap to clone).
#[derive(Clone)]
pub struct Events {
    /// Shared state.
    inner: Arc<Inner>,
}

struct Inner {
    /// The writer's queue.
    queue: mpsc::Sender<writer::Input>,
    /// The database, for the API's reads.
    store: Store,
    /// Drop counter and quality histograms.
    metrics: Metrics,
    /// Stops the writer and the worker.
    stop: CancellationToken,
    /// The two tasks.
    tasks: TaskTracker,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("backend", &self.inner.store.backend())
            .finish()
    }
}

impl Events {
    /// Opens the database and starts the writer and the delivery worker.
    pub async fn start(config: &Config, metrics: Metrics) -> Result<Events, EventsError> {
        let store = Store::open(&config.storage).await?;
        let (queue, rx) = mpsc::channel(config.storage.queue_capacity);
        let wake = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let endpoints: Arc<[_]> = config.webhooks.endpoints.clone().into();
        tasks.spawn(
            writer::Writer {
                store: store.clone(),
                endpoints: Arc::clone(&endpoints),
                queue: rx,
                wake: Arc::clone(&wake),
                stop: stop.clone(),
                metrics: metrics.clone(),
            }
            .run(),
        );
        tasks.spawn(
            delivery::Deliverer {
                store: store.clone(),
                endpoints: endpoints
                    .iter()
                    .map(|e| (e.name.clone(), e.clone()))
                    .collect::<HashMap<_, _>>(),
                config: config.webhooks.clone(),
                policy: schedule::RetryPolicy::from_config(&config.webhooks),
                client: HttpClient::default(),
                metrics: metrics.clone(),
                wake,
                stop: stop.clone(),
            }
            .run(),
        );
        tasks.close();
        Ok(Events {
            inner: Arc::new(Inner {
                queue,
                store,
                metrics,
                stop,
                tasks,
            }),
        })
    }

    /// The database (for the API's reads).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// `call.started`: the call was admitted. Never blocks.
    pub fn call_started(&self, info: &CallInfo) {
        self.call_event(EventKind::CallStarted, info);
    }

    /// `call.ringing`: first 180/183. Never blocks.
    pub fn call_ringing(&self, info: &CallInfo) {
        self.call_event(EventKind::CallRinging, info);
    }

    /// `call.answered`: 200 OK. Never blocks.
    pub fn call_answered(&self, info: &CallInfo) {
        self.call_event(EventKind::CallAnswered, info);
    }

    /// `call.ended`: stores the call record and sends it in the webhook; observes
    /// the quality histograms (MOS, jitter, loss) from it. Never blocks.
    pub fn call_ended(&self, mut record: CallRecord) {
        if sanitize::call_record(&mut record) {
            tracing::warn!(call = %record.id, "call record had unsafe or overlong text; cleaned before storing");
        }
        let m = &self.inner.metrics;
        if let Some(mos) = record.mos {
            m.call_mos.observe(mos);
        }
        if let Some(jitter) = record.jitter_ms {
            m.call_jitter_seconds.observe(jitter / 1000.0);
        }
        if let Some(loss) = record.loss_pct {
            m.call_packet_loss_ratio.observe(loss / 100.0);
        }
        let event = Event::new(
            EventKind::CallEnded,
            SystemTime::now(),
            &record.correlation_id,
            Some(&record.id),
            &record,
        );
        self.enqueue(Pending {
            event,
            cdr: Some(record),
            recording: None,
        });
    }

    /// `recording.ready`: the recording can be downloaded at
    /// `/v1/recordings/{id}`. Never blocks.
    pub fn recording_ready(&self, mut recording: RecordingInfo) {
        sanitize::recording(&mut recording);
        #[derive(serde::Serialize)]
        struct Data<'a> {
            #[serde(flatten)]
            recording: &'a RecordingInfo,
            download_path: String,
        }
        let data = Data {
            recording: &recording,
            download_path: format!("/v1/recordings/{}", recording.id),
        };
        let event = Event::new(
            EventKind::RecordingReady,
            SystemTime::now(),
            &recording.correlation_id,
            Some(&recording.id),
            &data,
        );
        self.enqueue(Pending {
            event,
            cdr: None,
            recording: Some(recording),
        });
    }

    /// Queues a `webhook.test` event for every endpoint; returns its id.
    pub fn test_event(&self, correlation_id: &str) -> Result<String, EventsError> {
        let data = serde_json::json!({ "message": "test event from callbridge" });
        let event = Event::new(
            EventKind::Test,
            SystemTime::now(),
            correlation_id,
            None,
            &data,
        );
        let id = event.id.clone();
        self.try_enqueue(Pending {
            event,
            cdr: None,
            recording: None,
        })?;
        Ok(id)
    }

    /// Waits until every event queued before this call is written (at most `limit`).
    pub async fn flush(&self, limit: Duration) -> Result<(), EventsError> {
        let (done, wait) = oneshot::channel();
        let send = self.inner.queue.send(writer::Input::Flush(done));
        tokio::time::timeout(limit, async {
            send.await.map_err(|_| EventsError::Stopped)?;
            wait.await.map_err(|_| EventsError::Stopped)
        })
        .await
        .map_err(|_| EventsError::QueueFull)?
    }

    /// Writes what is queued, then stops the writer and the delivery worker
    /// (undelivered rows stay in the outbox for the next start).
    pub async fn shutdown(&self, limit: Duration) {
        self.inner.stop.cancel();
        if tokio::time::timeout(limit, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("events service did not stop within {limit:?}");
        }
    }

    fn call_event(&self, kind: EventKind, info: &CallInfo) {
        let mut info = info.clone();
        sanitize::call_info(&mut info);
        let event = Event::new(
            kind,
            SystemTime::now(),
            &info.correlation_id,
            Some(&info.id),
            &info,
        );
        self.enqueue(Pending {
            event,
            cdr: None,
            recording: None,
        });
    }

    fn enqueue(&self, pending: Pending) {
        let kind = pending.event.kind;
        let id = pending.event.id.clone();
        if let Err(e) = self.try_enqueue(pending) {
            tracing::error!(event = kind.as_str(), event_id = %id, error = %e, "event dropped");
        }
    }

    fn try_enqueue(&self, pending: Pending) -> Result<(), EventsError> {
        let kind = pending.event.kind;
        match self
            .inner
            .queue
            .try_send(writer::Input::Event(Box::new(pending)))
        {
            Ok(()) => Ok(()),
            Err(e) => {
                self.inner
                    .metrics
                    .events_dropped_total
                    .with_label_values(&[kind.as_str()])
                    .inc();
                Err(match e {
                    mpsc::error::TrySendError::Full(_) => EventsError::QueueFull,
                    mpsc::error::TrySendError::Closed(_) => EventsError::Stopped,
                })
            }
        }
    }
}
