//! The health monitor: one tokio task that runs every check at its interval, feeds the
//! results to each check's rise/fall machine, evaluates the node and publishes a
//! `HealthReport` on a watch channel. Never blocks the runtime (probes are async; exec
//! runs through tokio::process, DNS through tokio's resolver thread pool) and never lets
//! one check delay another: each probe is its own task under its own timeout.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use super::node_health::{CheckInput, NodeHealth, evaluate};
use super::report::{CheckReport, HealthReport, check_line, is_bad, node_is_bad, node_line};
use super::rise_fall::{CheckState, RiseFall};
use super::{Checker, ProbeResult, timeout_detail};
use crate::config::{HealthCheck, HealthSection, Require};

/// Probes allowed to run at once. Enough for hundreds of checks whose probes take
/// milliseconds; low enough that a burst of exec checks cannot fork-bomb the gateway.
pub const DEFAULT_MAX_CONCURRENT_PROBES: usize = 64;

/// First starts are spread over one interval on a grid of this step, and every wake-up
/// launches whatever is due within `LAUNCH_SLACK`: probes leave in small batches, so
/// 1,000 checks at 1 s wake the monitor about 100 times a second, not 1,000 (each
/// wake-up costs a context switch; this halves the monitor's CPU). A probe starting a
/// few milliseconds early changes nothing for health.
const START_GRID: Duration = Duration::from_millis(10);
const LAUNCH_SLACK: Duration = Duration::from_millis(5);

/// A checker enforces its own timeout; this margin on top is the scheduler's safety net
/// in case one does not.
const SAFETY_MARGIN: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct MonitorOptions {
    pub max_concurrent_probes: usize,
    /// How often the report is refreshed with results that changed no state.
    pub refresh: Duration,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        MonitorOptions {
            max_concurrent_probes: DEFAULT_MAX_CONCURRENT_PROBES,
            refresh: Duration::from_secs(1),
        }
    }
}

/// The running monitor. It stops when `shutdown` turns true (or its sender is dropped).
pub struct HealthMonitor {
    task: JoinHandle<()>,
}

impl HealthMonitor {
    /// Starts the monitor on the current tokio runtime. A check that cannot be set up
    /// (an unreadable `ca_file`) is logged once and fails every probe with that reason,
    /// so it shows in status instead of stopping the daemon.
    pub fn start(
        section: &HealthSection,
        shutdown: watch::Receiver<bool>,
    ) -> (HealthMonitor, watch::Receiver<HealthReport>) {
        Self::start_with(section, shutdown, MonitorOptions::default())
    }

    pub fn start_with(
        section: &HealthSection,
        shutdown: watch::Receiver<bool>,
        options: MonitorOptions,
    ) -> (HealthMonitor, watch::Receiver<HealthReport>) {
        let driver = Driver::new(section);
        let (tx, rx) = watch::channel(driver.report());
        let task = tokio::spawn(driver.run(tx, shutdown, options));
        (HealthMonitor { task }, rx)
    }

    /// Waits until the monitor has stopped and every probe it started has ended.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

struct Slot {
    check: HealthCheck,
    checker: Result<Arc<Checker>, String>,
    machine: RiseFall,
    in_flight: bool,
    report: CheckReport,
}

struct Driver {
    require: Require,
    slots: Vec<Slot>,
    node: NodeHealth,
    /// The node's status has been logged once (after every check had a result).
    node_announced: bool,
}

impl Driver {
    fn new(section: &HealthSection) -> Self {
        let now = unix_ms();
        let slots: Vec<Slot> = section
            .checks
            .iter()
            .map(|check| {
                let checker = Checker::new(check).map(Arc::new).map_err(|e| {
                    tracing::error!("{e}");
                    e.to_string()
                });
                Slot {
                    check: check.clone(),
                    checker,
                    machine: RiseFall::new(check.rise, check.fall),
                    in_flight: false,
                    report: CheckReport {
                        name: check.name.clone(),
                        state: CheckState::Down,
                        last_ok: false,
                        last_latency_ms: 0.0,
                        last_detail: "not probed yet".into(),
                        last_failure: None,
                        since_unix_ms: now,
                        probes: 0,
                    },
                }
            })
            .collect();
        let mut driver = Driver {
            require: section.require,
            slots,
            node: evaluate(section.require, &[]),
            node_announced: false,
        };
        driver.evaluate_node();
        driver
    }

    fn pending(&self) -> bool {
        self.slots.iter().any(|s| s.report.probes == 0)
    }

    fn report(&self) -> HealthReport {
        HealthReport {
            node: self.node.clone(),
            checks: self.slots.iter().map(|s| s.report.clone()).collect(),
            pending: self.pending(),
        }
    }

    async fn run(
        mut self,
        tx: watch::Sender<HealthReport>,
        mut shutdown: watch::Receiver<bool>,
        options: MonitorOptions,
    ) {
        let mut probes = Probes::new(options.max_concurrent_probes);
        let mut due = self.first_starts(Instant::now());
        let mut refresh = tokio::time::interval(options.refresh);
        refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Results recorded that changed no state and are not published yet.
        let mut dirty = false;

        loop {
            if *shutdown.borrow() {
                break;
            }
            let next = due.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                Some(joined) = probes.set.join_next_with_id() => {
                    let Some((index, result)) = probes.finished(joined) else { continue };
                    if self.record(index, result) {
                        tx.send_replace(self.report());
                        dirty = false;
                    } else {
                        dirty = true;
                    }
                }
                () = sleep_until(next) => self.launch_due(&mut due, &mut probes, Instant::now()),
                _ = refresh.tick() => {
                    if dirty {
                        tx.send_replace(self.report());
                        dirty = false;
                    }
                }
            }
        }
        probes.stop().await;
    }

