//! The cluster view: each group's Raft state as `/v1/cluster` shows it, built from openraft's
//! metrics (groups hosted here) or the layout (the others). Pure: [`RaftHost::view`] reads the
//! inputs.
//!
//! [`RaftHost::view`]: super::RaftHost::view

use openraft::ServerState;
use serde::Serialize;

use super::{GroupId, TypeConfig};
use crate::NodeId;

/// One replica of a group as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReplicaView {
    /// The replica's node.
    #[schema(value_type = u64)]
    pub node: NodeId,
    /// Last entry known to be in its log.
    pub matched_index: Option<u64>,
    /// Entries it is behind the leader's log.
    pub lag: u64,
}

/// Raft state of one group as `/v1/cluster` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GroupView {
    /// Group id (0: meta).
    #[schema(value_type = u64)]
    pub id: GroupId,
    /// Voters (from this node's Raft state; from the layout when not hosted here).
    #[schema(value_type = Vec<u64>)]
    pub replicas: Vec<NodeId>,
    /// Learners.
    #[schema(value_type = Vec<u64>)]
    pub learners: Vec<NodeId>,
    /// Current leader, if any.
    #[schema(value_type = Option<u64>)]
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Highest committed entry: on the leader, the highest entry a quorum of voters has; elsewhere
    /// the highest the leader told this node (at least the applied index).
    pub commit_index: u64,
    /// Highest entry applied to this node's state machine.
    pub applied_index: u64,
    /// Last entry in this node's log.
    pub last_log_index: u64,
    /// Last entry covered by this node's latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Entries up to here were purged from this node's log.
    pub purged_index: Option<u64>,
    /// This node's role (`none`: the group is not hosted here).
    #[schema(value_type = String, example = "follower")]
    pub role: &'static str,
    /// Per-replica replication progress; only on the leader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<Vec<ReplicaView>>,
}

/// A group's log progress as one node's Raft metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Progress {
    pub(super) last_log_index: u64,
    pub(super) applied_index: u64,
    /// On the leader: the highest index a quorum of voters has matched; elsewhere the committed
    /// index the leader told this node (at least the applied index).
    pub(super) commit_index: u64,
    /// On the leader: every replica's matched index and lag.
    pub(super) replicas: Option<Vec<ReplicaView>>,
}

/// `committed`: what openraft last reported committed to this node's log store (followers learn
/// it from the leader; openraft's metrics do not carry it).
pub(super) fn progress(m: &openraft::RaftMetrics<TypeConfig>, me: NodeId, committed: Option<u64>) -> Progress {
    let last = m.last_log_index.unwrap_or(0);
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let Some(r) = m.replication.as_ref() else {
        let commit_index = committed.unwrap_or(0).max(applied);
        return Progress { last_log_index: last, applied_index: applied, commit_index, replicas: None };
    };
    let replicas: Vec<ReplicaView> = r
        .iter()
        .map(|(node, matched)| {
            let matched_index = matched.map(|l| l.index);
            ReplicaView { node: *node, matched_index, lag: last.saturating_sub(matched_index.unwrap_or(0)) }
        })
        .collect();
    let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
    let mut matched: Vec<u64> = voters
        .iter()
        .map(|v| match r.get(v) {
            Some(matched) => matched.map(|l| l.index).unwrap_or(0),
            // The leader itself, when openraft does not list it.
            None if *v == me => last,
            None => 0,
        })
        .collect();
    matched.sort_unstable_by(|a, b| b.cmp(a));
    let quorum = matched.get(voters.len() / 2).copied().unwrap_or(0);
    Progress {
        last_log_index: last,
        applied_index: applied,
        commit_index: quorum.max(applied),
        replicas: Some(replicas),
    }
}

/// A hosted group's view from this node's Raft metrics; `committed` as for [`progress`].
pub(super) fn hosted(
    id: GroupId,
    m: &openraft::RaftMetrics<TypeConfig>,
    me: NodeId,
    committed: Option<u64>,
) -> GroupView {
    let p = progress(m, me, committed);
    GroupView {
        id,
        replicas: m.membership_config.membership().voter_ids().collect(),
        learners: m.membership_config.membership().learner_ids().collect(),
        leader: m.current_leader,
        term: m.current_term,
        commit_index: p.commit_index,
        applied_index: p.applied_index,
        last_log_index: p.last_log_index,
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        role: role(m.state),
        replication: p.replicas,
    }
}

/// A group not hosted here: its replicas from the layout, its leader as last seen.
pub(super) fn not_hosted(id: GroupId, replicas: Vec<NodeId>, leader: Option<NodeId>) -> GroupView {
    GroupView {
        id,
        replicas,
        learners: Vec::new(),
        leader,
        term: 0,
        commit_index: 0,
        applied_index: 0,
        last_log_index: 0,
        snapshot_index: None,
        purged_index: None,
        role: "none",
        replication: None,
    }
}

