//! The config file parser (`Config::from_str`: spanned TOML, every section, durations,
//! addresses, health checks, cross-field rules), then what the daemon does with a file it
//! accepted: its fingerprints, a reload plan against itself (which must change nothing)
//! and the cluster cross-check. Never a panic, whatever the file says.
#![no_main]

use std::path::Path;

use havip::config::{Config, cluster_fingerprint, config_fingerprint, cross_check, plan_reload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_str(Path::new("fuzz.toml"), text) {
        Ok(config) => {
            let _ = config_fingerprint(&config);
            let _ = cluster_fingerprint(&config);
            match plan_reload(&config, &config) {
                Ok(plan) => assert!(plan.is_empty(), "a file reloaded onto itself changes"),
                Err(e) => panic!("a file cannot be reloaded onto itself: {e:?}"),
            }
            let _ = cross_check(std::slice::from_ref(&config));
        }
        Err(errors) => {
            let _ = errors.to_string();
        }
    }
});
