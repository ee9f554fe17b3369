//! `havip member add|remove|replace`: whether a membership change can be made now, checked
//! against the running cluster as this node sees it (every group's membership and leader,
//! the nodes' roles, which members it reaches), and the exact edits and order that make
//! it. It changes nothing. The peer lists in the nodes' files are the one source of the
//! membership (README, "From three voters to five, or a node replaced"): a change made
//! only here would be undone by the next reload or restart. What the command adds is
//! the check an operator wants before editing every node's file, refused with the reason
//! (exit 2) when the change would leave no gateway, an even number of voters, a leader
//! removing itself, or a majority out of reach.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver as _;

use super::Control;
use super::protocol::{NewMember, Response};
use crate::config::Role;
use crate::consensus::member_check::{Change, Known, refusals};
use crate::consensus::membership::current_of;

/// How long a new node's peer address may take to accept a TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Nodes one check may name: a cluster has a handful, and each new one is probed.
const MAX_NODES: usize = 8;

/// The answer to `havip member add|remove|replace`.
pub async fn member_check(control: &Control, add: Vec<NewMember>, remove: Vec<String>) -> Response {
    let members = control.members();
    let mut why = listing_problems(&members.addresses, &add, &remove);
    if add.len() + remove.len() > MAX_NODES {
        why.push(format!("at most {MAX_NODES} nodes in one change"));
    }
    let change = Change {
        add: add.iter().map(|n| n.name.clone()).collect(),
        remove: remove.iter().cloned().collect(),
    };
    let mut reachable: BTreeSet<String> = control.mesh.connected().borrow().clone();
    reachable.insert(members.me.clone());
    let mut masters = Vec::new();
    for (group, handle) in control.groups().iter() {
        let metrics = handle.raft.metrics().borrow_watched().clone();
        let current = current_of(&metrics);
        if current.voters().is_empty() {
            continue; // not formed yet: it is formed with the lists as they are then
        }
        let state = handle.state.borrow().clone();
        let mut gateways: BTreeSet<String> = (state.nodes.iter())
            .filter(|(_, r)| r.facts.as_ref().is_some_and(|f| f.role == Role::Gateway))
            .map(|(n, _)| n.clone())
            .collect();
        gateways.extend((add.iter().filter(|n| n.role == Role::Gateway)).map(|n| n.name.clone()));
        if members.role == Role::Gateway {
            gateways.insert(members.me.clone());
        }
        let leader = control.proposer.name_of(metrics.current_leader);
        if let Some(leader) = &leader {
            masters.push((group.clone(), leader.clone()));
        }
        let known = Known {
            me: members.me.clone(),
            leader,
            gateways,
            reachable: reachable.clone(),
            allow_even_voters: members.allow_even_voters,
        };
        why.extend(
            refusals(&change, &current, &known)
                .into_iter()
                .map(|w| format!("{group}: {w}")),
        );
    }
    if !why.is_empty() {
        let mut message = format!("refused, nothing was changed:\n  {}", why.join("\n  "));
        message += "\n(membership follows the peer lists in the files: see havip member --help)";
        return Response::Refused { message };
    }
    let mut silent = Vec::new();
    for node in &add {
        if !answers(node.address).await {
            silent.push(format!(
                "{} does not answer at {} yet",
                node.name, node.address
            ));
        }
    }
    let stay: Vec<String> = (members.all.iter())
        .filter(|n| !change.remove.contains(*n))
        .cloned()
        .collect();
    Response::Done {
        message: steps(&add, &remove, &stay, &masters, &silent),
    }
}

