//! Commits commands to a VIP group's Raft from wherever they start (an operator's
//! request, a group loop's facts or history): locally when this node leads the group,
//! else forwarded to the leader over the mesh's control channel, and answers the
//! forwarded writes that reach this node as leader. Also asks peers' daemons the other
//! control questions (`ask`). It decides nothing about what to commit, and it must never
//! report a command done before it is committed.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver as _;
use openraft::error::{ClientWriteError, RaftError};

use crate::consensus::Raft;
use crate::consensus::state::Command;
use crate::consensus::types::{NodeId, TypeConfig, node_id};
use crate::control::protocol::{CONTROL_CHANNEL, PeerReply, PeerRequest};
use crate::peer::{Mesh, MeshError};

/// How long a peer may take to answer a control request (status, forwarded writes).
pub const PEER_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the leader waits for a write to commit (less than PEER_TIMEOUT, so that a
/// forwarded write's answer arrives before the forwarder gives up on it).
pub const WRITE_TIMEOUT: Duration = Duration::from_millis(400);

/// How often `propose` tries before it gives up, and how long it waits between tries.
const ATTEMPTS: usize = 20;
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// A control question to a peer's daemon that got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("{0}")]
    Encode(#[from] serde_json::Error),
    /// The mesh's own message names the peer.
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error("malformed reply from {peer}: {source}")]
    Malformed {
        peer: String,
        source: serde_json::Error,
    },
}

/// Why one attempt to commit failed (the last one is what `propose` reports).
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("no leader")]
    NoLeader,
    /// This node leads and its Raft refused the write.
    #[error(transparent)]
    Local(#[from] RaftError<TypeConfig, ClientWriteError<TypeConfig>>),
    /// The leader answered that it could not commit.
    #[error("{peer}: {reason}")]
    Refused { peer: String, reason: String },
    #[error("{peer} is no longer the leader")]
    NotLeader { peer: String },
    #[error("{peer}: {source}")]
    Ask { peer: String, source: AskError },
}

/// A command that was not committed; says in which group, and what was already done.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("no group named {group:?}")]
    NoGroup { group: String },
    #[error("group {group}: the change was not committed ({last}); is a majority of the nodes up?")]
    NotCommitted { group: String, last: AttemptError },
    /// One of several groups failed after others had committed (`propose_all`).
    #[error("{failed}; already committed in: {}", committed.join(", "))]
    Partly {
        failed: Box<ProposeError>,
        committed: Vec<String>,
    },
}

fn names_by_id(members: &[String]) -> BTreeMap<NodeId, String> {
    members.iter().map(|n| (node_id(n), n.clone())).collect()
}

/// Commits commands in this node's groups; see the module comment.
pub struct Proposer {
    self_id: NodeId,
    /// Every listed node's name by Raft id, to reach the leader by name; a reload that
    /// changes the peer list replaces them (`set_members`).
    names: RwLock<BTreeMap<NodeId, String>>,
    mesh: Arc<Mesh>,
    /// Changed by a reload that adds or removes a group.
    rafts: RwLock<BTreeMap<String, Raft>>,
}

impl Proposer {
    /// `members`: every configured node, this one included.
    pub fn new(
        self_name: &str,
        members: &[String],
        mesh: Arc<Mesh>,
        rafts: BTreeMap<String, Raft>,
    ) -> Self {
        Proposer {
            self_id: node_id(self_name),
            names: RwLock::new(names_by_id(members)),
            mesh,
            rafts: RwLock::new(rafts),
        }
    }

    /// A configured node's name from its Raft id.
    fn raft(&self, group: &str) -> Option<Raft> {
        let rafts = self.rafts.read().unwrap_or_else(|p| p.into_inner());
        rafts.get(group).cloned()
    }

    /// A group a reload started: its writes are committed from now on.
    pub fn add_group(&self, group: &str, raft: Raft) {
        let mut rafts = self.rafts.write().unwrap_or_else(|p| p.into_inner());
        rafts.insert(group.to_string(), raft);
    }

    /// A group a reload removed.
    pub fn remove_group(&self, group: &str) {
        let mut rafts = self.rafts.write().unwrap_or_else(|p| p.into_inner());
        rafts.remove(group);
    }

    pub fn name_of(&self, id: Option<NodeId>) -> Option<String> {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        id.and_then(|id| names.get(&id).cloned())
    }

