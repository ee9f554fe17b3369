//! The store against openraft's own conformance suite, plus what havip adds: restarts,
//! several groups in one file, pristine detection, locking.

use std::collections::BTreeSet;
use std::io;
use std::time::Duration;

use futures_util::stream;
use openraft::entry::RaftEntry;
use openraft::storage::{
    IOFlushed, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{Membership, StorageError};
use tempfile::TempDir;

use super::{LogStore, StateMachineStore, Store, StoreError};
use crate::consensus::state::{Command, GroupState, NodeFacts};
use crate::consensus::types::{Entry, LogId, StoredMembership, TypeConfig, Vote};

struct TempStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir =
            TempDir::new().map_err(|e| StorageError::write(TypeConfig::err_from_error(&e)))?;
        let store = Store::open(dir.path())
            .map_err(|e| StorageError::write(TypeConfig::err_from_error(&e)))?;
        let (log, sm) = store
            .group("conformance")
            .map_err(|e| StorageError::write(TypeConfig::err_from_error(&e)))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_openraft_log_store_suite() {
    Suite::test_all(TempStoreBuilder)
        .await
        .expect("openraft storage conformance suite");
}

fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id::<TypeConfig>(term, 1, index)
}

fn command(i: u64) -> Command {
    Command::ReportFacts {
        node: format!("gw-{}", i % 3),
        facts: NodeFacts {
            role: crate::config::Role::Gateway,
            priority: 100,
            healthy: i.is_multiple_of(2),
            link_up: true,
            detail: format!("probe {i}"),
        },
        at_unix_ms: i,
    }
}

async fn append(log: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await
        .expect("append callback called")
        .expect("append durable");
}

async fn apply(sm: &mut StateMachineStore, entries: Vec<Entry>) {
    let items: Vec<Result<_, io::Error>> = entries.into_iter().map(|e| Ok((e, None))).collect();
    sm.apply(stream::iter(items)).await.expect("apply");
}

fn sample_entries() -> Vec<Entry> {
    vec![
        Entry::new_membership(
            log_id(1, 1),
            Membership::new_with_defaults(vec![BTreeSet::from([1, 2])], []),
        ),
        Entry::new_blank(log_id(1, 2)),
        Entry::new_normal(log_id(1, 3), command(3)),
        Entry::new_normal(log_id(1, 4), command(4)),
        Entry::new_normal(
            log_id(1, 5),
            Command::Pin {
                node: Some("gw-b".into()),
                at_unix_ms: 5,
            },
        ),
    ]
}

fn expected_state() -> GroupState {
    let mut state = GroupState::default();
    state.apply(&command(3));
    state.apply(&command(4));
    state.apply(&Command::Pin {
        node: Some("gw-b".into()),
        at_unix_ms: 5,
    });
    state
}

#[tokio::test]
async fn restart_returns_the_same_vote_log_and_state() {
    let dir = TempDir::new().expect("tempdir");
    let vote = Vote::new(3, 1);
    let snapshot_meta;
    {
        let store = Store::open(dir.path()).expect("open");
        let (mut log, mut sm) = store.group("crm").expect("group");
        log.save_vote(&vote).await.expect("save vote");
        append(&mut log, sample_entries()).await;
        log.save_committed(Some(log_id(1, 5)))
            .await
            .expect("save committed");
        let mut watch = sm.watch();
        apply(&mut sm, sample_entries()).await;
        assert!(
            watch.has_changed().expect("sender alive"),
            "apply that changed state notifies"
        );
        assert_eq!(*watch.borrow_and_update(), expected_state());
        let mut builder = sm.get_snapshot_builder().await;
        snapshot_meta = builder.build_snapshot().await.expect("build snapshot").meta;
        log.purge(log_id(1, 2)).await.expect("purge");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let (mut log, mut sm) = store.group("crm").expect("group after reopen");
    assert_eq!(log.read_vote().await.expect("vote"), Some(vote));
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(1, 5))
    );
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(1, 5)));
    let entries = log.try_get_log_entries(0..).await.expect("entries");
    assert_eq!(entries, sample_entries()[2..].to_vec());
    let (applied, membership) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(1, 5)));
    assert_eq!(
        membership,
        StoredMembership::new(
            Some(log_id(1, 1)),
            Membership::new_with_defaults(vec![BTreeSet::from([1, 2])], [])
        )
    );
    assert_eq!(*sm.watch().borrow(), expected_state());
    let snapshot = sm
        .get_current_snapshot()
        .await
        .expect("snapshot")
        .expect("a snapshot was built");
    assert_eq!(snapshot.meta, snapshot_meta);
}

