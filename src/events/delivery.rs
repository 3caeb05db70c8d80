//! The delivery worker: finds due outbox rows, leases them, POSTs each signed body
//! to its endpoint (at most `webhooks.concurrency` at once), and records the attempt
//! with the next step from the [`RetryPolicy`]. It runs apart from the calls: a slow
//! or failing receiver only delays its own retries.
//!
//! Durability: a row leaves `pending` only in the transaction that logs a 2xx (or
//! gives up); a worker killed mid-attempt leaves a lease that expires, and the row is
//! sent again (receivers deduplicate by event id).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use super::http::HttpClient;
use super::record::{millis, unix_ms};
use super::schedule::{Next, RetryPolicy};
use super::signature::{SIGNATURE_HEADER, sign};
use super::store::{Attempt, AttemptOutcome, DueDelivery, Store};
use crate::config::{WebhookEndpoint, WebhooksConfig};
use crate::metrics::Metrics;

/// Rows fetched per scan.
const SCAN: u32 = 64;
/// Longest sleep between scans (also picks up rows written by other instances).
const IDLE_SCAN: Duration = Duration::from_secs(10);
/// How often finished rows and old log entries are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The worker's wiring.
pub(super) struct Deliverer {
    /// The database.
    pub store: Store,
    /// Endpoints by name.
    pub endpoints: HashMap<String, WebhookEndpoint>,
    /// Timeouts, retention, concurrency.
    pub config: WebhooksConfig,
    /// Backoff schedule.
    pub policy: RetryPolicy,
    /// The HTTP client.
    pub client: HttpClient,
    /// Delivery counters and the pending gauge.
    pub metrics: Metrics,
    /// Rung by the writer after new rows and by attempts when they finish.
    pub wake: Arc<Notify>,
    /// Stops the worker.
    pub stop: CancellationToken,
}

fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

impl Deliverer {
    /// Runs until `stop`; attempts in flight are awaited (bounded by the timeout).
    pub async fn run(self) {
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(this.config.concurrency));
        let attempts = TaskTracker::new();
        let mut last_prune: Option<Instant> = None;
        while !this.stop.is_cancelled() {
            if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                let before =
                    now_ms() - i64::try_from(millis(this.config.log_retention)).unwrap_or(i64::MAX);
                if let Err(e) = this.store.prune(before).await {
                    warn!(error = %e, "pruning the delivery log failed");
                }
            }
            let mut full_scan = false;
            match this.store.due(now_ms(), SCAN).await {
                Ok(rows) => {
                    full_scan = rows.len() == SCAN as usize;
                    for row in rows {
                        let permit = tokio::select! {
                            p = Arc::clone(&permits).acquire_owned() => p,
                            _ = this.stop.cancelled() => break,
                        };
                        let Ok(permit) = permit else { break };
                        let now = now_ms();
                        let lease =
                            now + i64::try_from(millis(this.config.timeout)).unwrap_or(0) + 5_000;
                        match this
                            .store
                            .claim(&row.event_id, &row.endpoint, now, lease)
                            .await
                        {
                            Ok(true) => {
                                let worker = Arc::clone(&this);
                                let span = info_span!("webhook", event_id = %row.event_id, endpoint = %row.endpoint, correlation_id = %row.correlation_id);
                                attempts.spawn(
                                    async move {
                                        worker.attempt(row).await;
                                        drop(permit);
                                        worker.wake.notify_one();
                                    }
                                    .instrument(span),
                                );
                            }
                            Ok(false) => {
                                debug!(event_id = %row.event_id, "row taken by another worker")
                            }
                            Err(e) => warn!(error = %e, "claiming an outbox row failed"),
                        }
                    }
                }
                Err(e) => warn!(error = %e, "reading the outbox failed"),
            }
            match this.store.pending_count().await {
                Ok(n) => this.metrics.webhook_outbox_pending.set(n),
                Err(e) => debug!(error = %e, "counting the outbox failed"),
            }
            let wait = if full_scan {
                Duration::ZERO
            } else {
                match this.store.next_due_ms().await {
                    Ok(Some(due)) => {
                        Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0))
                            .min(IDLE_SCAN)
                    }
                    Ok(None) => IDLE_SCAN,
                    Err(_) => Duration::from_secs(1),
                }
            };
            tokio::select! {
                _ = this.wake.notified() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(20))) => {}
                _ = this.stop.cancelled() => {}
            }
        }
        attempts.close();
        let _ = tokio::time::timeout(
            this.config.timeout + Duration::from_secs(1),
            attempts.wait(),
        )
        .await;
    }

    /// One attempt of one row, recorded with its outcome.
    async fn attempt(&self, row: DueDelivery) {
        let attempt_no = row.attempts + 1;
        let started_ms = now_ms();
        let started = Instant::now();
        let result = match self.endpoints.get(&row.endpoint) {
            None => Err(format!(
                "endpoint `{}` is no longer configured",
                row.endpoint
            )),
            Some(endpoint) => {
                let t = u64::try_from(started_ms / 1000).unwrap_or(0);
                let headers = [
                    (
                        SIGNATURE_HEADER,
                        sign(endpoint.secret.as_bytes(), t, row.body.as_bytes()),
                    ),
                    ("x-callbridge-event-id", row.event_id.clone()),
                    ("x-callbridge-event-type", row.event_type.clone()),
                    ("x-callbridge-attempt", attempt_no.to_string()),
                    ("x-correlation-id", row.correlation_id.clone()),
                ];
                let post = self
                    .client
                    .post_json(&endpoint.url, &headers, row.body.clone());
                match tokio::time::timeout(self.config.timeout, post).await {
                    Err(_) => Err(format!("no response within {:?}", self.config.timeout)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Ok(Ok(answer)) => Ok(answer),
                }
            }
        };
        let duration_ms = millis(started.elapsed());
        let (status, retry_after, error) = match &result {
            Ok(a) if (200..300).contains(&a.status) => (Some(a.status), None, None),
            Ok(a) => (
                Some(a.status),
                a.retry_after,
                Some(format!("receiver answered {}", a.status)),
            ),
            Err(e) => (None, None, Some(e.clone())),
        };
        let (outcome, retry_at) = if error.is_none() {
            (AttemptOutcome::Delivered, None)
        } else {
            let jitter: f64 = rand::random();
            match self.policy.after_failure(
                attempt_no,
                row.created_at_ms,
                now_ms(),
                jitter,
                retry_after,
            ) {
                Next::RetryAt(at) => (AttemptOutcome::Failed, Some(at)),
                Next::GiveUp => (AttemptOutcome::Dead, None),
            }
        };
        match (&outcome, &error) {
            (AttemptOutcome::Delivered, _) => info!(
                attempt = attempt_no,
                status, duration_ms, "webhook delivered"
            ),
            (AttemptOutcome::Failed, Some(e)) => {
                info!(attempt = attempt_no, error = %e, retry_at, "webhook attempt failed")
            }
            (_, e) => warn!(attempt = attempt_no, error = ?e, "webhook given up after max_age"),
        }
        self.metrics
            .webhook_deliveries_total
            .with_label_values(&[outcome.as_str()])
            .inc();
        let record = Attempt {
            event_id: row.event_id.clone(),
            endpoint: row.endpoint.clone(),
            attempt: attempt_no,
            attempted_at: String::new(),
            duration_ms,
            status,
            outcome,
            error,
            next_attempt_at: None,
        };
        if let Err(e) = self
            .store
            .finish_attempt(&record, started_ms, retry_at)
            .await
        {
            // The lease runs out and the row is attempted again.
            warn!(error = %e, "recording a webhook attempt failed");
        }
    }
}
