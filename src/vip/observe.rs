//! The observe-only data plane: it changes nothing on the host and logs what the real one
//! would do. Used with `havip run --observe-only` (and by the loopback cluster tests),
//! so the control plane can be exercised without root or interfaces.
//!
//! It keeps what a real host would carry: per held group, the hold deadline it was last
//! given. That deadline is where kernel-level enforcement would cut a frozen or killed
//! daemon's address, so the cluster tests' watcher reads this record (`Request::Held`)
//! instead of the daemon's own belief, and a frozen holder still counts until it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use ipnet::IpNet;
use tokio::time::Instant;

use super::{DataPlane, DataPlaneResult, VipSet};

#[derive(Default)]
pub struct ObserveOnly {
    /// Held groups: the `until` of the last `hold` call for each, and its addresses.
    held: Mutex<BTreeMap<String, (Instant, Vec<IpNet>)>>,
}

/// What a `hold` changed, for the log.
enum Change {
    Added,
    Reshaped { old: Vec<IpNet> },
    Refreshed,
}

impl ObserveOnly {
    /// Records `vips` as held until `until`; says what changed, so that only changes are
    /// logged.
    fn hold_until(&self, vips: &VipSet, until: Instant) -> Change {
        let Ok(mut held) = self.held.lock() else {
            return Change::Refreshed;
        };
        // Refreshed on every hold (each heartbeat): the addresses are copied only when
        // they are new or changed.
        match held.get_mut(&vips.group) {
            Some((held_until, addresses)) => {
                *held_until = until;
                if *addresses == vips.addresses {
                    return Change::Refreshed;
                }
                let old = std::mem::replace(addresses, vips.addresses.clone());
                Change::Reshaped { old }
            }
            None => {
                held.insert(vips.group.clone(), (until, vips.addresses.clone()));
                Change::Added
            }
        }
    }

    /// Forgets `group`; true if it was held.
    fn forget(&self, group: &str) -> bool {
        self.held
            .lock()
            .is_ok_and(|mut held| held.remove(group).is_some())
    }
}

impl DataPlane for ObserveOnly {
    fn kind(&self) -> &'static str {
        "observe-only"
    }

    fn hold<'a>(&'a self, vips: &'a VipSet, until: Instant) -> DataPlaneResult<'a> {
        Box::pin(async move {
            match self.hold_until(vips, until) {
                Change::Added => {
                    tracing::info!(group = %vips.group, interface = %vips.interface, addresses = ?vips.addresses,
                        "observe-only: would add the VIPs and announce them")
                }
                Change::Reshaped { old } => {
                    let added: Vec<_> = (vips.addresses.iter())
                        .filter(|a| !old.contains(a))
                        .collect();
                    let removed: Vec<_> = (old.iter())
                        .filter(|a| !vips.addresses.contains(a))
                        .collect();
                    tracing::info!(group = %vips.group, interface = %vips.interface, ?added, ?removed,
                        "observe-only: would add and remove only these VIPs, the others staying")
                }
                Change::Refreshed => {}
            }
            Ok(())
        })
    }

    fn release<'a>(&'a self, vips: &'a VipSet) -> DataPlaneResult<'a> {
        Box::pin(async move {
            if self.forget(&vips.group) {
                tracing::info!(group = %vips.group, interface = %vips.interface, "observe-only: would remove the VIPs");
            }
            Ok(())
        })
    }

    fn announce<'a>(&'a self, vips: &'a VipSet) -> DataPlaneResult<'a> {
        Box::pin(async move {
            tracing::info!(group = %vips.group, "observe-only: would announce the VIPs again");
            Ok(())
        })
    }

    fn held(&self) -> Option<Vec<(String, Duration)>> {
        let now = Instant::now();
        // A poisoned lock means a panic mid-update: report nothing rather than a guess.
        let held = self.held.lock().ok()?;
        Some(
            held.iter()
                .map(|(group, (until, _))| (group.clone(), until.saturating_duration_since(now)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vips(group: &str) -> VipSet {
        VipSet {
            group: group.into(),
            interface: "eth1".into(),
            addresses: vec![],
            address_lifetime: Duration::from_secs(3),
            announce: Default::default(),
        }
    }

    #[tokio::test]
    async fn the_held_set_keeps_the_last_deadline_until_released() {
        let plane = ObserveOnly::default();
        assert_eq!(plane.held(), Some(vec![]));
        let now = Instant::now();
        plane
            .hold(&vips("crm"), now + Duration::from_secs(5))
            .await
            .ok();
        plane
            .hold(&vips("crm"), now + Duration::from_secs(9))
            .await
            .ok();
        plane.hold(&vips("web"), now).await.ok();
        let held = plane.held().unwrap_or_default();
        assert_eq!(held.len(), 2, "{held:?}");
        assert_eq!(held[0].0, "crm");
        // The later deadline replaced the first one.
        assert!(held[0].1 > Duration::from_secs(8), "{held:?}");
        // A deadline already passed is still on the record, with no time left.
        assert_eq!(held[1], ("web".to_string(), Duration::ZERO));
        plane.release(&vips("crm")).await.ok();
        plane.release(&vips("crm")).await.ok();
        assert_eq!(
            plane.held(),
            Some(vec![("web".to_string(), Duration::ZERO)])
        );
    }
}
