//! openraft's log storage for one group, on the shared database and log writer.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::ReadableDatabase;
use tokio::sync::oneshot;

use super::entry::{GroupId, TypeConfig};
use super::records::{self, EntryRec, LogIdRec, VoteRec};
use super::writer::WriteOp;
use super::{LOGS, RAFT_META, Store, StoreError, meta_key};
use crate::NodeId;

type Entry = openraft::Entry<TypeConfig>;

/// The log of one Raft group. Cheap to clone (it is also its own log reader).
#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
    group: GroupId,
}

fn read_err(e: impl Into<StoreError>) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e.into()).into()
}

fn write_err(e: impl Into<StoreError>) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e.into()).into()
}

impl LogStore {
    pub(crate) fn new(store: Arc<Store>, group: GroupId) -> Self {
        Self { store, group }
    }

    fn read_meta<T>(&self, key: &str) -> Result<Option<T>, StoreError>
    where
        T: rkyv::Archive,
        T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rkyv::rancor::Error>>
            + rkyv::Deserialize<T, rkyv::rancor::Strategy<rkyv::de::Pool, rkyv::rancor::Error>>,
    {
        let txn = self.store.db().begin_read()?;
        let table = txn.open_table(RAFT_META)?;
        let value = table.get((self.group, key))?;
        Ok(match value {
            Some(v) => Some(records::decode::<T>(v.value())?),
            None => None,
        })
    }

    /// Sends a metadata or truncation op to the writer and waits until it is durable.
    async fn write(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<(), String>>) -> WriteOp,
    ) -> Result<(), StorageError<NodeId>> {
        let (tx, rx) = oneshot::channel();
        self.store.send(op(tx)).map_err(write_err)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(write_err(StoreError::Db(e))),
            Err(_) => Err(write_err(StoreError::WriterStopped)),
        }
    }

    fn range_entries(&self, start: u64, end: Bound<u64>) -> Result<Vec<Entry>, StoreError> {
        let txn = self.store.db().begin_read()?;
        let table = txn.open_table(LOGS)?;
        let end = match end {
            Bound::Included(e) => Bound::Included((self.group, e)),
            Bound::Excluded(e) => Bound::Excluded((self.group, e)),
            Bound::Unbounded => Bound::Included((self.group, u64::MAX)),
        };
        let mut out = Vec::new();
        for item in table.range::<(u64, u64)>((Bound::Included((self.group, start)), end))? {
            let (_, v) = item?;
            out.push(records::decode::<EntryRec>(v.value())?.into());
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        self.range_entries(start, range.end_bound().cloned()).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let purged = self.read_meta::<LogIdRec>(meta_key::PURGED).map_err(read_err)?.map(|r| LogId::from(&r));
        let last = (|| -> Result<Option<LogId<NodeId>>, StoreError> {
            let txn = self.store.db().begin_read()?;
            let table = txn.open_table(LOGS)?;
            let mut range = table.range((self.group, 0)..=(self.group, u64::MAX))?;
            match range.next_back() {
                Some(item) => {
                    let (_, v) = item?;
                    let rec = records::decode::<EntryRec>(v.value())?;
                    Ok(Some(LogId::from(&rec.log_id)))
                }
                None => Ok(None),
            }
        })()
        .map_err(read_err)?;
        Ok(LogState { last_purged_log_id: purged, last_log_id: last.or(purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let bytes =
            records::encode(&VoteRec::from(vote)).map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))?;
        let group = self.group;
        self.write(|done| WriteOp::Meta { group, key: meta_key::VOTE, value: Some(bytes), done }).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        let v =
            self.read_meta::<VoteRec>(meta_key::VOTE).map_err(|e| StorageError::from(StorageIOError::read_vote(&e)))?;
        Ok(v.map(|r| Vote::from(&r)))
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        // No transaction of its own: it rides along with the next write (see `Store::note_committed`).
        if let Some(c) = committed {
            let bytes = records::encode(&LogIdRec::from(&c)).map_err(write_err)?;
            self.store.note_committed(self.group, c.index, bytes);
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        if let Some(bytes) = self.store.noted_committed(self.group) {
            let rec = records::decode::<LogIdRec>(&bytes).map_err(read_err)?;
            return Ok(Some(LogId::from(&rec)));
        }
        Ok(self.read_meta::<LogIdRec>(meta_key::COMMITTED).map_err(read_err)?.map(|r| LogId::from(&r)))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for e in entries {
            let bytes = records::encode(&EntryRec::from(&e)).map_err(write_err)?;
            encoded.push((e.log_id.index, bytes));
        }
        // Returns at once; the callback fires after the group commit is durable.
        self.store.send(WriteOp::Append { group: self.group, entries: encoded, done: callback }).map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let group = self.group;
        self.write(|done| WriteOp::Truncate { group, from: log_id.index, done }).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let purged = records::encode(&LogIdRec::from(&log_id)).map_err(write_err)?;
        let group = self.group;
        self.write(|done| WriteOp::Purge { group, upto: log_id.index, purged, done }).await
    }
}
