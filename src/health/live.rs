//! The node's health checks as the daemon runs them, replaceable by a reload without a
//! gap: one report channel and one facts feed that outlive any monitor. A reload starts a
//! monitor with the new `[health]` beside the running one and switches the channels over
//! only once the new one has a first result for every check, so the group loops never
//! see a "pending" node that was fine a moment ago and no VIP moves for the change itself
//! (only for what the new checks find). It never decides anything about a VIP.

use std::time::Duration;

use tokio::sync::watch;

use super::facts::HealthFacts;
use super::report::HealthReport;
use super::scheduler::HealthMonitor;
use crate::config::{HealthCheck, HealthSection};
use crate::platform::watches::child_signal;

/// How long a reload waits at most for the new checks' first results, beyond their
/// longest interval and timeout; then it switches anyway (the feed says "pending" and no
/// facts are proposed until they come, as at start).
const FIRST_RESULTS_SLACK: Duration = Duration::from_secs(2);

/// The running monitor and the channels the rest of the daemon reads.
pub struct LiveHealth {
    running: Running,
    reports: watch::Sender<HealthReport>,
    checks: watch::Sender<Vec<HealthCheck>>,
    shutdown: watch::Receiver<bool>,
}

/// One monitor, its own stop switch and the task that copies its reports out.
struct Running {
    monitor: HealthMonitor,
    stop: watch::Sender<bool>,
}

impl LiveHealth {
    /// Starts `section`'s checks; returns the reports (for status) and the facts feed
    /// (for the group loops), both current across reloads.
    pub fn start(
        section: &HealthSection,
        shutdown: watch::Receiver<bool>,
    ) -> (
        LiveHealth,
        watch::Receiver<HealthReport>,
        watch::Receiver<HealthFacts>,
    ) {
        let (stop, stopped) = child_signal(&shutdown);
        let (monitor, first) = HealthMonitor::start(section, stopped);
        let (reports, reports_rx) = watch::channel(first.borrow().clone());
        let (checks, checks_rx) = watch::channel(section.checks.clone());
        forward(first, reports.clone(), stop.subscribe());
        let facts = facts_feed(reports_rx.clone(), checks_rx, shutdown.clone());
        let live = LiveHealth {
            running: Running { monitor, stop },
            reports,
            checks,
            shutdown,
        };
        (live, reports_rx, facts)
    }

    /// Replaces the checks with `section`'s: the new monitor runs beside the old one until
    /// it has a first result for every check (bounded), then the feeds switch to it and
    /// the old one stops. Returns how long the switch waited.
    pub async fn replace(&mut self, section: &HealthSection) -> Duration {
        let started = tokio::time::Instant::now();
        let (stop, stopped) = child_signal(&self.shutdown);
        let (monitor, mut reports) = HealthMonitor::start(section, stopped);
        let limit = (section.checks.iter())
            .map(|c| c.interval + c.timeout)
            .max()
            .unwrap_or_default()
            + FIRST_RESULTS_SLACK;
        let complete = tokio::time::timeout(limit, reports.wait_for(|r| !r.pending))
            .await
            .is_ok();
        if !complete {
            tracing::warn!(
                "the new health checks have no result for every check after {limit:?}; switching to them anyway (pending until they do)"
            );
        }
        let old = std::mem::replace(&mut self.running, Running { monitor, stop });
        let _ = old.stop.send(true);
        self.checks.send_replace(section.checks.clone());
        self.reports.send_replace(reports.borrow().clone());
        forward(reports, self.reports.clone(), self.running.stop.subscribe());
        old.monitor.stopped().await;
        started.elapsed()
    }

    /// Waits until the running monitor has stopped (after the daemon's shutdown).
    pub async fn stopped(self) {
        self.running.monitor.stopped().await;
    }
}

/// Copies `from`'s reports into `to` until `stop`.
fn forward(
    mut from: watch::Receiver<HealthReport>,
    to: watch::Sender<HealthReport>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                changed = from.changed() => if changed.is_err() { return },
            }
            to.send_replace(from.borrow_and_update().clone());
        }
    });
}

/// The facts of `reports` with the weights of the current `checks`, changed only when
/// they change; ends on `shutdown`.
fn facts_feed(
    mut reports: watch::Receiver<HealthReport>,
    mut checks: watch::Receiver<Vec<HealthCheck>>,
    mut shutdown: watch::Receiver<bool>,
) -> watch::Receiver<HealthFacts> {
    let first = HealthFacts::of(&reports.borrow_and_update(), &checks.borrow_and_update());
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                changed = reports.changed() => if changed.is_err() { return },
                changed = checks.changed() => if changed.is_err() { return },
            }
            let next = HealthFacts::of(&reports.borrow_and_update(), &checks.borrow_and_update());
            tx.send_if_modified(|facts| {
                let changed = *facts != next;
                *facts = next;
                changed
            });
        }
    });
    rx
}
