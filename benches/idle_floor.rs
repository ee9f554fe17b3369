//! The floor under an idle master's CPU on this machine: what the bare message pattern of
//! a heartbeat costs, without Raft, encryption or encoding. A leader thread wakes every
//! heartbeat (on tokio's 64 ms timer grid, like havip's beats), writes one 250-byte message
//! to each of two follower threads over loopback TCP, and reads their 100-byte replies;
//! each thread runs its own one-thread tokio runtime, as havip does. Prints the leader's
//! and a follower's share of one core for each heartbeat, to set beside
//! `scripts/bench-idle.sh` (havip's idle master): the difference is what havip adds.
//!
//! `cargo bench --bench idle_floor` (env: SECONDS=20 per heartbeat, HEARTBEATS=64,128).
//! Loopback addresses 127.0.9.41-42, ports chosen by the kernel; nothing leaves the host.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const REQUEST: usize = 250;
const REPLY: usize = 100;

fn main() {
    let seconds: u64 = env_number("SECONDS", 20);
    let heartbeats: Vec<u64> = std::env::var("HEARTBEATS")
        .unwrap_or_else(|_| "64,128".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "idle floor: bare heartbeat pattern (2 x {REQUEST} B out, 2 x {REPLY} B back), {seconds} s each"
    );
    println!(
        "{:>10} {:>10} {:>10}",
        "heartbeat", "leader %", "follower %"
    );
    for hb in heartbeats {
        match measure(Duration::from_millis(hb), Duration::from_secs(seconds)) {
            Ok((leader, follower)) => println!("{:>8}ms {leader:>10.3} {follower:>10.3}", hb),
            Err(e) => {
                eprintln!("idle floor: heartbeat {hb} ms: {e}");
                std::process::exit(1);
            }
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of the calling thread, from the scheduler's own accounting.
fn thread_cpu() -> std::io::Result<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| std::io::Error::other("unreadable /proc/thread-self/schedstat"))?;
    Ok(Duration::from_nanos(ns))
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Returns (leader, first follower) CPU in % of one core over `span`.
fn measure(heartbeat: Duration, span: Duration) -> std::io::Result<(f64, f64)> {
    let mut addrs = Vec::new();
    let mut followers = Vec::new();
    for host in ["127.0.9.41:0", "127.0.9.42:0"] {
        let listener = std::net::TcpListener::bind(host)?;
        listener.set_nonblocking(true)?;
        addrs.push(listener.local_addr()?);
        followers.push(std::thread::spawn(move || follower(listener)));
    }
    let leader = leader(&addrs, heartbeat, span)?;
    let mut first = None;
    for handle in followers {
        let used = handle
            .join()
            .map_err(|_| std::io::Error::other("a follower thread panicked"))??;
        first.get_or_insert(used);
    }
    Ok((leader, first.unwrap_or(0.0)))
}

fn percent(used: Duration, span: Duration) -> f64 {
    100.0 * used.as_secs_f64() / span.as_secs_f64()
}

fn follower(listener: std::net::TcpListener) -> std::io::Result<f64> {
    runtime()?.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        let (mut stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .map_err(|_| std::io::Error::other("the leader never connected"))??;
        stream.set_nodelay(true)?;
        let mut request = [0u8; REQUEST];
        // Settle one second, then measure until the leader closes the connection.
        let settled = Instant::now() + Duration::from_secs(1);
        let mut start: Option<(Instant, Duration)> = None;
        while stream.read_exact(&mut request).await.is_ok() {
            stream.write_all(&[1u8; REPLY]).await?;
            if start.is_none() && Instant::now() >= settled {
                start = Some((Instant::now(), thread_cpu()?));
            }
        }
        let (at, cpu) = start.ok_or_else(|| {
            std::io::Error::other("the leader stopped before the follower settled")
        })?;
        Ok(percent(thread_cpu()? - cpu, at.elapsed()))
    })
}

fn leader(addrs: &[SocketAddr], heartbeat: Duration, span: Duration) -> std::io::Result<f64> {
    // tokio's wheel counts from the runtime's start: beats on multiples of 64 ms from here
    // fall on its block boundaries (see src/timer_grid.rs), as havip's do.
    let origin = Instant::now();
    runtime()?.block_on(async move {
        let mut writers = Vec::new();
        for addr in addrs {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut reader, writer) = stream.into_split();
            writers.push(writer);
            tokio::spawn(async move {
                let mut reply = [0u8; REPLY];
                while reader.read_exact(&mut reply).await.is_ok() {}
            });
        }
        let origin = tokio::time::Instant::from_std(origin);
        let settle = Duration::from_secs(1);
        let beats = (settle + span).as_millis() / heartbeat.as_millis().max(1);
        let mut start = None;
        for k in 1..=beats as u32 {
            tokio::time::sleep_until(origin + heartbeat * k).await;
            if start.is_none() && origin.elapsed() >= settle {
                start = Some((Instant::now(), thread_cpu()?));
            }
            for w in writers.iter_mut() {
                w.write_all(&[2u8; REQUEST]).await?;
            }
        }
        let (at, cpu) = start.ok_or_else(|| std::io::Error::other("no beat after settling"))?;
        Ok(percent(thread_cpu()? - cpu, at.elapsed()))
    })
}
