//! openraft glue: every openraft type lives in this folder.

pub mod bootstrap;
pub mod group_raft;
pub mod lease;
pub mod lease_record;
pub mod member_check;
pub mod membership;
pub mod membership_plan;
pub mod network;
pub mod proposer;
pub mod rpc;
pub mod sender;
pub mod state;
pub mod store;
pub mod ticks;
pub mod types;

/// One VIP group's Raft: havip's type configuration (`types`) over its redb state machine
/// (`store`). Named here, above both, so the dependency runs one way only: `store` builds
/// on `types`, and `types` knows nothing of `store`.
pub type Raft = openraft::Raft<types::TypeConfig, store::StateMachineStore>;
