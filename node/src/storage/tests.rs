//! openraft's storage test suite against the real redb store, plus durability checks.

use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, RaftLogReader, StorageError};

use super::entry::{
    BatchResult, Command, CommandBatch, CommandResult, CommittedLeaderId, Entry, LogId, MetaCommand, MetaResult,
    Refusal, TypeConfig, Vote,
};
use super::*;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        // A group id other than 0, so keys of other groups cannot mask mistakes.
        Ok((dir, store.log_store(7), store.state_machine(7).expect("sm")))
    }
}

/// openraft's own suite (`openraft::testing::log::Suite`): log and state-machine semantics,
/// initial state and re-apply after restart, snapshots built and installed across stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder).await.expect("openraft storage suite");
}

fn log_id(index: u64) -> LogId {
    LogId { leader_id: CommittedLeaderId { term: 1, node_id: 1 }, index }
}

fn entry(index: u64, commands: Vec<Command>) -> Entry {
    Entry { log_id: log_id(index), payload: EntryPayload::Normal(CommandBatch(commands)) }
}

/// Appends `entries` to `log` and waits until they are durable.
async fn append(log: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = TypeConfig::oneshot();
    log.append(entries, IOFlushed::signal(tx)).await.expect("append");
    rx.await.expect("callback").expect("durable");
}

/// A service for storage tests, speaking plain bytes: `a` + 8-byte amount + key adds to the
/// number under the key (answers the new value; `overflow` when it would pass `u64::MAX`), `d` + key deletes
/// it; queries: `g` + key reads one, `s` + prefix lists the keys under it.
struct TestServices;

const ADDER: ServiceId = 7;
const OTHER: ServiceId = 8;

fn value(kv: &dyn KvRead, key: &[u8]) -> Result<Option<u64>, StoreError> {
    Ok(kv.get(key)?.map(|b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]))))
}

impl Dispatch for TestServices {
    fn apply(&self, service: ServiceId, kv: &mut dyn Kv, command: &[u8]) -> Result<Handled, StoreError> {
        if service != ADDER && service != OTHER {
            return Ok(Handled::UnknownService);
        }
        Ok(match command.split_first() {
            Some((b'a', rest)) if rest.len() >= 8 => {
                let (by, key) = rest.split_at(8);
                let by = u64::from_be_bytes(by.try_into().unwrap_or([0; 8]));
                match value(kv, key)?.unwrap_or(0).checked_add(by) {
                    Some(next) => {
                        kv.put(key, next.to_be_bytes().to_vec());
                        Handled::Done(next.to_be_bytes().to_vec())
                    }
                    None => Handled::Done(b"overflow".to_vec()),
                }
            }
            Some((b'd', key)) => {
                kv.delete(key);
                Handled::Done(Vec::new())
            }
            _ => Handled::BadPayload,
        })
    }

    fn query(&self, service: ServiceId, kv: &dyn KvRead, query: &[u8]) -> Result<Handled, StoreError> {
        if service != ADDER && service != OTHER {
            return Ok(Handled::UnknownService);
        }
        Ok(match query.split_first() {
            Some((b'g', key)) => Handled::Done(kv.get(key)?.unwrap_or_default()),
            Some((b's', prefix)) => {
                let keys: Vec<u8> =
                    kv.scan(prefix, None, 100)?.into_iter().flat_map(|(k, _)| [k, vec![b',']]).flatten().collect();
                Handled::Done(keys)
            }
            _ => Handled::BadPayload,
        })
    }
}

fn open(dir: &std::path::Path) -> Arc<Store> {
    Store::open(dir, StorageMetrics::unregistered().expect("metrics"), Arc::new(TestServices)).expect("open")
}

fn add_to(service: ServiceId, key: &str, by: u64) -> Command {
    let mut payload = vec![b'a'];
    payload.extend_from_slice(&by.to_be_bytes());
    payload.extend_from_slice(key.as_bytes());
    Command::Service { service, payload }
}

fn add(key: &str, by: u64) -> Command {
    add_to(ADDER, key, by)
}

fn del(key: &str) -> Command {
    let mut payload = vec![b'd'];
    payload.extend_from_slice(key.as_bytes());
    Command::Service { service: ADDER, payload }
}

fn done(v: u64) -> CommandResult {
    CommandResult::Service(v.to_be_bytes().to_vec())
}

