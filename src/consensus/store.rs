//! The node's durable Raft storage: vote, log and applied state of every VIP group, in one
//! redb file per node (`<data_dir>/havip.redb`), with each group in its own tables
//! (`"<group>/log"`, `"<group>/meta"`, `"<group>/sm"`).
//!
//! What it must never do: acknowledge a write (return from `save_vote`, a truncation, a
//! purge or a snapshot, call an append's `IOFlushed`) before the redb transaction holding it
//! has committed with immediate durability; let the state machine's record on disk get
//! ahead of the log on disk; or write a state machine's `GroupState` and its `last_applied`
//! in different transactions. A crash at any instant must leave a file that opens and is
//! consistent. Every write runs on the writer thread, in openraft's order (see `writer`);
//! the state machine's record and the committed log id ride along with the next durable
//! commit, as openraft allows.
//!
//! Records are `serde_json`: self-describing, so openraft's serde attributes (custom
//! `SnapshotMeta` wire form, maps keyed by node id) round-trip without relying on a
//! non-self-describing format's corner cases, and the records are small. The tests check
//! the round-trips. Log keys are redb `u64` keys, which redb compares numerically (not as
//! bytes), so ranges iterate in log order.
//!
//! Snapshots are persisted next to the state (see `state_machine`); compaction is openraft's
//! snapshot policy followed by `purge`, which deletes the entries and records the purge
//! point in one transaction.

mod log;
mod state_machine;
mod writer;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{
    Database, DatabaseError, ReadableTable, ReadableTableMetadata, TableDefinition, TableError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::consensus::types::{Entry, LogId, Vote};
use crate::platform::lock::lock;

pub use self::log::LogStore;
pub use self::state_machine::{SnapshotBuilder, StateMachineStore};
use self::writer::Writer;

/// File name of the store inside the data directory.
pub const FILE_NAME: &str = "havip.redb";

/// redb page cache: the state machine and the unpurged log tail fit many times over.
const CACHE_BYTES: usize = 4 * 1024 * 1024;

/// A durable commit slower than this is logged: at the default timers it is half the hold
/// lease, and a follower answers no heartbeat until its log is on disk.
const SLOW_COMMIT: Duration = Duration::from_millis(100);

/// Keys of the `<group>/meta` table (vote and log pointers, written by the log store).
const META_VOTE: &str = "vote";
const META_COMMITTED: &str = "committed";
const META_PURGED: &str = "purged";
/// Keys of the `<group>/sm` table (written by the state machine).
const SM_APPLIED: &str = "applied";
const SM_SNAPSHOT_META: &str = "snapshot_meta";
const SM_SNAPSHOT_DATA: &str = "snapshot_data";

/// Everything that can go wrong with the store. Each error names the file, and the table
/// and key where there is one, so an operator can tell a full disk from a corrupt file.
#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    #[error("cannot create data directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot restrict permissions of {} to the owner: {source}", path.display())]
    Permissions { path: PathBuf, source: io::Error },
    /// The first start's new, empty store could not be put in place.
    #[error("cannot create Raft store {}: {source}", path.display())]
    Create { path: PathBuf, source: io::Error },
    #[error(
        "Raft store {} is locked by another process: is another havip running with data_dir {}?",
        path.display(),
        data_dir.display()
    )]
    Locked { path: PathBuf, data_dir: PathBuf },
    #[error("cannot open Raft store {}: {source}{}", path.display(), open_fix(path, source))]
    Open {
        path: PathBuf,
        source: DatabaseError,
    },
    #[error("Raft store {}, table {table:?}: {action} failed: {source}", path.display())]
    Db {
        path: PathBuf,
        table: String,
        action: &'static str,
        source: Box<redb::Error>,
    },
    #[error(
        "Raft store {}, table {table:?}, key {key}: cannot decode the record ({source}); the file is \
         corrupt or was written by an incompatible havip version",
        path.display()
    )]
    Decode {
        path: PathBuf,
        table: String,
        key: String,
        source: serde_json::Error,
    },
    #[error("Raft store {}, table {table:?}, key {key}: cannot encode the record: {source}", path.display())]
    Encode {
        path: PathBuf,
        table: String,
        key: String,
        source: serde_json::Error,
    },
    #[error("Raft store {}, table {table:?}: {detail}", path.display())]
    Inconsistent {
        path: PathBuf,
        table: String,
        detail: String,
    },
    #[error("invalid VIP group name {name:?} for the Raft store: {reason}")]
    GroupName { name: String, reason: &'static str },
    #[error("Raft store {}: VIP group {group:?} is already open in this process", path.display())]
    GroupInUse { path: PathBuf, group: String },
    #[error("Raft store {}: a storage task stopped before finishing: {detail}", path.display())]
    Task { path: PathBuf, detail: String },
}

