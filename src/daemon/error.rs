//! Why the daemon did not start, or stopped: each variant says what to fix.

use crate::consensus::group_raft::GroupRaftError;
use crate::consensus::store::StoreError;
use crate::control::metrics::MetricsError;
use crate::control::socket;
use crate::group::GroupStopped;
use crate::peer::MeshError;
use crate::vip::open::OpenError;

/// Errors that stop the daemon before it runs; each says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Key(#[from] crate::key::KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record of the longest lease granted (`consensus::lease_record`).
    #[error("the record of leases granted: {0}")]
    LeaseRecord(#[from] crate::consensus::lease_record::LeaseRecordError),
    /// Missing privileges, a netlink failure, the link watch.
    #[error(transparent)]
    DataPlane(#[from] OpenError),
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// A group's Raft (its timers, its store, openraft itself); names the file or group.
    #[error(transparent)]
    Raft(#[from] GroupRaftError),
    /// The fence process (`vip::fence`) is not running: no VIP may be held without it.
    #[error("{0}")]
    Fence(String),
    /// Not a start error: the daemon ran and a group's Raft stopped under it.
    #[error(transparent)]
    Fatal(#[from] GroupStopped),
    /// A group's Raft stopped because the store could not write (a full or failing disk).
    #[error("{stopped}: the store could not write: {failure}")]
    StoreFailed {
        stopped: GroupStopped,
        failure: String,
    },
}
