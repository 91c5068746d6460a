//! The placement loop of a node: every `placement.interval` the groups follow the layout in
//! meta state ([`RaftHost::follow_placement`]), and on the meta leader a round of the placement
//! driver ([`crate::placement::driver`]) runs, with this router as its [`Cluster`].

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::Router;
use crate::NodeId;
use crate::membership::{Membership, PeerState};
use crate::placement::MemberRec;
use crate::placement::driver::{Cluster, Driver, Peer, Settings};
use crate::raft::host::{info_of, initial_placement};
use crate::raft::wire::{RaftRequestBody, RaftResponse};
use crate::raft::{GroupId, MetaCommand, MetaResult, ProposeError, RaftHost};
use crate::util::{AbortOnDrop, lock};

impl Router {
    /// Starts the placement loop; it ends with the router (or at [`Router::shutdown`]).
    pub fn start_placement(self: &Arc<Self>, membership: Arc<Membership>) {
        let task = AbortOnDrop::spawn(run(Arc::downgrade(self), membership));
        lock(&self.tasks).push(task);
    }

    /// One round of the placement loop. On every node: the groups follow the layout. On the meta
    /// leader: the placement driver (see [`Driver`]).
    async fn placement_round(&self, membership: &Membership, driver: &mut Driver) {
        let placement = self.host.placement();
        if let Some(p) = &placement {
            self.host.follow_placement(p, membership).await;
        }
        if !self.host.is_leader(0) {
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

/// The placement loop: one [`Router::placement_round`] per `placement.interval`.
async fn run(router: Weak<Router>, membership: Arc<Membership>) {
    let mut driver = Driver::default();
    loop {
        let Some(r) = router.upgrade() else { return };
        let interval = r.cfg.placement.interval;
        r.placement_round(&membership, &mut driver).await;
        drop(r);
        tokio::time::sleep(interval).await;
    }
}

impl Cluster for Router {
    type Error = ProposeError;

    fn me(&self) -> NodeId {
        self.node_id
    }

    fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        Router::leader_of(self, group)
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
        RaftHost::count_move(&self.host, kind);
    }
}