/// What to do when the file cannot be opened: a damaged file is moved aside and the node
/// rejoins empty (README, "A corrupt or lost store"); other errors say enough.
fn open_fix(path: &Path, source: &DatabaseError) -> String {
    let damaged = match source {
        DatabaseError::Storage(redb::StorageError::Corrupted(_)) => true,
        DatabaseError::Storage(redb::StorageError::Io(e)) => e.kind() == io::ErrorKind::InvalidData,
        _ => false,
    };
    if !damaged {
        return String::new();
    }
    format!(
        ". The file is damaged; havip will not start on it, so this node holds no VIP and the \
         others carry on. To fix: while the other nodes have a master (`havip status` there), \
         move {} aside (keep it for a bug report) and start havip again: the node rejoins \
         with an empty store and catches up from the leader. One node at a time (README, \
         \"A corrupt or lost store\")",
        path.display()
    )
}

impl From<StoreError> for io::Error {
    fn from(err: StoreError) -> Self {
        io::Error::other(err)
    }
}

/// One node's Raft store: a handle on the redb file shared by all VIP groups.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    /// Groups with a live `LogStore`/`StateMachineStore`: two of them on one group would
    /// each cache state the other does not see.
    open_groups: Arc<Mutex<HashSet<String>>>,
    writer: Writer,
    stats: Arc<DiskStats>,
}

/// How the file's durable commits went, for the metrics.
#[derive(Debug, Default)]
pub(crate) struct DiskStats {
    commits: AtomicU64,
    slow: AtomicU64,
    max_micros: AtomicU64,
    /// The first store operation that failed lately, for the daemon's last words
    /// (`Store::write_failure`).
    failure: Mutex<Option<Failure>>,
}

/// A failed store operation: when, what, and whether the disk was full.
#[derive(Debug, Clone)]
struct Failure {
    at: Instant,
    what: String,
    disk_full: bool,
}

/// How long a failure explains a stop: an older one (a read that failed once, long ago)
/// is not the cause of a Raft stopping now, and a new one replaces it.
const FAILURE_RECENT: Duration = Duration::from_secs(60);

impl DiskStats {
    fn record_failure(&self, error: &redb::Error, what: String) {
        let now = Instant::now();
        let mut failure = lock(&self.failure);
        if failure
            .as_ref()
            .is_none_or(|f| now.duration_since(f.at) > FAILURE_RECENT)
        {
            let io = match error {
                redb::Error::Io(e) => Some(e),
                _ => None,
            };
            *failure = Some(Failure {
                at: now,
                what,
                disk_full: io.and_then(io::Error::raw_os_error) == Some(libc::ENOSPC),
            });
        }
    }
}

/// A copy of [`DiskStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStatsSnapshot {
    /// Durable commits since the daemon started.
    pub commits: u64,
    /// Those that took longer than 100 ms.
    pub slow: u64,
    /// The longest one.
    pub max: Duration,
}

