//! What systemd is told about the daemon (sd_notify(3), through the `sd-notify` crate):
//! `READY=1` once the node has joined (its peers and every group's Raft running),
//! `STATUS=` with each group's state as the notify hooks see it (MASTER/BACKUP/FAULT),
//! `WATCHDOG=1` while every group loop keeps going round, `STOPPING=1` at shutdown.
//!
//! The watchdog ping is the group loops' to give, not a timer's: each loop stamps a
//! [`LoopBeat`] every time it goes round (at least every `IDLE_WAKE` plus a timer block
//! when idle), and the pinger sends `WATCHDOG=1` only while every stamp is fresh. A loop
//! stuck in an await (a data plane that never answers, a deadlock) stops the pings, and
//! systemd kills the daemon `WatchdogSec` later; `ExecStopPost=havip release` then
//! removes its VIPs and `Restart=on-failure` starts it again. A pinger that pinged on
//! its own timer would keep such a daemon alive: it would still be Raft leader (its
//! `ticks` task sends the heartbeats) without a loop to hold the VIPs.
//!
//! It decides nothing about the VIPs and must never block a group loop: messages go to
//! systemd from a thread of its own through a bounded queue (a datagram to a busy
//! service manager can block the sender), and a full queue drops the message. Without
//! `NOTIFY_SOCKET` (not under systemd, or `Type=simple`) it does nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use futures_util::future::select_all;
use sd_notify::NotifyState;
use tokio::sync::watch;

use crate::control::notify::HookState;

/// One message to systemd.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Message {
    Ready { status: String },
    Status(String),
    Watchdog,
    Stopping { status: String },
}

impl Message {
    fn states(&self) -> Vec<NotifyState<'_>> {
        match self {
            Message::Ready { status } => vec![NotifyState::Ready, NotifyState::Status(status)],
            Message::Status(status) => vec![NotifyState::Status(status)],
            Message::Watchdog => vec![NotifyState::Watchdog],
            Message::Stopping { status } => {
                vec![NotifyState::Stopping, NotifyState::Status(status)]
            }
        }
    }
}

/// The way to systemd's notify socket; cheap to clone. Inert without `NOTIFY_SOCKET`.
#[derive(Clone, Debug)]
pub struct Systemd {
    queue: Option<SyncSender<Message>>,
}

/// Messages waiting for the sender thread; a few seconds' worth at the pace the daemon
/// sends them (a status at most every `STATUS_EVERY`, a ping every quarter watchdog).
const QUEUE: usize = 16;

impl Systemd {
    /// Talks to the socket named by `NOTIFY_SOCKET`, if any.
    pub fn from_env() -> Systemd {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Systemd { queue: None };
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Message>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("sd-notify".into())
            .spawn(move || {
                let mut failed = false;
                while let Ok(message) = rx.recv() {
                    match sd_notify::notify(&message.states()) {
                        Ok(()) => failed = false,
                        Err(e) if !failed => {
                            failed = true;
                            tracing::warn!("cannot notify systemd (NOTIFY_SOCKET): {e}");
                        }
                        Err(_) => {}
                    }
                }
            });
        match spawned {
            Ok(_) => Systemd { queue: Some(tx) },
            Err(e) => {
                tracing::warn!("cannot start the systemd notifier thread: {e}; not notifying");
                Systemd { queue: None }
            }
        }
    }

    fn send(&self, message: Message) {
        if let Some(queue) = &self.queue
            && let Err(TrySendError::Full(message)) = queue.try_send(message)
        {
            tracing::debug!("systemd notify queue full; dropped {message:?}");
        }
    }

    /// `READY=1` with the first status line.
    fn ready(&self, status: String) {
        self.send(Message::Ready { status });
    }

    /// `STOPPING=1`: the graceful stop has begun.
    pub fn stopping(&self) {
        self.send(Message::Stopping {
            status: "stopping: releasing the VIPs, handing leadership over".into(),
        });
    }

    /// How long systemd waits for a ping (`WatchdogSec=`), when it waits for any.
    fn watchdog_timeout(&self) -> Option<Duration> {
        self.queue.as_ref()?;
        sd_notify::watchdog_enabled()
    }
}

/// What systemd is told about one running group loop.
#[derive(Clone)]
pub struct GroupLoopFeed {
    pub group: String,
    pub beat: LoopBeat,
    pub state: watch::Receiver<HookState>,
}

/// The running group loops, as the daemon publishes them: a reload adds and removes some,
/// and a removed group's loop, which stops stamping, must stop counting at once.
pub type GroupLoops = watch::Receiver<Vec<GroupLoopFeed>>;

