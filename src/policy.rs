//! Who should lead a VIP group: the election policy the Raft leader evaluates on every
//! change (health, link, maintenance, membership, an operator's pin, the failback timer).
//!
//! Given one group's situation as the current leader sees it, [`decide`] says whether the
//! leader may hold the VIP (condition 2 of the hold rule in DESIGN.md, plus "release
//! before transfer", see [`Verdict::leader_may_hold`]), whether leadership should be
//! handed to another node (the `transfer_leader` target, and why), and when to look again
//! if a failback is waiting for its delay.
//!
//! This module must never do I/O or read a clock: every input, time included, comes in
//! as a value (durations, already measured by the caller on a monotonic clock), so every
//! decision can be replayed in a unit test. It never panics on any input.

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

// The roles and the all-unhealthy rule are the config's own types, a node's facts the
// replicated state's: one definition each.
use crate::config::{OnAllUnhealthy, Role};
use crate::consensus::state::NodeFacts;

/// One node of the group as the current leader sees it: the node's facts (the one type
/// from the wire to status), the operator's maintenance flag, and what only the leader
/// observes. Built by [`NodeView::of`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// As the node reported them (the leader's own: as it would report them now). The
    /// priority is effective for this group, health weights applied; higher wins; a
    /// witness's is ignored.
    pub facts: NodeFacts,
    pub maintenance: bool,
    /// The leader has heard from this node within the election timeout. Handing
    /// leadership to a node that is not reachable would stall the group for an election
    /// timeout, so such nodes are never targets. Ignored for the leader itself, which is
    /// always reachable. The caller must call [`decide`] again when this changes.
    pub reachable: bool,
    /// How long the node has been continuously reachable, healthy, link-up and out of
    /// maintenance, as observed by the leader; `None` if it is not currently all of
    /// those. The caller resets it on every flap, which is what makes failback wait for
    /// a full quiet `failback_delay` after the last one.
    pub stable_for: Option<Duration>,
}

impl NodeView {
    /// `name` as the leader sees it, not yet stable (the caller tracks `stable_for`). A
    /// node that never reported (`facts` none) counts as a witness of priority 0,
    /// unhealthy and link down: never eligible, never a target.
    pub fn of(name: &str, facts: Option<NodeFacts>, maintenance: bool, reachable: bool) -> Self {
        NodeView {
            name: name.to_string(),
            facts: facts.unwrap_or(NodeFacts {
                role: Role::Witness,
                priority: 0,
                healthy: false,
                link_up: false,
                detail: String::new(),
            }),
            maintenance,
            reachable,
            stable_for: None,
        }
    }

    /// Reachable and eligible on its own merits now: what `stable_for` counts the
    /// duration of.
    pub fn stable_now(&self) -> bool {
        self.reachable && self.fit()
    }

    fn is_gateway(&self) -> bool {
        self.facts.role == Role::Gateway
    }

    /// A gateway that could hold the VIP if only its health allowed it.
    fn could_hold(&self) -> bool {
        self.is_gateway() && !self.maintenance && self.facts.link_up
    }

    /// Eligible on its own merits, without the all-unhealthy exception.
    fn fit(&self) -> bool {
        self.could_hold() && self.facts.healthy
    }

    /// Why this node may not hold, most operator-relevant first: maintenance is a
    /// deliberate act, a link down explains an unhealthy check, not the reverse.
    fn ineligibility(&self) -> Ineligibility {
        if self.maintenance {
            Ineligibility::Maintenance
        } else if !self.facts.link_up {
            Ineligibility::LinkDown
        } else {
            Ineligibility::Unhealthy
        }
    }
}

/// The group's configured policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRules {
    /// Give the VIP back to a higher-priority gateway once it is stable (keepalived's
    /// preempt); off is keepalived's `nopreempt`.
    pub failback: bool,
    /// How long the preferred gateway must be continuously fit before it gets the VIP
    /// back (keepalived's `preempt_delay`), so a flapping gateway does not cause a storm.
    pub failback_delay: Duration,
    pub on_all_unhealthy: OnAllUnhealthy,
}

/// One group's situation, as seen by its current Raft leader.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    /// Name of the current leader (the node evaluating the policy).
    pub leader: &'a str,
    /// Every voter of the group, the leader included. Names are unique (config
    /// validation refuses duplicates); if not, the first entry of a name is used.
    pub nodes: &'a [NodeView],
    /// The committed operator pin (`havip failover --to NODE`), if any.
    pub pin: Option<&'a str>,
    pub rules: &'a GroupRules,
}

/// What the leader should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The leader may hold the VIP (with the other hold-rule conditions: being leader,
    /// a fresh quorum lease). False whenever `hand_over` is set, even when the leader
    /// is eligible (a pin or a failback): the transfer target starts its election
    /// without waiting for the leader lease, so it can win while this leader's hold
    /// lease is still fresh, and keeping the VIP during the transfer could put it on two
    /// gateways at once. Release first, then transfer.
    pub leader_may_hold: bool,
    /// Hand leadership to this node (`transfer_leader`). Never the leader itself, never
    /// an unreachable node; a witness only as a relay, when a gateway leader must leave
    /// and no gateway can take over.
    pub hand_over: Option<HandOver>,
    /// Evaluate again after this long even if nothing else changes: a failback is
    /// waiting for its delay. `None` when nothing time-driven is pending.
    pub recheck_in: Option<Duration>,
}

/// A leadership transfer the leader should start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOver {
    pub to: String,
    pub reason: Reason,
}