fn get(store: &Store, group: GroupId, service: ServiceId, key: &str) -> Option<u64> {
    let mut query = vec![b'g'];
    query.extend_from_slice(key.as_bytes());
    match store.query(group, service, &query).expect("query") {
        Handled::Done(b) if b.is_empty() => None,
        Handled::Done(b) => Some(u64::from_be_bytes(b.try_into().expect("8 bytes"))),
        other => panic!("query answered {other:?}"),
    }
}

fn scan(store: &Store, group: GroupId, prefix: &str) -> String {
    let mut query = vec![b's'];
    query.extend_from_slice(prefix.as_bytes());
    match store.query(group, ADDER, &query).expect("query") {
        Handled::Done(b) => String::from_utf8(b).expect("utf-8"),
        other => panic!("query answered {other:?}"),
    }
}

#[tokio::test]
async fn groups_and_services_are_isolated_and_state_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = open(dir.path());
        let mut a = store.state_machine(1).expect("sm");
        let mut b = store.state_machine(2).expect("sm");
        let r = a.apply_entries(vec![entry(1, vec![add("x", 2), add("x", 3)])]).await.expect("apply");
        assert_eq!(r, vec![BatchResult(vec![done(2), done(5)])]);
        let r = b.apply_entries(vec![entry(1, vec![add("x", 1000), add_to(OTHER, "x", 1)])]).await.expect("apply");
        assert_eq!(r, vec![BatchResult(vec![done(1000), done(1)])]);
        // Both groups have Raft state, as every group with rows has (its vote comes first);
        // closing the store makes a last checkpoint.
        store.log_store(1).save_vote(&Vote::new(1, 1)).await.expect("vote");
        store.log_store(2).save_vote(&Vote::new(1, 1)).await.expect("vote");
    }
    let store = open(dir.path());
    assert_eq!(get(&store, 1, ADDER, "x"), Some(5));
    assert_eq!(get(&store, 2, ADDER, "x"), Some(1000));
    assert_eq!(get(&store, 2, OTHER, "x"), Some(1), "services do not see each other's keys");
    assert_eq!(get(&store, 3, ADDER, "x"), None);
    let mut log = store.log_store(1);
    assert!(log.try_get_log_entries(0..10).await.expect("read").is_empty());
    assert!(log.get_log_state().await.expect("state").last_log_id.is_none());
}

#[tokio::test]
async fn unknown_services_and_bad_payloads_are_refused_deterministically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut sm = store.state_machine(1).expect("sm");
    let unknown = Command::Service { service: 99, payload: b"a".to_vec() };
    let bad = Command::Service { service: ADDER, payload: b"?".to_vec() };
    let r = sm.apply_entries(vec![entry(1, vec![unknown, bad, add("x", 1)])]).await.expect("apply");
    assert_eq!(
        r[0].0,
        vec![
            CommandResult::Refused(Refusal::UnknownService { service: 99 }),
            CommandResult::Refused(Refusal::BadPayload { service: ADDER }),
            done(1),
        ]
    );
    assert_eq!(store.query(1, 99, b"g").expect("query"), Handled::UnknownService);
}

#[tokio::test]
async fn meta_commands_record_placement_once_and_refuse_stale_layouts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut sm = store.state_machine(0).expect("sm");
    let placement = crate::placement::Placement {
        members: Default::default(),
        layout: crate::placement::Layout { version: 1, groups: [(1, vec![1, 2, 3])].into_iter().collect() },
    };
    let member = crate::placement::MemberRec { id: 4, peer_addr: "p".into(), http_addr: "h".into(), dead: false };
    let r = sm
        .apply_entries(vec![entry(
            1,
            vec![
                Command::Meta(MetaCommand::MemberUpsert { member: member.clone() }),
                Command::Meta(MetaCommand::PlacementInit { placement: placement.clone() }),
                Command::Meta(MetaCommand::PlacementInit { placement }),
                Command::Meta(MetaCommand::MemberUpsert { member }),
                Command::Meta(MetaCommand::LayoutSet { expected_version: 1, groups: Default::default() }),
                Command::Meta(MetaCommand::LayoutSet { expected_version: 1, groups: Default::default() }),
            ],
        )])
        .await
        .expect("apply");
    assert_eq!(
        r[0].0,
        [
            MetaResult::NotInitialised,
            MetaResult::Version(1),
            MetaResult::Version(1),
            MetaResult::Version(1),
            MetaResult::Version(2),
            MetaResult::StaleLayout { current: 2 },
        ]
        .map(CommandResult::Meta)
    );
    let p = store.placement(0).expect("read").expect("placement");
    assert_eq!((p.layout.version, p.members.len()), (2, 1));
}

