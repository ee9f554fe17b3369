//! The one duration parser (`config::parse_duration`, used by the config and the CLI) and
//! the HTTP status parser (`StatusSet::parse`). Never a panic; a parsed duration formats
//! to text that parses back to the same duration.
#![no_main]

use havip::config::{StatusSet, format_duration, parse_duration};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_duration(text) {
        let shown = format_duration(d);
        assert_eq!(parse_duration(&shown), Ok(d), "{text:?} shown as {shown:?}");
    }
    if let Ok(set) = StatusSet::parse(text) {
        let shown = set.to_string();
        assert_eq!(StatusSet::parse(&shown), Ok(set));
    }
});
