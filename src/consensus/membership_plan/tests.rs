//! Scenario tests of the membership rules: each scenario walks a group from one membership
//! to what the peer lists say, carrying every step out on a model of openraft's
//! membership, as the leader would.

use super::*;

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn current(voters: &[&str], learners: &[&str]) -> Current {
    Current {
        configs: vec![set(voters)],
        learners: set(learners),
    }
}

/// Every node in `nodes` connected, acknowledging and caught up, listing `list`.
fn facts(list: &[&str], nodes: &[&str]) -> Facts {
    Facts {
        leader: "gw-a".into(),
        lists: nodes.iter().map(|n| (n.to_string(), set(list))).collect(),
        gateways: set(&["gw-a", "gw-b", "gw-c"]),
        acknowledging: set(nodes),
        connected: set(nodes),
        caught_up: set(nodes),
        older: BTreeMap::new(),
    }
}

/// Carries `step` out as openraft would (a learner added, the voters changed in one joint
/// change committed both halves, learners dropped).
fn apply(m: &mut Current, step: &Step) {
    match step {
        Step::AddLearner(n) => {
            m.learners.insert(n.clone());
        }
        Step::ChangeVoters { voters } | Step::Finish { voters } => {
            for v in voters {
                m.learners.remove(v);
            }
            m.configs = vec![voters.clone()];
        }
        Step::DropLearners(l) => m.learners.retain(|n| !l.contains(n)),
        Step::Nothing | Step::HandOver | Step::Wait(_) | Step::Refuse(_) => {}
    }
}

/// Walks to `Nothing` (at most 10 steps), checking on the way that the voters always
/// keep a gateway and are never changed while an added node is not a learner yet.
fn walk(mut m: Current, f: &Facts) -> (Current, Vec<Step>) {
    let mut steps = Vec::new();
    for _ in 0..10 {
        let step = next_step(&m, f);
        if step == Step::Nothing {
            return (m, steps);
        }
        assert!(
            !matches!(step, Step::Wait(_) | Step::Refuse(_) | Step::HandOver),
            "stuck: {step}"
        );
        if let Step::ChangeVoters { voters } | Step::Finish { voters } = &step {
            // Every new voter was a learner that had caught up.
            let before = m.voters();
            let added: Vec<_> = voters.difference(&before).collect();
            assert!(
                added
                    .iter()
                    .all(|n| m.learners.contains(*n) && f.caught_up.contains(*n)),
                "{step}"
            );
            assert!(!voters.is_disjoint(&f.gateways), "{step}");
        }
        apply(&mut m, &step);
        assert!(!m.voters().is_disjoint(&f.gateways));
        steps.push(step);
    }
    panic!("no end after 10 steps: {steps:?}");
}

#[test]
fn a_membership_that_matches_the_lists_needs_nothing() {
    let f = facts(&["gw-a", "gw-b", "witness"], &["gw-a", "gw-b", "witness"]);
    assert_eq!(
        next_step(&current(&["gw-a", "gw-b", "witness"], &[]), &f),
        Step::Nothing
    );
}

#[test]
fn a_fourth_node_joins_as_learner_and_then_votes() {
    let all = ["gw-a", "gw-b", "witness", "w2"];
    let (m, steps) = walk(
        current(&["gw-a", "gw-b", "witness"], &[]),
        &facts(&all, &all),
    );
    assert_eq!(
        steps,
        [
            Step::AddLearner("w2".into()),
            Step::ChangeVoters { voters: set(&all) }
        ]
    );
    assert_eq!(m, current(&all, &[]));
}

#[test]
fn a_node_of_an_older_build_is_not_added_until_upgraded() {
    let all = ["gw-a", "gw-b", "witness", "w2"];
    let mut f = facts(&all, &all);
    f.older.insert("w2".into(), 1);
    let step = next_step(&current(&["gw-a", "gw-b", "witness"], &[]), &f);
    assert!(
        matches!(&step, Step::Wait(why) if why.contains("w2 runs an older build (Raft command level 1")),
        "{step:?}"
    );
    f.older.clear();
    let step = next_step(&current(&["gw-a", "gw-b", "witness"], &[]), &f);
    assert_eq!(step, Step::AddLearner("w2".into()));
}

