//! Failover on the wire, havip against keepalived, in the network-namespace lab (as root).
//!
//! Topology (tests/support/netns.rs): a bridge namespace; gw-a .11, gw-b .12, witness .13
//! and client .100 on 198.18.0.0/24; VIP 198.18.0.50/24 on the gateways' `lan0`. Each
//! implementation gets a fresh lab with the same topology, one after the other, in one run
//! of this binary:
//! - havip: the real daemons (gw-a priority 150, gw-b 100, a witness; failback after 2 s);
//! - keepalived (Debian's 2.2.7): VRRPv3, unicast peers, priorities 150/100, no witness,
//!   `advert_int 1` and `advert_int 0.1`.
//!
//! What is measured, all in this process on one monotonic clock:
//! - a UDP responder thread per gateway namespace, bound to the VIP with IP_FREEBIND (so
//!   it exists before the VIP does), answers with its gateway's name: it stands for the
//!   service behind the VIP and survives the HA daemon being killed;
//! - a probe thread in the client namespace sends one datagram to the VIP every 10 ms and
//!   records every answer and who sent it. The client's neighbour cache is never flushed:
//!   a stale ARP entry is part of what a failover costs. Outage = the longest gap between
//!   two answers in the fault's window, minus the 10 ms probe interval (0 = no probe lost);
//! - a watcher thread samples every 10 ms which gateway namespace has the VIP (a bind()
//!   to it succeeds only where it is a local address); split-brain = time with two holders.
//!
//! Run as root: `scripts/bench-failover.sh` (or `cargo bench --bench failover_lab`).
//! Env: RUNS (default 10), IMPLS (comma list of havip, havip-tuned, havip-fast, ka-1,
//! ka-0.1),
//! FAULTS (comma list of hard, kill, stop, partition, manual), IDLE_SECS (default 30; 0
//! skips the idle CPU/RSS measurement). Results go to docs/failover-bench.md.

#[path = "../tests/support/netns.rs"]
mod netns;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netns::{Host, LAN, Lab, Proc, require_root, sh};
use socket2::{Domain, Protocol, Socket, Type};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 50);
const VIP_CIDR: &str = "198.18.0.50/24";
const PORT: u16 = 9999;
const PROBE_EVERY: Duration = Duration::from_millis(10);
const WATCH_EVERY: Duration = Duration::from_millis(10);
/// How long the gateway partition lasts before it heals.
const PARTITION: Duration = Duration::from_secs(5);
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
    Stop,
    Partition,
    Manual,
}

impl Fault {
    const ALL: [Fault; 5] = [
        Fault::Hard,
        Fault::Kill,
        Fault::Stop,
        Fault::Partition,
        Fault::Manual,
    ];

    fn key(self) -> &'static str {
        match self {
            Fault::Hard => "hard",
            Fault::Kill => "kill",
            Fault::Stop => "stop",
            Fault::Partition => "partition",
            Fault::Manual => "manual",
        }
    }
}

#[derive(Clone)]
enum Kind {
    Havip {
        heartbeat: &'static str,
        election: &'static str,
    },
    Keepalived {
        advert_int: &'static str,
    },
}

#[derive(Clone)]
struct Implementation {
    key: &'static str,
    label: &'static str,
    kind: Kind,
    faults: &'static [Fault],
}

