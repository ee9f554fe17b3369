//! A running lab as the lab tests drive it (`tests/lab_e2e.rs`, `tests/lab_reload.rs`):
//! `scripts/lab.sh up`, the three daemons (real data plane, as root), the one watcher
//! (`scripts/vip-watch.py`, every address event of every node in the kernel's order) and
//! client probes (`scripts/lab-probe.py` in the client's namespace, one per VIP asked, a
//! TCP connect + HTTP GET every 10 ms, recording who answered); the outage is the one
//! computation of `outage.rs`. What a test asserts (budgets, never two holders, no late
//! release) reads from here; `lab.sh down` at the end, or on drop whatever happened.
//! It never touches a host interface: lab.sh makes every interface inside the lab's
//! namespaces. Its includer declares `lab` and `outage` (`#[path]`) at its root.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::lab::host::sh;
use crate::lab::watch::{Overlap, Watch};
use crate::lab::{self, REPO, address_of, lab_sh, names_of};
use crate::outage;

/// How long the probe waits for an answer (`scripts/lab-probe.py`'s BUDGET).
const PROBE_BUDGET_MS: u64 = 500;
/// How often the probe sends (the interval `Lab::probe` starts it with).
const PROBE_EVERY_MS: u64 = 10;

/// An outage as measured and judged: its length, the probe's own starvation inside it,
/// who answered at its two ends ("-" nobody before, "nobody yet" nobody after).
#[derive(Debug)]
pub struct Judged {
    pub ms: u64,
    pub starved_ms: u64,
    pub verdict: outage::Verdict,
    pub before: String,
    pub after: String,
}

/// How long the VIP may go unanswered, per kind of fault. These are test budgets with
/// room for a shared, loaded VM, an order of magnitude tighter than a single budget for
/// everything would be; the benchmark (scripts/bench-failover.sh) measures the real
/// figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Budget {
    /// The VIP must not move (a partition between the gateways, flapping health, loss):
    /// nothing may be lost beyond a probe or two.
    Stays,
    /// A planned move (manual failover, failback, a graceful stop, a health hand-over):
    /// the old holder releases, the new one is elected by a transfer.
    Planned,
    /// A flood of the master's peer port (issue 14 item 1): the VIP must not move (the
    /// watcher and `max_moves` say so exactly), and the client may lose a little more
    /// than under `Stays`, because the flood's generator, the probe and the gateway's
    /// responder share the test machine's two cores with it. Locally no gap over 30 ms;
    /// CI's shared VM measured 166 ms once (both gateways' hold loops woke 18-30 ms late
    /// then: a starved machine, not a VIP that went).
    UnderFlood,
    /// The master is gone without a word (link down, SIGKILL, SIGSTOP, isolation): the
    /// others wait out its lease, then elect.
    Hard,
    /// A hard failure on a lossy, slow network (5 % loss, 20 ms each way): one lost vote
    /// request or answer costs the election one more timeout (400-500 ms in conf/*.toml),
    /// and every Raft round trip 40 ms. CI measured 1,012 ms once against Hard.
    HardUnderLoss,
}

impl Budget {
    pub fn ms(self) -> u64 {
        match self {
            Budget::Stays => 100,
            Budget::UnderFlood => 300,
            // Measured in CI runs on the shared VM: failbacks of 11-68 ms, once 97 ms (a
            // gap while the new holder held throughout); the move itself is 10-40 ms.
            Budget::Planned => 150,
            Budget::Hard => 1000,
            Budget::HardUnderLoss => 1000 + 500 + 100,
        }
    }
}

/// The lab's names are fixed (hv-gw-a, ...): one lab at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One probe answer: the VIP asked, when it was sent and answered, and who answered
/// ("-": nobody within the probe's 500 ms).
#[derive(Clone, Debug)]
pub struct Answer {
    pub vip: String,
    pub sent_ms: u64,
    pub answered_ms: u64,
    pub who: String,
}

