//! The failover e2e suite on the lab (DESIGN.md "The lab", `tests/support/lab.rs`): the
//! topology of `vagrant/nodes.conf`, built and provisioned by `scripts/lab.sh` with the
//! Vagrant rig's provisioning scripts, three real `havip run` daemons (real data plane, as
//! root) in their namespaces, and for every fault:
//! - a **watcher**, `scripts/vip-watch.py` (`lab.sh watch`): the kernel's address events
//!   of every node, in the kernel's order (one `ip monitor all-nsid` in the bridge
//!   namespace), so every instant with two holders is recorded, however short, and a
//!   hand-over never looks like one;
//! - a **client probe** (`scripts/lab-probe.py` in the client's namespace) sending a TCP
//!   connect + HTTP GET to the VIP every 10 ms; each gateway runs a responder on port 80
//!   answering with its name, so the probe records WHO answered, and an outage is the
//!   longest gap between two answers around the fault (`support/outage.rs`, the
//!   benchmark's computation too).
//!
//! Asserted for every fault: never two holders, a frozen or killed daemon's address
//! included (its fence takes it down when its hold lease ends or at once when the daemon
//! dies; lab.sh's supervisor also runs `havip release`, like systemd's ExecStopPost), a
//! SIGSTOPped daemon's VIP gone within its hold lease, the VIP answers again within
//! the fault's budget (`Budget`), the preferred gateway holds again once the fault heals,
//! and nothing is left after `lab.sh down`. The measured outages are printed (eprintln) for the CI log; the
//! real figures belong to the benchmark. It must never touch a host interface: lab.sh
//! creates every interface inside the lab's namespaces.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

#[path = "support/figures.rs"]
mod figures;
#[path = "support/lab.rs"]
mod lab;
#[path = "support/lab_run.rs"]
mod lab_run;
#[path = "support/outage.rs"]
mod outage;
use figures::figure;
use lab::host::{self, sh};
use lab::watch::Overlap;
use lab::{REPO, address_of, ip, lab_sh, names_of, nft};
use lab_run::{Budget, Lab, SERIAL, now_ms};
use outage::Verdict;

/// How long a frozen daemon's VIP may outlive its SIGSTOP: its hold lease, which began
/// before the stop (the timers of the config gw-a runs with: 320 ms). Its fence takes the
/// VIP down 5 ms before that (issue 14 item 9); before the fence it stayed for the kernel
/// lifetime, 3-4 s.
fn hold_lease_ms() -> u64 {
    let path = std::path::PathBuf::from(lab::config("gw-a"));
    let text = std::fs::read_to_string(&path).expect("gw-a's config in the lab");
    let config = havip::config::Config::from_str(&path, &text).expect("gw-a's config parses");
    let lease = havip::hold::hold_lease(config.timers.leader_lease(), havip::hold::TICK);
    u64::try_from(lease.as_millis()).unwrap_or(u64::MAX)
}

/// What a fault does to the `crm` group (preferred: gw-a) while it lasts.
struct Fault<'a> {
    name: &'a str,
    inject: &'a dyn Fn(),
    heal: &'a dyn Fn(),
    /// Who must answer on the VIP while the fault lasts.
    during: &'a str,
    /// How long the fault may take to show (health checks need their fall count).
    show_within: Duration,
    /// How long the VIP may go unanswered while the fault lasts.
    budget: Budget,
    /// How long it may go unanswered while the fault heals and gw-a takes the VIP back:
    /// a planned move, except where the heal itself drops traffic (stopping the delay
    /// lines drops the packets they hold).
    heal_budget: Budget,
    /// At most this many changes of `crm`'s holders while the fault lasts (None: any).
    max_moves: Option<usize>,
    /// No node but this one held `crm` while the fault lasted: the VIP did not move,
    /// though its holder may have let it go and taken it again (a lease that lapsed while
    /// the machine stalled).
    stays_with: Option<&'a str>,
    /// gw-a's daemon is frozen (SIGSTOP) from the fault's start until it heals (SIGCONT):
    /// its address may outlive its hold by the kernel lifetime, but not the freeze.
    freezes: bool,
}

