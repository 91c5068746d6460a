//! The node's Prometheus registry: every subsystem registers its instruments here (services
//! register theirs when they are built), and
//! `GET /metrics` renders it. One registry per node (not the global default), so tests can run
//! several nodes in one process.

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::NodeId;
use crate::http::metrics::HttpMetrics;
use crate::membership::MembershipMetrics;
use crate::raft::metrics::RaftMetrics;
use crate::storage::StorageMetrics;
use crate::supervisor::SupervisorMetrics;
use crate::transport::TransportMetrics;

/// All instruments of one node.
#[derive(Clone)]
pub struct NodeMetrics {
    /// The registry behind `/metrics`.
    pub registry: Registry,
    /// Peer transport.
    pub transport: TransportMetrics,
    /// Membership and failure detection.
    pub membership: MembershipMetrics,
    /// HTTP server.
    pub http: HttpMetrics,
    /// Actor supervision.
    pub supervisor: SupervisorMetrics,
    /// Durable storage.
    pub storage: StorageMetrics,
    /// Raft groups.
    pub raft: RaftMetrics,
}

impl NodeMetrics {
    /// Creates the registry and every subsystem's instruments.
    pub fn new(node_id: NodeId) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let info = IntGaugeVec::new(
            Opts::new("shoal_node_info", "Constant 1, labelled with this node's id and version."),
            &["node_id", "version"],
        )?;
        info.with_label_values(&[&node_id.to_string(), env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(info))?;
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Self {
            transport: TransportMetrics::new(&registry)?,
            membership: MembershipMetrics::new(&registry)?,
            http: HttpMetrics::new(&registry)?,
            supervisor: SupervisorMetrics::new(&registry)?,
            storage: StorageMetrics::new(&registry)?,
            raft: RaftMetrics::new(&registry)?,
            registry,
        })
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