pub struct Lab {
    /// The VIP groups of vagrant/nodes.conf.
    pub groups: Vec<String>,
    watch: Option<Watch>,
    /// Every probe's answers, of every VIP asked.
    answers: Arc<Mutex<Vec<Answer>>>,
    /// Why each unanswered probe failed, as the client saw it: (VIP, sent, why).
    lost_why: Arc<Mutex<Vec<(String, u64, String)>>>,
    probes: Vec<Child>,
    down: bool,
    /// How long the watcher and the probes run at most (they outlive nothing).
    lifetime_s: u64,
}

/// The watcher's and the probes' bound when a test does not say otherwise.
const DEFAULT_LIFETIME_S: u64 = 600;

impl Lab {
    /// `lab.sh up`, the three daemons, the watcher and the probe; returns once the
    /// preferred gateways hold (gw-a `crm`, gw-b `crm2`) and the probe gets answers.
    pub fn up() -> Lab {
        Lab::up_watching(&[])
    }

    /// `up`, with the watcher also watching `extra` ("GROUP=ADDRESS": an address or a
    /// group a test adds later, which the gateways' files do not list yet).
    pub fn up_watching(extra: &[String]) -> Lab {
        Lab::up_with(extra, DEFAULT_LIFETIME_S)
    }

    /// `up`, with the watcher and the probe bounded at `seconds` instead of ten minutes
    /// (the chaos soak runs longer).
    pub fn up_lasting(seconds: u64) -> Lab {
        Lab::up_with(&[], seconds)
    }

    fn up_with(extra: &[String], lifetime_s: u64) -> Lab {
        crate::lab::host::require_root("the lab tests");
        lab_sh(&["up"]);
        let mut lab = Lab {
            groups: names_of("vip"),
            watch: None,
            answers: Arc::new(Mutex::new(Vec::new())),
            lost_why: Arc::new(Mutex::new(Vec::new())),
            probes: Vec::new(),
            down: false,
            lifetime_s,
        };
        // Before any daemon runs, so that every address a daemon ever adds is an event.
        lab.start_watcher(extra);
        lab_sh(&["start-havip"]);
        lab.start_probe(&address_of("crm"));
        // Settled for one second in a row: right after start, a gateway whose checks have
        // not passed yet hands over, and failback returns its group after failback_delay.
        let mut since: Option<Instant> = None;
        let steady = lab.wait(Duration::from_secs(40), |lab| {
            let ok = lab.holders("crm") == ["gw-a"]
                && lab.holders("crm2") == ["gw-b"]
                && lab.last_answer_by("gw-a", now_ms().saturating_sub(200));
            if !ok {
                since = None;
            }
            ok && since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(1)
        });
        assert!(
            steady.is_some(),
            "the lab never settled (crm on gw-a, crm2 on gw-b, answered):\n{}",
            lab.logs()
        );
        lab
    }

    /// The lab's watcher (`lab.sh watch`: every gateway and the witness, every address
    /// of every VIP group); returns once it is subscribed.
    fn start_watcher(&mut self, extra: &[String]) {
        let watch = lab::watch_also(self.lifetime_s, extra);
        let (ready, errors) = {
            let w = watch.lock();
            (w.ready, w.errors.clone())
        };
        self.watch = Some(watch);
        assert!(
            ready && errors.is_empty(),
            "the watcher did not start: {errors:?}"
        );
    }

    pub fn watcher_errors(&self) -> Vec<String> {
        self.watch
            .as_ref()
            .map(|w| w.lock().errors.clone())
            .unwrap_or_default()
    }

