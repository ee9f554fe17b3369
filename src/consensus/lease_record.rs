//! The longest leader lease this node granted since it started, kept on disk: a node that
//! restarts has forgotten when it last accepted a heartbeat, so it sits out that lease
//! before it votes or acknowledges (`daemon::run`). With `[timers]` rolled one node at a
//! time, a leader may announce a longer lease than this node's own file says
//! (`consensus::lease`). The file is written only when a longer lease than it says is
//! granted, before that heartbeat is answered: one write per lengthening, none per beat.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The file in the node's data_dir.
pub const FILE: &str = "granted-lease";

#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct LeaseRecordError {
    path: PathBuf,
    source: std::io::Error,
}

pub struct LeaseRecord {
    path: PathBuf,
    /// What the file says (or will once a write succeeds).
    on_file: Mutex<Duration>,
}

impl LeaseRecord {
    /// Reads `data_dir`'s record: the lease this node may still be granting from before it
    /// started (none when the file is missing: a first start, or a build before it).
    pub fn open(data_dir: &Path) -> Result<(LeaseRecord, Duration), LeaseRecordError> {
        let path = data_dir.join(FILE);
        let granted = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).ok_or_else(|| LeaseRecordError {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("not a lease in milliseconds: {:?}; delete the file after stopping the node for its longest leader lease", text.trim()),
                ),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Duration::ZERO,
            Err(source) => return Err(LeaseRecordError { path, source }),
        };
        let record = LeaseRecord {
            path,
            on_file: Mutex::new(granted),
        };
        Ok((record, granted))
    }

    /// The leases from before the start have run out (the node sat them out): from now on
    /// the file says `own`, this node's own lease.
    pub fn started(&self, own: Duration) -> Result<(), LeaseRecordError> {
        let mut on_file = self.on_file.lock().unwrap_or_else(|p| p.into_inner());
        self.write(own)?;
        *on_file = own;
        Ok(())
    }

    /// Whether granting `lease` needs a write (it is longer than the file says).
    pub fn needs(&self, lease: Duration) -> bool {
        lease > *self.on_file.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This node grants `lease` now: recorded first if it is longer than the file says.
    pub fn grant(&self, lease: Duration) -> Result<(), LeaseRecordError> {
        let mut on_file = self.on_file.lock().unwrap_or_else(|p| p.into_inner());
        if lease <= *on_file {
            return Ok(());
        }
        self.write(lease)?;
        *on_file = lease;
        Ok(())
    }

    /// Whole or not at all: a new file, synced, renamed over the old one.
    fn write(&self, lease: Duration) -> Result<(), LeaseRecordError> {
        let error = |source| LeaseRecordError {
            path: self.path.clone(),
            source,
        };
        let temporary = self.path.with_extension("new");
        let mut file = std::fs::File::create(&temporary).map_err(error)?;
        writeln!(file, "{}", lease.as_millis()).map_err(error)?;
        file.sync_all().map_err(error)?;
        std::fs::rename(&temporary, &self.path).map_err(error)
    }
}

fn parse(text: &str) -> Option<Duration> {
    text.trim().parse::<u64>().ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn only_a_longer_lease_is_written_and_a_start_resets_it() {
        let dir = tempfile::tempdir().unwrap();
        let (record, before) = LeaseRecord::open(dir.path()).unwrap();
        assert_eq!(before, Duration::ZERO);
        record.grant(800 * MS).unwrap();
        record.grant(400 * MS).unwrap();
        assert_eq!(LeaseRecord::open(dir.path()).unwrap().1, 800 * MS);
        let (record, _) = LeaseRecord::open(dir.path()).unwrap();
        record.started(400 * MS).unwrap();
        assert_eq!(LeaseRecord::open(dir.path()).unwrap().1, 400 * MS);
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "soon").unwrap();
        let Err(error) = LeaseRecord::open(dir.path()) else {
            panic!("a damaged record must not pass");
        };
        let text = error.to_string();
        assert!(text.contains(FILE) && text.contains("soon"), "{text}");
    }
}
