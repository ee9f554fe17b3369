//! One group's Raft log and vote (`<group>/log`, `<group>/meta`) behind openraft's
//! `RaftLogStorage`. An append is readable when `append` returns and reported durable by its
//! callback once the writer thread has synced it (see `writer`); a vote, truncation or purge
//! is durable when its call returns; a read never returns a log with a hole in it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::OptionalSend;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use redb::ReadableTable;

use super::{GroupTables, META_COMMITTED, META_PURGED, META_VOTE, StoreError};
use crate::consensus::types::{Entry, LogId, LogState, TypeConfig, Vote};

/// The log store of one VIP group. Cheap to clone; the clone is its own log reader.
#[derive(Clone)]
pub struct LogStore {
    tables: Arc<GroupTables>,
}

impl LogStore {
    pub(super) fn new(tables: Arc<GroupTables>) -> LogStore {
        LogStore { tables }
    }

    #[cfg(test)]
    pub(super) fn tables(&self) -> &Arc<GroupTables> {
        &self.tables
    }

    fn read_log_state(&self) -> Result<LogState, StoreError> {
        let t = &self.tables;
        // The tail first, then the file: an entry the writer moves in between is then seen
        // in the file (it leaves the tail only after its commit).
        let last_unsynced = t.unsynced().last_key_value().map(|(_, e)| e.log_id);
        let txn = t.begin_read()?;
        let purged: Option<LogId> = t.read_opt(&txn, &t.meta, META_PURGED)?;
        let log = txn
            .open_table(t.log_def())
            .map_err(t.db_err(&t.log, "opening the table"))?;
        let last = match log
            .last()
            .map_err(t.db_err(&t.log, "reading the last entry"))?
        {
            Some((key, value)) => {
                let index = key.value();
                let entry: Entry = t.decode(&t.log, &index.to_string(), value.value())?;
                Some(entry.log_id)
            }
            None => None,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last_unsynced.or(last).or(purged),
        })
    }

    /// Reads entries in `range`, from the unsynced tail and, below it, the file, checking
    /// that they are contiguous and stored under their own index.
    fn read_entries(&self, range: (Bound<u64>, Bound<u64>)) -> Result<Vec<Entry>, StoreError> {
        let t = &self.tables;
        let first_wanted = match range.0 {
            Bound::Included(i) => i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let past_wanted = match range.1 {
            Bound::Included(i) => i.checked_add(1),
            Bound::Excluded(i) => Some(i),
            Bound::Unbounded => None,
        };
        // An empty or reversed range reads nothing (`BTreeMap::range` would panic on it).
        if past_wanted.is_some_and(|past| past <= first_wanted) {
            return Ok(Vec::new());
        }
        // The tail first, then the file (see `read_log_state`).
        let (tail_start, mut merged): (Option<u64>, BTreeMap<u64, Entry>) = {
            let unsynced = t.unsynced();
            let start = unsynced.first_key_value().map(|(index, _)| *index);
            let in_range = unsynced
                .range::<u64, _>(range)
                .map(|(index, entry)| (*index, entry.clone()))
                .collect();
            (start, in_range)
        };
        // Recent entries (what replication and the state machine ask for) come from memory
        // alone, without waiting on the file.
        if tail_start.is_none_or(|start| first_wanted < start) {
            let txn = t.begin_read()?;
            let log = txn
                .open_table(t.log_def())
                .map_err(t.db_err(&t.log, "opening the table"))?;
            for item in log
                .range::<u64>(range)
                .map_err(t.db_err(&t.log, "reading a range"))?
            {
                let (key, value) = item.map_err(t.db_err(&t.log, "reading a range"))?;
                let index = key.value();
                let entry: Entry = t.decode(&t.log, &index.to_string(), value.value())?;
                if entry.log_id.index != index {
                    return Err(t.inconsistent(
                        &t.log,
                        format!("entry {} is stored under index {index}", entry.log_id),
                    ));
                }
                // Written meanwhile: the tail's copy is the same entry.
                merged.entry(index).or_insert(entry);
            }
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(merged.len());
        for (index, entry) in merged {
            if let Some(prev) = entries.last()
                && prev.log_id.index + 1 != index
            {
                return Err(t.inconsistent(
                    &t.log,
                    format!(
                        "hole in the log between index {} and {index}",
                        prev.log_id.index
                    ),
                ));
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let t = &self.tables;
        let txn = t.begin_read()?;
        t.read_opt(&txn, &t.meta, key)
    }

    /// Runs `op` in a durable transaction on the writer thread, in order with the flushes
    /// of earlier appends.
    async fn write_in_order<F>(&self, table: &str, op: F) -> Result<(), StoreError>
    where
        F: FnOnce(&GroupTables, &redb::WriteTransaction) -> Result<(), StoreError> + Send + 'static,
    {
        self.tables
            .writer
            .write(&self.tables, table, Box::new(op))
            .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        Ok(self.read_entries(bounds)?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.read_meta(META_VOTE)?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState, io::Error> {
        Ok(self.read_log_state()?)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = self.tables.encode(&self.tables.meta, META_VOTE, vote)?;
        let table = self.tables.meta.clone();
        Ok(self
            .write_in_order(&table, move |t, txn| t.put(txn, &t.meta, META_VOTE, &bytes))
            .await?)
    }

    /// Kept in memory and written with the next durable commit (see `GroupTables`): this
    /// runs on openraft's core after every commit, and must not wait for a disk.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.tables.set_pending_committed(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        if let Some(pending) = self.tables.pending_committed() {
            return Ok(pending);
        }
        // Stored as `Option<LogId>`, so an absent key and a saved `None` both read as None.
        Ok(self.read_meta::<Option<LogId>>(META_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let t = &self.tables;
        let mut records = Vec::new();
        let mut tail = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            records.push((
                index,
                entry.log_id,
                t.encode(&t.log, &index.to_string(), &entry)?,
            ));
            tail.push(entry);
        }
        // Readable from memory once this returns; written and made durable by the writer
        // thread, which then calls `callback`. Nothing here waits for the disk.
        {
            let mut unsynced = t.unsynced();
            for entry in tail {
                unsynced.insert(entry.log_id.index, entry);
            }
        }
        Ok(t.writer.append(t, records, callback)?)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = match &last_log_id {
            Some(log_id) => Bound::Excluded(log_id.index),
            None => Bound::Unbounded,
        };
        let table = self.tables.log.clone();
        Ok(self
            .write_in_order(&table, move |t, txn| {
                // Earlier appends were written before this runs; whatever is left of the
                // tail beyond the cut goes too.
                t.unsynced().retain(|index, _| match from {
                    Bound::Excluded(keep) => *index <= keep,
                    _ => false,
                });
                let mut log = txn
                    .open_table(t.log_def())
                    .map_err(t.db_err(&t.log, "opening the table"))?;
                log.retain_in::<u64, _>((from, Bound::Unbounded), |_, _| false)
                    .map_err(t.db_err(&t.log, "truncating"))
            })
            .await?)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let t = &self.tables;
        let bytes = t.encode(&t.meta, META_PURGED, &log_id)?;
        let table = self.tables.log.clone();
        Ok(self
            .write_in_order(&table, move |t, txn| {
                // The purged pointer and the deletion go together, so the log state read
                // after a crash never claims entries that are gone or hides ones that exist.
                let previous: Option<LogId> = t.read_in_write(txn, &t.meta, META_PURGED)?;
                if previous.as_ref().is_some_and(|p| p >= &log_id) {
                    return Ok(());
                }
                t.put(txn, &t.meta, META_PURGED, &bytes)?;
                let mut log = txn
                    .open_table(t.log_def())
                    .map_err(t.db_err(&t.log, "opening the table"))?;
                log.retain_in::<u64, _>(..=log_id.index, |_, _| false)
                    .map_err(t.db_err(&t.log, "purging"))
            })
            .await?)
    }
}
