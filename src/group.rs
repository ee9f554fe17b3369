//! One VIP group's control loop on this node. On every Raft metrics change, every
//! replicated-state change and every tick it: evaluates the policy (on the leader),
//! applies the hold rule, adds or removes the VIPs, hands leadership over when the policy
//! says so, and reports this node's facts. Removing the VIPs always comes first: nothing
//! here may run between "the rule stopped holding" and "the VIPs are gone" but the
//! removal itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::ServerState;
use openraft::async_runtime::Instant as _;
use openraft::async_runtime::WatchReceiver as _;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::consensus::state::{Command, GroupState, NodeFacts, NodeState};
use crate::consensus::types::{NodeId, Raft, RaftMetrics, Vote, node_id};
use crate::control::notify::{HookState, Notifier, StateChange};
use crate::hold::{self, HoldInputs};
use crate::lateness::Lateness;
use crate::policy::{self, GroupRules, NodeView, Reason, Role, Situation};
use crate::vip::{DataPlane, VipSet};

/// How often the loop runs when nothing wakes it and nothing is due: it catches what has
/// no event of its own (a stalled hand-over, a catch-up limit, a retried release) while
/// keeping an idle node idle. Raft metrics, replicated state and local facts wake it at
/// once; the lease end and a pending failback are timed exactly.
const IDLE_WAKE: Duration = Duration::from_millis(100);

/// How long a planned hand-over keeps the VIPs while its target catches up on the log.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(1);

/// The part of the Raft metrics a step depends on, with the acknowledgement times reduced
/// to what they decide: whether the leader's quorum acknowledgement is within the hold
/// lease and which peers count as reachable. Their running out is timed by `next_wake`
/// (lease end, `IDLE_WAKE`); their coming back changes this key and wakes a step at once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MetricsKey {
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

