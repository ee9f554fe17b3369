//! What one node's Raft says to another's, as it travels over the peer mesh. Every
//! group's traffic shares one connection per peer pair, so each request names its group.
//! Pure data and codec; the sending and dispatching live in `network.rs`.

use serde::{Deserialize, Serialize};

use crate::consensus::types::{SnapshotMeta, TypeConfig, Vote};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};

/// Mesh channel of Raft traffic (the other channel is the control plane's).
pub const RAFT_CHANNEL: u16 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct RaftEnvelope {
    pub group: String,
    pub request: RaftRequest,
    /// The leader lease its sender holds under, in ms, on AppendEntries and snapshots
    /// (`consensus::lease`). Absent from a build before it, which an older node ignores
    /// in turn: serde passes over a field it does not know.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    TransferLeader(TransferLeaderRequest<TypeConfig>),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
}

/// A Raft message that could not be put into or read from its JSON envelope. The peer
/// and the group are named by the caller, which knows them (`network`).
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode: {0}")]
    Encode(serde_json::Error),
    #[error("malformed Raft message: {0}")]
    Decode(serde_json::Error),
}

/// JSON: openraft's types are serde-first, and at tens of small messages a second per
/// peer the encoding cost does not show; a readable wire format helps when debugging.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    serde_json::to_vec(value).map_err(CodecError::Encode)
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    serde_json::from_slice(bytes).map_err(CodecError::Decode)
}
