//! The dead-letter table: an event (with its call record or recording) that the
//! database kept refusing is moved here, so the writer can go on with the events
//! behind it. The row keeps everything needed to replay it by hand: the event
//! body and the record as JSON (serde escapes every control character, so the
//! payload itself is plain text any database accepts) and the last error.
//!
//! Which errors count against a row is decided by [`StoreError::is_transient`]: an
//! unreachable or overloaded database never dead-letters anything.

use sqlx::Row;

use super::{Store, StoreError};
use crate::events::sanitize::{MAX_ERROR, MAX_ID, MAX_LABEL, clean};

/// One dead-lettered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The event's id.
    pub event_id: String,
    /// The event's `type`.
    pub event_type: String,
    /// When the event happened, Unix ms.
    pub created_at_ms: i64,
    /// When it was given up, Unix ms.
    pub failed_at_ms: i64,
    /// Write attempts made.
    pub attempts: u32,
    /// The database's last answer.
    pub error: String,
    /// The event, its call record and recording as JSON.
    pub payload: String,
}

/// PostgreSQL SQLSTATE classes that say "the server or connection has a problem",
/// not "this row is wrong": connection (08), transaction rollback (40, e.g.
/// serialization failures), insufficient resources (53), operator intervention
/// (57), system error (58), and read-only transaction (25006).
const PG_TRANSIENT_CLASSES: &[&str] = &["08", "40", "53", "57", "58"];

/// SQLite primary result codes of the same kind: BUSY (5), LOCKED (6), NOMEM (7),
/// READONLY (8), IOERR (10), FULL (13), CANTOPEN (14), PROTOCOL (15).
const SQLITE_TRANSIENT: &[i64] = &[5, 6, 7, 8, 10, 13, 14, 15];

impl StoreError {
    /// Whether the failure is the database's state (unreachable, busy, full, read
    /// only) rather than the data written: such a failure is retried without limit
    /// and never moves a row to the dead-letter table.
    pub fn is_transient(&self) -> bool {
        let StoreError::Query(e) = self else {
            return true;
        };
        match e {
            sqlx::Error::Database(db) => {
                let Some(code) = db.code() else {
                    return false;
                };
                // SQLSTATEs are five digits too: ask the driver which one it is.
                if db
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                {
                    return code == "25006"
                        || PG_TRANSIENT_CLASSES.iter().any(|c| code.starts_with(c));
                }
                // SQLite: extended codes carry the primary code in the low byte.
                code.parse::<i64>()
                    .is_ok_and(|n| SQLITE_TRANSIENT.contains(&(n & 0xff)))
            }
            sqlx::Error::Encode(_)
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_) => false,
            _ => true,
        }
    }
}

impl Store {
    /// Stores a dead letter (its text cleaned and bounded so that this insert
    /// cannot fail for the reason the event did). A letter already there is kept.
    pub async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO events_dead_letter (event_id, type, created_at_ms, failed_at_ms,
                 attempts, error, payload)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(clean(&letter.event_id, MAX_ID).into_owned())
        .bind(clean(&letter.event_type, MAX_LABEL).into_owned())
        .bind(letter.created_at_ms)
        .bind(letter.failed_at_ms)
        .bind(i64::from(letter.attempts))
        .bind(clean(&letter.error, MAX_ERROR).into_owned())
        .bind(letter.payload.replace('\0', "\u{FFFD}"))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The latest `limit` dead letters, newest first.
    pub async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_id, type, created_at_ms, failed_at_ms, attempts, error, payload
             FROM events_dead_letter ORDER BY failed_at_ms DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter {
                    event_id: row.try_get("event_id")?,
                    event_type: row.try_get("type")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    failed_at_ms: row.try_get("failed_at_ms")?,
                    attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(0),
                    error: row.try_get("error")?,
                    payload: row.try_get("payload")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
