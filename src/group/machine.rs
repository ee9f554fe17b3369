//! The decisions of one VIP group's loop on this node, as a pure state machine: what the
//! loop observed goes in ([`Observation`]: Raft's view, the replicated state, this node's
//! inputs, a timer, the data plane's answers, a link or a peer coming back), what it must
//! do comes out ([`Action`]: hold, release or announce the VIPs, hand leadership over,
//! propose, notify, log, when to wake).
//!
//! This is where "may the leader hold?" is decided, once ([`GroupMachine::decision`]),
//! from `policy::decide` and `hold::may_hold`. It must never do I/O or read a clock: time
//! comes in with every step, so a whole failover replays in a test
//! (`tests/group_scenarios.rs`). It must never emit anything after a `Hold`, `Release`
//! or `CommitFacts` before it has seen that action's result: the VIPs are removed before
//! anything else happens, and a removal that failed stops a hand-over.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Role;
use crate::consensus::state::{Command, NodeFacts, NodeRecord};
use crate::control::notify::{HookState, StateChange};
use crate::health::HealthFacts;
use crate::hold::{self, HoldInputs, NotHolding};
use crate::lateness::Lateness;
use crate::platform::timer_grid::{self, Grid};
use crate::policy::{self, GroupRules, HandOver, NodeView, Reason, Situation};
use crate::vip::DataPlaneError;

/// How often the loop runs when nothing wakes it and nothing is due: it catches what has
/// no event of its own (a stalled hand-over, a catch-up limit, a retried release) while
/// keeping an idle node idle. Raft metrics, replicated state and local facts wake it at
/// once; the lease end and a pending failback are timed exactly.
pub const IDLE_WAKE: Duration = Duration::from_millis(100);

/// How long a planned hand-over keeps the VIPs while its target catches up on the log.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(1);

/// Facts are proposed at most this often: the proposal is asynchronous, and one that is
/// still on its way would only be proposed again.
pub const FACTS_EVERY: Duration = Duration::from_millis(200);

/// Late wake-ups are counted every time but logged at most this often per group: on a
/// starved machine every one of them is late, and the count says how many.
pub const WAKE_LOG_EVERY: Duration = Duration::from_secs(10);

/// A stalled hand-over (the target ignored it, e.g. its log was behind) is sent again
/// after this many leader leases.
pub const STALLED_AFTER_LEASES: u32 = 3;

/// Static description of the group on this node, as the decisions need it.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub self_name: String,
    pub group: String,
    /// The VIPs' interface (named in this node's facts when its link is down).
    pub interface: String,
    pub role: Role,
    pub priority: u8,
    pub rules: GroupRules,
    /// All voters, by name.
    pub members: Vec<String>,
    pub leader_lease: Duration,
    pub hold_lease: Duration,
    /// The last change of the leader lease by a reload: acknowledgements of heartbeats
    /// sent before it are worth the shorter hold lease (`hold::hold_lease_for`).
    pub lease_change: Option<hold::LeaseChange>,
    /// Where the idle wake-up goes (`crate::platform::timer_grid`); no grid in tests.
    pub grid: Grid,
}

/// This node's own inputs in a group, not yet reported: its interface's link (the link
/// watch) and its health (the health feed). Not a node's facts: [`reported_facts`] makes
/// those from it (with the configured role and priority), and only they are replicated.
/// It holds what the facts are made from (a priority change, checks still pending), so it
/// is a type of its own; it is never sent or stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalInputs {
    pub link_up: bool,
    /// The health checks' verdict; while some check has no first result yet
    /// (`health.pending`) nothing is proposed and the node counts as unhealthy, so a
    /// freshly started gateway never takes the VIP on the strength of checks it has not
    /// run. Its detail (which checks are down) changes only on transitions, so each change
    /// is one Raft entry and one history line.
    pub health: HealthFacts,
}

impl LocalInputs {
    /// A node with no link watch and no health checks: link up and healthy from the start.
    pub fn without_feeds() -> Self {
        Self {
            link_up: true,
            health: HealthFacts::no_checks(),
        }
    }
}

