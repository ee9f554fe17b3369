//! Failover on the wire, havip against keepalived, on the lab (as root).
//!
//! The lab is the one of the e2e suite (`tests/support/lab.rs`): the hosts of
//! `vagrant/nodes.conf` (gw-a .11, gw-b .12, witness .13, crm-1 .21, crm-2 .22, client .100
//! on 198.18.0.0/24; VIP group `crm` 198.18.0.50 on the gateways' `lan0`), built and
//! provisioned by `scripts/lab.sh up`. Each implementation gets a fresh lab, one after the
//! other, in one run of this binary:
//! - havip: the real daemons, started and stopped by `lab.sh` (its supervisor runs `havip
//!   release` when one dies, as systemd's `ExecStopPost` does), on conf/NODE.toml as the
//!   provisioning wrote it (gw-a priority 150 for `crm`, gw-b 100, a witness; failback
//!   after 5 s; health checks on crm-1/crm-2; group `crm2` preferring gw-b). The one
//!   thing an implementation changes is `[timers]` (`set_timers`): the `havip`
//!   implementation removes it, so the daemons run on their own defaults, and every label
//!   shows the timers `havip::config` reads from the files the bench wrote (never a
//!   literal of the bench's);
//! - keepalived (Debian's 2.2.7): VRRPv3, unicast peers, the priorities havip's configs
//!   give `crm`, no witness, `advert_int 1` and `advert_int 0.1`; its files in the
//!   gateways' lab directories.
//!
//! What is measured:
//! - a UDP responder thread per gateway namespace, bound to the VIP with IP_FREEBIND (so
//!   it exists before the VIP does), answers with its gateway's name: it stands for the
//!   service behind the VIP and survives the HA daemon being killed or frozen;
//! - a probe thread in the client namespace sends one datagram to the VIP every 10 ms and
//!   records every answer and who sent it. The client's neighbour cache is never flushed:
//!   a stale ARP entry is part of what a failover costs. Outage = the longest gap between
//!   two answers in the fault's window (`tests/support/outage.rs`, the e2e suite's computation),
//!   minus the 10 ms probe interval (0 = no probe lost);
//! - who holds the VIP comes from the lab's watcher, `scripts/vip-watch.py` (`lab.sh
//!   watch`), run in the bridge namespace: one `ip monitor all-nsid address` sees the
//!   address events of every node in the kernel's order, so a hand-over never looks like
//!   two holders and no overlap, however short, is missed. Two holders = the watcher's
//!   overlaps (of any VIP group) that began inside a run's window: how many (one of 0 ms
//!   counts) and how long together.
//!
//! Probe answers are stamped on this process's monotonic clock; the watcher's events carry
//! `ip -ts` wall-clock times, mapped onto that clock once at the start (ms resolution).
//! Faults are signals sent by PID (the lab's PID files for havip), so a figure counts from
//! the moment the signal went. A run that fails (no takeover, no failback within its
//! limit) is kept: its outage counts as a lower bound (">= N" where it could move a
//! figure) and its reason is in the notes.
//!
//! Run as root: `scripts/bench-failover.sh` (or `cargo bench --bench failover_lab`). It
//! uses the lab's fixed names: not beside the e2e suite or another lab. Env: RUNS
//! (default 10), IMPLS (comma list of havip, havip-tuned, havip-fast, ka-1, ka-0.1),
//! FAULTS (comma list of hard, kill, sigstop, stop, partition, manual), IDLE_SECS (default
//! 30; 0 skips the idle CPU/RSS measurement). Results go to docs/failover-bench.md.

#[path = "../tests/support/lab.rs"]
mod lab;
#[path = "../tests/support/outage.rs"]
mod outage;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use havip::config::{Config, Timers, format_duration};
use lab::host::{require_root, sh};
use lab::watch::Watch;
use lab::{LAN, lab_sh};
use socket2::{Domain, Protocol, Socket, Type};