/// Runs one fault on a fresh lab and asserts the invariants; prints the outages. An
/// outage over budget only because the probe itself was starved (`outage::judge`) proves
/// nothing either way: the fault runs once more on a fresh lab, and must pass then. Every
/// run asserts the safety invariants; only the outage's measure is taken again.
fn run_fault(fault: Fault) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(inconclusive) = measure_fault(&fault, fault.name) {
        figure(&format!(
            "lab e2e: {}: inconclusive, run again: {inconclusive}",
            fault.name
        ));
        if let Err(again) = measure_fault(&fault, &format!("{} (rerun)", fault.name)) {
            panic!(
                "{}: inconclusive twice (the probe starved, or the client's path under \
                 the fault, both times): {inconclusive}; then {again}",
                fault.name
            );
        }
    }
}

/// One run of `fault`: panics on any broken invariant or an outage over budget; Err when
/// an outage was over budget only by the probe's own starvation, or, under loss, only on
/// the client's path after another gateway held within the budget.
/// Its logs are kept under `label`.
fn measure_fault(fault: &Fault, label: &str) -> Result<(), String> {
    let mut lab = Lab::up();
    std::thread::sleep(Duration::from_millis(500));

    let t0 = now_ms();
    (fault.inject)();
    let t_injected = now_ms();
    let shown = lab.wait(fault.show_within, |lab| {
        lab.last_answer_by(fault.during, t0 + 50) && lab.holders("crm") == [fault.during]
    });
    assert!(
        shown.is_some(),
        "{}: {} did not answer on the VIP within {:?}; holders {:?}\n{}",
        fault.name,
        fault.during,
        fault.show_within,
        lab.holders("crm"),
        lab.logs()
    );
    // Let the fault last a while: a partition must not make anyone else take over.
    std::thread::sleep(Duration::from_secs(2));
    let t1 = now_ms();
    let crm = address_of("crm");
    let moves = lab.moves("crm", t0, t1);
    // The frozen daemon's address went when its hold lease ended (its fence took it
    // down), and the lease began before the SIGSTOP.
    let frozen_last = fault
        .freezes
        .then(|| lab.last_seen_holding_before("gw-a", t1))
        .flatten();

    // A freeze's allowance ends at the instant SIGCONT is sent, not once lab.sh has
    // returned: from then on, gw-a beside another holder is the thawed daemon's doing (a
    // re-added VIP, a hold on a stale acknowledgement), however short.
    let t_thaw = now_ms();
    (fault.heal)();
    let healed = lab.wait(Duration::from_secs(30), |lab| {
        lab.holders("crm") == ["gw-a"]
            && lab.holders("crm2") == ["gw-b"]
            && lab.last_answer_by("gw-a", now_ms().saturating_sub(100))
    });
    assert!(
        healed.is_some(),
        "{}: gw-a did not hold crm again within 30 s after the fault healed; holders {:?}\n{}",
        fault.name,
        lab.holders("crm"),
        lab.logs()
    );
    std::thread::sleep(Duration::from_millis(500));
    let t2 = now_ms();
    // Judged once the probes sent up to t2 have ended (`Lab::judged` waits for that).
    let during = lab.judged(&crm, t0, t1, fault.budget.ms());
    let failback = lab.judged(&crm, t1, t2, fault.heal_budget.ms());
    // The watcher reports an overlap when it ends: stopped, it reports the open ones too.
    lab.stop_observing();
    lab.keep_logs(label);
    let frozen = fault.freezes.then_some(("gw-a", t0, t_thaw));
    let late = lab.late_releases(frozen.as_slice());
    let split = lab.split_brain();
    let end = now_ms();
    let total = |o: &[Overlap]| o.iter().map(|o| o.ms(end)).sum::<u64>();
    figure(&format!(
        "lab e2e: {:<24} outage {:>5} ms ({} -> {}){}; back to gw-a after {:?}, \
         outage {} ms ({} -> {}){}; two holders: {} ({} ms); late releases: {}{}",
        fault.name,
        during.ms,
        during.before,
        during.after,
        starved_note(&during),
        healed.unwrap_or_default(),
        failback.ms,
        failback.before,
        failback.after,
        starved_note(&failback),
        split.len(),
        total(&split),
        late.len(),
        frozen_last.map_or(String::new(), |last| format!(
            "; frozen gw-a's VIP last seen {} ms after SIGSTOP returned",
            last.saturating_sub(t_injected)
        )),
    ));
    let errors = lab.watcher_errors();
    assert!(
        errors.is_empty(),
        "{}: the watcher may have lost events: {errors:?}",
        fault.name
    );
    assert!(
        split.is_empty(),
        "{}: two holders: {}\n{}",
        fault.name,
        split
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join("; "),
        lab.logs()
    );
    assert!(
        late.is_empty(),
        "{}: a daemon released after its hold lease ended:\n{}",
        fault.name,
        late.join("\n")
    );
    if let Some(max) = fault.max_moves {
        assert!(
            moves <= max,
            "{}: the VIP moved {moves} times during the fault",
            fault.name
        );
    }
    if let Some(node) = fault.stays_with {
        let others = lab.held_by_others("crm", node, t0, t1);
        assert!(
            others.is_empty(),
            "{}: {others:?} held crm during the fault, which must stay with {node}",
            fault.name
        );
    }
    if let Some(last) = frozen_last {
        let lease = hold_lease_ms();
        assert!(
            last <= t_injected + lease,
            "{}: gw-a's VIP outlived its frozen daemon by {} ms, past its hold lease ({lease} ms)",
            fault.name,
            last.saturating_sub(t_injected),
        );
    }
    let mut inconclusive = Vec::new();
    for (what, judged, budget, from, to) in [
        ("while the fault lasted", &during, fault.budget, t0, t1),
        ("during failback", &failback, fault.heal_budget, t1, t2),
    ] {
        let text = format!(
            "the VIP went unanswered for {} ms {what} ({} -> {}), budget {budget:?} {} ms; the \
             probe itself sent nothing for {} ms of it, and {} of its probes went unanswered",
            judged.ms,
            judged.before,
            judged.after,
            budget.ms(),
            judged.starved_ms,
            lab.lost(&crm, from, to),
        );
        // Under loss and delay the client's own path (its delay line, its packets to the
        // VIP) can add a second on top of a hand-over that was in time: CI measured
        // 1,710-1,935 ms three times with gw-b holding 620-680 ms after the kill and
        // holding on. Then the fault runs once more on a fresh lab and must pass there.
        let taken_in_time = budget == Budget::HardUnderLoss
            && !lab
                .held_by_others("crm", "gw-a", from, from + budget.ms())
                .is_empty();
        match judged.verdict {
            Verdict::Within => {}
            Verdict::Inconclusive => inconclusive.push(text),
            Verdict::Over if taken_in_time => inconclusive.push(format!(
                "{text}; another gateway held crm within the budget, so the rest is the \
                 client's path under the fault"
            )),
            Verdict::Over => panic!("{}: {text}\n{}", fault.name, lab.logs()),
        }
    }
    lab.down_and_check();
    if inconclusive.is_empty() {
        Ok(())
    } else {
        Err(inconclusive.join("; "))
    }
}

