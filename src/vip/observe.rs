//! The observe-only data plane: it changes nothing on the host and logs what the real one
//! would do. Used with `havip run --observe-only` (and by the loopback cluster tests),
//! so the control plane can be exercised without root or interfaces.

use std::collections::BTreeSet;
use std::sync::Mutex;

use super::{DataPlane, DataPlaneResult, VipSet};

#[derive(Default)]
pub struct ObserveOnly {
    held: Mutex<BTreeSet<String>>,
}

impl ObserveOnly {
    fn set(&self, group: &str, held: bool) -> bool {
        match self.held.lock() {
            Ok(mut set) if held => set.insert(group.to_string()),
            Ok(mut set) => set.remove(group),
            Err(_) => false,
        }
    }
}

impl DataPlane for ObserveOnly {
    fn kind(&self) -> &'static str {
        "observe-only"
    }

    fn hold<'a>(&'a self, vips: &'a VipSet, _until: tokio::time::Instant) -> DataPlaneResult<'a> {
        Box::pin(async move {
            if self.set(&vips.group, true) {
                tracing::info!(group = %vips.group, interface = %vips.interface, addresses = ?vips.addresses,
                    "observe-only: would add the VIPs and announce them");
            }
            Ok(())
        })
    }

    fn release<'a>(&'a self, vips: &'a VipSet) -> DataPlaneResult<'a> {
        Box::pin(async move {
            if self.set(&vips.group, false) {
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
}
