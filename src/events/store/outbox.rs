//! The webhook outbox: one row per (event, endpoint), `pending` until `delivered`
//! or `dead`. A worker claims a due row with a lease (so two instances sharing a
//! PostgreSQL database never send the same row at once, and a row whose worker
//! was killed becomes due again when the lease runs out), attempts it, and
//! records the attempt in the delivery log in the same transaction as the new
//! state.

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError};
use crate::events::record::{from_unix_ms, rfc3339};

/// A row that is due for an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    /// The event.
    pub event_id: String,
    /// The endpoint's name.
    pub endpoint: String,
    /// The event's `type`.
    pub event_type: String,
    /// When the event happened, Unix ms.
    pub created_at_ms: i64,
    /// Attempts made so far.
    pub attempts: u32,
    /// The JSON body.
    pub body: String,
    /// Correlation id of the event.
    pub correlation_id: String,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptOutcome {
    /// 2xx: done.
    Delivered,
    /// Failed; will be retried.
    Failed,
    /// Failed and given up (too old).
    Dead,
}

impl AttemptOutcome {
    /// The stored name (and metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Dead => "dead",
        }
    }
}

/// One entry of the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// The event.
    pub event_id: String,
    /// The endpoint's name.
    pub endpoint: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When it started (RFC 3339).
    pub attempted_at: String,
    /// How long it took, ms.
    pub duration_ms: u64,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// `delivered`, `failed` or `dead`.
    pub outcome: AttemptOutcome,
    /// What went wrong.
    pub error: Option<String>,
    /// For a failed attempt: when the next one is due (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

fn outcome(text: &str) -> AttemptOutcome {
    match text {
        "delivered" => AttemptOutcome::Delivered,
        "dead" => AttemptOutcome::Dead,
        _ => AttemptOutcome::Failed,
    }
}

impl Store {
    /// Up to `limit` rows due at `now_ms` and not leased, earliest first.
    pub async fn due(&self, now_ms: i64, limit: u32) -> Result<Vec<DueDelivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.event_id, o.endpoint, o.created_at_ms, o.attempts, e.type, e.body,
                    e.correlation_id
             FROM outbox o JOIN events e ON e.id = o.event_id
             WHERE o.state = 'pending' AND o.next_attempt_at_ms <= $1 AND o.lease_until_ms <= $1
             ORDER BY o.next_attempt_at_ms LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DueDelivery {
                    event_id: row.try_get("event_id")?,
                    endpoint: row.try_get("endpoint")?,
                    event_type: row.try_get("type")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
                    body: row.try_get("body")?,
                    correlation_id: row.try_get("correlation_id")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Leases a due row until `lease_until_ms`; false when another worker has it.
    pub async fn claim(
        &self,
        event_id: &str,
        endpoint: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET lease_until_ms = $3
             WHERE event_id = $1 AND endpoint = $2 AND state = 'pending' AND lease_until_ms <= $4",
        )
        .bind(event_id)
        .bind(endpoint)
        .bind(lease_until_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records an attempt and moves the row on: delivered, dead, or due again at
    /// `retry_at_ms`.
    pub async fn finish_attempt(
        &self,
        attempt: &Attempt,
        attempted_at_ms: i64,
        retry_at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let status = attempt.status.map(i64::from);
        sqlx::query(
            "INSERT INTO webhook_attempts (id, event_id, endpoint, attempt, attempted_at_ms,
                 duration_ms, status, outcome, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(crate::signaling::random_id("wa-"))
        .bind(&attempt.event_id)
        .bind(&attempt.endpoint)
        .bind(i64::from(attempt.attempt))
        .bind(attempted_at_ms)
        .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
        .bind(status)
        .bind(attempt.outcome.as_str())
        .bind(attempt.error.as_deref())
        .execute(&mut *tx)
        .await?;
        let (state, done_at) = match attempt.outcome {
            AttemptOutcome::Failed => ("pending", None),
            AttemptOutcome::Delivered => ("delivered", Some(attempted_at_ms)),
            AttemptOutcome::Dead => ("dead", Some(attempted_at_ms)),
        };
        sqlx::query(
            "UPDATE outbox SET attempts = $3, state = $4, next_attempt_at_ms = $5,
                 lease_until_ms = 0, last_status = $6, last_error = $7, done_at_ms = $8
             WHERE event_id = $1 AND endpoint = $2",
        )
        .bind(&attempt.event_id)
        .bind(&attempt.endpoint)
        .bind(i64::from(attempt.attempt))
        .bind(state)
        .bind(retry_at_ms.unwrap_or(attempted_at_ms))
        .bind(status)
        .bind(attempt.error.as_deref())
        .bind(done_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// When the earliest pending row becomes due (its lease taken into account).
    pub async fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(CASE WHEN lease_until_ms > next_attempt_at_ms THEN lease_until_ms
                             ELSE next_attempt_at_ms END) AS due
             FROM outbox WHERE state = 'pending'",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<Option<i64>, _>("due")?)
    }

    /// The delivery log of one event, or the latest `limit` entries of all events.
    pub async fn attempts(
        &self,
        event_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Attempt>, StoreError> {
        let select = "SELECT a.event_id, a.endpoint, a.attempt, a.attempted_at_ms, a.duration_ms,
                a.status, a.outcome, a.error, o.next_attempt_at_ms, o.state, o.attempts AS made
             FROM webhook_attempts a
             LEFT JOIN outbox o ON o.event_id = a.event_id AND o.endpoint = a.endpoint";
        let rows = match event_id {
            Some(id) => {
                let sql = format!(
                    "{select} WHERE a.event_id = $1 ORDER BY a.attempted_at_ms, a.attempt LIMIT $2"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!("{select} ORDER BY a.attempted_at_ms DESC LIMIT $1");
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|row| {
                let attempt = u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(0);
                let outcome = outcome(&row.try_get::<String, _>("outcome")?);
                // The next attempt is shown on the latest failed attempt of a pending row.
                let made: Option<i64> = row.try_get("made")?;
                let state: Option<String> = row.try_get("state")?;
                let next_attempt_at = (outcome == AttemptOutcome::Failed
                    && state.as_deref() == Some("pending")
                    && made == Some(i64::from(attempt)))
                .then(|| row.try_get::<Option<i64>, _>("next_attempt_at_ms"))
                .transpose()?
                .flatten()
                .map(|ms| rfc3339(from_unix_ms(ms)));
                Ok(Attempt {
                    event_id: row.try_get("event_id")?,
                    endpoint: row.try_get("endpoint")?,
                    attempt,
                    attempted_at: rfc3339(from_unix_ms(row.try_get("attempted_at_ms")?)),
                    duration_ms: u64::try_from(row.try_get::<i64, _>("duration_ms")?).unwrap_or(0),
                    status: row
                        .try_get::<Option<i64>, _>("status")?
                        .and_then(|s| u16::try_from(s).ok()),
                    outcome,
                    error: row.try_get("error")?,
                    next_attempt_at,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Whether an event with this id was stored.
    pub async fn event_exists(&self, event_id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT id FROM events WHERE id = $1")
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Deletes finished outbox rows, their events and log entries older than
    /// `before_ms` (call records and recordings are kept).
    pub async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let log = sqlx::query("DELETE FROM webhook_attempts WHERE attempted_at_ms < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM outbox WHERE state <> 'pending' AND done_at_ms < $1")
            .bind(before_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM events WHERE created_at_ms < $1
               AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = events.id)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(log.rows_affected())
    }
}
