//! A slow disk for one process, made by the kernel: a cgroup (v1 `blkio`) whose writes to
//! the block device under a path are throttled to a few operations a second. An fsync from
//! that process then takes the better part of a second (measured: 790-1045 ms at 4 writes a
//! second on this VM), as on a failing or saturated disk, while every other process writes
//! at full speed. Removed in Drop, after moving whatever is left in it back to the root.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const BLKIO: &str = "/sys/fs/cgroup/blkio";

pub struct SlowDisk {
    cgroup: PathBuf,
}

impl SlowDisk {
    /// Throttles `pid`'s writes to the disk holding `path` to `write_iops` a second.
    pub fn throttle(pid: i32, path: &Path, write_iops: u32) -> SlowDisk {
        assert!(
            Path::new(BLKIO)
                .join("blkio.throttle.write_iops_device")
                .exists(),
            "this test needs cgroup v1 blkio throttling ({BLKIO})"
        );
        let disk = disk_of(path);
        let cgroup = Path::new(BLKIO).join(format!("havip-slow-{}", std::process::id()));
        std::fs::create_dir_all(&cgroup).expect("create the blkio cgroup");
        let slow = SlowDisk { cgroup };
        slow.write(
            "blkio.throttle.write_iops_device",
            &format!("{disk} {write_iops}"),
        );
        slow.write("cgroup.procs", &pid.to_string());
        slow
    }

    fn write(&self, file: &str, value: &str) {
        let target = self.cgroup.join(file);
        std::fs::write(&target, value)
            .unwrap_or_else(|e| panic!("write {value:?} to {}: {e}", target.display()));
    }
}

impl Drop for SlowDisk {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.cgroup.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let _ = std::fs::write(Path::new(BLKIO).join("cgroup.procs"), pid);
        }
        let _ = std::fs::remove_dir(&self.cgroup);
    }
}

/// "major:minor" of the whole disk under `path` (throttling applies to the disk's queue,
/// so a partition is replaced by its disk).
fn disk_of(path: &Path) -> String {
    let dev = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .dev();
    let (major, minor) = (libc_major(dev), libc_minor(dev));
    assert!(
        major != 0,
        "{} is not on a block device (major 0: tmpfs, overlay?); a slow disk cannot be made for it",
        path.display()
    );
    let sys = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if sys.join("partition").exists() {
        let parent = std::fs::read_to_string(sys.join("../dev"))
            .unwrap_or_else(|e| panic!("the disk of partition {major}:{minor}: {e}"));
        return parent.trim().to_string();
    }
    format!("{major}:{minor}")
}

// glibc's gnu_dev_major/minor, without a libc dependency in the tests.
fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)
}
