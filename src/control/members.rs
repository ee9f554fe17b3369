//! `havip member list`: each group's Raft membership as this node's replica has it (its
//! voters, its learners, whether a change is half done in joint consensus) beside the
//! peer list of this node's config, so an operator sees where they differ, and on the
//! group's leader what its membership driver is doing about it. Read-only: the driver
//! changes the membership once every node's list agrees (`consensus::membership`).

use std::collections::BTreeSet;

use openraft::async_runtime::WatchReceiver as _;

use super::context::{Groups, Members};
use super::protocol::{GroupMembership, Response};
use crate::consensus::types::NodeId;

/// The membership of every group, each beside this node's configured peers.
pub fn member_list(groups: &Groups, members: &Members) -> Response {
    let configured: BTreeSet<String> = members.all.iter().cloned().collect();
    let found = groups
        .iter()
        .map(|(name, handle)| {
            let raft_metrics = handle.raft.metrics().borrow_watched().clone();
            let membership = raft_metrics.membership_config.membership();
            let names: std::collections::BTreeMap<NodeId, String> = membership
                .nodes()
                .map(|(id, node)| (*id, node.name.clone()))
                .collect();
            let name_of = |id: NodeId| {
                names
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| format!("node {id:x}"))
            };
            let voters: BTreeSet<String> = membership.voter_ids().map(name_of).collect();
            let learners: BTreeSet<String> = membership.learner_ids().map(name_of).collect();
            GroupMembership {
                group: name.clone(),
                joint: membership.get_joint_config().len() > 1,
                matches_config: voters.is_empty() || voters == configured,
                voters: voters.into_iter().collect(),
                learners: learners.into_iter().collect(),
                configured: configured.iter().cloned().collect(),
                change: Some(handle.membership.borrow().clone()).filter(|c| !c.is_empty()),
            }
        })
        .collect();
    Response::Members { groups: found }
}
