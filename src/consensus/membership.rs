//! Carries out `membership_plan` for one group (issue 13 item 2): on the group's leader,
//! once a second, when the membership differs from this node's peer list, it gathers the
//! facts (every connected node's list and role, who acknowledged the leader within the
//! hold lease, which learners have caught up), takes the one next step through openraft
//! (`add_learner`, `change_membership`) and logs what it does or waits for, each time
//! that changes. While the membership matches the list it asks nobody anything, so an
//! idle cluster pays nothing for it.
//!
//! The lists change when a node reloads (or restarts with) a new file: a node added
//! joins the mesh of every node that lists it, the leader adds it as a learner and
//! promotes it; a node dropped from the lists is removed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use openraft::ChangeMembers;
use openraft::ServerState;
use openraft::async_runtime::Instant as _;
use openraft::async_runtime::WatchReceiver as _;
use tokio::sync::watch;

use super::Raft;
use super::membership_plan::{Current, Facts, Step, next_step};
use super::proposer::Proposer;
use super::state::COMMAND_LEVEL;
use super::types::{NodeId, PeerNode, node_id};
use crate::config::Role;
use crate::control::protocol::{PeerReply, PeerRequest};

/// How often the leader looks again.
const EVERY: Duration = Duration::from_secs(1);

/// A learner within this many entries of the leader's log has caught up: facts and
/// history are appended all the time, so "equal" may never be seen.
const CAUGHT_UP_WITHIN: u64 = 16;

/// One group's membership driver.
pub struct MembershipDriver {
    pub group: String,
    pub raft: Raft,
    pub me: String,
    pub role: Role,
    /// Every node of this node's peer list, itself included; a reload changes it.
    pub nodes: watch::Receiver<BTreeMap<String, PeerNode>>,
    pub proposer: Arc<Proposer>,
    pub connected: watch::Receiver<BTreeSet<String>>,
    /// A peer that acknowledged the leader less than this ago counts as acknowledging.
    pub lease: Duration,
    /// Where the last step is shown (`havip member list`): empty when there is none.
    pub said: watch::Sender<String>,
}

