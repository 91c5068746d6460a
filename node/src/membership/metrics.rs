//! Membership instruments: peer state and heartbeat round trips.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every membership metric.
#[derive(Clone)]
pub struct MembershipMetrics {
    /// 1 when the peer answers heartbeats, 0 when it is down.
    pub peer_up: IntGaugeVec,
    /// Heartbeat round-trip time per peer.
    pub peer_rtt: HistogramVec,
    /// Known members, this node included.
    pub members: IntGauge,
    /// Peer state changes, by new state.
    pub transitions: IntCounterVec,
}

impl MembershipMetrics {
    /// Creates and registers the instruments.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            peer_up: IntGaugeVec::new(
                Opts::new("shoal_peer_up", "1 if the peer answers heartbeats, 0 if it is considered down."),
                &["peer"],
            )?,
            peer_rtt: HistogramVec::new(
                HistogramOpts::new("shoal_peer_rtt_seconds", "Heartbeat round-trip time to the peer.")
                    .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
                &["peer"],
            )?,
            members: IntGauge::new("shoal_membership_members", "Members known to this node, itself included.")?,
            transitions: IntCounterVec::new(
                Opts::new("shoal_membership_peer_transitions_total", "Peer state changes seen by this node."),
                &["state"],
            )?,
        };
        registry.register(Box::new(m.peer_up.clone()))?;
        registry.register(Box::new(m.peer_rtt.clone()))?;
        registry.register(Box::new(m.members.clone()))?;
        registry.register(Box::new(m.transitions.clone()))?;
        Ok(m)
    }
}
