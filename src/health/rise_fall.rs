//! The rise/fall state machine of one check: turns consecutive probe results into Up and
//! Down transitions, so one lost packet does not move a VIP. Pure: it never probes, reads
//! a clock or logs; the scheduler feeds it results and acts on what it returns.
//!
//! Start state (a deliberate choice): a check has no state until its first probe, and
//! that first result decides it directly (pass: Up, fail: Down). HAProxy starts a server
//! Up and lets one failure take it Down; starting Down and waiting for `rise` passes
//! would keep a freshly started, perfectly fine gateway unhealthy for rise x interval,
//! and a peer would take the VIP for nothing. Deciding on the first result costs at most
//! one interval (the jittered first start), and after that `rise` and `fall` apply.
//! Until every check has a first result the monitor says so (`HealthReport::pending`),
//! so nobody proposes a node health built on missing data.

use serde::{Deserialize, Serialize};

/// Whether a check counts as passing, after rise/fall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CheckState {
    Up,
    Down,
}

impl CheckState {
    /// How the state reads in log lines and status: "UP", "DOWN".
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Up => "UP",
            CheckState::Down => "DOWN",
        }
    }
}

/// A change of state returned by [`RiseFall::observe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub to: CheckState,
    /// How many consecutive results led to it (1 for the first result).
    pub after: u32,
    /// The first result of the check, not a change from an earlier state.
    pub first: bool,
}

/// One check's rise/fall counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    state: Option<CheckState>,
    /// Consecutive results that disagree with `state`.
    streak: u32,
}

impl RiseFall {
    /// `rise` and `fall` below 1 are taken as 1 (the config already refuses them).
    pub fn new(rise: u32, fall: u32) -> Self {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            state: None,
            streak: 0,
        }
    }

    /// None until the first result.
    pub fn state(&self) -> Option<CheckState> {
        self.state
    }

    /// Feeds one probe result; returns the transition it caused, if any.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        let seen = if ok { CheckState::Up } else { CheckState::Down };
        let Some(state) = self.state else {
            self.state = Some(seen);
            self.streak = 0;
            return Some(Transition {
                to: seen,
                after: 1,
                first: true,
            });
        };
        if seen == state {
            // One agreeing result resets the count: rise and fall are about
            // *consecutive* results.
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        let needed = match seen {
            CheckState::Up => self.rise,
            CheckState::Down => self.fall,
        };
        if self.streak < needed {
            return None;
        }
        let after = self.streak;
        self.state = Some(seen);
        self.streak = 0;
        Some(Transition {
            to: seen,
            after,
            first: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CheckState::{Down, Up};

    /// (name, rise, fall, results as 'p'ass / 'f'ail, expected state after each result,
    /// '-' for none yet; expected transitions as (index, to, after)).
    type Row = (
        &'static str,
        u32,
        u32,
        &'static str,
        &'static str,
        &'static [(usize, CheckState, u32)],
    );

    const TABLE: &[Row] = &[
        ("first pass decides Up", 2, 3, "p", "U", &[(0, Up, 1)]),
        ("first fail decides Down", 2, 3, "f", "D", &[(0, Down, 1)]),
        (
            "fall=3 needs three failures",
            2,
            3,
            "pfff",
            "UUUD",
            &[(0, Up, 1), (3, Down, 3)],
        ),
        (
            "a pass between failures resets fall",
            2,
            3,
            "pffpfff",
            "UUUUUUD",
            &[(0, Up, 1), (6, Down, 3)],
        ),
        (
            "rise=2 needs two passes back",
            2,
            3,
            "fpp",
            "DDU",
            &[(0, Down, 1), (2, Up, 2)],
        ),
        (
            "a failure between passes resets rise",
            2,
            3,
            "fpfpp",
            "DDDDU",
            &[(0, Down, 1), (4, Up, 2)],
        ),
        (
            "flapping never settles",
            2,
            2,
            "pfpfpfpf",
            "UUUUUUUU",
            &[(0, Up, 1)],
        ),
        (
            "rise=1 fall=1 follows every result",
            1,
            1,
            "pfp",
            "UDU",
            &[(0, Up, 1), (1, Down, 1), (2, Up, 1)],
        ),
        (
            "a full cycle",
            2,
            3,
            "pfffpp",
            "UUUDDU",
            &[(0, Up, 1), (3, Down, 3), (5, Up, 2)],
        ),
        (
            "zero thresholds act as 1",
            0,
            0,
            "pf",
            "UD",
            &[(0, Up, 1), (1, Down, 1)],
        ),
    ];

    #[test]
    fn scenarios() {
        for (name, rise, fall, results, states, transitions) in TABLE {
            let mut machine = RiseFall::new(*rise, *fall);
            assert_eq!(machine.state(), None, "{name}: no state before a result");
            let mut seen = Vec::new();
            for (i, (r, s)) in results.chars().zip(states.chars()).enumerate() {
                if let Some(t) = machine.observe(r == 'p') {
                    assert_eq!(t.first, i == 0, "{name}: result {i}");
                    seen.push((i, t.to, t.after));
                }
                let want = if s == 'U' { Up } else { Down };
                assert_eq!(
                    machine.state(),
                    Some(want),
                    "{name}: state after result {i}"
                );
            }
            assert_eq!(&seen[..], *transitions, "{name}: transitions");
        }
    }
}