    /// The listed nodes from now on, this one included (a reload).
    pub fn set_members(&self, members: &[String]) {
        *self.names.write().unwrap_or_else(|p| p.into_inner()) = names_by_id(members);
    }

    /// Asks a peer's daemon over the control channel, bounded by `PEER_TIMEOUT`.
    pub async fn ask(&self, peer: &str, request: &PeerRequest) -> Result<PeerReply, AskError> {
        let payload = serde_json::to_vec(request)?;
        let reply = self
            .mesh
            .request(peer, CONTROL_CHANNEL, payload, PEER_TIMEOUT)
            .await?;
        serde_json::from_slice(&reply).map_err(|source| AskError::Malformed {
            peer: peer.to_string(),
            source,
        })
    }

    /// Commits `command` in `group`: locally when this node leads, else through the
    /// leader. Returns once committed, or an error after a bounded number of attempts.
    pub async fn propose(&self, group: &str, command: Command) -> Result<(), ProposeError> {
        let raft = self.raft(group).ok_or_else(|| ProposeError::NoGroup {
            group: group.to_string(),
        })?;
        let mut last = AttemptError::NoLeader;
        for _ in 0..ATTEMPTS {
            let leader = raft.metrics().borrow_watched().current_leader;
            match leader {
                Some(id) if id == self.self_id => match raft.client_write(command.clone()).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = AttemptError::Local(e),
                },
                Some(id) => {
                    let peer = self.name_of(Some(id)).unwrap_or_default();
                    let request = PeerRequest::Write {
                        group: group.into(),
                        command: command.clone(),
                    };
                    last = match self.ask(&peer, &request).await {
                        Ok(PeerReply::Written) => return Ok(()),
                        Ok(PeerReply::Failed(reason)) => AttemptError::Refused { peer, reason },
                        Ok(_) => AttemptError::NotLeader { peer },
                        Err(source) => AttemptError::Ask { peer, source },
                    };
                }
                None => {}
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
        Err(ProposeError::NotCommitted {
            group: group.to_string(),
            last,
        })
    }

    /// Commits one command per group, in order; on a failure says which groups were
    /// already changed, so the operator knows what to undo or retry.
    pub async fn propose_all(&self, commands: Vec<(String, Command)>) -> Result<(), ProposeError> {
        let mut committed: Vec<String> = Vec::new();
        for (group, command) in commands {
            if let Err(failed) = self.propose(&group, command).await {
                return Err(if committed.is_empty() {
                    failed
                } else {
                    ProposeError::Partly {
                        failed: Box::new(failed),
                        committed,
                    }
                });
            }
            committed.push(group);
        }
        Ok(())
    }

    /// The leader's side of a forwarded write (`PeerRequest::Write`): commits it if this
    /// node leads `group`, within `WRITE_TIMEOUT`, else says who leads.
    pub async fn write_as_leader(&self, group: &str, command: Command) -> PeerReply {
        let Some(raft) = self.raft(group) else {
            return PeerReply::Failed(format!("no group named {group:?} here"));
        };
        let leader = raft.metrics().borrow_watched().current_leader;
        if leader != Some(self.self_id) {
            return PeerReply::NotLeader {
                leader: self.name_of(leader),
            };
        }
        match tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(command)).await {
            Ok(Ok(_)) => PeerReply::Written,
            Ok(Err(e)) => PeerReply::Failed(e.to_string()),
            Err(_) => PeerReply::Failed(format!("not committed within {WRITE_TIMEOUT:?}")),
        }
    }

    /// The proposer of one group, for that group's loop.
    pub fn for_group(self: &Arc<Self>, group: &str) -> GroupProposer {
        GroupProposer {
            proposer: self.clone(),
            group: group.to_string(),
        }
    }
}

/// What a group loop commits through: `Proposer::propose` bound to its group.
#[derive(Clone)]
pub struct GroupProposer {
    proposer: Arc<Proposer>,
    group: String,
}

impl GroupProposer {
    /// Commits `command` in this group; the future owns what it needs, so it can be
    /// spawned.
    pub fn propose(
        &self,
        command: Command,
    ) -> impl Future<Output = Result<(), ProposeError>> + Send + 'static {
        let proposer = self.proposer.clone();
        let group = self.group.clone();
        async move { proposer.propose(&group, command).await }
    }
}
