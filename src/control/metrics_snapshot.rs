//! Gathers what a Prometheus scrape reports (`metrics::MetricsSnapshot`) from this
//! node's groups, health checks, peer mesh and store; `metrics.rs` renders and serves
//! it. Read-only, and cheap: a scrape must never wait on a peer.

use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver as _;

use super::context::Control;
use super::metrics::{BackendMetrics, CheckMetrics, GroupMetrics, MetricsSnapshot};
use crate::config::Role;
use crate::consensus::types::node_id;
use crate::health::CheckState;

/// The snapshot of this node, now.
pub fn metrics_snapshot(control: &Control) -> MetricsSnapshot {
    let counters = control.mesh.counters();
    let fingerprints = control.fingerprints();
    let members = control.members();
    MetricsSnapshot {
        node: members.me.clone(),
        is_witness: members.role == Role::Witness,
        groups: group_metrics(control),
        checks: control
            .local_checks()
            .into_iter()
            .map(|c| CheckMetrics {
                name: c.name,
                up: c.state == CheckState::Up,
                last_latency: Duration::from_secs_f64(c.last_latency_ms.max(0.0) / 1000.0),
            })
            .collect(),
        peers_connected: control.mesh.connected().borrow().len(),
        peers_configured: members.all.len().saturating_sub(1),
        rejected: vec![
            ("unknown_source", counters.unknown_source),
            ("handshakes_full", counters.handshakes_full),
            ("handshake", counters.rejected_handshakes),
            ("malformed_frame", counters.malformed_frames),
            ("unknown_version", counters.unknown_version),
            ("unknown_peer", counters.unknown_peer),
            ("wrong_source", counters.wrong_source),
            ("forged_request", crate::peer::forged::count()),
        ],
        disk: control.store.disk_stats(),
        config: fingerprints.config,
        cluster: fingerprints.cluster,
        key: control.mesh.keys().current.id(),
        maintenance: (control.groups().iter())
            .any(|(_, g)| (g.state.borrow().nodes.get(&members.me)).is_some_and(|n| n.maintenance)),
        backends: (control.pools().status.iter())
            .map(|status| {
                let b = status.borrow();
                BackendMetrics {
                    pool: b.pool.clone(),
                    in_sync: b.in_sync(),
                    commands_sent: b.commands_sent,
                    reapplied: b.reapplied,
                    servers: (b.servers.iter())
                        .map(|s| (s.name.clone(), s.in_sync))
                        .collect(),
                }
            })
            .collect(),
    }
}

fn group_metrics(control: &Control) -> Vec<GroupMetrics> {
    let self_id = node_id(&control.members().me);
    control
        .groups()
        .iter()
        .map(|(name, handle)| {
            let view = handle.view.borrow().clone();
            let raft_metrics = handle.raft.metrics().borrow_watched().clone();
            GroupMetrics {
                name: name.clone(),
                is_leader: raft_metrics.current_leader == Some(self_id)
                    && raft_metrics.state == ServerState::Leader,
                holding: view.holds_now(),
                term: raft_metrics.current_term,
                quorum_ack_age: view.quorum_ack_age,
                hold_transitions: view.hold_transitions,
                lateness: view.lateness,
            }
        })
        .collect()
}
