//! The node's health from its checks' states: `[health] require` over the vetoing checks
//! (weight 0) and keepalived-style weights over the others. Pure: states in, verdict out;
//! it never probes, logs or reads a clock.
//!
//! Weights follow keepalived's track_script: a negative weight lowers the priority by
//! |weight| while its check is Down; a positive weight raises it by weight while its
//! check is Up. A weighted check never vetoes. The node is Degraded when any weighted
//! check is Down (it has lost priority, or a bonus); `priority_delta` is keepalived's
//! total adjustment: the sum of positive weights of Up checks plus negative weights of
//! Down checks. Clamping base + delta to 1..254 is the election policy's business.
//! A check that has no result yet counts as Down.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::rise_fall::CheckState;
use crate::config::Require;

/// What the election needs to know about this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    pub status: HealthStatus,
    /// One line for logs and status: "0 of 2 checks up, need any".
    pub reason: String,
}

/// The health checks' verdict on this node. Only an input of the node's facts
/// (`health::HealthFacts` copies what the election needs), never a status line of a node:
/// that is `control::protocol::NodeStatus`, made from the replicated facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HealthStatus {
    /// Enough vetoing checks are up and every weighted check is up.
    Healthy,
    /// Enough vetoing checks are up, some weighted check is down.
    Degraded { priority_delta: i32 },
    /// Too few vetoing checks are up: the node must not hold a VIP while a peer can.
    Unhealthy,
}

impl HealthStatus {
    /// How the status reads in log lines: "HEALTHY", "DEGRADED", "UNHEALTHY".
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Degraded { .. } => "DEGRADED",
            HealthStatus::Unhealthy => "UNHEALTHY",
        }
    }
}

/// One check as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckInput<'a> {
    pub name: &'a str,
    pub weight: i32,
    /// None: not probed yet, counts as Down.
    pub state: Option<CheckState>,
}

impl CheckInput<'_> {
    fn up(&self) -> bool {
        self.state == Some(CheckState::Up)
    }
}

