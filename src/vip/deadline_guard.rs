//! The hold lease, enforced off the daemon's runtime: a thread of its own that takes a
//! group's VIPs down when the end of the lease they were last held under is near and no
//! hold has moved it on. The group loop releases first in every normal case (it starts
//! `hold::RELEASE_AHEAD` early); this is for the loop that cannot: the runtime's one
//! thread busy with other work or starved (measured on a loaded lab: a hold loop that woke
//! 132 ms late and released 68 ms after the lease). A sleeping thread that does nothing
//! else is woken by the kernel within a fraction of a millisecond. It must never take
//! anything down before its deadline, and never add anything. A frozen or killed *process*
//! stops this thread too: the fence (`fence.rs`), a process of its own, runs the same
//! bookkeeping a little later (`FENCE_AHEAD`) for that case.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::platform::lock::lock;

/// How long before the lease's end the guard takes the VIPs down: when the loop would
/// start its own removal (`hold::RELEASE_AHEAD`), so a loop late by any amount is covered,
/// and the guard's own wake-up may be late by as much before the removal (two system
/// calls, 0.4 ms) ends past the lease. It was 2 ms: the 30-minute chaos soak on a loaded
/// VM (2026-12-03) saw the guard finish 1.4 and 2.1 ms past the lease. Never earlier than
/// the loop: the loop releases at this instant whatever arrives after it.
pub const GUARD_AHEAD: Duration = crate::hold::RELEASE_AHEAD;

/// How long before the lease's end the fence process takes the VIPs down: after the
/// daemon's loop and its guard thread (`GUARD_AHEAD`), so a live daemon always acts
/// first and the fence fires only for a frozen, starved or dead one; early enough that a
/// wake-up late by a few milliseconds (the soak saw 3.5 ms on a loaded VM) plus the
/// removal still ends inside the lease.
pub const FENCE_AHEAD: Duration = Duration::from_millis(5);

/// The longest the thread sleeps without looking again (it is also woken on every
/// change).
const IDLE: Duration = Duration::from_secs(1);

/// What to take down, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Armed<T> {
    pub at: Instant,
    pub what: T,
}

/// The guard's state: pure bookkeeping, tested without a thread.
#[derive(Debug)]
pub struct Deadlines<T> {
    /// How long before a lease's end its group is taken down.
    ahead: Duration,
    armed: BTreeMap<String, Armed<T>>,
    /// When the guard took a group down, until the group loop asks (`taken_down_at`).
    fired: BTreeMap<String, Instant>,
}

impl<T> Deadlines<T> {
    pub fn new(ahead: Duration) -> Self {
        Deadlines {
            ahead,
            armed: BTreeMap::new(),
            fired: BTreeMap::new(),
        }
    }

    /// Arms (or moves) `group`'s deadline: take `what` down `ahead` of `lease_end`.
    pub fn arm(&mut self, group: &str, what: T, lease_end: Instant) {
        let at = lease_end.checked_sub(self.ahead).unwrap_or(lease_end);
        self.armed.insert(group.to_string(), Armed { at, what });
        self.fired.remove(group);
    }

    pub fn disarm(&mut self, group: &str) {
        self.armed.remove(group);
    }

    /// Takes out every group due at `now`, marking it fired at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<(String, T)> {
        let due: Vec<String> = self
            .armed
            .iter()
            .filter(|(_, a)| a.at <= now)
            .map(|(g, _)| g.clone())
            .collect();
        due.into_iter()
            .filter_map(|g| {
                let armed = self.armed.remove(&g)?;
                self.fired.insert(g.clone(), now);
                Some((g, armed.what))
            })
            .collect()
    }

    /// Takes out every armed group, due or not (the fence, once its daemon is gone).
    pub fn take_all(&mut self) -> Vec<(String, T)> {
        std::mem::take(&mut self.armed)
            .into_iter()
            .map(|(g, a)| (g, a.what))
            .collect()
    }

    /// How long until the next deadline (at most `IDLE`).
    pub fn sleep_for(&self, now: Instant) -> Duration {
        self.armed
            .values()
            .map(|a| a.at.saturating_duration_since(now))
            .min()
            .unwrap_or(IDLE)
            .min(IDLE)
    }

    /// When the guard took `group` down since it was last armed (asked once).
    pub fn take_fired(&mut self, group: &str) -> Option<Instant> {
        self.fired.remove(group)
    }
}

