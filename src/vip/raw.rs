//! Raw sockets for VIP announcements: an AF_PACKET socket bound to one interface (ARP
//! frames out, and any frame in for the tests' capture) and a raw ICMPv6 socket for
//! neighbour advertisements. This file holds the crate's only `unsafe` (filling a
//! `sockaddr_ll`, which socket2 has no constructor for). It must never build or parse a
//! packet (that is `packet.rs`) nor decide when to send (that is `announce.rs`).
#![allow(unsafe_code)]

use std::io::{self, Read};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// EtherType of ARP, and the pseudo-protocol "every frame" (for capture).
pub const ETH_P_ARP: u16 = libc::ETH_P_ARP as u16;
pub const ETH_P_ALL: u16 = libc::ETH_P_ALL as u16;

/// The link-layer address of interface `ifindex` for protocol `protocol` (host order).
fn link_address(ifindex: u32, protocol: u16) -> io::Result<SockAddr> {
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    // SAFETY: `try_init` hands us a zeroed `sockaddr_storage`, which is larger than and
    // aligned for a `sockaddr_ll`; we write only the fields of that `sockaddr_ll` and set
    // the length to its size, so the kernel reads nothing we did not initialise.
    let ((), address) = unsafe {
        SockAddr::try_init(|storage, len| {
            let ll = storage.cast::<libc::sockaddr_ll>();
            (*ll).sll_family = libc::AF_PACKET as libc::sa_family_t;
            (*ll).sll_protocol = protocol.to_be();
            (*ll).sll_ifindex = ifindex;
            *len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            Ok(())
        })
    }?;
    Ok(address)
}

/// An AF_PACKET socket bound to one interface and one EtherType: whole Ethernet frames
/// in and out.
pub struct PacketSocket {
    socket: Socket,
    /// Where `send` sends (a send-only socket); `None`: to the bound interface.
    to: Option<SockAddr>,
}

impl PacketSocket {
    /// Opens a socket on `ifindex` receiving `protocol` (`ETH_P_ALL` to capture). Needs
    /// CAP_NET_RAW.
    pub fn open(ifindex: u32, protocol: u16) -> io::Result<Self> {
        let socket = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(i32::from(protocol.to_be()))),
        )?;
        socket.bind(&link_address(ifindex, protocol)?)?;
        Ok(Self { socket, to: None })
    }

    /// Opens a send-only socket for `protocol` frames (gratuitous ARP) out of `ifindex`.
    /// The socket itself has protocol 0 and is never bound, so it registers no receive
    /// hook: binding one for a protocol re-registers the hook and waits for an RCU grace
    /// period (`synchronize_net`), 11 ms in the lab between a new holder adding the VIP and
    /// its first gratuitous ARP, on every hand-over; and nothing queues up unread. Each
    /// frame is sent to a `sockaddr_ll` naming the interface and the protocol, so the
    /// kernel marks it as ARP on every kind of interface. Needs CAP_NET_RAW.
    pub fn sender(ifindex: u32, protocol: u16) -> io::Result<Self> {
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
        Ok(Self {
            socket,
            to: Some(link_address(ifindex, protocol)?),
        })
    }

    /// Sends one complete Ethernet frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let sent = match &self.to {
            Some(to) => self.socket.send_to(frame, to)?,
            None => self.socket.send(frame)?,
        };
        if sent != frame.len() {
            return Err(io::Error::other(format!(
                "sent {sent} of {} bytes",
                frame.len()
            )));
        }
        Ok(())
    }

    /// Receives one frame, waiting at most `timeout`; `Ok(None)` when none came.
    pub fn receive(&self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        self.socket
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut buf = vec![0u8; 2048];
        match (&self.socket).read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// A raw ICMPv6 socket bound to one interface, sending to the all-nodes group with hop
/// limit 255 (receivers drop neighbour discovery with any other hop limit, RFC 4861 §7.1.2).
/// The kernel computes the ICMPv6 checksum of raw ICMPv6 sockets (RFC 3542 §3.1).
pub struct Icmpv6Socket {
    socket: Socket,
    ifindex: u32,
}

impl Icmpv6Socket {
    /// Opens the socket on `interface` (`ifindex`). Needs CAP_NET_RAW.
    pub fn open(interface: &str, ifindex: u32) -> io::Result<Self> {
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
        socket.set_multicast_hops_v6(255)?;
        socket.set_unicast_hops_v6(255)?;
        socket.set_multicast_if_v6(ifindex)?;
        socket.set_multicast_loop_v6(false)?;
        socket.bind_device(Some(interface.as_bytes()))?;
        Ok(Self { socket, ifindex })
    }

    /// Sends one ICMPv6 message (checksum left to the kernel) to `destination`.
    pub fn send_to(&self, message: &[u8], destination: Ipv6Addr) -> io::Result<()> {
        let address = SocketAddrV6::new(destination, 0, 0, self.ifindex);
        self.socket.send_to(message, &address.into())?;
        Ok(())
    }
}