/// keepalived's priority adjustment whatever the status: Healthy with positive weights
/// has a bonus too, which `HealthStatus::Healthy` does not carry.
pub fn priority_delta(checks: &[CheckInput<'_>]) -> i32 {
    checks
        .iter()
        .map(|c| match (c.weight, c.up()) {
            (w, true) if w > 0 => w,
            (w, false) if w < 0 => w,
            _ => 0,
        })
        .fold(0i32, i32::saturating_add)
}

/// The node's health under `require` from its checks' states.
pub fn evaluate(require: Require, checks: &[CheckInput<'_>]) -> NodeHealth {
    let vetoing: Vec<&CheckInput<'_>> = checks.iter().filter(|c| c.weight == 0).collect();
    let up = vetoing.iter().filter(|c| c.up()).count();
    let total = vetoing.len();
    let (needed, rule) = match require {
        Require::All => (total, "all".to_string()),
        Require::Any => (total.min(1), "any".to_string()),
        Require::AtLeast(n) => (n, n.to_string()),
    };
    let mut reason = if total == 0 {
        "no vetoing checks".to_string()
    } else {
        let plural = if total == 1 { "" } else { "s" };
        format!("{up} of {total} check{plural} up, need {rule}")
    };
    if up < needed {
        return NodeHealth {
            status: HealthStatus::Unhealthy,
            reason,
        };
    }
    let down_weighted: Vec<&CheckInput<'_>> =
        checks.iter().filter(|c| c.weight != 0 && !c.up()).collect();
    if down_weighted.is_empty() {
        return NodeHealth {
            status: HealthStatus::Healthy,
            reason,
        };
    }
    let delta = priority_delta(checks);
    let _ = write!(reason, "; priority {delta:+} (");
    for (i, c) in down_weighted.iter().enumerate() {
        let sep = if i > 0 { ", " } else { "" };
        let _ = write!(reason, "{sep}{} down, weight {:+}", c.name, c.weight);
    }
    reason.push(')');
    NodeHealth {
        status: HealthStatus::Degraded {
            priority_delta: delta,
        },
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CheckState::{Down, Up};

    fn c(name: &'static str, weight: i32, state: Option<CheckState>) -> CheckInput<'static> {
        CheckInput {
            name,
            weight,
            state,
        }
    }

    #[test]
    fn scenarios() {
        let unhealthy = HealthStatus::Unhealthy;
        let healthy = HealthStatus::Healthy;
        let degraded = |d| HealthStatus::Degraded { priority_delta: d };
        let table: Vec<(&str, Require, Vec<CheckInput<'static>>, HealthStatus, &str)> = vec![
            (
                "no checks",
                Require::All,
                vec![],
                healthy,
                "no vetoing checks",
            ),
            (
                "all up, need all",
                Require::All,
                vec![c("a", 0, Some(Up)), c("b", 0, Some(Up))],
                healthy,
                "2 of 2 checks up, need all",
            ),
            (
                "one down, need all",
                Require::All,
                vec![c("a", 0, Some(Up)), c("b", 0, Some(Down))],
                unhealthy,
                "1 of 2 checks up, need all",
            ),
            (
                "one down, need any",
                Require::Any,
                vec![c("a", 0, Some(Up)), c("b", 0, Some(Down))],
                healthy,
                "1 of 2 checks up, need any",
            ),
            (
                "none up, need any",
                Require::Any,
                vec![c("a", 0, Some(Down)), c("b", 0, Some(Down))],
                unhealthy,
                "0 of 2 checks up, need any",
            ),
            (
                "not probed yet counts as down",
                Require::Any,
                vec![c("a", 0, None)],
                unhealthy,
                "0 of 1 check up, need any",
            ),
            (
                "2 of 3, need 2",
                Require::AtLeast(2),
                vec![
                    c("a", 0, Some(Up)),
                    c("b", 0, Some(Down)),
                    c("c", 0, Some(Up)),
                ],
                healthy,
                "2 of 3 checks up, need 2",
            ),
            (
                "1 of 3, need 2",
                Require::AtLeast(2),
                vec![
                    c("a", 0, Some(Up)),
                    c("b", 0, Some(Down)),
                    c("c", 0, Some(Down)),
                ],
                unhealthy,
                "1 of 3 checks up, need 2",
            ),
            (
                "negative weight down lowers priority",
                Require::All,
                vec![c("crm", 0, Some(Up)), c("db", -20, Some(Down))],
                degraded(-20),
                "1 of 1 check up, need all; priority -20 (db down, weight -20)",
            ),
            (
                "negative weight up costs nothing",
                Require::All,
                vec![c("crm", 0, Some(Up)), c("db", -20, Some(Up))],
                healthy,
                "1 of 1 check up, need all",
            ),
            (
                "weighted checks never veto",
                Require::All,
                vec![c("db", -20, Some(Down)), c("cache", -5, Some(Down))],
                degraded(-25),
                "no vetoing checks; priority -25 (db down, weight -20, cache down, weight -5)",
            ),
            (
                "positive weight down loses its bonus",
                Require::All,
                vec![
                    c("fast", 10, Some(Down)),
                    c("db", -20, Some(Up)),
                    c("x", 5, Some(Up)),
                ],
                degraded(5),
                "no vetoing checks; priority +5 (fast down, weight +10)",
            ),
            (
                "veto beats weights",
                Require::All,
                vec![c("crm", 0, Some(Down)), c("db", -20, Some(Down))],
                unhealthy,
                "0 of 1 check up, need all",
            ),
        ];
        for (name, require, checks, status, reason) in table {
            let got = evaluate(require, &checks);
            assert_eq!(got.status, status, "{name}");
            assert_eq!(got.reason, reason, "{name}");
        }
    }

    #[test]
    fn priority_delta_counts_bonuses_while_healthy() {
        let checks = [c("fast", 10, Some(Up)), c("db", -20, Some(Up))];
        let health = evaluate(Require::All, &checks);
        assert_eq!(health.status, HealthStatus::Healthy);
        assert_eq!(priority_delta(&checks), 10);
    }
}
