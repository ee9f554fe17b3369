//! Five voters (README, "Five voters"): two gateways and three witnesses, five real `havip
//! run --observe-only` processes on loopback talking real Raft over encrypted TCP, with the
//! cluster tests' 10 ms watcher. A majority is three, so the VIP survives the loss of any
//! two nodes that leave a gateway: the master and a witness (the VIP moves within the
//! hard-failure budget), two witnesses or the backup and a witness (it does not move at
//! all), and a graceful stop of two; with three gone there is no majority and the master
//! lets go within its lease. Never two holders, never a witness. The example files
//! of the deployment (`conf/five-voters/`) pass `havip check-config` together.

#[path = "support/figures.rs"]
mod figures;
mod support;

use std::time::{Duration, Instant};

use figures::figure;
use support::{Cluster, FIVE_VOTERS, Options, SERIAL};

/// The budget for a hard failure of the master on a loaded CI machine: the lab e2e
/// suite's 1 s target (README, "The lab e2e suite") with the same allowance its
/// `Budget::HardUnderLoss` has (1.6 s). One run in about thirty went over 1 s with the
/// shared 2-core VM at load 4-8 (gw-b needs both surviving witnesses' votes, and a first
/// election can fail under load); the measured times are printed as figures, and the
/// target itself is a benchmark's to show, not a timed test's.
const HARD_FAILURE_BUDGET: Duration = Duration::from_millis(1600);

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn five(net: u8) -> Cluster {
    let cluster = Cluster::start_shape(
        net,
        Options {
            failback_delay: "1s",
            ..Options::default()
        },
        &FIVE_VOTERS,
    );
    cluster.wait_formed("gw-a");
    cluster
}

#[test]
fn the_five_voter_example_files_pass_check_config() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/five-voters");
    let files: Vec<_> = FIVE_VOTERS
        .iter()
        .map(|n| dir.join(format!("{n}.toml")))
        .collect();
    let out = std::process::Command::new(support::bin())
        .arg("check-config")
        .args(&files)
        .output()
        .expect("havip check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("5 file(s) OK"), "{text}");
    // The files agree with each other; the only warning allowed is about this host (the
    // key file of a real node is not here).
    for line in text.lines().filter(|l| l.starts_with("warning")) {
        assert!(line.contains("cluster.key_file"), "{text}");
    }
}

#[test]
fn the_master_and_a_witness_killed_at_once_move_the_vip_within_the_budget() {
    let _serial = lock();
    let mut cluster = five(50);
    let killed = Instant::now();
    cluster.kill("gw-a");
    cluster.kill("witness");
    let took = cluster.wait_holder("gw-b", Duration::from_secs(5));
    let after = cluster.assert_took_over_after_deadline("gw-a", "gw-b", killed);
    figure(&format!(
        "five voters, SIGKILL of the master and a witness: gw-b holds after {took:?}, {after:?} after gw-a's hold deadline"
    ));
    assert!(
        took <= HARD_FAILURE_BUDGET,
        "gw-b held {took:?} after the kill, over the {HARD_FAILURE_BUDGET:?} budget\n{}",
        cluster.logs()
    );
    cluster.assert_never_two_holders();
    // Both come back: the cluster has five voters again and failback returns the VIP.
    cluster.spawn("witness");
    cluster.spawn("gw-a");
    let back = cluster.wait_holder("gw-a", Duration::from_secs(15));
    figure(&format!(
        "five voters, both restarted: gw-a holds again after {back:?}"
    ));
    cluster.assert_never_two_holders();
}

/// Kills `two` (neither of them the master) and checks that gw-a holds throughout, then
/// that the three left still commit: a manual failover to gw-b if it is one of them (they
/// elect it too), else gw-b's maintenance flag (the VIP stays).
fn the_master_keeps_the_vip_without_a_gap(net: u8, two: [&str; 2]) {
    let _serial = lock();
    let mut cluster = five(net);
    let since = Instant::now();
    for node in two {
        cluster.kill(node);
    }
    // Longer than a witness's silence (4 leases) and several hold leases.
    std::thread::sleep(Duration::from_secs(3));
    cluster.assert_sole_holder_since("gw-a", since);
    let asked = Instant::now();
    let (change, args, holder): (&str, &[&str], &str) = if two.contains(&"gw-b") {
        (
            "maintenance on gw-b",
            &["maintenance", "on", "gw-b"],
            "gw-a",
        )
    } else {
        ("failover --to gw-b", &["failover", "--to", "gw-b"], "gw-b")
    };
    let (code, text) = cluster.cli("gw-a", args);
    assert_eq!(code, 0, "{change} with three of five voters: {text}");
    cluster.wait_holder(holder, Duration::from_secs(5));
    figure(&format!(
        "five voters, {} and {} killed: gw-a held throughout; then {change} took {:?}",
        two[0],
        two[1],
        asked.elapsed()
    ));
    if holder == "gw-a" {
        cluster.assert_sole_holder_since("gw-a", since);
    }
    cluster.assert_never_two_holders();
}

#[test]
fn two_witnesses_killed_leave_the_master_holding() {
    the_master_keeps_the_vip_without_a_gap(51, ["witness-crm-1", "witness-crm-2"]);
}

#[test]
fn the_backup_and_a_witness_killed_leave_the_master_holding() {
    the_master_keeps_the_vip_without_a_gap(52, ["gw-b", "witness-crm-1"]);
}

#[test]
fn a_graceful_stop_of_the_master_and_a_witness_hands_over() {
    let _serial = lock();
    let mut cluster = five(53);
    for node in ["gw-a", "witness-crm-2"] {
        let status = cluster
            .stop(node, Duration::from_secs(3))
            .unwrap_or_else(|| panic!("{node} exits within 3 s of SIGTERM"));
        assert!(status.success(), "{node}: exit status {status:?}");
    }
    cluster.wait_holder("gw-b", Duration::from_secs(2));
    let (last_a, first_b) = (
        cluster.holds("gw-a").last().map(|h| h.to),
        cluster.holds("gw-b").first().map(|h| h.from),
    );
    let gap = match (last_a, first_b) {
        (Some(released), Some(taken)) => taken.saturating_duration_since(released),
        _ => panic!("no hand-over seen\n{}", cluster.logs()),
    };
    figure(&format!(
        "five voters, SIGTERM of the master then a witness: gw-b took over {gap:?} after gw-a released"
    ));
    let since = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    cluster.assert_sole_holder_since("gw-b", since);
    cluster.assert_never_two_holders();
}

#[test]
fn three_nodes_lost_leave_no_majority_and_the_master_lets_go_within_its_lease() {
    let _serial = lock();
    let mut cluster = five(54);
    for node in ["gw-b", "witness-crm-1", "witness-crm-2"] {
        cluster.kill(node);
    }
    // gw-a and one witness are two of five: no quorum acknowledges gw-a any more, so it
    // lets go at the end of the hold lease (320 ms by default) of its last acknowledged
    // heartbeat, sent before the kill; 100 ms more for the watcher's polls and a loaded VM.
    let took = cluster.wait_no_holder_among(&["gw-a"], Duration::from_secs(2));
    figure(&format!(
        "five voters, three killed: gw-a let the VIP go {took:?} after the kill"
    ));
    assert!(
        took <= Duration::from_millis(420),
        "gw-a held {took:?} without a majority\n{}",
        cluster.logs()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cluster.holders(), Vec::<&str>::new(), "{}", cluster.logs());
    cluster.assert_never_two_holders();
}
