//! The chaos soak (issue 14): one lab, up for the whole run, and random faults until
//! `HAVIP_CHAOS_SECONDS` have passed: a daemon SIGKILLed, stopped, frozen (SIGSTOP), a
//! node isolated or its link down, any pair of nodes cut from each other, 5 % loss on the
//! bridge, a gateway's CRM servers unreachable, a flood of silent connections from the
//! client to a node's peer port, a manual failover, maintenance, a no-op reload. Each hits
//! a random node where it makes sense, lasts 1-4 s and is healed; one step in three runs a
//! second fault inside the first, on other nodes. The e2e suite's watcher and client
//! probes (`tests/support/lab_run.rs`, every VIP) see the whole run.
//!
//! Asserted over the whole run: never two holders (a frozen daemon's address inside its
//! freeze excepted, as in the e2e suite), no late release, no panic in any daemon's log,
//! after every heal both groups held and their VIPs answering within 30 s, and every
//! operator command that was committed still in every node's `havip history` (unless the
//! history's 500 entries have rotated past it). Printed: the seed, the faults run by kind
//! with their worst outage, and what was checked.
//!
//! `cargo test` runs a short soak (90 s, a fixed seed); `scripts/soak.sh` the long one
//! (30 min, a new seed). `HAVIP_CHAOS_SEED` replays a run's sequence of faults (not the
//! cluster's own timing: the machine's is not replayable).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/figures.rs"]
mod figures;
#[path = "support/lab.rs"]
mod lab;
#[path = "support/lab_run.rs"]
mod lab_run;
#[path = "support/outage.rs"]
mod outage;
use figures::figure;
use lab::{REPO, address_of, ip, lab_sh, names_of, nft};
use lab_run::{Lab, SERIAL, now_ms};

/// The short soak of `cargo test`.
const DEFAULT_SECONDS: u64 = 90;
/// The seed of `cargo test`'s soak: CI runs the same faults every time.
const DEFAULT_SEED: u64 = 20_261_203;
/// After a heal, both groups must be held and the VIPs answered within this.
const RECOVERY: Duration = Duration::from_secs(30);
/// After recovery, quiet before the next fault, so a restarted node has rejoined.
const SETTLE: Duration = Duration::from_secs(3);
/// A freeze: from shorter than a hold lease (a pause the daemon rides out) to far past
/// the kernel lifetime of its addresses; the fence takes them down when the lease ends.
const FREEZE_MS: (u64, u64) = (200, 6_000);
/// The lab's peer port (conf/*.toml).
const PEER_PORT: &str = "7400";

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Kill,
    Term,
    Freeze,
    Isolate,
    LinkDown,
    PairPartition,
    Loss,
    CrmLost,
    Flood,
    Failover,
    Maintenance,
    Reload,
}

const KINDS: [Kind; 12] = [
    Kind::Kill,
    Kind::Term,
    Kind::Freeze,
    Kind::Isolate,
    Kind::LinkDown,
    Kind::PairPartition,
    Kind::Loss,
    Kind::CrmLost,
    Kind::Flood,
    Kind::Failover,
    Kind::Maintenance,
    Kind::Reload,
];

