//! The real data plane: adds and removes a group's VIPs with rtnetlink, each under a
//! kernel lifetime (`valid_lft`/`preferred_lft`) that `hold` keeps refreshing, so the kernel
//! itself removes the VIP of a daemon that was SIGKILLed or froze. On the first `hold` it
//! starts the group's announcer (`announce.rs`); `release` stops it and removes the
//! addresses before returning, synchronously (`remove.rs`: the removal has a deadline and
//! must not queue behind the runtime's other work). Every hold also arms the group's
//! deadline on a thread of its own (`deadline_guard.rs`), which takes the VIPs down at the
//! end of the hold lease if the group loop has not released them by then, and arms the
//! fence (`fence.rs`), a process of its own, for a daemon that is frozen or killed. It
//! must never touch an address that is not a configured
//! VIP, and never delete a permanent (operator's) address: `reconcile` refuses to start.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, CacheInfo,
};
use netlink_packet_route::link::LinkAttribute;
use rtnetlink::Handle;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

use super::announce::{Announcer, Target};
use super::deadline_guard::{DeadlineGuard, GUARD_AHEAD};
use super::fence::Fence;
use super::remove::Remover;
use super::{DataPlane, DataPlaneError, DataPlaneResult, VipSet};
use crate::platform::lock::lock;

/// Errno values the kernel answers for "already there" / "not there".
const EEXIST: i32 = libc::EEXIST;
const EADDRNOTAVAIL: i32 = libc::EADDRNOTAVAIL;
const ENODEV: i32 = libc::ENODEV;

/// What is held for one group.
struct Held {
    ifindex: u32,
    refreshed: Instant,
    /// The end of the lease the guard and the fence were last armed with: a hold that
    /// comes after it (a daemon thawed from SIGSTOP that got a fresh acknowledgement
    /// before its guard thread ran) installs the addresses again, since the fence, or
    /// the guard, may have taken them down meanwhile.
    lease_end: Instant,
    announcer: Announcer,
    /// What is on the interface: a hold with another set (a reload changed the group's
    /// addresses) adds and removes the difference, leaving the others in place.
    addresses: Vec<IpNet>,
}

pub struct NetlinkDataPlane {
    handle: Handle,
    /// Never held across an await: one group's refresh must not delay another's release.
    held: Arc<Mutex<BTreeMap<String, Held>>>,
    remover: Arc<Remover>,
    /// Per group: the interface and addresses to take down at the end of the hold lease.
    guard: DeadlineGuard<(u32, Vec<IpNet>)>,
    /// The same deadlines, kept by another process (none for `havip release`).
    fence: Option<Arc<Fence>>,
}

impl NetlinkDataPlane {
    /// Opens the rtnetlink connection (its task runs on the current tokio runtime).
    pub fn new(fence: Option<Arc<Fence>>) -> Result<Self, DataPlaneError> {
        let (connection, handle, _) = rtnetlink::new_connection()
            .map_err(|e| DataPlaneError::Netlink(format!("cannot open a netlink socket: {e}")))?;
        tokio::spawn(connection);
        let remover = Arc::new(Remover::open().map_err(|e| {
            DataPlaneError::Netlink(format!("cannot open a netlink socket for removals: {e}"))
        })?);
        let held: Arc<Mutex<BTreeMap<String, Held>>> = Arc::default();
        let guard = DeadlineGuard::start(GUARD_AHEAD, {
            let (held, remover, fence) = (held.clone(), remover.clone(), fence.clone());
            move |group: &str, (ifindex, addresses): (u32, Vec<IpNet>)| {
                if let Some(h) = lock(&held).remove(group) {
                    h.announcer.stop();
                }
                match remover.remove(ifindex, &addresses) {
                    Ok(()) => {
                        // Only once they are gone: a failed removal stays the fence's.
                        if let Some(fence) = &fence {
                            fence.disarm(group);
                        }
                        // The loop releases at the same point; the guard's thread is
                        // usually first, so this is no sign of a late loop by itself.
                        tracing::warn!(group = %group,
                            "deadline guard: no fresh quorum acknowledgement {} ms before the \
                             hold lease ends; took the VIPs down",
                            GUARD_AHEAD.as_millis())
                    }
                    Err(e) => tracing::error!(group = %group, address = %e.address,
                        "deadline guard: cannot remove the VIP at the end of its hold lease: {}", e.why),
                }
            }
        })
        .map_err(|e| DataPlaneError::Netlink(format!("cannot start the deadline guard: {e}")))?;
        Ok(Self {
            handle,
            held,
            remover,
            guard,
            fence,
        })
    }

