//! A node's configuration: the validated types every other module reads (`Config`,
//! `Role`, `Timers`, `VipGroup`, ...) and the two ways in, `Config::load` (a file, its
//! key file checked too) and `Config::from_str` (text, nothing else touched). The
//! parsing itself is in `parse` (the sections of the file) with `reader` (spanned TOML
//! values), `check` (`[health]`) and `duration`; `cross_check` compares the files of one
//! cluster and warns where they disagree. Every error names the file, line:column, key
//! path, and what would be right.
//!
//! This module must never touch the host: no sockets, no writes, no clock. The only
//! filesystem access is `Config::load` reading the config file and the cluster key file
//! (to refuse a missing or group-readable key before the daemon starts).
//! The file format is documented key by key in docs/config-reference.md.

mod backend;
mod change;
mod check;
mod cross;
mod duration;
mod parse;
mod reader;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use backend::{DEFAULT_WEIGHT, MAX_WEIGHT};
pub use change::{ReloadPlan, cluster_fingerprint, config_fingerprint, plan_reload};
pub use check::{
    CheckKind, HealthCheck, HealthSection, HttpMethod, Require, StatusError, StatusSet,
};
pub use cross::cross_check;
pub use duration::{DurationError, format_duration, parse_duration};

use reader::Reader;

/// What a node is for. A witness is a full Raft voter that never holds a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Gateway,
    Witness,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Witness => "witness",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a group does when every gateway is unhealthy: keep the VIP on the master (a
/// sick gateway may still serve some clients) or release it everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnAllUnhealthy {
    Keep,
    Release,
}

/// A node's whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it was read from, for messages.
    pub source: PathBuf,
    pub node: NodeSection,
    pub cluster: ClusterSection,
    pub timers: Timers,
    pub control: ControlSection,
    pub vip_groups: Vec<VipGroup>,
    pub health: HealthSection,
    pub notify: NotifySection,
    /// The pools behind the VIPs (`[[backend]]`); empty on a witness.
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSection {
    pub name: String,
    pub role: Role,
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSection {
    pub listen: SocketAddr,
    pub key_file: PathBuf,
    /// During a key rollover: the old key, still accepted and dialed with when a peer
    /// refuses the current one (`key::ClusterKeys`).
    pub previous_key_file: Option<PathBuf>,
    /// Every node of the cluster, this one included; all are Raft voters.
    pub peers: Vec<Peer>,
    /// The operator accepts an even number of voters (see `Config::voters`).
    pub allow_even_voters: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    pub name: String,
    pub address: SocketAddr,
}

/// Raft timing, the same on every node (`cross_check` warns otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub heartbeat: Duration,
    /// A gateway that hears no leader stands for election after a random silence in
    /// `election_timeout_min..=election_timeout_max`.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
}

impl Timers {
    /// How long a follower refuses to vote for anyone else after each heartbeat it accepts:
    /// the shortest silence after which any node stands for election. The master's hold
    /// lease is derived from it (`hold::hold_lease`).
    pub fn leader_lease(&self) -> Duration {
        self.election_timeout_min
    }
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            // 128 ms with a 400 ms lease: the master keeps the VIPs through one lost
            // heartbeat with up to 64 ms of round trip left (2 x 128 + 64 = 320, the hold
            // lease). Two of tokio's 64 ms timer blocks, so each beat costs one wake-up
            // (`crate::platform::timer_grid`): idle master 0.29-0.31 % of a core (64 ms: 0.58 %,
            // 96 ms: 0.46 %; scripts/bench-idle.sh).
            heartbeat: Duration::from_millis(128),
            election_timeout_min: Duration::from_millis(400),
            election_timeout_max: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSection {
    /// The CLI's Unix socket.
    pub socket: PathBuf,
    /// Where Prometheus metrics are served over HTTP; off when absent.
    pub metrics: Option<SocketAddr>,
}

/// One `[[vip_group]]`: a set of addresses that move together, elected as one Raft group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipGroup {
    pub name: String,
    /// "" for a witness.
    pub interface: String,
    /// Empty for a witness.
    pub addresses: Vec<IpNet>,
    /// 1..=254 for a gateway (higher wins), 0 for a witness.
    pub priority: u8,
    pub failback: bool,
    pub failback_delay: Duration,
    pub on_all_unhealthy: OnAllUnhealthy,
    /// The kernel valid_lft/preferred_lft of the VIP, so a killed daemon's VIP expires.
    pub address_lifetime: Duration,
    pub announce: Announce,
}

