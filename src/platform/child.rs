//! Runs a child program the way havip runs every one of them (exec health checks, notify
//! hooks): in a process group of its own, stdin closed, at most `OUTPUT_LIMIT` bytes of
//! each output stream kept (the rest read and dropped, so the child never blocks on a
//! full pipe), and bounded in time. At the time limit, or when a background process it
//! left behind keeps its pipes open after it exited, the whole group is killed: nothing
//! a child starts outlives it, and no caller waits longer than its limit plus a moment.
//! It never kills anything but the group it started.

use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::process_group::ProcessGroup;

/// Output kept per stream.
pub const OUTPUT_LIMIT: usize = 1024;

/// After the program exits, how long to wait for its pipes to close. A background
/// process it left behind may hold them open for ever.
const PIPE_GRACE: Duration = Duration::from_millis(200);

/// How a child run ended.
#[derive(Debug)]
pub struct Finished {
    /// `None`: killed at the time limit.
    pub status: Option<io::Result<ExitStatus>>,
    /// The first `OUTPUT_LIMIT` bytes of stdout and of stderr.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// From the start to the exit (or the time limit).
    pub took: Duration,
}

/// Starts `command` (stdin, stdout, stderr and the process group are set here) and waits
/// for it, for at most `limit`. `Err`: it could not be started.
pub async fn run_bounded(mut command: Command, limit: Duration) -> io::Result<Finished> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A new group whose id is the child's pid: killpg reaches its children too.
        .process_group(0)
        // If the caller is dropped, tokio kills and reaps the child; `ProcessGroup` kills
        // the rest of the group.
        .kill_on_drop(true);
    let mut child = command.spawn()?;
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
    let took = start.elapsed();
    let status = match outcome {
        Err(_) => {
            group.kill();
            // Reap it (SIGKILL was sent, so this is quick); bounded all the same.
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
            None
        }
        Ok((status, pipes_closed)) => {
            if pipes_closed {
                group.disarm();
            } else {
                // Something the program started still holds its output open.
                group.kill();
            }
            Some(status)
        }
    };
    Ok(Finished {
        status,
        stdout: out,
        stderr: err,
        took,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", script]);
        command
    }

    #[tokio::test]
    async fn output_is_bounded_and_a_background_child_does_not_hold_the_caller() {
        // 1 MiB of output, and a background sleeper that keeps stdout open after the
        // script exits: the run ends within the pipe grace, not the sleeper's 30 s.
        let run = run_bounded(
            sh("head -c 1048576 /dev/zero; sleep 30 & exit 3"),
            Duration::from_secs(10),
        )
        .await
        .expect("spawn");
        assert_eq!(run.stdout.len(), OUTPUT_LIMIT);
        let status = run.status.expect("exited").expect("status");
        assert_eq!(status.code(), Some(3));
        assert!(run.took < Duration::from_secs(5), "{:?}", run.took);
    }

    #[tokio::test]
    async fn a_child_past_its_limit_is_killed() {
        let run = run_bounded(sh("sleep 30"), Duration::from_millis(200))
            .await
            .expect("spawn");
        assert!(run.status.is_none(), "{run:?}");
        assert!(run.took < Duration::from_secs(2), "{:?}", run.took);
    }
}