impl fmt::Display for HandOver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "handing leadership to {}: {}", self.to, self.reason)
    }
}

/// Why leadership moves. When the leader itself cannot hold (witness, ineligible,
/// unknown) that is the reason given, even if the target was chosen by a pin: the
/// leader's problem is what the operator must look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A witness became leader (no gateway won the election in time); it never holds.
    WitnessIsLeader,
    /// The leader is a gateway that may not hold the VIP.
    LeaderIneligible(Ineligibility),
    /// The leader is not in the group's node list (for example while it is being
    /// removed from the membership), so it cannot judge itself eligible.
    LeaderNotInGroup,
    /// The operator pinned the group to the target (`havip failover --to`).
    Pinned,
    /// The target is the preferred (higher-priority) gateway and has been stable for
    /// `failback_delay`.
    Failback,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::WitnessIsLeader => f.write_str("a witness is leader and never holds a VIP"),
            Reason::LeaderIneligible(why) => write!(f, "leader ineligible: {why}"),
            Reason::LeaderNotInGroup => f.write_str("leader is not in the group's node list"),
            Reason::Pinned => f.write_str("pinned by the operator (havip failover --to)"),
            Reason::Failback => {
                f.write_str("failback to the preferred gateway, stable for failback_delay")
            }
        }
    }
}

/// Why a gateway may not hold the VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ineligibility {
    Maintenance,
    LinkDown,
    Unhealthy,
}

impl fmt::Display for Ineligibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ineligibility::Maintenance => "in maintenance",
            Ineligibility::LinkDown => "link down",
            Ineligibility::Unhealthy => "unhealthy",
        })
    }
}

/// Decide, for one group, what its current leader should do. See the module comment.
/// A leader that is not an eligible gateway must leave ([`GroupView::must_leave`]); an
/// eligible one follows a pin ([`GroupView::follow_pin`]) or else a failback
/// ([`GroupView::failback`]).
pub fn decide(situation: &Situation) -> Verdict {
    let group = GroupView::of(situation);
    let Some(me) = group.find(situation.leader) else {
        return group.must_leave(Reason::LeaderNotInGroup, true);
    };
    if !me.is_gateway() {
        // A witness hands over to any eligible gateway, including unhealthy ones under
        // `Keep`: they may hold and the witness never may, so staying would leave the
        // VIP down for no gain. Only with no eligible reachable gateway does it stay.
        return group.must_leave(Reason::WitnessIsLeader, false);
    }
    if !group.eligible(me) {
        return group.must_leave(Reason::LeaderIneligible(me.ineligibility()), true);
    }
    // From here the leader is an eligible gateway.
    match group.pinned {
        Some(pinned) => group.follow_pin(pinned),
        None => group.failback(me),
    }
}

/// One group as its leader judges it: who is eligible, reachable, pinned.
struct GroupView<'a> {
    leader: &'a str,
    nodes: &'a [NodeView],
    rules: &'a GroupRules,
    /// The all-unhealthy exception is in force (see [`GroupView::of`]).
    keep_unhealthy: bool,
    /// The pinned node, while it could take the group.
    pinned: Option<&'a NodeView>,
}

impl<'a> GroupView<'a> {
    fn of(situation: &Situation<'a>) -> Self {
        let mut group = GroupView {
            leader: situation.leader,
            nodes: situation.nodes,
            rules: situation.rules,
            keep_unhealthy: false,
            pinned: None,
        };
        // The all-unhealthy exception: when every gateway that could hold (and that the
        // leader can hear) is unhealthy, `Keep` lets those unhealthy gateways count as
        // eligible. Unreachable gateways are left out because the leader cannot hand to
        // them; a healthy one it cannot hear must not force everybody to drop the VIP.
        group.keep_unhealthy = group.rules.on_all_unhealthy == OnAllUnhealthy::Keep
            && group
                .nodes
                .iter()
                .filter(|n| n.could_hold() && group.reachable(n))
                .all(|n| !n.facts.healthy);
        // A pin counts only while its node could take the group; otherwise the normal
        // rules apply and the pin, still committed, takes effect again when the node is
        // back.
        group.pinned = situation
            .pin
            .and_then(|name| group.find(name))
            .filter(|n| group.eligible(n) && group.reachable(n));
        group
    }

    fn find(&self, name: &str) -> Option<&'a NodeView> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The leader is always reachable from itself, whatever its own flag says.
    fn reachable(&self, n: &NodeView) -> bool {
        n.reachable || n.name == self.leader
    }

    fn eligible(&self, n: &NodeView) -> bool {
        n.fit() || (self.keep_unhealthy && n.could_hold())
    }

    /// A node the leader may hand leadership to.
    fn candidate(&self, n: &NodeView) -> bool {
        n.name != self.leader && self.eligible(n) && self.reachable(n)
    }

    /// The leader may not hold: it hands over to the pinned node, else the best
    /// candidate, else (`may_relay`) a reachable witness, else nobody.
    fn must_leave(&self, reason: Reason, may_relay: bool) -> Verdict {
        let target = self
            .pinned
            .filter(|n| n.name != self.leader)
            .or_else(|| best(self.nodes.iter().filter(|n| self.candidate(n))));
        let to = match target {
            Some(n) => Some(n),
            None if may_relay => self.relay(),
            // Nobody to hand to: stay leader (keeps the group available for commands and
            // health reports) but do not hold. With `Release` and every gateway
            // unhealthy this is the intended "nobody holds".
            None => None,
        };
        Verdict {
            leader_may_hold: false,
            hand_over: to.map(|n| HandOver {
                to: n.name.clone(),
                reason,
            }),
            recheck_in: None,
        }
    }

