//! Replays the scenario files under `tests/scenarios/` through the pure group machine
//! (`havip::group::machine`), holo-style: each file is one situation, a timeline of what
//! the loop observed and the actions the machine must answer with, in order, all of them.
//! No Raft, no data plane, no clock: the file's times are milliseconds from its start.
//!
//! The format, one statement a line (`#` starts a comment):
//! - `config key=value...`: the group on this node (defaults: self=gw-a, gateway,
//!   priority 150, members gw-a,gw-b,witness, leader_lease 400, hold_lease 320,
//!   failback on, failback_delay 5000, all_unhealthy release, no timer grid; `grid=T`
//!   puts the grid's origin at T).
//! - What the next observation will contain, changed in place: `raft leader|follower
//!   term=N leader=NAME|none last_log=N|none quorum_ack=T|none`; `peer NAME ack=T|none
//!   match=N|none`; `node NAME facts=ROLE/PRIORITY/healthy|unhealthy/up|down|none
//!   maintenance=on|off`; `pin NAME|none`; `local healthy=yes|no link=up|down
//!   pending=yes|no delta=N detail="..."`.
//! - `@T OBSERVATION` gives one observation at T: `snapshot`, `woke due=T`, `held ok`,
//!   `held fail "netlink: why"`, `released ok started=T`, `released fail "netlink: why"`,
//!   `committed`, `stop`, `stop fatal`, `exiting`, `link-came-back`, `peer-reconnected`,
//!   `lease-changed leader_lease=MS` (a reload's new timers at T)
//!   (a failure is written as the netlink data plane's error reads).
//! - `> ACTION` lines after it: every action it produced, in order (as `render` writes
//!   them). An observation with no `>` lines must produce nothing.
//! - `? holding=yes|no transitions=N reason="..."`: the machine's published view.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use havip::config::{OnAllUnhealthy, Role};
use havip::consensus::state::{Command, NodeFacts};
use havip::group::machine::{
    Action, Event, GroupConfig, GroupMachine, LocalInputs, Observation, Snapshot, TransferReason,
};
use havip::platform::timer_grid::Grid;
use havip::policy::GroupRules;
use havip::vip::DataPlaneError;
use tokio::time::Instant;

#[test]
fn every_scenario_replays_as_written() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "scn"));
    files.sort();
    assert!(files.len() >= 10, "scenarios missing in {}", dir.display());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            Scenario::run(&name, &text).err()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

/// One scenario being replayed.
struct Scenario {
    name: String,
    t0: Instant,
    config: GroupConfig,
    machine: Option<GroupMachine>,
    snapshot: Snapshot,
    /// Actions of the last observation not yet matched by `>` lines, and where it was.
    pending: Vec<String>,
    pending_at: usize,
}

