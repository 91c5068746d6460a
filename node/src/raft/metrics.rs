//! Raft instruments per group: term, leader flag, applied and last log index, proposals.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Every Raft metric. Group labels are group ids (0: meta), a fixed set per cluster.
#[derive(Clone)]
pub struct RaftMetrics {
    /// Current term.
    pub term: IntGaugeVec,
    /// 1 while this node leads the group.
    pub leader: IntGaugeVec,
    /// Highest applied entry (committed entries are applied promptly).
    pub applied_index: IntGaugeVec,
    /// Last entry in the local log.
    pub last_log_index: IntGaugeVec,
    /// Leader changes seen.
    pub leader_changes: IntCounterVec,
    /// Commands proposed through the batching proposer, by outcome.
    pub proposals: IntCounterVec,
    /// Time from proposal to commit.
    pub proposal_seconds: HistogramVec,
    /// Commands per proposed log entry.
    pub batch_size: HistogramVec,
}

impl RaftMetrics {
    /// Creates and registers the instruments.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let g = &["group"];
        let m = Self {
            term: IntGaugeVec::new(Opts::new("shoal_raft_term", "Current Raft term of the group on this node."), g)?,
            leader: IntGaugeVec::new(Opts::new("shoal_raft_leader", "1 while this node leads the group."), g)?,
            applied_index: IntGaugeVec::new(
                Opts::new("shoal_raft_applied_index", "Highest log index applied to the group's state machine here."),
                g,
            )?,
            last_log_index: IntGaugeVec::new(
                Opts::new("shoal_raft_last_log_index", "Last log index in the group's log on this node."),
                g,
            )?,
            leader_changes: IntCounterVec::new(
                Opts::new("shoal_raft_leader_changes_total", "Leader changes of the group seen by this node."),
                g,
            )?,
            proposals: IntCounterVec::new(
                Opts::new("shoal_raft_proposals_total", "Commands proposed on this node, by outcome."),
                &["group", "outcome"],
            )?,
            proposal_seconds: HistogramVec::new(
                HistogramOpts::new("shoal_raft_proposal_duration_seconds", "Time from proposal to commit and apply.")
                    .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16)?),
                g,
            )?,
            batch_size: HistogramVec::new(
                HistogramOpts::new("shoal_raft_batch_commands", "Commands packed into one proposed log entry.")
                    .buckets(prometheus::exponential_buckets(1.0, 2.0, 12)?),
                g,
            )?,
        };
        registry.register(Box::new(m.term.clone()))?;
        registry.register(Box::new(m.leader.clone()))?;
        registry.register(Box::new(m.applied_index.clone()))?;
        registry.register(Box::new(m.last_log_index.clone()))?;
        registry.register(Box::new(m.leader_changes.clone()))?;
        registry.register(Box::new(m.proposals.clone()))?;
        registry.register(Box::new(m.proposal_seconds.clone()))?;
        registry.register(Box::new(m.batch_size.clone()))?;
        Ok(m)
    }
}
