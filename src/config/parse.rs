//! The parser: one node's TOML text -> a `Config`, or every error in it, each with its
//! line:column, key path and a fix. One function per section (`[node]`, `[cluster]`,
//! `[timers]`, `[control]`, `[[vip_group]]`, `[notify]`; `[health]` is `check`'s),
//! each reading through a `Reader` that collects errors instead of stopping.
//!
//! Pure: works on text already in memory; never touches the host (the key file is
//! checked by `Config::load`, not here).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::reader::{At, Reader, Tab};
use super::{
    Announce, ClusterSection, Config, ConfigError, ConfigErrors, ControlSection, NodeSection,
    NotifySection, OnAllUnhealthy, Peer, Role, Timers, VipGroup, check, duration, format_duration,
};

const DEFAULT_DATA_DIR: &str = "/var/lib/havip";
const DEFAULT_KEY_FILE: &str = "/etc/havip/cluster.key";
const DEFAULT_SOCKET: &str = "/run/havip/havip.sock";

/// The outcome of reading one file: the config if nothing was wrong, every error, and
/// where the key file is (so `load` can check it even when other keys were wrong).
pub(super) struct Read {
    pub config: Option<Config>,
    pub errors: Vec<ConfigError>,
    pub key_file: Option<At<PathBuf>>,
    /// During a key rollover, the key still accepted (`cluster.previous_key_file`).
    pub previous_key_file: Option<At<PathBuf>>,
}

/// The config if the file was right, else every error in file order.
pub(super) fn finish(read: Read) -> Result<Config, ConfigErrors> {
    let mut errors = read.errors;
    match read.config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => {
            // File order reads best; errors without a position (missing keys) go last.
            errors.sort_by_key(|e| e.position.unwrap_or((usize::MAX, usize::MAX)));
            Err(ConfigErrors(errors))
        }
    }
}

const ROOT_KEYS: &[&str] = &[
    "node",
    "cluster",
    "timers",
    "control",
    "vip_group",
    "health",
    "notify",
    "backend",
];

/// Reads every section of one file, collecting every error rather than stopping at the
/// first. Sections that depend on others (groups and checks on the role, the peer list on
/// the node name) are read with what could be read.
pub(super) fn read(source: &Path, text: &str) -> Read {
    let mut r = Reader::new(source, text);
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let message = e.message().trim().replace('\n', "; ");
            r.error(&e.span(), "", format!("not valid TOML: {message}"));
            return Read {
                config: None,
                errors: r.errors,
                key_file: None,
                previous_key_file: None,
            };
        }
    };
    // The root has no text of its own to point at: its errors carry no line:column.
    let root = Tab {
        table: doc.as_table(),
        path: String::new(),
        span: None,
    };
    r.unknown_keys(&root, ROOT_KEYS);

    let node = read_node(&mut r, &root);
    let (cluster, key_file, previous_key_file) = read_cluster(&mut r, &root, node.as_ref());
    let timers = read_timers(&mut r, &root);
    let control = read_control(&mut r, &root);
    let role = node.as_ref().map_or(Role::Gateway, |n| n.value.role);
    let vip_groups = read_groups(&mut r, &root, role);
    let health = check::read_health(&mut r, &root, role);
    let notify = read_notify(&mut r, &root);
    let backends = super::backend::read_backends(&mut r, &root, role, &health, &vip_groups);

    let config = match (node, cluster) {
        (Some(node), Some(cluster)) => Some(Config {
            source: source.to_path_buf(),
            node: node.value,
            cluster,
            timers,
            control,
            vip_groups,
            health,
            notify,
            backends,
        }),
        _ => None,
    };
    Read {
        config,
        errors: r.errors,
        key_file,
        previous_key_file,
    }
}

/// A node, group or check name that was refused, and which characters would do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a valid name; use 1 to {max} {allowed}, like \"gw-a\"")]
pub(super) struct InvalidName {
    name: String,
    max: usize,
    allowed: &'static str,
}

