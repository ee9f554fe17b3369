//! Starting one VIP group's tasks on this node, at join and when a reload adds a group:
//! its loop and ticks with a stop switch of its own, its place in the control context and
//! in systemd's watchdog list, the bootstrap that forms it if it has no membership, and
//! the driver that changes its membership when the peer lists change.
//! (Removing one is `reload::remove_group`.) It only wires; it decides nothing.

use std::collections::BTreeMap;

use tokio::sync::watch;

use super::{Joined, Node};
use crate::config::VipGroup;
use crate::consensus::Raft;
use crate::consensus::bootstrap::Bootstrap;
use crate::consensus::group_raft::GroupRaft;
use crate::consensus::membership::MembershipDriver;
use crate::control::GroupHandle;
use crate::group::tasks::{self, GroupTasks, NodeParts};
use crate::platform::watches::child_signal;
use crate::systemd::GroupLoopFeed;
use crate::vip::VipSet;

impl Node {
    /// Forms `rafts`' groups if they have no membership yet (`consensus::bootstrap`).
    pub(super) fn bootstrap(
        &self,
        joined: &Joined,
        rafts: BTreeMap<String, Raft>,
        pristine_cluster: bool,
        shutdown: &watch::Receiver<bool>,
    ) {
        let bootstrap = Bootstrap {
            self_name: self.config.node.name.clone(),
            listed: joined.listed.subscribe(),
            // Filled from `listed` every round.
            members: BTreeMap::new(),
            rafts,
            proposer: joined.proposer.clone(),
            connected: self.mesh.connected(),
            pristine_cluster,
        };
        tokio::spawn(bootstrap.run(shutdown.clone()));
    }

    /// Spawns `group`'s loop and ticks (`group::tasks`) with its own stop signal, and
    /// shows it to the operator's commands.
    pub(super) fn spawn_group(
        &self,
        joined: &mut Joined,
        group: &VipGroup,
        raft: GroupRaft,
        shutdown: &watch::Receiver<bool>,
    ) {
        let parts = NodeParts {
            config: &self.config,
            data_plane: self.data_plane.clone(),
            proposer: joined.proposer.clone(),
            links: self.links.as_ref(),
            health: self.health.as_ref().map(|(_, _, facts)| facts.clone()),
            connected: self.mesh.connected(),
            raft_service: self.peer_handler.raft.clone(),
            notifier: joined.notifier.clone(),
        };
        let (stop, stopped) = child_signal(shutdown);
        let (said, membership) = watch::channel(String::new());
        let driver = MembershipDriver {
            group: group.name.clone(),
            raft: raft.raft.clone(),
            me: self.config.node.name.clone(),
            role: self.config.node.role,
            nodes: joined.listed.subscribe(),
            proposer: joined.proposer.clone(),
            connected: self.mesh.connected(),
            lease: crate::hold::hold_lease(self.config.timers.leader_lease(), crate::hold::TICK),
            said,
        };
        tokio::spawn(driver.run(stopped.clone()));
        let vips = VipSet::of(group);
        let running = tasks::spawn(&parts, group, &vips, raft, &stopped, &joined.fatal_tx);
        let (name, handle) = GroupHandle::of(&running, membership);
        joined.control.update_groups(|groups| {
            groups.insert(name.clone(), handle);
        });
        let feed = GroupLoopFeed {
            group: name.clone(),
            beat: running.beat.clone(),
            state: running.reported.clone(),
        };
        joined.systemd.send_modify(|loops| loops.push(feed));
        let tasks = GroupTasks {
            stop,
            settings: running.settings,
            task: running.task,
        };
        joined.loops.insert(name, tasks);
    }
}
