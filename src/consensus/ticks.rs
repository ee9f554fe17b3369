//! When a group's node sends heartbeats and stands for election. openraft's own tick is off
//! on every node (`enable_tick = false`, `enable_elect = false` in `group_raft::raft_config`):
//! it woke every node every few ms, and its election timer made a follower wait its leader
//! lease *plus* a random election timeout before standing, so the VIP stayed away for
//! twice the time that safety needs. Per group, this task:
//! - on the leader, sends a heartbeat every `heartbeat` (`trigger().heartbeat()`, the same
//!   broadcast openraft's tick would send), on tokio's timer grid where the heartbeat is a
//!   whole number of grid blocks (`crate::platform::timer_grid`);
//! - on a gateway that is not the leader, stands for election (`trigger().elect(true)`: a
//!   Pre-Vote first, so a node cut off alone cannot disrupt a healthy leader) after a random
//!   silence in `election_timeout` (min..max), counted from the last AppendEntries it
//!   accepted, its own last attempt or the end of its own leadership, whichever is latest;
//! - on a witness, stands only after `witness_silence` (several leases) and a random point
//!   in the election timeout's spread: the only gateway left may have a shorter log and
//!   need a witness to lead first, but a witness must never slow a gateway's election, and
//!   with three witnesses (five voters) they must not all stand in one instant.
//!
//! Safety does not rest on these timers: a follower refuses to vote for another candidate
//! for the leader lease after each AppendEntries it accepts (openraft's own, its
//! `election_timeout_max`, set to the configured `election_timeout` minimum, and the longer
//! one a leader may announce, `consensus::lease`), and does not stand inside it either
//! (below); an attempt made before that is refused (locally, or by the other voters'
//! Pre-Vote). The timers only decide how soon after the lease an election starts.
//!
//! Since the heartbeats are paced here, openraft's own `heartbeat_interval` is set apart
//! (`raft_heartbeat_ms`): openraft uses it as the deadline of every AppendEntries call,
//! and at 50 ms a 20 ms link delay each way made every heartbeat time out (lab, NFQUEUE
//! delay line), so no leader ever kept a quorum acknowledgement.
//!
//! A leadership transfer is a message, not a timer: openraft's transfer target elects at
//! once, whatever `enable_elect` says. When the task ends (shutdown), openraft's tick is
//! switched on for the hand-over on the way out; its elections stay off.

use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver as _;
use openraft::metrics::RaftServerMetrics;
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Raft;
use super::network::RaftService;
use super::types::{NodeId, TypeConfig};
use crate::config::Config;
use crate::config::{Role, Timers};
use crate::platform::timer_grid::{BLOCK, Grid};

/// What to do now and when to look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Send a heartbeat now (only on the leader).
    pub heartbeat: bool,
    /// Stand for election now (never on the leader).
    pub elect: bool,
    /// Look again at this time at the latest (earlier if the Raft metrics change).
    pub wake_at: Instant,
}

/// The timers that matter here, from the node's `[timers]` and role.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub heartbeat: Duration,
    /// A gateway stands for election after a random silence in `stand_min..=stand_max`
    /// (the configured `election_timeout`; `stand_min` is also the leader lease).
    pub stand_min: Duration,
    pub stand_max: Duration,
    /// The silence after which a witness stands (plus its random point in
    /// `stand_min..=stand_max`'s spread); `None` on a gateway.
    pub witness_silence: Option<Duration>,
    /// Where the leader's beats and the election deadlines go, so that each beat costs one
    /// wake-up and a heartbeat moving a follower's deadline on costs none
    /// (`crate::platform::timer_grid`).
    pub grid: Grid,
}

impl Pace {
    /// This node's pace, from its configured timers and role.
    pub fn of(config: &Config) -> Pace {
        Pace::for_timers(&config.timers, config.node.role)
    }

