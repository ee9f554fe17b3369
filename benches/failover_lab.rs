//! Failover on the wire, havip against keepalived, in the network-namespace lab (as root).
//!
//! Topology (tests/support/netns.rs): a bridge namespace; gw-a .11, gw-b .12, witness .13
//! and client .100 on 198.18.0.0/24; VIP 198.18.0.50/24 on the gateways' `lan0`. Each
//! implementation gets a fresh lab with the same topology, one after the other, in one run
//! of this binary:
//! - havip: the real daemons (gw-a priority 150, gw-b 100, a witness; failback after 2 s);
//!   the `havip` implementation writes no `[timers]`, so the daemons run on their own
//!   defaults, and every label shows the timers `havip::config` reads from the file the
//!   bench wrote (never a literal of the bench's);
//! - keepalived (Debian's 2.2.7): VRRPv3, unicast peers, priorities 150/100, no witness,
//!   `advert_int 1` and `advert_int 0.1`.
//!
//! What is measured:
//! - a UDP responder thread per gateway namespace, bound to the VIP with IP_FREEBIND (so
//!   it exists before the VIP does), answers with its gateway's name: it stands for the
//!   service behind the VIP and survives the HA daemon being killed or frozen;
//! - a probe thread in the client namespace sends one datagram to the VIP every 10 ms and
//!   records every answer and who sent it. The client's neighbour cache is never flushed:
//!   a stale ARP entry is part of what a failover costs. Outage = the longest gap between
//!   two answers in the fault's window, minus the 10 ms probe interval (0 = no probe lost);
//! - who holds the VIP comes from `scripts/vip-watch.py`, run in the bridge namespace: one
//!   `ip monitor all-nsid address` sees the address events of both gateways in the
//!   kernel's order, so a hand-over never looks like two holders and no overlap, however
//!   short, is missed. Two holders = the watcher's overlaps inside a run's window: how many
//!   (one of 0 ms counts) and how long together.
//!
//! Probe answers are stamped on this process's monotonic clock; the watcher's events carry
//! `ip -ts` wall-clock times, mapped onto that clock once at the start (ms resolution).
//! A run that fails (no takeover, no failback within its limit) is kept: its outage counts
//! as a lower bound (">= N" where it could move a figure) and its reason is in the notes.
//!
//! Run as root: `scripts/bench-failover.sh` (or `cargo bench --bench failover_lab`).
//! Env: RUNS (default 10), IMPLS (comma list of havip, havip-tuned, havip-fast, ka-1,
//! ka-0.1), FAULTS (comma list of hard, kill, sigstop, stop, partition, manual), IDLE_SECS
//! (default 30; 0 skips the idle CPU/RSS measurement). Results go to
//! docs/failover-bench.md.

#[path = "../tests/support/netns.rs"]
mod netns;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use havip::config::{Config, Timers, format_duration};
use netns::{Host, LAN, Lab, Proc, require_root, sh};
use socket2::{Domain, Protocol, Socket, Type};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 50);
const VIP_CIDR: &str = "198.18.0.50/24";
const PORT: u16 = 9999;
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// The split-brain watcher shared with the lab e2e suite and the Vagrant rig.
const VIP_WATCH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/vip-watch.py");
/// How long the gateway partition lasts before it heals.
const PARTITION: Duration = Duration::from_secs(5);
/// How long gw-b may take to answer after a fault before the run counts as failed.
const TAKEOVER: Duration = Duration::from_secs(15);
/// gw-a must hold alone and answer alone this long before a fault is injected.
const STEADY: Duration = Duration::from_millis(1500);
const GW_NAMES: [&str; 2] = ["gw-a", "gw-b"];
const A: usize = 0;
const B: usize = 1;

// ---- Configuration --------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    Hard,
    Kill,
    Sigstop,
    Stop,
    Partition,
    Manual,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::Hard,
        Fault::Kill,
        Fault::Sigstop,
        Fault::Stop,
        Fault::Partition,
        Fault::Manual,
    ];

    fn key(self) -> &'static str {
        match self {
            Fault::Hard => "hard",
            Fault::Kill => "kill",
            Fault::Sigstop => "sigstop",
            Fault::Stop => "stop",
            Fault::Partition => "partition",
            Fault::Manual => "manual",
        }
    }

    /// The row of the fault itself (a run that could not start is counted there).
    fn row(self) -> &'static str {
        match self {
            Fault::Hard => "hard failure (lan0 down)",
            Fault::Kill => "daemon SIGKILL",
            Fault::Sigstop => "daemon SIGSTOP (SIGCONT after its VIP is gone)",
            Fault::Stop => "graceful stop (SIGTERM)",
            Fault::Partition => "gateway partition (5 s, then healed)",
            Fault::Manual => "manual failover (--to gw-b)",
        }
    }
}

#[derive(Clone)]
enum Kind {
    /// `timers`: None writes no `[timers]`, so the daemons run on their own defaults.
    Havip {
        timers: Option<Timers>,
    },
    Keepalived {
        advert_int: &'static str,
    },
}

#[derive(Clone)]
struct Implementation {
    key: &'static str,
    label: String,
    kind: Kind,
    faults: &'static [Fault],
}

fn implementations() -> Vec<Implementation> {
    use Fault::*;
    let timers = |heartbeat: u64, min: u64, max: u64| {
        Some(Timers {
            heartbeat: Duration::from_millis(heartbeat),
            election_timeout_min: Duration::from_millis(min),
            election_timeout_max: Duration::from_millis(max),
        })
    };
    let havip = |key, name, timers: Option<Timers>, faults| Implementation {
        key,
        label: havip_label(name, timers.as_ref()),
        kind: Kind::Havip { timers },
        faults,
    };
    let keepalived = |key, advert_int| Implementation {
        key,
        label: format!("keepalived (advert_int {advert_int})"),
        kind: Kind::Keepalived { advert_int },
        faults: &[Hard, Kill, Sigstop, Stop, Partition],
    };
    vec![
        havip(
            "havip",
            "havip",
            None,
            &[Hard, Kill, Sigstop, Stop, Partition, Manual],
        ),
        havip("havip-tuned", "havip tuned", timers(20, 60, 120), &[Hard]),
        // The most aggressive timers the config accepts at a 10 ms heartbeat, give or take
        // (the heartbeat must be at most a third of the minimum election timeout and half
        // the hold lease, which is that minimum less 20 ms at these values).
        havip("havip-fast", "havip fast", timers(10, 45, 90), &[Hard]),
        keepalived("ka-1", "1"),
        keepalived("ka-0.1", "0.1"),
    ]
}

