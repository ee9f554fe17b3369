//! One VIP group's loop on this node: the executor of the group's decisions. On every
//! Raft metrics change, every replicated-state change, every change of this node's inputs
//! and every timed wake-up it takes a snapshot of what it reads, gives it to the pure
//! [`machine::GroupMachine`], and does what that says, in order: the data plane's hold
//! and release, leadership transfers, proposals, notify hooks, log lines, the next
//! wake-up. It decides nothing itself (beyond skipping steps for Raft metrics changes the
//! machine would not act on). It must never run an action before the data plane has
//! answered the one before it: removing the VIPs always comes first, and a removal that
//! failed must be seen by the machine before any hand-over.

pub mod feeds;
pub mod log;
pub mod machine;
pub mod reannounce;
pub mod tasks;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::ServerState;
use openraft::async_runtime::Instant as _;
use openraft::async_runtime::WatchReceiver as _;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Role;
use crate::config::{Config, VipGroup};
use crate::consensus::Raft;
use crate::consensus::lease::NodeTimers;
use crate::consensus::proposer::GroupProposer;
use crate::consensus::state::{Command, GroupState};
use crate::consensus::types::{NodeId, RaftMetrics, Vote, node_id};
use crate::control::notify::{HookState, Notifier};
use crate::hold::{self, TICK, hold_lease};
use crate::lateness::Lateness;
use crate::platform::watches::changed_or_never;
use crate::policy::GroupRules;
use crate::systemd::LoopBeat;
use crate::vip::{DataPlane, VipSet};
pub use feeds::FactFeeds;
pub use machine::LocalInputs;
use machine::{
    Action, GroupConfig, GroupMachine, IDLE_WAKE, Observation, PeerSeen, Snapshot, TransferReason,
};
pub use reannounce::ReannounceFeeds;

/// The part of the Raft metrics a step depends on, with the acknowledgement times reduced
/// to what they decide: whether the leader's quorum acknowledgement is within the hold
/// lease and which peers count as reachable. Their running out is timed by `next_wake`
/// (lease end, `IDLE_WAKE`); their coming back changes this key and wakes a step at once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RaftMetricsKey {
    state: ServerState,
    term: u64,
    leader: Option<NodeId>,
    vote: Vote,
    last_log_index: Option<u64>,
    last_applied: Option<u64>,
    membership: Option<u64>,
    matched: Vec<(NodeId, Option<u64>)>,
    reachable: Vec<NodeId>,
    quorum_ack_fresh: bool,
}

