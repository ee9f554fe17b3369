//! The data-plane fixture of `tests/vip_netns.rs`: a small lab per test with only the
//! hosts it names, made by `scripts/lab.sh net` (the lab's own builder) under a namespace
//! prefix of its own: the hosts of `vagrant/nodes.conf` with their names and addresses
//! (gw-a .11, gw-b .12, witness .13, client .100 on 198.18.0.0/24 and 2001:db8::/64),
//! cabled to a bridge in its own namespace, veths made inside namespaces only, the host's
//! blackhole route for 198.18.0.0/24. `Lab::watch_addresses` is the lab's one watcher,
//! `scripts/vip-watch.py`, on the fixture's hosts. Every namespace and every process
//! started through `Lab` is removed in Drop (`lab.sh down`), also when a test fails. It
//! must never touch a host interface.
//!
//! Why not the lab itself (`lab.rs`, `lab.sh up`): the data-plane tests run in parallel in
//! one binary, each on a fresh network of one to three hosts, some with a second cable,
//! and with no provisioning and no daemon but the ones the test starts. The lab's names
//! are fixed (one lab at a time) and its `up` provisions six hosts and starts their
//! services, seconds per test. So the fixture is the same topology, built by the same
//! script, a few hosts at a time under unique names.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "lab.rs"]
mod lab;
/// The host's interface in every host namespace.
pub use lab::LAN;
pub use lab::address_of;
pub use lab::host::{require_root, sh};
pub use lab::watch::Overlap;
use lab::watch::Watch;

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// One host of the lab.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its name in vagrant/nodes.conf.
    pub name: String,
    pub netns: String,
    pub mac: String,
    pub ipv4: String,
    pub ipv6: String,
    /// The bridge port (in the bridge namespace) of this host's cable.
    pub port: String,
}

impl Host {
    /// `ip -n NETNS ARGS...`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "-n", &self.netns];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// The addresses on `lan0` as `ip -j addr` reports them.
    pub fn addresses(&self) -> Vec<Value> {
        let out = self.ip(&["-j", "addr", "show", "dev", LAN]);
        let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        parsed
            .get(0)
            .and_then(|l| l.get("addr_info"))
            .and_then(|a| a.as_array())
            .cloned()
            .unwrap_or_default()
    }

    /// The `ip -j addr` entry of `address` (without prefix) on `lan0`, if present.
    pub fn address(&self, address: &str) -> Option<Value> {
        self.addresses()
            .into_iter()
            .find(|a| a.get("local").and_then(|l| l.as_str()) == Some(address))
    }

    /// Whether `address` (without prefix) is on `interface`.
    pub fn address_on(&self, interface: &str, address: &str) -> bool {
        let out = self.ip(&["-j", "addr", "show", "dev", interface]);
        let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        parsed
            .get(0)
            .and_then(|l| l.get("addr_info"))
            .and_then(|a| a.as_array())
            .is_some_and(|a| {
                a.iter()
                    .any(|x| x.get("local").and_then(|l| l.as_str()) == Some(address))
            })
    }

    /// The link-layer address the neighbour table has for `address`, if any.
    pub fn neighbour(&self, address: &str) -> Option<String> {
        let out = self.ip(&["-j", "neigh", "show", "to", address, "dev", LAN]);
        let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        parsed
            .get(0)
            .and_then(|n| n.get("lladdr"))
            .and_then(|m| m.as_str())
            .map(str::to_string)
    }
}

pub struct Lab {
    /// The prefix of its namespaces' names (HAVIP_LAB_PREFIX of lab.sh).
    prefix: String,
    children: Vec<Child>,
}

impl Lab {
    /// A new lab with an empty bridge. Names are unique per process and per lab.
    pub fn new() -> Lab {
        Self::tagged("hv")
    }

