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
