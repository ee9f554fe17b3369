//! `havip failover --to NODE [--group G]` and `havip failover --clear`: commits a pin (or
//! its removal) in the selected groups, then waits a little for NODE to become master so
//! that the answer can say whether it did. The move itself is the group leaders' decision
//! (the policy honours the committed pin); this command must never transfer leadership
//! itself, and never report a pin done before it is committed.

use std::time::Duration;

use openraft::async_runtime::WatchReceiver as _;

use super::context::{Groups, Members, UnknownGroup};
use super::protocol::Response;
use crate::config::Role;
use crate::consensus::proposer::{ProposeError, Proposer};
use crate::consensus::state::Command;
use crate::consensus::types::node_id;
use crate::group::unix_ms;

/// How long the answer waits for the pinned node to become master.
const MOVE_WAIT: Duration = Duration::from_secs(3);

/// Why a failover was refused; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error(transparent)]
    UnknownGroup(#[from] UnknownGroup),
    #[error("{node} is a witness: it never holds a VIP")]
    Witness { node: String },
    #[error("{node} is not a cluster member (members: {members})")]
    NotMember { node: String, members: String },
    #[error(
        "{node} has not reported to group {group} yet (not started, or not reachable); \
         nothing was changed; try again once `havip status` lists its priority"
    )]
    NotReported { node: String, group: String },
    #[error(transparent)]
    NotCommitted(#[from] ProposeError),
}

/// Pins `group` (every group for none) to `to`, or clears the pin for `to: None`.
pub async fn failover(
    groups: &Groups,
    members: &Members,
    proposer: &Proposer,
    group: Option<String>,
    to: Option<String>,
) -> Response {
    match pin(groups, members, proposer, group, to).await {
        Ok(message) => Response::Done { message },
        Err(e) => Response::Error {
            message: e.to_string(),
        },
    }
}

async fn pin(
    groups: &Groups,
    members: &Members,
    proposer: &Proposer,
    group: Option<String>,
    to: Option<String>,
) -> Result<String, FailoverError> {
    let selected = groups.select(&group)?;
    if let Some(node) = &to {
        for g in &selected {
            may_pin(groups, members, g, node)?;
        }
    }
    let commands = selected
        .iter()
        .map(|g| {
            let pin = Command::Pin {
                node: to.clone(),
                at_unix_ms: unix_ms(),
            };
            (g.clone(), pin)
        })
        .collect();
    proposer.propose_all(commands).await?;
    let Some(node) = to else {
        return Ok(format!(
            "pin cleared for {} (committed)",
            selected.join(", ")
        ));
    };
    // The pin is committed; the leader moves the group at once if `node` is eligible.
    let list = selected.join(", ");
    Ok(if became_master(groups, &selected, &node).await {
        format!("{list} pinned to {node} (committed); {node} is master")
    } else {
        format!(
            "{list} pinned to {node} (committed); {node} is not master yet: it takes over when eligible (see `havip status`)"
        )
    })
}

/// Whether `node` may be pinned in `group`: a gateway that has reported to it.
fn may_pin(
    groups: &Groups,
    members: &Members,
    group: &str,
    node: &str,
) -> Result<(), FailoverError> {
    let known = groups.get(group).and_then(|h| {
        h.state
            .borrow()
            .nodes
            .get(node)
            .and_then(|n| n.facts.clone())
    });
    match known {
        Some(f) if f.role == Role::Gateway => Ok(()),
        Some(_) => Err(FailoverError::Witness { node: node.into() }),
        None if !members.contains(node) => Err(FailoverError::NotMember {
            node: node.into(),
            members: members.listed(),
        }),
        None => Err(FailoverError::NotReported {
            node: node.into(),
            group: group.into(),
        }),
    }
}

/// Waits up to `MOVE_WAIT` until `node` leads every one of `selected`.
async fn became_master(groups: &Groups, selected: &[String], node: &str) -> bool {
    let target = node_id(node);
    let moved = tokio::time::timeout(MOVE_WAIT, async {
        for g in selected {
            let Some(handle) = groups.get(g) else {
                continue;
            };
            let mut raft_metrics = handle.raft.metrics();
            while raft_metrics.borrow_watched().current_leader != Some(target) {
                if raft_metrics.changed().await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    moved.is_ok()
}
