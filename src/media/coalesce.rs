//! Timer coalescing: a deadline that may run a little late (RTCP reports, ICE
//! keepalives, statistics, the inactivity check) is moved up to the next point of a
//! process-wide grid, so the periodic work of many calls on one media worker shares a
//! wake-up instead of taking one each. Media itself (packets, playout, DTMF timing)
//! and handshakes are never coalesced.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Spacing of the grid: the most a coalesced deadline fires late.
pub const TIMER_GRID: Duration = Duration::from_millis(100);

/// Where the grid starts (the first use).
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// `at` moved up to the next point of the grid (`at` itself when it is on one, or
/// when it lies before the grid starts).
pub fn coalesce(at: Instant) -> Instant {
    let epoch = *EPOCH.get_or_init(Instant::now);
    let Some(since) = at.checked_duration_since(epoch) else {
        return at;
    };
    let grid = TIMER_GRID.as_nanos();
    let points = since.as_nanos().div_ceil(grid);
    let offset = u64::try_from(points * grid).map_or(since, Duration::from_nanos);
    epoch + offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_move_up_to_a_shared_grid_point() {
        // The grid starts at its first use (maybe by another test): a point after it.
        coalesce(Instant::now());
        let base = coalesce(Instant::now() + Duration::from_millis(1));
        assert_eq!(coalesce(base), base, "a grid point stays");
        for ms in [1, 37, 99, 100] {
            let at = base + Duration::from_millis(ms);
            let moved = coalesce(at);
            assert!(moved >= at && moved - at < TIMER_GRID, "{ms} ms");
            assert_eq!(moved, base + TIMER_GRID, "{ms} ms shares the next point");
        }
        assert_eq!(
            coalesce(base + TIMER_GRID + Duration::from_millis(1)),
            base + 2 * TIMER_GRID
        );
    }
}
