//! Chat instruments.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every chat metric.
#[derive(Clone)]
pub struct ChatMetrics {
    /// Sends (HTTP and WebSocket) by outcome.
    pub messages: IntCounterVec,
    /// Time to gather a conversation list from every partition.
    pub list_seconds: Histogram,
    /// WebSocket sessions connected to this node.
    pub sessions: IntGauge,
    /// Messages written to sessions here, by how they arrived.
    pub delivered: IntCounterVec,
    /// Commit (the sender's node stamping it) → written to a recipient session's socket.
    pub delivery_seconds: Histogram,
    /// Messages written to sessions here and not acknowledged yet.
    pub pending: IntGauge,
    /// Sessions closed with 1013 because their queue overflowed.
    pub slow_consumers: IntCounter,
    /// Pushes to other nodes by outcome.
    pub pushes: IntCounterVec,
    /// Events dropped from a full push queue.
    pub push_dropped: IntCounter,
    /// Users this node owns (leads the partition of) that are online.
    pub online: IntGauge,
    /// Presence changes this node announced, by direction.
    pub presence_changes: IntCounterVec,
}

impl ChatMetrics {
    /// Creates and registers the instruments.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            messages: IntCounterVec::new(
                Opts::new(
                    "shoal_chat_messages_total",
                    "Messages sent (HTTP and WebSocket), by outcome: sent (stored), duplicate (a resend of a stored \
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
            sessions: IntGauge::new("shoal_chat_sessions", "WebSocket chat sessions connected to this node.")?,
            delivered: IntCounterVec::new(
                Opts::new(
                    "shoal_chat_delivered_total",
                    "Messages written to chat sessions on this node, by how they reached the session: written \
                     (every message written; the others are subsets), from_store (read from the store: resync \
                     after a connect, or a gap filled).",
                ),
                &["outcome"],
            )?,
            delivery_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "shoal_chat_delivery_seconds",
                    "From the sender's node stamping a message to its being written to a session's socket.",
                )
                .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16)?),
            )?,
            pending: IntGauge::new(
                "shoal_chat_pending_messages",
                "Messages written to this node's sessions and not acknowledged by their clients yet.",
            )?,
            slow_consumers: IntCounter::new(
                "shoal_chat_slow_consumer_disconnects_total",
                "Sessions closed with 1013 because they fell behind (their queue overflowed).",
            )?,
            pushes: IntCounterVec::new(
                Opts::new(
                    "shoal_chat_pushes_total",
                    "Pushes of messages and receipts to other nodes, by outcome: ok, failed (given up after \
                     retries, or the peer went down).",
                ),
                &["outcome"],
            )?,
            push_dropped: IntCounter::new(
                "shoal_chat_push_dropped_total",
                "Events dropped from a full push queue (their sessions fill the gap from the store).",
            )?,
            online: IntGauge::new(
                "shoal_chat_online_users",
                "Online users among those whose partition this node leads (it keeps their presence).",
            )?,
            presence_changes: IntCounterVec::new(
                Opts::new(
                    "shoal_chat_presence_changes_total",
                    "Presence changes announced by this node (as the users' owner), by direction: online, offline.",
                ),
                &["direction"],
            )?,
        };
        registry.register(Box::new(m.messages.clone()))?;
        registry.register(Box::new(m.list_seconds.clone()))?;
        registry.register(Box::new(m.sessions.clone()))?;
        registry.register(Box::new(m.delivered.clone()))?;
        registry.register(Box::new(m.delivery_seconds.clone()))?;
        registry.register(Box::new(m.pending.clone()))?;
        registry.register(Box::new(m.slow_consumers.clone()))?;
        registry.register(Box::new(m.pushes.clone()))?;
        registry.register(Box::new(m.push_dropped.clone()))?;
        registry.register(Box::new(m.online.clone()))?;
        registry.register(Box::new(m.presence_changes.clone()))?;
        Ok(m)
    }
}
