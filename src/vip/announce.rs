//! When a group's VIPs are announced: a burst when the node starts to hold, a repeat burst
//! after `repeat_after`, an optional periodic refresh, and a fresh burst on request (a peer
//! reconnected, the link came back). One spawned task per held group, cancelled on
//! release. It must never block `hold`/`release` (they only start, poke or cancel it) and
//! never announce after `stop`, nor after the hold lease it was last given: a process
//! thawed from SIGSTOP runs its overdue timers before the group loop can release, and one
//! stale gratuitous ARP would point the clients back at a host that is about to drop the
//! VIP (seen in the lab: 5 s without answers until the next failback).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::{Duration, Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use super::packet;
use super::raw::{ETH_P_ARP, Icmpv6Socket, PacketSocket};
use crate::config::Announce;
use crate::platform::lock::lock;

/// Where and what to announce.
#[derive(Debug, Clone)]
pub struct Target {
    pub group: String,
    pub interface: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub addresses: Vec<IpAddr>,
}

/// A running announcer; `stop` (or dropping it) ends its task.
pub struct Announcer {
    cancel: CancellationToken,
    again: Arc<Notify>,
    lease: Lease,
}

/// Until when the holder may speak for the VIPs (its hold lease), moved on by every hold.
#[derive(Clone)]
struct Lease(Arc<Mutex<Instant>>);

impl Lease {
    fn valid(&self) -> bool {
        Instant::now() <= *lock(&self.0)
    }
}

impl Announcer {
    /// Starts announcing `target` now, on the `schedule`, while the hold lease that ends at
    /// `until` (and is moved on by `extend`) runs.
    pub fn start(target: Target, schedule: Announce, until: Instant) -> Self {
        let cancel = CancellationToken::new();
        let again = Arc::new(Notify::new());
        let lease = Lease(Arc::new(Mutex::new(until)));
        tokio::spawn(run(
            target,
            schedule,
            cancel.clone(),
            again.clone(),
            lease.clone(),
        ));
        Self {
            cancel,
            again,
            lease,
        }
    }

    /// The hold was renewed: announcements may go out until `until`.
    pub fn extend(&self, until: Instant) {
        *lock(&self.lease.0) = until;
    }

    /// Asks for a fresh burst (coalesced with one already asked for).
    pub fn burst(&self) {
        self.again.notify_one();
    }

    /// Stops the task; no frame is sent after this returns except one already in the
    /// kernel's hands.
    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A gratuitous ARP or neighbour advertisement the kernel refused, for the address it
/// announced (the group and interface are on the log line that reports it).
#[derive(Debug, thiserror::Error)]
#[error("{address}: {source}")]
struct SendFailed {
    address: IpAddr,
    source: std::io::Error,
}

/// The sockets of one target, opened once per hold.
struct Senders {
    arp: Option<PacketSocket>,
    na: Option<Icmpv6Socket>,
}

impl Drop for Senders {
    /// Closing a packet socket waits for an RCU grace period (the kernel's
    /// `packet_release` calls `synchronize_net`): 17 ms measured with strace on the lab,
    /// on the runtime's one thread, between a releasing master's address removal and its
    /// leadership transfer, which a planned move's clients waited out. So the socket is
    /// closed on the blocking pool; outside a runtime (a test), here.
    fn drop(&mut self) {
        let Some(arp) = self.arp.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || drop(arp));
            }
            Err(_) => drop(arp),
        }
    }
}

impl Senders {
    fn open(target: &Target) -> Self {
        let wants_v4 = target.addresses.iter().any(IpAddr::is_ipv4);
        let wants_v6 = target.addresses.iter().any(IpAddr::is_ipv6);
        let arp = wants_v4
            .then(|| PacketSocket::sender(target.ifindex, ETH_P_ARP))
            .and_then(|r| {
                r.map_err(|e| {
                    tracing::error!(group = %target.group, interface = %target.interface,
                    "cannot open the ARP socket (gratuitous ARP disabled): {e}")
                })
                .ok()
            });
        let na = wants_v6
            .then(|| Icmpv6Socket::open(&target.interface, target.ifindex))
            .and_then(|r| {
                r.map_err(|e| {
                    tracing::error!(group = %target.group, interface = %target.interface,
                    "cannot open the ICMPv6 socket (neighbour advertisements disabled): {e}")
                })
                .ok()
            });
        Self { arp, na }
    }

    /// One announcement of every address; returns the first error, after trying all.
    fn send_all(&self, target: &Target) -> Result<(), SendFailed> {
        let mut first_error = None;
        for address in &target.addresses {
            let result = match (address, &self.arp, &self.na) {
                (IpAddr::V4(v4), Some(socket), _) => {
                    socket.send(&packet::gratuitous_arp(target.mac, *v4))
                }
                (IpAddr::V6(v6), _, Some(socket)) => socket.send_to(
                    &packet::neighbour_advertisement(target.mac, *v6),
                    packet::ALL_NODES,
                ),
                _ => Ok(()),
            };
            if let Err(source) = result {
                first_error.get_or_insert(SendFailed {
                    address: *address,
                    source,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

async fn run(
    target: Target,
    schedule: Announce,
    cancel: CancellationToken,
    again: Arc<Notify>,
    lease: Lease,
) {
    let senders = Senders::open(&target);
    let started = Instant::now();
    let mut repeat_at = schedule.repeat_after.map(|d| started + d);
    let mut refresh_at = schedule.refresh.map(|d| started + d);
    let far = Duration::from_secs(86_400 * 365);
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = burst(&senders, &target, &schedule, &lease, "hold") => {}
    }
    loop {
        let next = [repeat_at, refresh_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + far);
        let why = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = again.notified() => "asked",
            _ = sleep_until(next) => {
                let now = Instant::now();
                if repeat_at.is_some_and(|t| t <= now) {
                    repeat_at = None;
                    "repeat"
                } else {
                    refresh_at = schedule.refresh.map(|d| now + d);
                    "refresh"
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = burst(&senders, &target, &schedule, &lease, why) => {}
        }
    }
}

/// `burst_count` announcements `burst_spacing` apart (bounded by the count).
async fn burst(senders: &Senders, target: &Target, schedule: &Announce, lease: &Lease, why: &str) {
    let mut failures = 0u32;
    let mut last_error = None;
    for i in 0..schedule.burst_count {
        if i > 0 {
            sleep(schedule.burst_spacing).await;
        }
        if !lease.valid() {
            tracing::debug!(group = %target.group, why, "not announcing: the hold lease ran out");
            return;
        }
        if let Err(e) = senders.send_all(target) {
            failures += 1;
            last_error = Some(e);
        }
    }
    if let Some(last_error) = last_error {
        tracing::warn!(group = %target.group, interface = %target.interface, why,
            "{failures} of {} announcements failed: {last_error}", schedule.burst_count);
    } else {
        tracing::debug!(group = %target.group, interface = %target.interface, why,
            count = schedule.burst_count, "announced the VIPs");
    }
}
