//! Health checks against the CRM application servers (issue 4): whether this gateway
//! may hold a VIP. Probes (http, https, tcp, exec) feed a rise/fall state machine per
//! check; the per-check states and `[health] require` / weights give the node's health;
//! a `HealthMonitor` task drives it all and publishes a `HealthReport`.
//!
//! This module never proposes anything to Raft or touches a VIP: it only reports. The
//! group loops read its facts feed (`LiveHealth`); the control commands show the report.

mod checker;
mod error;
mod exec;
mod facts;
mod http;
mod live;
mod node_health;
mod report;
mod rise_fall;
mod scheduler;
mod tcp;

pub use checker::Checker;
pub use error::HealthError;
pub use exec::ExecChecker;
pub use facts::HealthFacts;
pub use http::HttpChecker;
pub use live::LiveHealth;
pub use node_health::{CheckInput, HealthStatus, NodeHealth, evaluate, priority_delta};
pub use report::{CheckReport, HealthReport};
pub use rise_fall::{CheckState, RiseFall, Transition};
pub use scheduler::{DEFAULT_MAX_CONCURRENT_PROBES, HealthMonitor, MonitorOptions};
pub use tcp::TcpChecker;

/// What a probe makes of the reply it received, pure: the bytes come from the CRM servers
/// and the check scripts, and none may panic the monitor. Gathered here for the fuzz
/// target `health_reply` (fuzz/); the checkers call them where the reply arrives.
pub mod reply {
    pub use super::exec::{show_output, verdict as exec_verdict};
    pub use super::http::{BODY_LIMIT, BodyPrefix, HttpFailure, judge_body};
    pub use super::tcp::{TcpFailure, judge_reply};
}

use std::time::Duration;

/// The outcome of one probe, whatever its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub ok: bool,
    /// From the start of the probe to its verdict (a timeout counts in full).
    pub latency: Duration,
    /// What an operator needs to see: "HTTP 503", "connect: connection refused",
    /// "timeout after 1s", "exit 1: <output>".
    pub detail: String,
}

impl ProbeResult {
    pub fn pass(latency: Duration, detail: impl Into<String>) -> Self {
        ProbeResult {
            ok: true,
            latency,
            detail: detail.into(),
        }
    }

    pub fn fail(latency: Duration, detail: impl Into<String>) -> Self {
        ProbeResult {
            ok: false,
            latency,
            detail: detail.into(),
        }
    }
}

/// "1s", "250ms": how a timeout reads in a detail line.
fn timeout_detail(timeout: Duration) -> String {
    format!("timeout after {}", crate::config::format_duration(timeout))
}

/// The innermost cause of an error chain: "connection refused" rather than
/// "error sending request for url (...)", which says nothing an operator can act on.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    plain(&current.to_string())
}

/// An error's text as an operator reads it: "connection refused", not "Connection
/// refused (os error 111)".
fn plain(text: &str) -> String {
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary, marking the cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strips_os_error_and_capital() {
        assert_eq!(
            plain("Connection refused (os error 111)"),
            "connection refused"
        );
        assert_eq!(plain("tcp connect error"), "tcp connect error");
        assert_eq!(plain(""), "");
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abcdef", 3), "abc...");
        assert_eq!(cut("é", 1), "...");
    }
}
