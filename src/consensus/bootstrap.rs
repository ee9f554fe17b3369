//! Forms VIP groups without a manual init step, in two situations:
//!
//! - **A pristine cluster** (every node's store empty: its first start). The first time the
//!   nodes can talk, the node whose name sorts first among those connected initializes
//!   every group with ALL configured voters. It waits for every node for a while, then
//!   settles for a majority, so that one node down at first start does not keep the
//!   cluster from forming. Two nodes may both initialize (each first among what it sees);
//!   openraft accepts that when the membership is identical, which it is: it comes from
//!   the configured peer list.
//! - **A group added to a running cluster** (on reload, or to every file followed by
//!   restarts): a group that this node lists but has no membership for is initialized,
//!   however old the rest of the store is, once *every* configured voter is connected,
//!   lists the group and has no membership for it either; the node that sorts first does
//!   it. Every voter, not a majority: a voter that is away may hold the group's state,
//!   and a second, fresh history beside it would be two clusters of one name. A voter
//!   that answers it is a member means the group exists: this node waits for its leader
//!   to replicate to it. Why a group waits is logged each time the reason changes.
//!
//! It must never initialize a group that this node or any peer has state for.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use openraft::async_runtime::WatchReceiver as _;
use tokio::sync::watch;

use crate::config::Config;
use crate::consensus::Raft;
use crate::consensus::proposer::Proposer;
use crate::consensus::types::{NodeId, PeerNode, node_id};
use crate::control::protocol::{GroupPresence, PeerReply, PeerRequest};

/// How long a pristine cluster waits for every configured node before it bootstraps
/// with a majority (the others join later and are caught up by the leader).
const BOOTSTRAP_WAIT_FOR_ALL: Duration = Duration::from_secs(5);

/// How often a pristine node that could form with a majority looks again whether the
/// listed peers it is not connected to are up (`Bootstrap::missing_are_up`).
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// How often the connected peers are looked at again, besides on every change.
const RECHECK: Duration = Duration::from_millis(200);

/// How often the peers are asked again about a group added to a running cluster (one small
/// request per peer, only while the group has no membership): the group gets its master
/// within this of the last node listing it.
const GROUP_RECHECK: Duration = Duration::from_millis(250);

/// No group has a membership yet: this node has never been part of a cluster.
pub fn is_pristine<'a>(rafts: impl IntoIterator<Item = &'a Raft>) -> bool {
    rafts.into_iter().all(has_no_membership)
}

/// This node has never taken part in `raft`'s group.
pub fn has_no_membership(raft: &Raft) -> bool {
    raft.metrics()
        .borrow_watched()
        .membership_config
        .membership()
        .voter_ids()
        .next()
        .is_none()
}

/// What this node has of a group, as it answers `PeerRequest::GroupPresence`.
pub fn presence(raft: Option<&Raft>) -> GroupPresence {
    match raft {
        None => GroupPresence::Unlisted,
        Some(raft) if has_no_membership(raft) => GroupPresence::NoMembership,
        Some(_) => GroupPresence::Member,
    }
}

/// Every configured node, as the voters a group is initialized with.
pub fn voters(config: &Config) -> BTreeMap<NodeId, PeerNode> {
    config
        .cluster
        .peers
        .iter()
        .map(|p| {
            let node = PeerNode {
                name: p.name.clone(),
                addr: p.address.to_string(),
            };
            (node_id(&p.name), node)
        })
        .collect()
}

/// Whether a pristine cluster of `voters` may be formed with the `connected` other voters
/// this node has after `waited`: all of them at once, or a majority of every voter (this
/// node included) once `BOOTSTRAP_WAIT_FOR_ALL` has passed. Three voters form with two,
/// five with three. Pure, so the rule is tested for every cluster size.
pub fn enough_to_form(voters: usize, connected: usize, waited: Duration) -> bool {
    let majority = voters / 2 + 1;
    connected + 1 >= voters || (connected + 1 >= majority && waited >= BOOTSTRAP_WAIT_FOR_ALL)
}

