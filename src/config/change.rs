//! What a reload may change on a running node, decided from the running config and the
//! newly read one: which groups are added, removed or changed, whether the health checks
//! or the notify hook changed, and what only a restart may change (refused, with the key
//! and why). Also the fingerprints `havip status` compares across nodes. Pure: the
//! daemon applies the plan (`daemon::reload`); nothing here touches the host.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::{Config, ConfigError, VipGroup, format_duration};

/// What a reload changes, in the order the daemon applies it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReloadPlan {
    /// Groups in the new file only: started, then formed by the cluster.
    pub added: Vec<VipGroup>,
    /// Groups in the running config only: released, then their Raft state dropped.
    pub removed: Vec<String>,
    /// Groups in both whose settings differ (the new settings), applied without
    /// releasing a held VIP.
    pub changed: Vec<VipGroup>,
    pub health: bool,
    pub notify: bool,
    /// `cluster.key_file` or `previous_key_file` changed (a key rollover).
    pub keys: bool,
    /// `cluster.peers` changed (nodes added, removed or moved): the mesh and the
    /// membership drivers take the new list.
    pub peers: bool,
    /// `[timers]` changed: the heartbeats, elections and leases follow one node at a
    /// time (`consensus::lease`).
    pub timers: bool,
    /// `[[backend]]` pools changed: their HAProxy appliers are replaced.
    pub backends: bool,
    /// One line per change, in the operator's words.
    pub summary: Vec<String>,
}

impl ReloadPlan {
    pub fn is_empty(&self) -> bool {
        self.summary.is_empty()
    }
}

/// Compares `running` with `new` (both validated). Refuses, naming every key, a file that
/// changes what only a restart may change: the node's identity and store, its own entry
/// in the peer list, the listen address and the sockets. The other nodes of the peer list
/// and the timers change live.
pub fn plan_reload(running: &Config, new: &Config) -> Result<ReloadPlan, Vec<ConfigError>> {
    let refusals = restart_only_changes(running, new);
    if !refusals.is_empty() {
        let errors = refusals
            .into_iter()
            .map(|(key, what)| ConfigError {
                file: new.source.clone(),
                position: None,
                key: key.to_string(),
                message: format!(
                    "{what}; a reload cannot change it: restart the node to apply it (nothing was changed)"
                ),
            })
            .collect();
        return Err(errors);
    }
    let mut plan = ReloadPlan::default();
    for group in &new.vip_groups {
        match running.group(&group.name) {
            None => {
                plan.summary.push(format!("group {} added", group.name));
                plan.added.push(group.clone());
            }
            Some(old) if old != group => {
                plan.summary.push(format!(
                    "group {}: {}",
                    group.name,
                    group_changes(old, group).join(", ")
                ));
                plan.changed.push(group.clone());
            }
            Some(_) => {}
        }
    }
    for group in &running.vip_groups {
        if new.group(&group.name).is_none() {
            plan.summary.push(format!("group {} removed", group.name));
            plan.removed.push(group.name.clone());
        }
    }
    if running.health != new.health {
        plan.health = true;
        plan.summary.push(format!(
            "health checks: {} -> {}",
            running.health.checks.len(),
            new.health.checks.len()
        ));
    }
    let (a, b) = (&running.cluster, &new.cluster);
    if (&a.key_file, &a.previous_key_file) != (&b.key_file, &b.previous_key_file) {
        plan.keys = true;
        plan.summary.push(format!(
            "cluster key files: {} -> {}",
            key_files_text(a),
            key_files_text(b)
        ));
    }
    if running.cluster.peers != new.cluster.peers {
        plan.peers = true;
        plan.summary.push(format!(
            "peers: {} -> {}",
            peers_text(&running.cluster.peers),
            peers_text(&new.cluster.peers)
        ));
    }
    if running.timers != new.timers {
        plan.timers = true;
        plan.summary.push(format!(
            "timers: {} -> {}",
            timers_text(&running.timers),
            timers_text(&new.timers)
        ));
    }
    if running.notify != new.notify {
        plan.notify = true;
        plan.summary.push("notify hook changed".to_string());
    }
    plan_backends(&mut plan, &running.backends, &new.backends);
    Ok(plan)
}

