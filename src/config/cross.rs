//! Compares the files of one cluster (`havip check-config a.toml b.toml witness.toml`):
//! each file can be valid alone while the cluster is not, e.g. when one node's peer list
//! or timers were edited and another's were not. Pure: takes parsed configs, returns
//! warnings that name both files.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::{Config, Peer, Role, format_duration};

/// Warnings where the files of one cluster disagree; empty when they agree.
pub fn cross_check(configs: &[Config]) -> Vec<String> {
    let mut warnings = Vec::new();
    let file = |c: &Config| c.source.display().to_string();

    // The same node name in two files: two daemons would claim one Raft id.
    let mut by_name: BTreeMap<&str, Vec<&Config>> = BTreeMap::new();
    for c in configs {
        by_name.entry(c.node.name.as_str()).or_default().push(c);
    }
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

    let Some((first, rest)) = configs.split_first() else {
        return warnings;
    };

    // Everything that must be identical on every node is compared with the first file.
    let first_peers: BTreeSet<&Peer> = first.cluster.peers.iter().collect();
    let first_groups: BTreeSet<&str> = first.vip_groups.iter().map(|g| g.name.as_str()).collect();
    for other in rest {
        let peers: BTreeSet<&Peer> = other.cluster.peers.iter().collect();
        if peers != first_peers {
            let show = |set: Vec<&&Peer>| {
                let items: Vec<String> = set
                    .iter()
                    .map(|p| format!("{} {}", p.name, p.address))
                    .collect();
                if items.is_empty() {
                    "nothing".to_string()
                } else {
                    items.join(", ")
                }
            };
            warnings.push(format!(
                "{} and {} list different peers (only in {}: {}; only in {}: {}); every file must list the same nodes with the same addresses",
                file(first),
                file(other),
                file(first),
                show(first_peers.difference(&peers).collect()),
                file(other),
                show(peers.difference(&first_peers).collect()),
            ));
        }
        if other.timers != first.timers {
            let show = |c: &Config| {
                format!(
                    "heartbeat {}, election_timeout {}..{}",
                    format_duration(c.timers.heartbeat),
                    format_duration(c.timers.election_timeout_min),
                    format_duration(c.timers.election_timeout_max)
                )
            };
            warnings.push(format!(
                "{} and {} have different [timers] ({} vs {}); use the same timers on every node",
                file(first),
                file(other),
                show(first),
                show(other)
            ));
        }
        let groups: BTreeSet<&str> = other.vip_groups.iter().map(|g| g.name.as_str()).collect();
        if groups != first_groups {
            let show = |set: Vec<&&str>| {
                if set.is_empty() {
                    "nothing".to_string()
                } else {
                    set.iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            warnings.push(format!(
                "{} and {} list different vip_groups (only in {}: {}; only in {}: {}); every node, witnesses included, lists every group",
                file(first),
                file(other),
                file(first),
                show(first_groups.difference(&groups).collect()),
                file(other),
                show(groups.difference(&first_groups).collect()),
            ));
        }
    }

    // Per group, among gateways: the addresses must match (whoever holds the group
    // serves the same VIPs) and priorities should differ (so the preference is explicit).
    let mut by_group: BTreeMap<&str, Vec<(&Config, &super::VipGroup)>> = BTreeMap::new();
    for c in configs.iter().filter(|c| c.node.role == Role::Gateway) {
        for g in &c.vip_groups {
            by_group.entry(g.name.as_str()).or_default().push((c, g));
        }
    }
    for (group, members) in &by_group {
        let sorted = |g: &super::VipGroup| {
            let mut a: Vec<IpNet> = g.addresses.clone();
            a.sort();
            a
        };
        if let [(first_c, first_g), rest @ ..] = members.as_slice() {
            for (c, g) in rest {
                if sorted(g) != sorted(first_g) {
                    let show = |g: &super::VipGroup| {
                        g.addresses
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    warnings.push(format!(
                        "group {group:?} has addresses [{}] in {} but [{}] in {}; whichever gateway holds the group must serve the same addresses",
                        show(first_g),
                        file(first_c),
                        show(g),
                        file(c)
                    ));
                }
            }
        }
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
    }
    warnings
}
