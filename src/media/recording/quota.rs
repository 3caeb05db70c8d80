//! The global recording disk quota (`media.recording_max_total_bytes`): one
//! counter of the bytes under the recording directory, shared by every recorder of
//! the instance. A recorder reserves each block of audio before writing it and
//! stops (truncated) when the reservation is refused; a call whose recording would
//! start with the quota full is not recorded at all.
//!
//! The counter starts from a scan of the directory and is set again from a scan
//! now and then, so files deleted by retention jobs free their space.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::IntGauge;

use super::mixer::{FRAME_BYTES, HEADER_BYTES};

/// Room below which a new recording is not started: the header and one second.
pub const MIN_START_BYTES: u64 = HEADER_BYTES + FRAME_BYTES * super::mixer::RATE as u64;

/// A shared byte budget for recordings (cheap to clone).
#[derive(Debug, Clone)]
pub struct DiskQuota {
    /// The shared counter.
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Largest total, bytes.
    limit: u64,
    /// Bytes used (on disk, or reserved and about to be written).
    used: AtomicU64,
    /// Mirrors `used` for `/metrics`.
    gauge: Option<IntGauge>,
}

impl PartialEq for DiskQuota {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for DiskQuota {}

impl DiskQuota {
    /// A quota of `limit` bytes of which `used` are taken; `gauge` shows the use.
    pub fn new(limit: u64, used: u64, gauge: Option<IntGauge>) -> DiskQuota {
        let quota = DiskQuota {
            inner: Arc::new(Inner {
                limit,
                used: AtomicU64::new(used),
                gauge,
            }),
        };
        quota.show();
        quota
    }

    /// No limit (tests, tools).
    pub fn unlimited() -> DiskQuota {
        DiskQuota::new(u64::MAX, 0, None)
    }

    fn show(&self) {
        if let Some(g) = &self.inner.gauge {
            g.set(i64::try_from(self.used()).unwrap_or(i64::MAX));
        }
    }

    /// The limit, bytes.
    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// Bytes counted as used.
    pub fn used(&self) -> u64 {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// Bytes still free.
    pub fn available(&self) -> u64 {
        self.inner.limit.saturating_sub(self.used())
    }

    /// Whether a new recording may start (at least [`MIN_START_BYTES`] free).
    pub fn can_start(&self) -> bool {
        self.available() >= MIN_START_BYTES.min(self.inner.limit)
    }

    /// Reserves up to `want` bytes; returns how many were granted (0..=want).
    pub fn reserve(&self, want: u64) -> u64 {
        let mut granted = 0;
        let _ = self
            .inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                granted = want.min(self.inner.limit.saturating_sub(used));
                Some(used + granted)
            });
        self.show();
        granted
    }

    /// Gives back bytes reserved and not written.
    pub fn release(&self, bytes: u64) {
        let _ = self
            .inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
        self.show();
    }

    /// Sets the use from a scan of the directory.
    pub fn set_used(&self, bytes: u64) {
        self.inner.used.store(bytes, Ordering::Release);
        self.show();
    }
}

/// Bytes of the regular files directly in `dir` (0 when it does not exist).
pub fn scan(dir: &Path) -> std::io::Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut total = 0u64;
    for entry in entries.flatten() {
        if let Ok(meta) = entry.metadata()
            && meta.is_file()
        {
            total = total.saturating_add(meta.len());
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_release_gives_back() {
        let q = DiskQuota::new(100_000, 10_000, None);
        assert!(q.can_start());
        assert_eq!(q.reserve(50_000), 50_000);
        assert_eq!(q.reserve(50_000), 40_000, "cut at the limit");
        assert_eq!(q.reserve(1), 0);
        assert!(!q.can_start());
        q.release(60_000);
        assert_eq!(q.used(), 40_000);
        assert!(q.can_start());
        q.set_used(99_999);
        assert!(!q.can_start());
        assert_eq!(DiskQuota::unlimited().reserve(1 << 40), 1 << 40);
    }

    #[test]
    fn scan_sums_the_files_of_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.wav"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("a.wav.json"), b"{}").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(scan(dir.path()).unwrap(), 1002);
        assert_eq!(scan(&dir.path().join("missing")).unwrap(), 0);
    }
}
