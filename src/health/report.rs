//! What the monitor publishes (`HealthReport`, for the daemon and `havip status`) and the
//! one log line of each transition, so everything the health checks say to an operator
//! is in one place. Never decides anything.

use serde::{Deserialize, Serialize};

use super::node_health::{HealthStatus, NodeHealth};
use super::rise_fall::{CheckState, Transition};

/// The node's health and each check's latest state and result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub node: NodeHealth,
    pub checks: Vec<CheckReport>,
    /// Some check has no result yet (the monitor just started): `node` counts it as Down,
    /// so do not propose this node health yet.
    pub pending: bool,
}

/// One check as `havip status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub name: String,
    /// After rise/fall; Down until the first result (`probes == 0`).
    pub state: CheckState,
    pub last_ok: bool,
    /// Milliseconds with microsecond resolution: loopback probes take well under 1 ms.
    pub last_latency_ms: f64,
    pub last_detail: String,
    /// The detail of the latest failed probe, kept after the check recovers.
    pub last_failure: Option<String>,
    /// When `state` last changed (or the monitor started), Unix time in milliseconds.
    pub since_unix_ms: u64,
    /// Probes run since the monitor started.
    pub probes: u64,
}

/// `health: check crm-1-http DOWN (HTTP 503 after 3 failures)`.
pub(super) fn check_line(name: &str, t: Transition, detail: &str) -> String {
    let why = if t.first {
        format!("{detail}, first probe")
    } else {
        let (word, plural) = match (t.to, t.after) {
            (CheckState::Up, 1) => ("pass", ""),
            (CheckState::Up, _) => ("pass", "es"),
            (CheckState::Down, 1) => ("failure", ""),
            (CheckState::Down, _) => ("failure", "s"),
        };
        format!("{detail} after {} {word}{plural}", t.after)
    };
    format!("health: check {name} {} ({why})", t.to.as_str())
}

/// `health: node UNHEALTHY (0 of 2 checks up, need any)`.
pub(super) fn node_line(node: &NodeHealth) -> String {
    format!("health: node {} ({})", node.status.as_str(), node.reason)
}

/// Whether a line reports something an operator should look at.
pub(super) fn is_bad(state: CheckState) -> bool {
    state == CheckState::Down
}

pub(super) fn node_is_bad(status: HealthStatus) -> bool {
    status != HealthStatus::Healthy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_like_the_examples() {
        let down = Transition {
            to: CheckState::Down,
            after: 3,
            first: false,
        };
        assert_eq!(
            check_line("crm-1-http", down, "HTTP 503"),
            "health: check crm-1-http DOWN (HTTP 503 after 3 failures)"
        );
        let up = Transition {
            to: CheckState::Up,
            after: 1,
            first: true,
        };
        assert_eq!(
            check_line("crm-1-http", up, "HTTP 200"),
            "health: check crm-1-http UP (HTTP 200, first probe)"
        );
        let node = NodeHealth {
            status: HealthStatus::Unhealthy,
            reason: "0 of 2 checks up, need any".into(),
        };
        assert_eq!(
            node_line(&node),
            "health: node UNHEALTHY (0 of 2 checks up, need any)"
        );
    }
}
