//! The wire codec of VIP announcements: gratuitous ARP frames (IPv4) and unsolicited
//! neighbour advertisements (IPv6), built and parsed with `pnet_packet`'s typed packets so
//! that the tests decode what was sent with the same parsers. Pure: bytes in, typed values
//! out. It must never open a socket, read a clock or log.

use std::net::{Ipv4Addr, Ipv6Addr};

use pnet_base::MacAddr;
use pnet_packet::Packet;
use pnet_packet::arp::{
    ArpHardwareTypes, ArpOperation, ArpOperations, ArpPacket, MutableArpPacket,
};
use pnet_packet::ethernet::{EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::icmpv6::ndp::{
    MutableNeighborAdvertPacket, NdpOption, NdpOptionTypes, NeighborAdvertFlags,
    NeighborAdvertPacket,
};
use pnet_packet::icmpv6::{Icmpv6Packet, Icmpv6Types};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv6::Ipv6Packet;

/// The all-nodes link-local multicast group, where unsolicited advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// An Ethernet header, and an ARP body for IPv4 over Ethernet.
const ETHERNET_LEN: usize = 14;
const ARP_LEN: usize = 28;
/// Neighbour advertisement: 24 bytes of header and target, 8 of target link-layer option.
const NA_LEN: usize = 32;
/// The NA before its options: type, code, checksum, flags and reserved, target.
const NA_HEADER_LEN: usize = 24;

/// Why a frame is not an announcement this codec understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame too short: {0} bytes")]
    Truncated(usize),
    #[error("not an ARP or IPv6 frame (ethertype {0:#06x})")]
    EtherType(u16),
    #[error("not IPv4-over-Ethernet ARP")]
    ArpKind,
    #[error("not a neighbour advertisement (next header {next_header}, ICMPv6 type {icmp_type})")]
    NotAdvertisement { next_header: u8, icmp_type: u8 },
}

/// A gratuitous ARP as seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arp {
    pub destination: MacAddr,
    pub source: MacAddr,
    pub operation: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

/// A neighbour advertisement as seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    pub destination: MacAddr,
    pub source: MacAddr,
    pub source_ip: Ipv6Addr,
    pub destination_ip: Ipv6Addr,
    pub hop_limit: u8,
    pub router: bool,
    pub solicited: bool,
    pub override_flag: bool,
    pub target: Ipv6Addr,
    /// The target link-layer address option, if present.
    pub target_mac: Option<MacAddr>,
    /// Whether the ICMPv6 checksum matches the pseudo-header.
    pub checksum_ok: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    Arp(Arp),
    Advertisement(Advertisement),
}

/// A gratuitous ARP frame for `vip`, from `mac`: Ethernet broadcast, sender = target = VIP.
///
/// The opcode is a *request*, as Linux's `arping -U`, keepalived and most routers send it:
/// RFC 5227 §3 prefers requests because every host processes an ARP request (some old
/// stacks ignore unsolicited replies), and Linux updates an existing neighbour entry from
/// either (and, with `arp_accept=1`, creates one). The target hardware address is zero, as
/// in a request.
pub fn gratuitous_arp(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    let mac = MacAddr::from(mac);
    let mut frame = vec![0u8; ETHERNET_LEN + ARP_LEN];
    if let Some(mut ethernet) = MutableEthernetPacket::new(&mut frame) {
        ethernet.set_destination(MacAddr::broadcast());
        ethernet.set_source(mac);
        ethernet.set_ethertype(EtherTypes::Arp);
    }
    if let Some(mut arp) = MutableArpPacket::new(&mut frame[ETHERNET_LEN..]) {
        arp.set_hardware_type(ArpHardwareTypes::Ethernet);
        arp.set_protocol_type(EtherTypes::Ipv4);
        arp.set_hw_addr_len(6);
        arp.set_proto_addr_len(4);
        arp.set_operation(ArpOperations::Request);
        arp.set_sender_hw_addr(mac);
        arp.set_sender_proto_addr(vip);
        arp.set_target_hw_addr(MacAddr::zero());
        arp.set_target_proto_addr(vip);
    }
    frame
}

