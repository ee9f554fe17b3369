//! One group's applied state (`<group>/sm`) behind openraft's `RaftStateMachine`: the
//! `GroupState`, `last_applied` and last membership are one record, written in one
//! transaction per applied batch.
//!
//! That record is queued on the store's writer thread, behind the appends, without an
//! fsync of its own, and the batch's clients are answered at once: what they wait for is
//! the commit, and a committed entry is already on a majority's disks. A crash can lose the
//! last batches' record; the entries are then applied again from the log at start (redb
//! keeps a prefix of the commits, so the record on disk never runs ahead of the log on
//! disk, and a snapshot or purge, written durably behind it, never gets ahead of it).
//! Before, a leader's slow disk made every write wait for an fsync of this record, and a
//! write forwarded from a follower gave up after 400 ms.
//!
//! Snapshots are persisted: building or installing one stores its meta and data in the same
//! table, and `get_current_snapshot` returns that stored copy (not a rebuild from the
//! current state, whose meta would differ from what openraft was told).

use std::io::{self, Cursor};
use std::sync::Arc;

use futures_util::StreamExt;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{GroupTables, SM_APPLIED, SM_SNAPSHOT_DATA, SM_SNAPSHOT_META, StoreError};
use crate::consensus::state::{CommandResult, GroupState};
use crate::consensus::types::{
    LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};

/// The state machine record, and also the content of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Applied {
    pub(crate) last_applied: Option<LogId>,
    pub(crate) last_membership: StoredMembership,
    pub(crate) state: GroupState,
}

/// The state machine of one VIP group. Holds the current record; the store's copy follows
/// in order (see the module comment).
pub struct StateMachineStore {
    tables: Arc<GroupTables>,
    applied: Applied,
    state_tx: watch::Sender<GroupState>,
}

impl StateMachineStore {
    pub(super) fn load(tables: Arc<GroupTables>) -> Result<StateMachineStore, StoreError> {
        let txn = tables.begin_read()?;
        let applied: Applied = tables
            .read_opt(&txn, &tables.sm, SM_APPLIED)?
            .unwrap_or_default();
        drop(txn);
        let (state_tx, _) = watch::channel(applied.state.clone());
        Ok(StateMachineStore {
            tables,
            applied,
            state_tx,
        })
    }

    /// The applied `GroupState`, for status and the election policy. A new value is sent
    /// after every batch that changed it.
    pub fn watch(&self) -> watch::Receiver<GroupState> {
        self.state_tx.subscribe()
    }

    /// Queues `next` as the state machine record and adopts it. Fails if an earlier
    /// record could not be written.
    fn persist(&mut self, next: Applied) -> Result<(), StoreError> {
        let t = &self.tables;
        t.failed()?;
        let bytes = t.encode(&t.sm, SM_APPLIED, &next)?;
        t.writer.write_later(
            t,
            &t.sm,
            Box::new(move |t, txn| t.put(txn, &t.sm, SM_APPLIED, &bytes)),
        );
        self.adopt(next);
        Ok(())
    }

    fn adopt(&mut self, next: Applied) {
        if next.state != self.applied.state {
            self.state_tx.send_replace(next.state.clone());
        }
        self.applied = next;
    }
}

/// Builds a snapshot from the state as it was when the builder was taken.
pub struct SnapshotBuilder {
    tables: Arc<GroupTables>,
    applied: Applied,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let t = &self.tables;
        let meta = SnapshotMeta {
            last_log_id: self.applied.last_applied,
            last_membership: self.applied.last_membership.clone(),
        };
        let data = t.encode(&t.sm, SM_SNAPSHOT_DATA, &self.applied)?;
        let meta_bytes = t.encode(&t.sm, SM_SNAPSHOT_META, &meta)?;
        let stored = data.clone();
        let built_upto = meta.last_log_id;
        // Durable, and behind the state records it was built from (see the module comment).
        t.writer
            .write(
                t,
                &t.sm,
                Box::new(move |t, txn| {
                    // An install may have stored a newer snapshot while this one was built.
                    let current: Option<SnapshotMeta> =
                        t.read_in_write(txn, &t.sm, SM_SNAPSHOT_META)?;
                    if current.is_some_and(|c| c.last_log_id > built_upto) {
                        return Ok(());
                    }
                    t.put(txn, &t.sm, SM_SNAPSHOT_META, &meta_bytes)?;
                    t.put(txn, &t.sm, SM_SNAPSHOT_DATA, &stored)
                }),
            )
            .await?;
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((
            self.applied.last_applied,
            self.applied.last_membership.clone(),
        ))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        let mut next = self.applied.clone();
        let mut responses = Vec::new();
        let mut stream_error = None;
        while let Some(item) = entries.next().await {
            let (entry, responder) = match item {
                Ok(item) => item,
                Err(err) => {
                    // Keep what was applied before the failure: it is a consistent prefix.
                    stream_error = Some(err);
                    break;
                }
            };
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::default(),
                EntryPayload::Normal(command) => next.state.apply(&command),
                EntryPayload::Membership(membership) => {
                    next.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    CommandResult::default()
                }
            };
            next.last_applied = Some(entry.log_id);
            if let Some(responder) = responder {
                responses.push((responder, result));
            }
        }
        if next.last_applied != self.applied.last_applied {
            self.persist(next)?;
        }
        for (responder, result) in responses {
            responder.send(result);
        }
        match stream_error {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            tables: self.tables.clone(),
            applied: self.applied.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let t = &self.tables;
        let data = snapshot.into_inner();
        let next: Applied = t.decode(&t.sm, "installed snapshot", &data)?;
        if next.last_applied != meta.last_log_id || next.last_membership != meta.last_membership {
            return Err(t
                .inconsistent(
                    &t.sm,
                    format!(
                        "snapshot content (last applied {:?}) does not match its meta (last log id {:?})",
                        next.last_applied, meta.last_log_id
                    ),
                )
                .into());
        }
        let applied_bytes = t.encode(&t.sm, SM_APPLIED, &next)?;
        let meta_bytes = t.encode(&t.sm, SM_SNAPSHOT_META, meta)?;
        // State, last_applied and the snapshot are replaced together, durably.
        t.writer
            .write(
                t,
                &t.sm,
                Box::new(move |t, txn| {
                    t.put(txn, &t.sm, SM_APPLIED, &applied_bytes)?;
                    t.put(txn, &t.sm, SM_SNAPSHOT_META, &meta_bytes)?;
                    t.put(txn, &t.sm, SM_SNAPSHOT_DATA, &data)
                }),
            )
            .await?;
        self.adopt(next);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let t = &self.tables;
        let txn = t.begin_read()?;
        let Some(meta) = t.read_opt::<SnapshotMeta>(&txn, &t.sm, SM_SNAPSHOT_META)? else {
            return Ok(None);
        };
        let Some(data) = t.read_raw(&txn, &t.sm, SM_SNAPSHOT_DATA)? else {
            return Err(t
                .inconsistent(&t.sm, "snapshot meta without snapshot data".to_string())
                .into());
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Cursor::new(data),
        }))
    }
}
