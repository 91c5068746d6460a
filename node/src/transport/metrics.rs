//! Transport instruments: RPC calls and their latency, frame errors, handshakes, links.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, exponential_buckets};

/// Every transport metric, registered once per node.
#[derive(Clone)]
pub struct TransportMetrics {
    /// Outgoing calls by method and outcome.
    pub calls: IntCounterVec,
    /// Outgoing call latency by method.
    pub call_seconds: HistogramVec,
    /// Incoming requests served, by method.
    pub served: IntCounterVec,
    /// Frames refused, by kind.
    pub frame_errors: IntCounterVec,
    /// Handshakes by direction and outcome.
    pub handshakes: IntCounterVec,
    /// Connections closed, by reason.
    pub closed: IntCounterVec,
    /// 1 while a live connection to the peer exists.
    pub connected: IntGaugeVec,
}

impl TransportMetrics {
    /// Creates and registers the instruments.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            calls: IntCounterVec::new(
                Opts::new("shoal_transport_rpc_calls_total", "Peer RPC calls made, by method and outcome."),
                &["method", "outcome"],
            )?,
            call_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "shoal_transport_rpc_call_duration_seconds",
                    "Latency of peer RPC calls made, connecting included.",
                )
                .buckets(exponential_buckets(0.0001, 2.0, 16)?),
                &["method"],
            )?,
            served: IntCounterVec::new(
                Opts::new("shoal_transport_rpc_served_total", "Peer RPC requests served, by method."),
                &["method"],
            )?,
            frame_errors: IntCounterVec::new(
                Opts::new("shoal_transport_frame_errors_total", "Peer frames refused, by kind."),
                &["kind"],
            )?,
            handshakes: IntCounterVec::new(
                Opts::new("shoal_transport_handshakes_total", "QUIC handshakes, by direction and outcome."),
                &["direction", "outcome"],
            )?,
            closed: IntCounterVec::new(
                Opts::new("shoal_transport_connections_closed_total", "Peer connections closed, by reason."),
                &["reason"],
            )?,
            connected: IntGaugeVec::new(
                Opts::new("shoal_transport_peer_connected", "1 while a live QUIC connection to the peer exists."),
                &["peer"],
            )?,
        };
        registry.register(Box::new(m.calls.clone()))?;
        registry.register(Box::new(m.call_seconds.clone()))?;
        registry.register(Box::new(m.served.clone()))?;
        registry.register(Box::new(m.frame_errors.clone()))?;
        registry.register(Box::new(m.handshakes.clone()))?;
        registry.register(Box::new(m.closed.clone()))?;
        registry.register(Box::new(m.connected.clone()))?;
        Ok(m)
    }
}
