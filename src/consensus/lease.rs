//! The leader lease as the followers grant it, so that `[timers]` can change one node at
//! a time (README "Design", "Timers rolled live"). Pure: the caller measures time.
//!
//! Every AppendEntries and snapshot a leader sends carries the leader lease it holds under
//! (`RaftEnvelope.lease_ms`). A node that accepts one refuses every other candidate's Vote
//! and Pre-Vote until the longer of that lease and its own has run from when it accepted
//! it, and does not stand for election itself before then (`ticks`); a leader refuses them
//! while a quorum acknowledged it within its own lease. The master's hold lease comes from
//! the lease it announces (`hold::hold_lease_for` for the heartbeats sent before a change),
//! so every follower in the quorum that lets it hold grants at least that long, whatever
//! its own file says. openraft's own lease (its `election_timeout_max`, the configured lease
//! when the group started, `ticks::raft_election_ms`) still applies beside it: this rule
//! only ever refuses more, never less.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Timers;
use crate::hold::LeaseChange;

/// The longest lease a follower grants on a leader's word: a leader announcing more (a
/// peer's bug) cannot keep the cluster from electing for longer than this. The config
/// refuses a longer lease (`election_timeout`), so no master holds under one.
pub const MAX_ANNOUNCED: Duration = Duration::from_secs(60);

/// This node's timers as a reload leaves them, with the last change of its leader lease
/// (for the hold leases of heartbeats sent before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTimers {
    pub timers: Timers,
    pub change: Option<LeaseChange>,
}

impl NodeTimers {
    pub fn new(timers: Timers) -> Self {
        NodeTimers {
            timers,
            change: None,
        }
    }

    /// The leader lease this node announces and grants on its own account.
    pub fn lease(&self) -> Duration {
        self.timers.leader_lease()
    }

    /// The hold lease for the current leader lease.
    pub fn hold_lease(&self) -> Duration {
        crate::hold::hold_lease(self.lease(), crate::hold::TICK)
    }

    /// `timers` from a reload at `now`. A new leader lease records the change; the same
    /// one keeps the last change as it was.
    pub fn reloaded(&self, timers: Timers, now: Instant) -> Self {
        let next = NodeTimers {
            timers,
            change: self.change,
        };
        if next.lease() == self.lease() {
            return next;
        }
        NodeTimers {
            change: Some(LeaseChange::after(self.hold_lease(), self.change, now)),
            ..next
        }
    }
}

/// Until when a node that accepted a leader's heartbeat at `heard` refuses other
/// candidates: the longer of its own lease and the one the leader announced (bounded by
/// `MAX_ANNOUNCED`; none from a peer of an older version).
pub fn granted_until(heard: Instant, own: Duration, announced: Option<Duration>) -> Instant {
    heard + own.max(announced.unwrap_or_default().min(MAX_ANNOUNCED))
}

/// Why a Vote or Pre-Vote is refused for a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A heartbeat is being taken: openraft may have renewed its lease already, and the
    /// lease it announced is not recorded yet.
    Appending,
    /// This node granted its leader a lease that runs for `left` more.
    Granted { left: Duration },
    /// This node leads and a quorum acknowledged it `age` ago, within its lease.
    Leading { age: Duration },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Appending => f.write_str("a heartbeat from the leader is being taken"),
            Refusal::Granted { left } => write!(
                f,
                "the lease granted to the leader runs {} ms more",
                left.as_millis()
            ),
            Refusal::Leading { age } => write!(
                f,
                "this node leads, acknowledged by a quorum {} ms ago",
                age.as_millis()
            ),
        }
    }
}

/// Whether a Vote or Pre-Vote must be refused at `now`. A leadership transfer is the
/// leader's own hand-over (it stopped holding first), so no lease stands in its way, as
/// in openraft. `appending`: a heartbeat or snapshot is being taken (its lease, which
/// openraft may already have renewed its own for, is not recorded yet). `leading_ack_age`:
/// when this node leads, how old its quorum's acknowledgement is (`None` when it does not
/// lead or none came yet).
pub fn refusal(
    now: Instant,
    transfer: bool,
    appending: bool,
    granted_until: Option<Instant>,
    leading_ack_age: Option<Duration>,
    own: Duration,
) -> Option<Refusal> {
    if transfer {
        return None;
    }
    if appending {
        return Some(Refusal::Appending);
    }
    if let Some(until) = granted_until.filter(|until| now < *until) {
        return Some(Refusal::Granted { left: until - now });
    }
    leading_ack_age
        .filter(|age| *age < own)
        .map(|age| Refusal::Leading { age })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn timers(lease_ms: u32) -> Timers {
        Timers {
            heartbeat: 100 * MS,
            election_timeout_min: lease_ms * MS,
            election_timeout_max: (lease_ms + 100) * MS,
        }
    }

    #[test]
    fn a_follower_grants_the_longer_of_its_own_lease_and_the_announced_one() {
        let heard = Instant::now();
        assert_eq!(granted_until(heard, 400 * MS, None), heard + 400 * MS);
        assert_eq!(
            granted_until(heard, 400 * MS, Some(800 * MS)),
            heard + 800 * MS
        );
        assert_eq!(
            granted_until(heard, 800 * MS, Some(400 * MS)),
            heard + 800 * MS
        );
        // A peer's absurd lease is bounded.
        assert_eq!(
            granted_until(heard, 400 * MS, Some(Duration::from_secs(86_400))),
            heard + MAX_ANNOUNCED
        );
    }

    #[test]
    fn votes_are_refused_within_a_granted_lease_or_while_leading_under_a_quorum() {
        let now = Instant::now();
        let own = 400 * MS;
        assert_eq!(
            refusal(now, false, false, Some(now + 30 * MS), None, own),
            Some(Refusal::Granted { left: 30 * MS })
        );
        assert_eq!(refusal(now, false, false, Some(now), None, own), None);
        assert_eq!(refusal(now, false, false, None, None, own), None);
        assert_eq!(
            refusal(now, false, false, None, Some(399 * MS), own),
            Some(Refusal::Leading { age: 399 * MS })
        );
        assert_eq!(refusal(now, false, false, None, Some(400 * MS), own), None);
        // The leader's own hand-over passes both.
        // While a heartbeat is being taken, nothing passes but a hand-over.
        assert_eq!(
            refusal(now, false, true, None, None, own),
            Some(Refusal::Appending)
        );
        // The leader's own hand-over passes them all.
        assert_eq!(
            refusal(now, true, true, Some(now + 30 * MS), Some(MS), own),
            None
        );
    }

    #[test]
    fn a_reload_records_a_change_of_the_lease_and_only_that() {
        let start = Instant::now();
        let node = NodeTimers::new(timers(400));
        assert_eq!(node.hold_lease(), 320 * MS);
        // Another heartbeat, same lease: no change recorded.
        let same = node.reloaded(
            Timers {
                heartbeat: 50 * MS,
                ..timers(400)
            },
            start,
        );
        assert_eq!(same.change, None);
        assert_eq!(same.timers.heartbeat, 50 * MS);
        let longer = node.reloaded(timers(800), start);
        assert_eq!(
            longer.change,
            Some(LeaseChange {
                hold_before: 320 * MS,
                at: start
            })
        );
        assert_eq!(longer.hold_lease(), 640 * MS);
        // Back again later: the shortest lease before the change is kept.
        let later = start + 10 * MS;
        let back = longer.reloaded(timers(400), later);
        assert_eq!(
            back.change,
            Some(LeaseChange {
                hold_before: 320 * MS,
                at: later
            })
        );
    }
}
