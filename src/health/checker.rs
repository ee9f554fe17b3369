//! One checker per configured check, whatever its kind: the scheduler only calls
//! `probe`. Never applies rise/fall or decides node health.

use super::{ExecChecker, HealthError, HttpChecker, ProbeResult, TcpChecker};
use crate::config::{CheckKind, HealthCheck};

pub enum Checker {
    Http(HttpChecker),
    Tcp(TcpChecker),
    Exec(ExecChecker),
}

impl Checker {
    pub fn new(check: &HealthCheck) -> Result<Self, HealthError> {
        Ok(match check.kind {
            CheckKind::Http { .. } => Checker::Http(HttpChecker::new(check)?),
            CheckKind::Tcp { .. } => Checker::Tcp(TcpChecker::new(check)?),
            CheckKind::Exec { .. } => Checker::Exec(ExecChecker::new(check)?),
        })
    }

    /// One probe, bounded by the check's timeout.
    pub async fn probe(&self) -> ProbeResult {
        match self {
            Checker::Http(c) => c.probe().await,
            Checker::Tcp(c) => c.probe().await,
            Checker::Exec(c) => c.probe().await,
        }
    }
}
