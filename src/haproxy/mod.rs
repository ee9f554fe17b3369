//! The load balancer behind the VIP (issue 16): havip keeps one cluster-wide state per
//! CRM server (the operator's admin state and weight, committed through Raft; up or down
//! from the health checks) and every gateway applies it to its own HAProxy through the
//! Runtime API, so a VIP move never changes which servers clients reach.
//!
//! One job a file: `codec` (the Runtime API's text, pure), `socket` (its Unix socket, the
//! only I/O), `desired` (what the cluster decided, pure), `plan` (the commands from the
//! decision and HAProxy's state, pure), `applier` (one pool's rounds against one HAProxy)
//! and, here, the wiring: the decision feed and the tasks. Nothing here touches a VIP or
//! the group loops' decisions; HAProxy's trouble never reaches them.

mod applier;
mod codec;
mod desired;
mod plan;
mod socket;

pub use applier::{Applier, ObservedState, PoolStatus, ServerStatus, run};
pub use codec::{
    AdminState, ObservedServer, ReplyError, RuntimeCommand, check_set_reply, parse_servers_state,
};
pub use desired::{desired, records};
pub use plan::{Desired, Plan, plan};
pub use socket::{COMMAND_TIMEOUT, HaproxyError, RuntimeApi};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, select_all};
use tokio::sync::watch;

use crate::config::Backend;
use crate::consensus::state::GroupState;
use crate::control::Control;
use crate::health::HealthReport;

/// How often the decision is read again even when no watched channel moved: a reload may
/// have added or removed a group, whose state channel this feed then starts watching.
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
    /// from `control`'s groups and health report, all until `shutdown`.
    pub fn start(self, control: Arc<Control>, interval: Duration, shutdown: watch::Receiver<bool>) {
        if self.pools.is_empty() {
            return;
        }
        let mut feeds = Vec::new();
        for pool in self.pools {
            let api = RuntimeApi::new(&pool.config.haproxy.socket);
            let applier = Applier::new(&pool.config.name, &pool.config.haproxy.backend, api);
            let desired = pool.desired.subscribe();
            tokio::spawn(run(
                applier,
                desired,
                pool.status,
                interval,
                shutdown.clone(),
            ));
            feeds.push((pool.config, pool.desired));
        }
        tokio::spawn(feed(feeds, control, shutdown));
    }
}

/// Keeps every pool's decision current: recomputed whenever a group's replicated state or
/// the health report changes (and every `FEED_REFRESH`), sent only when it differs.
async fn feed(
    pools: Vec<(Backend, watch::Sender<BTreeMap<String, Desired>>)>,
    control: Arc<Control>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let groups = control.groups();
        let mut states: Vec<watch::Receiver<GroupState>> =
            groups.iter().map(|(_, g)| g.state.clone()).collect();
        let mut health = control.health.clone();
        // Marked seen before they are read, so a change after the read wakes the wait.
        let snapshot: Vec<GroupState> = (states.iter_mut())
            .map(|s| s.borrow_and_update().clone())
            .collect();
        let records = records(&snapshot);
        let checks = (health.as_mut())
            .map(|h| h.borrow_and_update().checks.clone())
            .unwrap_or_default();
        for (config, sender) in &pools {
            let now = desired(config, &records, &checks);
            sender.send_if_modified(|old| {
                let changed = *old != now;
                if changed {
                    *old = now;
                }
                changed
            });
        }
        tokio::select! {
            () = any_changed(&mut states, health.as_mut()) => {}
            () = tokio::time::sleep(FEED_REFRESH) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Returns when any of the channels has a value not yet seen; never when none can (all
/// closed, or none given).
async fn any_changed(
    states: &mut [watch::Receiver<GroupState>],
    health: Option<&mut watch::Receiver<HealthReport>>,
) {
    let mut waits: Vec<BoxFuture<'_, bool>> = states
        .iter_mut()
        .map(|s| async move { s.changed().await.is_ok() }.boxed())
        .collect();
    if let Some(h) = health {
        waits.push(async move { h.changed().await.is_ok() }.boxed());
    }
    while !waits.is_empty() {
        let (open, _, rest) = select_all(waits).await;
        if open {
            return;
        }
        // A closed channel (a group stopping) is not a change; wait on the others.
        waits = rest;
    }
    std::future::pending::<()>().await;
}
