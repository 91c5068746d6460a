//! The log writer: one thread, group commit. Every WAL sync queued when it wakes shares one
//! write and one `fdatasync` ([`Wal::flush`]); openraft's callbacks fire only after it.
//!
//! State-machine applies need no write of their own: each group's state-machine task applies
//! committed entries to the [`Overlay`] (in memory, over the database; `Store::apply`), and the
//! writer writes the dirty rows to redb in a commit without fsync after [`FLUSH_AFTER`] without
//! other work (or when many are dirty). At most every [`CHECKPOINT_EVERY`], and always before a purge or a group removal,
//! that commit is durable instead: a checkpoint. Each group's applied index is among the rows,
//! so after a crash a group restarts from its last checkpoint and replays the log from there;
//! purging only after a checkpoint keeps those entries in the log.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::IOFlushed;
use redb::{Database, Durability, WriteTransaction};
use tokio::sync::oneshot;
use tracing::error;

use super::entry::{GroupId, TypeConfig};
use super::metrics::StorageMetrics;
use super::state_machine::Overlay;
use super::wal::{Op, Wal};
use super::{StoreError, wal_key};
use crate::util::lock;

/// Most operations taken in one round.
const MAX_BATCH: usize = 4096;
/// Dirty state-machine rows are written at the latest after this long without other writes.
const FLUSH_AFTER: Duration = Duration::from_millis(2);
/// More dirty rows than this are written at once.
const MAX_DIRTY: usize = 8192;
/// The longest time between durable state-machine checkpoints while applies happen.
pub(crate) const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

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

/// Who waits for a WAL sync.
pub(crate) enum Synced {
    /// openraft's callback for an append of `entries` entries.
    Log { callback: IOFlushed<TypeConfig>, entries: usize },
    /// A caller waiting for a vote or a truncation to be durable.
    Wait(oneshot::Sender<Result<(), String>>),
}

/// An operation for the writer.
pub(crate) enum WriteOp {
    /// Make everything the group (and any other) staged in the WAL durable; `done` after the
    /// fsync.
    Sync { group: GroupId, done: Synced },
    /// Drop entries with index ≤ `upto` and record the purge point (`purged`: its encoded log
    /// id), after a checkpoint.
    Purge { group: GroupId, upto: u64, purged: Vec<u8>, done: oneshot::Sender<Result<(), String>> },
    /// The overlay became dirty (an apply): nothing to do but (re)start the idle timer that
    /// writes its rows.
    Wake,
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
            WriteOp::Sync { group, .. } | WriteOp::Purge { group, .. } | WriteOp::DropGroup { group, .. } => {
                Some(*group)
            }
            WriteOp::Flush { .. } | WriteOp::Wake => None,
        }
    }

    /// Completes the operation.
    fn complete(self, result: Result<(), String>) {
        match self {
            WriteOp::Sync { done: Synced::Log { callback, .. }, .. } => {
                callback.io_completed(result.map_err(std::io::Error::other))
            }
            WriteOp::Sync { done: Synced::Wait(done), .. }
            | WriteOp::Purge { done, .. }
            | WriteOp::DropGroup { done, .. }
            | WriteOp::Flush { done } => {
                let _ = done.send(result);
            }
            WriteOp::Wake => {}
        }
    }
}

pub(crate) fn spawn(
    db: Arc<Database>,
    wal: Arc<Wal>,
    metrics: StorageMetrics,
    committed: Committed,
    overlay: Arc<Mutex<Overlay>>,
    failing: FailingGroups,
) -> Result<(Sender<WriteOp>, std::thread::JoinHandle<()>), StoreError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let writer =
        Writer { db, wal, metrics, committed, overlay, failing, last_checkpoint: Instant::now(), undurable: false };
    let thread = std::thread::Builder::new().name("shoal-log-writer".into()).spawn(move || writer.run(rx))?;
    Ok((tx, thread))
}