    /// A gateway leader that must leave and has no gateway to hand to hands to a
    /// reachable witness instead: in an asymmetric partition the witness may hear a
    /// healthy gateway this leader cannot, and while this leader stays, its heartbeats
    /// keep the witness's lease fresh so that gateway can never be elected. A witness
    /// leader with nobody eligible simply stays (no ping-pong back).
    fn relay(&self) -> Option<&'a NodeView> {
        self.nodes
            .iter()
            .filter(|n| n.name != self.leader && !n.is_gateway() && self.reachable(n))
            .min_by(|a, b| a.name.cmp(&b.name))
    }

    /// An eligible leader and a pin that counts: the pin overrides priority and failback,
    /// in both directions.
    fn follow_pin(&self, pinned: &NodeView) -> Verdict {
        if pinned.name == self.leader {
            stay(None)
        } else {
            hand_to(pinned, Reason::Pinned)
        }
    }

    /// An eligible leader and no pin: it stays, unless failback is on and a preferred
    /// gateway has been stable for `failback_delay` (then it hands over), or is waiting
    /// for it (then it looks again when the delay is up).
    fn failback(&self, me: &NodeView) -> Verdict {
        if !self.rules.failback {
            return stay(None);
        }
        // Failback only to a healthy gateway (a `Keep` fallback is no reason to move)
        // that strictly outranks the leader: an equal-priority leader is never displaced,
        // or two equal gateways would ping-pong on the name tie-break.
        let preferred = best(self.nodes.iter().filter(|n| self.candidate(n) && n.fit()))
            .filter(|n| n.facts.priority > me.facts.priority);
        let delay = self.rules.failback_delay;
        match preferred.map(|n| (n, n.stable_for)) {
            Some((n, Some(stable))) if stable >= delay => hand_to(n, Reason::Failback),
            Some((_, Some(stable))) => stay(Some(delay.saturating_sub(stable))),
            // Not stable (by the caller's account) or nobody better: nothing to wait for;
            // the caller calls again when the preferred gateway's state changes.
            _ => stay(None),
        }
    }
}

/// An eligible leader keeps the VIP; `recheck_in` when a failback is waiting.
fn stay(recheck_in: Option<Duration>) -> Verdict {
    Verdict {
        leader_may_hold: true,
        hand_over: None,
        recheck_in,
    }
}

/// An eligible leader hands over (releasing first: it may not hold).
fn hand_to(to: &NodeView, reason: Reason) -> Verdict {
    Verdict {
        leader_may_hold: false,
        hand_over: Some(HandOver {
            to: to.name.clone(),
            reason,
        }),
        recheck_in: None,
    }
}

/// The best of some nodes: highest priority, ties to the lexicographically smallest
/// name, so every node computes the same choice from the same inputs.
fn best<'n>(nodes: impl Iterator<Item = &'n NodeView>) -> Option<&'n NodeView> {
    nodes.min_by(|a, b| rank(a, b))
}

