//! Opens the data plane the daemon runs with: the netlink one (after checking the
//! privileges it needs and removing what a previous run left on the VIP interfaces) with
//! its link watch, or, with `--observe-only`, one that only records. It must never
//! reconcile while another daemon may hold the VIPs: the caller holds the store's lock.

use std::sync::Arc;

use super::caps::{self, Capability};
use super::fence::Fence;
use super::link::{LinkWatch, LinkWatchError};
use super::netlink::NetlinkDataPlane;
use super::observe::ObserveOnly;
use super::{DataPlane, DataPlaneError, VipSet};

/// Why the data plane could not be opened; says what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Missing CAP_NET_ADMIN / CAP_NET_RAW, with what to do.
    #[error("{}", caps::explain(missing))]
    Privileges { missing: Vec<Capability> },
    #[error(transparent)]
    DataPlane(#[from] DataPlaneError),
    #[error(transparent)]
    LinkWatch(#[from] LinkWatchError),
}

/// The data plane for `vip_sets`, and the watch of their interfaces' links (none when
/// observing only).
pub async fn open(
    observe_only: bool,
    vip_sets: &[VipSet],
    fence: Option<Arc<Fence>>,
) -> Result<(Arc<dyn DataPlane>, Option<LinkWatch>), OpenError> {
    if observe_only {
        return Ok((Arc::new(ObserveOnly::default()), None));
    }
    let missing = caps::missing();
    if !missing.is_empty() {
        return Err(OpenError::Privileges { missing });
    }
    let netlink = NetlinkDataPlane::new(fence)?;
    netlink.reconcile(vip_sets).await?;
    let interfaces = vip_sets
        .iter()
        .filter(|v| !v.interface.is_empty())
        .map(|v| v.interface.clone())
        .collect();
    let links = LinkWatch::start(interfaces).await?;
    Ok((Arc::new(netlink), Some(links)))
}
