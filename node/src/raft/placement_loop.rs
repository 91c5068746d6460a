//! The placement loop of a node: every `placement.interval` it hosts the groups the layout gives
//! this node, drops the ones it no longer replicates, and, on the meta leader, runs a round of
//! the placement driver ([`crate::placement::driver`]), for which this host is the [`Cluster`].

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use openraft::ServerState;
use tracing::{debug, warn};

use super::host::{RaftHost, info_of, initial_placement};
use super::wire::{RaftRequestBody, RaftResponse};
use super::{GroupId, MetaCommand, MetaResult, ProposeError};
use crate::NodeId;
use crate::membership::{Membership, PeerState};
use crate::placement::MemberRec;
use crate::placement::driver::{Cluster, Driver, Peer, Settings};
use crate::transport::proto::MemberRecord;

/// The placement loop: one [`RaftHost::placement_round`] per `placement.interval`.
pub(super) async fn run(host: Weak<RaftHost>, membership: Arc<Membership>) {
    let mut driver = Driver::default();
    loop {
        let Some(h) = host.upgrade() else { return };
        let interval = h.cfg.placement.interval;
        h.placement_round(&membership, &mut driver).await;
        drop(h);
        tokio::time::sleep(interval).await;
    }
}

impl RaftHost {
    /// One round of the placement loop. On every node: host the groups the layout gives this
    /// node and tell membership about every member in meta state. On the meta leader: the
    /// placement driver (see [`Driver`]).
    pub(super) async fn placement_round(&self, membership: &Membership, driver: &mut Driver) {
        let placement = self.placement();
        if let Some(p) = &placement {
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
        let leads_meta = self.group(0).is_some_and(|g| g.raft.metrics().borrow().state == ServerState::Leader);
        if !leads_meta {
            driver.reset();
            return;
        }
        let Some(p) = placement else {
            // Bootstrap: the founders' initial placement, proposed once by the first meta leader.
            if self.cfg.cluster.initial_members.iter().any(|m| m.id == self.node_id)
                && let Err(e) =
                    self.propose_meta(MetaCommand::PlacementInit { placement: initial_placement(&self.cfg) }).await
            {
                warn!(error = %e, "cannot record the initial placement yet");
            }
            return;
        };
        let peers: Vec<Peer> = membership
            .view()
            .into_iter()
            .map(|m| Peer {
                id: m.id,
                up: m.state == PeerState::Up,
                last_seen: m.last_seen_ms.map(Duration::from_millis),
                peer_addr: m.peer_addr,
                http_addr: m.http_addr,
            })
            .collect();
        if let Err(e) = driver.round(self, &peers, &p, &Settings::new(&self.cfg), Instant::now()).await {
            warn!(error = %e, "placement round did not finish");
        }
    }
}

impl Cluster for RaftHost {
    type Error = ProposeError;

    fn me(&self) -> NodeId {
        self.node_id
    }

    fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        RaftHost::leader_of(self, group)
    }

    async fn upsert_member(&self, member: MemberRec) -> Result<(), ProposeError> {
        self.propose_meta(MetaCommand::MemberUpsert { member }).await.map(|_| ())
    }

    async fn set_layout(
        &self,
        expected_version: u64,
        groups: BTreeMap<GroupId, Vec<NodeId>>,
    ) -> Result<bool, ProposeError> {
        match self.propose_meta(MetaCommand::LayoutSet { expected_version, groups }).await? {
            MetaResult::Version(_) => Ok(true),
            other => {
                debug!(?other, "layout change not applied; replanning next round");
                Ok(false)
            }
        }
    }

    async fn reconfigure(
        &self,
        group: GroupId,
        layout_version: u64,
        voters: Vec<MemberRec>,
        learners: Vec<MemberRec>,
    ) -> Result<bool, ProposeError> {
        let with_info = |ms: Vec<MemberRec>| ms.iter().map(|m| (m.id, info_of(m))).collect();
        let body =
            RaftRequestBody::Reconfigure { layout_version, voters: with_info(voters), learners: with_info(learners) };
        Ok(matches!(self.ask_leader(group, body).await?, RaftResponse::Reconfigured { done: true }))
    }

    async fn transfer_leader(&self, group: GroupId, to: NodeId) -> Result<bool, ProposeError> {
        let answer = self.ask_leader(group, RaftRequestBody::TransferLeader { to }).await?;
        Ok(matches!(answer, RaftResponse::Transferred { done: true }))
    }

    fn moved(&self, kind: &'static str) {
        self.metrics.placement_moves.with_label_values(&[kind]).inc();
    }
}
