//! The in-memory index the log is served from: per group, where each entry lies (consecutive
//! indexes in a deque, so truncation and purging are pops), its metas, its purge point and its
//! tail cache; per segment, how many live entries it holds and since when it has held none.
//!
//! Stage and replay apply the same changes here, so what a reopen rebuilds is what was served.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use bytes::Bytes;

use super::record::{MAX_META_VALUE, MAX_RECORD, RECORD_HEADER, record_len};
use super::{Op, WalError};

/// A place in the log: segment and byte offset. Ordered as the log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(super) struct Pos {
    pub seq: u64,
    pub offset: u64,
}

/// Where one entry's bytes are, and their crc.
#[derive(Debug, Clone, Copy)]
pub(super) struct Loc {
    pub seq: u64,
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

impl Loc {
    fn end(&self) -> Pos {
        Pos { seq: self.seq, offset: self.offset + u64::from(self.len) }
    }
}

/// What a read finds for one index.
#[derive(Debug)]
pub(super) enum Slot {
    Cached(Bytes),
    Disk(Loc),
}

/// One group's change, as staged or as replayed.
#[derive(Debug)]
pub(super) enum Change<'a> {
    /// `cached` holds the entries' bytes when staging; replay has none to keep.
    Append {
        first: u64,
        locs: &'a [Loc],
        cached: Option<&'a [Bytes]>,
    },
    Meta {
        key: u8,
        value: Bytes,
    },
    Truncate {
        from: u64,
    },
    Purge {
        upto: u64,
    },
    Remove,
}

#[derive(Debug, Default)]
struct Group {
    /// The index of `locs[0]`; meaningless while `locs` is empty.
    first: u64,
    locs: VecDeque<Loc>,
    purged: Option<u64>,
    metas: BTreeMap<u8, Bytes>,
    /// The bytes of the newest `cache.len()` entries (a suffix of `locs`).
    cache: VecDeque<Bytes>,
    cache_bytes: usize,
}

impl Group {
    fn last(&self) -> Option<u64> {
        (!self.locs.is_empty()).then(|| self.first + self.locs.len() as u64 - 1)
    }

    fn holds_nothing(&self) -> bool {
        self.locs.is_empty() && self.purged.is_none() && self.metas.is_empty()
    }

    fn bounds(&self) -> Bounds {
        Bounds { entries: self.last().map(|last| (self.first, last)), purged: self.purged }
    }

    fn pop_back(&mut self) -> Option<Loc> {
        let loc = self.locs.pop_back()?;
        if let Some(b) = self.cache.pop_back() {
            self.cache_bytes -= b.len();
        }
        Some(loc)
    }

    fn pop_front(&mut self) -> Option<Loc> {
        let loc = self.locs.pop_front()?;
        self.first += 1;
        if self.cache.len() > self.locs.len()
            && let Some(b) = self.cache.pop_front()
        {
            self.cache_bytes -= b.len();
        }
        Some(loc)
    }

    /// Drops the oldest cached entries over `budget`, but only those already written: an entry
    /// still in the write buffer has no other copy to read.
    fn evict(&mut self, budget: usize, written: Pos) {
        while self.cache_bytes > budget && !self.cache.is_empty() {
            let loc = self.locs[self.locs.len() - self.cache.len()];
            if loc.end() > written {
                break;
            }
            if let Some(b) = self.cache.pop_front() {
                self.cache_bytes -= b.len();
            }
        }
    }
}

/// A group's entry range and purge point, as far as validating an op needs them.
#[derive(Debug, Clone, Copy, Default)]
struct Bounds {
    entries: Option<(u64, u64)>,
    purged: Option<u64>,
}

impl Bounds {
    fn check_append(&self, group: u64, first: u64, count: usize) -> Result<(), WalError> {
        let rejected = |reason: String| Err(WalError::Rejected { group, reason });
        if first.checked_add(count as u64).is_none() {
            return rejected(format!("{count} entries from index {first} overflow the index space"));
        }
        match (self.entries, self.purged) {
            (_, Some(p)) if first <= p => rejected(format!("an append from index {first} reaches the purge point {p}")),
            (Some((lo, hi)), purged) => {
                if purged.is_none() && first < lo {
                    return rejected(format!("an append from index {first} starts before the first entry {lo}"));
                }
                if first > hi + 1 {
                    return Err(WalError::Gap { group, first_index: first, expected: hi + 1 });
                }
                Ok(())
            }
            (None, Some(p)) if first != p + 1 => Err(WalError::Gap { group, first_index: first, expected: p + 1 }),
            (None, _) => Ok(()),
        }
    }

