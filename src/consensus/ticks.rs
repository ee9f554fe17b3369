//! When openraft's tick runs. openraft ticks every heartbeat × 13/64 (10 ms at a 50 ms
//! heartbeat) on every node, leader or not, and those wake-ups were most of an idle
//! node's CPU. A healthy group needs a timer only on its leader, for the heartbeats, and none
//! on a follower while its leader is heard. So, per group:
//! - the leader runs without openraft's tick and sends a heartbeat every `heartbeat` itself
//!   (`trigger().heartbeat()`, the same broadcast the tick would send);
//! - a follower runs without it while its leader's AppendEntries are accepted, and gets it
//!   back after `quiet` (¾ of `election_timeout_min`) of silence, or earlier on a boundary
//!   of tokio's timer grid (`crate::timer_grid`) if one lies between a late heartbeat and
//!   `election_timeout_min`. openraft's own election
//!   timer (the leader lease, which a transfer may disable, plus a random election timeout
//!   of at least `election_timeout_min`) cannot have run out by then, so elections start
//!   when they did with the tick always on, to within one tick. (That tick is 13/64 of
//!   openraft's heartbeat interval, which is twice ours, see below: 24 ms by default.)
//!
//! Since the heartbeats are paced here, openraft's own `heartbeat_interval` is set apart
//! (`raft_heartbeat_ms`): openraft also uses it as the deadline of every AppendEntries call,
//! and at 50 ms a 20 ms link delay each way made every heartbeat time out (lab, NFQUEUE
//! delay line), so no leader ever kept a quorum acknowledgement.
//!
//! A leadership transfer is a message, not a tick, so it is not delayed. When the task ends
//! (shutdown) the tick is switched back on and openraft is on its own again.

use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver as _;
use tokio::sync::watch;
use tokio::time::Instant;

use super::network::RaftService;
use super::types::{NodeId, Raft};
use crate::timer_grid::{BLOCK, Grid};

/// What to do now and when to look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Whether openraft's tick should run.
    pub tick: bool,
    /// Send a heartbeat now (only on the leader).
    pub heartbeat: bool,
    /// Look again at this time at the latest (earlier if the Raft metrics change).
    pub wake_at: Instant,
}

/// The timers that matter here, from the node's `[timers]`.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub heartbeat: Duration,
    /// Silence after which a follower needs the tick back.
    pub quiet: Duration,
    /// The latest a follower may take its tick back.
    pub election_timeout_min: Duration,
    /// Where the leader's beats and a follower's quiet timer go, so that each beat costs
    /// one wake-up and a heartbeat moving the quiet timer on costs none (`crate::timer_grid`).
    pub grid: Grid,
}

impl Pace {
    /// `quiet` is ¾ of `election_timeout_min`, or halfway from the heartbeat to it if
    /// that is later: always below the minimum (the tick must be back before openraft's
    /// timer can run out) and, where the timers allow, above the heartbeat (so a follower
    /// does not switch its tick on between two heartbeats).
    pub fn new(heartbeat: Duration, election_timeout_min: Duration, grid: Grid) -> Self {
        let three_quarters = election_timeout_min * 3 / 4;
        let halfway = (heartbeat + election_timeout_min) / 2;
        Self {
            heartbeat,
            quiet: three_quarters.max(halfway).min(election_timeout_min),
            election_timeout_min,
            grid,
        }
    }

    /// When the beat after one sent at `now` is due: after `heartbeat`, or, if the heartbeat
    /// is a whole number of grid blocks (the default), on the last grid boundary before
    /// that. A beat that crosses into the next block costs a wake-up at the boundary as
    /// well; on the boundary it costs one. Only the second beat of a leadership comes
    /// early (by less than a block); from then on each is exactly `heartbeat` after the
    /// last. Early is harmless; late is not.
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

    /// When a follower that last heard its leader at `heard` takes the tick back: on a grid
    /// boundary where one lies between a late heartbeat (an eighth of the heartbeat past
    /// due) and `election_timeout_min`, otherwise after `quiet`. At the defaults that
    /// window is 48 of the grid's 64 ms, so three followers in four (the phase of the
    /// leader's beats on a follower's grid is set when their processes start) never wake
    /// for this timer. Early is harmless (the tick goes off again with the next
    /// heartbeat); late is not.
    pub fn quiet_until(&self, heard: Instant) -> Instant {
        self.grid
            .last_boundary_in(
                heard + self.heartbeat + self.heartbeat / 8,
                heard + self.election_timeout_min,
            )
            .unwrap_or(heard + self.quiet)
    }
}