/// A figure's note of the probe's own starvation inside an outage, when it was more than
/// a few probes' spacing: the reader of the CI log sees which outages were the test host's.
fn starved_note(judged: &lab_run::Judged) -> String {
    if judged.starved_ms > 50 {
        format!(" [probe starved {} ms of it]", judged.starved_ms)
    } else {
        String::new()
    }
}

#[test]
fn hard_node_failure_link_down_inside_the_master() {
    run_fault(Fault {
        name: "link down in gw-a",
        inject: &|| ip(&["-n", "hv-gw-a", "link", "set", "lan0", "down"]),
        heal: &|| ip(&["-n", "hv-gw-a", "link", "set", "lan0", "up"]),
        during: "gw-b",
        show_within: Duration::from_secs(10),
        budget: Budget::Hard,
        heal_budget: Budget::Planned,
        freezes: false,
        max_moves: None,
        stays_with: None,
    });
}

#[test]
fn daemon_sigkill_of_the_master_and_restart() {
    run_fault(Fault {
        name: "SIGKILL gw-a",
        inject: &|| {
            lab_sh(&["stop-havip", "gw-a", "KILL"]);
        },
        heal: &|| {
            lab_sh(&["start-havip", "gw-a"]);
        },
        during: "gw-b",
        show_within: Duration::from_secs(10),
        budget: Budget::Hard,
        heal_budget: Budget::Planned,
        freezes: false,
        max_moves: None,
        stays_with: None,
    });
}

