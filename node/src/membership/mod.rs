//! Membership: who is in the cluster and which peers are reachable.
//!
//! [`Membership`] is the shared view (read by HTTP, written by the membership actor and by peer
//! RPCs). The member list grows from `cluster.initial_members`, from `Join` requests, and from the
//! lists piggybacked on heartbeats, so every node learns of a joined node. The Raft meta group
//! takes over the member list in a later issue; [`Membership::merge`] is the seam it replaces.

pub mod actor;
pub mod detector;
pub mod metrics;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{info, warn};

use crate::NodeId;
use crate::config::{MemberAddr, MembershipSection};
use crate::transport::proto::{Join, Joined, MemberRecord, Ping, Pong};
use crate::transport::{Transport, TransportError};
pub use detector::{FailureDetector, PeerState};
pub use metrics::MembershipMetrics;

/// One member as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct MemberView {
    /// Node id.
    #[schema(value_type = u64)]
    pub id: NodeId,
    /// HTTP address.
    pub http_addr: String,
    /// QUIC address.
    pub peer_addr: String,
    /// `up` or `down` as this node sees it (itself: always up).
    pub state: PeerState,
    /// Milliseconds since the member last answered a heartbeat; `null` if it never did.
    pub last_seen_ms: Option<u64>,
    /// Round trip of the last answered heartbeat, in milliseconds.
    pub rtt_ms: Option<f64>,
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// No join address answered.
    #[error("could not join through any of {addrs:?}: {last}")]
    JoinFailed {
        /// The addresses tried.
        addrs: Vec<String>,
        /// The last error.
        last: String,
    },
}

struct Inner {
    members: BTreeMap<NodeId, MemberRecord>,
    detector: FailureDetector,
    joined: bool,
}

/// The shared membership view of one node.
pub struct Membership {
    me: MemberRecord,
    cfg: MembershipSection,
    join_addrs: Vec<String>,
    transport: Arc<Transport>,
    metrics: MembershipMetrics,
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").field("me", &self.me.id).finish_non_exhaustive()
    }
}

