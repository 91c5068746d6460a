//! Segment files: their names and header, creating one with its space really allocated, and
//! replaying them all at open.
//!
//! A new segment is written under a temporary name, preallocated, given its header and its
//! checkpoint (every group's metas and purge point) and synced before it is renamed into place.
//! So a segment that exists always starts with a whole checkpoint, which is what lets the segments
//! before it be deleted; and a crash never leaves a half-made segment that replay would have to
//! tell apart from a damaged one.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use nix::errno::Errno;
use nix::fcntl::{FallocateFlags, Flock, FlockArg, fallocate};

use super::index::{Change, Index, Loc, Pos};
use super::record::{self, Body, Parsed};
use super::{Recovery, TornTail, WalError};

/// Magic, version, reserved, seq, crc of those, padding.
pub(super) const HEADER_LEN: u64 = 32;
const MAGIC: &[u8; 8] = b"SHOALWAL";
/// The segment format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

pub(super) fn path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("wal-{seq:020}.log"))
}

fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn header(seq: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Magic first and version second, so a file of another format is named as such rather than as
/// damaged.
fn check_header(path: &Path, buf: &[u8], seq: u64) -> Result<(), WalError> {
    let bad = |reason: String| Err(WalError::BadHeader { path: path.to_path_buf(), reason });
    if buf.len() < HEADER_LEN as usize {
        return bad(format!("{} bytes long, shorter than a segment header", buf.len()));
    }
    if &buf[..8] != MAGIC {
        return bad(format!("wrong magic {:02x?}", &buf[..8]));
    }
    let found = record::read_u32(buf, 8).unwrap_or(0);
    if found != FORMAT_VERSION {
        return Err(WalError::Version { path: path.to_path_buf(), found, expected: FORMAT_VERSION });
    }
    if record::read_u32(buf, 24) != Some(crc32c::crc32c(&buf[..24])) {
        return bad("header checksum mismatch".into());
    }
    match record::read_u64(buf, 16) {
        Some(s) if s == seq => Ok(()),
        s => bad(format!("the header says segment {s:?} but the name says {seq}")),
    }
}

fn io(path: &Path, doing: &'static str) -> impl FnOnce(std::io::Error) -> WalError {
    let path = path.to_path_buf();
    move |source| WalError::Io { path, doing, source }
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir, "syncing the directory"))
}

/// Creates segment `seq` of `size` bytes, allocated and durable, starting with `checkpoint` (encoded
/// records) after its header, and returns it open for writing.
pub(super) fn create(dir: &Path, seq: u64, size: u64, checkpoint: &[u8]) -> Result<File, WalError> {
    let path = path(dir, seq);
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io(&tmp, "creating segment"))?;
    let len = i64::try_from(size).map_err(|_| {
        io(&tmp, "preallocating segment")(std::io::Error::other(format!("segment size {size} is too large")))
    })?;
    // Real blocks now, so appending later changes no file size and fdatasync writes data only.
    match fallocate(&file, FallocateFlags::empty(), 0, len) {
        Ok(()) => {}
        Err(Errno::EOPNOTSUPP) => file.set_len(size).map_err(io(&tmp, "sizing segment"))?,
        Err(e) => return Err(io(&tmp, "preallocating segment")(e.into())),
    }
    file.write_all_at(&header(seq), 0).map_err(io(&tmp, "writing segment header"))?;
    file.write_all_at(checkpoint, HEADER_LEN).map_err(io(&tmp, "writing segment checkpoint"))?;
    file.sync_all().map_err(io(&tmp, "syncing new segment"))?;
    std::fs::rename(&tmp, &path).map_err(io(&path, "renaming new segment into place"))?;
    sync_dir(dir)?;
    Ok(file)
}

/// Removes segments `seqs`, oldest first (a crash part-way leaves a gap that [`replay`] treats
/// as the end of a deletion).
pub(super) fn remove(dir: &Path, seqs: &[u64]) -> Result<(), WalError> {
    for &seq in seqs {
        let path = path(dir, seq);
        std::fs::remove_file(&path).map_err(io(&path, "deleting segment"))?;
    }
    if !seqs.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// The segments in `dir`, by seq. Leftovers of an interrupted creation are deleted.
fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir, "listing the WAL directory"))? {
        let entry = entry.map_err(io(dir, "listing the WAL directory"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(made) = name.strip_suffix(".tmp")
            && parse_name(made).is_some()
        {
            std::fs::remove_file(entry.path()).map_err(io(&entry.path(), "deleting unfinished segment"))?;
        } else if let Some(seq) = parse_name(name) {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Takes `dir/LOCK` for as long as the returned guard lives: a second writer on the same files
/// would interleave records and delete segments the first still needs.
fn lock_dir(dir: &Path) -> Result<Flock<File>, WalError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path, "opening the lock file"))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, Errno::EWOULDBLOCK)) => Err(WalError::Locked { path }),
        Err((_, e)) => Err(io(&path, "locking")(e.into())),
    }
}

