//! Membership changes through Raft (issue 13 item 2), decided: from what one group's Raft
//! membership is now and the peer lists of the nodes' configs, the one step its leader
//! takes next. Pure: the caller gathers the facts (openraft's metrics, the peers' config
//! summaries, who acknowledged the leader lately) and carries the step out with
//! `add_learner` / `change_membership`; it asks again after every step, so a leader that
//! dies half way leaves nothing the next one cannot finish.
//!
//! The rules, each for a reason:
//! - Nothing changes while the peer lists of the nodes concerned differ: during a rollout
//!   the change waits for the last file, and the difference is reported, never merged.
//! - A new node becomes a learner first (it votes for nobody and its acknowledgements
//!   count in no majority, so adding it changes no quorum), then a voter once it has caught
//!   up. A voter that cannot yet take part would count in every majority from the change on.
//! - Voters added and removed go in one change: openraft makes it a joint one (or goes
//!   straight to the new set when every majority of the old shares a voter with every
//!   majority of the new, adding one voter for instance): a replaced witness is one step.
//! - A change left half done (joint) is finished first, to the lists' voters if they are
//!   all ready, else to the change's own end.
//! - A change is proposed only while a majority of the old voters *and* of the new ones
//!   acknowledge the leader: joint consensus needs both to commit, and the hold lease is a
//!   quorum of both while it lasts, so a change that cannot commit would cost the master
//!   its lease (a VIP outage) instead of stalling harmlessly.
//! - A leader the lists drop (or that is no voter) changes nothing: it must release the
//!   VIPs before it stops being the one that may hold them, so leadership moves first (an
//!   operator's failover or stop) and the next leader makes the change.
//! - The voters always keep a gateway: a cluster of witnesses could elect nobody who holds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One group's membership as the leader's replica has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    /// The voter sets: one, or two while a change is half done (joint consensus: the
    /// previous leader died before the uniform entry was committed).
    pub configs: Vec<BTreeSet<String>>,
    pub learners: BTreeSet<String>,
}

impl Current {
    /// Every voter, of every set.
    pub fn voters(&self) -> BTreeSet<String> {
        self.configs.iter().flatten().cloned().collect()
    }

    pub fn is_joint(&self) -> bool {
        self.configs.len() > 1
    }
}

/// What the leader knows of the cluster besides the membership.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The leader itself (this node).
    pub leader: String,
    /// The peer list of each node's config that the leader has seen: its own and every
    /// connected node's.
    pub lists: BTreeMap<String, BTreeSet<String>>,
    /// The nodes known to be gateways (this node's role, and the roles the connected
    /// nodes report with their lists).
    pub gateways: BTreeSet<String>,
    /// The nodes that acknowledged the leader within the hold lease (the leader included).
    pub acknowledging: BTreeSet<String>,
    /// The nodes connected to the leader now (a new node is added once it is).
    pub connected: BTreeSet<String>,
    /// The learners whose log has caught up with the leader's.
    pub caught_up: BTreeSet<String>,
    /// Connected nodes whose build applies fewer Raft commands than the leader's
    /// (`state::COMMAND_LEVEL`), with their level: one is not added, because the log it
    /// would replay may hold a command it cannot decode, which stops its Raft.
    pub older: BTreeMap<String, u32>,
}

/// The leader's next step for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The membership is what the configs say.
    Nothing,
    /// Finish the change a previous leader left in joint consensus (with the voters the
    /// lists name now).
    Finish { voters: BTreeSet<String> },
    /// Add this node as a learner; it catches up from the leader.
    AddLearner(String),
    /// Make these the voters, in one joint change (added learners promoted, removed voters
    /// dropped from the membership).
    ChangeVoters { voters: BTreeSet<String> },
    /// The leader is no longer listed (or no voter): it must hand leadership to a listed
    /// voter, whose turn it then is, and never remove itself while it may hold the VIPs.
    /// The driver only waits and says so: with the lists changed by restarts a node's own
    /// list always names it, so this needs an operator's `havip failover` (or a stop).
    HandOver,
    /// Drop learners that no list names (a node added, then taken out before promotion).
    DropLearners(BTreeSet<String>),
    /// Not now, for this reason (logged when it changes).
    Wait(String),
    /// Never, as the lists stand: an operator must change them.
    Refuse(String),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
        match self {
            Step::Nothing => f.write_str("membership matches the peer lists"),
            Step::Finish { voters } => {
                write!(f, "finish the half-done change to {}", names(voters))
            }
            Step::AddLearner(n) => write!(f, "add {n} as a learner"),
            Step::ChangeVoters { voters } => write!(f, "change the voters to {}", names(voters)),
            Step::HandOver => f.write_str(
                "this leader is not a listed voter: move the group to one (`havip failover`) \
                 or stop this node",
            ),
            Step::DropLearners(l) => write!(f, "drop the learners {}", names(l)),
            Step::Wait(why) => write!(f, "waiting: {why}"),
            Step::Refuse(why) => write!(f, "refused: {why}"),
        }
    }
}

