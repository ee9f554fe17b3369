//! The Raft RPC codec (`consensus::rpc`): an envelope as a follower decodes it from its
//! leader (selector even) and a reply as the leader decodes it (odd), both from a peer.
//! Never a panic; what decodes encodes again and decodes to the same encoding (the
//! openraft types' serde is round-trip stable, or a peer would read what was not sent);
//! a decoded envelope goes through the sender check (`consensus::sender`) too.
#![no_main]

use havip::consensus::rpc::{self, RaftEnvelope, RaftReply};
use havip_fuzz::Cursor;
use libfuzzer_sys::fuzz_target;

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(bytes: &[u8]) {
    let Ok(value) = rpc::decode::<T>(bytes) else {
        return;
    };
    let Ok(once) = rpc::encode(&value) else {
        panic!("a decoded message does not encode");
    };
    let again: T = match rpc::decode(&once) {
        Ok(v) => v,
        Err(e) => panic!("re-encoded message does not decode: {e}"),
    };
    let twice = rpc::encode(&again).ok();
    assert_eq!(twice.as_deref(), Some(&once[..]), "encoding is not stable");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    if input.u8() % 2 == 0 {
        let bytes = input.rest();
        if let Ok(envelope) = rpc::decode::<RaftEnvelope>(bytes) {
            let _ = havip::consensus::sender::check("gw-a", &envelope.request);
        }
        round_trip::<RaftEnvelope>(bytes);
    } else {
        round_trip::<RaftReply>(input.rest());
    }
});
