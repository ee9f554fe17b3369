//! The network-namespace lab for data-plane tests: a bridge in its own namespace and one
//! namespace per host, each joined to the bridge by a veth pair created *inside* the
//! namespaces (so no interface ever appears on the host), on 198.18.0.0/24 and
//! 2001:db8::/64. A host-side blackhole route for 198.18.0.0/24 keeps lab traffic from
//! ever being routed out of the machine. `Lab::watch_addresses` follows the hosts'
//! address changes in the kernel's order (one `ip monitor all-nsid`), so a test can prove
//! that no address was ever on two hosts at once. Every namespace and every process
//! started through `Lab` is removed in Drop, also when a test fails. It must never touch a
//! host interface.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
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
            errors_seen: RefCell::new(Vec::new()),
            seen: Vec::new(),
        }
    }

    /// Starts following every address change of `hosts` (name, host): one `ip -ts monitor
    /// all-nsid address` in a namespace of its own that has an nsid for each host. One
    /// netlink socket receives them all, so the events arrive in the order the kernel made
    /// the changes (every address change holds the RTNL lock), across namespaces; a
    /// hand-over between two reads cannot look like an overlap and an overlap between two
    /// reads cannot be missed. Returns once the subscription is live, with the addresses
    /// the hosts already had as the starting state. The monitor is killed in Drop.
    pub fn watch_addresses(&mut self, hosts: &[(&str, &Host)]) -> AddressWatch {
        let netns = format!("{}watch", self.prefix);
        self.add_netns(&netns);
        let mut names = BTreeMap::from([("current".to_string(), WATCH_SELF.to_string())]);
        for (index, (name, host)) in hosts.iter().enumerate() {
            let nsid = (index + 1).to_string();
            sh(&["ip", "-n", &netns, "netns", "set", &host.netns, &nsid]);
            names.insert(nsid, name.to_string());
        }
        let mut child = Command::new("ip")
            .args(["-ts", "-n", &netns, "monitor", "all-nsid", "address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ip monitor in {netns}: {e}"));
        let events = Arc::new(Mutex::new(Vec::new()));
        let unparsed = Arc::new(Mutex::new(Vec::new()));
        if let Some(stdout) = child.stdout.take() {
            let (events, unparsed) = (events.clone(), unparsed.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    // Continuation lines (lifetimes) start with blanks.
                    if !line.starts_with('[') {
                        continue;
                    }
                    match AddressEvent::parse(&line, &names) {
                        Some(event) => lock(&events).push(event),
                        None => lock(&unparsed).push(line),
                    }
                }
            });
        }
        let errors = read_lines(child.stderr.take());
        self.children.push(child);
        let mut watch = AddressWatch {
            netns,
            events,
            unparsed,
            errors,
            initial: BTreeSet::new(),
            sentinel_on: false,
        };
        watch.sync();
        // Read after the subscription is live: a change racing this read is also an event.
        let mut initial = BTreeSet::new();
        for (name, host) in hosts {
            let out = host.ip(&["-j", "addr", "show"]);
            let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            for link in parsed.as_array().into_iter().flatten() {
                let infos = link.get("addr_info").and_then(|a| a.as_array());
                for info in infos.into_iter().flatten() {
                    if let Some(local) = info.get("local").and_then(|l| l.as_str()) {
                        initial.insert((name.to_string(), local.to_string()));
                    }
                }
            }
        }
        watch.initial = initial;
        watch
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
    host::example("vip_tool")
}

/// What the address watch calls its own namespace's events (its sentinel).
const WATCH_SELF: &str = "(watch)";
/// The watch namespace's own address, toggled to prove that every earlier event was read.
const SENTINEL: &str = "198.18.1.1";

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One address added (or refreshed) or deleted on a host, as `ip -ts monitor` printed it.
#[derive(Debug, Clone)]
pub struct AddressEvent {
    /// When `ip` read the event (local wall clock, microseconds): the order of the events
    /// is the kernel's, their times are only as exact as the monitor's scheduling.
    pub at_us: i64,
    pub host: String,
    /// Without the prefix length.
    pub address: String,
    pub present: bool,
    pub line: String,
}

impl AddressEvent {
    /// `[2026-12-02T17:44:09.188420] [nsid 1]Deleted 3: if3    inet 198.18.0.50/24 ...`
    /// (a device of another namespace prints as ifN, so only the address is matched).
    pub fn parse(line: &str, names: &BTreeMap<String, String>) -> Option<AddressEvent> {
        let (stamp, rest) = line.strip_prefix('[')?.split_once("] [nsid ")?;
        let (nsid, rest) = rest.split_once(']')?;
        let rest = rest.trim_start();
        let present = !rest.starts_with("Deleted");
        let mut words = rest.split_whitespace();
        words.find(|w| *w == "inet" || *w == "inet6")?;
        let address = words.next()?.split('/').next()?.to_string();
        Some(AddressEvent {
            at_us: local_time_us(stamp)?,
            host: names.get(nsid)?.clone(),
            address,
            present,
            line: line.to_string(),
        })
    }
}

/// `2026-12-02T17:44:09.188420` as microseconds since 1970 (local time taken as UTC: only
/// differences are used).
pub fn local_time_us(stamp: &str) -> Option<i64> {
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (hms, micros) = time.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (parts.next()??, parts.next()??, parts.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + micros.parse::<i64>().ok()?)
}