#[tokio::test]
async fn installed_snapshot_replaces_the_state() {
    let dir = TempDir::new().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (mut log_a, mut sm_a) = store.group("a").expect("group a");
    append(&mut log_a, sample_entries()).await;
    apply(&mut sm_a, sample_entries()).await;
    let snapshot = sm_a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");

    let (_log_b, mut sm_b) = store.group("b").expect("group b");
    apply(
        &mut sm_b,
        vec![Entry::new_normal(
            log_id(1, 1),
            Command::Pin {
                node: None,
                at_unix_ms: 1,
            },
        )],
    )
    .await;
    let watch = sm_b.watch();
    sm_b.install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(*watch.borrow(), expected_state());
    assert_eq!(
        sm_b.applied_state().await.expect("applied").0,
        Some(log_id(1, 5))
    );
    drop((_log_b, sm_b));
    let (_log_b, mut sm_b) = store.group("b").expect("group b again");
    assert_eq!(*sm_b.watch().borrow(), expected_state());
    let current = sm_b
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("installed snapshot kept");
    assert_eq!(current.meta, snapshot.meta);
}

#[tokio::test]
async fn groups_in_one_file_do_not_see_each_other() {
    let dir = TempDir::new().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (mut crm_log, mut crm_sm) = store.group("crm").expect("crm");
    let (mut web_log, mut web_sm) = store.group("web").expect("web");
    crm_log.save_vote(&Vote::new(7, 2)).await.expect("vote");
    append(&mut crm_log, sample_entries()).await;
    apply(&mut crm_sm, sample_entries()).await;

    assert_eq!(web_log.read_vote().await.expect("web vote"), None);
    assert_eq!(
        web_log.get_log_state().await.expect("web log").last_log_id,
        None
    );
    assert!(
        web_log
            .try_get_log_entries(0..)
            .await
            .expect("web entries")
            .is_empty()
    );
    assert_eq!(web_sm.applied_state().await.expect("web applied").0, None);
    assert_eq!(*web_sm.watch().borrow(), GroupState::default());
    assert!(
        web_sm
            .get_current_snapshot()
            .await
            .expect("web snapshot")
            .is_none()
    );
    assert!(store.is_pristine("web").expect("web pristine"));
    assert!(!store.is_pristine("crm").expect("crm pristine"));
}

#[tokio::test]
async fn pristine_until_a_vote_or_log_is_written() {
    let dir = TempDir::new().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert!(store.is_pristine("crm").expect("never opened"));
    let (mut log, _sm) = store.group("crm").expect("group");
    assert!(store.is_pristine("crm").expect("opened, nothing written"));
    log.save_vote(&Vote::new(1, 1)).await.expect("vote");
    assert!(!store.is_pristine("crm").expect("voted"));

    let (mut log2, _sm2) = store.group("web").expect("group");
    append(&mut log2, vec![Entry::new_blank(log_id(1, 1))]).await;
    assert!(!store.is_pristine("web").expect("has a log"));
}

#[tokio::test]
async fn a_dropped_group_is_pristine_and_the_others_are_untouched() {
    let dir = TempDir::new().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (mut crm, crm_sm) = store.group("crm").expect("crm");
    append(&mut crm, sample_entries()).await;
    let (mut web, web_sm) = store.group("web").expect("web");
    append(&mut web, vec![Entry::new_blank(log_id(1, 1))]).await;
    let refused = store.drop_group("web").await;
    assert!(
        matches!(refused, Err(StoreError::GroupInUse { .. })),
        "an open group must not be dropped: {refused:?}"
    );
    drop((web, web_sm));
    store.drop_group("web").await.expect("drop web");
    assert!(store.is_pristine("web").expect("web"));
    assert!(!store.is_pristine("crm").expect("crm"));
    drop((crm, crm_sm));
    drop(store);
    // Reopened from disk: the drop was durable, the other group intact.
    let store = Store::open(dir.path()).expect("reopen");
    assert!(store.is_pristine("web").expect("web after reopen"));
    assert!(!store.is_pristine("crm").expect("crm after reopen"));
    let (_web, _web_sm) = store.group("web").expect("web opens again");
}

