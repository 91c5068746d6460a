//! One write-ahead log per node for every Raft group's log: entries, metas (vote, committed
//! index…), truncations, purges and group removals of all groups go to one set of append-only
//! segment files, so a batch from many groups costs one `write` and one `fdatasync` of a
//! preallocated file (≈100 µs) instead of a database commit (≈400 µs of scattered page writes).
//! The design is etcd's WAL / TiKV's raft-engine / Dragonboat's "tan".
//!
//! This module owns the files under its directory and the in-memory index that serves reads: per
//! group, where each entry lies, its metas and purge point, and a tail cache of recent entries. It
//! knows nothing of openraft: entries are opaque bytes keyed by `(group, index)`.
//!
//! Writes are two-phase. [`Wal::stage`] encodes records into a write buffer and updates the index
//! at once (a staged entry is readable before it is durable, which is what Raft's leader wants);
//! [`Wal::flush`] writes and syncs everything staged, without holding the index lock during the
//! I/O, so a writer thread can stage from many callers and flush once (group commit).
//!
//! Files: `wal-<seq:020>.log`, each preallocated to [`WalOptions::segment_bytes`] and starting with
//! a header (`segment.rs`); records are `[len][crc32c][group][kind][payload]` (`record.rs`). A
//! segment that holds no live entry is deleted, oldest first; every new segment starts with a
//! checkpoint of all metas and purge points (written before the segment is renamed into place), so
//! deleting old segments never loses them.
//!
//! The tail cache keeps, per group, every entry not yet written plus the newest written ones up to
//! [`WalOptions::cache_bytes_per_group`]: Raft reads what it just appended (replication to
//! followers, apply), while older entries are read rarely (a lagging follower) and come from disk.
//!
//! Appends follow Raft's follower rule: an append that starts at or before the group's last index
//! first drops the entries from its first index on (implicit truncation). One that would leave a
//! gap is refused, as is anything reaching below the purge point.

mod index;
mod record;
mod segment;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::util::lock;
use index::{Change, Index, Loc, Pos, Slot};
use record::{EntryRef, record_len};
pub use record::{MAX_META_VALUE, MAX_RECORD};
pub use segment::FORMAT_VERSION;
use segment::HEADER_LEN;

/// How the log is laid out and cached.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// The size each segment is preallocated to (a record larger than this gets a segment of its
    /// own size).
    pub segment_bytes: u64,
    /// How many bytes of each group's newest written entries stay in memory. Entries staged but
    /// not yet written are always held, whatever this says.
    pub cache_bytes_per_group: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self { segment_bytes: 64 << 20, cache_bytes_per_group: 256 << 10 }
    }
}

/// One change to one group's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Entries `first_index, first_index + 1, …`. Must start at most one past the group's last
    /// entry and after its purge point (right after it if the group holds no entries; anywhere
    /// in a group that holds nothing). Entries at or after `first_index` are replaced. An empty
    /// list does nothing.
    Append { group: u64, first_index: u64, entries: Vec<Bytes> },
    /// Sets one small value of the group (at most [`MAX_META_VALUE`] bytes); the newest wins.
    SetMeta { group: u64, key: u8, value: Bytes },
    /// Drops entries `from..`; `from` must be past the purge point.
    Truncate { group: u64, from: u64 },
    /// Drops entries `..=upto` and remembers `upto` (it may lie past the last entry, as after a
    /// snapshot install; the next append then starts at `upto + 1`). A purge point never moves
    /// back.
    Purge { group: u64, upto: u64 },
    /// Forgets everything of the group.
    RemoveGroup { group: u64 },
}

impl Op {
    /// The group the op changes.
    pub fn group(&self) -> u64 {
        match self {
            Op::Append { group, .. }
            | Op::SetMeta { group, .. }
            | Op::Truncate { group, .. }
            | Op::Purge { group, .. }
            | Op::RemoveGroup { group } => *group,
        }
    }
}

/// What [`Wal::open`] found.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Segments replayed.
    pub segments: usize,
    /// Records replayed (checkpoints included).
    pub records: u64,
    /// Bytes of those records.
    pub bytes: u64,
    /// Time the replay took.
    pub elapsed: Duration,
    /// A torn or damaged end of the last segment, cut off.
    pub torn: Option<TornTail>,
    /// Segments left behind by a deletion a crash interrupted, deleted now.
    pub stale_removed: Vec<PathBuf>,
}