fn rank(a: &NodeView, b: &NodeView) -> Ordering {
    b.facts
        .priority
        .cmp(&a.facts.priority)
        .then_with(|| a.name.cmp(&b.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(30);
    /// Long enough that failback is never waiting in rows that are not about it.
    const LONG: Duration = Duration::from_secs(3600);

    fn facts(role: Role, priority: u8, healthy: bool, link_up: bool) -> NodeFacts {
        NodeFacts {
            role,
            priority,
            healthy,
            link_up,
            detail: String::new(),
        }
    }

    fn gw(name: &str, priority: u8) -> NodeView {
        NodeView {
            stable_for: Some(LONG),
            ..NodeView::of(
                name,
                Some(facts(Role::Gateway, priority, true, true)),
                false,
                true,
            )
        }
    }

    fn witness(name: &str) -> NodeView {
        NodeView {
            facts: facts(Role::Witness, 0, true, true),
            ..gw(name, 0)
        }
    }

    // Builders mirror the caller's contract: anything that makes a node unfit also
    // clears `stable_for`.
    impl NodeView {
        fn unhealthy(self) -> Self {
            Self {
                facts: NodeFacts {
                    healthy: false,
                    ..self.facts
                },
                stable_for: None,
                ..self
            }
        }
        fn in_maintenance(self) -> Self {
            Self {
                maintenance: true,
                stable_for: None,
                ..self
            }
        }
        fn link_down(self) -> Self {
            Self {
                facts: NodeFacts {
                    link_up: false,
                    ..self.facts
                },
                stable_for: None,
                ..self
            }
        }
        fn unreachable(self) -> Self {
            Self {
                reachable: false,
                stable_for: None,
                ..self
            }
        }
        fn stable(self, secs: u64) -> Self {
            Self {
                stable_for: Some(Duration::from_secs(secs)),
                ..self
            }
        }
    }

    fn rules() -> GroupRules {
        GroupRules {
            failback: true,
            failback_delay: DELAY,
            on_all_unhealthy: OnAllUnhealthy::Release,
        }
    }
    fn keep() -> GroupRules {
        GroupRules {
            on_all_unhealthy: OnAllUnhealthy::Keep,
            ..rules()
        }
    }
    fn no_failback() -> GroupRules {
        GroupRules {
            failback: false,
            ..rules()
        }
    }

    fn hold() -> Verdict {
        Verdict {
            leader_may_hold: true,
            hand_over: None,
            recheck_in: None,
        }
    }
    fn no_hold() -> Verdict {
        Verdict {
            leader_may_hold: false,
            hand_over: None,
            recheck_in: None,
        }
    }
    fn hand(to: &str, reason: Reason) -> Verdict {
        Verdict {
            leader_may_hold: false,
            hand_over: Some(HandOver {
                to: to.to_string(),
                reason,
            }),
            recheck_in: None,
        }
    }
    fn hold_recheck(secs: u64) -> Verdict {
        Verdict {
            recheck_in: Some(Duration::from_secs(secs)),
            ..hold()
        }
    }

    use Ineligibility::*;
    use Reason::*;

    struct Row {
        name: &'static str,
        nodes: Vec<NodeView>,
        leader: &'static str,
        pin: Option<&'static str>,
        rules: GroupRules,
        expect: Verdict,
    }

    /// Defaults for the rows: no pin, failback on, release when all are unhealthy.
    fn row() -> Row {
        Row {
            name: "",
            nodes: Vec::new(),
            leader: "",
            pin: None,
            rules: rules(),
            expect: hold(),
        }
    }

    fn check(rows: Vec<Row>) {
        let mut failures = Vec::new();
        for r in &rows {
            let got = decide(&Situation {
                leader: r.leader,
                nodes: &r.nodes,
                pin: r.pin,
                rules: &r.rules,
            });
            if got != r.expect {
                failures.push(format!(
                    "{}:\n  want {:?}\n  got  {:?}",
                    r.name, r.expect, got
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} row(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn witness_leader() {
        check(vec![
            Row {
                name: "witness hands to the best eligible gateway at once",
                leader: "wit",
                nodes: vec![gw("gw-a", 150), gw("gw-b", 100), witness("wit")],
                expect: hand("gw-a", WitnessIsLeader),
                ..row()
            },
            Row {
                name: "witness hands to a gateway not yet stable: no failback delay for a witness",
                leader: "wit",
                nodes: vec![gw("gw-a", 150).stable(0), witness("wit")],
                expect: hand("gw-a", WitnessIsLeader),
                ..row()
            },
            Row {
                name: "witness with no eligible gateway stays and never holds",
                leader: "wit",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 100).in_maintenance(),
                    witness("wit"),
                ],
                expect: no_hold(),
                ..row()
            },
            Row {
                name: "witness with all gateways unhealthy under keep hands to the best of them",
                leader: "wit",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 100).unhealthy(),
                    witness("wit"),
                ],
                rules: keep(),
                expect: hand("gw-a", WitnessIsLeader),
                ..row()
            },
            Row {
                name: "witness skips an unreachable gateway",
                leader: "wit",
                nodes: vec![
                    gw("gw-a", 150).unreachable(),
                    gw("gw-b", 100),
                    witness("wit"),
                ],
                expect: hand("gw-b", WitnessIsLeader),
                ..row()
            },
            Row {
                name: "witness with only unreachable gateways stays",
                leader: "wit",
                nodes: vec![
                    gw("gw-a", 150).unreachable(),
                    gw("gw-b", 100).unreachable(),
                    witness("wit"),
                ],
                rules: keep(),
                expect: no_hold(),
                ..row()
            },
            Row {
                name: "witness hands to the pinned gateway over the higher-priority one",
                leader: "wit",
                nodes: vec![gw("gw-a", 150), gw("gw-b", 100), witness("wit")],
                pin: Some("gw-b"),
                expect: hand("gw-b", WitnessIsLeader),
                ..row()
            },
            Row {
                name: "a pin naming the witness itself is ignored",
                leader: "wit",
                nodes: vec![gw("gw-a", 150), witness("wit")],
                pin: Some("wit"),
                expect: hand("gw-a", WitnessIsLeader),
                ..row()
            },
        ]);
    }

    #[test]
    fn ineligible_leader() {
        check(vec![
            Row {
                name: "unhealthy leader hands to the best healthy gateway",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 100),
                    gw("gw-c", 50),
                    witness("wit"),
                ],
                expect: hand("gw-b", LeaderIneligible(Unhealthy)),
                ..row()
            },
            Row {
                name: "leader in maintenance hands over",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).in_maintenance(),
                    gw("gw-b", 100),
                    witness("wit"),
                ],
                expect: hand("gw-b", LeaderIneligible(Maintenance)),
                ..row()
            },
            Row {
                name: "leader with its link down hands over",
                leader: "gw-a",
                nodes: vec![gw("gw-a", 150).link_down(), gw("gw-b", 100), witness("wit")],
                expect: hand("gw-b", LeaderIneligible(LinkDown)),
                ..row()
            },
            Row {
                name: "maintenance is named before link down and unhealthy",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy().link_down().in_maintenance(),
                    gw("gw-b", 100),
                ],
                expect: hand("gw-b", LeaderIneligible(Maintenance)),
                ..row()
            },
            Row {
                name: "hands over with no failback delay, even to a lower priority",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 100).stable(0),
                    witness("wit"),
                ],
                expect: hand("gw-b", LeaderIneligible(Unhealthy)),
                ..row()
            },
            Row {
                name: "ineligible leader with no gateway to hand to relays to the witness",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).link_down(),
                    gw("gw-b", 100).in_maintenance(),
                    witness("wit"),
                ],
                rules: keep(),
                expect: hand("wit", LeaderIneligible(Ineligibility::LinkDown)),
                ..row()
            },
            Row {
                name: "ineligible leader with nobody at all to hand to stays and does not hold",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).link_down(),
                    gw("gw-b", 100).in_maintenance(),
                    witness("wit").unreachable(),
                ],
                rules: keep(),
                expect: no_hold(),
                ..row()
            },
            Row {
                name: "unreachable best target skipped for the next one",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 120).unreachable(),
                    gw("gw-c", 100),
                    witness("wit"),
                ],
                expect: hand("gw-c", LeaderIneligible(Unhealthy)),
                ..row()
            },
            Row {
                name: "asymmetric partition: the healthy gateway is unreachable, relay to the witness that may hear it",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 100).unreachable(),
                    witness("wit"),
                ],
                expect: hand("wit", LeaderIneligible(Ineligibility::Unhealthy)),
                ..row()
            },
            Row {
                name: "the relayed witness hands to the healthy gateway it hears, never back",
                leader: "wit",
                nodes: vec![gw("gw-a", 150).unhealthy(), gw("gw-b", 100), witness("wit")],
                expect: hand("gw-b", WitnessIsLeader),
                ..row()
            },
            Row {
                name: "tie on priority broken by the smallest name",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-c", 100),
                    gw("gw-b", 100),
                    witness("wit"),
                ],
                expect: hand("gw-b", LeaderIneligible(Unhealthy)),
                ..row()
            },
            Row {
                name: "leader's own reachable flag is ignored",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unreachable().stable(100),
                    gw("gw-b", 100),
                    witness("wit"),
                ],
                expect: hold(),
                ..row()
            },
            Row {
                name: "leader missing from the node list never holds and hands over",
                leader: "gw-x",
                nodes: vec![gw("gw-a", 150), gw("gw-b", 100), witness("wit")],
                expect: hand("gw-a", LeaderNotInGroup),
                ..row()
            },
            Row {
                name: "an unhealthy leader hands to the pinned node, naming its own problem",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 120),
                    gw("gw-c", 100),
                ],
                pin: Some("gw-c"),
                expect: hand("gw-c", LeaderIneligible(Unhealthy)),
                ..row()
            },
        ]);
    }

    #[test]
    fn all_unhealthy() {
        check(vec![
            Row {
                name: "keep: unhealthy leader holds when every gateway is unhealthy",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 100).unhealthy(),
                    witness("wit"),
                ],
                rules: keep(),
                expect: hold(),
                ..row()
            },
            Row {
                name: "keep: lower-priority unhealthy leader is not failed back among the unhealthy",
                leader: "gw-b",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 100).unhealthy(),
                    witness("wit"),
                ],
                rules: keep(),
                expect: hold(),
                ..row()
            },
            Row {
                name: "release: nobody holds; the unhealthy leader relays to the witness",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 100).unhealthy(),
                    witness("wit"),
                ],
                expect: hand("wit", LeaderIneligible(Ineligibility::Unhealthy)),
                ..row()
            },
            Row {
                name: "release: a witness leader with every gateway unhealthy stays, nobody holds",
                leader: "wit",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 100).unhealthy(),
                    witness("wit"),
                ],
                expect: no_hold(),
                ..row()
            },
            Row {
                name: "keep: one gateway healthy again, the unhealthy leader hands over at once",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 100).stable(0),
                    witness("wit"),
                ],
                rules: keep(),
                expect: hand("gw-b", LeaderIneligible(Unhealthy)),
                ..row()
            },
            Row {
                name: "keep: a healthy gateway in maintenance does not count, leader keeps",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 100).in_maintenance(),
                    witness("wit"),
                ],
                rules: keep(),
                expect: hold(),
                ..row()
            },
            Row {
                name: "keep: a healthy gateway the leader cannot hear does not count",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 100).unreachable(),
                    witness("wit"),
                ],
                rules: keep(),
                expect: hold(),
                ..row()
            },
            Row {
                name: "keep: a leader in maintenance still may not hold",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy().in_maintenance(),
                    gw("gw-b", 100).unhealthy(),
                ],
                rules: keep(),
                expect: hand("gw-b", LeaderIneligible(Maintenance)),
                ..row()
            },
            Row {
                name: "keep: a leader with its link down still may not hold",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy().link_down(),
                    gw("gw-b", 100).unhealthy(),
                ],
                rules: keep(),
                expect: hand("gw-b", LeaderIneligible(LinkDown)),
                ..row()
            },
        ]);
    }

    #[test]
    fn pins() {
        check(vec![
            Row {
                name: "pin to an eligible lower-priority node moves the group at once",
                leader: "gw-a",
                nodes: vec![gw("gw-a", 150), gw("gw-b", 100), witness("wit")],
                pin: Some("gw-b"),
                expect: hand("gw-b", Pinned),
                ..row()
            },
            Row {
                name: "pinned leader stays, even with failback and a better node",
                leader: "gw-b",
                nodes: vec![gw("gw-a", 150), gw("gw-b", 100), witness("wit")],
                pin: Some("gw-b"),
                expect: hold(),
                ..row()
            },
            Row {
                name: "pin to an unhealthy node is ignored: leader keeps",
                leader: "gw-a",
                nodes: vec![gw("gw-a", 150), gw("gw-b", 100).unhealthy(), witness("wit")],
                pin: Some("gw-b"),
                expect: hold(),
                ..row()
            },
            Row {
                name: "pin to an unreachable node is ignored",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150),
                    gw("gw-b", 100).unreachable(),
                    witness("wit"),
                ],
                pin: Some("gw-b"),
                expect: hold(),
                ..row()
            },
            Row {
                name: "pin to an unknown node is ignored",
                leader: "gw-a",
                nodes: vec![gw("gw-a", 150), gw("gw-b", 100), witness("wit")],
                pin: Some("gw-z"),
                expect: hold(),
                ..row()
            },
            Row {
                name: "ignored pin: normal failback applies",
                leader: "gw-c",
                nodes: vec![
                    gw("gw-a", 150),
                    gw("gw-b", 100).in_maintenance(),
                    gw("gw-c", 50),
                ],
                pin: Some("gw-b"),
                expect: hand("gw-a", Failback),
                ..row()
            },
            Row {
                name: "pinned node back: takes effect at once, not after failback_delay",
                leader: "gw-a",
                nodes: vec![gw("gw-a", 150), gw("gw-b", 100).stable(0), witness("wit")],
                pin: Some("gw-b"),
                expect: hand("gw-b", Pinned),
                ..row()
            },
            Row {
                name: "pin wins over failback: preferred node stable, leader pinned, no recheck",
                leader: "gw-b",
                nodes: vec![gw("gw-a", 150).stable(5), gw("gw-b", 100), witness("wit")],
                pin: Some("gw-b"),
                expect: hold(),
                ..row()
            },
            Row {
                name: "pin wins over no-failback too",
                leader: "gw-a",
                nodes: vec![gw("gw-a", 150), gw("gw-b", 100), witness("wit")],
                pin: Some("gw-b"),
                rules: no_failback(),
                expect: hand("gw-b", Pinned),
            },
            Row {
                name: "pin to an unhealthy node under keep with everyone unhealthy: it is eligible",
                leader: "gw-a",
                nodes: vec![
                    gw("gw-a", 150).unhealthy(),
                    gw("gw-b", 100).unhealthy(),
                    witness("wit"),
                ],
                pin: Some("gw-b"),
                rules: keep(),
                expect: hand("gw-b", Pinned),
            },
        ]);
    }

    #[test]
    fn failback() {
        check(vec![
            Row {
                name: "preferred gateway stable for the delay gets the group back",
                leader: "gw-b",
                nodes: vec![gw("gw-a", 150).stable(30), gw("gw-b", 100), witness("wit")],
                expect: hand("gw-a", Failback),
                ..row()
            },
            Row {
                name: "preferred gateway not yet stable: stay, recheck after the rest of the delay",
                leader: "gw-b",
                nodes: vec![gw("gw-a", 150).stable(12), gw("gw-b", 100), witness("wit")],
                expect: hold_recheck(18),
                ..row()
            },
            Row {
                name: "failback off: an eligible leader keeps the group",
                leader: "gw-b",
                nodes: vec![gw("gw-a", 150), gw("gw-b", 100), witness("wit")],
                rules: no_failback(),
                expect: hold(),
                ..row()
            },
            Row {
                name: "failback off: no recheck either",
                leader: "gw-b",
                nodes: vec![gw("gw-a", 150).stable(1), gw("gw-b", 100), witness("wit")],
                rules: no_failback(),
                expect: hold(),
                ..row()
            },
            Row {
                name: "equal-priority eligible leader is not displaced by a smaller name",
                leader: "gw-b",
                nodes: vec![gw("gw-a", 100), gw("gw-b", 100), witness("wit")],
                expect: hold(),
                ..row()
            },
            Row {
                name: "priority lowered by health weights: the other gateway now outranks the leader",
                leader: "gw-a",
                nodes: vec![gw("gw-a", 90), gw("gw-b", 100), witness("wit")],
                expect: hand("gw-b", Failback),
                ..row()
            },
            Row {
                name: "priority lowered but still ahead: leader keeps",
                leader: "gw-a",
                nodes: vec![gw("gw-a", 110), gw("gw-b", 100), witness("wit")],
                expect: hold(),
                ..row()
            },
            Row {
                name: "unreachable preferred gateway is not failed back to, and no recheck",
                leader: "gw-b",
                nodes: vec![
                    gw("gw-a", 150).unreachable(),
                    gw("gw-b", 100),
                    witness("wit"),
                ],
                expect: hold(),
                ..row()
            },
            Row {
                name: "unreachable best skipped: the next better one gets failback",
                leader: "gw-c",
                nodes: vec![
                    gw("gw-a", 150).unreachable(),
                    gw("gw-b", 100),
                    gw("gw-c", 50),
                ],
                expect: hand("gw-b", Failback),
                ..row()
            },
            Row {
                name: "only the best is considered: waiting for it, not moving twice",
                leader: "gw-c",
                nodes: vec![gw("gw-a", 150).stable(10), gw("gw-b", 100), gw("gw-c", 50)],
                expect: hold_recheck(20),
                ..row()
            },
            Row {
                name: "preferred gateway in maintenance is no failback target",
                leader: "gw-b",
                nodes: vec![
                    gw("gw-a", 150).in_maintenance(),
                    gw("gw-b", 100),
                    witness("wit"),
                ],
                expect: hold(),
                ..row()
            },
            Row {
                name: "zero delay fails back as soon as the preferred gateway is fit",
                leader: "gw-b",
                nodes: vec![gw("gw-a", 150).stable(0), gw("gw-b", 100)],
                rules: GroupRules {
                    failback_delay: Duration::ZERO,
                    ..rules()
                },
                expect: hand("gw-a", Failback),
                ..row()
            },
            Row {
                name: "fit preferred gateway with no stable_for (caller not tracking yet): wait",
                leader: "gw-b",
                nodes: vec![
                    NodeView {
                        stable_for: None,
                        ..gw("gw-a", 150)
                    },
                    gw("gw-b", 100),
                ],
                expect: hold(),
                ..row()
            },
        ]);
    }

    /// A gateway whose health flaps must be quiet for a full `failback_delay` after the
    /// last flap before it gets the group back. The caller resets `stable_for` on every
    /// flap; here the calls the leader would make over time are replayed in order.
    #[test]
    fn flapping_health_delays_failback() {
        let r = rules();
        let leader = "gw-b";
        let b = gw("gw-b", 100);
        let steps: [(&str, NodeView, Verdict); 7] = [
            ("t=0 gw-a back", gw("gw-a", 150).stable(0), hold_recheck(30)),
            (
                "t=10 still fine",
                gw("gw-a", 150).stable(10),
                hold_recheck(20),
            ),
            ("t=20 gw-a flaps down", gw("gw-a", 150).unhealthy(), hold()),
            (
                "t=21 gw-a back, clock reset",
                gw("gw-a", 150).stable(0),
                hold_recheck(30),
            ),
            (
                "t=40 still fine",
                gw("gw-a", 150).stable(19),
                hold_recheck(11),
            ),
            (
                "t=50 one second short",
                gw("gw-a", 150).stable(29),
                hold_recheck(1),
            ),
            (
                "t=51 quiet for the full delay",
                gw("gw-a", 150).stable(30),
                hand("gw-a", Failback),
            ),
        ];
        for (step, a, want) in steps {
            let nodes = [a, b.clone(), witness("wit")];
            let got = decide(&Situation {
                leader,
                nodes: &nodes,
                pin: None,
                rules: &r,
            });
            assert_eq!(got, want, "{step}");
        }
    }

    #[test]
    fn reasons_read_as_log_phrases() {
        let h = HandOver {
            to: "gw-b".into(),
            reason: LeaderIneligible(LinkDown),
        };
        assert_eq!(
            h.to_string(),
            "handing leadership to gw-b: leader ineligible: link down"
        );
        assert_eq!(
            LeaderIneligible(Maintenance).to_string(),
            "leader ineligible: in maintenance"
        );
        assert_eq!(
            LeaderIneligible(Unhealthy).to_string(),
            "leader ineligible: unhealthy"
        );
        for r in [WitnessIsLeader, LeaderNotInGroup, Pinned, Failback] {
            assert!(!r.to_string().is_empty());
        }
    }

    #[test]
    fn enums_use_config_spelling() {
        assert_eq!(
            serde_json::to_string(&Role::Witness).unwrap(),
            "\"witness\""
        );
        assert_eq!(
            serde_json::from_str::<OnAllUnhealthy>("\"keep\"").unwrap(),
            OnAllUnhealthy::Keep
        );
        assert_eq!(
            serde_json::from_str::<OnAllUnhealthy>("\"release\"").unwrap(),
            OnAllUnhealthy::Release
        );
    }

    /// Every state of one node, consistent with the caller's contract for `stable_for`:
    /// (healthy, link up, maintenance, reachable, stable for).
    fn node_states() -> Vec<(bool, bool, bool, bool, Option<Duration>)> {
        let mut states = Vec::new();
        for bits in 0u8..16 {
            let (healthy, link_up, maintenance, reachable) =
                (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, bits & 8 != 0);
            let fit = healthy && link_up && !maintenance && reachable;
            let stables: &[Option<Duration>] = if fit {
                &[Some(Duration::from_secs(5)), Some(LONG)]
            } else {
                &[None]
            };
            for &stable_for in stables {
                states.push((healthy, link_up, maintenance, reachable, stable_for));
            }
        }
        states
    }

    fn make(
        name: &str,
        role: Role,
        priority: u8,
        s: (bool, bool, bool, bool, Option<Duration>),
    ) -> NodeView {
        NodeView {
            stable_for: s.4,
            ..NodeView::of(name, Some(facts(role, priority, s.0, s.1)), s.2, s.3)
        }
    }

    /// Failback on and off, times keep and release.
    fn all_rules() -> Vec<GroupRules> {
        [true, false]
            .into_iter()
            .flat_map(|failback| {
                [OnAllUnhealthy::Keep, OnAllUnhealthy::Release]
                    .into_iter()
                    .map(move |on_all_unhealthy| GroupRules {
                        failback,
                        failback_delay: DELAY,
                        on_all_unhealthy,
                    })
            })
            .collect()
    }

    /// Every combination of a small group's node states, leaders, pins and rules, checked
    /// against the invariants the rest of havip relies on.
    #[test]
    fn invariants_hold_for_every_small_group() {
        let states = node_states();
        let all_rules = all_rules();
        let pins = [None, Some("gw-a"), Some("gw-b"), Some("gw-c"), Some("wit")];

        let mut checked = 0u64;
        for &sa in &states {
            for &sb in &states {
                for &sc in &states {
                    // gw-b and gw-c tie on priority to exercise the name tie-break.
                    let nodes = vec![
                        make("gw-a", Role::Gateway, 150, sa),
                        make("gw-b", Role::Gateway, 100, sb),
                        make("gw-c", Role::Gateway, 100, sc),
                        witness("wit"),
                    ];
                    for rules in &all_rules {
                        for pin in pins {
                            for leader in ["gw-a", "gw-b", "gw-c", "wit"] {
                                let s = Situation {
                                    leader,
                                    nodes: &nodes,
                                    pin,
                                    rules,
                                };
                                check_invariants(&s, &decide(&s));
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 100_000, "the enumeration shrank: {checked}");
    }

    /// Five voters (two gateways, three witnesses), every gateway state, every witness
    /// reachable or not, every leader: the invariants above, and a witness never hands
    /// leadership to another witness (three witnesses must not pass it round while no
    /// gateway can take it), and a relay goes to one witness, the same on every leader.
    #[test]
    fn invariants_hold_with_three_witnesses() {
        let states = node_states();
        let all_rules = all_rules();
        let pins = [None, Some("gw-a"), Some("gw-b"), Some("wit-1")];
        let leaders = ["gw-a", "gw-b", "wit-1", "wit-2", "wit-3"];
        let mut checked = 0u64;
        for &sa in &states {
            for &sb in &states {
                for reach in 0u8..8 {
                    let mut nodes = vec![
                        make("gw-a", Role::Gateway, 150, sa),
                        make("gw-b", Role::Gateway, 100, sb),
                    ];
                    for (i, name) in ["wit-1", "wit-2", "wit-3"].into_iter().enumerate() {
                        let w = witness(name);
                        nodes.push(if reach & (1 << i) != 0 {
                            w
                        } else {
                            w.unreachable()
                        });
                    }
                    for rules in &all_rules {
                        for pin in pins {
                            for leader in leaders {
                                let s = Situation {
                                    leader,
                                    nodes: &nodes,
                                    pin,
                                    rules,
                                };
                                let v = decide(&s);
                                check_invariants(&s, &v);
                                check_witness_hand_overs(&s, &v);
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 100_000, "the enumeration shrank: {checked}");
    }

    fn check_witness_hand_overs(s: &Situation, v: &Verdict) {
        let Some(h) = &v.hand_over else { return };
        let role = |name: &str| {
            s.nodes
                .iter()
                .find(|n| n.name == name)
                .map(|n| n.facts.role)
        };
        if role(&h.to) != Some(Role::Witness) {
            return;
        }
        assert_eq!(
            role(s.leader),
            Some(Role::Gateway),
            "a witness handed to a witness: {s:?}\n=> {v:?}"
        );
        let first_reachable = (s.nodes.iter())
            .filter(|n| n.facts.role == Role::Witness && n.reachable)
            .map(|n| n.name.as_str())
            .min();
        assert_eq!(Some(h.to.as_str()), first_reachable, "{s:?}\n=> {v:?}");
    }

    fn check_invariants(s: &Situation, v: &Verdict) {
        let ctx = || format!("{s:?}\n=> {v:?}");
        let me = s.nodes.iter().find(|n| n.name == s.leader);
        let Some(me) = me else { return };

        if v.leader_may_hold {
            assert!(
                me.could_hold(),
                "holder must be a gateway, link up, not in maintenance: {}",
                ctx()
            );
            if !me.facts.healthy {
                assert_eq!(s.rules.on_all_unhealthy, OnAllUnhealthy::Keep, "{}", ctx());
                let healthy_other = s
                    .nodes
                    .iter()
                    .any(|n| n.name != s.leader && n.reachable && n.fit());
                assert!(
                    !healthy_other,
                    "unhealthy holder beside a healthy gateway: {}",
                    ctx()
                );
            }
        }
        if let Some(h) = &v.hand_over {
            assert!(!v.leader_may_hold, "release before transfer: {}", ctx());
            assert_ne!(h.to, s.leader, "hand-over to itself: {}", ctx());
            let to = s.nodes.iter().find(|n| n.name == h.to);
            let to = to.unwrap_or_else(|| panic!("target not in the group: {}", ctx()));
            assert!(v.recheck_in.is_none(), "{}", ctx());
            if !to.is_gateway() {
                // A relay: only from a gateway leader with no gateway to hand to, and the
                // witness must not hand straight back to the leader it relieved.
                assert!(to.reachable && me.is_gateway(), "bad relay: {}", ctx());
                let no_gateway = decide(&Situation {
                    nodes: &s
                        .nodes
                        .iter()
                        .filter(|n| n.is_gateway())
                        .cloned()
                        .collect::<Vec<_>>(),
                    ..*s
                });
                assert_eq!(
                    no_gateway.hand_over,
                    None,
                    "relay although a gateway could take over: {}",
                    ctx()
                );
                let mut after: Vec<NodeView> = s.nodes.to_vec();
                for n in &mut after {
                    if n.name == s.leader {
                        n.reachable = true;
                    }
                }
                let v2 = decide(&Situation {
                    leader: &h.to,
                    nodes: &after,
                    ..*s
                });
                assert!(
                    v2.hand_over.as_ref().is_none_or(|h2| h2.to != s.leader),
                    "relay ping-pong: {}",
                    ctx()
                );
                return;
            }
            assert!(to.reachable && to.could_hold(), "bad target: {}", ctx());

            // One hop converges: the target, now leader and hearing the old leader,
            // keeps the group instead of handing it on or back.
            let mut after: Vec<NodeView> = s.nodes.to_vec();
            for n in &mut after {
                if n.name == s.leader {
                    n.reachable = true;
                }
            }
            let next = Situation {
                leader: &h.to,
                nodes: &after,
                ..*s
            };
            let v2 = decide(&next);
            assert_eq!(v2.hand_over, None, "ping-pong after {}\nthen {v2:?}", ctx());
            assert!(
                v2.leader_may_hold,
                "target may not hold after {}\nthen {v2:?}",
                ctx()
            );
        }
        if let Some(r) = v.recheck_in {
            assert!(s.rules.failback && v.leader_may_hold, "{}", ctx());
            assert!(
                r > Duration::ZERO && r <= s.rules.failback_delay,
                "{}",
                ctx()
            );
        }
        if me.facts.role == Role::Witness {
            assert!(!v.leader_may_hold, "a witness held: {}", ctx());
        }
    }
}