/// The ICMPv6 body of an unsolicited neighbour advertisement for `vip` from `mac`:
/// override set (so caches pointing at the previous holder switch), solicited clear (it
/// answers nobody), router clear, and the target link-layer address option. The checksum
/// is left zero: the raw ICMPv6 socket has the kernel fill it (it knows the source address
/// it picks), see `raw.rs`.
pub fn neighbour_advertisement(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    let mut body = vec![0u8; NA_LEN];
    if let Some(mut na) = MutableNeighborAdvertPacket::new(&mut body) {
        na.set_icmpv6_type(Icmpv6Types::NeighborAdvert);
        na.set_icmpv6_code(pnet_packet::icmpv6::ndp::Icmpv6Codes::NoCode);
        na.set_checksum(0);
        na.set_flags(NeighborAdvertFlags::Override);
        na.set_reserved(0);
        na.set_target_addr(vip);
        na.set_options(&[NdpOption {
            option_type: NdpOptionTypes::TargetLLAddr,
            // In units of 8 bytes, type and length included.
            length: 1,
            data: mac.to_vec(),
        }]);
    }
    body
}

/// The target link-layer address option among an NA's options (RFC 4861 §4.6.1), read by
/// hand: pnet's option iterator computes `length * 8` in a u8, which overflows for a
/// length of 32 or more (the fuzz target `vip_packet` found it: a panic with overflow
/// checks, a wrong option length without). An option of length 0 or running past the end
/// ends the search, as RFC 4861 says such a packet is to be discarded.
fn target_link_layer(mut options: &[u8]) -> Option<MacAddr> {
    while let [kind, units, ..] = *options {
        let size = usize::from(units) * 8;
        if size == 0 || size > options.len() {
            return None;
        }
        if kind == NdpOptionTypes::TargetLLAddr.0 {
            let mac: [u8; 6] = options.get(2..8)?.try_into().ok()?;
            return Some(MacAddr::from(mac));
        }
        options = &options[size..];
    }
    None
}

/// Decodes an Ethernet frame that should be one of our announcements.
pub fn parse_frame(frame: &[u8]) -> Result<Announcement, DecodeError> {
    let ethernet = EthernetPacket::new(frame).ok_or(DecodeError::Truncated(frame.len()))?;
    match ethernet.get_ethertype() {
        EtherTypes::Arp => parse_arp(&ethernet).map(Announcement::Arp),
        EtherTypes::Ipv6 => parse_advertisement(&ethernet).map(Announcement::Advertisement),
        other => Err(DecodeError::EtherType(other.0)),
    }
}

fn parse_arp(ethernet: &EthernetPacket) -> Result<Arp, DecodeError> {
    let payload = ethernet.payload();
    let arp = ArpPacket::new(payload).ok_or(DecodeError::Truncated(payload.len()))?;
    if arp.get_hardware_type() != ArpHardwareTypes::Ethernet
        || arp.get_protocol_type() != EtherTypes::Ipv4
        || arp.get_hw_addr_len() != 6
        || arp.get_proto_addr_len() != 4
    {
        return Err(DecodeError::ArpKind);
    }
    let ArpOperation(operation) = arp.get_operation();
    Ok(Arp {
        destination: ethernet.get_destination(),
        source: ethernet.get_source(),
        operation,
        sender_mac: arp.get_sender_hw_addr(),
        sender_ip: arp.get_sender_proto_addr(),
        target_mac: arp.get_target_hw_addr(),
        target_ip: arp.get_target_proto_addr(),
    })
}

