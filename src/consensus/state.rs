//! The replicated state of one VIP group, and the commands that change it. Pure: no I/O,
//! no clock (timestamps come inside the commands, stamped by the proposer, for display
//! only; no decision reads them).
//!
//! A node's facts have one type, [`NodeFacts`], from the wire to `havip status`: a node
//! makes them from its local inputs (`group::machine::LocalInputs`: its link and health
//! feeds, not yet reported) with `group::machine::reported_facts`, proposes them in
//! [`Command::ReportFacts`], every replica keeps them in the group's [`NodeRecord`] beside
//! the operator's maintenance flag, the leader's policy reads them through
//! `policy::NodeView::of` (adding only what the leader observes: reachable, stable for),
//! and the status line is `control::protocol::NodeStatus::of` a record. The local inputs
//! stay a type of their own because they are not facts yet: they hold what the facts are
//! made from (a priority *change*, whether checks are still pending) and are never sent.
//!
//! What is here is persisted (the Raft log and snapshots) and sent to peers as
//! `serde_json`: renaming a type is free, renaming a field or variant is a wire change
//! (`tests::the_encoding_of_commands_and_state_is_pinned`).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Role;
use crate::haproxy::AdminState;

/// How many history entries a group keeps; older ones are dropped so the state machine
/// (and its snapshot) stays small however long the cluster runs.
pub const HISTORY_LIMIT: usize = 500;

/// What a node reports about itself in a group: the one shape of a node's facts, from the
/// proposal to the policy and the status line (see the module comment). Only transitions
/// are proposed. Role and priority travel here because each node's own file is their only
/// source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub role: Role,
    /// Effective priority in this group (0 for a witness).
    pub priority: u8,
    pub healthy: bool,
    pub link_up: bool,
    /// Why the node is (un)healthy, for status; empty when there is nothing to say.
    pub detail: String,
}

/// A change to a group's replicated state. Every variant carries the wall-clock time of
/// the proposer (unix milliseconds) so history reads the same on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A node's health/link facts changed.
    ReportFacts {
        node: String,
        facts: NodeFacts,
        at_unix_ms: u64,
    },
    /// `havip maintenance on|off NODE`.
    SetMaintenance {
        node: String,
        on: bool,
        at_unix_ms: u64,
    },
    /// `havip failover --to NODE` (Some) or `--clear` (None).
    Pin {
        node: Option<String>,
        at_unix_ms: u64,
    },
    /// The leader records that it became master of the group in `term`.
    MasterChanged {
        node: String,
        term: u64,
        at_unix_ms: u64,
    },
    /// `havip backend drain|maint|ready SERVER [--pool P]`: the admin state every gateway
    /// gives the server in its HAProxy.
    SetServerAdmin {
        pool: String,
        server: String,
        state: AdminState,
        at_unix_ms: u64,
    },
    /// `havip backend weight SERVER N [--pool P]`.
    SetServerWeight {
        pool: String,
        server: String,
        weight: u16,
        at_unix_ms: u64,
    },
    /// The holder of the pool's group found the server up or down (its checks, after
    /// rise/fall): what every gateway's HAProxy is told. Proposed only on a change.
    SetServerHealth {
        pool: String,
        server: String,
        up: bool,
        /// The holder that saw it.
        node: String,
        at_unix_ms: u64,
    },
    /// `node` reloaded its config (`havip reload`, SIGHUP) and it changed: its new config
    /// fingerprint and what changed, in the operator's words (`config::ReloadPlan`'s
    /// summary). For history only: no decision reads it. Proposed only once every member
    /// of the group runs a version that can apply it ([`COMMAND_LEVEL`]).
    ConfigReloaded {
        node: String,
        config: String,
        changes: Vec<String>,
        at_unix_ms: u64,
    },
}

/// Which commands this build can apply, told to peers in its `Fingerprints`: a node
/// proposes a command of a level only once every member of the group says it has that
/// level (an older node would stop the group's Raft on an entry it cannot decode).
/// 1: the backend commands (proposed only once `[[backend]]` is configured, README's
/// version rule); 2: [`Command::ConfigReloaded`]. A node that does not say has level 0.
pub const COMMAND_LEVEL: u32 = 2;

