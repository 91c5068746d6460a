//! The Raft groups this node hosts, their batching proposers, and the router in front of them.
//!
//! Every founder computes the same initial layout ([`crate::placement::initial_layout`]) and
//! initialises the groups it replicates exactly once (an initialised store is never initialised
//! again). Callers hand typed commands to [`RaftHost::propose`]: it serves them locally when this
//! node leads the key's group, forwards them over QUIC to the leader otherwise, follows one
//! "not leader, try N" answer, and reports [`ProposeError::NoLeader`] when the group has no
//! quorum.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState, SnapshotPolicy};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::{info, warn};

use super::metrics::RaftMetrics;
use super::network::GroupNetworkFactory;
use super::wire::{self, RaftRequest, RaftRequestBody, RaftResponse};
use super::{Command, CommandBatch, CommandResult, GroupId, NodeInfo, TypeConfig};
use crate::NodeId;
use crate::config::Config;
use crate::storage::Store;
use crate::storage::records::UserRec;
use crate::transport::Transport;
use crate::util::AbortOnDrop;

/// Batches proposed concurrently per group; later proposals queue behind and form the next,
/// larger batch (measured: 1 in flight beats 2 and 8 at 64 clients on 2 cores).
const MAX_BATCHES_IN_FLIGHT: usize = 1;
/// Deadline of a request forwarded to a leader. Short, so that a leader that just died costs a
/// client one quick 503 instead of a long hang while the group elects a new one.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a proposal or read did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// No node leads the group right now (election, or no quorum).
    #[error("partition {group} has no leader right now")]
    NoLeader {
        /// The group.
        group: GroupId,
    },
    /// This node does not lead the group (nothing was proposed); `leader` may.
    #[error("this node does not lead partition {group}")]
    NotLeader {
        /// The group.
        group: GroupId,
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// The leader could not be reached or failed the request.
    #[error("partition {group} is unavailable: {reason}")]
    Unavailable {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
    /// The state machine refused the command; nothing changed.
    #[error("{reason}")]
    Rejected {
        /// Why.
        reason: String,
    },
}

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum RaftHostError {
    /// openraft rejected the configuration.
    #[error("invalid raft configuration: {0}")]
    Config(String),
    /// A group could not be created.
    #[error("cannot start raft group {group}: {reason}")]
    Group {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
}

struct Proposal {
    command: Command,
    reply: oneshot::Sender<Result<CommandResult, ProposeError>>,
}

/// A group hosted here: its Raft instance and the queue of its batching proposer.
struct Group {
    raft: Raft<TypeConfig>,
    proposals: mpsc::Sender<Proposal>,
    /// The proposer and the metrics watcher; they end with the group.
    _tasks: [AbortOnDrop<()>; 2],
}

/// Raft state of one group as `/v1/cluster` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    /// Group id (0: meta).
    pub id: GroupId,
    /// Voters.
    pub replicas: Vec<NodeId>,
    /// Current leader, if any.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Highest entry applied on this node (committed entries are applied promptly).
    pub commit_index: u64,
    /// Last entry in this node's log.
    pub last_log_index: u64,
    /// Last entry covered by this node's latest snapshot.
    pub snapshot_index: Option<u64>,
    /// Entries up to here were purged from this node's log.
    pub purged_index: Option<u64>,
    /// This node's role.
    pub role: &'static str,
}

/// All groups of this node.
pub struct RaftHost {
    node_id: NodeId,
    /// How recent a leader's quorum acknowledgement must be for it to count as leader.
    quorum_lease_ms: u64,
    partitions: u64,
    store: Arc<Store>,
    transport: Arc<Transport>,
    groups: HashMap<GroupId, Group>,
}

impl std::fmt::Debug for RaftHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftHost").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

fn raft_config(cfg: &Config) -> Result<Arc<openraft::Config>, RaftHostError> {
    let r = &cfg.raft;
    let c = openraft::Config {
        cluster_name: "shoal".into(),
        heartbeat_interval: r.heartbeat_interval.as_millis() as u64,
        election_timeout_min: r.election_timeout_min.as_millis() as u64,
        election_timeout_max: r.election_timeout_max.as_millis() as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_after_entries),
        max_in_snapshot_log_to_keep: r.keep_logs_after_snapshot,
        install_snapshot_timeout: 2000,
        ..Default::default()
    };
    Ok(Arc::new(c.validate().map_err(|e| RaftHostError::Config(e.to_string()))?))
}

