//! The one split-brain watcher, `scripts/vip-watch.py`, as the Rust tests and the
//! benchmark run it: a child process whose lines are read into `Watched`. Who holds a
//! group and every overlap (two holders) are the watcher's own answers, from the kernel's
//! ordered address events; this file only reads them back (who holds at an instant is a
//! replay of its `hold`/`release` lines, an open overlap is an `overlap-begin` without its
//! `overlap`). It never decides by itself that two nodes held at once. Included beside
//! `host.rs` (its parent declares both).
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The watcher script (its docstring has the output format).
pub const VIP_WATCH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/vip-watch.py");

/// One change seen by the watcher: `node` got (`held`) or lost `group` at `at_ms`.
#[derive(Clone, Debug)]
pub struct Change {
    pub at_ms: u64,
    pub group: String,
    pub node: String,
    pub held: bool,
}

/// An interval in which two or more nodes held `group`, as the watcher reported it.
#[derive(Clone, Debug)]
pub struct Overlap {
    pub group: String,
    pub from_ms: u64,
    /// None: it has begun (`overlap-begin`) and not ended yet.
    pub to_ms: Option<u64>,
    pub nodes: Vec<String>,
}

impl Overlap {
    /// Its length, counting one still open up to `now_ms`.
    pub fn ms(&self, now_ms: u64) -> u64 {
        self.to_ms.unwrap_or(now_ms).saturating_sub(self.from_ms)
    }
}

impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_ms {
            Some(to) => write!(
                f,
                "{} held by {} from {} to {} ({} ms)",
                self.group,
                self.nodes.join(" and "),
                self.from_ms,
                to,
                to - self.from_ms
            ),
            None => write!(
                f,
                "{} held by {} from {} on",
                self.group,
                self.nodes.join(" and "),
                self.from_ms
            ),
        }
    }
}

/// What the watcher reported so far.
#[derive(Default)]
pub struct Watched {
    pub ready: bool,
    pub changes: Vec<Change>,
    /// Every overlap, in the order they began; `to_ms` is set when the watcher reports
    /// its end (at the latest when it stops).
    pub overlaps: Vec<Overlap>,
    /// `error` lines: events may have been lost, and the run proves nothing.
    pub errors: Vec<String>,
    /// Lines it wrote to stderr (a crash, a refused argument).
    pub stderr: Vec<String>,
    /// Its `summary` line, once it ended.
    pub summary: Option<String>,
    /// How many `synced` lines it printed.
    pub synced: usize,
    /// Its output has ended: it stopped, or died.
    pub ended: bool,
}

