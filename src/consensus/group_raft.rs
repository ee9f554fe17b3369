//! Starts one VIP group's Raft on this node: openraft's settings (timers from `ticks`,
//! openraft's own tick and elections off, Pre-Vote on, no leader restore after a
//! restart), the group's log and state machine from the store, its network over the
//! mesh. It must never start a group with timers openraft refuses.

use std::path::PathBuf;
use std::sync::Arc;

use openraft::error::Fatal;
use tokio::sync::watch;

use crate::config::Config;
use crate::consensus::Raft;
use crate::consensus::lease::NodeTimers;
use crate::consensus::network::{PeerNetwork, RaftService};
use crate::consensus::state::GroupState;
use crate::consensus::store::{Store, StoreError};
use crate::consensus::ticks;
use crate::consensus::types::{NodeId, TypeConfig, node_id};
use crate::peer::Mesh;

/// A group's Raft that could not start; says which file or group.
#[derive(Debug, thiserror::Error)]
pub enum GroupRaftError {
    #[error("{file}: timers: {source}")]
    Timers {
        file: PathBuf,
        source: openraft::ConfigError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("group {group}: {source}")]
    Raft {
        group: String,
        source: Fatal<TypeConfig>,
    },
}

/// A started group: its Raft and the state machine's applied state.
pub struct GroupRaft {
    pub raft: Raft,
    pub state: watch::Receiver<GroupState>,
}

/// openraft's settings for `group`, from the configured timers.
pub fn raft_config(config: &Config, group: &str) -> Result<openraft::Config, GroupRaftError> {
    let timers = &config.timers;
    let lease = timers.leader_lease();
    let (election_min, election_max) = ticks::raft_election_ms(lease);
    openraft::Config {
        cluster_name: group.to_string(),
        heartbeat_interval: ticks::raft_heartbeat_ms(timers.heartbeat, lease),
        election_timeout_min: election_min,
        election_timeout_max: election_max,
        enable_pre_vote: Some(true),
        // A leader restored from disk after a restart would resume its old term with
        // followers whose leases a hand-over may have disabled: it must win a new election.
        enable_leader_restore: Some(false),
        // A follower whose log went back (its data_dir wiped after a corrupt store, a VM
        // restored from an old snapshot) otherwise makes the leader *panic* on the next
        // conflict, so the master's daemon exits and the VIP moves because of another
        // node (seen: tests/store_faults.rs). With it, the leader re-sends the log. What
        // the wiped node forgot is safe for the hold rule: it sits out one leader lease
        // at start before it votes or acknowledges (README, "A corrupt or lost store").
        allow_log_reversion: Some(true),
        // Heartbeats and elections are timed by `ticks`, not by openraft's tick.
        enable_tick: false,
        enable_elect: false,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    }
    .validate()
    .map_err(|source| GroupRaftError::Timers {
        file: config.source.clone(),
        source,
    })
}

/// Starts every configured group's Raft, in the config's order, each registered with
/// `service` for the mesh's Raft traffic.
pub async fn start_all(
    config: &Config,
    store: &Store,
    mesh: &Arc<Mesh>,
    service: &RaftService,
) -> Result<Vec<GroupRaft>, GroupRaftError> {
    let self_id = node_id(&config.node.name);
    let mut started = Vec::new();
    for group in &config.vip_groups {
        let group_raft = start(
            config,
            &group.name,
            self_id,
            store,
            mesh.clone(),
            service.timers(),
        )
        .await?;
        service.register(&group.name, group_raft.raft.clone());
        started.push(group_raft);
    }
    Ok(started)
}

/// Opens `group`'s store and starts its Raft as node `self_id`.
pub async fn start(
    config: &Config,
    group: &str,
    self_id: NodeId,
    store: &Store,
    mesh: Arc<Mesh>,
    timers: watch::Receiver<NodeTimers>,
) -> Result<GroupRaft, GroupRaftError> {
    let (log_store, state_machine) = store.group(group)?;
    let state = state_machine.watch();
    let raft = Raft::new(
        self_id,
        Arc::new(raft_config(config, group)?),
        PeerNetwork::new(mesh, group, timers),
        log_store,
        state_machine,
    )
    .await
    .map_err(|source| GroupRaftError::Raft {
        group: group.to_string(),
        source,
    })?;
    Ok(GroupRaft { raft, state })
}