struct Shared<T> {
    state: Mutex<(Deadlines<T>, bool)>,
    wake: Condvar,
}

/// The thread and its deadlines; `T` is what the take-down callback needs per group.
pub struct DeadlineGuard<T> {
    shared: Arc<Shared<T>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> DeadlineGuard<T> {
    /// Starts the thread; `take_down(group, what)` runs on it `ahead` of a lease's end.
    pub fn start(
        ahead: Duration,
        take_down: impl Fn(&str, T) + Send + 'static,
    ) -> std::io::Result<DeadlineGuard<T>> {
        let shared = Arc::new(Shared {
            state: Mutex::new((Deadlines::new(ahead), false)),
            wake: Condvar::new(),
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("havip-deadline".into())
            .spawn(move || {
                let mut state = lock(&theirs.state);
                while !state.1 {
                    let now = Instant::now();
                    let due = state.0.due(now);
                    if !due.is_empty() {
                        drop(state);
                        for (group, what) in due {
                            take_down(&group, what);
                        }
                        state = lock(&theirs.state);
                        continue;
                    }
                    let wait = state.0.sleep_for(now);
                    state = theirs
                        .wake
                        .wait_timeout(state, wait)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            })?;
        Ok(DeadlineGuard {
            shared,
            thread: Some(thread),
        })
    }

    pub fn arm(&self, group: &str, what: T, lease_end: Instant) {
        lock(&self.shared.state).0.arm(group, what, lease_end);
        self.shared.wake.notify_one();
    }

    pub fn disarm(&self, group: &str) {
        lock(&self.shared.state).0.disarm(group);
    }

    pub fn take_fired(&self, group: &str) -> Option<Instant> {
        lock(&self.shared.state).0.take_fired(group)
    }
}

impl<T> Drop for DeadlineGuard<T> {
    fn drop(&mut self) {
        lock(&self.shared.state).1 = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_deadline_fires_guard_ahead_of_the_lease_end_and_once() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(GUARD_AHEAD);
        let end = t0 + 100 * MS;
        d.arm("crm", 7u32, end);
        let at = end - GUARD_AHEAD;
        assert!(d.due(at - MS).is_empty());
        assert_eq!(d.sleep_for(at - MS), MS);
        assert_eq!(d.due(at), vec![("crm".to_string(), 7)]);
        assert!(d.due(t0 + 200 * MS).is_empty());
        assert_eq!(d.take_fired("crm"), Some(at));
        assert_eq!(d.take_fired("crm"), None);
    }

    #[test]
    fn a_new_hold_moves_the_deadline_and_a_release_disarms_it() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(FENCE_AHEAD);
        d.arm("crm", (), t0 + 100 * MS);
        d.arm("crm", (), t0 + 300 * MS);
        assert!(d.due(t0 + 150 * MS).is_empty());
        d.disarm("crm");
        assert!(d.due(t0 + 400 * MS).is_empty());
        assert_eq!(d.sleep_for(t0), IDLE);
    }

    #[test]
    fn take_all_empties_the_guard_due_or_not() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(FENCE_AHEAD);
        d.arm("crm", 1, t0 + 100 * MS);
        d.arm("crm2", 2, t0 + 900 * MS);
        assert_eq!(
            d.take_all(),
            vec![("crm".to_string(), 1), ("crm2".to_string(), 2)]
        );
        assert!(d.due(t0 + 1000 * MS).is_empty());
    }

    #[test]
    fn the_thread_takes_down_at_the_deadline() {
        let (tx, rx) = std::sync::mpsc::channel();
        let guard = DeadlineGuard::start(GUARD_AHEAD, move |group: &str, what: u8| {
            let _ = tx.send((group.to_string(), what, Instant::now()));
        })
        .expect("thread");
        let end = Instant::now() + 50 * MS;
        guard.arm("crm", 1, end);
        guard.arm("crm2", 2, Instant::now() + 10 * MS);
        guard.disarm("crm2");
        let (group, what, at) = rx.recv_timeout(Duration::from_secs(5)).expect("fired");
        assert_eq!((group.as_str(), what), ("crm", 1));
        assert!(at >= end - GUARD_AHEAD, "fired early");
        assert!(rx.recv_timeout(100 * MS).is_err(), "crm2 was disarmed");
        assert!(guard.take_fired("crm").is_some());
    }
}
