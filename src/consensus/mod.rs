//! openraft glue: every openraft type lives in this folder.

pub mod bootstrap;
pub mod group_raft;
pub mod network;
pub mod proposer;
pub mod rpc;
pub mod state;
pub mod store;
pub mod ticks;
pub mod types;
