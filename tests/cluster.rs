//! The cluster core end to end: three real `havip run --observe-only` processes on
//! loopback talk real Raft over real, encrypted TCP, with real stores on disk. A watcher
//! asks every node's data plane what it holds every 10 ms and fails a test if two nodes
//! ever held the VIP at once; a killed or frozen node's last hold counts until its
//! deadline, so the kill and freeze tests fail if a new master holds before it.
//! Partition tests use nftables and need root (they fail, not skip, without it).

#[path = "support/figures.rs"]
mod figures;
mod support;

use std::time::Duration;

use figures::figure;
use support::{Cluster, Options, SERIAL, scrape};

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn preferred_gateway_becomes_master_and_the_witness_never_holds() {
    let _serial = lock();
    let cluster = Cluster::start(11, Options::default());
    let status = cluster.wait_formed("gw-a");
    let group = &status.groups[0];
    assert_eq!(
        group.leader.as_deref(),
        Some("gw-a"),
        "status on the witness names the master"
    );
    assert!(!group.holding);
    let gw_a = group
        .nodes
        .iter()
        .find(|n| n.name == "gw-a")
        .expect("gw-a listed");
    assert_eq!(
        gw_a.holds,
        Some(true),
        "the witness asks gw-a and reports that it holds"
    );
    assert_eq!(gw_a.priority, Some(150));
    let witness = group
        .nodes
        .iter()
        .find(|n| n.name == "witness")
        .expect("witness listed");
    assert_eq!(witness.role.as_deref(), Some("witness"));
    let (code, text) = cluster.cli("gw-b", &["status", "--json"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("\"leader\": \"gw-a\""), "{text}");
    status_watch_prints_a_line_per_poll(&cluster);
    std::thread::sleep(Duration::from_millis(500));
    cluster.assert_never_two_holders();
}

/// `havip status --watch --json`: one JSON report per poll, until its reader goes away.
fn status_watch_prints_a_line_per_poll(cluster: &Cluster) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(support::bin())
        .args([
            "status",
            "--watch",
            "--json",
            "--interval",
            "200ms",
            "--socket",
        ])
        .arg(&cluster.nodes["gw-b"].socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("havip status --watch");
    let stdout = child.stdout.take().expect("piped stdout");
    let lines: Vec<String> = std::io::BufReader::new(stdout)
        .lines()
        .take(3)
        .map(|line| line.expect("a line"))
        .collect();
    for line in &lines {
        let report: serde_json::Value = serde_json::from_str(line).expect("one JSON report a line");
        assert_eq!(report["groups"][0]["leader"], "gw-a", "{line}");
    }
    // Its stdout is closed now: the next write fails and it exits 0 by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "{status}");
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("havip status --watch did not exit after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigkill_of_the_master_moves_the_vip_and_never_to_two() {
    let _serial = lock();
    let mut cluster = Cluster::start(
        12,
        Options {
            failback_delay: "30s",
            ..Options::default()
        },
    );
    cluster.wait_formed("gw-a");
    let killed = std::time::Instant::now();
    cluster.kill("gw-a");
    let took = cluster.wait_holder("gw-b", Duration::from_secs(5));
    let after = cluster.assert_took_over_after_deadline("gw-a", "gw-b", killed);
    figure(&format!(
        "SIGKILL of the master: gw-b holds after {took:?}, {after:?} after gw-a's hold deadline"
    ));
    cluster.assert_never_two_holders();
}

#[test]
fn graceful_stop_hands_over_quickly_and_exits_zero() {
    let _serial = lock();
    let mut cluster = Cluster::start(
        13,
        Options {
            failback_delay: "30s",
            ..Options::default()
        },
    );
    cluster.wait_formed("gw-a");
    let started = std::time::Instant::now();
    let status = cluster
        .stop("gw-a", Duration::from_secs(3))
        .expect("gw-a exits within 3 s of SIGTERM");
    let exit_took = started.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        exit_took < Duration::from_secs(2),
        "shutdown took {exit_took:?}"
    );
    cluster.wait_holder("gw-b", Duration::from_secs(2));
    figure(&format!("graceful stop: exited after {exit_took:?}"));
    cluster.assert_never_two_holders();
}

#[test]
fn a_partition_isolating_the_master_releases_it_before_another_holds() {
    support::require_root("partition test");
    let _serial = lock();
    let mut cluster = Cluster::start(
        14,
        Options {
            failback_delay: "2s",
            ..Options::default()
        },
    );
    cluster.wait_formed("gw-a");
    cluster.partition("gw-a", &["gw-b", "witness"]);
    let took = cluster.wait_holder("gw-b", Duration::from_secs(5));
    figure(&format!("master isolated: gw-b holds after {took:?}"));
    cluster.assert_never_two_holders();
    cluster.heal();
    // Pre-vote keeps the returning node from deposing gw-b; failback then moves it back.
    let back = cluster.wait_holder("gw-a", Duration::from_secs(10));
    figure(&format!("healed: gw-a holds again after {back:?}"));
    cluster.assert_never_two_holders();
}

#[test]
fn a_partition_between_the_gateways_keeps_one_master() {
    support::require_root("partition test");
    let _serial = lock();
    let mut cluster = Cluster::start(15, Options::default());
    cluster.wait_formed("gw-a");
    let since = std::time::Instant::now();
    cluster.partition("gw-a", &["gw-b"]);
    // Both still reach the witness: gw-a keeps its quorum (itself + witness), and
    // pre-vote keeps gw-b from disturbing it, during the partition and after it heals.
    std::thread::sleep(Duration::from_secs(3));
    cluster.heal();
    std::thread::sleep(Duration::from_secs(1));
    cluster.assert_sole_holder_since("gw-a", since);
    cluster.assert_never_two_holders();
}

#[test]
fn a_frozen_master_loses_the_vip_after_its_lease() {
    let _serial = lock();
    let cluster = Cluster::start(
        16,
        Options {
            failback_delay: "30s",
            ..Options::default()
        },
    );
    cluster.wait_formed("gw-a");
    let frozen = std::time::Instant::now();
    cluster.signal("gw-a", "STOP");
    let took = cluster.wait_holder("gw-b", Duration::from_secs(5));
    // The frozen master's address stays until its hold deadline (the watcher knows it
    // from gw-a's last answer): gw-b must not hold before then.
    let after = cluster.assert_took_over_after_deadline("gw-a", "gw-b", frozen);
    figure(&format!(
        "SIGSTOP of the master: gw-b holds after {took:?}, {after:?} after gw-a's hold deadline"
    ));
    cluster.signal("gw-a", "CONT");
    // the thawed node must not claim the VIP.
    let since = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    cluster.assert_sole_holder_since("gw-b", since);
    cluster.assert_never_two_holders();
}

#[test]
fn the_preferred_gateway_takes_the_vip_back_after_failback_delay() {
    let _serial = lock();
    let mut cluster = Cluster::start(
        17,
        Options {
            failback_delay: "2s",
            ..Options::default()
        },
    );
    cluster.wait_formed("gw-a");
    cluster.kill("gw-a");
    cluster.wait_holder("gw-b", Duration::from_secs(5));
    cluster.spawn("gw-a");
    let started = std::time::Instant::now();
    cluster.wait_holder("gw-a", Duration::from_secs(15));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "failback came after {took:?}, before failback_delay"
    );
    figure(&format!("failback after restart: {took:?}"));
    cluster.assert_never_two_holders();
}

