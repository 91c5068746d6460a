//! Tests of the shared log: behaviour through the public API, crash recovery at every byte
//! ([`crash`]), a randomized comparison against a model ([`model`]) and a measurement ([`bench`]).

mod bench;
mod crash;
mod model;

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{Op, Recovery, Wal, WalError, WalOptions};
use model::Model;

fn options(segment_bytes: u64, cache_bytes_per_group: usize) -> WalOptions {
    WalOptions { segment_bytes, cache_bytes_per_group }
}

fn open(dir: &Path, options: &WalOptions) -> (Wal, Recovery) {
    Wal::open(dir, options.clone()).unwrap()
}

/// Recognizable bytes for an entry, `len` long.
fn entry(group: u64, index: u64, len: usize) -> Bytes {
    let tag = format!("g{group}i{index};");
    tag.bytes().cycle().take(len).collect::<Vec<u8>>().into()
}

fn append(group: u64, first: u64, count: u64, len: usize) -> Op {
    Op::Append { group, first_index: first, entries: (first..first + count).map(|i| entry(group, i, len)).collect() }
}

/// Every entry the group holds.
fn all(wal: &Wal, group: u64) -> Vec<Bytes> {
    match (wal.first_index(group), wal.last_index(group)) {
        (Some(first), Some(last)) => wal.read(group, first..last + 1).unwrap(),
        _ => Vec::new(),
    }
}

/// The segment files in `dir`, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// Applies `ops` to the model and, in one batch, to the log (which must accept them).
fn write(wal: &Wal, model: &mut Model, ops: Vec<Op>) {
    for op in &ops {
        model.apply(op).unwrap();
    }
    wal.write(ops).unwrap();
}

#[test]
fn interleaved_groups_across_rollovers_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(4096, 1024);
    let (wal, recovery) = open(dir.path(), &opts);
    assert_eq!(recovery.segments, 0, "a new directory has nothing to replay");
    let mut model = Model::default();
    for round in 0..20 {
        let ops = (1..=3).map(|g| append(g, round * 4 + 1, 4, 60 + g as usize * 10)).collect();
        write(&wal, &mut model, ops);
    }
    model.check(&wal);
    assert!(wal.segments() > 3, "4 KiB segments rolled over ({} live)", wal.segments());
    write(&wal, &mut model, vec![Op::Truncate { group: 1, from: 70 }, Op::Purge { group: 2, upto: 30 }]);
    write(&wal, &mut model, vec![append(1, 70, 3, 50), Op::SetMeta { group: 3, key: 1, value: "vote".into() }]);
    model.check(&wal);
    assert_eq!(wal.last_index(1), Some(72));
    assert_eq!(wal.first_index(2), Some(31));
    assert_eq!(wal.purged(2), Some(30));
    drop(wal);
    let (wal, recovery) = open(dir.path(), &opts);
    assert!(recovery.segments > 3 && recovery.records > 60 && recovery.torn.is_none(), "{recovery:?}");
    model.check(&wal);
    // The reopened log takes appends where it left off.
    write(&wal, &mut model, vec![append(1, 73, 2, 30), append(2, 81, 1, 30)]);
    drop(wal);
    let (wal, _) = open(dir.path(), &opts);
    model.check(&wal);
}

#[test]
fn an_overlapping_append_replaces_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(4096, 1 << 20);
    let (wal, _) = open(dir.path(), &opts);
    wal.write([append(7, 1, 10, 20)]).unwrap();
    let replacement = vec![Bytes::from_static(b"new-6"), Bytes::from_static(b"new-7")];
    wal.write([Op::Append { group: 7, first_index: 6, entries: replacement.clone() }]).unwrap();
    let check = |wal: &Wal| {
        assert_eq!(wal.last_index(7), Some(7), "entries 8..=10 went with the old 6 and 7");
        assert_eq!(wal.read(7, 6..8).unwrap(), replacement);
        assert_eq!(wal.read(7, 1..6).unwrap(), (1..6).map(|i| entry(7, i, 20)).collect::<Vec<_>>());
    };
    check(&wal);
    drop(wal);
    let (wal, _) = open(dir.path(), &options(4096, 0));
    check(&wal);
}

