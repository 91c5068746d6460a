//! `[objects]`: object storage's chunking, replication, repair and garbage collection,
//! validated here with every other section. The service itself is `crate::services::objects`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid, nonzero};

/// The most chunks one upload may keep in flight (`objects.write_parallelism`).
pub const MAX_WRITE_PARALLELISM: usize = 64;

/// The slowest scrub (`objects.scrub_bytes_per_sec`): 64 KiB/s.
pub const MIN_SCRUB_BYTES_PER_SEC: u64 = 64 * 1024;

/// `[objects]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectsSection {
    /// Bytes per chunk: bodies are cut into chunks of this size, each stored by its BLAKE3 hash.
    pub chunk_size: usize,
    /// Largest object a single PUT stores, in bytes.
    pub max_size: u64,
    /// `Cache-Control` of objects of public-read buckets stored without one: `max-age` seconds.
    pub public_max_age: u64,
    /// How long a chunk write to a replica may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub replica_timeout: Duration,
    /// How often each node checks that it holds every chunk its partitions reference (and
    /// fetches the missing ones); a pass also runs right after start.
    #[serde(with = "humantime_serde")]
    pub resync_interval: Duration,
    /// Chunks one upload (a PUT or an UploadPart) writes to their replicas at once; the body
    /// held in memory is at most this many chunks.
    pub write_parallelism: usize,
    /// A chunk file no object or upload in progress references is deleted once it is older
    /// than this (its mtime: when it was last stored). Must exceed the longest single PUT or
    /// UploadPart, whose chunks are unreferenced until it commits.
    #[serde(with = "humantime_serde")]
    pub gc_grace: Duration,
    /// How often the collector looks for unreferenced chunks.
    #[serde(with = "humantime_serde")]
    pub gc_interval: Duration,
    /// The scrub re-hashes this node's chunk files at most this many bytes per second, and
    /// replaces corrupt ones from other nodes.
    pub scrub_bytes_per_sec: u64,
    /// Pause between the end of one scrub pass over every chunk file and the start of the next.
    #[serde(with = "humantime_serde")]
    pub scrub_interval: Duration,
}

impl Default for ObjectsSection {
    fn default() -> Self {
        Self {
            chunk_size: 1024 * 1024,
            max_size: 5 * 1024 * 1024 * 1024,
            public_max_age: 3600,
            replica_timeout: Duration::from_secs(10),
            resync_interval: Duration::from_secs(300),
            write_parallelism: 4,
            gc_grace: Duration::from_secs(3600),
            gc_interval: Duration::from_secs(600),
            scrub_bytes_per_sec: 32 * 1024 * 1024,
            scrub_interval: Duration::from_secs(24 * 3600),
        }
    }
}

/// Checks `[objects]`, naming the bad field.
pub fn validate(o: &ObjectsSection) -> Result<(), ConfigError> {
    if !(4096..=8 * 1024 * 1024).contains(&o.chunk_size) {
        return Err(invalid("objects.chunk_size", "must be between 4096 and 8388608"));
    }
    if o.max_size == 0 {
        return Err(invalid("objects.max_size", "must be at least 1"));
    }
    nonzero("objects.replica_timeout", o.replica_timeout)?;
    nonzero("objects.resync_interval", o.resync_interval)?;
    if !(1..=MAX_WRITE_PARALLELISM).contains(&o.write_parallelism) {
        return Err(invalid("objects.write_parallelism", format!("must be between 1 and {MAX_WRITE_PARALLELISM}")));
    }
    nonzero("objects.gc_grace", o.gc_grace)?;
    nonzero("objects.gc_interval", o.gc_interval)?;
    if o.scrub_bytes_per_sec < MIN_SCRUB_BYTES_PER_SEC {
        return Err(invalid("objects.scrub_bytes_per_sec", format!("must be at least {MIN_SCRUB_BYTES_PER_SEC}")));
    }
    nonzero("objects.scrub_interval", o.scrub_interval)?;
    Ok(())
}
