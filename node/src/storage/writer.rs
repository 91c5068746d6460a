//! The log writer: one thread, group commit. Every log operation queued when it wakes goes into
//! one write transaction and one fsync; completions fire only after the commit.
//!
//! State-machine applies need no transaction of their own: the writer applies committed entries
//! to the [`Overlay`] (in memory, over the last committed database state), answers at once, and
//! writes the dirty rows with the next transaction it commits anyway, or after
//! [`FLUSH_AFTER`] without other work. Readers look into the overlay first.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase};
use tokio::sync::oneshot;
use tracing::error;

use super::entry::{BatchResult, Entry, GroupId};
use super::kv::Dispatch;
use super::metrics::StorageMetrics;
use super::state_machine::{Overlay, Rows, SmView};
use super::{LOGS, RAFT_META, StoreError};
use crate::util::lock;

/// Most operations folded into one transaction.
const MAX_BATCH: usize = 4096;
/// Dirty state-machine rows are written at the latest after this long without other writes.
const FLUSH_AFTER: Duration = Duration::from_millis(2);
/// More dirty rows than this are written at once.
const MAX_DIRTY: usize = 8192;

/// Groups whose next write fails (test-only storage fault injection).
pub(crate) type FailingGroups = Arc<Mutex<std::collections::HashSet<GroupId>>>;

/// The committed index openraft last reported for a group.
pub(crate) struct NotedCommit {
    /// Its index (what `/v1/cluster` shows, on followers too).
    pub(crate) index: u64,
    /// The encoded log id, until a transaction has written it (it rides along with the next).
    pub(crate) unwritten: Option<Vec<u8>>,
}

/// Committed indexes per group, shared by the log stores and the writer.
pub(crate) type Committed = Arc<Mutex<std::collections::HashMap<GroupId, NotedCommit>>>;

/// What runs once an append is durable (or failed): the log store releases openraft's callback.
pub(crate) type AppendDone = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A durable log operation.
pub(crate) enum WriteOp {
    /// Append encoded entries `(index, bytes)`; `done` fires after the fsync.
    Append { group: GroupId, entries: Vec<(u64, Vec<u8>)>, done: AppendDone },
    /// Set (or delete) a per-group metadata record (the vote).
    Meta { group: GroupId, key: &'static str, value: Option<Vec<u8>>, done: oneshot::Sender<Result<(), String>> },
    /// Delete entries with index ≥ `from`.
    Truncate { group: GroupId, from: u64, done: oneshot::Sender<Result<(), String>> },
    /// Delete entries with index ≤ `upto` and record the purge point.
    Purge { group: GroupId, upto: u64, purged: Vec<u8>, done: oneshot::Sender<Result<(), String>> },
    /// Apply committed entries to the group's state machine (in the overlay); `done` gets one
    /// result per entry at once.
    Apply { group: GroupId, entries: Vec<Entry>, done: oneshot::Sender<Result<Vec<BatchResult>, String>> },
    /// Write every dirty state-machine row to the database (before a snapshot is built or
    /// installed, which work on the database directly).
    Flush { done: oneshot::Sender<Result<(), String>> },
    /// Delete everything stored for a group this node no longer replicates (its Raft instance
    /// has stopped): log, vote and other metadata, and state-machine rows.
    DropGroup { group: GroupId, done: oneshot::Sender<Result<(), String>> },
}

impl WriteOp {
    /// The group the operation belongs to (`Flush` belongs to none).
    fn group(&self) -> Option<GroupId> {
        match self {
            WriteOp::Append { group, .. }
            | WriteOp::Meta { group, .. }
            | WriteOp::Truncate { group, .. }
            | WriteOp::Purge { group, .. }
            | WriteOp::Apply { group, .. }
            | WriteOp::DropGroup { group, .. } => Some(*group),
            WriteOp::Flush { .. } => None,
        }
    }

