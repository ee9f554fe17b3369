//! A reload in every group's history (`havip history`): once `havip reload` or SIGHUP has
//! changed this node's config, it commits [`Command::ConfigReloaded`] (its new
//! fingerprint and what changed) in each formed group, so the history that records who
//! held the VIP also records the config changes around it, the same on every node.
//!
//! Only in a group whose every member said, in its `Fingerprints`, that it can apply
//! the command (`COMMAND_LEVEL`): an older member, mid-upgrade, would stop the group's
//! Raft on an entry it cannot decode. Best effort and after the reload has answered: what
//! is not recorded is logged with the reason; it never holds up or undoes a reload.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver as _;

use super::Control;
use super::protocol::{PeerReply, PeerRequest};
use crate::consensus::state::{COMMAND_LEVEL, Command};
use crate::group::unix_ms;

/// How long a record waits for every member of a group to answer (a node being added or
/// removed by the same rollout is a member that may not answer yet, or any more).
const RECORD_WITHIN: Duration = Duration::from_secs(30);
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What a member said it can apply.
enum Level {
    Able,
    /// An older build: the record waits for nothing, it is not made in its groups.
    Older(u32),
    /// No answer (yet): asked again.
    Unknown(String),
}

fn level_of(reply: Result<PeerReply, impl std::fmt::Display>) -> Level {
    match reply {
        Ok(PeerReply::Fingerprints(f)) if f.commands >= COMMAND_LEVEL => Level::Able,
        Ok(PeerReply::Fingerprints(f)) => Level::Older(f.commands),
        Ok(other) => Level::Unknown(format!("answered {other:?}")),
        Err(e) => Level::Unknown(format!("did not answer ({e})")),
    }
}

/// Each group's members (voters and learners) as this node's replica has them; empty for
/// a group not formed yet.
fn members_of(control: &Control) -> BTreeMap<String, BTreeSet<String>> {
    (control.groups().iter())
        .map(|(name, handle)| {
            let metrics = handle.raft.metrics().borrow_watched().clone();
            let nodes = (metrics.membership_config.membership().nodes())
                .map(|(_, node)| node.name.clone())
                .collect();
            (name.clone(), nodes)
        })
        .collect()
}

/// Commits the record of this node's reload in every group it can, trying for
/// `RECORD_WITHIN` while a member does not answer. The record keeps the reload's time.
pub async fn record(control: Arc<Control>, config: String, changes: Vec<String>) {
    let at_unix_ms = unix_ms();
    let me = control.members().me.clone();
    let mut pending: BTreeSet<String> = control.groups().names().cloned().collect();
    let mut able: BTreeSet<String> = BTreeSet::from([me.clone()]);
    let deadline = tokio::time::Instant::now() + RECORD_WITHIN;
    let mut why: BTreeMap<String, String> = BTreeMap::new();
    while !pending.is_empty() && tokio::time::Instant::now() < deadline {
        // A later reload, waiting as this one did, must not be recorded before it: once
        // the config has moved on, the later reload's own record is the one to make.
        if control.fingerprints().config != config {
            tracing::info!(config = %config, "reload not recorded in the history: a later reload replaced its config first");
            return;
        }
        for (group, nodes) in members_of(&control) {
            if !pending.contains(&group) {
                continue;
            }
            if nodes.is_empty() {
                why.insert(group, "the group is not formed yet".into());
                continue;
            }
            let unasked: Vec<&String> = nodes.iter().filter(|n| !able.contains(*n)).collect();
            let mut ready = true;
            for node in unasked {
                match level_of(control.proposer.ask(node, &PeerRequest::Fingerprints).await) {
                    Level::Able => {
                        able.insert(node.clone());
                    }
                    Level::Older(level) => {
                        tracing::info!(group = %group, "reload not recorded in the group's history: member {node} runs a build without it (command level {level}); upgrade it first");
                        pending.remove(&group);
                        ready = false;
                        break;
                    }
                    Level::Unknown(reason) => {
                        why.insert(group.clone(), format!("member {node} {reason}"));
                        ready = false;
                        break;
                    }
                }
            }
            if ready {
                let command = Command::ConfigReloaded {
                    node: me.clone(),
                    config: config.clone(),
                    changes: changes.clone(),
                    at_unix_ms,
                };
                commit(&control, &group, command).await;
                pending.remove(&group);
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }
    for group in pending {
        let reason = why
            .remove(&group)
            .unwrap_or_else(|| "no longer here".into());
        tracing::info!(group = %group, "reload not recorded in the group's history within {RECORD_WITHIN:?}: {reason}");
    }
}

async fn commit(control: &Control, group: &str, command: Command) {
    match control.proposer.propose(group, command).await {
        Ok(()) => tracing::debug!(group = %group, "reload recorded in the group's history"),
        Err(e) => tracing::warn!(group = %group, "reload not recorded in the group's history: {e}"),
    }
}
