//! openraft's log storage for one group, on the node's shared WAL and log writer.
//!
//! Appends, votes and truncations are staged into the WAL right here, in openraft's storage
//! task (so they are readable at once and ordered as openraft issued them); the writer thread
//! makes them durable with everything else staged meanwhile and fires the callback after.
//! Purges go through the writer, which first makes the state machines durable (the log is never
//! purged past a durable checkpoint).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use tokio::sync::oneshot;

use super::entry::{Entry, GroupId, LogId, TypeConfig, Vote};
use super::records::{self, EntryRec, LogIdRec, VoteRec};
use super::wal::Op;
use super::writer::{Synced, WriteOp};
use super::{Store, StoreError, wal_key};

/// The log of one Raft group. Cheap to clone (it is also its own log reader).
#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
    group: GroupId,
}

/// Storage errors as openraft takes them (it names what failed itself).
fn io_err(e: impl Into<StoreError>) -> io::Error {
    io::Error::other(e.into())
}

impl LogStore {
    pub(crate) fn new(store: Arc<Store>, group: GroupId) -> Self {
        Self { store, group }
    }

    fn read_meta<T>(&self, key: u8) -> Result<Option<T>, StoreError>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
            + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
    {
        match self.store.wal().meta(self.group, key) {
            Some(v) => Ok(Some(records::decode::<T>(&v)?)),
            None => Ok(None),
        }
    }

    /// Stages `op` and waits until it is durable.
    async fn write(&self, op: Op) -> Result<(), io::Error> {
        self.store.wal().stage([op]).map_err(io_err)?;
        let (tx, rx) = oneshot::channel();
        self.store.send(WriteOp::Sync { group: self.group, done: Synced::Wait(tx) }).map_err(io_err)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_err(StoreError::Db(e))),
            Err(_) => Err(io_err(StoreError::WriterStopped)),
        }
    }

    /// Entries in `start..end` this group holds (those before its first entry or after its last
    /// are not asked for by openraft; they are left out rather than refused).
    fn range_entries(&self, start: u64, end: Bound<u64>) -> Result<Vec<Entry>, StoreError> {
        let wal = self.store.wal();
        let (Some(first), Some(last)) = (wal.first_index(self.group), wal.last_index(self.group)) else {
            return Ok(Vec::new());
        };
        let end = match end {
            Bound::Included(e) => e.saturating_add(1),
            Bound::Excluded(e) => e,
            Bound::Unbounded => u64::MAX,
        }
        .min(last + 1);
        let start = start.max(first);
        if start >= end {
            return Ok(Vec::new());
        }
        wal.read(self.group, start..end)?
            .iter()
            .map(|bytes| Ok(records::decode::<EntryRec>(bytes)?.into_entry()?))
            .collect()
    }

    /// The log id of the group's last entry, if it holds any.
    fn last_log_id(&self) -> Result<Option<LogId>, StoreError> {
        let Some(last) = self.store.wal().last_index(self.group) else { return Ok(None) };
        let bytes = self.store.wal().read(self.group, last..last + 1)?;
        match bytes.first() {
            Some(b) => Ok(Some(LogId::from(&records::decode::<EntryRec>(b)?.log_id))),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        self.range_entries(start, range.end_bound().cloned()).map_err(io_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        let v = self.read_meta::<VoteRec>(wal_key::VOTE).map_err(io_err)?;
        Ok(v.map(|r| Vote::from(&r)))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged = self.read_meta::<LogIdRec>(wal_key::PURGED).map_err(io_err)?.map(|r| LogId::from(&r));
        let last = self.last_log_id().map_err(io_err)?;
        Ok(LogState { last_purged_log_id: purged, last_log_id: last.or(purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = records::encode(&VoteRec::from(vote)).map_err(io_err)?;
        self.write(Op::SetMeta { group: self.group, key: wal_key::VOTE, value: Bytes::from(bytes) }).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // No write of its own: it rides along with the next WAL flush (see `Store::note_committed`).
        if let Some(c) = committed {
            let bytes = records::encode(&LogIdRec::from(&c)).map_err(io_err)?;
            self.store.note_committed(self.group, c.index, bytes);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        if let Some(bytes) = self.store.noted_committed(self.group) {
            let rec = records::decode::<LogIdRec>(&bytes).map_err(io_err)?;
            return Ok(Some(LogId::from(&rec)));
        }
        Ok(self.read_meta::<LogIdRec>(wal_key::COMMITTED).map_err(io_err)?.map(|r| LogId::from(&r)))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Entries at or below the purge point are covered by the state machine already (openraft
        // purges up to what is applied when a state machine is ahead of its log): not kept.
        let purged = self.store.wal().purged(self.group);
        let mut first_index = None;
        let mut encoded = Vec::new();
        for e in entries {
            if purged.is_some_and(|p| e.log_id.index <= p) {
                continue;
            }
            first_index.get_or_insert(e.log_id.index);
            encoded.push(Bytes::from(records::encode(&EntryRec::from(&e)).map_err(io_err)?));
        }
        let count = encoded.len();
        if let Some(first_index) = first_index {
            self.store
                .wal()
                .stage([Op::Append { group: self.group, first_index, entries: encoded }])
                .map_err(io_err)?;
        }
        // Returns at once; the callback fires after the group commit is durable.
        let done = Synced::Log { callback, entries: count };
        self.store.send(WriteOp::Sync { group: self.group, done }).map_err(io_err)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        if self.store.wal().last_index(self.group).is_none_or(|last| from > last) {
            return Ok(());
        }
        self.write(Op::Truncate { group: self.group, from }).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let purged = records::encode(&LogIdRec::from(&log_id)).map_err(io_err)?;
        let (done, rx) = oneshot::channel();
        let op = WriteOp::Purge { group: self.group, upto: log_id.index, purged, done };
        self.store.send(op).map_err(io_err)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_err(StoreError::Db(e))),
            Err(_) => Err(io_err(StoreError::WriterStopped)),
        }
    }
}