impl RaftMetricsKey {
    fn of(m: &RaftMetrics, setup: &GroupSetup) -> Self {
        let matched = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, log)| (*id, log.as_ref().map(|l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        let reachable = m
            .heartbeat
            .as_ref()
            .map(|h| {
                h.iter()
                    .filter(|(_, acked)| {
                        acked
                            .as_ref()
                            .is_some_and(|a| a.elapsed() < setup.leader_lease)
                    })
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default();
        let quorum_ack_fresh = m
            .last_quorum_acked
            .as_ref()
            .is_some_and(|acked| acked.elapsed() < hold::release_at(setup.shortest_hold_lease()));
        RaftMetricsKey {
            state: m.state,
            term: m.current_term,
            leader: m.current_leader,
            vote: m.vote,
            last_log_index: m.last_log_index,
            last_applied: m.last_applied.as_ref().map(|l| l.index),
            membership: m.membership_config.log_id().as_ref().map(|l| l.index),
            matched,
            reachable,
            quorum_ack_fresh,
        }
    }
}

/// The loop's view for status and Prometheus: published on a watch
/// channel after every step (`GroupLoop::view`).
#[derive(Debug, Clone, Default)]
pub struct LocalView {
    pub holding: bool,
    pub hold_reason: String,
    pub quorum_ack_age: Option<Duration>,
    /// When the hold lease of the last quorum acknowledgement runs out.
    pub lease_until: Option<Instant>,
    /// How often this node started or stopped holding (for Prometheus).
    pub hold_transitions: u64,
    /// How late the loop released and woke against its deadlines (for Prometheus).
    pub lateness: Lateness,
}

impl LocalView {
    /// Whether the VIPs are held *now*. A process that was frozen (SIGSTOP, a stalled VM)
    /// may answer a status request before its loop has run again; the lease check here
    /// keeps it from claiming a hold that the rule no longer allows.
    pub fn holds_now(&self) -> bool {
        machine::holds_under_lease(self.holding, self.lease_until, Instant::now())
    }
}

/// What a reload may change in a running group: its own settings, and the cluster's
/// members (a reload that changes the peer lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub group: VipGroup,
    /// Every listed node, this one included, in the config's order.
    pub members: Vec<String>,
}

impl Settings {
    pub fn of(config: &Config, group: &VipGroup) -> Self {
        Settings {
            group: group.clone(),
            members: member_names(config),
        }
    }
}

/// Every listed node's name, this one included, in the config's order.
pub fn member_names(config: &Config) -> Vec<String> {
    (config.cluster.peers.iter())
        .map(|p| p.name.clone())
        .collect()
}

/// Static description of the group on this node.
pub struct GroupSetup {
    pub self_name: String,
    pub role: Role,
    pub priority: u8,
    pub vips: VipSet,
    pub rules: GroupRules,
    /// All voters, by name.
    pub members: Vec<String>,
    pub leader_lease: Duration,
    pub hold_lease: Duration,
    /// The last change of the leader lease by a reload (`hold::LeaseChange`).
    pub lease_change: Option<hold::LeaseChange>,
    pub notifier: Notifier,
}

impl GroupSetup {
    /// The hold lease, or the one before the last change if that was shorter: what the
    /// metrics key judges freshness by (a step decides exactly, `hold::hold_lease_for`).
    fn shortest_hold_lease(&self) -> Duration {
        self.lease_change
            .map_or(self.hold_lease, |c| c.hold_before.min(self.hold_lease))
    }

    /// `group` on this node, from the config.
    pub fn of(config: &Config, group: &VipGroup, vips: VipSet, notifier: Notifier) -> Self {
        let leader_lease = config.timers.leader_lease();
        GroupSetup {
            self_name: config.node.name.clone(),
            role: config.node.role,
            priority: group.priority,
            vips,
            rules: GroupRules {
                failback: group.failback,
                failback_delay: group.failback_delay,
                on_all_unhealthy: group.on_all_unhealthy,
            },
            members: member_names(config),
            leader_lease,
            hold_lease: hold_lease(leader_lease, TICK),
            lease_change: None,
            notifier,
        }
    }
}

/// A group loop that stopped on its own: the daemon must exit so that its supervisor
/// restarts it.
#[derive(Debug, thiserror::Error)]
#[error("group {group}: {what}; see the errors above")]
pub struct GroupStopped {
    pub group: String,
    pub what: &'static str,
}

/// The executor of one group's decisions; see the module comment.
pub struct GroupLoop {
    machine: GroupMachine,
    io: LoopIo,
    state: watch::Receiver<GroupState>,
    facts: FactFeeds,
    /// When a held group may need announcing again (a link or a peer came back).
    reannounce: ReannounceFeeds,
    view: watch::Sender<LocalView>,
    /// What the last step saw of the Raft metrics (see `RaftMetricsKey`).
    seen: Option<RaftMetricsKey>,
    /// Stamped every time the loop goes round: systemd's watchdog is pinged only while
    /// every group's loop does (`crate::systemd`).
    beat: LoopBeat,
    /// The group's settings as a reload changes them (`with_settings`).
    settings: Option<watch::Receiver<Settings>>,
    /// This node's timers as a reload changes them (`with_timers`), read at every step.
    /// A change wakes nothing: the first step after it is usually the one for the
    /// acknowledgement of the heartbeat the leader sends at once (`ticks`), which is
    /// worth the new lease; a step before it would judge the last acknowledgement, sent
    /// at the old pace, by the shorter of the two leases (`hold::LeaseChange`).
    timers_now: Option<watch::Receiver<NodeTimers>>,
}

/// The loop's hands: everything an action touches.
struct LoopIo {
    setup: GroupSetup,
    raft: Raft,
    data_plane: Arc<dyn DataPlane>,
    propose: GroupProposer,
    /// When the loop must run again even if nothing happens (the machine's `WakeAt`).
    next_wake: Instant,
    /// The state the last notify hook was given (MASTER/BACKUP/FAULT), for systemd.
    reported: watch::Sender<HookState>,
}

/// What doing an action means: the loop's I/O, or a test's stand-in.
trait Effects {
    /// Does one action; returns the answer the machine waits for, if it waits for one.
    fn perform(&mut self, action: Action) -> impl Future<Output = Option<Observation>> + Send;
}

/// Gives `first` to the machine and does what it says, in order. The machine says
/// nothing after an action whose answer it needs, so that answer's consequences come
/// next, before anything decided earlier could run.
async fn execute(
    machine: &mut GroupMachine,
    effects: &mut impl Effects,
    first: Observation,
    now: Instant,
) {
    let mut actions: VecDeque<Action> = machine.step(first, now).into();
    while let Some(action) = actions.pop_front() {
        if let Some(answer) = effects.perform(action).await {
            actions.extend(machine.step(answer, Instant::now()));
        }
    }
}

impl GroupLoop {
    pub fn new(
        setup: GroupSetup,
        raft: Raft,
        state: watch::Receiver<GroupState>,
        facts: FactFeeds,
        reannounce: ReannounceFeeds,
        data_plane: Arc<dyn DataPlane>,
        propose: GroupProposer,
    ) -> Self {
        let machine = GroupMachine::new(GroupConfig {
            self_name: setup.self_name.clone(),
            group: setup.vips.group.clone(),
            interface: setup.vips.interface.clone(),
            role: setup.role,
            priority: setup.priority,
            rules: setup.rules.clone(),
            members: setup.members.clone(),
            leader_lease: setup.leader_lease,
            hold_lease: setup.hold_lease,
            lease_change: setup.lease_change,
            grid: crate::platform::timer_grid::current(),
        });
        Self {
            machine,
            io: LoopIo {
                setup,
                raft,
                data_plane,
                propose,
                next_wake: Instant::now(),
                reported: watch::Sender::new(HookState::Backup),
            },
            state,
            facts,
            reannounce,
            view: watch::Sender::new(LocalView::default()),
            seen: None,
            beat: LoopBeat::default(),
            settings: None,
            timers_now: None,
        }
    }

    /// Follows `settings`: each change (a reload) is applied without releasing a held
    /// VIP (`reconfigure`).
    pub fn with_settings(mut self, settings: watch::Receiver<Settings>) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Follows this node's `timers`: a reload's new leader lease applies to the
    /// acknowledgements of heartbeats sent after it (`hold::LeaseChange`), from the next
    /// step on. The timers as they are now apply at once (a group added by a reload after
    /// the timers changed).
    pub fn with_timers(mut self, mut timers: watch::Receiver<NodeTimers>) -> Self {
        let now = *timers.borrow_and_update();
        let changed = self.lease_changed(now);
        // Not holding yet: the machine answers a lease change with no action.
        let _ = self.machine.step(changed, Instant::now());
        self.timers_now = Some(timers);
        self
    }

    /// Applies `timers` if they are not what the loop has (a reload changed them).
    async fn follow_timers(&mut self, timers: NodeTimers) {
        let setup = &self.io.setup;
        if (setup.leader_lease, setup.lease_change) == (timers.lease(), timers.change) {
            return;
        }
        tracing::info!(group = %setup.vips.group, leader_lease_ms = timers.lease().as_millis() as u64,
            hold_lease_ms = timers.hold_lease().as_millis() as u64, "timers changed by a reload");
        let changed = self.lease_changed(timers);
        execute(&mut self.machine, &mut self.io, changed, Instant::now()).await;
    }

    /// The observation of `timers`, with the loop's own copy brought up to date.
    fn lease_changed(&mut self, timers: NodeTimers) -> Observation {
        let setup = &mut self.io.setup;
        setup.leader_lease = timers.lease();
        setup.hold_lease = timers.hold_lease();
        setup.lease_change = timers.change;
        Observation::LeaseChanged {
            leader_lease: setup.leader_lease,
            hold_lease: setup.hold_lease,
            change: setup.lease_change,
        }
    }

    /// When the loop last went round (for the watchdog).
    pub fn beat(&self) -> LoopBeat {
        self.beat.clone()
    }

    /// The group's state as the notify hooks see it; changes only when it changes.
    pub fn reported(&self) -> watch::Receiver<HookState> {
        self.io.reported.subscribe()
    }

    /// The loop's view (holding, why, quorum age, counters), current after every step.
    pub fn view(&self) -> watch::Receiver<LocalView> {
        self.view.subscribe()
    }

    /// Runs the loop in its own task; if it stops on its own, says so on `fatal`.
    pub fn spawn(
        self,
        shutdown: watch::Receiver<bool>,
        fatal: tokio::sync::mpsc::UnboundedSender<GroupStopped>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if let Err(e) = self.run(shutdown).await {
                let _ = fatal.send(e);
            }
        })
    }