/// openraft's `heartbeat_interval`: twice the paced heartbeat, below `election_timeout_min`
/// (openraft requires it). It sets openraft's AppendEntries deadline (¾ of it is the soft
/// deadline the mesh enforces) and, while a follower ticks, the tick (13/64 of it).
pub fn raft_heartbeat_ms(heartbeat: Duration, election_timeout_min: Duration) -> u64 {
    let doubled = heartbeat.as_millis() as u64 * 2;
    let below_min = (election_timeout_min.as_millis() as u64).saturating_sub(1);
    doubled.min(below_min).max(1)
}

/// The decision, without I/O. `heard`: when this node last accepted its leader's
/// AppendEntries; `next_heartbeat`: when the leader's next heartbeat is due.
pub fn plan(
    pace: Pace,
    now: Instant,
    is_leader: bool,
    heard: Option<Instant>,
    next_heartbeat: Instant,
) -> Plan {
    if is_leader {
        let heartbeat = now >= next_heartbeat;
        return Plan {
            tick: false,
            heartbeat,
            wake_at: if heartbeat {
                pace.next_beat(now)
            } else {
                next_heartbeat
            },
        };
    }
    match heard.map(|h| pace.quiet_until(h)) {
        Some(quiet_until) if now < quiet_until => Plan {
            tick: false,
            heartbeat: false,
            wake_at: quiet_until,
        },
        // No leader heard lately: openraft's election timer runs on its tick. A leader
        // appearing is noticed through the metrics (this node elected) or at the next look
        // (another node elected: its AppendEntries have no event of their own here).
        _ => Plan {
            tick: true,
            heartbeat: false,
            wake_at: now + pace.heartbeat,
        },
    }
}