impl DiskStats {
    fn record(&self, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if took > SLOW_COMMIT {
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DiskStatsSnapshot {
        DiskStatsSnapshot {
            commits: self.commits.load(Ordering::Relaxed),
            slow: self.slow.load(Ordering::Relaxed),
            max: Duration::from_micros(self.max_micros.load(Ordering::Relaxed)),
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Creates the empty store at `path` whole or not at all: redb initialises a new file in
/// several writes, and a daemon killed among them (its first start) left a file that no
/// later start could open ("invalid data", seen in `tests/store_crash.rs`). It is made under
/// a name of this process's own, then linked into place, which never replaces a file:
/// another process that got there first wins, and this one opens that file.
fn create_whole(path: &Path) -> Result<(), StoreError> {
    let error = |source| StoreError::Create {
        path: path.to_path_buf(),
        source,
    };
    let temporary = path.with_extension(format!("redb.new.{}", std::process::id()));
    // What a first start killed while creating left. (A second daemon starting on the
    // same data_dir in the same instant would lose its file and fail with the path.)
    let stale = format!("{FILE_NAME}.new.");
    if let Some(entries) = path.parent().and_then(|dir| std::fs::read_dir(dir).ok()) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&stale) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let db = redb::Builder::new()
        .create(&temporary)
        .map_err(|e| error(io::Error::other(e.to_string())))?;
    drop(db);
    std::fs::File::open(&temporary)
        .and_then(|f| f.sync_all())
        .map_err(error)?;
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(error(e)),
        _ => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(error)?;
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) `<data_dir>/havip.redb`. The directory is created with mode
    /// 0700 and the file is made 0600. After a crash redb repairs the file here.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(|source| StoreError::CreateDir {
                path: data_dir.to_path_buf(),
                source,
            })?;
        let path = data_dir.join(FILE_NAME);
        if !path.exists() {
            create_whole(&path)?;
        }
        // The store holds a few kilobytes of live state per group; redb's default cache
        // (up to 1 GiB) would make a gateway's footprint grow for nothing.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|source| match source {
                DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                    path: path.clone(),
                    data_dir: data_dir.to_path_buf(),
                },
                source => StoreError::Open {
                    path: path.clone(),
                    source,
                },
            })?;
        std::fs::set_permissions(&path, Permissions::from_mode(0o600)).map_err(|source| {
            StoreError::Permissions {
                path: path.clone(),
                source,
            }
        })?;
        let writer = Writer::start(&path)?;
        Ok(Store {
            db: Arc::new(db),
            path,
            open_groups: Arc::default(),
            writer,
            stats: Arc::default(),
        })
    }

    /// Path of the redb file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until every log write queued so far is on disk: appends are written by the
    /// store's writer thread after `append` returned, and a clean exit must not cut one.
    pub async fn drain(&self) {
        self.writer.drain().await;
    }

    /// How long durable commits took, so far.
    pub fn disk_stats(&self) -> DiskStatsSnapshot {
        self.stats.snapshot()
    }

    /// The first operation on the file that failed since the daemon started, with what to
    /// do about it: a Raft that stopped after one cannot go on, and the operator must
    /// hear why in the same breath.
    pub fn write_failure(&self) -> Option<String> {
        let failure = lock(&self.stats.failure).clone()?;
        if failure.at.elapsed() > FAILURE_RECENT {
            return None;
        }
        let dir = self.path.parent().unwrap_or(&self.path).display();
        let fix = if failure.disk_full {
            format!(
                "free space on the filesystem of {dir}, then start havip again: every commit is \
                 atomic, so the store is consistent, and the node catches up from the leader"
            )
        } else {
            format!(
                "check the disk under {dir} (dmesg, SMART); if the file is damaged, see the \
                 README, \"A corrupt or lost store\""
            )
        };
        Some(format!("{}. To fix: {fix}", failure.what))
    }

    /// The log store and state machine of VIP group `name`, creating its tables on first use.
    /// A group can be open once at a time; it can be opened again after both halves (and
    /// every log reader and snapshot builder) are dropped.
    pub fn group(&self, name: &str) -> Result<(LogStore, StateMachineStore), StoreError> {
        validate_group_name(name)?;
        let lease = GroupLease::take(self, name)?;
        let tables = Arc::new(GroupTables::new(self, name, lease));
        tables.create_tables()?;
        let state_machine = StateMachineStore::load(tables.clone())?;
        Ok((LogStore::new(tables), state_machine))
    }

    /// True when group `name` has no vote, no log and no applied state here: this node has
    /// never taken part in (or bootstrapped) that group's cluster.
    pub fn is_pristine(&self, name: &str) -> Result<bool, StoreError> {
        validate_group_name(name)?;
        let tables = GroupTables::new(self, name, None);
        let txn = tables.begin_read()?;
        let log_empty = match txn.open_table(tables.log_def()) {
            Ok(log) => log
                .is_empty()
                .map_err(tables.db_err(&tables.log, "reading the log"))?,
            Err(TableError::TableDoesNotExist(_)) => true,
            Err(e) => return Err(tables.db_err(&tables.log, "opening the table")(e)),
        };
        let vote: Option<Vote> = tables.read_opt(&txn, &tables.meta, META_VOTE)?;
        let purged: Option<LogId> = tables.read_opt(&txn, &tables.meta, META_PURGED)?;
        let applied: Option<state_machine::Applied> =
            tables.read_opt(&txn, &tables.sm, SM_APPLIED)?;
        let nothing_applied = applied.is_none_or(|a| a.last_applied.is_none());
        Ok(log_empty && vote.is_none() && purged.is_none() && nothing_applied)
    }
}