    /// Startup check, before joining the cluster: every VIP interface exists; a VIP that
    /// is on its interface permanently is an operator's address (refused: havip would
    /// delete it); one with a finite lifetime was left by a previous run of ours that
    /// crashed, and is removed now, before anyone may elect us. Returns how many it removed.
    pub async fn reconcile(&self, groups: &[VipSet]) -> Result<usize, DataPlaneError> {
        let mut removed = 0;
        for vips in groups.iter().filter(|v| !v.interface.is_empty()) {
            let (ifindex, _) = self.interface(vips).await?;
            for (message, address) in self.addresses_on(ifindex).await? {
                let Some(vip) = vips.addresses.iter().find(|v| v.addr() == address) else {
                    continue;
                };
                if is_permanent(&message) {
                    return Err(DataPlaneError::StaticAddress {
                        group: vips.group.clone(),
                        address: *vip,
                        interface: vips.interface.clone(),
                    });
                }
                tracing::warn!(group = %vips.group, interface = %vips.interface, address = %vip,
                    "removing a VIP left on the interface by a previous run");
                self.delete(vips, *vip, message).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The interface's index and MAC address.
    async fn interface(&self, vips: &VipSet) -> Result<(u32, [u8; 6]), DataPlaneError> {
        let no_interface = || DataPlaneError::NoInterface {
            group: vips.group.clone(),
            interface: vips.interface.clone(),
        };
        let link = self
            .handle
            .link()
            .get()
            .match_name(vips.interface.clone())
            .execute()
            .try_next()
            .await
            .map_err(|e| match errno(&e) {
                Some(ENODEV) => no_interface(),
                _ => DataPlaneError::Netlink(format!(
                    "group {}: cannot read interface {}: {e}",
                    vips.group, vips.interface
                )),
            })?
            .ok_or_else(no_interface)?;
        let mac = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
                _ => None,
            })
            .unwrap_or([0; 6]);
        Ok((link.header.index, mac))
    }

    async fn addresses_on(
        &self,
        ifindex: u32,
    ) -> Result<Vec<(AddressMessage, IpAddr)>, DataPlaneError> {
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute()
            .try_collect()
            .await
            .map_err(|e| DataPlaneError::Netlink(format!("cannot list addresses: {e}")))?;
        Ok(messages
            .into_iter()
            .filter_map(|m| {
                let address = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })?;
                Some((m, address))
            })
            .collect())
    }

    /// Adds (or replaces, which resets the lifetime of) every VIP of the group.
    async fn install(
        &self,
        vips: &VipSet,
        ifindex: u32,
        until: Instant,
    ) -> Result<(), DataPlaneError> {
        let lifetime = u32::try_from(vips.address_lifetime.as_secs().max(1)).unwrap_or(u32::MAX);
        for vip in &vips.addresses {
            let mut request = self
                .handle
                .address()
                .add(ifindex, vip.addr(), vip.prefix_len())
                .replace();
            let message = request.message_mut();
            let mut cache_info = CacheInfo::default();
            cache_info.ifa_preferred = lifetime;
            cache_info.ifa_valid = lifetime;
            message
                .attributes
                .push(AddressAttribute::CacheInfo(cache_info));
            if vip.addr().is_ipv6() {
                // A VIP moves between gateways: DAD would keep it tentative for a second
                // while the old holder may still answer for it.
                message.header.flags |= AddressHeaderFlags::Nodad;
                message
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            // Checked right before each change: the hold rule's decision may be stale if
            // this task was descheduled since (the lease is the only proof it may hold).
            if Instant::now() >= until {
                return Err(DataPlaneError::LeaseExpired {
                    group: vips.group.clone(),
                });
            }
            match request.execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(e) => return Err(address_error(vips, "add", *vip, e)),
            }
        }
        Ok(())
    }

    async fn delete(
        &self,
        vips: &VipSet,
        vip: IpNet,
        message: AddressMessage,
    ) -> Result<(), DataPlaneError> {
        match self.handle.address().del(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(EADDRNOTAVAIL) => Ok(()),
            Err(e) => Err(address_error(vips, "remove", vip, e)),
        }
    }

    /// Removes every VIP of the group from `ifindex` before returning (see `remove.rs`).
    fn remove_all(&self, vips: &VipSet, ifindex: u32) -> Result<(), DataPlaneError> {
        self.remover
            .remove(ifindex, &vips.addresses)
            .map_err(|e| DataPlaneError::Address {
                group: vips.group.clone(),
                action: "remove",
                address: e.address,
                interface: vips.interface.clone(),
                why: e.why,
            })
    }

    /// `install`, given up at `until`: the group loop awaits a hold, and a netlink answer
    /// that never comes must not keep it from releasing when the lease ends (measured on
    /// a loaded lab: a hold that took 1.7 s, and the release after it as late).
    async fn install_by(
        &self,
        vips: &VipSet,
        ifindex: u32,
        until: Instant,
    ) -> Result<(), DataPlaneError> {
        tokio::time::timeout_at(until, self.install(vips, ifindex, until))
            .await
            .map_err(|_| DataPlaneError::LeaseExpired {
                group: vips.group.clone(),
            })?
    }

    async fn hold_vips(&self, vips: &VipSet, until: Instant) -> Result<(), DataPlaneError> {
        let now = Instant::now();
        let reshaped = (lock(&self.held).get(&vips.group))
            .filter(|h| h.addresses != vips.addresses)
            .map(|h| (h.ifindex, h.addresses.clone()));
        if let Some((ifindex, old)) = reshaped {
            return self.reshape(vips, ifindex, &old, until).await;
        }
        let due = refresh_interval(vips.address_lifetime);
        let refresh = lock(&self.held).get_mut(&vips.group).map(|h| {
            h.announcer.extend(until);
            let lapsed = now + GUARD_AHEAD >= h.lease_end;
            (h.ifindex, lapsed || now.duration_since(h.refreshed) >= due)
        });
        let fenced =
            (self.fence.as_ref()).is_some_and(|f| f.must_reinstall(&vips.group, now.into_std()));
        let refresh = refresh.map(|(ifindex, due)| (ifindex, due || fenced));
        if let Some((ifindex, due)) = refresh {
            if due {
                self.install_by(vips, ifindex, until).await?;
                if let Some(h) = lock(&self.held).get_mut(&vips.group) {
                    h.refreshed = now;
                }
            }
            self.arm(vips, ifindex, until);
            return Ok(());
        }
        let expired = || DataPlaneError::LeaseExpired {
            group: vips.group.clone(),
        };
        let (ifindex, mac) = tokio::time::timeout_at(until, self.interface(vips))
            .await
            .map_err(|_| expired())??;
        // Armed before the addresses go on: a daemon killed between the kernel adding them
        // and the arming would leave them to their kernel lifetime (CI saw it: SIGKILLed
        // just as its VIP appeared, the VIP stayed 3 s). Removing an address that never
        // went on is harmless.
        self.arm(vips, ifindex, until);
        if let Err(e) = self.install_by(vips, ifindex, until).await {
            // Not held, so no `release` will come: take back what was added; only once
            // it is gone are the guard and the fence told (a failed removal stays theirs).
            match self.remove_all(vips, ifindex) {
                Ok(()) => {
                    self.guard.disarm(&vips.group);
                    if let Some(fence) = &self.fence {
                        fence.disarm(&vips.group);
                    }
                }
                Err(undo) => {
                    tracing::warn!(group = %vips.group, "cannot undo a partial hold: {undo}")
                }
            }
            return Err(e);
        }
        self.now_held(vips, ifindex, mac, now, until);
        Ok(())
    }

    /// `vips` are on the interface: announce them, arm the deadline guard with them, and
    /// record them as held (a previous record's announcer stops).
    fn now_held(&self, vips: &VipSet, ifindex: u32, mac: [u8; 6], now: Instant, until: Instant) {
        let target = Target {
            group: vips.group.clone(),
            interface: vips.interface.clone(),
            ifindex,
            mac,
            addresses: vips.addresses.iter().map(|a| a.addr()).collect(),
        };
        let announcer = Announcer::start(target, vips.announce, until);
        self.arm(vips, ifindex, until);
        let held = Held {
            ifindex,
            refreshed: now,
            lease_end: until,
            announcer,
            addresses: vips.addresses.clone(),
        };
        if let Some(old) = lock(&self.held).insert(vips.group.clone(), held) {
            old.announcer.stop();
        }
    }

    /// A held group whose addresses changed (a reload): the ones no longer listed are
    /// removed (always safe), the new set installed under the lease, and announced; the
    /// addresses in both never leave the interface.
    async fn reshape(
        &self,
        vips: &VipSet,
        ifindex: u32,
        old: &[IpNet],
        until: Instant,
    ) -> Result<(), DataPlaneError> {
        let dropped: Vec<IpNet> = (old.iter())
            .filter(|a| !vips.addresses.contains(a))
            .copied()
            .collect();
        if !dropped.is_empty() {
            let gone = VipSet {
                addresses: dropped,
                ..vips.clone()
            };
            self.remove_all(&gone, ifindex)?;
        }
        // The new set armed before it goes on, as in a first hold.
        self.arm(vips, ifindex, until);
        self.install_by(vips, ifindex, until).await?;
        let expired = || DataPlaneError::LeaseExpired {
            group: vips.group.clone(),
        };
        let (_, mac) = tokio::time::timeout_at(until, self.interface(vips))
            .await
            .map_err(|_| expired())??;
        self.now_held(vips, ifindex, mac, Instant::now(), until);
        Ok(())
    }

    /// The guard thread and the fence take `vips` down at the end of the lease `until`.
    fn arm(&self, vips: &VipSet, ifindex: u32, until: Instant) {
        if let Some(h) = lock(&self.held).get_mut(&vips.group) {
            h.lease_end = until;
        }
        let lease_end = until.into_std();
        (self.guard).arm(&vips.group, (ifindex, vips.addresses.clone()), lease_end);
        if let Some(fence) = &self.fence {
            fence.arm(&vips.group, ifindex, &vips.addresses, lease_end);
        }
    }

    async fn release_vips(&self, vips: &VipSet) -> Result<(), DataPlaneError> {
        self.guard.disarm(&vips.group);
        let held = lock(&self.held).remove(&vips.group);
        let ifindex = match held {
            Some(h) => {
                h.announcer.stop();
                h.ifindex
            }
            None => match self.interface(vips).await {
                Ok((ifindex, _)) => ifindex,
                // No interface, no address on it (nor anything for the fence to do).
                Err(DataPlaneError::NoInterface { .. }) => {
                    if let Some(fence) = &self.fence {
                        fence.disarm(&vips.group);
                    }
                    return Ok(());
                }
                Err(e) => return Err(e),
            },
        };
        self.remove_all(vips, ifindex)?;
        // Only once they are gone: a removal that failed stays the fence's to retry at
        // the lease's end.
        if let Some(fence) = &self.fence {
            fence.disarm(&vips.group);
        }
        Ok(())
    }
}