/// What the leader's Raft knows of one other member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerSeen {
    /// When the last heartbeat it acknowledged was sent; `None`: never.
    pub acked: Option<Instant>,
    /// The last log index replicated to it.
    pub matched: Option<u64>,
}

/// Everything one step reads, taken at one instant: Raft's view of the group, the parts
/// of the replicated state the decisions use, and this node's own facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// This node is the group's Raft leader (its state is leader and it names itself).
    pub is_leader: bool,
    pub term: u64,
    /// Who this node believes leads the group (a member's name); `None`: nobody known.
    pub leader: Option<String>,
    /// When the heartbeat that a quorum last acknowledged was sent (leader only).
    pub quorum_acked: Option<Instant>,
    /// Per member, what the leader's replication knows (leader only).
    pub peers: BTreeMap<String, PeerSeen>,
    pub last_log_index: Option<u64>,
    pub nodes: BTreeMap<String, NodeRecord>,
    pub pin: Option<String>,
    /// This node's inputs, as its feeds say now.
    pub local: LocalInputs,
    /// Wall-clock time for the history entries this step proposes; no decision reads it.
    pub wall_unix_ms: u64,
}

/// One input of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The loop's timed wake-up, due at `due`, ran (a `Snapshot` follows).
    Woke { due: Instant },
    /// Something the loop reads changed, or a timer ran: decide again.
    Snapshot(Box<Snapshot>),
    /// The data plane's answer to `Action::Hold`.
    Held(Result<(), DataPlaneError>),
    /// The data plane's answer to `Action::Release`; `started` is when the removal began
    /// (the step's `now` is when it returned); `taken_down` is when something below the
    /// loop (the netlink plane's deadline guard) had already taken the VIPs down because
    /// the loop had not by the end of the hold lease: the release is timed by that.
    Released {
        started: Instant,
        result: Result<(), DataPlaneError>,
        taken_down: Option<Instant>,
    },
    /// `Action::CommitFacts` returned (committed, failed or timed out).
    FactsCommitted,
    /// The loop is stopping (`fatal`: its Raft or a feed stopped on its own).
    Stop { fatal: bool },
    /// After `Stop`: a graceful exit hands leadership over if this node leads.
    Exiting(Box<Snapshot>),
    /// The group's interface link came back up: the switch may have flushed its tables
    /// while it was down.
    LinkCameBack,
    /// A peer (re)connected: it may have held the VIPs for some clients meanwhile, so
    /// their caches must point here again.
    PeerReconnected,
    /// A reload changed the group's priority or rules; the next snapshot decides with
    /// them (a priority is reported as a fact, so it may move the VIP, planned).
    /// The members change only with the peer lists.
    Reconfigured {
        priority: u8,
        rules: GroupRules,
        members: Vec<String>,
    },
    /// A reload changed this node's `[timers]`: the leader lease it announces from
    /// `change.at` on, and the hold lease that goes with it.
    LeaseChanged {
        leader_lease: Duration,
        hold_lease: Duration,
        change: Option<hold::LeaseChange>,
    },
}

/// Why leadership is handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferReason {
    /// The policy says so.
    Policy(Reason),
    /// This node is shutting down; the executor waits (bounded) until the target leads.
    ShuttingDown,
}

/// One thing the executor must do, in order. `Hold`, `Release` and `CommitFacts` are
/// answered with an observation before the machine says anything more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Add or refresh the VIPs; never touch them at or after `until`.
    Hold {
        until: Instant,
    },
    /// Remove the VIPs, and say whether that worked (`Observation::Released`).
    Release {
        reason: String,
    },
    /// Send a fresh burst of announcements (gratuitous ARP, unsolicited NA) for the held
    /// VIPs; the data plane's announcer still speaks only while the hold lease runs.
    Announce,
    /// Commit this before the hand-over that follows (bounded wait), so the new leader
    /// knows why this one left and does not fail back to it.
    CommitFacts(Command),
    /// `transfer_leader` to `to`.
    Transfer {
        to: String,
        reason: TransferReason,
    },
    /// Propose in the background; the loop never waits for it.
    Propose(Command),
    /// The node's state changed: one log line and one notify hook.
    Notify(StateChange),
    /// Run again at this instant even if nothing changes.
    WakeAt(Instant),
    Log(Event),
}