#[test]
fn graceful_stop_of_the_master_and_restart() {
    run_fault(Fault {
        name: "SIGTERM gw-a",
        inject: &|| {
            lab_sh(&["stop-havip", "gw-a", "TERM"]);
        },
        heal: &|| {
            lab_sh(&["start-havip", "gw-a"]);
        },
        during: "gw-b",
        show_within: Duration::from_secs(10),
        budget: Budget::Planned,
        heal_budget: Budget::Planned,
        freezes: false,
        max_moves: None,
        stays_with: None,
    });
}

/// SIGSTOP freezes gw-a's daemon: its VIP expires with the kernel lifetime, gw-b takes
/// over; after SIGCONT the thawed daemon must not claim a hold it lost, and fails back.
#[test]
fn daemon_sigstop_of_the_master_and_sigcont() {
    run_fault(Fault {
        name: "SIGSTOP gw-a",
        inject: &|| {
            lab_sh(&["stop-havip", "gw-a", "STOP"]);
        },
        heal: &|| {
            lab_sh(&["stop-havip", "gw-a", "CONT"]);
        },
        during: "gw-b",
        show_within: Duration::from_secs(10),
        budget: Budget::Hard,
        heal_budget: Budget::Planned,
        freezes: true,
        max_moves: None,
        stays_with: None,
    });
}

/// Drops gw-a <-> gw-b on the bridge; both still reach the client and the witness.
#[test]
fn partition_between_the_gateways_changes_nothing() {
    run_fault(Fault {
        name: "gateway partition",
        inject: &|| {
            nft(
                "hv-br",
                "table bridge lab { chain forward { type filter hook forward priority 0; \
                 iifname \"p-gw-a\" oifname \"p-gw-b\" drop; \
                 iifname \"p-gw-b\" oifname \"p-gw-a\" drop; } }",
            )
        },
        heal: &|| nft("hv-br", "delete table bridge lab"),
        during: "gw-a",
        show_within: Duration::from_secs(10),
        budget: Budget::Stays,
        heal_budget: Budget::Planned,
        freezes: false,
        max_moves: Some(0),
        stays_with: None,
    });
}

#[test]
fn master_isolated_from_everyone() {
    run_fault(Fault {
        name: "gw-a isolated",
        inject: &|| {
            nft(
                "hv-br",
                "table bridge lab { chain forward { type filter hook forward priority 0; \
                 iifname \"p-gw-a\" drop; oifname \"p-gw-a\" drop; } }",
            )
        },
        heal: &|| nft("hv-br", "delete table bridge lab"),
        during: "gw-b",
        show_within: Duration::from_secs(10),
        budget: Budget::Hard,
        heal_budget: Budget::Planned,
        freezes: false,
        max_moves: None,
        stays_with: None,
    });
}

/// nftables rules (table `inet lab`) for a gateway's namespace that drop everything it
/// sends to the CRM servers, so its health checks fail.
fn crm_unreachable_rules() -> String {
    let crm: Vec<String> = names_of("crm").iter().map(|n| address_of(n)).collect();
    format!(
        "table inet lab {{ chain out {{ type filter hook output priority 0; \
         ip daddr {{ {} }} drop; }} }}",
        crm.join(", ")
    )
}

/// gw-a alone loses the CRM servers: its health checks fail (fall 3 x 2 s) and it hands
/// the VIP over; once they pass again (rise 2) and failback_delay ran, it takes it back.
#[test]
fn the_masters_crm_checks_failing() {
    let rules = crm_unreachable_rules();
    run_fault(Fault {
        name: "gw-a loses the CRM",
        inject: &|| nft("hv-gw-a", &rules),
        heal: &|| nft("hv-gw-a", "delete table inet lab"),
        during: "gw-b",
        show_within: Duration::from_secs(20),
        budget: Budget::Planned,
        heal_budget: Budget::Planned,
        freezes: false,
        max_moves: None,
        stays_with: None,
    });
}

