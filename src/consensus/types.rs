//! The openraft type configuration of havip. Every openraft type the rest of the crate
//! sees is named here, so an openraft upgrade touches only `src/consensus/`; the `Raft`
//! itself is `consensus::Raft`, since it also names the store, which builds on these.

use std::fmt;
use std::io::Cursor;

use openraft::type_config::alias;
use serde::{Deserialize, Serialize};

use crate::consensus::state::{Command, CommandResult};

/// What openraft stores about a member: its name and peer address, for logs and status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    pub name: String,
    pub addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

openraft::declare_raft_types!(
    /// One havip VIP group's Raft: single leader per term (`leader_id_std`) so that
    /// "leader of term T" names exactly one node, which the hold rule relies on.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = PeerNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// Snapshots are the serialized group state; it is small (bounded history), so a buffer.
pub type SnapshotData = Cursor<Vec<u8>>;

pub type NodeId = u64;
pub type LogId = alias::LogIdOf<TypeConfig>;
pub type Entry = alias::EntryOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type Snapshot = alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
pub type LogState = openraft::LogState<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;

/// Stable Raft id of a node, derived from its name (FNV-1a 64) so that ids do not depend
/// on the order of `[[cluster.peers]]` in anyone's file.
pub fn node_id(name: &str) -> NodeId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}