    fn append(&mut self, first: u64, count: usize) {
        let last = first + count as u64 - 1;
        self.entries = match self.entries {
            Some((lo, _)) if first > lo => Some((lo, last)),
            _ => Some((first, last)),
        };
    }

    fn truncate(&mut self, from: u64) {
        if let Some((lo, hi)) = self.entries {
            self.entries = (from > lo).then(|| (lo, hi.min(from - 1)));
        }
    }

    fn purge(&mut self, upto: u64) {
        self.purged = Some(self.purged.map_or(upto, |p| p.max(upto)));
        if let Some((lo, hi)) = self.entries {
            self.entries = (upto < hi).then(|| (lo.max(upto + 1), hi));
        }
    }
}

#[derive(Debug, Default)]
struct SegInfo {
    live: u64,
    /// When `live` last fell to 0 (the end of the record that did it); meaningless while > 0.
    dead_at: Pos,
}

/// Every group's log, metas and purge point, and every segment's liveness.
#[derive(Debug)]
pub(super) struct Index {
    groups: BTreeMap<u64, Group>,
    segs: BTreeMap<u64, SegInfo>,
    cache_budget: usize,
    /// Everything before this is in the segment files (perhaps not yet synced).
    pub written: Pos,
}

impl Index {
    pub fn new(cache_budget: usize) -> Self {
        Self { groups: BTreeMap::new(), segs: BTreeMap::new(), cache_budget, written: Pos::default() }
    }

    pub fn add_segment(&mut self, seq: u64) {
        self.segs.insert(seq, SegInfo { live: 0, dead_at: Pos { seq, offset: 0 } });
    }

    pub fn segments(&self) -> usize {
        self.segs.len()
    }

    /// Checks a whole batch before any of it is applied, so a bad op changes nothing.
    pub fn validate(&self, ops: &[Op]) -> Result<(), WalError> {
        let mut sim: BTreeMap<u64, Bounds> = BTreeMap::new();
        for op in ops {
            let group = op.group();
            if let Some(len) = record_len(op)
                && len - RECORD_HEADER > MAX_RECORD
            {
                return Err(WalError::TooLarge { group, bytes: len - RECORD_HEADER, max: MAX_RECORD });
            }
            let b = sim.entry(group).or_insert_with(|| self.groups.get(&group).map(Group::bounds).unwrap_or_default());
            match op {
                Op::Append { entries, .. } if entries.is_empty() => {}
                Op::Append { first_index, entries, .. } => {
                    b.check_append(group, *first_index, entries.len())?;
                    b.append(*first_index, entries.len());
                }
                Op::SetMeta { value, .. } if value.len() > MAX_META_VALUE => {
                    return Err(WalError::TooLarge { group, bytes: value.len() as u64, max: MAX_META_VALUE as u64 });
                }
                Op::SetMeta { .. } => {}
                Op::Truncate { from, .. } => {
                    if let Some(p) = b.purged
                        && *from <= p
                    {
                        let reason = format!("a truncation from index {from} reaches the purge point {p}");
                        return Err(WalError::Rejected { group, reason });
                    }
                    b.truncate(*from);
                }
                Op::Purge { upto, .. } => b.purge(*upto),
                Op::RemoveGroup { .. } => *b = Bounds::default(),
            }
        }
        Ok(())
    }

    /// Applies one record's change; `at` is where the record ends. Fails only on a replayed
    /// append that leaves a gap after entries still held, which staging never writes.
    pub fn apply(&mut self, group: u64, change: Change<'_>, at: Pos) -> Result<(), String> {
        let segs = &mut self.segs;
        let g = self.groups.entry(group).or_default();
        match change {
            Change::Append { first, locs, cached } => {
                if let Some(last) = g.last()
                    && first > last + 1
                {
                    return Err(format!("group {group}: entries from index {first} leave a gap after {last}"));
                }
                // Raft's follower rule: what the new entries replace goes.
                while g.last().is_some_and(|l| l >= first) {
                    kill(segs, g.pop_back(), at);
                }
                if g.locs.is_empty() {
                    g.first = first;
                }
                if cached.is_none() {
                    g.cache.clear();
                    g.cache_bytes = 0;
                }
                for (i, loc) in locs.iter().enumerate() {
                    if let Some(s) = segs.get_mut(&loc.seq) {
                        s.live += 1;
                    }
                    g.locs.push_back(*loc);
                    if let Some(b) = cached.and_then(|c| c.get(i)) {
                        g.cache_bytes += b.len();
                        g.cache.push_back(b.clone());
                    }
                }
                g.evict(self.cache_budget, self.written);
            }
            Change::Meta { key, value } => {
                g.metas.insert(key, value);
            }
            Change::Truncate { from } => {
                while g.last().is_some_and(|l| l >= from) {
                    kill(segs, g.pop_back(), at);
                }
            }
            Change::Purge { upto } => {
                g.purged = Some(g.purged.map_or(upto, |p| p.max(upto)));
                while !g.locs.is_empty() && g.first <= upto {
                    kill(segs, g.pop_front(), at);
                }
            }
            Change::Remove => {
                while let Some(loc) = g.locs.pop_back() {
                    kill(segs, Some(loc), at);
                }
                self.groups.remove(&group);
                return Ok(());
            }
        }
        if g.holds_nothing() {
            self.groups.remove(&group);
        }
        Ok(())
    }