/// Gratuitous ARP / unsolicited neighbour advertisement timing for one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    pub burst_count: u32,
    pub burst_spacing: Duration,
    /// A second burst this long after the first; None when written as "0s".
    pub repeat_after: Option<Duration>,
    /// A burst every this long while held; None when absent or "0s".
    pub refresh: Option<Duration>,
}

impl Default for Announce {
    fn default() -> Self {
        Announce {
            burst_count: 5,
            burst_spacing: Duration::from_millis(10),
            repeat_after: Some(Duration::from_secs(2)),
            refresh: None,
        }
    }
}

/// One `[[backend]]`: a pool of CRM servers behind the VIPs, as this gateway's HAProxy
/// serves it. havip keeps one cluster-wide state per server (`crate::haproxy`) and every
/// gateway applies it to its own HAProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The pool's name in havip (`havip backend ... --pool NAME`).
    pub name: String,
    /// The VIP group whose traffic the pool serves: its holder's checks decide whether
    /// each server is up, for every gateway (README, "Behind the VIP: HAProxy").
    pub group: String,
    pub haproxy: HaproxyTarget,
    pub servers: Vec<BackendServer>,
}

/// Where this gateway's HAProxy answers for the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyTarget {
    /// The Runtime API's Unix socket (`stats socket PATH level admin`).
    pub socket: PathBuf,
    /// The backend's name in haproxy.cfg (default: the pool's name).
    pub backend: String,
}

/// One `[[backend.server]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendServer {
    /// The server's name in haproxy.cfg.
    pub name: String,
    /// For status; HAProxy's own config says where it sends the traffic.
    pub address: SocketAddr,
    /// The weight when no operator set one (0..=256, HAProxy's range).
    pub weight: u16,
    /// `[[health.check]]` names; the server is up while all pass (after rise/fall).
    pub checks: Vec<String>,
}

impl Config {
    /// The pool an operator named, or the one pool that has `server` when none was named.
    pub fn backend_of(&self, pool: Option<&str>, server: &str) -> Result<&Backend, String> {
        find_pool(&self.backends, pool, server)
    }
}

/// In `backends`: the pool an operator named, or the one pool that has `server` when
/// none was named; else what would be right.
pub fn find_pool<'b>(
    backends: &'b [Backend],
    pool: Option<&str>,
    server: &str,
) -> Result<&'b Backend, String> {
    {
        let has = |b: &&Backend| b.servers.iter().any(|s| s.name == server);
        let pools: Vec<&Backend> = backends.iter().filter(has).collect();
        match (pool, pools.as_slice()) {
            (Some(p), _) => pools.iter().find(|b| b.name == p).copied().ok_or_else(|| {
                format!(
                    "no server {server:?} in pool {p:?}; pools with it: {}",
                    names(&pools)
                )
            }),
            (None, [one]) => Ok(one),
            (None, []) => Err(format!(
                "no pool has a server {server:?}; pools here: {}",
                names(&backends.iter().collect::<Vec<_>>())
            )),
            (None, _) => Err(format!(
                "server {server:?} is in several pools ({}); name one with --pool",
                names(&pools)
            )),
        }
    }
}

