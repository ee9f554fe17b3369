//! A real three-node havip cluster on loopback for integration tests: three `havip run
//! --observe-only` processes (gw-a, gw-b, witness), each on its own loopback address
//! 127.0.N.11-13 so that nftables can cut pairs apart, a split-brain watcher that polls
//! every node's holdings every 10 ms, and helpers to kill, freeze, restart and partition
//! nodes. Everything is torn down in Drop, also when a test fails.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use havip::control::protocol::{Request, Response, StatusReport};

mod host;
mod slow_disk;
use havip::control::socket;
pub use host::require_root;
// Not every binary that includes this module makes a slow disk.
#[allow(unused_imports)]
pub use slow_disk::SlowDisk;

pub const NODES: [&str; 3] = ["gw-a", "gw-b", "witness"];
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
    pub nodes: BTreeMap<&'static str, Node>,
    watcher: Option<Watcher>,
    nft_table: Option<String>,
}

pub fn write_config(dir: &Path, net: u8, name: &str, key: &Path, options: &Options) -> PathBuf {
    let addr = |n: &str| {
        format!(
            "127.0.{net}.{}",
            11 + NODES.iter().position(|x| *x == n).unwrap_or(0)
        )
    };
    let peers: String = NODES
        .iter()
        .map(|n| {
            format!(
                "[[cluster.peers]]\nname = \"{n}\"\naddress = \"{}:7400\"\n",
                addr(n)
            )
        })
        .collect();
    let groups = match name {
        "witness" => "[[vip_group]]\nname = \"crm\"\n".to_string(),
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
    let role = if name == "witness" {
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
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("cluster.key");
        keygen(&key);
        let mut nodes = BTreeMap::new();
        for name in NODES {
            let config = write_config(dir.path(), net, name, &key, &options);
            let node = Node {
                name,
                addr: format!(
                    "127.0.{net}.{}",
                    11 + NODES.iter().position(|x| *x == name).unwrap_or(0)
                ),
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
            nodes,
            watcher: None,
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
        cluster.watcher = Some(Watcher::start(sockets));
        cluster
    }

    pub fn spawn(&mut self, name: &str) {
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
                std::env::var("HAVIP_TEST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
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

    /// SIGTERM and wait (bounded) for the exit status.
    pub fn stop(&mut self, name: &str, limit: Duration) -> Option<std::process::ExitStatus> {
        self.signal(name, "TERM");
        let mut child = self.nodes.get_mut(name).and_then(|n| n.child.take())?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
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

    /// Waits until `leader` alone holds and the witness has applied every node's facts: only
    /// then do all three nodes run Raft. A fault injected earlier can find the witness still
    /// sitting out its start-up lease, and a leader left with no quorum rightly releases.
    pub fn wait_formed(&self, leader: &str) -> StatusReport {
        self.wait_holder(leader, Duration::from_secs(15));
        self.wait_reported("witness")
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

    pub fn holders(&self) -> Vec<&'static str> {
        self.watcher
            .as_ref()
            .map(|w| w.current())
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

    /// Fails the test unless `name` held, alone, in every poll since `since` in which it
    /// answered (a poll it did not answer within 50 ms proves nothing either way; a
    /// loaded test machine makes a few of those).
    pub fn assert_sole_holder_since(&self, name: &str, since: Instant) {
        let samples = self
            .watcher
            .as_ref()
            .map(|w| w.samples_since(since))
            .unwrap_or_default();
        assert!(samples.len() > 10, "too few samples: {}", samples.len());
        let answered: Vec<&Sample> = samples
            .iter()
            .filter(|s| !s.silent.contains(&name))
            .collect();
        assert!(
            answered.len() * 2 > samples.len(),
            "{name} mostly silent: {samples:?}"
        );
        for sample in answered {
            assert!(
                sample.holders == [name],
                "{name} was not the sole holder at {sample:?}\n{}",
                self.logs()
            );
        }
    }

    /// Fails the test if two nodes ever held the group at the same instant.
    pub fn assert_never_two_holders(&self) {
        if let Some(w) = &self.watcher {
            let overlaps = w.overlaps();
            assert!(
                overlaps.is_empty(),
                "split brain observed: {overlaps:?}\n{}",
                self.logs()
            );
            assert!(
                !w.witness_held(),
                "the witness held the VIP\n{}",
                self.logs()
            );
        }
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

/// Polls every node's holdings every 10 ms and records any instant at which two nodes
/// held the group. A node that does not answer (dead, frozen) is counted as not holding:
/// the frozen case is where the kernel address lifetime of the data plane takes over.
struct Watcher {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<WatchState>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct WatchState {
    current: Vec<&'static str>,
    overlaps: Vec<String>,
    witness_held: bool,
    /// Every poll: when, who held, who did not answer (bounded: the last 60 s at 10 ms).
    samples: std::collections::VecDeque<Sample>,
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub holders: Vec<&'static str>,
    pub silent: Vec<&'static str>,
}

impl Watcher {
    fn start(sockets: Vec<(&'static str, PathBuf)>) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(WatchState::default()));
        let thread = {
            let stop = stop.clone();
            let state = state.clone();
            std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let started = Instant::now();
                // Bounded: a test never runs for more than ten minutes.
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(600) {
                    let polls = sockets.iter().map(|(name, path)| async move {
                        let held =
                            socket::call(path, &Request::Holdings, Duration::from_millis(50)).await;
                        match held {
                            Ok(Response::Holdings { groups }) => {
                                (*name, Some(groups.iter().any(|g| g == GROUP)))
                            }
                            _ => (*name, None),
                        }
                    });
                    let answers = runtime.block_on(futures_util::future::join_all(polls));
                    let holders: Vec<&'static str> = answers
                        .iter()
                        .filter(|(_, held)| *held == Some(true))
                        .map(|(n, _)| *n)
                        .collect();
                    let silent: Vec<&'static str> = answers
                        .iter()
                        .filter(|(_, held)| held.is_none())
                        .map(|(n, _)| *n)
                        .collect();
                    if let Ok(mut st) = state.lock() {
                        if holders.len() > 1 {
                            st.overlaps
                                .push(format!("{:?} at {:?}", holders, started.elapsed()));
                        }
                        if holders.contains(&"witness") {
                            st.witness_held = true;
                        }
                        st.samples.push_back(Sample {
                            at: Instant::now(),
                            holders: holders.clone(),
                            silent,
                        });
                        while st.samples.len() > 6000 {
                            st.samples.pop_front();
                        }
                        st.current = holders;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        };
        Watcher {
            stop,
            state,
            thread: Some(thread),
        }
    }

    fn current(&self) -> Vec<&'static str> {
        self.state
            .lock()
            .map(|s| s.current.clone())
            .unwrap_or_default()
    }

    fn overlaps(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.overlaps.clone())
            .unwrap_or_default()
    }

    fn samples_since(&self, since: Instant) -> Vec<Sample> {
        self.state
            .lock()
            .map(|s| {
                s.samples
                    .iter()
                    .filter(|x| x.at >= since)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn witness_held(&self) -> bool {
        self.state.lock().map(|s| s.witness_held).unwrap_or(false)
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
