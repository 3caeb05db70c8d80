//! The schema, as numbered migrations applied in order at start. The same SQL runs
//! on SQLite and PostgreSQL: integers are `BIGINT`, reals `DOUBLE PRECISION`, ids
//! `TEXT`, times Unix milliseconds; no autoincrement, no dialect-specific types.
//! A migration, once released, never changes: add a new one.

/// `(version, name, statements)` in order.
pub const MIGRATIONS: &[(i64, &str, &[&str])] = &[
    (
        1,
        "call records, events, webhook outbox and delivery log",
        &[
            "CREATE TABLE cdrs (
            id TEXT PRIMARY KEY,
            call_id TEXT NOT NULL,
            session_id TEXT NOT NULL,
            correlation_id TEXT NOT NULL,
            sip_call_id TEXT,
            user_id TEXT NOT NULL,
            direction TEXT NOT NULL,
            from_party TEXT NOT NULL,
            to_party TEXT NOT NULL,
            trunk TEXT,
            started_at_ms BIGINT NOT NULL,
            ringing_at_ms BIGINT,
            answered_at_ms BIGINT,
            ended_at_ms BIGINT NOT NULL,
            duration_ms BIGINT NOT NULL,
            sip_status BIGINT,
            end_reason TEXT NOT NULL,
            mode TEXT,
            browser_codec TEXT,
            sip_codec TEXT,
            mos DOUBLE PRECISION,
            jitter_ms DOUBLE PRECISION,
            loss_pct DOUBLE PRECISION,
            rtt_ms DOUBLE PRECISION,
            recording_path TEXT,
            recording_bytes BIGINT,
            recording_duration_ms BIGINT
        )",
            "CREATE INDEX cdrs_started ON cdrs (started_at_ms, id)",
            "CREATE INDEX cdrs_user_started ON cdrs (user_id, started_at_ms, id)",
            "CREATE TABLE recordings (
            id TEXT PRIMARY KEY,
            correlation_id TEXT NOT NULL,
            path TEXT NOT NULL,
            content_type TEXT NOT NULL,
            bytes BIGINT NOT NULL,
            duration_ms BIGINT NOT NULL,
            created_at_ms BIGINT NOT NULL
        )",
            "CREATE TABLE events (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            correlation_id TEXT NOT NULL,
            call_id TEXT,
            body TEXT NOT NULL
        )",
            "CREATE TABLE outbox (
            event_id TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            next_attempt_at_ms BIGINT NOT NULL,
            lease_until_ms BIGINT NOT NULL,
            attempts BIGINT NOT NULL,
            state TEXT NOT NULL,
            last_status BIGINT,
            last_error TEXT,
            done_at_ms BIGINT,
            PRIMARY KEY (event_id, endpoint)
        )",
            "CREATE INDEX outbox_due ON outbox (state, next_attempt_at_ms)",
            "CREATE TABLE webhook_attempts (
            id TEXT PRIMARY KEY,
            event_id TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            attempt BIGINT NOT NULL,
            attempted_at_ms BIGINT NOT NULL,
            duration_ms BIGINT NOT NULL,
            status BIGINT,
            outcome TEXT NOT NULL,
            error TEXT
        )",
            "CREATE INDEX webhook_attempts_event ON webhook_attempts (event_id, attempted_at_ms)",
        ],
    ),
    (
        2,
        "dead-letter table for events the database refuses; recording owner; recording skipped",
        &[
            "CREATE TABLE events_dead_letter (
                event_id TEXT PRIMARY KEY,
                type TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                failed_at_ms BIGINT NOT NULL,
                attempts BIGINT NOT NULL,
                error TEXT NOT NULL,
                payload TEXT NOT NULL
            )",
            "CREATE INDEX events_dead_letter_failed ON events_dead_letter (failed_at_ms)",
            "ALTER TABLE recordings ADD COLUMN user_id TEXT",
            "ALTER TABLE cdrs ADD COLUMN recording_skipped TEXT",
        ],
    ),
];