#[tokio::test]
async fn applied_rows_are_readable_at_once_deletable_scannable_and_in_snapshots() {
    use openraft::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut sm = store.state_machine(3).expect("sm");
    sm.apply_entries(vec![entry(1, vec![add("a/1", 1), add("a/2", 2), add("a/3", 3), add("b/1", 4)])])
        .await
        .expect("apply");
    // Applied rows live in the writer's overlay until the next transaction; reads see them.
    assert_eq!(get(&store, 3, ADDER, "a/2"), Some(2));
    assert_eq!(scan(&store, 3, "a/"), "a/1,a/2,a/3,");
    // Written to the database, then deleted in the overlay: the deletion hides the row.
    store.flush().await.expect("flush");
    sm.apply_entries(vec![entry(2, vec![del("a/2"), add("a/0", 9)])]).await.expect("apply");
    assert_eq!(get(&store, 3, ADDER, "a/2"), None);
    assert_eq!(scan(&store, 3, "a/"), "a/0,a/1,a/3,");
    store.flush().await.expect("flush");
    assert_eq!(get(&store, 3, ADDER, "a/2"), None, "the deletion reached the database");
    assert_eq!(scan(&store, 3, "a/"), "a/0,a/1,a/3,");
    // A snapshot built at once holds them: building flushes the overlay first.
    sm.apply_entries(vec![entry(3, vec![add("a/1", 10)])]).await.expect("apply");
    let snap = sm.get_snapshot_builder().await.build_snapshot().await.expect("snapshot");
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(3));
    let other = tempfile::tempdir().expect("tempdir");
    let fresh = open(other.path());
    let mut target = fresh.state_machine(3).expect("sm");
    target.apply_entries(vec![entry(1, vec![add("stale", 1)])]).await.expect("apply");
    target.install_snapshot(&snap.meta, snap.snapshot).await.expect("install");
    assert_eq!(scan(&fresh, 3, ""), "a/0,a/1,a/3,b/1,", "the snapshot replaced every row");
    assert_eq!(get(&fresh, 3, ADDER, "a/1"), Some(11));
    let (applied, _) = target.applied_state().await.expect("applied");
    assert_eq!(applied.map(|l| l.index), Some(3));
}

#[test]
fn a_data_directory_of_another_format_is_refused_naming_both_formats() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        // What the build before the service seam left: its own tables, no format record.
        let db = Database::create(dir.path().join("shoal.redb")).expect("create");
        let txn = db.begin_write().expect("txn");
        let old: TableDefinition<(u64, &str), u64> = TableDefinition::new("sm_counters");
        txn.open_table(old).expect("table").insert((1, "x"), 5).expect("insert");
        txn.commit().expect("commit");
    }
    let Err(e) = Store::open(dir.path(), StorageMetrics::unregistered().expect("m"), Arc::new(TestServices)) else {
        panic!("a format-1 directory was opened");
    };
    let message = e.to_string();
    assert!(matches!(e, StoreError::Format { found: 1, .. }), "{message}");
    assert!(message.contains("data format 1") && message.contains(&format!("data format {DATA_FORMAT}")), "{message}");
    // What the build before the shared WAL left: the Raft logs in redb, format 2.
    let two = tempfile::tempdir().expect("tempdir");
    {
        let db = Database::create(two.path().join("shoal.redb")).expect("create");
        let txn = db.begin_write().expect("txn");
        let logs: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("raft_logs");
        txn.open_table(logs).expect("table").insert((1, 1), &b"entry"[..]).expect("insert");
        let format: TableDefinition<&str, u64> = TableDefinition::new("shoal_format");
        txn.open_table(format).expect("table").insert("data_format", 2).expect("insert");
        txn.commit().expect("commit");
    }
    let Err(e) = Store::open(two.path(), StorageMetrics::unregistered().expect("m"), Arc::new(TestServices)) else {
        panic!("a format-2 directory was opened");
    };
    assert!(matches!(e, StoreError::Format { found: 2, .. }), "{e}");
    assert!(e.to_string().contains("data format 2") && e.to_string().contains("data format 3"), "{e}");
    // A directory of this format opens again.
    let other = tempfile::tempdir().expect("tempdir");
    drop(open(other.path()));
    drop(open(other.path()));
}

