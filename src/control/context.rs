//! What the operator's commands read and change on this node, in one place: its groups
//! (each group's Raft, replicated state and loop view), the configured members, its
//! health report, its data plane, and the proposer that commits their writes. Each
//! command takes the parts it needs. Nothing here decides or changes anything itself.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, oneshot, watch};

use super::protocol::{Fingerprints, Response};

use crate::config::Role;
use crate::config::{Backend, Config};
use crate::consensus::Raft;
use crate::consensus::proposer::Proposer;
use crate::consensus::state::GroupState;
use crate::consensus::store::Store;
use crate::group::tasks::RunningGroup;
use crate::group::{LocalView, Settings};
use crate::haproxy::PoolStatus;
use crate::health::{CheckReport, HealthReport};
use crate::peer::Mesh;
use crate::vip::DataPlane;

/// Everything the commands of the control socket and of the peers may touch.
pub struct Control {
    /// Replaced whole when a reload changes the peer list (`Control::members`).
    pub members: RwLock<Arc<Members>>,
    /// Replaced whole when a reload adds or removes a group (`Control::groups`).
    pub groups: RwLock<Arc<Groups>>,
    pub proposer: Arc<Proposer>,
    /// This node's health report (gateways with checks).
    pub health: Option<watch::Receiver<HealthReport>>,
    pub data_plane: Arc<dyn DataPlane>,
    /// For its connections and counters (metrics).
    pub mesh: Arc<Mesh>,
    /// For its disk statistics (metrics).
    pub store: Store,
    /// Of the config in effect; a reload changes them.
    pub fingerprints: RwLock<Fingerprints>,
    /// Where `havip reload` is handed to the daemon, which alone can apply it.
    pub reloads: mpsc::Sender<oneshot::Sender<Response>>,
    /// This node's `[[backend]]` pools; replaced whole when a reload changes them.
    pub pools: RwLock<Arc<Pools>>,
    /// How many reloads that changed something this node has begun: a reload's history
    /// record still being retried gives up once a later one began
    /// (`config_history::Record`).
    pub reloads_begun: std::sync::atomic::AtomicU64,
}

/// The `[[backend]]` pools of the config in effect, and how this node's HAProxy has each
/// (`crate::haproxy`).
#[derive(Default)]
pub struct Pools {
    /// For `havip backend` to find a server's pool.
    pub config: Vec<Backend>,
    pub status: Vec<watch::Receiver<PoolStatus>>,
}

impl Control {
    /// This node and the listed nodes now; a command keeps the list it started with.
    pub fn members(&self) -> Arc<Members> {
        self.members
            .read()
            .map_or_else(|poisoned| poisoned.into_inner().clone(), |m| m.clone())
    }

    /// The listed nodes from now on (a reload that changed the peer list).
    pub fn set_members(&self, members: Members) {
        *self.members.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(members);
    }

    /// This node's groups now; a command keeps the ones it started with even if a reload
    /// adds or removes one meanwhile.
    pub fn groups(&self) -> Arc<Groups> {
        self.groups
            .read()
            .map_or_else(|poisoned| poisoned.into_inner().clone(), |g| g.clone())
    }

    /// Changes the set of groups (a reload); commands started before keep the old one.
    pub fn update_groups(&self, change: impl FnOnce(&mut BTreeMap<String, GroupHandle>)) {
        let mut guard = self.groups.write().unwrap_or_else(|p| p.into_inner());
        let mut groups = guard.0.clone();
        change(&mut groups);
        *guard = Arc::new(Groups(groups));
    }

    pub fn fingerprints(&self) -> Fingerprints {
        (self.fingerprints.read()).map_or_else(|p| p.into_inner().clone(), |f| f.clone())
    }

    /// This node's pools now; a command keeps the ones it started with.
    pub fn pools(&self) -> Arc<Pools> {
        (self.pools.read()).map_or_else(|p| p.into_inner().clone(), |p| p.clone())
    }