    /// A probe of `vip` every 10 ms from the client, for the rest of the lab's life (its
    /// answers: `outage_of`, `answered_on`).
    pub fn start_probe(&mut self, vip: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &lab::netns("client"), "python3"])
            .arg(format!("{REPO}/scripts/lab-probe.py"))
            .args([
                vip,
                "80",
                &PROBE_EVERY_MS.to_string(),
                &self.lifetime_s.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the probe");
        let stdout = child.stdout.take().expect("probe stdout");
        let stderr = child.stderr.take().expect("probe stderr");
        let (lost_why, of) = (self.lost_why.clone(), vip.to_string());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((sent, why)) = line.split_once(' ')
                    && let (Ok(sent_ms), Ok(mut w)) = (sent.parse(), lost_why.lock())
                {
                    w.push((of.clone(), sent_ms, why.to_string()));
                }
            }
        });
        let answers = self.answers.clone();
        let vip = vip.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let f: Vec<&str> = line.split_whitespace().collect();
                if let [sent, answered, who] = f[..]
                    && let (Ok(sent_ms), Ok(answered_ms), Ok(mut a)) =
                        (sent.parse(), answered.parse(), answers.lock())
                {
                    a.push(Answer {
                        vip: vip.clone(),
                        sent_ms,
                        answered_ms,
                        who: who.to_string(),
                    });
                }
            }
        });
        self.probes.push(child);
    }

    /// The nodes holding `group` now, as far as the watcher has reported.
    pub fn holders(&self, group: &str) -> Vec<String> {
        self.watch
            .as_ref()
            .map(|w| w.lock().holders(group))
            .unwrap_or_default()
    }

    /// Whether `who` answered the probe of `crm`'s VIP after `after_ms`.
    pub fn last_answer_by(&self, who: &str, after_ms: u64) -> bool {
        self.answered_on(&address_of("crm"), who, after_ms)
    }

    /// Whether `who` answered the probe of `vip` after `after_ms`.
    pub fn answered_on(&self, vip: &str, who: &str, after_ms: u64) -> bool {
        self.answers
            .lock()
            .map(|a| {
                a.iter()
                    .any(|x| x.vip == vip && x.answered_ms > after_ms && x.who == who)
            })
            .unwrap_or(false)
    }

    /// Why the probes of `vip` sent in [from_ms, to_ms] were lost, as the client saw it,
    /// counted by reason ("ConnectionRefusedError x2"): a VIP gone is refused or times
    /// out, a responder that could not keep up times out too (`scripts/lab-probe.py`).
    pub fn lost_why(&self, vip: &str, from_ms: u64, to_ms: u64) -> Vec<String> {
        let mut counted: std::collections::BTreeMap<String, usize> = Default::default();
        if let Ok(w) = self.lost_why.lock() {
            for (_, _, why) in
                (w.iter()).filter(|(v, sent, _)| v == vip && (from_ms..=to_ms).contains(sent))
            {
                // "TimeoutError after 500 ms" and "... after 501 ms" are one reason.
                let reason = why.split(" after ").next().unwrap_or(why);
                *counted.entry(reason.to_string()).or_default() += 1;
            }
        }
        counted
            .into_iter()
            .map(|(why, n)| format!("{why} x{n}"))
            .collect()
    }

    /// The probes of `vip` sent in [from_ms, to_ms] that nobody answered: requests the
    /// client lost (0: the client saw no outage, whatever the probes' own spacing).
    pub fn lost(&self, vip: &str, from_ms: u64, to_ms: u64) -> usize {
        self.answers
            .lock()
            .map(|a| {
                a.iter()
                    .filter(|x| x.vip == vip && x.who == "-")
                    .filter(|x| x.sent_ms >= from_ms && x.sent_ms <= to_ms)
                    .count()
            })
            .unwrap_or(0)
    }

    /// Polls `check` every 10 ms up to `limit`; the time it took, or None.
    pub fn wait(&self, limit: Duration, mut check: impl FnMut(&Lab) -> bool) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if check(self) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The longest time without an answer in [from_ms, to_ms], counted from the last
    /// answer before `from_ms` (`outage`, the benchmark's too); and who answered last
    /// before and first after that gap ("-" nobody before, "nobody yet" nobody after).
    pub fn outage(&self, from_ms: u64, to_ms: u64) -> (u64, String, String) {
        self.outage_of(&address_of("crm"), from_ms, to_ms)
    }

    /// `outage` of the probe of `vip`.
    pub fn outage_of(&self, vip: &str, from_ms: u64, to_ms: u64) -> (u64, String, String) {
        let gap = self.gap_of(vip, from_ms, to_ms);
        (
            gap.length.as_millis() as u64,
            gap.before.unwrap_or_else(|| "-".into()),
            gap.after.unwrap_or_else(|| "nobody yet".into()),
        )
    }

    /// The longest gap of `vip`'s answers in [from_ms, to_ms] (`outage`), with every gap
    /// of the window judged against `budget_ms` with the probe's own starvation inside it
    /// (`outage::judge_gaps`). A probe is recorded when it ends, up to 500 ms after it
    /// was sent: this first waits until every probe sent in the window has ended, so
    /// that probes still in flight are not taken for a starved probe.
    pub fn judged(&self, vip: &str, from_ms: u64, to_ms: u64, budget_ms: u64) -> Judged {
        let settled = to_ms + PROBE_BUDGET_MS + 100;
        let now = now_ms();
        if now < settled {
            std::thread::sleep(Duration::from_millis(settled - now));
        }
        let (from, to) = (Duration::from_millis(from_ms), Duration::from_millis(to_ms));
        let answers = self.answers_of(vip);
        let gap = outage::longest_gap(&answers, from, to);
        let sends: Vec<Duration> = self
            .answers
            .lock()
            .map(|a| {
                a.iter()
                    .filter(|x| x.vip == vip)
                    .map(|x| Duration::from_millis(x.sent_ms))
                    .collect()
            })
            .unwrap_or_default();
        let starved = outage::starved(&sends, gap.start, gap.start + gap.length);
        let budget = Duration::from_millis(budget_ms);
        Judged {
            ms: gap.length.as_millis() as u64,
            starved_ms: starved.as_millis() as u64,
            verdict: outage::judge_gaps(
                &outage::gaps(&answers, from, to),
                &sends,
                Duration::from_millis(PROBE_EVERY_MS),
                budget,
            ),
            before: gap.before.unwrap_or_else(|| "-".into()),
            after: gap.after.unwrap_or_else(|| "nobody yet".into()),
        }
    }

    fn gap_of(&self, vip: &str, from_ms: u64, to_ms: u64) -> outage::Gap<String> {
        outage::longest_gap(
            &self.answers_of(vip),
            Duration::from_millis(from_ms),
            Duration::from_millis(to_ms),
        )
    }

    /// The answered probes of `vip`: when each was answered, and by whom.
    fn answers_of(&self, vip: &str) -> Vec<(Duration, String)> {
        self.answers
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.vip == vip && a.who != "-")
            .map(|a| (Duration::from_millis(a.answered_ms), a.who))
            .collect()
    }

    /// The overlaps (two holders) the watcher saw, one it never saw end included. None is
    /// excused, a frozen daemon's neither: its fence (`havip fence`) takes its addresses
    /// down at the end of its hold lease, before anyone else may be elected (issue 14
    /// item 9; before the fence, they stayed up to their kernel lifetime).
    pub fn split_brain(&self) -> Vec<Overlap> {
        self.watch
            .as_ref()
            .map(|w| w.lock().overlaps.clone())
            .unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        lab::logs(25)
    }

    pub fn stop_observing(&mut self) {
        if let Some(w) = self.watch.as_mut() {
            // On SIGTERM it prints its open overlaps and its summary, then exits.
            w.stop();
        }
        for mut p in self.probes.drain(..) {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// `lab.sh down`, then checks that nothing is left: no lab namespace, no directory,
    /// none of the daemons or services it started.
    pub fn down_and_check(mut self) {
        self.stop_observing();
        let pids: Vec<u32> = glob_pids();
        lab_sh(&["down"]);
        self.down = true;
        let netns = String::from_utf8_lossy(&sh(&["ip", "netns", "list"]).stdout).into_owned();
        let mine: Vec<String> = lab::hosts()
            .iter()
            .map(|n| lab::netns(n))
            .chain([lab::BRIDGE.to_string()])
            .collect();
        for line in netns.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            assert!(!mine.iter().any(|m| m == name), "{name} left after down");
        }
        assert!(
            !std::path::Path::new(lab::RUN).exists(),
            "{} left after down",
            lab::RUN
        );
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|s| s.contains(") Z ")),
                "process {pid} of the lab still runs after down"
            );
        }
    }
}

