//! Compares the files of one cluster (`havip check-config a.toml b.toml witness.toml`):
//! each file can be valid alone while the cluster is not, e.g. when one node's peer list
//! or timers were edited and another's were not. Pure: takes parsed configs, returns
//! warnings that name both files.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::{Config, Peer, Role, VipGroup, format_duration};

/// Warnings where the files of one cluster disagree; empty when they agree. Everything
/// that must be identical on every node is compared with the first file; each group's
/// addresses and priorities are compared among the gateways that serve it.
pub fn cross_check(configs: &[Config]) -> Vec<String> {
    let mut warnings = duplicate_names(configs);
    if let Some((first, rest)) = configs.split_first() {
        for other in rest {
            warnings.extend(different_peers(first, other));
            warnings.extend(different_timers(first, other));
            warnings.extend(different_groups(first, other));
        }
    }
    for (group, members) in &gateways_by_group(configs) {
        warnings.extend(different_addresses(group, members));
        warnings.extend(equal_priorities(group, members));
    }
    warnings.extend(different_backends(configs));
    warnings
}

/// Every gateway applies the one cluster-wide state per server to its own HAProxy, so
/// the gateways must agree on the pools: their names, the group each follows, and each
/// server's name, weight and address (the socket and checks are each gateway's own).
fn different_backends(configs: &[Config]) -> Vec<String> {
    let pools = |c: &Config| -> Vec<String> {
        (c.backends.iter())
            .map(|b| {
                let servers: Vec<String> = (b.servers.iter())
                    .map(|s| format!("{} {} weight {}", s.name, s.address, s.weight))
                    .collect();
                format!("{} (group {}: {})", b.name, b.group, servers.join(", "))
            })
            .collect()
    };
    let gateways: Vec<&Config> = (configs.iter())
        .filter(|c| c.node.role == Role::Gateway)
        .collect();
    let Some((first, rest)) = gateways.split_first() else {
        return Vec::new();
    };
    (rest.iter())
        .filter(|other| pools(other) != pools(first))
        .map(|other| {
            format!(
                "{} and {} have different [[backend]] pools ({}: {}; {}: {}); every gateway applies the same server states, so give every gateway the same pools and servers",
                file(first),
                file(other),
                file(first),
                listed(pools(first)),
                file(other),
                listed(pools(other))
            )
        })
        .collect()
}

/// The file a config was read from, as the warnings name it.
fn file(c: &Config) -> String {
    c.source.display().to_string()
}

/// Items as a warning lists them: comma-separated, or "nothing".
fn listed(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().collect();
    if items.is_empty() {
        "nothing".to_string()
    } else {
        items.join(", ")
    }
}

/// The same node name in two files: two daemons would claim one Raft id.
fn duplicate_names(configs: &[Config]) -> Vec<String> {
    let mut by_name: BTreeMap<&str, Vec<&Config>> = BTreeMap::new();
    for c in configs {
        by_name.entry(c.node.name.as_str()).or_default().push(c);
    }
    let mut warnings = Vec::new();
    for (name, claimants) in &by_name {
        if let [first, rest @ ..] = claimants.as_slice() {
            for other in rest {
                warnings.push(format!(
                    "{} and {} both claim node name {name:?}; each node needs its own name",
                    file(first),
                    file(other)
                ));
            }
        }
    }
    warnings
}

/// Every file must list the same peers with the same addresses.
fn different_peers(first: &Config, other: &Config) -> Option<String> {
    let first_peers: BTreeSet<&Peer> = first.cluster.peers.iter().collect();
    let peers: BTreeSet<&Peer> = other.cluster.peers.iter().collect();
    if peers == first_peers {
        return None;
    }
    let show = |only: std::collections::btree_set::Difference<'_, &Peer>| {
        listed(only.map(|p| format!("{} {}", p.name, p.address)))
    };
    Some(format!(
        "{} and {} list different peers (only in {}: {}; only in {}: {}); every file must list the same nodes with the same addresses",
        file(first),
        file(other),
        file(first),
        show(first_peers.difference(&peers)),
        file(other),
        show(peers.difference(&first_peers)),
    ))
}

/// Raft's timing must be the same on every node.
fn different_timers(first: &Config, other: &Config) -> Option<String> {
    if other.timers == first.timers {
        return None;
    }
    let show = |c: &Config| {
        format!(
            "heartbeat {}, election_timeout {}..{}",
            format_duration(c.timers.heartbeat),
            format_duration(c.timers.election_timeout_min),
            format_duration(c.timers.election_timeout_max)
        )
    };
    Some(format!(
        "{} and {} have different [timers] ({} vs {}); use the same timers on every node",
        file(first),
        file(other),
        show(first),
        show(other)
    ))
}

/// Every node, witnesses included, lists every group.
fn different_groups(first: &Config, other: &Config) -> Option<String> {
    let names =
        |c: &Config| -> BTreeSet<String> { c.vip_groups.iter().map(|g| g.name.clone()).collect() };
    let (first_groups, groups) = (names(first), names(other));
    if groups == first_groups {
        return None;
    }
    Some(format!(
        "{} and {} list different vip_groups (only in {}: {}; only in {}: {}); every node, witnesses included, lists every group",
        file(first),
        file(other),
        file(first),
        listed(first_groups.difference(&groups).cloned()),
        file(other),
        listed(groups.difference(&first_groups).cloned()),
    ))
}

/// Each group with the gateways that serve it, in the files' order (witnesses hold no
/// VIPs, so their copy of a group is not compared).
fn gateways_by_group(configs: &[Config]) -> BTreeMap<&str, Vec<(&Config, &VipGroup)>> {
    let mut by_group: BTreeMap<&str, Vec<(&Config, &VipGroup)>> = BTreeMap::new();
    for c in configs.iter().filter(|c| c.node.role == Role::Gateway) {
        for g in &c.vip_groups {
            by_group.entry(g.name.as_str()).or_default().push((c, g));
        }
    }
    by_group
}

/// Whichever gateway holds a group must serve the same addresses.
fn different_addresses(group: &str, members: &[(&Config, &VipGroup)]) -> Vec<String> {
    let sorted = |g: &VipGroup| {
        let mut a: Vec<IpNet> = g.addresses.clone();
        a.sort();
        a
    };
    let show = |g: &VipGroup| {
        g.addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(((first_c, first_g), rest)) = members.split_first() else {
        return Vec::new();
    };
    rest.iter()
        .filter(|(_, g)| sorted(g) != sorted(first_g))
        .map(|(c, g)| {
            format!(
                "group {group:?} has addresses [{}] in {} but [{}] in {}; whichever gateway holds the group must serve the same addresses",
                show(first_g),
                file(first_c),
                show(g),
                file(c)
            )
        })
        .collect()
}

/// Gateways of a group should have different priorities, so that the preference is
/// explicit rather than left to the tie-break on node names.
fn equal_priorities(group: &str, members: &[(&Config, &VipGroup)]) -> Vec<String> {
    let mut warnings = Vec::new();
    for (i, (a_c, a_g)) in members.iter().enumerate() {
        for (b_c, b_g) in &members[i + 1..] {
            if a_g.priority == b_g.priority && a_c.node.name != b_c.node.name {
                warnings.push(format!(
                    "group {group:?}: {} ({}) and {} ({}) both have priority {}; ties are broken by node name, so give the gateway you prefer a higher priority",
                    a_c.node.name,
                    file(a_c),
                    b_c.node.name,
                    file(b_c),
                    a_g.priority
                ));
            }
        }
    }
    warnings
}