impl Scenario {
    fn run(name: &str, text: &str) -> Result<(), String> {
        let mut s = Scenario::new(name);
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split_once(" #").map_or(raw, |(l, _)| l).trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            s.line(i + 1, line).map_err(|e| {
                // A `>` line is quoted in the message already.
                let source = if line.starts_with('>') {
                    String::new()
                } else {
                    format!("\n    {line}")
                };
                format!("{name}:{}: {e}{source}", i + 1)
            })?;
        }
        s.all_matched()
    }

    fn new(name: &str) -> Self {
        let self_name = "gw-a".to_string();
        Scenario {
            name: name.to_string(),
            t0: Instant::now(),
            config: GroupConfig {
                self_name: self_name.clone(),
                group: "crm".into(),
                interface: "eth1".into(),
                role: Role::Gateway,
                priority: 150,
                rules: GroupRules {
                    failback: true,
                    failback_delay: Duration::from_secs(5),
                    on_all_unhealthy: OnAllUnhealthy::Release,
                },
                members: vec!["gw-a".into(), "gw-b".into(), "witness".into()],
                leader_lease: Duration::from_millis(400),
                hold_lease: Duration::from_millis(320),
                lease_change: None,
                grid: Grid::default(),
            },
            machine: None,
            snapshot: Snapshot {
                is_leader: false,
                term: 1,
                leader: None,
                quorum_acked: None,
                peers: BTreeMap::new(),
                last_log_index: None,
                nodes: BTreeMap::new(),
                pin: None,
                local: LocalInputs::without_feeds(),
                wall_unix_ms: 0,
            },
            pending: Vec::new(),
            pending_at: 0,
        }
    }

    fn all_matched(&self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{}:{}: actions not listed:\n{}",
            self.name,
            self.pending_at,
            self.pending
                .iter()
                .map(|a| format!("    > {a}"))
                .collect::<Vec<_>>()
                .join("\n")
        ))
    }

    fn line(&mut self, at: usize, line: &str) -> Result<(), String> {
        if let Some(expected) = line.strip_prefix('>') {
            return self.expect(expected.trim());
        }
        self.all_matched()
            .map_err(|e| format!("before this line: {e}"))?;
        let words = tokens(line);
        let (head, args) = words.split_first().ok_or("empty line")?;
        if let Some(t) = head.strip_prefix('@') {
            let now = self.at(t)?;
            let observation = self.observation(args, now)?;
            let machine = self
                .machine
                .get_or_insert_with(|| GroupMachine::new(self.config.clone()));
            let actions = machine.step(observation, now);
            answered_last(&actions)?;
            let t0 = self.t0;
            self.pending = actions.iter().map(|a| render(a, t0)).collect();
            self.pending_at = at;
            return Ok(());
        }
        match head.as_str() {
            "config" => self.configure(args),
            "raft" => self.raft(args),
            "peer" => self.peer(args),
            "node" => self.node(args),
            "pin" => {
                self.snapshot.pin = name_or_none(args.first().ok_or("pin NAME|none")?);
                Ok(())
            }
            "local" => self.local(args),
            "?" => self.check(args),
            other => Err(format!("unknown statement {other:?}")),
        }
    }

    fn expect(&mut self, expected: &str) -> Result<(), String> {
        if self.pending.is_empty() {
            return Err(format!("expected `{expected}`, but no action is left"));
        }
        let actual = self.pending.remove(0);
        if normalize(&actual) != normalize(expected) {
            let rest: Vec<String> = self.pending.iter().map(|a| format!("    > {a}")).collect();
            return Err(format!(
                "expected `{expected}`\n      got `{actual}`\n  then:\n{}",
                rest.join("\n")
            ));
        }
        Ok(())
    }

    fn at(&self, ms: &str) -> Result<Instant, String> {
        let ms: f64 = ms.parse().map_err(|_| format!("not a time in ms: {ms}"))?;
        Ok(self.t0 + Duration::from_secs_f64(ms / 1000.0))
    }

    fn at_or_none(&self, v: &str) -> Result<Option<Instant>, String> {
        if v == "none" {
            Ok(None)
        } else {
            self.at(v).map(Some)
        }
    }

    fn observation(&mut self, args: &[String], now: Instant) -> Result<Observation, String> {
        let kind = args.first().map(String::as_str).unwrap_or("");
        let arg = args.get(1).map(String::as_str).unwrap_or("");
        // The data plane's error, written as it reads: "netlink: <why>".
        let failure = || {
            let text = args.get(2).map(String::as_str).unwrap_or("");
            match text.strip_prefix("netlink: ") {
                Some(why) => Ok(DataPlaneError::Netlink(why.to_string())),
                None => Err(format!(
                    "a data plane failure is written \"netlink: why\", not {text:?}"
                )),
            }
        };
        Ok(match (kind, arg) {
            ("snapshot", _) => Observation::Snapshot(Box::new(self.snapshot.clone())),
            ("exiting", _) => Observation::Exiting(Box::new(self.snapshot.clone())),
            ("woke", due) => Observation::Woke {
                due: self.at(kv(due, "due")?)?,
            },
            ("held", "ok") => Observation::Held(Ok(())),
            ("held", "fail") => Observation::Held(Err(failure()?)),
            ("released", "ok") => Observation::Released {
                started: match args.get(2) {
                    Some(s) => self.at(kv(s, "started")?)?,
                    None => now,
                },
                result: Ok(()),
                // `released ok started=T guard=T2`: the deadline guard took them down at T2.
                taken_down: match args.get(3) {
                    Some(s) => Some(self.at(kv(s, "guard")?)?),
                    None => None,
                },
            },
            ("released", "fail") => Observation::Released {
                taken_down: None,
                started: now,
                result: Err(failure()?),
            },
            ("committed", _) => Observation::FactsCommitted,
            ("link-came-back", _) => Observation::LinkCameBack,
            ("peer-reconnected", _) => Observation::PeerReconnected,
            // `reconfigured priority=N`: a reload changed the priority (rules kept).
            ("reconfigured", p) => Observation::Reconfigured {
                priority: kv(p, "priority")?.parse().map_err(|_| "priority")?,
                rules: self.config.rules.clone(),
                members: self.config.members.clone(),
            },
            // `lease-changed leader_lease=MS`: a reload changed the timers now; the hold
            // lease goes with the new leader lease (`hold::hold_lease`).
            ("lease-changed", l) => {
                let leader_lease = ms(kv(l, "leader_lease")?)?;
                let change = havip::hold::LeaseChange::after(
                    self.config.hold_lease,
                    self.config.lease_change,
                    now,
                );
                self.config.leader_lease = leader_lease;
                self.config.hold_lease = havip::hold::hold_lease(leader_lease, havip::hold::TICK);
                self.config.lease_change = Some(change);
                Observation::LeaseChanged {
                    leader_lease,
                    hold_lease: self.config.hold_lease,
                    change: Some(change),
                }
            }
            ("stop", fatal) => Observation::Stop {
                fatal: fatal == "fatal",
            },
            _ => return Err(format!("unknown observation {args:?}")),
        })
    }

    fn configure(&mut self, args: &[String]) -> Result<(), String> {
        for arg in args {
            let (k, v) = arg.split_once('=').ok_or("key=value")?;
            let c = &mut self.config;
            match k {
                "self" => c.self_name = v.into(),
                "role" => c.role = role(v)?,
                "priority" => c.priority = v.parse().map_err(|_| "priority")?,
                "members" => c.members = v.split(',').map(String::from).collect(),
                "leader_lease" => c.leader_lease = ms(v)?,
                "hold_lease" => c.hold_lease = ms(v)?,
                "failback" => c.rules.failback = v == "on",
                "failback_delay" => c.rules.failback_delay = ms(v)?,
                // The timer grid's origin, in ms from the scenario's start.
                "grid" => c.grid = Grid::with_origin(self.t0 + ms(v)?),
                "all_unhealthy" => {
                    c.rules.on_all_unhealthy = match v {
                        "keep" => OnAllUnhealthy::Keep,
                        _ => OnAllUnhealthy::Release,
                    }
                }
                _ => return Err(format!("unknown config key {k}")),
            }
        }
        Ok(())
    }

    fn raft(&mut self, args: &[String]) -> Result<(), String> {
        for arg in args {
            match arg.split_once('=') {
                None if arg == "leader" => {
                    self.snapshot.is_leader = true;
                    self.snapshot.leader = Some(self.config.self_name.clone());
                }
                None if arg == "follower" || arg == "candidate" => {
                    self.snapshot.is_leader = false;
                    self.snapshot.quorum_acked = None;
                    self.snapshot.peers.clear();
                }
                Some(("term", v)) => self.snapshot.term = v.parse().map_err(|_| "term")?,
                Some(("leader", v)) => self.snapshot.leader = name_or_none(v),
                Some(("last_log", v)) => self.snapshot.last_log_index = number_or_none(v)?,
                Some(("quorum_ack", v)) => self.snapshot.quorum_acked = self.at_or_none(v)?,
                _ => return Err(format!("unknown raft argument {arg}")),
            }
        }
        Ok(())
    }

    fn peer(&mut self, args: &[String]) -> Result<(), String> {
        let (name, rest) = args.split_first().ok_or("peer NAME ...")?;
        let mut seen = self.snapshot.peers.get(name).copied().unwrap_or_default();
        for arg in rest {
            match arg.split_once('=') {
                Some(("ack", v)) => seen.acked = self.at_or_none(v)?,
                Some(("match", v)) => seen.matched = number_or_none(v)?,
                _ => return Err(format!("unknown peer argument {arg}")),
            }
        }
        self.snapshot.peers.insert(name.clone(), seen);
        Ok(())
    }

    fn node(&mut self, args: &[String]) -> Result<(), String> {
        let (name, rest) = args.split_first().ok_or("node NAME ...")?;
        let node = self.snapshot.nodes.entry(name.clone()).or_default();
        for arg in rest {
            match arg.split_once('=') {
                Some(("facts", "none")) => node.facts = None,
                Some(("facts", v)) => node.facts = Some(facts(v)?),
                Some(("maintenance", v)) => node.maintenance = v == "on",
                _ => return Err(format!("unknown node argument {arg}")),
            }
        }
        Ok(())
    }

    fn local(&mut self, args: &[String]) -> Result<(), String> {
        let local = &mut self.snapshot.local;
        for arg in args {
            let (k, v) = arg.split_once('=').ok_or("key=value")?;
            match k {
                "healthy" => local.health.healthy = v == "yes",
                "link" => local.link_up = v == "up",
                "pending" => local.health.pending = v == "yes",
                "delta" => local.health.priority_delta = v.parse().map_err(|_| "delta")?,
                "detail" => local.health.detail = v.into(),
                _ => return Err(format!("unknown local key {k}")),
            }
        }
        Ok(())
    }

    fn check(&self, args: &[String]) -> Result<(), String> {
        let m = self.machine.as_ref().ok_or("no observation yet")?;
        for arg in args {
            let (k, v) = arg.split_once('=').ok_or("key=value")?;
            let actual = match k {
                "holding" => yes_no(m.holding()).to_string(),
                "transitions" => m.hold_transitions().to_string(),
                "reason" => m.hold_reason().to_string(),
                "late_releases" => m.lateness().late_releases.to_string(),
                _ => return Err(format!("unknown check {k}")),
            };
            if actual != v {
                return Err(format!("{k}: expected {v:?}, got {actual:?}"));
            }
        }
        Ok(())
    }
}