impl Command {
    /// The node this command reports for, if it is a report (its facts, its mastership,
    /// what it saw of a server) rather than an operator's command: only that node may
    /// propose it (issue 14 item 2).
    pub fn reported_by(&self) -> Option<&str> {
        match self {
            Command::ReportFacts { node, .. }
            | Command::MasterChanged { node, .. }
            | Command::SetServerHealth { node, .. }
            | Command::ConfigReloaded { node, .. } => Some(node),
            Command::SetMaintenance { .. }
            | Command::Pin { .. }
            | Command::SetServerAdmin { .. }
            | Command::SetServerWeight { .. } => None,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::ReportFacts { node, facts, .. } => {
                write!(
                    f,
                    "facts {node}: healthy={} link_up={} priority={}",
                    facts.healthy, facts.link_up, facts.priority
                )?;
                if !facts.detail.is_empty() {
                    write!(f, " ({})", facts.detail)?;
                }
                Ok(())
            }
            Command::SetMaintenance { node, on, .. } => {
                write!(f, "maintenance {node} {}", if *on { "on" } else { "off" })
            }
            Command::Pin { node: Some(n), .. } => write!(f, "pin to {n}"),
            Command::Pin { node: None, .. } => write!(f, "clear pin"),
            Command::MasterChanged { node, term, .. } => write!(f, "master {node} (term {term})"),
            Command::SetServerAdmin {
                pool,
                server,
                state,
                ..
            } => write!(f, "backend {pool}/{server} {state}"),
            Command::SetServerWeight {
                pool,
                server,
                weight,
                ..
            } => write!(f, "backend {pool}/{server} weight {weight}"),
            Command::SetServerHealth {
                pool,
                server,
                up,
                node,
                ..
            } => write!(
                f,
                "backend {pool}/{server} {} (seen by {node})",
                if *up { "up" } else { "down" }
            ),
            Command::ConfigReloaded {
                node,
                config,
                changes,
                ..
            } => write!(
                f,
                "config {node} reloaded (fingerprint {config}): {}",
                changes.join("; ")
            ),
        }
    }
}

/// What applying a command did; `changed` is false when it restated the current state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub changed: bool,
}

/// What the group's replicated state records of one node: its last reported facts and
/// the operator's maintenance flag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// None until the node has reported: a node nobody has heard from is never eligible.
    pub facts: Option<NodeFacts>,
    pub maintenance: bool,
    /// When the facts or maintenance last changed (proposer's unix ms).
    pub since_unix_ms: u64,
}

/// What the operator committed for one server of a pool (`havip backend`); what it did
/// not set comes from the config (weight) or is `ready`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    pub admin: Option<AdminState>,
    pub weight: Option<u16>,
    /// When either last changed (proposer's unix ms).
    pub since_unix_ms: u64,
}

/// Whether a server is up, as the holder of its pool's group last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHealth {
    pub up: bool,
    pub node: String,
    pub since_unix_ms: u64,
}

/// The key of a server's record in `GroupState::servers`: "pool/server" (JSON maps take
/// string keys only; neither name may contain a '/').
pub fn server_key(pool: &str, server: &str) -> String {
    format!("{pool}/{server}")
}

/// One line of `havip history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at_unix_ms: u64,
    pub event: String,
}

/// The replicated state of one VIP group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    pub nodes: BTreeMap<String, NodeRecord>,
    pub pin: Option<String>,
    /// The last recorded master and its term: a re-sent record (a forwarded write that
    /// timed out but was committed) is not history twice.
    #[serde(default)]
    pub master: Option<(String, u64)>,
    pub history: VecDeque<HistoryEntry>,
    /// The operator's admin state and weight per server ("pool/server", `server_key`).
    /// Left out of the encoding while empty, so a state without backends reads and writes
    /// as before they existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub servers: BTreeMap<String, ServerRecord>,
    /// Up or down per server ("pool/server"), as the holder of this group saw it; only
    /// in the group a pool follows (`config::Backend::group`). Left out while empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_health: BTreeMap<String, ServerHealth>,
    /// Each node's config fingerprint as its last recorded reload had it: the same reload
    /// committed twice (a forwarded write that timed out but was committed) is history
    /// once. Left out while empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, String>,
}