    /// Runs until `shutdown` turns true, then releases the VIPs and returns. Returns an
    /// error (after releasing) if the group's Raft stopped on its own: a fatal storage or
    /// protocol error, after which the daemon must exit so that its supervisor restarts it.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), GroupStopped> {
        let mut raft_metrics = self.io.raft.metrics();
        let mut state = self.state.clone();
        let mut facts = self.facts.clone();
        let mut reannounce = std::mem::take(&mut self.reannounce);
        let mut settings = self.settings.take();
        let mut fatal = None;
        loop {
            // Going round at least every idle wake-up (`IDLE_WAKE`); a loop stuck in an
            // action below stops stamping, and the watchdog pings stop with it.
            self.beat.beat();
            let mut raft_metrics_only = false;
            let mut announce_only = false;
            let due = self.io.next_wake;
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep_until(due) => {
                    let woke = Observation::Woke { due };
                    execute(&mut self.machine, &mut self.io, woke, Instant::now()).await;
                }
                changed = raft_metrics.changed() => match changed {
                    Ok(()) => raft_metrics_only = true,
                    Err(_) => fatal = Some("its Raft stopped"),
                },
                changed = state.changed() => if changed.is_err() { fatal = Some("its state machine stopped"); },
                changed = facts.changed() => if changed.is_err() { fatal = Some("its facts feed stopped"); },
                changed = changed_or_never(&mut settings) => match changed {
                    Ok(()) => self.settings_changed(&mut settings).await,
                    // The daemon let go of the group (it is being removed): its stop
                    // signal follows.
                    Err(_) => settings = None,
                },
                edge = reannounce.next() => {
                    // Only the machine's answer to it: no step, as when announcing was
                    // done beside the loop.
                    announce_only = true;
                    execute(&mut self.machine, &mut self.io, edge, Instant::now()).await;
                }
            }
            if *shutdown.borrow() {
                // On the way out the facts feeds stop too, and select! may see that
                // first: not a failure, and the hand-over below must still happen.
                fatal = None;
                break;
            }
            if fatal.is_some() {
                break;
            }
            if announce_only {
                continue;
            }
            if raft_metrics_only && self.nothing_to_act_on() {
                continue;
            }
            self.step().await;
        }
        let stop = Observation::Stop {
            fatal: fatal.is_some(),
        };
        execute(&mut self.machine, &mut self.io, stop, Instant::now()).await;
        self.publish();
        if let Some(what) = fatal {
            return Err(GroupStopped {
                group: self.io.setup.vips.group.clone(),
                what,
            });
        }
        let raft_metrics = self.io.raft.metrics().borrow_watched().clone();
        let now = Instant::now();
        let exiting = Observation::Exiting(Box::new(self.snapshot(&raft_metrics, now)));
        execute(&mut self.machine, &mut self.io, exiting, now).await;
        Ok(())
    }

    async fn settings_changed(&mut self, settings: &mut Option<watch::Receiver<Settings>>) {
        let new = settings.as_mut().map(|s| s.borrow_and_update().clone());
        if let Some(new) = new {
            self.reconfigure(new).await;
        }
    }

    /// New settings from a reload: the machine takes the priority, rules and members, the
    /// executor the VIP set (the step that follows holds the new set if this node holds,
    /// which adds and removes only the difference). Nothing is released for it.
    async fn reconfigure(&mut self, Settings { group, members }: Settings) {
        let setup = &mut self.io.setup;
        if setup.members != members {
            tracing::info!(group = %group.name, members = ?members, "members changed by a reload");
            setup.members = members;
        }
        setup.priority = group.priority;
        setup.rules = GroupRules {
            failback: group.failback,
            failback_delay: group.failback_delay,
            on_all_unhealthy: group.on_all_unhealthy,
        };
        setup.vips = VipSet::of(&group);
        tracing::info!(group = %group.name, priority = group.priority, addresses = ?group.addresses,
            "settings changed by a reload");
        let reconfigured = Observation::Reconfigured {
            priority: setup.priority,
            rules: setup.rules.clone(),
            members: setup.members.clone(),
        };
        execute(
            &mut self.machine,
            &mut self.io,
            reconfigured,
            Instant::now(),
        )
        .await;
    }

    /// Every acknowledgement changes the Raft metrics (dozens a second on a leader); a step
    /// for one that changes nothing the machine acts on is wasted, unless the holder's
    /// lease is close to its end: a step moves it on for the data plane and the
    /// announcer, which would otherwise see it lapse between the lease end and the step
    /// that wakes there (and drop a burst of gratuitous ARP).
    /// Right after a reload changed the lease, every acknowledgement is acted on: the hold
    /// was last moved on by one worth the shorter lease, at the old heartbeat's pace, and
    /// the next one that would fall in the last `IDLE_WAKE` may come only after the end
    /// (seen on the lab: the deadline guard took a held VIP down 264 ms after a reload).
    fn nothing_to_act_on(&self) -> bool {
        let now = Instant::now();
        let lease_ending = self.machine.holding()
            && self
                .machine
                .lease_until()
                .is_some_and(|until| until.saturating_duration_since(now) < IDLE_WAKE);
        let setup = &self.io.setup;
        // A change the loop has not taken yet: the acknowledgement that woke it is the
        // first one to judge by it.
        let timers_moved = self.timers_now.as_ref().is_some_and(|t| {
            let t = *t.borrow();
            (t.lease(), t.change) != (setup.leader_lease, setup.lease_change)
        });
        let lease_changing = timers_moved
            || setup.lease_change.is_some_and(|change| {
                now.saturating_duration_since(change.at)
                    < change.hold_before.max(setup.hold_lease) * 2
            });
        now < self.io.next_wake
            && !lease_ending
            && !lease_changing
            && self.seen == Some(self.raft_metrics_key())
    }

    /// What the loop acts on in the Raft metrics, as of now.
    fn raft_metrics_key(&self) -> RaftMetricsKey {
        let raft_metrics = self.io.raft.metrics();
        let m = raft_metrics.borrow_watched();
        RaftMetricsKey::of(&m, &self.io.setup)
    }

    async fn step(&mut self) {
        let raft_metrics = self.io.raft.metrics().borrow_watched().clone();
        // The timers as they are *after* the metrics were read: an acknowledgement in
        // them of a heartbeat that announced a shortened lease was sent after the change,
        // so the change is seen here even if the select above has not got to it yet.
        let timers = self.timers_now.as_ref().map(|t| *t.borrow());
        if let Some(timers) = timers {
            self.follow_timers(timers).await;
        }
        let now = Instant::now();
        self.seen = Some(RaftMetricsKey::of(&raft_metrics, &self.io.setup));
        let snapshot = self.snapshot(&raft_metrics, now);
        execute(
            &mut self.machine,
            &mut self.io,
            Observation::Snapshot(Box::new(snapshot)),
            now,
        )
        .await;
        self.publish();
    }

    /// What a step reads, as of `now`. openraft's instants become tokio's by their age,
    /// so the machine compares them with `now` and reads no clock itself.
    fn snapshot(&self, m: &RaftMetrics, now: Instant) -> Snapshot {
        let self_id = node_id(&self.io.setup.self_name);
        let mut peers = BTreeMap::new();
        for name in &self.io.setup.members {
            let id = node_id(name);
            let acked = m.heartbeat.as_ref().and_then(|h| h.get(&id));
            let matched = m.replication.as_ref().and_then(|r| r.get(&id));
            if acked.is_none() && matched.is_none() {
                continue;
            }
            let seen = PeerSeen {
                acked: acked
                    .and_then(|a| a.as_ref())
                    .and_then(|a| now.checked_sub(a.elapsed())),
                matched: matched.and_then(|l| l.as_ref()).map(|l| l.index),
            };
            peers.insert(name.clone(), seen);
        }
        let leader = m.current_leader.map(|id| {
            self.io
                .setup
                .members
                .iter()
                .find(|name| node_id(name) == id)
                .cloned()
                .unwrap_or_else(|| format!("node {id}"))
        });
        let state = self.state.borrow();
        Snapshot {
            is_leader: m.state == ServerState::Leader && m.current_leader == Some(self_id),
            term: m.current_term,
            leader,
            quorum_acked: m
                .last_quorum_acked
                .as_ref()
                .and_then(|acked| now.checked_sub(acked.elapsed())),
            peers,
            last_log_index: m.last_log_index,
            nodes: state.nodes.clone(),
            pin: state.pin.clone(),
            local: self.facts.latest(),
            wall_unix_ms: unix_ms(),
        }
    }

    /// The machine's view for status and Prometheus.
    fn publish(&self) {
        self.view.send_replace(LocalView {
            holding: self.machine.holding(),
            lease_until: self.machine.lease_until(),
            hold_reason: self.machine.hold_reason().to_string(),
            quorum_ack_age: self.machine.quorum_ack_age(),
            hold_transitions: self.machine.hold_transitions(),
            lateness: self.machine.lateness(),
        });
    }
}