struct Writer {
    db: Arc<Database>,
    wal: Arc<Wal>,
    metrics: StorageMetrics,
    committed: Committed,
    overlay: Arc<Mutex<Overlay>>,
    failing: FailingGroups,
    last_checkpoint: Instant,
    /// State-machine rows were committed without fsync since the last checkpoint.
    undurable: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<WriteOp>) {
        loop {
            let dirty = !lock(&self.overlay).is_empty();
            let wait = if dirty {
                Some(FLUSH_AFTER)
            } else if self.undurable {
                Some(CHECKPOINT_EVERY.saturating_sub(self.last_checkpoint.elapsed()))
            } else {
                None
            };
            let first = match wait {
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(op) => op,
                    Err(RecvTimeoutError::Timeout) => {
                        // A failure is logged and the rows stay dirty for the next try.
                        let _ = self.write_rows(false);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        let _ = self.write_rows(true);
                        return;
                    }
                },
                None => match rx.recv() {
                    Ok(op) => op,
                    Err(_) => return,
                },
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            batch.retain(|op| !matches!(op, WriteOp::Wake));
            let batch = self.fail_injected(batch);
            if !batch.is_empty() {
                self.round(batch);
            }
        }
    }

    /// One round of log work: a checkpoint first if a purge or group removal needs one, then
    /// one WAL flush for everything, then the removed groups' rows.
    fn round(&mut self, ops: Vec<WriteOp>) {
        let needs_checkpoint = ops.iter().any(|op| matches!(op, WriteOp::Purge { .. } | WriteOp::DropGroup { .. }));
        let flushes = ops.iter().any(|op| matches!(op, WriteOp::Flush { .. }));
        let too_dirty = lock(&self.overlay).len() > MAX_DIRTY;
        let dropped: Vec<GroupId> = ops
            .iter()
            .filter_map(|op| if let WriteOp::DropGroup { group, .. } = op { Some(*group) } else { None })
            .collect();
        for group in &dropped {
            lock(&self.overlay).forget_group(*group);
            lock(&self.committed).remove(group);
        }
        let mut result = Ok(());
        if needs_checkpoint || flushes || too_dirty {
            result = self.write_rows(needs_checkpoint);
        }
        let logs = ops.iter().any(|op| !matches!(op, WriteOp::Flush { .. }));
        if result.is_ok() && logs {
            result = self.flush_wal(&ops, &dropped);
        }
        if result.is_ok() && !dropped.is_empty() {
            result = self.delete_groups(&dropped);
        }
        for op in ops {
            op.complete(result.clone());
        }
    }

    /// Stages what the ops need besides what their callers staged (purge points, group
    /// removals, the committed indexes noted meanwhile) and flushes the WAL.
    fn flush_wal(&self, ops: &[WriteOp], dropped: &[GroupId]) -> Result<(), String> {
        let mut staged: Vec<Op> = lock(&self.committed)
            .iter_mut()
            .filter_map(|(group, noted)| {
                let value = noted.unwritten.take()?;
                Some(Op::SetMeta { group: *group, key: wal_key::COMMITTED, value: value.into() })
            })
            .collect();
        for op in ops {
            if let WriteOp::Purge { group, upto, purged, .. } = op {
                staged.push(Op::SetMeta { group: *group, key: wal_key::PURGED, value: purged.clone().into() });
                staged.push(Op::Purge { group: *group, upto: *upto });
            }
        }
        staged.extend(dropped.iter().map(|&group| Op::RemoveGroup { group }));
        let appended: usize = ops
            .iter()
            .map(|op| if let WriteOp::Sync { done: Synced::Log { entries, .. }, .. } = op { *entries } else { 0 })
            .sum();
        let result = self.wal.stage(staged).and_then(|()| self.wal.flush());
        match result {
            Ok(stats) => {
                if stats.syncs > 0 {
                    self.metrics.fsync_seconds.observe(stats.fsync.as_secs_f64());
                    self.metrics.wal_batch_bytes.observe(stats.bytes as f64);
                    self.metrics.wal_batch_groups.observe(stats.groups as f64);
                }
                self.metrics.batch_ops.observe(ops.len() as f64);
                self.metrics.appended_entries.inc_by(appended as u64);
                self.metrics.wal_segments.set(self.wal.segments() as i64);
                Ok(())
            }
            Err(e) => {
                error!(error = %e, "WAL write failed");
                Err(e.to_string())
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

    /// Writes the dirty state-machine rows in one redb commit: durable (a checkpoint) when
    /// `checkpoint` says so or one is due, else without fsync.
    fn write_rows(&mut self, checkpoint: bool) -> Result<(), String> {
        let durable = checkpoint || (self.undurable && self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY);
        let start = Instant::now();
        // Readers keep seeing the rows (as "being written") until the database has them.
        let rows = lock(&self.overlay).start_flush();
        if rows.is_empty() && !durable {
            lock(&self.overlay).finish_flush(true);
            return Ok(());
        }
        let result = (|| -> Result<(), StoreError> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
            rows.write_to(&txn)?;
            txn.commit()?;
            Ok(())
        })()
        .map_err(|e| e.to_string());
        drop(rows);
        lock(&self.overlay).finish_flush(result.is_ok());
        match &result {
            Ok(()) if durable => {
                self.metrics.checkpoint_seconds.observe(start.elapsed().as_secs_f64());
                self.last_checkpoint = Instant::now();
                self.undurable = false;
            }
            Ok(()) => self.undurable = true,
            Err(e) => error!(error = %e, "state-machine write failed"),
        }
        result
    }

    /// Deletes the removed groups' rows from the database, durably (after the WAL forgot them:
    /// rows left by a crash in between are dropped at the next open).
    fn delete_groups(&self, groups: &[GroupId]) -> Result<(), String> {
        (|| -> Result<(), StoreError> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            for g in groups {
                delete_group_rows(&txn, *g)?;
            }
            txn.commit()?;
            Ok(())
        })()
        .map_err(|e| e.to_string())
    }
}

/// Deletes a group's state-machine rows and metadata in `txn`.
pub(crate) fn delete_group_rows(txn: &WriteTransaction, g: GroupId) -> Result<(), StoreError> {
    txn.open_table(super::SM_META)?.retain_in((g, "")..(g + 1, ""), |_, _| false)?;
    txn.open_table(super::PLACEMENT)?.remove(g)?;
    txn.open_table(super::SERVICES)?.retain_in((g, 0, &[][..])..(g + 1, 0, &[][..]), |_, _| false)?;
    Ok(())
}