/// Problems with the names and addresses themselves, against this node's peer list.
fn listing_problems(
    listed: &std::collections::BTreeMap<String, SocketAddr>,
    add: &[NewMember],
    remove: &[String],
) -> Vec<String> {
    let mut why = Vec::new();
    if add.is_empty() && remove.is_empty() {
        why.push("name a node to add or remove".into());
    }
    for (i, node) in add.iter().enumerate() {
        if let Some(at) = listed.get(&node.name) {
            why.push(format!("{} is listed already (at {at})", node.name));
        } else if let Some((other, _)) = listed.iter().find(|(_, a)| **a == node.address) {
            why.push(format!(
                "{} is {other}'s peer address (to reuse it, remove {other} first and stop it)",
                node.address
            ));
        }
        if let Some(earlier) = add[..i]
            .iter()
            .find(|n| n.name == node.name || n.address == node.address)
        {
            why.push(format!(
                "{} and {} are the same node (name or address)",
                earlier.name, node.name
            ));
        }
    }
    for name in remove.iter().filter(|n| !listed.contains_key(*n)) {
        why.push(format!(
            "{name} is not in this node's peer list ({})",
            listed.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    why
}

/// Whether something takes TCP connections at `address` (the new node, started first).
async fn answers(address: SocketAddr) -> bool {
    let connect = tokio::net::TcpStream::connect(address);
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, connect).await,
        Ok(Ok(_))
    )
}

/// The operator's steps, in order, for a change that can be made.
fn steps(
    add: &[NewMember],
    remove: &[String],
    stay: &[String],
    masters: &[(String, String)],
    silent: &[String],
) -> String {
    let mut out = String::from(
        "nothing was changed: the change can be made now; membership follows the peer lists in \
         the files, so make it this way:\n",
    );
    let mut n = 0;
    let mut step = |text: String| {
        n += 1;
        out += &format!("  {n}. {text}\n");
    };
    if !add.is_empty() {
        let names: Vec<String> = add
            .iter()
            .map(|a| format!("{} ({})", a.name, a.address))
            .collect();
        step(format!(
            "start {}, each with a file whose [[cluster.peers]] is the new list (every node, \
             itself included) and the cluster key; they wait until the cluster lists them",
            names.join(", ")
        ));
    }
    let mut edits = Vec::new();
    for a in add {
        edits.push(format!(
            "add\n       [[cluster.peers]]\n       name = \"{}\"\n       address = \"{}\"",
            a.name, a.address
        ));
    }
    for r in remove {
        edits.push(format!("delete the [[cluster.peers]] entry of {r}"));
    }
    step(format!(
        "in the file of every node that stays ({}): {}",
        stay.join(", "),
        edits.join("\n     and ")
    ));
    let last: BTreeSet<&str> = masters.iter().map(|(_, m)| m.as_str()).collect();
    let last: Vec<&str> = last.into_iter().collect();
    step(match last.len() {
        0 => "`havip reload` on each of them, one at a time, the node that leads the groups \
              last (no leader is known now: see havip status)"
            .into(),
        n => format!(
            "`havip reload` on each of them, one at a time, {} last (the master{})",
            last.join(" and "),
            if n > 1 { "s" } else { "" }
        ),
    });
    step(
        "`havip member list` shows the new voters once every list agrees (new nodes join as \
         learners first)"
            .into(),
    );
    if !remove.is_empty() {
        step(format!(
            "stop {}; one left running logs that it is no longer a member",
            remove.join(", ")
        ));
    }
    for s in silent {
        out += &format!("note: {s}: start it first (step 1)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed() -> std::collections::BTreeMap<String, SocketAddr> {
        [("gw-a", 11), ("gw-b", 12), ("witness", 13)]
            .iter()
            .map(|(n, i)| (n.to_string(), format!("198.18.0.{i}:7400").parse().unwrap()))
            .collect()
    }

    fn new(name: &str, at: &str) -> NewMember {
        NewMember {
            name: name.into(),
            address: at.parse().unwrap(),
            role: Role::Witness,
        }
    }

    #[test]
    fn names_and_addresses_are_checked_against_the_list() {
        let l = listed();
        assert!(listing_problems(&l, &[new("w2", "198.18.0.21:7400")], &[]).is_empty());
        let taken = listing_problems(&l, &[new("w2", "198.18.0.13:7400")], &[]);
        assert_eq!(
            taken,
            [
                "198.18.0.13:7400 is witness's peer address (to reuse it, remove witness first and stop it)"
            ]
        );
        let twice = [new("w2", "198.18.0.21:7400"), new("w3", "198.18.0.21:7400")];
        assert_eq!(
            listing_problems(&l, &twice, &[]),
            ["w2 and w3 are the same node (name or address)"]
        );
        let again = listing_problems(&l, &[new("gw-b", "198.18.0.22:7400")], &[]);
        assert_eq!(again, ["gw-b is listed already (at 198.18.0.12:7400)"]);
        let unknown = listing_problems(&l, &[], &["w9".into()]);
        assert_eq!(
            unknown,
            ["w9 is not in this node's peer list (gw-a, gw-b, witness)"]
        );
        assert_eq!(listing_problems(&l, &[], &[]).len(), 1);
    }

    #[test]
    fn the_steps_name_the_edits_and_the_master_last() {
        let text = steps(
            &[new("w2", "198.18.0.21:7400")],
            &["witness".into()],
            &["gw-a".into(), "gw-b".into()],
            &[("crm".into(), "gw-a".into())],
            &[],
        );
        assert!(text.starts_with("nothing was changed"), "{text}");
        assert!(text.contains("1. start w2 (198.18.0.21:7400)"), "{text}");
        assert!(text.contains("name = \"w2\""), "{text}");
        assert!(
            text.contains("delete the [[cluster.peers]] entry of witness"),
            "{text}"
        );
        assert!(
            text.contains("3. `havip reload` on each of them, one at a time, gw-a last"),
            "{text}"
        );
        assert!(text.contains("5. stop witness"), "{text}");
    }
}