/// Runs `plan` for one group until `shutdown`.
pub async fn run(
    group: String,
    self_id: NodeId,
    raft: Raft,
    service: RaftService,
    pace: Pace,
    mut shutdown: watch::Receiver<bool>,
) {
    // The leader watches the server metrics, which change only with the state, the leader,
    // the vote or the membership: the full metrics are sent after every pass of openraft's
    // core (each acknowledgement), and the leader has nothing to do for those. A follower
    // watches the full metrics, which wake it with each heartbeat it accepts: then it
    // moves its quiet limit on in a wake-up that happens anyway, where a timer of its own
    // would cost one more (measured: +0.13 % of a core per follower).
    let mut server = raft.server_metrics();
    let mut metrics = raft.metrics();
    // openraft starts with its tick on.
    let mut ticking = true;
    let mut next_heartbeat = Instant::now();
    loop {
        let (is_leader, term) = {
            let m = server.borrow_watched();
            (
                m.state == ServerState::Leader && m.current_leader == Some(self_id),
                m.vote.leader_id().term,
            )
        };
        let now = Instant::now();
        let step = plan(
            pace,
            now,
            is_leader,
            service.last_append(&group),
            next_heartbeat,
        );
        if step.tick != ticking {
            ticking = step.tick;
            raft.runtime_config().tick(ticking);
            tracing::debug!(group = %group, term, tick = ticking, leader = is_leader, "openraft tick switched");
        }
        if step.heartbeat {
            next_heartbeat = step.wake_at;
            if let Err(e) = raft.trigger().heartbeat().await {
                tracing::warn!(group = %group, "cannot send a heartbeat: {e}");
            }
        } else if !is_leader {
            // A new leadership starts with its first heartbeat due at once.
            next_heartbeat = now;
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep_until(step.wake_at) => {}
            changed = server.changed() => if changed.is_err() { break },
            changed = metrics.changed(), if !is_leader => if changed.is_err() { break },
        }
        if *shutdown.borrow() {
            break;
        }
    }
    raft.runtime_config().tick(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn pace() -> Pace {
        Pace::new(50 * MS, 120 * MS, Grid::default())
    }

    #[test]
    fn the_leader_never_ticks_and_heartbeats_on_time() {
        let t0 = Instant::now();
        let due = plan(pace(), t0, true, None, t0);
        assert_eq!(
            due,
            Plan {
                tick: false,
                heartbeat: true,
                wake_at: t0 + 50 * MS
            }
        );
        // Woken early (an acknowledgement changed the metrics): no extra heartbeat.
        let early = plan(pace(), t0 + 20 * MS, true, None, t0 + 50 * MS);
        assert_eq!(
            early,
            Plan {
                tick: false,
                heartbeat: false,
                wake_at: t0 + 50 * MS
            }
        );
    }

    #[test]
    fn a_follower_ticks_only_once_its_leader_is_quiet() {
        let t0 = Instant::now();
        let heard = Some(t0);
        let fresh = plan(pace(), t0 + 40 * MS, false, heard, t0);
        assert!(!fresh.tick && !fresh.heartbeat);
        assert_eq!(fresh.wake_at, t0 + 90 * MS, "¾ of election_timeout_min");
        let quiet = plan(pace(), t0 + 90 * MS, false, heard, t0);
        assert!(quiet.tick && !quiet.heartbeat);
        assert_eq!(quiet.wake_at, t0 + 140 * MS);
    }

    #[test]
    fn a_node_that_never_heard_a_leader_ticks() {
        let t0 = Instant::now();
        assert!(plan(pace(), t0, false, None, t0).tick);
    }

    #[test]
    fn openraft_gets_a_longer_deadline_than_the_paced_heartbeat() {
        assert_eq!(raft_heartbeat_ms(50 * MS, 120 * MS), 100);
        assert_eq!(raft_heartbeat_ms(50 * MS, 80 * MS), 79);
        assert_eq!(raft_heartbeat_ms(10 * MS, 30 * MS), 20);
    }

    #[test]
    fn beats_of_a_whole_block_go_on_the_grid() {
        let o = Instant::now();
        let pace = Pace::new(64 * MS, 120 * MS, Grid::with_origin(o));
        // The first beat of a leadership went out at an odd time: the next comes early, on
        // the boundary, and from there each is one block on (woken a little late or not).
        assert_eq!(pace.next_beat(o + 10 * MS), o + 64 * MS);
        assert_eq!(pace.next_beat(o + 64 * MS + MS / 2), o + 128 * MS);
        assert_eq!(pace.next_beat(o + 128 * MS), o + 192 * MS);
        let double = Pace::new(128 * MS, 400 * MS, Grid::with_origin(o));
        assert_eq!(double.next_beat(o + 64 * MS + MS), o + 192 * MS);
    }

    #[test]
    fn other_heartbeats_keep_their_period() {
        let o = Instant::now();
        let pace = Pace::new(50 * MS, 120 * MS, Grid::with_origin(o));
        assert_eq!(pace.next_beat(o + 10 * MS), o + 60 * MS);
        assert_eq!(pace.next_beat(o + 60 * MS), o + 110 * MS);
    }

    #[test]
    fn a_followers_quiet_timer_goes_on_the_grid_but_never_past_the_election_timeout() {
        let o = Instant::now();
        let pace = Pace::new(64 * MS, 120 * MS, Grid::with_origin(o));
        // Heard at 10: a boundary (128) lies in 10 + 72..=120.
        assert_eq!(pace.quiet_until(o + 10 * MS), o + 128 * MS);
        // Heard at 60: none in 132..=180, so `quiet` (halfway to the minimum, 92 ms).
        assert_eq!(pace.quiet_until(o + 60 * MS), o + 152 * MS);
        for heard in 0..64 {
            let heard = o + heard * MS;
            let until = pace.quiet_until(heard);
            assert!(until > heard + 64 * MS && until <= heard + 120 * MS);
        }
    }

    #[test]
    fn the_quiet_limit_is_below_any_election_timeout() {
        // openraft elects after at least election_timeout_min of silence (the lease may be
        // disabled by a transfer): the tick must be back before that.
        for (hb, min) in [
            (50, 120),
            (10, 30),
            (20, 60),
            (200, 600),
            (100, 120),
            (119, 120),
        ] {
            let pace = Pace::new(hb * MS, min * MS, Grid::default());
            assert!(pace.quiet < min * MS, "hb {hb} min {min}");
            assert!(
                pace.quiet > hb * MS,
                "hb {hb} min {min}: ticks between heartbeats"
            );
        }
    }
}