/// The keys whose change needs a restart, each with what changed.
fn restart_only_changes(a: &Config, b: &Config) -> Vec<(&'static str, String)> {
    let path = |p: &std::path::PathBuf| p.display().to_string();
    let mut c = Changes::default();
    c.check("node.name", &a.node.name, &b.node.name, |n| {
        format!("{n:?}")
    });
    c.check("node.role", &a.node.role, &b.node.role, ToString::to_string);
    c.check("node.data_dir", &a.node.data_dir, &b.node.data_dir, path);
    let (x, y) = (&a.cluster, &b.cluster);
    c.check("cluster.listen", &x.listen, &y.listen, ToString::to_string);
    let own = |c: &Config| {
        c.cluster
            .peers
            .iter()
            .find(|p| p.name == c.node.name)
            .cloned()
    };
    c.check("cluster.peers", &own(a), &own(b), |p| {
        p.as_ref().map_or_else(
            || "nothing".into(),
            |p| format!("{} = {}", p.name, p.address),
        )
    });
    c.note("this node's own entry: its address is where its peers know it");
    let even = (&x.allow_even_voters, &y.allow_even_voters);
    c.check(
        "cluster.allow_even_voters",
        even.0,
        even.1,
        ToString::to_string,
    );
    let (x, y) = (&a.control, &b.control);
    c.check("control.socket", &x.socket, &y.socket, path);
    c.check("control.metrics", &x.metrics, &y.metrics, |m| show_opt(*m));
    c.found
}

/// The restart-only keys that changed, each with "changed from A to B".
#[derive(Default)]
struct Changes {
    found: Vec<(&'static str, String)>,
    /// The last `check` found a change.
    last_changed: bool,
}

impl Changes {
    fn check<T: PartialEq>(
        &mut self,
        key: &'static str,
        a: &T,
        b: &T,
        show: impl Fn(&T) -> String,
    ) {
        self.last_changed = a != b;
        if self.last_changed {
            let what = format!("changed from {} to {}", show(a), show(b));
            self.found.push((key, what));
        }
    }

