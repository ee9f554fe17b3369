//! The group machine against its safety invariants over many random walks, as
//! `policy.rs` is checked over every situation of a bounded world: random Raft views,
//! facts, pins, maintenance, time steps (small and huge, as for a thawed process) and a
//! data plane that fails at random. A model of the host (are the VIPs on it?) follows the
//! data plane's answers; after every step the machine must agree with it and must have
//! kept the hold rule. A failure prints the seed and the step.

use std::collections::BTreeMap;
use std::time::Duration;

use havip::config::{OnAllUnhealthy, Role};
use havip::consensus::state::{NodeFacts, NodeRecord};
use havip::group::machine::{
    Action, Event, GroupConfig, GroupMachine, LocalInputs, Observation, PeerSeen, Snapshot,
};
use havip::hold::{RELEASE_AHEAD, release_at};
use havip::platform::timer_grid::Grid;
use havip::policy::GroupRules;
use havip::vip::DataPlaneError;
use tokio::time::Instant;

const WALKS: u64 = 400;
const STEPS: usize = 250;
const HOLD_LEASE: Duration = Duration::from_millis(320);
const LEADER_LEASE: Duration = Duration::from_millis(400);
const MEMBERS: [&str; 3] = ["gw-a", "gw-b", "witness"];

/// What the simulated data plane answers when it fails.
fn failed() -> DataPlaneError {
    DataPlaneError::Netlink("x".into())
}

/// A small deterministic generator (xorshift64*): the seed alone replays a walk.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[test]
fn random_walks_keep_the_hold_rule_and_release_before_transfer() {
    let mut seen = Seen::default();
    for seed in 1..=WALKS {
        for role in [Role::Gateway, Role::Witness] {
            if let Err(e) = walk(seed, role, &mut seen) {
                panic!("seed {seed} ({role:?}): {e}");
            }
        }
    }
    // The walks must reach the situations the invariants are about, or they prove nothing.
    assert!(
        seen.holds > 2_000
            && seen.releases > 500
            && seen.failed_releases > 50
            && seen.transfers > 1_000
            && seen.blocked_transfers > 10
            && seen.commits > 100
            && seen.announces > 500
            && seen.not_announced > 500,
        "{seen:?}"
    );
}

/// How often the walks met what the invariants guard.
#[derive(Debug, Default)]
struct Seen {
    holds: u64,
    releases: u64,
    failed_releases: u64,
    transfers: u64,
    /// Steps that wanted to hand over but kept the VIPs because the removal failed.
    blocked_transfers: u64,
    commits: u64,
    /// A link or a peer came back while holding under a running lease: announced.
    announces: u64,
    /// ... while not (not holding, or the lease ran out): nothing.
    not_announced: u64,
}

fn config(role: Role) -> GroupConfig {
    let self_name = if role == Role::Gateway {
        "gw-a"
    } else {
        "witness"
    };
    GroupConfig {
        self_name: self_name.into(),
        group: "crm".into(),
        interface: "eth1".into(),
        role,
        priority: if role == Role::Gateway { 150 } else { 0 },
        rules: GroupRules {
            failback: true,
            failback_delay: Duration::from_millis(700),
            on_all_unhealthy: OnAllUnhealthy::Release,
        },
        members: MEMBERS.iter().map(|m| m.to_string()).collect(),
        leader_lease: LEADER_LEASE,
        hold_lease: HOLD_LEASE,
        lease_change: None,
        grid: Grid::default(),
    }
}

/// The world the walk moves through; each step changes a few things at random.
struct World {
    now: Instant,
    snapshot: Snapshot,
}

