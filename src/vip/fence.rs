//! The daemon's end of the fence: `havip fence`, a small process of its own that takes a
//! group's VIPs down at the end of their hold lease unless the daemon has moved the lease
//! on or released them, and takes every armed group down at once when the daemon is gone
//! (its pipe reaches end of file: the daemon exited, crashed or was SIGKILLed).
//!
//! Why a process: the daemon's own deadline guard is a thread, so a SIGSTOP (or a hung
//! kernel call in the daemon, or an OOM kill) stops or ends it with everything else, and
//! the VIP then stayed on the frozen host until its kernel lifetime ran out, 1.8-2.6 s
//! after the new master held it (issue 14 item 9); a SIGKILLed daemon's VIP stayed until
//! ExecStopPost ran, which the 30-minute soak saw come 28 ms after the new master held.
//! The fence shares nothing with the daemon but the pipe: its own PID and process group,
//! started (`main.rs`) before the daemon clears the capabilities its children inherit.
//!
//! The pipe is non-blocking on this side: a stopped fence must never stall a hold or a
//! release. A write that fails (the fence is gone, or stalled with 64 KiB unread) is
//! logged once as an error; the guard thread and the kernel lifetime still stand.

use std::io::Write as _;
use std::os::fd::AsFd as _;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use nix::fcntl::{FcntlArg, OFlag, fcntl};

use super::fence_line::FenceOrder;
use crate::platform::lock::lock;

pub struct Fence {
    pipe: Mutex<ChildStdin>,
    child: Mutex<Child>,
    broken: AtomicBool,
}

/// Why the fence could not be started.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot start the fence process (`havip fence`, which removes the VIPs of a frozen or killed daemon): {0}"
)]
pub struct FenceError(#[from] std::io::Error);

impl Fence {
    /// Starts `program fence` (this binary) in a process group of its own, its stdin the
    /// pipe; its stdout and stderr are the daemon's, so its lines land in the same log.
    pub fn spawn(program: &std::path::Path) -> Result<Fence, FenceError> {
        use std::os::unix::process::CommandExt as _;
        let mut child = Command::new(program)
            .arg0("havip")
            .arg("fence")
            .stdin(Stdio::piped())
            .process_group(0)
            .spawn()?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no pipe to the fence"))?;
        let flags = fcntl(pipe.as_fd(), FcntlArg::F_GETFL).map_err(std::io::Error::from)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(pipe.as_fd(), FcntlArg::F_SETFL(flags)).map_err(std::io::Error::from)?;
        Ok(Fence {
            pipe: Mutex::new(pipe),
            child: Mutex::new(child),
            broken: AtomicBool::new(false),
        })
    }

    /// The fence's process id (tests find it through this and the daemon's log).
    pub fn pid(&self) -> u32 {
        lock(&self.child).id()
    }

    /// Take `addresses` off `ifindex` at `lease_end` (less `FENCE_AHEAD`) unless armed
    /// again or disarmed first.
    pub fn arm(&self, group: &str, ifindex: u32, addresses: &[IpNet], lease_end: Instant) {
        self.send(&FenceOrder::Arm {
            group: group.to_string(),
            deadline_ns: monotonic_ns(lease_end),
            ifindex,
            addresses: addresses.to_vec(),
        });
    }

    pub fn disarm(&self, group: &str) {
        self.send(&FenceOrder::Disarm {
            group: group.to_string(),
        });
    }

    fn send(&self, order: &FenceOrder) {
        if self.broken.load(Ordering::Relaxed) {
            return;
        }
        let line = order.encode();
        // One write: a line shorter than PIPE_BUF (4 KiB, about 80 addresses per group)
        // goes in whole or not at all.
        let written = lock(&self.pipe).write(line.as_bytes());
        if !matches!(written, Ok(n) if n == line.len()) {
            self.broken.store(true, Ordering::Relaxed);
            let status = lock(&self.child).try_wait();
            tracing::error!(
                fence_pid = self.pid(),
                "the fence process no longer takes orders ({}; its state: {status:?}): a frozen or \
                 killed daemon's VIPs now go only with the guard thread or their kernel lifetime; \
                 restart havip to start a new fence",
                match written {
                    Ok(n) => format!("wrote {n} of {} bytes", line.len()),
                    Err(e) => e.to_string(),
                }
            );
        }
    }
}

/// `at` on CLOCK_MONOTONIC, in nanoseconds: what std's `Instant` counts on Linux, read
/// as a number another process can use.
pub fn monotonic_ns(at: Instant) -> u64 {
    let now = Instant::now();
    let base = now_monotonic_ns();
    if at >= now {
        base.saturating_add(duration_ns(at - now))
    } else {
        base.saturating_sub(duration_ns(now - at))
    }
}

/// A CLOCK_MONOTONIC reading in nanoseconds, as an `Instant` in this process.
pub fn instant_of(monotonic: u64) -> Instant {
    let now = Instant::now();
    let base = now_monotonic_ns();
    if monotonic >= base {
        now + Duration::from_nanos(monotonic - base)
    } else {
        now.checked_sub(Duration::from_nanos(base - monotonic))
            .unwrap_or(now)
    }
}

fn now_monotonic_ns() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    // CLOCK_MONOTONIC cannot fail on Linux; 0 would only make a deadline due at once.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0)
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both processes read one clock: an instant converted there and back moves by no
    /// more than the two readings between (microseconds).
    #[test]
    fn an_instant_survives_the_trip_through_the_monotonic_clock() {
        let now = Instant::now();
        for at in [
            now + Duration::from_millis(320),
            now - Duration::from_millis(5),
        ] {
            let back = instant_of(monotonic_ns(at));
            let skew = if back > at { back - at } else { at - back };
            assert!(skew < Duration::from_millis(1), "{skew:?}");
        }
    }
}
