//! Applies a reload (SIGHUP, `havip reload`) to the running node: re-reads and validates
//! the whole file, asks `config::plan_reload` what changed, refuses what it cannot apply
//! live, then removes groups (each released and handed over first, then its Raft stopped
//! and its state dropped), starts the added ones (formed by the cluster once every voter
//! lists them), hands a changed group its new settings (addresses, priority, failback,
//! announce: applied by its loop without releasing a held VIP), replaces the health checks (switching once the new ones have results),
//! the cluster keys of a key rollover, and the notify hook. A file with any error, or a change that needs
//! a restart, is refused whole and the running node is left exactly as it was. It must
//! never remove a group's VIPs other than through that group's own loop.

use std::time::Duration;

use tokio::sync::watch;

use super::{Joined, Node};
use crate::config::Role;
use crate::config::{Config, ConfigError, ReloadPlan, plan_reload};
use crate::consensus::group_raft;
use crate::consensus::store::StoreError;
use crate::consensus::types::node_id;
use crate::control::protocol::{Fingerprints, Response};
use crate::control::{Members, config_history};
use crate::group::member_names;

/// How long a removed group's store may stay open after its Raft shut down (a snapshot
/// builder or log reader still finishing) before its state is dropped anyway later.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// How long a reload waits for its history record before applying the change (a member
/// that does not answer leaves the rest to the background, `Record::rest`).
const RECORD_FIRST_WITHIN: Duration = Duration::from_millis(500);

/// Re-reads the config and applies it; the answer for `havip reload`. Logs the outcome.
pub async fn reload(
    node: &mut Node,
    joined: &mut Joined,
    shutdown: &watch::Receiver<bool>,
) -> Response {
    let source = node.config.source.clone();
    tracing::info!(file = %source.display(), "reloading the config");
    match load_and_plan(node) {
        Err(errors) => {
            let message = refused(&errors);
            tracing::error!("reload refused, nothing changed:\n{message}");
            Response::Refused { message }
        }
        Ok((new, plan)) => {
            let changes = plan.summary.clone();
            // The history first (`config_history::Record::first`: a planned move the
            // change starts must find the log quiet), the change after.
            let record = (!changes.is_empty()).then(|| {
                let config = crate::config::config_fingerprint(&new);
                config_history::Record::new(&joined.control, config, changes.clone(), &plan.removed)
            });
            let record = match record {
                Some(mut record) => {
                    record.first(&joined.control, RECORD_FIRST_WITHIN).await;
                    Some(record)
                }
                None => None,
            };
            apply(node, joined, new, plan, shutdown).await;
            let fingerprints = joined.control.fingerprints();
            if changes.is_empty() {
                tracing::info!("reloaded: nothing changed");
            } else {
                tracing::info!(config = %fingerprints.config, "reloaded: {}", changes.join("; "));
            }
            if let Some(record) = record.filter(|r| !r.done(&joined.control)) {
                tokio::spawn(record.rest(joined.control.clone()));
            }
            Response::Reloaded {
                node: node.config.node.name.clone(),
                changes,
                fingerprints,
            }
        }
    }
}

/// The refusal as `check-config` reports it: one error a line, then what was kept.
fn refused(errors: &[ConfigError]) -> String {
    let mut lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    lines.push(format!(
        "reload refused: {} error(s); the running config is unchanged",
        errors.len()
    ));
    lines.join("\n")
}