    /// Jittered first start of every check, spread over one interval, so 1,000 checks
    /// configured together do not all fire in the same millisecond.
    fn first_starts(&self, start: Instant) -> Due {
        let mut rng = rand::thread_rng();
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let steps = (s.check.interval.as_millis() / START_GRID.as_millis()).max(1);
                let step = u32::try_from(rng.gen_range(0..steps)).unwrap_or(0);
                Reverse((start + START_GRID * step, i))
            })
            .collect()
    }

    /// Launches every probe due by `now` (within `LAUNCH_SLACK`) and schedules each
    /// check's next turn.
    fn launch_due(&mut self, due: &mut Due, probes: &mut Probes, now: Instant) {
        while let Some(Reverse((at, index))) = due.peek().copied() {
            if at > now + LAUNCH_SLACK {
                break;
            }
            due.pop();
            let slot = &mut self.slots[index];
            // Never two probes of one check at once: a probe still waiting for a permit
            // skips this turn.
            if !slot.in_flight {
                slot.in_flight = true;
                probes.launch(index, slot);
            }
            // Keep the phase, but never schedule in the past (after a stall, do not fire
            // a burst to catch up).
            let mut next = at + slot.check.interval;
            if next <= now {
                next = now + slot.check.interval;
            }
            due.push(Reverse((next, index)));
        }
    }

    /// Records one result; true when a check or the node changed state.
    fn record(&mut self, index: usize, result: ProbeResult) -> bool {
        let slot = &mut self.slots[index];
        slot.in_flight = false;
        let report = &mut slot.report;
        report.probes += 1;
        report.last_ok = result.ok;
        report.last_latency_ms = result.latency.as_micros() as f64 / 1000.0;
        if !result.ok {
            report.last_failure = Some(result.detail.clone());
        }
        report.last_detail = result.detail;
        let Some(transition) = slot.machine.observe(result.ok) else {
            return false;
        };
        report.state = transition.to;
        report.since_unix_ms = unix_ms();
        let line = check_line(&report.name, transition, &report.last_detail);
        if is_bad(transition.to) {
            tracing::warn!("{line}");
        } else {
            tracing::info!("{line}");
        }
        self.evaluate_node();
        true
    }

    /// Re-evaluates the node; logs a change of status once every check has a result.
    fn evaluate_node(&mut self) {
        let inputs: Vec<CheckInput<'_>> = self
            .slots
            .iter()
            .map(|s| CheckInput {
                name: &s.check.name,
                weight: s.check.weight,
                state: s.machine.state(),
            })
            .collect();
        let node = evaluate(self.require, &inputs);
        let changed = node.status != self.node.status;
        self.node = node;
        if self.pending() || (self.node_announced && !changed) {
            return;
        }
        self.node_announced = true;
        let line = node_line(&self.node);
        if node_is_bad(self.node.status) {
            tracing::warn!("{line}");
        } else {
            tracing::info!("{line}");
        }
    }
}

/// When each check is due next (earliest first), with the check's index.
type Due = BinaryHeap<Reverse<(Instant, usize)>>;

/// The probes in flight: each its own task, run under the semaphore that caps how many
/// run at once, known by its task id so that a crashed one is still put to its check.
struct Probes {
    set: JoinSet<(usize, ProbeResult)>,
    running: HashMap<tokio::task::Id, usize>,
    permits: Arc<Semaphore>,
}

impl Probes {
    fn new(max_concurrent: usize) -> Self {
        Probes {
            set: JoinSet::new(),
            running: HashMap::new(),
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }

    fn launch(&mut self, index: usize, slot: &Slot) {
        let id = spawn_probe(&mut self.set, &self.permits, index, slot);
        self.running.insert(id, index);
    }

    /// The check and result of a probe that ended; None for a task it does not know.
    fn finished(
        &mut self,
        joined: Result<(tokio::task::Id, (usize, ProbeResult)), tokio::task::JoinError>,
    ) -> Option<(usize, ProbeResult)> {
        match joined {
            Ok((id, done)) => {
                self.running.remove(&id);
                Some(done)
            }
            Err(e) => {
                // A panicking probe is a bug; count it as a failure of its check rather
                // than lose track of the check.
                let index = self.running.remove(&e.id())?;
                let crashed = ProbeResult::fail(Duration::ZERO, format!("probe crashed: {e}"));
                Some((index, crashed))
            }
        }
    }

    /// Ends every probe and waits for them: dropping a probe kills what it started (an
    /// exec check's process group).
    async fn stop(mut self) {
        self.set.abort_all();
        while self.set.join_next().await.is_some() {}
    }
}

fn spawn_probe(
    probes: &mut JoinSet<(usize, ProbeResult)>,
    permits: &Arc<Semaphore>,
    index: usize,
    slot: &Slot,
) -> tokio::task::Id {
    let checker = slot.checker.clone();
    let permits = Arc::clone(permits);
    let timeout = slot.check.timeout;
    probes
        .spawn(async move {
            // The permit is held only for the probe itself; the semaphore is never
            // closed, so acquiring cannot fail.
            let _permit = permits.acquire_owned().await;
            let result = match checker {
                Err(why) => ProbeResult::fail(Duration::ZERO, why),
                Ok(checker) => {
                    let started = Instant::now();
                    match tokio::time::timeout(timeout + SAFETY_MARGIN, checker.probe()).await {
                        Ok(result) => result,
                        Err(_) => ProbeResult::fail(started.elapsed(), timeout_detail(timeout)),
                    }
                }
            };
            (index, result)
        })
        .id()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