/// Every other line the group's decisions log (the executor writes them: `group::log`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    HoldFailed {
        error: String,
    },
    ReleaseFailed {
        error: String,
    },
    /// A removal completed after the end of the hold lease it was held under.
    LateRelease {
        term: u64,
        late: Duration,
        started_late: Duration,
        removal: Duration,
        wake_late_max: Duration,
        reason: String,
    },
    WokeLate {
        late: Duration,
        late_wakeups: u64,
    },
    /// The release before a hand-over failed: no transfer while the VIPs are up.
    NotHandingOverWhileHolding,
    HandingOver {
        to: String,
        reason: Reason,
        term: u64,
    },
    /// On exit, the VIPs could not be removed: no hand-over.
    NotHandingOverBeforeExit,
    HandingOverBeforeExit {
        to: String,
    },
}

/// What a step still has to do after the data plane (or the facts commit) answers.
#[derive(Debug, Clone)]
struct Rest {
    /// The step's own instant: the hand-over's stall check, the wake-up and the facts
    /// throttle are timed from it, as when the step was one function.
    now: Instant,
    hand_over: Option<HandOver>,
    recheck_in: Option<Duration>,
}

/// The action whose answer the machine is waiting for.
#[derive(Debug, Clone)]
enum Waiting {
    Hold { until: Instant, rest: Rest },
    Release { reason: String, rest: Option<Rest> },
    Commit { hand_over: HandOver, rest: Rest },
}

/// What the policy and the hold rule say about one step, decided in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decision {
    hold: Result<(), NotHolding>,
    hand_over: Option<HandOver>,
    recheck_in: Option<Duration>,
}

/// One group's decisions on this node, and the memory they need across steps.
#[derive(Debug)]
pub struct GroupMachine {
    config: GroupConfig,
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
    /// The hold lease's end and the quorum acknowledgement's age as of the last step.
    lease_until: Option<Instant>,
    quorum_ack_age: Option<Duration>,
    /// The last snapshot: this node's facts and the replicated state, for the hook state
    /// and the facts it reports.
    last: Option<Box<Snapshot>>,
    waiting: Option<Waiting>,
}

impl GroupMachine {
    pub fn new(config: GroupConfig) -> Self {
        Self {
            config,
            term: 0,
            holding: false,
            handing_over: None,
            catch_up_since: None,
            master_recorded: false,
            stable_since: BTreeMap::new(),
            last_facts_proposal: None,
            last_reason: String::new(),
            hook_state: HookState::Backup,
            hold_transitions: 0,
            held_until: None,
            lateness: Lateness::default(),
            wake_logged: None,
            lease_until: None,
            quorum_ack_age: None,
            last: None,
            waiting: None,
        }
    }

    /// Takes one observation made at `now` and says what to do, in order. An answer
    /// (`Held`, `Released`, `FactsCommitted`) that answers no action is ignored.
    pub fn step(&mut self, observation: Observation, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match observation {
            Observation::Woke { due } => self.woke(due, now, &mut out),
            Observation::Snapshot(snapshot) => self.observe(snapshot, now, &mut out),
            Observation::Held(result) => self.held(result, now, &mut out),
            Observation::Released {
                started,
                result,
                taken_down,
            } => self.released(started, now, result, taken_down, &mut out),
            Observation::FactsCommitted => self.facts_committed(now, &mut out),
            Observation::Stop { fatal } => {
                self.waiting = None;
                self.lease_until = None;
                self.quorum_ack_age = None;
                let reason = if fatal {
                    "fatal error"
                } else {
                    "shutting down"
                };
                self.release(reason, None, now, &mut out);
            }
            Observation::Exiting(snapshot) => self.exiting(&snapshot, now, &mut out),
            Observation::LinkCameBack | Observation::PeerReconnected => {
                out.extend(self.announce_again(now));
            }
            Observation::Reconfigured {
                priority,
                rules,
                members,
            } => {
                self.config.priority = priority;
                self.config.rules = rules;
                // A node dropped from the list and added again starts its failback delay
                // afresh, not from when it was last seen stable.
                self.stable_since.retain(|name, _| members.contains(name));
                self.config.members = members;
            }
            Observation::LeaseChanged {
                leader_lease,
                hold_lease,
                change,
            } => {
                self.config.leader_lease = leader_lease;
                self.config.hold_lease = hold_lease;
                self.config.lease_change = change;
            }
        }
        out
    }

