//! The database of call records, events and the webhook outbox: SQLite (a file, or
//! memory for tests) or PostgreSQL through one `sqlx::AnyPool`, with the same SQL
//! and schema on both ([`schema`]). Migrations run at [`Store::open`].
//!
//! I/O contract: every method is one short query or one transaction; nothing here
//! holds a connection between calls or reads the clock (times are arguments).

mod cdr;
mod dead_letter;
mod outbox;
mod schema;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

use super::event::EventKind;
use super::writer::Pending;
use crate::config::{StorageConfig, WebhookEndpoint};

pub use cdr::{CdrPage, CdrQuery, Cursor, RecordingRow};
pub use dead_letter::DeadLetter;
pub use outbox::{Attempt, AttemptOutcome, DueDelivery};

/// Errors of the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite directory or database file could not be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database could not be reached (the URL's password is never shown).
    #[error("cannot open {target}: {source}")]
    Open {
        /// The SQLite path or the PostgreSQL host.
        target: String,
        /// The driver error.
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("migration {version} failed: {source}")]
    Migrate {
        /// The migration.
        version: i64,
        /// The driver error.
        source: sqlx::Error,
    },
    /// A query failed.
    #[error("database: {0}")]
    Query(#[from] sqlx::Error),
}

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (embedded).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A handle to the database (cheap to clone).
#[derive(Debug, Clone)]
pub struct Store {
    /// The connection pool.
    pub(in crate::events) pool: AnyPool,
    /// Which SQL engine is behind the pool.
    backend: Backend,
}

impl Store {
    /// Opens (creating when needed) the configured database and migrates it.
    pub async fn open(config: &StorageConfig) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, target, backend) = if config.is_postgres() {
            (config.url.clone(), redact(&config.url), Backend::Postgres)
        } else if config.path.as_os_str() == ":memory:" {
            (
                "sqlite::memory:".to_string(),
                ":memory:".into(),
                Backend::Sqlite,
            )
        } else {
            // The data directory (0700) and the database file (0600) are created
            // private; SQLite gives its -wal and -shm files the database's mode.
            if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                crate::private_fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                    path: dir.display().to_string(),
                    source,
                })?;
                crate::private_fs::warn_if_shared(dir, "the data directory");
            }
            let created = crate::private_fs::create_if_missing(&config.path).map_err(|source| {
                StoreError::CreateDir {
                    path: config.path.display().to_string(),
                    source,
                }
            })?;
            if !created {
                crate::private_fs::warn_if_shared(&config.path, "the database file");
            }
            let path = config.path.display().to_string();
            let encoded: String = path
                .chars()
                .map(|c| match c {
                    '%' => "%25".to_string(),
                    '?' => "%3F".to_string(),
                    '#' => "%23".to_string(),
                    ' ' => "%20".to_string(),
                    c => c.to_string(),
                })
                .collect();
            (
                format!("sqlite://{encoded}?mode=rwc"),
                path,
                Backend::Sqlite,
            )
        };
        let open_err = |source| StoreError::Open {
            target: target.clone(),
            source,
        };
        let options = AnyConnectOptions::from_str(&url).map_err(open_err)?;
        let memory = target == ":memory:";
        // One connection keeps an in-memory database alive (each connection would
        // otherwise get its own).
        let pool = AnyPoolOptions::new()
            .max_connections(if memory { 1 } else { config.max_connections })
            .min_connections(u32::from(memory))
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(300))
            })
            .max_lifetime(if memory {
                None
            } else {
                Some(Duration::from_secs(1800))
            })
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(open_err)?;
        let store = Store { pool, backend };
        if backend == Backend::Sqlite && !memory {
            // WAL: readers (the API) never block the writer; survives SIGKILL intact.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&store.pool)
                .await
                .map_err(open_err)?;
        }
        store.migrate().await?;
        tracing::info!(database = %target, ?backend, "storage ready");
        Ok(store)
    }

    /// Begins a transaction; on SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so two writers wait for each other (busy timeout) instead of
    /// failing on a read-to-write lock upgrade.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// The engine behind the store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the migrations not applied yet, each in its own transaction
    /// (PostgreSQL: under an advisory lock, so instances starting together do not
    /// race).
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        for (version, name, statements) in schema::MIGRATIONS {
            let err = |source| StoreError::Migrate {
                version: *version,
                source,
            };
            let mut tx = self.begin().await.map_err(err)?;
            if self.backend == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock(4242001)")
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
            let applied = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(*version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
            if applied.is_some() {
                continue;
            }
            for statement in *statements {
                sqlx::raw_sql(sqlx::AssertSqlSafe(*statement))
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
            sqlx::query(
                "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)",
            )
            .bind(*version)
            .bind(*name)
            .bind(super::record::unix_ms(std::time::SystemTime::now()))
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            tx.commit().await.map_err(err)?;
            tracing::info!(version, name, "database migrated");
        }
        Ok(())
    }

    /// Writes a batch of events in one transaction: each event, its outbox rows
    /// (one per endpoint that wants it), its call record or recording. Writing an
    /// event twice is harmless (ids are primary keys; duplicates are skipped).
    pub async fn write_batch(
        &self,
        batch: &[Pending],
        endpoints: &[WebhookEndpoint],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        for pending in batch {
            let event = &pending.event;
            let inserted = sqlx::query(
                "INSERT INTO events (id, type, created_at_ms, correlation_id, call_id, body)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&event.id)
            .bind(event.kind.as_str())
            .bind(event.created_at_ms)
            .bind(&event.correlation_id)
            .bind(event.call_id.as_deref())
            .bind(&event.body)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                continue;
            }
            for endpoint in endpoints {
                if event.kind != EventKind::Test && !endpoint.wants(event.kind.as_str()) {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO outbox (event_id, endpoint, created_at_ms, next_attempt_at_ms,
                         lease_until_ms, attempts, state)
                     VALUES ($1, $2, $3, $3, 0, 0, 'pending')",
                )
                .bind(&event.id)
                .bind(&endpoint.name)
                .bind(event.created_at_ms)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(record) = &pending.cdr {
                cdr::insert(&mut tx, record).await?;
            }
            if let Some(recording) = &pending.recording {
                cdr::insert_recording(&mut tx, recording, event.created_at_ms).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Rows of the outbox not delivered or given up yet.
    pub async fn pending_count(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }
}

/// A PostgreSQL URL without credentials or parameters, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "the configured storage.url".into();
    };
    let rest = rest.split('?').next().unwrap_or_default();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests;
