//! One group's Raft log and vote (`<group>/log`, `<group>/meta`) behind openraft's
//! `RaftLogStorage`. Every write is one committed transaction before it is acknowledged;
//! a read never returns a log with a hole in it.

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

    fn read_log_state(&self) -> Result<LogState, StoreError> {
        let t = &self.tables;
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
            last_log_id: last.or(purged),
        })
    }

    /// Reads entries in `range`, checking that they are contiguous and stored under their
    /// own index.
    fn read_entries(&self, range: (Bound<u64>, Bound<u64>)) -> Result<Vec<Entry>, StoreError> {
        let t = &self.tables;
        let txn = t.begin_read()?;
        let log = txn
            .open_table(t.log_def())
            .map_err(t.db_err(&t.log, "opening the table"))?;
        let mut entries: Vec<Entry> = Vec::new();
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

    /// Writes one `<group>/meta` record in its own durable transaction.
    async fn write_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = self.tables.encode(&self.tables.meta, key, value)?;
        self.tables
            .run_blocking(move |t| {
                let txn = t.begin_write()?;
                t.put(&txn, &t.meta, key, &bytes)?;
                t.commit(txn, &t.meta)
            })
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
        Ok(self.write_meta(META_VOTE, vote).await?)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        Ok(self.write_meta(META_COMMITTED, &committed).await?)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
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
        for entry in entries {
            let index = entry.log_id.index;
            records.push((index, t.encode(&t.log, &index.to_string(), &entry)?));
        }
        let result = self
            .tables
            .run_blocking(move |t| {
                let txn = t.begin_write()?;
                {
                    let mut log = txn
                        .open_table(t.log_def())
                        .map_err(t.db_err(&t.log, "opening the table"))?;
                    for (index, bytes) in &records {
                        log.insert(index, bytes.as_slice())
                            .map_err(t.db_err(&t.log, "appending"))?;
                    }
                }
                t.commit(txn, &t.log)
            })
            .await;
        // The callback reports durability, so it runs only after the commit returned.
        match result {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(err) => {
                let message = err.to_string();
                callback.io_completed(Err(io::Error::other(message)));
                Err(err.into())
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = match &last_log_id {
            Some(log_id) => Bound::Excluded(log_id.index),
            None => Bound::Unbounded,
        };
        Ok(self
            .tables
            .run_blocking(move |t| {
                let txn = t.begin_write()?;
                {
                    let mut log = txn
                        .open_table(t.log_def())
                        .map_err(t.db_err(&t.log, "opening the table"))?;
                    log.retain_in::<u64, _>((from, Bound::Unbounded), |_, _| false)
                        .map_err(t.db_err(&t.log, "truncating"))?;
                }
                t.commit(txn, &t.log)
            })
            .await?)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let t = &self.tables;
        let bytes = t.encode(&t.meta, META_PURGED, &log_id)?;
        Ok(self
            .tables
            .run_blocking(move |t| {
                let txn = t.begin_write()?;
                // The purged pointer and the deletion go together, so the log state read
                // after a crash never claims entries that are gone or hides ones that exist.
                let previous: Option<LogId> = t.read_in_write(&txn, &t.meta, META_PURGED)?;
                if previous.as_ref().is_some_and(|p| p >= &log_id) {
                    return Ok(());
                }
                t.put(&txn, &t.meta, META_PURGED, &bytes)?;
                {
                    let mut log = txn
                        .open_table(t.log_def())
                        .map_err(t.db_err(&t.log, "opening the table"))?;
                    log.retain_in::<u64, _>(..=log_id.index, |_, _| false)
                        .map_err(t.db_err(&t.log, "purging"))?;
                }
                t.commit(txn, &t.log)
            })
            .await?)
    }
}
