//! Chat instruments.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

/// Every chat metric.
#[derive(Clone)]
pub struct ChatMetrics {
    /// `POST /v1/chat/messages` by outcome.
    pub messages: IntCounterVec,
    /// Time to gather a conversation list from every partition.
    pub list_seconds: Histogram,
}

impl ChatMetrics {
    /// Creates and registers the instruments.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            messages: IntCounterVec::new(
                Opts::new(
                    "shoal_chat_messages_total",
                    "Messages sent over HTTP, by outcome: sent (stored), duplicate (a resend of a stored \
                     client_msg_id; nothing stored), rejected (invalid or refused), failed (the cluster \
                     could not answer; it may or may not be stored).",
                ),
                &["outcome"],
            )?,
            list_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "shoal_chat_conversation_list_seconds",
                    "Time to gather one user's conversation list from every partition.",
                )
                .buckets(prometheus::exponential_buckets(0.001, 2.0, 14)?),
            )?,
        };
        registry.register(Box::new(m.messages.clone()))?;
        registry.register(Box::new(m.list_seconds.clone()))?;
        Ok(m)
    }
}
