//! `havip status`: this node's view of every group (leader, term, whether it holds and
//! why, the pin, every node's replicated facts), with what each peer says it holds and
//! its health checks, asked over the mesh in parallel and each bounded by the peer
//! timeout (a peer that does not answer shows as unknown). Read-only.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use openraft::async_runtime::WatchReceiver as _;

use super::context::{Control, GroupHandle};
use super::protocol::{
    GroupStatus, NodeBackends, NodeChecks, NodeConfig, NodeStatus, PeerReply, PeerRequest,
    StatusReport,
};

/// Node name → the groups it says it holds (None: it did not answer).
type Holdings = BTreeMap<String, Option<Vec<String>>>;

/// The status report of this node and what its peers answered.
pub async fn status(control: &Control) -> StatusReport {
    let ((holdings, health), configs, backends) = tokio::join!(
        ask_peers(control),
        ask_configs(control),
        ask_backends(control)
    );
    let groups = control
        .groups()
        .iter()
        .map(|(name, handle)| group_status(control, name, handle, &holdings))
        .collect();
    let members = control.members();
    StatusReport {
        node: members.me.clone(),
        role: format!("{:?}", members.role).to_lowercase(),
        data_plane: control.data_plane.kind().to_string(),
        groups,
        health,
        configs,
        backends,
        not_listed_by: control.mesh.not_listed_by().into_iter().collect(),
    }
}

/// Every gateway's pools as its HAProxy has them, this node's first; nodes that answer
/// with no pools (witnesses, gateways without `[[backend]]`) are left out. Asked only
/// when this node has pools, so a cluster without backends asks nothing more.
async fn ask_backends(control: &Control) -> Vec<NodeBackends> {
    let mine = control.local_backends();
    if mine.is_empty() {
        return Vec::new();
    }
    let proposer = &control.proposer;
    let members = control.members();
    let peers: Vec<String> = members.peers().cloned().collect();
    let answers = join_all(
        peers
            .iter()
            .map(|p| proposer.ask(p, &PeerRequest::Backends)),
    )
    .await;
    let mut out = vec![NodeBackends {
        node: members.me.clone(),
        pools: Some(mine),
    }];
    for (node, answer) in peers.into_iter().zip(answers) {
        let pools = match answer {
            Ok(PeerReply::Backends(pools)) if pools.is_empty() => continue,
            Ok(PeerReply::Backends(pools)) => Some(pools),
            _ => None,
        };
        out.push(NodeBackends { node, pools });
    }
    out
}

/// Every node's config fingerprints, this node's included, in the config's order.
async fn ask_configs(control: &Control) -> Vec<NodeConfig> {
    let proposer = &control.proposer;
    let link_keys = &control.mesh.link_keys();
    let listed = control.members();
    let members = &*listed;
    join_all(members.all.iter().map(|node| async move {
        let fingerprints = if *node == members.me {
            Some(control.fingerprints())
        } else {
            match proposer.ask(node, &PeerRequest::Fingerprints).await {
                Ok(PeerReply::Fingerprints(f)) => Some(f),
                _ => None,
            }
        };
        NodeConfig {
            node: node.clone(),
            fingerprints,
            link_key: link_keys.get(node).cloned(),
        }
    }))
    .await
}

/// Every node's holdings and health checks, this node's included.
async fn ask_peers(control: &Control) -> (Holdings, Vec<NodeChecks>) {
    let members = control.members();
    let peers: Vec<String> = members.peers().cloned().collect();
    let proposer = &control.proposer;
    let (answers, checks) = tokio::join!(
        join_all(
            peers
                .iter()
                .map(|p| proposer.ask(p, &PeerRequest::Holdings))
        ),
        join_all(peers.iter().map(|p| proposer.ask(p, &PeerRequest::Checks)))
    );
    let mut health = vec![NodeChecks {
        node: members.me.clone(),
        checks: Some(control.local_checks()),
    }];
    health.extend(peers.iter().zip(checks).map(|(p, a)| NodeChecks {
        node: p.clone(),
        checks: match a {
            Ok(PeerReply::Checks(c)) => Some(c),
            _ => None,
        },
    }));
    health.sort_by(|a, b| a.node.cmp(&b.node));
    let mut holdings: Holdings = peers
        .into_iter()
        .zip(answers)
        .map(|(p, a)| {
            let held = match a {
                Ok(PeerReply::Holdings(h)) => Some(h),
                _ => None,
            };
            (p, held)
        })
        .collect();
    holdings.insert(
        control.members().me.clone(),
        Some(control.groups().holdings()),
    );
    (holdings, health)
}

fn group_status(
    control: &Control,
    name: &str,
    handle: &GroupHandle,
    holdings: &Holdings,
) -> GroupStatus {
    let raft_metrics = handle.raft.metrics().borrow_watched().clone();
    let view = handle.view.borrow().clone();
    let state = handle.state.borrow().clone();
    let nodes = control
        .members()
        .all
        .iter()
        .map(|node| {
            let holds = holdings
                .get(node)
                .cloned()
                .flatten()
                .map(|h| h.iter().any(|g| g == name));
            NodeStatus::of(node, state.nodes.get(node), holds)
        })
        .collect();
    GroupStatus {
        name: name.to_string(),
        addresses: handle.addresses(),
        leader: control.proposer.name_of(raft_metrics.current_leader),
        term: raft_metrics.current_term,
        holding: view.holds_now(),
        hold_reason: view.hold_reason,
        quorum_ack_age_ms: view.quorum_ack_age.map(|d| d.as_millis() as u64),
        pin: state.pin.clone(),
        nodes,
    }
}
