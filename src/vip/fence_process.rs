//! `havip fence`: the process that enforces the hold lease when the daemon cannot
//! (`fence.rs` says why it is a process). It reads orders from its stdin
//! (`fence_line.rs`), keeps the same deadlines as the daemon's guard thread, a little
//! later (`FENCE_AHEAD`), and removes a group's addresses when its deadline comes; at end
//! of file (the daemon is gone, however it went) it removes every armed group's addresses
//! at once and exits. It must never add an address, never remove one it was not ordered
//! to guard, and never fire on a deadline the daemon had already moved on: it is one
//! thread that waits on the pipe with the next deadline as its timeout and reads
//! everything the daemon wrote before it fires.

use std::io::Read;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};

use super::deadline_guard::{Deadlines, FENCE_AHEAD};
use super::fence::instant_of;
use super::fence_line::FenceOrder;
use super::remove::Remover;

/// Why the fence could not run.
#[derive(Debug, thiserror::Error)]
pub enum FenceRunError {
    #[error("fence: cannot open a netlink socket for removals: {0}")]
    Netlink(std::io::Error),
    #[error("fence: cannot block the stop signals: {0}")]
    Signals(nix::Error),
    #[error("fence: {0}")]
    Privileges(String),
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and every thread it starts
/// after: systemd signals the whole unit on stop, and the fence must outlive the daemon's
/// hand-over (it ends with the pipe). SIGTTOU too: run from a terminal with `tostop`, the
/// fence (a background process group there) would be stopped at its first log line. Call it first, before any thread exists (the
/// logger's included), or a signal is delivered to a thread that does not block it.
pub fn block_stop_signals() -> Result<(), FenceRunError> {
    let mut blocked = SigSet::empty();
    for signal in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGTTOU,
    ] {
        blocked.add(signal);
    }
    blocked.thread_block().map_err(FenceRunError::Signals)
}

/// Runs the fence on `orders` until their end; returns how many groups it took down.
pub fn run(mut orders: impl Read + AsFd) -> Result<usize, FenceRunError> {
    let missing = super::caps::missing();
    if missing.contains(&super::caps::Capability::NetAdmin) {
        return Err(FenceRunError::Privileges(super::caps::explain(&missing)));
    }
    let remover = Remover::open().map_err(FenceRunError::Netlink)?;
    let mut deadlines: Deadlines<(u32, Vec<IpNet>)> = Deadlines::new(FENCE_AHEAD);
    let mut pending = Vec::new();
    let mut taken = 0;
    tracing::debug!("fence: started");
    loop {
        let wait = deadlines.sleep_for(Instant::now());
        let open = read_orders(&mut orders, &mut pending, &mut deadlines, wait);
        // Everything written before now is in: fire only what is still due.
        for (group, (ifindex, addresses)) in deadlines.due(Instant::now()) {
            take_down(
                &remover,
                &group,
                ifindex,
                &addresses,
                "their hold lease ended before the daemon released them",
            );
            taken += 1;
        }
        if !open {
            break;
        }
    }
    // A last line without its newline was cut short by the daemon's end: not an order.
    for (group, (ifindex, addresses)) in deadlines.take_all() {
        take_down(
            &remover,
            &group,
            ifindex,
            &addresses,
            "the daemon is gone (exited or killed) while holding them",
        );
        taken += 1;
    }
    Ok(taken)
}

/// Waits up to `wait` for orders, then reads every byte already written, applying each
/// complete line; false at end of file (or a read error: the daemon's end is the same).
fn read_orders(
    orders: &mut (impl Read + AsFd),
    pending: &mut Vec<u8>,
    deadlines: &mut Deadlines<(u32, Vec<IpNet>)>,
    wait: Duration,
) -> bool {
    let mut timeout = timeout_of(wait);
    loop {
        let readable = {
            let mut fds = [PollFd::new(orders.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => false,
                Ok(_) => true,
                Err(nix::Error::EINTR) => continue,
                Err(e) => {
                    tracing::error!("fence: cannot wait for the daemon's orders: {e}");
                    return false;
                }
            }
        };
        if !readable {
            return true;
        }
        let mut chunk = [0u8; 4096];
        match orders.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("fence: cannot read the daemon's orders: {e}");
                return false;
            }
        }
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            apply(&String::from_utf8_lossy(&line), deadlines);
        }
        // Then only what is there already, without waiting again.
        timeout = PollTimeout::ZERO;
    }
}

fn apply(line: &str, deadlines: &mut Deadlines<(u32, Vec<IpNet>)>) {
    match FenceOrder::decode(line) {
        Ok(FenceOrder::Arm {
            group,
            deadline_ns,
            ifindex,
            addresses,
        }) => deadlines.arm(&group, (ifindex, addresses), instant_of(deadline_ns)),
        Ok(FenceOrder::Disarm { group }) => deadlines.disarm(&group),
        Err(e) => tracing::error!("fence: {e}"),
    }
}

/// `wait` rounded up to whole milliseconds (poll's unit): waking a fraction of a
/// millisecond late is covered by `FENCE_AHEAD`; waking early would spin.
fn timeout_of(wait: Duration) -> PollTimeout {
    let ms = wait.as_micros().div_ceil(1000);
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

fn take_down(remover: &Remover, group: &str, ifindex: u32, addresses: &[IpNet], why: &str) {
    match remover.remove(ifindex, addresses) {
        Ok(()) => tracing::warn!(group = %group, "fence: took the VIPs down: {why}"),
        Err(e) => tracing::error!(group = %group, address = %e.address,
            "fence: cannot remove the VIP ({why}): {}", e.why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_apply_line_by_line_and_a_cut_line_waits() {
        let mut deadlines = Deadlines::new(FENCE_AHEAD);
        let (mut reader, mut writer) = std::io::pipe().expect("pipe");
        use std::io::Write as _;
        let soon = super::super::fence::monotonic_ns(Instant::now() + Duration::from_secs(60));
        writer
            .write_all(format!("arm crm {soon} 7 198.18.0.50/24\narm crm2 {soon} 7 198.18.0.51/24\ndisarm crm2\narm crm3").as_bytes())
            .expect("write");
        let mut pending = Vec::new();
        assert!(read_orders(
            &mut reader,
            &mut pending,
            &mut deadlines,
            Duration::ZERO
        ));
        assert_eq!(pending, b"arm crm3", "the cut line waits for its end");
        drop(writer);
        assert!(!read_orders(
            &mut reader,
            &mut pending,
            &mut deadlines,
            Duration::from_secs(1)
        ));
        let armed: Vec<String> = deadlines.take_all().into_iter().map(|(g, _)| g).collect();
        assert_eq!(armed, ["crm"]);
    }

    #[test]
    fn the_wait_rounds_up_to_whole_milliseconds() {
        assert_eq!(
            timeout_of(Duration::from_micros(4_300)),
            PollTimeout::try_from(5u64).expect("5")
        );
        assert_eq!(timeout_of(Duration::ZERO), PollTimeout::ZERO);
    }
}