/// Node names become Raft node ids, metric labels and file names: keep them plain.
/// Check names may also use upper case, '_' and '.'.
pub(super) fn valid_name(name: &str, max: usize, relaxed: bool) -> Result<(), InvalidName> {
    let allowed = |c: char| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || c == '-'
            || (relaxed && (c.is_ascii_uppercase() || c == '_' || c == '.'))
    };
    if name.is_empty() || name.chars().count() > max || !name.chars().all(allowed) {
        return Err(InvalidName {
            name: name.to_string(),
            max,
            allowed: if relaxed {
                "letters, digits, '-', '_' and '.'"
            } else {
                "lower-case letters, digits and '-'"
            },
        });
    }
    Ok(())
}

fn read_name(r: &mut Reader<'_>, t: &Tab<'_>, example: &str) -> Option<At<String>> {
    if !r.require(t, "name", example) {
        return None;
    }
    let name = r.string(t, "name")?;
    match valid_name(&name.value, 32, false) {
        Ok(()) => Some(name),
        Err(why) => {
            r.error(&name.span, t.key("name"), why);
            None
        }
    }
}

fn read_node(r: &mut Reader<'_>, root: &Tab<'_>) -> Option<At<NodeSection>> {
    if !r.require_with(
        root,
        "node",
        "missing; add a [node] section with `name` and `role`",
    ) {
        return None;
    }
    let t = r.table(root, "node")?;
    r.unknown_keys(&t, &["name", "role", "data_dir"]);
    let name = read_name(r, &t, "\"gw-a\"");
    let role = if r.require(&t, "role", "\"gateway\"") {
        r.string(&t, "role")
    } else {
        None
    };
    let role = role.and_then(|role| match role.value.as_str() {
        "gateway" => Some(Role::Gateway),
        "witness" => Some(Role::Witness),
        other => {
            r.error(
                &role.span,
                t.key("role"),
                format!("{other:?} is not a role; write \"gateway\" or \"witness\""),
            );
            None
        }
    });
    let data_dir = r
        .path(&t, "data_dir")
        .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), |d| d.value);
    let name = name?;
    Some(At {
        value: NodeSection {
            name: name.value,
            role: role?,
            data_dir,
        },
        span: name.span,
    })
}

/// Reads `[cluster]`. The key file's path is returned even when the section has other
/// errors, so `Config::load` can check the file too.
fn read_cluster(
    r: &mut Reader<'_>,
    root: &Tab<'_>,
    node: Option<&At<NodeSection>>,
) -> (
    Option<ClusterSection>,
    Option<At<PathBuf>>,
    Option<At<PathBuf>>,
) {
    if !r.require_with(
        root,
        "cluster",
        "missing; add a [cluster] section with `listen` and a [[cluster.peers]] entry for every node",
    ) {
        return (None, None, None);
    }
    let Some(t) = r.table(root, "cluster") else {
        return (None, None, None);
    };
    r.unknown_keys(
        &t,
        &[
            "listen",
            "key_file",
            "previous_key_file",
            "allow_even_voters",
            "peers",
        ],
    );
    let listen = if r.require(&t, "listen", "\"198.18.0.11:7400\"") {
        r.socket_addr(&t, "listen")
    } else {
        None
    };
    let key_file = if t.has("key_file") {
        r.path(&t, "key_file")
    } else {
        Some(At {
            value: PathBuf::from(DEFAULT_KEY_FILE),
            span: None,
        })
    };
    let previous_key_file = if t.has("previous_key_file") {
        r.path(&t, "previous_key_file")
    } else {
        None
    };
    let allow_even_voters = r.boolean(&t, "allow_even_voters").unwrap_or(false);
    let peers = read_peers(r, &t);
    if let Some(peers) = &peers {
        check_peer_list(r, &t, peers, node, listen.as_ref(), allow_even_voters);
    }

    let cluster = match (listen, peers, &key_file) {
        (Some(listen), Some(peers), Some(key_file)) => Some(ClusterSection {
            listen: listen.value,
            key_file: key_file.value.clone(),
            previous_key_file: previous_key_file.as_ref().map(|p| p.value.clone()),
            peers,
            allow_even_voters,
        }),
        _ => None,
    };
    (cluster, key_file, previous_key_file)
}