#[test]
fn bad_ops_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), &options(4096, 1 << 20));
    wal.write([append(1, 1, 5, 10)]).unwrap();
    // One bad op refuses the whole batch, including the good ops before it.
    let batch = vec![append(1, 6, 2, 10), append(2, 1, 1, 10), append(1, 9, 1, 10)];
    match wal.stage(batch) {
        Err(WalError::Gap { group: 1, first_index: 9, expected: 8 }) => {}
        other => panic!("expected a gap error, got {other:?}"),
    }
    assert_eq!((wal.last_index(1), wal.groups()), (Some(5), vec![1]));
    assert!(matches!(wal.stage([append(1, 7, 1, 10)]), Err(WalError::Gap { expected: 6, .. })));
    wal.write([Op::Purge { group: 1, upto: 3 }]).unwrap();
    let err = wal.stage([append(1, 2, 1, 10)]).unwrap_err();
    assert!(err.to_string().contains("purge point 3"), "{err}");
    let err = wal.stage([Op::Truncate { group: 1, from: 3 }]).unwrap_err();
    assert!(err.to_string().contains("purge point 3"), "{err}");
    // A purge past the last entry (a snapshot install) fixes where the next append starts.
    wal.write([Op::Purge { group: 1, upto: 10 }]).unwrap();
    assert_eq!((wal.first_index(1), wal.last_index(1), wal.purged(1)), (None, None, Some(10)));
    assert!(matches!(wal.stage([append(1, 12, 1, 10)]), Err(WalError::Gap { expected: 11, .. })));
    wal.write([append(1, 11, 1, 10)]).unwrap();
    // Reads name the index that is missing and why.
    let err = wal.read(1, 9..12).unwrap_err();
    assert!(matches!(err, WalError::Missing { group: 1, index: 9, .. }), "{err}");
    assert!(err.to_string().contains("purged"), "{err}");
    let err = wal.read(1, 11..13).unwrap_err();
    assert!(matches!(err, WalError::Missing { index: 12, .. }) && err.to_string().contains("past the last"), "{err}");
    assert!(matches!(wal.read(5, 1..2), Err(WalError::Missing { group: 5, index: 1, .. })));
    assert_eq!(wal.read(1, 11..11).unwrap(), Vec::<Bytes>::new());
    let big = Bytes::from(vec![0; super::MAX_META_VALUE + 1]);
    assert!(matches!(wal.stage([Op::SetMeta { group: 1, key: 0, value: big }]), Err(WalError::TooLarge { .. })));
    assert_eq!(wal.read(1, 11..12).unwrap(), vec![entry(1, 11, 10)]);
}

#[test]
fn cache_and_disk_reads_agree() {
    let dir = tempfile::tempdir().unwrap();
    // 1000 bytes of 100-byte entries: the newest 10 stay cached once written.
    let (wal, _) = open(dir.path(), &options(4096, 1000));
    for first in (1..=60).step_by(6) {
        wal.stage([append(4, first, 6, 100)]).unwrap();
    }
    assert_eq!(wal.cached(4), 60, "entries not yet written are all held");
    let staged = wal.read(4, 1..61).unwrap();
    wal.flush().unwrap();
    assert_eq!(wal.cached(4), 10, "written entries are trimmed to the budget");
    let mixed = wal.read(4, 1..61).unwrap();
    assert_eq!(mixed, staged);
    drop(wal);
    let (wal, _) = open(dir.path(), &options(4096, 0));
    assert_eq!(wal.cached(4), 0, "a reopened log reads from disk");
    assert_eq!(wal.read(4, 1..61).unwrap(), staged);
    assert_eq!(wal.read(4, 20..23).unwrap(), staged[19..22].to_vec());
    // With no budget, written entries leave the cache right after the flush.
    wal.stage([append(4, 61, 3, 100)]).unwrap();
    assert_eq!(wal.cached(4), 3);
    wal.flush().unwrap();
    assert_eq!(wal.cached(4), 0);
    assert_eq!(wal.read(4, 61..64).unwrap(), (61..64).map(|i| entry(4, i, 100)).collect::<Vec<_>>());
}

#[test]
fn a_damaged_entry_on_disk_is_reported_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), &options(4096, 0));
    wal.write([append(1, 1, 3, 50)]).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&segment_files(dir.path())[0]).unwrap();
    // The last entry's bytes end right before the tail.
    let (_, tail) = wal.tail();
    std::os::unix::fs::FileExt::write_all_at(&file, b"X", tail - 1).unwrap();
    let err = wal.read(1, 1..4).unwrap_err();
    assert!(matches!(err, WalError::EntryChecksum { group: 1, index: 3, .. }), "{err}");
    assert_eq!(wal.read(1, 1..3).unwrap().len(), 2);
}

