//! Call records and recordings: written inside the writer's transaction, read by
//! the API with keyset pagination (`started_at`, `id`), oldest first.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Store, StoreError};
use crate::call::registry::Direction;
use crate::events::record::{CallRecord, MediaMode, RecordingInfo, from_unix_ms, unix_ms};

/// Where a page of records ends: the next page starts after this record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `started_at` of the last record, Unix ms.
    pub started_at_ms: i64,
    /// Its id.
    pub id: String,
}

impl Cursor {
    /// The token handed to API clients: `STARTED_MS.ID` (matches
    /// [`Cursor::PATTERN`]).
    pub fn encode(&self) -> String {
        format!("{}.{}", self.started_at_ms, self.id)
    }

    /// What a valid token looks like (every string matching it decodes).
    pub const PATTERN: &str = "^-?[0-9]{1,15}\\.[A-Za-z0-9_.:-]{1,128}$";

    /// Parses a token made by [`Cursor::encode`].
    pub fn decode(token: &str) -> Option<Cursor> {
        let (ms, id) = token.split_once('.')?;
        let digits = ms.strip_prefix('-').unwrap_or(ms);
        let id_ok = (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if !(1..=15).contains(&digits.len())
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || !id_ok
        {
            return None;
        }
        Some(Cursor {
            started_at_ms: ms.parse().ok()?,
            id: id.to_string(),
        })
    }
}

/// A filter over call records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CdrQuery {
    /// Calls started at or after this Unix ms.
    pub from_ms: Option<i64>,
    /// Calls started before this Unix ms.
    pub to_ms: Option<i64>,
    /// Calls of this user only.
    pub user: Option<String>,
    /// Continue after this record.
    pub after: Option<Cursor>,
    /// Page size.
    pub limit: u32,
}

/// One page of records.
#[derive(Debug, Clone)]
pub struct CdrPage {
    /// The records, oldest first.
    pub items: Vec<CallRecord>,
    /// Where the next page starts, when there may be one.
    pub next: Option<Cursor>,
}

/// A stored recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRow {
    /// The recording (= call) id.
    pub id: String,
    /// The user whose call it is (`None` only for rows older than migration 2
    /// without a call record: then only the operator may read it).
    pub user: Option<String>,
    /// The file.
    pub path: String,
    /// Its media type.
    pub content_type: String,
    /// Its size when it was reported.
    pub bytes: u64,
}

const COLUMNS: &str = "id, call_id, session_id, correlation_id, sip_call_id, user_id, direction,
    from_party, to_party, trunk, started_at_ms, ringing_at_ms, answered_at_ms, ended_at_ms,
    duration_ms, sip_status, end_reason, mode, browser_codec, sip_codec, mos, jitter_ms,
    loss_pct, rtt_ms, recording_path, recording_bytes, recording_duration_ms, recording_skipped";