/// The role name `/v1/cluster` shows.
fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use openraft::RaftMetrics;

    use super::*;
    use crate::raft::NodeInfo;
    use crate::storage::entry::{CommittedLeaderId, LogId, Membership, StoredMembership};

    fn log_id(index: u64) -> LogId {
        LogId { leader_id: CommittedLeaderId { term: 1, node_id: 1 }, index }
    }

    /// Metrics of node `me` in a group of `voters` (and `learners`), `last` entries in its log,
    /// `applied` of them applied.
    fn metrics(me: NodeId, voters: &[NodeId], learners: &[NodeId], last: u64, applied: u64) -> RaftMetrics<TypeConfig> {
        let voter_set: BTreeSet<NodeId> = voters.iter().copied().collect();
        let nodes: BTreeMap<NodeId, NodeInfo> =
            voters.iter().chain(learners).map(|id| (*id, NodeInfo::default())).collect();
        let membership = Membership::new(vec![voter_set], nodes).expect("valid membership");
        let mut m = RaftMetrics::new_initial(me);
        // openraft 0.10 starts a node as a learner; these fixtures are voters.
        m.state = ServerState::Follower;
        m.current_term = 3;
        m.last_log_index = Some(last);
        m.last_applied = Some(log_id(applied));
        m.membership_config = Arc::new(StoredMembership::new(Some(log_id(1)), membership));
        m
    }

    /// As [`metrics`], on the leader, with openraft's replication map (node → matched index).
    fn leader(me: NodeId, voters: &[NodeId], last: u64, matched: &[(NodeId, Option<u64>)]) -> RaftMetrics<TypeConfig> {
        let mut m = metrics(me, voters, &[], last, 0);
        m.state = ServerState::Leader;
        m.current_leader = Some(me);
        m.replication = Some(matched.iter().map(|(n, i)| (*n, i.map(log_id))).collect());
        m
    }

    #[test]
    fn the_leader_shows_each_replicas_matched_index_and_lag() {
        let m = leader(1, &[1, 2, 3], 100, &[(1, Some(100)), (2, Some(97)), (3, None)]);
        let p = progress(&m, 1, Some(90));
        assert_eq!(p.last_log_index, 100);
        let replicas = p.replicas.expect("the leader has replication progress");
        let by_node: Vec<(NodeId, Option<u64>, u64)> =
            replicas.iter().map(|r| (r.node, r.matched_index, r.lag)).collect();
        assert_eq!(by_node, vec![(1, Some(100), 0), (2, Some(97), 3), (3, None, 100)]);
        // Two of three voters hold 97: that is committed, whatever the store last reported.
        assert_eq!(p.commit_index, 97);
    }

    #[test]
    fn a_follower_shows_the_committed_index_it_was_told_but_never_less_than_applied() {
        let m = metrics(2, &[1, 2, 3], &[], 50, 40);
        let p = progress(&m, 2, Some(45));
        assert_eq!((p.last_log_index, p.applied_index, p.commit_index, p.replicas), (50, 40, 45, None));
        assert_eq!(progress(&m, 2, Some(30)).commit_index, 40);
        assert_eq!(progress(&m, 2, None).commit_index, 40);
    }

    #[test]
    fn a_voter_missing_from_the_replication_map_counts_as_matching_nothing_unless_it_is_the_leader() {
        // openraft may leave the leader itself out: it holds its whole log.
        let m = leader(1, &[1, 2, 3], 80, &[(2, Some(70))]);
        assert_eq!(progress(&m, 1, None).commit_index, 70);
        // Another voter left out has nothing: only the leader holds entry 80, so 70 (applied
        // on the leader is the floor) is all a quorum has.
        let mut m = leader(1, &[1, 2, 3], 80, &[(1, Some(80))]);
        m.last_applied = Some(log_id(60));
        assert_eq!(progress(&m, 1, None).commit_index, 60);
    }

    #[test]
    fn the_quorum_commit_index_is_the_majoritys_lowest_match() {
        let m3 = leader(1, &[1, 2, 3], 10, &[(1, Some(10)), (2, Some(8)), (3, Some(5))]);
        assert_eq!(progress(&m3, 1, None).commit_index, 8);
        let m5 = leader(1, &[1, 2, 3, 4, 5], 10, &[(1, Some(10)), (2, Some(9)), (3, Some(7)), (4, Some(4)), (5, None)]);
        assert_eq!(progress(&m5, 1, None).commit_index, 7);
        // Learners are replicated to but do not count for the quorum.
        let with_learner = leader(1, &[1, 2, 3], 10, &[(1, Some(10)), (2, Some(3)), (3, Some(2)), (9, Some(10))]);
        assert_eq!(progress(&with_learner, 1, None).commit_index, 3);
    }

    #[test]
    fn a_hosted_groups_view_names_its_members_role_and_progress() {
        let m = metrics(2, &[1, 2, 3], &[7], 50, 40);
        let v = hosted(4, &m, 2, Some(45));
        assert_eq!((v.id, v.replicas.clone(), v.learners.clone(), v.term), (4, vec![1, 2, 3], vec![7], 3));
        assert_eq!((v.role, v.commit_index, v.applied_index, v.last_log_index), ("follower", 45, 40, 50));
        assert!(v.replication.is_none());
        let v = hosted(4, &leader(1, &[1, 2, 3], 10, &[(2, Some(10)), (3, Some(10))]), 1, None);
        assert_eq!((v.role, v.leader, v.commit_index), ("leader", Some(1), 10));
        assert_eq!(v.replication.map(|r| r.len()), Some(2));
    }

    #[test]
    fn a_group_not_hosted_here_shows_the_layouts_replicas_and_role_none() {
        let v = not_hosted(5, vec![2, 3, 4], Some(3));
        assert_eq!((v.id, v.replicas, v.leader, v.role, v.term), (5, vec![2, 3, 4], Some(3), "none", 0));
    }
}
