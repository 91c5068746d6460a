//! Storage instruments: group-commit batch sizes and fsync latency.

use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};

/// Every storage metric.
#[derive(Clone)]
pub struct StorageMetrics {
    /// Duration of each log commit (one fsync).
    pub fsync_seconds: Histogram,
    /// Operations folded into one log commit.
    pub batch_ops: Histogram,
    /// Log entries appended.
    pub appended_entries: IntCounter,
}

impl StorageMetrics {
    /// Creates and registers the instruments.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            fsync_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "shoal_storage_fsync_duration_seconds",
                    "Duration of one group-committed log write, fsync included.",
                )
                .buckets(prometheus::exponential_buckets(0.00005, 2.0, 16)?),
            )?,
            batch_ops: Histogram::with_opts(
                HistogramOpts::new(
                    "shoal_storage_commit_batch_ops",
                    "Log operations (appends, votes, truncations) sharing one commit.",
                )
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 13)?),
            )?,
            appended_entries: IntCounter::new(
                "shoal_storage_appended_entries_total",
                "Raft log entries made durable.",
            )?,
        };
        registry.register(Box::new(m.fsync_seconds.clone()))?;
        registry.register(Box::new(m.batch_ops.clone()))?;
        registry.register(Box::new(m.appended_entries.clone()))?;
        Ok(m)
    }

    /// Instruments on a registry of their own (tests, tools).
    pub fn unregistered() -> prometheus::Result<Self> {
        Self::new(&Registry::new())
    }
}