fn parse_advertisement(ethernet: &EthernetPacket) -> Result<Advertisement, DecodeError> {
    let payload = ethernet.payload();
    let ip = Ipv6Packet::new(payload).ok_or(DecodeError::Truncated(payload.len()))?;
    // Only as much ICMPv6 as the IPv6 header says (Ethernet pads short frames).
    let body = ip.payload();
    let body = &body[..body.len().min(usize::from(ip.get_payload_length()))];
    let icmp = Icmpv6Packet::new(body).ok_or(DecodeError::Truncated(body.len()))?;
    if ip.get_next_header() != IpNextHeaderProtocols::Icmpv6
        || icmp.get_icmpv6_type() != Icmpv6Types::NeighborAdvert
    {
        return Err(DecodeError::NotAdvertisement {
            next_header: ip.get_next_header().0,
            icmp_type: icmp.get_icmpv6_type().0,
        });
    }
    let na = NeighborAdvertPacket::new(body).ok_or(DecodeError::Truncated(body.len()))?;
    let target_mac = body.get(NA_HEADER_LEN..).and_then(target_link_layer);
    let checksum = pnet_packet::icmpv6::checksum(&icmp, &ip.get_source(), &ip.get_destination());
    let flags = na.get_flags();
    Ok(Advertisement {
        destination: ethernet.get_destination(),
        source: ethernet.get_source(),
        source_ip: ip.get_source(),
        destination_ip: ip.get_destination(),
        hop_limit: ip.get_hop_limit(),
        router: flags & NeighborAdvertFlags::Router != 0,
        solicited: flags & NeighborAdvertFlags::Solicited != 0,
        override_flag: flags & NeighborAdvertFlags::Override != 0,
        target: na.get_target_addr(),
        target_mac,
        checksum_ok: checksum == icmp.get_checksum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pnet_packet::ipv6::MutableIpv6Packet;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];

    /// Wraps an ICMPv6 body the way the kernel does for the raw socket: IPv6 header with
    /// hop limit 255 to ff02::1, checksum filled, in a multicast Ethernet frame.
    fn na_frame(body: &[u8], source_ip: Ipv6Addr) -> Vec<u8> {
        let mut frame = vec![0u8; ETHERNET_LEN + 40 + body.len()];
        let mut ethernet = MutableEthernetPacket::new(&mut frame).expect("frame size");
        ethernet.set_destination(MacAddr::new(0x33, 0x33, 0, 0, 0, 1));
        ethernet.set_source(MacAddr::from(MAC));
        ethernet.set_ethertype(EtherTypes::Ipv6);
        let mut ip = MutableIpv6Packet::new(&mut frame[ETHERNET_LEN..]).expect("frame size");
        ip.set_version(6);
        ip.set_payload_length(body.len() as u16);
        ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
        ip.set_hop_limit(255);
        ip.set_source(source_ip);
        ip.set_destination(ALL_NODES);
        let mut with_sum = body.to_vec();
        let sum = {
            let icmp = Icmpv6Packet::new(&with_sum).expect("body size");
            pnet_packet::icmpv6::checksum(&icmp, &source_ip, &ALL_NODES)
        };
        with_sum[2..4].copy_from_slice(&sum.to_be_bytes());
        ip.set_payload(&with_sum);
        frame
    }

    #[test]
    fn gratuitous_arp_round_trips() {
        let vip = Ipv4Addr::new(198, 18, 0, 50);
        let frame = gratuitous_arp(MAC, vip);
        assert_eq!(frame.len(), 42);
        let Ok(Announcement::Arp(arp)) = parse_frame(&frame) else {
            panic!("not parsed as ARP: {:?}", parse_frame(&frame));
        };
        assert_eq!(arp.destination, MacAddr::broadcast());
        assert_eq!(arp.source, MacAddr::from(MAC));
        assert_eq!(arp.operation, ArpOperations::Request.0);
        assert_eq!(arp.sender_mac, MacAddr::from(MAC));
        assert_eq!((arp.sender_ip, arp.target_ip), (vip, vip));
        assert_eq!(arp.target_mac, MacAddr::zero());
    }

    #[test]
    fn arp_with_ethernet_padding_still_parses() {
        let mut frame = gratuitous_arp(MAC, Ipv4Addr::new(198, 18, 0, 51));
        frame.resize(60, 0);
        assert!(matches!(parse_frame(&frame), Ok(Announcement::Arp(_))));
    }

    #[test]
    fn neighbour_advertisement_round_trips() {
        let vip: Ipv6Addr = "2001:db8::50".parse().expect("literal");
        let body = neighbour_advertisement(MAC, vip);
        assert_eq!(body.len(), NA_LEN);
        let source: Ipv6Addr = "fe80::1".parse().expect("literal");
        let mut frame = na_frame(&body, source);
        frame.resize(frame.len() + 6, 0); // Ethernet padding is ignored
        let Ok(Announcement::Advertisement(na)) = parse_frame(&frame) else {
            panic!("not parsed as NA: {:?}", parse_frame(&frame));
        };
        assert!(na.override_flag && !na.solicited && !na.router);
        assert_eq!(na.target, vip);
        assert_eq!(na.target_mac, Some(MacAddr::from(MAC)));
        assert_eq!(na.hop_limit, 255);
        assert_eq!(na.destination_ip, ALL_NODES);
        assert_eq!(na.source_ip, source);
        assert!(na.checksum_ok);
    }

    /// Found by the fuzz target `vip_packet`: an option length of 32 or more overflowed
    /// pnet's option iterator (`length * 8` in a u8). Now it is an NA without a target
    /// MAC; a length of 0 too (RFC 4861: discard), and a later option is still found.
    #[test]
    fn a_long_or_empty_option_is_no_panic() {
        let vip: Ipv6Addr = "2001:db8::50".parse().expect("literal");
        let source: Ipv6Addr = "fe80::1".parse().expect("literal");
        for units in [0u8, 32, 255] {
            let mut body = neighbour_advertisement(MAC, vip);
            body[NA_HEADER_LEN + 1] = units;
            let Ok(Announcement::Advertisement(na)) = parse_frame(&na_frame(&body, source)) else {
                panic!("length {units}: not parsed as NA");
            };
            assert_eq!(na.target_mac, None, "length {units}");
        }
        // A source link-layer option (type 1) first, then the target's.
        let mut body = neighbour_advertisement(MAC, vip);
        let option = body[NA_HEADER_LEN..].to_vec();
        body.extend_from_slice(&option);
        body[NA_HEADER_LEN] = 1;
        body[NA_HEADER_LEN + 2] = 0xee;
        let Ok(Announcement::Advertisement(na)) = parse_frame(&na_frame(&body, source)) else {
            panic!("two options: not parsed as NA");
        };
        assert_eq!(na.target_mac, Some(MacAddr::from(MAC)));
    }

    #[test]
    fn a_bad_checksum_is_reported() {
        let vip: Ipv6Addr = "2001:db8::50".parse().expect("literal");
        let mut frame = na_frame(
            &neighbour_advertisement(MAC, vip),
            "fe80::1".parse().expect("literal"),
        );
        let last = frame.len() - 1;
        frame[last] ^= 0xff;
        let Ok(Announcement::Advertisement(na)) = parse_frame(&frame) else {
            panic!("not parsed");
        };
        assert!(!na.checksum_ok);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(parse_frame(&[0; 3]), Err(DecodeError::Truncated(3)));
        let mut frame = gratuitous_arp(MAC, Ipv4Addr::new(198, 18, 0, 50));
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(parse_frame(&frame), Err(DecodeError::EtherType(0x0800)));
        let mut frame = gratuitous_arp(MAC, Ipv4Addr::new(198, 18, 0, 50));
        frame.truncate(20);
        assert!(matches!(
            parse_frame(&frame),
            Err(DecodeError::Truncated(_))
        ));
        let vip: Ipv6Addr = "2001:db8::50".parse().expect("literal");
        let mut body = neighbour_advertisement(MAC, vip);
        body[0] = 135; // a solicitation
        let frame = na_frame(&body, "fe80::1".parse().expect("literal"));
        assert!(matches!(
            parse_frame(&frame),
            Err(DecodeError::NotAdvertisement {
                next_header: 58,
                icmp_type: 135
            })
        ));
    }
}
