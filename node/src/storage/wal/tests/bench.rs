//! A measurement, not a test (ignored by default):
//! `cargo test -p shoal --release --lib storage::wal::tests::bench -- --ignored --nocapture`.
//! Set `SHOAL_WAL_BENCH_DIR` to measure on another file system than the temp dir's.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::fcntl::{FallocateFlags, fallocate};
use nix::sys::resource::{UsageWho, getrusage};

use super::super::{Op, Wal, WalOptions};

const BATCHES: usize = 2000;
const ENTRIES_PER_BATCH: u64 = 10;
const GROUPS: u64 = 16;
const ENTRY_BYTES: usize = 100;

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_THREAD).unwrap();
    let d = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    d(u.user_time()) + d(u.system_time())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("SHOAL_WAL_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn summary(name: &str, mut times: Vec<Duration>, cpu: Duration) {
    times.sort();
    println!(
        "{name}: median {:?}, p99 {:?}, max {:?}; CPU per flush {:?}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().unwrap(),
        cpu / times.len() as u32,
    );
}

/// The batches: ten entries each, spread round-robin over the groups (ten groups per batch).
fn batches() -> Vec<Vec<Op>> {
    let mut next = vec![1u64; GROUPS as usize];
    let payload = Bytes::from(vec![0xab; ENTRY_BYTES]);
    (0..BATCHES as u64)
        .map(|batch| {
            (0..ENTRIES_PER_BATCH)
                .map(|k| {
                    let group = (batch * ENTRIES_PER_BATCH + k) % GROUPS;
                    let first_index = next[group as usize];
                    next[group as usize] += 1;
                    Op::Append { group, first_index, entries: vec![payload.clone()] }
                })
                .collect()
        })
        .collect()
}

#[test]
#[ignore = "a measurement; run it with --release -- --ignored --nocapture"]
fn bench() {
    let dir = bench_dir();
    println!(
        "{BATCHES} batches of {ENTRIES_PER_BATCH} × {ENTRY_BYTES} B entries over {GROUPS} groups, in {:?}",
        dir.path()
    );
    let (wal, _) = Wal::open(dir.path().join("wal"), WalOptions::default()).unwrap();
    // CPU is summed over the whole loop: a thread's rusage advances only when the scheduler
    // accounts for it (a tick or a switch, as at each fdatasync), too coarse for one stage call.
    let (mut flush, mut stage, mut fsync) = (Vec::new(), Vec::new(), Vec::new());
    let cpu_start = thread_cpu();
    for ops in batches() {
        let t0 = Instant::now();
        wal.stage(ops).unwrap();
        let t1 = Instant::now();
        let stats = wal.flush().unwrap();
        flush.push(t1.elapsed());
        stage.push(t1 - t0);
        fsync.push(stats.fsync);
    }
    summary("wal stage + flush (flush wall time)", flush, thread_cpu() - cpu_start);
    println!("  fdatasync median {:?}; stage wall median {:?}", median(fsync), median(stage));

    // Context: the same bytes with bare pwrite + fdatasync, into a fallocated file and into one
    // whose blocks were written with zeroes beforehand.
    let record = vec![0x5a; 1290];
    for zeroed in [false, true] {
        let path = dir.path().join(format!("raw-{zeroed}"));
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let size = (BATCHES * record.len()) as u64 + 4096;
        fallocate(&file, FallocateFlags::empty(), 0, size as i64).unwrap();
        if zeroed {
            file.write_all_at(&vec![0; size as usize], 0).unwrap();
        }
        file.sync_all().unwrap();
        let mut times = Vec::new();
        let cpu_start = thread_cpu();
        for i in 0..BATCHES {
            let t = Instant::now();
            file.write_all_at(&record, (i * record.len()) as u64).unwrap();
            file.sync_data().unwrap();
            times.push(t.elapsed());
        }
        let name =
            if zeroed { "raw pwrite+fdatasync, zero-filled file" } else { "raw pwrite+fdatasync, fallocated file" };
        summary(name, times, thread_cpu() - cpu_start);
    }

    // And what the log costs today: one durable redb commit per batch.
    const LOGS: redb::TableDefinition<(u64, u64), &[u8]> = redb::TableDefinition::new("logs");
    let db = redb::Database::create(dir.path().join("bench.redb")).unwrap();
    let (mut times, cpu_start) = (Vec::new(), thread_cpu());
    for ops in batches() {
        let t = Instant::now();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(LOGS).unwrap();
            for op in &ops {
                if let Op::Append { group, first_index, entries } = op {
                    table.insert((*group, *first_index), &entries[0][..]).unwrap();
                }
            }
        }
        txn.commit().unwrap();
        times.push(t.elapsed());
    }
    summary("redb durable commit", times, thread_cpu() - cpu_start);
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    percentile(&d, 0.5)
}
