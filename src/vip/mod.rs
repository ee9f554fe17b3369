//! The data plane: putting a group's VIPs on an interface and taking them off. The hold
//! rule decides *when*; this module only does it. Implementations: `netlink` (addresses
//! under a kernel lifetime, announced with GARP/NA) and `observe` (logs what it would do;
//! `--observe-only`). Beside them: `link` (carrier watch and link feeds), `caps`
//! (privileges), `open` (which data plane the daemon runs with) and `fence` (the process
//! that enforces the hold lease when the daemon cannot).

pub mod announce;
pub mod caps;
mod deadline_guard;
pub mod fence;
mod fence_line;
pub mod fence_process;
pub mod link;
pub mod netlink;
pub mod observe;
pub mod open;
pub mod packet;
pub mod raw;
mod remove;

pub use remove::acknowledgements as netlink_acknowledgements;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::Announce;

/// A group's VIPs, as the data plane needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipSet {
    pub group: String,
    pub interface: String,
    pub addresses: Vec<IpNet>,
    /// The kernel lifetime each address is installed with (refreshed while held).
    pub address_lifetime: Duration,
    pub announce: Announce,
}

impl VipSet {
    /// The data plane's view of a configured group.
    pub fn of(group: &crate::config::VipGroup) -> VipSet {
        VipSet {
            group: group.name.clone(),
            interface: group.interface.clone(),
            addresses: group.addresses.clone(),
            address_lifetime: group.address_lifetime,
            announce: group.announce,
        }
    }
}

/// What the data plane could not do, naming the group, the address and the interface.
/// Plain data (`Clone`, `Eq`), so the group's pure state machine can take it as an
/// observation and its scenario tests can write one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataPlaneError {
    #[error("group {group}: cannot {action} {address} on {interface}: {why}")]
    Address {
        group: String,
        action: &'static str,
        address: IpNet,
        interface: String,
        why: String,
    },
    #[error(
        "group {group}: interface {interface} does not exist (vip_group[{group}].interface); create it or fix the config"
    )]
    NoInterface { group: String, interface: String },
    #[error(
        "group {group}: {address} is configured statically on {interface} (permanent, no lifetime); havip would delete an operator's address; remove it from the interface or from vip_group[{group}].addresses"
    )]
    StaticAddress {
        group: String,
        address: IpNet,
        interface: String,
    },
    #[error("netlink: {0}")]
    Netlink(String),
    /// The hold lease ran out between the decision to hold and the netlink call (the
    /// process was descheduled or frozen): the address is not added or refreshed.
    #[error("group {group}: the hold lease ran out before the VIPs could be added or refreshed")]
    LeaseExpired { group: String },
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
    /// Adds (or refreshes) the VIPs; refuses to touch an address at or after `until`,
    /// the end of the hold lease that allowed this call.
    fn hold<'a>(&'a self, vips: &'a VipSet, until: tokio::time::Instant) -> DataPlaneResult<'a>;
    fn release<'a>(&'a self, vips: &'a VipSet) -> DataPlaneResult<'a>;
    /// Announce the VIPs again (a peer reconnected, the link came back).
    fn announce<'a>(&'a self, vips: &'a VipSet) -> DataPlaneResult<'a>;
    /// The groups this data plane has put on the host and not removed, each with the time
    /// left until the deadline of its last `hold` (zero once passed): what the host still
    /// carries, bounded by where lease enforcement below the daemon would cut it. For
    /// test watchers (`Request::Held`). `None`: not kept. The netlink data plane answers
    /// `None`: its truth is the kernel's address table, which a watcher reads itself
    /// (`ip address`, netlink events); its own memory would be the daemon's belief again.
    fn held(&self) -> Option<Vec<(String, Duration)>> {
        None
    }
    /// When something below the group loop (the netlink plane's deadline guard) took the
    /// group's VIPs down at the end of their hold lease because the loop had not, asked
    /// once by the loop's release to time it truly. `None`: nothing did.
    fn taken_down_at(&self, _group: &str) -> Option<tokio::time::Instant> {
        None
    }
}
