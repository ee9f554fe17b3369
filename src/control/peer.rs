//! Answers what peers' daemons ask this one on the mesh (`PeerRequest`): whether its
//! store is pristine (bootstrap), which groups it holds and its health checks (their
//! `havip status`), and forwarded writes (committed here if this node leads). It also
//! routes the mesh's Raft channel to the groups' Raft. It must never answer a write
//! before it is committed.

use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;

use super::context::Control;
use super::protocol::{CONTROL_CHANNEL, PeerReply, PeerRequest};
use crate::consensus::bootstrap::{is_pristine, presence};
use crate::consensus::network::RaftService;
use crate::consensus::rpc::RAFT_CHANNEL;
use crate::peer::RequestHandler;

/// The mesh's request handler. It exists before the groups (the mesh carries their Raft
/// traffic from the start), so the control context is set once they run; until then only
/// `Pristine` is answered.
pub struct PeerHandler {
    pub raft: RaftService,
    pub control: OnceLock<Arc<Control>>,
    /// Whether the store was pristine at start; once the groups run, their live Raft
    /// state answers instead.
    pub pristine_at_start: bool,
}

impl PeerHandler {
    pub fn new(pristine_at_start: bool, raft: RaftService) -> Self {
        PeerHandler {
            raft,
            control: OnceLock::new(),
            pristine_at_start,
        }
    }
}

impl RequestHandler for PeerHandler {
    fn handle(
        &self,
        from: &str,
        channel: u16,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        match channel {
            RAFT_CHANNEL => self.raft.handle(from, payload),
            CONTROL_CHANNEL => {
                let control = self.control.get().cloned();
                let pristine = control.as_ref().map_or(self.pristine_at_start, |c| {
                    is_pristine(c.groups().iter().map(|(_, h)| &h.raft))
                });
                let from = from.to_string();
                Box::pin(async move {
                    let request: PeerRequest = serde_json::from_slice(&payload)
                        .map_err(|e| format!("malformed control request: {e}"))?;
                    if let Err(why) = speaks_for_itself(&from, &request) {
                        crate::peer::forged::record(&why);
                        return Err(why);
                    }
                    let reply = match (request, control) {
                        (PeerRequest::Pristine, _) => PeerReply::Pristine(pristine),
                        (request, Some(control)) => answer(&control, request).await,
                        (_, None) => PeerReply::Failed("still starting".into()),
                    };
                    serde_json::to_vec(&reply).map_err(|e| e.to_string())
                })
            }
            other => Box::pin(async move { Err(format!("unknown channel {other}")) }),
        }
    }
}

/// A peer forwards any operator command (the operator may run the CLI on any node), but
/// a report only for itself: its facts, its mastership, what it saw of a server.
fn speaks_for_itself(from: &str, request: &PeerRequest) -> Result<(), String> {
    match request {
        PeerRequest::Write { group, command } => match command.reported_by() {
            Some(node) if node != from => Err(format!(
                "group {group}: {from} proposed a report for {node} ({command}): dropped"
            )),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The answer to one peer request, once the groups run.
async fn answer(control: &Control, request: PeerRequest) -> PeerReply {
    match request {
        PeerRequest::Pristine => PeerReply::Pristine(false),
        PeerRequest::GroupPresence { group } => {
            PeerReply::GroupPresence(presence(control.groups().get(&group).map(|g| &g.raft)))
        }
        PeerRequest::Holdings => PeerReply::Holdings(control.groups().holdings()),
        PeerRequest::Fingerprints => PeerReply::Fingerprints(control.fingerprints()),
        PeerRequest::Checks => PeerReply::Checks(control.local_checks()),
        PeerRequest::Backends => PeerReply::Backends(control.local_backends()),
        PeerRequest::PeerList => PeerReply::PeerList {
            role: control.members().role,
            peers: control.members().all.clone(),
            commands: crate::consensus::state::COMMAND_LEVEL,
        },
        PeerRequest::Write { group, command } => {
            control.proposer.write_as_leader(&group, command).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::state::Command;

    fn write(command: Command) -> PeerRequest {
        PeerRequest::Write {
            group: "crm".into(),
            command,
        }
    }

    #[test]
    fn a_peer_reports_only_for_itself_but_forwards_any_operator_command() {
        let report = write(Command::MasterChanged {
            node: "gw-a".into(),
            term: 4,
            at_unix_ms: 0,
        });
        assert_eq!(speaks_for_itself("gw-a", &report), Ok(()));
        let e = speaks_for_itself("gw-b", &report).expect_err("gw-b for gw-a");
        assert!(e.contains("gw-b proposed a report for gw-a"), "{e}");
        let operator = write(Command::SetMaintenance {
            node: "gw-a".into(),
            on: true,
            at_unix_ms: 0,
        });
        assert_eq!(speaks_for_itself("gw-b", &operator), Ok(()));
        assert_eq!(speaks_for_itself("gw-b", &PeerRequest::Holdings), Ok(()));
    }
}
