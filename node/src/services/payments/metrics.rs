//! Payments instruments.

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every payments metric.
#[derive(Clone)]
pub struct PaymentMetrics {
    /// Payment outcomes recorded by this node, by status.
    pub payments: IntCounterVec,
    /// Refund outcomes recorded by this node, by status.
    pub refunds: IntCounterVec,
    /// Gateway call latency, by operation.
    pub gateway_seconds: HistogramVec,
    /// Gateway calls without a final answer, by operation.
    pub gateway_errors: IntCounterVec,
    /// Reconciler retries.
    pub retries: IntCounter,
    /// Pending payments and refunds in the partitions this node leads.
    pub pending: IntGauge,
    /// Age of the oldest of them, in seconds.
    pub oldest_pending_seconds: IntGauge,
    /// Gateway webhooks, by outcome.
    pub webhooks: IntCounterVec,
    /// Requests refused for carrying card data.
    pub card_data_refused: IntCounter,
}

impl PaymentMetrics {
    /// Creates and registers the instruments.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            payments: IntCounterVec::new(
                Opts::new(
                    "shoal_payments_payments_total",
                    "Payment outcomes this node recorded, by status: succeeded, failed, requires_action, pending \
                     (the gateway's answer was unknown; the reconciler takes over).",
                ),
                &["status"],
            )?,
            refunds: IntCounterVec::new(
                Opts::new("shoal_payments_refunds_total", "Refund outcomes this node recorded, by status."),
                &["status"],
            )?,
            gateway_seconds: HistogramVec::new(
                HistogramOpts::new("shoal_payments_gateway_seconds", "Gateway call latency, by operation.")
                    .buckets(prometheus::exponential_buckets(0.001, 2.0, 16)?),
                &["op"],
            )?,
            gateway_errors: IntCounterVec::new(
                Opts::new(
                    "shoal_payments_gateway_errors_total",
                    "Gateway calls with no final answer (timeout, connection failure, 5xx), by operation.",
                ),
                &["op"],
            )?,
            retries: IntCounter::new(
                "shoal_payments_reconciler_retries_total",
                "Gateway calls the reconciler made for pending payments and refunds.",
            )?,
            pending: IntGauge::new(
                "shoal_payments_pending",
                "Payments and refunds pending at the gateway in the partitions this node leads.",
            )?,
            oldest_pending_seconds: IntGauge::new(
                "shoal_payments_oldest_pending_seconds",
                "Age of the oldest pending payment or refund in the partitions this node leads.",
            )?,
            webhooks: IntCounterVec::new(
                Opts::new(
                    "shoal_payments_webhooks_total",
                    "Gateway webhooks, by outcome: applied, unchanged (replayed or already resolved), \
                     bad_signature, ignored (not a Shoal payment or an event type not handled), failed.",
                ),
                &["outcome"],
            )?,
            card_data_refused: IntCounter::new(
                "shoal_payments_card_data_refused_total",
                "Requests refused because their body held a card number.",
            )?,
        };
        registry.register(Box::new(m.payments.clone()))?;
        registry.register(Box::new(m.refunds.clone()))?;
        registry.register(Box::new(m.gateway_seconds.clone()))?;
        registry.register(Box::new(m.gateway_errors.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.pending.clone()))?;
        registry.register(Box::new(m.oldest_pending_seconds.clone()))?;
        registry.register(Box::new(m.webhooks.clone()))?;
        registry.register(Box::new(m.card_data_refused.clone()))?;
        Ok(m)
    }
}