#[test]
fn a_learner_that_has_not_caught_up_is_not_promoted() {
    let all = ["gw-a", "gw-b", "witness", "w2"];
    let mut f = facts(&all, &all);
    f.caught_up.remove("w2");
    let step = next_step(&current(&["gw-a", "gw-b", "witness"], &["w2"]), &f);
    assert_eq!(step, Step::Wait("w2 catching up as learner(s)".into()));
}

#[test]
fn a_listed_node_that_is_not_connected_is_waited_for() {
    let all = ["gw-a", "gw-b", "witness", "w2"];
    let f = facts(&all, &["gw-a", "gw-b", "witness"]);
    let step = next_step(&current(&["gw-a", "gw-b", "witness"], &[]), &f);
    assert_eq!(step, Step::Wait("w2 is listed but not connected".into()));
}

#[test]
fn a_dead_witness_is_replaced_in_one_joint_change() {
    // The old witness is gone: it neither lists nor acknowledges anything.
    let now = ["gw-a", "gw-b", "w2"];
    let (m, steps) = walk(
        current(&["gw-a", "gw-b", "witness"], &[]),
        &facts(&now, &now),
    );
    assert_eq!(
        steps,
        [
            Step::AddLearner("w2".into()),
            Step::ChangeVoters { voters: set(&now) }
        ]
    );
    assert_eq!(m, current(&now, &[]));
}

#[test]
fn a_node_taken_out_of_the_lists_is_removed() {
    let now = ["gw-a", "gw-b", "witness"];
    let (m, steps) = walk(
        current(&["gw-a", "gw-b", "witness", "w2"], &[]),
        &facts(&now, &now),
    );
    assert_eq!(steps, [Step::ChangeVoters { voters: set(&now) }]);
    assert_eq!(m, current(&now, &[]));
}

#[test]
fn a_learner_taken_out_before_its_promotion_is_dropped() {
    let now = ["gw-a", "gw-b", "witness"];
    let (_, steps) = walk(current(&now, &["w2"]), &facts(&now, &now));
    assert_eq!(steps, [Step::DropLearners(set(&["w2"]))]);
}

#[test]
fn three_voters_grow_to_five_and_back() {
    let five = ["gw-a", "gw-b", "witness", "w2", "w3"];
    let (m, steps) = walk(
        current(&["gw-a", "gw-b", "witness"], &[]),
        &facts(&five, &five),
    );
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(m, current(&five, &[]));
    let three = ["gw-a", "gw-b", "witness"];
    let (m, _) = walk(m, &facts(&three, &three));
    assert_eq!(m, current(&three, &[]));
}

#[test]
fn differing_peer_lists_are_reported_and_nothing_changes() {
    let mut f = facts(&["gw-a", "gw-b", "witness"], &["gw-a", "gw-b", "witness"]);
    f.lists
        .insert("gw-b".into(), set(&["gw-a", "gw-b", "witness", "w2"]));
    let step = next_step(&current(&["gw-a", "gw-b", "witness"], &[]), &f);
    let Step::Wait(why) = step else {
        panic!("{step:?}")
    };
    assert!(why.contains("peer lists differ"), "{why}");
    assert!(why.contains("gw-b lists gw-a, gw-b, w2, witness"), "{why}");
}

#[test]
fn a_change_no_majority_of_the_new_voters_acknowledges_waits() {
    // Replacing two of three voters at once while only the leader and one new node are up:
    // the new set {gw-a, w2, w3} has 2 of 3 acknowledging, the old {gw-a, gw-b, witness}
    // only 1: it could not commit.
    let now = ["gw-a", "w2", "w3"];
    let mut f = facts(&now, &now);
    f.acknowledging = set(&["gw-a"]);
    let step = next_step(&current(&["gw-a", "gw-b", "witness"], &["w2", "w3"]), &f);
    let Step::Wait(why) = step else {
        panic!("{step:?}")
    };
    assert!(
        why.contains("only 1 of the voters gw-a, gw-b, witness"),
        "{why}"
    );
}

