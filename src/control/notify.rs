//! Notify hooks: the operator's executable, run on every state change of a group with
//! the group, old and new state in its environment (keepalived's notify_master /
//! notify_backup / notify_fault, in one script). Hooks run one at a time, in the order
//! the changes happened, each bounded by the configured timeout and its output bounded
//! (`platform::child`); a slow or failing hook is logged and never delays the hold loop,
//! which only queues the event. The queue is bounded: a hook stuck behind more than
//! `QUEUE_DEPTH` changes makes new ones dropped, counted and logged.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::NotifySection;
use crate::platform::child::{ChildSpec, RunAs, run_bounded};

/// A group's state as a notify hook sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookState {
    /// This node holds the group's VIPs.
    Master,
    /// It does not hold them, and could.
    Backup,
    /// It may not hold them (unhealthy, link down, maintenance).
    Fault,
}

impl fmt::Display for HookState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookState::Master => "MASTER",
            HookState::Backup => "BACKUP",
            HookState::Fault => "FAULT",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub node: String,
    pub group: String,
    pub old: HookState,
    pub new: HookState,
    pub term: u64,
    pub reason: String,
}

/// Queues state changes for the hook. Cheap to clone; `notify` never blocks. The hook
/// itself can be changed by a reload (`Notifier::set`): changes queued before it run
/// with the hook of when they run.
#[derive(Clone)]
pub struct Notifier {
    queue: mpsc::Sender<StateChange>,
    hook: Arc<watch::Sender<Hook>>,
    /// Changes dropped because the queue was full (a hook much slower than the changes).
    dropped: Arc<AtomicU64>,
}

/// Changes waiting for the hook at most; beyond, new ones are dropped and counted. A hook
/// runs at most its timeout, so a full queue means a hook that is stuck or far too slow,
/// and the log says so rather than havip's memory growing behind it.
pub const QUEUE_DEPTH: usize = 64;

/// The argv to run, its time limit and its user (looked up once, when the hook is set:
/// `Err` says why it cannot run); `None`: changes are dropped.
type Hook = Option<(Vec<String>, Duration, Option<Result<RunAs, String>>)>;

impl Notifier {
    /// A notifier that runs `[notify] command` (argv) for each change; none configured:
    /// changes are dropped.
    pub fn start(section: &NotifySection) -> Notifier {
        let (tx, mut rx) = mpsc::channel::<StateChange>(QUEUE_DEPTH);
        let (hook, current) = watch::channel(hook_of(section));
        tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                let hook = current.borrow().clone();
                match hook {
                    Some((_, _, Some(Err(why)))) => tracing::warn!(group = %change.group,
                        "notify hook not run for {} -> {}: {why}", change.old, change.new),
                    Some((argv, timeout, run_as)) => {
                        let run_as = run_as.and_then(Result::ok);
                        run_hook(&argv, &change, timeout, run_as.as_ref()).await;
                    }
                    None => {}
                }
            }
        });
        Notifier {
            queue: tx,
            hook: Arc::new(hook),
            dropped: Arc::default(),
        }
    }

    /// Replaces the hook (a reload).
    pub fn set(&self, section: &NotifySection) {
        self.hook.send_replace(hook_of(section));
    }

    pub fn notify(&self, change: StateChange) {
        if self.hook.borrow().is_none() {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(change)) = self.queue.try_send(change) {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // The first, then every 100th: a stuck hook must not flood the log either.
            if dropped == 1 || dropped.is_multiple_of(100) {
                tracing::warn!(group = %change.group, dropped,
                    "notify hook queue full ({QUEUE_DEPTH} waiting): dropped the change {} -> {}; is the hook stuck?",
                    change.old, change.new);
            }
        }
    }

    /// Changes dropped so far because the hook's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn hook_of(section: &NotifySection) -> Hook {
    section
        .command
        .clone()
        .filter(|a| !a.is_empty())
        .map(|argv| {
            let run_as = (section.run_as.as_deref())
                .map(|user| RunAs::lookup(user).map_err(|e| e.to_string()));
            (argv, section.timeout, run_as)
        })
}