impl Effects for LoopIo {
    async fn perform(&mut self, action: Action) -> Option<Observation> {
        let vips = &self.setup.vips;
        match action {
            Action::Hold { until } => {
                let result = self.data_plane.hold(vips, until).await;
                Some(Observation::Held(result))
            }
            Action::Announce => {
                if let Err(e) = self.data_plane.announce(vips).await {
                    tracing::warn!(group = %vips.group, "cannot announce the VIPs: {e}");
                }
                None
            }
            Action::Release { .. } => {
                let started = Instant::now();
                let result = self.data_plane.release(vips).await;
                let taken_down = self.data_plane.taken_down_at(&vips.group);
                Some(Observation::Released {
                    started,
                    result,
                    taken_down,
                })
            }
            Action::CommitFacts(command) => {
                // Bounded; the VIPs are already released, so waiting costs no safety.
                let commit = self.propose.propose(command);
                if tokio::time::timeout(Duration::from_millis(500), commit)
                    .await
                    .is_err()
                {
                    tracing::debug!(group = %vips.group, "facts not committed before the hand-over");
                }
                Some(Observation::FactsCommitted)
            }
            Action::Transfer { to, reason } => {
                self.transfer(&to, reason).await;
                None
            }
            Action::Propose(command) => {
                self.propose_in_background(command);
                None
            }
            Action::Notify(change) => {
                log::state_change(&change, &vips.addresses);
                self.reported.send_if_modified(|state| {
                    let changed = *state != change.new;
                    *state = change.new;
                    changed
                });
                self.setup.notifier.notify(change);
                None
            }
            Action::WakeAt(at) => {
                self.next_wake = at;
                None
            }
            Action::Log(event) => {
                log::event(&vips.group, &event);
                None
            }
        }
    }
}

