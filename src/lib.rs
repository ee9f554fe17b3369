//! havip: high-availability virtual IPs for paired Linux gateways, with the master
//! elected through Raft. The binary (`src/main.rs`) is a thin CLI over this library.
// `unsafe` is refused everywhere but in `vip::raw`, which allows it for its one block
// (deny, not forbid: forbid could not be lifted for that module).
#![deny(unsafe_code)]
// No `unwrap`/`expect` in the daemon: an error a user, a peer or the kernel can cause is
// returned with what was wrong and where; a value that truly cannot fail says why where it
// is taken (`platform::lock` for mutexes). Tests may unwrap (clippy.toml).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod config;
pub mod consensus;
pub mod control;
pub mod daemon;
pub mod group;
pub mod haproxy;
pub mod health;
pub mod hold;
pub mod journal;
pub mod key;
pub mod lateness;
pub mod peer;
pub mod platform;
pub mod policy;
pub mod release;
pub mod systemd;
pub mod vip;
