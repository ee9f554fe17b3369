//! The lab's load balancer (issue 16): `scripts/lab.sh up` runs Debian's HAProxy in each
//! gateway's namespace (`conf/haproxy.cfg`: port 8080, round robin over crm-1 and crm-2,
//! its admin socket in the gateway's lab directory), and the gateways' havip configs carry
//! `conf/gw-*.toml`'s `[[backend]]` pool, as an operator's would. With the lab's three
//! daemons, its watcher and its probe:
//! - the client reaches both CRM servers through VIP:8080, and no request fails;
//! - `havip backend drain crm-1` on gw-b (not the holder): both HAProxies hold it within
//!   1 s (read from their admin sockets), and new requests reach crm-2 only;
//! - `havip failover --to gw-b`: gw-b's HAProxy, now behind the VIP, already has crm-1
//!   drained: requests still reach crm-2 only;
//! - `ready` and `failover --clear`: crm-1 answers again through gw-a's HAProxy.
//!
//! Never two holders (the watcher), nothing left after `lab.sh down`. Needs root, the lab
//! lock and Debian's haproxy (`.ci/run` installs it).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

#[path = "support/haproxy.rs"]
mod haproxy_fixture;
#[path = "support/lab.rs"]
mod lab;
#[path = "support/lab_run.rs"]
mod lab_run;
#[path = "support/outage.rs"]
mod outage;
#[path = "support/poll.rs"]
mod poll;
use haproxy_fixture::observe;
use havip::haproxy::{AdminState, ObservedServer};
use lab::{address_of, netns};
use lab_run::Lab;

/// The lab's HAProxy of gateway `gw`: its admin socket, where the provisioning put it.
fn admin_socket(gw: &str) -> PathBuf {
    PathBuf::from(format!("{}/haproxy-admin.sock", lab::dir(gw)))
}

/// The servers of backend `crm` as `gw`'s HAProxy reports them (empty if it does not answer).
fn servers(gw: &str) -> Vec<ObservedServer> {
    observe(&admin_socket(gw))
}

/// Whether server `name` is in `admin` state and up on both gateways' HAProxies.
fn on_both(name: &str, admin: AdminState) -> bool {
    ["gw-a", "gw-b"].iter().all(|gw| {
        servers(gw)
            .iter()
            .any(|s| s.name == name && s.admin() == admin && s.up())
    })
}

/// Polls `check` every 20 ms for at most `limit`; how long it took.
fn within(limit: Duration, check: impl FnMut() -> bool) -> Option<Duration> {
    poll::within_every(limit, Duration::from_millis(20), check)
}

/// `count` requests from the client to VIP:8080, each on a new connection: who answered
/// each, or why it failed.
fn ask(count: usize) -> Vec<Result<String, String>> {
    let url = format!("http://{}:8080/", address_of("crm"));
    (0..count)
        .map(|_| {
            let out = Command::new("ip")
                .args(["netns", "exec", &netns("client"), "curl", "-sS"])
                .args(["--max-time", "2", &url])
                .output()
                .map_err(|e| format!("curl: {e}"))?;
            match out.status.success() {
                true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
                false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
            }
        })
        .collect()
}

/// `ask(count)`: every request answered; who answered, each name once, sorted.
fn answered_by(count: usize, when: &str) -> Vec<String> {
    let answers = ask(count);
    let failed: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(failed.is_empty(), "{when}: requests failed: {failed:?}");
    let mut names: Vec<String> = answers.into_iter().flatten().collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_labs_haproxies_follow_a_drain_across_a_vip_move() {
    lab::host::require_root("the lab's HAProxy test");
    assert!(
        Command::new("haproxy").arg("-v").output().is_ok(),
        "needs Debian's haproxy (apt-get install haproxy): the lab runs it on the gateways"
    );
    let lab = Lab::up();
    let ready = |s: AdminState| move || on_both("crm-1", s) && on_both("crm-2", AdminState::Ready);
    assert!(
        within(Duration::from_secs(10), ready(AdminState::Ready)).is_some(),
        "the lab's HAProxies never had both servers ready and up: gw-a {:?}, gw-b {:?}\n{}",
        servers("gw-a"),
        servers("gw-b"),
        lab.logs()
    );
    assert_eq!(answered_by(6, "at start"), ["crm-1", "crm-2"]);

    lab::havip_ok("gw-b", &["backend", "drain", "crm-1"]);
    let took = within(Duration::from_secs(1), ready(AdminState::Drain));
    assert!(
        took.is_some(),
        "crm-1 not drained on both HAProxies within 1 s: gw-a {:?}, gw-b {:?}\n{}",
        servers("gw-a"),
        servers("gw-b"),
        lab.logs()
    );
    assert_eq!(answered_by(6, "drained"), ["crm-2"]);

    lab::havip_ok("gw-a", &["failover", "--to", "gw-b", "--group", "crm"]);
    let moved = lab.wait(Duration::from_secs(10), |lab| {
        lab.holders("crm") == ["gw-b"]
    });
    assert!(moved.is_some(), "crm never moved to gw-b\n{}", lab.logs());
    assert_eq!(answered_by(6, "drained, on gw-b"), ["crm-2"]);

    lab::havip_ok("gw-b", &["backend", "ready", "crm-1"]);
    lab::havip_ok("gw-b", &["failover", "--clear", "--group", "crm"]);
    assert!(
        within(Duration::from_secs(2), ready(AdminState::Ready)).is_some(),
        "crm-1 not ready again on both HAProxies"
    );
    let back = lab.wait(Duration::from_secs(10), |lab| {
        lab.holders("crm") == ["gw-a"]
    });
    assert!(
        back.is_some(),
        "crm never came back to gw-a\n{}",
        lab.logs()
    );
    assert_eq!(answered_by(6, "ready, back on gw-a"), ["crm-1", "crm-2"]);
    eprintln!(
        "lab haproxy: `backend drain crm-1` held by both HAProxies {} ms after the command returned",
        took.map_or(0, |t| t.as_millis())
    );

    let overlaps = lab.split_brain();
    assert!(overlaps.is_empty(), "two holders: {overlaps:?}");
    lab.down_and_check();
}
