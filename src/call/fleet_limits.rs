//! Per-user concurrent outbound calls across the fleet (`[cluster] redis_url`): without
//! it, `limits.max_calls_per_user` (or a token's `max_calls`) held per instance, so a
//! user spreading sessions over N instances could place N times the calls the limit
//! allows (and spend N times the money).
//!
//! Each admitted outbound call holds a lease in Redis: a member (its gateway-wide call
//! id) of the sorted set `callbridge:calls:<user>`, scored by when the lease runs out.
//! Admission is one Lua script (drop expired leases, count, add if below the limit), so
//! two instances admitting at once cannot both take the last slot. The instance renews
//! its calls' leases every [`RENEW_EVERY`] and removes a lease when its call ends; a
//! crashed instance's leases run out after [`LEASE`]. The local registry still applies
//! the limit first (and alone when Redis cannot be reached: the call is then admitted
//! on the instance's own count, logged and counted, rather than refusing every call).

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

/// How long a lease lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(90);
/// How often an instance renews its calls' leases.
pub const RENEW_EVERY: Duration = Duration::from_secs(30);

/// Key prefix of the users' lease sets.
const PREFIX: &str = "callbridge:calls:";

/// Drops expired leases, then adds ours if fewer than the limit are held. KEYS[1]: the
/// user's set; ARGV: now (ms), our lease's expiry (ms), our member, the limit, the
/// set's TTL (ms). Returns -1 when admitted, else the number of live leases.
const ADMIT: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local held = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then return -1 end
if held >= tonumber(ARGV[4]) then return held end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return -1
";

/// Errors of the lease store.
#[derive(Debug, thiserror::Error)]
pub enum FleetLimitError {
    /// Redis failed or is unreachable (gateway side, retryable).
    #[error("fleet call limits (redis): {0}")]
    Redis(#[from] redis::RedisError),
}

/// The fleet's count of a user's calls says no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverFleetLimit {
    /// Calls the user holds across the fleet.
    pub held: usize,
}

/// Leases of outbound calls in Redis, or nothing (a single instance).
#[derive(Clone)]
pub struct FleetLimits {
    /// The shared store; None: the local registry's count is the only one.
    conn: Option<redis::aio::ConnectionManager>,
    /// Admissions decided by the local count because Redis failed.
    unchecked: prometheus::IntCounter,
}

impl std::fmt::Debug for FleetLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetLimits")
            .field("shared", &self.conn.is_some())
            .finish()
    }
}

fn key(user: &str) -> String {
    format!("{PREFIX}{user}")
}

impl FleetLimits {
    /// No shared store: limits are per instance.
    pub fn local(unchecked: prometheus::IntCounter) -> FleetLimits {
        FleetLimits {
            conn: None,
            unchecked,
        }
    }

    /// Leases in the Redis at `url`.
    pub async fn redis(
        url: &str,
        unchecked: prometheus::IntCounter,
    ) -> Result<FleetLimits, FleetLimitError> {
        let conn = super::location::connect_redis(url).await?;
        Ok(FleetLimits {
            conn: Some(conn),
            unchecked,
        })
    }

    /// Whether the fleet's leases are shared (Redis configured).
    pub fn shared(&self) -> bool {
        self.conn.is_some()
    }

    /// Takes a lease for `call` of `user` unless `limit` leases are live (`now_ms`:
    /// Unix time). Admits when Redis fails (the local count already held).
    pub async fn admit(
        &self,
        user: &str,
        call: &str,
        limit: usize,
        now_ms: u64,
    ) -> Result<(), OverFleetLimit> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let mut conn = conn.clone();
        let lease = LEASE.as_millis() as u64;
        let result: Result<i64, redis::RedisError> = redis::cmd("EVAL")
            .arg(ADMIT)
            .arg(1)
            .arg(key(user))
            .arg(now_ms)
            .arg(now_ms + lease)
            .arg(call)
            .arg(limit)
            .arg(lease)
            .query_async(&mut conn)
            .await;
        match result {
            Ok(held) if held >= 0 => Err(OverFleetLimit {
                held: usize::try_from(held).unwrap_or(usize::MAX),
            }),
            Ok(_) => Ok(()),
            Err(e) => {
                self.unchecked.inc();
                warn!(error = %e, "fleet call limit not checked (redis); admitted on this instance's count");
                Ok(())
            }
        }
    }

    /// Gives back `call`'s lease (its call ended).
    pub async fn release(&self, user: &str, call: &str) {
        let Some(conn) = &self.conn else {
            return;
        };
        let mut conn = conn.clone();
        if let Err(e) = redis::cmd("ZREM")
            .arg(key(user))
            .arg(call)
            .query_async::<()>(&mut conn)
            .await
        {
            warn!(error = %e, "fleet call lease not released (redis); it runs out by itself");
        }
    }

    /// Renews the leases of `calls` (user, call id) still up on this instance.
    pub async fn renew(&self, calls: &[(String, String)], now_ms: u64) {
        let Some(conn) = &self.conn else {
            return;
        };
        if calls.is_empty() {
            return;
        }
        let lease = LEASE.as_millis() as u64;
        let mut pipe = redis::pipe();
        for (user, call) in calls {
            // XX: only a lease we still hold (a released one stays released).
            pipe.cmd("ZADD")
                .arg(key(user))
                .arg("XX")
                .arg(now_ms + lease)
                .arg(call)
                .ignore()
                .cmd("PEXPIRE")
                .arg(key(user))
                .arg(lease)
                .ignore();
        }
        let mut conn = conn.clone();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            warn!(error = %e, calls = calls.len(), "fleet call leases not renewed (redis)");
        }
    }
}

/// Renews this instance's outbound calls' leases every [`RENEW_EVERY`] until `stop`.
pub fn spawn_renewal(
    limits: Arc<FleetLimits>,
    registry: Arc<super::registry::CallRegistry>,
    stop: tokio_util::sync::CancellationToken,
) {
    if !limits.shared() {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RENEW_EVERY) => {}
                _ = stop.cancelled() => break,
            }
            let calls: Vec<(String, String)> = registry
                .list()
                .into_iter()
                .filter(|c| c.direction == super::registry::Direction::Outbound)
                .map(|c| (c.user, c.id))
                .collect();
            limits.renew(&calls, super::inbound::now_ms()).await;
        }
    });
}
