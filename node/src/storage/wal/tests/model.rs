//! A plain model of the log (a `BTreeMap` per group) and a seeded random walk compared against it
//! after every step, across flushes and reopens.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::super::{Op, Wal};
use super::{options, segment_files};

/// Meta keys the tests use (the model checks these).
const META_KEYS: std::ops::Range<u8> = 0..8;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Model {
    groups: BTreeMap<u64, GroupModel>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct GroupModel {
    entries: BTreeMap<u64, Bytes>,
    purged: Option<u64>,
    metas: BTreeMap<u8, Bytes>,
}

impl Model {
    /// Applies `op` if the log should accept it (the rules of [`Op`], restated); otherwise changes
    /// nothing and says why.
    pub fn apply(&mut self, op: &Op) -> Result<(), String> {
        let group = op.group();
        let mut g = self.groups.get(&group).cloned().unwrap_or_default();
        match op {
            Op::Append { entries, .. } if entries.is_empty() => return Ok(()),
            Op::Append { first_index, entries, .. } => {
                let f = *first_index;
                if g.purged.is_some_and(|p| f <= p) {
                    return Err(format!("append from {f} at or below the purge point"));
                }
                match (g.entries.keys().next(), g.entries.keys().next_back()) {
                    (Some(&lo), Some(&hi)) => {
                        if g.purged.is_none() && f < lo {
                            return Err(format!("append from {f} before the first entry {lo}"));
                        }
                        if f > hi + 1 {
                            return Err(format!("append from {f} leaves a gap after {hi}"));
                        }
                    }
                    _ => {
                        if let Some(p) = g.purged
                            && f != p + 1
                        {
                            return Err(format!("append from {f} does not follow the purge point {p}"));
                        }
                    }
                }
                g.entries.split_off(&f);
                for (i, e) in entries.iter().enumerate() {
                    g.entries.insert(f + i as u64, e.clone());
                }
            }
            Op::SetMeta { key, value, .. } => {
                g.metas.insert(*key, value.clone());
            }
            Op::Truncate { from, .. } => {
                if g.purged.is_some_and(|p| *from <= p) {
                    return Err(format!("truncate from {from} at or below the purge point"));
                }
                g.entries.split_off(from);
            }
            Op::Purge { upto, .. } => {
                g.purged = Some(g.purged.map_or(*upto, |p| p.max(*upto)));
                g.entries.retain(|&i, _| i > *upto);
            }
            Op::RemoveGroup { .. } => g = GroupModel::default(),
        }
        if g == GroupModel::default() {
            self.groups.remove(&group);
        } else {
            self.groups.insert(group, g);
        }
        Ok(())
    }

    /// What the log holds, read through its API.
    pub fn of(wal: &Wal) -> Model {
        let mut groups = BTreeMap::new();
        for group in wal.groups() {
            let entries = match (wal.first_index(group), wal.last_index(group)) {
                (Some(lo), Some(hi)) => (lo..=hi).zip(wal.read(group, lo..hi + 1).unwrap()).collect(),
                (None, None) => BTreeMap::new(),
                other => panic!("group {group}: first and last index disagree: {other:?}"),
            };
            let metas = META_KEYS.filter_map(|k| Some((k, wal.meta(group, k)?))).collect();
            groups.insert(group, GroupModel { entries, purged: wal.purged(group), metas });
        }
        Model { groups }
    }

    /// Asserts the log holds exactly what the model does, naming the first group that differs.
    #[track_caller]
    pub fn check(&self, wal: &Wal) {
        let actual = Model::of(wal);
        assert_eq!(actual.groups.keys().collect::<Vec<_>>(), self.groups.keys().collect::<Vec<_>>(), "groups");
        for (group, g) in &self.groups {
            assert_eq!(&actual.groups[group], g, "group {group}");
        }
    }

    fn bounds(&self, group: u64) -> (Option<u64>, Option<u64>, Option<u64>) {
        match self.groups.get(&group) {
            None => (None, None, None),
            Some(g) => (g.entries.keys().next().copied(), g.entries.keys().next_back().copied(), g.purged),
        }
    }
}

/// splitmix64: deterministic whatever the `rand` version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, max: u64) -> Bytes {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect::<Vec<u8>>().into()
    }
}

