//! The hold rule (DESIGN.md "The hold rule"): whether this node may have a group's VIPs
//! on its interfaces right now. Pure: the caller measures every duration on its own
//! monotonic clock and passes it in. This is the module the split-brain argument rests
//! on, so it must stay small enough to read in one sitting and must never hold "just in
//! case": every unknown input means release.

use std::fmt;
use std::time::Duration;

/// The inputs of the rule, for one group at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldInputs {
    /// This node is the group's Raft leader for the current term.
    pub is_leader: bool,
    /// This node's role is `gateway` (a witness never holds).
    pub is_gateway: bool,
    /// The policy says the leader may hold (healthy, link up, not in maintenance, or the
    /// all-unhealthy `keep` rule).
    pub eligible: bool,
    /// Time since a quorum last acknowledged this leader (measured from when the
    /// acknowledged heartbeat was *sent*); `None` when no quorum has acknowledged it yet.
    pub quorum_ack_age: Option<Duration>,
    /// This node has started handing leadership away in this term. The hand-over resets
    /// the followers' leader lease, so the old leader's acknowledgements no longer prove
    /// that nobody else can be elected.
    pub handing_over: bool,
}

/// Why the node does not hold; each is one phrase for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHolding {
    NotLeader,
    Witness,
    Ineligible,
    NoQuorumAck,
    LeaseExpired,
    HandingOver,
}

impl fmt::Display for NotHolding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotHolding::NotLeader => "not the leader",
            NotHolding::Witness => "a witness never holds",
            NotHolding::Ineligible => "not eligible",
            NotHolding::NoQuorumAck => "no quorum acknowledgement yet",
            NotHolding::LeaseExpired => "quorum acknowledgement older than the hold lease",
            NotHolding::HandingOver => "handing leadership over",
        })
    }
}

/// Applies the three conditions of the hold rule. The first failing one is reported.
pub fn may_hold(inputs: &HoldInputs, lease: Duration) -> Result<(), NotHolding> {
    if !inputs.is_leader {
        return Err(NotHolding::NotLeader);
    }
    if !inputs.is_gateway {
        return Err(NotHolding::Witness);
    }
    if inputs.handing_over {
        return Err(NotHolding::HandingOver);
    }
    if !inputs.eligible {
        return Err(NotHolding::Ineligible);
    }
    match inputs.quorum_ack_age {
        None => Err(NotHolding::NoQuorumAck),
        Some(age) if age >= lease => Err(NotHolding::LeaseExpired),
        Some(_) => Ok(()),
    }
}

/// The timer granularity the hold lease's margin allows for (two of these): the group loop
/// wakes exactly at the lease's end while holding, and a timer may fire this late.
pub const TICK: Duration = Duration::from_millis(10);

/// How long before the hold lease ends the hold loop starts removing the VIPs when no
/// fresh acknowledgement came: the lease is the deadline by which they must be *gone*
/// (`crate::lateness` counts every removal completed after it), and a removal takes a
/// netlink round trip and the loop's own wake-up, each well under a tick when the machine
/// is not starved. Measured before this existed: a removal started at the lease's end on
/// a loaded machine completed 16 ms after it.
pub const RELEASE_AHEAD: Duration = TICK;

/// The age of the quorum acknowledgement at which the hold loop lets go: the hold lease
/// less `RELEASE_AHEAD`. What `may_hold` is given as its lease.
pub fn release_at(hold_lease: Duration) -> Duration {
    hold_lease.saturating_sub(RELEASE_AHEAD)
}