/// Reads `[[cluster.peers]]`: `None` when it is missing or empty or any entry has an
/// error, so the rules about the list as a whole are only applied to a whole list.
fn read_peers(r: &mut Reader<'_>, t: &Tab<'_>) -> Option<Vec<Peer>> {
    if !r.require_with(
        t,
        "peers",
        "missing; add a [[cluster.peers]] entry with `name` and `address` for every node, this one included",
    ) {
        return None;
    }
    let entries = r.tables(t, "peers");
    let mut peers = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    let mut addresses: HashMap<SocketAddr, String> = HashMap::new();
    let mut all_read = !entries.is_empty();
    for entry in &entries {
        match read_peer(r, entry, &mut names, &mut addresses) {
            Some(peer) => peers.push(peer),
            None => all_read = false,
        }
    }
    all_read.then_some(peers)
}

/// One `[[cluster.peers]]` entry. `names` and `addresses` hold the key path of the entry
/// that first used each, so a duplicate can say where the first one is.
fn read_peer(
    r: &mut Reader<'_>,
    entry: &Tab<'_>,
    names: &mut HashMap<String, String>,
    addresses: &mut HashMap<SocketAddr, String>,
) -> Option<Peer> {
    r.unknown_keys(entry, &["name", "address"]);
    let name = read_name(r, entry, "\"gw-a\"");
    let address = if r.require(entry, "address", "\"198.18.0.11:7400\"") {
        r.socket_addr(entry, "address")
    } else {
        None
    };
    if let Some(name) = &name {
        once(r, names, name, entry, |first| {
            format!(
                "peer {:?} is already listed as {first}; list each node once",
                name.value
            )
        });
    }
    if let Some(address) = &address {
        if address.value.ip().is_unspecified() || address.value.port() == 0 {
            r.error(
                &address.span,
                entry.key("address"),
                format!("{} cannot be dialled; write the address the other nodes reach this peer on, like \"198.18.0.11:7400\"", address.value),
            );
        } else if let Some(first) = addresses.get(&address.value) {
            r.error(
                &address.span,
                entry.key("address"),
                format!(
                    "{} is already the address of {first}; each node needs its own address",
                    address.value
                ),
            );
        } else {
            addresses.insert(address.value, entry.path.clone());
        }
    }
    Some(Peer {
        name: name?.value,
        address: address?.value,
    })
}

/// The rules about the peer list as a whole: this node is on it and listens where the
/// others dial it, and the number of voters can keep a majority when one is lost.
fn check_peer_list(
    r: &mut Reader<'_>,
    t: &Tab<'_>,
    peers: &[Peer],
    node: Option<&At<NodeSection>>,
    listen: Option<&At<SocketAddr>>,
    allow_even_voters: bool,
) {
    let peers_span = t.span_of("peers").or_else(|| t.span.clone());
    if let Some(node) = node {
        match peers.iter().find(|p| p.name == node.value.name) {
            None => {
                let example =
                    listen.map_or_else(|| "198.18.0.11:7400".to_string(), |l| l.value.to_string());
                r.error(
                    &peers_span,
                    t.key("peers"),
                    format!(
                        "this node ({:?}) is not among the peers; every node lists all nodes, itself included: add [[cluster.peers]] name = {:?} address = \"{example}\"",
                        node.value.name, node.value.name
                    ),
                );
            }
            Some(own) => {
                if let Some(listen) = listen {
                    check_listen(r, t, listen, own);
                }
            }
        }
    }
    let names = peers.iter().map(|p| p.name.as_str());
    for (a, b, id) in same_ids(names, crate::consensus::types::node_id) {
        r.error(
            &peers_span,
            t.key("peers"),
            format!(
                "nodes {a:?} and {b:?} have the same node id {id:#x} (a hash of the name); rename one of them"
            ),
        );
    }
    if peers.len().is_multiple_of(2) && !allow_even_voters {
        r.error(
            &peers_span,
            t.key("peers"),
            even_voters_message(peers.len()),
        );
    }
}

/// Records `name` as used by `entry`, or reports it at `entry`'s `name` key with the
/// message `duplicate` makes from the key path that used it first.
fn once(
    r: &mut Reader<'_>,
    names: &mut HashMap<String, String>,
    name: &At<String>,
    entry: &Tab<'_>,
    duplicate: impl FnOnce(&str) -> String,
) {
    match names.get(&name.value) {
        Some(first) => r.error(&name.span, entry.key("name"), duplicate(first)),
        None => {
            names.insert(name.value.clone(), entry.path.clone());
        }
    }
}