/// Zeroes `[from, to)`, so the next replay ends at `from` and appends overwrite what was cut.
fn zero(file: &File, path: &Path, from: u64, to: u64) -> Result<(), WalError> {
    const CHUNK: u64 = 1 << 16;
    let zeros = [0u8; CHUNK as usize];
    let mut at = from;
    while at < to {
        let n = CHUNK.min(to - at);
        file.write_all_at(&zeros[..n as usize], at).map_err(io(path, "zeroing a torn tail"))?;
        at += n;
    }
    file.sync_data().map_err(io(path, "syncing a cut tail"))
}

/// The state [`replay`] rebuilt.
pub(super) struct Replayed {
    pub lock: Flock<File>,
    pub index: Index,
    pub files: BTreeMap<u64, Arc<File>>,
    /// Where the next record goes, and the size of its segment.
    pub tail: Pos,
    pub tail_size: u64,
    pub recovery: Recovery,
}

/// Replays every segment of `dir` in order (creating the first one in an empty directory).
pub(super) fn replay(dir: &Path, segment_bytes: u64, cache_budget: usize) -> Result<Replayed, WalError> {
    let started = Instant::now();
    std::fs::create_dir_all(dir).map_err(io(dir, "creating the WAL directory"))?;
    let lock = lock_dir(dir)?;
    let mut segments = list(dir)?;
    // Segments are deleted oldest first, so a gap can only be a deletion a crash interrupted:
    // what lies before it was already dead and must not be replayed without what lay in it.
    let mut recovery = Recovery::default();
    if let Some(gap) = (1..segments.len()).rev().find(|&i| segments[i].0 != segments[i - 1].0 + 1) {
        let stale: Vec<_> = segments.drain(..gap).collect();
        remove(dir, &stale.iter().map(|s| s.0).collect::<Vec<_>>())?;
        recovery.stale_removed = stale.into_iter().map(|s| s.1).collect();
    }
    let mut index = Index::new(cache_budget);
    let mut files = BTreeMap::new();
    if segments.is_empty() {
        let file = create(dir, 1, segment_bytes, &[])?;
        index.add_segment(1);
        files.insert(1, Arc::new(file));
        let tail = Pos { seq: 1, offset: HEADER_LEN };
        index.written = tail;
        recovery.elapsed = started.elapsed();
        return Ok(Replayed { lock, index, files, tail, tail_size: segment_bytes, recovery });
    }
    let mut tail = Pos::default();
    let mut tail_size = 0;
    for (i, (seq, path)) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let mut file = OpenOptions::new().read(true).write(last).open(path).map_err(io(path, "opening segment"))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).map_err(io(path, "reading segment"))?;
        check_header(path, &buf, *seq)?;
        index.add_segment(*seq);
        recovery.segments += 1;
        let (end, damage) = replay_segment(&mut index, *seq, path, &buf, &mut recovery)?;
        if let Some(reason) = damage {
            if !last {
                return Err(WalError::Corrupt { path: path.clone(), offset: end as u64, reason });
            }
            let to = buf.iter().rposition(|&b| b != 0).map_or(end, |p| p + 1).max(end);
            zero(&file, path, end as u64, to as u64)?;
            let discarded = (to - end) as u64;
            recovery.torn = Some(TornTail { segment: path.clone(), offset: end as u64, discarded, reason });
        }
        tail = Pos { seq: *seq, offset: end as u64 };
        tail_size = buf.len() as u64;
        files.insert(*seq, Arc::new(file));
    }
    index.written = tail;
    recovery.elapsed = started.elapsed();
    Ok(Replayed { lock, index, files, tail, tail_size, recovery })
}

/// Applies the records of one segment; returns where they end and, if they end early, why.
fn replay_segment(
    index: &mut Index,
    seq: u64,
    path: &Path,
    buf: &[u8],
    recovery: &mut Recovery,
) -> Result<(usize, Option<String>), WalError> {
    let mut at = HEADER_LEN as usize;
    let mut locs = Vec::new();
    loop {
        let (group, body, next) = match record::parse(buf, at) {
            Err(reason) => return Ok((at, Some(reason))),
            Ok(Parsed::End) => {
                // A zero length with data after it is a write that reached the disk only in part.
                let stray = buf[at..].iter().position(|&b| b != 0);
                let reason = stray.map(|p| format!("non-zero bytes at offset {} after the end of the records", at + p));
                return Ok((at, reason));
            }
            Ok(Parsed::Record { group, body, next }) => (group, body, next),
        };
        let end = Pos { seq, offset: next as u64 };
        let change = match body {
            Body::Entries { first, entries } => {
                locs.clear();
                locs.extend(entries.iter().map(|r| Loc { seq, offset: r.offset as u64, len: r.len, crc: r.crc }));
                Change::Append { first, locs: &locs, cached: None }
            }
            Body::Meta { key, value } => Change::Meta { key, value: Bytes::copy_from_slice(value) },
            Body::Truncate { from } => Change::Truncate { from },
            Body::Purge { upto } => Change::Purge { upto },
            Body::RemoveGroup => Change::Remove,
        };
        // A record whose checksum holds but that contradicts the ones before it is no torn write:
        // refuse to open rather than cut good data.
        index.apply(group, change, end).map_err(|reason| WalError::Corrupt {
            path: path.to_path_buf(),
            offset: at as u64,
            reason,
        })?;
        recovery.records += 1;
        recovery.bytes += (next - at) as u64;
        at = next;
    }
}