#[test]
fn failover_pins_and_clear_unpins() {
    let _serial = lock();
    let cluster = Cluster::start(
        18,
        Options {
            failback_delay: "1s",
            ..Options::default()
        },
    );
    cluster.wait_formed("gw-a");
    // Asked on the witness: the write is forwarded to the leader and committed.
    let (code, text) = cluster.cli("witness", &["failover", "--to", "gw-b", "--group", "crm"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("committed"), "{text}");
    cluster.wait_holder("gw-b", Duration::from_secs(3));
    // the pin outlasts failback_delay.
    let since = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    cluster.assert_sole_holder_since("gw-b", since);
    let status = cluster.status("gw-a").expect("status");
    assert_eq!(status.groups[0].pin.as_deref(), Some("gw-b"));
    let (code, text) = cluster.cli("gw-a", &["failover", "--clear"]);
    assert_eq!(code, 0, "{text}");
    cluster.wait_holder("gw-a", Duration::from_secs(10));
    let (code, text) = cluster.cli("gw-a", &["failover", "--to", "witness"]);
    assert_eq!(code, 1, "a witness cannot be a failover target: {text}");
    assert!(text.contains("witness"), "{text}");
    let (code, text) = cluster.cli("gw-a", &["history"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("pin to gw-b") && text.contains("clear pin"),
        "{text}"
    );
    cluster.assert_never_two_holders();
}

#[test]
fn maintenance_drains_a_node_until_it_is_turned_off() {
    let _serial = lock();
    let cluster = Cluster::start(
        19,
        Options {
            failback_delay: "1s",
            ..Options::default()
        },
    );
    cluster.wait_formed("gw-a");
    let (code, text) = cluster.cli("gw-b", &["maintenance", "on", "gw-a"]);
    assert_eq!(code, 0, "{text}");
    cluster.wait_holder("gw-b", Duration::from_secs(3));
    // no failback to a node in maintenance.
    let since = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    cluster.assert_sole_holder_since("gw-b", since);
    let (code, text) = cluster.cli("gw-b", &["maintenance", "off", "gw-a"]);
    assert_eq!(code, 0, "{text}");
    cluster.wait_holder("gw-a", Duration::from_secs(10));
    let (code, text) = cluster.cli("gw-b", &["maintenance", "on", "nobody"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not a cluster member"), "{text}");
    cluster.assert_never_two_holders();
}

#[test]
fn a_node_with_the_wrong_key_is_rejected_and_cannot_disturb_the_cluster() {
    let _serial = lock();
    let mut cluster = Cluster::start(20, Options::default());
    cluster.wait_formed("gw-a");
    let term = cluster.status("gw-a").expect("status").groups[0].term;
    // gw-b comes back with another key: it must not reach anyone, and nobody's term moves.
    cluster.kill("gw-b");
    let bad_key = cluster.dir.path().join("other.key");
    support::keygen(&bad_key);
    let config = cluster.nodes["gw-b"].config.clone();
    let text = std::fs::read_to_string(&config).expect("config");
    let key = cluster.dir.path().join("cluster.key");
    std::fs::write(
        &config,
        text.replace(&key.display().to_string(), &bad_key.display().to_string()),
    )
    .expect("write");
    let since = std::time::Instant::now();
    cluster.spawn("gw-b");
    std::thread::sleep(Duration::from_secs(3));
    cluster.assert_sole_holder_since("gw-a", since);
    let after = cluster.status("gw-a").expect("status").groups[0].term;
    assert_eq!(after, term, "the rejected node moved the term");
    let lonely = cluster
        .status("gw-b")
        .expect("gw-b still answers its own status");
    let gw_a = lonely.groups[0]
        .nodes
        .iter()
        .find(|n| n.name == "gw-a")
        .expect("listed");
    assert_eq!(gw_a.holds, None, "gw-b cannot reach gw-a to ask it");
    assert!(!lonely.groups[0].holding);
    let log = std::fs::read_to_string(&cluster.nodes["gw-a"].log).unwrap_or_default();
    assert!(
        log.contains("handshake"),
        "gw-a logs the rejected handshake:\n{log}"
    );
    cluster.assert_never_two_holders();
}

/// A master whose disk takes most of a second per fsync (the kernel throttles its writes,
/// see `support::SlowDisk`) keeps the VIP while the group's log grows: its heartbeats
/// never wait for its own disk (the store's writer thread), and its followers' disks are
/// fast. Before the writer thread, each append on gw-a stopped its heartbeats for the
/// length of an fsync, longer than the hold lease.
#[test]
fn a_master_with_a_slow_disk_keeps_the_vip_while_the_log_grows() {
    let _serial = lock();
    support::require_root("slow disk test (blkio cgroup)");
    let cluster = Cluster::start(27, Options::default());
    cluster.wait_formed("gw-a");
    let _slow = support::SlowDisk::throttle(cluster.pid("gw-a"), cluster.dir.path(), 4);
    let since = std::time::Instant::now();
    // Six commits, asked on gw-b and forwarded to the master, which must answer within
    // 400 ms: a commit waits for the followers' disks, not for the master's.
    for round in 0..3 {
        for mode in ["on", "off"] {
            let (code, text) = cluster.cli("gw-b", &["maintenance", mode, "gw-b"]);
            assert_eq!(code, 0, "round {round}, maintenance {mode}: {text}");
        }
    }
    // The commits did not wait for gw-a's disk; its writer thread is still at them. Hold
    // on until it has said how slow they were (and so proved the disk slow).
    let read_log = || std::fs::read_to_string(&cluster.nodes["gw-a"].log).unwrap_or_default();
    let waited = std::time::Instant::now();
    while !read_log().contains("slow disk") && waited.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        read_log().contains("slow disk"),
        "gw-a's disk was not slow, so this test proved nothing:\n{}",
        read_log()
    );
    std::thread::sleep(Duration::from_millis(500));
    cluster.assert_sole_holder_since("gw-a", since);
    cluster.assert_never_two_holders();
}

#[test]
fn a_sigkilled_node_restarts_with_its_store_intact() {
    let _serial = lock();
    let mut cluster = Cluster::start(21, Options::default());
    cluster.wait_formed("gw-a");
    cluster.wait_reported("gw-a");
    let (code, text) = cluster.cli("gw-a", &["failover", "--to", "gw-a"]);
    assert_eq!(code, 0, "{text}");
    // Committed means a majority (gw-a + witness) has it; wait until gw-b has applied it
    // too, so that what the restart must keep is really in gw-b's store.
    let mut before = None;
    for _ in 0..300 {
        let group = cluster.status("gw-b").map(|s| s.groups[0].clone());
        if let Some(group) = group.filter(|g| g.pin.as_deref() == Some("gw-a")) {
            before = Some(group);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = before.expect("gw-b applied the pin");
    // The applied state is written behind the apply, on the store's writer thread, and is
    // on disk one fsync later: give it that before the kill. (What a kill before then
    // loses is applied again from the log, which was durable before the pin committed.)
    std::thread::sleep(Duration::from_millis(200));
    cluster.kill("gw-b");
    cluster.spawn("gw-b");
    // Its own store, before it even hears from the leader, has the pin and the term.
    let mut restored = None;
    for _ in 0..200 {
        if let Some(status) = cluster.status("gw-b") {
            restored = Some(status.groups[0].clone());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let restored = restored.expect("gw-b answers after restart");
    assert_eq!(
        restored.pin.as_deref(),
        Some("gw-a"),
        "pin survived SIGKILL"
    );
    assert!(restored.term >= before.term);
    let (code, text) = cluster.cli("gw-b", &["history"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("pin to gw-a"), "{text}");
    cluster.wait_holder("gw-a", Duration::from_secs(1));
    cluster.assert_never_two_holders();
}

#[test]
fn a_cluster_bootstraps_with_a_majority_when_the_first_node_is_down() {
    let _serial = lock();
    let mut cluster = Cluster::start_only(22, Options::default(), &["gw-b", "witness"]);
    // gw-a (first by name) is absent: after waiting for everyone, the majority forms.
    cluster.wait_holder("gw-b", Duration::from_secs(20));
    cluster.spawn("gw-a");
    // gw-a joins the existing cluster (no second bootstrap) and gets its group back.
    cluster.wait_holder("gw-a", Duration::from_secs(15));
    let log = std::fs::read_to_string(&cluster.nodes["gw-a"].log).unwrap_or_default();
    assert!(
        !log.contains("bootstrapped the group"),
        "gw-a bootstrapped again:\n{log}"
    );
    cluster.assert_never_two_holders();
}

#[test]
fn a_drained_master_cut_off_from_the_other_gateway_relays_through_the_witness() {
    support::require_root("partition test");
    let _serial = lock();
    let mut cluster = Cluster::start(23, Options::default());
    cluster.wait_formed("gw-a");
    cluster.partition("gw-a", &["gw-b"]);
    // gw-a may no longer hold and cannot reach gw-b; the witness can.
    let (code, text) = cluster.cli("witness", &["maintenance", "on", "gw-a"]);
    assert_eq!(code, 0, "{text}");
    let took = cluster.wait_holder("gw-b", Duration::from_secs(5));
    figure(&format!(
        "relay through the witness: gw-b holds after {took:?}"
    ));
    cluster.assert_never_two_holders();
}

#[test]
fn notify_hooks_run_on_state_changes_and_metrics_report_them() {
    let _serial = lock();
    let mut cluster = Cluster::start(
        24,
        Options {
            hooks_and_metrics: true,
            failback_delay: "30s",
            ..Options::default()
        },
    );
    cluster.wait_formed("gw-a");
    let gw_a = cluster.dir.path().join("gw-a").join("notify.log");
    support::wait_file_contains(&gw_a, "crm BACKUP MASTER", Duration::from_secs(3));
    let metrics = scrape(&format!("{}:9400", cluster.nodes["gw-a"].addr));
    assert!(
        metrics.contains("havip_group_vip_held{group=\"crm\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("havip_group_leader{group=\"crm\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("havip_peers_connected 2"), "{metrics}");
    let witness = scrape(&format!("{}:9400", cluster.nodes["witness"].addr));
    assert!(witness.contains("role=\"witness\""), "{witness}");
    assert!(
        witness.contains("havip_group_vip_held{group=\"crm\"} 0"),
        "{witness}"
    );

    let (code, text) = cluster.cli("witness", &["maintenance", "on", "gw-a"]);
    assert_eq!(code, 0, "{text}");
    cluster.wait_holder("gw-b", Duration::from_secs(3));
    support::wait_file_contains(&gw_a, "crm MASTER FAULT", Duration::from_secs(3));
    support::wait_file_contains(
        &cluster.dir.path().join("gw-b").join("notify.log"),
        "crm BACKUP MASTER",
        Duration::from_secs(3),
    );
    let metrics = scrape(&format!("{}:9400", cluster.nodes["gw-a"].addr));
    assert!(
        metrics.contains("havip_group_hold_transitions_total{group=\"crm\"} 2"),
        "{metrics}\n{}",
        cluster.logs()
    );
    cluster.kill("gw-a");
    cluster.assert_never_two_holders();
}

/// Waits until the witness's replicated state shows `node` with the given health.
fn wait_replicated_health(cluster: &Cluster, node: &str, healthy: bool) {
    for _ in 0..300 {
        let seen = cluster.status("witness").and_then(|s| {
            s.groups[0]
                .nodes
                .iter()
                .find(|n| n.name == node)
                .and_then(|n| n.healthy)
        });
        if seen == Some(healthy) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "{node} never became healthy={healthy} in the replicated state\n{}",
        cluster.logs()
    );
}

/// A cluster whose gateways check their own CRM server (both healthy at first), once gw-a
/// holds. Bound in this order, the cluster is dropped before the servers.
fn health_cluster(net: u8, options: Options) -> (support::CrmServer, support::CrmServer, Cluster) {
    let crm_a = support::CrmServer::start(&support::crm_addr(net, "gw-a"));
    let crm_b = support::CrmServer::start(&support::crm_addr(net, "gw-b"));
    let cluster = Cluster::start(
        net,
        Options {
            health_checks: true,
            ..options
        },
    );
    cluster.wait_formed("gw-a");
    (crm_a, crm_b, cluster)
}

#[test]
fn the_vip_follows_health_and_fails_back_when_the_crm_is_reachable_again() {
    let _serial = lock();
    let (crm_a, crm_b, cluster) = health_cluster(
        25,
        Options {
            failback_delay: "1s",
            ..Options::default()
        },
    );

    // gw-a can no longer reach its CRM server: after `fall` probes it is unhealthy.
    crm_a.set_healthy(false);
    let took = cluster.wait_holder("gw-b", Duration::from_secs(5));
    figure(&format!("gw-a's check failed: gw-b holds after {took:?}"));
    let status = cluster.status("witness").expect("status");
    let gw_a = status.groups[0]
        .nodes
        .iter()
        .find(|n| n.name == "gw-a")
        .expect("listed");
    assert_eq!(
        gw_a.healthy,
        Some(false),
        "gw-a committed its health before handing over"
    );
    let gw_a_checks = status
        .health
        .iter()
        .find(|n| n.node == "gw-a")
        .and_then(|n| n.checks.clone())
        .expect("gw-a's checks, asked by the witness");
    assert_eq!(
        format!("{:?}", gw_a_checks[0].state),
        "Down",
        "{gw_a_checks:?}"
    );
    assert!(
        gw_a_checks[0].last_detail.contains("503"),
        "{gw_a_checks:?}"
    );
    let (code, text) = cluster.cli("gw-b", &["status"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("checks of gw-a") && text.contains("UNHEALTHY"),
        "{text}"
    );

    // Back: after `rise` probes and failback_delay the preferred gateway takes it back.
    crm_a.set_healthy(true);
    let back = cluster.wait_holder("gw-a", Duration::from_secs(8));
    assert!(
        back >= Duration::from_secs(1),
        "failback after {back:?}, before failback_delay"
    );

    // Every gateway unhealthy with on_all_unhealthy = "keep": the master keeps the VIP.
    // (The backup fails first, as in an outage of the CRM side; had both flipped in the
    // same instant, the VIP could move once while one of them still looked healthy.)
    let since = std::time::Instant::now();
    crm_b.set_healthy(false);
    wait_replicated_health(&cluster, "gw-b", false);
    crm_a.set_healthy(false);
    wait_replicated_health(&cluster, "gw-a", false);
    std::thread::sleep(Duration::from_secs(1));
    cluster.assert_sole_holder_since("gw-a", since);
    let (code, text) = cluster.cli("gw-a", &["history"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("facts gw-a: healthy=false") && text.contains("checks down: crm"),
        "{text}"
    );
    cluster.assert_never_two_holders();
}

#[test]
fn with_release_nobody_holds_when_every_gateway_is_unhealthy() {
    let _serial = lock();
    let (crm_a, crm_b, cluster) = health_cluster(
        26,
        Options {
            on_all_unhealthy: "release",
            ..Options::default()
        },
    );
    crm_b.set_healthy(false);
    wait_replicated_health(&cluster, "gw-b", false);
    crm_a.set_healthy(false);
    cluster.wait_no_holder_among(&["gw-a", "gw-b"], Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(1));
    assert!(cluster.holders().is_empty(), "{:?}", cluster.holders());
    // The first gateway to recover takes the VIP.
    crm_b.set_healthy(true);
    cluster.wait_holder("gw-b", Duration::from_secs(5));
    cluster.assert_never_two_holders();
}

/// Issue 14 item 5: the kernel's credentials of the caller decide who may change the
/// cluster. A socket an operator widened to 0666 (for a monitoring user's `status`) still
/// answers `failover` and `reload` only to root, the daemon's user or the socket's group.
#[test]
fn only_privileged_callers_may_change_the_cluster_through_the_socket() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = lock();
    let cluster = Cluster::start(36, Options::default());
    cluster.wait_formed("gw-a");
    let socket = &cluster.nodes["gw-a"].socket;
    for dir in [cluster.dir.path(), socket.parent().expect("node dir")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    }
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let as_nobody = |args: &[&str]| {
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "--",
            ])
            .arg(support::bin())
            .args(args)
            .arg("--socket")
            .arg(socket)
            .output()
            .expect("setpriv");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code().unwrap_or(-1), text)
    };
    let (code, text) = as_nobody(&["status"]);
    assert_eq!(code, 0, "status is read-only: {text}");
    for args in [
        &["failover", "--to", "gw-b"][..],
        &["maintenance", "on", "gw-a"][..],
        &["reload"][..],
    ] {
        let (code, text) = as_nobody(args);
        assert_ne!(code, 0, "{args:?}: {text}");
        assert!(text.contains("permission denied"), "{args:?}: {text}");
        assert!(text.contains("uid 65534"), "{args:?}: {text}");
    }
    // Root still may; nothing moved meanwhile.
    let since = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    cluster.assert_sole_holder_since("gw-a", since);
    let (code, text) = cluster.cli("gw-a", &["reload"]);
    assert_eq!(code, 0, "{text}");
}
