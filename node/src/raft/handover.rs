//! Leader hand-over: the placement driver asks a partition's leader to hand leadership to its
//! preferred node; the leader waits until that node has every entry and then uses openraft's
//! leader transfer (see [`RaftHost::hand_over`]); requests for the group wait on this node
//! meanwhile.

use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use tokio::sync::watch;
use tracing::{info, warn};

use super::error::{not_hosted, unavailable};
use super::host::{RaftHost, TRANSFER_TIMEOUT};
use super::wire::RaftResponse;
use super::{GroupId, GroupRaft};
use crate::NodeId;
use crate::util::lock;

impl RaftHost {
    /// Waits until no leader hand-over of `group` runs on this node, at most `limit`; true when
    /// none runs (any more).
    pub async fn wait_transfer(&self, group: GroupId, limit: Duration) -> bool {
        let Some(mut rx) = lock(&self.transfers).get(&group).cloned() else { return true };
        // A closed channel (the hand-over task is gone) counts as ended too.
        tokio::time::timeout(limit, rx.wait_for(|done| *done)).await.is_ok()
    }

    /// Hands leadership of `group` (led here) to the voter `to`. Answers `done` when `to` leads
    /// already (this node is not the leader: the caller is redirected), otherwise starts
    /// [`RaftHost::hand_over`] in the background and answers not done.
    pub(super) fn transfer_leader(&self, group: GroupId, to: NodeId) -> RaftResponse {
        let Some(g) = self.group(group) else { return unavailable(not_hosted(group)) };
        let m = g.raft.metrics().borrow_watched().clone();
        if m.current_leader == Some(to) {
            return RaftResponse::Transferred { done: true };
        }
        if m.state != ServerState::Leader {
            return RaftResponse::NotLeader { leader: m.current_leader };
        }
        let membership = m.membership_config.membership();
        let is_voter = membership.voter_ids().any(|v| v == to) && membership.get_joint_config().len() == 1;
        if !is_voter || group == 0 || lock(&self.reconfiguring).contains(&group) {
            // Not until the group's membership follows the layout.
            return RaftResponse::Transferred { done: false };
        }
        let (done, rx) = watch::channel(false);
        match lock(&self.transfers).entry(group) {
            std::collections::hash_map::Entry::Occupied(_) => return RaftResponse::Transferred { done: false },
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(rx);
            }
        }
        let me = self.me.clone();
        let raft = g.raft.clone();
        tokio::spawn(async move {
            let Some(host) = me.upgrade() else { return };
            let outcome = host.hand_over(&raft, to).await;
            match &outcome {
                Ok(()) => info!(group, to, "leadership handed over"),
                Err(e) => warn!(group, to, error = %e, "leadership hand-over did not finish"),
            }
            let label = if outcome.is_ok() { "done" } else { "failed" };
            host.metrics.leader_transfers.with_label_values(&[label]).inc();
            lock(&host.transfers).remove(&group);
            let _ = done.send(true);
        });
        RaftResponse::Transferred { done: false }
    }

    /// The hand-over, on openraft 0.10's leader transfer: new requests for the group wait here
    /// (they would add entries `to` lacks) until `to` holds every entry; then openraft transfers
    /// leadership (`trigger().transfer_leader`): this node stops proposing and sending
    /// heartbeats and tells every voter that `to` is next (`RaftNetworkV2::transfer_leader`, a
    /// [`RaftRequestBody::LeaderTransferNotice`]); the voters drop their leader lease for it, and
    /// `to` campaigns at once with a leadership-transfer vote, which they grant. Waiting requests
    /// go to the new leader.
    ///
    /// [`RaftRequestBody::LeaderTransferNotice`]: super::wire::RaftRequestBody::LeaderTransferNotice
    pub(super) async fn hand_over(&self, raft: &GroupRaft, to: NodeId) -> Result<(), String> {
        let mut rx = raft.metrics();
        let caught_up = rx.wait_until(|m| {
            m.state != ServerState::Leader
                || m.replication.as_ref().and_then(|r| r.get(&to).cloned()).flatten().map(|l| l.index)
                    == m.last_log_index
        });
        tokio::time::timeout(TRANSFER_TIMEOUT, caught_up)
            .await
            .map_err(|_| format!("node {to} did not catch up"))?
            .map_err(|e| e.to_string())?;
        if raft.metrics().borrow_watched().state != ServerState::Leader {
            return Err("lost leadership before handing it over".to_string());
        }
        raft.trigger().transfer_leader(to).await.map_err(|e| e.to_string())?;
        // Done once this node follows a new leader (not merely voted for one), so the requests
        // held here go straight to it.
        let me = self.node_id;
        let stepped_down =
            rx.wait_until(|m| m.state != ServerState::Leader && m.current_leader.is_some_and(|l| l != me));
        tokio::time::timeout(self.cfg.raft.election_timeout_max * 2, stepped_down)
            .await
            .map_err(|_| format!("node {to} did not win its election"))?
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}