#[test]
fn a_group_is_open_once_and_reopens_after_drop() {
    let dir = TempDir::new().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let first = store.group("crm").expect("first open");
    let err = store.group("crm").err().expect("second open must fail");
    assert!(matches!(err, StoreError::GroupInUse { .. }), "{err}");
    drop(first);
    store.group("crm").expect("reopen after drop");
    assert!(matches!(
        store.group("a/b"),
        Err(StoreError::GroupName { .. })
    ));
    assert!(matches!(store.group(""), Err(StoreError::GroupName { .. })));
}

#[test]
fn second_open_of_a_data_dir_names_it() {
    let dir = TempDir::new().expect("tempdir");
    let _store = Store::open(dir.path()).expect("open");
    let err = Store::open(dir.path()).expect_err("second open must fail");
    let message = err.to_string();
    assert!(matches!(err, StoreError::Locked { .. }), "{message}");
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("another havip"), "{message}");
}

#[test]
fn data_dir_is_created_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().expect("tempdir");
    let data_dir = dir.path().join("var/lib/havip");
    Store::open(&data_dir).expect("open");
    let mode = std::fs::metadata(&data_dir)
        .expect("dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700);
    let mode = std::fs::metadata(data_dir.join(super::FILE_NAME))
        .expect("file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn a_hole_in_the_log_is_an_error_not_a_short_read() {
    let dir = TempDir::new().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (mut log, _sm) = store.group("crm").expect("group");
    append(&mut log, vec![Entry::new_blank(log_id(1, 1))]).await;
    append(&mut log, vec![Entry::new_blank(log_id(1, 3))]).await;
    let err = log
        .try_get_log_entries(0..)
        .await
        .expect_err("hole must be reported");
    assert!(err.to_string().contains("hole"), "{err}");
}

#[tokio::test]
async fn appends_are_readable_at_once_and_reported_durable_in_order() {
    let dir = TempDir::new().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (mut log, _sm) = store.group("crm").expect("group");
    let entries = sample_entries();
    let (tx_first, mut first) = TypeConfig::oneshot();
    log.append(entries[..3].to_vec(), IOFlushed::signal(tx_first))
        .await
        .expect("append");
    // Readable before it is reported durable: openraft replicates from the store at once.
    let read = log.try_get_log_entries(1..4).await.expect("read");
    assert_eq!(read, entries[..3].to_vec());
    let (tx_second, mut second) = TypeConfig::oneshot();
    log.append(entries[3..].to_vec(), IOFlushed::signal(tx_second))
        .await
        .expect("append");
    // A truncation queued after both appends runs after both were reported: a flush is
    // never reported after a later write.
    log.truncate_after(Some(log_id(1, 4)))
        .await
        .expect("truncate");
    first
        .try_recv()
        .expect("first append reported before the truncation returned")
        .expect("durable");
    second
        .try_recv()
        .expect("second append reported before the truncation returned")
        .expect("durable");
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_log_id, Some(log_id(1, 4)));
    // Empty and reversed ranges read nothing, from the tail or the file.
    let (tx_third, _third) = TypeConfig::oneshot();
    log.append(vec![entries[4].clone()], IOFlushed::signal(tx_third))
        .await
        .expect("append");
    for (from, to) in [(5, 5), (5, 4), (3, 1)] {
        let read = log.try_get_log_entries(from..to).await.expect("read");
        assert!(read.is_empty(), "{from}..{to}: {read:?}");
    }
    let across = log.try_get_log_entries(2..).await.expect("read");
    assert_eq!(across, entries[1..].to_vec(), "file and tail, contiguous");
}