    /// A held group is announced again when its link or a peer comes back; nothing is
    /// announced unless this node holds under a lease that still runs at `now`, and
    /// nothing while an action's answer is awaited.
    fn announce_again(&self, now: Instant) -> Option<Action> {
        let holds = holds_under_lease(self.holding, self.lease_until, now);
        (holds && self.waiting.is_none()).then_some(Action::Announce)
    }

    /// Whether the VIPs are on the host as far as the loop knows.
    pub fn holding(&self) -> bool {
        self.holding
    }

    /// When the hold lease of the last quorum acknowledgement runs out.
    pub fn lease_until(&self) -> Option<Instant> {
        self.lease_until
    }

    pub fn quorum_ack_age(&self) -> Option<Duration> {
        self.quorum_ack_age
    }

    /// Why the node holds or not, in the words of the last state change or rule.
    pub fn hold_reason(&self) -> &str {
        &self.last_reason
    }

    /// How often this node started or stopped holding.
    pub fn hold_transitions(&self) -> u64 {
        self.hold_transitions
    }

    pub fn lateness(&self) -> Lateness {
        self.lateness
    }

    /// Accounts for a timed wake-up, `due` being when it should have run. A late one
    /// while holding eats into the hold lease's margin.
    fn woke(&mut self, due: Instant, now: Instant, out: &mut Vec<Action>) {
        let Some(late) = self.lateness.wake(now.saturating_duration_since(due)) else {
            return;
        };
        if self.holding
            && self
                .wake_logged
                .is_none_or(|at| now.saturating_duration_since(at) >= WAKE_LOG_EVERY)
        {
            self.wake_logged = Some(now);
            out.push(Action::Log(Event::WokeLate {
                late,
                late_wakeups: self.lateness.late_wakeups,
            }));
        }
    }

    /// A step: the hold rule first (its action is answered before anything else
    /// happens), then the hand-over, the hook state, the wake-up and the facts.
    fn observe(&mut self, snapshot: Box<Snapshot>, now: Instant, out: &mut Vec<Action>) {
        // A step replaces whatever an earlier one was waiting for (the executor never
        // lets that happen; if it did, the new step decides afresh).
        self.waiting = None;
        if snapshot.term != self.term {
            self.term = snapshot.term;
            self.handing_over = None;
            self.catch_up_since = None;
            self.master_recorded = false;
            self.stable_since.clear();
        }
        let quorum_ack_age = snapshot
            .quorum_acked
            .map(|acked| now.saturating_duration_since(acked));
        let lease_until = snapshot
            .quorum_acked
            .map(|acked| acked + self.hold_lease_for(acked));
        self.quorum_ack_age = quorum_ack_age;
        self.lease_until = lease_until;
        // Acknowledgements that arrived since the last hold extended the lease the VIPs
        // are held under: a release before this end is on time, whatever its reason.
        if snapshot.is_leader && self.holding {
            self.held_until = self.held_until.max(lease_until);
        }
        let decision = self.decision(&snapshot, quorum_ack_age, now);
        self.last = Some(snapshot);
        let rest = Rest {
            now,
            hand_over: decision.hand_over,
            recheck_in: decision.recheck_in,
        };
        match (decision.hold, lease_until) {
            (Ok(()), Some(until)) => {
                out.push(Action::Hold { until });
                self.waiting = Some(Waiting::Hold { until, rest });
            }
            // The rule held, so a lease end exists; without one there is nothing to hold on.
            (Ok(()), None) => self.release("no quorum acknowledgement", Some(rest), now, out),
            (Err(why), _) => self.release(&why.to_string(), Some(rest), now, out),
        }
    }

