//! Socket options of every peer connection, and why each is there.
//!
//! The peer mesh carries the hold lease's acknowledgements over TCP, so a lost segment
//! stalls every message behind it until TCP retransmits it. Linux retransmits no sooner
//! than its minimum RTO, 200 ms, and doubles the wait for each further loss. The hold lease
//! (320 ms by default) covers the age of the last acknowledged heartbeat: with one
//! follower left (the other node down), a single lost heartbeat or answer took the ack
//! age to about heartbeat + 200 ms + RTT, past the lease, and the master dropped its VIPs
//! for 150-500 ms (the lab's 5 % loss fault: a lapse every one to two seconds after the
//! SIGKILL of gw-a, measured 2026-12-03). Two options keep a loss inside the lease:
//! - `TCP_RTO_MIN_US` (Linux 6.15 and later) lowers the minimum RTO of these sockets to
//!   `RTO_MIN`, so a lost segment costs about that plus the round trip;
//! - `TCP_THIN_LINEAR_TIMEOUTS` retransmits a thin stream (a few small messages in flight,
//!   as Raft's are) without exponential backoff for its first retries, so a second loss
//!   of the same segment costs another `RTO_MIN`, not twice the first wait.
//!
//! On an older kernel the first option is refused; `tune` says so once (the per-route
//! `rto_min` of `ip route` does the same there, README "Lossy networks").

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;

/// The peer sockets' minimum retransmission timeout: a lost heartbeat costs about this
/// plus a round trip, inside the default hold lease twice over even after a second loss.
/// Spurious retransmits it may cause cost a few small segments on a link that carries a
/// few hundred a second.
pub const RTO_MIN: Duration = Duration::from_millis(50);

/// Kernel keepalive: first probe after this much silence, then one per interval.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(1);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Data (or a keepalive probe) unacknowledged this long kills the connection.
const USER_TIMEOUT: Duration = Duration::from_secs(2);

/// `TCP_RTO_MIN_US` from linux/tcp.h (6.15): not in the libc crate yet.
const TCP_RTO_MIN_US: i32 = 45;

// The macros call each other unqualified, so they must be in scope by name.
use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};
sockopt_impl!(
    /// The minimum RTO of one socket, in microseconds.
    RtoMinUs,
    Both,
    libc::IPPROTO_TCP,
    TCP_RTO_MIN_US,
    u32
);

/// Whether this kernel refused `TCP_RTO_MIN_US` before (it is said once per process).
static RTO_MIN_REFUSED: AtomicBool = AtomicBool::new(false);

/// Socket options every peer connection gets: no Nagle delay for small Raft messages,
/// the kernel's dead-path detection described in `mesh`, and the loss recovery above.
pub fn tune(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let sock = socket2::SockRef::from(stream);
    sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(2),
    )?;
    sock.set_tcp_user_timeout(Some(USER_TIMEOUT))?;
    sock.set_tcp_thin_linear_timeouts(true)?;
    if let Err(e) = set_rto_min(stream, RTO_MIN)
        && !RTO_MIN_REFUSED.swap(true, Ordering::Relaxed)
    {
        tracing::info!(
            "this kernel does not take TCP_RTO_MIN_US ({e}; Linux 6.15 and later do): a lost \
             peer packet costs at least 200 ms, which can lapse the hold lease on a lossy \
             link (README, \"Lossy networks\")"
        );
    }
    Ok(())
}

fn set_rto_min(stream: &TcpStream, rto: Duration) -> io::Result<()> {
    let micros = u32::try_from(rto.as_micros()).unwrap_or(u32::MAX);
    nix::sys::socket::setsockopt(stream, RtoMinUs, &micros).map_err(io::Error::from)
}

/// The socket's minimum RTO as the kernel holds it (rounded to its clock tick).
pub fn rto_min(stream: &TcpStream) -> io::Result<Duration> {
    nix::sys::socket::getsockopt(stream, RtoMinUs)
        .map(|us| Duration::from_micros(u64::from(us)))
        .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real loopback connection, tuned as a peer connection is.
    #[tokio::test]
    async fn a_tuned_socket_retransmits_after_rto_min_where_the_kernel_allows_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (client, (server, _)) = (client.unwrap(), accepted.unwrap());
        for stream in [&client, &server] {
            let before = rto_min(stream);
            tune(stream).unwrap();
            let sock = socket2::SockRef::from(stream);
            assert!(sock.tcp_nodelay().unwrap());
            assert!(sock.tcp_thin_linear_timeouts().unwrap());
            match before {
                // The kernel keeps it in clock ticks: 50 ms may read back as 52 ms.
                Ok(_) => {
                    let after = rto_min(stream).unwrap();
                    assert!(
                        after >= RTO_MIN && after < RTO_MIN + Duration::from_millis(10),
                        "{after:?}"
                    );
                }
                // A kernel before 6.15: tune() must still succeed.
                Err(e) => eprintln!("no TCP_RTO_MIN_US here: {e}"),
            }
        }
    }
}