/// gw-a's configuration as the daemon reads it (`havip::config`, the daemon's own parser
/// and defaults) from the text this bench writes with `timers`.
fn effective_config(timers: Option<&Timers>) -> Config {
    let text = havip_config_text(A, timers, Path::new("/bench"), Path::new("/bench/key"));
    Config::from_str(Path::new("(failover_lab gw-a)"), &text)
        .unwrap_or_else(|e| panic!("the bench's havip config is refused:\n{e}\n{text}"))
}

/// "havip (defaults: hb 128ms, election 400ms..500ms)", from the effective configuration.
fn havip_label(name: &str, timers: Option<&Timers>) -> String {
    let t = effective_config(timers).timers;
    format!(
        "{name} ({}hb {}, election {}..{})",
        if timers.is_none() { "defaults: " } else { "" },
        format_duration(t.heartbeat),
        format_duration(t.election_timeout_min),
        format_duration(t.election_timeout_max)
    )
}

/// Node `node`'s havip.toml (files under `dir`); no `[timers]` when `timers` is None.
fn havip_config_text(node: usize, timers: Option<&Timers>, dir: &Path, key: &Path) -> String {
    let name = NODE_NAMES[node];
    let peers: String = (0..3)
        .map(|n| {
            format!(
                "[[cluster.peers]]\nname = \"{}\"\naddress = \"198.18.0.{}:7400\"\n",
                NODE_NAMES[n],
                11 + n
            )
        })
        .collect();
    let group = match node {
        2 => "[[vip_group]]\nname = \"crm\"\n".to_string(),
        _ => format!(
            "[[vip_group]]\nname = \"crm\"\ninterface = \"{LAN}\"\naddresses = [\"{VIP_CIDR}\"]\npriority = {}\nfailback = true\nfailback_delay = \"2s\"\n",
            [150, 100][node]
        ),
    };
    let timers = timers.map_or(String::new(), |t| {
        format!(
            "[timers]\nheartbeat = \"{}\"\nelection_timeout = \"{}..{}\"\n\n",
            format_duration(t.heartbeat),
            format_duration(t.election_timeout_min),
            format_duration(t.election_timeout_max)
        )
    });
    format!(
        "[node]\nname = \"{name}\"\nrole = \"{role}\"\ndata_dir = \"{data}\"\n\n[cluster]\nlisten = \"198.18.0.{ip}:7400\"\nkey_file = \"{key}\"\n{peers}\n{timers}[control]\nsocket = \"{sock}\"\n\n{group}",
        role = if node == 2 { "witness" } else { "gateway" },
        data = dir.join("data").display(),
        ip = 11 + node,
        key = key.display(),
        sock = dir.join("havip.sock").display(),
    )
}

const NODE_NAMES: [&str; 3] = ["gw-a", "gw-b", "witness"];

struct Settings {
    runs: usize,
    impls: Option<Vec<String>>,
    faults: Option<Vec<String>>,
    idle: Duration,
}

fn list_env(name: &str) -> Option<Vec<String>> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
}

fn settings() -> Settings {
    let number = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number"))
            })
            .unwrap_or(default)
    };
    Settings {
        runs: number("RUNS", 10) as usize,
        impls: list_env("IMPLS"),
        faults: list_env("FAULTS"),
        idle: Duration::from_secs(number("IDLE_SECS", 30)),
    }
}

// ---- Threads inside the namespaces ---------------------------------------------------------

/// Moves the calling thread (only it: network namespaces are per thread) into `netns`.
fn enter_netns(netns: &str) {
    let file = open_netns(netns);
    // SAFETY: setns on a valid namespace fd only changes this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert!(
        rc == 0,
        "setns into {netns}: {}",
        std::io::Error::last_os_error()
    );
}

fn open_netns(netns: &str) -> File {
    File::open(format!("/run/netns/{netns}"))
        .unwrap_or_else(|e| panic!("cannot open network namespace {netns}: {e}"))
}

/// Two holders inside a window: how many overlaps (one of 0 ms counts) and how long.
#[derive(Clone, Copy, Default)]
struct TwoHolders {
    overlaps: usize,
    total: Duration,
}

/// Everything the threads and the watcher saw, on this process's monotonic clock.
struct Record {
    /// (when, gateway index) of every answer the client received.
    answers: Mutex<Vec<(Instant, usize)>>,
    /// (when, does gw-a hold, does gw-b hold) after every hold/release the watcher
    /// reported, in the kernel's order; the first entries are the state it started from.
    holders: Mutex<Vec<(Instant, [bool; 2])>>,
    /// Every overlap the watcher reported (it reports one when it ends): (from, to).
    overlaps: Mutex<Vec<(Instant, Instant)>>,
    /// The watcher's `error` lines and anything else it said that was not an event: the
    /// holders may be incomplete from then on.
    watch_errors: Mutex<Vec<String>>,
    /// The watcher's `summary` line, once it ended.
    watch_summary: Mutex<Option<String>>,
    /// The watcher is subscribed (it printed `ready`) and has not ended.
    watching: AtomicBool,
    stop: AtomicBool,
    /// This clock's `Instant` and the wall clock (us since 1970) taken together: maps the
    /// watcher's `ip -ts` times onto the monotonic clock.
    epoch: (Instant, i128),
}

