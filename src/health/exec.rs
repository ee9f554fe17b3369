//! The exec checker: runs a program (argv, no shell) and passes on exit 0. It runs as
//! every child of havip does (`platform::child`): in its own process group, killed whole
//! at the timeout, so a check script's own children (`curl`, `sleep`) never pile up on the
//! gateway, with its output bounded.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use crate::platform::child::{ChildSpec, RunAs, run_bounded};

use super::{HealthError, ProbeResult, cut, plain, timeout_detail};
use crate::config::{CheckKind, HealthCheck};

/// Output shown in a detail line (and so in logs and status).
const DETAIL_LIMIT: usize = 200;

pub struct ExecChecker {
    argv: Vec<String>,
    timeout: Duration,
    /// Looked up once, here: not at every probe.
    run_as: Option<RunAs>,
}

impl ExecChecker {
    pub fn new(check: &HealthCheck) -> Result<Self, HealthError> {
        let CheckKind::Exec { command, run_as } = &check.kind else {
            return Err(HealthError::Invalid {
                check: check.name.clone(),
                reason: "not an exec check".into(),
            });
        };
        if command.is_empty() {
            return Err(HealthError::Invalid {
                check: check.name.clone(),
                reason: "the command is empty".into(),
            });
        }
        let run_as = match run_as {
            Some(user) => Some(RunAs::lookup(user).map_err(|e| HealthError::Invalid {
                check: check.name.clone(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        Ok(ExecChecker {
            argv: command.clone(),
            timeout: check.timeout,
            run_as,
        })
    }

    pub async fn probe(&self) -> ProbeResult {
        let spec = ChildSpec {
            program: &self.argv[0],
            args: &self.argv[1..],
            env: Vec::new(),
            run_as: self.run_as.as_ref(),
        };
        let run = match run_bounded(spec, self.timeout).await {
            Ok(run) => run,
            Err(e) => {
                return ProbeResult::fail(
                    Duration::ZERO,
                    format!("spawn {}: {}", self.argv[0], plain(&e.to_string())),
                );
            }
        };
        let output = show_output(&run.stdout, &run.stderr);
        match run.status {
            None => ProbeResult::fail(run.took, with_output(timeout_detail(self.timeout), &output)),
            Some(Ok(status)) => verdict(status, run.took, &output),
            Some(Err(e)) => ProbeResult::fail(
                run.took,
                format!("wait for {}: {}", self.argv[0], plain(&e.to_string())),
            ),
        }
    }
}

/// The verdict on a finished check program. Pure, like `show_output`, for the fuzz target
/// `health_reply` (fuzz/): the output is whatever the script printed.
pub fn verdict(status: ExitStatus, latency: Duration, output: &str) -> ProbeResult {
    match (status.code(), status.signal()) {
        (Some(0), _) => ProbeResult::pass(latency, with_output("exit 0".into(), output)),
        (Some(code), _) => ProbeResult::fail(latency, with_output(format!("exit {code}"), output)),
        (None, Some(signal)) => ProbeResult::fail(
            latency,
            with_output(format!("killed by signal {signal}"), output),
        ),
        (None, None) => ProbeResult::fail(latency, with_output("ended".into(), output)),
    }
}

fn with_output(head: String, output: &str) -> String {
    if output.is_empty() {
        head
    } else {
        format!("{head}: {output}")
    }
}

/// stdout then stderr, whitespace folded so the detail stays one log line, cut.
pub fn show_output(out: &[u8], err: &[u8]) -> String {
    let text = format!(
        "{} {}",
        String::from_utf8_lossy(out),
        String::from_utf8_lossy(err)
    );
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    cut(&folded, DETAIL_LIMIT)
}