    /// Completes the operation with the outcome of the transaction that carried it (applies are
    /// answered when applied and never carried: they only ever complete here with an error).
    fn complete(self, result: Result<(), String>) {
        match self {
            WriteOp::Append { done, .. } => done(result),
            WriteOp::Meta { done, .. }
            | WriteOp::Truncate { done, .. }
            | WriteOp::Purge { done, .. }
            | WriteOp::DropGroup { done, .. }
            | WriteOp::Flush { done } => {
                let _ = done.send(result);
            }
            WriteOp::Apply { done, .. } => {
                let _ = done.send(Err(result.err().unwrap_or_else(|| "apply reached the commit path".into())));
            }
        }
    }

    /// Whether this operation must be on disk before it completes. Log writes, votes and purges
    /// must; state-machine rows need not: after a crash they are re-derived from the durable log,
    /// and every durable commit also persists the non-durable ones before it (so nothing is
    /// purged from the log before the state it produced is on disk). The committed index never
    /// comes here: it rides along with whatever transaction comes next.
    fn needs_fsync(&self) -> bool {
        !matches!(self, WriteOp::Apply { .. } | WriteOp::Flush { .. })
    }
}

pub(crate) fn spawn(
    db: Arc<Database>,
    metrics: StorageMetrics,
    committed: Committed,
    overlay: Arc<Mutex<Overlay>>,
    failing: FailingGroups,
    dispatch: Arc<dyn Dispatch>,
) -> Result<(Sender<WriteOp>, std::thread::JoinHandle<()>), StoreError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("shoal-log-writer".into())
        .spawn(move || Writer { db, metrics, committed, overlay, failing, dispatch }.run(rx))?;
    Ok((tx, thread))
}

struct Writer {
    db: Arc<Database>,
    metrics: StorageMetrics,
    committed: Committed,
    overlay: Arc<Mutex<Overlay>>,
    failing: FailingGroups,
    dispatch: Arc<dyn Dispatch>,
}

