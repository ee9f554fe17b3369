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

use std::collections::BTreeMap;
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

/// The daemon's handle on its fence: the pipe, the child, and what the fence may still
/// act on.
pub struct Fence {
    pipe: Mutex<ChildStdin>,
    child: Mutex<Child>,
    broken: AtomicBool,
    /// Per group, the last lease end sent: the fence may still fire on it (less
    /// `FENCE_AHEAD`) if it reads a later order too late, so it is kept past a disarm.
    deadlines: Mutex<BTreeMap<String, Instant>>,
    /// Per group, a deadline the fence may have fired on after the daemon's last install
    /// (`must_reinstall`).
    recheck: Mutex<BTreeMap<String, Instant>>,
}

/// How long the fence may take to read an order (its wake-up on a loaded host): an order
/// sent closer than this to the deadline it replaces may come too late.
const READ_MARGIN: Duration = Duration::from_millis(20);

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
            deadlines: Mutex::default(),
            recheck: Mutex::default(),
        })
    }

    /// The fence's process id (the daemon logs it at start).
    pub fn pid(&self) -> u32 {
        lock(&self.child).id()
    }

    /// Err when the fence already exited (it says why in the log: no CAP_NET_ADMIN, no
    /// netlink socket): the daemon must not hold VIPs without it.
    pub fn check_running(&self) -> Result<(), String> {
        match lock(&self.child).try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "the fence process (`havip fence`) exited at start ({status}); its log line above says why"
            )),
            Err(e) => Err(format!("cannot see the fence process: {e}")),
        }
    }

    /// Take `addresses` off `ifindex` at `lease_end` (less `FENCE_AHEAD`) unless armed
    /// again or disarmed first.
    pub fn arm(&self, group: &str, ifindex: u32, addresses: &[IpNet], lease_end: Instant) {
        self.note_risk(group);
        lock(&self.deadlines).insert(group.to_string(), lease_end);
        self.send(&FenceOrder::Arm {
            group: group.to_string(),
            deadline_ns: monotonic_ns(lease_end),
            ifindex,
            addresses: addresses.to_vec(),
        });
    }

    pub fn disarm(&self, group: &str) {
        self.note_risk(group);
        self.send(&FenceOrder::Disarm {
            group: group.to_string(),
        });
    }

    /// Whether the fence may have taken `group`'s addresses down behind the daemon's
    /// back since its last install: an order that replaced a deadline went out so close
    /// to it that the fence may have fired first, and that deadline has passed. Asked on
    /// every hold; true once per such deadline, and the hold then installs again.
    pub fn must_reinstall(&self, group: &str, now: Instant) -> bool {
        let mut recheck = lock(&self.recheck);
        match recheck.get(group) {
            Some(at) if *at <= now => {
                recheck.remove(group);
                true
            }
            _ => false,
        }
    }

    /// An order for `group` goes out now: if the fence may read it only after firing on
    /// the deadline it replaces, the first hold after that deadline installs again.
    fn note_risk(&self, group: &str) {
        let now = Instant::now();
        let Some(old) = lock(&self.deadlines).get(group).copied() else {
            return;
        };
        let fires = old
            .checked_sub(super::deadline_guard::FENCE_AHEAD)
            .unwrap_or(old);
        if now + READ_MARGIN >= fires && now <= old {
            let mut recheck = lock(&self.recheck);
            let at = recheck.entry(group.to_string()).or_insert(old);
            *at = (*at).max(old);
        }
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
            // A fence that is alive but stalled would wake up and act on orders the
            // daemon has moved on from: end it (SIGKILL: at end of file it would remove
            // every armed group, held ones included).
            let status = {
                let mut child = lock(&self.child);
                let _ = child.kill();
                child.wait()
            };
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