/// The machine's promise to its executor, checked on every step of every scenario: an
/// action whose answer it needs (`Hold`, `Release`, `CommitFacts`) is the last it says,
/// so nothing it decided can run before the data plane (or the commit) has answered.
fn answered_last(actions: &[Action]) -> Result<(), String> {
    let answered = |a: &Action| {
        matches!(
            a,
            Action::Hold { .. } | Action::Release { .. } | Action::CommitFacts(_)
        )
    };
    match actions.iter().position(answered) {
        Some(i) if i + 1 < actions.len() => Err(format!(
            "{:?} was followed by {:?} before its answer",
            actions[i],
            &actions[i + 1..]
        )),
        _ => Ok(()),
    }
}

/// An action as a scenario line writes it.
fn render(action: &Action, t0: Instant) -> String {
    let t = |i: &Instant| fmt_ms(i.saturating_duration_since(t0));
    match action {
        Action::Hold { until } => format!("hold until={}", t(until)),
        Action::Release { reason } => format!("release {reason:?}"),
        Action::Announce => "announce".into(),
        Action::CommitFacts(command) => format!("commit-facts {}", command_line(command)),
        Action::Transfer { to, reason } => match reason {
            TransferReason::Policy(r) => format!("transfer {to} {:?}", r.to_string()),
            TransferReason::ShuttingDown => format!("transfer {to} shutting-down"),
        },
        Action::Propose(command) => format!("propose {}", command_line(command)),
        Action::Notify(c) => format!("notify {}->{} term={} {:?}", c.old, c.new, c.term, c.reason),
        Action::WakeAt(at) => format!("wake {}", t(at)),
        Action::Log(event) => format!("log {}", event_line(event)),
    }
}

