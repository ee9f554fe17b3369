//! openraft glue: every openraft type lives in this folder.

pub mod state;
pub mod store;
pub mod types;