fn opt_i64(v: Option<u64>) -> Option<i64> {
    v.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// Inserts a record (a record already there is kept).
pub(super) async fn insert(
    tx: &mut Transaction<'static, Any>,
    r: &CallRecord,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO cdrs ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
         $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)
         ON CONFLICT (id) DO NOTHING"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&r.id)
        .bind(&r.call_id)
        .bind(&r.session_id)
        .bind(&r.correlation_id)
        .bind(r.sip_call_id.as_deref())
        .bind(&r.user)
        .bind(r.direction.as_str())
        .bind(&r.from)
        .bind(&r.to)
        .bind(r.trunk.as_deref())
        .bind(unix_ms(r.started_at))
        .bind(r.ringing_at.map(unix_ms))
        .bind(r.answered_at.map(unix_ms))
        .bind(unix_ms(r.ended_at))
        .bind(opt_i64(Some(r.duration_ms)).unwrap_or(0))
        .bind(r.sip_status.map(i64::from))
        .bind(&r.end_reason)
        .bind(r.mode.map(MediaMode::as_str))
        .bind(r.browser_codec.as_deref())
        .bind(r.sip_codec.as_deref())
        .bind(r.mos)
        .bind(r.jitter_ms)
        .bind(r.loss_pct)
        .bind(r.rtt_ms)
        .bind(r.recording_path.as_deref())
        .bind(opt_i64(r.recording_bytes))
        .bind(opt_i64(r.recording_duration_ms))
        .bind(r.recording_skipped.as_deref())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Stores a finished recording and attaches it to its call record, if written.
pub(super) async fn insert_recording(
    tx: &mut Transaction<'static, Any>,
    r: &RecordingInfo,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO recordings (id, correlation_id, path, content_type, bytes, duration_ms,
             created_at_ms, user_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&r.id)
    .bind(&r.correlation_id)
    .bind(&r.path)
    .bind(&r.content_type)
    .bind(opt_i64(Some(r.bytes)))
    .bind(opt_i64(Some(r.duration_ms)))
    .bind(now_ms)
    .bind(&r.user)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE cdrs SET recording_path = $2, recording_bytes = $3, recording_duration_ms = $4
         WHERE id = $1",
    )
    .bind(&r.id)
    .bind(&r.path)
    .bind(opt_i64(Some(r.bytes)))
    .bind(opt_i64(Some(r.duration_ms)))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn to_u64(v: Option<i64>) -> Option<u64> {
    v.and_then(|n| u64::try_from(n).ok())
}

fn decode(row: &AnyRow) -> Result<CallRecord, sqlx::Error> {
    let direction: String = row.try_get("direction")?;
    let mode: Option<String> = row.try_get("mode")?;
    Ok(CallRecord {
        id: row.try_get("id")?,
        call_id: row.try_get("call_id")?,
        session_id: row.try_get("session_id")?,
        correlation_id: row.try_get("correlation_id")?,
        sip_call_id: row.try_get("sip_call_id")?,
        user: row.try_get("user_id")?,
        direction: if direction == "inbound" {
            Direction::Inbound
        } else {
            Direction::Outbound
        },
        from: row.try_get("from_party")?,
        to: row.try_get("to_party")?,
        trunk: row.try_get("trunk")?,
        started_at: from_unix_ms(row.try_get("started_at_ms")?),
        ringing_at: row
            .try_get::<Option<i64>, _>("ringing_at_ms")?
            .map(from_unix_ms),
        answered_at: row
            .try_get::<Option<i64>, _>("answered_at_ms")?
            .map(from_unix_ms),
        ended_at: from_unix_ms(row.try_get("ended_at_ms")?),
        duration_ms: to_u64(Some(row.try_get("duration_ms")?)).unwrap_or(0),
        sip_status: row
            .try_get::<Option<i64>, _>("sip_status")?
            .and_then(|s| u16::try_from(s).ok()),
        end_reason: row.try_get("end_reason")?,
        mode: mode.as_deref().and_then(MediaMode::parse),
        browser_codec: row.try_get("browser_codec")?,
        sip_codec: row.try_get("sip_codec")?,
        mos: row.try_get("mos")?,
        jitter_ms: row.try_get("jitter_ms")?,
        loss_pct: row.try_get("loss_pct")?,
        rtt_ms: row.try_get("rtt_ms")?,
        recording_path: row.try_get("recording_path")?,
        recording_bytes: to_u64(row.try_get("recording_bytes")?),
        recording_duration_ms: to_u64(row.try_get("recording_duration_ms")?),
        recording_skipped: row.try_get("recording_skipped")?,
    })
}

impl Store {
    /// A page of call records matching `query`, oldest first.
    pub async fn cdrs(&self, query: &CdrQuery) -> Result<CdrPage, StoreError> {
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if query.from_ms.is_some() {
            conditions.push(format!("started_at_ms >= {}", next()));
        }
        if query.to_ms.is_some() {
            conditions.push(format!("started_at_ms < {}", next()));
        }
        if query.user.is_some() {
            conditions.push(format!("user_id = {}", next()));
        }
        if query.after.is_some() {
            let (a, b, c) = (next(), next(), next());
            conditions.push(format!(
                "(started_at_ms > {a} OR (started_at_ms = {b} AND id > {c}))"
            ));
        }
        let limit = next();
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let sql =
            format!("SELECT {COLUMNS} FROM cdrs {filter} ORDER BY started_at_ms, id LIMIT {limit}");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(from) = query.from_ms {
            q = q.bind(from);
        }
        if let Some(to) = query.to_ms {
            q = q.bind(to);
        }
        if let Some(user) = &query.user {
            q = q.bind(user.clone());
        }
        if let Some(after) = &query.after {
            q = q
                .bind(after.started_at_ms)
                .bind(after.started_at_ms)
                .bind(after.id.clone());
        }
        let rows = q.bind(i64::from(query.limit)).fetch_all(&self.pool).await?;
        let items = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        let next = (items.len() == query.limit as usize)
            .then(|| items.last())
            .flatten()
            .map(|r| Cursor {
                started_at_ms: unix_ms(r.started_at),
                id: r.id.clone(),
            });
        Ok(CdrPage { items, next })
    }

    /// One call record.
    pub async fn cdr(&self, id: &str) -> Result<Option<CallRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM cdrs WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(decode).transpose()?)
    }

    /// The recording `id`: from the recordings table (its owner from the row, else
    /// from the call record), else from the call record alone.
    pub async fn recording(&self, id: &str) -> Result<Option<RecordingRow>, StoreError> {
        let row = sqlx::query(
            "SELECT r.path, r.content_type, r.bytes, r.user_id, c.user_id AS cdr_user
             FROM recordings r LEFT JOIN cdrs c ON c.id = r.id WHERE r.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let own: Option<String> = row.try_get("user_id")?;
            let cdr_user: Option<String> = row.try_get("cdr_user")?;
            return Ok(Some(RecordingRow {
                id: id.to_string(),
                user: own.or(cdr_user),
                path: row.try_get("path")?,
                content_type: row.try_get("content_type")?,
                bytes: to_u64(Some(row.try_get("bytes")?)).unwrap_or(0),
            }));
        }
        Ok(self.cdr(id).await?.and_then(|r| {
            Some(RecordingRow {
                id: r.id,
                user: Some(r.user),
                content_type: "audio/wav".into(),
                bytes: r.recording_bytes.unwrap_or(0),
                path: r.recording_path?,
            })
        }))
    }

    /// Whether the recordings table has the recording `id` (it was registered).
    pub async fn recording_registered(&self, id: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT id FROM recordings WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }
}