impl World {
    fn change(&mut self, rng: &mut Rng, self_name: &str) {
        // Time: mostly a heartbeat or less, sometimes a lease, rarely a freeze.
        let dt = match rng.below(100) {
            0..=79 => rng.below(130),
            80..=97 => rng.below(600),
            _ => 2000 + rng.below(5000),
        };
        self.now += Duration::from_millis(dt);
        let now = self.now;
        let s = &mut self.snapshot;
        if rng.chance(4) {
            s.term += 1;
            s.is_leader = rng.chance(50);
            s.leader = Some(if s.is_leader { self_name } else { "gw-b" }.into());
            s.quorum_acked = None;
        }
        if s.is_leader && rng.chance(70) {
            // A fresh acknowledgement, or an older one (acks arrive late and out of order).
            let age = Duration::from_millis(rng.below(350));
            s.quorum_acked = now.checked_sub(age).or(s.quorum_acked);
        }
        if rng.chance(20) {
            s.last_log_index = Some(s.last_log_index.unwrap_or(0) + 1);
        }
        for name in MEMBERS.iter().filter(|m| **m != self_name) {
            let peer = s.peers.entry(name.to_string()).or_default();
            if rng.chance(60) {
                peer.acked = Some(now);
            }
            if rng.chance(40) {
                peer.matched = s.last_log_index;
            }
            if rng.chance(5) {
                let node = s.nodes.entry(name.to_string()).or_default();
                node.maintenance = rng.chance(20);
                if let Some(f) = node.facts.as_mut() {
                    f.healthy = rng.chance(70);
                    f.link_up = rng.chance(90);
                }
            }
        }
        if rng.chance(5) {
            s.pin = match rng.below(3) {
                0 => None,
                1 => Some("gw-a".into()),
                _ => Some("gw-b".into()),
            };
        }
        if rng.chance(5) {
            s.local.health.healthy = rng.chance(75);
            s.local.link_up = rng.chance(90);
            s.local.health.pending = rng.chance(5);
        }
        if rng.chance(3) {
            let me = s.nodes.entry(self_name.to_string()).or_default();
            me.maintenance = !me.maintenance;
        }
    }
}

fn start() -> World {
    let facts = |role, priority| NodeRecord {
        facts: Some(NodeFacts {
            role,
            priority,
            healthy: true,
            link_up: true,
            detail: String::new(),
        }),
        maintenance: false,
        since_unix_ms: 0,
    };
    let nodes: BTreeMap<String, NodeRecord> = [
        ("gw-a".to_string(), facts(Role::Gateway, 150)),
        ("gw-b".to_string(), facts(Role::Gateway, 100)),
        ("witness".to_string(), facts(Role::Witness, 0)),
    ]
    .into();
    World {
        now: Instant::now(),
        snapshot: Snapshot {
            is_leader: false,
            term: 1,
            leader: None,
            quorum_acked: None,
            peers: BTreeMap::<String, PeerSeen>::new(),
            last_log_index: Some(1),
            nodes,
            pin: None,
            local: LocalInputs::without_feeds(),
            wall_unix_ms: 0,
        },
    }
}