#[test]
fn dead_segments_are_deleted_and_metas_survive() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(4096, 0);
    let (wal, _) = open(dir.path(), &opts);
    let mut model = Model::default();
    // Metas and a purge point written once, into the first segment only.
    write(
        &wal,
        &mut model,
        vec![
            Op::SetMeta { group: 1, key: 0, value: "vote-1".into() },
            Op::SetMeta { group: 2, key: 0, value: "vote-2".into() },
            Op::SetMeta { group: 3, key: 5, value: "gone".into() },
            Op::Purge { group: 2, upto: 0 },
        ],
    );
    for round in 0..30 {
        write(&wal, &mut model, (1..=3).map(|g| append(g, round * 3 + 1, 3, 40)).collect());
    }
    let before = wal.segments();
    assert!(before >= 5, "{before} segments");
    assert_eq!(segment_files(dir.path()).len(), before);
    // Purging group 1 alone frees nothing: groups 2 and 3 still need every segment.
    write(&wal, &mut model, vec![Op::Purge { group: 1, upto: 90 }]);
    assert_eq!(wal.segments(), before);
    // Group 2 purges all but its last 3 entries, group 3 is removed: only the newest segments
    // stay, then only the active one.
    write(&wal, &mut model, vec![Op::Purge { group: 2, upto: 87 }, Op::RemoveGroup { group: 3 }]);
    let after = wal.segments();
    assert!(after < before && after <= 2, "{before} → {after}");
    write(&wal, &mut model, vec![Op::Purge { group: 2, upto: 90 }]);
    let stats = wal.flush().unwrap();
    assert_eq!(stats.records, 0, "nothing left to flush");
    assert_eq!(wal.segments(), 1);
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert!(!segment_files(dir.path())[0].ends_with("wal-00000000000000000001.log"));
    model.check(&wal);
    assert_eq!(wal.meta(1, 0).as_deref(), Some(&b"vote-1"[..]));
    assert_eq!((wal.purged(1), wal.purged(2)), (Some(90), Some(90)));
    assert_eq!(wal.groups(), vec![1, 2]);
    drop(wal);
    let (wal, recovery) = open(dir.path(), &opts);
    assert_eq!(recovery.segments, 1);
    model.check(&wal);
    // …and still after the segment holding the purges rolls over and is deleted in turn.
    for round in 0..30 {
        write(&wal, &mut model, vec![append(2, 91 + round * 2, 2, 60), Op::Purge { group: 2, upto: 90 + round * 2 }]);
    }
    assert!(wal.segments() <= 2, "{} segments", wal.segments());
    drop(wal);
    let (wal, _) = open(dir.path(), &opts);
    model.check(&wal);
    assert_eq!(wal.meta(1, 0).as_deref(), Some(&b"vote-1"[..]));
}

#[test]
fn a_record_larger_than_a_segment_gets_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(4096, 0);
    let (wal, _) = open(dir.path(), &opts);
    let mut model = Model::default();
    write(&wal, &mut model, vec![append(1, 1, 1, 100)]);
    write(&wal, &mut model, vec![append(1, 2, 2, 6000)]);
    write(&wal, &mut model, vec![append(1, 4, 1, 100)]);
    model.check(&wal);
    let sizes: Vec<u64> = segment_files(dir.path()).iter().map(|p| p.metadata().unwrap().len()).collect();
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(sizes[1] > 12_000 && sizes[0] == 4096 && sizes[2] == 4096, "{sizes:?}");
    drop(wal);
    let (wal, _) = open(dir.path(), &opts);
    model.check(&wal);
}

#[test]
fn concurrent_staging_while_flushing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(8192, 512);
    let (wal, _) = open(dir.path(), &opts);
    std::thread::scope(|s| {
        for g in 1..=4u64 {
            let wal = &wal;
            s.spawn(move || {
                for i in 1..=50 {
                    wal.stage([append(g, i, 1, 80)]).unwrap();
                    if i % 7 == 0 {
                        wal.flush().unwrap();
                    }
                }
            });
        }
    });
    wal.flush().unwrap();
    let expect = |g| (1..=50).map(|i| entry(g, i, 80)).collect::<Vec<_>>();
    for g in 1..=4 {
        assert_eq!(all(&wal, g), expect(g));
    }
    drop(wal);
    let (wal, _) = open(dir.path(), &opts);
    for g in 1..=4 {
        assert_eq!(all(&wal, g), expect(g));
    }
}

#[test]
fn one_wal_per_directory() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Wal>();
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(dir.path(), &options(4096, 0));
    let err = Wal::open(dir.path(), options(4096, 0)).unwrap_err();
    assert!(matches!(err, WalError::Locked { .. }) && err.to_string().contains("in use"), "{err}");
    drop(wal);
    open(dir.path(), &options(4096, 0));
}