/// Raft knows a node by a hash of its name (`node_id`): two names with one hash would be
/// one voter. Every pair of names whose `id`s are equal, with that id.
pub(super) fn same_ids<'a>(
    names: impl Iterator<Item = &'a str>,
    id: impl Fn(&str) -> u64,
) -> Vec<(&'a str, &'a str, u64)> {
    let mut seen = std::collections::BTreeMap::new();
    let mut same = Vec::new();
    for name in names {
        let hash = id(name);
        if let Some(other) = seen.insert(hash, name) {
            same.push((other, name, hash));
        }
    }
    same
}

/// Why an even number of voters is refused, in numbers: a majority of `n` is `n / 2 + 1`,
/// so `n` voters survive the loss of `n / 2 - 1` nodes, no more than `n - 1` would, and
/// losing half of them leaves no majority.
fn even_voters_message(n: usize) -> String {
    let survives = match (n / 2).saturating_sub(1) {
        0 => "no node".to_string(),
        1 => "one node".to_string(),
        k => format!("{k} nodes"),
    };
    format!(
        "{n} voters: a majority is {}, so they survive the loss of {survives}, no more than {} voters would, and losing half of them leaves no majority, so no VIP can move; add a witness node as a peer (role = \"witness\" in its own file) to make {}, or set `allow_even_voters = true` if you accept that",
        n / 2 + 1,
        n - 1,
        n + 1
    )
}

/// The other nodes dial this node's peer address, so `listen` must be reachable there:
/// same port, and the same IP unless it listens on every address (0.0.0.0 or ::).
fn check_listen(r: &mut Reader<'_>, t: &Tab<'_>, listen: &At<SocketAddr>, own: &Peer) {
    let (l, p) = (listen.value, own.address);
    if l.port() != p.port() {
        r.error(
            &listen.span,
            t.key("listen"),
            format!(
                "port {} differs from this node's peer address {p}, which the other nodes dial; write \"{}\"",
                l.port(),
                SocketAddr::new(l.ip(), p.port())
            ),
        );
    } else if !l.ip().is_unspecified() && l.ip() != p.ip() {
        r.error(
            &listen.span,
            t.key("listen"),
            format!(
                "{l} is not this node's peer address {p}, which the other nodes dial; write \"{p}\" (or \"{}\" to listen on every address)",
                SocketAddr::new(if p.is_ipv4() { IpAddr::from([0, 0, 0, 0]) } else { IpAddr::from([0u16; 8]) }, p.port())
            ),
        );
    }
}