/// Where replay cut the last segment.
#[derive(Debug, Clone)]
pub struct TornTail {
    /// The segment file.
    pub segment: PathBuf,
    /// The first byte no longer part of the log.
    pub offset: u64,
    /// Non-zero bytes zeroed from there on.
    pub discarded: u64,
    /// What was wrong at `offset`.
    pub reason: String,
}

/// What one [`Wal::flush`] did (for metrics).
#[derive(Debug, Clone, Default)]
pub struct FlushStats {
    /// Bytes written.
    pub bytes: u64,
    /// Records written (checkpoints included).
    pub records: u64,
    /// Distinct groups in them.
    pub groups: usize,
    /// Time spent in `fdatasync`.
    pub fsync: Duration,
    /// `fdatasync` calls (one per segment written to; two when the batch rolled over).
    pub syncs: u32,
    /// Segments deleted afterwards.
    pub deleted_segments: usize,
}

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("{doing} {path}: {source}")]
    Io {
        path: PathBuf,
        doing: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A file that should be a segment is not one.
    #[error("{path} is not a Shoal WAL segment: {reason}")]
    BadHeader { path: PathBuf, reason: String },
    /// A segment of another format version.
    #[error("{path} was written in WAL format version {found}; this build reads version {expected} only")]
    Version { path: PathBuf, found: u32, expected: u32 },
    /// Damage that is not a torn tail: in a segment other than the last, or records that
    /// contradict each other. Opening fails rather than lose what follows.
    #[error("WAL segment {path} is corrupt at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    /// A read asked for an entry the group does not hold.
    #[error("group {group} has no entry {index}: {reason}")]
    Missing { group: u64, index: u64, reason: String },
    /// An entry read back from disk does not match its checksum.
    #[error("entry {index} of group {group} in {path} at offset {offset} fails its checksum")]
    EntryChecksum { group: u64, index: u64, path: PathBuf, offset: u64 },
    /// A record or meta value over its limit.
    #[error("group {group}: {bytes} bytes is over the limit of {max}")]
    TooLarge { group: u64, bytes: u64, max: u64 },
    /// An append that would leave a hole in the group's log.
    #[error("group {group}: an append from index {first_index} leaves a gap (the next index is {expected})")]
    Gap { group: u64, first_index: u64, expected: u64 },
    /// Another op that does not fit the group's log.
    #[error("group {group}: {reason}")]
    Rejected { group: u64, reason: String },
    /// A write failed earlier; what was staged then may or may not be on disk, so nothing more is
    /// taken until the log is reopened (which finds out).
    #[error("the WAL takes no more writes after an earlier failure ({reason}); reopen it")]
    Failed { reason: String },
    /// Another `Wal` (in this process or another) has the directory open.
    #[error("the WAL in {} is in use: {path} is locked", path.parent().unwrap_or(path).display())]
    Locked { path: PathBuf },
    /// Unusable [`WalOptions`].
    #[error("invalid WAL options: {reason}")]
    Options { reason: String },
}

/// The node's log. See the module doc.
pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Held for a whole flush, so flushes write in staging order; staging and reads need only
    /// `state`.
    io: Mutex<()>,
    _lock: nix::fcntl::Flock<File>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal").field("dir", &self.dir).finish_non_exhaustive()
    }
}

struct State {
    index: Index,
    /// Every live segment that exists on disk.
    files: BTreeMap<u64, Arc<File>>,
    pending: Pending,
    /// Where the next staged record goes, and the size of that segment.
    tail: Pos,
    tail_size: u64,
    failed: Option<String>,
    refs: Vec<EntryRef>,
    locs: Vec<Loc>,
}

/// Staged records not handed to a flush yet.
#[derive(Default)]
struct Pending {
    chunks: Vec<Chunk>,
    records: u64,
    groups: BTreeSet<u64>,
}

/// Bytes for one segment from `start` on.
struct Chunk {
    seq: u64,
    start: u64,
    /// Set for a segment that does not exist yet.
    create: Option<NewSegment>,
    buf: Vec<u8>,
}

struct NewSegment {
    size: u64,
    /// The checkpoint's length at the head of `buf`.
    checkpoint: usize,
}

