//! The store's writer thread: it writes appended log entries to the file and makes them
//! durable after `append` has returned, and runs the log store's other writes in order with
//! those appends.
//!
//! Why a thread of its own: openraft's core awaits `append` inline, and the daemon runs on
//! one thread, so nothing else runs meanwhile: no heartbeat is sent, none is answered. With
//! the write inside `append`, one slow commit (measured: 594 ms while the kernel was
//! writing back gigabytes of dirty pages) stopped the master's heartbeats for longer than its hold lease, and
//! the VIP moved. openraft's contract allows better: `append` only has to make the entries
//! readable; its callback reports when they are on disk. So `append` keeps the entries in
//! memory (the group's unsynced tail, which the log reader consults first) and queues them
//! here. This thread writes them in a transaction with immediate durability, drops them from
//! the tail, and only then calls the callbacks, in the order they were queued.
//!
//! Order is what keeps this safe. One thread runs every append, vote, truncation and purge of
//! the file in the order openraft asked for them, so an append is never reported durable
//! after a later truncation or vote was written, and is never written after one. redb
//! commits are atomic and sequential: a crash keeps a prefix of them, never an entry without
//! the ones before it.
//!
//! Jobs hold their group weakly, and the thread drops the group before it reports, so a
//! caller that saw its write finish can close and reopen the file at once. The thread ends
//! when the store and every group of it are dropped.

use std::sync::mpsc;
use std::sync::{Arc, Weak};

use openraft::storage::IOFlushed;
use tokio::sync::oneshot;

use super::{GroupTables, META_COMMITTED, StoreError};
use crate::consensus::types::{LogId, TypeConfig};

/// An encoded log entry: its index (the key), its id, its bytes.
pub(super) type Record = (u64, LogId, Vec<u8>);

/// A write run in order on the writer thread, inside the durable transaction it is given.
pub(super) type WriteOp =
    Box<dyn FnOnce(&GroupTables, &redb::WriteTransaction) -> Result<(), StoreError> + Send>;

enum Job {
    /// Write entries durably, then report it to openraft.
    Append {
        tables: Weak<GroupTables>,
        records: Vec<Record>,
        callback: Flushed,
    },
    /// A write that must stay in order with the appends.
    Write {
        tables: Weak<GroupTables>,
        /// The table named if the commit fails.
        table: String,
        op: WriteOp,
        /// Whether it is on disk when done (else with the next durable commit).
        durable: bool,
        /// Who waits for it; without one, a failure is recorded in the group.
        reply: Option<oneshot::Sender<Result<(), StoreError>>>,
    },
    /// Reply once every job queued before it is done and on disk.
    Barrier { reply: oneshot::Sender<()> },
}

/// An append's callback that cannot be lost. Dropped without having been called (the
/// writer thread panicked with it in hand, or died and its queue was discarded with the
/// job in it), it reports an error: openraft then stops with a storage error, and the
/// daemon exits for its supervisor to restart it, instead of waiting for ever for a flush
/// that will not come while heartbeats go on as if all were well.
struct Flushed(Option<IOFlushed<TypeConfig>>);

impl Flushed {
    fn report(mut self, outcome: Result<(), std::io::Error>) {
        if let Some(callback) = self.0.take() {
            callback.io_completed(outcome);
        }
    }
}

impl Drop for Flushed {
    fn drop(&mut self) {
        if let Some(callback) = self.0.take() {
            let why = "the store's writer thread stopped before these entries were written";
            tracing::error!("{why}");
            callback.io_completed(Err(std::io::Error::other(why)));
        }
    }
}