impl Systemd {
    /// The node has joined: `READY=1` with each group's state, then a status line on
    /// every change and, if systemd asks for it (`WATCHDOG_USEC`), the watchdog pings.
    pub fn joined(&self, loops: GroupLoops, shutdown: &watch::Receiver<bool>) {
        if self.queue.is_none() {
            return;
        }
        self.ready(status_line(&states_of(&loops.borrow())));
        if let Some(timeout) = self.watchdog_timeout() {
            tracing::info!(
                "systemd watchdog: a ping every {:?} while every group loop runs",
                timeout / 4
            );
            tokio::spawn(watchdog(
                self.clone(),
                timeout,
                loops.clone(),
                shutdown.clone(),
            ));
        }
        tokio::spawn(report_states(self.clone(), loops, shutdown.clone()));
    }
}

fn states_of(loops: &[GroupLoopFeed]) -> Vec<(String, HookState)> {
    (loops.iter())
        .map(|l| (l.group.clone(), *l.state.borrow()))
        .collect()
}

/// When a group loop last went round, stamped by the loop itself.
#[derive(Clone, Debug)]
pub struct LoopBeat {
    epoch: Instant,
    /// Nanoseconds from `epoch` to the last stamp.
    last: Arc<AtomicU64>,
}

impl Default for LoopBeat {
    fn default() -> Self {
        LoopBeat {
            epoch: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl LoopBeat {
    /// The loop went round: it is not stuck.
    pub fn beat(&self) {
        let nanos = self.epoch.elapsed().as_nanos() as u64;
        self.last.store(nanos, Ordering::Relaxed);
    }

    /// Time since the last stamp, as of `now`.
    fn age(&self, now: Instant) -> Duration {
        let last = self.epoch + Duration::from_nanos(self.last.load(Ordering::Relaxed));
        now.saturating_duration_since(last)
    }
}

/// The first loop (by its group's name) whose last stamp is `stale` or older, and its age.
fn stalled(ages: &[(String, Duration)], stale: Duration) -> Option<(&str, Duration)> {
    ages.iter()
        .find(|(_, age)| *age >= stale)
        .map(|(group, age)| (group.as_str(), *age))
}

/// Sends `WATCHDOG=1` every quarter of `timeout` while every loop stamped within half
/// of it, until `shutdown` (systemd stops watching a stopping service). A loop that
/// went stale is logged once per stall, naming its group.
async fn watchdog(
    systemd: Systemd,
    timeout: Duration,
    loops: GroupLoops,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = timeout / 4;
    let stale = timeout / 2;
    let mut stuck = false;
    loop {
        let now = Instant::now();
        let ages: Vec<_> = (loops.borrow().iter())
            .map(|l| (l.group.clone(), l.beat.age(now)))
            .collect();
        match stalled(&ages, stale) {
            None => {
                stuck = false;
                systemd.send(Message::Watchdog);
            }
            Some((group, age)) if !stuck => {
                stuck = true;
                tracing::error!(group = %group,
                    "group {group}'s loop has not run for {age:?}: no watchdog ping; systemd stops havip {timeout:?} after the last one");
            }
            Some(_) => {}
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// What `systemctl status` shows as the daemon's status: each group's state.
pub fn status_line(states: &[(String, HookState)]) -> String {
    let groups: Vec<String> = states
        .iter()
        .map(|(group, state)| format!("{group}: {state}"))
        .collect();
    groups.join(", ")
}

/// A status is sent at most this often: a flapping group cannot flood systemd, and the
/// last state of a burst is the one shown.
pub const STATUS_EVERY: Duration = Duration::from_millis(250);

/// Sends a `STATUS=` line whenever a group's state changes, or a group is added or
/// removed (at most every `STATUS_EVERY`), until `shutdown`.
async fn report_states(
    systemd: Systemd,
    mut loops: GroupLoops,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut shown = status_line(&states_of(&loops.borrow_and_update()));
    loop {
        let mut states: Vec<watch::Receiver<HookState>> =
            (loops.borrow().iter()).map(|l| l.state.clone()).collect();
        let any_changed = async {
            if states.is_empty() {
                std::future::pending::<()>().await;
            }
            // A closed state is a group being removed: the list changes next.
            let _ = select_all(states.iter_mut().map(|s| Box::pin(s.changed()))).await;
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            changed = loops.changed() => if changed.is_err() { return },
            () = any_changed => {}
        }
        let line = status_line(&states_of(&loops.borrow_and_update()));
        if line != shown {
            systemd.send(Message::Status(line.clone()));
            shown = line;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(STATUS_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_loop_is_stalled_from_the_bound_on_and_the_first_one_is_named() {
        let ages = vec![
            ("crm".to_string(), 100 * MS),
            ("crm2".to_string(), 2500 * MS),
            ("crm3".to_string(), 9000 * MS),
        ];
        assert_eq!(stalled(&ages, 2500 * MS), Some(("crm2", 2500 * MS)));
        assert_eq!(stalled(&ages, 10_000 * MS), None);
        assert_eq!(stalled(&ages[..1], 101 * MS), None);
        assert_eq!(stalled(&[], MS), None);
    }

    #[test]
    fn a_beat_resets_the_age() {
        let beat = LoopBeat::default();
        let later = Instant::now() + 300 * MS;
        assert!(beat.age(later) >= 300 * MS);
        beat.beat();
        assert!(beat.age(Instant::now()) < 300 * MS);
    }

    /// Two loops, one of which stops going round: the pings stop a half timeout later,
    /// though the pinger itself runs on.
    fn feed(group: &str, beat: &LoopBeat) -> GroupLoopFeed {
        GroupLoopFeed {
            group: group.into(),
            beat: beat.clone(),
            state: watch::channel(HookState::Backup).1,
        }
    }

    /// A reload removed a group: its loop stopped stamping, and must not stop the pings.
    #[tokio::test]
    async fn a_removed_loop_no_longer_counts() {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let systemd = Systemd { queue: Some(tx) };
        let (crm, gone) = (LoopBeat::default(), LoopBeat::default());
        let (_stop, shutdown) = watch::channel(false);
        let (publish, loops) = watch::channel(vec![feed("crm", &crm), feed("g2", &gone)]);
        tokio::spawn(watchdog(systemd, 200 * MS, loops, shutdown));
        let start = Instant::now();
        let mut pings = Vec::new();
        while start.elapsed() < 800 * MS {
            crm.beat();
            if start.elapsed() >= 400 * MS {
                publish.send_replace(vec![feed("crm", &crm)]);
            }
            tokio::time::sleep(10 * MS).await;
            while rx.try_recv().is_ok() {
                pings.push(start.elapsed());
            }
        }
        assert!(
            pings.iter().any(|at| *at > 500 * MS),
            "pings resumed once g2 was removed: {pings:?}"
        );
    }

    #[tokio::test]
    async fn the_pings_stop_when_one_loop_stops_going_round() {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let systemd = Systemd { queue: Some(tx) };
        let (crm, crm2) = (LoopBeat::default(), LoopBeat::default());
        let (_stop, shutdown) = watch::channel(false);
        let (_loops, loops) = watch::channel(vec![feed("crm", &crm), feed("crm2", &crm2)]);
        let timeout = 200 * MS;
        tokio::spawn(watchdog(systemd, timeout, loops, shutdown));
        let start = Instant::now();
        let mut pings = Vec::new();
        while start.elapsed() < 900 * MS {
            crm.beat();
            if start.elapsed() < 300 * MS {
                crm2.beat();
            }
            tokio::time::sleep(10 * MS).await;
            while let Ok(message) = rx.try_recv() {
                assert_eq!(message, Message::Watchdog);
                pings.push(start.elapsed());
            }
        }
        let last = *pings.last().expect("pinged while both loops ran");
        assert!(pings.len() >= 5, "{pings:?}");
        // crm2's last beat at ~300 ms is stale from ~400 ms on (a ping may be read
        // here a little after it was sent on a loaded machine); 500 ms of silence after.
        assert!(last < 550 * MS, "{pings:?}");
        assert!(last >= 250 * MS, "{pings:?}");
    }

    #[test]
    fn the_status_names_every_group_and_its_state() {
        let states = [
            ("crm".to_string(), HookState::Master),
            ("crm2".to_string(), HookState::Backup),
            ("dmz".to_string(), HookState::Fault),
        ];
        assert_eq!(
            status_line(&states),
            "crm: MASTER, crm2: BACKUP, dmz: FAULT"
        );
    }

    #[test]
    fn messages_are_what_sd_notify_expects() {
        let text = |m: Message| m.states().iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            text(Message::Ready {
                status: "crm: BACKUP".into()
            }),
            ["READY=1", "STATUS=crm: BACKUP"]
        );
        assert_eq!(text(Message::Watchdog), ["WATCHDOG=1"]);
        assert_eq!(
            text(Message::Stopping { status: "x".into() }),
            ["STOPPING=1", "STATUS=x"]
        );
    }
}