impl GroupState {
    /// Applies one committed command. Deterministic: every replica ends in the same state.
    pub fn apply(&mut self, command: &Command) -> CommandResult {
        let changed = match command {
            Command::ReportFacts {
                node,
                facts,
                at_unix_ms,
            } => {
                let state = self.nodes.entry(node.clone()).or_default();
                let changed = state.facts.as_ref() != Some(facts);
                if changed {
                    state.facts = Some(facts.clone());
                    state.since_unix_ms = *at_unix_ms;
                }
                changed
            }
            Command::SetMaintenance {
                node,
                on,
                at_unix_ms,
            } => {
                let state = self.nodes.entry(node.clone()).or_default();
                let changed = state.maintenance != *on;
                if changed {
                    state.maintenance = *on;
                    state.since_unix_ms = *at_unix_ms;
                }
                changed
            }
            Command::Pin { node, .. } => {
                let changed = self.pin != *node;
                self.pin = node.clone();
                changed
            }
            Command::MasterChanged { node, term, .. } => {
                let record = Some((node.clone(), *term));
                let changed = self.master != record;
                self.master = record;
                changed
            }
            Command::SetServerAdmin { .. }
            | Command::SetServerWeight { .. }
            | Command::SetServerHealth { .. } => self.apply_server(command),
            Command::ConfigReloaded { node, config, .. } => {
                let changed = self.configs.get(node) != Some(config);
                self.configs.insert(node.clone(), config.clone());
                changed
            }
        };
        if changed {
            self.record(command);
        }
        CommandResult { changed }
    }

    /// The commands about one server of a pool (`havip backend`, the holder's checks):
    /// whether it changed anything.
    fn apply_server(&mut self, command: &Command) -> bool {
        match command {
            Command::SetServerAdmin {
                pool,
                server,
                state,
                at_unix_ms,
            } => {
                let record = self.servers.entry(server_key(pool, server)).or_default();
                let changed = record.admin != Some(*state);
                if changed {
                    record.admin = Some(*state);
                    record.since_unix_ms = *at_unix_ms;
                }
                changed
            }
            Command::SetServerWeight {
                pool,
                server,
                weight,
                at_unix_ms,
            } => {
                let record = self.servers.entry(server_key(pool, server)).or_default();
                let changed = record.weight != Some(*weight);
                if changed {
                    record.weight = Some(*weight);
                    record.since_unix_ms = *at_unix_ms;
                }
                changed
            }
            Command::SetServerHealth {
                pool,
                server,
                up,
                node,
                at_unix_ms,
            } => {
                let key = server_key(pool, server);
                // Another holder seeing the same is no news: only up/down is history.
                let changed = self.server_health.get(&key).map(|h| h.up) != Some(*up);
                if changed {
                    let health = ServerHealth {
                        up: *up,
                        node: node.clone(),
                        since_unix_ms: *at_unix_ms,
                    };
                    self.server_health.insert(key, health);
                }
                changed
            }
            _ => false,
        }
    }

