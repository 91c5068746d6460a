//! Crash recovery: the last records of the last segment cut at every byte (as a torn write into
//! a preallocated file leaves them: zeroes from some point on) and hit by every single-bit flip;
//! damage before the last segment.

use std::os::unix::fs::FileExt;
use std::path::Path;

use tempfile::TempDir;

use super::super::segment::HEADER_LEN;
use super::super::{Op, Wal, WalError, WalOptions};
use super::model::Model;
use super::{append, options, segment_files};

/// A log written one op per flush, with where each op's record ends.
struct Written {
    dir: TempDir,
    opts: WalOptions,
    /// `models[m]`: the state after the first `m` ops.
    models: Vec<Model>,
    /// `(segment, offset)` where each op's record ends.
    ends: Vec<(u64, u64)>,
    /// How many ops at the end lie in the last segment, after the previous op's end there.
    tail_ops: usize,
    /// The last segment as written.
    last: Vec<u8>,
}

fn written() -> Written {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(2048, 0);
    let (wal, _) = Wal::open(dir.path(), opts.clone()).unwrap();
    let mut models = vec![Model::default()];
    let mut ends = Vec::new();
    let mut write = |op: Op| {
        let mut model = models.last().unwrap().clone();
        model.apply(&op).unwrap();
        models.push(model);
        wal.write([op]).unwrap();
        ends.push(wal.tail());
    };
    write(Op::SetMeta { group: 1, key: 0, value: "vote-1".into() });
    for round in 0..4 {
        for g in 1..=3 {
            write(append(g, round * 3 + 1, 3, 60));
        }
    }
    write(Op::Purge { group: 1, upto: 3 });
    // Fill up to a rollover, so the records under test start a fresh segment with room for all.
    let seq = wal.tail().0;
    while wal.tail().0 == seq {
        write(Op::SetMeta { group: 9, key: 2, value: vec![b'f'; 90].into() });
    }
    let tail = [
        append(1, 13, 2, 40),
        Op::SetMeta { group: 2, key: 3, value: "vote:term=7".into() },
        Op::Truncate { group: 3, from: 11 },
        append(3, 11, 1, 30),
        Op::Purge { group: 1, upto: 6 },
        Op::RemoveGroup { group: 2 },
    ];
    let tail_ops = tail.len();
    for op in tail {
        write(op);
    }
    drop(wal);
    let last_seq = ends.last().unwrap().0;
    assert!(last_seq >= 3, "the log spans several segments");
    assert!(ends[ends.len() - tail_ops - 1..].iter().all(|e| e.0 == last_seq), "{ends:?}");
    let last = std::fs::read(segment_files(dir.path()).last().unwrap()).unwrap();
    Written { dir, opts, models, ends, tail_ops, last }
}

impl Written {
    fn last_seq(&self) -> u64 {
        self.ends.last().unwrap().0
    }

    /// The byte range of the records under test in the last segment.
    fn range(&self) -> std::ops::Range<u64> {
        self.ends[self.ends.len() - self.tail_ops - 1].1..self.ends.last().unwrap().1
    }

    /// A copy of the log whose last segment is `image`.
    fn copy_with(&self, image: &[u8]) -> TempDir {
        let copy = tempfile::tempdir().unwrap();
        let files = segment_files(self.dir.path());
        for file in &files {
            std::fs::copy(file, copy.path().join(file.file_name().unwrap())).unwrap();
        }
        std::fs::write(copy.path().join(files.last().unwrap().file_name().unwrap()), image).unwrap();
        copy
    }

    /// How many ops survive in `image` (a changed last segment): those whose records are intact.
    fn intact(&self, image: &[u8]) -> usize {
        let last = self.last_seq();
        self.ends
            .iter()
            .enumerate()
            .take_while(|&(i, &(seq, end))| {
                let start = if i == 0 || self.ends[i - 1].0 != seq { 0 } else { self.ends[i - 1].1 };
                seq < last || image[start as usize..end as usize] == self.last[start as usize..end as usize]
            })
            .count()
    }
}

