//! Day-2 changes on a running three-node cluster (real daemons, real Raft over loopback
//! TCP, observe-only data plane), watched every 10 ms for two holders: a VIP group added
//! and removed with `havip reload` one node at a time, a group added to every file and
//! the nodes restarted in turn, and reloads that must change nothing (a broken file, a
//! change that needs a restart, SIGHUP with a broken file).

#[path = "support/figures.rs"]
mod figures;
mod support;

use std::time::{Duration, Instant};

use support::{Cluster, NODES, Options};

fn lock() -> std::sync::MutexGuard<'static, ()> {
    support::SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `[[vip_group]]` "g2" as `node`'s file lists it.
fn g2(node: &str) -> String {
    match node {
        "witness" => "\n[[vip_group]]\nname = \"g2\"\n".to_string(),
        gw => format!(
            "\n[[vip_group]]\nname = \"g2\"\ninterface = \"eth1\"\naddresses = [\"198.18.0.60/24\"]\npriority = {}\nfailback_delay = \"500ms\"\n",
            if gw == "gw-a" { 150 } else { 100 }
        ),
    }
}

fn edit(cluster: &Cluster, node: &str, change: impl FnOnce(String) -> String) {
    let path = &cluster.nodes[node].config;
    let text = std::fs::read_to_string(path).expect("read config");
    std::fs::write(path, change(text)).expect("write config");
}

fn reload(cluster: &Cluster, node: &str) -> (i32, String) {
    cluster.cli(node, &["reload"])
}

fn groups_on(cluster: &Cluster, node: &str) -> Vec<String> {
    let status = cluster.status(node).expect("status");
    status.groups.into_iter().map(|g| g.name).collect()
}

fn wait_holders_of(cluster: &Cluster, group: &str, want: &[&str], limit: Duration) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if cluster.holders_of(group) == want {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "{group}: holders {:?}, wanted {want:?} within {limit:?}\n{}",
        cluster.holders_of(group),
        cluster.logs()
    );
}