#[tokio::test]
async fn committed_is_read_back_before_and_after_it_reaches_the_disk() {
    let dir = TempDir::new().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        let (mut log, _sm) = store.group("crm").expect("group");
        append(&mut log, sample_entries()[..2].to_vec()).await;
        log.save_committed(Some(log_id(1, 2)))
            .await
            .expect("save committed");
        assert_eq!(
            log.read_committed().await.expect("read"),
            Some(log_id(1, 2)),
            "kept in memory until the next durable commit"
        );
        // The next durable write carries it to the disk.
        log.save_vote(&Vote::new(1, 1)).await.expect("vote");
    }
    let store = Store::open(dir.path()).expect("reopen");
    let (mut log, _sm) = store.group("crm").expect("group");
    assert_eq!(
        log.read_committed().await.expect("read"),
        Some(log_id(1, 2))
    );
    assert!(
        store.disk_stats().commits >= 1,
        "durable commits are counted: {:?}",
        store.disk_stats()
    );
}

#[tokio::test]
async fn applied_state_is_written_behind_the_apply_and_on_disk_after_a_drain() {
    let dir = TempDir::new().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("open");
        let (mut log, mut sm) = store.group("crm").expect("group");
        append(&mut log, sample_entries()).await;
        apply(&mut sm, sample_entries()).await;
        // Answered at once, from memory; the writer thread writes it in order.
        assert_eq!(*sm.watch().borrow(), expected_state());
        store.drain().await;
    }
    let store = Store::open(dir.path()).expect("reopen");
    let (_log, mut sm) = store.group("crm").expect("group");
    let (applied, _) = sm.applied_state().await.expect("applied state");
    assert_eq!(applied, Some(log_id(1, 5)));
    assert_eq!(*sm.watch().borrow(), expected_state());
}

/// Appends `entries` to the log in `dir`, saves committed = 5 and a vote (a durable write,
/// which carries the committed id if it may), closes the store, and returns the committed
/// id the store reads back after reopening.
async fn committed_after_reopen(dir: &std::path::Path, entries: &[Entry]) -> Option<LogId> {
    {
        let store = Store::open(dir).expect("open");
        let (mut log, _sm) = store.group("crm").expect("group");
        append(&mut log, entries.to_vec()).await;
        log.save_committed(Some(log_id(1, 5)))
            .await
            .expect("save committed");
        log.save_vote(&Vote::new(1, 1)).await.expect("vote");
    }
    let store = Store::open(dir).expect("reopen");
    let (mut log, _sm) = store.group("crm").expect("group");
    log.read_committed().await.expect("read")
}

#[tokio::test]
async fn a_committed_id_ahead_of_the_written_log_waits_for_it() {
    // A leader may learn an entry is committed (a quorum has it) before its own copy is
    // written: the id must not reach the file before the entry does.
    let dir = TempDir::new().expect("tempdir");
    let entries = sample_entries();
    assert_eq!(
        committed_after_reopen(dir.path(), &entries[..3]).await,
        None,
        "entries 4 and 5 were not written, so committed 5 was not either"
    );
    assert_eq!(
        committed_after_reopen(dir.path(), &entries[3..]).await,
        Some(log_id(1, 5))
    );
}

#[tokio::test]
async fn an_append_behind_a_writer_that_panicked_is_reported_failed_not_lost() {
    let dir = TempDir::new().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let (mut log, _sm) = store.group("crm").expect("group");
    let tables = log.tables().clone();
    tables.writer.write_later(
        &tables,
        "test",
        Box::new(|_, _| panic!("a bug in a write (this test's panic)")),
    );
    let (tx, rx) = TypeConfig::oneshot();
    // Queued before or after the thread died: either way its callback must be called.
    let _ = log
        .append(vec![Entry::new_blank(log_id(1, 1))], IOFlushed::signal(tx))
        .await;
    let outcome = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("the callback was called, not dropped")
        .expect("the callback sent its outcome");
    let err = outcome.expect_err("nothing was written");
    assert!(err.to_string().contains("writer thread stopped"), "{err}");
}