/// The one next step for a group whose membership is `current`.
pub fn next_step(current: &Current, facts: &Facts) -> Step {
    let target = match agreed_list(facts) {
        Ok(list) => list,
        Err(why) => return Step::Wait(why),
    };
    if target.is_disjoint(&facts.gateways) {
        let why = format!(
            "no gateway among {}; a cluster of witnesses elects nobody who holds the VIPs",
            join(&target)
        );
        // A gateway that is away has not told its role.
        return if target.iter().all(|n| facts.lists.contains_key(n)) {
            Step::Refuse(why)
        } else {
            Step::Wait(format!("{why} (as far as the connected nodes say)"))
        };
    }
    let voters = current.voters();
    if !target.contains(&facts.leader) || !voters.contains(&facts.leader) {
        return Step::HandOver;
    }
    if current.is_joint() {
        return finish(current, target, facts);
    }
    let added: BTreeSet<String> = target.difference(&voters).cloned().collect();
    if let Some(new) = added.iter().find(|n| !current.learners.contains(*n)) {
        // Adding a learner is a membership entry too: it commits with the voters' majority.
        return if !facts.connected.contains(new) {
            Step::Wait(format!("{new} is listed but not connected"))
        } else if let Some(level) = facts.older.get(new) {
            Step::Wait(format!(
                "{new} runs an older build (Raft command level {level}, this leader's {}): \
                 upgrade it, then it is added",
                super::state::COMMAND_LEVEL
            ))
        } else if let Some(why) = unreachable_majority(&[voters], &facts.acknowledging) {
            Step::Wait(why)
        } else {
            Step::AddLearner(new.clone())
        };
    }
    let behind: BTreeSet<String> = added.difference(&facts.caught_up).cloned().collect();
    if !behind.is_empty() {
        return Step::Wait(format!("{} catching up as learner(s)", join(&behind)));
    }
    if target != voters {
        return match unreachable_majority(&[voters, target.clone()], &facts.acknowledging) {
            Some(why) => Step::Wait(why),
            None => Step::ChangeVoters { voters: target },
        };
    }
    let stale: BTreeSet<String> = current.learners.difference(&target).cloned().collect();
    if stale.is_empty() {
        Step::Nothing
    } else {
        Step::DropLearners(stale)
    }
}

/// The step out of joint consensus: to the lists' voters when every one of them is a
/// voter already or a learner that has caught up, else to the change's own end (the last
/// set), from which the usual steps add the others.
fn finish(current: &Current, target: BTreeSet<String>, facts: &Facts) -> Step {
    let voters = current.voters();
    let ready = target.iter().all(|n| {
        voters.contains(n) || (current.learners.contains(n) && facts.caught_up.contains(n))
    });
    let end = if ready {
        target
    } else {
        current.configs.last().cloned().unwrap_or_default()
    };
    let mut sets = current.configs.clone();
    sets.push(end.clone());
    match unreachable_majority(&sets, &facts.acknowledging) {
        Some(why) => Step::Wait(why),
        None => Step::Finish { voters: end },
    }
}

/// The peer list that every node the leader has a list from agrees on (its own, the
/// voters', every connected node's), or why there is none yet: a node being removed that
/// still runs with the old list holds the change up until it is stopped or given the new
/// one, and says so.
fn agreed_list(facts: &Facts) -> Result<BTreeSet<String>, String> {
    let mut lists = facts.lists.values();
    let Some(first) = lists.next() else {
        return Err("no peer list known yet".into());
    };
    if lists.all(|l| l == first) {
        return Ok(first.clone());
    }
    let each: Vec<String> = (facts.lists.iter())
        .map(|(node, list)| format!("{node} lists {}", join(list)))
        .collect();
    Err(format!(
        "the peer lists differ (a rollout in progress?): {}",
        each.join("; ")
    ))
}

/// Why a change through the voter sets `sets` could not commit now: a majority of one of
/// them not acknowledging the leader.
fn unreachable_majority(
    sets: &[BTreeSet<String>],
    acknowledging: &BTreeSet<String>,
) -> Option<String> {
    sets.iter().find_map(|set| {
        let up = set.intersection(acknowledging).count();
        let need = set.len() / 2 + 1;
        (up < need).then(|| {
            format!(
                "only {up} of the voters {} acknowledge the leader, {need} needed: the change \
                 could not commit, and while it waited the master would lose its hold lease",
                join(set)
            )
        })
    })
}

/// "a, b, c", or "none": for reasons an operator reads.
pub(super) fn join(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "none".into()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests;
