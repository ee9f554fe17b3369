//! The announcement codec (`vip::packet`): any Ethernet frame parsed (what the tests and
//! tools read off the wire), and the GARP / unsolicited NA this node sends built for any
//! MAC and address and parsed back to exactly what was put in (the NA in the IPv6 and
//! Ethernet headers the kernel adds). Never a panic.
#![no_main]

use std::net::{Ipv4Addr, Ipv6Addr};

use havip::vip::packet::{self, Announcement};
use havip_fuzz::{Cursor, na_frame};
use libfuzzer_sys::fuzz_target;

fn mac(input: &mut Cursor<'_>) -> [u8; 6] {
    [
        input.u8(),
        input.u8(),
        input.u8(),
        input.u8(),
        input.u8(),
        input.u8(),
    ]
}

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    match input.u8() % 3 {
        0 => {
            let _ = packet::parse_frame(input.rest());
        }
        1 => {
            let mac = mac(&mut input);
            let vip = Ipv4Addr::new(input.u8(), input.u8(), input.u8(), input.u8());
            match packet::parse_frame(&packet::gratuitous_arp(mac, vip)) {
                Ok(Announcement::Arp(arp)) => {
                    assert_eq!(arp.sender_ip, vip);
                    assert_eq!(arp.target_ip, vip);
                    assert_eq!(arp.sender_mac.octets(), mac);
                }
                other => panic!("our GARP parses as {other:?}"),
            }
        }
        _ => {
            let mac = mac(&mut input);
            let mut octets = [0u8; 16];
            for o in &mut octets {
                *o = input.u8();
            }
            let vip = Ipv6Addr::from(octets);
            let source = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
            let frame = na_frame(&packet::neighbour_advertisement(mac, vip), mac, source);
            match packet::parse_frame(&frame) {
                Ok(Announcement::Advertisement(na)) => {
                    assert_eq!(na.target, vip);
                    assert_eq!(na.target_mac.map(|m| m.octets()), Some(mac));
                    assert!(na.checksum_ok);
                }
                other => panic!("our NA parses as {other:?}"),
            }
        }
    }
});
