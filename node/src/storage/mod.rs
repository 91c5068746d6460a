//! Durable state of every Raft group on this node: the logs, votes and committed indexes in one
//! shared write-ahead log ([`wal`], `data_dir/wal/`), the state machines in one redb database
//! (`data_dir/shoal.redb`) keyed by group id, snapshot files beside it. Services' rows live in
//! one table keyed by `(group, service id, key)`; storage never knows what a service is beyond
//! its id (see [`kv`]).
//!
//! Log writes are staged into the WAL by the caller (readable at once) and made durable by one
//! writer thread that group-commits: every sync queued when it wakes, from every group, shares
//! one write and one `fdatasync`, and openraft's callbacks fire only after it. State-machine
//! applies go to an in-memory overlay, reach redb in commits without fsync, and are made durable
//! by a checkpoint at most every [`writer::CHECKPOINT_EVERY`] (and before any purge), which
//! records each group's applied index: a restart replays the log from there, and the log is
//! never purged past a durable checkpoint.

pub mod entry;
pub mod kv;
mod log_store;
pub mod metrics;
pub mod records;
mod state_machine;
pub mod wal;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition, TableHandle};

use entry::GroupId;
pub use kv::{Dispatch, Handled, Kv, KvRead, MemKv, ServiceId};
pub use log_store::LogStore;
pub use metrics::StorageMetrics;
pub use state_machine::StateMachineStore;
use writer::WriteOp;

/// `(group, key)` → encoded record; keys in [`meta_key`].
pub(crate) const SM_META: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("sm_meta");
/// `group` → encoded [`crate::placement::Placement`] (meta group).
pub(crate) const PLACEMENT: TableDefinition<u64, &[u8]> = TableDefinition::new("sm_placement");
/// Every service's rows: `(group, service id, key)` → value, as the service encoded them. One
/// table for all services, so snapshots, group removal and the overlay treat them alike.
pub(crate) const SERVICES: TableDefinition<(u64, u16, &[u8]), &[u8]> = TableDefinition::new("sm_services");
/// `"data_format"` → the [`DATA_FORMAT`] the database was written in.
const FORMAT: TableDefinition<&str, u64> = TableDefinition::new("shoal_format");

/// The data format this build writes and reads. Format 1 (Shoal before the service seam) kept
/// each service's rows in tables of its own and a log entry format that named each service's
/// commands; format 2 kept the Raft logs in redb (tables `raft_logs`, `raft_meta`). Both are
/// refused, never misread.
pub const DATA_FORMAT: u64 = 3;
/// Tables only a format-1 database has.
const FORMAT_1_TABLES: [&str; 3] = ["sm_counters", "sm_users", "sm_records"];
/// Tables only a format-2 database has (a format-2 database without the format record is
/// impossible: format 2 introduced it).
const FORMAT_2_TABLES: [&str; 2] = ["raft_logs", "raft_meta"];

/// Keys of the per-group metadata the WAL holds.
pub(crate) mod wal_key {
    pub const VOTE: u8 = 1;
    pub const COMMITTED: u8 = 2;
    /// The log id of the last purged entry (the WAL itself keeps only its index).
    pub const PURGED: u8 = 3;
}

