//! The mesh's request handler (`control::peer::PeerHandler::handle`) fed a decoded frame
//! from an authenticated peer: `[u16 channel][payload]`. Raft traffic (channel 1) is
//! decoded into its envelope and refused for a group that is not running; control traffic
//! (channel 2) is decoded and answered as a node still starting answers it. The same bytes
//! are also read as a `PeerReply`, what the asking side decodes. Never a panic.
#![no_main]

use havip::control::peer::PeerHandler;
use havip::control::protocol::PeerReply;
use havip::peer::RequestHandler;
use havip_fuzz::{Cursor, runtime};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let channel = input.u16();
    let payload = input.rest();
    let handler = PeerHandler::new(true, havip::consensus::network::RaftService::default());
    let answer = runtime().block_on(handler.handle("gw-b", channel, payload.to_vec()));
    if let Ok(reply) = answer {
        // Only a Pristine request is answered before the groups run.
        let decoded: Result<PeerReply, _> = serde_json::from_slice(&reply);
        assert!(matches!(
            decoded,
            Ok(PeerReply::Pristine(true) | PeerReply::Failed(_))
        ));
    }
    let _ = serde_json::from_slice::<PeerReply>(payload);
});