fn event_line(event: &Event) -> String {
    match event {
        Event::HoldFailed { error } => format!("hold-failed {error:?}"),
        Event::ReleaseFailed { error } => format!("release-failed {error:?}"),
        Event::LateRelease {
            late,
            started_late,
            removal,
            ..
        } => format!(
            "late-release late={} started_late={} removal={}",
            fmt_ms(*late),
            fmt_ms(*started_late),
            fmt_ms(*removal)
        ),
        Event::WokeLate { late, late_wakeups } => {
            format!("woke-late late={} count={late_wakeups}", fmt_ms(*late))
        }
        Event::NotHandingOverWhileHolding => "not-handing-over-while-holding".into(),
        Event::HandingOver { to, reason, term } => {
            format!("handing-over {to} term={term} {:?}", reason.to_string())
        }
        Event::NotHandingOverBeforeExit => "not-handing-over-before-exit".into(),
        Event::HandingOverBeforeExit { to } => format!("handing-over-before-exit {to}"),
    }
}

fn command_line(command: &Command) -> String {
    match command {
        Command::ReportFacts { node, facts, .. } => {
            format!("facts {node} {} {:?}", facts_line(facts), facts.detail)
        }
        Command::MasterChanged { node, term, .. } => format!("master {node} term={term}"),
        other => format!("{other}"),
    }
}