/// Keys of the per-group state-machine metadata table.
pub(crate) mod meta_key {
    pub const APPLIED: &str = "applied";
    pub const MEMBERSHIP: &str = "membership";
    pub const SNAPSHOT: &str = "snapshot";
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open the database {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A redb operation failed.
    #[error("storage error: {0}")]
    Db(String),
    /// A stored record failed to decode.
    #[error(transparent)]
    Record(#[from] records::RecordError),
    /// File I/O (snapshots).
    #[error("snapshot file error: {0}")]
    Io(#[from] std::io::Error),
    /// The writer thread is gone (node shutting down).
    #[error("the log writer has stopped")]
    WriterStopped,
    /// The write-ahead log failed.
    #[error(transparent)]
    Wal(#[from] wal::WalError),
    /// The data directory was written in another data format.
    #[error(
        "{path} was written in data format {found} but this build reads data format {DATA_FORMAT} only; there is \
         no automatic migration: run the build that wrote it, or move the data directory away and start this node \
         empty (it catches up from its peers)"
    )]
    Format {
        /// The database file.
        path: PathBuf,
        /// The format it was written in.
        found: u64,
    },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
db_err!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// The node's database and its log writer.
pub struct Store {
    db: Arc<Database>,
    wal: Arc<wal::Wal>,
    writer: Option<std::sync::mpsc::Sender<WriteOp>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
    snapshot_dir: PathBuf,
    /// The committed index openraft last reported per group; written with the next transaction.
    committed: writer::Committed,
    /// Groups whose next write fails (test-only fault injection).
    failing: writer::FailingGroups,
    /// Applied state-machine rows not written yet (see [`writer`]).
    overlay: Arc<std::sync::Mutex<state_machine::Overlay>>,
    /// The service registry.
    dispatch: Arc<dyn Dispatch>,
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the channel ends the writer after it finished what was queued; joining it
        // releases the database file before the store counts as gone.
        self.writer.take();
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("snapshot_dir", &self.snapshot_dir).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) `data_dir/shoal.redb` and `data_dir/wal/`, replays the WAL and starts
    /// the log writer thread. `dispatch` applies and answers service commands and queries (the
    /// service registry).
    pub fn open(
        data_dir: &Path,
        metrics: StorageMetrics,
        dispatch: Arc<dyn Dispatch>,
    ) -> Result<Arc<Self>, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("shoal.redb");
        let db = Database::create(&path).map_err(|e| StoreError::Open { path: path.clone(), reason: e.to_string() })?;
        check_format(&db, &path)?;
        let (wal, recovery) = wal::Wal::open(data_dir.join("wal"), wal::WalOptions::default())?;
        metrics.wal_replay_seconds.set(recovery.elapsed.as_secs_f64());
        metrics.wal_segments.set(wal.segments() as i64);
        if let Some(torn) = &recovery.torn {
            tracing::warn!(segment = %torn.segment.display(), offset = torn.offset, discarded = torn.discarded,
                reason = %torn.reason, "cut a torn WAL tail (writes not acknowledged before a crash)");
        }
        tracing::info!(
            segments = recovery.segments,
            records = recovery.records,
            bytes = recovery.bytes,
            seconds = recovery.elapsed.as_secs_f64(),
            "replayed the WAL"
        );
        drop_orphans(&db, &wal)?;
        {
            // Create every table once so readers never see a missing table.
            let txn = db.begin_write()?;
            txn.open_table(SM_META)?;
            txn.open_table(PLACEMENT)?;
            txn.open_table(SERVICES)?;
            txn.open_table(FORMAT)?.insert("data_format", DATA_FORMAT)?;
            txn.commit()?;
        }
        let db = Arc::new(db);
        let wal = Arc::new(wal);
        let snapshot_dir = data_dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir)?;
        state_machine::remove_partial_snapshots(&snapshot_dir)?;
        let committed = writer::Committed::default();
        let overlay = Arc::new(std::sync::Mutex::new(state_machine::Overlay::default()));
        let failing = writer::FailingGroups::default();
        let (writer, thread) = writer::spawn(
            Arc::clone(&db),
            Arc::clone(&wal),
            metrics,
            Arc::clone(&committed),
            Arc::clone(&overlay),
            Arc::clone(&failing),
        )?;
        Ok(Arc::new(Self {
            db,
            wal,
            writer: Some(writer),
            writer_thread: Some(thread),
            snapshot_dir,
            committed,
            failing,
            overlay,
            dispatch,
        }))
    }

    /// The log storage of one group.
    pub fn log_store(self: &Arc<Self>, group: GroupId) -> LogStore {
        LogStore::new(Arc::clone(self), group)
    }

    /// The state machine of one group.
    pub fn state_machine(self: &Arc<Self>, group: GroupId) -> Result<StateMachineStore, StoreError> {
        StateMachineStore::new(Arc::clone(self), group)
    }

    /// The members and layout in this node's copy of meta state (`None` before bootstrap).
    pub fn placement(&self, group: GroupId) -> Result<Option<crate::placement::Placement>, StoreError> {
        let overlay = self.overlay();
        overlay.placement(&self.db.begin_read()?, group)
    }

    /// Answers an encoded query of `service` from this node's copy of `group` (not
    /// linearizable by itself: the router runs it after a read-index round when asked to).
    pub fn query(&self, group: GroupId, service: ServiceId, query: &[u8]) -> Result<Handled, StoreError> {
        let overlay = self.overlay();
        let db = self.db.begin_read()?;
        let kv = state_machine::ReadKv { overlay: &overlay, db: &db, group, service };
        self.dispatch.query(service, &kv, query)
    }

    /// Groups with durable Raft state on this node (they were hosted here before).
    pub fn stored_groups(&self) -> Result<std::collections::BTreeSet<GroupId>, StoreError> {
        Ok(self.wal.groups().into_iter().collect())
    }