/// gw-a's CRM servers flap: unreachable for 3 s, reachable for 3 s, four times. The
/// checks' fall count (3 x 2 s) absorbs it: the VIP must neither move nor go unanswered.
#[test]
fn flapping_health_of_the_master_does_not_move_the_vip() {
    let rules = crm_unreachable_rules();
    run_fault(Fault {
        name: "gw-a's CRM flapping",
        inject: &|| {
            for _ in 0..4 {
                nft("hv-gw-a", &rules);
                std::thread::sleep(Duration::from_secs(3));
                nft("hv-gw-a", "delete table inet lab");
                std::thread::sleep(Duration::from_secs(3));
            }
        },
        heal: &|| {},
        during: "gw-a",
        show_within: Duration::from_secs(5),
        budget: Budget::Stays,
        heal_budget: Budget::Planned,
        freezes: false,
        max_moves: Some(0),
        stays_with: None,
    });
}

/// The lab's peer port (conf/*.toml).
const PEER_PORT: &str = "7400";

/// 5,000 silent connections from the client to gw-a's peer port, at `rate` per second,
/// from `sources` extra client addresses in turn (none: the client's own), held 2 s, the
/// generator at nice 19;
/// prints what the flood saw (`scripts/lab-flood.py`).
fn flood(sources: usize, rate: u32) {
    let client = lab::netns("client");
    let extra: Vec<String> = (0..sources)
        .map(|i| format!("198.18.0.{}", 160 + i))
        .collect();
    for address in &extra {
        ip(&[
            "-n",
            &client,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "lan0",
        ]);
    }
    let out = sh(&[
        "ip",
        "netns",
        "exec",
        &client,
        // The attacker is another machine; here it shares the test machine's two cores
        // with the daemons, so it gets what they leave. At normal priority, a CI run saw
        // both masters' acknowledgements stall for ~150 ms at once during the flood
        // (gw-b's too, which nothing flooded) and their leases lapse: the machine's stall
        // under the generator, not the flood's effect on gw-a's daemon.
        "nice",
        "-n",
        "19",
        "python3",
        &format!("{REPO}/scripts/lab-flood.py"),
        &address_of("gw-a"),
        PEER_PORT,
        "5000",
        &rate.to_string(),
        "2",
        &extra.join(","),
    ]);
    for address in &extra {
        ip(&[
            "-n",
            &client,
            "addr",
            "del",
            &format!("{address}/24"),
            "dev",
            "lan0",
        ]);
    }
    figure(&format!(
        "lab e2e: flood of gw-a's peer port from {} address(es) at {rate}/s: {}",
        sources.max(1),
        String::from_utf8_lossy(&out.stdout).trim()
    ));
}

/// A flood (`flood`) while gw-a holds crm: no other node may take the VIP, no late release,
/// and it may go unanswered for `Budget::UnderFlood` at most. On CI's shared VM the flood
/// stalled the whole machine once, so that gw-a's lease lapsed and it took the VIP again:
/// no move, which is what this test is about (a node turned unhealthy or cut off by the
/// flood hands the VIP to gw-b).
fn flood_moves_nothing(name: &str, sources: usize, rate: u32) {
    run_fault(Fault {
        name,
        inject: &|| flood(sources, rate),
        heal: &|| {},
        during: "gw-a",
        show_within: Duration::from_secs(5),
        budget: Budget::UnderFlood,
        heal_budget: Budget::Planned,
        freezes: false,
        max_moves: None,
        stays_with: Some("gw-a"),
    });
}

/// Hardening (issue 14 item 1): 5,000 silent connections at 1,000/s from one address that
/// is no peer's. gw-a closes each unread.
#[test]
fn a_flood_of_silent_connections_from_one_address_moves_nothing() {
    flood_moves_nothing("flood, one address", 0, 1000);
}

/// The same from 50 addresses at 500/s.
#[test]
fn a_flood_of_silent_connections_from_many_addresses_moves_nothing() {
    flood_moves_nothing("flood, 50 addresses", 50, 500);
}

