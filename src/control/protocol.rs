//! The control API's messages: JSON, one request and one response per line. Pure data,
//! shared by the CLI, the daemon and (for forwarded writes) peers.

use serde::{Deserialize, Serialize};

use crate::consensus::state::{Command, HistoryEntry, NodeRecord};
use crate::haproxy::{AdminState, PoolStatus};
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
    /// Test-oriented: what the data plane has on the host now (not the daemon's belief,
    /// which `Holdings` reports), with each group's hold deadline. A watcher keeps a
    /// frozen or killed node's hold until that deadline. Only the observe-only data plane
    /// answers it; the netlink one answers an error (read the interface instead).
    Held,
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
    /// `havip backend drain|maint|ready|weight SERVER [--pool P]`: committed in every
    /// group, applied by every gateway to its HAProxy.
    Backend {
        pool: Option<String>,
        server: String,
        change: BackendChange,
    },
    /// Re-read the node's config file and apply what changed (as SIGHUP does).
    Reload,
    /// Each group's Raft membership beside the configured peers.
    Members,
    /// `havip member add|remove|replace`: whether adding `add` and removing `remove` can
    /// be done now, and the steps that do it. Changes nothing.
    MemberCheck {
        add: Vec<NewMember>,
        remove: Vec<String>,
    },
}

/// A node `havip member add` asks about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMember {
    pub name: String,
    pub address: std::net::SocketAddr,
    pub role: crate::config::Role,
}

impl Request {
    /// Whether answering it changes the cluster (only callers allowed to may send it).
    pub fn changes_the_cluster(&self) -> bool {
        matches!(
            self,
            Request::Failover { .. }
                | Request::Maintenance { .. }
                | Request::Backend { .. }
                | Request::Reload
        )
    }

    /// The CLI command that sends it, for messages.
    pub fn command_name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Holdings | Request::Held => "a watcher's poll",
            Request::History { .. } => "history",
            Request::Failover { .. } => "failover",
            Request::Maintenance { .. } => "maintenance",
            Request::Backend { .. } => "backend",
            Request::Reload => "reload",
            Request::Members => "member list",
            Request::MemberCheck { remove, add } => match (add.is_empty(), remove.is_empty()) {
                (false, true) => "member add",
                (true, false) => "member remove",
                _ => "member replace",
            },
        }
    }
}

/// What `havip backend` changes about a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChange {
    State(AdminState),
    Weight(u16),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Status(StatusReport),
    Holdings {
        groups: Vec<String>,
    },
    Held {
        groups: Vec<HeldGroup>,
    },
    History {
        groups: Vec<GroupHistory>,
    },
    Done {
        message: String,
    },
    /// The request's input is wrong (a reload of a file with errors): nothing changed.
    /// The CLI exits 2 for it, as for any configuration error.
    Refused {
        message: String,
    },
    Members {
        groups: Vec<GroupMembership>,
    },
    /// A reload took effect: what changed (empty: nothing did), and the new fingerprints.
    Reloaded {
        node: String,
        changes: Vec<String>,
        fingerprints: Fingerprints,
    },
    Error {
        message: String,
    },
}

/// One group the data plane has on the host (`Request::Held`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldGroup {
    pub group: String,
    /// Time left, when answering, until the deadline of the data plane's last hold
    /// (rounded up, so a deadline is never reported earlier than it is); 0 once passed.
    pub remaining_ms: u64,
}

impl Response {
    /// The answer to `Request::Held` from a data plane of `kind` that reported `held`
    /// (`DataPlane::held`; `None` if it does not keep that record).
    pub fn held(kind: &str, held: Option<Vec<(String, std::time::Duration)>>) -> Response {
        match held {
            Some(groups) => Response::Held {
                groups: groups
                    .into_iter()
                    .map(|(group, remaining)| HeldGroup {
                        group,
                        remaining_ms: u64::try_from(remaining.as_micros().div_ceil(1000))
                            .unwrap_or(u64::MAX),
                    })
                    .collect(),
            },
            None => Response::Error {
                message: format!(
                    "the {kind} data plane does not report what it holds; read the interface's addresses instead (ip address show)"
                ),
            },
        }
    }
}

