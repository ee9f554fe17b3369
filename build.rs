//! Records the git revision for `havip --version`, so that an operator can tell which
//! build a node runs. Outside a git checkout (a source tarball) it says "unknown".
use std::process::Command;

fn main() {
    let revision = Command::new("git")
        .args(["describe", "--always", "--dirty", "--exclude", "*"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_string())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HAVIP_GIT_REVISION={revision}");
    // Rebuild when HEAD moves or the index changes (a commit, a checkout).
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
}