const PORT: u16 = 9999;
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// How long the gateway partition lasts before it heals.
const PARTITION: Duration = Duration::from_secs(5);
/// How long gw-b may take to answer after a fault before the run counts as failed.
const TAKEOVER: Duration = Duration::from_secs(15);
/// gw-a must hold alone and answer alone this long before a fault is injected.
const STEADY: Duration = Duration::from_millis(1500);
/// The group whose VIP the probe asks and the rows are about.
const GROUP: &str = "crm";
/// The lab's gateways (vagrant/nodes.conf): gw-a is `crm`'s preferred one.
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
    /// `timers`: None removes `[timers]`, so the daemons run on their own defaults.
    Havip {
        name: &'static str,
        timers: Option<Timers>,
    },
    Keepalived {
        advert_int: &'static str,
    },
}

#[derive(Clone)]
struct Implementation {
    key: &'static str,
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
        kind: Kind::Havip { name, timers },
        faults,
    };
    let keepalived = |key, advert_int| Implementation {
        key,
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

/// `text` (a havip.toml of the lab) with its `[timers]` table replaced by `timers`, or
/// removed when None (the daemon's defaults). A table appended at the end is still a
/// top-level table in TOML, whatever precedes it.
fn set_timers(text: &str, timers: Option<&Timers>) -> String {
    let mut out = String::new();
    let mut in_timers = false;
    for line in text.lines() {
        let header = line.trim_start();
        if header.starts_with('[') {
            in_timers = header.starts_with("[timers]");
        }
        if !in_timers {
            out += line;
            out.push('\n');
        }
    }
    if let Some(t) = timers {
        out += &format!(
            "\n[timers]\nheartbeat = \"{}\"\nelection_timeout = \"{}..{}\"\n",
            format_duration(t.heartbeat),
            format_duration(t.election_timeout_min),
            format_duration(t.election_timeout_max)
        );
    }
    out
}

/// Node `node`'s configuration as the daemon reads it (`havip::config`, the daemon's own
/// parser and defaults), from the file in the lab.
fn effective_config(node: &str) -> Config {
    let path = lab::config(node);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    Config::from_str(Path::new(&path), &text)
        .unwrap_or_else(|e| panic!("the bench's havip config is refused:\n{e}\n{text}"))
}

/// "havip (defaults: hb 128ms, election 400ms..500ms)", from the effective configuration.
fn havip_label(name: &str, defaults: bool, config: &Config) -> String {
    let t = &config.timers;
    format!(
        "{name} ({}hb {}, election {}..{})",
        if defaults { "defaults: " } else { "" },
        format_duration(t.heartbeat),
        format_duration(t.election_timeout_min),
        format_duration(t.election_timeout_max)
    )
}

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

/// What the probe threads saw, on this process's monotonic clock, and the clock's anchor
/// to the wall clock the watcher stamps its events with.
struct Record {
    /// (when, gateway index) of every answer the client received.
    answers: Mutex<Vec<(Instant, usize)>>,
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
            stop: AtomicBool::new(false),
            epoch: (Instant::now(), wall),
        }
    }

    fn answers(&self) -> Vec<(Instant, usize)> {
        self.answers.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// A wall-clock time of the watcher (ms since 1970) on this process's clock.
    fn instant(&self, unix_ms: u64) -> Instant {
        let (instant, wall_us) = self.epoch;
        let offset = i128::from(unix_ms) * 1000 - wall_us;
        let magnitude = Duration::from_micros(offset.unsigned_abs() as u64);
        if offset >= 0 {
            instant + magnitude
        } else {
            instant.checked_sub(magnitude).unwrap_or(instant)
        }
    }

    /// An instant of this process's clock as the watcher's wall clock (ms since 1970).
    fn unix_ms(&self, at: Instant) -> u64 {
        let (instant, wall_us) = self.epoch;
        let us = if at >= instant {
            wall_us + (at - instant).as_micros() as i128
        } else {
            wall_us - (instant - at).as_micros() as i128
        };
        u64::try_from(us / 1000).unwrap_or(0)
    }

    fn answered_by_since(&self, gw: usize, since: Instant) -> bool {
        self.answers.lock().is_ok_and(|a| {
            a.iter()
                .rev()
                .take_while(|x| x.0 >= since)
                .any(|x| x.1 == gw)
        })
    }

    /// The outage over [from, to] (`outage`), less the probe interval.
    fn outage(&self, from: Instant, to: Instant) -> Duration {
        let origin = self.epoch.0;
        let since = |t: Instant| t.saturating_duration_since(origin);
        let answers: Vec<(Duration, usize)> = self
            .answers()
            .into_iter()
            .map(|(t, gw)| (since(t), gw))
            .collect();
        outage::longest_gap(&answers, since(from), since(to)).less(PROBE_EVERY)
    }
}

