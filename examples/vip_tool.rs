//! The data plane's parts as a small command, for the network-namespace tests and the
//! data-plane benchmark (run inside a namespace with `ip netns exec`): `hold` a VIP set
//! with the real netlink data plane, `reconcile`, `capture` announcements with an AF_PACKET
//! reader and decode them with `havip::vip::packet`, watch `links`. Every line it prints
//! is one JSON object with a wall-clock `unix_ns`, so timings across processes compare.
//! It must never run outside a namespace a test created (it changes the interface it is
//! given).

use std::io::BufRead;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use havip::config::Announce;
use havip::vip::link::LinkWatch;
use havip::vip::netlink::NetlinkDataPlane;
use havip::vip::packet::{self, Announcement};
use havip::vip::raw::{ETH_P_ALL, PacketSocket};
use havip::vip::{DataPlane, VipSet};
use ipnet::IpNet;
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: ToolCommand,
}

/// The tool's subcommands. (Not `consensus::state::Command`, what a group's Raft log
/// records.)
#[derive(Subcommand)]
enum ToolCommand {
    /// Holds the VIPs (hold() every 10 ms) until stdin closes or SIGTERM, then releases.
    Hold {
        #[arg(long)]
        interface: String,
        #[arg(long = "address", required = true)]
        addresses: Vec<IpNet>,
        #[arg(long, default_value = "3")]
        lifetime_s: u64,
        #[arg(long, default_value = "5")]
        burst_count: u32,
        #[arg(long, default_value = "10")]
        burst_spacing_ms: u64,
        /// 0 = no repeat burst.
        #[arg(long, default_value = "2000")]
        repeat_after_ms: u64,
        /// Give up after this long at the latest.
        #[arg(long, default_value = "60")]
        max_s: u64,
        /// Hold once with a hold lease this long and never renew it: a frozen master.
        #[arg(long)]
        lease_ms: Option<u64>,
        /// After --reshape-after-ms, hold this set instead (a reload changed the group's
        /// addresses): only the difference may change on the interface.
        #[arg(long = "reshape-to")]
        reshape_to: Vec<IpNet>,
        #[arg(long, default_value = "500")]
        reshape_after_ms: u64,
    },
    /// Runs the startup check; exit 2 with the error on stderr when it refuses.
    Reconcile {
        #[arg(long)]
        interface: String,
        #[arg(long = "address", required = true)]
        addresses: Vec<IpNet>,
    },
    /// Prints every ARP / neighbour advertisement seen on the interface for `for_ms`.
    Capture {
        #[arg(long)]
        interface: String,
        #[arg(long)]
        for_ms: u64,
    },
    /// Prints the interface's link state at start and on every change, for `for_ms`.
    Links {
        #[arg(long)]
        interface: String,
        #[arg(long)]
        for_ms: u64,
    },
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn emit(mut value: serde_json::Value) {
    value["unix_ns"] = json!(unix_ns().to_string());
    println!("{value}");
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn vip_set(
    interface: String,
    addresses: Vec<IpNet>,
    lifetime_s: u64,
    announce: Announce,
) -> VipSet {
    VipSet {
        group: "crm".into(),
        interface,
        addresses,
        address_lifetime: Duration::from_secs(lifetime_s),
        announce,
    }
}

async fn run(command: ToolCommand) -> Result<(), String> {
    match command {
        ToolCommand::Hold {
            interface,
            addresses,
            lifetime_s,
            burst_count,
            burst_spacing_ms,
            repeat_after_ms,
            max_s,
            lease_ms,
            reshape_to,
            reshape_after_ms,
        } => {
            let announce = Announce {
                burst_count,
                burst_spacing: Duration::from_millis(burst_spacing_ms),
                repeat_after: (repeat_after_ms > 0).then(|| Duration::from_millis(repeat_after_ms)),
                refresh: None,
            };
            let reshape = (!reshape_to.is_empty()).then(|| {
                let set = vip_set(interface.clone(), reshape_to, lifetime_s, announce);
                (set, Duration::from_millis(reshape_after_ms))
            });
            let vips = vip_set(interface, addresses, lifetime_s, announce);
            let lease = lease_ms.map(Duration::from_millis);
            hold(&vips, lease, Duration::from_secs(max_s), reshape).await
        }
        ToolCommand::Reconcile {
            interface,
            addresses,
        } => {
            let vips = vip_set(interface, addresses, 3, Announce::default());
            let plane = NetlinkDataPlane::new(None).map_err(|e| e.to_string())?;
            plane.reconcile(&[vips]).await.map_err(|e| e.to_string())?;
            emit(json!({"event": "reconciled"}));
            Ok(())
        }
        ToolCommand::Capture { interface, for_ms } => {
            let ifindex = ifindex(&interface)?;
            tokio::task::spawn_blocking(move || capture(ifindex, Duration::from_millis(for_ms)))
                .await
                .map_err(|e| e.to_string())?
        }
        ToolCommand::Links { interface, for_ms } => {
            links(interface, Duration::from_millis(for_ms)).await
        }
    }
}

/// `hold`: holds the VIPs (under a hold lease of `lease`, or renewed every 10 ms without
/// one) until stdin closes, SIGTERM or `max`, then releases them; with `reshape`, holds
/// that other set from its delay on.
async fn hold(
    vips: &VipSet,
    lease: Option<Duration>,
    max: Duration,
    mut reshape: Option<(VipSet, Duration)>,
) -> Result<(), String> {
    let mut vips = vips.clone();
    let plane = NetlinkDataPlane::new(None).map_err(|e| e.to_string())?;
    // stdin closing is the test's "release now".
    let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin()
            .lock()
            .read_line(&mut line)
            .is_ok_and(|n| n > 0)
        {
            line.clear();
        }
        let _ = closed_tx.send(());
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    emit(json!({"event": "hold"}));
    let until = lease.map_or_else(far_future, |l| tokio::time::Instant::now() + l);
    plane.hold(&vips, until).await.map_err(|e| e.to_string())?;
    emit(json!({"event": "holding"}));
    let started = Instant::now();
    let deadline = started + max;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while Instant::now() < deadline {
        let due = |(_, after): &(VipSet, Duration)| started.elapsed() >= *after;
        if let Some((set, _)) = reshape.take_if(|r| due(r)) {
            vips = set;
            plane
                .hold(&vips, far_future())
                .await
                .map_err(|e| e.to_string())?;
            emit(json!({"event": "reshaped"}));
        }
        tokio::select! {
            _ = &mut closed => break,
            _ = term.recv() => break,
            _ = tick.tick(), if lease.is_none() => plane.hold(&vips, far_future()).await.map_err(|e| e.to_string())?,
        }
    }
    plane.release(&vips).await.map_err(|e| e.to_string())?;
    emit(json!({"event": "released"}));
    Ok(())
}

/// `links`: the interface's link state, one line at the start and one per change, for
/// `watch_for`.
async fn links(interface: String, watch_for: Duration) -> Result<(), String> {
    let watch = LinkWatch::start(vec![interface.clone()])
        .await
        .map_err(|e| e.to_string())?;
    let mut link = watch
        .link_up(&interface)
        .ok_or_else(|| format!("{interface} is not watched"))?;
    let deadline = tokio::time::Instant::now() + watch_for;
    loop {
        let up = *link.borrow_and_update();
        emit(json!({"event": "link", "interface": interface, "up": up}));
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Ok(()),
            changed = link.changed() => if changed.is_err() { return Ok(()) },
        }
    }
}

fn ifindex(interface: &str) -> Result<u32, String> {
    std::fs::read_to_string(format!("/sys/class/net/{interface}/ifindex"))
        .map_err(|e| format!("interface {interface}: {e}"))?
        .trim()
        .parse()
        .map_err(|e| format!("interface {interface}: ifindex: {e}"))
}

fn capture(ifindex: u32, duration: Duration) -> Result<(), String> {
    let socket = PacketSocket::open(ifindex, ETH_P_ALL).map_err(|e| e.to_string())?;
    emit(json!({"event": "capturing"}));
    let deadline = Instant::now() + duration;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Some(frame) = socket.receive(left).map_err(|e| e.to_string())? else {
            continue;
        };
        match packet::parse_frame(&frame) {
            Ok(Announcement::Arp(a)) => emit(json!({
                "event": "arp", "eth_dst": a.destination.to_string(), "eth_src": a.source.to_string(),
                "operation": a.operation, "sender_mac": a.sender_mac.to_string(),
                "sender_ip": a.sender_ip.to_string(), "target_mac": a.target_mac.to_string(),
                "target_ip": a.target_ip.to_string(),
            })),
            Ok(Announcement::Advertisement(n)) => emit(json!({
                "event": "na", "eth_dst": n.destination.to_string(), "eth_src": n.source.to_string(),
                "source_ip": n.source_ip.to_string(), "destination_ip": n.destination_ip.to_string(),
                "hop_limit": n.hop_limit, "router": n.router, "solicited": n.solicited,
                "override": n.override_flag, "target": n.target.to_string(),
                "target_mac": n.target_mac.map(|m| m.to_string()), "checksum_ok": n.checksum_ok,
            })),
            Err(_) => {}
        }
    }
    Ok(())
}

/// This tool holds without Raft, so no lease bounds it.
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(24 * 3600)
}