    /// The pace for `timers` (a reload's) on a node of `role`.
    pub fn for_timers(timers: &Timers, role: Role) -> Pace {
        Pace {
            heartbeat: timers.heartbeat,
            stand_min: timers.election_timeout_min,
            stand_max: timers.election_timeout_max,
            // The only gateway left may have a shorter log and need the witness to lead
            // first; otherwise the witness must never slow a gateway's election.
            witness_silence: (role == Role::Witness).then_some(timers.leader_lease() * 4),
            grid: crate::platform::timer_grid::current(),
        }
    }

    /// When the beat after one sent at `now` is due: after `heartbeat`, or, if the heartbeat
    /// is a whole number of grid blocks, on the last grid boundary before that. A beat that
    /// crosses into the next block costs a wake-up at the boundary as well; on the boundary
    /// it costs one. Only the second beat of a leadership comes early (by less than a
    /// block); from then on each is exactly `heartbeat` after the last. Early is harmless;
    /// late is not.
    pub fn next_beat(&self, now: Instant) -> Instant {
        let due = now + self.heartbeat;
        if !self.heartbeat.as_nanos().is_multiple_of(BLOCK.as_nanos()) {
            return due;
        }
        self.grid
            .last_boundary_in(due.checked_sub(BLOCK).unwrap_or(now), due)
            .filter(|beat| *beat > now)
            .unwrap_or(due)
    }

    /// When a node quiet since `since` stands for election; `draw` (in 0..1) picks a gateway's
    /// point in `stand_min..=stand_max`. The deadline goes on the last grid boundary at or
    /// before that point, but never before `stand_min`: a deadline that each heartbeat moves
    /// on then wakes nobody, and the randomness that keeps two candidates apart survives at
    /// the grid's 64 ms (two processes' grids have unrelated phases anyway).
    ///
    /// A witness first sits out its long silence, then draws its point in the same spread
    /// as a gateway. Several witnesses (five voters: two gateways, three witnesses) hear
    /// the same last heartbeat; standing at one fixed point after it, they would stand
    /// together, each vote for itself and leave no candidate a majority, and do it again
    /// after every failed round, for as long as no gateway can win.
    pub fn stand_at(&self, since: Instant, draw: f64) -> Instant {
        let earliest = since + self.witness_silence.unwrap_or(self.stand_min);
        let spread = self.stand_max.saturating_sub(self.stand_min);
        let at = earliest + spread.mul_f64(draw.clamp(0.0, 1.0));
        self.grid
            .last_boundary_in(earliest.max(at.checked_sub(BLOCK).unwrap_or(at)), at)
            .unwrap_or(at)
    }
}

/// openraft's `heartbeat_interval`: twice the paced heartbeat, below openraft's
/// `election_timeout_min` (which openraft requires, see `raft_election_ms`). It sets
/// openraft's AppendEntries deadline (¾ of it is the soft deadline the mesh enforces).
pub fn raft_heartbeat_ms(heartbeat: Duration, leader_lease: Duration) -> u64 {
    let doubled = heartbeat.as_millis() as u64 * 2;
    let below = (leader_lease.as_millis() as u64).saturating_sub(2);
    doubled.min(below).max(1)
}

/// openraft's `election_timeout_min..max`. Its election timer never runs (no tick), so only
/// the maximum matters: the lease openraft itself keeps after each AppendEntries, the
/// configured lease at the group's start. havip's own rule (`consensus::lease`) adds the
/// lease a leader announces on top, which a reload can lengthen; openraft's is also the
/// age of the quorum's acknowledgement up to which it accepts writes on the leader, so it
/// must not be shorter than the hold lease. The minimum only has to lie between openraft's
/// heartbeat and the maximum.
pub fn raft_election_ms(leader_lease: Duration) -> (u64, u64) {
    let max = (leader_lease.as_millis() as u64).max(3);
    (max - 1, max)
}

