//! Every line the group's decisions write to the log, in one place (as holo's `debug.rs`):
//! the machine says what happened as data, this module says it in words. It must never
//! decide anything; the one clock it reads is the wall clock, to put a late release's
//! deadline in the operator's time.

use std::time::Duration;

use ipnet::IpNet;

use super::machine::Event;
use super::unix_ms;
use crate::control::notify::{HookState, StateChange};

/// One line per state change: `state change: BACKUP -> MASTER (holding the VIPs)`.
pub fn state_change(change: &StateChange, addresses: &[IpNet]) {
    let StateChange {
        group,
        old,
        new,
        term,
        reason,
        ..
    } = change;
    match new {
        HookState::Master => tracing::info!(group = %group, term, addresses = ?addresses,
            old_state = %old, new_state = %new,
            "state change: {old} -> MASTER (holding the VIPs)"),
        _ => {
            tracing::info!(group = %group, term, reason = %reason, old_state = %old, new_state = %new,
            "state change: {old} -> {new}{}", if *old == HookState::Master { " (released the VIPs)" } else { "" })
        }
    }
}

/// The line for one of the machine's events.
pub fn event(group: &str, event: &Event) {
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    match event {
        Event::HoldFailed { error } => {
            tracing::error!(group = %group, "cannot hold the VIPs: {error}")
        }
        Event::ReleaseFailed { error } => {
            tracing::error!(group = %group, "cannot remove the VIPs: {error}")
        }
        Event::LateRelease {
            term,
            late,
            started_late,
            removal,
            wake_late_max,
            reason,
        } => tracing::warn!(group = %group, term,
            deadline_unix_ms = unix_ms().saturating_sub(late.as_millis() as u64),
            late_ms = ms(late), started_late_ms = ms(started_late),
            removal_ms = ms(removal), wake_late_max_ms = ms(wake_late_max), reason = %reason,
            "late release: the VIPs were removed {late:?} after the hold lease ended"),
        Event::WokeLate { late, late_wakeups } => {
            tracing::warn!(group = %group, late_ms = ms(late), late_wakeups,
                "the hold loop woke {late:?} late while holding (the machine is starved?)")
        }
        Event::NotHandingOverWhileHolding => {
            tracing::warn!(group = %group, "not handing over while the VIPs are still up")
        }
        Event::HandingOver { to, reason, term } => {
            tracing::info!(group = %group, to = %to, term, "handing leadership over: {reason}")
        }
        Event::NotHandingOverBeforeExit => {
            tracing::warn!(group = %group, "the VIPs could not be removed: not handing over")
        }
        Event::HandingOverBeforeExit { to } => {
            tracing::info!(group = %group, to = %to, "handing leadership over before exiting")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// What the fmt layer wrote, as the daemon's log file would hold it.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Written {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Written {
        type Writer = Written;
        fn make_writer(&'a self) -> Written {
            self.clone()
        }
    }

    /// A late release and a late wake-up while holding are safety events (issue 18 item 2):
    /// WARN lines, which no log filter of the daemon drops, with the fields the lab's check
    /// reads (`deadline_unix_ms`, in tests/support/lab_run.rs `late_releases`). A debug or
    /// info line here would pass every other test and be silent on a real gateway.
    #[test]
    fn late_releases_and_late_wake_ups_are_warn_lines_with_their_deadline() {
        let written = Written::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(written.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            event(
                "crm",
                &Event::LateRelease {
                    term: 2,
                    late: 7 * MS,
                    started_late: 5 * MS,
                    removal: 2 * MS,
                    wake_late_max: 4 * MS,
                    reason: "quorum acknowledgement older than the hold lease".into(),
                },
            );
            event(
                "crm",
                &Event::WokeLate {
                    late: 30 * MS,
                    late_wakeups: 1,
                },
            );
        });
        let text = String::from_utf8_lossy(&written.0.lock().unwrap_or_else(|e| e.into_inner()))
            .into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let late = lines[0];
        for part in [
            " WARN ",
            "late release: the VIPs were removed 7ms after the hold lease ended",
            "group=crm",
            "term=2",
            "deadline_unix_ms=",
            "late_ms=7",
            "started_late_ms=5",
        ] {
            assert!(late.contains(part), "no {part:?} in {late:?}");
        }
        let woke = lines[1];
        for part in [" WARN ", "the hold loop woke 30ms late", "late_wakeups=1"] {
            assert!(woke.contains(part), "no {part:?} in {woke:?}");
        }
    }
}