fn read_timers(r: &mut Reader<'_>, root: &Tab<'_>) -> Timers {
    let defaults = Timers::default();
    let Some(t) = r.table(root, "timers") else {
        return defaults;
    };
    r.unknown_keys(&t, &["heartbeat", "election_timeout"]);
    let heartbeat = r.duration(&t, "heartbeat");
    if let Some(h) = heartbeat.as_ref().filter(|h| h.value.is_zero()) {
        r.error(
            &h.span,
            t.key("heartbeat"),
            "must be longer than 0s; the default is \"128ms\"",
        );
    }
    let election = read_election_timeout(r, &t);

    let heartbeat_value = heartbeat.as_ref().map_or(defaults.heartbeat, |h| h.value);
    let (min, max) = election.as_ref().map_or(
        (defaults.election_timeout_min, defaults.election_timeout_max),
        |e| e.value,
    );
    // Compared only when both were readable, so one bad value does not cause a second error.
    let unreadable = (t.has("heartbeat") && heartbeat.is_none())
        || (t.has("election_timeout") && election.is_none());
    // A follower refuses other candidates for `min` (the leader lease) after each heartbeat,
    // and the master keeps the VIPs only while a quorum acknowledged a heartbeat within the
    // hold lease: `min` less max(20 %, two hold-loop ticks) (`hold::hold_lease`). With the
    // heartbeat at most a third of `min` and half the hold lease, one heartbeat may be lost
    // (or the master's thread stall for one heartbeat) without the VIPs dropping.
    let hold = crate::hold::hold_lease(min, crate::hold::TICK);
    if !unreadable && (heartbeat_value * 3 > min || heartbeat_value * 2 > hold) {
        let span = heartbeat
            .as_ref()
            .map(|h| h.span.clone())
            .unwrap_or_else(|| t.span_of("election_timeout"));
        let spread = max.saturating_sub(min);
        let fitting_heartbeat = (min / 3).min(hold / 2);
        let fitting_min = (heartbeat_value * 3).max(crate::hold::leader_lease_for(
            heartbeat_value * 2,
            crate::hold::TICK,
        ));
        r.error(
            &span,
            t.key(if heartbeat.is_some() { "heartbeat" } else { "election_timeout" }),
            format!(
                "the heartbeat ({}) must be at most a third of the minimum election timeout ({}) and at most half the hold lease that leaves ({}), or the master may drop the VIPs through one lost heartbeat; use heartbeat = \"{}\" or election_timeout = \"{}..{}\"",
                format_duration(heartbeat_value),
                format_duration(min),
                format_duration(hold),
                format_duration(fitting_heartbeat),
                format_duration(fitting_min),
                format_duration(fitting_min + spread)
            ),
        );
    }
    Timers {
        heartbeat: heartbeat_value,
        election_timeout_min: min,
        election_timeout_max: max,
    }
}

/// `election_timeout = "MIN..MAX"`, with MIN below MAX.
fn read_election_timeout(r: &mut Reader<'_>, t: &Tab<'_>) -> Option<At<(Duration, Duration)>> {
    let range_hint = "write it as \"MIN..MAX\", like \"400ms..500ms\"";
    let e = r.string(t, "election_timeout")?;
    let Some((low, high)) = e.value.split_once("..") else {
        r.error(
            &e.span,
            t.key("election_timeout"),
            format!("{:?} is not a range; {range_hint}", e.value),
        );
        return None;
    };
    let mut bound = |text: &str| match duration::parse_duration(text) {
        Ok(d) => Some(d),
        Err(why) => {
            r.error(
                &e.span,
                t.key("election_timeout"),
                format!("{why}; {range_hint}"),
            );
            None
        }
    };
    let (low, high) = (bound(low)?, bound(high)?);
    if low >= high {
        r.error(
            &e.span,
            t.key("election_timeout"),
            format!(
                "the minimum ({}) must be below the maximum ({}): the spread keeps nodes from standing for election at the same moment; {range_hint}",
                format_duration(low),
                format_duration(high)
            ),
        );
        return None;
    }
    let longest = crate::consensus::lease::MAX_ANNOUNCED;
    if low > longest {
        r.error(
            &e.span,
            t.key("election_timeout"),
            format!(
                "the minimum ({}) is the leader lease, and a lease over {} would leave the cluster without a master that long after a crash (followers also grant no longer on a leader's word); {range_hint}",
                format_duration(low),
                format_duration(longest)
            ),
        );
        return None;
    }
    Some(At {
        value: (low, high),
        span: e.span,
    })
}

fn read_control(r: &mut Reader<'_>, root: &Tab<'_>) -> ControlSection {
    let mut control = ControlSection {
        socket: PathBuf::from(DEFAULT_SOCKET),
        metrics: None,
    };
    let Some(t) = r.table(root, "control") else {
        return control;
    };
    r.unknown_keys(&t, &["socket", "metrics"]);
    if let Some(socket) = r.path(&t, "socket") {
        control.socket = socket.value;
    }
    control.metrics = r.socket_addr(&t, "metrics").map(|m| m.value);
    control
}

const GROUP_KEYS: &[&str] = &[
    "name",
    "interface",
    "addresses",
    "priority",
    "failback",
    "failback_delay",
    "on_all_unhealthy",
    "address_lifetime",
    "announce",
];
const ANNOUNCE_KEYS: &[&str] = &["burst_count", "burst_spacing", "repeat_after", "refresh"];

