//! What the fuzz targets share: a one-thread runtime for the async parsers, a Noise
//! session made once with a fixed key (the stream target feeds the reader what an
//! authenticated peer could send), a cursor over the fuzzer's bytes, and the seed corpus,
//! built from real encodings (`seeds::write_all`, run by the test below).
//! Nothing here touches the network: every stream is a buffer or an in-memory pipe.

use std::sync::OnceLock;

use havip::key::{ClusterKey, ClusterKeys};
use havip::peer::noise::{self, HandshakeSide, Session};

pub mod seeds;

/// The frame an unsolicited NA leaves the host as: `packet::neighbour_advertisement` is only
/// the ICMPv6 body (the raw socket has the kernel add the rest), so this wraps it the way
/// the kernel does: IPv6 to ff02::1 with hop limit 255 and the checksum filled, in a
/// multicast Ethernet frame (as `vip::packet`'s own tests do).
pub fn na_frame(body: &[u8], mac: [u8; 6], source: std::net::Ipv6Addr) -> Vec<u8> {
    use pnet_packet::ethernet::{EtherTypes, MutableEthernetPacket};
    use pnet_packet::icmpv6::Icmpv6Packet;
    use pnet_packet::ip::IpNextHeaderProtocols;
    use pnet_packet::ipv6::MutableIpv6Packet;
    let all_nodes = havip::vip::packet::ALL_NODES;
    let mut body = body.to_vec();
    if let Some(icmp) = Icmpv6Packet::new(&body) {
        let sum = pnet_packet::icmpv6::checksum(&icmp, &source, &all_nodes);
        body[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let mut frame = vec![0u8; 14 + 40 + body.len()];
    if let Some(mut ethernet) = MutableEthernetPacket::new(&mut frame) {
        ethernet.set_destination([0x33, 0x33, 0, 0, 0, 1].into());
        ethernet.set_source(mac.into());
        ethernet.set_ethertype(EtherTypes::Ipv6);
    }
    if let Some(mut ip) = MutableIpv6Packet::new(&mut frame[14..]) {
        ip.set_version(6);
        ip.set_payload_length(body.len() as u16);
        ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
        ip.set_hop_limit(255);
        ip.set_source(source);
        ip.set_destination(all_nodes);
        ip.set_payload(&body);
    }
    frame
}

/// One current-thread runtime for every iteration: building one per input would cost
/// more than the parsing under test.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => panic!("fuzz harness: no tokio runtime: {e}"),
        }
    })
}

/// The fixed keys of the harness: a current key and a previous one, as during a rollover,
/// so that the responder tries both on a first message.
pub fn keys() -> ClusterKeys {
    let key = |byte: u8| {
        let text = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [byte; 32]);
        match ClusterKey::from_text(&text) {
            Ok(k) => k,
            Err(e) => panic!("fuzz harness: fixed key: {e}"),
        }
    };
    ClusterKeys {
        current: key(0x11),
        previous: Some(key(0x22)),
    }
}

/// The two ends of one handshake made with `keys().current`: (initiator's, responder's).
/// Stateless transport: each reader starts at nonce 0, so one pair serves every input.
pub fn sessions() -> &'static (Session, Session) {
    static PAIR: OnceLock<(Session, Session)> = OnceLock::new();
    PAIR.get_or_init(|| {
        runtime().block_on(async {
            let keys = keys();
            let (mut a, mut b) = tokio::io::duplex(1 << 17);
            let (ra, rb) = tokio::join!(
                noise::handshake_with(
                    &mut a,
                    &keys,
                    HandshakeSide::Initiator,
                    noise::HANDSHAKE_TIMEOUT
                ),
                noise::handshake_with(
                    &mut b,
                    &keys,
                    HandshakeSide::Responder,
                    noise::HANDSHAKE_TIMEOUT
                ),
            );
            match (ra, rb) {
                (Ok((sa, _)), Ok((sb, _))) => (sa, sb),
                (a, b) => panic!(
                    "fuzz harness: handshake failed: {:?} {:?}",
                    a.err(),
                    b.err()
                ),
            }
        })
    })
}

/// Seals `chunks` as the Noise transport messages a peer's writer would send
/// (`[u16 length][ciphertext]` each), nonces from 0. An empty chunk is a message too (a
/// peer may send one; `NoiseWriter` never does).
pub fn seal(session: &Session, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sealed = vec![0u8; noise::MAX_MESSAGE];
    for (nonce, chunk) in chunks.iter().enumerate() {
        let n = match session.write_message(nonce as u64, chunk, &mut sealed) {
            Ok(n) => n,
            Err(e) => panic!("fuzz harness: seal: {e}"),
        };
        out.extend_from_slice(&(n as u16).to_be_bytes());
        out.extend_from_slice(&sealed[..n]);
    }
    out
}

/// Reads structure out of the fuzzer's bytes; past the end it yields zeros and empty
/// slices, so every input is a valid program for the target.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data }
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

#[cfg(test)]
mod tests {
    /// `HAVIP_FUZZ_WRITE_SEEDS=1 cargo test --release` in fuzz/ (re)writes fuzz/seeds/;
    /// without it the seeds are only built, which checks they still encode.
    #[test]
    fn seeds_build() {
        let all = super::seeds::all();
        assert!(all.len() > 20);
        if std::env::var_os("HAVIP_FUZZ_WRITE_SEEDS").is_some() {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
            super::seeds::write_all(&dir).expect("write seeds");
        }
    }
}
