//! `havip fence` on its own (issue 14 item 9), as the daemon runs it: the real binary in a
//! network namespace of this test's own (a veth inside it, removed at the end; one /24
//! per group in 198.18.97-99.0, as removing a primary address takes its secondaries),
//! orders written down its stdin as the daemon writes them. Asserts: a deadline takes the
//! address down, one moved on in time does not; end of file takes every armed group down
//! at once; a disarmed group is never touched; SIGTERM (systemd signals the whole unit on
//! stop) does not end it. Needs root.

#[path = "support/poll.rs"]
mod poll;

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use havip::vip::fence::monotonic_ns;

const NETNS: &str = "hv-fence-test";

/// The namespace with `v0` up and its addresses, deleted (with the veth) in Drop.
struct Netns;

impl Netns {
    fn create() -> Netns {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
        sh(&["ip", "netns", "add", NETNS]);
        let netns = Netns;
        ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
        ip(&["link", "set", "v0", "up"]);
        ip(&["link", "set", "v1", "up"]);
        netns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run");
    assert!(out.status.success(), "{args:?}: {out:?}");
}

fn ip(args: &[&str]) {
    let mut full = vec!["ip", "-n", NETNS];
    full.extend_from_slice(args);
    sh(&full);
}

fn has(address: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", NETNS, "-br", "addr", "show", "dev", "v0"])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout).contains(&format!("{address}/"))
}

fn ifindex() -> u32 {
    let out = Command::new("ip")
        .args(["-n", NETNS, "-o", "link", "show", "dev", "v0"])
        .output()
        .expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .expect("ifindex")
}

fn spawn_fence() -> Child {
    Command::new("ip")
        .args(["netns", "exec", NETNS, env!("CARGO_BIN_EXE_havip"), "fence"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("start havip fence")
}

fn order(fence: &mut Child, line: &str) {
    let stdin = fence.stdin.as_mut().expect("the fence's stdin");
    stdin.write_all(line.as_bytes()).expect("write an order");
    stdin.flush().expect("flush");
}

fn arm(fence: &mut Child, group: &str, address: &str, lease_end: Instant) {
    let line = format!(
        "arm {group} {} {} {address}/24\n",
        monotonic_ns(lease_end),
        ifindex()
    );
    order(fence, &line);
}

fn within(limit: Duration, check: impl Fn() -> bool) -> Option<Duration> {
    poll::within_every(limit, Duration::from_millis(2), check)
}

#[test]
fn the_fence_keeps_its_deadlines_and_takes_everything_down_at_end_of_file() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the fence test needs root (a network namespace, CAP_NET_ADMIN)");
        return;
    }
    let _netns = Netns::create();
    for address in ["198.18.99.1", "198.18.98.2", "198.18.97.3"] {
        ip(&[
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "v0",
            "valid_lft",
            "60",
            "preferred_lft",
            "60",
        ]);
    }
    let mut fence = spawn_fence();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        fence.try_wait().expect("wait").is_none(),
        "the fence did not start"
    );

    // SIGTERM, as systemd sends the whole unit on stop: the fence stays.
    sh(&["kill", "-TERM", &fence.id().to_string()]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        fence.try_wait().expect("wait").is_none(),
        "SIGTERM ended the fence"
    );

    // crm: armed for 300 ms, moved on at 150 ms to 600 ms: still there at 400 ms,
    // gone before 600 ms.
    let start = Instant::now();
    arm(
        &mut fence,
        "crm",
        "198.18.99.1",
        start + Duration::from_millis(300),
    );
    // crm2: armed, then disarmed (the daemon released it itself): never touched.
    arm(
        &mut fence,
        "crm2",
        "198.18.98.2",
        start + Duration::from_millis(200),
    );
    order(&mut fence, "disarm crm2\n");
    std::thread::sleep(Duration::from_millis(150));
    arm(
        &mut fence,
        "crm",
        "198.18.99.1",
        start + Duration::from_millis(600),
    );
    std::thread::sleep(Duration::from_millis(250));
    assert!(
        has("198.18.99.1"),
        "the fence fired on a deadline that was moved on"
    );
    assert!(has("198.18.98.2"), "the fence touched a disarmed group");
    let gone = within(Duration::from_secs(2), || !has("198.18.99.1")).expect("crm taken down");
    let gone_at = start.elapsed();
    eprintln!("crm gone {gone:?} after the check, {gone_at:?} after the start (lease end 600 ms)");
    // By the deadline, not by the 60 s lifetime; polling `ip` adds its own lag, so the
    // precise figure is the print above (the lease itself: vip_netns, lab_e2e).
    assert!(
        gone_at < Duration::from_secs(1),
        "gone only {gone_at:?} after the start"
    );
    assert!(has("198.18.98.2"));

    // crm3: armed far out, then the daemon goes (its end of the pipe closes).
    arm(
        &mut fence,
        "crm3",
        "198.18.97.3",
        Instant::now() + Duration::from_secs(30),
    );
    std::thread::sleep(Duration::from_millis(50));
    assert!(has("198.18.97.3"));
    drop(fence.stdin.take());
    let gone = within(Duration::from_secs(2), || !has("198.18.97.3"))
        .expect("crm3 taken down at end of file");
    eprintln!("crm3 gone {gone:?} after end of file");
    let status = fence.wait().expect("the fence exits");
    assert!(status.success(), "{status:?}");
    assert!(has("198.18.98.2"), "end of file took a disarmed group");
}
