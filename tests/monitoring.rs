//! The monitoring that ships in `conf/monitoring/` checked by a real Prometheus toolchain
//! (`promtool`, from Debian's `prometheus` package): the alert rules parse and pass their
//! unit tests, and what a running daemon serves on `/metrics` passes
//! `promtool check metrics`. Without promtool these tests fail, naming the package: a
//! silent skip would let the rules rot.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::{Cluster, CrmServer, Options, crm_addr};

const MONITORING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/monitoring");

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(MONITORING)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): apt-get install prometheus (Debian's package has it)"
            )
        });
    let mut input = child.stdin.take().expect("piped stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("write to promtool");
    }
    drop(input);
    let out = child.wait_with_output().expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_alert_rules_parse() {
    let (ok, text) = promtool(&["check", "rules", "havip-alerts.yml"], None);
    assert!(ok, "promtool check rules:\n{text}");
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    let (ok, text) = promtool(&["test", "rules", "havip-alerts.test.yml"], None);
    assert!(ok, "promtool test rules:\n{text}");
}

/// The daemon's /metrics body (the HTTP response without its head).
fn scrape(addr: &str) -> String {
    let text = support::scrape(addr);
    match text.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => panic!("no HTTP response from {addr}: {text:?}"),
    }
}

/// Every havip metric the alert rules and the dashboard name, from their text: a renamed
/// or dropped metric must fail here, not leave an alert that can never fire.
fn metric_names_used() -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for file in ["havip-alerts.yml", "havip-dashboard.json"] {
        let text = std::fs::read_to_string(format!("{MONITORING}/{file}"))
            .unwrap_or_else(|e| panic!("{MONITORING}/{file}: {e}"));
        let mut rest = text.as_str();
        while let Some(at) = rest.find("havip_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

/// One loopback cluster with health checks (so that every family is served), scraped on
/// every node: each body passes `promtool check metrics`, and together they serve every
/// metric the rules and the dashboard use.
#[test]
fn live_metrics_pass_promtool_and_serve_every_metric_the_monitoring_uses() {
    let cluster = Cluster::start(
        25,
        Options {
            hooks_and_metrics: true,
            health_checks: true,
            ..Options::default()
        },
    );
    let _crm = ["gw-a", "gw-b"].map(|gw| CrmServer::start(&crm_addr(25, gw)));
    cluster.wait_formed("gw-a");
    let mut served = String::new();
    for node in ["gw-a", "gw-b", "witness"] {
        let body = scrape(&format!("{}:9400", cluster.nodes[node].addr));
        let (ok, text) = promtool(&["check", "metrics"], Some(&body));
        assert!(
            ok,
            "promtool check metrics on {node}'s /metrics:\n{text}\n{body}"
        );
        served.push_str(&body);
    }
    let used = metric_names_used();
    assert!(used.len() > 10, "found only {used:?}");
    // A histogram's series are NAME_bucket, NAME_sum and NAME_count, which the rules
    // name in full.
    let missing: Vec<_> = used
        .iter()
        .filter(|name| {
            !served.lines().any(|line| {
                line.strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "conf/monitoring uses metrics no node serves: {missing:?}\n{served}"
    );
}