impl Membership {
    /// The view at startup: this node plus the founding members.
    pub fn new(
        me: MemberRecord,
        initial: &[MemberAddr],
        join_addrs: Vec<String>,
        cfg: MembershipSection,
        transport: Arc<Transport>,
        metrics: MembershipMetrics,
    ) -> Arc<Self> {
        let founder = initial.iter().any(|m| m.id == me.id);
        let this = Arc::new(Self {
            me: me.clone(),
            inner: RwLock::new(Inner {
                members: BTreeMap::new(),
                detector: FailureDetector::new(cfg.down_after_missed),
                joined: founder,
            }),
            cfg,
            join_addrs,
            transport,
            metrics,
        });
        let mut records: Vec<MemberRecord> = initial
            .iter()
            .map(|m| MemberRecord { id: m.id, peer_addr: m.peer_addr.clone(), http_addr: m.http_addr.clone() })
            .collect();
        records.push(me);
        this.merge(&records);
        this
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        crate::util::read(&self.inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        crate::util::write(&self.inner)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.me.id
    }

    /// Adds members not known yet (addresses of known ones are updated).
    pub fn merge(&self, records: &[MemberRecord]) {
        let mut added = Vec::new();
        {
            let mut inner = self.write();
            for r in records {
                if r.id == 0 {
                    continue;
                }
                if inner.members.get(&r.id) != Some(r) {
                    if r.id != self.me.id {
                        inner.detector.track(r.id);
                        self.transport.set_peer_addr(r.id, &r.peer_addr);
                        self.metrics.peer_up.with_label_values(&[&r.id.to_string()]).set(0);
                    }
                    if inner.members.insert(r.id, r.clone()).is_none() {
                        added.push(r.id);
                    }
                }
            }
            self.metrics.members.set(inner.members.len() as i64);
        }
        for id in added.into_iter().filter(|id| *id != self.me.id) {
            info!(peer = id, "member added");
        }
    }

    /// Every known member, as sent to peers.
    pub fn records(&self) -> Vec<MemberRecord> {
        self.read().members.values().cloned().collect()
    }

    /// Every known member with its health, for `GET /v1/cluster`.
    pub fn view(&self) -> Vec<MemberView> {
        let now = Instant::now();
        let inner = self.read();
        inner
            .members
            .values()
            .map(|m| {
                let (state, last_seen_ms, rtt_ms) = if m.id == self.me.id {
                    (PeerState::Up, Some(0), None)
                } else {
                    let h = inner.detector.health(m.id).cloned().unwrap_or_default();
                    (
                        h.state,
                        h.last_ack.map(|t| now.saturating_duration_since(t).as_millis() as u64),
                        h.rtt.map(|r| r.as_secs_f64() * 1000.0),
                    )
                };
                MemberView {
                    id: m.id,
                    http_addr: m.http_addr.clone(),
                    peer_addr: m.peer_addr.clone(),
                    state,
                    last_seen_ms,
                    rtt_ms,
                }
            })
            .collect()
    }

    /// True while this node and a majority of all members are reachable.
    pub fn has_majority(&self) -> bool {
        let inner = self.read();
        let total = inner.members.len();
        inner.detector.up_count() + 1 > total / 2
    }

    /// True once this node is a member (founders are from the start).
    pub fn is_joined(&self) -> bool {
        self.read().joined
    }

    /// Answers a heartbeat: learns the sender's members, returns ours.
    pub fn on_ping(&self, ping: Ping) -> Pong {
        self.merge(&ping.members);
        Pong { members: self.records() }
    }

    /// Answers a join request from `from` (the id in its certificate).
    pub fn on_join(&self, from: NodeId, join: Join) -> Result<Joined, String> {
        if join.member.id != from {
            return Err(format!("node {from} cannot join as node {}", join.member.id));
        }
        self.merge(std::slice::from_ref(&join.member));
        Ok(Joined { members: self.records() })
    }

    /// Joins through the first `cluster.join` address that answers.
    pub async fn join(&self) -> Result<(), MembershipError> {
        let mut last = String::from("no address configured");
        for addr in &self.join_addrs {
            let result: Result<Joined, TransportError> = async {
                let peer = self.transport.connect_addr(addr).await?;
                self.transport.call(peer, Join { member: self.me.clone() }).await
            }
            .await;
            match result {
                Ok(joined) => {
                    self.merge(&joined.members);
                    self.write().joined = true;
                    info!(through = %addr, members = joined.members.len(), "joined the cluster");
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(MembershipError::JoinFailed { addrs: self.join_addrs.clone(), last })
    }

    /// Probes every peer once, concurrently, and feeds the outcomes to the failure detector.
    pub async fn probe_round(&self) {
        let peers: Vec<NodeId> = self.read().members.keys().copied().filter(|id| *id != self.me.id).collect();
        let members = self.records();
        let deadline = self.cfg.heartbeat_interval.max(Duration::from_millis(100));
        let probes = peers.into_iter().map(|peer| {
            let ping = Ping { members: members.clone() };
            async move {
                let start = Instant::now();
                let result = self.transport.call_with_timeout(peer, ping, deadline).await;
                (peer, result.map(|pong| (pong, start.elapsed())))
            }
        });
        for (peer, result) in futures::future::join_all(probes).await {
            let label = peer.to_string();
            let transition = match result {
                Ok((pong, rtt)) => {
                    self.metrics.peer_rtt.with_label_values(&[&label]).observe(rtt.as_secs_f64());
                    self.merge(&pong.members);
                    self.write().detector.record_ack(peer, Instant::now(), rtt)
                }
                Err(e) => {
                    let t = self.write().detector.record_miss(peer);
                    if t.is_some() {
                        warn!(peer, error = %e, "peer missed too many heartbeats");
                        // Its connection is presumed dead: QUIC's loss recovery backs off
                        // exponentially, so a stale link could take until the idle timeout to
                        // notice a restarted peer. Drop it; the next heartbeat dials afresh.
                        self.transport.disconnect(peer);
                    }
                    t
                }
            };
            if let Some(state) = transition {
                let up = state == PeerState::Up;
                self.metrics.peer_up.with_label_values(&[&label]).set(i64::from(up));
                self.metrics.transitions.with_label_values(&[if up { "up" } else { "down" }]).inc();
                info!(peer, state = if up { "up" } else { "down" }, "peer state changed");
            }
        }
    }

    /// The configured heartbeat period.
    pub fn heartbeat_interval(&self) -> Duration {
        self.cfg.heartbeat_interval
    }
}