/// Whether something takes TCP connections at `addr` (dialled from `source`, as the mesh
/// dials, so a peer that refuses unknown sources still accepts first), within 300 ms.
async fn takes_connections(addr: std::net::SocketAddr, source: Option<std::net::IpAddr>) -> bool {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    let Ok(socket) = socket else {
        return false;
    };
    if let Some(ip) = source
        && socket.bind(std::net::SocketAddr::new(ip, 0)).is_err()
    {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_millis(300), socket.connect(addr)).await,
        Ok(Ok(_))
    )
}

/// What the peers' answers about a group added to a running cluster allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupVerdict {
    /// Every voter lists it and none has a membership: it may be initialized.
    Initialize,
    /// A voter is a member: the group exists; its leader brings this node in.
    Exists { peer: String },
    /// Not yet, for the reason given (a voter away, not listing it, not answering).
    Wait { reason: String },
}

/// Decides from every other voter's answer (`None`: not connected; `Err`: no valid
/// answer). Pure, so the rule is tested without a cluster.
pub fn group_verdict(answers: &[(String, Option<Result<GroupPresence, String>>)]) -> GroupVerdict {
    if let Some((peer, _)) = answers
        .iter()
        .find(|(_, a)| matches!(a, Some(Ok(GroupPresence::Member))))
    {
        return GroupVerdict::Exists { peer: peer.clone() };
    }
    let mut reasons = Vec::new();
    for (peer, answer) in answers {
        match answer {
            Some(Ok(GroupPresence::NoMembership)) => {}
            Some(Ok(GroupPresence::Member)) => {}
            Some(Ok(GroupPresence::Unlisted)) => {
                reasons.push(format!("{peer} does not list it in its config"))
            }
            Some(Err(e)) => reasons.push(format!("{peer} did not answer ({e})")),
            None => reasons.push(format!("{peer} is not connected")),
        }
    }
    if reasons.is_empty() {
        GroupVerdict::Initialize
    } else {
        GroupVerdict::Wait {
            reason: reasons.join("; "),
        }
    }
}

/// What bootstrapping needs: who this node is, every configured voter, the groups to
/// form, and a way to ask the peers about them.
pub struct Bootstrap {
    pub self_name: String,
    /// Every listed node by name, this one included; a reload may change it, and each
    /// round reads it again.
    pub listed: watch::Receiver<BTreeMap<String, PeerNode>>,
    /// `listed` as of this round, by Raft id: the voters a group is initialized with.
    pub members: BTreeMap<NodeId, PeerNode>,
    pub rafts: BTreeMap<String, Raft>,
    pub proposer: Arc<Proposer>,
    /// The peers connected now (`Mesh::connected`).
    pub connected: watch::Receiver<BTreeSet<String>>,
    /// Every group's store here was empty at start: the cluster may be forming for the
    /// first time (the peers are asked whether theirs are too).
    pub pristine_cluster: bool,
}

