//! The location store: which gateway instance holds the live sessions of a user, so
//! an INVITE reaching the wrong instance can be redirected. In-process by default;
//! Redis when `[cluster] redis_url` is set (shared by every instance).
//!
//! Entries expire: each instance refreshes its users while their sessions live.
//! Times are inputs (`now_ms`, Unix milliseconds), so the in-process store is
//! tested without a clock.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

/// Errors of a location store.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    /// Redis failed or is unreachable.
    #[error("location store (redis): {0}")]
    Redis(#[from] redis::RedisError),
}

/// Where users' sessions live.
#[async_trait]
pub trait LocationStore: Send + Sync {
    /// Records that `instance` holds sessions of `user` until `expires_ms`.
    async fn register(
        &self,
        user: &str,
        instance: &str,
        expires_ms: u64,
    ) -> Result<(), LocationError>;
    /// Removes `instance` for `user` (its last session closed).
    async fn unregister(&self, user: &str, instance: &str) -> Result<(), LocationError>;
    /// The instances holding live sessions of `user` at `now_ms`, the most recently
    /// refreshed first.
    async fn lookup(&self, user: &str, now_ms: u64) -> Result<Vec<String>, LocationError>;
}

/// The single-instance store.
#[derive(Debug, Default)]
pub struct InProcessStore {
    /// user → instance → expiry (ms).
    entries: Mutex<HashMap<String, HashMap<String, u64>>>,
}

#[async_trait]
impl LocationStore for InProcessStore {
    async fn register(
        &self,
        user: &str,
        instance: &str,
        expires_ms: u64,
    ) -> Result<(), LocationError> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .entry(user.to_string())
            .or_default()
            .insert(instance.to_string(), expires_ms);
        Ok(())
    }

    async fn unregister(&self, user: &str, instance: &str) -> Result<(), LocationError> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(instances) = entries.get_mut(user) {
            instances.remove(instance);
            if instances.is_empty() {
                entries.remove(user);
            }
        }
        Ok(())
    }

    async fn lookup(&self, user: &str, now_ms: u64) -> Result<Vec<String>, LocationError> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let Some(instances) = entries.get_mut(user) else {
            return Ok(Vec::new());
        };
        instances.retain(|_, expires| *expires > now_ms);
        let mut live: Vec<(&String, &u64)> = instances.iter().collect();
        live.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        Ok(live.into_iter().map(|(uri, _)| uri.clone()).collect())
    }
}

/// The shared store on Redis: one sorted set per user, `instance` scored by expiry.
pub struct RedisStore {
    /// A reconnecting multiplexed connection.
    conn: redis::aio::ConnectionManager,
    /// Key prefix (namespace).
    prefix: String,
}

/// A reconnecting connection to the Redis at `url` (e.g. `redis://127.0.0.1:6379/0`)
/// with bounded waits: a dead Redis must not stall call routing or admission for long.
pub(crate) async fn connect_redis(
    url: &str,
) -> Result<redis::aio::ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
        .set_response_timeout(Some(std::time::Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(std::time::Duration::from_millis(500));
    redis::aio::ConnectionManager::new_with_config(client, config).await
}

impl RedisStore {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379/0`).
    pub async fn connect(url: &str) -> Result<RedisStore, LocationError> {
        let conn = connect_redis(url).await?;
        Ok(RedisStore {
            conn,
            prefix: "callbridge:location:".into(),
        })
    }

    fn key(&self, user: &str) -> String {
        format!("{}{user}", self.prefix)
    }
}

#[async_trait]
impl LocationStore for RedisStore {
    async fn register(
        &self,
        user: &str,
        instance: &str,
        expires_ms: u64,
    ) -> Result<(), LocationError> {
        let key = self.key(user);
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .zadd(&key, instance, expires_ms)
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&key)
            .arg(expires_ms)
            .arg("GT")
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn unregister(&self, user: &str, instance: &str) -> Result<(), LocationError> {
        let mut conn = self.conn.clone();
        redis::cmd("ZREM")
            .arg(self.key(user))
            .arg(instance)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn lookup(&self, user: &str, now_ms: u64) -> Result<Vec<String>, LocationError> {
        let mut conn = self.conn.clone();
        let live: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.key(user))
            .arg("+inf")
            .arg(format!("({now_ms}"))
            .arg("BYSCORE")
            .arg("REV")
            .query_async(&mut conn)
            .await?;
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_entries_expire_and_unregister() {
        let store = InProcessStore::default();
        store
            .register("alice", "sip:a", 1_000)
            .await
            .expect("register");
        store
            .register("alice", "sip:b", 5_000)
            .await
            .expect("register");
        assert_eq!(
            store.lookup("alice", 500).await.expect("lookup"),
            vec!["sip:b", "sip:a"],
            "latest expiry first"
        );
        assert_eq!(
            store.lookup("alice", 1_000).await.expect("lookup"),
            vec!["sip:b"],
            "expired"
        );
        store
            .register("alice", "sip:b", 9_000)
            .await
            .expect("refresh");
        assert_eq!(
            store.lookup("alice", 6_000).await.expect("lookup"),
            vec!["sip:b"],
            "refreshed"
        );
        store
            .unregister("alice", "sip:b")
            .await
            .expect("unregister");
        assert!(store.lookup("alice", 0).await.expect("lookup").is_empty());
        assert!(store.lookup("nobody", 0).await.expect("lookup").is_empty());
    }
}
