//! `NoiseReader::read_frame`, the peer link's receiving half, fed a whole connection's
//! bytes. Mode 0 seals the fuzzer's chunks with the session's real keys, so the reader
//! decrypts them and cuts frames out of an arbitrary *authenticated* plaintext stream (what
//! a peer holding the cluster key can send); its frames must be exactly those the pure
//! codec cuts out of the same plaintext (a differential check of the buffering). Mode 1
//! is raw bytes on the wire (record lengths, forged ciphertext); mode 2 flips one byte of
//! sealed traffic, which must end in an error and deliver nothing from that message on.
#![no_main]

use havip::peer::frame::{self, Frame};
use havip::peer::noise::{MAX_CHUNK, NoiseError, NoiseReader};
use havip_fuzz::{Cursor, runtime, seal, sessions};
use libfuzzer_sys::fuzz_target;

/// Frames from the reader until it ends: Ok(frames) at a clean end, Err(frames so far).
fn read_all(wire: &[u8]) -> Result<Vec<Frame>, (Vec<Frame>, NoiseError)> {
    let session = sessions().1.clone();
    runtime().block_on(async move {
        let mut reader = NoiseReader::new(wire, session);
        let mut got = Vec::new();
        loop {
            match reader.read_frame().await {
                Ok(Some(f)) => got.push(f),
                Ok(None) => return Ok(got),
                Err(e) => return Err((got, e)),
            }
        }
    })
}

/// What the pure codec cuts out of `plain`: Ok at a clean end, Err(frames) otherwise.
fn reference(mut plain: &[u8]) -> Result<Vec<Frame>, Vec<Frame>> {
    let mut got = Vec::new();
    loop {
        if plain.is_empty() {
            return Ok(got);
        }
        match frame::frame_len(plain) {
            Ok(Some(len)) if plain.len() >= len => match frame::decode(&plain[..len]) {
                Ok(f) => {
                    got.push(f);
                    plain = &plain[len..];
                }
                Err(_) => return Err(got),
            },
            _ => return Err(got),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let mode = input.u8() % 3;
    if mode == 1 {
        let _ = read_all(input.rest());
        return;
    }
    // Mode 2: where to flip a byte of the sealed traffic.
    let flip_at = if mode == 2 {
        usize::from(input.u16())
    } else {
        0
    };
    let mut chunks = Vec::new();
    while !input.is_empty() {
        let n = usize::from(input.u16()).min(MAX_CHUNK);
        chunks.push(input.take(n));
    }
    let mut wire = seal(&sessions().0, &chunks);
    let plain: Vec<u8> = chunks.concat();
    let want = match reference(&plain) {
        Ok(f) | Err(f) => f,
    };
    if mode == 2 {
        if wire.is_empty() {
            return;
        }
        let at = flip_at % wire.len();
        wire[at] ^= 0x5a;
        // Nothing may come from the tampered message or after it: what is read is a
        // prefix of the frames of the untouched stream, and the read ends in an error.
        match read_all(&wire) {
            Err((got, _)) => assert!(want.starts_with(&got), "tampered traffic delivered"),
            Ok(got) => panic!("tampered traffic read cleanly: {} frames", got.len()),
        }
        return;
    }
    match (read_all(&wire), reference(&plain)) {
        (Ok(got), Ok(want)) => assert_eq!(got, want),
        (Err((got, _)), Err(want)) => assert_eq!(got, want),
        (got, want) => panic!(
            "reader and codec disagree: reader {:?}, codec {:?}",
            got.map(|f| f.len())
                .map_err(|(f, e)| (f.len(), e.to_string())),
            want.map(|f| f.len()).map_err(|f| f.len())
        ),
    }
});