impl Writer {
    fn run(self, rx: Receiver<WriteOp>) {
        loop {
            let dirty = !lock(&self.overlay).is_empty();
            let first = if dirty {
                match rx.recv_timeout(FLUSH_AFTER) {
                    Ok(op) => op,
                    Err(RecvTimeoutError::Timeout) => {
                        self.commit(Vec::new(), false);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        self.commit(Vec::new(), false);
                        return;
                    }
                }
            } else {
                match rx.recv() {
                    Ok(op) => op,
                    Err(_) => return,
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let batch = self.fail_injected(batch);
            // Applies first, in order, in memory; their callers are answered at once.
            let (applies, rest): (Vec<WriteOp>, Vec<WriteOp>) =
                batch.into_iter().partition(|op| matches!(op, WriteOp::Apply { .. }));
            if !applies.is_empty() {
                self.apply(applies);
            }
            for op in &rest {
                if let WriteOp::DropGroup { group, .. } = op {
                    lock(&self.overlay).forget_group(*group);
                    lock(&self.committed).remove(group);
                }
            }
            let too_dirty = lock(&self.overlay).len() > MAX_DIRTY;
            if !rest.is_empty() || too_dirty {
                let durable = rest.iter().any(WriteOp::needs_fsync);
                self.commit(rest, durable);
            }
        }
    }

    /// Fails, unwritten, the operations of groups given a storage fault to inject (each fault
    /// fails one batch of its group); returns the others.
    fn fail_injected(&self, batch: Vec<WriteOp>) -> Vec<WriteOp> {
        let mut failing = lock(&self.failing);
        if failing.is_empty() {
            return batch;
        }
        let (hit, rest): (Vec<WriteOp>, Vec<WriteOp>) =
            batch.into_iter().partition(|op| op.group().is_some_and(|g| failing.contains(&g)));
        for op in hit {
            if let Some(group) = op.group() {
                failing.remove(&group);
                error!(group, "injected storage fault: failing a write");
            }
            op.complete(Err("injected storage fault".into()));
        }
        rest
    }

    fn apply(&self, applies: Vec<WriteOp>) {
        let read = match self.db.begin_read() {
            Ok(r) => r,
            Err(e) => {
                let e = StoreError::from(e).to_string();
                for op in applies {
                    if let WriteOp::Apply { done, .. } = op {
                        let _ = done.send(Err(e.clone()));
                    }
                }
                return;
            }
        };
        let mut overlay = lock(&self.overlay);
        let mut view = SmView::new(&mut overlay, read, &*self.dispatch);
        for op in applies {
            if let WriteOp::Apply { group, entries, done } = op {
                let _ = done.send(view.apply(group, entries).map_err(|e| e.to_string()));
            }
        }
    }

    /// One transaction: `ops`, the committed indexes noted meanwhile and the dirty rows.
    fn commit(&self, ops: Vec<WriteOp>, durable: bool) {
        let commits: Vec<(GroupId, Vec<u8>)> = lock(&self.committed)
            .iter_mut()
            .filter_map(|(group, noted)| Some((*group, noted.unwritten.take()?)))
            .collect();
        let appended: usize =
            ops.iter().map(|op| if let WriteOp::Append { entries, .. } = op { entries.len() } else { 0 }).sum();
        let start = Instant::now();
        // Readers keep seeing the rows (as "being written") until the database has them.
        let rows = lock(&self.overlay).start_flush();
        let result = write_batch(&self.db, &ops, durable, &commits, &rows);
        drop(rows);
        lock(&self.overlay).finish_flush(result.is_ok());
        if durable {
            self.metrics.fsync_seconds.observe(start.elapsed().as_secs_f64());
        }
        self.metrics.batch_ops.observe(ops.len() as f64);
        self.metrics.appended_entries.inc_by(appended as u64);
        if let Err(e) = &result {
            error!(error = %e, "log write failed");
        }
        for op in ops {
            op.complete(result.clone());
        }
    }
}

fn write_batch(
    db: &Database,
    batch: &[WriteOp],
    durable: bool,
    commits: &[(GroupId, Vec<u8>)],
    rows: &Rows,
) -> Result<(), String> {
    let inner = || -> Result<(), StoreError> {
        let mut txn = db.begin_write()?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
        {
            let mut logs = txn.open_table(LOGS)?;
            let mut meta = txn.open_table(RAFT_META)?;
            for (group, bytes) in commits {
                meta.insert((*group, super::meta_key::COMMITTED), bytes.as_slice())?;
            }
            for op in batch.iter() {
                match op {
                    WriteOp::Append { group, entries, .. } => {
                        for (index, bytes) in entries.iter() {
                            logs.insert((*group, *index), bytes.as_slice())?;
                        }
                    }
                    WriteOp::Meta { group, key, value, .. } => match value {
                        Some(v) => {
                            meta.insert((*group, *key), v.as_slice())?;
                        }
                        None => {
                            meta.remove((*group, *key))?;
                        }
                    },
                    WriteOp::Truncate { group, from, .. } => {
                        logs.retain_in((*group, *from)..=(*group, u64::MAX), |_, _| false)?;
                    }
                    WriteOp::Purge { group, upto, purged, .. } => {
                        logs.retain_in((*group, 0)..=(*group, *upto), |_, _| false)?;
                        meta.insert((*group, super::meta_key::PURGED), purged.as_slice())?;
                    }
                    WriteOp::DropGroup { group, .. } => {
                        let g = *group;
                        logs.retain_in((g, 0)..=(g, u64::MAX), |_, _| false)?;
                        meta.retain_in((g, "")..(g + 1, ""), |_, _| false)?;
                        txn.open_table(super::SM_META)?.retain_in((g, "")..(g + 1, ""), |_, _| false)?;
                        txn.open_table(super::PLACEMENT)?.remove(g)?;
                        txn.open_table(super::SERVICES)?
                            .retain_in((g, 0, &[][..])..(g + 1, 0, &[][..]), |_, _| false)?;
                    }
                    WriteOp::Apply { .. } | WriteOp::Flush { .. } => {}
                }
            }
        }
        rows.write_to(&txn)?;
        txn.commit()?;
        Ok(())
    };
    inner().map_err(|e| e.to_string())
}