#[test]
fn unflushed_ops_are_gone_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(4096, 0);
    let (wal, _) = open(dir.path(), &opts);
    wal.write([append(1, 1, 3, 10)]).unwrap();
    wal.stage([append(1, 4, 3, 10), Op::SetMeta { group: 2, key: 1, value: "x".into() }]).unwrap();
    assert_eq!(wal.read(1, 4..7).unwrap().len(), 3, "readable once staged");
    drop(wal);
    let (wal, _) = open(dir.path(), &opts);
    assert_eq!((wal.last_index(1), wal.groups()), (Some(3), vec![1]));
}

#[test]
fn headers_of_another_format_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(4096, 0);
    let (wal, _) = open(dir.path(), &opts);
    wal.write([append(1, 1, 1, 10)]).unwrap();
    drop(wal);
    let path = &segment_files(dir.path())[0];
    let good = std::fs::read(path).unwrap();
    let mut bad = good.clone();
    bad[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(path, &bad).unwrap();
    let err = Wal::open(dir.path(), opts.clone()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, WalError::Version { found: 2, expected: 1, .. }), "{text}");
    assert!(text.contains("wal-00000000000000000001.log") && text.contains("version 2") && text.contains("version 1"));
    let mut bad = good;
    bad[..8].copy_from_slice(b"NOTAWAL!");
    std::fs::write(path, &bad).unwrap();
    let err = Wal::open(dir.path(), opts).unwrap_err();
    assert!(matches!(err, WalError::BadHeader { .. }) && err.to_string().contains("magic"), "{err}");
}

#[test]
fn segments_before_a_gap_are_stale() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(4096, 0);
    let (wal, _) = open(dir.path(), &opts);
    let mut model = Model::default();
    for i in 0..80 {
        write(&wal, &mut model, vec![append(1, i * 2 + 1, 2, 100)]);
    }
    drop(wal);
    let files = segment_files(dir.path());
    assert!(files.len() >= 4);
    // A deletion of segments 1 and 2 that a crash stopped after deleting 2 only.
    std::fs::remove_file(&files[1]).unwrap();
    let (wal, recovery) = open(dir.path(), &opts);
    assert_eq!(recovery.stale_removed, vec![files[0].clone()]);
    assert_eq!(segment_files(dir.path()).len(), files.len() - 2);
    assert!(wal.first_index(1).unwrap() > 1);
    assert_eq!(wal.last_index(1), Some(160));
}

#[test]
fn a_segment_is_deleted_only_once_what_killed_it_is_durable() {
    use super::index::{Change, Index, Loc, Pos};
    let mut index = Index::new(0);
    index.add_segment(1);
    index.add_segment(2);
    let locs = [Loc { seq: 1, offset: 60, len: 40, crc: 0 }];
    index.apply(1, Change::Append { first: 1, locs: &locs, cached: None }, Pos { seq: 1, offset: 100 }).unwrap();
    assert_eq!(index.take_deletable(Pos { seq: 2, offset: 900 }), Vec::<u64>::new(), "segment 1 holds entry 1");
    // The purge that empties segment 1 ends at (2, 500): not before a flush has made it durable.
    index.apply(1, Change::Purge { upto: 1 }, Pos { seq: 2, offset: 500 }).unwrap();
    assert_eq!(index.take_deletable(Pos { seq: 2, offset: 499 }), Vec::<u64>::new());
    assert_eq!(index.take_deletable(Pos { seq: 2, offset: 500 }), vec![1]);
    // The segment durable data ends in stays, whatever it holds.
    assert_eq!(index.take_deletable(Pos { seq: 2, offset: 900 }), Vec::<u64>::new());
    assert_eq!(index.segments(), 1);
}

#[test]
fn dead_segments_left_by_a_crash_are_deleted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(4096, 0);
    let (wal, _) = open(dir.path(), &opts);
    let mut model = Model::default();
    write(&wal, &mut model, vec![Op::SetMeta { group: 1, key: 0, value: "vote".into() }]);
    for i in 0..40 {
        write(&wal, &mut model, vec![append(1, i * 2 + 1, 2, 100)]);
    }
    let files = segment_files(dir.path());
    let saved: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    write(&wal, &mut model, vec![Op::Purge { group: 1, upto: 78 }]);
    assert!(wal.segments() < files.len());
    drop(wal);
    // As if the crash came between the flush and the deletions.
    for (file, bytes) in files.iter().zip(&saved).take(files.len() - 1) {
        std::fs::write(file, bytes).unwrap();
    }
    let (wal, recovery) = open(dir.path(), &opts);
    assert_eq!(recovery.segments, files.len(), "{recovery:?}");
    model.check(&wal);
    assert_eq!(segment_files(dir.path()).len(), wal.segments());
    assert!(wal.segments() < files.len());
    assert_eq!(wal.meta(1, 0).as_deref(), Some(&b"vote"[..]));
}