    /// The one place that decides whether the leader may hold, and whether and to whom
    /// it hands leadership: the policy's verdict, the catch-up deferral of a planned
    /// hand-over, and the hold rule.
    fn decision(
        &mut self,
        s: &Snapshot,
        quorum_ack_age: Option<Duration>,
        now: Instant,
    ) -> Decision {
        let verdict = if s.is_leader {
            let nodes = self.node_views(s, now);
            Some(policy::decide(&Situation {
                leader: &self.config.self_name,
                nodes: &nodes,
                pin: s.pin.as_deref(),
                rules: &self.config.rules,
            }))
        } else {
            self.stable_since.clear();
            None
        };
        let mut hand_over = verdict.as_ref().and_then(|v| v.hand_over.clone());
        let recheck_in = verdict.as_ref().and_then(|v| v.recheck_in);
        // A planned hand-over (pin, failback) from an eligible leader keeps the VIPs until
        // the target has the whole log: openraft's target ignores a transfer while its log
        // is behind, and the old leader stops heartbeating anyway, which would leave the
        // VIP down for an election timeout plus an election. Likewise until this node's
        // own changed facts are committed (a reload lowered its priority; `finish`
        // proposes them): the hand-over commits them first, and with the VIPs already
        // down that commit was part of the clients' gap. Capped, so a target that never
        // catches up, or a commit that never comes, cannot block the move. While it waits,
        // the leader holds as if no hand-over were due (the policy said it may not,
        // because of the hand-over).
        let mut deferred = false;
        if let Some(h) = &hand_over
            && matches!(h.reason, Reason::Pinned | Reason::Failback)
            && self.handing_over.is_none()
        {
            let matched = s.peers.get(&h.to).and_then(|p| p.matched);
            let caught_up = matched >= s.last_log_index && self.unreplicated_facts(s).is_none();
            let since = *self.catch_up_since.get_or_insert(now);
            if !caught_up && now.saturating_duration_since(since) < CATCH_UP_LIMIT {
                deferred = true;
                hand_over = None;
            }
        } else {
            self.catch_up_since = None;
        }
        let hold_lease = s
            .quorum_acked
            .map_or(self.config.hold_lease, |acked| self.hold_lease_for(acked));
        let inputs = HoldInputs {
            is_leader: s.is_leader,
            is_gateway: self.config.role == Role::Gateway,
            eligible: deferred || verdict.as_ref().is_some_and(|v| v.leader_may_hold),
            quorum_ack_age,
            handing_over: self.handing_over.is_some() || hand_over.is_some(),
        };
        Decision {
            hold: hold::may_hold(&inputs, hold::release_at(hold_lease)),
            hand_over,
            recheck_in,
        }
    }

    /// The hold lease the quorum's acknowledgement of a heartbeat sent at `acked` is worth.
    fn hold_lease_for(&self, acked: Instant) -> Duration {
        hold::hold_lease_for(self.config.hold_lease, self.config.lease_change, acked)
    }

    /// The group's members as the policy sees them, with this node's facts taken live
    /// and the others' as replicated; tracks how long each has been stable.
    fn node_views(&mut self, s: &Snapshot, now: Instant) -> Vec<NodeView> {
        let mut views = Vec::with_capacity(self.config.members.len());
        for name in &self.config.members {
            let is_self = *name == self.config.self_name;
            let record = s.nodes.get(name);
            let reachable = is_self
                || s.peers
                    .get(name)
                    .and_then(|p| p.acked)
                    .is_some_and(|acked| {
                        now.saturating_duration_since(acked) < self.config.leader_lease
                    });
            let facts = if is_self {
                Some(reported_facts(&self.config, &s.local))
            } else {
                record.and_then(|n| n.facts.clone())
            };
            let maintenance = record.is_some_and(|n| n.maintenance);
            let mut view = NodeView::of(name, facts, maintenance, reachable);
            view.stable_for = if view.stable_now() {
                let since = *self.stable_since.entry(name.clone()).or_insert(now);
                Some(now.saturating_duration_since(since))
            } else {
                self.stable_since.remove(name);
                None
            };
            views.push(view);
        }
        views
    }