/// Answers every datagram to VIP:PORT in `netns` with the gateway's index.
fn responder(netns: String, vip: Ipv4Addr, gw: usize, record: Arc<Record>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        enter_netns(&netns);
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .unwrap_or_else(|e| panic!("responder socket in {netns}: {e}"));
        // The VIP is not on this host yet (or ever, on a backup): bind it anyway.
        socket
            .set_freebind_v4(true)
            .unwrap_or_else(|e| panic!("IP_FREEBIND in {netns}: {e}"));
        let address = SocketAddr::V4(SocketAddrV4::new(vip, PORT));
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

/// Sends a datagram to the VIP every PROBE_EVERY from `netns` and records each answer.
fn probe(netns: String, vip: Ipv4Addr, record: Arc<Record>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        enter_netns(&netns);
        let socket =
            UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| panic!("probe socket in {netns}: {e}"));
        let target = SocketAddrV4::new(vip, PORT);
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

// ---- Analysis -------------------------------------------------------------------------------

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

// ---- The HA daemons -------------------------------------------------------------------------

/// The daemons of one implementation on the lab: havip's are the lab's (`lab.sh
/// start-havip`, PID files in the lab's directories); keepalived, which the lab does not
/// run, is started here, in the gateways' namespaces, with its files beside them.
struct Cluster {
    kind: Kind,
    /// keepalived on gw-a and gw-b.
    keepalived: Vec<Option<Child>>,
}

impl Cluster {
    fn new(kind: Kind) -> Cluster {
        Cluster {
            kind,
            keepalived: (0..GW_NAMES.len()).map(|_| None).collect(),
        }
    }

    /// The nodes that run a daemon: gw-a, gw-b and (havip) the witness.
    fn names(&self) -> Vec<String> {
        match self.kind {
            Kind::Havip { .. } => lab::havip_nodes(),
            Kind::Keepalived { .. } => GW_NAMES.iter().map(|n| n.to_string()).collect(),
        }
    }

    fn start_all(&mut self) {
        match self.kind {
            Kind::Havip { .. } => {
                lab_sh(&["start-havip"]);
            }
            Kind::Keepalived { .. } => {
                for node in 0..GW_NAMES.len() {
                    self.start(node);
                }
            }
        }
    }

    fn start(&mut self, node: usize) {
        let name = GW_NAMES[node];
        match self.kind.clone() {
            Kind::Havip { .. } => {
                lab_sh(&["start-havip", name]);
            }
            Kind::Keepalived { advert_int } => {
                let dir = lab::dir(name);
                let config = self.keepalived_config(node, advert_int);
                let (pid, vrrp_pid) = (format!("{dir}/keepalived.pid"), format!("{dir}/vrrp.pid"));
                // A SIGKILLed instance leaves its pid files behind.
                let _ = std::fs::remove_file(&pid);
                let _ = std::fs::remove_file(&vrrp_pid);
                let log = File::create(format!("{dir}/keepalived.log"))
                    .unwrap_or_else(|e| panic!("{dir}/keepalived.log: {e}"));
                let child = Command::new("ip")
                    .args(["netns", "exec", &lab::netns(name), "keepalived"])
                    .args([
                        "--dont-fork",
                        "--log-console",
                        "--vrrp",
                        "--use-file",
                        &config,
                    ])
                    .args(["--pid", &pid, "--vrrp_pid", &vrrp_pid])
                    .stdin(Stdio::null())
                    .stdout(
                        log.try_clone()
                            .unwrap_or_else(|e| panic!("keepalived log: {e}")),
                    )
                    .stderr(log)
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start keepalived in {name}: {e}"));
                self.keepalived[node] = Some(child);
            }
        }
    }

    /// Every PID of `node`'s daemon (keepalived runs its VRRP work in a child process),
    /// from the PID files, only those still alive in the node's namespace: a file left by
    /// a killed daemon never makes the bench signal a stranger.
    fn pids(&self, node: usize) -> Vec<u32> {
        let name = GW_NAMES[node];
        let read = |file: &str| {
            std::fs::read_to_string(format!("{}/{file}", lab::dir(name)))
                .ok()
                .and_then(|t| t.trim().parse().ok())
        };
        let pids: Vec<u32> = match self.kind {
            Kind::Havip { .. } => read("havip.pid").into_iter().collect(),
            Kind::Keepalived { .. } => self.keepalived[node]
                .iter()
                .map(|c| c.id())
                .chain(read("vrrp.pid"))
                .collect(),
        };
        pids.into_iter()
            .filter(|pid| in_netns(*pid, &lab::netns(name)))
            .collect()
    }

    /// SIGKILL of every process of `node`'s daemon at once, as a crash would. The lab's
    /// supervisor then runs `havip release` (systemd's `ExecStopPost=`); keepalived has no
    /// such step.
    fn sigkill(&mut self, node: usize) {
        self.signal_all(node, libc::SIGKILL);
        if let Some(mut child) = self.keepalived[node].take() {
            let _ = child.wait();
        }
    }

    /// `signal` to every process of `node`'s daemon (SIGSTOP, SIGCONT: a freeze and a thaw).
    fn signal_all(&self, node: usize, number: i32) {
        for pid in self.pids(node) {
            signal(pid, number);
        }
    }

    /// SIGTERM, then waits (bounded) for the daemon to exit.
    fn sigterm(&mut self, node: usize) {
        let name = GW_NAMES[node];
        match self.kind {
            // The lab's stop: waits for the daemon and for its supervisor's release.
            Kind::Havip { .. } => {
                lab_sh(&["stop-havip", name, "TERM"]);
            }
            Kind::Keepalived { .. } => {
                if let Some(mut child) = self.keepalived[node].take() {
                    signal(child.id(), libc::SIGTERM);
                    let exited = wait_for(Duration::from_secs(10), || {
                        child.try_wait().is_ok_and(|s| s.is_some())
                    });
                    if exited.is_none() {
                        eprintln!("  {name} did not exit within 10 s of SIGTERM; killing it");
                        let _ = child.kill();
                    }
                    let _ = child.wait();
                }
            }
        }
    }

    /// keepalived's configuration for gateway `node`: one VRRP instance for `crm`, its
    /// addresses from the lab, its priority the one havip's configuration gives the node.
    fn keepalived_config(&self, node: usize, advert_int: &str) -> String {
        let name = GW_NAMES[node];
        let priority = effective_config(name)
            .group(GROUP)
            .map_or(100, |g| g.priority);
        let text = format!(
            "global_defs {{\n  router_id {name}\n  vrrp_version 3\n}}\n\nvrrp_instance {GROUP} {{\n  state BACKUP\n  interface {LAN}\n  virtual_router_id 50\n  priority {priority}\n  advert_int {advert_int}\n  unicast_src_ip {me}\n  unicast_peer {{\n    {peer}\n  }}\n  virtual_ipaddress {{\n    {vip}/24 dev {LAN}\n  }}\n}}\n",
            me = lab::address_of(name),
            peer = lab::address_of(GW_NAMES[1 - node]),
            vip = lab::address_of(GROUP),
        );
        let path = format!("{}/keepalived.conf", lab::dir(name));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
        path
    }

    /// `havip failover ARGS --group crm` through gw-a's control socket.
    fn failover(&self, args: &[&str]) -> Result<(), String> {
        let out = Command::new(havip())
            .args(["failover", "--config", &lab::config(GW_NAMES[A])])
            .args(["--group", GROUP])
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

    /// The last `lines` lines of every daemon's log.
    fn logs(&self, lines: usize) -> String {
        match self.kind {
            Kind::Havip { .. } => lab::logs(lines),
            Kind::Keepalived { .. } => self
                .names()
                .iter()
                .map(|n| {
                    let log = std::fs::read_to_string(format!("{}/keepalived.log", lab::dir(n)))
                        .unwrap_or_default();
                    format!("--- {n}\n{}", tail(&log, lines))
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// Whether process `pid` lives in network namespace `netns` (the same nsfs inode).
fn in_netns(pid: u32, netns: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |path: String| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let theirs = id(format!("/proc/{pid}/ns/net"));
    theirs.is_some() && theirs == id(format!("/run/netns/{netns}"))
}

fn havip() -> &'static str {
    env!("CARGO_BIN_EXE_havip")
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a PID of a process this bench or the lab started.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

// ---- The faults ----------------------------------------------------------------------------

/// One lab with one implementation's daemons and the measuring threads.
struct Bench {
    /// The implementation's label in the table.
    label: String,
    cluster: Cluster,
    record: Arc<Record>,
    threads: Vec<JoinHandle<()>>,
    watch: Watch,
    /// The kernel lifetime of havip's VIP (the effective `address_lifetime`).
    address_lifetime: Option<Duration>,
}

impl Bench {
    /// A fresh lab (`lab.sh up`) for `kind`, its watcher and measuring threads; the
    /// daemons are not started yet.
    fn new(kind: Kind) -> Bench {
        lab_sh(&["up"]);
        let (label, address_lifetime) = match &kind {
            Kind::Havip { name, timers } => {
                // The same [timers] on every node, as the config requires.
                for node in lab::havip_nodes() {
                    let path = lab::config(&node);
                    let text =
                        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                    std::fs::write(&path, set_timers(&text, timers.as_ref()))
                        .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
                }
                let config = effective_config(GW_NAMES[A]);
                (
                    havip_label(name, timers.is_none(), &config),
                    config.group(GROUP).map(|g| g.address_lifetime),
                )
            }
            Kind::Keepalived { advert_int } => {
                (format!("keepalived (advert_int {advert_int})"), None)
            }
        };
        let vip: Ipv4Addr = lab::address_of(GROUP)
            .parse()
            .unwrap_or_else(|e| panic!("the VIP of {GROUP} in vagrant/nodes.conf: {e}"));
        let record = Arc::new(Record::new());
        // Ends with the bench (its stdin), never on its own clock.
        let watch = lab::watch(604_800);
        {
            let w = watch.lock();
            assert!(
                w.ready,
                "the watcher did not get ready within 10 s: {:?} {:?}",
                w.errors, w.stderr
            );
        }
        let threads = vec![
            responder(lab::netns(GW_NAMES[A]), vip, A, record.clone()),
            responder(lab::netns(GW_NAMES[B]), vip, B, record.clone()),
            probe(lab::netns("client"), vip, record.clone()),
        ];
        Bench {
            label,
            cluster: Cluster::new(kind),
            record,
            threads,
            watch,
            address_lifetime,
        }
    }

    /// Whether gw-a and gw-b hold the VIP now, per the watcher.
    fn holders_now(&self) -> [bool; 2] {
        let holders = self.watch.lock().holders(GROUP);
        GW_NAMES.map(|n| holders.iter().any(|h| h == n))
    }

    /// When `gw` first did not hold the VIP after `after`, per the watcher.
    fn released(&self, gw: usize, after: Instant) -> Option<Instant> {
        let after_ms = self.record.unix_ms(after);
        self.watch
            .lock()
            .released(GW_NAMES[gw], GROUP, after_ms)
            .map(|ms| self.record.instant(ms))
    }

    /// The watcher's overlaps (any group) that began in [from, to), each with its whole
    /// duration: an overlap belongs to the phase of a run in which it began (a killed
    /// keepalived's VIP beside gw-b's to the SIGKILL row, although it lasts past the
    /// restart), and none is counted in two rows. One still open counts up to now.
    fn two_holders(&self, from: Instant, to: Instant) -> TwoHolders {
        let (from_ms, to_ms) = (self.record.unix_ms(from), self.record.unix_ms(to));
        let now_ms = self.record.unix_ms(Instant::now());
        let mut two = TwoHolders::default();
        for o in self
            .watch
            .lock()
            .overlaps
            .iter()
            .filter(|o| o.from_ms >= from_ms && o.from_ms < to_ms)
        {
            two.overlaps += 1;
            two.total += Duration::from_millis(o.ms(now_ms));
        }
        two
    }

    /// `gw` alone held the VIP and alone answered since `window`, answers flow, and the
    /// watcher watches.
    fn steady_on(&self, gw: usize, window: Instant) -> bool {
        let now = Instant::now();
        let answers = self.record.answers();
        let recent: Vec<_> = answers.iter().filter(|a| a.0 >= window).collect();
        let flowing = answers
            .last()
            .is_some_and(|a| a.1 == gw && now - a.0 < Duration::from_millis(100));
        let window_ms = self.record.unix_ms(window);
        let (watching, alone) = {
            let w = self.watch.lock();
            (
                w.ready && !w.ended,
                w.holders(GROUP) == [GW_NAMES[gw]]
                    && w.last_change(GROUP).is_some_and(|at| at <= window_ms),
            )
        };
        watching && flowing && alone && recent.len() > 10 && recent.iter().all(|a| a.1 == gw)
    }

    /// Waits until `gw` has held the VIP alone and alone answered for STEADY.
    fn settle(&self, gw: usize, limit: Duration) -> Result<Instant, String> {
        wait_for(limit, || self.steady_on(gw, Instant::now() - STEADY)).ok_or_else(|| {
            let watching = if self.watch.lock().ended {
                "; the watcher has stopped"
            } else {
                ""
            };
            format!(
                "{} did not hold the VIP alone and answer within {limit:?} (holders now {:?}{watching})\n{}",
                GW_NAMES[gw],
                self.holders_now(),
                self.cluster.logs(30)
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
        Sample {
            row,
            outage: Some(self.record.outage(from, to)),
            failed,
            two_holders: self.two_holders(from, to),
            figures: Vec::new(),
        }
    }

    fn hard_failure(&mut self) -> Vec<Sample> {
        let netns = lab::netns(GW_NAMES[A]);
        let cut = Instant::now();
        lab::ip(&["-n", &netns, "link", "set", LAN, "down"]);
        let taken = self.answered(B, cut, TAKEOVER);
        std::thread::sleep(Duration::from_millis(500));
        let restored = Instant::now();
        lab::ip(&["-n", &netns, "link", "set", LAN, "up"]);
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
        self.cluster.sigkill(A);
        let taken = self.answered(B, killed, TAKEOVER);
        let stale_gone = match self.cluster.kind {
            // The lab's supervisor ran `havip release` (ExecStopPost); else the kernel
            // would, when its lifetime runs out. When it went is the watcher's release.
            Kind::Havip { .. } => wait_for(Duration::from_secs(10), || !self.holders_now()[A])
                .and_then(|_| self.released(A, killed)),
            // keepalived never removes it: look again 2 s after gw-b took over, then restart.
            Kind::Keepalived { .. } => {
                std::thread::sleep(Duration::from_secs(2));
                self.released(A, killed)
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
                let gone = wait_for(limit, || !self.holders_now()[A])
                    .and_then(|_| self.released(A, stopped));
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
                self.released(A, stopped)
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
        self.cluster.start(A);
        let back = self.settle(A, Duration::from_secs(30));
        let end = back.as_ref().map_or(Instant::now(), |t| *t);
        let failback = self.sample("failback (daemon restarted)", restarted, end, back.err());
        (restarted, failback)
    }

    fn graceful_stop(&mut self) -> Vec<Sample> {
        let stopped = Instant::now();
        self.cluster.sigterm(A);
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
            a = lab::port(GW_NAMES[A]),
            b = lab::port(GW_NAMES[B])
        );
        let started = Instant::now();
        lab::nft(lab::BRIDGE, &rules);
        std::thread::sleep(PARTITION);
        let healed = Instant::now();
        sh(&[
            "ip",
            "netns",
            "exec",
            lab::BRIDGE,
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
        let after = self.record.outage(healed, end);
        whole.figures = vec![("outage after healing", Some(after))];
        vec![whole]
    }

    fn manual(&mut self) -> Vec<Sample> {
        let started = Instant::now();
        let moved = self
            .cluster
            .failover(&["--to", GW_NAMES[B]])
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

    /// The watcher's errors (events may be lost) and anything it wrote to stderr.
    fn watch_errors(&self) -> Vec<String> {
        let w = self.watch.lock();
        w.errors
            .iter()
            .cloned()
            .chain(w.stderr.iter().map(|l| format!("stderr: {l}")))
            .collect()
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
        // Stop the threads and the watcher before the lab's namespaces go.
        self.record.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // keepalived is ours to end; a frozen one dies of SIGKILL all the same.
        for node in 0..GW_NAMES.len() {
            if matches!(self.cluster.kind, Kind::Keepalived { .. }) {
                self.cluster.sigkill(node);
            }
        }
        self.watch.stop();
        if let Some(summary) = self.watch.lock().summary.clone() {
            eprintln!("  watcher, whole lab: {summary}");
        }
        // Everything the lab runs (havip, its supervisors, the services), by PID.
        lab::down_quietly("hv-");
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
    let mut results = Results::default();
    for implementation in implementations()
        .into_iter()
        .filter(|i| wanted(&settings.impls, i.key))
    {
        bench_implementation(&settings, &implementation, &mut results);
    }
    print_table(&results.rows);
    if !results.failures.is_empty() {
        println!("\nRuns that failed (counted in the table, outage as a lower bound):");
        for failure in results.failures {
            println!("- {failure}");
        }
    }
}

/// Whether `key` is in the list the environment asked for (no list: every key).
fn wanted(list: &Option<Vec<String>>, key: &str) -> bool {
    list.as_ref().is_none_or(|l| l.iter().any(|k| k == key))
}

/// Every sample of the whole benchmark, by row (in the order rows first appeared) and
/// implementation, and the failures listed under the table.
#[derive(Default)]
struct Results {
    rows: BTreeMap<(usize, &'static str, String), Row>,
    failures: Vec<String>,
    order: BTreeMap<&'static str, usize>,
}

impl Results {
    fn add(&mut self, label: &str, s: Sample) {
        let next = self.order.len();
        let index = *self.order.entry(s.row).or_insert(next);
        self.rows
            .entry((index, s.row, label.to_string()))
            .or_default()
            .samples
            .push(s);
    }
}

/// One implementation on the lab: its cluster started and settled, its idle use (with the
/// default timers), then every run of every fault it is benchmarked for.
fn bench_implementation(
    settings: &Settings,
    implementation: &Implementation,
    results: &mut Results,
) {
    let faults: Vec<Fault> = Fault::ALL
        .into_iter()
        .filter(|f| implementation.faults.contains(f) && wanted(&settings.faults, f.key()))
        .collect();
    let mut bench = Bench::new(implementation.kind.clone());
    let label = bench.label.clone();
    match bench.address_lifetime {
        Some(lifetime) => eprintln!(
            "== {label} (address_lifetime {})",
            format_duration(lifetime)
        ),
        None => eprintln!("== {label}"),
    }
    bench.cluster.start_all();
    if let Err(e) = bench.settle(A, Duration::from_secs(60)) {
        eprintln!("  never settled: {e}");
        results
            .failures
            .push(format!("{}: never settled: {}", label, first_line(&e)));
        // Every run it would have made is counted, as not run.
        for fault in &faults {
            for _ in 0..settings.runs {
                let s = Sample::not_run(fault.row(), format!("never settled: {e}"));
                results.add(&label, s);
            }
        }
        return;
    }
    // Idle use is measured with the default timers only (and keepalived's).
    if !settings.idle.is_zero() && !implementation.key.starts_with("havip-") {
        match bench.idle_usage(settings.idle) {
            Some((cpu, rss)) => eprintln!(
                "IDLE {}: master {cpu:.3} % of one core, RSS {rss:.1} MiB over {:?}",
                label, settings.idle
            ),
            None => eprintln!("IDLE {}: could not read /proc", label),
        }
    }
    for fault in faults {
        for run in 1..=settings.runs {
            for s in bench.run(fault) {
                record_run(results, &label, fault, run, s);
            }
        }
    }
    let errors = bench.watch_errors();
    if !errors.is_empty() {
        results.failures.push(format!(
            "{}: the watcher reported {} error(s), first: {}",
            label,
            errors.len(),
            errors[0]
        ));
    }
}

/// One sample of a run: its line on stderr, its failure if it failed, its place in the
/// table.
fn record_run(results: &mut Results, label: &str, fault: Fault, run: usize, s: Sample) {
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
        results.failures.push(format!(
            "{} {} run {run}: {}: {}",
            label,
            fault.key(),
            s.row,
            first_line(why)
        ));
    }
    results.add(label, s);
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}
