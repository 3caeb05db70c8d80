//! The operator-facing sections: `[storage]` (call records and the webhook outbox),
//! `[webhooks]` (receivers, retries), `[ratelimit]` (per-IP and per-user rates) and
//! `[drain]` (graceful shutdown), with their validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// Event types a webhook endpoint can subscribe to.
pub const WEBHOOK_EVENT_TYPES: &[&str] = &[
    "call.started",
    "call.ringing",
    "call.answered",
    "call.ended",
    "recording.ready",
];

/// `[storage]`: where call records and the webhook outbox live.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// SQLite database file, used when `url` is empty (`:memory:` for a throwaway
    /// in-memory database, for tests).
    pub path: PathBuf,
    /// `postgres://user:password@host:port/db` to use PostgreSQL instead of SQLite
    /// (never logged).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Events waiting to be written; beyond this, new events are dropped (and
    /// counted in `callbridge_events_dropped_total`) rather than delaying a call.
    pub queue_capacity: usize,
    /// Database connections in the pool.
    pub max_connections: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("./data/callbridge.db"),
            url: String::new(),
            queue_capacity: 10_000,
            max_connections: 4,
        }
    }
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: only say whether it is set.
        f.debug_struct("StorageConfig")
            .field("path", &self.path)
            .field("url", &(!self.url.is_empty()).then_some("<set>"))
            .field("queue_capacity", &self.queue_capacity)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl StorageConfig {
    /// Whether PostgreSQL is configured.
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }
}

/// `[webhooks]`: receivers of call events and how delivery is retried.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Time allowed for one delivery attempt (connect, send, response head).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Delay before the first retry; doubled on each further failure (with jitter).
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of the retry delay.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// An event not delivered this long after it happened is given up (dead).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Deliveries in flight at once, over all endpoints.
    pub concurrency: usize,
    /// Delivery log entries are kept this long.
    #[serde(with = "humantime_serde")]
    pub log_retention: Duration,
    /// The receivers.
    pub endpoints: Vec<WebhookEndpoint>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(600),
            max_age: Duration::from_secs(24 * 3600),
            concurrency: 8,
            log_retention: Duration::from_secs(7 * 24 * 3600),
            endpoints: Vec::new(),
        }
    }
}

/// `[[webhooks.endpoints]]`: one receiver.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// Name in the delivery log and metrics.
    pub name: String,
    /// `http://` or `https://` URL the events are POSTed to.
    pub url: String,
    /// HMAC-SHA256 key of `X-Callbridge-Signature` (never logged).
    #[serde(skip_serializing)]
    pub secret: String,
    /// Event types sent to this endpoint; empty means all.
    #[serde(default)]
    pub events: Vec<String>,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .finish()
    }
}

impl WebhookEndpoint {
    /// Whether this endpoint wants events of type `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == kind)
    }
}

/// `[ratelimit]`: request rates, each a sustained rate per second plus a burst.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// HTTP requests to `/v1` per second from one client IP.
    pub http_per_ip_per_sec: u32,
    /// Burst of HTTP requests from one client IP.
    pub http_burst: u32,
    /// WebSocket upgrades (`/ws`) per second from one client IP.
    pub ws_per_ip_per_sec: u32,
    /// Burst of WebSocket upgrades from one client IP.
    pub ws_burst: u32,
    /// Call attempts per second of one user.
    pub calls_per_user_per_sec: u32,
    /// Burst of call attempts of one user.
    pub calls_burst: u32,
    /// Protocol messages per second on one WebSocket; beyond it frames are refused
    /// with `rate_limited`, and a client that keeps flooding is closed with 4029.
    pub messages_per_session_per_sec: u32,
    /// Burst of protocol messages on one WebSocket (trickle ICE sends a few at once).
    pub messages_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            http_per_ip_per_sec: 20,
            http_burst: 50,
            ws_per_ip_per_sec: 5,
            ws_burst: 20,
            calls_per_user_per_sec: 2,
            calls_burst: 5,
            messages_per_session_per_sec: 50,
            messages_burst: 200,
        }
    }
}

/// `[drain]`: graceful shutdown on SIGTERM or `POST /v1/drain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Longest wait for calls to end before the rest are hung up and the process
    /// exits.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            timeout: Duration::from_secs(120),
        }
    }
}