    fn record(&mut self, command: &Command) {
        let at_unix_ms = match command {
            Command::ReportFacts { at_unix_ms, .. }
            | Command::SetMaintenance { at_unix_ms, .. }
            | Command::Pin { at_unix_ms, .. }
            | Command::MasterChanged { at_unix_ms, .. }
            | Command::SetServerAdmin { at_unix_ms, .. }
            | Command::SetServerWeight { at_unix_ms, .. }
            | Command::SetServerHealth { at_unix_ms, .. }
            | Command::ConfigReloaded { at_unix_ms, .. } => *at_unix_ms,
        };
        self.history.push_back(HistoryEntry {
            at_unix_ms,
            event: command.to_string(),
        });
        while self.history.len() > HISTORY_LIMIT {
            self.history.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(healthy: bool) -> NodeFacts {
        NodeFacts {
            role: Role::Gateway,
            priority: 150,
            healthy,
            link_up: true,
            detail: String::new(),
        }
    }

    /// The encoded form of what the Raft log and snapshots hold (serde_json, in the store
    /// and on the wire to peers). A node must read a store written by the previous
    /// version and talk to it: renaming Rust types is free, changing these bytes is not.
    #[test]
    fn the_encoding_of_commands_and_state_is_pinned() {
        let report = Command::ReportFacts {
            node: "gw-a".into(),
            facts: NodeFacts {
                detail: "checks down: web".into(),
                ..facts(true)
            },
            at_unix_ms: 1,
        };
        let commands = [
            (
                report.clone(),
                r#"{"ReportFacts":{"node":"gw-a","facts":{"role":"gateway","priority":150,"healthy":true,"link_up":true,"detail":"checks down: web"},"at_unix_ms":1}}"#,
            ),
            (
                Command::SetMaintenance {
                    node: "gw-b".into(),
                    on: true,
                    at_unix_ms: 2,
                },
                r#"{"SetMaintenance":{"node":"gw-b","on":true,"at_unix_ms":2}}"#,
            ),
            (
                Command::Pin {
                    node: Some("gw-b".into()),
                    at_unix_ms: 3,
                },
                r#"{"Pin":{"node":"gw-b","at_unix_ms":3}}"#,
            ),
            (
                Command::Pin {
                    node: None,
                    at_unix_ms: 4,
                },
                r#"{"Pin":{"node":null,"at_unix_ms":4}}"#,
            ),
            (
                Command::MasterChanged {
                    node: "gw-a".into(),
                    term: 7,
                    at_unix_ms: 5,
                },
                r#"{"MasterChanged":{"node":"gw-a","term":7,"at_unix_ms":5}}"#,
            ),
            (
                Command::SetServerAdmin {
                    pool: "crm".into(),
                    server: "crm-1".into(),
                    state: AdminState::Drain,
                    at_unix_ms: 6,
                },
                r#"{"SetServerAdmin":{"pool":"crm","server":"crm-1","state":"drain","at_unix_ms":6}}"#,
            ),
            (
                Command::SetServerWeight {
                    pool: "crm".into(),
                    server: "crm-1".into(),
                    weight: 5,
                    at_unix_ms: 7,
                },
                r#"{"SetServerWeight":{"pool":"crm","server":"crm-1","weight":5,"at_unix_ms":7}}"#,
            ),
            (
                Command::SetServerHealth {
                    pool: "crm".into(),
                    server: "crm-1".into(),
                    up: false,
                    node: "gw-a".into(),
                    at_unix_ms: 8,
                },
                r#"{"SetServerHealth":{"pool":"crm","server":"crm-1","up":false,"node":"gw-a","at_unix_ms":8}}"#,
            ),
            (
                Command::ConfigReloaded {
                    node: "gw-b".into(),
                    config: "0123abcd".into(),
                    changes: vec!["group crm3 added".into()],
                    at_unix_ms: 9,
                },
                r#"{"ConfigReloaded":{"node":"gw-b","config":"0123abcd","changes":["group crm3 added"],"at_unix_ms":9}}"#,
            ),
        ];
        for (command, text) in commands {
            assert_eq!(serde_json::to_string(&command).ok().as_deref(), Some(text));
            assert_eq!(serde_json::from_str::<Command>(text).ok(), Some(command));
        }
        let mut state = GroupState::default();
        state.apply(&report);
        state.apply(&Command::SetMaintenance {
            node: "gw-b".into(),
            on: true,
            at_unix_ms: 2,
        });
        state.apply(&Command::MasterChanged {
            node: "gw-a".into(),
            term: 7,
            at_unix_ms: 5,
        });
        let text = concat!(
            r#"{"nodes":{"gw-a":{"facts":{"role":"gateway","priority":150,"healthy":true,"#,
            r#""link_up":true,"detail":"checks down: web"},"maintenance":false,"since_unix_ms":1},"#,
            r#""gw-b":{"facts":null,"maintenance":true,"since_unix_ms":2}},"pin":null,"#,
            r#""master":["gw-a",7],"history":[{"at_unix_ms":1,"event":"facts gw-a: healthy=true "#,
            r#"link_up=true priority=150 (checks down: web)"},{"at_unix_ms":2,"#,
            r#""event":"maintenance gw-b on"},{"at_unix_ms":5,"event":"master gw-a (term 7)"}]}"#
        );
        assert_eq!(serde_json::to_string(&state).ok().as_deref(), Some(text));
        assert_eq!(serde_json::from_str::<GroupState>(text).ok(), Some(state));
    }

    /// A server's record: its encoding once set, and that it changes only what was set.
    #[test]
    fn server_records_are_history_once_and_pinned() {
        let mut state = GroupState::default();
        let drain = Command::SetServerAdmin {
            pool: "crm".into(),
            server: "crm-1".into(),
            state: AdminState::Drain,
            at_unix_ms: 6,
        };
        assert!(state.apply(&drain).changed);
        assert!(!state.apply(&drain).changed, "a restatement is not news");
        let weight = Command::SetServerWeight {
            pool: "crm".into(),
            server: "crm-1".into(),
            weight: 5,
            at_unix_ms: 7,
        };
        assert!(state.apply(&weight).changed);
        let down = |node: &str, at_unix_ms| Command::SetServerHealth {
            pool: "crm".into(),
            server: "crm-1".into(),
            up: false,
            node: node.into(),
            at_unix_ms,
        };
        assert!(state.apply(&down("gw-a", 8)).changed);
        assert!(
            !state.apply(&down("gw-b", 9)).changed,
            "a new holder that sees the same is no news"
        );
        assert_eq!(
            state.servers["crm/crm-1"],
            ServerRecord {
                admin: Some(AdminState::Drain),
                weight: Some(5),
                since_unix_ms: 7
            }
        );
        let text = concat!(
            r#"{"nodes":{},"pin":null,"master":null,"history":[{"at_unix_ms":6,"event":"backend crm/crm-1 drain"},"#,
            r#"{"at_unix_ms":7,"event":"backend crm/crm-1 weight 5"},"#,
            r#"{"at_unix_ms":8,"event":"backend crm/crm-1 down (seen by gw-a)"}],"#,
            r#""servers":{"crm/crm-1":{"admin":"drain","weight":5,"since_unix_ms":7}},"#,
            r#""server_health":{"crm/crm-1":{"up":false,"node":"gw-a","since_unix_ms":8}}}"#
        );
        assert_eq!(serde_json::to_string(&state).ok().as_deref(), Some(text));
        assert_eq!(serde_json::from_str::<GroupState>(text).ok(), Some(state));
    }

    #[test]
    fn restating_facts_changes_nothing_and_adds_no_history() {
        let mut state = GroupState::default();
        let cmd = Command::ReportFacts {
            node: "gw-a".into(),
            facts: facts(true),
            at_unix_ms: 1,
        };
        assert!(state.apply(&cmd).changed, "the first report is news");
        assert!(!state.apply(&cmd).changed, "a restatement is not");
        assert_eq!(state.history.len(), 1);
        let down = Command::ReportFacts {
            node: "gw-a".into(),
            facts: facts(false),
            at_unix_ms: 2,
        };
        assert!(state.apply(&down).changed);
        assert_eq!(state.nodes["gw-a"].since_unix_ms, 2);
    }

    #[test]
    fn maintenance_of_a_node_that_never_reported_leaves_its_facts_unknown() {
        let mut state = GroupState::default();
        state.apply(&Command::SetMaintenance {
            node: "gw-b".into(),
            on: true,
            at_unix_ms: 3,
        });
        assert_eq!(state.nodes["gw-b"].facts, None);
        assert!(state.nodes["gw-b"].maintenance);
    }

    #[test]
    fn history_is_bounded() {
        let mut state = GroupState::default();
        for term in 0..(HISTORY_LIMIT as u64 + 10) {
            state.apply(&Command::MasterChanged {
                node: "gw-a".into(),
                term,
                at_unix_ms: term,
            });
        }
        assert_eq!(state.history.len(), HISTORY_LIMIT);
        assert_eq!(state.history.front().map(|h| h.at_unix_ms), Some(10));
    }

    #[test]
    fn a_master_record_sent_twice_is_history_once() {
        let mut state = GroupState::default();
        let cmd = Command::MasterChanged {
            node: "gw-a".into(),
            term: 4,
            at_unix_ms: 1,
        };
        assert!(state.apply(&cmd).changed);
        assert!(!state.apply(&cmd).changed);
        assert_eq!(state.history.len(), 1);
    }

    #[test]
    fn pin_and_clear() {
        let mut state = GroupState::default();
        assert!(
            state
                .apply(&Command::Pin {
                    node: Some("gw-b".into()),
                    at_unix_ms: 5
                })
                .changed
        );
        assert_eq!(state.pin.as_deref(), Some("gw-b"));
        assert!(
            state
                .apply(&Command::Pin {
                    node: None,
                    at_unix_ms: 6
                })
                .changed
        );
        assert_eq!(state.pin, None);
        assert_eq!(state.history.len(), 2);
    }

    #[test]
    fn a_reload_is_history_once_per_config() {
        let mut state = GroupState::default();
        let reloaded = |config: &str, at_unix_ms| Command::ConfigReloaded {
            node: "gw-a".into(),
            config: config.into(),
            changes: vec!["timers changed".into(), "group crm3 added".into()],
            at_unix_ms,
        };
        assert!(state.apply(&reloaded("aa", 1)).changed);
        assert!(
            !state.apply(&reloaded("aa", 2)).changed,
            "the same reload again"
        );
        assert!(state.apply(&reloaded("bb", 3)).changed);
        assert!(
            state.apply(&reloaded("aa", 4)).changed,
            "back to the first config"
        );
        let events: Vec<&str> = state.history.iter().map(|h| h.event.as_str()).collect();
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0],
            "config gw-a reloaded (fingerprint aa): timers changed; group crm3 added"
        );
        assert_eq!(reloaded("aa", 1).reported_by(), Some("gw-a"));
    }
}
