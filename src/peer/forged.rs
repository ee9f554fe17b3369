//! Requests from an authenticated peer that speak for another node (a vote or an append
//! naming another node, facts about another node): dropped by their handlers, counted
//! here for `havip_peer_rejected_total{reason="forged_request"}`, and logged at the
//! 1st, 2nd, 4th, 8th... so a peer that keeps trying cannot flood the log. Process-wide,
//! like the metrics registry it feeds. It must never drop anything itself: the handlers
//! decide, this only counts.

use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};

static FORGED: AtomicU64 = AtomicU64::new(0);

/// Counts one forged request, and logs it if its number is a power of two.
pub fn record(why: impl Display) {
    let n = FORGED.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        tracing::warn!(forged_requests = n, "peer request dropped: {why}");
    }
}

/// How many forged requests this process dropped.
pub fn count() -> u64 {
    FORGED.load(Ordering::Relaxed)
}
