//! Forms a pristine cluster without a manual init step. The first time the nodes of a
//! pristine cluster can talk, the node whose name sorts first among those connected
//! initializes every group with ALL configured voters. It waits for every node for a
//! while, then settles for a majority, so that one node down at first start does not keep
//! the cluster from forming. Two nodes may both initialize (each first among what it
//! sees); openraft accepts that when the membership is identical, which it is: it comes
//! from the configured peer list. It must never initialize a node with stored state, nor
//! a cluster in which any peer has state.

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
use crate::control::protocol::{PeerReply, PeerRequest};

/// How long a pristine cluster waits for every configured node before it bootstraps
/// with a majority (the others join later and are caught up by the leader).
const BOOTSTRAP_WAIT_FOR_ALL: Duration = Duration::from_secs(5);

/// How often the connected peers are looked at again, besides on every change.
const RECHECK: Duration = Duration::from_millis(200);

/// No group has a membership yet: this node has never been part of a cluster.
pub fn is_pristine<'a>(rafts: impl IntoIterator<Item = &'a Raft>) -> bool {
    rafts.into_iter().all(|raft| {
        raft.metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .next()
            .is_none()
    })
}

/// Every configured node, as the voters a pristine cluster is initialized with.
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

/// What bootstrapping needs: who this node is, every configured voter, the groups to
/// initialize, and a way to ask the peers whether they are pristine too.
pub struct Bootstrap {
    pub self_name: String,
    pub members: BTreeMap<NodeId, PeerNode>,
    pub rafts: BTreeMap<String, Raft>,
    pub proposer: Arc<Proposer>,
    /// The peers connected now (`Mesh::connected`).
    pub connected: watch::Receiver<BTreeSet<String>>,
}

impl Bootstrap {
    /// Runs until the groups are initialized here or elsewhere, or `shutdown`.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let me = self.self_name.clone();
        let peers: BTreeSet<String> = self
            .members
            .values()
            .map(|n| n.name.clone())
            .filter(|n| *n != me)
            .collect();
        let majority = self.members.len() / 2 + 1;
        let started = tokio::time::Instant::now();
        loop {
            if *shutdown.borrow() || !is_pristine(self.rafts.values()) {
                return;
            }
            let reachable: Vec<String> = peers
                .iter()
                .filter(|p| self.connected.borrow().contains(*p))
                .cloned()
                .collect();
            let all = reachable.len() == peers.len();
            let enough = all
                || (reachable.len() + 1 >= majority && started.elapsed() >= BOOTSTRAP_WAIT_FOR_ALL);
            let first = reachable.iter().all(|p| *p > me);
            if enough && first {
                if self.initialize_with(&reachable).await {
                    return;
                }
            } else if !enough {
                tracing::debug!(
                    "bootstrap: {} of {} peers connected",
                    reachable.len(),
                    peers.len()
                );
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = self.connected.changed() => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Initializes every group if every reachable peer is pristine too; true when done
    /// here or when a peer already has state (then this node joins it).
    async fn initialize_with(&self, reachable: &[String]) -> bool {
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
            return true;
        }
        if !answers
            .iter()
            .all(|a| matches!(a, Ok(PeerReply::Pristine(true))))
        {
            return false;
        }
        for (name, raft) in &self.rafts {
            match raft.initialize(self.members.clone()).await {
                Ok(()) => tracing::info!(group = %name, voters = self.members.len(),
                    connected = reachable.len() + 1, "bootstrapped the group"),
                Err(e) => tracing::warn!(group = %name, "bootstrap: {e}"),
            }
        }
        true
    }
}