/// Fingerprints of a node's config (`config::config_fingerprint`,
/// `config::cluster_fingerprint`): the first changes when a reload took effect, the second
/// must be the same on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprints {
    pub config: String,
    pub cluster: String,
    /// The node's cluster keys by id (`ClusterKeys::describe`): which nodes have rolled
    /// to a new key.
    #[serde(default)]
    pub keys: String,
    /// The Raft commands the node's build can apply (`consensus::state::COMMAND_LEVEL`);
    /// 0 from a build that does not say.
    #[serde(default)]
    pub commands: u32,
}

impl Fingerprints {
    pub fn of(config: &crate::config::Config, keys: &crate::key::ClusterKeys) -> Self {
        Fingerprints {
            config: crate::config::config_fingerprint(config),
            cluster: crate::config::cluster_fingerprint(config),
            keys: keys.describe(),
            commands: crate::consensus::state::COMMAND_LEVEL,
        }
    }
}

/// One group's Raft membership (`havip member list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMembership {
    pub group: String,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    /// A membership change is half done (joint consensus).
    pub joint: bool,
    /// This node's configured peers.
    pub configured: Vec<String>,
    /// The voters are the configured peers (or the group is not formed yet).
    pub matches_config: bool,
    /// This node leads the group and its membership differs from the peer lists: the
    /// step its driver takes or waits for ("waiting: the peer lists differ ...").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
}

/// One node's config fingerprints as `havip status` shows them; `None`: it did not answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeConfig {
    pub node: String,
    pub fingerprints: Option<Fingerprints>,
    /// The id of the key this node's link to that one was made with; None for this node
    /// itself and for a node not connected.
    #[serde(default)]
    pub link_key: Option<String>,
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
    /// Every node's config fingerprints (asked over the mesh).
    #[serde(default)]
    pub configs: Vec<NodeConfig>,
    /// Every gateway's `[[backend]]` pools: the cluster's decision per server and what
    /// that gateway's HAProxy has, this node first (nodes without pools are left out).
    #[serde(default)]
    pub backends: Vec<NodeBackends>,
    /// Listed peers that answered that they do not list this node (`Mesh::not_listed_by`):
    /// it was removed from the cluster, or their files lack it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_listed_by: Vec<String>,
}

/// One node's pools as its HAProxy has them; `pools` is None when it did not answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeBackends {
    pub node: String,
    pub pools: Option<Vec<PoolStatus>>,
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

/// One node's line in `havip status`: its replicated [`NodeRecord`] as the operator reads
/// it (built by [`NodeStatus::of`]), plus what it says it holds. A line of the control
/// protocol's JSON, which scripts read: a shape of its own, kept as it is (every fact is
/// `null` for a node that never reported).
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

impl NodeStatus {
    /// The line of node `name`, from what the group's state records of it (none: it never
    /// reported and is not in maintenance) and whether it says it holds the group.
    pub fn of(name: &str, record: Option<&NodeRecord>, holds: Option<bool>) -> Self {
        let facts = record.and_then(|n| n.facts.as_ref());
        NodeStatus {
            name: name.to_string(),
            role: facts.map(|f| f.role.as_str().to_string()),
            priority: facts.map(|f| f.priority),
            healthy: facts.map(|f| f.healthy),
            link_up: facts.map(|f| f.link_up),
            maintenance: record.is_some_and(|n| n.maintenance),
            detail: facts.map(|f| f.detail.clone()).unwrap_or_default(),
            holds,
        }
    }
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
    /// Does this node list `group` in its config, and has it a membership for it? (A
    /// group added to a running cluster is formed once every voter lists it and none has
    /// a membership: `consensus::bootstrap`.)
    GroupPresence { group: String },
    /// Which groups this node holds now.
    Holdings,
    /// This node's config fingerprints.
    Fingerprints,
    /// This node's health checks with their last results.
    Checks,
    /// This node's `[[backend]]` pools as its HAProxy has them (`havip status`).
    Backends,
    /// This node's role and the names of its peer list, itself included (a group leader
    /// changes the membership only once every node's list agrees:
    /// `consensus::membership`).
    PeerList,
}