    /// The data plane answered `Hold`.
    fn held(&mut self, result: Result<(), DataPlaneError>, now: Instant, out: &mut Vec<Action>) {
        let Some(Waiting::Hold { until, rest }) = self.waiting.take() else {
            return;
        };
        if let Err(error) = result {
            out.push(Action::Log(Event::HoldFailed {
                error: error.to_string(),
            }));
            self.release("the data plane failed", Some(rest), now, out);
            return;
        }
        self.held_until = self.held_until.max(Some(until));
        if !self.holding {
            self.holding = true;
            self.hold_transitions += 1;
            self.last_reason = "master: leader with a fresh quorum acknowledgement".into();
            out.extend(self.report_state());
        }
        if !self.master_recorded {
            self.master_recorded = true;
            out.push(Action::Propose(Command::MasterChanged {
                node: self.config.self_name.clone(),
                term: self.term,
                at_unix_ms: self.wall_unix_ms(),
            }));
        }
        self.after_hold(rest, now, out);
    }

    /// Lets go of the VIPs if they are held (the step goes on once the data plane has
    /// answered), else only records why the node does not hold.
    fn release(&mut self, why: &str, rest: Option<Rest>, now: Instant, out: &mut Vec<Action>) {
        if self.holding {
            out.push(Action::Release {
                reason: why.to_string(),
            });
            self.waiting = Some(Waiting::Release {
                reason: why.to_string(),
                rest,
            });
            return;
        }
        if self.last_reason != why {
            self.last_reason = why.to_string();
        }
        if let Some(rest) = rest {
            self.after_hold(rest, now, out);
        }
    }

    /// The data plane answered `Release`: `started..done` bracket the removal.
    fn released(
        &mut self,
        started: Instant,
        done: Instant,
        result: Result<(), DataPlaneError>,
        taken_down: Option<Instant>,
        out: &mut Vec<Action>,
    ) {
        let Some(Waiting::Release { reason, rest }) = self.waiting.take() else {
            return;
        };
        match result {
            // Still holding: the hand-over below sees it and waits; the next step
            // retries the removal first.
            Err(error) => out.push(Action::Log(Event::ReleaseFailed {
                error: error.to_string(),
            })),
            Ok(()) => {
                let (started, gone) = match taken_down {
                    Some(at) if at < started => (at, at),
                    _ => (started, done),
                };
                out.extend(self.account_release(started, gone, &reason));
                self.holding = false;
                self.hold_transitions += 1;
                self.last_reason = reason;
                out.extend(self.report_state());
            }
        }
        if let Some(rest) = rest {
            self.after_hold(rest, done, out);
        }
    }

    /// Accounts for a completed removal against the lease it was held under; a late one
    /// is a safety event (a new master may already hold) and is logged. `started` and
    /// `done` bracket the removal, so the line says whether the loop came late (a
    /// starved thread, a late timer) or the removal was slow.
    fn account_release(&mut self, started: Instant, done: Instant, why: &str) -> Option<Action> {
        let deadline = self.held_until.take();
        let after = deadline.map(|d| done.saturating_duration_since(d));
        let late = self.lateness.release(after)?;
        let deadline = deadline?;
        Some(Action::Log(Event::LateRelease {
            term: self.term,
            late,
            started_late: started.saturating_duration_since(deadline),
            removal: done.saturating_duration_since(started),
            wake_late_max: self.lateness.wake_late_max,
            reason: why.to_string(),
        }))
    }

