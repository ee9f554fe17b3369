//! The peer link's frame codec (`peer::frame`) on arbitrary bytes: what a peer with the
//! cluster key can put inside the Noise channel. Never a panic; a frame that decodes is
//! exactly its own encoding; the stream peek (`frame_len`) never announces more than a
//! frame may hold, so a reader never buffers beyond `MAX_PAYLOAD`.
#![no_main]

use havip::peer::frame::{self, MAX_PAYLOAD, MIN_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let peeked = frame::frame_len(data);
    if let Ok(Some(len)) = peeked {
        assert!((MIN_FRAME..=MIN_FRAME + MAX_PAYLOAD).contains(&len));
    }
    if let Ok(f) = frame::decode(data) {
        assert_eq!(peeked, Ok(Some(data.len())));
        let again = f.encode().ok();
        assert_eq!(
            again.as_deref(),
            Some(data),
            "decode then encode changed the frame"
        );
    }
});
