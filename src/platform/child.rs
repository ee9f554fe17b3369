//! Runs a child program the way havip runs every one of them (exec health checks, notify
//! hooks): with a minimal environment (`PATH`, `LANG` and what the caller passes; nothing
//! of the daemon's, such as `NOTIFY_SOCKET` or `JOURNAL_STREAM`), without the daemon's
//! capabilities (`drop_inherited_capabilities`, at start), in a process group of its own,
//! stdin closed, at most `OUTPUT_LIMIT` bytes of
//! each output stream kept (the rest read and dropped, so the child never blocks on a
//! full pipe), and bounded in time. At the time limit, or when a background process it
//! left behind keeps its pipes open after it exited, the whole group is killed: nothing
//! a child starts outlives it, and no caller waits longer than its limit plus a moment.
//! It never kills anything but the group it started.
//!
//! With `run_as`, the program runs as that user, its primary group and its supplementary
//! groups (not root's), through util-linux's `setpriv`, which execs it in place (same pid,
//! same process group). Changing the user ids away from 0 clears every capability set.
//! `setpriv` rather than a `pre_exec` hook: the crate keeps its one `unsafe` block in
//! `vip::raw`, and setpriv is in every Debian install (util-linux is essential).

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

/// The `PATH` a child gets: the system's directories, as systemd gives services.
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run: a program (no shell), its arguments, the variables it gets besides
/// `PATH` and `LANG`, and the user it runs as (None: the daemon's, root without
/// capabilities).
pub struct ChildSpec<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    pub env: Vec<(&'static str, String)>,
    /// Resolved once, when the check or hook is built, not at every spawn.
    pub run_as: Option<&'a RunAs>,
}

/// Whether this process may start children as another user: it is root, or has
/// `CAP_SETUID` and `CAP_SETGID` in its effective set.
pub fn may_switch_user() -> bool {
    use caps::{CapSet, Capability, has_cap};
    nix::unistd::geteuid().is_root()
        || [Capability::CAP_SETUID, Capability::CAP_SETGID]
            .into_iter()
            .all(|c| has_cap(None, CapSet::Effective, c).unwrap_or(false))
}

/// Where `run_as` children start: util-linux's setpriv.
pub const SETPRIV: &str = "/usr/bin/setpriv";

/// A `run_as` user as this machine knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// Looks `user` up in the system's user database.
    pub fn lookup(user: &str) -> io::Result<RunAs> {
        match nix::unistd::User::from_name(user) {
            Ok(Some(u)) => Ok(RunAs {
                user: user.to_string(),
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            Ok(None) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "no user {user:?} on this machine; create it (adduser --system {user}) \
                     or remove run_as"
                ),
            )),
            Err(e) => Err(io::Error::other(format!(
                "cannot look user {user:?} up in the user database: {e}"
            ))),
        }
    }

    /// setpriv's arguments before the program: the user's ids and groups, no inheritable
    /// capabilities.
    fn setpriv_args(&self) -> Vec<String> {
        vec![
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            // initgroups(3) needs the name; setpriv finds it from the uid.
            "--init-groups".into(),
            "--inh-caps=-all".into(),
            "--".into(),
        ]
    }
}

