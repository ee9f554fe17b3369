//! openraft's network over the peer mesh: the client side (`RaftNetworkV2`) that sends a
//! group's RPCs to a peer, and the server side that hands incoming RPCs to the right
//! group's Raft. Must never block one group on another: each RPC is its own request.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use openraft::async_runtime::Instant as _;
use openraft::async_runtime::WatchReceiver as _;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{RaftNetworkFactory, RaftNetworkV2};

use crate::consensus::Raft;
use crate::consensus::lease::{self, NodeTimers};
use crate::consensus::lease_record::LeaseRecord;
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
    timers: watch::Receiver<NodeTimers>,
}

impl PeerNetwork {
    /// `timers`: this node's, as reloads change them; its leader lease goes with every
    /// AppendEntries and snapshot (`consensus::lease`).
    pub fn new(mesh: Arc<Mesh>, group: &str, timers: watch::Receiver<NodeTimers>) -> Self {
        Self {
            mesh,
            group: group.to_string(),
            timers,
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
            timers: self.timers.clone(),
        }
    }
}

pub struct PeerClient {
    mesh: Arc<Mesh>,
    group: String,
    peer: String,
    timers: watch::Receiver<NodeTimers>,
}

impl PeerClient {
    async fn call(
        &self,
        request: RaftRequest,
        ttl: Duration,
    ) -> Result<RaftReply, Unreachable<TypeConfig>> {
        // Read as the request leaves, after openraft took its send time: a heartbeat sent
        // after a reload's change carries the new lease (`hold::LeaseChange`).
        let lease_ms = matches!(
            request,
            RaftRequest::Append(_) | RaftRequest::Snapshot { .. }
        )
        .then(|| self.timers.borrow().lease().as_millis() as u64);
        let envelope = RaftEnvelope {
            group: self.group.clone(),
            request,
            lease_ms,
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
/// It also keeps the leases this node grants (`consensus::lease`): a Vote or Pre-Vote
/// inside one is refused here, before openraft sees it.
#[derive(Clone)]
pub struct RaftService {
    groups: Arc<RwLock<HashMap<String, Raft>>>,
    /// When each group last accepted an append (a heartbeat) from its leader: a node stands
    /// for election only after `election_timeout` of this silence (`ticks`), the witness
    /// after a longer one.
    last_append: Arc<RwLock<HashMap<String, Instant>>>,
    /// Until when each group refuses other candidates for the lease it granted.
    granted: Arc<RwLock<HashMap<String, Instant>>>,
    /// How many appends and snapshots each group is taking (`Taking`).
    taking: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    /// This node's timers as reloads change them.
    timers: Arc<watch::Sender<NodeTimers>>,
    /// Where a lease longer than the file says is recorded before it is granted.
    record: Option<Arc<LeaseRecord>>,
}

impl Default for RaftService {
    fn default() -> Self {
        RaftService::new(NodeTimers::new(crate::config::Timers::default()), None)
    }
}

impl RaftService {
    pub fn new(timers: NodeTimers, record: Option<Arc<LeaseRecord>>) -> Self {
        RaftService {
            groups: Arc::default(),
            last_append: Arc::default(),
            granted: Arc::default(),
            taking: Arc::default(),
            timers: Arc::new(watch::Sender::new(timers)),
            record,
        }
    }

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
        // The lease it granted is kept: the group's store goes with it, so a group added
        // again at once starts blank and would vote inside that lease otherwise.
    }

    pub fn last_append(&self, group: &str) -> Option<Instant> {
        self.last_append
            .read()
            .ok()
            .and_then(|m| m.get(group).copied())
    }

    /// Until when `group` refuses other candidates; this node must not stand before then
    /// either (`ticks`).
    pub fn granted_until(&self, group: &str) -> Option<Instant> {
        self.granted.read().ok().and_then(|m| m.get(group).copied())
    }

    /// This node's timers, as the groups' networks, ticks and loops follow them.
    pub fn timers(&self) -> watch::Receiver<NodeTimers> {
        self.timers.subscribe()
    }

    /// A reload's new `[timers]`, from now on.
    pub fn set_timers(&self, timers: crate::config::Timers) {
        // The change's time is taken under the write lock: a heartbeat timed after it
        // reads the new lease, since its read waits for the lock (`hold::LeaseChange`).
        self.timers
            .send_modify(|current| *current = current.reloaded(timers, Instant::now()));
    }

    fn raft(&self, group: &str) -> Option<Raft> {
        self.groups
            .read()
            .ok()
            .and_then(|groups| groups.get(group).cloned())
    }

    /// `group` accepted its leader's append or snapshot at `heard`, which announced
    /// `announced`: the lease is recorded (on disk first when it is longer than the file
    /// says) before the acknowledgement goes out.
    async fn heard(
        &self,
        group: &str,
        heard: Instant,
        announced: Option<u64>,
    ) -> Result<(), String> {
        let own = self.timers.borrow().lease();
        let announced = announced.map(Duration::from_millis);
        let until = lease::granted_until(heard, own, announced);
        if let Some(record) = self.record.as_ref().filter(|r| r.needs(until - heard)) {
            // A write and an fsync, once per lengthening: off the runtime's thread.
            let record = record.clone();
            tokio::task::spawn_blocking(move || record.grant(until - heard))
                .await
                .map_err(|e| e.to_string())
                .and_then(|written| written.map_err(|e| e.to_string()))
                .map_err(|e| format!("group {group}: cannot record the lease granted: {e}"))?;
        }
        if let Ok(mut m) = self.last_append.write() {
            m.insert(group.to_string(), heard);
        }
        if let Ok(mut m) = self.granted.write() {
            let entry = m.entry(group.to_string()).or_insert(until);
            *entry = (*entry).max(until);
        }
        Ok(())
    }

    /// A Vote or Pre-Vote for `group`: refused with this node's vote and log when a lease
    /// stands in its way, otherwise openraft's answer.
    async fn vote(
        &self,
        group: &str,
        raft: &Raft,
        request: openraft::raft::VoteRequest<TypeConfig>,
        pre_vote: bool,
    ) -> Result<VoteResponse<TypeConfig>, String> {
        let own = self.timers.borrow().lease();
        let leading_ack_age = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            (m.state == openraft::ServerState::Leader)
                .then(|| m.last_quorum_acked.as_ref().map(|acked| acked.elapsed()))
                .flatten()
        };
        let now = Instant::now();
        let appending = self
            .taking
            .lock()
            .map(|t| t.get(group).is_some_and(|n| *n > 0))
            .unwrap_or(true);
        let refusal = lease::refusal(
            now,
            request.leadership_transfer,
            appending,
            self.granted_until(group),
            leading_ack_age,
            own,
        );
        if let Some(why) = refusal {
            tracing::debug!(group = %group, candidate = %request.vote, pre_vote, "vote refused: {why}");
            let (vote, last_log_id) = raft
                .with_raft_state(|st| (*st.vote_ref(), st.log_ids.last().cloned()))
                .await
                .map_err(|e| e.to_string())?;
            return Ok(VoteResponse::new(vote, last_log_id, false));
        }
        if pre_vote {
            raft.pre_vote(request).await.map_err(|e| e.to_string())
        } else {
            raft.vote(request).await.map_err(|e| e.to_string())
        }
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
            let group = envelope.group;
            let raft = service.raft(&group).ok_or_else(|| {
                format!("group {group:?} from {from} is not running on this node")
            })?;
            // From before openraft takes a heartbeat or snapshot until its lease is
            // recorded here, votes are refused (`Taking`): openraft renews its own lease as
            // it takes one, and a vote checked in between would see neither.
            let _taking = match &envelope.request {
                RaftRequest::Append(_) | RaftRequest::Snapshot { .. } => {
                    Some(Taking::start(&service, &group))
                }
                _ => None,
            };
            let reply = match envelope.request {
                RaftRequest::Append(req) => {
                    let reply = raft.append_entries(req).await.map_err(|e| e.to_string())?;
                    // Taken after openraft renewed this node's lease for the leader (which it
                    // does while handling the append): an election deadline counted from
                    // here never falls inside that lease (`ticks`).
                    let heard = Instant::now();
                    // Only this node's leader counts as heard: a deposed leader's appends
                    // (answered with a higher vote) must not keep its followers quiet.
                    if !matches!(reply, AppendEntriesResponse::HigherVote(_)) {
                        service
                            .heard(&group, heard, envelope.lease_ms)
                            .await
                            .inspect_err(|e| {
                                tracing::error!("{e}; the heartbeat is not acknowledged")
                            })?;
                    }
                    RaftReply::Append(reply)
                }
                RaftRequest::Vote(req) => {
                    RaftReply::Vote(service.vote(&group, &raft, req, false).await?)
                }
                RaftRequest::PreVote(req) => {
                    RaftReply::Vote(service.vote(&group, &raft, req, true).await?)
                }
                RaftRequest::Snapshot { vote, meta, data } => {
                    let snapshot = Snapshot {
                        meta,
                        snapshot: std::io::Cursor::new(data),
                    };
                    let reply = raft
                        .install_full_snapshot(vote, snapshot)
                        .await
                        .map_err(|e| e.to_string())?;
                    // A leader counts an installed snapshot as an acknowledgement too;
                    // only a refusal (a higher vote here) grants nothing.
                    if reply.vote.partial_cmp(&vote) != Some(std::cmp::Ordering::Greater) {
                        service
                            .heard(&group, Instant::now(), envelope.lease_ms)
                            .await?;
                    }
                    RaftReply::Snapshot(reply)
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

/// An append or snapshot of one group being taken; votes of that group are refused while
/// any is (`RaftService::vote`). Counted down when dropped, whatever happened to it.
struct Taking {
    taking: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    group: String,
}

impl Taking {
    fn start(service: &RaftService, group: &str) -> Taking {
        if let Ok(mut t) = service.taking.lock() {
            *t.entry(group.to_string()).or_default() += 1;
        }
        Taking {
            taking: service.taking.clone(),
            group: group.to_string(),
        }
    }
}

impl Drop for Taking {
    fn drop(&mut self) {
        if let Ok(mut t) = self.taking.lock()
            && let Some(n) = t.get_mut(&self.group)
        {
            *n = n.saturating_sub(1);
        }
    }
}