    /// After the hold rule's action: the hand-over, if one is due and the VIPs are gone.
    /// `now` is the latest observation's instant: a transfer is timed from when it is
    /// sent, after the removal, not from when the step began.
    fn after_hold(&mut self, rest: Rest, now: Instant, out: &mut Vec<Action>) {
        let Some(hand_over) = rest.hand_over.clone() else {
            return self.finish(rest, out);
        };
        let stalled = self.handing_over.is_some_and(|since| {
            rest.now.saturating_duration_since(since)
                > self.config.leader_lease * STALLED_AFTER_LEASES
        });
        if self.holding {
            // The release failed: a transfer now would let the target win while the
            // VIPs are still up. The next tick retries the release first.
            out.push(Action::Log(Event::NotHandingOverWhileHolding));
        } else if self.handing_over.is_none() || stalled {
            // A stalled transfer is sent again; openraft re-broadcasts it.
            out.push(Action::Log(Event::HandingOver {
                to: hand_over.to.clone(),
                reason: hand_over.reason,
                term: self.term,
            }));
            if let Some(command) = self.facts_to_commit() {
                out.push(Action::CommitFacts(command));
                self.waiting = Some(Waiting::Commit { hand_over, rest });
                return;
            }
            self.transfer(hand_over, now, out);
        }
        self.finish(rest, out);
    }

    /// Before handing over, the leader commits why (its changed facts): otherwise the
    /// new leader may still see it as healthy and preferred, and fail back to it.
    fn facts_to_commit(&self) -> Option<Command> {
        self.unreplicated_facts(self.last.as_ref()?)
    }

    /// This node's facts as `last` shows them, if the replicated ones differ (and its
    /// checks have all run): what a hand-over must commit first.
    fn unreplicated_facts(&self, last: &Snapshot) -> Option<Command> {
        let facts = reported_facts(&self.config, &last.local);
        let replicated = last
            .nodes
            .get(&self.config.self_name)
            .and_then(|n| n.facts.as_ref());
        if last.local.health.pending || replicated == Some(&facts) {
            return None;
        }
        Some(Command::ReportFacts {
            node: self.config.self_name.clone(),
            facts,
            at_unix_ms: last.wall_unix_ms,
        })
    }

    fn facts_committed(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(Waiting::Commit { hand_over, rest }) = self.waiting.take() else {
            return;
        };
        self.last_facts_proposal = Some(now);
        self.transfer(hand_over, now, out);
        self.finish(rest, out);
    }

    fn transfer(&mut self, hand_over: HandOver, now: Instant, out: &mut Vec<Action>) {
        self.handing_over = Some(now);
        self.catch_up_since = None;
        out.push(Action::Transfer {
            to: hand_over.to,
            reason: TransferReason::Policy(hand_over.reason),
        });
    }

    /// The end of every step: the hook state, the next wake-up, this node's facts.
    fn finish(&mut self, rest: Rest, out: &mut Vec<Action>) {
        out.extend(self.report_state());
        // Any time in the block after IDLE_WAKE will do: on the grid, a step that moves it
        // on first costs no wake-up (`crate::platform::timer_grid`).
        let idle = rest.now + IDLE_WAKE;
        let mut wake = self
            .config
            .grid
            .first_boundary_in(idle, idle + timer_grid::BLOCK)
            .unwrap_or(idle);
        if self.holding
            && let Some(until) = self.lease_until
        {
            // The removal starts RELEASE_AHEAD early, so that it is done by `until`.
            wake = wake.min(until.checked_sub(hold::RELEASE_AHEAD).unwrap_or(until));
        }
        if let Some(recheck) = rest.recheck_in {
            wake = wake.min(rest.now + recheck);
        }
        out.push(Action::WakeAt(wake));
        out.extend(self.report_facts(rest.now));
    }

    /// Proposes this node's facts when the replicated ones differ, at most every
    /// `FACTS_EVERY`, and only while a leader is known to take them.
    fn report_facts(&mut self, now: Instant) -> Option<Action> {
        let last = self.last.as_ref()?;
        if last.local.health.pending {
            return None;
        }
        let facts = reported_facts(&self.config, &last.local);
        let replicated = last
            .nodes
            .get(&self.config.self_name)
            .and_then(|n| n.facts.as_ref());
        if replicated == Some(&facts)
            || last.leader.is_none()
            || self
                .last_facts_proposal
                .is_some_and(|t| now.saturating_duration_since(t) < FACTS_EVERY)
        {
            return None;
        }
        let command = Command::ReportFacts {
            node: self.config.self_name.clone(),
            facts,
            at_unix_ms: last.wall_unix_ms,
        };
        self.last_facts_proposal = Some(now);
        Some(Action::Propose(command))
    }