#[tokio::test]
async fn a_dropped_group_leaves_nothing_and_other_groups_untouched() {
    use openraft::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let inc = || add("x", 1);
    for group in [4, 5] {
        let mut log = store.log_store(group);
        log.save_vote(&Vote::new(1, 1)).await.expect("vote");
        append(&mut log, vec![entry(1, vec![inc()]), entry(2, vec![inc()])]).await;
        let mut sm = store.state_machine(group).expect("sm");
        sm.apply_entries(vec![entry(1, vec![inc()]), entry(2, vec![inc()])]).await.expect("apply");
        sm.get_snapshot_builder().await.build_snapshot().await.expect("snapshot");
        // One more row only in the overlay: dropping must not write it back.
        sm.apply_entries(vec![entry(3, vec![inc()])]).await.expect("apply");
    }
    assert!(store.group_snapshot_dir(4).exists());
    store.drop_group(4).await.expect("drop");
    assert!(!store.group_snapshot_dir(4).exists(), "snapshots deleted");
    store.log_store(5).save_vote(&Vote::new(2, 1)).await.expect("a later commit");
    assert_eq!(get(&store, 4, ADDER, "x"), None);
    assert_eq!(get(&store, 5, ADDER, "x"), Some(3));
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

#[tokio::test]
async fn appended_entries_are_readable_before_they_are_durable_and_truncation_drops_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut log = store.log_store(9);
    append(&mut log, vec![entry(1, vec![add("x", 1)]), entry(2, vec![add("x", 1)])]).await;
    // openraft 0.10 replicates an entry as soon as `append` returns: it must be readable then,
    // whether or not the writer has committed it.
    let (tx, rx) = TypeConfig::oneshot();
    log.append(vec![entry(3, vec![add("x", 1)]), entry(4, vec![add("x", 1)])], IOFlushed::signal(tx))
        .await
        .expect("append");
    let mut reader = log.get_log_reader().await;
    let indexes = |es: Vec<Entry>| es.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
    assert_eq!(indexes(reader.try_get_log_entries(1..5).await.expect("read")), vec![1, 2, 3, 4]);
    assert_eq!(log.get_log_state().await.expect("state").last_log_id.map(|l| l.index), Some(4));
    rx.await.expect("callback").expect("durable");
    // Truncation drops what follows, durable or not; a new entry 3 replaces the old one.
    log.truncate_after(Some(log_id(2))).await.expect("truncate");
    let newer =
        Entry { log_id: LogId { leader_id: CommittedLeaderId { term: 2, node_id: 1 }, index: 3 }, ..entry(3, vec![]) };
    let (tx, rx) = TypeConfig::oneshot();
    log.append(vec![newer.clone()], IOFlushed::signal(tx)).await.expect("append");
    let read = reader.try_get_log_entries(1..).await.expect("read");
    assert_eq!(indexes(read.clone()), vec![1, 2, 3]);
    assert_eq!(read[2].log_id, newer.log_id);
    rx.await.expect("callback").expect("durable");
    drop((log, reader));
    drop(store);
    let store = open(dir.path());
    let read = store.log_store(9).try_get_log_entries(..).await.expect("read");
    assert_eq!(indexes(read.clone()), vec![1, 2, 3]);
    assert_eq!(read[2].log_id, newer.log_id);
}

#[tokio::test]
async fn partial_snapshot_files_left_by_a_crash_are_removed_when_the_store_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let received = store.receive_snapshot(3).await.expect("incoming file");
    let mut sm = store.state_machine(3).expect("sm");
    sm.apply_entries(vec![entry(1, vec![add("x", 1)])]).await.expect("apply");
    let built = sm.get_current_snapshot().await.expect("read");
    assert!(built.is_none());
    let kept = {
        use openraft::RaftSnapshotBuilder;
        sm.get_snapshot_builder().await.build_snapshot().await.expect("snapshot").snapshot.path
    };
    let half_built = store.group_snapshot_dir(3).join("1-1-0000000000000000.part");
    std::fs::write(&half_built, b"half").expect("write");
    assert!(received.path.exists());
    drop((received, sm));
    drop(store);
    let store = open(dir.path());
    assert!(!half_built.exists(), "a snapshot being built is gone");
    let left: Vec<_> =
        std::fs::read_dir(store.group_snapshot_dir(3)).expect("dir").map(|e| e.expect("entry").path()).collect();
    assert_eq!(left, vec![kept], "only the current snapshot is left");
}
