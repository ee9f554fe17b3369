//! openraft glue: every openraft type lives in this folder.

pub mod network;
pub mod rpc;
pub mod state;
pub mod store;
pub mod ticks;
pub mod types;
