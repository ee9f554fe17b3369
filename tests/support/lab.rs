//! The lab (DESIGN.md "The lab") as the e2e suite (`tests/lab_e2e.rs`), the failover
//! benchmark (`benches/failover_lab.rs`) and the data-plane fixture (`netns.rs`) see it:
//! the hosts of `vagrant/nodes.conf`, the one definition of the topology, built,
//! provisioned and run by `scripts/lab.sh` (namespace hv-NODE, bridge namespace hv-br,
//! bridge port p-NODE, interface lan0, files in /run/havip-lab/NODE; each gateway's havip
//! config is conf/NODE.toml as the provisioning wrote it); who holds a VIP from the one
//! watcher, `scripts/vip-watch.py` (`watch`). The one outage computation is `outage.rs`,
//! beside it.
//! It never touches a host interface (lab.sh makes every interface inside the lab's
//! namespaces) and starts nothing it does not stop. Its names are fixed: one lab at a time.
#![allow(dead_code)]

#[path = "host.rs"]
pub mod host;
#[path = "watch.rs"]
pub mod watch;

use std::process::{Command, Output, Stdio};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The namespace of the lab's bridge (and of its watcher).
pub const BRIDGE: &str = "hv-br";
/// Every host's one interface.
pub const LAN: &str = "lan0";
/// Where lab.sh keeps each node's files (`RUN/NODE/`).
pub const RUN: &str = "/run/havip-lab";

/// One line of vagrant/nodes.conf: a host (gateway, witness, crm, client) or a VIP group
/// (role `vip`: the name is the group's, the address its IPv4 VIP).
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub role: String,
    pub address: String,
}

/// The node list, in the file's order.
pub fn nodes() -> Vec<Node> {
    let path = format!("{REPO}/vagrant/nodes.conf");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [name, role, address] => Some(Node {
                name: name.to_string(),
                role: role.to_string(),
                address: address.to_string(),
            }),
            _ => None,
        })
        .collect()
}

/// The names of the nodes with `role`, in the file's order.
pub fn names_of(role: &str) -> Vec<String> {
    nodes()
        .into_iter()
        .filter(|n| n.role == role)
        .map(|n| n.name)
        .collect()
}

/// The address of `name` (a host's, or a VIP group's IPv4 VIP).
pub fn address_of(name: &str) -> String {
    nodes()
        .into_iter()
        .find(|n| n.name == name)
        .map(|n| n.address)
        .unwrap_or_else(|| panic!("{name} is not in vagrant/nodes.conf"))
}

/// The nodes that run havip: the gateways, then the witness.
pub fn havip_nodes() -> Vec<String> {
    let mut names = names_of("gateway");
    names.extend(names_of("witness"));
    names
}

/// Every host of the lab (VIP groups excluded).
pub fn hosts() -> Vec<String> {
    nodes()
        .into_iter()
        .filter(|n| n.role != "vip")
        .map(|n| n.name)
        .collect()
}

/// The namespace of host `name`.
pub fn netns(name: &str) -> String {
    format!("hv-{name}")
}

/// The bridge port (in `BRIDGE`) of host `name`'s cable.
pub fn port(name: &str) -> String {
    format!("p-{name}")
}

/// Node `name`'s directory: its havip.toml, data, control socket, logs and PID files.
pub fn dir(name: &str) -> String {
    format!("{RUN}/{name}")
}

/// Node `name`'s havip configuration, as the provisioning wrote it from conf/NAME.toml.
pub fn config(name: &str) -> String {
    format!("{RUN}/{name}/havip.toml")
}

/// Every line of every havip node's log (`NODE/havip.log`) that contains `needle`, with
/// its node.
pub fn log_lines(needle: &str) -> Vec<(String, String)> {
    havip_nodes()
        .into_iter()
        .flat_map(|n| {
            let text =
                std::fs::read_to_string(format!("{}/havip.log", dir(&n))).unwrap_or_default();
            text.lines()
                .filter(|l| l.contains(needle))
                .map(|l| (n.clone(), l.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `havip ARGS --config CONF` inside `node`'s namespace with that node's config: the
/// operator's CLI on that gateway. Its output, whatever its exit status.
pub fn havip(node: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &netns(node), env!("CARGO_BIN_EXE_havip")])
        .args(args)
        .args(["--config", &config(node)])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run havip {args:?} on {node}: {e}"))
}

/// `havip`, which must succeed (its output in the panic message otherwise).
pub fn havip_ok(node: &str, args: &[&str]) {
    let out = havip(node, args);
    assert!(
        out.status.success(),
        "havip {args:?} on {node}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `scripts/lab.sh ARGS` for the lab named by `prefix` (hv- is the lab; the data-plane
/// fixture makes others), with this build's havip.
pub fn lab_command(prefix: &str, args: &[&str]) -> Command {
    let mut command = Command::new(format!("{REPO}/scripts/lab.sh"));
    command
        .args(args)
        .env("HAVIP_BIN", env!("CARGO_BIN_EXE_havip"))
        .env("HAVIP_LAB_PREFIX", prefix);
    command
}

/// `scripts/lab.sh ARGS` on the lab; panics with its output if it fails.
pub fn lab_sh(args: &[&str]) -> Output {
    host::run(
        lab_command("hv-", args),
        &format!("scripts/lab.sh {args:?}"),
    )
}

/// `scripts/lab.sh down`, quietly and whatever happens: for Drop.
pub fn down_quietly(prefix: &str) {
    let _ = lab_command(prefix, &["down"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The watcher on the lab (`scripts/lab.sh watch`: every havip node, every address of
/// every VIP group as the gateways are configured); returns once it is subscribed or has
/// reported an error (`Watched::ready`, `Watched::errors`). It stops after `seconds`,
/// on `Watch::stop`, or when this process dies.
pub fn watch(seconds: u64) -> watch::Watch {
    watch_also(seconds, &[])
}

/// `watch`, also watching `extra` ("GROUP=ADDRESS" each: a group or an address that a
/// test adds to the gateways' files later, which `lab.sh watch` cannot know of yet).
pub fn watch_also(seconds: u64, extra: &[String]) -> watch::Watch {
    let seconds = seconds.to_string();
    let mut args = vec!["watch", "--seconds", &seconds];
    for vip in extra {
        args.extend(["--vip", vip]);
    }
    watch::Watch::start(lab_command("hv-", &args), "scripts/lab.sh watch")
}

/// The last `lines` lines of every havip node's log.
pub fn logs(lines: usize) -> String {
    havip_nodes()
        .iter()
        .map(|n| {
            let log = std::fs::read_to_string(format!("{RUN}/{n}/havip.log")).unwrap_or_default();
            let all: Vec<&str> = log.lines().collect();
            format!(
                "--- {n}\n{}",
                all[all.len().saturating_sub(lines)..].join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `nft -f -` inside `netns` (a newline closes the table: nft's one-line form wants it).
pub fn nft(netns: &str, rules: &str) {
    let rules = rules.replace("; } }", "; }\n}\n");
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("nft");
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(rules.as_bytes()).expect("nft rules");
    }
    assert!(
        child.wait().is_ok_and(|s| s.success()),
        "nft -f in {netns}: {rules}"
    );
}

/// `ip ARGS`, which must succeed.
pub fn ip(args: &[&str]) {
    let mut full = vec!["ip"];
    full.extend_from_slice(args);
    host::sh(&full);
}
