//! The log writer: one thread, group commit. Every operation queued when it wakes goes into one
//! write transaction and one fsync; completions fire only after the commit.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use openraft::storage::LogFlushed;
use redb::{Database, Durability};
use tokio::sync::oneshot;
use tracing::error;

use super::metrics::StorageMetrics;
use super::{LOGS, RAFT_META, StoreError};
use crate::raft::{BatchResult, GroupId, TypeConfig};

/// Most operations folded into one transaction.
const MAX_BATCH: usize = 4096;

/// A durable log operation.
pub(crate) enum WriteOp {
    /// Append encoded entries `(index, bytes)`; `done` fires after the fsync.
    Append { group: GroupId, entries: Vec<(u64, Vec<u8>)>, done: LogFlushed<TypeConfig> },
    /// Set (or delete) a per-group metadata record.
    Meta { group: GroupId, key: &'static str, value: Option<Vec<u8>>, done: oneshot::Sender<Result<(), String>> },
    /// Delete entries with index ≥ `from`.
    Truncate { group: GroupId, from: u64, done: oneshot::Sender<Result<(), String>> },
    /// Delete entries with index ≤ `upto` and record the purge point.
    Purge { group: GroupId, upto: u64, purged: Vec<u8>, done: oneshot::Sender<Result<(), String>> },
    /// Apply committed entries to the group's state machine, in the same transaction as the log
    /// writes queued with it; `done` gets one result per entry after the commit.
    Apply {
        group: GroupId,
        entries: Vec<openraft::Entry<TypeConfig>>,
        done: oneshot::Sender<Result<Vec<BatchResult>, String>>,
    },
}

impl WriteOp {
    /// Whether this operation must be on disk before it completes. Log writes, votes and purges
    /// must; state-machine applies and the committed index need not: after a crash they are
    /// re-derived from the durable log, and every durable commit also persists the non-durable
    /// ones before it (so nothing is purged from the log before the state it produced is on disk).
    fn needs_fsync(&self) -> bool {
        match self {
            WriteOp::Append { .. } | WriteOp::Truncate { .. } | WriteOp::Purge { .. } => true,
            WriteOp::Meta { key, .. } => *key != super::meta_key::COMMITTED,
            WriteOp::Apply { .. } => false,
        }
    }
}

pub(crate) fn spawn(
    db: Arc<Database>,
    metrics: StorageMetrics,
) -> Result<(Sender<WriteOp>, std::thread::JoinHandle<()>), StoreError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new().name("shoal-log-writer".into()).spawn(move || run(db, rx, metrics))?;
    Ok((tx, thread))
}

fn run(db: Arc<Database>, rx: Receiver<WriteOp>, metrics: StorageMetrics) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let appended: usize =
            batch.iter().map(|op| if let WriteOp::Append { entries, .. } = op { entries.len() } else { 0 }).sum();
        let durable = batch.iter().any(WriteOp::needs_fsync);
        let start = Instant::now();
        let result = write_batch(&db, &mut batch, durable);
        if durable {
            metrics.fsync_seconds.observe(start.elapsed().as_secs_f64());
        }
        metrics.batch_ops.observe(batch.len() as f64);
        metrics.appended_entries.inc_by(appended as u64);
        let (result, mut applied) = match result {
            Ok(applied) => (Ok(()), applied),
            Err(e) => {
                error!(error = %e, "log write failed");
                (Err(e), Vec::new())
            }
        };
        // Results of applies, in batch order.
        applied.reverse();
        for op in batch {
            let r = result.clone();
            match op {
                WriteOp::Append { done, .. } => done.log_io_completed(r.map_err(std::io::Error::other)),
                WriteOp::Meta { done, .. } | WriteOp::Truncate { done, .. } | WriteOp::Purge { done, .. } => {
                    let _ = done.send(r);
                }
                WriteOp::Apply { done, .. } => {
                    let _ = done.send(r.and_then(|()| applied.pop().ok_or_else(|| "missing apply result".to_string())));
                }
            }
        }
    }
}

fn write_batch(db: &Database, batch: &mut [WriteOp], durable: bool) -> Result<Vec<Vec<BatchResult>>, String> {
    let mut inner = || -> Result<Vec<Vec<BatchResult>>, StoreError> {
        let mut applied = Vec::new();
        let mut txn = db.begin_write()?;
        txn.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
        {
            let mut logs = txn.open_table(LOGS)?;
            let mut meta = txn.open_table(RAFT_META)?;
            let mut sm = super::state_machine::SmTables::open(&txn)?;
            for op in batch.iter_mut() {
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
                    WriteOp::Apply { group, entries, .. } => {
                        applied.push(sm.apply(*group, std::mem::take(entries))?);
                    }
                }
            }
        }
        txn.commit()?;
        Ok(applied)
    };
    inner().map_err(|e| e.to_string())
}
