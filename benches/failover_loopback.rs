//! Failover time on loopback, observe-only: 20 SIGKILLs of the master with the default
//! timers; prints min/median/max of the time from the kill until another gateway holds,
//! as seen by the 10 ms split-brain watcher of the test harness (so +-10 ms), and fails if
//! two nodes ever held at once. Run: `cargo bench --bench failover_loopback` (or
//! scripts/bench-failover-loopback.sh). Figures go to docs/benchmarks.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{Cluster, Options};

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    // Failback off: the VIP stays where it lands, so every round kills the current master.
    let mut cluster = Cluster::start(
        40,
        Options {
            failback: false,
            ..Options::default()
        },
    );
    let first = cluster.wait_holder_any(&["gw-a", "gw-b"], Duration::from_secs(15));
    let mut master = first;
    let mut times = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let other = if master == "gw-a" { "gw-b" } else { "gw-a" };
        // The survivor must have been reachable for a while, as in production.
        std::thread::sleep(Duration::from_millis(1500));
        let killed = Instant::now();
        cluster.kill(master);
        cluster.wait_holder(other, Duration::from_secs(10));
        let took = killed.elapsed();
        eprintln!(
            "round {round:>2}: {master} killed, {other} holds after {} ms",
            took.as_millis()
        );
        times.push(took);
        cluster.spawn(master);
        master = other;
    }
    cluster.assert_never_two_holders();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = if times.len() % 2 == 1 {
        ms(times[times.len() / 2])
    } else {
        (ms(times[times.len() / 2 - 1]) + ms(times[times.len() / 2])) / 2.0
    };
    println!(
        "failover after SIGKILL of the master, {} runs, default timers (heartbeat 128ms, election 400..500ms): min {:.0} ms, median {:.0} ms, max {:.0} ms; split brain: none",
        times.len(),
        ms(times[0]),
        median,
        ms(times[times.len() - 1])
    );
}