fn names(pools: &[&Backend]) -> String {
    if pools.is_empty() {
        return "none".into();
    }
    pools
        .iter()
        .map(|b| b.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySection {
    /// argv run on every state change; None when not configured.
    pub command: Option<Vec<String>>,
    pub timeout: Duration,
    /// The user the hook runs as; None: root, without capabilities.
    pub run_as: Option<String>,
}

impl Default for NotifySection {
    fn default() -> Self {
        NotifySection {
            command: None,
            timeout: Duration::from_secs(5),
            run_as: None,
        }
    }
}

/// One thing wrong with a config file, with where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(self))]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column of the offending text, when there is text to point at.
    pub position: Option<(usize, usize)>,
    /// Key path, e.g. "vip_group[0].addresses[1]"; "" for errors about the whole file.
    pub key: String,
    /// What is wrong and what would be right.
    pub message: String,
}

fn render(e: &ConfigError) -> String {
    let mut out = e.file.display().to_string();
    if let Some((line, column)) = e.position {
        out.push_str(&format!(":{line}:{column}"));
    }
    out.push_str(": ");
    if !e.key.is_empty() {
        out.push_str(&e.key);
        out.push_str(": ");
    }
    out.push_str(&e.message);
    out
}

/// Every error of one file, in file order; one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl Config {
    /// Reads and validates a node's file, then checks its key file (exists, readable
    /// only by its owner, holds a key). Returns every error found, not just the first.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                position: None,
                key: String::new(),
                message: format!("cannot read the config file: {e}"),
            }])
        })?;
        let mut read = parse::read(path, &text);
        let key_files = [
            ("cluster.key_file", &read.key_file),
            ("cluster.previous_key_file", &read.previous_key_file),
        ];
        let mut r = Reader::new(path, &text);
        for (key, file) in key_files {
            if let Some(file) = file
                && let Err(e) = crate::key::ClusterKey::load(&file.value)
            {
                r.error(&file.span, key, key_error_message(&file.value, &e));
            }
        }
        read.errors.extend(r.errors);
        parse::finish(read)
    }

    /// What the daemon (`run`, `reload`) checks beyond `load`: its `run_as` users exist
    /// here, and it may switch to them (root, or `CAP_SETUID` and `CAP_SETGID`). Not in
    /// `load`: `havip release`, the unit's `ExecStopPost`, must work whatever they say.
    pub fn check_children(&self) -> Result<(), ConfigErrors> {
        let may_switch = crate::platform::child::may_switch_user();
        let errors: Vec<ConfigError> = self
            .run_as_users()
            .into_iter()
            .filter_map(|(key, user)| {
                let message = match crate::platform::child::RunAs::lookup(user) {
                    Err(e) => e.to_string(),
                    Ok(_) if !may_switch => format!(
                        "the daemon cannot start children as {user:?}: it runs neither as root \
                         nor with CAP_SETUID and CAP_SETGID (under the package's unit it is \
                         user havip, and so are its children: remove run_as)"
                    ),
                    Ok(_) => return None,
                };
                Some(ConfigError {
                    file: self.source.clone(),
                    position: None,
                    key: key.to_string(),
                    message,
                })
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The users children run as: (config key, user name).
    pub fn run_as_users(&self) -> Vec<(&'static str, &str)> {
        let health = self.health.run_as.as_deref().map(|u| ("health.run_as", u));
        let notify = self.notify.run_as.as_deref().map(|u| ("notify.run_as", u));
        health.into_iter().chain(notify).collect()
    }

    /// Parses and validates text without touching the filesystem (no key file check).
    #[allow(clippy::should_implement_trait)] // it needs the source path too, so not FromStr
    pub fn from_str(source: &Path, text: &str) -> Result<Config, ConfigErrors> {
        parse::finish(parse::read(source, text))
    }

    pub fn peer(&self, name: &str) -> Option<&Peer> {
        self.cluster.peers.iter().find(|p| p.name == name)
    }

    /// The number of Raft voters: every peer, witnesses included.
    pub fn voters(&self) -> usize {
        self.cluster.peers.len()
    }

    pub fn group(&self, name: &str) -> Option<&VipGroup> {
        self.vip_groups.iter().find(|g| g.name == name)
    }

    /// The key files' keys (`key::ClusterKeys`).
    pub fn load_keys(&self) -> Result<crate::key::ClusterKeys, crate::key::KeyError> {
        crate::key::ClusterKeys::load(
            &self.cluster.key_file,
            self.cluster.previous_key_file.as_deref(),
        )
    }

    pub fn is_witness(&self) -> bool {
        self.node.role == Role::Witness
    }
}

fn key_error_message(path: &Path, e: &crate::key::KeyError) -> String {
    use crate::key::KeyError;
    match e {
        KeyError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => format!(
            "key file {} does not exist; make one with `havip keygen --out {}` and copy it to every node (mode 0600)",
            path.display(),
            path.display()
        ),
        KeyError::Read { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            format!("{e}; run havip as root or as the owner of the key file")
        }
        other => other.to_string(),
    }
}