/// The hold lease for a given Raft leader lease and hold-loop tick.
///
/// openraft's followers refuse to vote for anyone else for the leader lease (openraft's
/// `election_timeout_max`, set to the configured minimum election timeout) after they
/// *receive* a heartbeat, and the leader's acknowledgement time is when it *sent*
/// that heartbeat, so a new leader cannot exist before `ack + leader_lease`. The
/// VIP must be gone before then: the margin covers one hold-loop tick (the check is
/// periodic), the time to remove the address, and clock-rate differences between hosts
/// (monotonic clocks drift by far less than 1 %, we allow 20 %).
pub fn hold_lease(leader_lease: Duration, tick: Duration) -> Duration {
    let margin = (leader_lease / 5).max(tick * 2);
    leader_lease.saturating_sub(margin)
}

/// The shortest leader lease whose hold lease is at least `hold` (the inverse of
/// `hold_lease`, for suggesting timers that fit).
pub fn leader_lease_for(hold: Duration, tick: Duration) -> Duration {
    (hold + tick * 2).max(hold * 5 / 4)
}

/// A change of this node's leader lease by a reload (rolling `[timers]`, README "Design",
/// "Timers rolled live"). A follower refuses other candidates for the lease the leader
/// announced in the heartbeat it accepted (`consensus::lease`), so an acknowledgement of a
/// heartbeat sent before the change is worth only the lease it carried: until `at`, the
/// shorter of the two hold leases applies; from `at` on, the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseChange {
    /// The hold lease before the change (and before any earlier change still in reach:
    /// see `LeaseChange::after`).
    pub hold_before: Duration,
    /// When the new lease began to be announced.
    pub at: tokio::time::Instant,
}

impl LeaseChange {
    /// The change from `hold` (with `previous`, an earlier change) to another lease, made
    /// at `at`. Keeping the shortest lease seen before `at` is conservative: only
    /// acknowledgements older than `at` are judged by it, and a heartbeat after the change
    /// replaces them within one beat.
    pub fn after(hold: Duration, previous: Option<LeaseChange>, at: tokio::time::Instant) -> Self {
        LeaseChange {
            hold_before: previous.map_or(hold, |p| p.hold_before.min(hold)),
            at,
        }
    }
}

