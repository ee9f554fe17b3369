//! A fixed delay for the lab on kernels without sch_netem: it binds an NFQUEUE queue and
//! gives every packet queued to it its ACCEPT verdict `--delay-ms` after it arrived, in
//! arrival order. Run it inside a namespace (`ip netns exec NS ...`: NFQUEUE is per network
//! namespace) behind a rule that queues with bypass (`-j NFQUEUE --queue-num N
//! --queue-bypass`, or nftables' `queue num N bypass` where the kernel has it), so that
//! traffic flows undelayed whenever it is not running. It prints one JSON line once bound
//! (the test's "ready") and one when it stops; SIGTERM or SIGINT stops it, after accepting
//! what it still holds.

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};

use clap::Parser;
use nfq::{Message, Queue, Verdict};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use serde_json::json;

/// At most this many packets held at once. The kernel counts a packet against the queue's
/// length until its verdict, so with this as the queue length and fail-open, the kernel
/// itself ACCEPTs the overflow at once, undelayed (and so ahead of the held ones): an
/// overloaded delay line adds no loss of its own, and the test's loss stays the injected one.
const MAX_HELD: u32 = 1024;

/// How late a packet may be noticed: the queue's socket cannot be polled through `nfq`'s
/// API, so the loop looks at it this often (a packet waits delay..delay + tick).
const TICK: Duration = Duration::from_millis(1);

#[derive(Parser)]
struct Cli {
    /// The NFQUEUE queue number the rule sends packets to.
    #[arg(long)]
    queue: u16,
    #[arg(long, default_value = "20")]
    delay_ms: u64,
    /// Give up after this long at the latest (a forgotten delay line must not live on).
    #[arg(long, default_value = "600")]
    max_s: u64,
}

fn emit(value: serde_json::Value) {
    // The reader may be gone by the time we stop: that is no reason to fail.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}").and_then(|()| out.flush());
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("delay_line: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    // Blocked and read from a signalfd, the stop signals need neither a handler nor unsafe.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    let signals = SignalFd::with_flags(&stop, SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;

    let queue_num = cli.queue;
    let delay = Duration::from_millis(cli.delay_ms);
    let mut queue = Queue::open().map_err(|e| format!("NFQUEUE socket: {e}"))?;
    let setup = |queue: &mut Queue| -> std::io::Result<()> {
        queue.bind(queue_num)?;
        // The verdict needs only the packet id: no payload copies to hold.
        queue.set_copy_range(queue_num, 0)?;
        queue.set_queue_max_len(queue_num, MAX_HELD)?;
        queue.set_fail_open(queue_num, true)?;
        queue.set_nonblocking(true);
        Ok(())
    };
    setup(&mut queue).map_err(|e| format!("binding queue {queue_num}: {e}"))?;
    emit(json!({"event": "ready", "queue": queue_num, "delay_ms": cli.delay_ms}));

    let mut held: VecDeque<(Instant, Message)> = VecDeque::new();
    let (mut delayed, mut overflow) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(cli.max_s);
    let result = loop {
        if Instant::now() >= deadline {
            break Ok("max_s");
        }
        match signals.read_signal() {
            Ok(Some(_)) => break Ok("signal"),
            Ok(None) => {}
            Err(e) => break Err(format!("signalfd: {e}")),
        }
        if let Err(e) = receive(&mut queue, &mut held, &mut overflow)
            .and_then(|()| release_due(&mut queue, &mut held, delay, &mut delayed))
        {
            break Err(e);
        }
        let now = Instant::now();
        let next = held
            .front()
            .map_or(TICK, |(at, _)| (*at + delay).saturating_duration_since(now));
        std::thread::sleep(next.min(TICK));
    };
    // Closing the socket would make the kernel drop what is still held.
    let flushed = held.len();
    for (_, message) in held {
        accept(&mut queue, message)?;
    }
    let reason = result?;
    emit(
        json!({"event": "stopped", "reason": reason, "delayed": delayed,
                "overflow": overflow, "flushed": flushed}),
    );
    Ok(())
}

/// Takes every packet the kernel has queued so far.
fn receive(
    queue: &mut Queue,
    held: &mut VecDeque<(Instant, Message)>,
    overflow: &mut u64,
) -> Result<(), String> {
    for _ in 0..MAX_HELD {
        match queue.recv() {
            Ok(message) if held.len() < MAX_HELD as usize => {
                held.push_back((Instant::now(), message))
            }
            // Never reached while the kernel enforces the queue length; kept so the bound
            // does not rest on the kernel alone.
            Ok(message) => {
                *overflow += 1;
                accept(queue, message)?;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("receiving from the queue: {e}")),
        }
    }
    Ok(())
}

/// One delay for all: the oldest is always due first, so order is kept.
fn release_due(
    queue: &mut Queue,
    held: &mut VecDeque<(Instant, Message)>,
    delay: Duration,
    delayed: &mut u64,
) -> Result<(), String> {
    let now = Instant::now();
    while let Some((_, message)) = held.pop_front_if(|(at, _)| now >= *at + delay) {
        accept(queue, message)?;
        *delayed += 1;
    }
    Ok(())
}

fn accept(queue: &mut Queue, mut message: Message) -> Result<(), String> {
    message.set_verdict(Verdict::Accept);
    queue.verdict(message).map_err(|e| format!("verdict: {e}"))
}
