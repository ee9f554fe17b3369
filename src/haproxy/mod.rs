//! The load balancer behind the VIP (issue 16): havip keeps one cluster-wide state per
//! CRM server (the operator's admin state and weight, committed through Raft; up or down
//! as the holder of the pool's VIP group sees it, committed by that holder) and every
//! gateway applies it to its own HAProxy through the Runtime API, so a VIP move never
//! changes which servers clients reach.
//!
//! One job a file: `codec` (the Runtime API's text, pure), `socket` (its Unix socket, the
//! only I/O), `desired` (what the cluster decided, pure), `plan` (the commands from the
//! decision and HAProxy's state, pure), `applier` (one pool's rounds against one HAProxy)
//! and, here, the wiring: the decision feed, the holder's health reports and the tasks.
//! Nothing here touches a VIP or the group loops' decisions; HAProxy's trouble never
//! reaches them.

mod applier;
mod codec;
mod desired;
mod plan;
mod socket;

pub use applier::{Applier, ObservedState, PoolStatus, ServerStatus, run};
pub use codec::{
    AdminState, ObservedServer, ReplyError, RuntimeCommand, check_set_reply, parse_servers_state,
};
pub use desired::{desired, health_reports, records};
pub use plan::{Desired, Plan, plan};
pub use socket::{COMMAND_TIMEOUT, HaproxyError, RuntimeApi};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, select_all};
use tokio::sync::{oneshot, watch};

use crate::config::Backend;
use crate::consensus::state::{GroupState, ServerHealth, ServerRecord};
use crate::control::Control;
use crate::group::{LocalView, unix_ms};
use crate::health::{CheckReport, HealthReport};

/// How often the decision is read again even when no watched channel moved: a reload may
/// have added or removed a group, whose channels the feed then starts watching, and a
/// holder's commit that failed is tried again.
const FEED_REFRESH: Duration = Duration::from_secs(1);

/// Each pool's decision feed and status channel, made before the control context (which
/// shows the statuses) and started once it exists (the feed reads its groups).
pub struct Backends {
    pools: Vec<Pool>,
}

struct Pool {
    config: Backend,
    desired: watch::Sender<BTreeMap<String, Desired>>,
    status: watch::Sender<PoolStatus>,
}

impl Backends {
    /// The channels of `backends`; the receivers are what `havip status` and /metrics read.
    pub fn channels(backends: &[Backend]) -> (Backends, Vec<watch::Receiver<PoolStatus>>) {
        let pools: Vec<Pool> = backends
            .iter()
            .map(|b| Pool {
                config: b.clone(),
                desired: watch::Sender::new(BTreeMap::new()),
                status: watch::Sender::new(PoolStatus {
                    pool: b.name.clone(),
                    backend: b.haproxy.backend.clone(),
                    socket: b.haproxy.socket.display().to_string(),
                    ..PoolStatus::default()
                }),
            })
            .collect();
        let receivers = pools.iter().map(|p| p.status.subscribe()).collect();
        (Backends { pools }, receivers)
    }

    /// Starts one applier per pool, every `interval`, and the feed of their decisions
    /// from `control`'s groups and health report, all until `shutdown` or until the
    /// returned `Running` is dropped (a reload that replaces the pools).
    pub fn start(
        self,
        control: Arc<Control>,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> Running {
        if self.pools.is_empty() {
            return Running::default();
        }
        let (stop, stopped) = watch::channel(false);
        let (keep, dropped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.wait_for(|down| *down) => {}
                _ = dropped => {}
            }
            let _ = stop.send(true);
        });
        let shutdown = stopped;
        let mut feeds = Vec::new();
        let mut tasks = Vec::new();
        for pool in self.pools {
            let api = RuntimeApi::new(&pool.config.haproxy.socket);
            let applier = Applier::new(&pool.config.name, &pool.config.haproxy.backend, api);
            let desired = pool.desired.subscribe();
            let task = tokio::spawn(run(
                applier,
                desired,
                pool.status,
                interval,
                shutdown.clone(),
            ));
            tasks.push(task.abort_handle());
            feeds.push((pool.config, pool.desired));
        }
        let configs = feeds.iter().map(|(c, _)| c.clone()).collect();
        let feeding = tokio::spawn(feed(feeds, control.clone(), shutdown.clone()));
        let reporting = tokio::spawn(report_health(configs, control, shutdown));
        tasks.extend([feeding.abort_handle(), reporting.abort_handle()]);
        Running {
            _stop_on_drop: Some(keep),
            tasks,
        }
    }
}