/// The decision, without I/O. `next_heartbeat`: when the leader's next heartbeat is due;
/// `stand_at`: when this node stands for election if it is not the leader.
pub fn plan(
    now: Instant,
    is_leader: bool,
    next_heartbeat: Instant,
    stand_at: Instant,
    pace: &Pace,
) -> Plan {
    if is_leader {
        let heartbeat = now >= next_heartbeat;
        return Plan {
            heartbeat,
            elect: false,
            wake_at: if heartbeat {
                pace.next_beat(now)
            } else {
                next_heartbeat
            },
        };
    }
    Plan {
        heartbeat: false,
        elect: now >= stand_at,
        wake_at: stand_at,
    }
}

/// How many refused Pre-Votes are tried again after one heartbeat, per silence.
pub const QUICK_RETRIES: u32 = 3;

/// When to try again after the `attempts`-th attempt of a silence, made at `attempt` in
/// `term_then`, if sooner than a whole election timeout (at most `QUICK_RETRIES` times). A Pre-Vote that was refused leaves the node a follower in the
/// same term: refused by the node itself (its lease for the old leader had a few ms to
/// run) or by a voter that heard the old leader's last heartbeat when this node did not.
/// Either lease runs out within one lease of the last heartbeat, so trying again after a
/// heartbeat (a few times) finds it over, where a new random election timeout would
/// double the failover. A real election that did not end (the term moved on) waits a
/// whole timeout, as Raft's candidates do, so two candidates do not keep colliding.
pub fn quick_retry(
    pace: &Pace,
    attempts: u32,
    attempt: Instant,
    term_then: u64,
    state_now: ServerState,
    term_now: u64,
) -> Option<Instant> {
    let refused = state_now == ServerState::Follower && term_now == term_then;
    (refused && attempts <= QUICK_RETRIES).then(|| attempt + pace.heartbeat)
}

/// What one pass of the loop reads from the server metrics.
struct Seen {
    /// This node leads (openraft says so and names it).
    is_leader: bool,
    term: u64,
    state: ServerState,
    /// openraft drops an election attempt by a node that is not a voter.
    is_voter: bool,
}

impl Seen {
    fn of(m: &RaftServerMetrics<TypeConfig>, self_id: NodeId) -> Self {
        Seen {
            is_leader: m.state == ServerState::Leader && m.current_leader == Some(self_id),
            term: m.vote.leader_id().term,
            state: m.state,
            is_voter: m
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == self_id),
        }
    }
}

/// The silence a node that does not lead is counting towards standing for election.
struct Silence {
    /// Quiet since: start-up, this node's last election attempt, or the end of its own
    /// leadership. A heard leader's AppendEntries count too (`stand_at`).
    since: Instant,
    /// The silence the random draw was made for, and the draw.
    draw_for: Option<Instant>,
    draw: f64,
    /// Attempts since a leader was last heard: the first one of a silence is logged at info.
    attempts: u32,
    /// The last attempt (time, term) while quick retries are left (`quick_retry`).
    last_attempt: Option<(Instant, u64)>,
}

impl Silence {
    fn new(now: Instant) -> Self {
        Silence {
            since: now,
            draw_for: None,
            draw: 0.0,
            attempts: 0,
            last_attempt: None,
        }
    }

    /// When the silence started, counting the last AppendEntries `heard`, and when to stand
    /// for election: a fresh random point in the election timeout for each new silence,
    /// or sooner when a refused Pre-Vote is worth trying again.
    fn stand_at(&mut self, heard: Option<Instant>, pace: &Pace, seen: &Seen) -> (Instant, Instant) {
        let quiet_since = heard.map_or(self.since, |heard| heard.max(self.since));
        if self.draw_for != Some(quiet_since) {
            if quiet_since != self.since {
                // A leader was heard: a new silence starts.
                self.attempts = 0;
                self.last_attempt = None;
            }
            self.draw_for = Some(quiet_since);
            self.draw = rand::thread_rng().r#gen::<f64>();
        }
        let mut stand_at = pace.stand_at(quiet_since, self.draw);
        if let Some(sooner) = self.last_attempt.and_then(|(at, term_then)| {
            quick_retry(pace, self.attempts, at, term_then, seen.state, seen.term)
        }) {
            stand_at = stand_at.min(sooner);
        }
        (quiet_since, stand_at)
    }

