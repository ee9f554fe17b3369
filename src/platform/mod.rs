//! How havip uses what it runs on: one small policy per thing underneath it, each in its
//! own file, none knowing about VIPs, groups, peers or Raft.
//!
//! - `child`: child programs (exec checks, notify hooks): own process group, bounded
//!   output, bounded time.
//! - `lock`: std's mutexes, taken shrugging off poisoning (why: its doc).
//! - `process_group`: the kernel's process groups, so a child a probe or hook started dies
//!   with it.
//! - `watches`: tokio's watch channels: an optional feed, a child stop switch.
//! - `timer_grid`: tokio's timer wheel, so a timer that is moved on before it runs out
//!   costs no wake-up.
//!
//! Named `platform`, not `util`: what these have in common is not that they are small but
//! that each is the one place havip decides how to use std, the kernel or tokio. Code that
//! decides something about the cluster never goes here. (`lateness` stays at the crate's
//! root: it is the hold loop's counters, a pure part of the domain. `vip::raw`, the one
//! `unsafe` module, stays with the data plane whose sockets it opens.)

pub mod child;
pub(crate) mod lock;
pub mod process_group;
pub mod timer_grid;
pub mod watches;