    /// Adds why to the key just checked, if it changed.
    fn note(&mut self, why: &str) {
        if self.last_changed
            && let Some((_, what)) = self.found.last_mut()
        {
            what.push_str(&format!(" ({why})"));
        }
    }
}

fn key_files_text(c: &super::ClusterSection) -> String {
    match &c.previous_key_file {
        None => c.key_file.display().to_string(),
        Some(p) => format!("{} (previous {})", c.key_file.display(), p.display()),
    }
}

fn show_opt(addr: Option<std::net::SocketAddr>) -> String {
    addr.map_or_else(|| "off".to_string(), |a| a.to_string())
}

fn peers_text(peers: &[super::Peer]) -> String {
    let text = (peers.iter())
        .map(|p| format!("{} {}", p.name, p.address))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[{text}]")
}

/// The pools' appliers are replaced when anything of a pool changed.
fn plan_backends(plan: &mut ReloadPlan, running: &[super::Backend], new: &[super::Backend]) {
    if running == new {
        return;
    }
    plan.backends = true;
    let (old, new) = (backends_text(running), backends_text(new));
    plan.summary.push(if old == new {
        format!("backends {new}: checks, addresses or HAProxy sockets changed")
    } else {
        format!("backends: {old} -> {new}")
    });
}

fn backends_text(backends: &[super::Backend]) -> String {
    let text = (backends.iter())
        .map(|b| {
            let servers = (b.servers.iter())
                .map(|s| format!("{} weight {}", s.name, s.weight))
                .collect::<Vec<_>>()
                .join(", ");
            format!("{} ({servers})", b.name)
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!("[{text}]")
}

fn timers_text(t: &super::Timers) -> String {
    format!(
        "heartbeat {}, election_timeout {}..{}",
        format_duration(t.heartbeat),
        format_duration(t.election_timeout_min),
        format_duration(t.election_timeout_max)
    )
}

/// "priority 150 -> 120, addresses +198.18.0.51/24" for the summary.
fn group_changes(old: &VipGroup, new: &VipGroup) -> Vec<String> {
    let mut out = Vec::new();
    if old.interface != new.interface {
        out.push(format!("interface {} -> {}", old.interface, new.interface));
    }
    let (a, b): (BTreeSet<_>, BTreeSet<_>) = (
        old.addresses.iter().collect(),
        new.addresses.iter().collect(),
    );
    for added in b.difference(&a) {
        out.push(format!("+{added}"));
    }
    for removed in a.difference(&b) {
        out.push(format!("-{removed}"));
    }
    if old.priority != new.priority {
        out.push(format!("priority {} -> {}", old.priority, new.priority));
    }
    if old.failback != new.failback || old.failback_delay != new.failback_delay {
        out.push(format!(
            "failback {} after {} -> {} after {}",
            old.failback,
            format_duration(old.failback_delay),
            new.failback,
            format_duration(new.failback_delay)
        ));
    }
    if old.on_all_unhealthy != new.on_all_unhealthy {
        out.push("on_all_unhealthy".to_string());
    }
    if old.address_lifetime != new.address_lifetime {
        out.push("address_lifetime".to_string());
    }
    if old.announce != new.announce {
        out.push("announce".to_string());
    }
    out
}

/// A short hex fingerprint of what every node of a cluster must agree on: the peer list,
/// the timers, the set of group names. `havip status` compares it across nodes (the drift
/// `check-config` finds offline, seen live).
pub fn cluster_fingerprint(config: &Config) -> String {
    let mut text = String::new();
    let mut peers: Vec<_> = config.cluster.peers.iter().collect();
    peers.sort();
    for p in peers {
        let _ = writeln!(text, "peer {} {}", p.name, p.address);
    }
    let _ = writeln!(text, "even {}", config.cluster.allow_even_voters);
    let t = &config.timers;
    let _ = writeln!(
        text,
        "timers {} {} {}",
        t.heartbeat.as_micros(),
        t.election_timeout_min.as_micros(),
        t.election_timeout_max.as_micros()
    );
    let groups: BTreeSet<&str> = config.vip_groups.iter().map(|g| g.name.as_str()).collect();
    for g in groups {
        let _ = writeln!(text, "group {g}");
    }
    short_hash(&text)
}

/// A short hex fingerprint of the node's whole effective config: it changes when a reload
/// took effect. Comparable only between nodes running the same havip version.
pub fn config_fingerprint(config: &Config) -> String {
    short_hash(&format!("{config:?}"))
}

fn short_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest[..6].iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// The config tests' gateway file (gw-a, crm on 198.18.0.50/24, priority 150).
    const BASE: &str = crate::config::tests::GATEWAY;

    fn config(text: &str) -> Config {
        match Config::from_str(Path::new("/etc/havip/havip.toml"), text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn an_unchanged_file_plans_nothing() {
        let plan = plan_reload(&config(BASE), &config(BASE)).expect("plan");
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn groups_added_removed_and_changed_are_planned_with_a_summary() {
        let running = config(&format!(
            "{BASE}[[vip_group]]\nname = \"old\"\ninterface = \"eth1\"\naddresses = [\"198.18.2.50/24\"]\npriority = 150\n"
        ));
        let new = config(
            &(BASE.replace("priority = 150", "priority = 120").replace(
                "addresses = [\"198.18.0.50/24\"]",
                "addresses = [\"198.18.0.50/24\", \"198.18.0.51/24\"]",
            ) + "[[vip_group]]\nname = \"g2\"\ninterface = \"eth1\"\naddresses = [\"198.18.3.50/24\"]\npriority = 150\n"),
        );
        let plan = plan_reload(&running, &new).expect("plan");
        assert_eq!(
            plan.added.iter().map(|g| &g.name).collect::<Vec<_>>(),
            ["g2"]
        );
        assert_eq!(plan.removed, ["old"]);
        assert_eq!(
            plan.changed.iter().map(|g| &g.name).collect::<Vec<_>>(),
            ["crm"]
        );
        assert_eq!(
            plan.summary,
            [
                "group crm: +198.18.0.51/24, priority 150 -> 120",
                "group g2 added",
                "group old removed"
            ]
        );
        assert!(!plan.health && !plan.notify);
    }

    #[test]
    fn backend_pools_changed_are_planned_not_refused() {
        let pool = |servers: &str| {
            format!(
                "{BASE}\n[[backend]]\nname = \"crm\"\n\
                 haproxy = {{ socket = \"/run/haproxy/admin.sock\", backend = \"crm\" }}\n{servers}"
            )
        };
        let server = |name: &str, weight: u32| {
            format!(
                "[[backend.server]]\nname = \"{name}\"\naddress = \"198.18.0.21:8080\"\n\
                 weight = {weight}\nchecks = [\"crm-1-http\"]\n"
            )
        };
        let one = config(&pool(&server("crm-1", 10)));
        let two = config(&pool(&(server("crm-1", 10) + &server("crm-2", 20))));
        let plan = plan_reload(&one, &two).expect("a pool grown by a reload is applied");
        assert!(plan.backends);
        assert_eq!(
            plan.summary,
            ["backends: [crm (crm-1 weight 10)] -> [crm (crm-1 weight 10, crm-2 weight 20)]"]
        );
        let moved = config(&pool(&server("crm-1", 10)).replace("admin.sock", "other.sock"));
        let plan = plan_reload(&one, &moved).expect("planned");
        assert_eq!(
            plan.summary,
            ["backends [crm (crm-1 weight 10)]: checks, addresses or HAProxy sockets changed"]
        );
        assert!(!plan_reload(&one, &one).expect("planned").backends);
    }

    #[test]
    fn what_only_a_restart_may_change_is_refused_naming_every_key() {
        let new = config(
            &BASE
                .replace("198.18.0.11:7400", "198.18.0.19:7400")
                .replace(
                    "[[vip_group]]",
                    "[timers]\nheartbeat = \"100ms\"\n[[vip_group]]",
                ),
        );
        let errors = plan_reload(&config(BASE), &new).expect_err("refused");
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["cluster.listen", "cluster.peers"]);
        let text = errors[1].to_string();
        assert!(
            text.starts_with("/etc/havip/havip.toml: cluster.peers: changed from"),
            "{text}"
        );
        assert!(text.contains("restart the node"), "{text}");
        assert!(text.contains("this node's own entry"), "{text}");
    }

    #[test]
    fn the_timers_change_live() {
        let new = config(&BASE.replace(
            "[[vip_group]]",
            "[timers]\nheartbeat = \"200ms\"\nelection_timeout = \"800ms..900ms\"\n[[vip_group]]",
        ));
        let plan = plan_reload(&config(BASE), &new).expect("a live change");
        assert!(plan.timers);
        assert_eq!(
            plan.summary,
            [
                "timers: heartbeat 128ms, election_timeout 400ms..500ms -> heartbeat 200ms, election_timeout 800ms..900ms"
            ]
        );
    }

    #[test]
    fn the_other_nodes_of_the_peer_list_change_live() {
        let new = config(
            &BASE
                .replace("witness", "witness-2")
                .replace("198.18.0.13:7400", "198.18.0.14:7400"),
        );
        let plan = plan_reload(&config(BASE), &new).expect("a live change");
        assert!(plan.peers);
        assert_eq!(
            plan.summary,
            [
                "peers: [gw-a 198.18.0.11:7400, gw-b 198.18.0.12:7400, witness 198.18.0.13:7400] \
              -> [gw-a 198.18.0.11:7400, gw-b 198.18.0.12:7400, witness-2 198.18.0.14:7400]"
            ]
        );
    }

    #[test]
    fn the_cluster_fingerprint_ignores_what_may_differ_between_nodes() {
        let a = config(BASE);
        let b = config(
            &BASE
                .replace("name = \"gw-a\"\nrole", "name = \"gw-b\"\nrole")
                .replace(
                    "listen = \"198.18.0.11:7400\"",
                    "listen = \"198.18.0.12:7400\"",
                )
                .replace("priority = 150", "priority = 100"),
        );
        assert_eq!(cluster_fingerprint(&a), cluster_fingerprint(&b));
        assert_ne!(config_fingerprint(&a), config_fingerprint(&b));
        let c = config(&format!(
            "{BASE}[[vip_group]]\nname = \"g2\"\ninterface = \"eth1\"\naddresses = [\"198.18.3.50/24\"]\npriority = 150\n"
        ));
        assert_ne!(cluster_fingerprint(&a), cluster_fingerprint(&c));
        assert_eq!(cluster_fingerprint(&a).len(), 12);
    }
}