impl Record {
    fn new() -> Record {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i128);
        Record {
            answers: Mutex::default(),
            holders: Mutex::default(),
            overlaps: Mutex::default(),
            watch_errors: Mutex::default(),
            watch_summary: Mutex::default(),
            watching: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            epoch: (Instant::now(), wall),
        }
    }

    fn answers(&self) -> Vec<(Instant, usize)> {
        self.answers.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn holders(&self) -> Vec<(Instant, [bool; 2])> {
        self.holders.lock().map(|h| h.clone()).unwrap_or_default()
    }

    fn latest_holders(&self) -> [bool; 2] {
        self.holders
            .lock()
            .ok()
            .and_then(|h| h.last().map(|s| s.1))
            .unwrap_or([false; 2])
    }

    /// When `gw` first did not hold the VIP after `after`, per the watcher.
    fn released(&self, gw: usize, after: Instant) -> Option<Instant> {
        self.holders()
            .into_iter()
            .find(|(at, held)| *at > after && !held[gw])
            .map(|(at, _)| at)
    }

    /// A wall-clock time of the watcher (ms since 1970) on this process's clock.
    fn instant(&self, unix_ms: i128) -> Instant {
        let (instant, wall_us) = self.epoch;
        let offset = unix_ms * 1000 - wall_us;
        let magnitude = Duration::from_micros(offset.unsigned_abs() as u64);
        if offset >= 0 {
            instant + magnitude
        } else {
            instant.checked_sub(magnitude).unwrap_or(instant)
        }
    }

    /// One line of vip-watch.py's output.
    fn watched(&self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let time = |i: usize| words.get(i).and_then(|w| w.parse::<i128>().ok());
        let gw = |name: Option<&&str>| GW_NAMES.iter().position(|n| Some(n) == name);
        match (words.first().copied(), words.len()) {
            (Some("ready"), 2) => self.watching.store(true, Ordering::SeqCst),
            (Some(what @ ("hold" | "release")), 4) => {
                if let (Some(at), Some(gw)) = (time(1), gw(words.get(3))) {
                    let at = self.instant(at);
                    if let Ok(mut holders) = self.holders.lock() {
                        let mut now = holders.last().map_or([false; 2], |h| h.1);
                        now[gw] = what == "hold";
                        holders.push((at, now));
                    }
                    return;
                }
                self.watch_error(format!("unreadable watcher line: {line}"));
            }
            (Some("overlap"), 5) => match (time(2), time(3)) {
                (Some(from), Some(to)) => {
                    let span = (self.instant(from), self.instant(to));
                    if let Ok(mut overlaps) = self.overlaps.lock() {
                        overlaps.push(span);
                    }
                }
                _ => self.watch_error(format!("unreadable watcher line: {line}")),
            },
            (Some("summary"), _) => {
                if let Ok(mut summary) = self.watch_summary.lock() {
                    *summary = Some(line.to_string());
                }
            }
            _ => self.watch_error(line.to_string()),
        }
    }

    fn watch_error(&self, text: String) {
        eprintln!("  watcher: {text}");
        if let Ok(mut errors) = self.watch_errors.lock() {
            errors.push(text);
        }
    }

    /// The watcher's overlaps that began in [from, to), each with its whole duration: an
    /// overlap belongs to the phase of a run in which it began (a killed keepalived's VIP
    /// beside gw-b's to the SIGKILL row, although it lasts past the restart), and none is
    /// counted in two rows. One still open (two hold now) counts up to now.
    fn two_holders(&self, from: Instant, to: Instant) -> TwoHolders {
        let mut spans = self.overlaps.lock().map(|o| o.clone()).unwrap_or_default();
        let holders = self.holders();
        if holders.last().is_some_and(|h| h.1 == [true, true]) {
            let now = Instant::now();
            let open = holders
                .iter()
                .rev()
                .take_while(|h| h.1 == [true, true])
                .last()
                .map_or(now, |h| h.0);
            spans.push((open, now.max(open)));
        }
        let mut two = TwoHolders::default();
        for (start, end) in spans.into_iter().filter(|o| o.0 >= from && o.0 < to) {
            two.overlaps += 1;
            two.total += end - start;
        }
        two
    }

    fn answered_by_since(&self, gw: usize, since: Instant) -> bool {
        self.answers.lock().is_ok_and(|a| {
            a.iter()
                .rev()
                .take_while(|x| x.0 >= since)
                .any(|x| x.1 == gw)
        })
    }

    /// `gw` alone held the VIP and alone answered since `window`, answers flow, and the
    /// watcher watches.
    fn steady_on(&self, gw: usize, window: Instant) -> bool {
        let now = Instant::now();
        let answers = self.answers();
        let recent: Vec<_> = answers.iter().filter(|a| a.0 >= window).collect();
        let flowing = answers
            .last()
            .is_some_and(|a| a.1 == gw && now - a.0 < Duration::from_millis(100));
        let alone = self.holders.lock().is_ok_and(|h| {
            h.last()
                .is_some_and(|(at, held)| *at <= window && held[gw] && !held[1 - gw])
        });
        self.watching.load(Ordering::SeqCst)
            && flowing
            && alone
            && recent.len() > 10
            && recent.iter().all(|a| a.1 == gw)
    }
}

/// Answers every datagram to VIP:PORT in `host`'s namespace with the gateway's index.
fn responder(host: &Host, gw: usize, record: Arc<Record>) -> JoinHandle<()> {
    let netns = host.netns.clone();
    std::thread::spawn(move || {
        enter_netns(&netns);
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .unwrap_or_else(|e| panic!("responder socket in {netns}: {e}"));
        // The VIP is not on this host yet (or ever, on a backup): bind it anyway.
        socket
            .set_freebind_v4(true)
            .unwrap_or_else(|e| panic!("IP_FREEBIND in {netns}: {e}"));
        let address = SocketAddr::V4(SocketAddrV4::new(VIP, PORT));
        socket
            .bind(&address.into())
            .unwrap_or_else(|e| panic!("responder bind {address} in {netns}: {e}"));
        let socket: UdpSocket = socket.into();
        // Bounded reads so that the thread notices the end of the run.
        let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = [0u8; 64];
        while !record.stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&[gw as u8], from);
            }
        }
    })
}

