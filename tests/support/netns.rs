//! The network-namespace lab for data-plane tests: a bridge in its own namespace and one
//! namespace per host, each joined to the bridge by a veth pair created *inside* the
//! namespaces (so no interface ever appears on the host), on 198.18.0.0/24 and
//! 2001:db8::/64. A host-side blackhole route for 198.18.0.0/24 keeps lab traffic from
//! ever being routed out of the machine. Every namespace and every process started
//! through `Lab::spawn` is removed in Drop, also when a test fails. It must never touch a
//! host interface.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "host.rs"]
mod host;
pub use host::{require_root, sh};

pub const LAB_PREFIX_V4: &str = "198.18.0.0/24";
/// The host's interface in every host namespace.
pub const LAN: &str = "lan0";

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// One host of the lab.
#[derive(Debug, Clone)]
pub struct Host {
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
    prefix: String,
    bridge: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    hosts: u32,
}

impl Lab {
    /// A new lab with an empty bridge. Names are unique per process and per lab.
    pub fn new() -> Lab {
        let prefix = format!(
            "hv{}x{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::SeqCst)
        );
        let bridge = format!("{prefix}br");
        // Never routed out of the machine, whatever a test gets wrong. At the metric
        // scripts/lab.sh uses, so a host bridge on the prefix (the Vagrant rig's) keeps
        // its connected route and a test never replaces it.
        sh(&[
            "ip",
            "route",
            "replace",
            "blackhole",
            LAB_PREFIX_V4,
            "metric",
            "4242",
        ]);
        let mut lab = Lab {
            prefix,
            bridge: bridge.clone(),
            namespaces: Vec::new(),
            children: Vec::new(),
            hosts: 0,
        };
        lab.add_netns(&bridge);
        sh(&["ip", "-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &bridge, "link", "set", "br0", "up"]);
        lab
    }

    fn add_netns(&mut self, name: &str) {
        sh(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_string());
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
        // Lab addresses are usable at once (no duplicate address detection delay).
        sh(&[
            "ip",
            "netns",
            "exec",
            name,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ]);
    }

    /// Adds a host `role` with .N / ::N on the lab prefix.
    pub fn host(&mut self, role: &str, n: u8) -> Host {
        self.hosts += 1;
        let netns = format!("{}{role}", self.prefix);
        self.add_netns(&netns);
        let port = format!("p{}", self.hosts);
        sh(&[
            "ip",
            "-n",
            &self.bridge,
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            LAN,
            "netns",
            &netns,
        ]);
        sh(&[
            "ip",
            "-n",
            &self.bridge,
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ]);
        let ipv4 = format!("198.18.0.{n}");
        let ipv6 = format!("2001:db8::{n:x}");
        sh(&[
            "ip",
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{ipv4}/24"),
            "dev",
            LAN,
        ]);
        sh(&[
            "ip",
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{ipv6}/64"),
            "dev",
            LAN,
            "nodad",
        ]);
        sh(&["ip", "-n", &netns, "link", "set", LAN, "up"]);
        let out = sh(&["ip", "-n", &netns, "-j", "link", "show", LAN]);
        let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let mac = parsed
            .get(0)
            .and_then(|l| l.get("address"))
            .and_then(|m| m.as_str())
            .unwrap_or_else(|| panic!("no MAC for {LAN} in {netns}"))
            .to_string();
        Host {
            netns,
            mac,
            ipv4,
            ipv6,
            port,
        }
    }

    /// Gives `host` a second cable to the bridge, `name` inside the host (no address), and
    /// returns the bridge port's name: a VIP interface apart from the peers' network.
    pub fn cable(&mut self, host: &Host, name: &str) -> String {
        self.hosts += 1;
        let port = format!("p{}", self.hosts);
        sh(&[
            "ip",
            "-n",
            &self.bridge,
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
            "ip",
            "-n",
            &self.bridge,
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ]);
        sh(&["ip", "-n", &host.netns, "link", "set", name, "up"]);
        port
    }

    /// Runs `ip ARGS...` in the bridge namespace (to cut a host's cable).
    pub fn bridge_ip(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "-n", &self.bridge];
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
            seen: Vec::new(),
        }
    }

    /// Waits for (reaps) the process `proc` and returns its exit code.
    pub fn wait(&mut self, proc: &Proc, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let index = self.children.iter().position(|c| c.id() == proc.pid)?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.children[index].try_wait() {
                // Already reaped by try_wait; wait() only returns the same status.
                let _ = self.children.remove(index).wait();
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
        // Deleting a namespace deletes the veth ends and the bridge inside it.
        for netns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", netns])
                .stderr(Stdio::null())
                .status();
        }
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

    pub fn stderr(&self) -> String {
        self.errors.try_iter().collect::<Vec<_>>().join("\n")
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
    host::example("vip_tool")
}