fn walk(seed: u64, role: Role, seen: &mut Seen) -> Result<(), String> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let config = config(role);
    let self_name = config.self_name.clone();
    let mut machine = GroupMachine::new(config);
    let mut world = start();
    // The host: whether the VIPs are on it, as the data plane's answers say.
    let mut on_host = false;
    // A transfer was sent in this term: the rule forbids holding again in it.
    let mut transferred_in: Option<u64> = None;
    for step in 0..STEPS {
        world.change(&mut rng, &self_name);
        let now = world.now;
        let snapshot = world.snapshot.clone();
        let mut release_failed = false;
        let mut wake = None;
        let mut queue: Vec<Action> =
            machine.step(Observation::Snapshot(Box::new(snapshot.clone())), now);
        let mut t = now;
        while !queue.is_empty() {
            let actions = std::mem::take(&mut queue);
            let last = actions.len() - 1;
            for (i, action) in actions.into_iter().enumerate() {
                let answer = match action {
                    Action::Hold { until } => {
                        let acked = snapshot.quorum_acked.ok_or("hold without an ack")?;
                        if !snapshot.is_leader || role == Role::Witness {
                            return Err(format!("step {step}: hold while not a gateway leader"));
                        }
                        if until != acked + HOLD_LEASE {
                            return Err(format!("step {step}: hold until is not ack + lease"));
                        }
                        if now.saturating_duration_since(acked) >= release_at(HOLD_LEASE) {
                            return Err(format!("step {step}: hold on an ack past release_at"));
                        }
                        if transferred_in == Some(snapshot.term) {
                            return Err(format!("step {step}: hold after a transfer in the term"));
                        }
                        seen.holds += 1;
                        let ok = rng.chance(90);
                        // A failed first hold leaves nothing (the data plane undoes it);
                        // a failed refresh leaves what was there.
                        on_host |= ok;
                        Some(Observation::Held(if ok { Ok(()) } else { Err(failed()) }))
                    }
                    Action::Release { .. } => {
                        seen.releases += 1;
                        let ok = rng.chance(85);
                        seen.failed_releases += u64::from(!ok);
                        on_host &= !ok;
                        release_failed |= !ok;
                        t += Duration::from_millis(rng.below(3));
                        Some(Observation::Released {
                            taken_down: None,
                            started: now,
                            result: if ok { Ok(()) } else { Err(failed()) },
                        })
                    }
                    Action::CommitFacts(_) => {
                        seen.commits += 1;
                        Some(Observation::FactsCommitted)
                    }
                    Action::Transfer { .. } => {
                        if on_host {
                            return Err(format!("step {step}: transfer with the VIPs on the host"));
                        }
                        seen.transfers += 1;
                        transferred_in = Some(snapshot.term);
                        None
                    }
                    Action::WakeAt(at) => {
                        wake = Some(at);
                        None
                    }
                    Action::Log(Event::NotHandingOverWhileHolding) => {
                        seen.blocked_transfers += 1;
                        None
                    }
                    Action::Announce => {
                        return Err(format!("step {step}: announced on a snapshot"));
                    }
                    Action::Propose(_) | Action::Notify(_) | Action::Log(_) => None,
                };
                if let Some(answer) = answer {
                    if i != last {
                        return Err(format!("step {step}: an action followed one not answered"));
                    }
                    queue = machine.step(answer, t);
                }
            }
        }
        if machine.holding() != on_host {
            return Err(format!(
                "step {step}: the machine thinks holding={} but the host says {on_host}",
                machine.holding()
            ));
        }
        if on_host && !release_failed {
            let acked = snapshot.quorum_acked.ok_or("holding without an ack")?;
            if !snapshot.is_leader || now.saturating_duration_since(acked) >= release_at(HOLD_LEASE)
            {
                return Err(format!("step {step}: still holding against the rule"));
            }
            let until = acked + HOLD_LEASE;
            let wake = wake.ok_or("no wake-up while holding")?;
            if wake > until - RELEASE_AHEAD {
                return Err(format!(
                    "step {step}: holding, but no wake-up before the lease ends"
                ));
            }
        }
        if rng.chance(30) {
            announce_again(&mut rng, &mut world, &mut machine, on_host, seen)
                .map_err(|e| format!("step {step}: {e}"))?;
        }
    }
    Ok(())
}

/// A link or a peer comes back a little later: the machine announces exactly when the
/// VIPs are on the host under a lease that still runs, and does nothing else.
fn announce_again(
    rng: &mut Rng,
    world: &mut World,
    machine: &mut GroupMachine,
    on_host: bool,
    seen: &mut Seen,
) -> Result<(), String> {
    world.now += Duration::from_millis(rng.below(400));
    let edge = if rng.chance(50) {
        Observation::LinkCameBack
    } else {
        Observation::PeerReconnected
    };
    let lease_runs = machine.lease_until().is_some_and(|until| world.now < until);
    let actions = machine.step(edge, world.now);
    match (on_host && lease_runs, actions.as_slice()) {
        (true, [Action::Announce]) => seen.announces += 1,
        (false, []) => seen.not_announced += 1,
        (should, got) => {
            return Err(format!(
                "announce expected {should} (on host {on_host}), got {got:?}"
            ));
        }
    }
    Ok(())
}