/// Waits (10 s at most) until `node`'s `havip history` of `group` has a line starting
/// with each of `wanted` after its timestamp, each line also naming `change`.
fn wait_history(cluster: &Cluster, node: &str, group: &str, wanted: &[String], change: &str) {
    let mut history = String::new();
    for _ in 0..100 {
        history = cluster.cli(node, &["history", "--group", group]).1;
        let found =
            |w: &String| (history.lines()).any(|l| l.contains(w.as_str()) && l.contains(change));
        if wanted.iter().all(found) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{node}'s history of {group} lacks {wanted:?} ({change}):\n{history}");
}

/// `node` answers and has every node's facts in group crm (the others may have none yet).
fn wait_crm_reported(cluster: &Cluster, node: &str) {
    for _ in 0..500 {
        if let Some(status) = cluster.status(node)
            && (status.groups.iter())
                .any(|g| g.name == "crm" && g.nodes.iter().all(|n| n.priority.is_some()))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{node} never saw every node's facts in crm\n{}",
        cluster.logs()
    );
}

#[test]
fn a_group_added_and_removed_by_reload_one_node_at_a_time_never_disturbs_the_other() {
    let _serial = lock();
    let mut cluster = Cluster::start(30, Options::default());
    cluster.wait_formed("gw-a");
    cluster.watch_group("g2");
    let steady = Instant::now();

    let (code, out) = reload(&cluster, "gw-a");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nothing changed"), "{out}");

    let mut reload_took = Vec::new();
    for node in NODES {
        edit(&cluster, node, |text| text + &g2(node));
        let asked = Instant::now();
        let (code, out) = reload(&cluster, node);
        reload_took.push(asked.elapsed());
        assert_eq!(code, 0, "{node}: {out}");
        assert!(out.contains("group g2 added"), "{node}: {out}");
        assert!(groups_on(&cluster, node).contains(&"g2".to_string()));
        if node == "gw-a" {
            // Only gw-a lists g2 so far: no master, and status says the cluster differs.
            let (_, status) = cluster.cli("gw-a", &["status"]);
            assert!(status.contains("DRIFT"), "{status}");
            assert!(cluster.holders_of("g2").is_empty());
        }
    }
    let formed = wait_holders_of(&cluster, "g2", &["gw-a"], Duration::from_secs(15));
    // The new group's Raft has every configured node as a voter.
    let (code, members) = cluster.cli("witness", &["member", "list"]);
    assert_eq!(code, 0, "{members}");
    let g2_block = members.split("group g2").nth(1).expect("g2 listed");
    assert!(
        g2_block.contains("voters:   gw-a, gw-b, witness"),
        "{members}"
    );
    assert!(!members.contains("DIFFERS"), "{members}");
    let (_, status) = cluster.cli("gw-a", &["status"]);
    assert!(!status.contains("DRIFT"), "{status}");
    // Every reload is in the history of the group that was there all along, on every node.
    for node in NODES {
        let wanted: Vec<String> = (NODES.iter())
            .map(|n| format!("config {n} reloaded (fingerprint "))
            .collect();
        wait_history(&cluster, node, "crm", &wanted, "group g2 added");
    }
    figures::figure(&format!(
        "reload: g2 added; reload answered in {:?}; held by gw-a {formed:?} after the last reload",
        reload_took
    ));

    for node in NODES {
        edit(&cluster, node, |text| text.replace(&g2(node), ""));
        let (code, out) = reload(&cluster, node);
        assert_eq!(code, 0, "{node}: {out}");
        assert!(out.contains("group g2 removed"), "{node}: {out}");
        assert!(!groups_on(&cluster, node).contains(&"g2".to_string()));
    }
    wait_holders_of(&cluster, "g2", &[], Duration::from_secs(10));
    // The group that was not touched kept its master, with no gap, all along.
    cluster.assert_sole_holder_since("gw-a", steady);
    cluster.assert_never_two_holders();
    // Added again, it is formed afresh: the removal dropped its Raft state everywhere.
    for node in NODES {
        edit(&cluster, node, |text| text + &g2(node));
        let (code, out) = reload(&cluster, node);
        assert_eq!(code, 0, "{node}: {out}");
    }
    wait_holders_of(&cluster, "g2", &["gw-a"], Duration::from_secs(15));
    cluster.assert_sole_holder_since("gw-a", steady);
    cluster.assert_never_two_holders();
}

#[test]
fn a_group_added_to_every_file_gets_a_master_after_rolling_restarts() {
    let _serial = lock();
    let mut cluster = Cluster::start(31, Options::default());
    cluster.wait_formed("gw-a");
    cluster.watch_group("g2");
    for node in ["witness", "gw-b", "gw-a"] {
        edit(&cluster, node, |text| text + &g2(node));
        let status = cluster.stop(node, Duration::from_secs(5));
        assert!(
            status.is_some_and(|s| s.success()),
            "{node} did not stop cleanly"
        );
        cluster.spawn(node);
        wait_crm_reported(&cluster, node);
    }
    wait_holders_of(&cluster, "g2", &["gw-a"], Duration::from_secs(20));
    wait_holders_of(&cluster, "crm", &["gw-a"], Duration::from_secs(20));
    cluster.assert_never_two_holders();
}

#[test]
fn a_reload_that_is_broken_or_needs_a_restart_changes_nothing() {
    let _serial = lock();
    let cluster = Cluster::start(32, Options::default());
    cluster.wait_formed("gw-a");
    let steady = Instant::now();
    let before = cluster.status("gw-a").expect("status").configs;
    let original = std::fs::read_to_string(&cluster.nodes["gw-a"].config).expect("read");

    // A broken file: every error named, exit 2, nothing changed.
    edit(&cluster, "gw-a", |text| {
        text.replace("priority = 150", "priority = 999") + &g2("gw-a")
    });
    let (code, out) = reload(&cluster, "gw-a");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("havip.toml"), "names the file: {out}");
    assert!(out.contains("priority"), "names the key: {out}");
    assert!(out.contains("the running config is unchanged"), "{out}");
    assert!(!groups_on(&cluster, "gw-a").contains(&"g2".to_string()));

    // A change only a restart may make: refused whole, the group beside it not added.
    std::fs::write(
        &cluster.nodes["gw-a"].config,
        original.replace("[control]", "[control]\nmetrics = \"127.0.0.1:1\"") + &g2("gw-a"),
    )
    .expect("write");
    let (code, out) = reload(&cluster, "gw-a");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("control.metrics: changed from"), "{out}");
    assert!(out.contains("restart the node"), "{out}");
    assert!(!groups_on(&cluster, "gw-a").contains(&"g2".to_string()));

    // SIGHUP with a broken file: logged, the daemon keeps running unchanged.
    edit(&cluster, "gw-a", |text| text.replace("[node]", "[node\n"));
    cluster.signal("gw-a", "HUP");
    let started = Instant::now();
    while !cluster.logs().contains("reload refused") && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        cluster.logs().contains("reload refused"),
        "{}",
        cluster.logs()
    );
    let after = cluster.status("gw-a").expect("still answering").configs;
    assert_eq!(
        format!("{before:?}"),
        format!("{after:?}"),
        "the fingerprints must not change"
    );
    std::thread::sleep(Duration::from_secs(1));
    cluster.assert_sole_holder_since("gw-a", steady);
    cluster.assert_never_two_holders();
}

