//! Whether a membership change an operator asks about (`havip member add|remove|replace`)
//! can be made now, and why not. Pure: the caller gathers one group's membership and what
//! it knows of the nodes. The change itself is made by the peer lists in the files and
//! `havip reload` (the membership driver, `membership_plan`), so this only answers the
//! question an operator asks before editing every node's file, with the same rules the
//! driver follows and the config's rule on even voter counts.

use std::collections::BTreeSet;

use super::membership_plan::{Current, join};

/// The change asked about, in one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub add: BTreeSet<String>,
    pub remove: BTreeSet<String>,
}

/// What is known besides the group's membership.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The node that asks (it answers for what it can reach).
    pub me: String,
    /// The group's leader, if one is known.
    pub leader: Option<String>,
    /// The nodes known to be gateways, the added ones said to be gateways included.
    pub gateways: BTreeSet<String>,
    /// The members this node reaches now (itself included).
    pub reachable: BTreeSet<String>,
    /// `cluster.allow_even_voters` in this node's file.
    pub allow_even_voters: bool,
}

/// Every reason the change cannot be made now in a group whose membership is `current`;
/// empty when it can.
pub fn refusals(change: &Change, current: &Current, known: &Known) -> Vec<String> {
    let voters = current.voters();
    let members: BTreeSet<String> = voters.union(&current.learners).cloned().collect();
    let mut why = Vec::new();
    for name in &change.remove {
        if !members.contains(name) {
            why.push(format!(
                "{name} is not a member (voters: {}; learners: {})",
                join(&voters),
                join(&current.learners)
            ));
        }
    }
    for name in change.add.iter().filter(|n| members.contains(*n)) {
        why.push(format!("{name} is a member already"));
    }
    // A change under way: what the rest would say is about a passing state.
    if current.is_joint() {
        why.push("a membership change is half done; it must finish first".into());
        return why;
    }
    if !current.learners.is_empty() {
        why.push(format!(
            "a membership change is under way ({} joining as learner(s)); let it finish first",
            join(&current.learners)
        ));
        return why;
    }
    let target: BTreeSet<String> = (voters.iter().chain(&change.add))
        .filter(|n| !change.remove.contains(*n))
        .cloned()
        .collect();
    if target.is_empty() {
        why.push("no voter would be left".into());
        return why;
    }
    if target.is_disjoint(&known.gateways) {
        why.push(format!(
            "no gateway would be left among the voters {}: a cluster of witnesses elects \
             nobody who holds the VIPs",
            join(&target)
        ));
    }
    if let Some(leader) = known.leader.as_ref().filter(|l| change.remove.contains(*l)) {
        why.push(format!(
            "{leader} leads the group: it hands leadership over first (stop it, or move the \
             group with `havip failover --to` another gateway), then the next leader removes it"
        ));
    }
    if target.len().is_multiple_of(2) && !known.allow_even_voters {
        why.push(even(target.len()));
    }
    // Joint consensus commits with a majority of the old voters and of the new; the nodes
    // added are started first (the procedure), so they count as up.
    let up: BTreeSet<String> = known.reachable.union(&change.add).cloned().collect();
    for set in [&voters, &target] {
        let (count, need) = (set.intersection(&up).count(), set.len() / 2 + 1);
        if count < need {
            why.push(format!(
                "{} reaches {count} of the voters {}, {need} needed: the change could not \
                 commit, and while it waited the master would lose its hold lease",
                known.me,
                join(set)
            ));
            break;
        }
    }
    why
}

fn even(n: usize) -> String {
    format!(
        "it would leave {n} voters: a majority is {}, so they survive no more losses than {} \
         voters would; add or remove one more node in the same change (or set \
         `allow_even_voters = true` if you accept that)",
        n / 2 + 1,
        n - 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn three() -> Current {
        Current {
            configs: vec![set(&["gw-a", "gw-b", "witness"])],
            learners: BTreeSet::new(),
        }
    }

    fn known() -> Known {
        Known {
            me: "gw-b".into(),
            leader: Some("gw-a".into()),
            gateways: set(&["gw-a", "gw-b"]),
            reachable: set(&["gw-a", "gw-b", "witness"]),
            allow_even_voters: false,
        }
    }

    fn change(add: &[&str], remove: &[&str]) -> Change {
        Change {
            add: set(add),
            remove: set(remove),
        }
    }

    fn one(reasons: Vec<String>, containing: &str) {
        assert!(
            reasons.len() == 1 && reasons[0].contains(containing),
            "{reasons:?}, wanted one reason with {containing:?}"
        );
    }

    #[test]
    fn a_witness_replaced_or_two_added_is_allowed() {
        let k = known();
        assert_eq!(
            refusals(&change(&["w2"], &["witness"]), &three(), &k),
            Vec::<String>::new()
        );
        assert_eq!(
            refusals(&change(&["w2", "w3"], &[]), &three(), &k),
            Vec::<String>::new()
        );
    }

    #[test]
    fn bad_changes_are_refused_with_the_reason() {
        let k = known();
        one(
            refusals(&change(&[], &["w9"]), &three(), &k),
            "w9 is not a member",
        );
        one(
            refusals(&change(&["witness"], &[]), &three(), &k),
            "a member already",
        );
        one(
            refusals(&change(&["w2"], &[]), &three(), &k),
            "it would leave 4 voters",
        );
        one(
            refusals(&change(&[], &["witness"]), &three(), &k),
            "it would leave 2 voters",
        );
        let lone = Current {
            configs: vec![set(&["gw-b", "witness", "w2"])],
            learners: BTreeSet::new(),
        };
        let mut led_by_witness = known();
        led_by_witness.leader = Some("witness".into());
        one(
            refusals(&change(&["w3"], &["gw-b"]), &lone, &led_by_witness),
            "no gateway would be left",
        );
        one(
            refusals(&change(&["w2"], &["gw-a"]), &three(), &k),
            "gw-a leads the group",
        );
        let mut cut_off = known();
        cut_off.reachable = set(&["gw-b"]);
        one(
            refusals(&change(&["w2"], &["witness"]), &three(), &cut_off),
            "gw-b reaches 1 of the voters gw-a, gw-b, witness, 2 needed",
        );
        let half = Current {
            configs: vec![three().voters(), set(&["gw-a", "gw-b", "w2"])],
            learners: BTreeSet::new(),
        };
        one(refusals(&change(&["w3"], &[]), &half, &k), "half done");
        let joining = Current {
            configs: vec![three().voters()],
            learners: set(&["w2"]),
        };
        one(
            refusals(&change(&["w3"], &[]), &joining, &k),
            "w2 joining as learner",
        );
        let all = change(&[], &["gw-a", "gw-b", "witness"]);
        let mut led_elsewhere = known();
        led_elsewhere.leader = None;
        one(
            refusals(&all, &three(), &led_elsewhere),
            "no voter would be left",
        );
    }

    #[test]
    fn even_counts_pass_when_the_file_allows_them() {
        let mut k = known();
        k.allow_even_voters = true;
        assert_eq!(
            refusals(&change(&["w2"], &[]), &three(), &k),
            Vec::<String>::new()
        );
    }
}