impl LoopIo {
    /// Hands leadership to `to`; on a graceful stop, waits (bounded) until it has taken
    /// over, so the VIP moves in one election round trip instead of an election timeout.
    async fn transfer(&self, to: &str, reason: TransferReason) {
        let group = &self.setup.vips.group;
        if let Err(e) = self.raft.trigger().transfer_leader(node_id(to)).await {
            tracing::warn!(group = %group, "transfer_leader failed: {e}");
            return;
        }
        // The step-by-step timing of a planned move reads this line (docs/benchmarks.md).
        tracing::debug!(group = %group, to = %to, "leadership transfer sent");
        if reason != TransferReason::ShuttingDown {
            return;
        }
        let self_id = node_id(&self.setup.self_name);
        let mut watch = self.raft.metrics();
        let moved = tokio::time::timeout(Duration::from_secs(1), async {
            while watch.borrow_watched().current_leader == Some(self_id) {
                if watch.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        if moved.is_err() {
            tracing::warn!(group = %group, "{to} did not take over within 1s; exiting anyway");
        }
    }

    /// Proposes without making the loop wait for Raft; a failure is only worth a debug
    /// line because the machine proposes again when it still matters.
    fn propose_in_background(&self, command: Command) {
        let on_failure = match command {
            Command::MasterChanged { .. } => "the master change was not recorded in history",
            _ => "facts not committed yet",
        };
        let commit = self.propose.propose(command);
        let group = self.setup.vips.group.clone();
        tokio::spawn(async move {
            if let Err(e) = commit.await {
                tracing::debug!(group = %group, "{on_failure}: {e}");
            }
        });
    }
}

/// Wall-clock time for history entries only; no decision reads it.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The executor with the machine and a data plane that fails on request, in process: the
/// order in which actions reach the data plane and the transfer, which the scenario files
/// (the machine alone) cannot see.
#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;
    use crate::config::OnAllUnhealthy;
    use crate::consensus::state::{NodeFacts, NodeRecord};
    use crate::platform::timer_grid::Grid;
    use crate::vip::{DataPlaneError, DataPlaneResult};

    const MS: Duration = Duration::from_millis(1);

    /// A data plane whose next `fail_*` answers are errors; `on_host` is what it left.
    #[derive(Default)]
    struct FlakyDataPlane {
        fail_holds: AtomicU32,
        fail_releases: AtomicU32,
        on_host: AtomicBool,
    }

    fn fails(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    impl DataPlane for FlakyDataPlane {
        fn kind(&self) -> &'static str {
            "flaky"
        }
        fn hold<'a>(&'a self, _: &'a VipSet, _: Instant) -> DataPlaneResult<'a> {
            Box::pin(async move {
                if fails(&self.fail_holds) {
                    return Err(DataPlaneError::Netlink("no buffer space".into()));
                }
                self.on_host.store(true, Ordering::SeqCst);
                Ok(())
            })
        }
        fn release<'a>(&'a self, _: &'a VipSet) -> DataPlaneResult<'a> {
            Box::pin(async move {
                if fails(&self.fail_releases) {
                    return Err(DataPlaneError::Netlink("device busy".into()));
                }
                self.on_host.store(false, Ordering::SeqCst);
                Ok(())
            })
        }
        fn announce<'a>(&'a self, _: &'a VipSet) -> DataPlaneResult<'a> {
            Box::pin(async { Ok(()) })
        }
    }

    /// Performs the data plane's actions for real (on the flaky one) and records every
    /// action in the order the executor performed it.
    struct TestIo {
        data_plane: FlakyDataPlane,
        vips: VipSet,
        done: Vec<String>,
    }

    impl Effects for TestIo {
        async fn perform(&mut self, action: Action) -> Option<Observation> {
            let answer = match &action {
                Action::Hold { until } => Some(Observation::Held(
                    self.data_plane.hold(&self.vips, *until).await,
                )),
                Action::Release { .. } => Some(Observation::Released {
                    taken_down: None,
                    started: Instant::now(),
                    result: self.data_plane.release(&self.vips).await,
                }),
                Action::CommitFacts(_) => Some(Observation::FactsCommitted),
                _ => None,
            };
            let on_host = self.data_plane.on_host.load(Ordering::SeqCst);
            let line = match (&action, &answer) {
                (Action::Hold { .. }, Some(Observation::Held(r))) => {
                    format!("hold {}", if r.is_ok() { "ok" } else { "failed" })
                }
                (Action::Release { .. }, Some(Observation::Released { result, .. })) => {
                    format!("release {}", if result.is_ok() { "ok" } else { "failed" })
                }
                (Action::Transfer { to, .. }, _) => {
                    format!("transfer {to} (VIPs on host: {on_host})")
                }
                (Action::CommitFacts(_), _) => "commit facts".into(),
                _ => return answer,
            };
            self.done.push(line);
            answer
        }
    }

    fn gateway(priority: u8) -> NodeRecord {
        NodeRecord {
            facts: Some(NodeFacts {
                role: Role::Gateway,
                priority,
                healthy: true,
                link_up: true,
                detail: String::new(),
            }),
            maintenance: false,
            since_unix_ms: 0,
        }
    }

    /// gw-a, the preferred gateway, leading term 2 with everyone caught up at `t`.
    fn leading(t: Instant, last_log: u64) -> Snapshot {
        let peer = |matched| PeerSeen {
            acked: Some(t),
            matched: Some(matched),
        };
        Snapshot {
            is_leader: true,
            term: 2,
            leader: Some("gw-a".into()),
            quorum_acked: Some(t),
            peers: [
                ("gw-b".to_string(), peer(last_log)),
                ("witness".to_string(), peer(last_log)),
            ]
            .into(),
            last_log_index: Some(last_log),
            nodes: [
                ("gw-a".to_string(), gateway(150)),
                ("gw-b".to_string(), gateway(100)),
            ]
            .into(),
            pin: None,
            local: LocalInputs::without_feeds(),
            wall_unix_ms: 0,
        }
    }

    fn setup() -> (GroupMachine, TestIo) {
        let machine = GroupMachine::new(GroupConfig {
            self_name: "gw-a".into(),
            group: "crm".into(),
            interface: "eth1".into(),
            role: Role::Gateway,
            priority: 150,
            rules: GroupRules {
                failback: true,
                failback_delay: Duration::from_secs(5),
                on_all_unhealthy: OnAllUnhealthy::Release,
            },
            members: vec!["gw-a".into(), "gw-b".into(), "witness".into()],
            leader_lease: 400 * MS,
            hold_lease: 320 * MS,
            lease_change: None,
            grid: Grid::default(),
        });
        let io = TestIo {
            data_plane: FlakyDataPlane::default(),
            vips: VipSet {
                group: "crm".into(),
                interface: "eth1".into(),
                addresses: Vec::new(),
                address_lifetime: Duration::from_secs(3),
                announce: crate::config::Announce::default(),
            },
            done: Vec::new(),
        };
        (machine, io)
    }

    async fn observe(machine: &mut GroupMachine, io: &mut TestIo, s: Snapshot, now: Instant) {
        execute(machine, io, Observation::Snapshot(Box::new(s)), now).await;
    }

    #[tokio::test]
    async fn a_failed_release_blocks_the_transfer_until_a_release_works() {
        let (mut machine, mut io) = setup();
        let t0 = Instant::now();
        observe(&mut machine, &mut io, leading(t0, 5), t0).await;
        let pinned = |t| Snapshot {
            pin: Some("gw-b".into()),
            ..leading(t, 5)
        };
        io.data_plane.fail_releases.store(1, Ordering::SeqCst);
        observe(&mut machine, &mut io, pinned(t0 + 50 * MS), t0 + 50 * MS).await;
        assert!(machine.holding());
        observe(&mut machine, &mut io, pinned(t0 + 150 * MS), t0 + 150 * MS).await;
        assert_eq!(
            io.done,
            [
                "hold ok",
                "release failed",
                "release ok",
                "transfer gw-b (VIPs on host: false)"
            ]
        );
        assert!(!machine.holding());
    }

    #[tokio::test]
    async fn a_failed_hold_releases_what_was_held() {
        let (mut machine, mut io) = setup();
        let t0 = Instant::now();
        observe(&mut machine, &mut io, leading(t0, 5), t0).await;
        io.data_plane.fail_holds.store(1, Ordering::SeqCst);
        let t = t0 + 100 * MS;
        observe(&mut machine, &mut io, leading(t, 5), t).await;
        assert_eq!(io.done, ["hold ok", "hold failed", "release ok"]);
        assert!(!machine.holding());
        assert!(!io.data_plane.on_host.load(Ordering::SeqCst));
        assert_eq!(machine.hold_reason(), "the data plane failed");
    }

    #[tokio::test]
    async fn a_planned_hand_over_waits_for_the_target_log_at_most_one_second() {
        let (mut machine, mut io) = setup();
        let t0 = Instant::now();
        observe(&mut machine, &mut io, leading(t0, 5), t0).await;
        // gw-b is pinned but one entry behind (the pin itself) from 10 ms on.
        let behind = |t| {
            let mut s = leading(t, 6);
            s.pin = Some("gw-b".into());
            s.peers.insert(
                "gw-b".into(),
                PeerSeen {
                    acked: Some(t),
                    matched: Some(5),
                },
            );
            s
        };
        for ms in (10..=1000).step_by(110) {
            let t = t0 + ms * MS;
            observe(&mut machine, &mut io, behind(t), t).await;
        }
        assert!(machine.holding(), "{:?}", io.done);
        assert!(io.done.iter().all(|d| d == "hold ok"), "{:?}", io.done);
        let t = t0 + 1010 * MS;
        observe(&mut machine, &mut io, behind(t), t).await;
        assert_eq!(
            io.done[io.done.len() - 2..],
            ["release ok", "transfer gw-b (VIPs on host: false)"]
        );
    }
}