/// The appliers, feed and health reports of one config's pools: dropping this stops them.
#[derive(Default)]
pub struct Running {
    /// Held for its drop only: the stop task waits for it.
    _stop_on_drop: Option<oneshot::Sender<()>>,
    /// Aborted on drop, so that an old applier's round under way stops at its next await
    /// instead of sending the rest of its commands beside the new generation's first round
    /// (a reload replacing the pools). A command already written may still land after the
    /// new round read HAProxy; its next round (1 s) puts that right, as it does any drift.
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The part of a group's replicated state about servers (the rest, history included, is
/// not copied: the feed reads it on every change of the group).
#[derive(Default)]
struct ServerRecords {
    admin: BTreeMap<String, ServerRecord>,
    health: BTreeMap<String, ServerHealth>,
}

/// What the feed and the reporter read, cloned from the control context and marked seen
/// as it is read, so that a change after the read wakes `changed`.
struct Watched {
    states: BTreeMap<String, watch::Receiver<GroupState>>,
    /// Only the reporter watches the group loops' views (whether this node holds): they
    /// change on every step of a loop, several times a second.
    views: Vec<watch::Receiver<LocalView>>,
    health: Option<watch::Receiver<HealthReport>>,
}

impl Watched {
    fn of(control: &Control, with_views: bool) -> Watched {
        let groups = control.groups();
        Watched {
            states: (groups.iter())
                .map(|(name, g)| (name.clone(), g.state.clone()))
                .collect(),
            views: (groups.iter())
                .filter(|_| with_views)
                .map(|(_, g)| g.view.clone())
                .collect(),
            health: control.health.clone(),
        }
    }

    /// Each group's server records (name order) and this node's checks, now.
    fn read(&mut self) -> (BTreeMap<String, ServerRecords>, Vec<CheckReport>) {
        let states = (self.states.iter_mut())
            .map(|(name, s)| {
                let state = s.borrow_and_update();
                let records = ServerRecords {
                    admin: state.servers.clone(),
                    health: state.server_health.clone(),
                };
                (name.clone(), records)
            })
            .collect();
        for view in &mut self.views {
            view.borrow_and_update();
        }
        let checks = (self.health.as_mut())
            .map(|h| h.borrow_and_update().checks.clone())
            .unwrap_or_default();
        (states, checks)
    }

    /// Returns when any channel has a value not yet read, or after `FEED_REFRESH` (a
    /// reload may have added or removed a group, which `of` then picks up).
    async fn changed(&mut self) {
        let mut waits: Vec<BoxFuture<'_, bool>> = Vec::new();
        for s in self.states.values_mut() {
            waits.push(async move { s.changed().await.is_ok() }.boxed());
        }
        for v in &mut self.views {
            waits.push(async move { v.changed().await.is_ok() }.boxed());
        }
        if let Some(h) = self.health.as_mut() {
            waits.push(async move { h.changed().await.is_ok() }.boxed());
        }
        let any = async move {
            while !waits.is_empty() {
                let (open, _, rest) = select_all(waits).await;
                if open {
                    return;
                }
                // A closed channel (a group stopping) is not a change.
                waits = rest;
            }
            std::future::pending::<()>().await;
        };
        let _ = tokio::time::timeout(FEED_REFRESH, any).await;
    }
}

/// Keeps every pool's decision current: recomputed whenever a group's replicated state or
/// the health report changes, sent only when it differs.
async fn feed(
    pools: Vec<(Backend, watch::Sender<BTreeMap<String, Desired>>)>,
    control: Arc<Control>,
    mut shutdown: watch::Receiver<bool>,
) {
    let empty = BTreeMap::new();
    loop {
        let mut watched = Watched::of(&control, false);
        let (states, checks) = watched.read();
        let records = records(states.values().map(|s| &s.admin));
        for (config, sender) in &pools {
            let health = states.get(&config.group).map_or(&empty, |s| &s.health);
            let now = desired(config, &records, health, &checks);
            sender.send_if_modified(|old| {
                let changed = *old != now;
                if changed {
                    *old = now;
                }
                changed
            });
        }
        tokio::select! {
            () = watched.changed() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// On the holder of a pool's group: commits its checks' verdicts where they differ from
/// the group's record (`health_reports`), one at a time, so every gateway applies the
/// holder's view. A failed commit is tried again on the next change or refresh.
async fn report_health(
    pools: Vec<Backend>,
    control: Arc<Control>,
    mut shutdown: watch::Receiver<bool>,
) {
    let me = control.members().me.clone();
    let empty = BTreeMap::new();
    loop {
        let mut watched = Watched::of(&control, true);
        let (states, checks) = watched.read();
        let groups = control.groups();
        for pool in &pools {
            let holds = (groups.get(&pool.group)).is_some_and(|g| g.view.borrow().holds_now());
            let health = states.get(&pool.group).map_or(&empty, |s| &s.health);
            for command in health_reports(pool, &me, holds, health, &checks, unix_ms()) {
                tracing::info!(pool = %pool.name, "haproxy: committing {command}");
                if let Err(e) = control.proposer.propose(&pool.group, command).await {
                    tracing::warn!(pool = %pool.name, "haproxy: a server's health was not committed: {e}");
                }
            }
        }
        tokio::select! {
            () = watched.changed() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
