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
