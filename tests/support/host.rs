//! The test suites' few host helpers (root check, a command that must succeed), shared by
//! the loopback cluster harness (`mod.rs`) and the lab (`lab.rs`, which the e2e suite, the
//! failover benchmark and the data-plane fixture `netns.rs` include), by path.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

/// Whether the tests run as root (the real uid of /proc/self/status).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Fails (never skips) a test that needs root: CI runs as root, and a skipped
/// partition or namespace test would look like a passed one.
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs root (network namespaces, nftables, netlink, raw sockets); run the tests as root, as CI does"
    );
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> Output {
    let mut command = Command::new(args[0]);
    command.args(&args[1..]);
    run(command, &format!("{args:?}"))
}

/// Runs `command` (described as `what` in a panic) with no stdin, panicking with its
/// output if it fails.
pub fn run(mut command: Command, what: &str) -> Output {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Ends a child this process started: SIGTERM (by the PID of our own unreaped child, so it
/// cannot have been reused), `grace` to exit on its own, then SIGKILL; reaped either way.
pub fn terminate(child: &mut std::process::Child, grace: std::time::Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The path of example `name` (examples/NAME.rs) of this build, built once per test
/// process: `cargo test` builds examples, but a filtered run or a bench may not have.
pub fn example(name: &str) -> String {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // In this test's own profile: `cargo test --release` looks in target/release.
        let profile: &[&str] = if cfg!(debug_assertions) {
            &[]
        } else {
            &["--release"]
        };
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--example", name])
            .args(profile)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "cannot build the {name} example"
        );
        built.push(name.to_string());
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|d| d.join("examples").join(name))
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}