    /// Ops that restate every group's metas and purge point: the head of each new segment, so
    /// deleting older segments loses no state (entries keep their own segments alive).
    pub fn checkpoint(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        for (&group, g) in &self.groups {
            if let Some(upto) = g.purged {
                ops.push(Op::Purge { group, upto });
            }
            for (&key, value) in &g.metas {
                ops.push(Op::SetMeta { group, key, value: value.clone() });
            }
        }
        ops
    }

    /// Evicts over-budget cache entries of `groups` now that everything before `written` is.
    pub fn written_upto(&mut self, written: Pos, groups: impl IntoIterator<Item = u64>) {
        self.written = written;
        for group in groups {
            if let Some(g) = self.groups.get_mut(&group) {
                g.evict(self.cache_budget, written);
            }
        }
    }

    /// Takes the oldest segments that hold no live entry and died before `durable`, up to the
    /// first one that does not qualify (later records may rely on earlier ones). Before `durable`:
    /// so the records that killed their entries survive a crash. Older than `durable`'s segment:
    /// so a later segment exists, and a segment exists only with its whole checkpoint, which
    /// restates every meta and purge point the deleted ones held.
    pub fn take_deletable(&mut self, durable: Pos) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some((&seq, s)) = self.segs.first_key_value() {
            if seq >= durable.seq || s.live > 0 || s.dead_at > durable {
                break;
            }
            self.segs.pop_first();
            out.push(seq);
        }
        out
    }

    /// Where each entry of `range` is; fails naming the first index the group does not hold.
    pub fn lookup(&self, group: u64, range: Range<u64>) -> Result<Vec<Slot>, WalError> {
        if range.start >= range.end {
            return Ok(Vec::new());
        }
        let g = self.groups.get(&group);
        let missing = |index: u64| {
            let reason = match g {
                None => "the group holds nothing".to_string(),
                Some(g) => match (g.purged, g.last()) {
                    (Some(p), _) if index <= p => format!("purged (the purge point is {p})"),
                    (_, None) => "the group holds no entries".to_string(),
                    (_, Some(last)) if index > last => format!("past the last entry {last}"),
                    _ => format!("before the first entry {}", g.first),
                },
            };
            WalError::Missing { group, index, reason }
        };
        let g = g.ok_or_else(|| missing(range.start))?;
        let last = g.last().ok_or_else(|| missing(range.start))?;
        if range.start < g.first {
            return Err(missing(range.start));
        }
        if range.end - 1 > last {
            return Err(missing(last + 1));
        }
        let cached_from = g.locs.len() - g.cache.len();
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        for index in range {
            let pos = (index - g.first) as usize;
            out.push(match pos.checked_sub(cached_from) {
                Some(c) => Slot::Cached(g.cache[c].clone()),
                None => Slot::Disk(g.locs[pos]),
            });
        }
        Ok(out)
    }

    pub fn first_index(&self, group: u64) -> Option<u64> {
        self.groups.get(&group).filter(|g| !g.locs.is_empty()).map(|g| g.first)
    }

    pub fn last_index(&self, group: u64) -> Option<u64> {
        self.groups.get(&group)?.last()
    }

    pub fn purged(&self, group: u64) -> Option<u64> {
        self.groups.get(&group)?.purged
    }

    pub fn meta(&self, group: u64, key: u8) -> Option<Bytes> {
        self.groups.get(&group)?.metas.get(&key).cloned()
    }

    pub fn groups(&self) -> Vec<u64> {
        self.groups.keys().copied().collect()
    }

    /// How many of `group`'s entries the tail cache holds (tests check where reads come from).
    #[cfg(test)]
    pub fn cached(&self, group: u64) -> usize {
        self.groups.get(&group).map_or(0, |g| g.cache.len())
    }
}

fn kill(segs: &mut BTreeMap<u64, SegInfo>, loc: Option<Loc>, at: Pos) {
    if let Some(s) = loc.and_then(|loc| segs.get_mut(&loc.seq)) {
        s.live -= 1;
        if s.live == 0 {
            s.dead_at = at;
        }
    }
}
