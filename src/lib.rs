//! havip: high-availability virtual IPs for paired Linux gateways, with the master
//! elected through Raft. The binary (`src/main.rs`) is a thin CLI over this library.
// `unsafe` is refused everywhere but in `vip::raw`, which allows it for its one block
// (deny, not forbid: forbid could not be lifted for that module).
#![deny(unsafe_code)]

pub mod config;
pub mod consensus;
pub mod control;
pub mod daemon;
pub mod group;
pub mod health;
pub mod hold;
pub mod journal;
pub mod key;
pub mod lateness;
mod lock;
pub mod peer;
pub mod policy;
pub mod process_group;
pub mod release;
pub mod systemd;
pub mod timer_grid;
pub mod vip;