/// Entries this close together on disk are read with one `pread`.
const READ_GAP: u64 = 4 << 10;
const READ_SPAN: u64 = 4 << 20;

impl Wal {
    /// Opens the log in `dir` (created if missing), replaying every segment; see [`Recovery`].
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<(Wal, Recovery), WalError> {
        let dir = dir.as_ref().to_path_buf();
        if !(512..=1 << 30).contains(&options.segment_bytes) {
            let reason = format!("segment_bytes {} is not within 512 B..=1 GiB", options.segment_bytes);
            return Err(WalError::Options { reason });
        }
        let r = segment::replay(&dir, options.segment_bytes, options.cache_bytes_per_group)?;
        let mut state = State {
            index: r.index,
            files: r.files,
            pending: Pending::default(),
            tail: r.tail,
            tail_size: r.tail_size,
            failed: None,
            refs: Vec::new(),
            locs: Vec::new(),
        };
        // A crash between a flush and its deletions leaves segments that are already dead.
        let dead = state.index.take_deletable(r.tail);
        for seq in &dead {
            state.files.remove(seq);
        }
        segment::remove(&dir, &dead)?;
        let wal = Wal {
            dir,
            segment_bytes: options.segment_bytes,
            state: Mutex::new(state),
            io: Mutex::new(()),
            _lock: r.lock,
        };
        Ok((wal, r.recovery))
    }

    /// Encodes `ops` into the write buffer and applies them to the index: what they append is
    /// readable now, durable after the next [`flush`](Self::flush). All or nothing: if one op is
    /// refused, none is staged.
    pub fn stage(&self, ops: impl IntoIterator<Item = Op>) -> Result<(), WalError> {
        let ops: Vec<Op> = ops.into_iter().collect();
        let mut st = lock(&self.state);
        if let Some(reason) = &st.failed {
            return Err(WalError::Failed { reason: reason.clone() });
        }
        st.index.validate(&ops)?;
        for op in ops {
            st.stage_op(op, self.segment_bytes)?;
        }
        Ok(())
    }

    /// Writes and syncs everything staged so far: one write and one `fdatasync` per segment it
    /// touches. Then deletes the segments nothing needs any more.
    pub fn flush(&self) -> Result<FlushStats, WalError> {
        let _io = lock(&self.io);
        let pending = {
            let mut st = lock(&self.state);
            if let Some(reason) = &st.failed {
                return Err(WalError::Failed { reason: reason.clone() });
            }
            std::mem::take(&mut st.pending)
        };
        let Some(end) = pending.chunks.last().map(|c| Pos { seq: c.seq, offset: c.start + c.buf.len() as u64 }) else {
            return Ok(FlushStats::default());
        };
        let mut stats = match self.write_out(&pending) {
            Ok(stats) => stats,
            Err(e) => {
                // After a failed write or fsync the file's contents are unknown (and a retried
                // fsync may report success for pages the kernel already dropped).
                lock(&self.state).failed = Some(e.to_string());
                return Err(e);
            }
        };
        let dead = {
            let mut st = lock(&self.state);
            st.index.written_upto(end, pending.groups.iter().copied());
            let dead = st.index.take_deletable(end);
            for seq in &dead {
                st.files.remove(seq);
            }
            dead
        };
        // The flush itself succeeded; a segment left behind is replayed (harmlessly) or dropped
        // as stale at the next open.
        match segment::remove(&self.dir, &dead) {
            Ok(()) => stats.deleted_segments = dead.len(),
            Err(e) => tracing::warn!(error = %e, "could not delete dead WAL segments"),
        }
        Ok(stats)
    }

    /// [`stage`](Self::stage) then [`flush`](Self::flush).
    pub fn write(&self, ops: impl IntoIterator<Item = Op>) -> Result<FlushStats, WalError> {
        self.stage(ops)?;
        self.flush()
    }

