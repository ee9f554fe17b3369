//! systemd's notify protocol as real daemons speak it: each gateway gets a
//! `NOTIFY_SOCKET` that the test owns (a unix datagram socket in a temp dir, as systemd's
//! `/run/systemd/notify` is), and the test reads what a `Type=notify` unit would tell
//! systemd: `READY=1` once the node has joined, `STATUS=` with each group's state and
//! its changes, `WATCHDOG=1` at a quarter of `WATCHDOG_USEC` while the group loop runs,
//! and `STOPPING=1` on SIGTERM. Loopback, observe-only: no root, no namespaces.

mod support;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{Cluster, Options};

/// What one daemon sent to its notify socket, with when it arrived.
struct Received {
    socket: UnixDatagram,
    messages: Vec<(Instant, String)>,
}

impl Received {
    fn bind(path: &Path) -> Received {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        Received {
            socket,
            messages: Vec::new(),
        }
    }

    /// Reads until `limit` has passed.
    fn read_for(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.messages.push((Instant::now(), text));
            }
        }
    }

    /// Reads until a message has a line `line`; returns when it arrived.
    fn wait_line(&mut self, line: &str, limit: Duration, cluster: &Cluster) -> Instant {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some((at, _)) = self.messages.iter().find(|(_, m)| has_line(m, line)) {
                return *at;
            }
            self.read_for(Duration::from_millis(50));
        }
        panic!(
            "no {line:?} within {limit:?}; received {:?}\n{}",
            self.texts(),
            cluster.logs()
        );
    }

    fn texts(&self) -> Vec<&str> {
        self.messages.iter().map(|(_, m)| m.as_str()).collect()
    }
}

fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

#[test]
fn daemons_tell_systemd_ready_each_groups_state_and_ping_the_watchdog_while_their_loop_runs() {
    let _serial = support::SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let sockets = tempfile::tempdir().expect("tempdir");
    let (a_path, b_path) = (
        sockets.path().join("gw-a.notify"),
        sockets.path().join("gw-b.notify"),
    );
    let mut gw_a = Received::bind(&a_path);
    let mut gw_b = Received::bind(&b_path);
    let mut cluster = Cluster::start_only(41, Options::default(), &["witness"]);
    cluster.spawn_with_env(
        "gw-b",
        &[("NOTIFY_SOCKET", b_path.to_str().expect("utf-8"))],
    );
    // WatchdogSec=1s as systemd passes it: a ping every 250 ms.
    let spawned = Instant::now();
    cluster.spawn_with_env(
        "gw-a",
        &[
            ("NOTIFY_SOCKET", a_path.to_str().expect("utf-8")),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );

    // READY=1 comes first, once, with the groups' status in the same message.
    let ready = gw_a.wait_line("READY=1", Duration::from_secs(15), &cluster);
    let first = &gw_a.messages[0].1;
    assert!(has_line(first, "READY=1"), "{:?}", gw_a.texts());
    assert!(
        has_line(first, "STATUS=crm: BACKUP") || has_line(first, "STATUS=crm: MASTER"),
        "{first:?}"
    );
    // gw-a (priority 150) becomes master and says so.
    gw_a.wait_line("STATUS=crm: MASTER", Duration::from_secs(15), &cluster);
    gw_b.wait_line("READY=1", Duration::from_secs(15), &cluster);
    cluster.wait_holder("gw-a", Duration::from_secs(10));
    assert!(
        gw_b.texts()
            .iter()
            .all(|m| !m.contains("STATUS=crm: MASTER")),
        "gw-b never held: {:?}",
        gw_b.texts()
    );

    // The watchdog: pings for as long as we listen, never more than a half timeout apart.
    gw_a.read_for(Duration::from_secs(2));
    let pings: Vec<Instant> = gw_a
        .messages
        .iter()
        .filter(|(_, m)| has_line(m, "WATCHDOG=1"))
        .map(|(at, _)| *at)
        .collect();
    assert!(
        pings.iter().all(|at| *at >= ready),
        "no ping before READY: {:?}",
        gw_a.texts()
    );
    let listened = ready.elapsed();
    let expected = (listened.as_millis() / 250) as usize;
    assert!(
        pings.len() + 2 >= expected && pings.len() <= expected + 2,
        "{} pings in {listened:?}, expected about {expected} (one per 250 ms)",
        pings.len()
    );
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    let widest = gaps.iter().max().copied().unwrap_or_default();
    assert!(widest < Duration::from_millis(500), "pings {gaps:?} apart");
    // gw-b was given no WATCHDOG_USEC: no pings.
    gw_b.read_for(Duration::from_millis(100));
    assert!(
        gw_b.texts().iter().all(|m| !m.contains("WATCHDOG=1")),
        "{:?}",
        gw_b.texts()
    );

    // SIGTERM: STOPPING=1 at once; gw-b takes over and its status says so.
    let stopped = cluster.stop("gw-a", Duration::from_secs(5));
    assert!(stopped.is_some_and(|s| s.success()), "{}", cluster.logs());
    gw_a.read_for(Duration::from_millis(100));
    let stopping = gw_a
        .messages
        .iter()
        .position(|(_, m)| has_line(m, "STOPPING=1"))
        .unwrap_or_else(|| panic!("no STOPPING=1: {:?}", gw_a.texts()));
    assert!(
        gw_a.messages[stopping + 1..]
            .iter()
            .all(|(_, m)| !m.contains("WATCHDOG=1")),
        "no ping after STOPPING=1: {:?}",
        gw_a.texts()
    );
    gw_b.wait_line("STATUS=crm: MASTER", Duration::from_secs(10), &cluster);
    println!(
        "gw-a: READY {:?} after spawn; {} pings in {listened:?}, widest gap {widest:?}",
        ready.duration_since(spawned),
        pings.len()
    );
}
