//! A real three-node havip cluster on loopback for integration tests: three `havip run
//! --observe-only` processes (gw-a, gw-b, witness), each on its own loopback address
//! 127.0.N.11-13 so that nftables can cut pairs apart (or another shape of nodes,
//! `Cluster::start_shape`, e.g. the five voters of `FIVE_VOTERS` on .11-.15), a
//! split-brain watcher that asks every node's data plane what it holds every 10 ms
//! (`Watcher`), and helpers to kill, freeze, restart and partition nodes. Everything is torn down in Drop, also when a test
//! fails.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use havip::control::protocol::{Request, Response, StatusReport};
use std::collections::BTreeSet;

mod host;
mod slow_disk;
use havip::control::socket;
pub use host::require_root;
// Not every binary that includes this module makes a slow disk.
#[allow(unused_imports)]
pub use slow_disk::SlowDisk;

pub const NODES: [&str; 3] = ["gw-a", "gw-b", "witness"];
/// Two gateways and three witnesses (README, "Five voters"): the third host's witness and
/// one on each CRM server, named as in `conf/five-voters/`.
pub const FIVE_VOTERS: [&str; 5] = ["gw-a", "gw-b", "witness", "witness-crm-1", "witness-crm-2"];
pub const GROUP: &str = "crm";

/// Serializes the cluster tests of one binary: each runs three daemons with 64 ms
/// heartbeats, and two clusters at once on two cores would make timings noisy.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_havip")
}

#[derive(Clone)]
pub struct Options {
    pub failback_delay: &'static str,
    pub failback: bool,
    /// Each node runs a notify hook appending "GROUP OLD NEW" to <node dir>/notify.log,
    /// and serves metrics on its own address, port 9400.
    pub hooks_and_metrics: bool,
    /// Each gateway checks an HTTP "CRM" server at 127.0.N.21 (gw-a) / .22 (gw-b):8080
    /// every 200 ms (rise 2, fall 2); start them with `CrmServer::start`.
    pub health_checks: bool,
    pub on_all_unhealthy: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            failback_delay: "1s",
            failback: true,
            hooks_and_metrics: false,
            health_checks: false,
            on_all_unhealthy: "keep",
        }
    }
}

pub struct Node {
    pub name: &'static str,
    pub addr: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub net: u8,
    /// Every node of the cluster, running or not (`NODES` unless `start_shape` said).
    pub shape: &'static [&'static str],
    pub nodes: BTreeMap<&'static str, Node>,
    watcher: Option<Watcher>,
    /// Watchers of groups other than `GROUP` (`watch_group`).
    group_watchers: Vec<(&'static str, Watcher)>,
    nft_table: Option<String>,
}

/// A node of a test cluster is a witness when its name says so (`witness`, `witness-crm-1`);
/// the others are gateways.
pub fn is_witness(name: &str) -> bool {
    name.starts_with("witness")
}

/// A node's loopback address: 127.0.`net`.11 for the first of `shape`, .12 for the next...
pub fn node_addr(net: u8, shape: &[&str], name: &str) -> String {
    format!(
        "127.0.{net}.{}",
        11 + shape.iter().position(|x| *x == name).unwrap_or(0)
    )
}