    /// This node leads: when it stops, its silence starts then, with no attempts made.
    fn leading(&mut self, now: Instant) {
        self.since = now;
        self.attempts = 0;
        self.last_attempt = None;
    }

    /// An election attempt is made now in `term`; returns how many came before it in this
    /// silence.
    fn attempt(&mut self, now: Instant, term: u64) -> u32 {
        let before = self.attempts;
        self.attempts = self.attempts.saturating_add(1);
        self.since = now;
        self.last_attempt = Some((now, term));
        before
    }
}

/// Runs `plan` for one group until `shutdown`.
pub async fn run(
    group: String,
    self_id: NodeId,
    raft: Raft,
    service: RaftService,
    mut pace: Pace,
    role: Role,
    mut shutdown: watch::Receiver<bool>,
) {
    // The leader watches the server metrics, which change only with the state, the leader,
    // the vote or the membership: the full metrics are sent after every pass of openraft's
    // core (each acknowledgement), and the leader has nothing to do for those. A follower
    // watches the full metrics, which wake it with each heartbeat it accepts: then it
    // moves its election deadline on in a wake-up that happens anyway, where a timer of its
    // own would cost one more (measured: +0.13 % of a core per follower).
    let mut server = raft.server_metrics();
    let mut metrics = raft.metrics();
    let mut timers = service.timers();
    let mut next_heartbeat = Instant::now();
    let mut silence = Silence::new(Instant::now());
    loop {
        let seen = Seen::of(&server.borrow_watched(), self_id);
        let now = Instant::now();
        let (quiet_since, stand_at) = silence.stand_at(service.last_append(&group), &pace, &seen);
        // Never inside the lease this node granted its leader, however long that leader
        // announced it (`consensus::lease`): this node's own vote would break it.
        let stand_at = service
            .granted_until(&group)
            .map_or(stand_at, |granted| stand_at.max(granted));
        let step = plan(now, seen.is_leader, next_heartbeat, stand_at, &pace);
        if seen.is_leader {
            silence.leading(now);
        }
        if step.heartbeat {
            next_heartbeat = step.wake_at;
            if let Err(e) = raft.trigger().heartbeat().await {
                tracing::warn!(group = %group, "cannot send a heartbeat: {e}");
            }
        } else if !seen.is_leader {
            // A new leadership starts with its first heartbeat due at once.
            next_heartbeat = now;
        }
        if step.elect {
            stand_if_voter(&group, &raft, &mut silence, &seen, now, quiet_since).await;
            continue;
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep_until(step.wake_at) => {}
            changed = server.changed() => if changed.is_err() { break },
            changed = metrics.changed(), if !seen.is_leader => if changed.is_err() { break },
            changed = timers.changed() => match changed {
                Ok(()) => {
                    let now_timers = timers.borrow_and_update().timers;
                    pace = Pace { grid: pace.grid, ..Pace::for_timers(&now_timers, role) };
                    // A leader beats at once: the last beat's acknowledgement may be worth
                    // only the shorter hold lease now (`hold::LeaseChange`), and the next
                    // one at the old pace could come after it ran out.
                    next_heartbeat = Instant::now();
                }
                Err(_) => break,
            },
        }
        if *shutdown.borrow() {
            break;
        }
    }
    // On the way out the group hands leadership over (`Observation::Exiting` in `group::machine`):
    // openraft's own tick keeps the heartbeats going meanwhile (every openraft heartbeat
    // interval, inside the lease), so no follower stands for election before the transfer.
    raft.runtime_config().tick(true);
}

/// Stands for election now, or, on a node that is not a voter (yet), which openraft would
/// drop the attempt of, starts a new silence instead.
async fn stand_if_voter(
    group: &str,
    raft: &Raft,
    silence: &mut Silence,
    seen: &Seen,
    now: Instant,
    quiet_since: Instant,
) {
    if seen.is_voter {
        let silent_for = now.saturating_duration_since(quiet_since);
        stand(
            group,
            raft,
            silence.attempt(now, seen.term),
            seen.term,
            silent_for,
        )
        .await;
    } else {
        // Not a voter (yet): openraft would drop the attempt. Look again after a
        // timeout, or when the membership changes.
        silence.since = now;
    }
}