impl DataPlane for NetlinkDataPlane {
    fn kind(&self) -> &'static str {
        "netlink"
    }

    fn hold<'a>(&'a self, vips: &'a VipSet, until: Instant) -> DataPlaneResult<'a> {
        Box::pin(self.hold_vips(vips, until))
    }

    fn release<'a>(&'a self, vips: &'a VipSet) -> DataPlaneResult<'a> {
        Box::pin(self.release_vips(vips))
    }

    fn taken_down_at(&self, group: &str) -> Option<Instant> {
        self.guard.take_fired(group).map(Instant::from_std)
    }

    fn announce<'a>(&'a self, vips: &'a VipSet) -> DataPlaneResult<'a> {
        Box::pin(async move {
            if let Some(h) = lock(&self.held).get(&vips.group) {
                h.announcer.burst();
            }
            Ok(())
        })
    }
}

/// Whether an address was configured without a lifetime (an operator's, not ours).
fn is_permanent(message: &AddressMessage) -> bool {
    message.attributes.iter().any(|a| match a {
        AddressAttribute::Flags(flags) => flags.contains(AddressFlags::Permanent),
        AddressAttribute::CacheInfo(info) => info.ifa_valid == u32::MAX,
        _ => false,
    }) || message.header.flags.contains(AddressHeaderFlags::Permanent)
}