fn read_groups(r: &mut Reader<'_>, root: &Tab<'_>, role: Role) -> Vec<VipGroup> {
    let message = match role {
        Role::Gateway => {
            "missing; add a [[vip_group]] with `name`, `interface`, `addresses` and `priority`"
        }
        Role::Witness => {
            "missing; add a [[vip_group]] with only a `name` for each group this witness votes in"
        }
    };
    if !r.require_with(root, "vip_group", message) {
        return Vec::new();
    }
    let entries = r.tables(root, "vip_group");
    let mut groups = Vec::new();
    let mut names: HashMap<String, String> = HashMap::new();
    // Which group and key path first claimed each IP, across all of this node's groups.
    let mut claimed: HashMap<IpAddr, String> = HashMap::new();
    for entry in &entries {
        r.unknown_keys(entry, GROUP_KEYS);
        let name = read_name(r, entry, "\"crm\"");
        if let Some(name) = &name {
            once(r, &mut names, name, entry, |first| {
                format!(
                    "group {:?} is already defined as {first}; give each group its own name",
                    name.value
                )
            });
        }
        let group = match role {
            Role::Witness => read_witness_group(r, entry),
            Role::Gateway => read_gateway_group(r, entry, &mut claimed),
        };
        if let (Some(name), Some(mut group)) = (name, group) {
            group.name = name.value;
            groups.push(group);
        }
    }
    groups
}

/// A witness votes in a group but never holds its VIP, so only `name` belongs here.
fn read_witness_group(r: &mut Reader<'_>, t: &Tab<'_>) -> Option<VipGroup> {
    for key in GROUP_KEYS.iter().filter(|k| **k != "name" && t.has(k)) {
        r.error(
            &t.key_span(key),
            t.key(key),
            format!(
                "a witness never holds a VIP; remove `{}` (a witness's group has only a `name`)",
                t.key(key)
            ),
        );
    }
    Some(VipGroup {
        name: String::new(),
        interface: String::new(),
        addresses: Vec::new(),
        priority: 0,
        failback: true,
        failback_delay: Duration::from_secs(5),
        on_all_unhealthy: OnAllUnhealthy::Keep,
        address_lifetime: Duration::from_secs(3),
        announce: Announce::default(),
    })
}

/// A gateway's `[[vip_group]]` entry (its `name` is read by `read_groups`).
fn read_gateway_group(
    r: &mut Reader<'_>,
    t: &Tab<'_>,
    claimed: &mut HashMap<IpAddr, String>,
) -> Option<VipGroup> {
    let interface = read_interface(r, t);
    let addresses = read_addresses(r, t, claimed);

    let priority = if r.require_with(
        t,
        "priority",
        "missing; add `priority = 100` to this [[vip_group]] entry (1 to 254; the healthy gateway with the highest priority holds the group)",
    ) {
        r.integer(t, "priority", 1..=254)
    } else {
        None
    };
    let failback = r.boolean(t, "failback").unwrap_or(true);
    let failback_delay = r
        .duration(t, "failback_delay")
        .map_or(Duration::from_secs(5), |d| d.value);
    let on_all_unhealthy = r
        .string(t, "on_all_unhealthy")
        .and_then(|o| match o.value.as_str() {
            "keep" => Some(OnAllUnhealthy::Keep),
            "release" => Some(OnAllUnhealthy::Release),
            other => {
                r.error(
                    &o.span,
                    t.key("on_all_unhealthy"),
                    format!("{other:?} is not a policy; write \"keep\" or \"release\""),
                );
                None
            }
        });
    let address_lifetime = r.duration(t, "address_lifetime").and_then(|d| {
        if (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&d.value) {
            Some(d.value)
        } else {
            r.error(
                &d.span,
                t.key("address_lifetime"),
                format!("{} is out of range; write a duration from \"1s\" to \"60s\" (the kernel drops the VIP this long after the daemon stops refreshing it)", format_duration(d.value)),
            );
            None
        }
    });
    let announce = read_announce(r, t);

    Some(VipGroup {
        name: String::new(),
        interface: interface?,
        addresses: addresses?,
        // 1..=254 was checked by `integer`.
        priority: u8::try_from(priority?.value).ok()?,
        failback,
        failback_delay,
        on_all_unhealthy: on_all_unhealthy.unwrap_or(OnAllUnhealthy::Keep),
        address_lifetime: address_lifetime.unwrap_or(Duration::from_secs(3)),
        announce,
    })
}