impl Bootstrap {
    /// Runs until every group here has a membership, or `shutdown`.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let me = self.self_name.clone();
        let started = tokio::time::Instant::now();
        let mut waiting_for: BTreeMap<String, String> = BTreeMap::new();
        let mut next_group_check = tokio::time::Instant::now();
        let mut probed: Option<(tokio::time::Instant, bool)> = None;
        loop {
            let unformed: Vec<String> = (self.rafts.iter())
                .filter(|(_, raft)| has_no_membership(raft))
                .map(|(name, _)| name.clone())
                .collect();
            if *shutdown.borrow() || unformed.is_empty() {
                return;
            }
            self.members = (self.listed.borrow().values())
                .map(|n| (node_id(&n.name), n.clone()))
                .collect();
            let peers: Vec<String> = (self.members.values())
                .map(|n| n.name.clone())
                .filter(|n| *n != me)
                .collect();
            let reachable: Vec<String> = (peers.iter())
                .filter(|p| self.connected.borrow().contains(*p))
                .cloned()
                .collect();
            let first = reachable.iter().all(|p| *p > me);
            if self.pristine_cluster {
                let enough = enough_to_form(self.members.len(), reachable.len(), started.elapsed());
                let missing: Vec<String> = (peers.iter())
                    .filter(|p| !reachable.contains(*p))
                    .cloned()
                    .collect();
                // Probed at most every PROBE_EVERY: each probe is a rejected connection
                // in a running cluster's counters, which an alert watches.
                let blocked = if !(enough && first) || missing.is_empty() {
                    false
                } else if let Some((at, up)) = probed
                    && at.elapsed() < PROBE_EVERY
                {
                    up
                } else {
                    let up = self.missing_are_up(&missing, &mut waiting_for).await;
                    probed = Some((tokio::time::Instant::now(), up));
                    up
                };
                if enough && first && !blocked {
                    self.form_cluster(&reachable).await;
                } else if !enough {
                    tracing::debug!(
                        "bootstrap: {} of {} peers connected",
                        reachable.len(),
                        peers.len()
                    );
                }
            } else if tokio::time::Instant::now() >= next_group_check {
                next_group_check = tokio::time::Instant::now() + GROUP_RECHECK;
                let everyone_first = peers.iter().all(|p| *p > me);
                for group in &unformed {
                    let verdict = self.ask_about(group, &peers).await;
                    self.act_on(group, verdict, everyone_first, &mut waiting_for)
                        .await;
                }
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = self.connected.changed() => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Whether a listed peer that is not connected is up all the same (its peer port takes
    /// a TCP connection): then this node may not form a cluster with a majority only. Such a
    /// peer either connects in a moment, or does not list this node, which is what a
    /// running cluster does whose files do not name the new nodes yet: new nodes started
    /// first, a majority of their own lists, would otherwise form a second cluster under
    /// the same group names beside it. Said once per set of such peers.
    async fn missing_are_up(
        &self,
        missing: &[String],
        waiting_for: &mut BTreeMap<String, String>,
    ) -> bool {
        let source = (self.members.values())
            .find(|n| n.name == self.self_name)
            .and_then(|n| n.addr.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.ip());
        let probes = missing.iter().map(|name| async move {
            let addr = (self.members.values())
                .find(|n| n.name == *name)
                .and_then(|n| n.addr.parse::<std::net::SocketAddr>().ok());
            let up = match addr {
                Some(addr) => takes_connections(addr, source).await,
                None => false,
            };
            up.then(|| name.clone())
        });
        let up: Vec<String> = join_all(probes).await.into_iter().flatten().collect();
        if up.is_empty() {
            return false;
        }
        let reason = format!(
            "{} up but not connected to this node: their peer lists may not name it yet (a \
             running cluster: reload its nodes with the new list first); forming only with \
             every node",
            up.join(", ")
        );
        if waiting_for.get("") != Some(&reason) {
            tracing::warn!("bootstrap: {reason}");
            waiting_for.insert(String::new(), reason);
        }
        true
    }

    /// Initializes every group if every reachable peer is pristine too. A peer with state
    /// means the cluster exists: from then on the groups are formed one by one, or joined.
    async fn form_cluster(&mut self, reachable: &[String]) {
        let answers = join_all(
            reachable
                .iter()
                .map(|p| self.proposer.ask(p, &PeerRequest::Pristine)),
        )
        .await;
        if answers
            .iter()
            .any(|a| matches!(a, Ok(PeerReply::Pristine(false))))
        {
            tracing::info!("a peer already has cluster state: not bootstrapping, joining it");
            self.pristine_cluster = false;
            return;
        }
        if !answers
            .iter()
            .all(|a| matches!(a, Ok(PeerReply::Pristine(true))))
        {
            return;
        }
        for (name, raft) in &self.rafts {
            match raft.initialize(self.members.clone()).await {
                Ok(()) => tracing::info!(group = %name, voters = self.members.len(),
                    connected = reachable.len() + 1, "bootstrapped the group"),
                Err(e) => tracing::warn!(group = %name, "bootstrap: {e}"),
            }
        }
        self.pristine_cluster = false;
    }

    /// Asks every other voter what it has of `group`.
    async fn ask_about(&self, group: &str, peers: &[String]) -> GroupVerdict {
        let request = PeerRequest::GroupPresence {
            group: group.to_string(),
        };
        let connected = self.connected.borrow().clone();
        let answers = join_all(peers.iter().map(|peer| {
            let request = &request;
            let connected = connected.contains(peer);
            async move {
                if !connected {
                    return (peer.clone(), None);
                }
                let answer = match self.proposer.ask(peer, request).await {
                    Ok(PeerReply::GroupPresence(p)) => Ok(p),
                    Ok(PeerReply::Failed(e)) => Err(e),
                    Ok(other) => Err(format!("unexpected reply {other:?}")),
                    Err(e) => Err(e.to_string()),
                };
                (peer.clone(), Some(answer))
            }
        }))
        .await;
        group_verdict(&answers)
    }

    /// Initializes `group` when allowed and this node sorts first of all voters; says why
    /// it waits when the reason changed.
    async fn act_on(
        &self,
        group: &str,
        verdict: GroupVerdict,
        first: bool,
        waiting_for: &mut BTreeMap<String, String>,
    ) {
        let reason = match verdict {
            GroupVerdict::Initialize if first => {
                let Some(raft) = self.rafts.get(group) else {
                    return;
                };
                match raft.initialize(self.members.clone()).await {
                    Ok(()) => tracing::info!(group = %group, voters = self.members.len(),
                        "formed the group: every voter lists it"),
                    Err(e) => tracing::warn!(group = %group, "forming the group: {e}"),
                }
                return;
            }
            GroupVerdict::Initialize => "every voter lists it; the first of them forms it".into(),
            GroupVerdict::Exists { peer } => {
                format!("{peer} is a member; waiting for the group's leader to bring this node in")
            }
            GroupVerdict::Wait { reason } => {
                format!("it is formed once every voter lists it, and {reason}")
            }
        };
        if waiting_for.get(group) != Some(&reason) {
            tracing::info!(group = %group, "group has no master yet: {reason}");
            waiting_for.insert(group.to_string(), reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(
        peer: &str,
        a: Option<Result<GroupPresence, String>>,
    ) -> (String, Option<Result<GroupPresence, String>>) {
        (peer.to_string(), a)
    }

    #[test]
    fn a_group_is_formed_only_when_every_voter_lists_it_without_state() {
        use GroupPresence::*;
        let all = [
            answer("gw-b", Some(Ok(NoMembership))),
            answer("witness", Some(Ok(NoMembership))),
        ];
        assert_eq!(group_verdict(&all), GroupVerdict::Initialize);
        let unlisted = [
            answer("gw-b", Some(Ok(NoMembership))),
            answer("witness", Some(Ok(Unlisted))),
        ];
        let GroupVerdict::Wait { reason } = group_verdict(&unlisted) else {
            panic!("must wait");
        };
        assert!(reason.contains("witness does not list it"), "{reason}");
        let away = [
            answer("gw-b", Some(Ok(NoMembership))),
            answer("witness", None),
        ];
        let GroupVerdict::Wait { reason } = group_verdict(&away) else {
            panic!("a voter away may hold the group's state: must wait");
        };
        assert!(reason.contains("witness is not connected"), "{reason}");
        let silent = [
            answer("gw-b", Some(Err("timed out".into()))),
            answer("witness", Some(Ok(NoMembership))),
        ];
        assert!(matches!(group_verdict(&silent), GroupVerdict::Wait { .. }));
    }

    #[test]
    fn a_pristine_cluster_forms_with_everyone_at_once_or_a_majority_after_the_wait() {
        let (soon, later) = (Duration::ZERO, BOOTSTRAP_WAIT_FOR_ALL);
        // (voters, other voters connected, formed at once, formed after the wait)
        let rows = [
            (3, 2, true, true),
            (3, 1, false, true),
            (3, 0, false, false),
            (5, 4, true, true),
            (5, 3, false, true),
            (5, 2, false, true),
            (5, 1, false, false),
            (5, 0, false, false),
        ];
        for (voters, connected, at_once, after_wait) in rows {
            assert_eq!(
                enough_to_form(voters, connected, soon),
                at_once,
                "{voters} voters, {connected} connected, at once"
            );
            assert_eq!(
                enough_to_form(voters, connected, later),
                after_wait,
                "{voters} voters, {connected} connected, after the wait"
            );
        }
    }

    #[test]
    fn a_member_anywhere_means_the_group_exists_even_with_voters_away() {
        use GroupPresence::*;
        let answers = [answer("gw-b", None), answer("witness", Some(Ok(Member)))];
        assert_eq!(
            group_verdict(&answers),
            GroupVerdict::Exists {
                peer: "witness".into()
            }
        );
    }
}