/// The hold lease an acknowledgement of a heartbeat sent at `sent` is worth: `hold`, or
/// the shorter lease before a change made after `sent`.
pub fn hold_lease_for(
    hold: Duration,
    change: Option<LeaseChange>,
    sent: tokio::time::Instant,
) -> Duration {
    match change {
        Some(c) if sent < c.at => hold.min(c.hold_before),
        _ => hold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(240);

    fn holding() -> HoldInputs {
        HoldInputs {
            is_leader: true,
            is_gateway: true,
            eligible: true,
            quorum_ack_age: Some(Duration::from_millis(40)),
            handing_over: false,
        }
    }

    #[test]
    fn every_condition_is_needed() {
        let table: [(&str, HoldInputs, Result<(), NotHolding>); 8] = [
            ("all hold", holding(), Ok(())),
            (
                "follower",
                HoldInputs {
                    is_leader: false,
                    ..holding()
                },
                Err(NotHolding::NotLeader),
            ),
            (
                "witness leader",
                HoldInputs {
                    is_gateway: false,
                    ..holding()
                },
                Err(NotHolding::Witness),
            ),
            (
                "ineligible",
                HoldInputs {
                    eligible: false,
                    ..holding()
                },
                Err(NotHolding::Ineligible),
            ),
            (
                "never acked",
                HoldInputs {
                    quorum_ack_age: None,
                    ..holding()
                },
                Err(NotHolding::NoQuorumAck),
            ),
            (
                "ack at the lease",
                HoldInputs {
                    quorum_ack_age: Some(LEASE),
                    ..holding()
                },
                Err(NotHolding::LeaseExpired),
            ),
            (
                "ack just inside",
                HoldInputs {
                    quorum_ack_age: Some(LEASE - Duration::from_millis(1)),
                    ..holding()
                },
                Ok(()),
            ),
            (
                "handing over",
                HoldInputs {
                    handing_over: true,
                    ..holding()
                },
                Err(NotHolding::HandingOver),
            ),
        ];
        for (name, inputs, expected) in table {
            assert_eq!(may_hold(&inputs, LEASE), expected, "{name}");
        }
    }

    #[test]
    fn the_loop_lets_go_one_release_ahead_of_the_hold_lease() {
        let hold = hold_lease(Duration::from_millis(400), TICK);
        assert_eq!(release_at(hold), Duration::from_millis(310));
        assert_eq!(release_at(Duration::from_millis(5)), Duration::ZERO);
        let at = |ms| HoldInputs {
            quorum_ack_age: Some(Duration::from_millis(ms)),
            ..holding()
        };
        assert_eq!(may_hold(&at(309), release_at(hold)), Ok(()));
        assert_eq!(
            may_hold(&at(310), release_at(hold)),
            Err(NotHolding::LeaseExpired)
        );
    }

    #[test]
    fn leader_lease_for_is_the_shortest_lease_that_leaves_the_hold() {
        let tick = Duration::from_millis(10);
        for hold_ms in [1u64, 10, 20, 40, 79, 80, 81, 256, 320] {
            let hold = Duration::from_millis(hold_ms);
            let lease = leader_lease_for(hold, tick);
            assert!(
                hold_lease(lease, tick) >= hold,
                "hold {hold_ms}: {lease:?} too short"
            );
            let shorter = lease - Duration::from_millis(1);
            assert!(
                hold_lease(shorter, tick) < hold,
                "hold {hold_ms}: {lease:?} not the shortest"
            );
        }
    }

    #[test]
    fn hold_lease_is_strictly_shorter_than_the_leader_lease() {
        for (lease_ms, tick_ms) in [
            (300, 10),
            (100, 10),
            (30, 10),
            (1000, 10),
            (10, 10),
            (0, 10),
        ] {
            let leader = Duration::from_millis(lease_ms);
            let hold = hold_lease(leader, Duration::from_millis(tick_ms));
            assert!(
                hold < leader || leader.is_zero(),
                "{lease_ms}/{tick_ms}: {hold:?}"
            );
            assert!(leader - hold >= Duration::from_millis(2 * tick_ms).min(leader));
        }
        assert_eq!(
            hold_lease(Duration::from_millis(300), Duration::from_millis(10)),
            Duration::from_millis(240)
        );
    }

    #[test]
    fn an_acknowledgement_from_before_a_lease_change_is_worth_the_shorter_lease() {
        let at = tokio::time::Instant::now();
        let before = at - Duration::from_millis(5);
        let after = at + Duration::from_millis(5);
        let (short, long) = (Duration::from_millis(320), Duration::from_millis(640));
        // Lengthened: the old heartbeats announced the short lease.
        let up = Some(LeaseChange::after(short, None, at));
        assert_eq!(hold_lease_for(long, up, before), short);
        assert_eq!(hold_lease_for(long, up, at), long);
        assert_eq!(hold_lease_for(long, up, after), long);
        // Shortened: the new lease is the shorter one for every acknowledgement.
        let down = Some(LeaseChange::after(long, None, at));
        assert_eq!(hold_lease_for(short, down, before), short);
        assert_eq!(hold_lease_for(short, down, after), short);
        assert_eq!(hold_lease_for(short, None, before), short);
    }

    #[test]
    fn a_second_change_keeps_the_shortest_lease_before_it() {
        let first = tokio::time::Instant::now();
        let second = first + Duration::from_millis(50);
        let ms = Duration::from_millis;
        // 320 -> 640 at `first`, then 640 -> 1280 at `second`: a heartbeat sent before
        // `first` announced 320, and it may still be the quorum's last acknowledgement.
        let one = LeaseChange::after(ms(320), None, first);
        let two = LeaseChange::after(ms(640), Some(one), second);
        assert_eq!(hold_lease_for(ms(1280), Some(two), first - ms(1)), ms(320));
        assert_eq!(hold_lease_for(ms(1280), Some(two), second), ms(1280));
    }
}