fn implementations() -> Vec<Implementation> {
    use Fault::*;
    vec![
        Implementation {
            key: "havip",
            label: "havip (defaults: hb 128ms, election 400..500ms)",
            kind: Kind::Havip {
                heartbeat: "128ms",
                election: "400ms..500ms",
            },
            faults: &[Hard, Kill, Stop, Partition, Manual],
        },
        Implementation {
            key: "havip-tuned",
            label: "havip tuned (hb 20ms, election 60..120ms)",
            kind: Kind::Havip {
                heartbeat: "20ms",
                election: "60ms..120ms",
            },
            faults: &[Hard],
        },
        // The most aggressive timers the config accepts at a 10 ms heartbeat, give or take
        // (the heartbeat must be at most a third of the minimum election timeout and half
        // the hold lease, which is that minimum less 20 ms at these values).
        Implementation {
            key: "havip-fast",
            label: "havip fast (hb 10ms, election 45..90ms)",
            kind: Kind::Havip {
                heartbeat: "10ms",
                election: "45ms..90ms",
            },
            faults: &[Hard],
        },
        Implementation {
            key: "ka-1",
            label: "keepalived (advert_int 1)",
            kind: Kind::Keepalived { advert_int: "1" },
            faults: &[Hard, Kill, Stop, Partition],
        },
        Implementation {
            key: "ka-0.1",
            label: "keepalived (advert_int 0.1)",
            kind: Kind::Keepalived { advert_int: "0.1" },
            faults: &[Hard, Kill, Stop, Partition],
        },
    ]
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

/// Everything the threads saw, stamped on this process's monotonic clock.
#[derive(Default)]
struct Record {
    /// (when, gateway index) of every answer the client received.
    answers: Mutex<Vec<(Instant, usize)>>,
    /// (when, does gw-a hold, does gw-b hold).
    holders: Mutex<Vec<(Instant, [bool; 2])>>,
    stop: AtomicBool,
}

impl Record {
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

    fn answered_by_since(&self, gw: usize, since: Instant) -> bool {
        self.answers.lock().is_ok_and(|a| {
            a.iter()
                .rev()
                .take_while(|x| x.0 >= since)
                .any(|x| x.1 == gw)
        })
    }

    /// `gw` alone held the VIP and alone answered for the last `window`, and answers flow.
    fn steady_on(&self, gw: usize, window: Instant) -> bool {
        let now = Instant::now();
        let answers = self.answers();
        let recent: Vec<_> = answers.iter().filter(|a| a.0 >= window).collect();
        let flowing = answers
            .last()
            .is_some_and(|a| a.1 == gw && now - a.0 < Duration::from_millis(100));
        let holders = self.holders();
        let alone = holders
            .iter()
            .filter(|h| h.0 >= window)
            .all(|h| h.1[gw] && !h.1[1 - gw]);
        flowing && alone && recent.len() > 10 && recent.iter().all(|a| a.1 == gw)
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

/// Samples every WATCH_EVERY which gateway has the VIP as a local address: bind() to it
/// succeeds only there. The thread hops between the two namespaces for each sample.
fn watcher(gateways: [&Host; 2], record: Arc<Record>) -> JoinHandle<()> {
    let names = [gateways[0].netns.clone(), gateways[1].netns.clone()];
    std::thread::spawn(move || {
        let files = [open_netns(&names[0]), open_netns(&names[1])];
        while !record.stop.load(Ordering::Relaxed) {
            let mut held = [false; 2];
            for (gw, file) in files.iter().enumerate() {
                // SAFETY: as in enter_netns; the fd stays open for the thread's life.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert!(rc == 0, "setns: {}", std::io::Error::last_os_error());
                held[gw] = UdpSocket::bind(SocketAddrV4::new(VIP, 0)).is_ok();
            }
            if let Ok(mut holders) = record.holders.lock() {
                holders.push((Instant::now(), held));
            }
            std::thread::sleep(WATCH_EVERY);
        }
    })
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

/// Total time in [from, to] during which both gateways had the VIP.
fn split_brain(holders: &[(Instant, [bool; 2])], from: Instant, to: Instant) -> Duration {
    holders
        .windows(2)
        .filter(|w| w[1].0 > from && w[1].0 <= to && w[1].1 == [true, true])
        .map(|w| w[1].0 - w[0].0)
        .sum()
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

/// One measured window of one run.
struct Sample {
    row: &'static str,
    outage: Duration,
    /// The window ended at its time limit, not because the VIP answered again.
    censored: bool,
    split_brain: Duration,
    /// Further figures of the run, summarised per row: None = it never happened.
    figures: Vec<(&'static str, Option<Duration>)>,
}

fn sample(
    record: &Record,
    row: &'static str,
    from: Instant,
    to: Instant,
    censored: bool,
) -> Sample {
    Sample {
        row,
        outage: outage(&record.answers(), from, to),
        censored,
        split_brain: split_brain(&record.holders(), from, to),
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
        ["gw-a", "gw-b", "witness"][node]
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
            Kind::Havip {
                heartbeat,
                election,
            } => {
                let config = self.havip_config(node, heartbeat, election);
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

    fn havip_config(&self, node: usize, heartbeat: &str, election: &str) -> PathBuf {
        let name = self.name(node);
        let peers: String = (0..3)
            .map(|n| {
                format!(
                    "[[cluster.peers]]\nname = \"{}\"\naddress = \"198.18.0.{}:7400\"\n",
                    self.name(n),
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
        let dir = self.node_dir(node);
        let text = format!(
            "[node]\nname = \"{name}\"\nrole = \"{role}\"\ndata_dir = \"{data}\"\n\n[cluster]\nlisten = \"198.18.0.{ip}:7400\"\nkey_file = \"{key}\"\n{peers}\n[timers]\nheartbeat = \"{heartbeat}\"\nelection_timeout = \"{election}\"\n\n[control]\nsocket = \"{sock}\"\n\n{group}",
            role = if node == 2 { "witness" } else { "gateway" },
            data = dir.join("data").display(),
            ip = 11 + node,
            key = self.key.display(),
            sock = self.socket(node).display(),
        );
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
    fn failover(&self, args: &[&str]) {
        let socket = self.socket(A).to_string_lossy().into_owned();
        let mut full = vec![havip(), "failover", "--socket", &socket, "--group", "crm"];
        full.extend_from_slice(args);
        sh(&full);
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
    bridge_netns: String,
    ports: [String; 2],
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
        let record = Arc::new(Record::default());
        let threads = vec![
            responder(&a, A, record.clone()),
            responder(&b, B, record.clone()),
            probe(&client, record.clone()),
            watcher([&a, &b], record.clone()),
        ];
        let ports = [a.port.clone(), b.port.clone()];
        let cluster = Cluster::new(kind, vec![a, b, witness]);
        Bench {
            lab,
            cluster,
            record,
            threads,
            bridge_netns,
            ports,
        }
    }

    /// Waits until `gw` has held the VIP alone and alone answered for STEADY.
    fn settle(&self, gw: usize, limit: Duration) -> Result<Instant, String> {
        wait_for(limit, || self.record.steady_on(gw, Instant::now() - STEADY)).ok_or_else(|| {
            format!(
                "{} did not hold the VIP alone within {limit:?} (holders now {:?})\n{}",
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

    fn hard_failure(&mut self) -> Result<Vec<Sample>, String> {
        let host = self.cluster.hosts[A].clone();
        let cut = Instant::now();
        host.ip(&["link", "set", LAN, "down"]);
        let taken = self.answered(B, cut, Duration::from_secs(15));
        std::thread::sleep(Duration::from_millis(500));
        let restored = Instant::now();
        host.ip(&["link", "set", LAN, "up"]);
        let back = self.settle(A, Duration::from_secs(30));
        let mut samples = vec![sample(
            &self.record,
            "hard failure (lan0 down)",
            cut,
            restored,
            taken.is_none(),
        )];
        let end = back.as_ref().map_or(Instant::now(), |t| *t);
        samples.push(sample(
            &self.record,
            "failback (lan0 up again)",
            restored,
            end,
            back.is_err(),
        ));
        back.map(|_| samples)
    }

    fn daemon_kill(&mut self) -> Result<Vec<Sample>, String> {
        let killed = Instant::now();
        self.cluster.sigkill(&mut self.lab, A);
        self.cluster.after_death(&mut self.lab, A);
        let taken = self.answered(B, killed, Duration::from_secs(15));
        let stale_gone = match self.cluster.kind {
            // `havip release` (ExecStopPost) removed it; else the kernel would, when its
            // lifetime runs out.
            Kind::Havip { .. } => {
                // When it went, from the watcher's record (not when this wait noticed).
                wait_for(Duration::from_secs(10), || !self.record.latest_holders()[A]).and_then(
                    |_| {
                        self.record
                            .holders()
                            .into_iter()
                            .find(|(at, held)| *at > killed && !held[A])
                            .map(|(at, _)| at)
                    },
                )
            }
            // keepalived never removes it: look again 2 s after gw-b took over, then restart.
            Kind::Keepalived { .. } => {
                std::thread::sleep(Duration::from_secs(2));
                (!self.record.latest_holders()[A]).then(Instant::now)
            }
        };
        let (restarted, end, failback) = self.restart_with_failback();
        let mut kill = sample(
            &self.record,
            "daemon SIGKILL",
            killed,
            restarted,
            taken.is_none(),
        );
        // Two holders until the killed node's VIP is gone, i.e. up to the restart for keepalived.
        kill.split_brain = split_brain(&self.record.holders(), killed, end);
        kill.figures = vec![
            ("gw-b answered after", taken.map(|t| t - killed)),
            (
                "killed gw-a's VIP removed after",
                stale_gone.map(|t| t - killed),
            ),
        ];
        failback.map(|failback| vec![kill, failback])
    }

    /// Starts gw-a's daemon again and waits (bounded) until it holds and answers alone:
    /// when it was started, when that wait ended, and the failback's sample.
    fn restart_with_failback(&mut self) -> (Instant, Instant, Result<Sample, String>) {
        let restarted = Instant::now();
        self.cluster.start(&mut self.lab, A);
        let back = self.settle(A, Duration::from_secs(30));
        let end = back.as_ref().map_or(Instant::now(), |t| *t);
        let failback = sample(
            &self.record,
            "failback (daemon restarted)",
            restarted,
            end,
            back.is_err(),
        );
        (restarted, end, back.map(|_| failback))
    }

    fn graceful_stop(&mut self) -> Result<Vec<Sample>, String> {
        let stopped = Instant::now();
        self.cluster.sigterm(&mut self.lab, A);
        let taken = self.answered(B, stopped, Duration::from_secs(15));
        std::thread::sleep(Duration::from_millis(500));
        let (restarted, _, failback) = self.restart_with_failback();
        let stop = sample(
            &self.record,
            "graceful stop (SIGTERM)",
            stopped,
            restarted,
            taken.is_none(),
        );
        failback.map(|failback| vec![stop, failback])
    }

    /// Drops every frame between gw-a's and gw-b's bridge ports; both still reach the
    /// client and the witness.
    fn partition(&mut self) -> Result<Vec<Sample>, String> {
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
        let mut whole = sample(
            &self.record,
            "gateway partition (5 s, then healed)",
            started,
            end,
            back.is_err(),
        );
        let after = outage(&self.record.answers(), healed, end);
        whole.figures = vec![("outage after healing", Some(after))];
        Ok(vec![whole])
    }

    fn manual(&mut self) -> Result<Vec<Sample>, String> {
        let started = Instant::now();
        self.cluster.failover(&["--to", "gw-b"]);
        self.settle(B, Duration::from_secs(15))?;
        let cleared = Instant::now();
        self.cluster.failover(&["--clear"]);
        let back = self.settle(A, Duration::from_secs(30));
        let end = back.as_ref().map_or(Instant::now(), |t| *t);
        let to_b = sample(
            &self.record,
            "manual failover (--to gw-b)",
            started,
            cleared,
            false,
        );
        let clear = sample(
            &self.record,
            "manual --clear (back to gw-a)",
            cleared,
            end,
            back.is_err(),
        );
        back.map(|_| vec![to_b, clear])
    }

    fn run(&mut self, fault: Fault) -> Result<Vec<Sample>, String> {
        self.settle(A, Duration::from_secs(30))?;
        match fault {
            Fault::Hard => self.hard_failure(),
            Fault::Kill => self.daemon_kill(),
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
        // Stop the threads before Lab's Drop removes their namespaces.
        self.record.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // keepalived's VRRP child is not Lab's child: kill it by its PID.
        for node in 0..self.cluster.nodes() {
            self.cluster.sigkill(&mut self.lab, node);
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

fn print_table(rows: &BTreeMap<(usize, &'static str, &'static str), Row>) {
    println!();
    println!(
        "| fault | implementation | outage min / median / max (ms) | split-brain ms (total / max of a run) | runs | notes |"
    );
    println!("|---|---|---|---|---|---|");
    for ((_, fault, implementation), row) in rows {
        let mut outages: Vec<Duration> = row.samples.iter().map(|s| s.outage).collect();
        outages.sort();
        let censored = row.samples.iter().filter(|s| s.censored).count();
        let total: Duration = row.samples.iter().map(|s| s.split_brain).sum();
        let worst = row
            .samples
            .iter()
            .map(|s| s.split_brain)
            .max()
            .unwrap_or_default();
        let mut note = summarise(&row.samples);
        if censored > 0 {
            note = format!(
                "{censored} run(s) never answered again before the time limit (counted up to it); {note}"
            );
        }
        println!(
            "| {fault} | {implementation} | {} / {} / {} | {} / {} | {} | {note} |",
            ms(outages[0]),
            ms(outages[outages.len() / 2]),
            ms(outages[outages.len() - 1]),
            ms(total),
            ms(worst),
            row.samples.len()
        );
    }
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
    let mut rows: BTreeMap<(usize, &'static str, &'static str), Row> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut order = BTreeMap::new();
    for implementation in implementations()
        .into_iter()
        .filter(|i| wanted(&settings.impls, i.key))
    {
        eprintln!("== {}", implementation.label);
        let mut bench = Bench::new(implementation.kind.clone());
        bench.cluster.start_all(&mut bench.lab);
        if let Err(e) = bench.settle(A, Duration::from_secs(60)) {
            failures.push(format!("{}: never settled: {e}", implementation.label));
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
        for fault in Fault::ALL {
            if !implementation.faults.contains(&fault) || !wanted(&settings.faults, fault.key()) {
                continue;
            }
            for run in 1..=settings.runs {
                match bench.run(fault) {
                    Ok(samples) => {
                        for s in samples {
                            eprintln!(
                                "  {} run {run}: {}: outage {} ms{}, split-brain {} ms {:?}",
                                fault.key(),
                                s.row,
                                ms(s.outage),
                                if s.censored { " (time limit)" } else { "" },
                                ms(s.split_brain),
                                s.figures
                            );
                            let next = order.len();
                            let index = *order.entry(s.row).or_insert(next);
                            rows.entry((index, s.row, implementation.label))
                                .or_default()
                                .samples
                                .push(s);
                        }
                    }
                    Err(e) => {
                        eprintln!("  {} run {run} FAILED: {e}", fault.key());
                        failures.push(format!(
                            "{} {} run {run}: {}",
                            implementation.label,
                            fault.key(),
                            first_line(&e)
                        ));
                    }
                }
            }
        }
    }
    print_table(&rows);
    if !failures.is_empty() {
        println!("\nRuns that failed:");
        for failure in failures {
            println!("- {failure}");
        }
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}
