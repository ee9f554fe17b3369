//! Starts one VIP group's long-running tasks on this node, as holo's `tasks.rs` does: the
//! group's loop (reading its link's and the node's health feeds and the mesh's connected
//! peers, committing through the proposer) and its ticks (heartbeats, elections). It only assembles and spawns; it must
//! never decide anything.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{FactFeeds, GroupLoop, GroupSetup, GroupStopped, LocalView, ReannounceFeeds, Settings};
use crate::config::{Config, VipGroup};
use crate::consensus::Raft;
use crate::consensus::group_raft::GroupRaft;
use crate::consensus::network::RaftService;
use crate::consensus::proposer::Proposer;
use crate::consensus::state::GroupState;
use crate::consensus::ticks::{self, Pace};
use crate::consensus::types::node_id;
use crate::control::notify::{HookState, Notifier};
use crate::health::HealthFacts;
use crate::systemd::LoopBeat;
use crate::vip::link::LinkWatch;
use crate::vip::{DataPlane, VipSet};

/// What every group's tasks on this node share.
pub struct NodeParts<'a> {
    pub config: &'a Config,
    pub data_plane: Arc<dyn DataPlane>,
    pub proposer: Arc<Proposer>,
    /// The link feeds (none when observing only).
    pub links: Option<&'a LinkWatch>,
    /// The node's health feed (none without health checks).
    pub health: Option<watch::Receiver<HealthFacts>>,
    /// The peers the mesh is connected to (a held group is announced again when one
    /// reconnects).
    pub connected: watch::Receiver<BTreeSet<String>>,
    /// Where the mesh delivers the groups' Raft traffic (the ticks watch it).
    pub raft_service: RaftService,
    pub notifier: Notifier,
}

/// One group's running tasks, and what the rest of the daemon reads of them.
pub struct RunningGroup {
    pub vips: VipSet,
    /// The group's settings: a reload sends new ones, which the loop applies without
    /// releasing a held VIP.
    pub settings: watch::Sender<Settings>,
    pub raft: Raft,
    pub state: watch::Receiver<GroupState>,
    /// The loop's view, current after every step.
    pub view: watch::Receiver<LocalView>,
    /// When the loop last went round (systemd's watchdog).
    pub beat: LoopBeat,
    /// The group's state as the notify hooks see it (systemd's status).
    pub reported: watch::Receiver<HookState>,
    /// Ends once the loop has released and handed over (after `shutdown`), or stopped on
    /// its own (then it said so on `fatal`).
    pub task: JoinHandle<()>,
}

/// Spawns `group`'s loop and ticks until `shutdown`.
pub fn spawn(
    node: &NodeParts,
    group: &VipGroup,
    vips: &VipSet,
    raft: GroupRaft,
    shutdown: &watch::Receiver<bool>,
    fatal: &mpsc::UnboundedSender<GroupStopped>,
) -> RunningGroup {
    let config = node.config;
    let GroupRaft { raft, state } = raft;
    let link_up = node.links.and_then(|l| l.link_up(&vips.interface));
    let reannounce = ReannounceFeeds::new(link_up.clone(), Some(node.connected.clone()));
    let feeds = FactFeeds {
        link_up,
        health: node.health.clone(),
    };
    let group_loop = GroupLoop::new(
        GroupSetup::of(config, group, vips.clone(), node.notifier.clone()),
        raft.clone(),
        state.clone(),
        feeds,
        reannounce,
        node.data_plane.clone(),
        node.proposer.for_group(&group.name),
    );
    let (settings, settings_rx) = watch::channel(Settings::of(config, group));
    let group_loop = group_loop
        .with_settings(settings_rx)
        .with_timers(node.raft_service.timers());
    let view = group_loop.view();
    let beat = group_loop.beat();
    let reported = group_loop.reported();
    let task = group_loop.spawn(shutdown.clone(), fatal.clone());
    tokio::spawn(ticks::run(
        group.name.clone(),
        node_id(&config.node.name),
        raft.clone(),
        node.raft_service.clone(),
        Pace::of(config),
        config.node.role,
        shutdown.clone(),
    ));
    RunningGroup {
        vips: vips.clone(),
        settings,
        raft,
        state,
        view,
        beat,
        reported,
        task,
    }
}

/// One group's loop, and the switch that stops it alone (a reload removing the group) or
/// with the daemon.
pub struct GroupTasks {
    pub stop: watch::Sender<bool>,
    pub settings: watch::Sender<Settings>,
    pub task: JoinHandle<()>,
}
