//! One pool's applier: makes this gateway's HAProxy backend hold what the cluster decided
//! for each server, and says where it does not. Every round it reads `show servers state`,
//! sends what `plan` says (state, health, weight), reads back, and publishes a
//! `PoolStatus` (for `havip status` and /metrics). A round runs when the decision changes
//! and every `interval` besides, so an HAProxy that restarted or reloaded (and so forgot
//! every runtime change) is put right within one interval; that it forgot is noticed
//! (HAProxy no longer has what it had confirmed) and logged and counted.
//!
//! It decides nothing (`desired` and `plan` do) and must never block the daemon on
//! HAProxy: every exchange is bounded (`socket::COMMAND_TIMEOUT`), and a pool whose
//! HAProxy is gone only reports so.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::codec::{AdminState, ObservedServer};
use super::plan::{Desired, plan};
use super::socket::{HaproxyError, RuntimeApi};

/// One pool as this gateway's HAProxy has it, for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub pool: String,
    /// The backend's name in haproxy.cfg.
    pub backend: String,
    pub socket: String,
    pub servers: Vec<ServerStatus>,
    /// Why the last round could not read HAProxy or a command was refused; None when all
    /// went through.
    pub error: Option<String>,
    /// What HAProxy has that differs from what was decided, after the last round's
    /// commands ("crm-1: weight 10, wanted 5"); empty when they agree.
    pub drift: Vec<String>,
    /// Rounds so far (0: HAProxy not asked yet).
    pub rounds: u64,
    /// `set server` commands sent so far.
    pub commands_sent: u64,
    /// How often HAProxy lost what havip had applied and confirmed (a restart, a reload, a
    /// hand edit over the socket), each time applied again.
    pub reapplied: u64,
}

impl PoolStatus {
    /// Whether HAProxy answered the last round and holds what was decided.
    pub fn in_sync(&self) -> bool {
        self.rounds > 0 && self.error.is_none() && self.drift.is_empty()
    }
}

/// One server: what was decided and what HAProxy has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub name: String,
    pub desired: Desired,
    /// None when HAProxy could not be read or does not list the server.
    pub observed: Option<ObservedState>,
    /// HAProxy has what was decided for this server.
    pub in_sync: bool,
}

/// What HAProxy reports for one server, in havip's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedState {
    pub admin: AdminState,
    pub up: bool,
    pub weight: u16,
}

impl From<&ObservedServer> for ObservedState {
    fn from(s: &ObservedServer) -> Self {
        ObservedState {
            admin: s.admin(),
            up: s.up(),
            weight: s.weight,
        }
    }
}

/// The applier's memory between rounds.
pub struct Applier {
    api: RuntimeApi,
    status: PoolStatus,
    observed: Vec<ObservedServer>,
    /// The decision HAProxy was last confirmed to hold: if a later read differs while the
    /// decision has not changed, HAProxy lost it.
    confirmed: Option<BTreeMap<String, Desired>>,
}

impl Applier {
    pub fn new(pool: &str, backend: &str, api: RuntimeApi) -> Self {
        let status = PoolStatus {
            pool: pool.to_string(),
            backend: backend.to_string(),
            socket: api.socket().display().to_string(),
            ..PoolStatus::default()
        };
        Applier {
            api,
            status,
            observed: Vec::new(),
            confirmed: None,
        }
    }

    /// One round: read, send what differs, read back. Returns the status after it.
    pub async fn round(&mut self, want: &BTreeMap<String, Desired>) -> &PoolStatus {
        self.status.rounds += 1;
        let error = self.exchange(want).await.err();
        self.note_error(error.as_ref());
        self.status.error = error.map(|e| e.to_string());
        self.status.servers = self.server_status(want);
        &self.status
    }

    async fn exchange(&mut self, want: &BTreeMap<String, Desired>) -> Result<(), HaproxyError> {
        let backend = self.status.backend.clone();
        self.observed = Vec::new();
        let observed = self.api.servers_state(&backend).await?;
        let first = plan(&backend, want, &observed);
        let mut refused = None;
        if !first.commands.is_empty() {
            self.log_applying(want, &first.differences);
            for command in &first.commands {
                self.status.commands_sent += 1;
                if let Err(e) = self.api.set(command).await {
                    refused.get_or_insert(e);
                }
            }
        }
        let observed = if first.commands.is_empty() {
            observed
        } else {
            self.api.servers_state(&backend).await?
        };
        let after = plan(&backend, want, &observed);
        self.observed = observed;
        self.note_drift(after.differences);
        self.confirmed = self.status.drift.is_empty().then(|| want.clone());
        refused.map_or(Ok(()), Err)
    }

    /// Says what is being applied, and whether HAProxy lost what it had confirmed.
    fn log_applying(&mut self, want: &BTreeMap<String, Desired>, differences: &[String]) {
        let pool = &self.status.pool;
        if self.confirmed.as_ref() == Some(want) {
            self.status.reapplied += 1;
            tracing::warn!(
                pool = %pool,
                "haproxy: {} no longer has what havip applied (restarted, reloaded or changed by hand); applying again: {}",
                self.status.socket,
                differences.join("; ")
            );
        } else {
            tracing::info!(pool = %pool, "haproxy: applying: {}", differences.join("; "));
        }
    }

    /// Logs drift when it appears, changes or clears, not every round.
    fn note_drift(&mut self, drift: Vec<String>) {
        if drift != self.status.drift {
            let pool = &self.status.pool;
            if drift.is_empty() {
                tracing::info!(pool = %pool, "haproxy: in sync with the cluster's decision");
            } else {
                tracing::warn!(pool = %pool, "haproxy: drift after applying: {}", drift.join("; "));
            }
        }
        self.status.drift = drift;
    }

    /// Logs an error when it appears or changes, not every round.
    fn note_error(&self, error: Option<&HaproxyError>) {
        let text = error.map(ToString::to_string);
        if text != self.status.error {
            match text {
                Some(text) => tracing::warn!(pool = %self.status.pool, "haproxy: {text}"),
                None if self.status.rounds > 1 => {
                    tracing::info!(pool = %self.status.pool, "haproxy: {} answers again", self.status.socket)
                }
                None => {}
            }
        }
    }

    fn server_status(&self, want: &BTreeMap<String, Desired>) -> Vec<ServerStatus> {
        want.iter()
            .map(|(name, desired)| {
                let observed = self.observed.iter().find(|s| &s.name == name);
                let prefix = format!("{name}: ");
                ServerStatus {
                    name: name.clone(),
                    desired: *desired,
                    observed: observed.map(ObservedState::from),
                    in_sync: observed.is_some()
                        && !self.status.drift.iter().any(|d| d.starts_with(&prefix)),
                }
            })
            .collect()
    }
}

/// Runs `applier` until `shutdown`: a round whenever `desired` changes, and every
/// `interval`, each published on `status`.
pub async fn run(
    mut applier: Applier,
    mut desired: watch::Receiver<BTreeMap<String, Desired>>,
    status: watch::Sender<PoolStatus>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let want = desired.borrow_and_update().clone();
        let now = applier.round(&want).await.clone();
        status.send_replace(now);
        tokio::select! {
            changed = desired.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}
