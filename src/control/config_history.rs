//! A reload in every group's history (`havip history`): once `havip reload` or SIGHUP has
//! changed this node's config, it commits [`Command::ConfigReloaded`] (its new
//! fingerprint and what changed) in each formed group, so the history that records who
//! held the VIP also records the config changes around it, the same on every node.
//!
//! Only in a group whose every member said, in its `Fingerprints`, that it can apply
//! the command (`COMMAND_LEVEL`): an older member, mid-upgrade, would stop the group's
//! Raft on an entry it cannot decode. Best effort: a first pass before the reload applies
//! anything (at most `Record::first`'s bound, so that a move the change starts finds the
//! log quiet), the rest after the reload has answered; what is not recorded is logged
//! with the reason; it never undoes a reload.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
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

/// One reload's record and how far it got: the groups it is in (or given up in), the
/// members known able, and why each other group is waiting.
pub struct Record {
    config: String,
    changes: Vec<String>,
    at_unix_ms: u64,
    settled: BTreeSet<String>,
    /// This reload's number (`Control::reloads_begun`).
    number: u64,
    able: BTreeSet<String>,
    why: BTreeMap<String, String>,
}

impl Record {
    /// The record of a reload to `config` (its fingerprint) that made `changes`; timed
    /// now. Not in the groups the reload removes: their history goes with them, and the
    /// other nodes, which removed them first, no longer answer in them (the first pass
    /// waited out its bound there).
    pub fn new(
        control: &Control,
        config: String,
        changes: Vec<String>,
        removed: &[String],
    ) -> Self {
        Record {
            config,
            changes,
            at_unix_ms: unix_ms(),
            settled: removed.iter().cloned().collect(),
            number: control.reloads_begun.fetch_add(1, Ordering::SeqCst) + 1,
            able: BTreeSet::from([control.members().me.clone()]),
            why: BTreeMap::new(),
        }
    }

    /// The groups running here that do not have the record yet.
    fn pending(&self, control: &Control) -> BTreeSet<String> {
        (control.groups().names())
            .filter(|g| !self.settled.contains(*g))
            .cloned()
            .collect()
    }

    /// One pass over the pending groups: asks the members not yet known able, commits
    /// the record where every member is.
    async fn attempt(&mut self, control: &Control) {
        for (group, nodes) in members_of(control) {
            if self.settled.contains(&group) {
                continue;
            }
            if nodes.is_empty() {
                self.why.insert(group, "the group is not formed yet".into());
                continue;
            }
            if self.members_able(control, &group, &nodes).await {
                // A later reload began meanwhile (its first pass may already have
                // committed): this older record would land after it.
                if self.superseded(control) {
                    return;
                }
                let command = Command::ConfigReloaded {
                    node: control.members().me.clone(),
                    config: self.config.clone(),
                    changes: self.changes.clone(),
                    at_unix_ms: self.at_unix_ms,
                };
                commit(control, &group, command).await;
                self.settled.insert(group);
            }
        }
    }

    fn superseded(&self, control: &Control) -> bool {
        control.reloads_begun.load(Ordering::SeqCst) != self.number
    }

    /// Whether every one of `nodes` can apply the record; a group with an older member
    /// is given up (logged), one with a silent member stays pending.
    async fn members_able(
        &mut self,
        control: &Control,
        group: &str,
        nodes: &BTreeSet<String>,
    ) -> bool {
        let unasked: Vec<&String> = nodes.iter().filter(|n| !self.able.contains(*n)).collect();
        for node in unasked {
            match level_of(control.proposer.ask(node, &PeerRequest::Fingerprints).await) {
                Level::Able => {
                    self.able.insert(node.clone());
                }
                Level::Older(level) => {
                    tracing::info!(group = %group, "reload not recorded in the group's history: member {node} runs a build without it (command level {level}); upgrade it first");
                    self.settled.insert(group.to_string());
                    return false;
                }
                Level::Unknown(reason) => {
                    self.why
                        .insert(group.to_string(), format!("member {node} {reason}"));
                    return false;
                }
            }
        }
        true
    }

    /// The first pass, before the reload applies anything, bounded by `within`. A change
    /// that moves a VIP (a priority lowered) starts its hand-over as soon as it is
    /// applied; a record committed during the hand-over put its entry between the
    /// release and the transfer, and the target had to flush it before standing (7-15 ms
    /// of the client's outage, measured on the lab). Recorded first, the log is quiet
    /// when the move starts, and the history reads in the order things happened. Cut
    /// at `within` (a member slow to answer, a group without a leader): a proposal cut
    /// may still commit, during the change, and `rest` then proposes it again (the
    /// history shows it once, `GroupState::configs`).
    pub async fn first(&mut self, control: &Control, within: Duration) {
        if tokio::time::timeout(within, self.attempt(control))
            .await
            .is_err()
        {
            tracing::info!(
                "reload record: first pass cut at {} ms; the rest after the reload",
                within.as_millis()
            );
        }
    }

    /// Whether every group running here has it (or gave it up).
    pub fn done(&self, control: &Control) -> bool {
        self.pending(control).is_empty()
    }

    /// The rest, after the reload has answered: retried every `RETRY_EVERY` for
    /// `RECORD_WITHIN` while a member does not answer (a node being added or removed by
    /// the same rollout) or a group is not formed yet (one the reload added). A record
    /// committed twice (the first pass cut after proposing) is history once
    /// (`GroupState::configs`).
    pub async fn rest(mut self, control: Arc<Control>) {
        let deadline = tokio::time::Instant::now() + RECORD_WITHIN;
        while !self.done(&control) && tokio::time::Instant::now() < deadline {
            // A later reload, waiting as this one did, must not be recorded before it:
            // once another reload began, its own record is the one to make.
            if self.superseded(&control) {
                tracing::info!(config = %self.config, "reload not recorded in the history: a later reload replaced its config first");
                return;
            }
            // Groups the reload added are pending too, and recorded in once formed.
            self.attempt(&control).await;
            if !self.done(&control) {
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
        for group in self.pending(&control) {
            let reason = (self.why.remove(&group)).unwrap_or_else(|| "no longer here".into());
            tracing::info!(group = %group, "reload not recorded in the group's history within {RECORD_WITHIN:?}: {reason}");
        }
    }
}

async fn commit(control: &Control, group: &str, command: Command) {
    match control.proposer.propose(group, command).await {
        Ok(()) => tracing::debug!(group = %group, "reload recorded in the group's history"),
        Err(e) => tracing::warn!(group = %group, "reload not recorded in the group's history: {e}"),
    }
}
