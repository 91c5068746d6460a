//! Object storage instruments.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every object storage metric.
#[derive(Clone)]
pub struct ObjectMetrics {
    /// S3 requests by operation and outcome (`ok`, `client_error`, `server_error`).
    pub requests: IntCounterVec,
    /// S3 request latency by operation.
    pub seconds: HistogramVec,
    /// Object bytes received by PUTs that completed.
    pub bytes_in: IntCounter,
    /// Object bytes sent by GETs.
    pub bytes_out: IntCounter,
    /// Chunks written to this node's disk (fsynced).
    pub chunks_written: IntCounter,
    /// Chunks found corrupt on this node's disk, on a read or by the scrub.
    pub corrupt_chunks: IntCounter,
    /// Chunks this node fetched from another replica and stored after a local miss or corruption.
    pub chunks_repaired: IntCounter,
    /// Chunks the partitions this node replicates reference but its disk lacks, after the last
    /// resync pass.
    pub missing_chunks: IntGauge,
    /// Completed resync passes.
    pub resync_passes: IntCounter,
    /// Unreferenced chunk files the collector deleted.
    pub gc_chunks: IntCounter,
    /// Their bytes.
    pub gc_bytes: IntCounter,
    /// Completed collector passes.
    pub gc_passes: IntCounter,
    /// Chunk files the scrub re-hashed.
    pub scrub_chunks: IntCounter,
    /// Their bytes.
    pub scrub_bytes: IntCounter,
    /// Completed scrub passes.
    pub scrub_passes: IntCounter,
    /// Corrupt chunk files the scrub found (also counted in `corrupt_chunks`).
    pub scrub_corrupt: IntCounter,
}

impl ObjectMetrics {
    /// Creates and registers the instruments.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "shoal_objects_requests_total",
                    "S3 requests by operation and outcome (ok, client_error, server_error).",
                ),
                &["op", "outcome"],
            )?,
            seconds: HistogramVec::new(
                HistogramOpts::new("shoal_objects_request_seconds", "S3 request latency by operation.")
                    .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16)?),
                &["op"],
            )?,
            bytes_in: IntCounter::new("shoal_objects_bytes_in_total", "Object bytes stored by completed PUTs.")?,
            bytes_out: IntCounter::new("shoal_objects_bytes_out_total", "Object bytes sent by GETs.")?,
            chunks_written: IntCounter::new(
                "shoal_objects_chunks_written_total",
                "Chunks written (and fsynced) to this node's disk.",
            )?,
            corrupt_chunks: IntCounter::new(
                "shoal_objects_corrupt_chunks_total",
                "Chunks found on this node's disk (on a read or by the scrub) whose bytes no longer match their BLAKE3 name.",
            )?,
            chunks_repaired: IntCounter::new(
                "shoal_objects_chunks_repaired_total",
                "Chunks this node fetched from another replica after a local miss or corruption, and stored.",
            )?,
            missing_chunks: IntGauge::new(
                "shoal_objects_missing_chunks",
                "Chunks the partitions this node replicates reference but its disk lacks, after the last resync pass \
                 (each pass fetches missing chunks from the other replicas).",
            )?,
            resync_passes: IntCounter::new(
                "shoal_objects_resync_passes_total",
                "Completed resync passes over every partition this node replicates.",
            )?,
            gc_chunks: IntCounter::new(
                "shoal_objects_gc_chunks_total",
                "Chunk files no object or upload in progress references, deleted by the collector after objects.gc_grace.",
            )?,
            gc_bytes: IntCounter::new(
                "shoal_objects_gc_bytes_total",
                "Bytes of the chunk files the collector deleted.",
            )?,
            gc_passes: IntCounter::new(
                "shoal_objects_gc_passes_total",
                "Completed collector passes over this node's chunk files.",
            )?,
            scrub_chunks: IntCounter::new(
                "shoal_objects_scrub_chunks_total",
                "Chunk files the scrub re-hashed against their BLAKE3 name.",
            )?,
            scrub_bytes: IntCounter::new(
                "shoal_objects_scrub_bytes_total",
                "Bytes the scrub re-hashed (paced to objects.scrub_bytes_per_sec).",
            )?,
            scrub_passes: IntCounter::new(
                "shoal_objects_scrub_passes_total",
                "Completed scrub passes over every chunk file of this node.",
            )?,
            scrub_corrupt: IntCounter::new(
                "shoal_objects_scrub_corrupt_chunks_total",
                "Corrupt chunk files the scrub found (also in shoal_objects_corrupt_chunks_total).",
            )?,
        };
        registry.register(Box::new(m.scrub_chunks.clone()))?;
        registry.register(Box::new(m.scrub_bytes.clone()))?;
        registry.register(Box::new(m.scrub_passes.clone()))?;
        registry.register(Box::new(m.scrub_corrupt.clone()))?;
        registry.register(Box::new(m.gc_chunks.clone()))?;
        registry.register(Box::new(m.gc_bytes.clone()))?;
        registry.register(Box::new(m.gc_passes.clone()))?;
        registry.register(Box::new(m.missing_chunks.clone()))?;
        registry.register(Box::new(m.resync_passes.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.seconds.clone()))?;
        registry.register(Box::new(m.bytes_in.clone()))?;
        registry.register(Box::new(m.bytes_out.clone()))?;
        registry.register(Box::new(m.chunks_written.clone()))?;
        registry.register(Box::new(m.corrupt_chunks.clone()))?;
        registry.register(Box::new(m.chunks_repaired.clone()))?;
        Ok(m)
    }
}