    /// `new`, with namespace names starting with `tag` (two letters) instead of "hv", so
    /// that one suite's namespaces are told apart from another's (the HAProxy suite: "hx").
    pub fn tagged(tag: &str) -> Lab {
        let prefix = format!(
            "{tag}{}x{}-",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::SeqCst)
        );
        let lab = Lab {
            prefix,
            children: Vec::new(),
        };
        lab.lab_sh(&["net"]);
        lab
    }

    fn lab_sh(&self, args: &[&str]) {
        lab::host::run(
            lab::lab_command(&self.prefix, args),
            &format!("HAVIP_LAB_PREFIX={} scripts/lab.sh {args:?}", self.prefix),
        );
    }

    fn bridge(&self) -> String {
        format!("{}br", self.prefix)
    }

    /// Adds host `name` of vagrant/nodes.conf, with its addresses there.
    pub fn host(&mut self, name: &str) -> Host {
        self.lab_sh(&["net", name]);
        let netns = format!("{}{name}", self.prefix);
        let out = sh(&["ip", "-n", &netns, "-j", "addr", "show", "dev", LAN]);
        let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let link = parsed.get(0).cloned().unwrap_or(Value::Null);
        let mac = link
            .get("address")
            .and_then(|m| m.as_str())
            .unwrap_or_else(|| panic!("no MAC for {LAN} in {netns}"))
            .to_string();
        let ipv6 = link
            .get("addr_info")
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
            .find(|a| {
                a.get("family").and_then(|f| f.as_str()) == Some("inet6")
                    && a.get("scope").and_then(|s| s.as_str()) == Some("global")
            })
            .and_then(|a| a.get("local").and_then(|l| l.as_str()))
            .unwrap_or_else(|| panic!("no IPv6 address on {LAN} in {netns}"))
            .to_string();
        Host {
            name: name.to_string(),
            netns,
            mac,
            ipv4: lab::address_of(name),
            ipv6,
            port: lab::port(name),
        }
    }

    /// Gives `host` a second cable to the bridge, `name` inside the host (no address), and
    /// returns the bridge port's name: a VIP interface apart from the peers' network.
    pub fn cable(&mut self, host: &Host, name: &str) -> String {
        let port = format!("{}-{name}", host.port);
        let bridge = self.bridge();
        sh(&[
            "ip",
            "-n",
            &bridge,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            name,
            "netns",
            &host.netns,
        ]);
        sh(&[
            "ip", "-n", &bridge, "link", "set", &port, "master", "br0", "up",
        ]);
        sh(&["ip", "-n", &host.netns, "link", "set", name, "up"]);
        port
    }

    /// Runs `ip ARGS...` in the bridge namespace (to cut a host's cable).
    pub fn bridge_ip(&self, args: &[&str]) -> Output {
        let bridge = self.bridge();
        let mut full = vec!["ip", "-n", &bridge];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Starts `program ARGS` inside `host`'s namespace; killed in Drop at the latest.
    pub fn spawn(&mut self, host: &Host, program: &str, args: &[&str]) -> Proc {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &host.netns, program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} in {}: {e}", host.netns));
        let pid = child.id();
        let stdin = child.stdin.take();
        let lines = read_lines(child.stdout.take());
        let errors = read_lines(child.stderr.take());
        self.children.push(child);
        Proc {
            pid,
            stdin,
            lines,
            errors,
            errors_seen: RefCell::new(Vec::new()),
            seen: Vec::new(),
        }
    }

    /// Starts the lab's watcher (`scripts/vip-watch.py`, in the bridge's namespace) on
    /// `hosts` and each of `addresses` apart: every change of who has an address, in the
    /// order the kernel made them, across namespaces, so a hand-over between two reads
    /// cannot look like an overlap and an overlap between two reads cannot be missed.
    /// Returns once it is subscribed, seeded with the addresses the hosts already had.
    /// It stops in Drop at the latest.
    pub fn watch_addresses(&mut self, hosts: &[&Host], addresses: &[&str]) -> AddressWatch {
        let mut command = Command::new("python3");
        command
            .arg(lab::watch::VIP_WATCH)
            .args(["--netns", &self.bridge(), "--seconds", "600"]);
        for host in hosts {
            command.args(["--node", &format!("{}={}", host.name, host.netns)]);
        }
        // Each address is a group of its own: its holders are the hosts that have it.
        for address in addresses {
            command.args(["--vip", &format!("{address}={address}")]);
        }
        let watch = Watch::start(command, "scripts/vip-watch.py");
        {
            let w = watch.lock();
            assert!(
                w.ready && w.errors.is_empty(),
                "the watcher did not start: {:?} {:?}",
                w.errors,
                w.stderr
            );
        }
        AddressWatch { watch }
    }

    /// Waits for (reaps) the process `proc` and returns its exit code.
    pub fn wait(&mut self, proc: &Proc, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let index = self.children.iter().position(|c| c.id() == proc.pid)?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.children[index].try_wait() {
                // Already reaped by try_wait; wait() only returns the same status.
                let _ = self.children.remove(index).wait();
                // What it wrote before it exited, which its reader thread may still hold.
                proc.read_stderr_to_end(Duration::from_secs(1));
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// SIGKILLs `proc` (by its PID) and reaps it.
    pub fn kill(&mut self, proc: &Proc) {
        if let Some(index) = self.children.iter().position(|c| c.id() == proc.pid) {
            let mut child = self.children.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Kills what still runs in its namespaces and deletes them (the veths with them).
        lab::down_quietly(&self.prefix);
    }
}

fn read_lines<R: std::io::Read + Send + 'static>(from: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(from) = from {
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// A process started in a namespace: its JSON output lines, its stderr, its stdin.
pub struct Proc {
    pub pid: u32,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    errors: mpsc::Receiver<String>,
    /// Every stderr line received so far.
    errors_seen: RefCell<Vec<String>>,
    /// Every JSON line received so far.
    pub seen: Vec<Value>,
}

impl Proc {
    /// Waits (bounded) for a line whose "event" is `event`; panics with stderr if none.
    pub fn expect(&mut self, event: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                    self.seen.push(value.clone());
                    if value.get("event").and_then(|e| e.as_str()) == Some(event) {
                        return value;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no {event:?} within {timeout:?}; stderr: {}", self.stderr());
    }

    /// Every line until the process closes its output (bounded by `timeout`).
    pub fn collect(&mut self, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => self
                    .seen
                    .push(serde_json::from_str(&line).unwrap_or(Value::Null)),
                Err(_) => break,
            }
        }
        self.seen.clone()
    }

    /// The stdout lines written since the last call, as text (for a process that does not
    /// speak JSON, such as HAProxy logging to stdout).
    pub fn stdout_lines(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }

    /// The stdout lines not read yet, as text (a daemon's log, for a failure message);
    /// they are read here and not seen again.
    pub fn stdout_text(&self) -> String {
        self.lines.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// Everything the process wrote to stderr so far (all of it once `Lab::wait` saw it
    /// exit).
    pub fn stderr(&self) -> String {
        let mut seen = self.errors_seen.borrow_mut();
        seen.extend(self.errors.try_iter());
        seen.join("\n")
    }

    /// Reads stderr until the process closed it (bounded by `timeout`).
    fn read_stderr_to_end(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut seen = self.errors_seen.borrow_mut();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.errors.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
    }

    /// Closes stdin (the tool's "release now").
    pub fn close_stdin(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.flush();
        }
    }
}

/// A line's wall-clock time stamp.
pub fn unix_ns(value: &Value) -> u128 {
    value
        .get("unix_ns")
        .and_then(|t| t.as_str())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// The path of the `vip_tool` example, built on demand (`cargo test --test X` does not
/// build examples).
pub fn vip_tool() -> String {
    lab::host::example("vip_tool")
}

/// The lab's watcher on some hosts and addresses (`Lab::watch_addresses`).
pub struct AddressWatch {
    watch: Watch,
}

/// One address's history in a watch, as the watcher reported it.
#[derive(Debug, Clone, Default)]
pub struct AddressHistory {
    /// Every host that had the address at some point.
    pub holders_seen: BTreeSet<String>,
    /// How often a host got or lost it (a lifetime refresh is no change).
    pub changes: usize,
    /// Every time two or more hosts had it at once.
    pub overlaps: Vec<Overlap>,
}

impl AddressHistory {
    /// The time with two or more holders, by the watcher's clock (ms; one still open
    /// counts up to `now_ms`).
    pub fn overlap_ms(&self, now_ms: u64) -> u64 {
        self.overlaps.iter().map(|o| o.ms(now_ms)).sum()
    }
}

impl AddressWatch {
    /// The history of `address` up to now: who had it and every moment with two holders.
    /// Panics if the watcher reported an error (events may be lost) or did not catch up.
    pub fn history(&mut self, address: &str) -> AddressHistory {
        assert!(
            self.watch.sync(Duration::from_secs(5)),
            "the watcher did not catch up with the kernel's events within 5 s"
        );
        let w = self.watch.lock();
        assert!(
            w.errors.is_empty() && w.stderr.is_empty(),
            "the watcher failed: {:?} {:?}",
            w.errors,
            w.stderr
        );
        AddressHistory {
            holders_seen: w.holders_seen(address),
            changes: w.changes.iter().filter(|c| c.group == address).count(),
            overlaps: w
                .overlaps
                .iter()
                .filter(|o| o.group == address)
                .cloned()
                .collect(),
        }
    }
}
