//! Store faults (issue 14 item 8), on a real three-node cluster on loopback (observe-only
//! daemons, real Raft over real TCP, real redb files): a node whose store file is corrupt
//! refuses to start with a message naming the file and the fix, and holds nothing; a node
//! whose disk is full stops, releases what it held, and says why and what to do; the
//! other nodes carry on with one master throughout, and each node rejoins once fixed.

mod support;

use std::time::Duration;

use support::{Cluster, Options};

/// The node's redb file (`consensus::store::FILE_NAME` under its data_dir).
fn store_file(cluster: &Cluster, name: &str) -> std::path::PathBuf {
    cluster
        .dir
        .path()
        .join(name)
        .join("data")
        .join("havip.redb")
}

#[test]
fn a_corrupt_store_is_refused_at_start_and_the_others_carry_on() {
    let mut cluster = Cluster::start(44, Options::default());
    cluster.wait_formed("gw-a");
    cluster.stop("gw-b", Duration::from_secs(5));
    // A damaged header (a torn write, a bad sector): redb cannot read the file.
    let file = store_file(&cluster, "gw-b");
    let mut bytes = std::fs::read(&file).expect("read the store");
    for b in bytes.iter_mut().take(64) {
        *b ^= 0x5a;
    }
    std::fs::write(&file, &bytes).expect("corrupt the store");
    cluster.spawn("gw-b");
    let code = wait_exit(&mut cluster, "gw-b", Duration::from_secs(10));
    let log = std::fs::read_to_string(&cluster.nodes["gw-b"].log).unwrap_or_default();
    assert_eq!(code, Some(2), "gw-b ran on a corrupt store:\n{log}");
    let said = log.lines().last().unwrap_or_default();
    let path = file.display().to_string();
    for needle in [path.as_str(), "damaged", "aside", "holds no VIP"] {
        assert!(said.contains(needle), "{needle:?} not in: {said}");
    }
    assert_eq!(cluster.holders(), ["gw-a"]);

    // The fix the message gives: the file moved aside, gw-b rejoins and catches up. (Its
    // empty log used to make the leader, gw-a, panic in openraft: "follower log reversion
    // is not allowed", and the master's daemon exited. `allow_log_reversion` now.)
    std::fs::rename(&file, file.with_extension("redb.damaged")).expect("move it aside");
    cluster.spawn("gw-b");
    cluster.wait_reported("gw-b");
    // Caught up: it follows the cluster's leader in the cluster's term.
    let seen = |name: &str| {
        let status = cluster.status(name).unwrap_or_else(|| {
            let log = std::fs::read_to_string(&cluster.nodes["gw-a"].log).unwrap_or_default();
            panic!("no status from {name}\n{log}")
        });
        (status.groups[0].leader.clone(), status.groups[0].term)
    };
    let (b, a) = (seen("gw-b"), seen("gw-a"));
    assert!(b.0.is_some());
    assert_eq!(b, a);
    assert_eq!(cluster.holders(), ["gw-a"]);
    cluster.assert_never_two_holders();
}

/// Waits (bounded) for `name`'s daemon to exit; its exit code.
fn wait_exit(cluster: &mut Cluster, name: &str, limit: Duration) -> Option<i32> {
    let child = cluster.nodes.get_mut(name)?.child.as_mut()?;
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A tmpfs of `size` mounted on `path` for the test's life (unmounted in Drop).
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(path: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).expect("mount point");
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "havip-test",
            ])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs on {}",
            path.display()
        );
        SmallDisk {
            path: path.to_path_buf(),
        }
    }

    /// Writes a file until the disk is full (bounded by the disk's size).
    fn fill(&self) {
        use std::io::Write as _;
        let mut file = std::fs::File::create(self.path.join("filler")).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        for _ in 0..100_000 {
            if file.write_all(&chunk).is_err() {
                return;
            }
        }
        panic!("the disk never filled up");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn a_full_disk_stops_the_node_it_holds_nothing_and_the_others_carry_on() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting the small tmpfs needs root");
        return;
    }
    let mut cluster = Cluster::start_only(45, Options::default(), &["gw-a", "witness"]);
    let disk = SmallDisk::mount(&cluster.dir.path().join("gw-b").join("data"), "2m");
    cluster.spawn("gw-b");
    cluster.wait_formed("gw-a");
    cluster.wait_reported("gw-b");
    // gw-b is master when its disk fills up.
    let (code, out) = cluster.cli("gw-a", &["failover", "--to", "gw-b", "--group", "crm"]);
    assert_eq!(code, 0, "{out}");
    cluster.wait_holder("gw-b", Duration::from_secs(10));
    disk.fill();
    // Commands until gw-b's store runs out of room inside its file (bounded).
    let mut code = None;
    for i in 0..300 {
        code = wait_exit(&mut cluster, "gw-b", Duration::from_millis(1));
        if code.is_some() {
            break;
        }
        let on = if i % 2 == 0 { "on" } else { "off" };
        cluster.cli("gw-a", &["maintenance", on, "witness"]);
    }
    let code = code.or_else(|| wait_exit(&mut cluster, "gw-b", Duration::from_secs(10)));
    let log = std::fs::read_to_string(&cluster.nodes["gw-b"].log).unwrap_or_default();
    assert!(
        code.is_some_and(|c| c != 0),
        "gw-b did not stop on a full disk ({code:?}):\n{log}"
    );
    let said = log.lines().last().unwrap_or_default();
    let file = store_file(&cluster, "gw-b");
    for needle in [
        file.display().to_string(),
        "No space left on device".into(),
        "free space on the filesystem".into(),
    ] {
        assert!(said.contains(&needle), "{needle:?} not in: {said}");
    }
    // The others carry on: gw-a holds (the pin names a node that is gone).
    cluster.wait_holder("gw-a", Duration::from_secs(10));
    cluster.assert_never_two_holders();

    // The fix the message gives: room made, gw-b starts and rejoins.
    std::fs::remove_file(disk.path.join("filler")).expect("make room");
    cluster.spawn("gw-b");
    cluster.wait_reported("gw-b");
    drop(cluster);
    drop(disk);
}