/// A small deterministic generator (xorshift64*): the run's sequence from its seed.
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Dice {
        Dice(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn between(&mut self, (low, high): (u64, u64)) -> u64 {
        low + self.below(high - low + 1)
    }
}

/// One fault: its kind, the nodes it hits (one, or the pair cut apart; for a failover
/// the target, for maintenance the node drained), the group (failover) and how long it
/// lasts. `slot` names its nftables tables apart from a fault nested in it.
#[derive(Debug, Clone)]
struct Fault {
    kind: Kind,
    nodes: Vec<String>,
    group: String,
    hold_ms: u64,
    slot: usize,
}

impl Fault {
    fn node(&self) -> &str {
        self.nodes.first().map_or("", String::as_str)
    }
}

struct Cast {
    gateways: Vec<String>,
    nodes: Vec<String>,
    groups: Vec<String>,
}

/// One of `list` not in `busy`, or None if there is none.
fn pick_free(dice: &mut Dice, list: &[String], busy: &[String]) -> Option<String> {
    let free: Vec<&String> = list.iter().filter(|n| !busy.contains(n)).collect();
    (!free.is_empty()).then(|| dice.pick(&free).to_string())
}

/// A fault on nodes other than `busy` (those of the fault it nests in); None when the
/// drawn kind has no such node.
fn draw(dice: &mut Dice, cast: &Cast, busy: &[String], slot: usize) -> Option<Fault> {
    let kind = *dice.pick(&KINDS);
    let nodes = match kind {
        Kind::CrmLost | Kind::Failover | Kind::Maintenance => {
            vec![pick_free(dice, &cast.gateways, busy)?]
        }
        Kind::Loss => Vec::new(),
        Kind::PairPartition => {
            let a = pick_free(dice, &cast.nodes, busy)?;
            let mut taken = busy.to_vec();
            taken.push(a.clone());
            vec![a, pick_free(dice, &cast.nodes, &taken)?]
        }
        _ => vec![pick_free(dice, &cast.nodes, busy)?],
    };
    let hold_ms = if kind == Kind::Freeze {
        dice.between(FREEZE_MS)
    } else {
        dice.between((1_000, 4_000))
    };
    Some(Fault {
        kind,
        nodes,
        group: dice.pick(&cast.groups).clone(),
        hold_ms,
        slot,
    })
}

/// `havip ARGS --config` of `node`, in its namespace; whether it succeeded (a command
/// sent while its node is cut off may fail: that is not the soak's failure).
fn havip_at(node: &str, args: &[&str]) -> bool {
    lab::havip(node, args).status.success()
}

/// nftables rules for a gateway's namespace that drop what it sends to the CRM servers.
fn crm_unreachable_rules(table: &str) -> String {
    let crm: Vec<String> = names_of("crm").iter().map(|n| address_of(n)).collect();
    format!(
        "table inet {table} {{ chain out {{ type filter hook output priority 0; \
         ip daddr {{ {} }} drop; }} }}",
        crm.join(", ")
    )
}

/// A bridge table dropping frames from and to `ports` (one: isolation; two: between them).
fn bridge_cut(table: &str, nodes: &[String]) -> String {
    let rules = match nodes {
        [a, b] => format!(
            "iifname \"p-{a}\" oifname \"p-{b}\" drop; iifname \"p-{b}\" oifname \"p-{a}\" drop;"
        ),
        [a] => format!("iifname \"p-{a}\" drop; oifname \"p-{a}\" drop;"),
        _ => String::new(),
    };
    format!(
        "table bridge {table} {{ chain forward {{ type filter hook forward priority 0; {rules} }} }}"
    )
}

/// An operator command the soak sent and the cluster accepted: (the history line it must
/// leave, the group or None for every group, when it was sent).
type Committed = (String, Option<String>, u64);

/// Injects `fault`; returns the operator command it committed, if any, and the flood
/// runner to wait for.
fn inject(fault: &Fault, committed: &mut Vec<Committed>) -> Option<std::process::Child> {
    let node = fault.node();
    let table = format!("chaos{}", fault.slot);
    match fault.kind {
        Kind::Kill => drop(lab_sh(&["stop-havip", node, "KILL"])),
        Kind::Term => drop(lab_sh(&["stop-havip", node, "TERM"])),
        Kind::Freeze => drop(lab_sh(&["stop-havip", node, "STOP"])),
        Kind::Isolate | Kind::PairPartition => nft(lab::BRIDGE, &bridge_cut(&table, &fault.nodes)),
        Kind::Loss => nft(
            lab::BRIDGE,
            &format!(
                "table bridge {table} {{ chain forward {{ type filter hook forward priority 0; \
                 numgen random mod 100 < 5 drop; }} }}"
            ),
        ),
        Kind::LinkDown => ip(&["-n", &lab::netns(node), "link", "set", "lan0", "down"]),
        Kind::CrmLost => nft(&lab::netns(node), &crm_unreachable_rules(&table)),
        Kind::Flood => {
            return Command::new("ip")
                .args(["netns", "exec", &lab::netns("client"), "python3"])
                .arg(format!("{REPO}/scripts/lab-flood.py"))
                .args([&address_of(node), PEER_PORT, "1000", "1000"])
                .arg(format!("{:.1}", fault.hold_ms as f64 / 1000.0))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .ok();
        }
        Kind::Failover => {
            let at = now_ms();
            if havip_at(node, &["failover", "--to", node, "--group", &fault.group]) {
                committed.push((format!("pin to {node}"), Some(fault.group.clone()), at));
            }
        }
        Kind::Maintenance => {
            let at = now_ms();
            if havip_at(node, &["maintenance", "on", node]) {
                committed.push((format!("maintenance {node} on"), None, at));
            }
        }
        Kind::Reload => {
            havip_at(node, &["reload"]);
        }
    }
    None
}

fn heal(fault: &Fault, committed: &mut Vec<Committed>) {
    let node = fault.node();
    let table = format!("chaos{}", fault.slot);
    match fault.kind {
        Kind::Kill | Kind::Term => drop(lab_sh(&["start-havip", node])),
        Kind::Freeze => drop(lab_sh(&["stop-havip", node, "CONT"])),
        Kind::Isolate | Kind::PairPartition | Kind::Loss => {
            nft(lab::BRIDGE, &format!("delete table bridge {table}"))
        }
        Kind::LinkDown => ip(&["-n", &lab::netns(node), "link", "set", "lan0", "up"]),
        Kind::CrmLost => nft(&lab::netns(node), &format!("delete table inet {table}")),
        // Undone until it is accepted: a pin or a drain left behind would starve the next
        // steps. Refused for 10 s is the soak's failure.
        Kind::Failover => {
            let at = until_accepted(node, &["failover", "--clear", "--group", &fault.group]);
            committed.push(("clear pin".into(), Some(fault.group.clone()), at));
        }
        Kind::Maintenance => {
            let at = until_accepted(node, &["maintenance", "off", node]);
            committed.push((format!("maintenance {node} off"), None, at));
        }
        Kind::Flood | Kind::Reload => {}
    }
}

/// Runs `havip ARGS` at `node` until it succeeds (at most 10 s); when it was sent.
fn until_accepted(node: &str, args: &[&str]) -> u64 {
    for _ in 0..20 {
        let at = now_ms();
        if havip_at(node, args) {
            return at;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "lab chaos: `havip {}` at {node} was refused for 10 s",
        args.join(" ")
    );
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Lines of any daemon's log that say it panicked.
fn panics() -> Vec<String> {
    lab::log_lines("panicked")
        .into_iter()
        .map(|(n, l)| format!("{n}: {l}"))
        .collect()
}

/// Every node's `havip history --json`: (node, group, event, at) rows.
fn histories() -> Vec<(String, String, String, u64)> {
    let mut rows = Vec::new();
    for node in lab::havip_nodes() {
        let out = lab::havip(&node, &["history", "--json"]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        // `history --json` prints the groups as an array.
        let groups = json.as_array().cloned().unwrap_or_default();
        for g in groups {
            let group = g["group"].as_str().unwrap_or("").to_string();
            for e in g["entries"].as_array().cloned().unwrap_or_default() {
                rows.push((
                    node.clone(),
                    group.clone(),
                    e["event"].as_str().unwrap_or("").to_string(),
                    e["at_unix_ms"].as_u64().unwrap_or(0),
                ));
            }
        }
    }
    rows
}

/// The committed commands some node's history lacks (each as "node group: event"), and
/// how many were checked (those older than a history's first entry rotated out).
fn missing_from_history(committed: &[Committed], groups: &[String]) -> (Vec<String>, usize) {
    let rows = histories();
    let (mut missing, mut checked) = (Vec::new(), 0);
    for node in lab::havip_nodes() {
        for group in groups {
            let mine: Vec<_> = rows
                .iter()
                .filter(|r| r.0 == node && &r.1 == group)
                .collect();
            // No history at all is no proof: every command then counts as missing.
            let oldest = mine.iter().map(|r| r.3).min().unwrap_or(0);
            for (event, only, at) in committed {
                if only.as_ref().is_some_and(|g| g != group) || *at + 1_000 < oldest {
                    continue;
                }
                checked += 1;
                // The proposer stamps the entry; its clock is the test's (one machine).
                if !mine.iter().any(|r| &r.2 == event && r.3 + 1_000 >= *at) {
                    missing.push(format!("{node} {group}: {event} (sent at {at})"));
                }
            }
        }
    }
    (missing, checked)
}

/// Runs `fault` (and, one time in three, a second one nested inside it on other nodes);
/// returns the faults run and the instant the last heal began.
fn run_step(dice: &mut Dice, cast: &Cast, first: Fault, log: &mut Log) -> (Vec<Kind>, u64) {
    let mut kinds = vec![first.kind];
    let floods = inject(&first, &mut log.committed);
    if first.kind == Kind::Freeze {
        log.freeze_started(first.node());
    }
    let nested = if dice.below(3) == 0 {
        draw(dice, cast, &first.nodes, 1)
    } else {
        None
    };
    let mut floods = vec![floods];
    let mut spent = 0;
    if let Some(second) = &nested {
        std::thread::sleep(Duration::from_millis(first.hold_ms / 4));
        kinds.push(second.kind);
        floods.push(inject(second, &mut log.committed));
        if second.kind == Kind::Freeze {
            log.freeze_started(second.node());
        }
        std::thread::sleep(Duration::from_millis(second.hold_ms));
        // A freeze's allowance ends when SIGCONT is sent, not when lab.sh returns: a
        // thawed daemon's first milliseconds must not fall inside it.
        let thaw = now_ms();
        heal(second, &mut log.committed);
        if second.kind == Kind::Freeze {
            log.freeze_ended(second.node(), thaw);
        }
        spent = first.hold_ms / 4 + second.hold_ms;
    }
    std::thread::sleep(Duration::from_millis(first.hold_ms.saturating_sub(spent)));
    let t_heal = now_ms();
    heal(&first, &mut log.committed);
    if first.kind == Kind::Freeze {
        log.freeze_ended(first.node(), t_heal);
    }
    for child in floods.into_iter().flatten() {
        log.flood(child);
    }
    (kinds, t_heal)
}

/// What the run collected for the final checks.
#[derive(Default)]
struct Log {
    committed: Vec<Committed>,
    /// (node, SIGSTOP sent, SIGCONT sent)
    freezes: Vec<(String, u64, u64)>,
    open_freezes: BTreeMap<String, u64>,
    /// The floods' own reports (JSON lines of lab-flood.py).
    floods: Vec<String>,
    /// Per kind: runs and the worst outage (ms).
    worst: BTreeMap<Kind, (usize, u64)>,
}

impl Log {
    fn freeze_started(&mut self, node: &str) {
        self.open_freezes.insert(node.to_string(), now_ms());
    }

    fn freeze_ended(&mut self, node: &str, thawed_at: u64) {
        if let Some(at) = self.open_freezes.remove(node) {
            self.freezes.push((node.to_string(), at, thawed_at));
        }
    }

    fn flood(&mut self, child: std::process::Child) {
        if let Ok(out) = child.wait_with_output() {
            self.floods
                .push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
    }

    fn count(&mut self, kinds: &[Kind], outage: u64) {
        for kind in kinds {
            let entry = self.worst.entry(*kind).or_insert((0, 0));
            *entry = (entry.0 + 1, entry.1.max(outage));
        }
    }
}

#[test]
fn chaos_soak() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let run_for = env_u64("HAVIP_CHAOS_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let seed = env_u64("HAVIP_CHAOS_SEED").unwrap_or(DEFAULT_SEED);
    eprintln!("lab chaos: seed {seed}, {run_for} s (HAVIP_CHAOS_SEED={seed} replays the faults)");
    let mut lab = Lab::up_lasting(run_for + 300);
    let cast = Cast {
        gateways: names_of("gateway"),
        nodes: lab::havip_nodes(),
        groups: lab.groups.clone(),
    };
    // `up` probes crm's VIP; every other group's is asked too.
    for group in cast.groups.iter().filter(|g| *g != "crm") {
        lab.start_probe(&address_of(group));
    }
    let mut dice = Dice::new(seed);
    let mut log = Log::default();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(run_for) {
        let Some(first) = draw(&mut dice, &cast, &[], 0) else {
            continue;
        };
        let t0 = now_ms();
        let (kinds, t_heal) = run_step(&mut dice, &cast, first, &mut log);
        let recovered = lab.wait(RECOVERY, |lab| {
            cast.groups.iter().all(|g| {
                lab.holders(g).len() == 1
                    && cast
                        .gateways
                        .iter()
                        .any(|gw| lab.answered_on(&address_of(g), gw, t_heal))
            })
        });
        assert!(
            recovered.is_some(),
            "lab chaos (seed {seed}): no single holder answering within {RECOVERY:?} after \
             healing {kinds:?}; holders {:?}\n{}",
            cast.groups
                .iter()
                .map(|g| (g.clone(), lab.holders(g)))
                .collect::<Vec<_>>(),
            lab.logs()
        );
        std::thread::sleep(SETTLE);
        let (outage, _, _) = lab.outage(t0, now_ms());
        log.count(&kinds, outage);
        eprintln!(
            "lab chaos: {kinds:?}: outage {outage} ms, answering {recovered:?} after the heal"
        );
    }
    finish(lab, &cast, &log, seed, start.elapsed());
}

/// The run's checks and its figure line.
fn finish(mut lab: Lab, cast: &Cast, log: &Log, seed: u64, took: Duration) {
    lab.stop_observing();
    lab.keep_logs("chaos");
    let frozen: Vec<(&str, u64, u64)> = log
        .freezes
        .iter()
        .map(|(n, a, b)| (n.as_str(), *a, *b))
        .collect();
    let split = lab.split_brain();
    let late = lab.late_releases(&frozen);
    let panics = panics();
    let (missing, checked) = missing_from_history(&log.committed, &cast.groups);
    let end = now_ms();
    let total = |o: &[lab::watch::Overlap]| o.iter().map(|o| o.ms(end)).sum::<u64>();
    let kinds: Vec<String> = log
        .worst
        .iter()
        .map(|(k, (n, ms))| format!("{k:?} x{n} (worst outage {ms} ms)"))
        .collect();
    figure(&format!(
        "lab chaos: seed {seed}, {} s, {} faults: {}; two holders: {} ({} ms); late releases: \
         {}; panics: {}; operator commands in every history: {}/{checked}; floods: {}",
        took.as_secs(),
        log.worst.values().map(|(n, _)| n).sum::<usize>(),
        kinds.join(", "),
        split.len(),
        total(&split),
        late.len(),
        panics.len(),
        checked - missing.len(),
        log.floods.join(" "),
    ));
    let errors = lab.watcher_errors();
    assert!(
        errors.is_empty(),
        "lab chaos (seed {seed}): the watcher may have lost events: {errors:?}"
    );
    assert!(
        split.is_empty(),
        "lab chaos (seed {seed}): two holders: {split:?}\n{}",
        lab.logs()
    );
    assert!(
        late.is_empty(),
        "lab chaos (seed {seed}): late releases:\n{}",
        late.join("\n")
    );
    assert!(
        panics.is_empty(),
        "lab chaos (seed {seed}): a daemon panicked:\n{}",
        panics.join("\n")
    );
    assert!(
        missing.is_empty(),
        "lab chaos (seed {seed}): committed operator commands missing from a history:\n{}",
        missing.join("\n")
    );
    lab.down_and_check();
}

#[test]
fn the_dice_replay_a_seed_and_stay_in_range() {
    let draw_all = |seed| {
        let mut dice = Dice::new(seed);
        (0..50).map(|_| dice.below(1000)).collect::<Vec<_>>()
    };
    assert_eq!(draw_all(7), draw_all(7));
    assert_ne!(draw_all(7), draw_all(8));
    let mut dice = Dice::new(0);
    for _ in 0..1000 {
        let v = dice.between((1_000, 4_000));
        assert!((1_000..=4_000).contains(&v));
    }
}

#[test]
fn a_nested_fault_never_touches_the_first_faults_nodes() {
    let cast = Cast {
        gateways: vec!["gw-a".into(), "gw-b".into()],
        nodes: vec!["gw-a".into(), "gw-b".into(), "witness".into()],
        groups: vec!["crm".into(), "crm2".into()],
    };
    let mut dice = Dice::new(42);
    for _ in 0..2000 {
        let Some(first) = draw(&mut dice, &cast, &[], 0) else {
            continue;
        };
        if let Some(second) = draw(&mut dice, &cast, &first.nodes, 1) {
            assert!(
                second.nodes.iter().all(|n| !first.nodes.contains(n)),
                "{first:?} {second:?}"
            );
            if second.kind == Kind::PairPartition {
                assert_ne!(second.nodes[0], second.nodes[1]);
            }
        }
        if first.kind == Kind::PairPartition {
            assert_ne!(first.nodes[0], first.nodes[1]);
        }
    }
}