#[test]
fn health_checks_replaced_by_reload_keep_the_vip_until_the_new_checks_say_otherwise() {
    let _serial = lock();
    let net = 33;
    let _crm_a = support::CrmServer::start(&support::crm_addr(net, "gw-a"));
    let _crm_b = support::CrmServer::start(&support::crm_addr(net, "gw-b"));
    let cluster = Cluster::start(
        net,
        Options {
            health_checks: true,
            ..Options::default()
        },
    );
    cluster.wait_formed("gw-a");
    let steady = Instant::now();

    // Another interval and timeout for the same server: no gap, no move.
    edit(&cluster, "gw-a", |text| {
        text.replace("interval = \"200ms\"", "interval = \"300ms\"")
    });
    let (code, out) = reload(&cluster, "gw-a");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("health checks"), "{out}");
    std::thread::sleep(Duration::from_secs(1));
    cluster.assert_sole_holder_since("gw-a", steady);

    // A check of a server that does not answer: the new checks are in effect, gw-a is
    // unhealthy, and the VIP moves to gw-b.
    let dead = format!("127.0.{net}.29:8080");
    let live = support::crm_addr(net, "gw-a");
    edit(&cluster, "gw-a", |text| text.replace(&live, &dead));
    let (code, out) = reload(&cluster, "gw-a");
    assert_eq!(code, 0, "{out}");
    cluster.wait_holder("gw-b", Duration::from_secs(10));
    // And back: gw-a is healthy again and takes the VIP back after failback_delay.
    edit(&cluster, "gw-a", |text| text.replace(&dead, &live));
    let (code, out) = reload(&cluster, "gw-a");
    assert_eq!(code, 0, "{out}");
    cluster.wait_holder("gw-a", Duration::from_secs(10));
    cluster.assert_never_two_holders();

    // Removing every check is a restart: refused.
    let text = std::fs::read_to_string(&cluster.nodes["gw-a"].config).expect("read");
    // The [health] section and its checks are the end of the file (no notify hook here).
    let cut = text.find("\n[health]").expect("a [health] section");
    std::fs::write(&cluster.nodes["gw-a"].config, &text[..cut]).expect("write");
    let (code, out) = reload(&cluster, "gw-a");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("health"), "{out}");
}