/// Sends a datagram to the VIP every PROBE_EVERY from the client and records each answer.
fn probe(client: &Host, record: Arc<Record>) -> JoinHandle<()> {
    let netns = client.netns.clone();
    std::thread::spawn(move || {
        enter_netns(&netns);
        let socket =
            UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("probe socket in {netns}: {e}"));
        let target = SocketAddrV4::new(VIP, PORT);
        let mut next = Instant::now();
        let mut buf = [0u8; 16];
        while !record.stop.load(Ordering::Relaxed) {
            // Errors (no ARP answer yet, ICMP unreachable) are just a lost probe.
            let _ = socket.send_to(b"?", target);
            next += PROBE_EVERY;
            // Collect answers until the next tick; a late answer still counts when it comes.
            while let Some(left) = next.checked_duration_since(Instant::now()) {
                let _ = socket.set_read_timeout(Some(left.max(Duration::from_micros(100))));
                if let Ok((1, _)) = socket.recv_from(&mut buf) {
                    let gw = usize::from(buf[0]).min(1);
                    if let Ok(mut answers) = record.answers.lock() {
                        answers.push((Instant::now(), gw));
                    }
                }
            }
        }
    })
}

/// `scripts/vip-watch.py` in the bridge namespace, watching both gateways: its lines go
/// to the record. It stops when its stdin closes (`stop`, or this process dying).
struct Watch {
    child: Child,
    stdin: Option<ChildStdin>,
    threads: Vec<JoinHandle<()>>,
}

