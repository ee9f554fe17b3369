//! The control API's messages: JSON, one request and one response per line. Pure data,
//! shared by the CLI, the daemon and (for forwarded writes) peers.

use serde::{Deserialize, Serialize};

use crate::consensus::state::{Command, HistoryEntry};
use crate::health::CheckReport;

/// Mesh channel for daemon-to-daemon control traffic.
pub const CONTROL_CHANNEL: u16 = 2;

/// What the CLI asks of the local daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Only which groups this node holds now: cheap, local, for watchers polling often.
    Holdings,
    History {
        group: Option<String>,
    },
    /// `to: None` clears the pin. `group: None` means every group.
    Failover {
        group: Option<String>,
        to: Option<String>,
    },
    Maintenance {
        node: String,
        on: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(StatusReport),
    Holdings { groups: Vec<String> },
    History { groups: Vec<GroupHistory> },
    Done { message: String },
    Error { message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub node: String,
    pub role: String,
    pub data_plane: String,
    pub groups: Vec<GroupStatus>,
    /// Every node's health checks (asked over the mesh); `checks` is None for a node that
    /// did not answer in time, empty for one without checks.
    pub health: Vec<NodeChecks>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeChecks {
    pub node: String,
    pub checks: Option<Vec<CheckReport>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStatus {
    pub name: String,
    pub addresses: Vec<String>,
    pub leader: Option<String>,
    pub term: u64,
    /// Whether this node holds the group's VIPs now.
    pub holding: bool,
    /// Why this node does or does not hold, in the hold rule's words.
    pub hold_reason: String,
    /// On the leader: time since a quorum last acknowledged it.
    pub quorum_ack_age_ms: Option<u64>,
    pub pin: Option<String>,
    pub nodes: Vec<NodeStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub role: Option<String>,
    pub priority: Option<u8>,
    pub healthy: Option<bool>,
    pub link_up: Option<bool>,
    pub maintenance: bool,
    pub detail: String,
    /// Whether that node says it holds the VIPs (asked over the mesh); None if it did not
    /// answer in time.
    pub holds: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupHistory {
    pub group: String,
    pub entries: Vec<HistoryEntry>,
}

/// What one daemon asks another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Propose `command` in `group`; answered once it is committed (sent to the leader).
    Write { group: String, command: Command },
    /// Has this node's store never been bootstrapped? (All must be, to bootstrap.)
    Pristine,
    /// Which groups this node holds now.
    Holdings,
    /// This node's health checks with their last results.
    Checks,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerReply {
    Written,
    /// Not the leader; try that one (if known).
    NotLeader {
        leader: Option<String>,
    },
    Pristine(bool),
    Holdings(Vec<String>),
    Checks(Vec<CheckReport>),
    Failed(String),
}
