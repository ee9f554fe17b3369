//! Prometheus metrics over HTTP (`GET /metrics`, text exposition format 0.0.4). The
//! renderer is pure (a snapshot in, text out); the server is a few lines of tokio that
//! answer every request with the current snapshot. It only reads: it must never let a
//! scrape change state or block the hold loop (snapshots are taken from shared views).

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::consensus::store::DiskStatsSnapshot;
use tokio::net::TcpListener;

/// Everything a scrape reports, gathered by `metrics_snapshot`.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    pub node: String,
    pub is_witness: bool,
    pub groups: Vec<GroupMetrics>,
    pub checks: Vec<CheckMetrics>,
    pub peers_connected: usize,
    pub peers_configured: usize,
    /// (reason, count) of rejected peer input.
    pub rejected: Vec<(&'static str, u64)>,
    pub disk: DiskStatsSnapshot,
}

#[derive(Debug, Clone, Default)]
pub struct GroupMetrics {
    pub name: String,
    pub is_leader: bool,
    pub holding: bool,
    pub term: u64,
    pub quorum_ack_age: Option<Duration>,
    pub hold_transitions: u64,
    pub lateness: crate::lateness::Lateness,
}

#[derive(Debug, Clone, Default)]
pub struct CheckMetrics {
    pub name: String,
    pub up: bool,
    pub last_latency: Duration,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Label values are operator names ([a-z0-9-] in practice); escape anyway.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(s: &MetricsSnapshot) -> String {
    let mut out = String::new();
    let node = label(&s.node);
    family(
        &mut out,
        "havip_node_info",
        "gauge",
        "This node; role is gateway or witness.",
    );
    let role = if s.is_witness { "witness" } else { "gateway" };
    let _ = writeln!(out, "havip_node_info{{node=\"{node}\",role=\"{role}\"}} 1");

    family(
        &mut out,
        "havip_group_leader",
        "gauge",
        "1 if this node is the group's Raft leader.",
    );
    for g in &s.groups {
        let _ = writeln!(
            out,
            "havip_group_leader{{group=\"{}\"}} {}",
            label(&g.name),
            u8::from(g.is_leader)
        );
    }
    family(
        &mut out,
        "havip_group_vip_held",
        "gauge",
        "1 if this node holds the group's VIPs.",
    );
    for g in &s.groups {
        let _ = writeln!(
            out,
            "havip_group_vip_held{{group=\"{}\"}} {}",
            label(&g.name),
            u8::from(g.holding)
        );
    }
    family(
        &mut out,
        "havip_group_term",
        "gauge",
        "The group's current Raft term.",
    );
    for g in &s.groups {
        let _ = writeln!(
            out,
            "havip_group_term{{group=\"{}\"}} {}",
            label(&g.name),
            g.term
        );
    }
    family(
        &mut out,
        "havip_group_quorum_ack_age_seconds",
        "gauge",
        "On the leader: time since a quorum last acknowledged it.",
    );
    for g in &s.groups {
        if let Some(age) = g.quorum_ack_age {
            let _ = writeln!(
                out,
                "havip_group_quorum_ack_age_seconds{{group=\"{}\"}} {:.3}",
                label(&g.name),
                age.as_secs_f64()
            );
        }
    }
    family(
        &mut out,
        "havip_group_hold_transitions_total",
        "counter",
        "Times this node started or stopped holding the group's VIPs.",
    );
    for g in &s.groups {
        let _ = writeln!(
            out,
            "havip_group_hold_transitions_total{{group=\"{}\"}} {}",
            label(&g.name),
            g.hold_transitions
        );
    }
    render_lateness(&mut out, s);
    if !s.checks.is_empty() {
        family(
            &mut out,
            "havip_health_check_up",
            "gauge",
            "1 if the health check is up (after rise/fall).",
        );
        for c in &s.checks {
            let _ = writeln!(
                out,
                "havip_health_check_up{{check=\"{}\"}} {}",
                label(&c.name),
                u8::from(c.up)
            );
        }
        family(
            &mut out,
            "havip_health_check_latency_seconds",
            "gauge",
            "Latency of the check's last probe.",
        );
        for c in &s.checks {
            let _ = writeln!(
                out,
                "havip_health_check_latency_seconds{{check=\"{}\"}} {:.6}",
                label(&c.name),
                c.last_latency.as_secs_f64()
            );
        }
    }
    family(
        &mut out,
        "havip_peers_connected",
        "gauge",
        "Peers with an authenticated connection.",
    );
    let _ = writeln!(out, "havip_peers_connected {}", s.peers_connected);
    family(
        &mut out,
        "havip_peers_configured",
        "gauge",
        "Peers in the configuration, this node excluded.",
    );
    let _ = writeln!(out, "havip_peers_configured {}", s.peers_configured);
    family(
        &mut out,
        "havip_peer_rejected_total",
        "counter",
        "Peer input dropped, by reason.",
    );
    for (reason, count) in &s.rejected {
        let _ = writeln!(
            out,
            "havip_peer_rejected_total{{reason=\"{reason}\"}} {count}"
        );
    }
    family(
        &mut out,
        "havip_store_commits_total",
        "counter",
        "Durable commits of the Raft store (each one an fsync).",
    );
    let _ = writeln!(out, "havip_store_commits_total {}", s.disk.commits);
    family(
        &mut out,
        "havip_store_slow_commits_total",
        "counter",
        "Durable commits that took longer than 100 ms: a node answers no heartbeat until its log is on disk.",
    );
    let _ = writeln!(out, "havip_store_slow_commits_total {}", s.disk.slow);
    family(
        &mut out,
        "havip_store_commit_max_seconds",
        "gauge",
        "The longest durable commit since the daemon started.",
    );
    let _ = writeln!(
        out,
        "havip_store_commit_max_seconds {:.6}",
        s.disk.max.as_secs_f64()
    );
    out
}

pub type SnapshotSource =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = MetricsSnapshot> + Send>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr} (control.metrics): {source}")]
pub struct MetricsError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// One family with one sample per group, `value` rendering the group's number.
fn per_group(
    out: &mut String,
    s: &MetricsSnapshot,
    (name, kind, help): (&str, &str, &str),
    value: impl Fn(&GroupMetrics) -> String,
) {
    family(out, name, kind, help);
    for g in &s.groups {
        let _ = writeln!(out, "{name}{{group=\"{}\"}} {}", label(&g.name), value(g));
    }
}

