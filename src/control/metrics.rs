//! Prometheus metrics over HTTP (`GET /metrics`, text exposition format 0.0.4). The
//! renderer is pure (a snapshot in, text out): the snapshot is a prometheus-client
//! `Collector`, encoded by the library, so names, escaping and types follow the format
//! without a hand-written encoder. The server is a few lines of tokio that
//! answer every request with the current snapshot. It only reads: it must never let a
//! scrape change state or block the hold loop (snapshots are taken from shared views).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::prometheus_text::{CONTENT_TYPE, encode};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::consensus::store::DiskStatsSnapshot;

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
    /// The config in effect (`config::config_fingerprint`), what every node must agree
    /// on (`config::cluster_fingerprint`) and the current cluster key's id.
    pub config: String,
    pub cluster: String,
    pub key: String,
    /// An operator put this node in maintenance (`havip maintenance on`).
    pub maintenance: bool,
    /// Each `[[backend]]` pool as this node's HAProxy has it.
    pub backends: Vec<BackendMetrics>,
}

/// One pool's applier (`crate::haproxy::PoolStatus`).
#[derive(Debug, Clone, Default)]
pub struct BackendMetrics {
    pub pool: String,
    /// HAProxy answered the last round and holds what the cluster decided.
    pub in_sync: bool,
    pub commands_sent: u64,
    pub reapplied: u64,
    /// (server, HAProxy holds what was decided for it).
    pub servers: Vec<(String, bool)>,
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

/// The text a scrape gets: the snapshot encoded by prometheus-client in the Prometheus
/// text format 0.0.4 (what `promtool check metrics` and every scraper read; no `# EOF`).
/// A fresh registry per scrape holds only this snapshot, so nothing is kept between them.
pub fn render(snapshot: MetricsSnapshot) -> String {
    let mut registry = Registry::with_prefix("havip");
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    // Writing to a String cannot fail, and the collector only fails on a failed write.
    let _ = encode(&mut out, &registry);
    out
}

/// The value of one sample, typed as Prometheus types it.
enum Sample {
    /// A gauge that counts or flags: written as an integer.
    Gauge(u64),
    /// A gauge in seconds.
    Seconds(f64),
    Counter(u64),
}

impl Sample {
    fn seconds(value: Duration) -> Self {
        Sample::Seconds(value.as_secs_f64())
    }
    fn flag(value: bool) -> Self {
        Sample::Gauge(u64::from(value))
    }
    fn metric_type(&self) -> MetricType {
        match self {
            Sample::Gauge(_) | Sample::Seconds(_) => MetricType::Gauge,
            Sample::Counter(_) => MetricType::Counter,
        }
    }
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        match *self {
            Sample::Gauge(v) => ConstGauge::new(v).encode(encoder),
            Sample::Seconds(v) => ConstGauge::new(v).encode(encoder),
            Sample::Counter(v) => ConstCounter::new(v).encode(encoder),
        }
    }
}

/// One family's name as prometheus-client builds it: `havip_` + `name` + `_unit` (+
/// `_total` for a counter). The full names are the contract with `conf/monitoring/`.
struct Family {
    name: &'static str,
    unit: Option<Unit>,
    help: &'static str,
}

const fn family(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        unit: None,
        help,
    }
}

const fn in_seconds(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        unit: Some(Unit::Seconds),
        help,
    }
}

/// Writes `family` with one sample per (label value, sample); the family is written
/// (HELP and TYPE) even without samples, as a scrape before the first sample shows it.
fn labelled(
    encoder: &mut DescriptorEncoder,
    family: &Family,
    (key, metric_type): (&str, MetricType),
    samples: impl IntoIterator<Item = (String, Sample)>,
) -> Result<(), std::fmt::Error> {
    let mut metric =
        encoder.encode_descriptor(family.name, family.help, family.unit.as_ref(), metric_type)?;
    for (value, sample) in samples {
        debug_assert_eq!(sample.metric_type(), metric_type);
        sample.encode(metric.encode_family(&[(key, value.as_str())])?)?;
    }
    Ok(())
}

fn single(
    encoder: &mut DescriptorEncoder,
    family: &Family,
    sample: Sample,
) -> Result<(), std::fmt::Error> {
    let metric = encoder.encode_descriptor(
        family.name,
        family.help,
        family.unit.as_ref(),
        sample.metric_type(),
    )?;
    sample.encode(metric)
}