impl Watch {
    /// Starts the watcher and waits (bounded) until it is subscribed.
    fn start(bridge_netns: &str, gateways: [&Host; 2], record: Arc<Record>) -> Watch {
        let mut child = Command::new("python3")
            .arg(VIP_WATCH)
            .args(["--netns", bridge_netns, "--vip", &format!("crm={VIP}")])
            .args(["--node", &format!("{}={}", GW_NAMES[A], gateways[A].netns)])
            .args(["--node", &format!("{}={}", GW_NAMES[B], gateways[B].netns)])
            // Ends with the bench (stdin), never on its own clock.
            .args(["--seconds", "604800"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start python3 {VIP_WATCH}: {e}"));
        let stdin = child.stdin.take();
        let mut threads = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let record = record.clone();
            threads.push(std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    record.watched(&line);
                }
                record.watching.store(false, Ordering::SeqCst);
            }));
        }
        if let Some(stderr) = child.stderr.take() {
            let record = record.clone();
            threads.push(std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    record.watch_error(format!("stderr: {line}"));
                }
            }));
        }
        let watch = Watch {
            child,
            stdin,
            threads,
        };
        if wait_for(Duration::from_secs(10), || {
            record.watching.load(Ordering::SeqCst)
        })
        .is_none()
        {
            panic!(
                "{VIP_WATCH} did not get ready within 10 s: {:?}",
                record
                    .watch_errors
                    .lock()
                    .map(|e| e.clone())
                    .unwrap_or_default()
            );
        }
        watch
    }

    /// Closes its stdin (it prints its summary and exits), bounded; then kills it.
    fn stop(&mut self) {
        drop(self.stdin.take());
        let stopped = wait_for(Duration::from_secs(5), || {
            self.child.try_wait().is_ok_and(|s| s.is_some())
        });
        if stopped.is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

// ---- Analysis -------------------------------------------------------------------------------

/// The longest gap between consecutive answers in (from, to], counting from the last answer
/// before `from`, minus the probe interval. `to` is the moment the run was settled.
fn outage(answers: &[(Instant, usize)], from: Instant, to: Instant) -> Duration {
    let mut previous = answers
        .iter()
        .rev()
        .find(|a| a.0 <= from)
        .map_or(from, |a| a.0);
    let mut longest = Duration::ZERO;
    for (when, _) in answers.iter().filter(|a| a.0 > from && a.0 <= to) {
        longest = longest.max(*when - previous);
        previous = *when;
    }
    longest = longest.max(to.saturating_duration_since(previous));
    longest.saturating_sub(PROBE_EVERY)
}

/// Polls `check` every 5 ms for at most `limit`; returns when it first held.
fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// The failure of a run in which gw-b never answered.
fn no_takeover() -> String {
    format!("gw-b never answered within {TAKEOVER:?}")
}

/// One measured window of one run.
struct Sample {
    row: &'static str,
    /// None: the run could not start (the cluster never settled before the fault).
    outage: Option<Duration>,
    /// Why the run failed. Its window then ended at a time limit, so the outage is a lower
    /// bound (censored), not a measurement.
    failed: Option<String>,
    two_holders: TwoHolders,
    /// Further figures of the run, summarised per row: None = it never happened.
    figures: Vec<(&'static str, Option<Duration>)>,
}

impl Sample {
    fn not_run(row: &'static str, why: String) -> Sample {
        Sample {
            row,
            outage: None,
            failed: Some(format!("not run: {why}")),
            two_holders: TwoHolders::default(),
            figures: Vec::new(),
        }
    }
}

fn sample(
    record: &Record,
    row: &'static str,
    from: Instant,
    to: Instant,
    failed: Option<String>,
) -> Sample {
    Sample {
        row,
        outage: Some(outage(&record.answers(), from, to)),
        failed,
        two_holders: record.two_holders(from, to),
        figures: Vec::new(),
    }
}

// ---- The HA daemons -------------------------------------------------------------------------

/// The daemons of one implementation in one lab.
struct Cluster {
    kind: Kind,
    dir: tempfile::TempDir,
    key: PathBuf,
    hosts: Vec<Host>,
    /// gw-a, gw-b, and the witness (havip only).
    daemons: Vec<Option<Proc>>,
}

impl Cluster {
    fn new(kind: Kind, hosts: Vec<Host>) -> Cluster {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot make a temp dir: {e}"));
        let key = dir.path().join("cluster.key");
        if matches!(kind, Kind::Havip { .. }) {
            sh(&[havip(), "keygen", "--out", &key.to_string_lossy()]);
        }
        Cluster {
            kind,
            dir,
            key,
            daemons: (0..hosts.len()).map(|_| None).collect(),
            hosts,
        }
    }

    fn node_dir(&self, node: usize) -> PathBuf {
        let dir = self.dir.path().join(self.name(node));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {dir:?}: {e}"));
        dir
    }

    fn name(&self, node: usize) -> &'static str {
        NODE_NAMES[node]
    }

    fn nodes(&self) -> usize {
        match self.kind {
            Kind::Havip { .. } => 3,
            Kind::Keepalived { .. } => 2,
        }
    }

    fn start_all(&mut self, lab: &mut Lab) {
        for node in 0..self.nodes() {
            self.start(lab, node);
        }
    }

    fn start(&mut self, lab: &mut Lab, node: usize) {
        let proc = match self.kind.clone() {
            Kind::Havip { timers } => {
                let config = self.havip_config(node, timers.as_ref());
                lab.spawn(
                    &self.hosts[node],
                    havip(),
                    &["run", "--config", &config.to_string_lossy()],
                )
            }
            Kind::Keepalived { advert_int } => {
                let dir = self.node_dir(node);
                let config = self.keepalived_config(node, advert_int);
                let (pid, vrrp_pid) = (dir.join("keepalived.pid"), dir.join("vrrp.pid"));
                // A SIGKILLed instance leaves its pid files behind.
                let _ = std::fs::remove_file(&pid);
                let _ = std::fs::remove_file(&vrrp_pid);
                lab.spawn(
                    &self.hosts[node],
                    "keepalived",
                    &[
                        "--dont-fork",
                        "--log-console",
                        "--vrrp",
                        "--use-file",
                        &config.to_string_lossy(),
                        "--pid",
                        &pid.to_string_lossy(),
                        "--vrrp_pid",
                        &vrrp_pid.to_string_lossy(),
                    ],
                )
            }
        };
        self.daemons[node] = Some(proc);
    }

    /// Every PID of `node`'s daemon: keepalived runs its VRRP work in a child process.
    fn pids(&self, node: usize) -> Vec<u32> {
        let mut pids: Vec<u32> = self.daemons[node].iter().map(|p| p.pid).collect();
        if matches!(self.kind, Kind::Keepalived { .. }) {
            let file = self.dir.path().join(self.name(node)).join("vrrp.pid");
            if let Some(pid) = std::fs::read_to_string(file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// SIGKILL of every process of `node`'s daemon at once, as a crash would.
    fn sigkill(&mut self, lab: &mut Lab, node: usize) {
        for pid in self.pids(node).into_iter().skip(1) {
            signal(pid, libc::SIGKILL);
        }
        if let Some(proc) = self.daemons[node].take() {
            lab.kill(&proc);
        }
    }

    /// `signal` to every process of `node`'s daemon (SIGSTOP, SIGCONT: a freeze and a thaw).
    fn signal_all(&self, node: usize, number: i32) {
        for pid in self.pids(node) {
            signal(pid, number);
        }
    }

    /// What systemd's `ExecStopPost=havip release` (conf/havip.service) does once a havip
    /// daemon has died: removes the VIPs it could not. keepalived has no such step.
    fn after_death(&mut self, lab: &mut Lab, node: usize) {
        if let Kind::Havip { .. } = self.kind {
            let config = self.node_dir(node).join("havip.toml");
            let proc = lab.spawn(
                &self.hosts[node],
                havip(),
                &["release", "--config", &config.to_string_lossy()],
            );
            if lab.wait(&proc, Duration::from_secs(5)) != Some(0) {
                eprintln!(
                    "havip release on {} failed: {}",
                    self.name(node),
                    proc.stderr()
                );
            }
        }
    }

    /// SIGTERM, then waits (bounded) for the daemon to exit.
    fn sigterm(&mut self, lab: &mut Lab, node: usize) {
        if let Some(proc) = self.daemons[node].take() {
            signal(proc.pid, libc::SIGTERM);
            if lab.wait(&proc, Duration::from_secs(10)).is_none() {
                eprintln!(
                    "  {} did not exit within 10 s of SIGTERM; killing it",
                    self.name(node)
                );
                lab.kill(&proc);
            }
        }
    }

    fn havip_config(&self, node: usize, timers: Option<&Timers>) -> PathBuf {
        let dir = self.node_dir(node);
        let text = havip_config_text(node, timers, &dir, &self.key);
        write(&dir.join("havip.toml"), &text)
    }

    fn socket(&self, node: usize) -> PathBuf {
        self.dir.path().join(self.name(node)).join("havip.sock")
    }

    fn keepalived_config(&self, node: usize, advert_int: &str) -> PathBuf {
        let text = format!(
            "global_defs {{\n  router_id {name}\n  vrrp_version 3\n}}\n\nvrrp_instance crm {{\n  state BACKUP\n  interface {LAN}\n  virtual_router_id 50\n  priority {priority}\n  advert_int {advert_int}\n  unicast_src_ip 198.18.0.{me}\n  unicast_peer {{\n    198.18.0.{peer}\n  }}\n  virtual_ipaddress {{\n    {VIP_CIDR} dev {LAN}\n  }}\n}}\n",
            name = self.name(node),
            priority = [150, 100][node],
            me = 11 + node,
            peer = 12 - node,
        );
        write(&self.node_dir(node).join("keepalived.conf"), &text)
    }

    /// `havip failover ARGS --group crm` through gw-a's control socket.
    fn failover(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new(havip())
            .args(["failover", "--socket"])
            .arg(self.socket(A))
            .args(["--group", "crm"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run havip failover: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "havip failover {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn logs(&self) -> String {
        self.daemons
            .iter()
            .flatten()
            .map(|d| d.stderr())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn havip() -> &'static str {
    env!("CARGO_BIN_EXE_havip")
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {path:?}: {e}"));
    path.to_path_buf()
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a PID of a process this bench started.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

// ---- The faults ----------------------------------------------------------------------------

/// One lab with one implementation's daemons and the measuring threads.
struct Bench {
    lab: Lab,
    cluster: Cluster,
    record: Arc<Record>,
    threads: Vec<JoinHandle<()>>,
    watch: Watch,
    bridge_netns: String,
    ports: [String; 2],
    /// The kernel lifetime of havip's VIP (the effective `address_lifetime`).
    address_lifetime: Option<Duration>,
}

impl Bench {
    fn new(kind: Kind) -> Bench {
        let mut lab = Lab::new();
        let a = lab.host("gwa", 11);
        let b = lab.host("gwb", 12);
        let witness = lab.host("wit", 13);
        let client = lab.host("cl", 100);
        // Lab::new names the bridge namespace after the hosts' common prefix.
        let bridge_netns = format!("{}br", a.netns.trim_end_matches("gwa"));
        let record = Arc::new(Record::new());
        let watch = Watch::start(&bridge_netns, [&a, &b], record.clone());
        let threads = vec![
            responder(&a, A, record.clone()),
            responder(&b, B, record.clone()),
            probe(&client, record.clone()),
        ];
        let ports = [a.port.clone(), b.port.clone()];
        let address_lifetime = match &kind {
            Kind::Havip { timers } => effective_config(timers.as_ref())
                .group("crm")
                .map(|g| g.address_lifetime),
            Kind::Keepalived { .. } => None,
        };
        let cluster = Cluster::new(kind, vec![a, b, witness]);
        Bench {
            lab,
            cluster,
            record,
            threads,
            watch,
            bridge_netns,
            ports,
            address_lifetime,
        }
    }

    /// Waits until `gw` has held the VIP alone and alone answered for STEADY.
    fn settle(&self, gw: usize, limit: Duration) -> Result<Instant, String> {
        wait_for(limit, || self.record.steady_on(gw, Instant::now() - STEADY)).ok_or_else(|| {
            let watching = if self.record.watching.load(Ordering::SeqCst) {
                ""
            } else {
                "; the watcher has stopped"
            };
            format!(
                "{} did not hold the VIP alone and answer within {limit:?} (holders now {:?}{watching})\n{}",
                GW_NAMES[gw],
                self.record.latest_holders(),
                tail(&self.cluster.logs(), 30)
            )
        })
    }

    /// Waits until `gw` answered after `since`; None at the limit.
    fn answered(&self, gw: usize, since: Instant, limit: Duration) -> Option<Instant> {
        wait_for(limit, || self.record.answered_by_since(gw, since))
    }

    fn sample(
        &self,
        row: &'static str,
        from: Instant,
        to: Instant,
        failed: Option<String>,
    ) -> Sample {
        sample(&self.record, row, from, to, failed)
    }

    fn hard_failure(&mut self) -> Vec<Sample> {
        let host = self.cluster.hosts[A].clone();
        let cut = Instant::now();
        host.ip(&["link", "set", LAN, "down"]);
        let taken = self.answered(B, cut, TAKEOVER);
        std::thread::sleep(Duration::from_millis(500));
        let restored = Instant::now();
        host.ip(&["link", "set", LAN, "up"]);
        let back = self.settle(A, Duration::from_secs(30));
        let end = back.as_ref().map_or(Instant::now(), |t| *t);
        vec![
            self.sample(
                Fault::Hard.row(),
                cut,
                restored,
                taken.is_none().then(no_takeover),
            ),
            self.sample("failback (lan0 up again)", restored, end, back.err()),
        ]
    }

    fn daemon_kill(&mut self) -> Vec<Sample> {
        let killed = Instant::now();
        self.cluster.sigkill(&mut self.lab, A);
        self.cluster.after_death(&mut self.lab, A);
        let taken = self.answered(B, killed, TAKEOVER);
        let stale_gone = match self.cluster.kind {
            // `havip release` (ExecStopPost) removed it; else the kernel would, when its
            // lifetime runs out. When it went is the watcher's release event.
            Kind::Havip { .. } => {
                wait_for(Duration::from_secs(10), || !self.record.latest_holders()[A])
                    .and_then(|_| self.record.released(A, killed))
            }
            // keepalived never removes it: look again 2 s after gw-b took over, then restart.
            Kind::Keepalived { .. } => {
                std::thread::sleep(Duration::from_secs(2));
                self.record.released(A, killed)
            }
        };
        let (restarted, failback) = self.restart_with_failback();
        let mut kill = self.sample(
            Fault::Kill.row(),
            killed,
            restarted,
            taken.is_none().then(no_takeover),
        );
        kill.figures = vec![
            ("gw-b answered after", taken.map(|t| t - killed)),
            (
                "killed gw-a's VIP removed after",
                stale_gone.map(|t| t - killed),
            ),
        ];
        vec![kill, failback]
    }

    /// SIGSTOP of the master's daemon: gw-b takes over while the frozen master's VIP stays
    /// until the kernel's address lifetime runs out (havip) or for ever (keepalived: the
    /// bench waits 2 s after gw-b answered). Then SIGCONT, and the failback is measured.
    fn daemon_sigstop(&mut self) -> Vec<Sample> {
        let stopped = Instant::now();
        self.cluster.signal_all(A, libc::SIGSTOP);
        let taken = self.answered(B, stopped, TAKEOVER);
        let mut failed = taken.is_none().then(no_takeover);
        let gone = match self.address_lifetime {
            Some(lifetime) => {
                let limit = lifetime + Duration::from_secs(5);
                let gone = wait_for(limit, || !self.record.latest_holders()[A])
                    .and_then(|_| self.record.released(A, stopped));
                if gone.is_none() && failed.is_none() {
                    // The kernel lifetime is the only bound on a frozen master's address.
                    failed = Some(format!(
                        "the frozen gw-a's VIP was still there {limit:?} after SIGSTOP"
                    ));
                }
                gone
            }
            None => {
                std::thread::sleep(Duration::from_secs(2));
                self.record.released(A, stopped)
            }
        };
        let continued = Instant::now();
        self.cluster.signal_all(A, libc::SIGCONT);
        // As after a partition: a client may stay on a stale neighbour entry for long.
        let back = self.settle(A, Duration::from_secs(90));
        let end = back.as_ref().map_or(Instant::now(), |t| *t);
        let mut frozen = self.sample(Fault::Sigstop.row(), stopped, continued, failed);
        frozen.figures = vec![
            ("gw-b answered after", taken.map(|t| t - stopped)),
            ("frozen gw-a's VIP removed after", gone.map(|t| t - stopped)),
            ("SIGCONT after", Some(continued - stopped)),
        ];
        let thawed = self.sample("failback (SIGCONT)", continued, end, back.err());
        vec![frozen, thawed]
    }

    /// Starts gw-a's daemon again and waits (bounded) until it holds and answers alone:
    /// when it was started, and the failback's sample.
    fn restart_with_failback(&mut self) -> (Instant, Sample) {
        let restarted = Instant::now();
        self.cluster.start(&mut self.lab, A);
        let back = self.settle(A, Duration::from_secs(30));
        let end = back.as_ref().map_or(Instant::now(), |t| *t);
        let failback = self.sample("failback (daemon restarted)", restarted, end, back.err());
        (restarted, failback)
    }

    fn graceful_stop(&mut self) -> Vec<Sample> {
        let stopped = Instant::now();
        self.cluster.sigterm(&mut self.lab, A);
        let taken = self.answered(B, stopped, TAKEOVER);
        std::thread::sleep(Duration::from_millis(500));
        let (restarted, failback) = self.restart_with_failback();
        let stop = self.sample(
            Fault::Stop.row(),
            stopped,
            restarted,
            taken.is_none().then(no_takeover),
        );
        vec![stop, failback]
    }

    /// Drops every frame between gw-a's and gw-b's bridge ports; both still reach the
    /// client and the witness.
    fn partition(&mut self) -> Vec<Sample> {
        let rules = format!(
            "table bridge partition {{\n  chain cut {{\n    type filter hook forward priority 0; policy accept;\n    iifname \"{a}\" oifname \"{b}\" drop\n    iifname \"{b}\" oifname \"{a}\" drop\n  }}\n}}\n",
            a = self.ports[A],
            b = self.ports[B]
        );
        let file = write(&self.cluster.dir.path().join("partition.nft"), &rules);
        let started = Instant::now();
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.bridge_netns,
            "nft",
            "-f",
            &file.to_string_lossy(),
        ]);
        std::thread::sleep(PARTITION);
        let healed = Instant::now();
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.bridge_netns,
            "nft",
            "delete",
            "table",
            "bridge",
            "partition",
        ]);
        // keepalived's client can be stuck on a stale ARP entry for tens of seconds.
        let back = self.settle(A, Duration::from_secs(90));
        let end = back.as_ref().map_or(Instant::now(), |t| *t);
        let mut whole = self.sample(Fault::Partition.row(), started, end, back.err());
        let after = outage(&self.record.answers(), healed, end);
        whole.figures = vec![("outage after healing", Some(after))];
        vec![whole]
    }

    fn manual(&mut self) -> Vec<Sample> {
        let started = Instant::now();
        let moved = self
            .cluster
            .failover(&["--to", "gw-b"])
            .and_then(|()| self.settle(B, Duration::from_secs(15)));
        let cleared = Instant::now();
        let back = self
            .cluster
            .failover(&["--clear"])
            .and_then(|()| self.settle(A, Duration::from_secs(30)));
        let end = back.as_ref().map_or(Instant::now(), |t| *t);
        vec![
            self.sample(Fault::Manual.row(), started, cleared, moved.err()),
            self.sample("manual --clear (back to gw-a)", cleared, end, back.err()),
        ]
    }

    /// One run of `fault`, always with its samples: a failed run is counted, not dropped.
    fn run(&mut self, fault: Fault) -> Vec<Sample> {
        if let Err(e) = self.settle(A, Duration::from_secs(30)) {
            return vec![Sample::not_run(fault.row(), e)];
        }
        match fault {
            Fault::Hard => self.hard_failure(),
            Fault::Kill => self.daemon_kill(),
            Fault::Sigstop => self.daemon_sigstop(),
            Fault::Stop => self.graceful_stop(),
            Fault::Partition => self.partition(),
            Fault::Manual => self.manual(),
        }
    }

    /// CPU (% of one core) and RSS of gw-a's daemon, all its processes, over `span`.
    fn idle_usage(&self, span: Duration) -> Option<(f64, f64)> {
        let pids = self.cluster.pids(A);
        let ticks = |pids: &[u32]| -> Option<u64> { pids.iter().map(|p| cpu_ticks(*p)).sum() };
        let before = ticks(&pids)?;
        let started = Instant::now();
        std::thread::sleep(span);
        let used = ticks(&pids)? - before;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cpu = used as f64 / hz / started.elapsed().as_secs_f64() * 100.0;
        let rss: u64 = pids.iter().filter_map(|p| rss_kib(*p)).sum();
        Some((cpu, rss as f64 / 1024.0))
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        // Stop the threads and the watcher before Lab's Drop removes their namespaces.
        self.record.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // A frozen daemon (a run that panicked mid-SIGSTOP) dies of SIGKILL all the same.
        // keepalived's VRRP child is not Lab's child: kill it by its PID.
        for node in 0..self.cluster.nodes() {
            self.cluster.sigkill(&mut self.lab, node);
        }
        self.watch.stop();
        if let Ok(Some(summary)) = self.record.watch_summary.lock().map(|s| s.clone()) {
            eprintln!("  watcher, whole lab: {summary}");
        }
    }
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces): utime is the 12th, stime 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---- The table -----------------------------------------------------------------------------

#[derive(Default)]
struct Row {
    samples: Vec<Sample>,
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// min / median / max of `values` (a value and whether it is only a lower bound, a failed
/// run's). A figure that a lower bound could exceed is printed ">= N": a failed run moves
/// the figures it may move, it is never left out.
fn censored_stats(values: &[(Duration, bool)]) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let figure = |i: usize| {
        let value = sorted[i].0;
        let bound = sorted.iter().any(|(v, censored)| *censored && *v <= value);
        format!("{}{}", if bound { ">= " } else { "" }, ms(value))
    };
    format!(
        "{} / {} / {}",
        figure(0),
        figure(sorted.len() / 2),
        figure(sorted.len() - 1)
    )
}

fn print_table(rows: &BTreeMap<(usize, &'static str, String), Row>) {
    println!();
    println!(
        "| fault | implementation | outage min / median / max (ms) | overlaps (two holders) | two-holder ms (total / max of a run) | runs | failed | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for ((_, fault, implementation), row) in rows {
        let outages: Vec<(Duration, bool)> = row
            .samples
            .iter()
            .filter_map(|s| s.outage.map(|o| (o, s.failed.is_some())))
            .collect();
        let overlaps: usize = row.samples.iter().map(|s| s.two_holders.overlaps).sum();
        let total: Duration = row.samples.iter().map(|s| s.two_holders.total).sum();
        let worst = row
            .samples
            .iter()
            .map(|s| s.two_holders.total)
            .max()
            .unwrap_or_default();
        let failed = row.samples.iter().filter(|s| s.failed.is_some()).count();
        let notes: Vec<String> = [failure_notes(&row.samples), summarise(&row.samples)]
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect();
        println!(
            "| {fault} | {implementation} | {} | {overlaps} | {} / {} | {} | {failed} | {} |",
            censored_stats(&outages),
            ms(total),
            ms(worst),
            row.samples.len(),
            notes.join("; ")
        );
    }
}

/// The reasons of a row's failed runs, each once with how often.
fn failure_notes(samples: &[Sample]) -> String {
    let mut reasons: Vec<(String, usize)> = Vec::new();
    for reason in samples.iter().filter_map(|s| s.failed.as_deref()) {
        let reason = first_line(reason).to_string();
        match reasons.iter_mut().find(|r| r.0 == reason) {
            Some(r) => r.1 += 1,
            None => reasons.push((reason, 1)),
        }
    }
    reasons
        .iter()
        .map(|(reason, n)| format!("failed ({n}x): {reason}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Each further figure of a row's runs as min / median / max, with how many runs never
/// saw it happen and how many took a second or more.
fn summarise(samples: &[Sample]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for name in samples.iter().flat_map(|s| s.figures.iter().map(|f| f.0)) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut parts = Vec::new();
    for name in names {
        let all: Vec<Option<Duration>> = samples
            .iter()
            .flat_map(|s| s.figures.iter().filter(|f| f.0 == name).map(|f| f.1))
            .collect();
        let mut seen: Vec<Duration> = all.iter().flatten().copied().collect();
        seen.sort();
        let never = all.len() - seen.len();
        let mut part = if seen.is_empty() {
            format!("{name}: never")
        } else {
            format!(
                "{name} {} / {} / {} ms",
                ms(seen[0]),
                ms(seen[seen.len() / 2]),
                ms(seen[seen.len() - 1])
            )
        };
        let slow = seen
            .iter()
            .filter(|d| **d >= Duration::from_secs(1))
            .count();
        if slow > 0 && slow < seen.len() {
            part += &format!(" (>= 1 s in {slow} of {} runs)", all.len());
        }
        if never > 0 && !seen.is_empty() {
            part += &format!(" (never in {never} of {} runs)", all.len());
        }
        parts.push(part);
    }
    parts.join("; ")
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: then do nothing,
    // this takes minutes, needs root and installs nothing.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("failover_lab is a benchmark: run scripts/bench-failover.sh");
        return;
    }
    require_root("the failover lab benchmark");
    let settings = settings();
    let wanted = |list: &Option<Vec<String>>, key: &str| {
        list.as_ref().is_none_or(|l| l.iter().any(|k| k == key))
    };
    let mut rows: BTreeMap<(usize, &'static str, String), Row> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut order = BTreeMap::new();
    let mut add = |rows: &mut BTreeMap<_, Row>, label: &str, s: Sample| {
        let next = order.len();
        let index = *order.entry(s.row).or_insert(next);
        rows.entry((index, s.row, label.to_string()))
            .or_default()
            .samples
            .push(s);
    };
    for implementation in implementations()
        .into_iter()
        .filter(|i| wanted(&settings.impls, i.key))
    {
        let faults: Vec<Fault> = Fault::ALL
            .into_iter()
            .filter(|f| implementation.faults.contains(f) && wanted(&settings.faults, f.key()))
            .collect();
        let mut bench = Bench::new(implementation.kind.clone());
        match bench.address_lifetime {
            Some(lifetime) => eprintln!(
                "== {} (address_lifetime {})",
                implementation.label,
                format_duration(lifetime)
            ),
            None => eprintln!("== {}", implementation.label),
        }
        bench.cluster.start_all(&mut bench.lab);
        if let Err(e) = bench.settle(A, Duration::from_secs(60)) {
            eprintln!("  never settled: {e}");
            failures.push(format!(
                "{}: never settled: {}",
                implementation.label,
                first_line(&e)
            ));
            // Every run it would have made is counted, as not run.
            for fault in &faults {
                for _ in 0..settings.runs {
                    let s = Sample::not_run(fault.row(), format!("never settled: {e}"));
                    add(&mut rows, &implementation.label, s);
                }
            }
            continue;
        }
        // Idle use is measured with the default timers only (and keepalived's).
        if !settings.idle.is_zero() && !implementation.key.starts_with("havip-") {
            match bench.idle_usage(settings.idle) {
                Some((cpu, rss)) => eprintln!(
                    "IDLE {}: master {cpu:.3} % of one core, RSS {rss:.1} MiB over {:?}",
                    implementation.label, settings.idle
                ),
                None => eprintln!("IDLE {}: could not read /proc", implementation.label),
            }
        }
        for fault in faults {
            for run in 1..=settings.runs {
                for s in bench.run(fault) {
                    eprintln!(
                        "  {} run {run}: {}: outage {}, {} overlap(s), two holders {} ms {:?}{}",
                        fault.key(),
                        s.row,
                        s.outage.map_or("-".into(), |o| format!(
                            "{}{} ms",
                            if s.failed.is_some() { ">= " } else { "" },
                            ms(o)
                        )),
                        s.two_holders.overlaps,
                        ms(s.two_holders.total),
                        s.figures,
                        s.failed
                            .as_ref()
                            .map_or(String::new(), |f| format!("\n  FAILED: {f}")),
                    );
                    if let Some(why) = &s.failed {
                        failures.push(format!(
                            "{} {} run {run}: {}: {}",
                            implementation.label,
                            fault.key(),
                            s.row,
                            first_line(why)
                        ));
                    }
                    add(&mut rows, &implementation.label, s);
                }
            }
        }
        let errors = bench
            .record
            .watch_errors
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        if !errors.is_empty() {
            failures.push(format!(
                "{}: the watcher reported {} error(s), first: {}",
                implementation.label,
                errors.len(),
                errors[0]
            ));
        }
    }
    print_table(&rows);
    if !failures.is_empty() {
        println!("\nRuns that failed (counted in the table, outage as a lower bound):");
        for failure in failures {
            println!("- {failure}");
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}