    /// The pools from now on (a reload that changed them).
    pub fn set_pools(&self, pools: Pools) {
        *self.pools.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pools);
    }

    /// This node's pools as its HAProxy has them; empty without `[[backend]]`.
    pub fn local_backends(&self) -> Vec<PoolStatus> {
        (self.pools().status.iter())
            .map(|b| b.borrow().clone())
            .collect()
    }

    /// This node's checks with their last results; empty without checks.
    pub fn local_checks(&self) -> Vec<CheckReport> {
        self.health
            .as_ref()
            .map(|h| h.borrow().checks.clone())
            .unwrap_or_default()
    }
}

/// This node and every configured node, as the commands name them.
pub struct Members {
    pub me: String,
    pub role: Role,
    /// Every configured node, this one included, in the config's order.
    pub all: Vec<String>,
    /// Each configured node's peer address.
    pub addresses: BTreeMap<String, std::net::SocketAddr>,
    /// `cluster.allow_even_voters` of this node's file.
    pub allow_even_voters: bool,
}

impl Members {
    /// This node and the configured members.
    pub fn of(config: &Config) -> Self {
        Members {
            me: config.node.name.clone(),
            role: config.node.role,
            all: config
                .cluster
                .peers
                .iter()
                .map(|p| p.name.clone())
                .collect(),
            addresses: (config.cluster.peers.iter())
                .map(|p| (p.name.clone(), p.address))
                .collect(),
            allow_even_voters: config.cluster.allow_even_voters,
        }
    }

    pub fn contains(&self, node: &str) -> bool {
        self.all.iter().any(|n| n == node)
    }

    /// The other nodes, in the config's order.
    pub fn peers(&self) -> impl Iterator<Item = &String> {
        self.all.iter().filter(|n| **n != self.me)
    }

    /// "gw-a, gw-b, witness": for error messages.
    pub fn listed(&self) -> String {
        self.all.join(", ")
    }
}

/// One group as the commands see it.
#[derive(Clone)]
pub struct GroupHandle {
    pub raft: Raft,
    /// The replicated state (nodes' facts, pin, history).
    pub state: watch::Receiver<GroupState>,
    /// What this node's loop last published (holding, why).
    pub view: watch::Receiver<LocalView>,
    /// The group's settings now (a reload may change its addresses).
    pub settings: watch::Receiver<Settings>,
    /// What this node's membership driver last said, on the group's leader while its
    /// membership differs from the peer lists (`consensus::membership`); empty otherwise.
    pub membership: watch::Receiver<String>,
}

impl GroupHandle {
    /// The group's addresses now.
    pub fn addresses(&self) -> Vec<String> {
        (self.settings.borrow().group.addresses.iter())
            .map(ToString::to_string)
            .collect()
    }
}

impl GroupHandle {
    /// The commands' view of a running group, with what its membership driver says.
    pub fn of(group: &RunningGroup, membership: watch::Receiver<String>) -> (String, GroupHandle) {
        let handle = GroupHandle {
            raft: group.raft.clone(),
            state: group.state.clone(),
            view: group.view.clone(),
            settings: group.settings.subscribe(),
            membership,
        };
        (group.vips.group.clone(), handle)
    }
}

/// An operator named a group this node does not have.
#[derive(Debug, thiserror::Error)]
#[error("no group named {group:?}; groups here: {}", known.join(", "))]
pub struct UnknownGroup {
    pub group: String,
    pub known: Vec<String>,
}

/// This node's groups, by name.
#[derive(Default)]
pub struct Groups(pub BTreeMap<String, GroupHandle>);

impl Groups {
    pub fn get(&self, name: &str) -> Option<&GroupHandle> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &GroupHandle)> {
        self.0.iter()
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }

    /// The groups this node holds now.
    pub fn holdings(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(_, h)| h.view.borrow().holds_now())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The group an operator named, or every group for none.
    pub fn select(&self, group: &Option<String>) -> Result<Vec<String>, UnknownGroup> {
        match group {
            Some(g) if self.0.contains_key(g) => Ok(vec![g.clone()]),
            Some(g) => Err(UnknownGroup {
                group: g.clone(),
                known: self.0.keys().cloned().collect(),
            }),
            None => Ok(self.0.keys().cloned().collect()),
        }
    }
}