/// The interface the group's addresses go on, as `ip link` names it.
fn read_interface(r: &mut Reader<'_>, t: &Tab<'_>) -> Option<String> {
    let interface = if r.require(t, "interface", "\"eth1\"") {
        r.non_empty_string(t, "interface")
    } else {
        None
    };
    interface.and_then(|i| {
        // The kernel's IFNAMSIZ: longer names cannot exist, so the group could never be held.
        if i.value.len() > 15 || i.value.contains(['/', ' ', '\t']) {
            r.error(&i.span, t.key("interface"), format!("{:?} cannot be a Linux interface name (at most 15 characters, no '/' or spaces); write it as `ip link` shows it, like \"eth1\"", i.value));
            return None;
        }
        Some(i.value)
    })
}

/// The group's addresses, in CIDR form. `claimed` holds the key path of each address
/// already listed in this node's groups: a node holds each address in one group only.
fn read_addresses(
    r: &mut Reader<'_>,
    t: &Tab<'_>,
    claimed: &mut HashMap<IpAddr, String>,
) -> Option<Vec<IpNet>> {
    let addresses = if r.require(t, "addresses", "[\"198.18.0.50/24\"]") {
        r.string_array(t, "addresses")
    } else {
        None
    };
    addresses.and_then(|list| {
        if list.value.is_empty() {
            r.error(&list.span, t.key("addresses"), "is empty; a gateway's group needs at least one address, like [\"198.18.0.50/24\"]");
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (i, a) in list.value.iter().enumerate() {
            let key = format!("{}[{i}]", t.key("addresses"));
            match a.value.trim().parse::<IpNet>() {
                Ok(net) => {
                    if let Some(first) = claimed.get(&net.addr()) {
                        ok = false;
                        r.error(&a.span, key, format!("{} is already listed at {first}; a node holds each address in one group only", net.addr()));
                    } else {
                        claimed.insert(net.addr(), key);
                        out.push(net);
                    }
                }
                Err(_) => {
                    ok = false;
                    let hint = if a.value.parse::<IpAddr>().is_ok() { "; add the prefix length of the interface's subnet" } else { "" };
                    r.error(
                        &a.span,
                        key,
                        format!("{:?} is not a CIDR address{hint}; write it like \"198.18.0.50/24\" or \"2001:db8::50/64\"", a.value),
                    );
                }
            }
        }
        ok.then_some(out)
    })
}

fn read_announce(r: &mut Reader<'_>, group: &Tab<'_>) -> Announce {
    let mut announce = Announce::default();
    let Some(t) = r.table(group, "announce") else {
        return announce;
    };
    r.unknown_keys(&t, ANNOUNCE_KEYS);
    if let Some(n) = r.integer(&t, "burst_count", 1..=100) {
        announce.burst_count = u32::try_from(n.value).unwrap_or(announce.burst_count);
    }
    if let Some(d) = r.duration(&t, "burst_spacing") {
        announce.burst_spacing = d.value;
    }
    if let Some(d) = r.duration(&t, "repeat_after") {
        announce.repeat_after = (!d.value.is_zero()).then_some(d.value);
    }
    if let Some(d) = r.duration(&t, "refresh") {
        announce.refresh = (!d.value.is_zero()).then_some(d.value);
    }
    announce
}

fn read_notify(r: &mut Reader<'_>, root: &Tab<'_>) -> NotifySection {
    let mut notify = NotifySection::default();
    let Some(t) = r.table(root, "notify") else {
        return notify;
    };
    r.unknown_keys(&t, &["command", "timeout", "run_as"]);
    if t.has("command") {
        notify.command = check::read_argv(r, &t, "command");
    }
    notify.run_as = check::read_run_as(r, &t);
    if let Some(d) = r.duration(&t, "timeout") {
        if d.value.is_zero() {
            r.error(
                &d.span,
                t.key("timeout"),
                "must be longer than 0s; the default is \"5s\"",
            );
        } else {
            notify.timeout = d.value;
        }
    }
    notify
}