/// Where jobs are queued. Cheap to clone; the thread ends once every clone is dropped.
#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the thread of one store file.
    pub(super) fn start(path: &std::path::Path) -> Result<Writer, StoreError> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("havip-store".into())
            .spawn(move || run(queue))
            .map_err(|e| StoreError::Task {
                path: path.to_path_buf(),
                detail: format!("cannot start the store's writer thread: {e}"),
            })?;
        Ok(Writer { jobs })
    }

    /// Queues `records` for the group's log; `callback` is called once they are on disk.
    /// On error, `callback` was called with it.
    pub(super) fn append(
        &self,
        tables: &Arc<GroupTables>,
        records: Vec<Record>,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), StoreError> {
        let job = Job::Append {
            tables: Arc::downgrade(tables),
            records,
            callback: Flushed(Some(callback)),
        };
        if let Err(mpsc::SendError(Job::Append { callback, .. })) = self.jobs.send(job) {
            callback.report(Err(std::io::Error::other(stopped(tables))));
            return Err(stopped(tables));
        }
        Ok(())
    }

    /// Runs `op` in a durable transaction on the writer thread, after every job queued
    /// before it, and waits for it.
    pub(super) async fn write(
        &self,
        tables: &Arc<GroupTables>,
        table: &str,
        op: WriteOp,
    ) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        let job = Job::Write {
            tables: Arc::downgrade(tables),
            table: table.to_string(),
            op,
            durable: true,
            reply: Some(reply),
        };
        if self.jobs.send(job).is_err() {
            return Err(stopped(tables));
        }
        done.await.unwrap_or_else(|_| Err(stopped(tables)))
    }

    /// Queues `op` in order after every job queued before it, without waiting and without
    /// an fsync of its own: it reaches the disk with the next durable commit. A failure is
    /// logged and kept in the group, for its next caller to return.
    pub(super) fn write_later(&self, tables: &Arc<GroupTables>, table: &str, op: WriteOp) {
        let job = Job::Write {
            tables: Arc::downgrade(tables),
            table: table.to_string(),
            op,
            durable: false,
            reply: None,
        };
        if self.jobs.send(job).is_err() {
            tables.record_failure(stopped(tables).to_string());
        }
    }

    /// Waits until every write queued so far is done (on disk, or failed and reported).
    pub(super) async fn drain(&self) {
        let (reply, done) = oneshot::channel();
        if self.jobs.send(Job::Barrier { reply }).is_ok() {
            let _ = done.await;
        }
    }
}

fn stopped(tables: &GroupTables) -> StoreError {
    StoreError::Task {
        path: tables.path.clone(),
        detail: "the store's writer thread stopped".into(),
    }
}

fn closed() -> StoreError {
    StoreError::Task {
        path: Default::default(),
        detail: "the group was closed before its write ran".into(),
    }
}

/// The group (and table, for errors) of the last write made without durability, until a
/// durable commit follows.
type Unsynced = Option<(Weak<GroupTables>, String)>;

fn run(queue: mpsc::Receiver<Job>) {
    let mut unsynced: Unsynced = None;
    loop {
        let first = match queue.try_recv() {
            Ok(job) => job,
            Err(_) => {
                // Nothing queued: make what was written without durability durable now,
                // so that it is on disk a flush after it was written, not whenever the next
                // append comes.
                sync_idle(unsynced.take());
                match queue.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
        };
        // Appends queued meanwhile go into the same durable commit, up to the first other
        // write, which must run after the appends queued before it and before any after it.
        let mut appends = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Append {
                    tables,
                    records,
                    callback,
                } => {
                    appends.push((tables, records, callback));
                    next = queue.try_recv().ok();
                }
                Job::Write {
                    tables,
                    table,
                    op,
                    durable,
                    reply,
                } => {
                    write_appends(std::mem::take(&mut appends), &mut unsynced);
                    let live = tables.upgrade();
                    let result = match &live {
                        Some(t) => commit(&[(t.clone(), Vec::new())], &table, Some(op), durable),
                        // Only a write nobody waits for can outlive its group (the state
                        // machine's, at shutdown): it is re-applied from the log at start.
                        None => Err(closed()),
                    };
                    match (&result, durable) {
                        (Ok(()), true) => unsynced = None,
                        (Ok(()), false) => unsynced = Some((tables.clone(), table.clone())),
                        (Err(_), _) => {}
                    }
                    // Nobody waits: the group keeps the failure for its next caller.
                    if reply.is_none()
                        && let (Err(e), Some(t)) = (&result, &live)
                    {
                        tracing::error!("{e}");
                        t.record_failure(e.to_string());
                    }
                    // Reported only now that no group is held here: see the module comment.
                    drop(live);
                    if let Some(reply) = reply {
                        // The caller may be gone (its task was cancelled); nothing to tell.
                        let _ = reply.send(result);
                    }
                }
                Job::Barrier { reply } => {
                    write_appends(std::mem::take(&mut appends), &mut unsynced);
                    sync_idle(unsynced.take());
                    let _ = reply.send(());
                }
            }
        }
        write_appends(appends, &mut unsynced);
    }
}

