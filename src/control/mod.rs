//! The operator's side: the Unix-socket API the CLI talks to, one file per command
//! family behind its dispatcher, the requests daemons forward to each other on the
//! operator's behalf, /metrics and the notify hooks.

pub mod backend;
pub mod config_history;
pub mod context;
pub mod dispatch;
pub mod failover;
pub mod history;
pub mod maintenance;
pub mod member_change;
pub mod members;
pub mod metrics;
pub mod metrics_snapshot;
pub mod notify;
pub mod peer;
pub mod protocol;
pub mod socket;
pub mod status;

pub use context::{Control, GroupHandle, Groups, Members, Pools};
