//! The node's Prometheus registry: every subsystem registers its instruments in it (its own
//! `metrics.rs`; [`crate::supervisor::NodeMetrics`] gathers them), and
//! `GET /metrics` renders it. One registry per node (not the global default), so tests can run
//! several nodes in one process.

use prometheus::{Encoder, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::NodeId;

/// A node's registry, with `shoal_node_info` and the standard `process_*` collector.
pub fn node_registry(node_id: NodeId) -> prometheus::Result<Registry> {
    let registry = Registry::new();
    let info = IntGaugeVec::new(
        Opts::new("shoal_node_info", "Constant 1, labelled with this node's id and version."),
        &["node_id", "version"],
    )?;
    info.with_label_values(&[&node_id.to_string(), env!("CARGO_PKG_VERSION")]).set(1);
    registry.register(Box::new(info))?;
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
    Ok(registry)
}

/// `registry` in the text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut buf) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}