/// The hold loop's lateness against its deadlines (`crate::lateness`): a late release is
/// a safety event, so its count is what an alert watches.
fn render_lateness(out: &mut String, s: &MetricsSnapshot) {
    let secs = |d: Duration| format!("{:.6}", d.as_secs_f64());
    per_group(
        out,
        s,
        (
            "havip_hold_releases_total",
            "counter",
            "Removals of the group's VIPs (any reason).",
        ),
        |g| g.lateness.releases.to_string(),
    );
    // A summary without quantiles: its two series share one HELP/TYPE.
    family(
        out,
        "havip_hold_release_late_seconds",
        "summary",
        "Removals of the VIPs that completed after their hold lease ended (count), and by how much (sum): never expected; another node may hold by then.",
    );
    for g in &s.groups {
        let name = label(&g.name);
        let _ = writeln!(
            out,
            "havip_hold_release_late_seconds_sum{{group=\"{name}\"}} {}\nhavip_hold_release_late_seconds_count{{group=\"{name}\"}} {}",
            secs(g.lateness.late_sum),
            g.lateness.late_releases
        );
    }
    per_group(
        out,
        s,
        (
            "havip_hold_release_late_max_seconds",
            "gauge",
            "The latest completion of a removal after its hold lease ended, since the daemon started (0: none late).",
        ),
        |g| secs(g.lateness.late_max),
    );
    per_group(
        out,
        s,
        (
            "havip_hold_wakeups_late_total",
            "counter",
            "Timed wake-ups of the group's hold loop more than 10 ms after they were due.",
        ),
        |g| g.lateness.late_wakeups.to_string(),
    );
    per_group(
        out,
        s,
        (
            "havip_hold_wake_late_max_seconds",
            "gauge",
            "The latest timed wake-up of the group's hold loop, since the daemon started.",
        ),
        |g| secs(g.lateness.wake_late_max),
    );
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError { addr, source })
}

/// Answers every HTTP request on `listener` with the current metrics until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    source: SnapshotSource,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                let Ok((mut stream, _)) = accepted else { continue };
                let source = source.clone();
                tokio::spawn(async move {
                    // Read (bounded, with a deadline) whatever request line came; every
                    // path gets the metrics, which is what scrapers and curl expect.
                    let mut buf = [0u8; 2048];
                    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
                    let body = render(&source().await);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(body.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> MetricsSnapshot {
        MetricsSnapshot {
            node: "gw-a".into(),
            is_witness: false,
            groups: vec![GroupMetrics {
                name: "crm".into(),
                is_leader: true,
                holding: true,
                term: 7,
                quorum_ack_age: Some(Duration::from_millis(42)),
                hold_transitions: 3,
                lateness: crate::lateness::Lateness {
                    releases: 2,
                    late_releases: 1,
                    late_sum: Duration::from_millis(7),
                    late_max: Duration::from_millis(7),
                    wakeups: 40,
                    late_wakeups: 3,
                    wake_late_max: Duration::from_millis(25),
                },
            }],
            checks: vec![CheckMetrics {
                name: "crm-1-http".into(),
                up: false,
                last_latency: Duration::from_millis(5),
            }],
            peers_connected: 2,
            peers_configured: 2,
            rejected: vec![("handshake", 4)],
            disk: DiskStatsSnapshot {
                commits: 12,
                slow: 1,
                max: Duration::from_millis(594),
            },
        }
    }

    #[test]
    fn renders_every_family_with_help_and_type() {
        let text = render(&snapshot());
        for line in [
            "havip_node_info{node=\"gw-a\",role=\"gateway\"} 1",
            "havip_group_vip_held{group=\"crm\"} 1",
            "havip_group_term{group=\"crm\"} 7",
            "havip_group_quorum_ack_age_seconds{group=\"crm\"} 0.042",
            "havip_group_hold_transitions_total{group=\"crm\"} 3",
            "havip_hold_releases_total{group=\"crm\"} 2",
            "havip_hold_release_late_seconds_sum{group=\"crm\"} 0.007000",
            "havip_hold_release_late_seconds_count{group=\"crm\"} 1",
            "havip_hold_release_late_max_seconds{group=\"crm\"} 0.007000",
            "havip_hold_wakeups_late_total{group=\"crm\"} 3",
            "havip_hold_wake_late_max_seconds{group=\"crm\"} 0.025000",
            "havip_health_check_up{check=\"crm-1-http\"} 0",
            "havip_peer_rejected_total{reason=\"handshake\"} 4",
            "havip_store_commits_total 12",
            "havip_store_slow_commits_total 1",
            "havip_store_commit_max_seconds 0.594000",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(
            families,
            text.lines().filter(|l| l.starts_with("# HELP")).count()
        );
    }

    #[tokio::test]
    async fn serves_over_real_http() {
        let listener = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let source: SnapshotSource = Arc::new(|| Box::pin(async { snapshot() }));
        tokio::spawn(serve(listener, source, rx));
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(
            response.contains("havip_group_leader{group=\"crm\"} 1"),
            "{response}"
        );
    }
}