/// The positive errno of a netlink error answer, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        // Saturating, as `remove::acknowledgements` (where the fuzz target `netlink_ack`
        // found that -i32::MIN panics): the same kernel field, read the same way.
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().saturating_neg()),
        _ => None,
    }
}

fn address_error(
    vips: &VipSet,
    action: &'static str,
    address: IpNet,
    e: rtnetlink::Error,
) -> DataPlaneError {
    DataPlaneError::Address {
        group: vips.group.clone(),
        action,
        address,
        interface: vips.interface.clone(),
        why: e.to_string(),
    }
}

/// How long `hold` waits between refreshes: a third of the lifetime.
pub fn refresh_interval(lifetime: Duration) -> Duration {
    lifetime / 3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same overflow the fuzz target `netlink_ack` found in `remove.rs`.
    #[test]
    fn errno_of_the_most_negative_code_does_not_overflow() {
        let mut msg = netlink_packet_core::ErrorMessage::default();
        msg.code = std::num::NonZeroI32::new(i32::MIN);
        assert_eq!(errno(&rtnetlink::Error::NetlinkError(msg)), Some(i32::MAX));
        let mut msg = netlink_packet_core::ErrorMessage::default();
        msg.code = std::num::NonZeroI32::new(-libc::EEXIST);
        assert_eq!(
            errno(&rtnetlink::Error::NetlinkError(msg)),
            Some(libc::EEXIST)
        );
    }
}
