//! HAProxy behind the VIP with the whole cluster (issue 16 items 2-4): three real `havip
//! run --observe-only` daemons on loopback (tests/support), each gateway with a real
//! HAProxy of its own (tests/support/haproxy.rs) in a temp dir, and two CRM servers both
//! gateways check. Proves: `havip backend drain|weight|ready` committed through Raft and
//! applied to both HAProxies (timed), shown in status and history, refused on a witness;
//! up/down is the holder's view, for both HAProxies, and follows the VIP when it moves;
//! a CRM server's death reaches both HAProxies within the check budget; the records
//! survive a daemon restart and HAProxy restarts are put right.

#[path = "support/figures.rs"]
mod figures;
#[path = "support/haproxy.rs"]
mod haproxy_fixture;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use havip::control::protocol::StatusReport;
use havip::haproxy::{AdminState, ObservedServer};

use figures::figure;
use haproxy_fixture::{Haproxy, observe};
use support::{Cluster, CrmServer, Options, SERIAL};

/// The loopback net of this test (127.0.61.0/24).
const NET: u8 = 61;

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Waits (bounded, polling every 10 ms) until both HAProxies satisfy `done` for server
/// `name`; returns how long it took.
fn wait_both(
    sockets: [&Path; 2],
    name: &str,
    limit: Duration,
    done: impl Fn(&ObservedServer) -> bool,
) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        let ok = sockets.iter().all(|s| {
            observe(s)
                .iter()
                .any(|server| server.name == name && done(server))
        });
        if ok {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "not on both HAProxies within {limit:?}: {:?} / {:?}",
        observe(sockets[0]),
        observe(sockets[1])
    );
}

/// The `[health]` and `[[backend]]` sections of `gateway`, whose HAProxy is `haproxy`.
/// gw-b's check of crm-2 goes to an address nothing answers on, so gw-b alone sees
/// crm-2 down: which view HAProxy gets shows whose view decides.
fn backend_sections(gateway: &str, haproxy: &Haproxy) -> String {
    let crm_2 = if gateway == "gw-b" { 23 } else { 22 };
    format!(
        r#"
[health]
require = "any"
[[health.check]]
name = "crm-1-http"
kind = "http"
url = "http://127.0.{NET}.21:8080/health"
interval = "200ms"
timeout = "150ms"
rise = 2
fall = 2
[[health.check]]
name = "crm-2-http"
kind = "http"
url = "http://127.0.{NET}.{crm_2}:8080/health"
interval = "200ms"
timeout = "150ms"
rise = 2
fall = 2

[[backend]]
name = "crm"
haproxy = {{ socket = "{}", backend = "crm" }}
[[backend.server]]
name = "crm-1"
address = "127.0.{NET}.21:8080"
weight = 10
checks = ["crm-1-http"]
[[backend.server]]
name = "crm-2"
address = "127.0.{NET}.22:8080"
weight = 10
checks = ["crm-2-http"]
"#,
        haproxy.admin_socket().display()
    )
}

