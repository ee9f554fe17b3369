//! Removing a group's VIPs at once: RTM_DELADDR requests on a blocking netlink socket
//! that the data plane opened at start, sent in one datagram and acknowledged before
//! `remove` returns. The removal is the one step of a release that has a deadline (the
//! end of the hold lease), so it must not wait its turn on the daemon's runtime: through
//! rtnetlink's connection task each address cost two or three passes of the runtime, and
//! on a loaded lab a release took 10-18 ms (measured, issue 18). Here it costs the two
//! system calls, in which the kernel does the work either way. It must never remove an
//! address it was not given, and never wait longer than `ACK_WAIT` for the kernel.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use ipnet::IpNet;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use rtnetlink::AddressMessageBuilder;

use crate::platform::lock::lock;

/// The longest `remove` waits for the kernel's acknowledgements: far beyond an RTNL
/// lock held by another process, far below a hold lease.
const ACK_WAIT: Duration = Duration::from_millis(100);

/// The kernel's answer for an address that is not there: already removed, which is what
/// a release wants.
const EADDRNOTAVAIL: i32 = libc::EADDRNOTAVAIL;

pub struct Remover {
    socket: Mutex<Socket>,
}

/// An address the kernel refused to remove, and why.
#[derive(Debug)]
pub struct RemoveError {
    pub address: IpNet,
    pub why: String,
}

impl Remover {
    /// Opens the socket now, so that a release never needs a new descriptor.
    pub fn open() -> std::io::Result<Remover> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket2::SockRef::from(&socket).set_read_timeout(Some(ACK_WAIT))?;
        Ok(Remover {
            socket: Mutex::new(socket),
        })
    }

    /// Removes `addresses` from interface `ifindex`; an address that is not there counts
    /// as removed. Returns once the kernel has answered every request.
    pub fn remove(&self, ifindex: u32, addresses: &[IpNet]) -> Result<(), RemoveError> {
        let Some(&first) = addresses.first() else {
            return Ok(());
        };
        let socket = lock(&self.socket);
        let requests = delete_requests(ifindex, addresses);
        let mut datagram = Vec::new();
        for (_, message) in &requests {
            let mut bytes = vec![0; message.buffer_len()];
            message.serialize(&mut bytes);
            datagram.extend_from_slice(&bytes);
        }
        let fail = |address: IpNet, why: String| RemoveError { address, why };
        socket
            .send(&datagram, 0)
            .map_err(|e| fail(first, format!("netlink send: {e}")))?;
        let mut pending: Vec<(u32, IpNet)> = requests
            .iter()
            .map(|(address, m)| (m.header.sequence_number, *address))
            .collect();
        // Bounded: one acknowledgement per request, each read bounded by ACK_WAIT.
        for _ in 0..addresses.len() * 4 {
            if pending.is_empty() {
                break;
            }
            let (bytes, _) = socket
                .recv_from_full()
                .map_err(|e| fail(pending[0].1, format!("no answer from the kernel: {e}")))?;
            for (seq, code) in acknowledgements(&bytes) {
                let Some(at) = pending.iter().position(|(s, _)| *s == seq) else {
                    continue;
                };
                let (_, address) = pending.remove(at);
                if let Some(errno) = code
                    && errno != EADDRNOTAVAIL
                {
                    return Err(fail(
                        address,
                        std::io::Error::from_raw_os_error(errno).to_string(),
                    ));
                }
            }
        }
        match pending.first() {
            None => Ok(()),
            Some((_, address)) => Err(fail(*address, "no acknowledgement".into())),
        }
    }
}

