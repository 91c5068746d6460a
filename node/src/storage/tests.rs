//! openraft's storage test suite against the real redb store, plus durability checks.

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftLogReader, StorageError};

use super::*;
use crate::NodeId;
use crate::raft::{BatchResult, Command, CommandBatch, CommandResult, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StorageMetrics::unregistered().expect("metrics")).expect("open");
        // A group id other than 0, so keys of other groups cannot mask mistakes.
        Ok((dir, store.log_store(7), store.state_machine(7).expect("sm")))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

fn entry(index: u64, commands: Vec<Command>) -> openraft::Entry<TypeConfig> {
    openraft::Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(CommandBatch(commands)),
    }
}

#[tokio::test]
async fn groups_are_isolated_and_state_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path(), StorageMetrics::unregistered().expect("m")).expect("open");
        let mut a = store.state_machine(1).expect("sm");
        let mut b = store.state_machine(2).expect("sm");
        let inc = |by| Command::CounterIncrement { name: "x".into(), by };
        let r = a.apply(vec![entry(1, vec![inc(2), inc(3)])]).await.expect("apply");
        assert_eq!(r, vec![BatchResult(vec![CommandResult::Value(2), CommandResult::Value(5)])]);
        let r = b
            .apply(vec![entry(1, vec![Command::CounterReserve { name: "x".into(), count: 1000 }])])
            .await
            .expect("apply");
        assert_eq!(r, vec![BatchResult(vec![CommandResult::Value(1)])]);
        let r = b
            .apply(vec![entry(2, vec![Command::CounterReserve { name: "x".into(), count: 1000 }])])
            .await
            .expect("apply");
        assert_eq!(r, vec![BatchResult(vec![CommandResult::Value(1001)])]);
        // Any durable log write also makes the state-machine commits before it durable.
        store.log_store(1).save_vote(&openraft::Vote::new(1, 1)).await.expect("vote");
    }
    let store = Store::open(dir.path(), StorageMetrics::unregistered().expect("m")).expect("reopen");
    assert_eq!(store.counter(1, "x").expect("read"), 5);
    assert_eq!(store.counter(2, "x").expect("read"), 2000);
    let r = store
        .state_machine(1)
        .expect("sm")
        .apply(vec![entry(2, vec![Command::CounterIncrement { name: "x".into(), by: u64::MAX }])])
        .await
        .expect("apply");
    assert!(matches!(r[0].0[0], CommandResult::Rejected { .. }), "overflow is refused");
    assert_eq!(store.counter(1, "x").expect("read"), 5);
    let mut log = store.log_store(1);
    assert!(log.try_get_log_entries(0..10).await.expect("read").is_empty());
    assert!(log.get_log_state().await.expect("state").last_log_id.is_none());
}

#[tokio::test]
async fn applied_rows_are_readable_at_once_and_in_snapshots() {
    use openraft::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StorageMetrics::unregistered().expect("m")).expect("open");
    let mut sm = store.state_machine(3).expect("sm");
    let inc = Command::CounterIncrement { name: "x".into(), by: 7 };
    sm.apply(vec![entry(1, vec![inc])]).await.expect("apply");
    // Applied rows live in the writer's overlay until the next transaction; reads see them.
    assert_eq!(store.counter(3, "x").expect("read"), 7);
    // A snapshot built at once holds them: building flushes the overlay first.
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.expect("snapshot");
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(1));
    let other = tempfile::tempdir().expect("tempdir");
    let fresh = Store::open(other.path(), StorageMetrics::unregistered().expect("m")).expect("open");
    let mut target = fresh.state_machine(3).expect("sm");
    target.install_snapshot(&snap.meta, snap.snapshot).await.expect("install");
    assert_eq!(fresh.counter(3, "x").expect("read"), 7);
    let (applied, _) = target.applied_state().await.expect("applied");
    assert_eq!(applied.map(|l| l.index), Some(1));
}

