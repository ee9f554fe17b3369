//! Waiting for a condition in a test: polled, bounded, and how long it took (the figure
//! a test prints). One definition for the tests that include it (`#[path]`).

use std::time::{Duration, Instant};

/// Polls `check` every `every` for at most `limit`; how long until it held, if it did.
pub fn within_every(
    limit: Duration,
    every: Duration,
    mut check: impl FnMut() -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return Some(start.elapsed());
        }
        std::thread::sleep(every);
    }
    None
}