    fn write_out(&self, pending: &Pending) -> Result<FlushStats, WalError> {
        let mut stats = FlushStats { records: pending.records, groups: pending.groups.len(), ..Default::default() };
        // Each segment is synced before the next is created, so a later segment never holds
        // data while an earlier one is torn: damage before the last segment is real damage.
        for chunk in &pending.chunks {
            let path = segment::path(&self.dir, chunk.seq);
            let (file, skip) = match &chunk.create {
                Some(new) => {
                    let checkpoint = &chunk.buf[..new.checkpoint];
                    let file = Arc::new(segment::create(&self.dir, chunk.seq, new.size, checkpoint)?);
                    lock(&self.state).files.insert(chunk.seq, Arc::clone(&file));
                    (file, new.checkpoint)
                }
                None => {
                    let file = lock(&self.state).files.get(&chunk.seq).cloned().ok_or_else(|| WalError::Io {
                        path: path.clone(),
                        doing: "finding the open segment",
                        source: std::io::ErrorKind::NotFound.into(),
                    })?;
                    (file, 0)
                }
            };
            let path = &path;
            let io = |doing| move |source| WalError::Io { path: path.clone(), doing, source };
            file.write_all_at(&chunk.buf[skip..], chunk.start + skip as u64).map_err(io("writing to segment"))?;
            let started = Instant::now();
            file.sync_data().map_err(io("syncing segment"))?;
            stats.fsync += started.elapsed();
            stats.syncs += 1;
            stats.bytes += chunk.buf.len() as u64;
        }
        Ok(stats)
    }

    /// Entries `range` of `group`, from the tail cache or the segment files (checked against
    /// their crc). Fails if the group lacks any of them, naming the first.
    pub fn read(&self, group: u64, range: Range<u64>) -> Result<Vec<Bytes>, WalError> {
        let (slots, files) = {
            let st = lock(&self.state);
            let slots = st.index.lookup(group, range.clone())?;
            let mut files = BTreeMap::new();
            for slot in &slots {
                if let Slot::Disk(loc) = slot
                    && let Some(f) = st.files.get(&loc.seq)
                {
                    files.entry(loc.seq).or_insert_with(|| Arc::clone(f));
                }
            }
            (slots, files)
        };
        let mut out = Vec::with_capacity(slots.len());
        let mut i = 0;
        while i < slots.len() {
            let loc = match &slots[i] {
                Slot::Cached(b) => {
                    out.push(b.clone());
                    i += 1;
                    continue;
                }
                Slot::Disk(loc) => *loc,
            };
            // Coalesce the following entries of the same segment into one read.
            let (start, mut end) = (loc.offset, loc.offset + u64::from(loc.len));
            let mut j = i + 1;
            while let Some(Slot::Disk(n)) = slots.get(j)
                && n.seq == loc.seq
                && n.offset >= end
                && n.offset - end <= READ_GAP
                && n.offset + u64::from(n.len) - start <= READ_SPAN
            {
                end = n.offset + u64::from(n.len);
                j += 1;
            }
            let path = segment::path(&self.dir, loc.seq);
            let file = files.get(&loc.seq).ok_or_else(|| WalError::Io {
                path: path.clone(),
                doing: "finding the segment of an entry",
                source: std::io::ErrorKind::NotFound.into(),
            })?;
            let mut buf = vec![0; (end - start) as usize];
            file.read_exact_at(&mut buf, start).map_err(|source| WalError::Io {
                path: path.clone(),
                doing: "reading entries from segment",
                source,
            })?;
            let buf = Bytes::from(buf);
            for (k, slot) in slots[i..j].iter().enumerate() {
                let Slot::Disk(l) = slot else { continue };
                let r = EntryRef { offset: (l.offset - start) as usize, len: l.len, crc: l.crc };
                let entry = record::checked(&buf, r).ok_or_else(|| WalError::EntryChecksum {
                    group,
                    index: range.start + (i + k) as u64,
                    path: path.clone(),
                    offset: l.offset,
                })?;
                out.push(entry);
            }
            i = j;
        }
        Ok(out)
    }

    /// The group's first entry, if it holds any.
    pub fn first_index(&self, group: u64) -> Option<u64> {
        lock(&self.state).index.first_index(group)
    }

    /// The group's last entry, if it holds any (see [`purged`](Self::purged) for where an empty
    /// log's next append starts).
    pub fn last_index(&self, group: u64) -> Option<u64> {
        lock(&self.state).index.last_index(group)
    }

    /// The group's purge point: entries up to it are gone for good.
    pub fn purged(&self, group: u64) -> Option<u64> {
        lock(&self.state).index.purged(group)
    }

