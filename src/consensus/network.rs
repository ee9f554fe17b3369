//! openraft's network over the peer mesh: the client side (`RaftNetworkV2`) that sends a
//! group's RPCs to a peer, and the server side that hands incoming RPCs to the right
//! group's Raft. Must never block one group on another: each RPC is its own request.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{RaftNetworkFactory, RaftNetworkV2};

use crate::consensus::Raft;
use crate::consensus::rpc::{self, RAFT_CHANNEL, RaftEnvelope, RaftReply, RaftRequest};
use crate::consensus::types::{NodeId, PeerNode, Snapshot, SnapshotData, TypeConfig, Vote};
use crate::peer::Mesh;

/// Why an RPC failed, as openraft's `Unreachable` wants it (a std error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RpcFailure(String);

fn unreachable(why: impl Into<String>) -> Unreachable<TypeConfig> {
    Unreachable::new(&RpcFailure(why.into()))
}

/// Creates one client per (group, target peer).
pub struct PeerNetwork {
    mesh: Arc<Mesh>,
    group: String,
}

impl PeerNetwork {
    pub fn new(mesh: Arc<Mesh>, group: &str) -> Self {
        Self {
            mesh,
            group: group.to_string(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, _target: NodeId, node: &PeerNode) -> PeerClient {
        PeerClient {
            mesh: self.mesh.clone(),
            group: self.group.clone(),
            peer: node.name.clone(),
        }
    }
}

pub struct PeerClient {
    mesh: Arc<Mesh>,
    group: String,
    peer: String,
}

impl PeerClient {
    async fn call(
        &self,
        request: RaftRequest,
        ttl: Duration,
    ) -> Result<RaftReply, Unreachable<TypeConfig>> {
        let envelope = RaftEnvelope {
            group: self.group.clone(),
            request,
        };
        let payload = rpc::encode(&envelope).map_err(|e| unreachable(e.to_string()))?;
        let reply = self
            .mesh
            .request(&self.peer, RAFT_CHANNEL, payload, ttl)
            .await
            .map_err(|e| unreachable(format!("{}: {e}", self.peer)))?;
        rpc::decode(&reply).map_err(|e| unreachable(format!("{}: {e}", self.peer)))
    }

    fn unexpected(&self, what: &str) -> Unreachable<TypeConfig> {
        unreachable(format!(
            "{} answered a {what} with another kind of reply",
            self.peer
        ))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(RaftRequest::Append(rpc), option.soft_ttl())
            .await?
        {
            RaftReply::Append(reply) => Ok(reply),
            _ => Err(self.unexpected("append").into()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(RaftRequest::Vote(rpc), option.soft_ttl()).await? {
            RaftReply::Vote(reply) => Ok(reply),
            _ => Err(self.unexpected("vote").into()),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(RaftRequest::PreVote(rpc), option.soft_ttl())
            .await?
        {
            RaftReply::Vote(reply) => Ok(reply),
            _ => Err(self.unexpected("pre-vote").into()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let request = RaftRequest::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        match self.call(request, option.hard_ttl()).await? {
            RaftReply::Snapshot(reply) => Ok(reply),
            _ => Err(self.unexpected("snapshot").into()),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(RaftRequest::TransferLeader(req), option.soft_ttl())
            .await?
        {
            RaftReply::TransferLeader(reply) => Ok(reply),
            _ => Err(self.unexpected("transfer-leader").into()),
        }
    }
}

/// The receiving side: finds the group's Raft and lets it answer. Groups are registered
/// as they start, so an RPC for a group that is not (yet) running gets a clear error.
#[derive(Clone, Default)]
pub struct RaftService {
    groups: Arc<RwLock<HashMap<String, Raft>>>,
    /// When each group last accepted an append (a heartbeat) from its leader: a node stands
    /// for election only after `election_timeout` of this silence (`ticks`), the witness
    /// after a longer one.
    last_append: Arc<RwLock<HashMap<String, tokio::time::Instant>>>,
}

impl RaftService {
    pub fn register(&self, group: &str, raft: Raft) {
        if let Ok(mut groups) = self.groups.write() {
            groups.insert(group.to_string(), raft);
        }
    }

    /// A group a reload removed: its Raft traffic is refused from now on.
    pub fn deregister(&self, group: &str) {
        if let Ok(mut groups) = self.groups.write() {
            groups.remove(group);
        }
        if let Ok(mut last) = self.last_append.write() {
            last.remove(group);
        }
    }

    pub fn last_append(&self, group: &str) -> Option<tokio::time::Instant> {
        self.last_append
            .read()
            .ok()
            .and_then(|m| m.get(group).copied())
    }

    fn raft(&self, group: &str) -> Option<Raft> {
        self.groups
            .read()
            .ok()
            .and_then(|groups| groups.get(group).cloned())
    }

    /// Answers one incoming Raft request (the mesh's payload on `RAFT_CHANNEL`).
    pub fn handle(
        &self,
        from: &str,
        payload: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>> {
        let service = self.clone();
        let from = from.to_string();
        Box::pin(async move {
            let envelope: RaftEnvelope = rpc::decode(&payload).map_err(|e| e.to_string())?;
            if let Err(forged) = super::sender::check(&from, &envelope.request) {
                let why = format!("group {}: {forged}", envelope.group);
                crate::peer::forged::record(&why);
                return Err(why);
            }
            let raft = service.raft(&envelope.group).ok_or_else(|| {
                format!(
                    "group {:?} from {from} is not running on this node",
                    envelope.group
                )
            })?;
            let reply = match envelope.request {
                RaftRequest::Append(req) => {
                    let reply = raft.append_entries(req).await.map_err(|e| e.to_string())?;
                    // Taken after openraft renewed this node's lease for the leader (which it
                    // does while handling the append): an election deadline counted from
                    // here never falls inside that lease (`ticks`).
                    let heard = tokio::time::Instant::now();
                    // Only this node's leader counts as heard: a deposed leader's appends
                    // (answered with a higher vote) must not keep its followers quiet.
                    if !matches!(reply, AppendEntriesResponse::HigherVote(_))
                        && let Ok(mut m) = service.last_append.write()
                    {
                        m.insert(envelope.group.clone(), heard);
                    }
                    RaftReply::Append(reply)
                }
                RaftRequest::Vote(req) => {
                    RaftReply::Vote(raft.vote(req).await.map_err(|e| e.to_string())?)
                }
                RaftRequest::PreVote(req) => {
                    RaftReply::Vote(raft.pre_vote(req).await.map_err(|e| e.to_string())?)
                }
                RaftRequest::Snapshot { vote, meta, data } => {
                    let snapshot = Snapshot {
                        meta,
                        snapshot: std::io::Cursor::new(data),
                    };
                    RaftReply::Snapshot(
                        raft.install_full_snapshot(vote, snapshot)
                            .await
                            .map_err(|e| e.to_string())?,
                    )
                }
                RaftRequest::TransferLeader(req) => RaftReply::TransferLeader(
                    raft.handle_transfer_leader(req)
                        .await
                        .map_err(|e| e.to_string())?,
                ),
            };
            rpc::encode(&reply).map_err(|e| e.to_string())
        })
    }
}
