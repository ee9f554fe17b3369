//! The exec checker: runs a program (argv, no shell) and passes on exit 0. The child runs
//! in its own process group, so at the timeout (or when the probe is dropped) the whole
//! group is killed: a check script's own children (`curl`, `sleep`) must not pile up on
//! the gateway. Never kills anything but the group it started.

use crate::platform::process_group::ProcessGroup;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{HealthError, ProbeResult, cut, plain, timeout_detail};
use crate::config::{CheckKind, HealthCheck};

/// Output kept per stream; the rest is read and dropped so the child never blocks on a
/// full pipe.
const OUTPUT_LIMIT: usize = 1024;
/// Output shown in a detail line (and so in logs and status).
const DETAIL_LIMIT: usize = 200;
/// After the program exits, how long to wait for its pipes to close. A background
/// process it left behind may hold them open for ever.
const PIPE_GRACE: Duration = Duration::from_millis(200);

pub struct ExecChecker {
    argv: Vec<String>,
    timeout: Duration,
}

impl ExecChecker {
    pub fn new(check: &HealthCheck) -> Result<Self, HealthError> {
        let CheckKind::Exec { command } = &check.kind else {
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
        Ok(ExecChecker {
            argv: command.clone(),
            timeout: check.timeout,
        })
    }

    pub async fn probe(&self) -> ProbeResult {
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut command = Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A new group whose id is the child's pid: killpg reaches its children too.
            .process_group(0)
            // If the probe is dropped, tokio kills and reaps the child; `ProcessGroup`
            // kills the rest of the group.
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                return ProbeResult::fail(
                    start.elapsed(),
                    format!("spawn {}: {}", self.argv[0], plain(&e.to_string())),
                );
            }
        };
        let mut group = ProcessGroup::new(child.id());
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let (mut out, mut err) = (Vec::new(), Vec::new());

        let outcome = {
            let reading =
                async { tokio::join!(drain(&mut stdout, &mut out), drain(&mut stderr, &mut err)) };
            tokio::pin!(reading);
            tokio::time::timeout_at(deadline, async {
                let (status, pipes_closed) = tokio::select! {
                    status = child.wait() => (status, false),
                    _ = &mut reading => (child.wait().await, true),
                };
                let pipes_closed =
                    pipes_closed || tokio::time::timeout(PIPE_GRACE, &mut reading).await.is_ok();
                (status, pipes_closed)
            })
            .await
        };
        let latency = start.elapsed();
        let output = show_output(&out, &err);
        match outcome {
            Err(_) => {
                group.kill();
                // Reap it (SIGKILL was sent, so this is quick); bounded all the same.
                let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
                ProbeResult::fail(latency, with_output(timeout_detail(self.timeout), &output))
            }
            Ok((status, pipes_closed)) => {
                if pipes_closed {
                    group.disarm();
                } else {
                    // Something the program started still holds its output open.
                    group.kill();
                }
                match status {
                    Ok(status) => verdict(status, latency, &output),
                    Err(e) => ProbeResult::fail(
                        latency,
                        format!("wait for {}: {}", self.argv[0], plain(&e.to_string())),
                    ),
                }
            }
        }
    }
}

fn verdict(status: ExitStatus, latency: Duration, output: &str) -> ProbeResult {
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
fn show_output(out: &[u8], err: &[u8]) -> String {
    let text = format!(
        "{} {}",
        String::from_utf8_lossy(out),
        String::from_utf8_lossy(err)
    );
    let folded = text.split_whitespace().collect::<Vec<_>>().join(" ");
    cut(&folded, DETAIL_LIMIT)
}

/// Reads a pipe to its end, keeping the first `OUTPUT_LIMIT` bytes.
async fn drain<R: AsyncRead + Unpin>(pipe: &mut Option<R>, kept: &mut Vec<u8>) {
    let Some(pipe) = pipe else { return };
    let mut chunk = [0u8; 4096];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}