fn facts_line(f: &NodeFacts) -> String {
    format!(
        "{}/{}/{}/{}",
        f.role.as_str(),
        f.priority,
        if f.healthy { "healthy" } else { "unhealthy" },
        if f.link_up { "up" } else { "down" }
    )
}

/// `ROLE/PRIORITY/healthy|unhealthy/up|down`, no detail.
fn facts(v: &str) -> Result<NodeFacts, String> {
    let parts: Vec<&str> = v.split('/').collect();
    let [r, p, h, l] = parts[..] else {
        return Err(format!(
            "facts {v}: ROLE/PRIORITY/healthy|unhealthy/up|down"
        ));
    };
    Ok(NodeFacts {
        role: role(r)?,
        priority: p.parse().map_err(|_| format!("priority {p}"))?,
        healthy: h == "healthy",
        link_up: l == "up",
        detail: String::new(),
    })
}

fn role(v: &str) -> Result<Role, String> {
    match v {
        "gateway" => Ok(Role::Gateway),
        "witness" => Ok(Role::Witness),
        _ => Err(format!("role {v}")),
    }
}

fn ms(v: &str) -> Result<Duration, String> {
    v.parse()
        .map(Duration::from_millis)
        .map_err(|_| format!("not ms: {v}"))
}

fn fmt_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if (ms - ms.round()).abs() < 1e-6 {
        format!("{}", ms.round() as u64)
    } else {
        format!("{ms:.3}")
    }
}

fn kv<'a>(arg: &'a str, key: &str) -> Result<&'a str, String> {
    arg.strip_prefix(key)
        .and_then(|r| r.strip_prefix('='))
        .ok_or_else(|| format!("expected {key}=..., got {arg}"))
}

fn name_or_none(v: &str) -> Option<String> {
    (v != "none").then(|| v.to_string())
}

fn number_or_none(v: &str) -> Result<Option<u64>, String> {
    if v == "none" {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .map_err(|_| format!("not a number: {v}"))
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits on whitespace, keeping `"quoted text"` (and `key="quoted text"`) as one word
/// without its quotes.
fn tokens(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[test]
fn a_wrong_expectation_fails_with_its_line() {
    let scenario = "raft follower term=2 leader=gw-b\n@0 snapshot\n> wake 999\n";
    let err = Scenario::run("inline", scenario).unwrap_err();
    assert!(
        err.contains("inline:3") && err.contains("got `wake 100`"),
        "{err}"
    );
    let unlisted = "raft follower term=2 leader=gw-b\n@0 snapshot\n";
    let err = Scenario::run("inline", unlisted).unwrap_err();
    assert!(
        err.contains("actions not listed") && err.contains("> wake 100"),
        "{err}"
    );
}
