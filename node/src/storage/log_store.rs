//! openraft's log storage for one group, on the shared database and log writer.
//!
//! openraft 0.10 replicates an entry as soon as `append` returns, in parallel with the leader's
//! own write, so appended entries must be readable before the writer has committed them: they
//! wait in [`Unflushed`] (shared by every group's log store) until their transaction commits.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use redb::ReadableDatabase;
use tokio::sync::oneshot;

use super::entry::{Entry, GroupId, LogId, TypeConfig, Vote};
use super::records::{self, EntryRec, LogIdRec, VoteRec};
use super::writer::WriteOp;
use super::{LOGS, RAFT_META, Store, StoreError, meta_key};
use crate::util::lock;

/// Entries appended but not committed by the log writer yet, by `(group, index)`, each with the
/// number of the `append` call that wrote it. They are always the tail of their group's log.
/// Readers lock this, then begin their database read, so an entry the writer commits meanwhile
/// (it leaves here only after its commit) is seen in one place or the other.
#[derive(Default)]
pub(crate) struct Unflushed {
    entries: BTreeMap<(GroupId, u64), (u64, Entry)>,
}

impl Unflushed {
    /// Whether no entry waits for its commit.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops `group`'s entries with index in `range` (truncated, purged, or the group dropped).
    pub(crate) fn forget(&mut self, group: GroupId, range: impl RangeBounds<u64>) {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let keys: Vec<(GroupId, u64)> = self
            .entries
            .range((group, start)..=(group, u64::MAX))
            .map(|(k, _)| *k)
            .take_while(|(_, index)| range.contains(index))
            .collect();
        for key in keys {
            self.entries.remove(&key);
        }
    }

    /// `group`'s unflushed entries in `start..end`.
    fn range(&self, group: GroupId, start: u64, end: Bound<u64>) -> impl Iterator<Item = &Entry> {
        let end = match end {
            Bound::Included(e) => Bound::Included((group, e)),
            Bound::Excluded(e) => Bound::Excluded((group, e)),
            Bound::Unbounded => Bound::Included((group, u64::MAX)),
        };
        self.entries.range((Bound::Included((group, start)), end)).map(|(_, (_, e))| e)
    }

    /// `group`'s last unflushed entry.
    fn last(&self, group: GroupId) -> Option<&Entry> {
        self.entries.range((group, 0)..=(group, u64::MAX)).next_back().map(|(_, (_, e))| e)
    }
}

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

/// Numbers `append` calls, so a commit removes from [`Unflushed`] only what it wrote.
static APPENDS: AtomicU64 = AtomicU64::new(0);

impl LogStore {
    pub(crate) fn new(store: Arc<Store>, group: GroupId) -> Self {
        Self { store, group }
    }

    fn unflushed(&self) -> std::sync::MutexGuard<'_, Unflushed> {
        lock(self.store.unflushed())
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
    async fn write(&self, op: impl FnOnce(oneshot::Sender<Result<(), String>>) -> WriteOp) -> Result<(), io::Error> {
        let (tx, rx) = oneshot::channel();
        self.store.send(op(tx)).map_err(io_err)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_err(StoreError::Db(e))),
            Err(_) => Err(io_err(StoreError::WriterStopped)),
        }
    }

    /// Entries `start..end`: committed ones from the database, the tail not committed yet from
    /// [`Unflushed`].
    fn range_entries(&self, start: u64, end: Bound<u64>) -> Result<Vec<Entry>, StoreError> {
        let unflushed = self.unflushed();
        let txn = self.store.db().begin_read()?;
        let table = txn.open_table(LOGS)?;
        let db_end = match end {
            Bound::Included(e) => Bound::Included((self.group, e)),
            Bound::Excluded(e) => Bound::Excluded((self.group, e)),
            Bound::Unbounded => Bound::Included((self.group, u64::MAX)),
        };
        let tail: Vec<Entry> = unflushed.range(self.group, start, end).cloned().collect();
        drop(unflushed);
        // The unflushed tail replaces whatever the database has from its first index on.
        let tail_start = tail.first().map(|e| e.log_id.index).unwrap_or(u64::MAX);
        let mut out = Vec::new();
        for item in table.range::<(u64, u64)>((Bound::Included((self.group, start)), db_end))? {
            let (k, v) = item?;
            if k.value().1 >= tail_start {
                break;
            }
            out.push(records::decode::<EntryRec>(v.value())?.into_entry()?);
        }
        out.extend(tail);
        Ok(out)
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
        let v = self.read_meta::<VoteRec>(meta_key::VOTE).map_err(io_err)?;
        Ok(v.map(|r| Vote::from(&r)))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged = self.read_meta::<LogIdRec>(meta_key::PURGED).map_err(io_err)?.map(|r| LogId::from(&r));
        let last = (|| -> Result<Option<LogId>, StoreError> {
            let unflushed = self.unflushed();
            if let Some(e) = unflushed.last(self.group) {
                return Ok(Some(e.log_id));
            }
            let txn = self.store.db().begin_read()?;
            drop(unflushed);
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
        .map_err(io_err)?;
        Ok(LogState { last_purged_log_id: purged, last_log_id: last.or(purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = records::encode(&VoteRec::from(vote)).map_err(io_err)?;
        let group = self.group;
        self.write(|done| WriteOp::Meta { group, key: meta_key::VOTE, value: Some(bytes), done }).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // No transaction of its own: it rides along with the next write (see `Store::note_committed`).
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
        Ok(self.read_meta::<LogIdRec>(meta_key::COMMITTED).map_err(io_err)?.map(|r| LogId::from(&r)))
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let append = APPENDS.fetch_add(1, Ordering::Relaxed);
        let mut encoded = Vec::new();
        let mut kept = Vec::new();
        for e in entries {
            let bytes = records::encode(&EntryRec::from(&e)).map_err(io_err)?;
            encoded.push((e.log_id.index, bytes));
            kept.push(e);
        }
        let group = self.group;
        let indexes: Vec<u64> = encoded.iter().map(|(i, _)| *i).collect();
        {
            // Readable at once (openraft replicates them before they are durable here).
            let mut unflushed = self.unflushed();
            for e in kept {
                unflushed.entries.insert((group, e.log_id.index), (append, e));
            }
        }
        // The writer answers after the group commit; then the entries leave `Unflushed` (also
        // when the write failed: openraft stops the group, and a reopened one must not see them).
        // (Only the tail is captured: were it the store, the writer thread could end up dropping
        // the last reference to it, and so joining itself.)
        let tail = Arc::clone(self.store.unflushed());
        let done = Box::new(move |result: Result<(), String>| {
            {
                let mut unflushed = lock(&tail);
                for index in indexes {
                    if unflushed.entries.get(&(group, index)).is_some_and(|(a, _)| *a == append) {
                        unflushed.entries.remove(&(group, index));
                    }
                }
            }
            callback.io_completed(result.map_err(io::Error::other));
        });
        // Returns at once; the callback fires after the group commit is durable.
        self.store.send(WriteOp::Append { group, entries: encoded, done }).map_err(io_err)
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let group = self.group;
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        self.unflushed().forget(group, from..);
        self.write(|done| WriteOp::Truncate { group, from, done }).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let purged = records::encode(&LogIdRec::from(&log_id)).map_err(io_err)?;
        let group = self.group;
        self.unflushed().forget(group, ..=log_id.index);
        self.write(|done| WriteOp::Purge { group, upto: log_id.index, purged, done }).await
    }
}

/// The unflushed entries of every group, shared by the store's log stores.
pub(crate) type SharedUnflushed = Arc<Mutex<Unflushed>>;
