//! HTTP instruments: requests and latency by route template, method and status class.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// Every HTTP metric.
#[derive(Clone)]
pub struct HttpMetrics {
    /// Requests answered.
    pub requests: IntCounterVec,
    /// Time to answer.
    pub duration: HistogramVec,
}

impl HttpMetrics {
    /// Creates and registers the instruments.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let labels = &["route", "method", "status_class"];
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "shoal_http_requests_total",
                    "HTTP requests answered, by route template, method and status class.",
                ),
                labels,
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "shoal_http_request_duration_seconds",
                    "Time to answer HTTP requests, by route template, method and status class.",
                )
                .buckets(prometheus::exponential_buckets(0.0001, 2.0, 17)?),
                labels,
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        Ok(m)
    }
}