impl Watched {
    /// Feeds one line of vip-watch.py. A line of an unknown kind is an error: the watcher
    /// said something this reader does not understand.
    pub fn line(&mut self, line: &str) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let number = |s: &str| s.parse::<u64>().ok();
        match f[..] {
            ["ready", _] => self.ready = true,
            ["synced", _] => self.synced += 1,
            [kind @ ("hold" | "release"), at, group, node] if number(at).is_some() => {
                self.changes.push(Change {
                    at_ms: number(at).unwrap_or(0),
                    group: group.to_string(),
                    node: node.to_string(),
                    held: kind == "hold",
                });
            }
            ["overlap-begin", group, from, nodes] if number(from).is_some() => {
                self.overlaps.push(Overlap {
                    group: group.to_string(),
                    from_ms: number(from).unwrap_or(0),
                    to_ms: None,
                    nodes: nodes.split(',').map(str::to_string).collect(),
                });
            }
            ["overlap", group, from, to, nodes]
                if number(from).is_some() && number(to).is_some() =>
            {
                let (from_ms, to_ms) = (number(from).unwrap_or(0), number(to).unwrap_or(0));
                let nodes: Vec<String> = nodes.split(',').map(str::to_string).collect();
                match self
                    .overlaps
                    .iter_mut()
                    .find(|o| o.group == group && o.from_ms == from_ms && o.to_ms.is_none())
                {
                    Some(open) => {
                        open.to_ms = Some(to_ms);
                        open.nodes = nodes;
                    }
                    None => self.overlaps.push(Overlap {
                        group: group.to_string(),
                        from_ms,
                        to_ms: Some(to_ms),
                        nodes,
                    }),
                }
            }
            ["summary", ..] => self.summary = Some(line.to_string()),
            ["error", ..] => self.errors.push(line.to_string()),
            _ => self.errors.push(format!("unreadable watcher line: {line}")),
        }
    }

    /// The nodes holding `group` after the changes up to `at_ms`, sorted.
    pub fn holders_at(&self, group: &str, at_ms: u64) -> Vec<String> {
        let mut holders: BTreeSet<String> = BTreeSet::new();
        for c in self
            .changes
            .iter()
            .filter(|c| c.group == group && c.at_ms <= at_ms)
        {
            if c.held {
                holders.insert(c.node.clone());
            } else {
                holders.remove(&c.node);
            }
        }
        holders.into_iter().collect()
    }

    /// The nodes holding `group` now, as far as the watcher has reported.
    pub fn holders(&self, group: &str) -> Vec<String> {
        self.holders_at(group, u64::MAX)
    }

    /// When the holders of `group` last changed.
    pub fn last_change(&self, group: &str) -> Option<u64> {
        self.changes
            .iter()
            .rev()
            .find(|c| c.group == group)
            .map(|c| c.at_ms)
    }

    /// The changes of `group`'s holders in [from_ms, to_ms].
    pub fn changes_of(&self, group: &str, from_ms: u64, to_ms: u64) -> usize {
        self.changes
            .iter()
            .filter(|c| c.group == group && c.at_ms >= from_ms && c.at_ms <= to_ms)
            .count()
    }

    /// When `node` first let go of `group` after `after_ms`.
    pub fn released(&self, node: &str, group: &str, after_ms: u64) -> Option<u64> {
        self.changes
            .iter()
            .find(|c| c.node == node && c.group == group && !c.held && c.at_ms > after_ms)
            .map(|c| c.at_ms)
    }

    /// Every node that held `group` at some point.
    pub fn holders_seen(&self, group: &str) -> BTreeSet<String> {
        self.changes
            .iter()
            .filter(|c| c.group == group && c.held)
            .map(|c| c.node.clone())
            .collect()
    }
}

/// A running `scripts/vip-watch.py`. Its stdin stays a pipe: when this process dies, the
/// watcher reads EOF and stops; `stop` ends it with SIGTERM, after which it reports the
/// overlaps still open and its summary.
pub struct Watch {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    readers: Vec<JoinHandle<()>>,
    watched: Arc<Mutex<Watched>>,
}

impl Watch {
    /// Starts `command` (vip-watch.py, or `scripts/lab.sh watch`, which runs it) and waits
    /// (bounded) until it is subscribed or has reported an error.
    pub fn start(mut command: Command, what: &str) -> Watch {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let watched = Arc::new(Mutex::new(Watched::default()));
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let watched = watched.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    lock(&watched).line(&line);
                }
                lock(&watched).ended = true;
            }));
        }
        if let Some(stderr) = child.stderr.take() {
            let watched = watched.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    lock(&watched).stderr.push(line);
                }
            }));
        }
        let watch = Watch {
            stdin: child.stdin.take(),
            child: Some(child),
            readers,
            watched,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let w = watch.lock();
            if w.ready || !w.errors.is_empty() {
                break;
            }
            drop(w);
            std::thread::sleep(Duration::from_millis(10));
        }
        watch
    }

    /// What it reported so far.
    pub fn lock(&self) -> MutexGuard<'_, Watched> {
        lock(&self.watched)
    }

    /// Returns once every address event the kernel made before this call has been read
    /// (the watcher's `sync`); false if it did not answer within `limit`.
    pub fn sync(&mut self, limit: Duration) -> bool {
        let before = self.lock().synced;
        let asked = self
            .stdin
            .as_mut()
            .is_some_and(|s| s.write_all(b"sync\n").and_then(|()| s.flush()).is_ok());
        let deadline = Instant::now() + limit;
        while asked && Instant::now() < deadline {
            if self.lock().synced > before {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// SIGTERM (it reports the overlaps still open and its summary), bounded; then its
    /// output is read to the end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::host::terminate(&mut child, Duration::from_secs(5));
        }
        drop(self.stdin.take());
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
