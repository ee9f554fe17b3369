//! The VIP data plane against the real kernel, in network namespaces (as root): netlink
//! addresses under a lifetime, gratuitous ARP and neighbour advertisements on the wire
//! (captured with an AF_PACKET reader and decoded with `havip::vip::packet`), the client's
//! neighbour table following a hand-over, the kernel removing a SIGKILLed holder's VIP,
//! the startup check, and the link watch. The `vip_tool` example does the work inside the
//! namespaces. The client namespace sets `net.ipv4.conf.all.arp_accept=1`: Linux creates a
//! neighbour entry from a gratuitous ARP only then (without it, it only updates an
//! existing entry, which is what real clients rely on after a failover).

#[path = "support/figures.rs"]
mod figures;
#[path = "support/netns.rs"]
mod netns;
#[path = "support/poll.rs"]
mod poll;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use figures::figure;
use netns::{AddressWatch, Host, LAN, Lab, Proc, address_of, require_root, unix_ns, vip_tool};
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

/// Asserts that no VIP address, IPv4 or IPv6, was ever on `first` and `second` at once
/// during `watch`, and that the watch saw each of them hold every address (a watch that
/// saw nothing would prove nothing). Reports the figures of `what`, also when it fails.
fn assert_one_holder_at_a_time(watch: &mut AddressWatch, what: &str, first: &str, second: &str) {
    let mut wrong = Vec::new();
    for vip in [VIP4, VIP6] {
        let history = watch.history(vip);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        figure(&format!(
            "{what}: {vip}: {} holder changes, two holders: {} ms",
            history.changes,
            history.overlap_ms(now_ms)
        ));
        if !history.overlaps.is_empty() {
            wrong.push(format!(
                "{vip} on two hosts at once, {} ms by the watcher's clock: {:#?}",
                history.overlap_ms(now_ms),
                history.overlaps
            ));
        }
        for host in [first, second] {
            if !history.holders_seen.contains(host) {
                wrong.push(format!(
                    "the watch never saw {host} hold {vip}: {history:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{what}:\n{}", wrong.join("\n"));
}

/// Polls `check` every 5 ms for at most `limit`; returns how long it took.
fn within(limit: Duration, check: impl FnMut() -> bool) -> Option<Duration> {
    poll::within_every(limit, Duration::from_millis(5), check)
}

#[test]
fn holding_installs_the_vips_with_a_lifetime_and_announces_them() {
    require_root("the data-plane namespace tests");
    let mut lab = Lab::new();
    let gw = lab.host("gw-a");
    let client = lab.host("client");
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
    figure(&format!(
        "hold() to first announcement on the wire: {:.2} ms; repeat burst after {:.0} ms",
        to_wire as f64 / 1e6,
        repeat as f64 / 1e6
    ));
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

/// A reload changed a held group's addresses: the hold with the new set adds the new
/// address and announces it, removes the dropped one, and the address in both never
/// leaves the interface (issue 13: "only those addresses change").
#[test]
fn a_held_group_whose_addresses_change_keeps_the_ones_in_both() {
    require_root("the data-plane namespace tests");
    let mut lab = Lab::new();
    let gw = lab.host("gw-a");
    let client = lab.host("client");
    const VIP4_NEW: &str = "198.18.0.51";
    let mut watch = lab.watch_addresses(&[&gw], &[VIP4, VIP6, VIP4_NEW]);
    let mut cap = capture(&mut lab, &client, 3000);
    let mut holder = hold(
        &mut lab,
        &gw,
        &[
            "--reshape-to",
            "198.18.0.50/24",
            "--reshape-to",
            "198.18.0.51/24",
            "--reshape-after-ms",
            "500",
        ],
    );
    holder.expect("holding", Duration::from_secs(10));
    let reshaped = holder.expect("reshaped", Duration::from_secs(5));
    assert!(gw.address(VIP4).is_some(), "{:?}", gw.addresses());
    assert!(gw.address(VIP4_NEW).is_some(), "{:?}", gw.addresses());
    assert!(gw.address(VIP6).is_none(), "{:?}", gw.addresses());
    let frames = cap.collect(Duration::from_secs(5));
    let announced_new = frames
        .iter()
        .filter(|f| field(f, "event") == "arp" && field(f, "sender_ip") == VIP4_NEW)
        .map(unix_ns)
        .min()
        .expect("the new address is announced");
    figure(&format!(
        "reshape: hold() with the new set to the new address's first GARP: {:.2} ms",
        announced_new.saturating_sub(unix_ns(&reshaped)) as f64 / 1e6
    ));
    holder.close_stdin();
    holder.expect("released", Duration::from_secs(5));
    // The address in both sets was added once and removed once (at the release); the
    // dropped one added and removed; the new one added and removed.
    for (vip, changes) in [(VIP4, 2), (VIP6, 2), (VIP4_NEW, 2)] {
        let history = watch.history(vip);
        assert_eq!(history.changes, changes, "{vip}: {history:?}");
    }
    assert!(gw.addresses().iter().all(|a| {
        let text = a.to_string();
        !text.contains(VIP4) && !text.contains(VIP4_NEW)
    }));
}

/// A holder whose hold lease ran out (a frozen master, thawed later) must not announce
/// again: its overdue repeat burst would point the clients back at a host that is about
/// to drop the VIP.
#[test]
fn no_announcement_goes_out_after_the_hold_lease_ran_out() {
    require_root("the data-plane namespace tests");
    let mut lab = Lab::new();
    let gw = lab.host("gw-a");
    let client = lab.host("client");
    let mut cap = capture(&mut lab, &client, 3000);
    let mut holder = hold(&mut lab, &gw, &["--lease-ms", "500"]);
    holder.expect("holding", Duration::from_secs(10));
    // Nothing holds again after the lease: the data plane's deadline guard takes the VIPs
    // down at its end (a thread of its own), not the kernel lifetime 3 s later.
    std::thread::sleep(Duration::from_millis(900));
    let left: Vec<String> = gw
        .addresses()
        .iter()
        .filter_map(|a| a.get("local").and_then(|l| l.as_str()).map(str::to_string))
        .filter(|a| a == VIP4 || a == VIP6)
        .collect();
    assert!(
        left.is_empty(),
        "the VIPs outlived their 500 ms hold lease: {left:?} still on gw-a after 900 ms"
    );
    let frames = cap.collect(Duration::from_secs(5));
    let arps = frames
        .iter()
        .filter(|f| field(f, "event") == "arp" && field(f, "sender_ip") == VIP4)
        .count();
    let nas = frames
        .iter()
        .filter(|f| field(f, "event") == "na" && field(f, "target") == VIP6)
        .count();
    // The first burst of 5 went out inside the lease; the repeat at 2 s did not.
    assert_eq!((arps, nas), (5, 5), "announcements seen: {frames:#?}");
    holder.close_stdin();
    holder.expect("released", Duration::from_secs(5));
}

#[test]
fn after_a_hand_over_the_client_points_at_the_new_holder_within_the_burst() {
    require_root("the data-plane namespace tests");
    let mut lab = Lab::new();
    let a = lab.host("gw-a");
    let b = lab.host("gw-b");
    let client = lab.host("client");
    let mut watch = lab.watch_addresses(&[&a, &b], &[VIP4, VIP6]);
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
        figure(&format!(
            "{vip}: client's entry moved to the new holder {took:?} after hold()"
        ));
    }
    assert!(a.address(VIP4).is_none() && a.address(VIP6).is_none());
    assert_one_holder_at_a_time(&mut watch, "hand-over between holders", "gw-a", "gw-b");
}

#[test]
fn the_kernel_removes_a_sigkilled_holders_vips_within_the_lifetime() {
    require_root("the data-plane namespace tests");
    let mut lab = Lab::new();
    let gw = lab.host("gw-a");
    let lifetime = Duration::from_secs(2);
    let mut holder = hold(&mut lab, &gw, &["--lifetime-s", "2"]);
    holder.expect("holding", Duration::from_secs(10));
    // Held past its lifetime: the refreshes keep it (NLM_F_REPLACE resets valid_lft).
    std::thread::sleep(Duration::from_millis(2500));
    for vip in [VIP4, VIP6] {
        let entry = gw
            .address(vip)
            .unwrap_or_else(|| panic!("{vip} expired while held"));
        let valid = entry
            .get("valid_life_time")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        assert!(
            (1..=2).contains(&valid),
            "{vip}: valid_lft {valid}: {entry}"
        );
    }
    lab.kill(&holder);
    let killed = Instant::now();
    let gone = within(lifetime + Duration::from_secs(2), || {
        gw.address(VIP4).is_none() && gw.address(VIP6).is_none()
    });
    let gone = gone.unwrap_or_else(|| panic!("VIPs still there: {:?}", gw.addresses()));
    figure(&format!(
        "SIGKILL to the kernel removing the VIPs: {:?} (lifetime {lifetime:?})",
        killed.elapsed()
    ));
    // The last refresh was at most a third of the lifetime before the kill, and the
    // kernel rounds its lifetime check up to a whole second (round_jiffies_up).
    assert!(gone <= lifetime + Duration::from_secs(1), "took {gone:?}");
}

#[test]
fn a_static_address_equal_to_a_vip_is_refused_and_our_leftovers_are_removed() {
    require_root("the data-plane namespace tests");
    let mut lab = Lab::new();
    let gw = lab.host("gw-a");
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
    let gw = lab.host("gw-a");
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
    figure(&format!(
        "admin down reported {:.2} ms after `ip link set down` started",
        (unix_ns(&down) - before) as f64 / 1e6
    ));
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
    figure(&format!("carrier loss reported within {:?}", cut.elapsed()));
    assert!(cut.elapsed() < Duration::from_millis(500));
}

// ---- The daemon itself on the lab --------------------------------------------------------

/// The VIP interface of the daemon tests: a second cable, so that cutting it leaves the
/// peers' network (lan0) up and only the link watch can notice.
const VIP_IF: &str = "vip0";

/// Node `name`'s config for the daemon tests: the lab's names and addresses
/// (vagrant/nodes.conf), but its own VIP interface (`VIP_IF`), timers and failback delay,
/// and no health checks (the fixture has no CRM servers).
fn write_config(dir: &std::path::Path, name: &str, key: &std::path::Path) -> std::path::PathBuf {
    let nodes = [("gw-a", 150), ("gw-b", 100), ("witness", 0)];
    let peers: String = nodes
        .iter()
        .map(|(n, _)| {
            format!(
                "[[cluster.peers]]\nname = \"{n}\"\naddress = \"{}:7400\"\n",
                address_of(n)
            )
        })
        .collect();
    let priority = nodes
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, p)| *p);
    let group = if name == "witness" {
        "[[vip_group]]\nname = \"crm\"\n".to_string()
    } else {
        format!(
            "[[vip_group]]\nname = \"crm\"\ninterface = \"{VIP_IF}\"\naddresses = [\"198.18.0.50/24\", \"2001:db8::50/64\"]\npriority = {priority}\nfailback = true\nfailback_delay = \"1s\"\naddress_lifetime = \"3s\"\n"
        )
    };
    let node_dir = dir.join(name);
    std::fs::create_dir_all(&node_dir).expect("node dir");
    let text = format!(
        "[node]\nname = \"{name}\"\nrole = \"{role}\"\ndata_dir = \"{data}\"\n\n[cluster]\nlisten = \"{listen}:7400\"\nkey_file = \"{key}\"\n{peers}\n[timers]\nheartbeat = \"50ms\"\nelection_timeout = \"150ms..300ms\"\n\n[control]\nsocket = \"{sock}\"\n\n{group}",
        role = if name == "witness" {
            "witness"
        } else {
            "gateway"
        },
        data = node_dir.join("data").display(),
        listen = address_of(name),
        key = key.display(),
        sock = node_dir.join("havip.sock").display(),
    );
    let path = node_dir.join("havip.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Starts gw-a, gw-b and the witness (`hosts`, in that order) with `write_config`'s
/// files in `dir`, and waits for gw-a to hold the VIPs.
fn start_daemons(lab: &mut Lab, hosts: &[Host; 3], dir: &std::path::Path) -> Vec<Proc> {
    let key = keygen(dir);
    let havip = env!("CARGO_BIN_EXE_havip");
    let mut daemons = Vec::new();
    for (host, name) in hosts.iter().zip(["gw-a", "gw-b", "witness"]) {
        let config = write_config(dir, name, &key).to_string_lossy().into_owned();
        daemons.push(lab.spawn(host, havip, &["run", "--config", &config]));
    }
    if within(Duration::from_secs(20), || holds(&hosts[0])).is_none() {
        panic!("gw-a never held the VIPs:\n{}", logs(&daemons));
    }
    assert!(!holds(&hosts[1]));
    daemons
}

fn logs(daemons: &[Proc]) -> String {
    daemons
        .iter()
        .map(|d| d.stderr())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The PID of the fence (`havip fence`) that daemon `pid` started: its only child.
fn fence_of(pid: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_else(|e| panic!("cannot read the children of {pid}: {e}"));
    let fence = children
        .split_whitespace()
        .next()
        .and_then(|c| c.parse().ok());
    let fence = fence.unwrap_or_else(|| panic!("daemon {pid} has no fence process"));
    let cmdline = std::fs::read_to_string(format!("/proc/{fence}/cmdline")).unwrap_or_default();
    assert!(
        cmdline.contains("fence"),
        "child {fence} of {pid} is {cmdline:?}"
    );
    fence
}

fn keygen(dir: &std::path::Path) -> std::path::PathBuf {
    let key = dir.join("cluster.key");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_havip"))
        .args(["keygen", "--out"])
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .status();
    assert!(status.is_ok_and(|s| s.success()), "havip keygen failed");
    key
}

fn holds(host: &Host) -> bool {
    let out = host.ip(&["-j", "addr", "show", "dev", VIP_IF]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains(VIP4) && text.contains(VIP6)
}

/// Whether `host` still has either VIP: the kernel expires a dead holder's IPv4 and IPv6
/// addresses on separate timers, the IPv6 one up to a second later (seen: an overlap of
/// the new holder's IPv6 VIP with the dead one's when only the IPv4 one was waited for).
fn has_any(host: &Host) -> bool {
    let out = host.ip(&["-j", "addr", "show", "dev", VIP_IF]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains(VIP4) || text.contains(VIP6)
}

#[test]
fn the_daemon_refuses_to_start_over_a_static_vip_or_without_capabilities() {
    require_root("the data-plane namespace tests");
    let mut lab = Lab::new();
    let gw = lab.host("gw-a");
    lab.cable(&gw, VIP_IF);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = keygen(dir.path());
    let config = write_config(dir.path(), "gw-a", &key);
    let config = config.to_string_lossy().into_owned();
    let havip = env!("CARGO_BIN_EXE_havip");

    gw.ip(&["addr", "add", "198.18.0.50/24", "dev", VIP_IF]);
    let proc = lab.spawn(&gw, havip, &["run", "--config", &config]);
    assert_eq!(
        lab.wait(&proc, Duration::from_secs(10)),
        Some(2),
        "{}",
        proc.stderr()
    );
    let error = proc.stderr();
    assert!(
        error.contains("198.18.0.50/24 is configured statically on vip0")
            && error.contains("remove it from the interface or from vip_group[crm].addresses"),
        "{error}"
    );
    assert!(
        gw.address_on(VIP_IF, VIP4),
        "the operator's address must stay"
    );
    gw.ip(&["addr", "del", "198.18.0.50/24", "dev", VIP_IF]);

    let proc = lab.spawn(
        &gw,
        "setpriv",
        &[
            "--bounding-set",
            "-net_raw",
            "--inh-caps",
            "-net_raw",
            havip,
            "run",
            "--config",
            &config,
        ],
    );
    assert_eq!(
        lab.wait(&proc, Duration::from_secs(10)),
        Some(2),
        "{}",
        proc.stderr()
    );
    let error = proc.stderr();
    assert!(
        error.contains("missing CAP_NET_RAW (needed to announce the VIP with gratuitous ARP); run as root or with AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW"),
        "{error}"
    );
}

#[test]
fn the_daemon_hands_the_vip_over_on_link_down_and_a_killed_holders_vip_expires_or_is_released() {
    require_root("the data-plane namespace tests");
    let mut lab = Lab::new();
    let hosts = [lab.host("gw-a"), lab.host("gw-b"), lab.host("witness")];
    let ports: Vec<String> = hosts[..2].iter().map(|h| lab.cable(h, VIP_IF)).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let havip = env!("CARGO_BIN_EXE_havip");
    // Every address change of both gateways, from before the first daemon starts to the
    // end: each VIP address on one gateway at a time, whatever happens in between.
    let mut watch = lab.watch_addresses(&[&hosts[0], &hosts[1]], &[VIP4, VIP6]);
    let daemons = start_daemons(&mut lab, &hosts, dir.path());
    let (a, b) = (&hosts[0], &hosts[1]);

    // gw-a's VIP link loses carrier; its peers' network stays up.
    lab.bridge_ip(&["link", "set", &ports[0], "down"]);
    let released = within(Duration::from_secs(2), || !holds(a));
    let taken = within(Duration::from_secs(5), || holds(b));
    let (Some(released), Some(taken)) = (released, taken) else {
        panic!("no hand-over after link down:\n{}", logs(&daemons));
    };
    figure(&format!(
        "link down: gw-a released {released:?} and gw-b held {:?} after the cut",
        released + taken
    ));
    assert!(
        released < Duration::from_millis(200),
        "gw-a released only after {released:?}"
    );

    // SIGKILL the holder: its fence sees the pipe close and removes the VIPs at once,
    // not when their kernel lifetime (3 s) runs out.
    lab.kill(&daemons[1]);
    let gone = within(Duration::from_secs(6), || !has_any(b));
    let gone = gone.unwrap_or_else(|| panic!("gw-b's VIPs outlived its daemon"));
    figure(&format!(
        "daemon SIGKILL to its fence removing its VIPs: {gone:?} (address_lifetime 3s)"
    ));
    assert!(
        gone < Duration::from_secs(1),
        "gw-b's VIPs went only after {gone:?}: the kernel lifetime, not the fence"
    );

    // gw-a's link returns: it is eligible again and, with gw-b gone, holds.
    lab.bridge_ip(&["link", "set", &ports[0], "up"]);
    if within(Duration::from_secs(10), || holds(a)).is_none() {
        panic!(
            "gw-a did not take the VIPs back after its link returned:\n{}",
            logs(&daemons)
        );
    }

    // `havip release` (systemd's ExecStopPost) never takes a running daemon's VIPs...
    let config_a = dir.path().join("gw-a").join("havip.toml");
    let config_a = config_a.to_string_lossy().into_owned();
    let release = lab.spawn(a, havip, &["release", "--config", &config_a]);
    let code = lab.wait(&release, Duration::from_secs(10));
    assert_eq!(
        code,
        Some(1),
        "release beside a running daemon: {}",
        release.stderr()
    );
    assert!(holds(a), "release took a running daemon's VIPs");

    // ...and removes a SIGKILLed one's at once, not when their lifetime runs out, even
    // with the key file gone (it never needs the key). Its fence is killed first, as
    // systemd kills the whole unit after a stop timeout: otherwise the fence would have
    // removed them already.
    let fence = fence_of(daemons[0].pid);
    netns::sh(&["kill", "-KILL", &fence.to_string()]);
    lab.kill(&daemons[0]);
    std::fs::rename(
        dir.path().join("cluster.key"),
        dir.path().join("cluster.key.moved"),
    )
    .expect("move the key file aside");
    assert!(
        holds(a),
        "the VIPs vanished with the daemon (expected: the kernel lifetime)"
    );
    let started = Instant::now();
    let release = lab.spawn(a, havip, &["release", "--config", &config_a]);
    let code = lab.wait(&release, Duration::from_secs(10));
    assert_eq!(code, Some(0), "release after SIGKILL: {}", release.stderr());
    assert!(!holds(a), "release left the dead daemon's VIPs");
    figure(&format!(
        "havip release after SIGKILL: VIPs gone {:?} after it started",
        started.elapsed()
    ));
    assert_one_holder_at_a_time(&mut watch, "daemon hand-overs", "gw-a", "gw-b");
}

/// Issue 14 item 9: a master whose daemon is frozen (SIGSTOP; the host itself alive)
/// stops answering for the VIP before its hold lease ends: its fence, a process of its
/// own, takes the addresses down. Seen from the client as a neighbour sees it: ARP
/// who-has and TCP SYNs aimed at the frozen host's MACs get no answer from it as the VIP
/// after the lease (before the fence: 1.8-2.6 s after the new master held, the kernel
/// lifetime). And never two holders.
#[test]
fn a_frozen_holders_fence_takes_its_vips_down_within_the_hold_lease() {
    require_root("the data-plane namespace tests");
    let mut lab = Lab::new();
    let hosts = [lab.host("gw-a"), lab.host("gw-b"), lab.host("witness")];
    for host in &hosts[..2] {
        lab.cable(host, VIP_IF);
    }
    let client = lab.host("client");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut watch = lab.watch_addresses(&[&hosts[0], &hosts[1]], &[VIP4, VIP6]);
    let daemons = start_daemons(&mut lab, &hosts, dir.path());
    let (a, b) = (&hosts[0], &hosts[1]);
    // gw-a's hold lease, from the file it runs with.
    let hold_lease = {
        let path = dir.path().join("gw-a").join("havip.toml");
        let text = std::fs::read_to_string(&path).expect("gw-a's config");
        let config = havip::config::Config::from_str(&path, &text).expect("gw-a's config parses");
        havip::hold::hold_lease(config.timers.leader_lease(), havip::hold::TICK)
    };

    let vip_mac = interface_mac(a, VIP_IF);
    let macs = format!("{vip_mac},{}", a.mac);
    let script = format!("{}/scripts/vip-answers.py", env!("CARGO_MANIFEST_DIR"));
    let mut answers = lab.spawn(
        &client,
        "python3",
        &[&script, LAN, &client.ipv4, VIP4, &macs, "80", "10", "30"],
    );
    answers.expect("ready", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    answers.collect(Duration::from_millis(50));
    let answering = answers
        .seen
        .iter()
        .filter(|v| field(v, "event") == "answer")
        .count();
    assert!(
        answering > 0,
        "gw-a never answered as the VIP before the freeze"
    );

    let stopped = unix_ms();
    netns::sh(&["kill", "-STOP", &daemons[0].pid.to_string()]);
    let gone = within(Duration::from_secs(5), || !has_any(a));
    let taken = within(Duration::from_secs(5), || holds(b));
    // Answers printed up to here; gw-a thawed may take the VIP back (failback), so
    // nothing after the thaw counts.
    answers.collect(Duration::from_millis(500));
    let thawed = unix_ms();
    netns::sh(&["kill", "-CONT", &daemons[0].pid.to_string()]);
    let (Some(gone), Some(_)) = (gone, taken) else {
        panic!(
            "gone {gone:?}, gw-b took over {taken:?}:\n{}",
            logs(&daemons)
        );
    };
    let last = answers
        .seen
        .iter()
        .filter(|v| field(v, "event") == "answer")
        .filter_map(|v| v.get("unix_ms").and_then(Value::as_u64))
        .filter(|&at| at < thawed)
        .max()
        .unwrap_or(0);
    let last_after = last.saturating_sub(stopped);
    figure(&format!(
        "SIGSTOP of the holder: VIPs gone after {gone:?} (seen by polling), last answer as the \
         VIP {last_after} ms after the stop; hold lease {hold_lease:?}"
    ));
    assert!(
        Duration::from_millis(last_after) <= hold_lease,
        "the frozen gw-a answered as the VIP {last_after} ms after SIGSTOP, past its hold \
         lease ({hold_lease:?}):\n{}",
        logs(&daemons)
    );
    assert_one_holder_at_a_time(&mut watch, "a frozen holder", "gw-a", "gw-b");
}

/// The MAC address of `interface` in `host`.
fn interface_mac(host: &Host, interface: &str) -> String {
    let out = host.ip(&["-j", "link", "show", "dev", interface]);
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mac = parsed
        .get(0)
        .and_then(|l| l.get("address"))
        .and_then(Value::as_str);
    mac.unwrap_or_else(|| panic!("no MAC for {interface}"))
        .to_string()
}

fn unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

// ---- Benchmark (scripts/bench-dataplane.sh) ------------------------------------------------

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "BENCH {name}: min {:.1} ms, median {:.1} ms, max {:.1} ms over {} runs",
        ms(samples[0]),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

/// Ten runs each of: hold() to the first announcement on the client's wire, and SIGKILL
/// of the holder to the kernel removing its VIPs (address_lifetime 3 s, killed at a
/// different point of the refresh cycle each run).
#[test]
#[ignore = "benchmark: scripts/bench-dataplane.sh"]
fn bench_dataplane() {
    require_root("the data-plane benchmark");
    let mut lab = Lab::new();
    let gw = lab.host("gw-a");
    let client = lab.host("client");
    let mut to_wire = Vec::new();
    for _ in 0..10 {
        let mut cap = capture(&mut lab, &client, 700);
        let mut holder = hold(&mut lab, &gw, &["--repeat-after-ms", "0"]);
        let started = holder.expect("hold", Duration::from_secs(10));
        let frames = cap.collect(Duration::from_secs(3));
        let first = frames
            .iter()
            .filter(|f| matches!(field(f, "event"), "arp" | "na"))
            .map(unix_ns)
            .min()
            .unwrap_or_else(|| panic!("no announcement captured: {frames:?}"));
        to_wire.push(Duration::from_nanos(
            first.saturating_sub(unix_ns(&started)) as u64,
        ));
        holder.close_stdin();
        holder.expect("released", Duration::from_secs(5));
    }
    summary("hold() to first announcement on the wire", to_wire);

    let mut expiry = Vec::new();
    for run in 0..10u64 {
        let mut holder = hold(&mut lab, &gw, &["--lifetime-s", "3"]);
        holder.expect("holding", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(1000 + run * 113));
        lab.kill(&holder);
        let gone = within(Duration::from_secs(6), || {
            gw.address(VIP4).is_none() && gw.address(VIP6).is_none()
        });
        expiry.push(gone.unwrap_or_else(|| panic!("VIPs outlived the holder")));
    }
    summary(
        "SIGKILL to the kernel removing the VIPs (lifetime 3 s)",
        expiry,
    );
}
