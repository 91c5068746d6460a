//! Rate limiter instruments.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every rate-limiter metric.
#[derive(Clone)]
pub struct RateLimitMetrics {
    /// Decisions by policy and kind.
    pub decisions: IntCounterVec,
    /// Time to decide, by where the key's owner was.
    pub check_seconds: HistogramVec,
    /// Checks per call to another owner.
    pub batch_checks: Histogram,
    /// Keys this node owns with live state.
    pub keys: IntGauge,
    /// Requests this node, owning their keys, leased to other nodes.
    pub leased: IntCounter,
}

impl RateLimitMetrics {
    /// Creates and registers the instruments.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            decisions: IntCounterVec::new(
                Opts::new(
                    "shoal_ratelimit_decisions_total",
                    "Rate-limit decisions, by policy and decision (allowed, limited, unavailable_open, \
                     unavailable_closed: the key's owner did not answer and the policy decided).",
                ),
                &["policy", "decision"],
            )?,
            check_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "shoal_ratelimit_check_duration_seconds",
                    "Time to decide one policy for one request, by where it was decided (local: this node owns the \
                     key; remote: its owner was asked; lease: from requests its owner leased to this node; \
                     none: no owner known).",
                )
                .buckets(prometheus::exponential_buckets(0.00002, 2.0, 14)?),
                &["owner"],
            )?,
            batch_checks: Histogram::with_opts(
                HistogramOpts::new("shoal_ratelimit_batch_checks", "Checks carried by one call to another owner.")
                    .buckets(prometheus::exponential_buckets(1.0, 2.0, 10)?),
            )?,
            keys: IntGauge::new("shoal_ratelimit_owned_keys", "Keys this node owns and holds state for.")?,
            leased: IntCounter::new(
                "shoal_ratelimit_leased_total",
                "Requests this node, owning their keys, leased to other nodes to admit without asking \
                 (those admitted show in shoal_ratelimit_check_duration_seconds{owner=\"lease\"}).",
            )?,
        };
        registry.register(Box::new(m.decisions.clone()))?;
        registry.register(Box::new(m.check_seconds.clone()))?;
        registry.register(Box::new(m.batch_checks.clone()))?;
        registry.register(Box::new(m.keys.clone()))?;
        registry.register(Box::new(m.leased.clone()))?;
        Ok(m)
    }
}