impl MetricsKey {
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
            .is_some_and(|acked| acked.elapsed() < hold::release_at(setup.hold_lease));
        MetricsKey {
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

/// What this node alone knows about itself in a group: fed by the link watch (link_up)
/// and the health monitor (the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFacts {
    pub healthy: bool,
    pub link_up: bool,
    /// Priority change from weighted checks (keepalived's track_script weights).
    pub priority_delta: i32,
    /// Not every health check has a first result yet: nothing is proposed meanwhile and
    /// the node counts as unhealthy, so a freshly started gateway never takes the VIP on
    /// the strength of checks it has not run.
    pub pending: bool,
    /// Which checks are down, by name (changes only on transitions, so each change is
    /// one Raft entry and one history line).
    pub health_detail: String,
}

impl LocalFacts {
    /// A node with no health checks is healthy from the start.
    pub fn initial(has_checks: bool) -> Self {
        Self {
            healthy: !has_checks,
            link_up: true,
            priority_delta: 0,
            pending: has_checks,
            health_detail: String::new(),
        }
    }
}

/// The loop's view for status: published after every step.
#[derive(Debug, Clone, Default)]
pub struct LocalView {
    pub holding: bool,
    pub hold_reason: String,
    pub quorum_ack_age: Option<Duration>,
    /// When the hold lease of the last quorum acknowledgement runs out.
    pub lease_until: Option<Instant>,
    /// How often this node started or stopped holding (for metrics).
    pub hold_transitions: u64,
    /// How late the loop released and woke against its deadlines (for metrics).
    pub lateness: Lateness,
}

impl LocalView {
    /// Whether the VIPs are held *now*. A process that was frozen (SIGSTOP, a stalled VM)
    /// may answer a status request before its loop has run again; the lease check here
    /// keeps it from claiming a hold that the rule no longer allows.
    pub fn holds_now(&self) -> bool {
        self.holding && self.lease_until.is_some_and(|until| Instant::now() < until)
    }
}

/// The parts of the replicated state a step reads: not the history, which can be long;
/// copying it on every 10 ms tick was most of an idle node's CPU.
struct Replicated {
    nodes: BTreeMap<String, NodeState>,
    pin: Option<String>,
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
    pub notifier: Notifier,
}

/// Something that can commit a command in this group (the daemon: locally on the leader,
/// else forwarded to it).
pub type Proposer = Arc<
    dyn Fn(Command) -> futures_util::future::BoxFuture<'static, Result<(), String>> + Send + Sync,
>;

pub struct GroupLoop {
    setup: GroupSetup,
    raft: Raft,
    state: watch::Receiver<GroupState>,
    facts: watch::Receiver<LocalFacts>,
    data_plane: Arc<dyn DataPlane>,
    propose: Proposer,
    view: Arc<Mutex<LocalView>>,
    /// Term of the last step, to reset per-term memory.
    term: u64,
    holding: bool,
    /// Set when this node started handing leadership away in the current term.
    handing_over: Option<Instant>,
    /// Since when a planned hand-over has been waiting for its target's log.
    catch_up_since: Option<Instant>,
    master_recorded: bool,
    /// Since when each node has been continuously eligible and reachable, as seen here.
    stable_since: BTreeMap<String, Instant>,
    last_facts_proposal: Option<Instant>,
    last_reason: String,
    /// When the loop must run again even if nothing happens.
    next_wake: Instant,
    /// What the last step saw of the Raft metrics (see `MetricsKey`).
    seen: Option<MetricsKey>,
    /// The hold lease's end as of the last step.
    lease_until: Option<Instant>,
    /// The state notify hooks and the log last heard of.
    hook_state: HookState,
    hold_transitions: u64,
    /// The end of the hold lease the VIPs are held under: the latest `until` given to the
    /// data plane, or a later lease end seen by a step while holding. A release is late
    /// when it completes after it.
    held_until: Option<Instant>,
    lateness: Lateness,
    /// When a late wake-up was last logged (at most one line per `WAKE_LOG_EVERY`).
    wake_logged: Option<Instant>,
}

/// Late wake-ups are counted every time but logged at most this often per group: on a
/// starved machine every one of them is late, and the count says how many.
const WAKE_LOG_EVERY: Duration = Duration::from_secs(10);

impl GroupLoop {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        setup: GroupSetup,
        raft: Raft,
        state: watch::Receiver<GroupState>,
        facts: watch::Receiver<LocalFacts>,
        data_plane: Arc<dyn DataPlane>,
        propose: Proposer,
        view: Arc<Mutex<LocalView>>,
    ) -> Self {
        Self {
            setup,
            raft,
            state,
            facts,
            data_plane,
            propose,
            view,
            term: 0,
            holding: false,
            handing_over: None,
            catch_up_since: None,
            master_recorded: false,
            stable_since: BTreeMap::new(),
            last_facts_proposal: None,
            last_reason: String::new(),
            next_wake: Instant::now(),
            seen: None,
            lease_until: None,
            hook_state: HookState::Backup,
            hold_transitions: 0,
            held_until: None,
            lateness: Lateness::default(),
            wake_logged: None,
        }
    }