/// Stands for election (a Pre-Vote first), after `attempts` earlier attempts in a silence
/// of `silent_for`: the first of a silence is logged at info, the retries at debug.
async fn stand(group: &str, raft: &Raft, attempts: u32, term: u64, silent_for: Duration) {
    if attempts == 0 {
        tracing::info!(group = %group, term, "no leader heard for {} ms: standing for election", silent_for.as_millis());
    } else {
        tracing::debug!(group = %group, term, attempts, "no leader yet: standing for election again");
    }
    if let Err(e) = raft.trigger().elect(true).await {
        tracing::warn!(group = %group, "cannot stand for election: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn pace(grid: Grid) -> Pace {
        Pace {
            heartbeat: 96 * MS,
            stand_min: 300 * MS,
            stand_max: 400 * MS,
            witness_silence: None,
            grid,
        }
    }

    #[test]
    fn the_leader_heartbeats_on_time_and_never_stands() {
        let t0 = Instant::now();
        let p = pace(Grid::default());
        let due = plan(t0, true, t0, t0, &p);
        assert_eq!(
            due,
            Plan {
                heartbeat: true,
                elect: false,
                wake_at: t0 + 96 * MS
            }
        );
        // Woken early (the server metrics changed): no extra heartbeat.
        let early = plan(t0 + 20 * MS, true, t0 + 96 * MS, t0, &p);
        assert_eq!(
            early,
            Plan {
                heartbeat: false,
                elect: false,
                wake_at: t0 + 96 * MS
            }
        );
    }

    #[test]
    fn a_follower_stands_only_at_its_deadline() {
        let t0 = Instant::now();
        let p = pace(Grid::default());
        let stand_at = t0 + 350 * MS;
        let waiting = plan(t0 + 100 * MS, false, t0, stand_at, &p);
        assert_eq!(
            waiting,
            Plan {
                heartbeat: false,
                elect: false,
                wake_at: stand_at
            }
        );
        assert!(plan(stand_at, false, t0, stand_at, &p).elect);
    }

    #[test]
    fn a_gateway_stands_within_its_election_timeout_and_never_inside_the_lease() {
        let o = Instant::now();
        for grid in [Grid::default(), Grid::with_origin(o)] {
            let p = pace(grid);
            for since_ms in 0..130 {
                let since = o + since_ms * MS;
                for draw in [0.0, 0.1, 0.37, 0.5, 0.9, 1.0] {
                    let at = p.stand_at(since, draw);
                    assert!(
                        at >= since + 300 * MS,
                        "since {since_ms} draw {draw}: inside the lease"
                    );
                    assert!(
                        at <= since + 400 * MS,
                        "since {since_ms} draw {draw}: past the maximum"
                    );
                }
            }
        }
        // Without a grid the draw is used as it is; with one, the deadline moves back to a
        // boundary no more than a block earlier.
        let exact = pace(Grid::default());
        assert_eq!(exact.stand_at(o, 0.5), o + 350 * MS);
        let gridded = pace(Grid::with_origin(o));
        assert_eq!(gridded.stand_at(o, 0.5), o + 320 * MS);
        assert_eq!(
            gridded.stand_at(o + 30 * MS, 0.0),
            o + 330 * MS,
            "no boundary in reach"
        );
    }

    #[test]
    fn only_a_refused_pre_vote_is_tried_again_soon() {
        let t0 = Instant::now();
        let p = pace(Grid::default());
        assert_eq!(
            quick_retry(&p, 1, t0, 3, ServerState::Follower, 3),
            Some(t0 + 96 * MS),
            "refused: still a follower in the same term"
        );
        assert_eq!(
            quick_retry(&p, 1, t0, 3, ServerState::Candidate, 4),
            None,
            "a real election runs"
        );
        assert_eq!(
            quick_retry(&p, 1, t0, 3, ServerState::Follower, 4),
            None,
            "the term moved on"
        );
        assert_eq!(quick_retry(&p, 1, t0, 3, ServerState::Leader, 4), None);
        assert_eq!(
            quick_retry(&p, QUICK_RETRIES + 1, t0, 3, ServerState::Follower, 3),
            None,
            "quick retries used up"
        );
    }

    #[test]
    fn the_witness_waits_its_long_silence() {
        let o = Instant::now();
        let witness = Pace {
            witness_silence: Some(1200 * MS),
            ..pace(Grid::with_origin(o))
        };
        for since_ms in 0..130 {
            let since = o + since_ms * MS;
            for draw in [0.0, 0.1, 0.37, 0.5, 0.9, 1.0] {
                let at = witness.stand_at(since, draw);
                assert!(
                    at >= since + 1200 * MS,
                    "since {since_ms} draw {draw}: too early"
                );
                assert!(
                    at <= since + 1300 * MS,
                    "since {since_ms} draw {draw}: too late"
                );
            }
        }
    }

    /// Three witnesses that heard the same last heartbeat must not stand in one instant:
    /// each would vote for itself and no candidate would get a majority, round after round.
    #[test]
    fn witnesses_that_heard_the_same_heartbeat_stand_apart() {
        let o = Instant::now();
        let exact = Pace {
            witness_silence: Some(1200 * MS),
            ..pace(Grid::default())
        };
        assert_eq!(exact.stand_at(o, 0.0), o + 1200 * MS);
        assert_eq!(exact.stand_at(o, 0.5), o + 1250 * MS);
        assert_eq!(exact.stand_at(o, 1.0), o + 1300 * MS);
        let gridded = Pace {
            witness_silence: Some(1200 * MS),
            ..pace(Grid::with_origin(o))
        };
        let (low, high) = (
            gridded.stand_at(o + 10 * MS, 0.0),
            gridded.stand_at(o + 10 * MS, 1.0),
        );
        assert_eq!(low, o + 1210 * MS, "no boundary in reach");
        assert_eq!(high, o + 1280 * MS);
    }

    #[test]
    fn openraft_gets_a_longer_deadline_than_the_paced_heartbeat() {
        assert_eq!(raft_heartbeat_ms(96 * MS, 300 * MS), 192);
        assert_eq!(raft_heartbeat_ms(50 * MS, 80 * MS), 78);
        assert_eq!(raft_heartbeat_ms(10 * MS, 30 * MS), 20);
        for (hb, lease) in [(96, 300), (10, 30), (1, 3), (50, 80)] {
            let raft_hb = raft_heartbeat_ms(hb * MS, lease * MS);
            let (min, max) = raft_election_ms(lease * MS);
            assert!(
                raft_hb < min && min < max,
                "openraft refuses hb {raft_hb}, election {min}..{max}"
            );
            assert_eq!(max, u64::from(lease), "the lease is openraft's maximum");
        }
    }

    #[test]
    fn beats_of_a_whole_block_go_on_the_grid() {
        let o = Instant::now();
        let p = Pace {
            heartbeat: 64 * MS,
            ..pace(Grid::with_origin(o))
        };
        // The first beat of a leadership went out at an odd time: the next comes early, on
        // the boundary, and from there each is one block on (woken a little late or not).
        assert_eq!(p.next_beat(o + 10 * MS), o + 64 * MS);
        assert_eq!(p.next_beat(o + 64 * MS + MS / 2), o + 128 * MS);
        assert_eq!(p.next_beat(o + 128 * MS), o + 192 * MS);
        let double = Pace {
            heartbeat: 128 * MS,
            ..p
        };
        assert_eq!(double.next_beat(o + 64 * MS + MS), o + 192 * MS);
        // Other heartbeats keep their period.
        let other = pace(Grid::with_origin(o));
        assert_eq!(other.next_beat(o + 10 * MS), o + 106 * MS);
        assert_eq!(other.next_beat(o + 106 * MS), o + 202 * MS);
    }
}
