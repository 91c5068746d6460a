//! Membership changes: a group's leader makes the group's voters and learners the ones the
//! layout wants (asked by the placement driver), and every node hosts the groups the layout
//! gives it and stops hosting (and deletes) the partitions it no longer replicates.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::{ChangeMembers, ServerState};
use tracing::{info, warn};

use super::error::{not_hosted, unavailable};
use super::host::{FORWARD_TIMEOUT, RaftHost};
use super::wire::{RaftRequest, RaftRequestBody, RaftResponse};
use super::{GroupId, GroupRaft, NodeInfo};
use crate::NodeId;
use crate::membership::Membership;
use crate::placement::Placement;
use crate::transport::proto::MemberRecord;
use crate::util::lock;

/// Longest wait for a new replica to catch up, or for a membership change to commit.
const RECONFIGURE_TIMEOUT: Duration = Duration::from_secs(30);

impl RaftHost {
    /// Makes this node follow the placement `p` in meta state: hosts the groups its layout gives
    /// this node, tells membership about every member, and drops the groups it moved away.
    pub async fn follow_placement(&self, p: &Placement, membership: &Membership) {
        self.metrics.layout_version.set(p.layout.version as i64);
        for (group, replicas) in &p.layout.groups {
            if replicas.contains(&self.node_id)
                && self.group(*group).is_none()
                && let Err(e) = self.open_group(*group, None).await
            {
                warn!(group, error = %e, "cannot host a group the layout gives this node");
            }
        }
        let records: Vec<MemberRecord> = p
            .members
            .values()
            .map(|m| MemberRecord { id: m.id, peer_addr: m.peer_addr.clone(), http_addr: m.http_addr.clone() })
            .collect();
        membership.merge(&records);
        self.drop_moved_groups(p).await;
    }

    /// Counts a replica move the placement driver committed (`add`, `replace`, `rebalance`).
    pub fn count_move(&self, kind: &str) {
        self.metrics.placement_moves.with_label_values(&[kind]).inc();
    }

    /// Makes `group`'s voters (and learners) the wanted ones. Answers `done` when they already
    /// match; otherwise starts the change in the background (new nodes join as learners, are
    /// waited for until they caught up, then the voters are replaced) and answers not done.
    pub(super) fn reconfigure(
        &self,
        group: GroupId,
        layout_version: u64,
        voters: Vec<(NodeId, NodeInfo)>,
        learners: Vec<(NodeId, NodeInfo)>,
    ) -> RaftResponse {
        let Some(g) = self.group(group) else { return unavailable(not_hosted(group)) };
        let m = g.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            return RaftResponse::NotLeader { leader: m.current_leader };
        }
        let membership = m.membership_config.membership();
        let want_voters: BTreeSet<NodeId> = voters.iter().map(|(id, _)| *id).collect();
        let want_learners: BTreeSet<NodeId> = learners.iter().map(|(id, _)| *id).collect();
        let have_voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let have_learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        if have_voters == want_voters && have_learners == want_learners && membership.get_joint_config().len() == 1 {
            return RaftResponse::Reconfigured { done: true };
        }
        if lock(&self.transfers).contains_key(&group) || !lock(&self.reconfiguring).insert(group) {
            return RaftResponse::Reconfigured { done: false };
        }
        let raft = g.raft.clone();
        let me = self.me.clone();
        let metrics = self.metrics.clone();
        let lease = self.lease();
        tokio::spawn(async move {
            // The group is busy now, so it stays awake; a quiet one needs its lease back first.
            if super::tick::renew_lease(&raft, &g.quiet, lease).await {
                metrics.quiet_wakes.with_label_values(&[&group.to_string(), "reconfigure"]).inc();
            }
            let result = change_members(&raft, group, voters, learners, have_voters, have_learners).await;
            let outcome = match &result {
                Ok(()) => {
                    info!(group, layout_version, voters = ?want_voters, "group membership follows the layout");
                    "done"
                }
                Err(e) => {
                    warn!(group, layout_version, error = %e, "group membership change did not finish; retrying");
                    "failed"
                }
            };
            metrics.reconfigurations.with_label_values(&[outcome]).inc();
            if let Some(host) = me.upgrade() {
                lock(&host.reconfiguring).remove(&group);
            }
        });
        RaftResponse::Reconfigured { done: false }
    }

    /// Whether `node` is in `group`'s membership as this node, its leader, has it. Only a
    /// committed membership (applied here) that leaves the node out answers false.
    pub(super) fn member_of(&self, group: GroupId, node: NodeId) -> RaftResponse {
        let Some(g) = self.group(group) else { return unavailable(not_hosted(group)) };
        let m = g.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            return RaftResponse::NotLeader { leader: m.current_leader };
        }
        let stored = &m.membership_config;
        let committed = stored.log_id().as_ref().map(|l| l.index) <= m.last_applied.map(|l| l.index);
        let listed = stored.membership().get_node(&node).is_some();
        RaftResponse::Member { member: listed || !committed }
    }

    /// Stops hosting the partitions this node no longer replicates and deletes their data: those
    /// the layout does not give it and whose leader's committed membership leaves it out (until
    /// then it may still count for a quorum). Should the layout give one back later, the node
    /// joins it afresh, as a learner fed by a snapshot.
    async fn drop_moved_groups(&self, p: &Placement) {
        let hosted: Vec<GroupId> = self.read_groups().keys().copied().filter(|g| *g > 0).collect();
        for group in hosted {
            if p.layout.groups.get(&group).is_none_or(|r| r.contains(&self.node_id)) {
                continue;
            }
            // Asked of the layout's replicas (they redirect to their leader): this node's own
            // view of the group may be stuck on elections it can no longer win.
            let replicas = p.layout.groups.get(&group).cloned().unwrap_or_default();
            if !self.left_group(group, &replicas).await {
                continue;
            }
            let removed = crate::util::write(&self.groups).remove(&group);
            let Some(g) = removed else { continue };
            g.stop(group).await;
            drop(g);
            self.metrics.forget_group(group);
            match self.store.drop_group(group).await {
                Ok(()) => {
                    self.metrics.groups_removed.inc();
                    info!(group, "no longer a replica of the group: stopped hosting it and deleted its data");
                }
                Err(e) => warn!(group, error = %e, "cannot delete the data of a group this node left"),
            }
        }
    }

    /// Whether `group`'s leader, found through `replicas`, says this node left the group.
    pub(super) async fn left_group(&self, group: GroupId, replicas: &[NodeId]) -> bool {
        let body = RaftRequestBody::MemberOf { node: self.node_id };
        let mut target = replicas.first().copied();
        for _ in 0..=replicas.len() {
            let Some(to) = target.filter(|t| *t != self.node_id) else { return false };
            let request = RaftRequest { group, body: body.clone() };
            match self.transport.call_with_timeout(to, request, FORWARD_TIMEOUT).await {
                Ok(RaftResponse::Member { member }) => return !member,
                Ok(RaftResponse::NotLeader { leader: Some(next) }) => target = Some(next),
                // No leader known there: try the next replica.
                Ok(_) | Err(_) => target = replicas.iter().copied().skip_while(|r| *r != to).nth(1),
            }
        }
        false
    }
}

