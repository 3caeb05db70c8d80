//! The drain switch, at the bottom of the module tree: the call layer refuses new
//! calls while it is on, the API and signaling report it, and `server` supervises it
//! (SIGTERM or `POST /v1/drain` start it; calls may finish until the deadline).

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

/// Where a drain stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainInfo {
    /// When it started.
    pub started_at: SystemTime,
    /// When remaining calls get hung up.
    pub deadline: SystemTime,
    /// The same deadline on the monotonic clock.
    deadline_instant: Instant,
}

impl DrainInfo {
    /// The deadline on the monotonic clock (what the drain supervisor waits for).
    pub fn deadline_instant(&self) -> Instant {
        self.deadline_instant
    }
}

/// The drain switch: once started it stays on until the process exits.
#[derive(Debug, Default)]
pub struct Drain {
    /// Cancelled when the drain starts.
    started: CancellationToken,
    /// Set when the drain starts.
    info: Mutex<Option<DrainInfo>>,
}

impl Drain {
    /// Whether the instance is draining (refuse new sessions and calls with
    /// `unavailable`).
    pub fn is_draining(&self) -> bool {
        self.started.is_cancelled()
    }

    /// Starts draining with `timeout`; false when already draining.
    pub fn start(&self, timeout: Duration) -> bool {
        let mut info = self.info.lock().unwrap_or_else(|p| p.into_inner());
        if info.is_some() {
            return false;
        }
        let now = SystemTime::now();
        *info = Some(DrainInfo {
            started_at: now,
            deadline: now + timeout,
            deadline_instant: Instant::now() + timeout,
        });
        self.started.cancel();
        true
    }

    /// The drain's times, once started.
    pub fn info(&self) -> Option<DrainInfo> {
        *self.info.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves when the drain starts.
    pub async fn started(&self) {
        self.started.cancelled().await
    }
}
