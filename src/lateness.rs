//! How late the hold loop was against the deadlines the hold rule gave it: every removal
//! of a group's VIPs against the end of the hold lease it was holding under, and every
//! timed wake-up of the loop against when it was due. A release after the lease's end is
//! a safety event (another node may already be elected and holding), so it is never
//! silent: it is counted here, exported as metrics and logged by the loop. Pure: the
//! caller measures on its monotonic clock and passes durations in.

use std::time::Duration;

use crate::hold::TICK;

/// A wake-up later than this is counted as late: the hold lease's margin allows for two
/// ticks of timer lateness (`hold::hold_lease`), so one is where it starts to be eaten.
pub const WAKE_LATE: Duration = TICK;

/// Counters of one group's lateness since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lateness {
    /// Removals of the VIPs (every reason: lease expiry, hand-over, step-down, shutdown).
    pub releases: u64,
    /// Removals that completed after the end of the hold lease they were holding under.
    pub late_releases: u64,
    pub late_sum: Duration,
    pub late_max: Duration,
    /// Timed wake-ups of the loop (lease ends, failback timers, the idle step).
    pub wakeups: u64,
    /// Wake-ups later than `WAKE_LATE` after they were due.
    pub late_wakeups: u64,
    pub wake_late_max: Duration,
}

impl Lateness {
    /// One completed removal; `completed_after_deadline` is how long after the end of the
    /// hold lease it completed (None: before it, or no lease was ever granted). Returns
    /// the delay when it was late.
    pub fn release(&mut self, completed_after_deadline: Option<Duration>) -> Option<Duration> {
        self.releases += 1;
        let late = completed_after_deadline.filter(|d| !d.is_zero())?;
        self.late_releases += 1;
        self.late_sum += late;
        self.late_max = self.late_max.max(late);
        Some(late)
    }

    /// One timed wake-up, `late` after it was due. Returns the delay when it counts as
    /// late.
    pub fn wake(&mut self, late: Duration) -> Option<Duration> {
        self.wakeups += 1;
        self.wake_late_max = self.wake_late_max.max(late);
        if late <= WAKE_LATE {
            return None;
        }
        self.late_wakeups += 1;
        Some(late)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_release_at_or_before_the_deadline_is_not_late() {
        let mut l = Lateness::default();
        assert_eq!(l.release(None), None);
        assert_eq!(l.release(Some(Duration::ZERO)), None);
        assert_eq!((l.releases, l.late_releases), (2, 0));
    }

    #[test]
    fn late_releases_are_counted_summed_and_the_worst_kept() {
        let mut l = Lateness::default();
        assert_eq!(l.release(Some(3 * MS)), Some(3 * MS));
        assert_eq!(l.release(Some(MS)), Some(MS));
        assert_eq!(l.release(None), None);
        assert_eq!(
            (l.releases, l.late_releases, l.late_sum, l.late_max),
            (3, 2, 4 * MS, 3 * MS)
        );
    }

    #[test]
    fn wake_ups_are_late_past_one_tick() {
        let mut l = Lateness::default();
        assert_eq!(l.wake(Duration::ZERO), None);
        assert_eq!(l.wake(WAKE_LATE), None);
        assert_eq!(l.wake(WAKE_LATE + MS), Some(WAKE_LATE + MS));
        assert_eq!((l.wakeups, l.late_wakeups), (3, 1));
        assert_eq!(l.wake_late_max, WAKE_LATE + MS);
    }
}
