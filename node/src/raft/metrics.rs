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
    /// Commit index: quorum-matched on the leader, applied elsewhere.
    pub commit_index: IntGaugeVec,
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
    /// Replica moves the placement driver committed to the layout, by kind.
    pub placement_moves: IntCounterVec,
    /// Layout version in this node's meta state.
    pub layout_version: prometheus::IntGauge,
    /// Membership changes this node ran as a group leader, by outcome.
    pub reconfigurations: IntCounterVec,
    /// Leader hand-overs this node ran as a group leader, by outcome.
    pub leader_transfers: IntCounterVec,
    /// Groups restarted from storage after a fatal error, by group.
    pub group_restarts: IntCounterVec,
    /// Groups this node stopped hosting (and deleted) after its replica moved elsewhere.
    pub groups_removed: prometheus::IntCounter,
    /// Entries a replica's log is behind the leader (set on the leader only), by group and peer.
    pub replica_lag: IntGaugeVec,
    /// 1 while this node leads the group and the group is quiet (no heartbeats).
    pub quiet: IntGaugeVec,
    /// Quiet groups led here that woke, by group and reason.
    pub quiet_wakes: IntCounterVec,
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
            commit_index: IntGaugeVec::new(
                Opts::new(
                    "shoal_raft_commit_index",
                    "Commit index of the group: the quorum-matched index on the leader, the applied index elsewhere.",
                ),
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
            placement_moves: IntCounterVec::new(
                Opts::new(
                    "shoal_placement_moves_total",
                    "Replica moves committed to the layout by the placement driver on this node, by kind.",
                ),
                &["kind"],
            )?,
            layout_version: prometheus::IntGauge::new(
                "shoal_placement_layout_version",
                "Version of the partition layout in this node's meta state.",
            )?,
            reconfigurations: IntCounterVec::new(
                Opts::new(
                    "shoal_raft_membership_changes_total",
                    "Group membership changes run on this node as the group's leader, by outcome.",
                ),
                &["outcome"],
            )?,
            leader_transfers: IntCounterVec::new(
                Opts::new(
                    "shoal_raft_leader_transfers_total",
                    "Leader hand-overs run on this node as the group's leader, by outcome.",
                ),
                &["outcome"],
            )?,
            group_restarts: IntCounterVec::new(
                Opts::new(
                    "shoal_raft_group_restarts_total",
                    "Groups restarted from their durable state after a fatal error, by group.",
                ),
                g,
            )?,
            groups_removed: prometheus::IntCounter::new(
                "shoal_raft_groups_removed_total",
                "Groups this node stopped hosting, their data deleted, after its replica moved elsewhere.",
            )?,
            replica_lag: IntGaugeVec::new(
                Opts::new(
                    "shoal_raft_replica_lag_entries",
                    "Entries a replica's log is behind the leader's (exported by the leader).",
                ),
                &["group", "peer"],
            )?,
            quiet: IntGaugeVec::new(
                Opts::new(
                    "shoal_raft_quiet",
                    "1 while this node leads the group and the group is quiet: settled, no heartbeats, its followers kept by quiet beats.",
                ),
                g,
            )?,
            quiet_wakes: IntCounterVec::new(
                Opts::new(
                    "shoal_raft_quiet_wakes_total",
                    "Quiet groups led here that woke, by reason: write (a proposal), reconfigure, replica (a replica was not where a quiet beat said), unsettled (new entries or a hand-over), leadership (this node stopped leading).",
                ),
                &["group", "reason"],
            )?,
        };
        registry.register(Box::new(m.quiet.clone()))?;
        registry.register(Box::new(m.quiet_wakes.clone()))?;
        registry.register(Box::new(m.placement_moves.clone()))?;
        registry.register(Box::new(m.layout_version.clone()))?;
        registry.register(Box::new(m.reconfigurations.clone()))?;
        registry.register(Box::new(m.replica_lag.clone()))?;
        registry.register(Box::new(m.leader_transfers.clone()))?;
        registry.register(Box::new(m.groups_removed.clone()))?;
        registry.register(Box::new(m.group_restarts.clone()))?;
        registry.register(Box::new(m.term.clone()))?;
        registry.register(Box::new(m.leader.clone()))?;
        registry.register(Box::new(m.applied_index.clone()))?;
        registry.register(Box::new(m.last_log_index.clone()))?;
        registry.register(Box::new(m.commit_index.clone()))?;
        registry.register(Box::new(m.leader_changes.clone()))?;
        registry.register(Box::new(m.proposals.clone()))?;
        registry.register(Box::new(m.proposal_seconds.clone()))?;
        registry.register(Box::new(m.batch_size.clone()))?;
        Ok(m)
    }

    /// Removes the per-group gauges of a group this node no longer hosts.
    pub fn forget_group(&self, group: super::GroupId) {
        let label = group.to_string();
        for gauge in [&self.term, &self.leader, &self.applied_index, &self.commit_index, &self.last_log_index] {
            let _ = gauge.remove_label_values(&[&label]);
        }
    }
}
