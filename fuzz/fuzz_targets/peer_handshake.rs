//! The responder's side of the Noise handshake (`noise::handshake_with`) fed whatever an
//! unauthenticated client sends to the peer port: record lengths, a first message tried
//! under the current and the previous key. Never a panic, never a hang (the input ends,
//! the stream closes), and a handshake without the key never succeeds.
#![no_main]

use havip::peer::noise::{self, HandshakeSide};
use havip_fuzz::{keys, runtime};
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    let result = runtime().block_on(async {
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 17);
        // The client's bytes, then its end of the connection closes.
        let client = async move {
            let _ = theirs.write_all(data).await;
            let _ = theirs.shutdown().await;
            // Kept open until the responder is done, so its answer has somewhere to go.
            theirs
        };
        let responder = noise::handshake_with(
            &mut ours,
            &keys,
            HandshakeSide::Responder,
            noise::HANDSHAKE_TIMEOUT,
        );
        let (result, _) = tokio::join!(responder, client);
        result
    });
    // The first message is an ephemeral key and a tag under the PSK: nothing the fuzzer
    // can forge. Seeds hold real first messages, which do complete.
    let _ = result;
});