impl RaftHost {
    /// Starts every group this node replicates and initialises new ones.
    pub async fn start(
        cfg: &Config,
        store: Arc<Store>,
        transport: Arc<Transport>,
        metrics: RaftMetrics,
    ) -> Result<Arc<Self>, RaftHostError> {
        let node_id = cfg.node.id;
        let founders: Vec<NodeId> = cfg.cluster.initial_members.iter().map(|m| m.id).collect();
        let infos: BTreeMap<NodeId, NodeInfo> = cfg
            .cluster
            .initial_members
            .iter()
            .map(|m| (m.id, NodeInfo { peer_addr: m.peer_addr.clone(), http_addr: m.http_addr.clone() }))
            .collect();
        let layout = crate::placement::initial_layout(&founders, cfg.raft.partitions, cfg.raft.replication_factor);
        let config = raft_config(cfg)?;
        let mut groups = HashMap::new();
        for (group, replicas) in layout.iter().filter(|(_, r)| r.contains(&node_id)) {
            let err = |e: &dyn std::fmt::Display| RaftHostError::Group { group: *group, reason: e.to_string() };
            let sm = store.state_machine(*group).map_err(|e| err(&e))?;
            let network = GroupNetworkFactory { group: *group, transport: Arc::clone(&transport) };
            let raft = Raft::new(node_id, Arc::clone(&config), network, store.log_store(*group), sm)
                .await
                .map_err(|e| err(&e))?;
            if !raft.is_initialized().await.map_err(|e| err(&e))? {
                let members: BTreeMap<NodeId, NodeInfo> =
                    replicas.iter().filter_map(|id| infos.get(id).map(|i| (*id, i.clone()))).collect();
                // Every founder initialises with the same membership; openraft accepts that, and
                // a store that is already initialised is never initialised again.
                if let Err(e) = raft.initialize(members).await {
                    warn!(group, error = %e, "group initialisation skipped");
                }
            }
            let (tx, rx) = mpsc::channel(cfg.raft.max_batch * 4);
            let proposer = run_proposer(*group, raft.clone(), rx, cfg.raft.max_batch, metrics.clone());
            let watcher = watch_group(*group, raft.clone(), metrics.clone());
            groups.insert(
                *group,
                Group { raft, proposals: tx, _tasks: [AbortOnDrop::spawn(proposer), AbortOnDrop::spawn(watcher)] },
            );
        }
        info!(groups = groups.len(), partitions = cfg.raft.partitions, "raft groups started");
        let quorum_lease_ms = cfg.raft.election_timeout_max.as_millis() as u64;
        Ok(Arc::new(Self { node_id, quorum_lease_ms, partitions: cfg.raft.partitions, store, transport, groups }))
    }

    /// The partition group of a key.
    pub fn partition_of(&self, key: &str) -> GroupId {
        crate::placement::partition_of(key, self.partitions)
    }