/// What a node has of one VIP group (`PeerRequest::GroupPresence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupPresence {
    /// Its config has no such group.
    Unlisted,
    /// Configured, but its Raft has no membership yet: it never took part in the group.
    NoMembership,
    /// It is (or was) a member: the group exists in the cluster.
    Member,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerReply {
    Written,
    /// Not the leader; try that one (if known).
    NotLeader {
        leader: Option<String>,
    },
    Pristine(bool),
    GroupPresence(GroupPresence),
    Holdings(Vec<String>),
    Fingerprints(Fingerprints),
    Checks(Vec<CheckReport>),
    Backends(Vec<PoolStatus>),
    PeerList {
        role: crate::config::Role,
        peers: Vec<String>,
        /// The Raft commands its build can apply (`consensus::state::COMMAND_LEVEL`); 0
        /// from a build that does not say. A node below the leader's level is not added.
        #[serde(default)]
        commands: u32,
    },
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// What peers send each other and what `havip status --json` prints: a node of this
    /// version talks to one of the previous, and scripts read the status line, so renaming
    /// Rust types is free but these bytes are not.
    #[test]
    fn the_encoding_of_peer_messages_and_the_status_line_is_pinned() {
        let write = PeerRequest::Write {
            group: "crm".into(),
            command: Command::Pin {
                node: Some("gw-b".into()),
                at_unix_ms: 3,
            },
        };
        let text = serde_json::to_string(&write).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"Write":{"group":"crm","command":{"Pin":{"node":"gw-b","at_unix_ms":3}}}}"#
        );
        let replies = serde_json::to_string(&[
            PeerReply::Written,
            PeerReply::NotLeader {
                leader: Some("gw-b".into()),
            },
            PeerReply::Pristine(true),
            PeerReply::Holdings(vec!["crm".into()]),
        ])
        .unwrap_or_default();
        assert_eq!(
            replies,
            r#"["Written",{"NotLeader":{"leader":"gw-b"}},{"Pristine":true},{"Holdings":["crm"]}]"#
        );
        let lines = [
            NodeStatus {
                name: "gw-a".into(),
                role: Some("gateway".into()),
                priority: Some(150),
                healthy: Some(false),
                link_up: Some(true),
                maintenance: false,
                detail: "checks down: web".into(),
                holds: Some(true),
            },
            NodeStatus {
                name: "gw-b".into(),
                role: None,
                priority: None,
                healthy: None,
                link_up: None,
                maintenance: true,
                detail: String::new(),
                holds: None,
            },
        ];
        assert_eq!(
            serde_json::to_string(&lines).unwrap_or_default(),
            concat!(
                r#"[{"name":"gw-a","role":"gateway","priority":150,"healthy":false,"link_up":true,"#,
                r#""maintenance":false,"detail":"checks down: web","holds":true},"#,
                r#"{"name":"gw-b","role":null,"priority":null,"healthy":null,"link_up":null,"#,
                r#""maintenance":true,"detail":"","holds":null}]"#
            )
        );
    }

    #[test]
    fn held_rounds_the_time_left_up_and_says_when_it_is_not_kept() {
        let held = Response::held(
            "observe-only",
            Some(vec![
                ("crm".into(), Duration::from_micros(12_001)),
                ("web".into(), Duration::ZERO),
            ]),
        );
        let Response::Held { groups } = held else {
            panic!("{held:?}");
        };
        assert_eq!(groups[0].remaining_ms, 13);
        assert_eq!(groups[1].remaining_ms, 0);
        let text = serde_json::to_string(&Response::Held { groups }).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"result":"held","groups":[{"group":"crm","remaining_ms":13},{"group":"web","remaining_ms":0}]}"#
        );
        let Response::Error { message } = Response::held("netlink", None) else {
            panic!("netlink keeps no held record");
        };
        assert!(message.contains("netlink"), "{message}");
    }
}