/// Checks the operator sections of `config`.
pub fn validate_ops(config: &Config) -> Result<(), ConfigError> {
    let storage = &config.storage;
    if storage.url.is_empty() {
        if storage.path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "storage.path",
                "must not be empty; e.g. \"./data/callbridge.db\"",
            ));
        }
    } else if !storage.is_postgres() {
        return Err(ConfigError::invalid(
            "storage.url",
            "must start with postgres:// (or be empty to use SQLite at storage.path)",
        ));
    }
    for (key, value) in [
        ("storage.queue_capacity", storage.queue_capacity),
        ("storage.max_connections", storage.max_connections as usize),
        ("webhooks.concurrency", config.webhooks.concurrency),
    ] {
        if value == 0 {
            return Err(ConfigError::invalid(key, "must be at least 1"));
        }
    }
    let hooks = &config.webhooks;
    for (key, value) in [
        ("webhooks.timeout", hooks.timeout),
        ("webhooks.initial_backoff", hooks.initial_backoff),
        ("webhooks.max_age", hooks.max_age),
        ("drain.timeout", config.drain.timeout),
    ] {
        if value.is_zero() {
            return Err(ConfigError::invalid(key, "must be more than 0s"));
        }
    }
    if hooks.max_backoff < hooks.initial_backoff {
        return Err(ConfigError::invalid(
            "webhooks.max_backoff",
            "must be at least webhooks.initial_backoff",
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, endpoint) in hooks.endpoints.iter().enumerate() {
        let key = format!("webhooks.endpoints[{i}]");
        if endpoint.name.is_empty() || !names.insert(endpoint.name.as_str()) {
            return Err(ConfigError::invalid(
                format!("{key}.name"),
                "must be set and unique among the endpoints",
            ));
        }
        if !(endpoint.url.starts_with("http://") || endpoint.url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                format!("{key}.url"),
                format!("`{}` is not an http:// or https:// URL", endpoint.url),
            ));
        }
        if endpoint.secret.len() < 16 {
            return Err(ConfigError::invalid(
                format!("{key}.secret"),
                "must be at least 16 characters of random data (e.g. `openssl rand -hex 32`)",
            ));
        }
        for kind in &endpoint.events {
            if !WEBHOOK_EVENT_TYPES.contains(&kind.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{key}.events"),
                    format!(
                        "unknown event `{kind}`; use some of {}",
                        WEBHOOK_EVENT_TYPES.join(", ")
                    ),
                ));
            }
        }
    }
    let rl = &config.ratelimit;
    for (key, value) in [
        ("ratelimit.http_per_ip_per_sec", rl.http_per_ip_per_sec),
        ("ratelimit.http_burst", rl.http_burst),
        ("ratelimit.ws_per_ip_per_sec", rl.ws_per_ip_per_sec),
        ("ratelimit.ws_burst", rl.ws_burst),
        (
            "ratelimit.messages_per_session_per_sec",
            rl.messages_per_session_per_sec,
        ),
        ("ratelimit.messages_burst", rl.messages_burst),
        (
            "ratelimit.calls_per_user_per_sec",
            rl.calls_per_user_per_sec,
        ),
        ("ratelimit.calls_burst", rl.calls_burst),
    ] {
        if value == 0 {
            return Err(ConfigError::invalid(key, "must be at least 1"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        let mut c = Config::default();
        c.auth.hs256_secret = "0123456789abcdef0123456789abcdef".into();
        c
    }

    #[test]
    fn defaults_are_valid_and_safe() {
        let c = base();
        validate_ops(&c).expect("defaults valid");
        assert_eq!(c.storage.path, PathBuf::from("./data/callbridge.db"));
        assert!(!c.storage.is_postgres());
        assert_eq!(c.drain.timeout, Duration::from_secs(120));
    }

    #[test]
    fn errors_name_the_key() {
        let mut c = base();
        c.storage.url = "mysql://x".into();
        let e = validate_ops(&c).expect_err("bad url").to_string();
        assert!(e.contains("storage.url"), "{e}");

        let mut c = base();
        c.webhooks.endpoints.push(WebhookEndpoint {
            name: "crm".into(),
            url: "https://crm.example/hook".into(),
            secret: "0123456789abcdef".into(),
            events: vec!["call.exploded".into()],
        });
        let e = validate_ops(&c).expect_err("bad event").to_string();
        assert!(e.contains("webhooks.endpoints[0].events") && e.contains("call.exploded"));

        let mut c = base();
        c.ratelimit.calls_burst = 0;
        let e = validate_ops(&c).expect_err("zero burst").to_string();
        assert!(e.contains("ratelimit.calls_burst"), "{e}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut c = base();
        c.storage.url = "postgres://u:hunter2@db/cb".into();
        c.webhooks.endpoints.push(WebhookEndpoint {
            name: "crm".into(),
            url: "https://crm.example/hook".into(),
            secret: "very-secret-value-123".into(),
            events: Vec::new(),
        });
        let text = format!("{c:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("very-secret-value-123"),
            "{text}"
        );
    }

    #[test]
    fn endpoint_filters() {
        let mut e = WebhookEndpoint {
            name: "a".into(),
            url: "http://127.0.0.1:1/".into(),
            secret: "s".into(),
            events: Vec::new(),
        };
        assert!(e.wants("call.ended"));
        e.events = vec!["call.ended".into()];
        assert!(e.wants("call.ended") && !e.wants("call.started"));
    }
}
