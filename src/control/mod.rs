//! The operator's side: the Unix-socket API the CLI talks to, and the requests daemons
//! forward to each other on the operator's behalf.

pub mod metrics;
pub mod notify;
pub mod protocol;
pub mod socket;
