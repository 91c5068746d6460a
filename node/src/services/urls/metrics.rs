//! URL shortener instruments.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every shortener metric.
#[derive(Clone)]
pub struct UrlMetrics {
    /// Shorten requests by outcome.
    pub shortens: IntCounterVec,
    /// Redirect requests by outcome.
    pub redirects: IntCounterVec,
    /// Redirect cache lookups by result.
    pub cache: IntCounterVec,
    /// Loads of a mapping from its partition, by outcome.
    pub loads: IntCounterVec,
    /// Blocks of codes reserved from the cluster.
    pub code_blocks: IntCounter,
    /// Click flushes by outcome.
    pub click_flushes: IntCounterVec,
    /// Codes per click flush.
    pub click_flush_codes: Histogram,
    /// Clicks counted here and not yet flushed.
    pub clicks_unflushed: IntGauge,
    /// Age of the oldest click in the last flush.
    pub click_flush_lag: prometheus::Gauge,
}

impl UrlMetrics {
    /// Creates and registers the instruments.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            shortens: IntCounterVec::new(
                Opts::new(
                    "shoal_urls_shortens_total",
                    "Shorten requests, by outcome (created, alias_taken, invalid, failed).",
                ),
                &["outcome"],
            )?,
            redirects: IntCounterVec::new(
                Opts::new(
                    "shoal_urls_redirects_total",
                    "Redirect requests, by outcome (found, not_found, gone, unavailable).",
                ),
                &["outcome"],
            )?,
            cache: IntCounterVec::new(
                Opts::new(
                    "shoal_urls_cache_requests_total",
                    "Redirect cache lookups: hit (fresh), miss (this request loaded it), coalesced \
                     (waited for another request's load), stale (served stale: the partition could not answer).",
                ),
                &["result"],
            )?,
            loads: IntCounterVec::new(
                Opts::new(
                    "shoal_urls_cache_loads_total",
                    "Mappings loaded into the redirect cache from their partition, by outcome (ok, error).",
                ),
                &["outcome"],
            )?,
            code_blocks: IntCounter::new(
                "shoal_urls_code_blocks_total",
                "Blocks of codes this node reserved from the cluster (one Raft write each).",
            )?,
            click_flushes: IntCounterVec::new(
                Opts::new(
                    "shoal_urls_click_flushes_total",
                    "Click batches sent to partitions, by outcome (ok, retried, lost).",
                ),
                &["outcome"],
            )?,
            click_flush_codes: Histogram::with_opts(
                HistogramOpts::new("shoal_urls_click_flush_codes", "Codes with clicks per flush round.")
                    .buckets(prometheus::exponential_buckets(1.0, 4.0, 8)?),
            )?,
            clicks_unflushed: IntGauge::new(
                "shoal_urls_clicks_unflushed",
                "Clicks counted on this node and not yet written to their partitions.",
            )?,
            click_flush_lag: prometheus::Gauge::new(
                "shoal_urls_click_flush_lag_seconds",
                "Age of the oldest click in the last flush round, when it was sent.",
            )?,
        };
        registry.register(Box::new(m.shortens.clone()))?;
        registry.register(Box::new(m.redirects.clone()))?;
        registry.register(Box::new(m.cache.clone()))?;
        registry.register(Box::new(m.loads.clone()))?;
        registry.register(Box::new(m.code_blocks.clone()))?;
        registry.register(Box::new(m.click_flushes.clone()))?;
        registry.register(Box::new(m.click_flush_codes.clone()))?;
        registry.register(Box::new(m.clicks_unflushed.clone()))?;
        registry.register(Box::new(m.click_flush_lag.clone()))?;
        Ok(m)
    }
}