/// `havip failover --to gw-b` pins crm to gw-b; `--clear` gives it back to gw-a.
#[test]
fn manual_failover_to_the_backup_and_clear() {
    run_fault(Fault {
        name: "failover --to gw-b",
        inject: &|| lab::havip_ok("gw-a", &["failover", "--to", "gw-b", "--group", "crm"]),
        heal: &|| lab::havip_ok("gw-b", &["failover", "--clear", "--group", "crm"]),
        during: "gw-b",
        show_within: Duration::from_secs(10),
        budget: Budget::Planned,
        heal_budget: Budget::Planned,
        freezes: false,
        max_moves: None,
        stays_with: None,
    });
}

/// The one-way delay of `loss_and_delay_then_sigkill` (issue 5: 20 ms). It once made every
/// heartbeat time out: openraft's AppendEntries deadline was the 50 ms heartbeat (3/4 of it
/// enforced), shorter than a 40 ms round trip plus queueing. `consensus::ticks` now gives
/// openraft twice the heartbeat.
const DELAY_MS: u64 = 20;

/// 5 % loss and a DELAY_MS delay on every bridge port (netem), then the master is killed.
/// Without sch_netem in the kernel: 5 % loss by nftables on the bridge, and the delay by a
/// delay line (`examples/delay_line.rs`, NFQUEUE) on every node's IPv4/IPv6 output, so each
/// packet between two nodes still waits once. ARP, and havip's announcements (raw
/// sockets), pass undelayed: NFQUEUE sees only what goes through the ip/ip6 hooks.
#[test]
fn loss_and_delay_then_sigkill() {
    let nodes: Vec<String> = lab::hosts();
    let ports: Vec<String> = nodes.iter().map(|n| lab::port(n)).collect();
    // Dropped on any exit, a panic included, so no delay line outlives the test.
    let delay_lines: Mutex<Vec<DelayLine>> = Mutex::new(Vec::new());
    run_fault(Fault {
        name: "5% loss 20ms + SIGKILL",
        inject: &|| {
            let mut with_netem = true;
            for port in &ports {
                let ok = Command::new("ip")
                    .args(["netns", "exec", "hv-br", "tc", "qdisc", "add", "dev", port])
                    .args(["root", "netem", "loss", "5%", "delay"])
                    .arg(format!("{DELAY_MS}ms"))
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                with_netem &= ok;
            }
            if !with_netem {
                nft(
                    "hv-br",
                    "table bridge loss { chain forward { type filter hook forward priority 0; \
                     numgen random mod 100 < 5 drop; } }",
                );
                if has_nfqueue_rules() {
                    let mut lines = delay_lines.lock().unwrap_or_else(|e| e.into_inner());
                    for node in &nodes {
                        lines.push(DelayLine::start(&lab::netns(node), DELAY_MS));
                    }
                    eprintln!(
                        "lab e2e: no sch_netem in this kernel: 5 % loss by nftables on the \
                         bridge, {DELAY_MS} ms delay by a delay line on every node's IP output"
                    );
                } else {
                    // Without a delay this test would pass while testing less than its
                    // name says: fail instead, naming what to install.
                    panic!(
                        "lab e2e: no way to delay packets: no sch_netem in this kernel and no \
                         iptables/ip6tables for the NFQUEUE delay line (apt-get install iptables)"
                    );
                }
            }
            std::thread::sleep(Duration::from_secs(2));
            lab_sh(&["stop-havip", "gw-a", "KILL"]);
        },
        heal: &|| {
            for port in &ports {
                let _ = Command::new("ip")
                    .args(["netns", "exec", "hv-br", "tc", "qdisc", "del", "dev", port])
                    .args(["root"])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = Command::new("ip")
                .args([
                    "netns", "exec", "hv-br", "nft", "delete", "table", "bridge", "loss",
                ])
                .stderr(Stdio::null())
                .status();
            let lines = std::mem::take(&mut *delay_lines.lock().unwrap_or_else(|e| e.into_inner()));
            for line in lines {
                let netns = line.netns.clone();
                eprintln!("lab e2e: delay line in {netns}: {}", line.stop());
            }
            lab_sh(&["start-havip", "gw-a"]);
        },
        during: "gw-b",
        show_within: Duration::from_secs(12),
        budget: Budget::HardUnderLoss,
        heal_budget: Budget::Hard,
        freezes: false,
        max_moves: None,
        stays_with: None,
    });
}

/// The NFQUEUE queue the delay lines read (one per namespace: queues are per namespace).
const DELAY_QUEUE: &str = "7";

/// Whether NFQUEUE rules can be written. nftables may lack its `queue` expression (it is
/// not built into the lab's 6.18 kernel, so neither a bridge- nor an inet-family rule can
/// queue) where the xtables NFQUEUE target is, so the rules go through iptables/ip6tables.
/// On every node and not once in hv-br: bridged frames reach iptables only through
/// br_netfilter, which a test must not load on the host.
fn has_nfqueue_rules() -> bool {
    ["iptables", "ip6tables"].iter().all(|tool| {
        Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The rule that sends a namespace's IPv4 or IPv6 output to the delay line; `bypass` lets
/// the traffic through undelayed whenever no delay line is bound, so a dead one never cuts
/// the node off.
fn delay_rule(tool: &str, netns: &str, action: &str) -> Command {
    let mut command = Command::new("ip");
    command
        .args([
            "netns", "exec", netns, tool, action, "OUTPUT", "-j", "NFQUEUE",
        ])
        .args(["--queue-num", DELAY_QUEUE, "--queue-bypass"])
        .stdin(Stdio::null());
    command
}

/// One `delay_line` example in a lab namespace, its output rules in place; stopped (rules
/// removed, SIGTERM, SIGKILL if it lingers) by `stop` or on drop.
struct DelayLine {
    netns: String,
    child: Option<Child>,
    stopped: std::sync::mpsc::Receiver<String>,
}

impl DelayLine {
    fn start(netns: &str, delay_ms: u64) -> DelayLine {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, &host::example("delay_line")])
            .args(["--queue", DELAY_QUEUE, "--delay-ms", &delay_ms.to_string()])
            .args(["--max-s", "300"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the delay line in {netns}: {e}"));
        let stdout = child.stdout.take().expect("delay line stdout");
        // Its first line says it is bound, its last what it did.
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (stopped_tx, stopped) = std::sync::mpsc::channel();
        // Made before anything can panic, so that dropping it stops the child.
        let line = DelayLine {
            netns: netns.to_string(),
            child: Some(child),
            stopped,
        };
        std::thread::spawn(move || {
            let mut last = String::new();
            for text in BufReader::new(stdout).lines().map_while(Result::ok) {
                if text.contains("\"ready\"") {
                    let _ = ready_tx.send(());
                }
                last = text;
            }
            let _ = stopped_tx.send(last);
        });
        assert!(
            ready.recv_timeout(Duration::from_secs(10)).is_ok(),
            "the delay line in {netns} did not bind its queue"
        );
        for tool in ["iptables", "ip6tables"] {
            host::run(
                delay_rule(tool, netns, "-A"),
                &format!("{tool} NFQUEUE rule in {netns}"),
            );
        }
        line
    }

    /// Stops it and returns its last line (what it delayed).
    fn stop(mut self) -> String {
        self.shut_down();
        self.stopped
            .recv_timeout(Duration::from_secs(2))
            .unwrap_or_default()
    }

    fn shut_down(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        for tool in ["iptables", "ip6tables"] {
            let _ = delay_rule(tool, &self.netns, "-D").output();
        }
        host::terminate(&mut child, Duration::from_secs(3));
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The watcher's algorithm (two holders from ordered address events) on hand-written
/// event orders: a hand-over is no overlap, an add before the other's delete is one even
/// in the same millisecond, a lifetime refresh changes nothing, kernel expiry is a delete.
#[test]
fn the_watchers_algorithm_passes_its_self_test() {
    let out = host::run(
        {
            let mut command = Command::new("python3");
            command.args([&format!("{REPO}/scripts/vip-watch.py"), "--self-test"]);
            command
        },
        "scripts/vip-watch.py --self-test",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("self-test: ok"));
}
