//! The VIP data plane against the real kernel, in network namespaces (as root): netlink
//! addresses under a lifetime, gratuitous ARP and neighbour advertisements on the wire
//! (captured with an AF_PACKET reader and decoded with `havip::vip::packet`), the client's
//! neighbour table following a hand-over, the kernel removing a SIGKILLed holder's VIP,
//! the startup check, and the link watch. The `vip_tool` example does the work inside the
//! namespaces. The client namespace sets `net.ipv4.conf.all.arp_accept=1`: Linux creates a
//! neighbour entry from a gratuitous ARP only then (without it, it only updates an
//! existing entry, which is what real clients rely on after a failover).

#[path = "support/netns.rs"]
mod netns;

use std::time::{Duration, Instant};

use netns::{Host, LAN, Lab, Proc, require_root, unix_ns, vip_tool};
use serde_json::Value;

const VIP4: &str = "198.18.0.50";
const VIP6: &str = "2001:db8::50";

fn hold(lab: &mut Lab, host: &Host, extra: &[&str]) -> Proc {
    let tool = vip_tool();
    let mut args = vec![
        "hold",
        "--interface",
        LAN,
        "--address",
        "198.18.0.50/24",
        "--address",
        "2001:db8::50/64",
    ];
    args.extend_from_slice(extra);
    lab.spawn(host, &tool, &args)
}

fn capture(lab: &mut Lab, host: &Host, for_ms: u64) -> Proc {
    let tool = vip_tool();
    let for_ms = for_ms.to_string();
    let mut proc = lab.spawn(
        host,
        &tool,
        &["capture", "--interface", LAN, "--for-ms", &for_ms],
    );
    proc.expect("capturing", Duration::from_secs(10));
    proc
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(|x| x.as_str()).unwrap_or("")
}