/// The PIDs in the lab's PID files.
fn glob_pids() -> Vec<u32> {
    let mut pids = Vec::new();
    for dir in std::fs::read_dir(lab::RUN).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if file.path().extension().is_some_and(|e| e == "pid")
                && let Some(pid) = std::fs::read_to_string(file.path())
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
            {
                pids.push(pid);
            }
        }
    }
    pids
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_observing();
        if !self.down {
            lab::down_quietly("hv-");
        }
    }
}

impl Lab {
    /// How many times the holders of `group` changed in [from_ms, to_ms].
    pub fn moves(&self, group: &str, from_ms: u64, to_ms: u64) -> usize {
        self.watch
            .as_ref()
            .map_or(0, |w| w.lock().changes_of(group, from_ms, to_ms))
    }

    /// The nodes other than `node` that took `group` in [from_ms, to_ms].
    pub fn held_by_others(&self, group: &str, node: &str, from_ms: u64, to_ms: u64) -> Vec<String> {
        let Some(w) = self.watch.as_ref() else {
            return Vec::new();
        };
        let w = w.lock();
        let mut others: Vec<String> = (w.changes.iter())
            .filter(|c| c.group == group && c.held && c.node != node)
            .filter(|c| c.at_ms >= from_ms && c.at_ms <= to_ms)
            .map(|c| c.node.clone())
            .collect();
        others.dedup();
        others
    }

