//! Rate limits (GCRA via `governor`): per client IP for HTTP requests to `/v1` and
//! for WebSocket upgrades, per user for call attempts. Concurrent calls per user
//! are bounded by the call registry (`max_calls` claim or
//! `limits.max_calls_per_user`).
//!
//! The clock is a type parameter: the gateway uses the monotonic clock, tests a
//! `governor::clock::FakeRelativeClock` they advance by hand.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use super::problem::Problem;
use crate::config::RateLimitConfig;
use crate::server::Gateway;

/// How long to wait before trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for a `Retry-After` header (at least 1).
    pub fn secs(self) -> u64 {
        self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)
    }

    /// Milliseconds for protocol `retry_after_ms` (at least 1).
    pub fn millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX).max(1)
    }
}

/// A rate per key: `per_sec` sustained, `burst` at once.
pub struct KeyedLimiter<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    /// The GCRA state per key.
    limiter: RateLimiter<K, HashMapStateStore<K>, C, NoOpMiddleware<C::Instant>>,
    /// The same clock, to turn "not until" into a wait.
    clock: C,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K, DefaultClock> {
    /// A limiter on the monotonic clock.
    pub fn new(per_sec: u32, burst: u32) -> KeyedLimiter<K, DefaultClock> {
        KeyedLimiter::with_clock(per_sec, burst, DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> KeyedLimiter<K, C> {
    /// A limiter on `clock` (values of 0 are raised to 1).
    pub fn with_clock(per_sec: u32, burst: u32, clock: C) -> KeyedLimiter<K, C> {
        let per_sec = NonZeroU32::new(per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_sec).allow_burst(burst);
        KeyedLimiter {
            limiter: RateLimiter::hashmap_with_clock(quota, clock.clone()),
            clock,
        }
    }

    /// Takes one unit for `key`, or says how long to wait.
    pub fn check(&self, key: &K) -> Result<(), RetryAfter> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))
    }

    /// Forgets keys whose state is back to full (bounds memory).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// Every limiter of one gateway instance.
pub struct RateLimits {
    /// HTTP requests to `/v1` per client IP.
    pub http: KeyedLimiter<IpAddr>,
    /// WebSocket upgrades per client IP.
    pub ws: KeyedLimiter<IpAddr>,
    /// Call attempts per user: the session calls `calls.check(&user)` before
    /// `start_outbound` and answers `error` `rate_limited` with `retry_after_ms`;
    /// far-end transfers take from it too (shared with the call manager).
    pub calls: Arc<KeyedLimiter<String>>,
}

impl RateLimits {
    /// The limiters of the `[ratelimit]` section.
    pub fn from_config(config: &RateLimitConfig) -> RateLimits {
        RateLimits {
            http: KeyedLimiter::new(config.http_per_ip_per_sec, config.http_burst),
            ws: KeyedLimiter::new(config.ws_per_ip_per_sec, config.ws_burst),
            calls: Arc::new(KeyedLimiter::new(
                config.calls_per_user_per_sec,
                config.calls_burst,
            )),
        }
    }

    /// Forgets idle keys of every limiter.
    pub fn forget_idle(&self) {
        self.http.forget_idle();
        self.ws.forget_idle();
        self.calls.forget_idle();
    }
}

/// Middleware: 429 problem with `Retry-After` when a client IP exceeds
/// `ratelimit.http_*` on `/v1`.
pub async fn per_ip_http(
    State(gateway): State<Arc<Gateway>>,
    request: Request,
    next: Next,
) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let Some(ip) = ip
        && let Err(wait) = gateway.limits.http.check(&ip)
    {
        gateway
            .metrics
            .rate_limited_total
            .with_label_values(&["http"])
            .inc();
        tracing::info!(%ip, retry_after_ms = wait.millis(), "HTTP rate limit");
        return Problem::too_many_requests(
            format!(
                "more than ratelimit.http_per_ip_per_sec requests from {ip}; retry after {} ms",
                wait.millis()
            ),
            wait,
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn burst_then_rate_with_retry_after_on_fake_time() {
        let clock = FakeRelativeClock::default();
        let limiter = KeyedLimiter::with_clock(2, 3, clock.clone());
        let alice = "alice".to_string();
        for _ in 0..3 {
            assert_eq!(limiter.check(&alice), Ok(()));
        }
        let wait = limiter.check(&alice).expect_err("burst used up");
        assert_eq!(wait.0, Duration::from_millis(500));
        assert_eq!((wait.secs(), wait.millis()), (1, 500));
        assert_eq!(
            limiter.check(&"bob".to_string()),
            Ok(()),
            "keys are independent"
        );
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.check(&alice), Ok(()));
        assert!(limiter.check(&alice).is_err());
        clock.advance(Duration::from_secs(10));
        limiter.forget_idle();
        assert!(limiter.is_empty(), "idle keys are forgotten");
    }
}