    /// Runs until `shutdown` turns true, then releases the VIPs and returns. Returns an
    /// error (after releasing) if the group's Raft stopped on its own: a fatal storage or
    /// protocol error, after which the daemon must exit so that its supervisor restarts it.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), String> {
        let mut metrics = self.raft.metrics();
        let mut state = self.state.clone();
        let mut facts = self.facts.clone();
        let mut fatal = None;
        loop {
            let mut metrics_only = false;
            let due = self.next_wake;
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep_until(due) => self.woke(due),
                changed = metrics.changed() => match changed {
                    Ok(()) => metrics_only = true,
                    Err(_) => fatal = Some("its Raft stopped"),
                },
                changed = state.changed() => if changed.is_err() { fatal = Some("its state machine stopped"); },
                changed = facts.changed() => if changed.is_err() { fatal = Some("its facts feed stopped"); },
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
            // Every acknowledgement changes the metrics (dozens a second on a leader); a
            // step for one that changes nothing the loop acts on is wasted, unless the
            // holder's lease is close to its end: a step moves it on for the data plane
            // and the announcer, which would otherwise see it lapse between the lease end
            // and the step that wakes there (and drop a burst of gratuitous ARP).
            let now = Instant::now();
            let lease_ending = self.holding
                && self
                    .lease_until
                    .is_some_and(|until| until.saturating_duration_since(now) < IDLE_WAKE);
            if metrics_only
                && now < self.next_wake
                && !lease_ending
                && self.seen == Some(self.metrics_key())
            {
                continue;
            }
            self.step().await;
        }
        self.release(if fatal.is_some() {
            "fatal error"
        } else {
            "shutting down"
        })
        .await;
        self.publish(None, None);
        if let Some(what) = fatal {
            return Err(format!(
                "group {}: {what}; see the errors above",
                self.setup.vips.group
            ));
        }
        self.hand_over_before_exit().await;
        Ok(())
    }

    /// On a graceful stop the leader hands the group to the best other gateway and waits
    /// (bounded) until it has taken over, so the VIP moves in one election round trip
    /// instead of an election timeout.
    async fn hand_over_before_exit(&mut self) {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let self_id = node_id(&self.setup.self_name);
        if !(metrics.state == ServerState::Leader && metrics.current_leader == Some(self_id)) {
            return;
        }
        let state = self.replicated();
        let mut nodes = self.node_views(&metrics, &state, Instant::now());
        for node in nodes.iter_mut().filter(|n| n.name == self.setup.self_name) {
            node.maintenance = true;
        }
        let situation = Situation {
            leader: &self.setup.self_name,
            nodes: &nodes,
            pin: state.pin.as_deref(),
            rules: &self.setup.rules,
        };
        let Some(hand_over) = policy::decide(&situation).hand_over else {
            return;
        };
        if self.holding {
            tracing::warn!(group = %self.setup.vips.group, "the VIPs could not be removed: not handing over");
            return;
        }
        tracing::info!(group = %self.setup.vips.group, to = %hand_over.to, "handing leadership over before exiting");
        if let Err(e) = self
            .raft
            .trigger()
            .transfer_leader(node_id(&hand_over.to))
            .await
        {
            tracing::warn!(group = %self.setup.vips.group, "transfer_leader failed: {e}");
            return;
        }
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
            tracing::warn!(group = %self.setup.vips.group, "{} did not take over within 1s; exiting anyway", hand_over.to);
        }
    }

    /// What the loop acts on in the metrics, as of now.
    fn metrics_key(&self) -> MetricsKey {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        MetricsKey::of(&m, &self.setup)
    }

    async fn step(&mut self) {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let now = Instant::now();
        self.seen = Some(MetricsKey::of(&metrics, &self.setup));
        let self_id = node_id(&self.setup.self_name);
        let is_leader =
            metrics.state == ServerState::Leader && metrics.current_leader == Some(self_id);
        if metrics.current_term != self.term {
            self.term = metrics.current_term;
            self.handing_over = None;
            self.catch_up_since = None;
            self.master_recorded = false;
            self.stable_since.clear();
        }
        let quorum_ack_age = metrics
            .last_quorum_acked
            .as_ref()
            .map(|acked| acked.elapsed());
        let lease_until =
            quorum_ack_age.and_then(|age| (now + self.setup.hold_lease).checked_sub(age));
        self.lease_until = lease_until;
        // Acknowledgements that arrived since the last hold() extended the lease the VIPs
        // are held under: a release before this end is on time, whatever its reason.
        if is_leader && self.holding {
            self.held_until = self.held_until.max(lease_until);
        }
        let state = self.replicated();

        let verdict = if is_leader {
            let nodes = self.node_views(&metrics, &state, now);
            let situation = Situation {
                leader: &self.setup.self_name,
                nodes: &nodes,
                pin: state.pin.as_deref(),
                rules: &self.setup.rules,
            };
            Some(policy::decide(&situation))
        } else {
            self.stable_since.clear();
            None
        };

        // A planned hand-over (pin, failback) from an eligible leader keeps the VIPs until
        // the target has the whole log: openraft's target ignores a transfer while its log
        // is behind, and the old leader stops heartbeating anyway, which would leave the
        // VIP down for an election timeout plus an election. Capped, so a target that never
        // catches up cannot block the move.
        let mut hand_over = verdict.as_ref().and_then(|v| v.hand_over.clone());
        let recheck_in = verdict.as_ref().and_then(|v| v.recheck_in);
        let mut deferred = false;
        if let Some(h) = &hand_over
            && matches!(h.reason, Reason::Pinned | Reason::Failback)
            && self.handing_over.is_none()
        {
            let matched = metrics
                .replication
                .as_ref()
                .and_then(|r| r.get(&node_id(&h.to)).cloned().flatten())
                .map(|log_id| log_id.index);
            let caught_up = matched >= metrics.last_log_index;
            let since = *self.catch_up_since.get_or_insert(now);
            if !caught_up && now.duration_since(since) < CATCH_UP_LIMIT {
                deferred = true;
                hand_over = None;
            }
        } else {
            self.catch_up_since = None;
        }

        let inputs = HoldInputs {
            is_leader,
            is_gateway: self.setup.role == Role::Gateway,
            eligible: deferred || verdict.as_ref().is_some_and(|v| v.leader_may_hold),
            quorum_ack_age,
            handing_over: self.handing_over.is_some() || hand_over.is_some(),
        };
        match hold::may_hold(&inputs, hold::release_at(self.setup.hold_lease)) {
            Ok(()) => self.hold(metrics.current_term, lease_until).await,
            Err(why) => self.release(&why.to_string()).await,
        }

        if let Some(hand_over) = hand_over {
            let stalled = self
                .handing_over
                .is_some_and(|since| now.duration_since(since) > self.setup.leader_lease * 3);
            if self.holding {
                // The release failed: a transfer now would let the target win while the
                // VIPs are still up. The next tick retries the release first.
                tracing::warn!(group = %self.setup.vips.group, "not handing over while the VIPs are still up");
            } else if self.handing_over.is_none() || stalled {
                // A stalled transfer (the target ignored it, e.g. its log was behind) is
                // sent again; openraft re-broadcasts it.
                tracing::info!(group = %self.setup.vips.group, to = %hand_over.to, term = metrics.current_term,
                    "handing leadership over: {}", hand_over.reason);
                self.commit_own_facts(&state).await;
                self.handing_over = Some(Instant::now());
                self.catch_up_since = None;
                if let Err(e) = self
                    .raft
                    .trigger()
                    .transfer_leader(node_id(&hand_over.to))
                    .await
                {
                    tracing::warn!(group = %self.setup.vips.group, "transfer_leader failed: {e}");
                }
            }
        }
        self.report_state(metrics.current_term);
        self.publish(quorum_ack_age, lease_until);
        // Any time in the block after IDLE_WAKE will do: on the grid, a step that moves it on
        // first costs no wake-up (`crate::timer_grid`).
        let idle = now + IDLE_WAKE;
        let mut wake = crate::timer_grid::current()
            .first_boundary_in(idle, idle + crate::timer_grid::BLOCK)
            .unwrap_or(idle);
        if self.holding
            && let Some(until) = lease_until
        {
            // The removal starts RELEASE_AHEAD early, so that it is done by `until`.
            wake = wake.min(until.checked_sub(hold::RELEASE_AHEAD).unwrap_or(until));
        }
        if let Some(recheck) = recheck_in {
            wake = wake.min(now + recheck);
        }
        self.next_wake = wake;
        self.report_facts(&state, now);
    }

    fn node_views(
        &mut self,
        metrics: &RaftMetrics,
        state: &Replicated,
        now: Instant,
    ) -> Vec<NodeView> {
        let heartbeat = metrics.heartbeat.clone().unwrap_or_default();
        let mut views = Vec::with_capacity(self.setup.members.len());
        for name in &self.setup.members {
            let is_self = *name == self.setup.self_name;
            let replicated = state.nodes.get(name);
            let maintenance = replicated.is_some_and(|n| n.maintenance);
            let reachable = is_self
                || heartbeat
                    .get(&node_id(name))
                    .and_then(|acked| acked.as_ref())
                    .is_some_and(|acked| acked.elapsed() < self.setup.leader_lease);
            // This node's own facts are taken live; others' as replicated. A node that
            // never reported is a witness of priority 0 as far as the policy knows.
            let facts = if is_self {
                Some(self.own_facts())
            } else {
                replicated.and_then(|n| n.facts.clone())
            };
            let (role, priority, healthy, link_up) = match &facts {
                Some(f) => (f.role, f.priority, f.healthy, f.link_up),
                None => (Role::Witness, 0, false, false),
            };
            let stable = reachable && healthy && link_up && !maintenance && role == Role::Gateway;
            let stable_for = if stable {
                Some(now.duration_since(*self.stable_since.entry(name.clone()).or_insert(now)))
            } else {
                self.stable_since.remove(name);
                None
            };
            views.push(NodeView {
                name: name.clone(),
                role,
                priority,
                healthy,
                link_up,
                maintenance,
                reachable,
                stable_for,
            });
        }
        views
    }

    async fn hold(&mut self, term: u64, lease_until: Option<Instant>) {
        // The rule held, so a lease end exists; without one there is nothing to hold on.
        let Some(until) = lease_until else {
            self.release("no quorum acknowledgement").await;
            return;
        };
        if let Err(e) = self.data_plane.hold(&self.setup.vips, until).await {
            tracing::error!(group = %self.setup.vips.group, "cannot hold the VIPs: {e}");
            self.release("the data plane failed").await;
            return;
        }
        self.held_until = self.held_until.max(Some(until));
        if !self.holding {
            self.holding = true;
            self.hold_transitions += 1;
            self.last_reason = "master: leader with a fresh quorum acknowledgement".into();
            self.report_state(term);
        }
        if !self.master_recorded {
            self.master_recorded = true;
            let command = Command::MasterChanged {
                node: self.setup.self_name.clone(),
                term,
                at_unix_ms: unix_ms(),
            };
            self.propose_in_background(command, "the master change was not recorded in history");
        }
    }

    async fn release(&mut self, why: &str) {
        if self.holding {
            let started = Instant::now();
            if let Err(e) = self.data_plane.release(&self.setup.vips).await {
                tracing::error!(group = %self.setup.vips.group, "cannot remove the VIPs: {e}");
                return;
            }
            self.released_at(started, Instant::now(), why);
            self.holding = false;
            self.hold_transitions += 1;
            self.last_reason = why.to_string();
            self.report_state(self.term);
        }
        if self.last_reason != why {
            self.last_reason = why.to_string();
        }
    }

    /// Accounts for a completed removal against the lease it was held under; a late one
    /// is a safety event (a new master may already hold) and gets a WARN line.
    /// `started` and `done` bracket the data plane's removal, so the line says whether the
    /// loop came late (a starved thread, a late timer) or the removal was slow.
    fn released_at(&mut self, started: Instant, done: Instant, why: &str) {
        let deadline = self.held_until.take();
        let after = deadline.map(|d| done.saturating_duration_since(d));
        if let (Some(late), Some(deadline)) = (self.lateness.release(after), deadline) {
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let started_late = started.saturating_duration_since(deadline);
            tracing::warn!(group = %self.setup.vips.group, term = self.term,
                deadline_unix_ms = unix_ms().saturating_sub(late.as_millis() as u64),
                late_ms = ms(late), started_late_ms = ms(started_late),
                removal_ms = ms(done.duration_since(started)),
                wake_late_max_ms = ms(self.lateness.wake_late_max), reason = %why,
                "late release: the VIPs were removed {late:?} after the hold lease ended");
        }
    }

    /// Accounts for a timed wake-up of the loop, `due` being when it should have run. A
    /// late one while holding eats into the hold lease's margin.
    fn woke(&mut self, due: Instant) {
        let now = Instant::now();
        let Some(late) = self.lateness.wake(now.saturating_duration_since(due)) else {
            return;
        };
        if self.holding
            && self
                .wake_logged
                .is_none_or(|at| now.duration_since(at) >= WAKE_LOG_EVERY)
        {
            self.wake_logged = Some(now);
            tracing::warn!(group = %self.setup.vips.group, late_ms = late.as_secs_f64() * 1000.0,
                late_wakeups = self.lateness.late_wakeups,
                "the hold loop woke {late:?} late while holding (the machine is starved?)");
        }
    }

    fn replicated(&self) -> Replicated {
        let state = self.state.borrow();
        Replicated {
            nodes: state.nodes.clone(),
            pin: state.pin.clone(),
        }
    }

    /// Proposes without making the loop wait for Raft; a failure is only worth a debug
    /// line because the caller proposes again when it still matters.
    fn propose_in_background(&self, command: Command, on_failure: &'static str) {
        let propose = self.propose.clone();
        let group = self.setup.vips.group.clone();
        tokio::spawn(async move {
            if let Err(e) = propose(command).await {
                tracing::debug!(group = %group, "{on_failure}: {e}");
            }
        });
    }

    /// Before handing over, the leader commits why (its changed facts): otherwise the new
    /// leader may still see it as healthy and preferred, and fail back to it. Bounded;
    /// the VIPs are already released, so waiting costs no safety.
    async fn commit_own_facts(&mut self, state: &Replicated) {
        let facts = self.own_facts();
        let replicated = state
            .nodes
            .get(&self.setup.self_name)
            .and_then(|n| n.facts.as_ref());
        if self.facts.borrow().pending || replicated == Some(&facts) {
            return;
        }
        let command = Command::ReportFacts {
            node: self.setup.self_name.clone(),
            facts,
            at_unix_ms: unix_ms(),
        };
        if tokio::time::timeout(Duration::from_millis(500), (self.propose)(command))
            .await
            .is_err()
        {
            tracing::debug!(group = %self.setup.vips.group, "facts not committed before the hand-over");
        }
        self.last_facts_proposal = Some(Instant::now());
    }

    /// This node's facts as it would report them now: effective priority (weights
    /// applied, kept within 1..=254 for a gateway), health, link, and why.
    fn own_facts(&self) -> NodeFacts {
        let local = self.facts.borrow();
        let priority = match self.setup.role {
            Role::Witness => 0,
            Role::Gateway => {
                (i32::from(self.setup.priority) + local.priority_delta).clamp(1, 254) as u8
            }
        };
        let mut detail = Vec::new();
        if local.pending {
            detail.push("health checks pending".to_string());
        }
        if !local.health_detail.is_empty() {
            detail.push(local.health_detail.clone());
        }
        if !local.link_up {
            detail.push(format!("link {} down", self.setup.vips.interface));
        }
        NodeFacts {
            role: self.setup.role,
            priority,
            healthy: local.healthy && !local.pending,
            link_up: local.link_up,
            detail: detail.join("; "),
        }
    }

    /// MASTER while holding; otherwise FAULT when this node may not hold (unhealthy,
    /// link down, maintenance), else BACKUP. A witness is always BACKUP.
    fn hook_state(&self) -> HookState {
        if self.holding {
            return HookState::Master;
        }
        if self.setup.role == Role::Witness {
            return HookState::Backup;
        }
        let local = self.facts.borrow();
        let maintenance = self
            .state
            .borrow()
            .nodes
            .get(&self.setup.self_name)
            .is_some_and(|n| n.maintenance);
        if !local.healthy || local.pending || !local.link_up || maintenance {
            HookState::Fault
        } else {
            HookState::Backup
        }
    }

    /// One log line and one notify hook per change of state; called after the VIPs were
    /// added or removed, never before.
    fn report_state(&mut self, term: u64) {
        let new = self.hook_state();
        let old = std::mem::replace(&mut self.hook_state, new);
        if old == new {
            return;
        }
        let group = &self.setup.vips.group;
        match new {
            HookState::Master => {
                tracing::info!(group = %group, term, addresses = ?self.setup.vips.addresses,
                "state change: {old} -> MASTER (holding the VIPs)")
            }
            _ => tracing::info!(group = %group, term, reason = %self.last_reason,
                "state change: {old} -> {new}{}", if old == HookState::Master { " (released the VIPs)" } else { "" }),
        }
        self.setup.notifier.notify(StateChange {
            node: self.setup.self_name.clone(),
            group: group.clone(),
            old,
            new,
            term,
            reason: self.last_reason.clone(),
        });
    }

    fn publish(&self, quorum_ack_age: Option<Duration>, lease_until: Option<Instant>) {
        if let Ok(mut view) = self.view.lock() {
            view.holding = self.holding;
            view.lease_until = lease_until;
            view.hold_reason = self.last_reason.clone();
            view.quorum_ack_age = quorum_ack_age;
            view.hold_transitions = self.hold_transitions;
            view.lateness = self.lateness;
        }
    }

    /// Proposes this node's facts when the replicated ones differ, at most every 200 ms
    /// (the proposal is asynchronous; the loop never waits for Raft).
    fn report_facts(&mut self, state: &Replicated, now: Instant) {
        if self.facts.borrow().pending {
            return;
        }
        let facts = self.own_facts();
        let replicated = state
            .nodes
            .get(&self.setup.self_name)
            .and_then(|n| n.facts.as_ref());
        if replicated == Some(&facts) {
            return;
        }
        if self
            .last_facts_proposal
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(200))
        {
            return;
        }
        if self
            .raft
            .metrics()
            .borrow_watched()
            .current_leader
            .is_none()
        {
            return;
        }
        self.last_facts_proposal = Some(now);
        let command = Command::ReportFacts {
            node: self.setup.self_name.clone(),
            facts,
            at_unix_ms: unix_ms(),
        };
        self.propose_in_background(command, "facts not committed yet");
    }
}

/// Wall-clock time for history entries only; no decision reads it.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