#[test]
fn a_key_rolled_through_the_cluster_one_reload_at_a_time_never_drops_the_vip() {
    let _serial = lock();
    let cluster = Cluster::start(34, Options::default());
    cluster.wait_formed("gw-a");
    let steady = Instant::now();
    let old = cluster.dir.path().join("cluster.key");
    let new = cluster.dir.path().join("cluster-2.key");
    support::keygen(&new);
    let key_line = |path: &std::path::Path| format!("key_file = \"{}\"", path.display());

    // Step 1, one node at a time: the new key is current, the old one still accepted.
    for node in NODES {
        edit(&cluster, node, |text| {
            text.replace(
                &key_line(&old),
                &format!("{}\nprevious_{}", key_line(&new), key_line(&old)),
            )
        });
        let (code, out) = reload(&cluster, node);
        assert_eq!(code, 0, "{node}: {out}");
        assert!(out.contains("cluster key files"), "{node}: {out}");
    }
    let (_, status) = cluster.cli("gw-a", &["status"]);
    assert!(status.contains("still accepted"), "{status}");
    // Step 2: the old key is dropped everywhere; links made with it come back with the new.
    for node in NODES {
        edit(&cluster, node, |text| {
            text.replace(&format!("\nprevious_{}", key_line(&old)), "")
        });
        let (code, out) = reload(&cluster, node);
        assert_eq!(code, 0, "{node}: {out}");
    }
    let started = Instant::now();
    let new_id = loop {
        let report = cluster.status("gw-a").expect("status");
        let mine = (report.configs.iter())
            .find(|c| c.node == "gw-a")
            .and_then(|c| c.fingerprints.clone())
            .expect("own fingerprints")
            .keys;
        let links: Vec<Option<String>> = (report.configs.iter())
            .filter(|c| c.node != "gw-a")
            .map(|c| c.link_key.clone())
            .collect();
        if links.iter().all(|k| k.as_deref() == Some(mine.as_str())) {
            break mine;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "links still on the old key: {links:?} (current {mine})\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!new_id.contains("previous"), "{new_id}");
    std::thread::sleep(Duration::from_millis(500));
    cluster.assert_sole_holder_since("gw-a", steady);
    cluster.assert_never_two_holders();
}

#[test]
fn a_group_s_addresses_and_priority_change_live_without_releasing_it() {
    let _serial = lock();
    let cluster = Cluster::start(35, Options::default());
    cluster.wait_formed("gw-a");
    let steady = Instant::now();
    let (first, second) = ("\"198.18.0.50/24\"", "\"198.18.0.51/24\"");

    // An address added to the held group: only it is added, the other stays.
    for node in ["gw-b", "gw-a"] {
        edit(&cluster, node, |text| {
            text.replace(
                &format!("addresses = [{first}]"),
                &format!("addresses = [{first}, {second}]"),
            )
        });
        let (code, out) = reload(&cluster, node);
        assert_eq!(code, 0, "{node}: {out}");
        assert!(out.contains("group crm: +198.18.0.51/24"), "{node}: {out}");
    }
    let addresses = |node| {
        let status = cluster.status(node).expect("status");
        status
            .groups
            .into_iter()
            .find(|g| g.name == "crm")
            .expect("crm")
            .addresses
    };
    assert_eq!(addresses("gw-a"), ["198.18.0.50/24", "198.18.0.51/24"]);
    let gw_a_log = &cluster.nodes["gw-a"].log;
    support::wait_file_contains(
        gw_a_log,
        "added=[198.18.0.51/24] removed=[]",
        Duration::from_secs(5),
    );
    // The first address removed: only it goes.
    for node in ["gw-b", "gw-a"] {
        edit(&cluster, node, |text| {
            text.replace(&format!("[{first}, {second}]"), &format!("[{second}]"))
        });
        let (code, out) = reload(&cluster, node);
        assert_eq!(code, 0, "{node}: {out}");
    }
    assert_eq!(addresses("gw-a"), ["198.18.0.51/24"]);
    support::wait_file_contains(
        gw_a_log,
        "added=[] removed=[198.18.0.50/24]",
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_millis(300));
    cluster.assert_sole_holder_since("gw-a", steady);

    // gw-b made the preferred gateway: a planned move after failback_delay (1 s).
    edit(&cluster, "gw-b", |text| {
        text.replace("priority = 100", "priority = 200")
    });
    let asked = Instant::now();
    let (code, out) = reload(&cluster, "gw-b");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("priority 100 -> 200"), "{out}");
    cluster.wait_holder("gw-b", Duration::from_secs(10));
    let released = cluster
        .holds("gw-a")
        .last()
        .map(|h| h.to)
        .expect("gw-a held");
    let taken = cluster
        .holds("gw-b")
        .first()
        .map(|h| h.from)
        .expect("gw-b holds");
    figures::figure(&format!(
        "reload: priority change moved crm {:?} after the reload; gap between holders {:?}",
        taken - asked,
        taken.saturating_duration_since(released)
    ));
    cluster.assert_never_two_holders();
}

/// `text` with its `[timers]` (none in the tests' files until a first change) set to
/// `heartbeat` and `election_timeout`, whose minimum is the leader lease.
fn with_timers(text: &str, heartbeat: &str, election_timeout: &str) -> String {
    let block = format!(
        "[timers]\nheartbeat = \"{heartbeat}\"\nelection_timeout = \"{election_timeout}\"\n\n"
    );
    let without = match (text.find("[timers]"), text.find("[control]")) {
        (Some(start), Some(end)) => format!("{}{}", &text[..start], &text[end..]),
        _ => text.to_string(),
    };
    without.replacen("[control]", &format!("{block}[control]"), 1)
}

fn reload_timers(cluster: &Cluster, node: &str, heartbeat: &str, election_timeout: &str) {
    edit(cluster, node, |text| {
        with_timers(&text, heartbeat, election_timeout)
    });
    let (code, out) = reload(cluster, node);
    assert_eq!(code, 0, "{node}: {out}");
    assert!(out.contains("timers:"), "{node}: {out}");
}

/// Issue 13 item 3. The master first, the worst order for a rule where each node used its
/// own file: it would hold under a longer lease than its followers grant. Up, then down
/// again in the other order; the VIP never moves and never has two holders.
#[test]
fn timers_rolled_one_node_at_a_time_never_move_the_vip() {
    let _serial = lock();
    let cluster = Cluster::start(37, Options::default());
    cluster.wait_formed("gw-a");
    let steady = Instant::now();
    for node in NODES {
        reload_timers(&cluster, node, "200ms", "800ms..900ms");
        std::thread::sleep(Duration::from_millis(300));
    }
    let report = cluster.status("gw-b").expect("status");
    assert!(
        report.configs.iter().all(|c| c.fingerprints.is_some()),
        "{report:?}"
    );
    let (_, status) = cluster.cli("gw-b", &["status"]);
    assert!(
        !status.contains("DRIFT"),
        "every node has the new timers:\n{status}"
    );
    for node in NODES.iter().rev() {
        reload_timers(&cluster, node, "128ms", "400ms..500ms");
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(500));
    cluster.assert_sole_holder_since("gw-a", steady);
    cluster.assert_never_two_holders();
    let logs = cluster.logs();
    assert!(logs.contains("timers changed by a reload"), "{logs}");
}

/// The followers grant the lease their leader announces, not the one in their own files:
/// gw-a alone is reloaded to a 2 s lease, then killed. gw-b and the witness still have
/// 400 ms in their files, and must not elect anyone until about 2 s after the last
/// heartbeat they accepted (without the rule they would at 0.4-0.5 s, while gw-a could
/// still hold under its 1.6 s hold lease). gw-b, restarted meanwhile, sits out the 2 s it
/// granted before it joins (the lease record on disk).
#[test]
fn followers_honour_the_lease_their_leader_announced() {
    let _serial = lock();
    let mut cluster = Cluster::start(38, Options::default());
    cluster.wait_formed("gw-a");
    reload_timers(&cluster, "gw-a", "128ms", "2000ms..2100ms");
    std::thread::sleep(Duration::from_millis(500));
    // gw-b restarted: it granted 2 s before it stopped, and says it sits them out.
    assert!(cluster.stop("gw-b", Duration::from_secs(5)).is_some());
    cluster.spawn("gw-b");
    let started = Instant::now();
    while !cluster
        .logs()
        .contains("sitting out a leader lease granted before the start")
        && started.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = cluster.logs();
    assert!(
        logs.contains("sitting out a leader lease granted before the start")
            && logs.contains("lease_ms=2000"),
        "{logs}"
    );
    cluster.wait_reported("gw-b");
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    cluster.kill("gw-a");
    // When gw-b first holds, whoever else the watcher still counts (gw-a until its
    // deadline, since a killed node cannot say it let go).
    while !cluster.holders_of("crm").contains(&"gw-b") {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "gw-b never held\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let took_over = killed.elapsed();
    let after = took_over.as_millis();
    figures::figure(&format!(
        "gw-b held {after} ms after gw-a (announcing a 2 s lease) was killed"
    ));
    assert!(
        took_over >= Duration::from_millis(1700),
        "gw-b held {after} ms after the kill, inside the 2 s lease it granted gw-a\n{}",
        cluster.logs()
    );
    cluster.assert_never_two_holders();
}