    /// The newest value of one of the group's metas.
    pub fn meta(&self, group: u64, key: u8) -> Option<Bytes> {
        lock(&self.state).index.meta(group, key)
    }

    /// Groups holding any entry, meta or purge point, ascending.
    pub fn groups(&self) -> Vec<u64> {
        lock(&self.state).index.groups()
    }

    /// Live segments (including one staged but not yet created).
    pub fn segments(&self) -> usize {
        lock(&self.state).index.segments()
    }

    /// The directory of the segment files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the next record goes: (segment, offset).
    #[cfg(test)]
    fn tail(&self) -> (u64, u64) {
        let st = lock(&self.state);
        (st.tail.seq, st.tail.offset)
    }

    #[cfg(test)]
    fn cached(&self, group: u64) -> usize {
        lock(&self.state).index.cached(group)
    }
}

impl State {
    fn stage_op(&mut self, op: Op, segment_bytes: u64) -> Result<(), WalError> {
        let Some(len) = record_len(&op) else { return Ok(()) };
        if self.tail.offset + len > self.tail_size {
            self.roll(len, segment_bytes);
        }
        let at = self.encode(&op);
        let group = op.group();
        let locs = std::mem::take(&mut self.locs);
        let result = match op {
            Op::Append { first_index, entries, .. } => {
                self.apply(group, Change::Append { first: first_index, locs: &locs, cached: Some(&entries) }, at)
            }
            Op::SetMeta { key, value, .. } => self.apply(group, Change::Meta { key, value }, at),
            Op::Truncate { from, .. } => self.apply(group, Change::Truncate { from }, at),
            Op::Purge { upto, .. } => self.apply(group, Change::Purge { upto }, at),
            Op::RemoveGroup { .. } => self.apply(group, Change::Remove, at),
        };
        self.locs = locs;
        result
    }

    fn apply(&mut self, group: u64, change: Change<'_>, at: Pos) -> Result<(), WalError> {
        // Validation let the op through, so this is a bug; the record is already encoded, so
        // stop taking writes rather than serve an index the log disagrees with.
        self.index.apply(group, change, at).map_err(|reason| {
            self.failed = Some(reason.clone());
            WalError::Rejected { group, reason }
        })
    }

    /// Starts the next segment, sized for its checkpoint and a record of `len` bytes.
    fn roll(&mut self, len: u64, segment_bytes: u64) {
        let checkpoint = self.index.checkpoint();
        let checkpoint_len: u64 = checkpoint.iter().filter_map(record_len).sum();
        let seq = self.tail.seq + 1;
        let size = segment_bytes.max(HEADER_LEN + checkpoint_len + len);
        self.index.add_segment(seq);
        let buf = Vec::with_capacity((checkpoint_len + len) as usize);
        let create = Some(NewSegment { size, checkpoint: checkpoint_len as usize });
        self.pending.chunks.push(Chunk { seq, start: HEADER_LEN, create, buf });
        self.tail = Pos { seq, offset: HEADER_LEN };
        self.tail_size = size;
        // The checkpoint restates the index, so it is written but not applied.
        for op in &checkpoint {
            self.encode(op);
        }
    }

    /// Appends `op`'s record at the tail; leaves its entries' places in `self.locs` and returns
    /// where the record ends.
    fn encode(&mut self, op: &Op) -> Pos {
        if self.pending.chunks.last().is_none_or(|c| c.seq != self.tail.seq) {
            let chunk = Chunk { seq: self.tail.seq, start: self.tail.offset, create: None, buf: Vec::new() };
            self.pending.chunks.push(chunk);
        }
        let last = self.pending.chunks.len() - 1;
        let chunk = &mut self.pending.chunks[last];
        let before = chunk.buf.len();
        record::encode(&mut chunk.buf, op, &mut self.refs);
        let (seq, start) = (chunk.seq, chunk.start);
        self.locs.clear();
        self.locs.extend(self.refs.iter().map(|r| Loc {
            seq,
            offset: start + r.offset as u64,
            len: r.len,
            crc: r.crc,
        }));
        self.tail.offset += (chunk.buf.len() - before) as u64;
        self.pending.records += 1;
        self.pending.groups.insert(op.group());
        self.tail
    }
}