impl Store {
    /// Deletes group `name`'s vote, log and state from the store, in one durable
    /// transaction: a crash leaves the group either whole or gone. Refused while the group
    /// is open (its Raft must have been shut down and dropped first). After this the group
    /// is pristine here: added again, it is formed or caught up like a new one.
    pub async fn drop_group(&self, name: &str) -> Result<(), StoreError> {
        validate_group_name(name)?;
        let lease = GroupLease::take(self, name)?;
        // Every write queued for the group before it was closed lands first, so none can
        // recreate a table after the delete.
        self.drain().await;
        let tables = GroupTables::new(self, name, lease);
        let txn = tables.begin_write()?;
        txn.delete_table(tables.log_def())
            .map_err(tables.db_err(&tables.log, "deleting the table"))?;
        txn.delete_table(tables.kv_def(&tables.meta))
            .map_err(tables.db_err(&tables.meta, "deleting the table"))?;
        txn.delete_table(tables.kv_def(&tables.sm))
            .map_err(tables.db_err(&tables.sm, "deleting the table"))?;
        tables.commit(txn, &tables.meta)
    }
}

fn validate_group_name(name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.contains('/') {
        "it contains '/', which separates the group from the table in the store"
    } else if name.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    Err(StoreError::GroupName {
        name: name.to_string(),
        reason,
    })
}

/// Marks a group as open in this process until dropped.
struct GroupLease {
    open_groups: Arc<Mutex<HashSet<String>>>,
    group: String,
}

impl GroupLease {
    fn take(store: &Store, group: &str) -> Result<Option<GroupLease>, StoreError> {
        let mut open = lock(&store.open_groups);
        if !open.insert(group.to_string()) {
            return Err(StoreError::GroupInUse {
                path: store.path.clone(),
                group: group.to_string(),
            });
        }
        Ok(Some(GroupLease {
            open_groups: store.open_groups.clone(),
            group: group.to_string(),
        }))
    }
}

impl Drop for GroupLease {
    fn drop(&mut self) {
        let mut open = lock(&self.open_groups);
        open.remove(&self.group);
    }
}

/// The tables of one group and the typed record access shared by the log store and the
/// state machine. Everything here is synchronous; every write runs on the store's writer
/// thread (`writer`), reads run where they are asked for.
pub(crate) struct GroupTables {
    db: Arc<Database>,
    path: PathBuf,
    log: String,
    meta: String,
    sm: String,
    writer: Writer,
    stats: Arc<DiskStats>,
    /// The last committed log id openraft saved, until the writer thread has written it.
    /// It rides along with the next durable commit instead of costing an fsync of its own
    /// on openraft's core: openraft allows it to be lost in a crash (an older value only
    /// means re-applying from the state machine's own, durable, last applied id).
    committed: Mutex<Option<Option<LogId>>>,
    /// Appended entries the writer thread has not yet made durable, by index: a contiguous
    /// tail of the log, read before the file (see `writer`).
    unsynced: Mutex<BTreeMap<u64, Entry>>,
    /// A write nobody waited for that failed (see `Writer::write_later`).
    failure: Mutex<Option<String>>,
    _lease: Option<GroupLease>,
}

impl GroupTables {
    fn new(store: &Store, group: &str, lease: Option<GroupLease>) -> GroupTables {
        GroupTables {
            db: store.db.clone(),
            path: store.path.clone(),
            log: format!("{group}/log"),
            meta: format!("{group}/meta"),
            sm: format!("{group}/sm"),
            writer: store.writer.clone(),
            stats: store.stats.clone(),
            committed: Mutex::new(None),
            unsynced: Mutex::default(),
            failure: Mutex::new(None),
            _lease: lease,
        }
    }

