//! Peer transport: one encrypted, mutually authenticated TCP connection per pair of nodes,
//! carrying every VIP group's Raft RPCs as opaque payloads tagged with a channel. It must
//! never interpret a payload (it knows nothing of Raft) and never deliver bytes that were
//! not authenticated with the cluster key.
//!
//! - `frame`: the pure application-frame codec (no sockets).
//! - `noise`: the Noise `NNpsk0` handshake and the encrypted frame stream.
//! - `mesh`: sockets, who dials whom, reconnects, request multiplexing, counters.
//! - `tuning`: the peer sockets' options (dead paths, loss recovery inside the hold lease).
//! - `forged`: the count of requests that spoke for another node than their connection's.

pub mod forged;
pub mod frame;
pub mod mesh;
pub mod noise;
pub mod tuning;

pub use mesh::{Mesh, MeshConfig, MeshCounters, MeshError, RequestHandler};
