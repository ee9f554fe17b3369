//! The measured figures of the test suites (a hand-over time, an outage, a two-holder
//! total): each is one line on stderr, which libtest shows only with `--nocapture` or when
//! the test fails, and, when `HAVIP_TEST_FIGURES` names a file, also appended to that
//! file, so that CI can print every suite's figures after the README's plain `cargo test`
//! without running any suite twice (`.ci/run`). It decides nothing and asserts nothing.
//!
//! A suite includes it by path: `#[path = "support/figures.rs"] mod figures;` in a test
//! file, or `#[path = "figures.rs"] pub mod figures;` inside `support/mod.rs`.
#![allow(dead_code)]

use std::io::Write;

/// The variable that names the file the figures are appended to; unset or empty: stderr only.
pub const FIGURES_ENV: &str = "HAVIP_TEST_FIGURES";

/// Reports one measured figure: `eprintln!`s `line` and, when `HAVIP_TEST_FIGURES` is set,
/// appends `SUITE: line` to that file (SUITE is the test binary's name, e.g. `vip_netns`).
/// One `write` per line to a file opened with O_APPEND, so the lines of tests that run in
/// parallel, in one binary or in several, never interleave. A file that cannot be written
/// fails the test: CI asked for the figures and must not lose them silently.
pub fn figure(line: &str) {
    eprintln!("{line}");
    let Some(path) = std::env::var_os(FIGURES_ENV).filter(|p| !p.is_empty()) else {
        return;
    };
    let text = format!("{}: {line}\n", env!("CARGO_CRATE_NAME"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .unwrap_or_else(|e| {
            panic!(
                "cannot append a figure to {} ({FIGURES_ENV}): {e}",
                std::path::Path::new(&path).display()
            )
        });
}