/// The new config and what applying it changes, or every reason it cannot be applied.
fn load_and_plan(node: &Node) -> Result<(Config, ReloadPlan), Vec<ConfigError>> {
    let new = Config::load(&node.config.source).map_err(|e| e.0)?;
    new.check_children().map_err(|e| e.0)?;
    let plan = plan_reload(&node.config, &new)?;
    let mut errors = Vec::new();
    if let Some(links) = &node.links {
        for group in &plan.added {
            if !group.interface.is_empty() && links.link_up(&group.interface).is_none() {
                errors.push(live_limit(
                    &new,
                    &group.name,
                    format!(
                        "interface {} is not one the running daemon watches; a group on a new interface needs a restart",
                        group.interface
                    ),
                ));
            }
        }
    }
    for group in &plan.changed {
        let running = node.config.group(&group.name);
        if running.is_some_and(|g| g.interface != group.interface) {
            errors.push(live_limit(
                &new,
                &group.name,
                "its interface changes only by a restart (or remove the group and add it under a new name)".into(),
            ));
        }
    }
    let gateway = new.node.role == Role::Gateway;
    let (had, has) = (
        !node.config.health.checks.is_empty(),
        !new.health.checks.is_empty(),
    );
    if plan.health && gateway && had != has {
        errors.push(ConfigError {
            file: new.source.clone(),
            position: None,
            key: "health".into(),
            message: format!(
                "a reload replaces health checks but does not {} them all; restart the node to apply it",
                if has { "add the first of" } else { "remove" }
            ),
        });
    }
    if errors.is_empty() {
        Ok((new, plan))
    } else {
        Err(errors)
    }
}

fn live_limit(config: &Config, group: &str, message: String) -> ConfigError {
    let index = config.vip_groups.iter().position(|g| g.name == group);
    ConfigError {
        file: config.source.clone(),
        position: None,
        key: index.map_or_else(|| "vip_group".into(), |i| format!("vip_group[{i}]")),
        message: format!("group {group:?}: {message}"),
    }
}

/// Removes, then adds, then swaps the hook; the config in effect becomes `new`.
async fn apply(
    node: &mut Node,
    joined: &mut Joined,
    new: Config,
    plan: ReloadPlan,
    shutdown: &watch::Receiver<bool>,
) {
    for group in &plan.removed {
        remove_group(node, joined, group).await;
    }
    node.config = new;
    if plan.timers {
        // Before any group is added: a new group starts with the new timers throughout.
        node.peer_handler.raft.set_timers(node.config.timers);
        tracing::info!(
            heartbeat_ms = node.config.timers.heartbeat.as_millis() as u64,
            leader_lease_ms = node.config.timers.leader_lease().as_millis() as u64,
            "timers changed: the leader lease announced and granted from now on"
        );
    }
    add_groups(node, joined, &plan.added, shutdown).await;
    for group in &plan.changed {
        if let Some(tasks) = joined.loops.get(&group.name) {
            tasks.settings.send_modify(|s| s.group = group.clone());
        }
    }
    if plan.health
        && let Some((live, _, _)) = &mut node.health
    {
        let waited = live.replace(&node.config.health).await;
        tracing::info!(
            checks = node.config.health.checks.len(),
            "health checks replaced after {} ms (their first results)",
            waited.as_millis()
        );
    }
    if plan.keys {
        match node.config.load_keys() {
            Ok(keys) => {
                tracing::info!(keys = %keys.describe(), "peer links use the new cluster keys");
                node.mesh.set_keys(keys);
            }
            // Config::load read both files a moment ago; one that went away since keeps
            // the links on the keys they have.
            Err(e) => {
                tracing::error!("cannot read the new cluster keys, links keep the old ones: {e}")
            }
        }
    }
    if plan.peers {
        change_peers(node, joined);
    }
    if plan.notify {
        joined.notifier.set(&node.config.notify);
    }
    if plan.backends {
        replace_pools(node, joined, shutdown);
    }
    let fingerprints = Fingerprints::of(&node.config, &node.mesh.keys());
    if let Ok(mut current) = joined.control.fingerprints.write() {
        *current = fingerprints;
    }
}

