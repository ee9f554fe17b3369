//! The data plane: putting a group's VIPs on an interface and taking them off. The hold
//! rule decides *when*; this module only does it. Implementations: `observe` (logs what it
//! would do; `--observe-only`, and the only one until netlink lands).

pub mod observe;

use std::future::Future;
use std::pin::Pin;

use ipnet::IpNet;

/// A group's VIPs, as the data plane needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipSet {
    pub group: String,
    pub interface: String,
    pub addresses: Vec<IpNet>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("group {group}: cannot {action} {address} on {interface}: {why}")]
    Address {
        group: String,
        action: &'static str,
        address: IpNet,
        interface: String,
        why: String,
    },
}

pub type DataPlaneResult<'a> =
    Pin<Box<dyn Future<Output = Result<(), DataPlaneError>> + Send + 'a>>;

/// What the hold loop needs from a data plane. `hold` is called on every tick while the
/// rule holds (an implementation refreshes address lifetimes at its own pace); `release`
/// must be idempotent and must be done before it returns: the hold loop reports the
/// release only afterwards.
pub trait DataPlane: Send + Sync {
    /// Short name for status and logs ("observe-only", "netlink").
    fn kind(&self) -> &'static str;
    fn hold<'a>(&'a self, vips: &'a VipSet) -> DataPlaneResult<'a>;
    fn release<'a>(&'a self, vips: &'a VipSet) -> DataPlaneResult<'a>;
    /// Announce the VIPs again (a peer reconnected, the link came back).
    fn announce<'a>(&'a self, vips: &'a VipSet) -> DataPlaneResult<'a>;
}
