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

use tokio::time::Instant;

use super::{DataPlane, DataPlaneResult, VipSet};

#[derive(Default)]
pub struct ObserveOnly {
    /// Held groups and the `until` of the last `hold` call for each.
    held: Mutex<BTreeMap<String, Instant>>,
}

impl ObserveOnly {
    /// Records `group` as held until `until` (or forgets it); true if it was not held
    /// before (resp. was), so that only changes are logged.
    fn set(&self, group: &str, until: Option<Instant>) -> bool {
        match self.held.lock() {
            Ok(mut held) => match until {
                Some(until) => held.insert(group.to_string(), until).is_none(),
                None => held.remove(group).is_some(),
            },
            Err(_) => false,
        }
    }
}

impl DataPlane for ObserveOnly {
    fn kind(&self) -> &'static str {
        "observe-only"
    }

    fn hold<'a>(&'a self, vips: &'a VipSet, until: Instant) -> DataPlaneResult<'a> {
        Box::pin(async move {
            if self.set(&vips.group, Some(until)) {
                tracing::info!(group = %vips.group, interface = %vips.interface, addresses = ?vips.addresses,
                    "observe-only: would add the VIPs and announce them");
            }
            Ok(())
        })
    }

    fn release<'a>(&'a self, vips: &'a VipSet) -> DataPlaneResult<'a> {
        Box::pin(async move {
            if self.set(&vips.group, None) {
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
                .map(|(group, until)| (group.clone(), until.saturating_duration_since(now)))
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