    /// The last instant before `before_ms` at which `node` held any VIP.
    pub fn last_seen_holding_before(&self, node: &str, before_ms: u64) -> Option<u64> {
        let w = self.watch.as_ref()?.lock();
        let holds_at = |at: u64| {
            self.groups
                .iter()
                .any(|g| w.holders_at(g, at).iter().any(|n| n == node))
        };
        if holds_at(before_ms) {
            return Some(before_ms);
        }
        w.changes
            .iter()
            .filter(|c| c.node == node && !c.held && c.at_ms < before_ms)
            .map(|c| c.at_ms)
            .max()
    }

    /// Copies every daemon's log to target/tmp/lab-e2e/FAULT/ before `lab.sh down` removes
    /// them: the evidence of a failure must outlive the lab.
    pub fn keep_logs(&self, fault: &str) {
        let dir: String = fault
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let dir = format!("{}/lab-e2e/{dir}", env!("CARGO_TARGET_TMPDIR"));
        let _ = std::fs::create_dir_all(&dir);
        for n in lab::havip_nodes() {
            let _ = std::fs::copy(
                format!("{}/havip.log", lab::dir(&n)),
                format!("{dir}/{n}.log"),
            );
        }
        // The client's side too: an outage over budget is read from these answers.
        let answers = self.answers.lock().map(|a| a.clone()).unwrap_or_default();
        let lines: String = answers
            .iter()
            .map(|a| format!("{} {} {} {}\n", a.vip, a.sent_ms, a.answered_ms, a.who))
            .collect();
        let _ = std::fs::write(format!("{dir}/probe-answers.txt"), lines);
    }

    /// The daemons' WARN lines about releases completed after their hold lease ended,
    /// except a frozen daemon's (each of `frozen`: node, SIGSTOP, SIGCONT) whose lease ended
    /// while it was frozen: it could not act, and says so once thawed.
    pub fn late_releases(&self, frozen: &[(&str, u64, u64)]) -> Vec<String> {
        lab::log_lines("late release")
            .into_iter()
            .filter(|(n, l)| {
                let deadline = l
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("deadline_unix_ms="))
                    .and_then(|d| d.parse::<u64>().ok());
                !frozen.iter().any(|&(node, stopped, continued)| {
                    node == n && deadline.is_some_and(|d| d >= stopped && d <= continued)
                })
            })
            .map(|(n, l)| format!("{n}: {l}"))
            .collect()
    }
}
