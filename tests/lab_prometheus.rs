//! The shipped alert rules (`conf/monitoring/havip-alerts.yml`) in a real Prometheus
//! (Debian's `prometheus` package, `/usr/bin/prometheus`) scraping every node of the lab
//! (`scripts/lab.sh`, `tests/support/lab.rs`): Prometheus runs in the client's namespace,
//! scrapes gw-a, gw-b and the witness every 250 ms as job `havip`, evaluates the rules
//! every 250 ms, and the test reads `/api/v1/alerts` every 200 ms through the whole run.
//!
//! The run: the lab settles (crm on gw-a, crm2 on gw-b); gw-a's daemon is SIGKILLed and
//! gw-b takes crm over (a failover: "no holder" must not fire); then gw-b's daemon is
//! SIGKILLed too, so no gateway runs and nobody holds either group for real: "no holder"
//! must fire for both; both daemons are started again, they take the groups back
//! (failback moves crm to gw-a) and the alert must clear. "Two holders" must never be
//! active (pending or firing) at any point, failover and failback included.
//!
//! Test-only change to the rules, in a copy: HavipNoHolder's `for: 30s` becomes `for: 2s`
//! (an outage of 30 s would not fit the test's time; 2 s is still five times the lab's
//! failover of about 0.4 s, so the failover must not make it fire), and HavipTwoHolders'
//! `for: 30s` (two scrape intervals of 15 s: a hand-over seen through scrapes taken at
//! different instants looks like two holders for up to one interval) becomes `for: 1s`,
//! four of the test's 250 ms scrape intervals, with room for a loaded machine. The first
//! run of this test, with no `for:` on HavipTwoHolders and no watcher yet, saw it fire
//! 14.4 s after gw-a's kill, during the hand-overs after the restart; two later runs with
//! `for: 0s` and the watcher saw neither the alert nor an overlap. The watcher (the
//! kernel's address events) runs in every run now, so a firing can be told apart.
//!
//! Needs root and the lab lock: `flock /tmp/havip-lab.lock cargo test --test
//! lab_prometheus`. Everything stays inside the lab's namespaces (198.18.0.0/24);
//! Prometheus is this process's child, ended by its PID, and the lab is taken down on
//! any exit (Drop).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[path = "support/figures.rs"]
mod figures;
#[path = "support/lab.rs"]
mod lab;
#[path = "support/poll.rs"]
mod poll;
use figures::figure;
use lab::host::{require_root, terminate};
use lab::{REPO, address_of, havip_nodes, lab_sh, netns};

/// Where Prometheus runs: the client's namespace, on the lab's LAN like an operator's
/// monitoring host.
const PROM_HOST: &str = "client";
const PROM_LISTEN: &str = "127.0.0.1:9090";
const SCRAPE: &str = "250ms";
/// The test's `for:` of the two alerts it watches (see the module comment).
const NO_HOLDER_FOR: &str = "2s";
const TWO_HOLDERS_FOR: &str = "1s";

/// The lab and Prometheus, both ended on any exit.
struct Rig {
    prometheus: Option<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut child) = self.prometheus.take() {
            terminate(&mut child, Duration::from_secs(3));
        }
        lab::down_quietly("hv-");
    }
}

