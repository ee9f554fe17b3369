//! Membership changes through Raft (issue 13 item 2), on a real cluster on loopback
//! (observe-only daemons, real Raft over real TCP), the peer lists changed by restarting
//! the nodes one by one with the new file:
//! - a witness replaced by a new node of another name on its address: the new node joins
//!   the group as a learner, and one change makes it a voter and removes the old one;
//! - three voters grown to five, then back to three.
//!
//! Nothing changes while the lists differ; a master throughout, never two.

mod support;

use std::time::{Duration, Instant};

use havip::control::protocol::{GroupMembership, Request, Response};
use support::{Cluster, NODES, Node, Options, SERIAL, call, node_addr, write_config};

const NET: u8 = 57;

/// `crm`'s membership as `on` has it (`havip member list`).
fn membership(cluster: &Cluster, on: &str) -> Option<GroupMembership> {
    match call(
        &cluster.nodes[on].socket,
        Request::Members,
        Duration::from_secs(2),
    ) {
        Some(Response::Members { groups }) => groups.into_iter().find(|g| g.group == "crm"),
        _ => None,
    }
}

/// Waits (at most `limit`) until `on` has `voters` as the voters of a settled membership
/// (no learner left, not joint).
fn wait_voters(cluster: &Cluster, on: &str, voters: &[&str], limit: Duration) -> Duration {
    let start = Instant::now();
    let mut seen = None;
    while start.elapsed() < limit {
        seen = membership(cluster, on);
        if let Some(m) = &seen
            && m.voters == voters
            && m.learners.is_empty()
            && !m.joint
        {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{on} never had the voters {voters:?}: {seen:?}\n{}",
        cluster.logs()
    );
}

/// Stops `name` (its graceful stop hands over what it holds) and starts it again with
/// the file it has now.
fn restart(cluster: &mut Cluster, name: &str) {
    cluster.stop(name, Duration::from_secs(10));
    cluster.spawn(name);
    // Back once it follows a leader (`wait_reported` would wait for facts that a node the
    // lists name but the membership does not yet cannot report).
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if cluster
            .status(name)
            .is_some_and(|s| s.groups.iter().all(|g| g.leader.is_some()))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{name} follows no leader after its restart\n{}",
        cluster.logs()
    );
}

/// Rewrites every node's file for a cluster of `shape`.
fn write_files(cluster: &Cluster, shape: &[&str]) {
    let key = cluster.dir.path().join("cluster.key");
    for name in shape {
        write_config(
            cluster.dir.path(),
            cluster.net,
            shape,
            name,
            &key,
            &Options::default(),
        );
    }
}

/// Adds `name` (of `shape`) to the cluster's nodes, its files under the cluster's dir.
fn add_node(cluster: &mut Cluster, shape: &[&str], name: &'static str) {
    let dir = cluster.dir.path().join(name);
    let net = cluster.net;
    cluster.nodes.insert(
        name,
        Node {
            name,
            addr: node_addr(net, shape, name),
            config: dir.join("havip.toml"),
            socket: dir.join("havip.sock"),
            log: dir.join("havip.log"),
            child: None,
        },
    );
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn a_witness_replaced_by_a_new_node_is_one_membership_change() {
    let _serial = lock();
    let mut cluster = Cluster::start(NET, Options::default());
    cluster.wait_formed("gw-a");
    wait_voters(&cluster, "gw-a", &NODES, Duration::from_secs(5));

    // The witness's host is rebuilt as witness-2, on the same address (.13).
    const REPLACED: [&str; 3] = ["gw-a", "gw-b", "witness-2"];
    cluster.stop("witness", Duration::from_secs(10));
    write_files(&cluster, &REPLACED);
    add_node(&mut cluster, &REPLACED, "witness-2");
    cluster.spawn("witness-2");
    restart(&mut cluster, "gw-b");
    // gw-a's list still names the old witness: nothing changes.
    std::thread::sleep(Duration::from_secs(2));
    let m = membership(&cluster, "gw-b").expect("gw-b answers");
    assert_eq!(m.voters, NODES, "changed before every list agreed: {m:?}");
    restart(&mut cluster, "gw-a");
    let took = wait_voters(&cluster, "gw-a", &REPLACED, Duration::from_secs(20));
    println!("membership: witness replaced by witness-2 {took:?} after the last restart");
    for name in REPLACED {
        wait_voters(&cluster, name, &REPLACED, Duration::from_secs(10));
    }
    // The new voter counts: with gw-b stopped, gw-a and witness-2 are a majority.
    cluster.wait_holder("gw-a", Duration::from_secs(20));
    cluster.stop("gw-b", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cluster.holders(), ["gw-a"]);
    cluster.assert_never_two_holders();
}

const FIVE: [&str; 5] = ["gw-a", "gw-b", "witness", "witness-2", "witness-3"];

#[test]
fn three_voters_grow_to_five_and_back_to_three() {
    let _serial = lock();
    let mut cluster = Cluster::start(NET + 1, Options::default());
    cluster.wait_formed("gw-a");
    wait_voters(&cluster, "gw-a", &NODES, Duration::from_secs(5));

    write_files(&cluster, &FIVE);
    for name in ["witness-2", "witness-3"] {
        add_node(&mut cluster, &FIVE, name);
        cluster.spawn(name);
    }
    for name in ["witness", "gw-b", "gw-a"] {
        restart(&mut cluster, name);
    }
    let took = wait_voters(&cluster, "gw-a", &FIVE, Duration::from_secs(20));
    println!("membership: five voters {took:?} after the last restart");
    for name in FIVE {
        wait_voters(&cluster, name, &FIVE, Duration::from_secs(10));
    }

    write_files(&cluster, &NODES);
    for name in ["witness-2", "witness-3"] {
        cluster.stop(name, Duration::from_secs(10));
    }
    for name in ["witness", "gw-b", "gw-a"] {
        restart(&mut cluster, name);
    }
    let took = wait_voters(&cluster, "gw-a", &NODES, Duration::from_secs(20));
    println!("membership: back to three voters {took:?} after the last restart");
    cluster.wait_holder("gw-a", Duration::from_secs(20));

    // A removed node started again with its old file (five peers) disturbs nothing: the
    // others' meshes close its connections, it elects nobody.
    let since = Instant::now();
    cluster.spawn("witness-2");
    std::thread::sleep(Duration::from_secs(3));
    wait_voters(&cluster, "gw-a", &NODES, Duration::from_secs(1));
    cluster.assert_sole_holder_since("gw-a", since);
    let log = std::fs::read_to_string(&cluster.nodes["witness-2"].log).unwrap_or_default();
    println!("membership: the removed node says:\n{}", tail(&log, 12));
    cluster.assert_never_two_holders();
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