/// Starts `spec` and waits for it, for at most `limit`. `Err`: it could not be started.
pub async fn run_bounded(spec: ChildSpec<'_>, limit: Duration) -> io::Result<Finished> {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + limit;
    let mut command = match spec.run_as {
        None => Command::new(spec.program),
        Some(run_as) => {
            let mut c = Command::new(SETPRIV);
            c.args(run_as.setpriv_args()).arg(spec.program);
            c
        }
    };
    command
        .args(spec.args)
        .env_clear()
        .env("PATH", CHILD_PATH)
        .env("LANG", "C.UTF-8")
        .envs(spec.env)
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

/// Clears this thread's ambient and inheritable capabilities, which a child would
/// otherwise get at `execve` (systemd's `AmbientCapabilities=` puts CAP_NET_ADMIN and
/// CAP_NET_RAW there for the daemon): an exec check or a notify hook must not be able to
/// move addresses or send raw frames. The daemon keeps its own (permitted, effective).
/// Capabilities are per thread, so this runs first in `main`, before any other thread
/// exists; every thread started after inherits the cleared sets.
pub fn drop_inherited_capabilities() -> Result<(), caps::errors::CapsError> {
    caps::clear(None, caps::CapSet::Ambient)?;
    caps::clear(None, caps::CapSet::Inheritable)
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

    fn sh(script: &str) -> ChildSpec<'static> {
        let args = Box::leak(Box::new(vec!["-c".to_string(), script.to_string()]));
        ChildSpec {
            program: "/bin/sh",
            args,
            env: vec![("HAVIP_TEST", "yes".into())],
            run_as: None,
        }
    }

    #[tokio::test]
    async fn a_child_gets_a_minimal_environment() {
        let run = run_bounded(sh("env | sort"), Duration::from_secs(5))
            .await
            .expect("spawn");
        let env = String::from_utf8_lossy(&run.stdout).into_owned();
        let mut names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
        names.retain(|n| !["PWD", "SHLVL", "_"].contains(n)); // the shell's own
        assert_eq!(names, ["HAVIP_TEST", "LANG", "PATH"], "{env}");
    }

    /// Issue 14 item 3: `run_as` starts the program as that user, with its groups and not
    /// root's, and without capabilities; its exit status and output come through setpriv.
    #[tokio::test]
    async fn a_child_run_as_another_user_has_its_ids_and_no_capabilities() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to change user");
            return;
        }
        let nobody = RunAs::lookup("nobody").expect("the nobody user");
        let spec = ChildSpec {
            run_as: Some(&nobody),
            ..sh("id -u; id -g; id -G; grep -E '^Cap(Prm|Eff|Amb)' /proc/self/status; exit 3")
        };
        let run = run_bounded(spec, Duration::from_secs(5))
            .await
            .expect("spawn");
        let out = String::from_utf8_lossy(&run.stdout).into_owned();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], nobody.uid.to_string(), "{out}");
        assert_eq!(lines[1], nobody.gid.to_string(), "{out}");
        assert!(
            !lines[2].split_whitespace().any(|g| g == "0"),
            "root's group kept: {out}"
        );
        for cap in &lines[3..] {
            assert!(cap.ends_with("0000000000000000"), "{out}");
        }
        let status = run.status.expect("exited").expect("status");
        assert_eq!(status.code(), Some(3));
    }

    #[test]
    fn an_unknown_run_as_user_is_an_error_that_names_it_and_the_fix() {
        let err = RunAs::lookup("havip-no-such-user").expect_err("no such user");
        let text = err.to_string();
        assert!(
            text.contains("havip-no-such-user") && text.contains("adduser --system"),
            "{text}"
        );
    }

    /// Issue 14 item 3: a child started after `drop_inherited_capabilities` has no ambient
    /// capabilities, though the thread that starts it had some. Runs in a thread of its
    /// own (capabilities are per thread) and needs root to raise one first.
    #[test]
    fn children_do_not_inherit_the_daemons_capabilities() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to raise an ambient capability");
            return;
        }
        let amb = std::thread::spawn(|| {
            let raise = |set| caps::raise(None, set, caps::Capability::CAP_NET_RAW);
            raise(caps::CapSet::Inheritable).expect("inheritable");
            raise(caps::CapSet::Ambient).expect("ambient");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let cap_amb = |runtime: &tokio::runtime::Runtime| {
                let run = runtime
                    .block_on(run_bounded(
                        sh("grep CapAmb /proc/self/status"),
                        Duration::from_secs(5),
                    ))
                    .expect("spawn");
                String::from_utf8_lossy(&run.stdout).trim().to_string()
            };
            let before = cap_amb(&runtime);
            drop_inherited_capabilities().expect("drop");
            (before, cap_amb(&runtime))
        })
        .join()
        .expect("thread");
        assert_ne!(amb.0, "CapAmb:\t0000000000000000", "the control: raised");
        assert_eq!(amb.1, "CapAmb:\t0000000000000000");
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