/// Adds the new nodes as learners (waiting for wanted voters to catch up), replaces the voters,
/// then removes nodes that are neither wanted voters nor wanted learners.
async fn change_members(
    raft: &GroupRaft,
    group: GroupId,
    voters: Vec<(NodeId, NodeInfo)>,
    learners: Vec<(NodeId, NodeInfo)>,
    have_voters: BTreeSet<NodeId>,
    have_learners: BTreeSet<NodeId>,
) -> Result<(), String> {
    let want_voters: BTreeSet<NodeId> = voters.iter().map(|(id, _)| *id).collect();
    let want_learners: BTreeSet<NodeId> = learners.iter().map(|(id, _)| *id).collect();
    for (id, info) in voters.iter().chain(learners.iter()) {
        if have_voters.contains(id) || have_learners.contains(id) {
            continue;
        }
        let catch_up = want_voters.contains(id);
        let add = raft.add_learner(*id, info.clone(), catch_up);
        tokio::time::timeout(RECONFIGURE_TIMEOUT, add)
            .await
            .map_err(|_| format!("node {id} did not catch up within {RECONFIGURE_TIMEOUT:?}"))?
            .map_err(|e| format!("adding node {id} as a learner: {e}"))?;
        info!(group, node = id, "learner added");
    }
    if have_voters != want_voters {
        // Meta keeps removed voters as learners; partitions drop them.
        let change = raft.change_membership(ChangeMembers::ReplaceAllVoters(want_voters.clone()), group == 0);
        tokio::time::timeout(RECONFIGURE_TIMEOUT, change)
            .await
            .map_err(|_| "membership change timed out".to_string())?
            .map_err(|e| format!("changing voters: {e}"))?;
    }
    let m = raft.metrics().borrow_watched().clone();
    let stale: BTreeSet<NodeId> =
        m.membership_config.membership().learner_ids().filter(|id| !want_learners.contains(id)).collect();
    if !stale.is_empty() {
        let change = raft.change_membership(ChangeMembers::RemoveNodes(stale), false);
        tokio::time::timeout(RECONFIGURE_TIMEOUT, change)
            .await
            .map_err(|_| "removing learners timed out".to_string())?
            .map_err(|e| format!("removing learners: {e}"))?;
    }
    Ok(())
}