impl MembershipDriver {
    /// Runs until `stopped` turns true.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let (mut said, mut failed) = (String::new(), String::new());
        loop {
            let gone = tokio::select! {
                changed = stopped.changed() => changed.is_err(),
                () = tokio::time::sleep(EVERY) => false,
            };
            if gone || *stopped.borrow() {
                return;
            }
            let Some(current) = self.leader_view() else {
                said.clear();
                self.said
                    .send_if_modified(|s| !std::mem::take(s).is_empty());
                continue;
            };
            let listed: BTreeSet<String> = self.nodes.borrow().keys().cloned().collect();
            if !current.is_joint() && current.voters() == listed && current.learners.is_empty() {
                said.clear();
                self.said
                    .send_if_modified(|s| !std::mem::take(s).is_empty());
                continue;
            }
            let step = match self.facts(&listed).await {
                Ok(facts) => next_step(&current, &facts),
                Err(why) => Step::Wait(why),
            };
            let text = step.to_string();
            if text != said {
                match step {
                    Step::Wait(_) | Step::Refuse(_) | Step::HandOver => {
                        tracing::warn!(group = %self.group, "membership: {text}")
                    }
                    _ => tracing::info!(group = %self.group, "membership: {text}"),
                }
                said = text;
                self.said.send_replace(said.clone());
            }
            // A failure is said once per reason, as the waits are: it is tried every second.
            match self.carry_out(&step).await {
                Ok(()) => failed.clear(),
                Err(e) if e != failed => {
                    tracing::warn!(group = %self.group, "membership: {step} failed: {e}");
                    failed = e;
                }
                Err(_) => {}
            }
        }
    }

    /// The membership as this node's replica has it, when this node leads the group.
    fn leader_view(&self) -> Option<Current> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        if metrics.state != ServerState::Leader || metrics.current_leader != Some(node_id(&self.me))
        {
            return None;
        }
        Some(current_of(&metrics))
    }

    /// What the plan needs besides the membership; an error when a connected node did not
    /// say its list (a node of an older version does not know the question): its list
    /// may differ, so nothing may change.
    async fn facts(&self, listed: &BTreeSet<String>) -> Result<Facts, String> {
        let mut facts = Facts {
            leader: self.me.clone(),
            ..Facts::default()
        };
        facts.lists.insert(self.me.clone(), listed.clone());
        if self.role == Role::Gateway {
            facts.gateways.insert(self.me.clone());
        }
        facts.connected = self.connected.borrow().clone();
        let asked = join_all(facts.connected.iter().map(|peer| async move {
            (
                peer.clone(),
                self.proposer.ask(peer, &PeerRequest::PeerList).await,
            )
        }))
        .await;
        let mut silent = Vec::new();
        for (peer, reply) in asked {
            match reply {
                Ok(PeerReply::PeerList {
                    role,
                    peers,
                    commands,
                }) => {
                    if role == Role::Gateway {
                        facts.gateways.insert(peer.clone());
                    }
                    if commands < COMMAND_LEVEL {
                        facts.older.insert(peer.clone(), commands);
                    }
                    facts.lists.insert(peer, peers.into_iter().collect());
                }
                Ok(other) => silent.push(format!("{peer} ({other:?})")),
                Err(e) => silent.push(format!("{peer} ({e})")),
            }
        }
        if !silent.is_empty() {
            return Err(format!(
                "no peer list from {}: a node of an older version, or one still starting",
                silent.join(", ")
            ));
        }
        let metrics = self.raft.metrics().borrow_watched().clone();
        let known: BTreeMap<NodeId, String> = (metrics.membership_config.membership().nodes())
            .map(|(id, node)| (*id, node.name.clone()))
            .collect();
        facts.acknowledging.insert(self.me.clone());
        for (id, acked) in metrics.heartbeat.iter().flatten() {
            if let (Some(name), Some(acked)) = (known.get(id), acked)
                && acked.elapsed() < self.lease
            {
                facts.acknowledging.insert(name.clone());
            }
        }
        let last = metrics.last_log_index.unwrap_or(0);
        for (id, matched) in metrics.replication.iter().flatten() {
            if let (Some(name), Some(matched)) = (known.get(id), matched)
                && matched.index + CAUGHT_UP_WITHIN >= last
            {
                facts.caught_up.insert(name.clone());
            }
        }
        Ok(facts)
    }

    /// Takes `step` through openraft; returns once it is committed (or failed).
    async fn carry_out(&self, step: &Step) -> Result<(), String> {
        let ids = |names: &BTreeSet<String>| -> BTreeSet<NodeId> {
            names.iter().map(|n| node_id(n)).collect()
        };
        let result = match step {
            Step::AddLearner(name) => {
                let Some(node) = self.nodes.borrow().get(name).cloned() else {
                    return Err(format!("{name} is not in this node's peer list"));
                };
                self.raft
                    .add_learner(node_id(name), node, false)
                    .await
                    .map(|_| ())
            }
            Step::ChangeVoters { voters } | Step::Finish { voters } => self
                .raft
                .change_membership(ChangeMembers::ReplaceAllVoters(ids(voters)), false)
                .await
                .map(|_| ()),
            Step::DropLearners(learners) => self
                .raft
                .change_membership(ChangeMembers::RemoveNodes(ids(learners)), false)
                .await
                .map(|_| ()),
            Step::Nothing | Step::HandOver | Step::Wait(_) | Step::Refuse(_) => Ok(()),
        };
        result.map_err(|e| e.to_string())
    }
}

/// A group's membership as `metrics` (this node's replica) has it, by node name.
pub fn current_of(metrics: &openraft::RaftMetrics<super::types::TypeConfig>) -> Current {
    let membership = metrics.membership_config.membership();
    let names: BTreeMap<NodeId, String> = membership
        .nodes()
        .map(|(id, node)| (*id, node.name.clone()))
        .collect();
    let name = |id: &NodeId| {
        names
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("node {id:x}"))
    };
    Current {
        configs: (membership.get_joint_config().iter())
            .map(|set| set.iter().map(name).collect())
            .collect(),
        learners: membership.learner_ids().map(|id| name(&id)).collect(),
    }
}