async fn run_hook(
    argv: &[String],
    change: &StateChange,
    timeout: Duration,
    run_as: Option<&RunAs>,
) {
    let Some((program, args)) = argv.split_first() else {
        return;
    };
    let spec = ChildSpec {
        program,
        args,
        env: vec![
            ("HAVIP_NODE", change.node.clone()),
            ("HAVIP_GROUP", change.group.clone()),
            ("HAVIP_OLD_STATE", change.old.to_string()),
            ("HAVIP_NEW_STATE", change.new.to_string()),
            ("HAVIP_TERM", change.term.to_string()),
            ("HAVIP_REASON", change.reason.clone()),
        ],
        run_as,
    };
    // Bounded in time and output, its process group killed at the timeout, and a
    // background child it leaves holding the pipes does not hold the queue (`child`).
    let run = match run_bounded(spec, timeout).await {
        Ok(run) => run,
        Err(e) => {
            tracing::warn!(group = %change.group, "notify hook {program} could not start: {e}");
            return;
        }
    };
    match run.status {
        Some(Ok(status)) if status.success() => {
            tracing::debug!(group = %change.group, "notify hook {program} {} -> {}: ok", change.old, change.new);
        }
        Some(Ok(status)) => {
            let text = String::from_utf8_lossy(if run.stderr.is_empty() {
                &run.stdout
            } else {
                &run.stderr
            });
            let text: String = text.chars().take(300).collect();
            tracing::warn!(group = %change.group, "notify hook {program} {} -> {} failed ({}): {}",
                change.old, change.new, status, text.trim());
        }
        Some(Err(e)) => tracing::warn!(group = %change.group, "notify hook {program}: {e}"),
        None => {
            tracing::warn!(group = %change.group, "notify hook {program} killed after {timeout:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(command: Option<Vec<String>>, timeout: Duration) -> NotifySection {
        NotifySection {
            command,
            timeout,
            run_as: None,
        }
    }

    #[tokio::test]
    async fn hooks_run_in_order_with_the_change_in_their_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let script = format!(
            "echo \"$HAVIP_GROUP $HAVIP_OLD_STATE $HAVIP_NEW_STATE $HAVIP_TERM $HAVIP_NODE\" >> {}",
            out.display()
        );
        let notifier = Notifier::start(&section(
            Some(vec!["/bin/sh".into(), "-c".into(), script]),
            Duration::from_secs(5),
        ));
        let change = |old, new, term| StateChange {
            node: "gw-a".into(),
            group: "crm".into(),
            old,
            new,
            term,
            reason: "test".into(),
        };
        notifier.notify(change(HookState::Backup, HookState::Master, 3));
        notifier.notify(change(HookState::Master, HookState::Fault, 3));
        let mut text = String::new();
        for _ in 0..200 {
            text = std::fs::read_to_string(&out).unwrap_or_default();
            if text.lines().count() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(text, "crm BACKUP MASTER 3 gw-a\ncrm MASTER FAULT 3 gw-a\n");
    }

    #[tokio::test]
    async fn a_hanging_hook_is_killed_at_its_timeout_and_the_next_one_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let script = format!(
            "if [ \"$HAVIP_NEW_STATE\" = MASTER ]; then sleep 30; fi; echo \"$HAVIP_NEW_STATE\" >> {}",
            out.display()
        );
        let notifier = Notifier::start(&section(
            Some(vec!["/bin/sh".into(), "-c".into(), script]),
            Duration::from_millis(200),
        ));
        for new in [HookState::Master, HookState::Backup] {
            notifier.notify(StateChange {
                node: "gw-a".into(),
                group: "crm".into(),
                old: HookState::Fault,
                new,
                term: 1,
                reason: String::new(),
            });
        }
        let started = std::time::Instant::now();
        let mut text = String::new();
        while started.elapsed() < Duration::from_secs(5) && text.is_empty() {
            text = std::fs::read_to_string(&out).unwrap_or_default();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            text, "BACKUP\n",
            "the hung MASTER hook was killed, the BACKUP one ran"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_hook_set_by_a_reload_runs_for_the_changes_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let script = format!("echo \"$HAVIP_NEW_STATE\" >> {}", out.display());
        let notifier = Notifier::start(&section(None, Duration::from_secs(5)));
        let change = |new| StateChange {
            node: "gw-a".into(),
            group: "crm".into(),
            old: HookState::Backup,
            new,
            term: 1,
            reason: "test".into(),
        };
        notifier.notify(change(HookState::Fault));
        notifier.set(&section(
            Some(vec!["/bin/sh".into(), "-c".into(), script]),
            Duration::from_secs(5),
        ));
        notifier.notify(change(HookState::Master));
        let mut text = String::new();
        for _ in 0..200 {
            text = std::fs::read_to_string(&out).unwrap_or_default();
            if !text.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            text, "MASTER\n",
            "only the change after the hook was set runs it"
        );
    }

    /// Issue 14 item 4: a hook that hangs does not make the queue grow without bound.
    #[tokio::test]
    async fn a_stuck_hook_makes_new_changes_dropped_and_counted() {
        let notifier = Notifier::start(&section(
            Some(vec!["/bin/sleep".into(), "30".into()]),
            Duration::from_secs(30),
        ));
        for term in 0..(QUEUE_DEPTH as u64 + 20) {
            notifier.notify(StateChange {
                node: "gw-a".into(),
                group: "crm".into(),
                old: HookState::Backup,
                new: HookState::Master,
                term,
                reason: "test".into(),
            });
        }
        // One runs, QUEUE_DEPTH wait; the rest were dropped at once, not queued.
        let dropped = notifier.dropped();
        assert!((19..=20).contains(&dropped), "dropped {dropped}");
    }
}
