//! Deadlines placed on tokio's timer grid, so that a timer that is usually moved on before
//! it runs out costs no wake-up.
//!
//! tokio's timer wheel counts milliseconds from the runtime's start and keeps a timer that
//! is due beyond the current 64 ms block in a coarser level. The driver sleeps only until
//! the start of that timer's 64 ms slot, wakes there to move the timer down, and sleeps
//! again. A timer due at `now + 90 ms` therefore wakes the thread 27..90 ms from now even if
//! it is moved on before it is due. Measured with `strace` on an idle follower: half of its
//! wake-ups (21 a second) were these, for its quiet-leader timer (now its election
//! deadline) and the group loop's idle timer, which a heartbeat moves on long before
//! either runs out.
//!
//! A deadline exactly on a block boundary has its slot start at the deadline itself, so
//! the thread wakes only if the timer really runs out. So a timer whose deadline may lie
//! anywhere in a window goes on a boundary in that window, and a heartbeat that is a whole
//! number of blocks (the default is two) beats on boundaries. This leans on how tokio's
//! wheel works, not on anything tokio promises: if that changes, the timers still run out
//! when they should, and only the saving is lost. (A start marked more than 1 ms before tokio's own costs the same: the
//! boundaries then miss tokio's by a millisecond.)

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// The width of a slot in the wheel's second level: 64 slots of 1 ms below it.
pub const BLOCK: Duration = Duration::from_millis(64);

static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Records the grid's origin. Call it right before building the runtime whose timers the
/// grid is for, on the same thread: tokio takes its own start a few microseconds later, and
/// its rounding of deadlines up to the next whole millisecond absorbs the difference.
/// Only the first call counts.
pub fn mark_runtime_start() {
    let _ = ORIGIN.set(Instant::now());
}

/// The grid of the runtime the daemon runs on, or no grid (deadlines left as they are)
/// where no start was marked: in tests that build their own runtimes.
pub fn current() -> Grid {
    Grid {
        origin: ORIGIN.get().copied(),
    }
}

/// Block boundaries from an origin; without one (`Default`), there are none.
#[derive(Debug, Clone, Copy, Default)]
pub struct Grid {
    origin: Option<Instant>,
}

impl Grid {
    pub fn with_origin(origin: Instant) -> Self {
        Self {
            origin: Some(origin),
        }
    }

    /// The first block boundary in `earliest..=latest`, if there is one.
    pub fn first_boundary_in(&self, earliest: Instant, latest: Instant) -> Option<Instant> {
        let origin = self.origin?;
        let blocks = nanos_since(origin, earliest)?.div_ceil(BLOCK.as_nanos());
        let boundary = origin + BLOCK * u32::try_from(blocks).ok()?;
        (boundary <= latest).then_some(boundary)
    }

    /// The last block boundary in `earliest..=latest`, if there is one.
    pub fn last_boundary_in(&self, earliest: Instant, latest: Instant) -> Option<Instant> {
        let origin = self.origin?;
        let blocks = nanos_since(origin, latest)? / BLOCK.as_nanos();
        let boundary = origin + BLOCK * u32::try_from(blocks).ok()?;
        (boundary >= earliest).then_some(boundary)
    }
}

/// Nanoseconds from `origin` to `t`; none for a time before the origin.
fn nanos_since(origin: Instant, t: Instant) -> Option<u128> {
    t.checked_duration_since(origin).map(|d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_first_and_the_last_boundary_of_a_window() {
        let o = Instant::now();
        let grid = Grid::with_origin(o);
        // (window, in ms from the origin; its first boundary; its last boundary)
        type Row = ((u32, u32), Option<u32>, Option<u32>);
        let rows: [Row; 5] = [
            ((90, 200), Some(128), Some(192)),
            ((128, 128), Some(128), Some(128)),
            ((129, 191), None, None),
            ((0, 63), Some(0), Some(0)),
            ((1, 64), Some(64), Some(64)),
        ];
        for ((from, to), first, last) in rows {
            let window = (o + from * MS, o + to * MS);
            assert_eq!(
                grid.first_boundary_in(window.0, window.1),
                first.map(|b| o + b * MS),
                "first boundary in {from}..={to}"
            );
            assert_eq!(
                grid.last_boundary_in(window.0, window.1),
                last.map(|b| o + b * MS),
                "last boundary in {from}..={to}"
            );
        }
    }

    #[test]
    fn without_an_origin_there_is_no_grid() {
        let now = Instant::now();
        let grid = Grid::default();
        assert_eq!(grid.first_boundary_in(now, now + 1000 * MS), None);
        assert_eq!(grid.last_boundary_in(now, now + 1000 * MS), None);
    }
}