    fn record_failure(&self, detail: String) {
        lock(&self.failure).get_or_insert(detail);
    }

    /// The failure of a write nobody waited for, as an error of this group's store.
    fn failed(&self) -> Result<(), StoreError> {
        match lock(&self.failure).clone() {
            Some(detail) => Err(StoreError::Task {
                path: self.path.clone(),
                detail: format!("an earlier write failed: {detail}"),
            }),
            None => Ok(()),
        }
    }

    fn unsynced(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        lock(&self.unsynced)
    }

    /// The records are on disk: they leave the unsynced tail, unless an entry with another
    /// id took their index meanwhile.
    fn synced(&self, records: &[writer::Record]) {
        let mut unsynced = self.unsynced();
        for (index, log_id, _) in records {
            if unsynced.get(index).is_some_and(|e| &e.log_id == log_id) {
                unsynced.remove(index);
            }
        }
    }

    fn pending_committed(&self) -> Option<Option<LogId>> {
        *lock(&self.committed)
    }

    fn set_pending_committed(&self, committed: Option<LogId>) {
        *lock(&self.committed) = Some(committed);
    }

    /// `written` is on disk: forget it unless a newer value was saved meanwhile.
    fn saved_committed(&self, written: Option<LogId>) {
        let mut pending = lock(&self.committed);
        if pending.as_ref() == Some(&written) {
            *pending = None;
        }
    }

    fn log_def(&self) -> TableDefinition<'_, u64, &'static [u8]> {
        TableDefinition::new(&self.log)
    }