/// Polls `check` every 5 ms for at most `limit`; returns how long it took.
fn within(limit: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

#[test]
fn holding_installs_the_vips_with_a_lifetime_and_announces_them() {
    require_root("the data-plane namespace tests");
    let mut lab = Lab::new();
    let gw = lab.host("gwa", 11);
    let client = lab.host("cl", 100);
    client.ip(&["neigh", "flush", "dev", LAN]);
    netns::sh(&[
        "ip",
        "netns",
        "exec",
        &client.netns,
        "sysctl",
        "-qw",
        "net.ipv4.conf.all.arp_accept=1",
        "net.ipv4.conf.lan0.arp_accept=1",
    ]);
    let mut cap = capture(&mut lab, &client, 3000);
    let mut holder = hold(&mut lab, &gw, &["--lifetime-s", "3"]);
    let started = holder.expect("hold", Duration::from_secs(10));
    holder.expect("holding", Duration::from_secs(5));

    // On the interface, with a finite lifetime, IPv6 without DAD.
    for vip in [VIP4, VIP6] {
        let entry = gw
            .address(vip)
            .unwrap_or_else(|| panic!("{vip} not on {LAN}"));
        let valid = entry
            .get("valid_life_time")
            .and_then(|v| v.as_u64())
            .unwrap_or(u64::MAX);
        assert!(valid <= 3, "{vip}: valid_lft {valid}, want <= 3 s: {entry}");
        if vip == VIP6 {
            assert_eq!(
                entry.get("nodad").and_then(|v| v.as_bool()),
                Some(true),
                "{entry}"
            );
        }
    }

    let frames = cap.collect(Duration::from_secs(5));
    let arps: Vec<&Value> = frames
        .iter()
        .filter(|f| field(f, "event") == "arp" && field(f, "sender_ip") == VIP4)
        .collect();
    let nas: Vec<&Value> = frames
        .iter()
        .filter(|f| field(f, "event") == "na" && field(f, "target") == VIP6)
        .collect();
    // A burst of 5 at once, a repeat burst of 5 after 2 s.
    assert_eq!(arps.len(), 10, "gratuitous ARPs: {arps:#?}");
    assert_eq!(nas.len(), 10, "neighbour advertisements: {nas:#?}");
    for arp in &arps {
        assert_eq!(field(arp, "eth_dst"), "ff:ff:ff:ff:ff:ff");
        assert_eq!(field(arp, "eth_src"), gw.mac);
        assert_eq!(
            arp.get("operation").and_then(|o| o.as_u64()),
            Some(1),
            "request"
        );
        assert_eq!(field(arp, "sender_mac"), gw.mac);
        assert_eq!(field(arp, "target_ip"), VIP4);
    }
    for na in &nas {
        assert_eq!(field(na, "destination_ip"), "ff02::1");
        assert_eq!(field(na, "eth_dst"), "33:33:00:00:00:01");
        assert_eq!(field(na, "eth_src"), gw.mac);
        assert_eq!(na.get("hop_limit").and_then(|h| h.as_u64()), Some(255));
        assert_eq!(na.get("override").and_then(|h| h.as_bool()), Some(true));
        assert_eq!(na.get("solicited").and_then(|h| h.as_bool()), Some(false));
        assert_eq!(na.get("router").and_then(|h| h.as_bool()), Some(false));
        assert_eq!(field(na, "target_mac"), gw.mac);
        assert_eq!(na.get("checksum_ok").and_then(|h| h.as_bool()), Some(true));
    }
    let first = unix_ns(arps[0]).min(unix_ns(nas[0]));
    let to_wire = first.saturating_sub(unix_ns(&started));
    let repeat = unix_ns(arps[5]).saturating_sub(unix_ns(arps[0]));
    println!(
        "hold() to first announcement on the wire: {:.2} ms; repeat burst after {:.0} ms",
        to_wire as f64 / 1e6,
        repeat as f64 / 1e6
    );
    assert!(
        (1900..2500).contains(&(repeat / 1_000_000)),
        "repeat burst after {repeat} ns"
    );
    assert_eq!(client.neighbour(VIP4).as_deref(), Some(gw.mac.as_str()));

    // Release removes both addresses before the tool reports it.
    holder.close_stdin();
    holder.expect("released", Duration::from_secs(5));
    assert!(
        gw.address(VIP4).is_none() && gw.address(VIP6).is_none(),
        "{:?}",
        gw.addresses()
    );
}

#[test]
fn after_a_hand_over_the_client_points_at_the_new_holder_within_the_burst() {
    require_root("the data-plane namespace tests");
    let mut lab = Lab::new();
    let a = lab.host("gwa", 11);
    let b = lab.host("gwb", 12);
    let client = lab.host("cl", 100);
    let mut holder = hold(&mut lab, &a, &[]);
    holder.expect("holding", Duration::from_secs(10));
    // A client that talked to the VIP through gw-a (an existing entry, as in real life).
    for vip in [VIP4, VIP6] {
        client.ip(&[
            "neigh", "replace", vip, "lladdr", &a.mac, "dev", LAN, "nud", "stale",
        ]);
    }
    holder.close_stdin();
    holder.expect("released", Duration::from_secs(5));
    let mut new_holder = hold(&mut lab, &b, &[]);
    new_holder.expect("holding", Duration::from_secs(10));
    // The burst is 5 x 10 ms; the entry must move within it (and some scheduling slack).
    for vip in [VIP4, VIP6] {
        let took = within(Duration::from_millis(500), || {
            client.neighbour(vip).as_deref() == Some(b.mac.as_str())
        });
        let took = took.unwrap_or_else(|| {
            panic!(
                "{vip}: client still at {:?}, want {}",
                client.neighbour(vip),
                b.mac
            )
        });
        println!("{vip}: client's entry moved to the new holder {took:?} after hold()");
    }
    assert!(a.address(VIP4).is_none() && a.address(VIP6).is_none());
}

#[test]
fn the_kernel_removes_a_sigkilled_holders_vips_within_the_lifetime() {
    require_root("the data-plane namespace tests");
    let mut lab = Lab::new();
    let gw = lab.host("gwa", 11);
    let lifetime = Duration::from_secs(2);
    let mut holder = hold(&mut lab, &gw, &["--lifetime-s", "2"]);
    holder.expect("holding", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    lab.kill(&holder);
    let killed = Instant::now();
    let gone = within(lifetime + Duration::from_secs(2), || {
        gw.address(VIP4).is_none() && gw.address(VIP6).is_none()
    });
    let gone = gone.unwrap_or_else(|| panic!("VIPs still there: {:?}", gw.addresses()));
    println!(
        "SIGKILL to the kernel removing the VIPs: {:?} (lifetime {lifetime:?})",
        killed.elapsed()
    );
    // The last refresh was at most a third of the lifetime before the kill, and the
    // kernel checks lifetimes with up to a second of slack.
    assert!(gone <= lifetime + Duration::from_secs(1), "took {gone:?}");
}

#[test]
fn a_static_address_equal_to_a_vip_is_refused_and_our_leftovers_are_removed() {
    require_root("the data-plane namespace tests");
    let mut lab = Lab::new();
    let gw = lab.host("gwa", 11);
    let tool = vip_tool();
    let reconcile = [
        "reconcile",
        "--interface",
        LAN,
        "--address",
        "198.18.0.50/24",
        "--address",
        "2001:db8::50/64",
    ];

    // An operator's (permanent) address: refused, and left alone.
    gw.ip(&["addr", "add", "198.18.0.50/24", "dev", LAN]);
    let proc = lab.spawn(&gw, &tool, &reconcile);
    assert_eq!(lab.wait(&proc, Duration::from_secs(10)), Some(2));
    let error = proc.stderr();
    assert!(
        error.contains("198.18.0.50/24 is configured statically on lan0")
            && error.contains("havip would delete an operator's address; remove it from the interface or from vip_group[crm].addresses"),
        "{error}"
    );
    assert!(gw.address(VIP4).is_some());
    gw.ip(&["addr", "del", "198.18.0.50/24", "dev", LAN]);

    // A leftover of ours (a finite lifetime): removed before joining.
    gw.ip(&[
        "addr",
        "add",
        "198.18.0.50/24",
        "dev",
        LAN,
        "valid_lft",
        "30",
        "preferred_lft",
        "30",
    ]);
    gw.ip(&[
        "addr",
        "add",
        "2001:db8::50/64",
        "dev",
        LAN,
        "valid_lft",
        "30",
        "preferred_lft",
        "30",
        "nodad",
    ]);
    let mut proc = lab.spawn(&gw, &tool, &reconcile);
    proc.expect("reconciled", Duration::from_secs(10));
    assert!(
        gw.address(VIP4).is_none() && gw.address(VIP6).is_none(),
        "{:?}",
        gw.addresses()
    );

    // A missing interface is named.
    let proc = lab.spawn(
        &gw,
        &tool,
        &[
            "reconcile",
            "--interface",
            "nosuch0",
            "--address",
            "198.18.0.50/24",
        ],
    );
    assert_eq!(lab.wait(&proc, Duration::from_secs(10)), Some(2));
    assert!(
        proc.stderr().contains("interface nosuch0 does not exist"),
        "{}",
        proc.stderr()
    );
}

#[test]
fn the_link_watch_reports_a_link_going_down_and_coming_back() {
    require_root("the data-plane namespace tests");
    let mut lab = Lab::new();
    let gw = lab.host("gwa", 11);
    let tool = vip_tool();
    let mut links = lab.spawn(
        &gw,
        &tool,
        &["links", "--interface", LAN, "--for-ms", "10000"],
    );
    let initial = links.expect("link", Duration::from_secs(10));
    assert_eq!(
        initial.get("up").and_then(|u| u.as_bool()),
        Some(true),
        "{initial}"
    );

    // Administratively down inside the gateway.
    let before = netns::sh(&["date", "+%s%N"]);
    gw.ip(&["link", "set", LAN, "down"]);
    let down = links.expect("link", Duration::from_secs(2));
    assert_eq!(
        down.get("up").and_then(|u| u.as_bool()),
        Some(false),
        "{down}"
    );
    let before: u128 = String::from_utf8_lossy(&before.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    println!(
        "admin down reported {:.2} ms after `ip link set down` started",
        (unix_ns(&down) - before) as f64 / 1e6
    );
    gw.ip(&["link", "set", LAN, "up"]);
    let up = links.expect("link", Duration::from_secs(2));
    assert_eq!(up.get("up").and_then(|u| u.as_bool()), Some(true), "{up}");

    // Carrier lost: the cable's other end (the bridge port) goes down.
    let cut = Instant::now();
    lab.bridge_ip(&["link", "set", &gw.port, "down"]);
    let down = links.expect("link", Duration::from_secs(2));
    assert_eq!(
        down.get("up").and_then(|u| u.as_bool()),
        Some(false),
        "{down}"
    );
    println!("carrier loss reported within {:?}", cut.elapsed());
    assert!(cut.elapsed() < Duration::from_millis(500));
}
