//! `havip release`: removes the VIPs a dead daemon left on this host's interfaces.
//!
//! A daemon that is SIGKILLed, crashes or is OOM-killed cannot remove its addresses; the
//! kernel does when their lifetime runs out (`address_lifetime`, 3 s by default), and
//! until then the dead node still answers ARP for a VIP that another gateway already
//! holds. Run right after the daemon exits (systemd's `ExecStopPost`, the lab's
//! supervisor), this makes that window milliseconds. Removing an address can never make
//! two holders, so the only care needed is not to take a *running* daemon's VIPs: the
//! store's lock proves no daemon of this node runs.

use crate::config::Config;
use crate::consensus::store::{Store, StoreError};
use crate::vip::netlink::NetlinkDataPlane;
use crate::vip::{DataPlaneError, VipSet, caps};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Missing CAP_NET_ADMIN, with what to do.
    #[error("{0}")]
    Privileges(String),
    #[error(
        "{0}; a running daemon owns its VIPs (nothing was removed): stop it with SIGTERM, which releases them"
    )]
    Running(StoreError),
    #[error(
        "{0}; without the store's lock havip cannot tell that no daemon runs, so nothing was removed"
    )]
    Store(StoreError),
    #[error(transparent)]
    DataPlane(#[from] DataPlaneError),
}

/// Removes every address of the config's VIP groups that is on its interface with a
/// finite lifetime (an operator's permanent address is refused, as at startup). Returns
/// how many were removed; a missing interface has nothing to remove.
pub async fn release(config: &Config) -> Result<usize, ReleaseError> {
    let missing = caps::missing();
    if !missing.is_empty() {
        return Err(ReleaseError::Privileges(caps::explain(&missing)));
    }
    let _lock = Store::open(&config.node.data_dir).map_err(|e| match e {
        e @ StoreError::Locked { .. } => ReleaseError::Running(e),
        e => ReleaseError::Store(e),
    })?;
    let netlink = NetlinkDataPlane::new(None)?;
    let mut removed = 0;
    for group in &config.vip_groups {
        match netlink.reconcile(&[VipSet::of(group)]).await {
            Ok(n) => removed += n,
            Err(DataPlaneError::NoInterface { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(removed)
}
