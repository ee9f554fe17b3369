//! The kernel's answers on the address-removal socket (`vip::netlink_acknowledgements`):
//! a datagram of netlink messages cut by their length fields and decoded with
//! netlink-packet-route. The kernel is trusted, but a parser bug here is a daemon that
//! panics while releasing its VIPs. Never a panic, never a loop that does not advance.
#![no_main]

use havip::vip::netlink_acknowledgements;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let acks = netlink_acknowledgements(data);
    // Each acknowledgement is a message of at least a header (16 bytes).
    assert!(acks.len() <= data.len() / 16);
});