/// Stops the old pools' HAProxy appliers, then starts the new ones (the first round
/// reads each HAProxy and applies the cluster's decision; a server the file dropped is
/// left as HAProxy has it, a server it added gets the cluster's state, or its checks'
/// once the holder has reported them).
fn replace_pools(node: &Node, joined: &mut Joined, shutdown: &watch::Receiver<bool>) {
    drop(std::mem::take(&mut joined.pools));
    joined.pools = super::start_pools(&joined.control, &node.config.backends, shutdown);
    tracing::info!(
        pools = node.config.backends.len(),
        "backend pools replaced: their HAProxy appliers run with the new servers"
    );
}

/// Starts each added group's Raft and tasks, then the bootstrap that forms them once
/// every voter lists them.
async fn add_groups(
    node: &mut Node,
    joined: &mut Joined,
    groups: &[crate::config::VipGroup],
    shutdown: &watch::Receiver<bool>,
) {
    let mut added = std::collections::BTreeMap::new();
    for group in groups {
        let self_id = node_id(&node.config.node.name);
        let started = group_raft::start(
            &node.config,
            &group.name,
            self_id,
            &node.store,
            node.mesh.clone(),
            node.peer_handler.raft.timers(),
        )
        .await;
        let raft = match started {
            Ok(raft) => raft,
            Err(e) => {
                tracing::error!(group = %group.name, "cannot start the added group: {e}");
                continue;
            }
        };
        node.peer_handler
            .raft
            .register(&group.name, raft.raft.clone());
        joined.proposer.add_group(&group.name, raft.raft.clone());
        added.insert(group.name.clone(), raft.raft.clone());
        node.spawn_group(joined, group, raft, shutdown);
        tracing::info!(group = %group.name, "group added: it gets a master once every voter lists it");
    }
    if !added.is_empty() {
        node.bootstrap(joined, added, false, shutdown);
    }
}

/// Hands the new peer list to everything that names the nodes: the mesh (links to added
/// nodes, none to removed ones), the commands and the proposer, the group loops, and the
/// membership drivers, which then change each group's Raft membership to match once
/// every node lists the same nodes (`consensus::membership`).
fn change_peers(node: &Node, joined: &Joined) {
    let config = &node.config;
    let list: Vec<(String, std::net::SocketAddr)> = (config.cluster.peers.iter())
        .map(|p| (p.name.clone(), p.address))
        .collect();
    node.mesh.set_peers(&list);
    let names = member_names(config);
    joined.proposer.set_members(&names);
    joined.control.set_members(Members::of(config));
    for tasks in joined.loops.values() {
        tasks.settings.send_modify(|s| s.members = names.clone());
    }
    joined.listed.send_replace(super::listed_nodes(config));
}

/// Stops `group`'s loop (which releases its VIPs and hands leadership over, as at
/// shutdown), stops its Raft, then drops its state from the store.
async fn remove_group(node: &Node, joined: &mut Joined, group: &str) {
    let Some(tasks) = joined.loops.remove(group) else {
        return;
    };
    // The loop stops stamping its watchdog beat as it ends: it leaves systemd's list first.
    joined
        .systemd
        .send_modify(|loops| loops.retain(|l| l.group != group));
    let _ = tasks.stop.send(true);
    let _ = tasks.task.await;
    let raft = joined.control.groups().get(group).map(|h| h.raft.clone());
    joined.control.update_groups(|groups| {
        groups.remove(group);
    });
    joined.proposer.remove_group(group);
    node.peer_handler.raft.deregister(group);
    if let Some(raft) = raft
        && let Err(e) = raft.shutdown().await
    {
        tracing::warn!(group = %group, "stopping the removed group's Raft: {e}");
    }
    let started = tokio::time::Instant::now();
    loop {
        match node.store.drop_group(group).await {
            Ok(()) => {
                tracing::info!(group = %group, "group removed: released, its Raft state dropped");
                return;
            }
            Err(StoreError::GroupInUse { .. }) if started.elapsed() < CLOSE_WAIT => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                tracing::warn!(group = %group, "group removed and released, but its Raft state stays in the store: {e}");
                return;
            }
        }
    }
}
