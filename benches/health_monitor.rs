//! Cost of the health monitor: 1,000 HTTP checks at a 1 s interval against local
//! keep-alive servers for 60 s. Prints the monitor's CPU use (percent of one core), its
//! peak RSS and the p50/p99 probe latency. Run: `cargo bench --bench health_monitor`
//! (or scripts/bench-health.sh); CHECKS=N, BENCH_SECONDS=N, LISTENERS=N, RUNTIME=current to change. Figures go
//! to docs/benchmarks.md.
//!
//! Two processes, so the figures are the monitor's alone: this one serves HTTP on a few
//! 127.0.0.1 listeners and re-runs itself as the monitor process, which runs only the
//! `HealthMonitor` (plus reading its own report once a second for the latencies).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use havip::config::{CheckKind, HealthCheck, HealthSection, HttpMethod, Require, StatusSet};
use havip::health::{HealthMonitor, HealthReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ROLE: &str = "HAVIP_BENCH_HEALTH_ROLE";
const PORTS: &str = "HAVIP_BENCH_HEALTH_PORTS";
/// Results start after this: every check has had its jittered first start (within 1 s)
/// and its connection set up.
const WARMUP: Duration = Duration::from_secs(3);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var(ROLE).as_deref() == Ok("monitor") {
        monitor();
    } else {
        harness();
    }
}

// ---------------------------------------------------------------- the servers

fn harness() {
    let listeners = env_number("LISTENERS", 4);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ports: Vec<u16> = runtime.block_on(async {
        let mut ports = Vec::new();
        for _ in 0..listeners {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            ports.push(listener.local_addr().expect("addr").port());
            tokio::spawn(accept(listener));
        }
        ports
    });
    let ports_text: Vec<String> = ports.iter().map(u16::to_string).collect();
    let exe = std::env::current_exe().expect("current exe");
    let mut child = Command::new(exe)
        .env(ROLE, "monitor")
        .env(PORTS, ports_text.join(","))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the monitor process");
    let stdout = child.stdout.take().expect("stdout");
    for line in BufReader::new(stdout).lines() {
        match line {
            Ok(line) => println!("{line}"),
            Err(_) => break,
        }
    }
    let status = child.wait().expect("wait for the monitor");
    if !status.success() {
        eprintln!("monitor process: {status}");
        std::process::exit(1);
    }
}

async fn accept(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(serve(stream));
    }
}

/// Keep-alive HTTP/1.1, "200 ok" to every request.
async fn serve(mut stream: tokio::net::TcpStream) {
    const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        while let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.drain(..at + 4);
            if stream.write_all(REPLY).await.is_err() {
                return;
            }
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    }
}

// ---------------------------------------------------------------- the monitor process

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    let ticks_per_second = env_number("CLK_TCK", 100) as f64;
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 of `rest`.
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    ticks as f64 / ticks_per_second
}

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The monitor on the runtime a daemon would give it: multi-threaded by default,
/// RUNTIME=current for a single-threaded one.
fn monitor() {
    let runtime = if std::env::var("RUNTIME").as_deref() == Ok("current") {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Runtime::new()
    };
    runtime.expect("runtime").block_on(run_monitor());
}

/// `checks` http checks at 1 s, spread over the listeners on `ports`.
fn http_checks(checks: usize, ports: &[u16]) -> HealthSection {
    HealthSection {
        require: Require::Any,
        run_as: None,
        checks: (0..checks)
            .map(|i| HealthCheck {
                name: format!("crm-{i}-http"),
                kind: CheckKind::Http {
                    url: format!("http://127.0.0.1:{}/health/{i}", ports[i % ports.len()]),
                    https: false,
                    method: HttpMethod::Get,
                    host: None,
                    expect_status: StatusSet::default(),
                    expect_body: None,
                    ca_file: None,
                    insecure_skip_verify: false,
                },
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                rise: 2,
                fall: 3,
                weight: 0,
            })
            .collect(),
    }
}

/// What the monitor's reports showed until `end`.
struct Sampled {
    /// Probes per check, over the whole run.
    seen: Vec<u64>,
    /// Latencies and failures of the probes after the warm-up.
    latencies: Vec<f64>,
    failures: u64,
    /// When the measured window began, and the CPU time then.
    window: Option<(Instant, f64)>,
}

/// Follows the monitor's reports until `end`, counting every new probe result; those
/// after the warm-up are sampled.
async fn sample(
    rx: &mut tokio::sync::watch::Receiver<HealthReport>,
    checks: usize,
    start: Instant,
    end: Instant,
) -> Sampled {
    let mut sampled = Sampled {
        seen: vec![0u64; checks],
        latencies: Vec::new(),
        failures: 0,
        window: None,
    };
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, rx.changed()).await.is_err() {
            break;
        }
        let report = rx.borrow_and_update().clone();
        if sampled.window.is_none() && start.elapsed() >= WARMUP {
            sampled.window = Some((Instant::now(), cpu_seconds()));
        }
        for (i, check) in report.checks.iter().enumerate() {
            if check.probes > sampled.seen[i] {
                sampled.seen[i] = check.probes;
                if sampled.window.is_some() {
                    sampled.latencies.push(check.last_latency_ms);
                    if !check.last_ok {
                        sampled.failures += 1;
                    }
                }
            }
        }
    }
    sampled
}

async fn run_monitor() {
    let checks = env_number("CHECKS", 1000) as usize;
    let seconds = env_number("BENCH_SECONDS", 60);
    let ports: Vec<u16> = std::env::var(PORTS)
        .unwrap_or_default()
        .split(',')
        .filter_map(|p| p.parse().ok())
        .collect();
    assert!(!ports.is_empty(), "no server ports given");
    let section = http_checks(checks, &ports);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let start_cpu = cpu_seconds();
    let start = Instant::now();
    let (monitor, mut rx) = HealthMonitor::start(&section, shutdown);
    let Sampled {
        seen,
        mut latencies,
        failures,
        window,
    } = sample(
        &mut rx,
        checks,
        start,
        start + WARMUP + Duration::from_secs(seconds),
    )
    .await;
    let end_cpu = cpu_seconds();
    let elapsed = start.elapsed().as_secs_f64();
    let (window_start, window_cpu) = window.unwrap_or((start, start_cpu));
    let window_secs = window_start.elapsed().as_secs_f64();
    let probes: u64 = seen.iter().sum();
    let report = rx.borrow().clone();
    stop.send_replace(true);
    monitor.stopped().await;

    latencies.sort_by(f64::total_cmp);
    println!(
        "checks: {checks} http at 1 s against {} listeners on 127.0.0.1",
        ports.len()
    );
    println!(
        "run: {elapsed:.1} s ({} s warm-up, {window_secs:.1} s measured), {probes} probes, {} sampled, {failures} failed, node {}",
        WARMUP.as_secs(),
        latencies.len(),
        report.node.status.as_str()
    );
    println!(
        "cpu: {:.2} % of one core (measured window), {:.2} % including start-up",
        100.0 * (end_cpu - window_cpu) / window_secs,
        100.0 * (end_cpu - start_cpu) / elapsed
    );
    println!(
        "rss: peak {} KiB (VmHWM), now {} KiB",
        status_kib("VmHWM:"),
        status_kib("VmRSS:")
    );
    println!(
        "latency: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
}