/// The snapshot is its own collector: each scrape encodes the snapshot it gathered.
impl Collector for MetricsSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        let role = if self.is_witness {
            "witness"
        } else {
            "gateway"
        };
        encoder_info(e, &self.node, role)?;
        self.encode_config(e)?;
        self.encode_groups(e)?;
        self.encode_lateness(e)?;
        self.encode_checks(e)?;
        self.encode_peers(e)?;
        self.encode_backends(e)?;
        self.encode_store(e)
    }
}

const GAUGE: MetricType = MetricType::Gauge;
const COUNTER: MetricType = MetricType::Counter;

impl MetricsSnapshot {
    /// Per group: leader, VIP held, term, quorum-ack age, hold transitions.
    fn encode_groups(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let per_group = |f: &dyn Fn(&GroupMetrics) -> Sample| {
            self.groups
                .iter()
                .map(|g| (g.name.clone(), f(g)))
                .collect::<Vec<_>>()
        };
        labelled(
            e,
            &family("group_leader", "1 if this node is the group's Raft leader."),
            ("group", GAUGE),
            per_group(&|g| Sample::flag(g.is_leader)),
        )?;
        labelled(
            e,
            &family("group_vip_held", "1 if this node holds the group's VIPs."),
            ("group", GAUGE),
            per_group(&|g| Sample::flag(g.holding)),
        )?;
        labelled(
            e,
            &family("group_term", "The group's current Raft term."),
            ("group", GAUGE),
            per_group(&|g| Sample::Gauge(g.term)),
        )?;
        labelled(
            e,
            &in_seconds(
                "group_quorum_ack_age",
                "On the leader: time since a quorum last acknowledged it.",
            ),
            ("group", GAUGE),
            self.groups
                .iter()
                .filter_map(|g| Some((g.name.clone(), Sample::seconds(g.quorum_ack_age?)))),
        )?;
        labelled(
            e,
            &family(
                "group_hold_transitions",
                "Times this node started or stopped holding the group's VIPs.",
            ),
            ("group", COUNTER),
            per_group(&|g| Sample::Counter(g.hold_transitions)),
        )?;
        Ok(())
    }

    /// Per health check: up, last probe's latency (gateways with checks).
    fn encode_checks(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if !self.checks.is_empty() {
            let per_check = |f: &dyn Fn(&CheckMetrics) -> Sample| {
                self.checks
                    .iter()
                    .map(|c| (c.name.clone(), f(c)))
                    .collect::<Vec<_>>()
            };
            labelled(
                e,
                &family(
                    "health_check_up",
                    "1 if the health check is up (after rise/fall).",
                ),
                ("check", GAUGE),
                per_check(&|c| Sample::flag(c.up)),
            )?;
            labelled(
                e,
                &in_seconds("health_check_latency", "Latency of the check's last probe."),
                ("check", GAUGE),
                per_check(&|c| Sample::seconds(c.last_latency)),
            )?;
        }
        Ok(())
    }

    /// Peer links: connected, configured, input rejected by reason.
    fn encode_peers(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        single(
            e,
            &family("peers_connected", "Peers with an authenticated connection."),
            Sample::Gauge(self.peers_connected as u64),
        )?;
        single(
            e,
            &family(
                "peers_configured",
                "Peers in the configuration, this node excluded.",
            ),
            Sample::Gauge(self.peers_configured as u64),
        )?;
        labelled(
            e,
            &family("peer_rejected", "Peer input dropped, by reason."),
            ("reason", COUNTER),
            self.rejected
                .iter()
                .map(|(reason, count)| (reason.to_string(), Sample::Counter(*count))),
        )?;
        Ok(())
    }

