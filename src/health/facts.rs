//! The node's health as the group loops need it (`HealthFacts`), kept current on a watch
//! channel from the monitor's reports (`live`). Only what changes on a transition is copied (the
//! node's state, the weights, which checks are down), so a flapping probe produces no
//! change, and so no Raft traffic, until rise/fall settle it. It never decides anything.

use super::node_health::{CheckInput, HealthStatus, priority_delta};
use super::report::HealthReport;
use super::rise_fall::CheckState;
use crate::config::HealthCheck;

/// What the health checks say about this node, for every group's election facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthFacts {
    pub healthy: bool,
    /// Some check has no first result yet (see `HealthReport::pending`).
    pub pending: bool,
    /// Priority change from weighted checks (keepalived's track_script weights).
    pub priority_delta: i32,
    /// "checks down: a, b", or empty.
    pub detail: String,
}

impl HealthFacts {
    /// A node without health checks: healthy from the start.
    pub fn no_checks() -> Self {
        HealthFacts {
            healthy: true,
            pending: false,
            priority_delta: 0,
            detail: String::new(),
        }
    }

    /// The facts in `report`, with the weights of the configured `checks`.
    pub fn of(report: &HealthReport, checks: &[HealthCheck]) -> Self {
        let inputs: Vec<CheckInput> = checks
            .iter()
            .map(|c| CheckInput {
                name: &c.name,
                weight: c.weight,
                state: report
                    .checks
                    .iter()
                    .find(|r| r.name == c.name)
                    .and_then(|r| (r.probes > 0).then_some(r.state)),
            })
            .collect();
        let down: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.state == CheckState::Down)
            .map(|c| c.name.as_str())
            .collect();
        HealthFacts {
            healthy: report.node.status != HealthStatus::Unhealthy,
            pending: report.pending,
            priority_delta: priority_delta(&inputs),
            detail: if down.is_empty() {
                String::new()
            } else {
                format!("checks down: {}", down.join(", "))
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::CheckKind;
    use crate::health::{CheckReport, NodeHealth};

    fn check(name: &str, weight: i32) -> HealthCheck {
        HealthCheck {
            name: name.into(),
            kind: CheckKind::Tcp {
                address: "198.18.0.21:80".into(),
                send: None,
                expect: None,
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 2,
            weight,
        }
    }

    fn result(name: &str, state: CheckState, probes: u64) -> CheckReport {
        CheckReport {
            name: name.into(),
            state,
            last_ok: state == CheckState::Up,
            last_latency_ms: 0.5,
            last_detail: String::new(),
            last_failure: None,
            since_unix_ms: 0,
            probes,
        }
    }

    fn report(status: HealthStatus, checks: Vec<CheckReport>) -> HealthReport {
        HealthReport {
            node: NodeHealth {
                status,
                reason: String::new(),
            },
            pending: checks.iter().any(|c| c.probes == 0),
            checks,
        }
    }

    #[test]
    fn weights_count_only_probed_checks_and_down_checks_are_named() {
        let checks = [check("web", 0), check("db", -20), check("cache", 5)];
        let degraded = HealthStatus::Degraded {
            priority_delta: -20,
        };
        let facts = HealthFacts::of(
            &report(
                degraded,
                vec![
                    result("web", CheckState::Up, 3),
                    result("db", CheckState::Down, 3),
                    result("cache", CheckState::Up, 0),
                ],
            ),
            &checks,
        );
        assert_eq!(
            facts,
            HealthFacts {
                healthy: true,
                pending: true,
                priority_delta: -20,
                detail: "checks down: db".into(),
            }
        );
        let unhealthy = report(
            HealthStatus::Unhealthy,
            vec![result("web", CheckState::Down, 3)],
        );
        let facts = HealthFacts::of(&unhealthy, &checks);
        assert!(!facts.healthy);
        assert_eq!(facts.detail, "checks down: web");
    }
}