#[test]
fn lists_without_a_gateway_are_refused() {
    let now = ["witness", "w2", "w3"];
    let step = next_step(
        &current(&["gw-a", "witness", "w2"], &[]),
        &facts(&now, &now),
    );
    assert!(
        matches!(step, Step::Refuse(ref why) if why.contains("no gateway")),
        "{step:?}"
    );
}

#[test]
fn a_change_left_in_joint_consensus_is_finished() {
    let now = ["gw-a", "gw-b", "w2"];
    let half = Current {
        configs: vec![set(&["gw-a", "gw-b", "witness"]), set(&now)],
        learners: BTreeSet::new(),
    };
    let (m, steps) = walk(half, &facts(&now, &now));
    assert_eq!(steps, [Step::Finish { voters: set(&now) }]);
    assert_eq!(m, current(&now, &[]));
}

#[test]
fn a_leader_the_lists_drop_hands_over_before_anything_changes() {
    let now = ["gw-b", "gw-c", "witness"];
    let m = current(&["gw-a", "gw-b", "witness"], &["gw-c"]);
    assert_eq!(next_step(&m, &facts(&now, &now)), Step::HandOver);
    // gw-b, leader after the hand-over, makes the change (gw-a gone from its facts).
    let mut f = facts(&now, &now);
    f.leader = "gw-b".into();
    let (m, steps) = walk(m, &f);
    assert_eq!(steps, [Step::ChangeVoters { voters: set(&now) }]);
    assert_eq!(m, current(&now, &[]));
}

#[test]
fn a_half_done_change_whose_new_voter_is_not_ready_ends_at_its_own_end_first() {
    // Left joint ({gw-a, gw-b, witness} -> {gw-a, gw-b, w2}) while the lists grew by w3,
    // which is nothing yet: finish to the change's end, then add w3 the usual way.
    let now = ["gw-a", "gw-b", "w2", "w3"];
    let half = Current {
        configs: vec![
            set(&["gw-a", "gw-b", "witness"]),
            set(&["gw-a", "gw-b", "w2"]),
        ],
        learners: BTreeSet::new(),
    };
    let (m, steps) = walk(half, &facts(&now, &now));
    assert_eq!(
        steps,
        [
            Step::Finish {
                voters: set(&["gw-a", "gw-b", "w2"])
            },
            Step::AddLearner("w3".into()),
            Step::ChangeVoters { voters: set(&now) }
        ]
    );
    assert_eq!(m, current(&now, &[]));
}

#[test]
fn a_half_done_change_the_lists_undid_goes_back() {
    let old = ["gw-a", "gw-b", "witness"];
    let half = Current {
        configs: vec![set(&old), set(&["gw-a", "gw-b", "w2"])],
        learners: BTreeSet::new(),
    };
    let (m, steps) = walk(half, &facts(&old, &["gw-a", "gw-b", "witness", "w2"]));
    assert_eq!(steps[0], Step::Finish { voters: set(&old) });
    assert_eq!(m.voters(), set(&old));
}

#[test]
fn a_leader_that_is_no_voter_hands_over() {
    let all = ["gw-a", "gw-b", "witness"];
    let m = current(&["gw-b", "witness", "w2"], &["gw-a"]);
    assert_eq!(next_step(&m, &facts(&all, &all)), Step::HandOver);
}

#[test]
fn a_learner_is_added_only_with_a_majority_of_the_voters_acknowledging() {
    let all = ["gw-a", "gw-b", "witness", "w2", "w3"];
    let mut f = facts(&all, &all);
    f.acknowledging = set(&["gw-a", "w2", "w3"]);
    let step = next_step(&current(&["gw-a", "gw-b", "witness"], &[]), &f);
    assert!(
        matches!(step, Step::Wait(ref why) if why.contains("only 1 of the voters")),
        "{step:?}"
    );
}