/// A durable commit of nothing, which persists the commits made without durability
/// before it.
fn sync_idle(unsynced: Unsynced) {
    let Some((tables, table)) = unsynced else {
        return;
    };
    let Some(tables) = tables.upgrade() else {
        return;
    };
    if let Err(e) = commit(&[(tables.clone(), Vec::new())], &table, None, true) {
        tracing::error!("{e}");
        tables.record_failure(e.to_string());
    }
}

/// One durable commit for all of `appends`, then their callbacks, in order. The commit
/// also carries what was written without durability before it, so `unsynced` is cleared.
fn write_appends(appends: Vec<(Weak<GroupTables>, Vec<Record>, Flushed)>, unsynced: &mut Unsynced) {
    if appends.is_empty() {
        return;
    }
    // Each callback with whether its group was still open.
    let mut callbacks = Vec::with_capacity(appends.len());
    let mut groups: Vec<(Arc<GroupTables>, Vec<Record>)> = Vec::new();
    for (tables, records, callback) in appends {
        let Some(tables) = tables.upgrade() else {
            callbacks.push((callback, false));
            continue;
        };
        callbacks.push((callback, true));
        match groups.iter_mut().find(|(t, _)| Arc::ptr_eq(t, &tables)) {
            Some((_, all)) => all.extend(records),
            None => groups.push((tables, records)),
        }
    }
    let result = match groups.first() {
        Some((first, _)) => {
            let table = first.log.clone();
            commit(&groups, &table, None, true)
        }
        None => Err(closed()),
    };
    if result.is_ok() {
        *unsynced = None;
    }
    // Reported only now that no group is held here: see the module comment.
    drop(groups);
    for (callback, open) in callbacks {
        let outcome = match (&result, open) {
            (_, false) => Err(std::io::Error::other(closed().to_string())),
            (Ok(()), true) => Ok(()),
            (Err(e), true) => Err(std::io::Error::other(e.to_string())),
        };
        callback.report(outcome);
    }
}

/// One transaction on the file of `groups` (all of one store): each group's appended
/// records and the committed log id saved since its last write, then `op` on the first
/// group. Durable, it also persists every commit before it. Once committed, the records
/// leave the unsynced tails (a reader finds them in the file from then on).
fn commit(
    groups: &[(Arc<GroupTables>, Vec<Record>)],
    table: &str,
    op: Option<WriteOp>,
    durable: bool,
) -> Result<(), StoreError> {
    let Some((first, _)) = groups.first() else {
        return Ok(());
    };
    let txn = first.begin_write()?;
    let mut saved = Vec::new();
    for (t, records) in groups {
        if !records.is_empty() {
            let mut log = txn
                .open_table(t.log_def())
                .map_err(t.db_err(&t.log, "opening the table"))?;
            for (index, _, bytes) in records {
                log.insert(index, bytes.as_slice())
                    .map_err(t.db_err(&t.log, "appending"))?;
            }
        }
        // openraft commits an entry once a quorum has it, possibly before this node's own
        // copy is written (a leader's slow disk): a committed id ahead of the log in the
        // file would make a restart re-apply entries the file does not have, and fail. It
        // waits, in memory, for a transaction whose log reaches it.
        if let Some(committed) = t.pending_committed()
            && t.log_reaches(&txn, committed.map(|c| c.index))?
        {
            t.put_value(&txn, &t.meta, META_COMMITTED, &committed)?;
            saved.push((t, committed));
        }
    }
    if let Some(op) = op {
        op(first, &txn)?;
    }
    if durable {
        first.commit(txn, table)?;
    } else {
        first.commit_unsynced(txn, table)?;
    }
    for (t, committed) in saved {
        t.saved_committed(committed);
    }
    for (t, records) in groups {
        t.synced(records);
    }
    Ok(())
}