    fn kv_def<'a>(&self, table: &'a str) -> TableDefinition<'a, &'static str, &'static [u8]> {
        TableDefinition::new(table)
    }

    /// Creates the group's tables, so that read transactions can assume they exist.
    fn create_tables(&self) -> Result<(), StoreError> {
        let txn = self.begin_write()?;
        txn.open_table(self.log_def())
            .map_err(self.db_err(&self.log, "creating the table"))?;
        txn.open_table(self.kv_def(&self.meta))
            .map_err(self.db_err(&self.meta, "creating the table"))?;
        txn.open_table(self.kv_def(&self.sm))
            .map_err(self.db_err(&self.sm, "creating the table"))?;
        self.commit(txn, &self.meta)
    }

    fn db_err<E: Into<redb::Error>>(
        &self,
        table: &str,
        action: &'static str,
    ) -> impl FnOnce(E) -> StoreError {
        let path = self.path.clone();
        let table = table.to_string();
        let stats = self.stats.clone();
        move |source| {
            let source: redb::Error = source.into();
            let what = format!(
                "Raft store {}, table {table:?}: {action} failed: {source}",
                path.display()
            );
            // Any failed operation, not only a commit: redb may fail to grow the file while
            // inserting, and says "previous I/O error" on every call after that.
            stats.record_failure(&source, what);
            StoreError::Db {
                path,
                table,
                action,
                source: Box::new(source),
            }
        }
    }

    fn inconsistent(&self, table: &str, detail: String) -> StoreError {
        StoreError::Inconsistent {
            path: self.path.clone(),
            table: table.to_string(),
            detail,
        }
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.db
            .begin_read()
            .map_err(self.db_err(&self.meta, "starting a read transaction"))
    }

    /// A write transaction with redb's default, immediate durability: `commit` returns once
    /// the data is on disk.
    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        self.db
            .begin_write()
            .map_err(self.db_err(&self.meta, "starting a write transaction"))
    }

    /// Commits `txn`; with immediate durability, times it, and logs a slow one: the lag it
    /// explains (a master letting go, a late election) is otherwise invisible.
    fn commit(&self, txn: redb::WriteTransaction, table: &str) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = txn.commit().map_err(self.db_err(table, "committing"));
        let took = started.elapsed();
        self.stats.record(took);
        if took > SLOW_COMMIT {
            tracing::warn!(
                path = %self.path.display(),
                table,
                "slow disk: a durable commit took {} ms; until its log is on disk a node answers no heartbeat",
                took.as_millis()
            );
        }
        result
    }

    fn encode<T: Serialize>(
        &self,
        table: &str,
        key: &str,
        value: &T,
    ) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(value).map_err(|source| StoreError::Encode {
            path: self.path.clone(),
            table: table.to_string(),
            key: key.to_string(),
            source,
        })
    }

    fn decode<T: DeserializeOwned>(
        &self,
        table: &str,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|source| StoreError::Decode {
            path: self.path.clone(),
            table: table.to_string(),
            key: key.to_string(),
            source,
        })
    }

    /// Reads and decodes `key` of key-value table `table`; `None` when absent (or when the
    /// table was never created, for `is_pristine` on an unknown group).
    fn read_opt<T: DeserializeOwned>(
        &self,
        txn: &redb::ReadTransaction,
        table: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let bytes = {
            let t = match txn.open_table(self.kv_def(table)) {
                Ok(t) => t,
                Err(TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(self.db_err(table, "opening the table")(e)),
            };
            match t.get(key).map_err(self.db_err(table, "reading"))? {
                Some(guard) => guard.value().to_vec(),
                None => return Ok(None),
            }
        };
        self.decode(table, key, &bytes).map(Some)
    }

    /// Reads the raw bytes of `key`, for records stored unencoded (snapshot data).
    fn read_raw(
        &self,
        txn: &redb::ReadTransaction,
        table: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let t = txn
            .open_table(self.kv_def(table))
            .map_err(self.db_err(table, "opening the table"))?;
        let value = t.get(key).map_err(self.db_err(table, "reading"))?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }

    /// Encodes `value` and puts it at `key` of `table` inside `txn`.
    fn put_value<T: Serialize>(
        &self,
        txn: &redb::WriteTransaction,
        table: &str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = self.encode(table, key, value)?;
        self.put(txn, table, key, &bytes)
    }

    /// Whether the log as `txn` leaves it holds (or has purged) the entry at `index`.
    fn log_reaches(
        &self,
        txn: &redb::WriteTransaction,
        index: Option<u64>,
    ) -> Result<bool, StoreError> {
        let Some(index) = index else {
            return Ok(true);
        };
        let last = {
            let log = txn
                .open_table(self.log_def())
                .map_err(self.db_err(&self.log, "opening the table"))?;
            log.last()
                .map_err(self.db_err(&self.log, "reading the last entry"))?
                .map(|(key, _)| key.value())
        };
        if last.is_some_and(|last| last >= index) {
            return Ok(true);
        }
        let purged: Option<LogId> = self.read_in_write(txn, &self.meta, META_PURGED)?;
        Ok(purged.is_some_and(|p| p.index >= index))
    }

    /// Commits `txn` without durability: readers see it at once, and it reaches the disk
    /// with the next durable commit (or is lost in a crash before that, with every commit
    /// after it: redb keeps a prefix of the commits).
    fn commit_unsynced(
        &self,
        mut txn: redb::WriteTransaction,
        table: &str,
    ) -> Result<(), StoreError> {
        txn.set_durability(redb::Durability::None);
        txn.commit().map_err(self.db_err(table, "committing"))
    }

    /// Puts already-encoded `bytes` at `key` of `table` inside `txn`.
    fn put(
        &self,
        txn: &redb::WriteTransaction,
        table: &str,
        key: &str,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut t = txn
            .open_table(self.kv_def(table))
            .map_err(self.db_err(table, "opening the table"))?;
        t.insert(key, bytes)
            .map_err(self.db_err(table, "writing"))?;
        Ok(())
    }

    /// Reads and decodes `key` of `table` inside a write transaction.
    fn read_in_write<T: DeserializeOwned>(
        &self,
        txn: &redb::WriteTransaction,
        table: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let bytes = {
            let t = txn
                .open_table(self.kv_def(table))
                .map_err(self.db_err(table, "opening the table"))?;
            let value = t.get(key).map_err(self.db_err(table, "reading"))?;
            value.map(|guard| guard.value().to_vec())
        };
        bytes
            .map(|bytes| self.decode(table, key, &bytes))
            .transpose()
    }
}

#[cfg(test)]
mod tests;