/// The address changes of some hosts, in the kernel's order (`Lab::watch_addresses`).
pub struct AddressWatch {
    netns: String,
    events: Arc<Mutex<Vec<AddressEvent>>>,
    /// Event lines the parser did not understand: a watch that cannot read its input
    /// must fail, not report "no overlap".
    unparsed: Arc<Mutex<Vec<String>>>,
    errors: mpsc::Receiver<String>,
    /// (host, address) present when the watch started.
    initial: BTreeSet<(String, String)>,
    sentinel_on: bool,
}

/// A time during which two or more hosts had one address.
#[derive(Debug, Clone)]
pub struct Overlap {
    pub holders: BTreeSet<String>,
    pub from_us: i64,
    /// None: still overlapping at the last event.
    pub until_us: Option<i64>,
    /// The event lines from the one that began it to the one that ended it.
    pub lines: Vec<String>,
}

/// One address's history in a watch.
#[derive(Debug, Clone, Default)]
pub struct AddressHistory {
    /// Every host that had the address at some point.
    pub holders_seen: BTreeSet<String>,
    /// Events about the address (adds, refreshes, deletions).
    pub events: usize,
    pub overlaps: Vec<Overlap>,
}

impl AddressHistory {
    /// The time with two or more holders, by the monitor's clock (an overlap still open at
    /// the end counts to the last event).
    pub fn overlap_us(&self) -> i64 {
        self.overlaps
            .iter()
            .map(|o| o.until_us.unwrap_or(o.from_us) - o.from_us)
            .sum()
    }
}

impl AddressWatch {
    /// Toggles the sentinel address in the watch's own namespace and waits for its event:
    /// every change made before this call has then been read. Toggled again every 100 ms
    /// while none arrives: a monitor that has just started may not have subscribed yet.
    pub fn sync(&mut self) {
        let seen_before = self.sentinel_events();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.sentinel_events() == seen_before {
            assert!(
                Instant::now() < deadline,
                "ip monitor in {} did not report its own address change within 5 s: {}",
                self.netns,
                self.errors.try_iter().collect::<Vec<_>>().join("\n")
            );
            let verb = if self.sentinel_on { "del" } else { "add" };
            sh(&[
                "ip",
                "-n",
                &self.netns,
                "addr",
                verb,
                &format!("{SENTINEL}/32"),
                "dev",
                "lo",
            ]);
            self.sentinel_on = !self.sentinel_on;
            let toggled = Instant::now();
            while self.sentinel_events() == seen_before
                && toggled.elapsed() < Duration::from_millis(100)
            {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }

    fn sentinel_events(&self) -> usize {
        lock(&self.events)
            .iter()
            .filter(|e| e.host == WATCH_SELF && e.address == SENTINEL)
            .count()
    }

    /// The history of `address` up to now: who had it and every moment with two holders.
    /// Panics if the monitor reported an error or printed an event it could not parse.
    pub fn history(&mut self, address: &str) -> AddressHistory {
        self.sync();
        // `ip monitor` looks up an nsid for every name in /var/run/netns; a namespace that
        // another test is adding or deleting at that moment answers "Peer netns reference
        // is invalid", which concerns that lookup, not the event stream. Anything else
        // (a lost event: "No buffer space available") fails the watch.
        let errors: Vec<String> = self
            .errors
            .try_iter()
            .filter(|e| !e.contains("Peer netns reference is invalid"))
            .collect();
        assert!(errors.is_empty(), "ip monitor failed: {errors:?}");
        let unparsed = lock(&self.unparsed).clone();
        assert!(unparsed.is_empty(), "unparsed monitor lines: {unparsed:#?}");
        let initial: BTreeSet<String> = self
            .initial
            .iter()
            .filter(|(_, a)| a == address)
            .map(|(h, _)| h.clone())
            .collect();
        address_history(initial, &lock(&self.events), address)
    }
}

/// The history of `address` from the hosts that had it at the start (`initial`) and the
/// events in the kernel's order: an add makes a host a holder (a refresh changes nothing),
/// a deletion ends it; any moment with two or more holders is an overlap.
pub fn address_history(
    initial: BTreeSet<String>,
    events: &[AddressEvent],
    address: &str,
) -> AddressHistory {
    let mut holders = initial;
    let mut history = AddressHistory {
        holders_seen: holders.clone(),
        ..AddressHistory::default()
    };
    let mut open: Option<Overlap> = None;
    for event in events.iter().filter(|e| e.address == address) {
        history.events += 1;
        if event.present {
            holders.insert(event.host.clone());
            history.holders_seen.insert(event.host.clone());
        } else {
            holders.remove(&event.host);
        }
        if let Some(overlap) = &mut open {
            overlap.lines.push(event.line.clone());
            overlap.holders.extend(holders.iter().cloned());
            if holders.len() < 2 {
                overlap.until_us = Some(event.at_us);
                history.overlaps.extend(open.take());
            }
        } else if holders.len() >= 2 {
            open = Some(Overlap {
                holders: holders.clone(),
                from_us: event.at_us,
                until_us: None,
                lines: vec![event.line.clone()],
            });
        }
    }
    history.overlaps.extend(open);
    history
}