#[tokio::test]
async fn service_records_are_created_once_replaced_by_compare_and_set_and_travel_in_snapshots() {
    use openraft::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StorageMetrics::unregistered().expect("m")).expect("open");
    let mut sm = store.state_machine(2).expect("sm");
    let create = |v: &[u8]| Command::RecordCreate { key: "url/abc".into(), value: v.to_vec() };
    let replace = |expected: &[u8], v: &[u8]| Command::RecordReplace {
        key: "url/abc".into(),
        expected: expected.to_vec(),
        value: v.to_vec(),
    };
    let clicks = |n| Command::ClicksAdd { code: "abc".into(), days: vec![(20_000, n)], referrers: vec![] };
    let r = sm
        .apply(vec![entry(1, vec![create(b"one"), create(b"two"), replace(b"two", b"x"), replace(b"one", b"three")])])
        .await
        .expect("apply");
    let results = &r[0].0;
    assert_eq!(results[0], CommandResult::Value(1));
    assert!(matches!(results[1], CommandResult::Rejected { .. }), "create-if-absent refuses an existing key");
    assert!(matches!(results[2], CommandResult::Rejected { .. }), "a stale compare-and-set is refused");
    assert_eq!(results[3], CommandResult::Value(1));
    assert!(matches!(
        sm.apply(vec![entry(
            2,
            vec![Command::RecordReplace { key: "url/none".into(), expected: vec![], value: vec![1] }]
        )])
        .await
        .expect("apply")[0]
            .0[0],
        CommandResult::Rejected { .. }
    ));
    let r = sm.apply(vec![entry(3, vec![clicks(2), clicks(3)])]).await.expect("apply");
    assert_eq!(r[0].0, vec![CommandResult::Value(2), CommandResult::Value(5)]);
    assert_eq!(store.record(2, "url/abc").expect("read"), Some(b"three".to_vec()));
    assert_eq!(store.record(1, "url/abc").expect("read"), None, "records are per group");
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.expect("snapshot");
    let other = tempfile::tempdir().expect("tempdir");
    let fresh = Store::open(other.path(), StorageMetrics::unregistered().expect("m")).expect("open");
    fresh.state_machine(2).expect("sm").install_snapshot(&snap.meta, snap.snapshot).await.expect("install");
    assert_eq!(fresh.record(2, "url/abc").expect("read"), Some(b"three".to_vec()));
    let clicked = fresh.record(2, "clicks/abc").expect("read").expect("clicks");
    assert_eq!(records::decode::<records::ClickRec>(&clicked).expect("decode").total, 5);
    store.drop_group(2).await.expect("drop");
    assert_eq!(store.record(2, "url/abc").expect("read"), None, "a dropped group's records are gone");
}

#[tokio::test]
async fn a_dropped_group_leaves_nothing_and_other_groups_untouched() {
    use openraft::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StorageMetrics::unregistered().expect("m")).expect("open");
    let inc = || Command::CounterIncrement { name: "x".into(), by: 1 };
    for group in [4, 5] {
        let mut log = store.log_store(group);
        log.save_vote(&openraft::Vote::new(1, 1)).await.expect("vote");
        // Log entries written as the writer writes them (openraft's flush callback cannot be
        // made outside openraft).
        let txn = store.db().begin_write().expect("txn");
        {
            let mut logs = txn.open_table(LOGS).expect("logs");
            for index in [1, 2] {
                let bytes = records::encode(&records::EntryRec::from(&entry(index, vec![inc()]))).expect("encode");
                logs.insert((group, index), bytes.as_slice()).expect("insert");
            }
        }
        txn.commit().expect("commit");
        let mut sm = store.state_machine(group).expect("sm");
        sm.apply(vec![entry(1, vec![inc()]), entry(2, vec![inc()])]).await.expect("apply");
        sm.get_snapshot_builder().await.build_snapshot().await.expect("snapshot");
        // One more row only in the overlay: dropping must not write it back.
        sm.apply(vec![entry(3, vec![inc()])]).await.expect("apply");
    }
    assert!(store.group_snapshot_dir(4).exists());
    store.drop_group(4).await.expect("drop");
    assert!(!store.group_snapshot_dir(4).exists(), "snapshots deleted");
    store.log_store(5).save_vote(&openraft::Vote::new(2, 1)).await.expect("a later commit");
    assert_eq!(store.counter(4, "x").expect("read"), 0);
    assert_eq!(store.counter(5, "x").expect("read"), 3);
    assert!(!store.stored_groups().expect("groups").contains(&4));
    assert!(store.stored_groups().expect("groups").contains(&5));
    let mut dropped = store.log_store(4);
    assert!(dropped.try_get_log_entries(0..10).await.expect("read").is_empty());
    assert!(dropped.read_vote().await.expect("vote").is_none());
    let (applied, _) = store.state_machine(4).expect("sm").applied_state().await.expect("applied");
    assert_eq!(applied, None);
    let mut kept = store.log_store(5);
    assert_eq!(kept.try_get_log_entries(0..10).await.expect("read").len(), 2);
}
