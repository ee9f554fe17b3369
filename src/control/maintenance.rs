//! `havip maintenance on|off NODE`: commits NODE's maintenance flag in every group. A node
//! in maintenance is not eligible, so its groups' leaders hand the VIPs to another
//! gateway; this command must never move anything itself, and never report the flag set
//! before it is committed in every group.

use super::context::{Groups, Members};
use super::protocol::Response;
use crate::consensus::proposer::Proposer;
use crate::consensus::state::Command;
use crate::group::unix_ms;

/// Sets (`on`) or clears NODE's maintenance flag in every group.
pub async fn maintenance(
    groups: &Groups,
    members: &Members,
    proposer: &Proposer,
    node: String,
    on: bool,
) -> Response {
    if !members.contains(&node) {
        return Response::Error {
            message: format!(
                "{node} is not a cluster member (members: {})",
                members.listed()
            ),
        };
    }
    let commands = groups
        .names()
        .map(|g| {
            let flag = Command::SetMaintenance {
                node: node.clone(),
                on,
                at_unix_ms: unix_ms(),
            };
            (g.clone(), flag)
        })
        .collect();
    if let Err(e) = proposer.propose_all(commands).await {
        return Response::Error {
            message: e.to_string(),
        };
    }
    Response::Done {
        message: format!(
            "maintenance {} for {node} (committed)",
            if on { "on" } else { "off" }
        ),
    }
}