/// Writes `name`'s config for a cluster of the nodes of `shape` (each node lists them all).
pub fn write_config(
    dir: &Path,
    net: u8,
    shape: &[&str],
    name: &str,
    key: &Path,
    options: &Options,
) -> PathBuf {
    let addr = |n: &str| node_addr(net, shape, n);
    let peers: String = shape
        .iter()
        .map(|n| {
            format!(
                "[[cluster.peers]]\nname = \"{n}\"\naddress = \"{}:7400\"\n",
                addr(n)
            )
        })
        .collect();
    let groups = match name {
        w if is_witness(w) => "[[vip_group]]\nname = \"crm\"\n".to_string(),
        gw => {
            let priority = if gw == "gw-a" { 150 } else { 100 };
            format!(
                "[[vip_group]]\nname = \"crm\"\ninterface = \"eth1\"\naddresses = [\"198.18.0.50/24\"]\npriority = {priority}\nfailback = {}\nfailback_delay = \"{}\"\non_all_unhealthy = \"{}\"\n{}",
                options.failback,
                options.failback_delay,
                options.on_all_unhealthy,
                if options.health_checks {
                    format!(
                        "\n[health]\nrequire = \"all\"\n[[health.check]]\nname = \"crm\"\nkind = \"http\"\nurl = \"http://{}/health\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 2\nfall = 2\n",
                        crm_addr(net, gw)
                    )
                } else {
                    String::new()
                }
            )
        }
    };
    let role = if is_witness(name) {
        "witness"
    } else {
        "gateway"
    };
    let node_dir = dir.join(name);
    let (metrics, notify) = if options.hooks_and_metrics {
        let log = node_dir.join("notify.log");
        (
            format!("metrics = \"{}:9400\"\n", addr(name)),
            format!(
                "\n[notify]\ncommand = [\"/bin/sh\", \"-c\", 'echo \"$HAVIP_GROUP $HAVIP_OLD_STATE $HAVIP_NEW_STATE\" >> {}']\n",
                log.display()
            ),
        )
    } else {
        (String::new(), String::new())
    };
    let text = format!(
        "[node]\nname = \"{name}\"\nrole = \"{role}\"\ndata_dir = \"{data}\"\n\n[cluster]\nlisten = \"{listen}:7400\"\nkey_file = \"{key}\"\n{peers}\n[control]\nsocket = \"{sock}\"\n{metrics}\n{groups}{notify}",
        data = dir.join(name).join("data").display(),
        listen = addr(name),
        key = key.display(),
        sock = dir.join(name).join("havip.sock").display(),
    );
    std::fs::create_dir_all(dir.join(name)).expect("node dir");
    let path = dir.join(name).join("havip.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// The CRM server a gateway's health check probes (one per gateway, so one gateway's
/// view of the CRM can fail alone).
pub fn crm_addr(net: u8, gateway: &str) -> String {
    format!(
        "127.0.{net}.{}:8080",
        if gateway == "gw-a" { 21 } else { 22 }
    )
}

/// A tiny real HTTP server answering 200 or 503 as the test says.
pub struct CrmServer {
    healthy: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CrmServer {
    pub fn start(addr: &str) -> CrmServer {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind(addr).expect("bind the CRM server");
        listener.set_nonblocking(true).expect("nonblocking");
        let healthy = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (healthy, stop) = (healthy.clone(), stop.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(600) {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                            let mut buf = [0u8; 1024];
                            let _ = stream.read(&mut buf);
                            let (status, body) = if healthy.load(Ordering::SeqCst) {
                                ("200 OK", "ok")
                            } else {
                                ("503 Service Unavailable", "down")
                            };
                            let _ = write!(
                                stream,
                                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            );
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            })
        };
        CrmServer {
            healthy,
            stop,
            thread: Some(thread),
        }
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}

impl Drop for CrmServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn keygen(path: &Path) {
    let status = Command::new(bin())
        .args(["keygen", "--out"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("keygen");
    assert!(status.success(), "keygen failed");
}

impl Cluster {
    /// Starts the three daemons; `net` must be unique per test (it picks 127.0.net.0/24).
    pub fn start(net: u8, options: Options) -> Cluster {
        Self::start_only(net, options, &NODES)
    }

    /// Writes all three configs but starts only `running` (the others can be `spawn`ed later).
    pub fn start_only(net: u8, options: Options, running: &[&str]) -> Cluster {
        Self::start_shape_only(net, options, &NODES, running)
    }

    /// Starts a cluster of the nodes of `shape` (witnesses by name, `is_witness`; gw-a is
    /// preferred for `GROUP`), each on 127.0.`net`.11 onwards.
    pub fn start_shape(net: u8, options: Options, shape: &'static [&'static str]) -> Cluster {
        Self::start_shape_only(net, options, shape, shape)
    }

    /// Writes the configs of every node of `shape` but starts only `running`.
    pub fn start_shape_only(
        net: u8,
        options: Options,
        shape: &'static [&'static str],
        running: &[&str],
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("cluster.key");
        keygen(&key);
        let mut nodes = BTreeMap::new();
        for &name in shape {
            let config = write_config(dir.path(), net, shape, name, &key, &options);
            let node = Node {
                name,
                addr: node_addr(net, shape, name),
                socket: dir.path().join(name).join("havip.sock"),
                log: dir.path().join(name).join("havip.log"),
                config,
                child: None,
            };
            nodes.insert(name, node);
        }
        let mut cluster = Cluster {
            dir,
            net,
            shape,
            nodes,
            watcher: None,
            group_watchers: Vec::new(),
            nft_table: None,
        };
        for name in running {
            cluster.spawn(name);
        }
        let sockets = cluster
            .nodes
            .values()
            .map(|n| (n.name, n.socket.clone()))
            .collect();
        cluster.watcher = Some(Watcher::start(sockets, GROUP));
        cluster
    }

    pub fn spawn(&mut self, name: &str) {
        self.spawn_with_env(name, &[]);
    }

    /// `spawn` with extra environment (e.g. systemd's `NOTIFY_SOCKET`).
    pub fn spawn_with_env(&mut self, name: &str, env: &[(&str, &str)]) {
        let node = self.nodes.get_mut(name).expect("known node");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let child = Command::new(bin())
            .args(["run", "--observe-only", "--config"])
            .arg(&node.config)
            // HAVIP_TEST_LOG raises the daemons' log level when chasing a flaky test.
            .env(
                "HAVIP_LOG",
                std::env::var("HAVIP_TEST_LOG").unwrap_or_else(|_| {
                    "info,openraft=warn,openraft::core::heartbeat=error,openraft::core::raft_core=error"
                        .into()
                }),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn havip run");
        node.child = Some(child);
    }

    pub fn pid(&self, name: &str) -> i32 {
        self.nodes[name]
            .child
            .as_ref()
            .map(|c| c.id() as i32)
            .expect("running")
    }

    pub fn signal(&self, name: &str, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid(name).to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut child) = self.nodes.get_mut(name).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (bounded) for the exit status. The watcher polls every 1 ms
    /// meanwhile: a stopping daemon releases, hands over and exits within tens of ms, and
    /// only an answer in that window shows the release; without one its last hold would
    /// count until its deadline, as a killed node's does.
    pub fn stop(&mut self, name: &str, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        if let Some(w) = &self.watcher {
            w.poll_fast_until(Some(deadline));
        }
        self.signal(name, "TERM");
        let mut child = self.nodes.get_mut(name).and_then(|n| n.child.take())?;
        let mut status = None;
        while Instant::now() < deadline {
            if let Ok(Some(exited)) = child.try_wait() {
                status = Some(exited);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(w) = &self.watcher {
            w.poll_fast_until(None);
        }
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    pub fn status(&self, name: &str) -> Option<StatusReport> {
        match call(
            &self.nodes[name].socket,
            Request::Status,
            Duration::from_secs(2),
        ) {
            Some(Response::Status(report)) => Some(report),
            _ => None,
        }
    }

    /// Waits until `on` has every node's reported facts applied (a fresh cluster proposes
    /// them asynchronously right after the first election).
    pub fn wait_reported(&self, on: &str) -> StatusReport {
        for _ in 0..250 {
            if let Some(status) = self.status(on)
                && status
                    .groups
                    .iter()
                    .all(|g| g.nodes.iter().all(|n| n.priority.is_some()))
            {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{on} never saw every node's facts\n{}", self.logs());
    }

    /// Waits until `leader` alone holds and every witness has applied every node's facts:
    /// only then do all the nodes run Raft. A fault injected earlier can find a witness still
    /// sitting out its start-up lease, and a leader left with no quorum rightly releases.
    /// Returns the status of the first witness.
    pub fn wait_formed(&self, leader: &str) -> StatusReport {
        self.wait_holder(leader, Duration::from_secs(15));
        let witnesses: Vec<&str> = self
            .shape
            .iter()
            .copied()
            .filter(|n| is_witness(n))
            .collect();
        let (first, rest) = witnesses.split_first().expect("a witness in the cluster");
        for witness in rest {
            self.wait_reported(witness);
        }
        self.wait_reported(first)
    }

    /// Runs the CLI against `name`'s daemon; returns (exit code, stdout+stderr).
    pub fn cli(&self, name: &str, args: &[&str]) -> (i32, String) {
        let out = Command::new(bin())
            .args(args)
            .arg("--socket")
            .arg(&self.nodes[name].socket)
            .output()
            .expect("run havip cli");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// The nodes holding now: the last answer of each said its data plane has the group
    /// and the deadline it gave has not passed. A node that stopped answering (frozen,
    /// killed) still holds until that deadline.
    pub fn holders(&self) -> Vec<&'static str> {
        self.watcher
            .as_ref()
            .map(|w| w.current(Instant::now()))
            .unwrap_or_default()
    }

    /// Every stretch of time over which `name` held, as the watcher saw it.
    pub fn holds(&self, name: &str) -> Vec<Hold> {
        self.watcher
            .as_ref()
            .map(|w| hold_intervals(&w.seen(name)))
            .unwrap_or_default()
    }

    /// Waits until exactly `name` holds (and nobody else), up to `limit`; returns how long it took.
    pub fn wait_holder(&self, name: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.holders() == [name] {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "{name} did not become the only holder within {limit:?}; holders now: {:?}\n{}",
            self.holders(),
            self.logs()
        );
    }

    /// Waits until exactly one of `names` holds; returns it.
    pub fn wait_holder_any(&self, names: &[&'static str], limit: Duration) -> &'static str {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let [one] = self.holders()[..]
                && names.contains(&one)
            {
                return one;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "none of {names:?} became the only holder within {limit:?}\n{}",
            self.logs()
        );
    }

    pub fn wait_no_holder_among(&self, names: &[&str], limit: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            if !self.holders().iter().any(|h| names.contains(h)) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("{names:?} still hold after {limit:?}\n{}", self.logs());
    }

    /// Fails the test unless `name` held in every poll since `since` that it answered (a
    /// poll it did not answer in time proves nothing either way; a loaded test machine
    /// makes a few of those) and nobody else held at any instant since then, a silent
    /// node's last hold counting until its deadline.
    pub fn assert_sole_holder_since(&self, name: &str, since: Instant) {
        let Some(watcher) = &self.watcher else {
            return;
        };
        let polls: Vec<Seen> = watcher
            .seen(name)
            .into_iter()
            .filter(|s| s.at() >= since)
            .collect();
        assert!(polls.len() > 10, "too few polls of {name}: {}", polls.len());
        let answered: Vec<&Seen> = polls
            .iter()
            .filter(|s| !matches!(s, Seen::Silent { .. }))
            .collect();
        assert!(
            answered.len() * 2 > polls.len(),
            "{name} mostly silent: {answered:?} of {} polls",
            polls.len()
        );
        for seen in answered {
            assert!(
                matches!(seen, Seen::Held { at, until } if until > at),
                "{name} did not hold at {}: {seen:?}\n{}",
                watcher.when(seen.at()),
                self.logs()
            );
        }
        let now = Instant::now();
        for other in self.shape.iter().filter(|n| **n != name) {
            for hold in hold_intervals(&watcher.seen(other)) {
                assert!(
                    hold.to <= since || hold.from >= now,
                    "{other} held from {} to {} while {name} should have held alone since {}\n{}",
                    watcher.when(hold.from),
                    watcher.when(hold.to),
                    watcher.when(since),
                    self.logs()
                );
            }
        }
    }

    /// Fails the test unless `new` took the group over, after `since`, no earlier than the
    /// deadline of the hold `old` had at `since` (a killed or frozen master's hold runs to
    /// its deadline: only the lease, not the process, ends it). Returns the time between
    /// that deadline and the takeover.
    pub fn assert_took_over_after_deadline(
        &self,
        old: &str,
        new: &str,
        since: Instant,
    ) -> Duration {
        let Some(watcher) = &self.watcher else {
            return Duration::ZERO;
        };
        let old_hold = self
            .holds(old)
            .into_iter()
            .rfind(|h| h.from <= since)
            .unwrap_or_else(|| panic!("{old} never held before {}", watcher.when(since)));
        let taken = self
            .holds(new)
            .into_iter()
            .find(|h| h.to > since)
            .unwrap_or_else(|| panic!("{new} never held after {}", watcher.when(since)));
        assert!(
            taken.from >= old_hold.to,
            "{new} took over at {}, {:?} before the deadline of {old}'s hold ({} to {}): two holders\n{}",
            watcher.when(taken.from),
            old_hold.to - taken.from,
            watcher.when(old_hold.from),
            watcher.when(old_hold.to),
            self.logs()
        );
        taken.from - old_hold.to
    }

    /// Fails the test if two nodes ever held the group at the same instant (from the hold
    /// intervals, so an overlap between two polls counts), or if the witness ever held.
    pub fn assert_never_two_holders(&self) {
        if let Some(w) = &self.watcher {
            self.assert_never_two_holders_seen_by(GROUP, w);
        }
        for (group, w) in &self.group_watchers {
            self.assert_never_two_holders_seen_by(group, w);
        }
    }

    fn assert_never_two_holders_seen_by(&self, group: &str, w: &Watcher) {
        let holds: Vec<(&'static str, Vec<Hold>)> = (self.shape.iter())
            .map(|n| (*n, hold_intervals(&w.seen(n))))
            .collect();
        let overlaps: Vec<String> = overlaps(&holds)
            .iter()
            .map(|o| {
                format!(
                    "{} and {} both held {group} for {:?} from {}",
                    o.nodes.0,
                    o.nodes.1,
                    o.to - o.from,
                    w.when(o.from)
                )
            })
            .collect();
        assert!(
            overlaps.is_empty(),
            "split brain observed: {overlaps:?}\n{}",
            self.logs()
        );
        for witness in self.shape.iter().filter(|n| is_witness(n)) {
            assert!(
                !w.seen(witness)
                    .iter()
                    .any(|s| matches!(s, Seen::Held { .. })),
                "{witness} held {group}\n{}",
                self.logs()
            );
        }
    }

    /// Watches `group` too (every 10 ms, as `GROUP`): `holders_of` and
    /// `assert_never_two_holders` include it from now on.
    pub fn watch_group(&mut self, group: &'static str) {
        let sockets = self
            .nodes
            .values()
            .map(|n| (n.name, n.socket.clone()))
            .collect();
        self.group_watchers
            .push((group, Watcher::start(sockets, group)));
    }

    /// The nodes holding `group` now (`GROUP`, or one given to `watch_group`).
    pub fn holders_of(&self, group: &str) -> Vec<&'static str> {
        if group == GROUP {
            return self.holders();
        }
        (self.group_watchers.iter())
            .find(|(g, _)| *g == group)
            .map(|(_, w)| w.current(Instant::now()))
            .unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in self.nodes.values() {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let keep = std::env::var("HAVIP_TEST_LOG_LINES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(40);
            let tail: Vec<&str> = text.lines().rev().take(keep).collect();
            out += &format!("----- {} (last {keep} lines) -----\n", node.name);
            for line in tail.into_iter().rev() {
                out += line;
                out.push('\n');
            }
        }
        out
    }

    /// Drops all traffic between `name` and `others` (both directions) with nftables.
    pub fn partition(&mut self, name: &str, others: &[&str]) {
        require_root("a partition test");
        let table = format!("havip_test_{}", self.net);
        let a = &self.nodes[name].addr;
        let mut rules = format!(
            "table ip {table} {{\n chain out {{ type filter hook output priority 0; policy accept;\n"
        );
        for other in others {
            let b = &self.nodes[*other].addr;
            rules +=
                &format!("  ip saddr {a} ip daddr {b} drop\n  ip saddr {b} ip daddr {a} drop\n");
        }
        rules += " }\n}\n";
        self.heal();
        let path = self.dir.path().join("partition.nft");
        std::fs::write(&path, rules).expect("nft rules");
        let status = Command::new("nft")
            .arg("-f")
            .arg(&path)
            .status()
            .expect("nft (apt-get install nftables)");
        assert!(status.success(), "nft -f failed");
        self.nft_table = Some(table);
    }

    pub fn heal(&mut self) {
        if let Some(table) = self.nft_table.take() {
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", &table])
                .status();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.heal();
        if let Some(w) = self.watcher.take() {
            w.stop();
        }
        for (_, w) in self.group_watchers.drain(..) {
            w.stop();
        }
        let names: Vec<&'static str> = self.nodes.keys().copied().collect();
        for name in names {
            if let Some(child) = self.nodes.get_mut(name).and_then(|n| n.child.as_mut()) {
                let _ = Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .status();
            }
            self.kill(name);
        }
    }
}

pub fn call(socket: &Path, request: Request, timeout: Duration) -> Option<Response> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime
        .block_on(socket::call(socket, &request, timeout))
        .ok()
}

/// One poll of one node, in the watcher's clock (one process, so one clock for all nodes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The node's data plane had the group. `at` is when the answer arrived (it held then
    /// at the latest), `until` is `at` plus the time left it reported: never earlier than
    /// the real deadline, so a late deadline is not hidden by the poll's round trip.
    Held { at: Instant, until: Instant },
    /// It did not have the group. `at` is when the round of polls was sent, the same for
    /// every node: a hand-over whose release and takeover both fall before one round's
    /// answers is then not taken for two holders. (It can miss an overlap shorter than the
    /// spread of one round's answers, a fraction of a millisecond when the nodes answer.)
    Free { at: Instant },
    /// No answer in time (frozen, killed, slow); `at` is when the round was sent. Proves
    /// nothing: the node's last known hold stands until its deadline.
    Silent { at: Instant },
}

impl Seen {
    pub fn at(&self) -> Instant {
        match self {
            Seen::Held { at, .. } | Seen::Free { at } | Seen::Silent { at } => *at,
        }
    }
}

/// A stretch of time over which one node held: `from` inclusive, `to` exclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    pub from: Instant,
    pub to: Instant,
}

/// Two nodes holding at once, from `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    pub nodes: (&'static str, &'static str),
    pub from: Instant,
    pub to: Instant,
}

/// The stretches over which one node held, from its polls in order: an answer that says
/// held starts a hold that lasts until its deadline or the node's next answer, whichever
/// comes first (the next answer tells what happened from then on); silence changes
/// nothing. Adjacent stretches are joined.
pub fn hold_intervals(seen: &[Seen]) -> Vec<Hold> {
    let answered: Vec<&Seen> = seen
        .iter()
        .filter(|s| !matches!(s, Seen::Silent { .. }))
        .collect();
    let mut holds: Vec<Hold> = Vec::new();
    for (i, seen) in answered.iter().enumerate() {
        let Seen::Held { at, until } = **seen else {
            continue;
        };
        let to = answered
            .get(i + 1)
            .map_or(until, |next| until.min(next.at()));
        if to <= at {
            continue;
        }
        match holds.last_mut() {
            Some(last) if last.to >= at => last.to = last.to.max(to),
            _ => holds.push(Hold { from: at, to }),
        }
    }
    holds
}

/// Every instant at which two nodes held, from each node's holds (as `hold_intervals`
/// returns them: in order, not overlapping each other). Stretches that only touch
/// (one ends where the other starts) are not an overlap.
pub fn overlaps(holds: &[(&'static str, Vec<Hold>)]) -> Vec<Overlap> {
    let mut found = Vec::new();
    for (i, (a, a_holds)) in holds.iter().enumerate() {
        for (b, b_holds) in &holds[i + 1..] {
            let (mut x, mut y) = (0, 0);
            while let (Some(p), Some(q)) = (a_holds.get(x), b_holds.get(y)) {
                let (from, to) = (p.from.max(q.from), p.to.min(q.to));
                if from < to {
                    found.push(Overlap {
                        nodes: (a, b),
                        from,
                        to,
                    });
                }
                if p.to <= q.to {
                    x += 1;
                } else {
                    y += 1;
                }
            }
        }
    }
    found
}

/// How long the watcher waits for a node's answer; a node that did not answer its last
/// poll gets less, so that a frozen node does not slow the polls of the others (a round
/// waits for every answer) by more than that.
const POLL_TIMEOUT: Duration = Duration::from_millis(50);
const POLL_TIMEOUT_AFTER_SILENCE: Duration = Duration::from_millis(15);

/// Asks every node's data plane what it holds (`Request::Held`), all nodes at once, every
/// 10 ms, and keeps every answer: what a real host would still have on its interface,
/// bounded by the hold deadline that enforcement below the daemon applies. Not the
/// daemon's lease-gated belief (`Request::Holdings`): a frozen or killed node answers
/// nothing, and its last hold counts until its deadline, so the SIGKILL and SIGSTOP
/// tests can see two holders.
struct Watcher {
    started: Instant,
    stop: Arc<AtomicBool>,
    /// Until when to poll every 1 ms instead of 10 (`Cluster::stop`).
    fast_until: Arc<Mutex<Option<Instant>>>,
    /// Every poll of each node, in order (bounded by the watcher's ten minutes).
    seen: Arc<Mutex<BTreeMap<&'static str, Vec<Seen>>>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    fn start(sockets: Vec<(&'static str, PathBuf)>, group: &'static str) -> Watcher {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let fast_until = Arc::new(Mutex::new(None));
        let thread = {
            let stop = stop.clone();
            let seen = seen.clone();
            let fast_until = fast_until.clone();
            std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let mut silent: BTreeSet<&'static str> = BTreeSet::new();
                // Bounded: a test never runs for more than ten minutes.
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(600) {
                    let round = Instant::now();
                    let polls = sockets.iter().map(|(name, path)| {
                        let timeout = if silent.contains(name) {
                            POLL_TIMEOUT_AFTER_SILENCE
                        } else {
                            POLL_TIMEOUT
                        };
                        async move {
                            let answer = socket::call(path, &Request::Held, timeout).await;
                            let now = Instant::now();
                            let seen = match answer {
                                Ok(Response::Held { groups }) => {
                                    match groups.iter().find(|g| g.group == group) {
                                        Some(g) => Seen::Held {
                                            at: now,
                                            until: now + Duration::from_millis(g.remaining_ms),
                                        },
                                        None => Seen::Free { at: round },
                                    }
                                }
                                _ => Seen::Silent { at: round },
                            };
                            (*name, seen)
                        }
                    });
                    let answers = runtime.block_on(futures_util::future::join_all(polls));
                    silent = answers
                        .iter()
                        .filter(|(_, s)| matches!(s, Seen::Silent { .. }))
                        .map(|(n, _)| *n)
                        .collect();
                    if let Ok(mut seen) = seen.lock() {
                        for (name, answer) in answers {
                            seen.entry(name).or_insert_with(Vec::new).push(answer);
                        }
                    }
                    let fast = fast_until
                        .lock()
                        .is_ok_and(|f| f.is_some_and(|until| Instant::now() < until));
                    std::thread::sleep(Duration::from_millis(if fast { 1 } else { 10 }));
                }
            })
        };
        Watcher {
            started,
            stop,
            fast_until,
            seen,
            thread: Some(thread),
        }
    }

    fn poll_fast_until(&self, until: Option<Instant>) {
        if let Ok(mut fast) = self.fast_until.lock() {
            *fast = until;
        }
    }

    /// Every poll of `name` so far.
    fn seen(&self, name: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .map(|s| s.get(name).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// The nodes whose last answer says they hold until after `now`.
    fn current(&self, now: Instant) -> Vec<&'static str> {
        let Ok(seen) = self.seen.lock() else {
            return Vec::new();
        };
        seen.iter()
            .filter(|(_, polls)| {
                matches!(
                    polls.iter().rfind(|s| !matches!(s, Seen::Silent { .. })),
                    Some(Seen::Held { until, .. }) if *until > now
                )
            })
            .map(|(name, _)| *name)
            .collect()
    }

    /// An instant as the time since the watcher started, for failure messages.
    fn when(&self, at: Instant) -> String {
        format!(
            "+{:.3}s",
            at.saturating_duration_since(self.started).as_secs_f64()
        )
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits (polling every 10 ms, up to `within`) until the file at `path` contains
/// `needle`; returns its text. Fails the test with what the file holds otherwise.
pub fn wait_file_contains(path: &Path, needle: &str, within: Duration) -> String {
    let started = Instant::now();
    while started.elapsed() < within {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "{} never contained {needle:?}: {:?}",
        path.display(),
        std::fs::read_to_string(path)
    );
}

/// The whole HTTP response of a daemon's /metrics (head and body).
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("metrics port open");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

#[cfg(test)]
mod watcher_tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn held(t0: Instant, ms: u64, until: u64) -> Seen {
        Seen::Held {
            at: at(t0, ms),
            until: at(t0, until),
        }
    }

    fn free(t0: Instant, ms: u64) -> Seen {
        Seen::Free { at: at(t0, ms) }
    }

    fn silent(t0: Instant, ms: u64) -> Seen {
        Seen::Silent { at: at(t0, ms) }
    }

    fn hold(t0: Instant, from: u64, to: u64) -> Hold {
        Hold {
            from: at(t0, from),
            to: at(t0, to),
        }
    }

    #[test]
    fn a_node_that_falls_silent_holds_until_its_deadline() {
        let t0 = Instant::now();
        let seen = [
            held(t0, 0, 300),
            held(t0, 10, 305),
            silent(t0, 20),
            silent(t0, 40),
        ];
        assert_eq!(hold_intervals(&seen), [hold(t0, 0, 305)]);
    }

    #[test]
    fn the_next_answer_ends_or_shortens_a_hold() {
        let t0 = Instant::now();
        let released = [held(t0, 0, 300), silent(t0, 10), free(t0, 20)];
        assert_eq!(hold_intervals(&released), [hold(t0, 0, 20)]);
        // A later answer with an earlier deadline is what the data plane has now.
        let shortened = [held(t0, 0, 300), held(t0, 10, 50), silent(t0, 20)];
        assert_eq!(hold_intervals(&shortened), [hold(t0, 0, 50)]);
        // A deadline that passed between two answers leaves a gap.
        let lapsed = [held(t0, 0, 5), held(t0, 10, 300), free(t0, 20)];
        assert_eq!(hold_intervals(&lapsed), [hold(t0, 0, 5), hold(t0, 10, 20)]);
    }

    #[test]
    fn a_deadline_already_passed_is_no_hold() {
        let t0 = Instant::now();
        // A thawed node whose data plane still has the group, with no time left.
        let seen = [free(t0, 0), held(t0, 10, 10), free(t0, 20)];
        assert_eq!(hold_intervals(&seen), []);
    }

    #[test]
    fn a_frozen_master_overlaps_a_successor_that_holds_before_its_deadline() {
        let t0 = Instant::now();
        let frozen = hold_intervals(&[held(t0, 0, 320), silent(t0, 10), silent(t0, 400)]);
        // No poll ever saw both holding: the frozen one answered nothing.
        let early = hold_intervals(&[free(t0, 0), free(t0, 250), held(t0, 261, 600)]);
        let found = overlaps(&[("gw-a", frozen.clone()), ("gw-b", early)]);
        assert_eq!(
            found,
            [Overlap {
                nodes: ("gw-a", "gw-b"),
                from: at(t0, 261),
                to: at(t0, 320),
            }]
        );
        let in_time = hold_intervals(&[free(t0, 0), free(t0, 400), held(t0, 401, 700)]);
        assert_eq!(overlaps(&[("gw-a", frozen), ("gw-b", in_time)]), []);
    }

    #[test]
    fn a_hand_over_within_one_round_is_not_two_holders() {
        let t0 = Instant::now();
        // Round at 100 ms: the old master answers "free", the new one "held" a moment
        // earlier than the old one's answer arrived; both moved before either answered.
        let old = hold_intervals(&[held(t0, 91, 400), free(t0, 100)]);
        let new = hold_intervals(&[free(t0, 90), held(t0, 100, 400)]);
        assert_eq!(overlaps(&[("gw-a", old), ("gw-b", new)]), []);
    }

    #[test]
    fn overlaps_are_found_between_every_pair_and_every_stretch() {
        let t0 = Instant::now();
        let a = vec![hold(t0, 0, 10), hold(t0, 20, 30), hold(t0, 40, 50)];
        let b = vec![hold(t0, 10, 20), hold(t0, 25, 45)];
        let c = vec![hold(t0, 49, 60)];
        let found = overlaps(&[("a", a), ("b", b), ("c", c)]);
        let brief: Vec<(&str, &str, Instant, Instant)> = found
            .iter()
            .map(|o| (o.nodes.0, o.nodes.1, o.from, o.to))
            .collect();
        assert_eq!(
            brief,
            [
                ("a", "b", at(t0, 25), at(t0, 30)),
                ("a", "b", at(t0, 40), at(t0, 45)),
                ("a", "c", at(t0, 49), at(t0, 50)),
            ]
        );
    }
}
