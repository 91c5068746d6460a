//! The record codec: `[len: u32 LE][crc32c: u32 LE][group: u64 LE][kind: u8][payload]`.
//!
//! `len` counts the crc-covered body (group, kind, payload), so a record takes `8 + len` bytes and
//! a `len` of 0 (the zeroes of a segment's preallocated tail) cannot be a record: it marks the end.
//! Entries carry a crc of their own besides the record's, so one entry can be read from disk and
//! checked without reading the whole record it came in.

use bytes::Bytes;

use super::Op;

/// `len` and `crc`.
pub(super) const RECORD_HEADER: u64 = 8;
/// `group` and `kind`: the smallest body there is.
const BODY_HEADER: u64 = 9;
/// `first index` and `count` at the head of an `Entries` payload.
const ENTRIES_HEADER: u64 = 12;
/// `len` and `crc` before each entry.
const ENTRY_HEADER: u64 = 8;
/// The largest body a record may have. Checked before anything is allocated for it, so a damaged
/// length cannot ask for gigabytes.
pub const MAX_RECORD: u64 = 64 << 20;
/// The largest meta value: every meta is copied into each new segment's checkpoint, so they must
/// stay small (256 keys of this size still fit one record).
pub const MAX_META_VALUE: usize = 64 << 10;

const ENTRIES: u8 = 1;
const META: u8 = 2;
const TRUNCATE: u8 = 3;
const PURGE: u8 = 4;
const REMOVE_GROUP: u8 = 5;

/// Where an encoded entry's bytes are, relative to the buffer they were encoded or read into.
#[derive(Debug, Clone, Copy)]
pub(super) struct EntryRef {
    pub offset: usize,
    pub len: u32,
    pub crc: u32,
}

/// A decoded record body; `Entries` points into the buffer it was parsed from.
#[derive(Debug)]
pub(super) enum Body<'a> {
    Entries { first: u64, entries: Vec<EntryRef> },
    Meta { key: u8, value: &'a [u8] },
    Truncate { from: u64 },
    Purge { upto: u64 },
    RemoveGroup,
}

/// What [`parse`] found at an offset.
#[derive(Debug)]
pub(super) enum Parsed<'a> {
    /// A zero length or too few bytes left for one: no more records.
    End,
    /// A good record and the offset right after it.
    Record { group: u64, body: Body<'a>, next: usize },
}

/// The bytes `op` takes as a record (header included); `None` for an append with no entries,
/// which writes nothing.
pub(super) fn record_len(op: &Op) -> Option<u64> {
    let payload = match op {
        Op::Append { entries, .. } if entries.is_empty() => return None,
        Op::Append { entries, .. } => {
            ENTRIES_HEADER + entries.iter().map(|e| ENTRY_HEADER + e.len() as u64).sum::<u64>()
        }
        Op::SetMeta { value, .. } => 1 + value.len() as u64,
        Op::Truncate { .. } | Op::Purge { .. } => 8,
        Op::RemoveGroup { .. } => 0,
    };
    Some(RECORD_HEADER + BODY_HEADER + payload)
}

