//! `havip fence`: the process that enforces the hold lease when the daemon cannot
//! (`fence.rs` says why it is a process). It reads orders from its stdin
//! (`fence_line.rs`), keeps the same deadlines as the daemon's guard thread, a little
//! later (`FENCE_AHEAD`), and removes a group's addresses when its deadline comes; at end
//! of file (the daemon is gone, however it went) it removes every armed group's addresses
//! at once and exits. It must never add an address, and never remove one it was not
//! ordered to guard. SIGTERM, SIGINT and SIGHUP are blocked: systemd signals the whole
//! unit on stop, and the fence must outlive the daemon's hand-over; it ends with the pipe.

use std::io::BufRead;

use ipnet::IpNet;
use nix::sys::signal::{SigSet, Signal};

use super::deadline_guard::{DeadlineGuard, FENCE_AHEAD};
use super::fence::instant_of;
use super::fence_line::FenceOrder;
use super::remove::Remover;

/// Why the fence could not run.
#[derive(Debug, thiserror::Error)]
pub enum FenceRunError {
    #[error("fence: cannot open a netlink socket for removals: {0}")]
    Netlink(std::io::Error),
    #[error("fence: cannot start its deadline thread: {0}")]
    Thread(std::io::Error),
    #[error("fence: cannot block the stop signals: {0}")]
    Signals(nix::Error),
}

/// Runs the fence on `orders` until their end; returns how many groups it took down.
pub fn run(orders: impl BufRead) -> Result<usize, FenceRunError> {
    let mut blocked = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        blocked.add(signal);
    }
    // Before the thread starts, which inherits the mask.
    blocked.thread_block().map_err(FenceRunError::Signals)?;
    let remover = std::sync::Arc::new(Remover::open().map_err(FenceRunError::Netlink)?);
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let guard = DeadlineGuard::start(FENCE_AHEAD, {
        let (remover, taken) = (remover.clone(), taken.clone());
        move |group: &str, (ifindex, addresses): (u32, Vec<IpNet>)| {
            take_down(
                &remover,
                group,
                ifindex,
                &addresses,
                "their hold lease ended before the daemon released them",
            );
            taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .map_err(FenceRunError::Thread)?;
    tracing::debug!("fence: started");
    for line in orders.lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                tracing::error!("fence: cannot read the daemon's orders: {e}");
                break;
            }
        };
        match FenceOrder::decode(&line) {
            Ok(FenceOrder::Arm {
                group,
                deadline_ns,
                ifindex,
                addresses,
            }) => guard.arm(&group, (ifindex, addresses), instant_of(deadline_ns)),
            Ok(FenceOrder::Disarm { group }) => guard.disarm(&group),
            Err(e) => tracing::error!("fence: {e}"),
        }
    }
    let armed = guard.take_all();
    drop(guard);
    for (group, (ifindex, addresses)) in &armed {
        take_down(
            &remover,
            group,
            *ifindex,
            addresses,
            "the daemon is gone (exited or killed) while holding them",
        );
    }
    Ok(taken.load(std::sync::atomic::Ordering::Relaxed) + armed.len())
}

fn take_down(remover: &Remover, group: &str, ifindex: u32, addresses: &[IpNet], why: &str) {
    match remover.remove(ifindex, addresses) {
        Ok(()) => tracing::warn!(group = %group, "fence: took the VIPs down: {why}"),
        Err(e) => tracing::error!(group = %group, address = %e.address,
            "fence: cannot remove the VIP ({why}): {}", e.why),
    }
}
