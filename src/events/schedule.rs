//! The retry schedule of webhook deliveries, sans-IO: a pure function of the
//! attempt count, the event's age, `now` and a jitter value supplied by the caller.
//!
//! Delay after the n-th failure: `d = min(initial * 2^(n-1), max)`, jittered to
//! `d/2 + d/2 * jitter` ("equal jitter": retries from many gateways spread out but
//! never come sooner than half the nominal delay). A receiver's `Retry-After` is
//! honoured up to `max`. An event older than `max_age` is given up; the last
//! attempt is placed at the `max_age` boundary rather than skipped.

use std::time::Duration;

use crate::config::WebhooksConfig;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this Unix millisecond.
    RetryAt(i64),
    /// Stop: the event is too old (the row becomes `dead`).
    GiveUp,
}

/// Backoff parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Age after which an event is given up.
    pub max_age: Duration,
}

impl RetryPolicy {
    /// The policy of the `[webhooks]` section.
    pub fn from_config(config: &WebhooksConfig) -> RetryPolicy {
        RetryPolicy {
            initial: config.initial_backoff,
            max: config.max_backoff,
            max_age: config.max_age,
        }
    }

    /// The nominal (unjittered) delay after `failures` failed attempts (≥ 1).
    pub fn nominal_delay(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(40);
        self.initial
            .checked_mul(1u32 << shift.min(31))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// Decides the next attempt after `failures` failures of an event created at
    /// `created_ms`, at `now_ms`; `jitter` is in `[0, 1)`; `retry_after` is the
    /// receiver's `Retry-After`, if it sent one.
    pub fn after_failure(
        &self,
        failures: u32,
        created_ms: i64,
        now_ms: i64,
        jitter: f64,
        retry_after: Option<Duration>,
    ) -> Next {
        let deadline = created_ms.saturating_add(ms(self.max_age));
        if now_ms >= deadline {
            return Next::GiveUp;
        }
        let nominal = ms(self.nominal_delay(failures));
        let jitter = jitter.clamp(0.0, 1.0);
        let half = nominal / 2;
        let mut delay = half + ((nominal - half) as f64 * jitter) as i64;
        if let Some(after) = retry_after {
            delay = delay.max(ms(after.min(self.max)));
        }
        Next::RetryAt(now_ms.saturating_add(delay.max(1)).min(deadline))
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = policy();
        let secs: Vec<u64> = (1..=9).map(|n| p.nominal_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(p.nominal_delay(1000), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_between_half_and_full_delay() {
        let p = policy();
        let now = 10_000;
        assert_eq!(
            p.after_failure(3, 0, now, 0.0, None),
            Next::RetryAt(now + 2_000)
        );
        assert_eq!(
            p.after_failure(3, 0, now, 0.999_999, None),
            Next::RetryAt(now + 3_999)
        );
        assert_eq!(
            p.after_failure(3, 0, now, 7.0, None),
            Next::RetryAt(now + 4_000)
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = policy();
        let r = p.after_failure(1, 0, 0, 0.0, Some(Duration::from_secs(30)));
        assert_eq!(r, Next::RetryAt(30_000));
        let r = p.after_failure(1, 0, 0, 0.0, Some(Duration::from_secs(3000)));
        assert_eq!(r, Next::RetryAt(60_000));
    }

    #[test]
    fn gives_up_after_max_age_with_a_last_try_at_the_boundary() {
        let p = policy();
        let created = 1_000_000;
        let deadline = created + 3_600_000;
        assert_eq!(
            p.after_failure(20, created, deadline - 10, 0.5, None),
            Next::RetryAt(deadline)
        );
        assert_eq!(
            p.after_failure(21, created, deadline, 0.5, None),
            Next::GiveUp
        );
    }
}