/// Appends `op` as one record to `buf`. For an append, pushes where each entry landed in `buf`
/// onto `refs` (cleared first).
pub(super) fn encode(buf: &mut Vec<u8>, op: &Op, refs: &mut Vec<EntryRef>) {
    refs.clear();
    let start = buf.len();
    buf.extend_from_slice(&[0; RECORD_HEADER as usize]);
    let (group, kind) = match op {
        Op::Append { group, .. } => (*group, ENTRIES),
        Op::SetMeta { group, .. } => (*group, META),
        Op::Truncate { group, .. } => (*group, TRUNCATE),
        Op::Purge { group, .. } => (*group, PURGE),
        Op::RemoveGroup { group } => (*group, REMOVE_GROUP),
    };
    buf.extend_from_slice(&group.to_le_bytes());
    buf.push(kind);
    match op {
        Op::Append { first_index, entries, .. } => {
            buf.extend_from_slice(&first_index.to_le_bytes());
            // Entry counts fit: a record is capped at MAX_RECORD bytes and each entry takes 8.
            buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for entry in entries {
                let crc = crc32c::crc32c(entry);
                buf.extend_from_slice(&(entry.len() as u32).to_le_bytes());
                buf.extend_from_slice(&crc.to_le_bytes());
                refs.push(EntryRef { offset: buf.len(), len: entry.len() as u32, crc });
                buf.extend_from_slice(entry);
            }
        }
        Op::SetMeta { key, value, .. } => {
            buf.push(*key);
            buf.extend_from_slice(value);
        }
        Op::Truncate { from: n, .. } | Op::Purge { upto: n, .. } => buf.extend_from_slice(&n.to_le_bytes()),
        Op::RemoveGroup { .. } => {}
    }
    let body = start + RECORD_HEADER as usize;
    let len = (buf.len() - body) as u32;
    let crc = crc32c::crc32c(&buf[body..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..body].copy_from_slice(&crc.to_le_bytes());
}

/// Parses the record at `at` in `buf` (a whole segment). An `Err` says why the bytes there are
/// not a record: a torn write or damage.
pub(super) fn parse(buf: &[u8], at: usize) -> Result<Parsed<'_>, String> {
    let Some(len) = read_u32(buf, at) else { return Ok(Parsed::End) };
    if len == 0 {
        return Ok(Parsed::End);
    }
    let len = u64::from(len);
    if !(BODY_HEADER..=MAX_RECORD).contains(&len) {
        return Err(format!("impossible record length {len}"));
    }
    let body_at = at + RECORD_HEADER as usize;
    let next = body_at + len as usize;
    if next > buf.len() {
        return Err(format!("record length {len} runs past the end of the file ({} bytes)", buf.len()));
    }
    let body = &buf[body_at..next];
    let stored = read_u32(buf, at + 4).unwrap_or(0);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(format!("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"));
    }
    let group = read_u64(body, 0).unwrap_or(0);
    let kind = body[8];
    let payload_at = body_at + BODY_HEADER as usize;
    let payload = &buf[payload_at..next];
    let body = match kind {
        ENTRIES => parse_entries(buf, payload_at, next)?,
        META => {
            let (&key, value) = payload.split_first().ok_or("meta record without a key")?;
            Body::Meta { key, value }
        }
        TRUNCATE => Body::Truncate { from: fixed_u64(payload)? },
        PURGE => Body::Purge { upto: fixed_u64(payload)? },
        REMOVE_GROUP if payload.is_empty() => Body::RemoveGroup,
        REMOVE_GROUP => return Err("remove-group record with a payload".into()),
        other => return Err(format!("unknown record kind {other}")),
    };
    Ok(Parsed::Record { group, body, next })
}

/// Entries of the payload `buf[at..end]`, with offsets into `buf`.
fn parse_entries(buf: &[u8], mut at: usize, end: usize) -> Result<Body<'_>, String> {
    let header = "entries record shorter than its header";
    let first = read_u64(&buf[..end], at).ok_or(header)?;
    let count = read_u32(&buf[..end], at + 8).ok_or(header)? as usize;
    at += ENTRIES_HEADER as usize;
    // Each entry takes at least ENTRY_HEADER bytes, which bounds what a damaged count can claim.
    if count > (end - at) / ENTRY_HEADER as usize {
        return Err(format!("entries record claims {count} entries, more than its length can hold"));
    }
    if first.checked_add(count as u64).is_none() {
        return Err(format!("entries record's indexes overflow ({count} from {first})"));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let len = read_u32(&buf[..end], at).ok_or("entry header runs past its record")?;
        let crc = read_u32(&buf[..end], at + 4).ok_or("entry header runs past its record")?;
        at += ENTRY_HEADER as usize;
        if end - at < len as usize {
            return Err("entry runs past its record".into());
        }
        entries.push(EntryRef { offset: at, len, crc });
        at += len as usize;
    }
    if at != end {
        return Err(format!("{} stray bytes after the entries of a record", end - at));
    }
    Ok(Body::Entries { first, entries })
}

fn fixed_u64(payload: &[u8]) -> Result<u64, String> {
    match <[u8; 8]>::try_from(payload) {
        Ok(b) => Ok(u64::from_le_bytes(b)),
        Err(_) => Err(format!("expected an 8-byte payload, found {} bytes", payload.len())),
    }
}

pub(super) fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

pub(super) fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// The bytes of an entry read from `buf`, if they match their crc.
pub(super) fn checked(buf: &Bytes, r: EntryRef) -> Option<Bytes> {
    let data = buf.get(r.offset..r.offset + r.len as usize)?;
    (crc32c::crc32c(data) == r.crc).then(|| buf.slice(r.offset..r.offset + r.len as usize))
}