/// A random op on one of five groups: mostly valid, sometimes not (a gap, reaching below the
/// purge point), so refusals are exercised too.
fn random_op(rng: &mut Rng, model: &Model) -> Op {
    let group = 1 + rng.below(5);
    let (first, last, purged) = model.bounds(group);
    let next = last.or(purged).map_or(1 + rng.below(3), |i| i + 1);
    match rng.below(100) {
        0..55 => {
            let first_index = match (rng.below(10), first, last) {
                // Overlaps the tail: implicit truncation.
                (0 | 1, Some(lo), Some(hi)) => {
                    let lower = purged.map_or(lo, |p| p + 1);
                    lower + rng.below(hi - lower + 1)
                }
                (2, ..) => next + 1 + rng.below(3),
                (3, ..) => next.saturating_sub(1 + rng.below(3)),
                _ => next,
            };
            let big = rng.below(50) == 0;
            let count = 1 + rng.below(4);
            let entries = (0..count).map(|_| if big { rng.bytes(3000) } else { rng.bytes(150) }).collect();
            Op::Append { group, first_index, entries }
        }
        55..70 => Op::SetMeta { group, key: rng.below(4) as u8, value: rng.bytes(40) },
        70..80 => Op::Truncate { group, from: purged.unwrap_or(0) + rng.below(12) },
        80..96 => Op::Purge { group, upto: first.unwrap_or(next).saturating_sub(1) + rng.below(6) },
        _ => Op::RemoveGroup { group },
    }
}

/// What one run went through, so the walk is known to reach what it is meant to test.
#[derive(Debug, Default)]
struct Coverage {
    refused: usize,
    deleted_segments: usize,
    reopens: usize,
    segments_started: u64,
}

fn run(seed: u64, steps: usize) -> Coverage {
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let opts = options(1024 * (1 + rng.below(3)), 200 * rng.below(3) as usize);
    let (mut wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
    let mut model = Model::default();
    // The model as of the last flush, and the ops staged since.
    let mut durable = Model::default();
    let mut staged: Vec<Op> = Vec::new();
    let (mut refused, mut deleted_segments, mut reopens) = (0, 0, 0);
    for step in 0..steps {
        let at = format!("seed {seed}, step {step}");
        match rng.below(100) {
            0..60 => {
                let mut next = model.clone();
                let mut valid = true;
                let batch: Vec<Op> = (0..1 + rng.below(3))
                    .map(|_| {
                        let op = random_op(&mut rng, &next);
                        valid &= next.apply(&op).is_ok();
                        op
                    })
                    .collect();
                let staged_ok = wal.stage(batch.clone());
                assert_eq!(staged_ok.is_ok(), valid, "{at}: {batch:?} → {staged_ok:?}");
                refused += usize::from(!valid);
                if valid {
                    model = next;
                    staged.extend(batch);
                }
            }
            60..80 => {
                deleted_segments += wal.flush().unwrap().deleted_segments;
                durable = model.clone();
                staged.clear();
                assert_eq!(segment_files(dir.path()).len(), wal.segments(), "{at}: segment files");
            }
            80..88 => {
                drop(wal);
                let recovery;
                (wal, recovery) = Wal::open(dir.path(), opts.clone()).unwrap();
                assert!(recovery.torn.is_none(), "{at}: {recovery:?}");
                reopens += 1;
                // Everything flushed is there; of what was only staged, at most a prefix.
                let found = Model::of(&wal);
                let mut candidate = durable.clone();
                let mut kept = (candidate == found).then_some(0);
                for (i, op) in staged.iter().enumerate() {
                    if kept.is_some() {
                        break;
                    }
                    candidate.apply(op).unwrap();
                    kept = (candidate == found).then_some(i + 1);
                }
                assert!(
                    kept.is_some(),
                    "{at}: after reopen the log is not the flushed state plus a prefix of the staged ops"
                );
                model = found;
                durable = model.clone();
                staged.clear();
            }
            _ => {
                // A random sub-range read (mixing cache and disk).
                let group = 1 + rng.below(5);
                if let (Some(lo), Some(hi)) = (wal.first_index(group), wal.last_index(group)) {
                    let a = lo + rng.below(hi - lo + 1);
                    let b = a + rng.below(hi - a + 1);
                    let got = wal.read(group, a..b + 1).unwrap();
                    let want: Vec<Bytes> = (a..=b).map(|i| model.groups[&group].entries[&i].clone()).collect();
                    assert_eq!(got, want, "{at}: read {group} {a}..={b}");
                }
            }
        }
        model.check(&wal);
    }
    wal.flush().unwrap();
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), opts).unwrap();
    model.check(&wal);
    Coverage { refused, deleted_segments, reopens, segments_started: wal.tail().0 }
}

#[test]
fn randomized_against_a_model() {
    for seed in 1..=8 {
        let c = run(seed, 400);
        assert!(
            c.refused > 0 && c.deleted_segments > 0 && c.reopens > 0 && c.segments_started > 3,
            "seed {seed}: {c:?}"
        );
    }
}