#[test]
fn a_cut_at_every_byte_keeps_the_records_before_it() {
    let w = written();
    let last = w.last_seq();
    let range = w.range();
    let mut cuts = 0;
    for cut in range.start..=range.end {
        let mut image = w.last.clone();
        image[cut as usize..].fill(0);
        let copy = w.copy_with(&image);
        let (wal, recovery) = Wal::open(copy.path(), w.opts.clone()).unwrap();
        // A record is kept when it ends before the cut, or when what the cut zeroed was zero
        // anyway (the record survived whole).
        let kept = w.intact(&image);
        assert!(kept >= w.ends.iter().filter(|&&e| e <= (last, cut)).count(), "cut {cut}");
        w.models[kept].check(&wal);
        let good_end = w.ends[kept - 1].1;
        let stray = image[good_end as usize..].iter().any(|&b| b != 0);
        match &recovery.torn {
            None => assert!(!stray, "cut {cut}: stray bytes after {good_end} but nothing cut"),
            Some(t) => {
                assert!(stray, "cut {cut}: {t:?}");
                let to = image.iter().rposition(|&b| b != 0).map_or(0, |p| p as u64 + 1);
                assert_eq!((t.offset, t.discarded), (good_end, to - good_end), "cut {cut}: {t:?}");
            }
        }
        if cut % 5 == 0 {
            // The log goes on right after the last good record.
            let op = Op::SetMeta { group: 5, key: 1, value: "after the cut".into() };
            wal.write([op.clone()]).unwrap();
            drop(wal);
            let (wal, recovery) = Wal::open(copy.path(), w.opts.clone()).unwrap();
            assert!(recovery.torn.is_none(), "cut {cut}: {recovery:?}");
            let mut model = w.models[kept].clone();
            model.apply(&op).unwrap();
            model.check(&wal);
        }
        cuts += 1;
    }
    assert!(cuts > 150, "{cuts} cuts");
}

#[test]
fn a_flipped_bit_keeps_the_records_before_the_damaged_one() {
    let w = written();
    let range = w.range();
    for offset in range.clone() {
        // The record the byte belongs to: the first that ends after it.
        let damaged = w.ends.iter().position(|e| e.0 == w.last_seq() && e.1 > offset).unwrap();
        let start = w.ends[damaged - 1].1;
        // Every bit of the length and crc fields; two bits elsewhere (which ones varies).
        let in_header = w.ends.iter().any(|e| e.1 <= offset && offset < e.1 + 8) || offset < start + 8;
        let bits: Vec<u32> =
            if in_header { (0..8).collect() } else { vec![offset as u32 % 8, (offset as u32 + 3) % 8] };
        for (n, bit) in bits.into_iter().enumerate() {
            let mut image = w.last.clone();
            image[offset as usize] ^= 1 << bit;
            let copy = w.copy_with(&image);
            let (wal, recovery) = Wal::open(copy.path(), w.opts.clone()).unwrap();
            let at = format!("offset {offset} bit {bit}");
            w.models[damaged].check(&wal);
            let torn = recovery.torn.as_ref().unwrap_or_else(|| panic!("{at}: nothing cut"));
            assert_eq!(torn.offset, start, "{at}: {torn:?}");
            if n > 0 {
                continue;
            }
            drop(wal);
            // The cut is durable: the next open finds a clean end.
            let (wal, recovery) = Wal::open(copy.path(), w.opts.clone()).unwrap();
            assert!(recovery.torn.is_none(), "{at}: {recovery:?}");
            w.models[damaged].check(&wal);
        }
    }
}

fn damage(path: &Path, offset: u64, bytes: &[u8]) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

#[test]
fn damage_before_the_last_segment_fails_open() {
    let w = written();
    let files = segment_files(w.dir.path());
    let first = &files[0];
    let original = std::fs::read(first).unwrap();
    // A flipped bit inside the first record.
    damage(first, HEADER_LEN + 20, &[original[HEADER_LEN as usize + 20] ^ 0x10]);
    let err = Wal::open(w.dir.path(), w.opts.clone()).unwrap_err();
    match &err {
        WalError::Corrupt { path, offset, reason } => {
            assert_eq!((path, *offset), (first, HEADER_LEN));
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("wal-00000000000000000001.log") && text.contains("offset 32"), "{text}");
    // A hole of zeroes in the middle of the first segment: data after the apparent end.
    std::fs::write(first, &original).unwrap();
    damage(first, 300, &[0; 40]);
    let err = Wal::open(w.dir.path(), w.opts.clone()).unwrap_err();
    assert!(matches!(err, WalError::Corrupt { ref path, .. } if path == first), "{err}");
    // Restored, it opens again, and nothing was changed by the failed opens.
    std::fs::write(first, &original).unwrap();
    let (wal, recovery) = Wal::open(w.dir.path(), w.opts.clone()).unwrap();
    assert!(recovery.torn.is_none());
    w.models.last().unwrap().check(&wal);
}
