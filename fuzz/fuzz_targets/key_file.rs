//! The key file's text (`ClusterKey::from_text`). Never a panic; a key read is written
//! back as the same text it reads again.
#![no_main]

use havip::key::ClusterKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `load` reads the file into a String: bytes that are not UTF-8 never get here.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = ClusterKey::from_text(text) {
        let again = ClusterKey::from_text(&key.to_text());
        assert!(again.is_ok_and(|k| k.as_bytes() == key.as_bytes()));
        let _ = key.id();
    }
});