    /// On a graceful stop the leader hands the group to the best other gateway, as if
    /// it were in maintenance, so the VIP moves in one election round trip instead of
    /// an election timeout.
    fn exiting(&mut self, s: &Snapshot, now: Instant, out: &mut Vec<Action>) {
        if !s.is_leader {
            return;
        }
        let mut nodes = self.node_views(s, now);
        for node in nodes.iter_mut().filter(|n| n.name == self.config.self_name) {
            node.maintenance = true;
        }
        let verdict = policy::decide(&Situation {
            leader: &self.config.self_name,
            nodes: &nodes,
            pin: s.pin.as_deref(),
            rules: &self.config.rules,
        });
        let Some(hand_over) = verdict.hand_over else {
            return;
        };
        if self.holding {
            out.push(Action::Log(Event::NotHandingOverBeforeExit));
            return;
        }
        out.push(Action::Log(Event::HandingOverBeforeExit {
            to: hand_over.to.clone(),
        }));
        out.push(Action::Transfer {
            to: hand_over.to,
            reason: TransferReason::ShuttingDown,
        });
    }

    /// MASTER while holding; otherwise FAULT when this node may not hold (unhealthy,
    /// link down, maintenance), else BACKUP. A witness is always BACKUP.
    fn current_hook_state(&self) -> HookState {
        if self.holding {
            return HookState::Master;
        }
        if self.config.role == Role::Witness {
            return HookState::Backup;
        }
        let Some(last) = &self.last else {
            return HookState::Backup;
        };
        let local = &last.local;
        let maintenance = last
            .nodes
            .get(&self.config.self_name)
            .is_some_and(|n| n.maintenance);
        if !local.health.healthy || local.health.pending || !local.link_up || maintenance {
            HookState::Fault
        } else {
            HookState::Backup
        }
    }

    /// One state change per change of the hook state; called after the VIPs were added
    /// or removed, never before.
    fn report_state(&mut self) -> Option<Action> {
        let new = self.current_hook_state();
        let old = std::mem::replace(&mut self.hook_state, new);
        (old != new).then(|| {
            Action::Notify(StateChange {
                node: self.config.self_name.clone(),
                group: self.config.group.clone(),
                old,
                new,
                term: self.term,
                reason: self.last_reason.clone(),
            })
        })
    }

    fn wall_unix_ms(&self) -> u64 {
        self.last.as_ref().map_or(0, |s| s.wall_unix_ms)
    }
}

/// Whether VIPs held (as far as the loop knows) are held under a lease that still runs at
/// `now`: a process thawed from SIGSTOP must not act on (or claim) a hold its rule no
/// longer allows before its loop has run again.
pub fn holds_under_lease(holding: bool, lease_until: Option<Instant>, now: Instant) -> bool {
    holding && lease_until.is_some_and(|until| now < until)
}

/// This node's facts as it reports them, made from its local inputs: effective priority
/// (weights applied, kept within 1..=254 for a gateway), health, link, and why.
pub fn reported_facts(config: &GroupConfig, local: &LocalInputs) -> NodeFacts {
    let health = &local.health;
    let priority = match config.role {
        Role::Witness => 0,
        Role::Gateway => (i32::from(config.priority) + health.priority_delta).clamp(1, 254) as u8,
    };
    let mut detail = Vec::new();
    if health.pending {
        detail.push("health checks pending".to_string());
    }
    if !health.detail.is_empty() {
        detail.push(health.detail.clone());
    }
    if !local.link_up {
        detail.push(format!("link {} down", config.interface));
    }
    NodeFacts {
        role: config.role,
        priority,
        healthy: health.healthy && !health.pending,
        link_up: local.link_up,
        detail: detail.join("; "),
    }
}

impl fmt::Display for TransferReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferReason::Policy(reason) => reason.fmt(f),
            TransferReason::ShuttingDown => f.write_str("shutting down"),
        }
    }
}