fn status_json(cluster: &Cluster, node: &str) -> StatusReport {
    let (code, text) = cluster.cli(node, &["status", "--json"]);
    assert_eq!(code, 0, "{text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// One CLI command that must succeed; returns its output and how long it took.
fn ok(cluster: &Cluster, node: &str, args: &[&str]) -> (String, Duration) {
    let started = Instant::now();
    let (code, text) = cluster.cli(node, args);
    assert_eq!(code, 0, "havip {args:?} on {node}: {text}");
    (text, started.elapsed())
}

/// The two CRM servers on 127.0.NET.21 and .22, port 8080, and an HAProxy for each
/// gateway over both.
fn crm_and_haproxies(net: u8) -> ([CrmServer; 2], Haproxy, Haproxy) {
    let address = |host: u8| -> std::net::SocketAddr {
        format!("127.0.{net}.{host}:8080")
            .parse()
            .expect("a socket address")
    };
    let crm = [21, 22].map(|host| CrmServer::start(&address(host).to_string()));
    let servers = [("crm-1", address(21)), ("crm-2", address(22))];
    (crm, Haproxy::start(&servers), Haproxy::start(&servers))
}

#[test]
fn backend_states_are_the_clusters_and_both_haproxies_apply_them() {
    let _serial = lock();
    let ([crm_1, _crm_2], mut hx_a, mut hx_b) = crm_and_haproxies(NET);
    let mut cluster = Cluster::start_only(NET, Options::default(), &[]);
    for (gateway, hx) in [("gw-a", &hx_a), ("gw-b", &hx_b)] {
        let path = cluster.nodes[gateway].config.clone();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&backend_sections(gateway, hx));
        std::fs::write(&path, text).unwrap();
    }
    for node in ["gw-a", "gw-b", "witness"] {
        cluster.spawn(node);
    }
    cluster.wait_formed("gw-a");
    let (a_sock, b_sock) = (hx_a.admin_socket(), hx_b.admin_socket());
    let both = [a_sock.as_path(), b_sock.as_path()];

    // The holder's view decides for both: gw-b sees crm-2 down itself, but gw-a holds.
    wait_both(both, "crm-2", Duration::from_secs(5), |s| s.up());
    let history = ok(&cluster, "witness", &["history"]).0;
    assert!(
        history.contains("backend crm/crm-2 up (seen by gw-a)"),
        "{history}"
    );

    // A drain given to a follower is forwarded, committed and applied by both.
    let started = Instant::now();
    let (text, took) = ok(&cluster, "gw-b", &["backend", "drain", "crm-1"]);
    assert!(
        text.contains("backend crm/crm-1 drain: committed"),
        "{text}"
    );
    let applied = started.elapsed()
        + wait_both(both, "crm-1", Duration::from_secs(1), |s| {
            s.admin() == AdminState::Drain
        });
    figure(&format!(
        "haproxy cluster: `havip backend drain crm-1` on a follower: the command returned in {} ms ({}), both HAProxies held the drain {} ms after it started",
        took.as_millis(),
        text.trim(),
        applied.as_millis()
    ));
    assert!(applied < Duration::from_secs(1), "{applied:?}");

    ok(
        &cluster,
        "gw-a",
        &["backend", "weight", "crm-2", "5", "--pool", "crm"],
    );
    wait_both(both, "crm-2", Duration::from_secs(1), |s| s.weight == 5);

    // Status on each gateway: the decision, its own HAProxy and the other's in sync; the
    // witness (no pools) is left out.
    for gateway in ["gw-a", "gw-b"] {
        let status = status_json(&cluster, gateway);
        let nodes: Vec<&str> = status.backends.iter().map(|b| b.node.as_str()).collect();
        let other = if gateway == "gw-a" { "gw-b" } else { "gw-a" };
        assert_eq!(nodes, [gateway, other]);
        for node in &status.backends {
            let pools = node.pools.as_ref().unwrap();
            assert!(pools[0].in_sync(), "{gateway}: {node:?}");
        }
        let pool = &status.backends[0].pools.as_ref().unwrap()[0];
        let one = pool.servers.iter().find(|s| s.name == "crm-1").unwrap();
        assert_eq!(one.desired.admin, AdminState::Drain);
        let two = pool.servers.iter().find(|s| s.name == "crm-2").unwrap();
        assert_eq!((two.desired.weight, two.desired.up), (5, Some(true)));
    }
    let text = ok(&cluster, "gw-b", &["status"]).0;
    assert!(text.contains("backend crm (HAProxy crm on"), "{text}");
    assert!(text.contains("HAProxy on gw-a: in sync"), "{text}");
    assert!(text.contains("in sync"), "{text}");
    let history = ok(&cluster, "witness", &["history"]).0;
    for line in ["backend crm/crm-1 drain", "backend crm/crm-2 weight 5"] {
        assert!(history.contains(line), "{line:?} not in\n{history}");
    }
    let (code, text) = cluster.cli("witness", &["backend", "drain", "crm-1"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("witness has no [[backend]] pools"), "{text}");
    let (code, text) = cluster.cli("gw-a", &["backend", "drain", "crm-9"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no pool has a server \"crm-9\""), "{text}");

    // crm-1's service dies: both HAProxies mark it down within the check budget (fall 2
    // x 200 ms, plus a probe's timeout) and the holder's commit.
    let died = Instant::now();
    crm_1.set_healthy(false);
    wait_both(both, "crm-1", Duration::from_secs(3), |s| !s.up());
    let down = died.elapsed();
    figure(&format!(
        "haproxy cluster: crm-1 answered 503: both HAProxies marked it down {} ms later (check budget: fall 2 x interval 200 ms)",
        down.as_millis()
    ));
    crm_1.set_healthy(true);
    wait_both(both, "crm-1", Duration::from_secs(3), |s| s.up());

    // The VIP moves to gw-b: its view (crm-2 down) now decides, for both HAProxies.
    let moved = Instant::now();
    ok(&cluster, "gw-a", &["failover", "--to", "gw-b"]);
    cluster.wait_holder("gw-b", Duration::from_secs(5));
    wait_both(both, "crm-2", Duration::from_secs(3), |s| !s.up());
    figure(&format!(
        "haproxy cluster: after `failover --to gw-b`, both HAProxies had gw-b's view of crm-2 {} ms after the command",
        moved.elapsed().as_millis()
    ));
    let history = ok(&cluster, "gw-a", &["history"]).0;
    assert!(
        history.contains("backend crm/crm-2 down (seen by gw-b)"),
        "{history}"
    );

    // HAProxy restarts: put right within an interval (1 s) and counted.
    hx_b.restart();
    let restarted = Instant::now();
    wait_both(both, "crm-1", Duration::from_secs(3), |s| {
        s.admin() == AdminState::Drain
    });
    figure(&format!(
        "haproxy cluster: gw-b's HAProxy restarted; the drain was back on it {} ms later",
        restarted.elapsed().as_millis()
    ));
    let pool = status_json(&cluster, "gw-b").backends[0]
        .pools
        .clone()
        .unwrap()[0]
        .clone();
    assert!(pool.reapplied >= 1, "{pool:?}");

    // The records survive a restart of the daemon (and of its HAProxy meanwhile).
    cluster.kill("gw-a");
    hx_a.restart();
    assert_eq!(
        observe(&a_sock)
            .iter()
            .find(|s| s.name == "crm-1")
            .map(|s| s.admin()),
        Some(AdminState::Ready)
    );
    cluster.spawn("gw-a");
    wait_both(both, "crm-1", Duration::from_secs(15), |s| {
        s.admin() == AdminState::Drain
    });
    wait_both(both, "crm-2", Duration::from_secs(3), |s| s.weight == 5);

    ok(&cluster, "gw-b", &["backend", "ready", "crm-1"]);
    wait_both(both, "crm-1", Duration::from_secs(1), |s| {
        s.admin() == AdminState::Ready
    });
    ok(&cluster, "gw-b", &["failover", "--clear"]);
    cluster.assert_never_two_holders();
}

/// The loopback net of the reload test (127.0.62.0/24).
const RELOAD_NET: u8 = 62;

/// `[health]` (a check per CRM server) and a `[[backend]]` pool `crm` of `servers` on
/// `haproxy`, on the reload test's net.
fn pool_sections(haproxy: &Haproxy, servers: &[&str]) -> String {
    let mut text = String::from("\n[health]\nrequire = \"any\"\n");
    for (name, host) in [("crm-1", 21), ("crm-2", 22)] {
        text.push_str(&format!(
            "[[health.check]]\nname = \"{name}-http\"\nkind = \"http\"\n\
             url = \"http://127.0.{RELOAD_NET}.{host}:8080/health\"\n\
             interval = \"200ms\"\ntimeout = \"150ms\"\nrise = 2\nfall = 2\n"
        ));
    }
    text.push_str(&format!(
        "\n[[backend]]\nname = \"crm\"\nhaproxy = {{ socket = \"{}\", backend = \"crm\" }}\n",
        haproxy.admin_socket().display()
    ));
    for (name, host) in [("crm-1", 21), ("crm-2", 22)] {
        if servers.contains(&name) {
            text.push_str(&format!(
                "[[backend.server]]\nname = \"{name}\"\naddress = \"127.0.{RELOAD_NET}.{host}:8080\"\n\
                 weight = 10\nchecks = [\"{name}-http\"]\n"
            ));
        }
    }
    text
}

/// A server added to a pool by `havip reload` on both gateways (haproxy.cfg already has
/// it, as the operator's order is HAProxy first): before, `havip backend` does not know
/// it; after, a drain reaches both HAProxies and status lists it, and the pool's other
/// server keeps the state the cluster gave it before the reload.
#[test]
fn a_server_added_by_reload_is_managed_on_both_haproxies() {
    let _serial = lock();
    let (_crm, hx_a, hx_b) = crm_and_haproxies(RELOAD_NET);
    let mut cluster = Cluster::start_only(RELOAD_NET, Options::default(), &[]);
    let files: Vec<(&str, std::path::PathBuf, String, &Haproxy)> =
        [("gw-a", &hx_a), ("gw-b", &hx_b)]
            .into_iter()
            .map(|(gateway, hx)| {
                let path = cluster.nodes[gateway].config.clone();
                let text = std::fs::read_to_string(&path).unwrap();
                (gateway, path, text, hx)
            })
            .collect();
    for (_, path, text, hx) in &files {
        std::fs::write(path, format!("{text}{}", pool_sections(hx, &["crm-1"]))).unwrap();
    }
    for node in ["gw-a", "gw-b", "witness"] {
        cluster.spawn(node);
    }
    cluster.wait_formed("gw-a");
    let (a_sock, b_sock) = (hx_a.admin_socket(), hx_b.admin_socket());
    let both = [a_sock.as_path(), b_sock.as_path()];
    ok(&cluster, "gw-a", &["backend", "drain", "crm-1"]);
    wait_both(both, "crm-1", Duration::from_secs(2), |s| {
        s.admin() == AdminState::Drain
    });
    let (code, text) = cluster.cli("gw-a", &["backend", "drain", "crm-2"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no pool has a server \"crm-2\""), "{text}");

    for (gateway, path, text, hx) in &files {
        std::fs::write(
            path,
            format!("{text}{}", pool_sections(hx, &["crm-1", "crm-2"])),
        )
        .unwrap();
        let (answer, _) = ok(&cluster, gateway, &["reload"]);
        assert!(
            answer.contains(
                "backends: [crm (crm-1 weight 10)] -> [crm (crm-1 weight 10, crm-2 weight 10)]"
            ),
            "{gateway}: {answer}"
        );
    }
    let started = Instant::now();
    ok(&cluster, "gw-b", &["backend", "drain", "crm-2"]);
    let applied = started.elapsed()
        + wait_both(both, "crm-2", Duration::from_secs(2), |s| {
            s.admin() == AdminState::Drain
        });
    figure(&format!(
        "haproxy cluster: crm-2 added to the pool by reload on both gateways, then drained: both HAProxies held it {} ms after the command",
        applied.as_millis()
    ));
    wait_both(both, "crm-1", Duration::from_secs(2), |s| {
        s.admin() == AdminState::Drain
    });
    for gateway in ["gw-a", "gw-b"] {
        let status = status_json(&cluster, gateway);
        let pool = &status.backends[0].pools.as_ref().unwrap()[0];
        let names: Vec<&str> = pool.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["crm-1", "crm-2"], "{gateway}: {pool:?}");
    }
    for server in ["crm-1", "crm-2"] {
        ok(&cluster, "gw-a", &["backend", "ready", server]);
    }
    wait_both(both, "crm-2", Duration::from_secs(2), |s| {
        s.admin() == AdminState::Ready
    });
    cluster.assert_never_two_holders();
}