    /// The group's leader as this node knows it. A leader that has not heard from a quorum
    /// within an election timeout does not count: it cannot commit, and its followers are
    /// electing a new one.
    fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        let g = self.groups.get(&group)?;
        let m = g.raft.metrics().borrow().clone();
        match m.current_leader {
            Some(l) if l == self.node_id => {
                m.millis_since_quorum_ack.filter(|ms| *ms <= self.quorum_lease_ms).map(|_| l)
            }
            other => other,
        }
    }

    /// True once the meta group has a leader (readiness).
    pub fn meta_has_leader(&self) -> bool {
        self.leader_of(0).is_some()
    }

    /// Raft state of every hosted group, meta first.
    pub fn view(&self) -> Vec<GroupView> {
        let mut out: Vec<GroupView> = self
            .groups
            .iter()
            .map(|(id, g)| {
                let m = g.raft.metrics().borrow().clone();
                GroupView {
                    id: *id,
                    replicas: m.membership_config.membership().voter_ids().collect(),
                    leader: m.current_leader,
                    term: m.current_term,
                    commit_index: m.last_applied.map(|l| l.index).unwrap_or(0),
                    last_log_index: m.last_log_index.unwrap_or(0),
                    snapshot_index: m.snapshot.map(|l| l.index),
                    purged_index: m.purged.map(|l| l.index),
                    role: match m.state {
                        ServerState::Leader => "leader",
                        ServerState::Follower => "follower",
                        ServerState::Candidate => "candidate",
                        ServerState::Learner => "learner",
                        ServerState::Shutdown => "shutdown",
                    },
                }
            })
            .collect();
        out.sort_by_key(|g| g.id);
        out
    }

    /// Proposes `command` to `group` wherever its leader is; answers after commit.
    pub async fn propose(&self, group: GroupId, command: Command) -> Result<CommandResult, ProposeError> {
        match self.ask_leader(group, RaftRequestBody::Propose { commands: vec![command] }).await? {
            RaftResponse::Proposed(mut results) if results.len() == 1 => into_result(results.remove(0)),
            other => Err(unexpected(group, &other)),
        }
    }

    /// A linearizable read of counter `name` (read index on the leader).
    pub async fn read_counter(&self, name: &str) -> Result<u64, ProposeError> {
        let group = self.partition_of(name);
        match self.ask_leader(group, RaftRequestBody::ReadCounter { name: name.to_string() }).await? {
            RaftResponse::Counter(v) => Ok(v),
            other => Err(unexpected(group, &other)),
        }
    }

    /// The user whose token hashes to `token_hash`: from this node's meta state when present,
    /// else by a linearizable lookup on the meta leader (a user created a moment ago elsewhere
    /// may not be applied here yet).
    pub async fn user_by_token(&self, token_hash: &str) -> Result<Option<UserRec>, ProposeError> {
        if self.groups.contains_key(&0)
            && let Ok(Some(user)) = self.store.user_by_token(0, token_hash)
        {
            return Ok(Some(user));
        }
        match self.ask_leader(0, RaftRequestBody::ReadUser { token_hash: token_hash.to_string() }).await? {
            RaftResponse::User(u) => Ok(u),
            other => Err(unexpected(0, &other)),
        }
    }

    /// The router: serves `body` here when this node leads `group`, forwards it to the leader
    /// otherwise, and follows one "not leader, try N" answer.
    async fn ask_leader(&self, group: GroupId, body: RaftRequestBody) -> Result<RaftResponse, ProposeError> {
        let mut target = self.leader_of(group);
        for _ in 0..2 {
            let leader = target.ok_or(ProposeError::NoLeader { group })?;
            let answer = if leader == self.node_id {
                self.serve(group, body.clone()).await
            } else {
                self.forward(group, leader, body.clone()).await?
            };
            match answer {
                // Never retry ourselves: our own view just proved stale.
                RaftResponse::NotLeader { leader: next } => target = next.filter(|l| *l != leader),
                RaftResponse::Unavailable { reason } => return Err(ProposeError::Unavailable { group, reason }),
                other => return Ok(other),
            }
        }
        Err(ProposeError::NoLeader { group })
    }

    async fn forward(
        &self,
        group: GroupId,
        leader: NodeId,
        body: RaftRequestBody,
    ) -> Result<RaftResponse, ProposeError> {
        self.transport
            .call_with_timeout(leader, RaftRequest { group, body }, FORWARD_TIMEOUT)
            .await
            .map_err(|e| ProposeError::Unavailable { group, reason: e.to_string() })
    }

    async fn propose_local(&self, group: GroupId, command: Command) -> Result<CommandResult, ProposeError> {
        let g = self.groups.get(&group).ok_or_else(|| not_hosted(group))?;
        let (reply, rx) = oneshot::channel();
        g.proposals
            .send(Proposal { command, reply })
            .await
            .map_err(|_| ProposeError::Unavailable { group, reason: "proposer stopped".into() })?;
        rx.await.map_err(|_| ProposeError::Unavailable { group, reason: "proposer stopped".into() })?
    }

    /// Reads local state of `group` after a read-index round on its leader (this node).
    async fn read_linearizable(
        &self,
        group: GroupId,
        read: impl FnOnce(&Store) -> Result<RaftResponse, crate::storage::StoreError>,
    ) -> RaftResponse {
        let Some(g) = self.groups.get(&group) else { return unavailable(not_hosted(group)) };
        match g.raft.ensure_linearizable().await {
            Ok(_) => read(&self.store).unwrap_or_else(|e| RaftResponse::Unavailable { reason: e.to_string() }),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(f))) => {
                RaftResponse::NotLeader { leader: f.leader_id }
            }
            Err(e) => RaftResponse::Unavailable { reason: e.to_string() },
        }
    }

    /// Serves a proposal or linearizable read for `group` on this node (its supposed leader).
    async fn serve(&self, group: GroupId, body: RaftRequestBody) -> RaftResponse {
        match body {
            RaftRequestBody::Propose { commands } => {
                let pending: Vec<_> = commands.into_iter().map(|c| self.propose_local(group, c)).collect();
                let mut results = Vec::with_capacity(pending.len());
                for r in futures::future::join_all(pending).await {
                    match r {
                        Ok(v) => results.push(v),
                        Err(ProposeError::NotLeader { leader, .. }) => return RaftResponse::NotLeader { leader },
                        Err(ProposeError::Rejected { reason }) => results.push(CommandResult::Rejected { reason }),
                        Err(e) => return unavailable(e),
                    }
                }
                RaftResponse::Proposed(results)
            }
            RaftRequestBody::ReadCounter { name } => {
                self.read_linearizable(group, |store| Ok(RaftResponse::Counter(store.counter(group, &name)?))).await
            }
            RaftRequestBody::ReadUser { token_hash } => {
                self.read_linearizable(group, |store| Ok(RaftResponse::User(store.user_by_token(group, &token_hash)?)))
                    .await
            }
            other => RaftResponse::Unavailable { reason: format!("not a routed request: {other:?}") },
        }
    }

    /// Serves a Raft message from peer `from`.
    pub async fn handle(&self, _from: NodeId, request: RaftRequest) -> RaftResponse {
        let group = request.group;
        let Some(g) = self.groups.get(&group) else { return unavailable(not_hosted(group)) };
        match request.body {
            RaftRequestBody::Append { vote, prev_log_id, entries, leader_commit } => {
                match g.raft.append_entries(wire::to_append(vote, prev_log_id, entries, leader_commit)).await {
                    Ok(r) => wire::append_response(r),
                    Err(e) => RaftResponse::Unavailable { reason: e.to_string() },
                }
            }
            RaftRequestBody::Vote { vote, last_log_id } => match g.raft.vote(wire::to_vote(vote, last_log_id)).await {
                Ok(r) => wire::vote_response(r),
                Err(e) => RaftResponse::Unavailable { reason: e.to_string() },
            },
            RaftRequestBody::Snapshot { vote, last_log_id, last_membership, snapshot_id, offset, data, done } => {
                let rpc = wire::to_snapshot(vote, last_log_id, last_membership, snapshot_id, offset, data, done);
                wire::snapshot_response(g.raft.install_snapshot(rpc).await)
            }
            body @ (RaftRequestBody::Propose { .. }
            | RaftRequestBody::ReadCounter { .. }
            | RaftRequestBody::ReadUser { .. }) => self.serve(group, body).await,
        }
    }

    /// The first group whose Raft core stopped with a fatal error.
    pub fn fatal_error(&self) -> Option<(GroupId, String)> {
        self.groups.iter().find_map(|(id, g)| match &g.raft.metrics().borrow().running_state {
            Ok(()) => None,
            Err(e) => Some((*id, e.to_string())),
        })
    }

    /// Stops every group (their logs are already durable).
    pub async fn shutdown(&self) {
        for (group, g) in &self.groups {
            if let Err(e) = g.raft.shutdown().await {
                warn!(group, error = %e, "raft group did not shut down cleanly");
            }
        }
    }

    /// Waits until `group` has a leader, up to `deadline`.
    pub async fn wait_for_leader(&self, group: GroupId, deadline: Duration) -> Option<NodeId> {
        let g = self.groups.get(&group)?;
        let mut rx = g.raft.metrics();
        let wait = rx.wait_for(|m| m.current_leader.is_some());
        tokio::time::timeout(deadline, wait).await.ok()?.ok()?.current_leader
    }
}