    /// Per `[[backend]]` pool: in sync, commands sent, re-applies after HAProxy lost its
    /// state; per server: drift (gateways with backends only).
    fn encode_backends(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if self.backends.is_empty() {
            return Ok(());
        }
        let per_pool = |f: &dyn Fn(&BackendMetrics) -> Sample| {
            (self.backends.iter())
                .map(|b| (b.pool.clone(), f(b)))
                .collect::<Vec<_>>()
        };
        labelled(
            e,
            &family(
                "backend_in_sync",
                "1 if this node's HAProxy answered and holds every server state the cluster decided for the pool.",
            ),
            ("pool", GAUGE),
            per_pool(&|b| Sample::flag(b.in_sync)),
        )?;
        labelled(
            e,
            &family(
                "backend_commands",
                "Runtime API set server commands sent to this node's HAProxy for the pool.",
            ),
            ("pool", COUNTER),
            per_pool(&|b| Sample::Counter(b.commands_sent)),
        )?;
        labelled(
            e,
            &family(
                "backend_reapplied",
                "Times this node's HAProxy lost the states havip had applied (a restart, a reload, a hand edit) and they were applied again.",
            ),
            ("pool", COUNTER),
            per_pool(&|b| Sample::Counter(b.reapplied)),
        )?;
        let mut metric = e.encode_descriptor(
            "backend_server_drift",
            "1 if this node's HAProxy does not hold what the cluster decided for the server (or does not list it).",
            None,
            GAUGE,
        )?;
        for b in &self.backends {
            for (server, in_sync) in &b.servers {
                let labels = [("pool", b.pool.as_str()), ("server", server.as_str())];
                Sample::flag(!in_sync).encode(metric.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// The Raft store's durable commits.
    fn encode_store(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        single(
            e,
            &family(
                "store_commits",
                "Durable commits of the Raft store (each one an fsync).",
            ),
            Sample::Counter(self.disk.commits),
        )?;
        single(
            e,
            &family(
                "store_slow_commits",
                "Durable commits that took longer than 100 ms: a node answers no heartbeat until its log is on disk.",
            ),
            Sample::Counter(self.disk.slow),
        )?;
        single(
            e,
            &in_seconds(
                "store_commit_max",
                "The longest durable commit since the daemon started.",
            ),
            Sample::seconds(self.disk.max),
        )
    }
}

/// `havip_node_info{node,role} 1`: an info metric, which the text format 0.0.4 types as
/// a gauge.
fn encoder_info(
    encoder: &mut DescriptorEncoder,
    node: &str,
    role: &str,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(
        "node",
        "This node; role is gateway or witness.",
        None,
        MetricType::Info,
    )?;
    metric.encode_info(&[("node", node), ("role", role)])
}

impl MetricsSnapshot {
    /// `havip_config_info{config,cluster,key} 1` (drift between nodes: the alert counts the
    /// distinct `cluster` and `key` values) and `havip_node_maintenance`.
    fn encode_config(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = e.encode_descriptor(
            "config",
            "The config in effect on this node: its fingerprint, the fingerprint of what every node must agree on (peers, timers, groups), and the current cluster key's id.",
            None,
            MetricType::Info,
        )?;
        metric.encode_info(&[
            ("config", self.config.as_str()),
            ("cluster", self.cluster.as_str()),
            ("key", self.key.as_str()),
        ])?;
        single(
            e,
            &family(
                "node_maintenance",
                "1 if an operator put this node in maintenance (it never holds a VIP).",
            ),
            Sample::flag(self.maintenance),
        )
    }

    /// The hold loop's lateness against its deadlines (`crate::lateness`): a late release
    /// is a safety event, so its count is what an alert watches.
    fn encode_lateness(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let per_group = |f: &dyn Fn(&crate::lateness::Lateness) -> Sample| {
            self.groups
                .iter()
                .map(|g| (g.name.clone(), f(&g.lateness)))
                .collect::<Vec<_>>()
        };
        labelled(
            e,
            &family(
                "hold_releases",
                "Removals of the group's VIPs (any reason).",
            ),
            ("group", MetricType::Counter),
            per_group(&|l| Sample::Counter(l.releases)),
        )?;
        // Was a summary without quantiles; prometheus-client has no summary, so it is a
        // histogram with only the +Inf bucket: `_sum` and `_count` keep their names (the
        // rules and the dashboard use `_count`), `_bucket{le="+Inf"}` equals `_count`.
        let late = in_seconds(
            "hold_release_late",
            "Removals of the VIPs that completed after their hold lease ended (count), and by how much (sum): never expected; another node may hold by then.",
        );
        let mut metric = e.encode_descriptor(
            late.name,
            late.help,
            late.unit.as_ref(),
            MetricType::Histogram,
        )?;
        for g in &self.groups {
            metric
                .encode_family(&[("group", g.name.as_str())])?
                .encode_histogram::<NoLabelSet>(
                    g.lateness.late_sum.as_secs_f64(),
                    g.lateness.late_releases,
                    &[],
                    None,
                )?;
        }
        labelled(
            e,
            &in_seconds(
                "hold_release_late_max",
                "The latest completion of a removal after its hold lease ended, since the daemon started (0: none late).",
            ),
            ("group", MetricType::Gauge),
            per_group(&|l| Sample::seconds(l.late_max)),
        )?;
        labelled(
            e,
            &family(
                "hold_wakeups_late",
                "Timed wake-ups of the group's hold loop more than 10 ms after they were due.",
            ),
            ("group", MetricType::Counter),
            per_group(&|l| Sample::Counter(l.late_wakeups)),
        )?;
        labelled(
            e,
            &in_seconds(
                "hold_wake_late_max",
                "The latest timed wake-up of the group's hold loop, since the daemon started.",
            ),
            ("group", MetricType::Gauge),
            per_group(&|l| Sample::seconds(l.wake_late_max)),
        )
    }
}

pub type SnapshotSource =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = MetricsSnapshot> + Send>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr} (control.metrics): {source}")]
pub struct MetricsError {
    addr: SocketAddr,
    source: std::io::Error,
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError { addr, source })
}

/// Answers every HTTP request on `listener` with the current metrics until `shutdown`.
/// Scrapes served at once; more connections are closed at once.
const MAX_SCRAPES: usize = 16;

/// After a failed accept (out of descriptors), how long the listener waits.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub async fn serve(
    listener: TcpListener,
    source: SnapshotSource,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => {
                let mut stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Usually EMFILE: pause instead of spinning on the daemon's thread.
                        tracing::debug!("metrics listener: accept failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                // More scrapes at once than any Prometheus makes: close the rest.
                let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
                let source = source.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    // Read (bounded, with a deadline) whatever request line came; every
                    // path gets the metrics, which is what scrapers and curl expect.
                    let mut buf = [0u8; 2048];
                    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
                    let body = render(source().await);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
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
            config: "2ef08aab2680".into(),
            cluster: "9a1b2c3d4e5f".into(),
            key: "k:3f9a21c4".into(),
            maintenance: false,
            backends: vec![BackendMetrics {
                pool: "crm".into(),
                in_sync: false,
                commands_sent: 5,
                reapplied: 1,
                servers: vec![("crm-1".into(), true), ("crm-2".into(), false)],
            }],
        }
    }

    #[test]
    fn renders_every_family_with_help_and_type() {
        let text = render(snapshot());
        for line in [
            "havip_node_info{node=\"gw-a\",role=\"gateway\"} 1",
            "havip_config_info{config=\"2ef08aab2680\",cluster=\"9a1b2c3d4e5f\",key=\"k:3f9a21c4\"} 1",
            "havip_node_maintenance 0",
            "havip_group_vip_held{group=\"crm\"} 1",
            "havip_group_term{group=\"crm\"} 7",
            "havip_group_quorum_ack_age_seconds{group=\"crm\"} 0.042",
            "havip_group_hold_transitions_total{group=\"crm\"} 3",
            "havip_hold_releases_total{group=\"crm\"} 2",
            "havip_hold_release_late_seconds_bucket{group=\"crm\",le=\"+Inf\"} 1",
            "havip_hold_release_late_seconds_sum{group=\"crm\"} 0.007",
            "havip_hold_release_late_seconds_count{group=\"crm\"} 1",
            "havip_hold_release_late_max_seconds{group=\"crm\"} 0.007",
            "havip_hold_wakeups_late_total{group=\"crm\"} 3",
            "havip_hold_wake_late_max_seconds{group=\"crm\"} 0.025",
            "havip_health_check_up{check=\"crm-1-http\"} 0",
            "havip_peer_rejected_total{reason=\"handshake\"} 4",
            "havip_store_commits_total 12",
            "havip_store_slow_commits_total 1",
            "havip_store_commit_max_seconds 0.594",
            "havip_backend_in_sync{pool=\"crm\"} 0",
            "havip_backend_commands_total{pool=\"crm\"} 5",
            "havip_backend_reapplied_total{pool=\"crm\"} 1",
            "havip_backend_server_drift{pool=\"crm\",server=\"crm-1\"} 0",
            "havip_backend_server_drift{pool=\"crm\",server=\"crm-2\"} 1",
            "# TYPE havip_node_info gauge",
            "# TYPE havip_group_hold_transitions_total counter",
            "# TYPE havip_hold_release_late_seconds histogram",
            "# TYPE havip_peer_rejected_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // The Prometheus text format, not OpenMetrics: no `# EOF` (promtool and every
        // scraper read 0.0.4; the Content-Type says so).
        assert!(!text.contains("# EOF"), "{text}");
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(
            families,
            text.lines().filter(|l| l.starts_with("# HELP")).count()
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = snapshot();
        s.groups[0].name = "a\"b\\c\nd".into();
        let text = render(s);
        assert!(
            text.contains("havip_group_term{group=\"a\\\"b\\\\c\\nd\"} 7"),
            "{text}"
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
            response.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{response}"
        );
        assert!(
            response.contains("havip_group_leader{group=\"crm\"} 1"),
            "{response}"
        );
    }
}
