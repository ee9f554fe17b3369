//! A child's process group, killed (SIGKILL) when dropped unless disarmed: a health
//! probe or a notify hook that times out or is cancelled takes whatever it started with
//! it. The child must have been spawned with `process_group(0)` (its pid is the group id).

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

pub struct ProcessGroup {
    pgid: Option<Pid>,
}

impl ProcessGroup {
    pub fn new(pid: Option<u32>) -> Self {
        ProcessGroup {
            pgid: pid.and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw),
        }
    }

    pub fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH (the group is already gone) is the outcome we want anyway.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    /// The child ended on its own: leave what it deliberately left running.
    pub fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}
