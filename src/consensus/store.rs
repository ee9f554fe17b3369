//! (being written) redb-backed Raft log store and state machine.
pub struct StateMachineStore;