/// One RTM_DELADDR request per address, numbered from 1, each asking for an ACK.
fn delete_requests(
    ifindex: u32,
    addresses: &[IpNet],
) -> Vec<(IpNet, NetlinkMessage<RouteNetlinkMessage>)> {
    addresses
        .iter()
        .zip(1u32..)
        .map(|(vip, seq)| {
            let message = match vip.addr() {
                IpAddr::V4(a) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
                    .index(ifindex)
                    .address(a, vip.prefix_len())
                    .build(),
                IpAddr::V6(a) => AddressMessageBuilder::<std::net::Ipv6Addr>::new()
                    .index(ifindex)
                    .address(a, vip.prefix_len())
                    .build(),
            };
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_ACK;
            header.sequence_number = seq;
            let mut request = NetlinkMessage::new(
                header,
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(message)),
            );
            request.finalize();
            (*vip, request)
        })
        .collect()
}

/// (sequence number, positive errno or None for success) of every acknowledgement in a
/// datagram from the kernel; anything else in it is skipped. Public (as
/// `vip::netlink_acknowledgements`) for the fuzz target `netlink_ack` (fuzz/).
pub fn acknowledgements(mut bytes: &[u8]) -> Vec<(u32, Option<i32>)> {
    let mut out = Vec::new();
    // Bounded by the datagram: each message is at least a header long.
    while bytes.len() >= 16 {
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len < 16 || len > bytes.len() {
            break;
        }
        if let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len])
            && let NetlinkPayload::Error(e) = message.payload
        {
            // Saturating: -i32::MIN does not exist (the fuzz target `netlink_ack` sent one
            // and the negation panicked); no errno is that large, so it stays a failure.
            out.push((
                message.header.sequence_number,
                e.code.map(|c| c.get().saturating_neg()),
            ));
        }
        // Netlink messages are aligned to 4 bytes.
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_numbered_and_ask_for_an_acknowledgement() {
        let addresses: Vec<IpNet> = ["198.18.0.50/24", "2001:db8::50/64"]
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        let requests = delete_requests(7, &addresses);
        assert_eq!(requests.len(), 2);
        for (i, (address, m)) in requests.iter().enumerate() {
            assert_eq!(*address, addresses[i]);
            assert_eq!(m.header.sequence_number as usize, i + 1);
            assert_eq!(m.header.flags, NLM_F_REQUEST | NLM_F_ACK);
        }
    }

    #[test]
    fn acknowledgements_are_read_from_a_datagram_of_several() {
        let mut datagram = Vec::new();
        for (seq, code) in [(1u32, 0i32), (2, -EADDRNOTAVAIL), (3, -libc::EPERM)] {
            let mut header = NetlinkHeader::default();
            header.sequence_number = seq;
            let mut error = netlink_packet_core::ErrorMessage::default();
            error.code = std::num::NonZeroI32::new(code);
            let mut m: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::new(header, NetlinkPayload::Error(error));
            m.finalize();
            let mut bytes = vec![0; m.buffer_len()];
            m.serialize(&mut bytes);
            datagram.extend_from_slice(&bytes);
        }
        assert_eq!(
            acknowledgements(&datagram),
            vec![(1, None), (2, Some(EADDRNOTAVAIL)), (3, Some(libc::EPERM))]
        );
        assert!(acknowledgements(&datagram[..10]).is_empty());
    }

    /// Found by the fuzz target `netlink_ack`: an error code of i32::MIN (no kernel sends
    /// it, but the parser must not panic on it) is a failure, not an overflow.
    #[test]
    fn the_most_negative_error_code_is_a_failure_not_a_panic() {
        let mut header = NetlinkHeader::default();
        header.sequence_number = 4;
        let mut error = netlink_packet_core::ErrorMessage::default();
        error.code = std::num::NonZeroI32::new(i32::MIN);
        let mut m: NetlinkMessage<RouteNetlinkMessage> =
            NetlinkMessage::new(header, NetlinkPayload::Error(error));
        m.finalize();
        let mut bytes = vec![0; m.buffer_len()];
        m.serialize(&mut bytes);
        assert_eq!(acknowledgements(&bytes), vec![(4, Some(i32::MAX))]);
    }
}