fn not_hosted(group: GroupId) -> ProposeError {
    ProposeError::Unavailable { group, reason: "group not hosted on this node".into() }
}

fn unexpected(group: GroupId, answer: &RaftResponse) -> ProposeError {
    ProposeError::Unavailable { group, reason: format!("unexpected answer {answer:?}") }
}

fn unavailable(e: ProposeError) -> RaftResponse {
    RaftResponse::Unavailable { reason: e.to_string() }
}

fn into_result(r: CommandResult) -> Result<CommandResult, ProposeError> {
    match r {
        CommandResult::Rejected { reason } => Err(ProposeError::Rejected { reason }),
        ok => Ok(ok),
    }
}

/// The batching proposer of one group: everything queued becomes one log entry; each caller gets
/// its own result. Up to [`MAX_BATCHES_IN_FLIGHT`] batches are committed concurrently.
async fn run_proposer(
    group: GroupId,
    raft: Raft<TypeConfig>,
    mut rx: mpsc::Receiver<Proposal>,
    max_batch: usize,
    metrics: RaftMetrics,
) {
    let label = group.to_string();
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else { return };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        let metrics = metrics.clone();
        let label = label.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let start = std::time::Instant::now();
            let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
            metrics.batch_size.with_label_values(&[&label]).observe(commands.len() as f64);
            let count = commands.len() as u64;
            let result = raft.client_write(CommandBatch(commands)).await;
            let outcome = if result.is_ok() { "committed" } else { "failed" };
            metrics.proposals.with_label_values(&[&label, outcome]).inc_by(count);
            metrics.proposal_seconds.with_label_values(&[&label]).observe(start.elapsed().as_secs_f64());
            match result {
                Ok(resp) => {
                    for (reply, result) in replies.into_iter().zip(resp.data.0) {
                        let _ = reply.send(into_result(result));
                    }
                }
                Err(e) => {
                    let error = match e {
                        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                            ProposeError::NotLeader { group, leader: f.leader_id }
                        }
                        other => ProposeError::Unavailable { group, reason: other.to_string() },
                    };
                    for reply in replies {
                        let _ = reply.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}

/// Mirrors a group's Raft metrics into Prometheus and logs leader changes.
async fn watch_group(group: GroupId, raft: Raft<TypeConfig>, metrics: RaftMetrics) {
    let label = group.to_string();
    let mut rx = raft.metrics();
    let mut leader = None;
    loop {
        let m = rx.borrow_and_update().clone();
        metrics.term.with_label_values(&[&label]).set(m.current_term as i64);
        metrics.leader.with_label_values(&[&label]).set(i64::from(m.state == ServerState::Leader));
        metrics.applied_index.with_label_values(&[&label]).set(m.last_applied.map(|l| l.index).unwrap_or(0) as i64);
        metrics.last_log_index.with_label_values(&[&label]).set(m.last_log_index.unwrap_or(0) as i64);
        if m.current_leader != leader {
            leader = m.current_leader;
            metrics.leader_changes.with_label_values(&[&label]).inc();
            info!(group, leader = ?leader, term = m.current_term, "group leader changed");
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