/// `curl` inside the Prometheus host's namespace (the host's own routes blackhole the
/// lab's addresses); `None` if Prometheus did not answer.
fn api(path: &str, query: Option<&str>) -> Option<serde_json::Value> {
    let mut command = Command::new("ip");
    command.args([
        "netns",
        "exec",
        &netns(PROM_HOST),
        "curl",
        "-sf",
        "--max-time",
        "2",
        "-G",
    ]);
    if let Some(query) = query {
        command.args(["--data-urlencode", &format!("query={query}")]);
    }
    command.arg(format!("http://{PROM_LISTEN}{path}"));
    let out = command
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The instances whose `havip_group_vip_held` for `group` is 1, as Prometheus sees it now.
fn holders(group: &str) -> Option<Vec<String>> {
    let query = format!("havip_group_vip_held{{job=\"havip\",group=\"{group}\"}} == 1");
    let answer = api("/api/v1/query", Some(&query))?;
    let mut names: Vec<String> = answer["data"]["result"]
        .as_array()?
        .iter()
        .filter_map(|r| r["metric"]["instance"].as_str().map(str::to_string))
        .collect();
    names.sort();
    Some(names)
}

/// One active alert: (alertname, group, state).
type Active = (String, String, String);

fn active_alerts() -> Option<Vec<Active>> {
    let answer = api("/api/v1/alerts", None)?;
    let alerts = answer["data"]["alerts"].as_array()?;
    Some(
        alerts
            .iter()
            .map(|a| {
                let label = |k: &str| a["labels"][k].as_str().unwrap_or("").to_string();
                (
                    label("alertname"),
                    label("group"),
                    a["state"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
    )
}

/// The rules as shipped, with the `for:` of HavipNoHolder and HavipTwoHolders shortened
/// for the test.
fn test_rules() -> String {
    let path = format!("{REPO}/conf/monitoring/havip-alerts.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let shortened = [
        ("HavipNoHolder", NO_HOLDER_FOR),
        ("HavipTwoHolders", TWO_HOLDERS_FOR),
    ];
    let mut alert = String::new();
    let mut replaced = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if let Some(name) = trimmed.strip_prefix("- alert: ") {
                alert = name.trim().to_string();
            }
            let short = shortened.iter().find(|(name, _)| *name == alert);
            if let Some((_, duration)) = short
                && trimmed.starts_with("for: ")
            {
                replaced += 1;
                let indent = &line[..line.len() - trimmed.len()];
                return format!("{indent}for: {duration}");
            }
            line.to_string()
        })
        .collect();
    assert_eq!(
        replaced,
        shortened.len(),
        "the `for:` of {shortened:?} not all found in {path}"
    );
    lines.join("\n") + "\n"
}

fn prometheus_config(rules: &str) -> String {
    let targets: String = havip_nodes()
        .iter()
        .map(|node| {
            format!(
                "      - targets: ['{}:9400']\n        labels: {{instance: '{node}'}}\n",
                address_of(node)
            )
        })
        .collect();
    format!(
        "global:\n  scrape_interval: {SCRAPE}\n  scrape_timeout: 200ms\n  evaluation_interval: {SCRAPE}\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: havip\n    static_configs:\n{targets}"
    )
}

/// Polls `check` every 100 ms for at most `limit`; returns how long it took.
fn wait_until(limit: Duration, check: impl FnMut() -> bool) -> Option<Duration> {
    poll::within_every(limit, Duration::from_millis(100), check)
}

fn settled() -> bool {
    holders("crm").is_some_and(|h| h == ["gw-a"]) && holders("crm2").is_some_and(|h| h == ["gw-b"])
}

/// The alerts seen by the poller: when (wall-clock ms, as the watcher's), and which were
/// active.
type Seen = Arc<Mutex<Vec<(u64, Vec<Active>)>>>;

fn is_active(seen: &[Active], alert: &str, group: &str, state: &str) -> bool {
    seen.iter()
        .any(|(a, g, s)| a == alert && g == group && s == state)
}

#[test]
fn prometheus_fires_no_holder_while_no_gateway_holds_clears_it_after_and_never_two_holders() {
    require_root("the lab's Prometheus test");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rig = Rig {
        prometheus: None,
        dir,
    };
    lab_sh(&["up"]);
    // Before any daemon runs, so that every address a daemon ever adds is an event.
    let mut watch = lab::watch(180);
    lab_sh(&["start-havip"]);

    let rules = rig.dir.path().join("havip-alerts.yml");
    std::fs::write(&rules, test_rules()).expect("write rules");
    let config = rig.dir.path().join("prometheus.yml");
    let rules = rules.to_str().expect("utf-8 path");
    std::fs::write(&config, prometheus_config(rules)).expect("write config");
    let storage = rig.dir.path().join("tsdb");
    let log = std::fs::File::create(rig.dir.path().join("prometheus.log")).expect("log");
    let child = Command::new("ip")
        .args(["netns", "exec", &netns(PROM_HOST), "prometheus"])
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", storage.display()))
        .arg(format!("--web.listen-address={PROM_LISTEN}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start prometheus (apt-get install prometheus)");
    rig.prometheus = Some(child);
    let prom_log =
        || std::fs::read_to_string(rig.dir.path().join("prometheus.log")).unwrap_or_default();

    // Every target up, the lab settled as Prometheus sees it, for a second in a row.
    let mut since: Option<Instant> = None;
    let steady = wait_until(Duration::from_secs(60), || {
        let up = api("/api/v1/query", Some("sum(up{job=\"havip\"})")).and_then(|a| {
            a["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_string)
        });
        let ok = up.as_deref() == Some("3") && settled();
        if !ok {
            since = None;
        }
        ok && since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(1)
    });
    assert!(
        steady.is_some(),
        "not settled in Prometheus (3 targets up, crm on gw-a, crm2 on gw-b): crm {:?} crm2 {:?}\n{}\n{}",
        holders("crm"),
        holders("crm2"),
        prom_log(),
        lab::logs(20)
    );

    // The poller: every alert Prometheus has active, every 200 ms, until told to stop;
    // wall-clock ms, the watcher's clock.
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                if let Some(active) = active_alerts() {
                    seen.lock().expect("seen").push((now_ms(), active));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let last_seen = |alert: &str, group: &str, state: &str| {
        seen.lock()
            .expect("seen")
            .last()
            .is_some_and(|(_, active)| is_active(active, alert, group, state))
    };
    let no_holder_active = || {
        seen.lock()
            .expect("seen")
            .last()
            .is_none_or(|(_, active)| active.iter().any(|(alert, _, _)| alert == "HavipNoHolder"))
    };

    // A failover: gw-a's daemon dies, gw-b takes crm over well within `for:`.
    let killed_a = now_ms();
    lab_sh(&["stop-havip", "gw-a", "KILL"]);
    let took_over = wait_until(Duration::from_secs(10), || {
        holders("crm").is_some_and(|h| h == ["gw-b"])
    });
    assert!(
        took_over.is_some(),
        "gw-b did not take crm over\n{}",
        lab::logs(30)
    );
    std::thread::sleep(Duration::from_secs(3));

    // No gateway at all: nobody holds, for real, until they are started again.
    let killed_b = now_ms();
    lab_sh(&["stop-havip", "gw-b", "KILL"]);
    let fired = wait_until(Duration::from_secs(15), || {
        last_seen("HavipNoHolder", "crm", "firing") && last_seen("HavipNoHolder", "crm2", "firing")
    });
    assert!(
        fired.is_some(),
        "HavipNoHolder did not fire for crm and crm2 with no gateway running; last seen {:?}\n{}",
        seen.lock().expect("seen").last(),
        prom_log()
    );
    std::thread::sleep(Duration::from_secs(1));

    // Both back: they take the groups again and the alert clears.
    let restarted = now_ms();
    lab_sh(&["start-havip", "gw-a", "gw-b"]);
    let cleared = wait_until(Duration::from_secs(30), || !no_holder_active());
    assert!(
        cleared.is_some(),
        "HavipNoHolder did not clear after the gateways came back; crm {:?} crm2 {:?}\n{}",
        holders("crm"),
        holders("crm2"),
        lab::logs(30)
    );
    // Failback: crm returns to gw-a (failback_delay 5 s), a planned hand-over under the
    // watch of "two holders" too.
    let failed_back = wait_until(Duration::from_secs(30), settled);
    assert!(
        failed_back.is_some(),
        "no failback to gw-a\n{}",
        lab::logs(30)
    );
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let _ = poller.join();
    watch.stop();
    let watched = watch.lock();
    assert!(
        watched.errors.is_empty() && watched.overlaps.is_empty(),
        "the lab's watcher: overlaps {:?}, errors {:?}",
        watched.overlaps,
        watched.errors
    );

    let seen = seen.lock().expect("seen");
    let polls_with = |alert: &str, state: &str, from: u64, to: u64| -> Vec<u64> {
        seen.iter()
            .filter(|(at, active)| {
                (from..to).contains(at) && active.iter().any(|(a, _, s)| a == alert && s == state)
            })
            .map(|(at, _)| at - killed_a)
            .collect()
    };
    let fired_two = polls_with("HavipTwoHolders", "firing", 0, u64::MAX);
    assert!(
        fired_two.is_empty(),
        "HavipTwoHolders fired (ms after gw-a's kill): {fired_two:?}"
    );
    // Pending is what the `for:` is there for: a hand-over seen through skewed scrapes.
    let pending_two = polls_with("HavipTwoHolders", "pending", 0, u64::MAX);
    let during_failover = polls_with("HavipNoHolder", "firing", killed_a, killed_b);
    assert!(
        during_failover.is_empty(),
        "HavipNoHolder fired during a failover (ms after the kill): {during_failover:?}"
    );

    // The figures, against what the kernel saw (the watcher's address events).
    let change = |node: Option<&str>, group: &str, held: bool, after: u64| {
        watched
            .changes
            .iter()
            .find(|c| {
                c.group == group
                    && c.held == held
                    && c.at_ms > after
                    && node.is_none_or(|n| c.node == n)
            })
            .map(|c| c.at_ms)
    };
    let failover = change(Some("gw-b"), "crm", true, killed_a).map(|at| at - killed_a);
    // Nobody held either group from gw-b's last release to the first hold after the
    // restart: the real outage the alert is about.
    let nobody_from = ["crm", "crm2"]
        .iter()
        .filter_map(|g| change(Some("gw-b"), g, false, killed_b))
        .max();
    let held_again = ["crm", "crm2"]
        .iter()
        .map(|g| change(None, g, true, restarted))
        .collect::<Option<Vec<_>>>()
        .and_then(|v| v.into_iter().max());
    let both_firing = seen
        .iter()
        .find(|(at, active)| {
            *at > killed_b
                && is_active(active, "HavipNoHolder", "crm", "firing")
                && is_active(active, "HavipNoHolder", "crm2", "firing")
        })
        .map(|(at, _)| *at);
    let cleared_at = seen
        .iter()
        .find(|(at, active)| {
            *at > restarted && !active.iter().any(|(a, _, _)| a == "HavipNoHolder")
        })
        .map(|(at, _)| *at);
    let since = |to: Option<u64>, from: Option<u64>| to.zip(from).map(|(t, f)| t as i64 - f as i64);
    figure(&format!(
        "lab prometheus: scrape and rules every {SCRAPE}, alerts polled every 200 ms ({} polls); SIGKILL of gw-a: gw-b held crm {:?} ms later (watcher), HavipNoHolder never fired; SIGKILL of gw-b: nobody held either group from {:?} ms after the kill (watcher) until {:?} ms after the restart; HavipNoHolder (for: {NO_HOLDER_FOR}) firing for both groups {:?} ms after nobody held, cleared {:?} ms after both were held again; HavipTwoHolders (for: {TWO_HOLDERS_FOR}) never fired, pending in {} polls (ms after the first kill: {pending_two:?}); {} address changes, no overlap (watcher)",
        seen.len(),
        failover,
        nobody_from.map(|at| at - killed_b),
        held_again.map(|at| at - restarted),
        since(both_firing, nobody_from),
        since(cleared_at, held_again),
        pending_two.len(),
        watched.changes.len(),
    ));
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