    /// Applies committed `entries` of `group` to the overlay, in memory, right here in the
    /// caller's task (openraft's state-machine task, one per group, so a group's applies stay in
    /// order), and answers at once; the log writer writes the rows with a later transaction.
    /// Overlay first, then the read transaction, as readers do: a flush finishing meanwhile
    /// cannot hide a row. When the overlay was clean the writer is woken so its idle timer for
    /// dirty rows starts.
    pub(crate) fn apply(
        &self,
        group: GroupId,
        entries: Vec<entry::Entry>,
    ) -> Result<Vec<entry::BatchResult>, StoreError> {
        let (result, was_clean) = {
            let mut overlay = self.overlay();
            let was_clean = overlay.is_empty();
            let db = self.db.begin_read()?;
            let result = state_machine::SmView::new(&mut overlay, db, &*self.dispatch).apply(group, entries);
            (result, was_clean)
        };
        if was_clean {
            self.send(WriteOp::Wake)?;
        }
        result
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, state_machine::Overlay> {
        crate::util::lock(&self.overlay)
    }

    /// Writes every applied state-machine row to the database (snapshots read and replace the
    /// tables directly).
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.send(WriteOp::Flush { done })?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Db(e)),
            Err(_) => Err(StoreError::WriterStopped),
        }
    }

    /// Deletes everything stored for `group` (log, metadata, state machine, snapshots). Only for a
    /// group whose Raft instance has stopped and that this node no longer replicates.
    pub async fn drop_group(&self, group: GroupId) -> Result<(), StoreError> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.send(WriteOp::DropGroup { group, done })?;
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StoreError::Db(e)),
            Err(_) => return Err(StoreError::WriterStopped),
        }
        match std::fs::remove_dir_all(self.group_snapshot_dir(group)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub(crate) fn db(&self) -> &Arc<Database> {
        &self.db
    }

    pub(crate) fn wal(&self) -> &wal::Wal {
        &self.wal
    }

    /// A new file to receive a snapshot of `group` into (the network writes it; installing it
    /// moves it into place).
    pub async fn receive_snapshot(&self, group: GroupId) -> Result<entry::SnapshotData, StoreError> {
        state_machine::incoming_snapshot(self, group).await
    }

    /// Records a group's committed index (an encoded log id) without a transaction of its own:
    /// the next write carries it. openraft treats it as a hint (losing the latest is harmless).
    pub(crate) fn note_committed(&self, group: GroupId, index: u64, bytes: Vec<u8>) {
        let noted = writer::NotedCommit { index, unwritten: Some(bytes) };
        crate::util::lock(&self.committed).insert(group, noted);
    }

    /// Test-only (`testing.fault_injection`): the next write of `group` fails, as a broken disk
    /// would fail it; openraft then stops the group with a fatal storage error.
    pub fn inject_write_failure(&self, group: GroupId) {
        crate::util::lock(&self.failing).insert(group);
    }

    /// The last committed index openraft reported for `group` since this process started (on a
    /// follower too, where openraft's metrics show none).
    pub fn committed_index(&self, group: GroupId) -> Option<u64> {
        crate::util::lock(&self.committed).get(&group).map(|n| n.index)
    }

    /// The committed index noted for `group` but not written yet.
    pub(crate) fn noted_committed(&self, group: GroupId) -> Option<Vec<u8>> {
        crate::util::lock(&self.committed).get(&group)?.unwritten.clone()
    }

    pub(crate) fn send(&self, op: WriteOp) -> Result<(), StoreError> {
        let writer = self.writer.as_ref().ok_or(StoreError::WriterStopped)?;
        writer.send(op).map_err(|_| StoreError::WriterStopped)
    }

    pub(crate) fn group_snapshot_dir(&self, group: GroupId) -> PathBuf {
        self.snapshot_dir.join(format!("group-{group}"))
    }
}

/// Refuses a database written in another data format (see [`DATA_FORMAT`]).
fn check_format(db: &Database, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_read()?;
    let tables: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
    if tables.iter().any(|t| FORMAT_1_TABLES.contains(&t.as_str())) {
        return Err(StoreError::Format { path: path.to_path_buf(), found: 1 });
    }
    if tables.iter().any(|t| FORMAT_2_TABLES.contains(&t.as_str())) {
        return Err(StoreError::Format { path: path.to_path_buf(), found: 2 });
    }
    if tables.iter().any(|t| t == FORMAT.name()) {
        let table = txn.open_table(FORMAT)?;
        if let Some(found) = table.get("data_format")?.map(|v| v.value())
            && found != DATA_FORMAT
        {
            return Err(StoreError::Format { path: path.to_path_buf(), found });
        }
    }
    Ok(())
}

/// Deletes the state-machine rows of groups the WAL does not know: a group is dropped from the
/// WAL first and from the database after, so a crash in between leaves such rows behind. (A
/// group with rows always has WAL state: its vote is saved before it receives anything.)
fn drop_orphans(db: &Database, wal: &wal::Wal) -> Result<(), StoreError> {
    let known: std::collections::BTreeSet<GroupId> = wal.groups().into_iter().collect();
    let txn = db.begin_read()?;
    let mut orphans = std::collections::BTreeSet::new();
    if txn.list_tables()?.any(|t| t.name() == SM_META.name()) {
        for item in redb::ReadableTable::iter(&txn.open_table(SM_META)?)? {
            let group = item?.0.value().0;
            if !known.contains(&group) {
                orphans.insert(group);
            }
        }
    }
    drop(txn);
    if orphans.is_empty() {
        return Ok(());
    }
    let txn = db.begin_write()?;
    for g in &orphans {
        writer::delete_group_rows(&txn, *g)?;
    }
    txn.commit()?;
    tracing::warn!(groups = ?orphans, "deleted state-machine rows of groups dropped just before a crash");
    Ok(())
}

#[cfg(test)]
mod tests;
