//! Storage instruments: WAL group commits (fsync latency, bytes and groups per fsync,
//! segments, replay time) and state-machine checkpoints.

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

/// Every storage metric.
#[derive(Clone)]
pub struct StorageMetrics {
    /// Duration of each log commit (one fsync).
    pub fsync_seconds: Histogram,
    /// Operations folded into one log commit.
    pub batch_ops: Histogram,
    /// Log entries appended.
    pub appended_entries: IntCounter,
    /// Bytes written by each WAL group commit.
    pub wal_batch_bytes: Histogram,
    /// Groups sharing each WAL group commit.
    pub wal_batch_groups: Histogram,
    /// Live WAL segment files.
    pub wal_segments: IntGauge,
    /// How long the WAL replay took when the node started.
    pub wal_replay_seconds: Gauge,
    /// Duration of each durable state-machine checkpoint.
    pub checkpoint_seconds: Histogram,
}

impl StorageMetrics {
    /// Creates and registers the instruments.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            fsync_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "shoal_storage_fsync_duration_seconds",
                    "Duration of the fdatasync of one WAL group commit.",
                )
                .buckets(prometheus::exponential_buckets(0.00005, 2.0, 16)?),
            )?,
            batch_ops: Histogram::with_opts(
                HistogramOpts::new(
                    "shoal_storage_commit_batch_ops",
                    "Log operations (appends, votes, truncations, purges) sharing one WAL group commit.",
                )
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 13)?),
            )?,
            appended_entries: IntCounter::new(
                "shoal_storage_appended_entries_total",
                "Raft log entries made durable.",
            )?,
            wal_batch_bytes: Histogram::with_opts(
                HistogramOpts::new("shoal_storage_wal_batch_bytes", "Bytes written by one WAL group commit.")
                    .buckets(prometheus::exponential_buckets(64.0, 4.0, 11)?),
            )?,
            wal_batch_groups: Histogram::with_opts(
                HistogramOpts::new("shoal_storage_wal_batch_groups", "Raft groups sharing one WAL group commit.")
                    .buckets(prometheus::exponential_buckets(1.0, 2.0, 8)?),
            )?,
            wal_segments: IntGauge::new("shoal_storage_wal_segments", "Live WAL segment files.")?,
            wal_replay_seconds: Gauge::new(
                "shoal_storage_wal_replay_seconds",
                "How long replaying the WAL took when the node started.",
            )?,
            checkpoint_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "shoal_storage_checkpoint_duration_seconds",
                    "Duration of one durable state-machine checkpoint (a redb commit with fsync).",
                )
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
            )?,
        };
        registry.register(Box::new(m.fsync_seconds.clone()))?;
        registry.register(Box::new(m.wal_batch_bytes.clone()))?;
        registry.register(Box::new(m.wal_batch_groups.clone()))?;
        registry.register(Box::new(m.wal_segments.clone()))?;
        registry.register(Box::new(m.wal_replay_seconds.clone()))?;
        registry.register(Box::new(m.checkpoint_seconds.clone()))?;
        registry.register(Box::new(m.batch_ops.clone()))?;
        registry.register(Box::new(m.appended_entries.clone()))?;
        Ok(m)
    }

    /// Instruments on a registry of their own (tests, tools).
    pub fn unregistered() -> prometheus::Result<Self> {
        Self::new(&Registry::new())
    }
}
