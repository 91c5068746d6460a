//! The Raft groups this node hosts: starting, opening, restarting and stopping them, and serving
//! what peers send them (Raft messages, and as a group's leader, proposals, reads, membership
//! changes and hand-overs). Routing requests to a group's leader is [`crate::router`]'s job.
//!
//! Every founder computes the same initial layout ([`crate::placement::initial_layout`]) and
//! initialises the groups it replicates exactly once (an initialised store is never initialised
//! again); the first meta leader records it in meta state. Afterwards the layout in meta state is
//! the truth: every node hosts the groups it gives it, and the placement driver on the meta leader
//! changes it and makes group memberships follow.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use openraft::{Instant, Raft, ReadPolicy, ServerState, SnapshotPolicy};
use ractor::{ActorCell, ActorId, ActorRef, ActorStatus};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::ProposeError;
use super::error::{RaftHostError, answer, not_hosted, unavailable};
use super::group::{GroupActor, GroupArgs, GroupMsg};
use super::metrics::RaftMetrics;
use super::network::GroupNetworkFactory;
use super::view::{self, GroupView};
use super::wire::{self, RaftRequest, RaftRequestBody, RaftResponse};
use super::{Command, CommandBatch, GroupId, GroupRaft, NodeInfo, ServiceId, SnapshotData};
use crate::NodeId;
use crate::config::Config;
use crate::placement::{Layout, MemberRec, Placement};
use crate::storage::Store;
use crate::transport::Transport;
use crate::util::AbortOnDrop;
use crate::util::lock;

/// Longest wait for each step of a leader hand-over (and for requests held meanwhile).
pub(super) const TRANSFER_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of a request forwarded to a leader. Short, so that a leader that just died costs a
/// client one quick 503 instead of a long hang while the group elects a new one.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a request waits for a leader hand-over on this node before it is answered "no
/// leader" (nothing proposed: safe to retry); well inside the forwarder's [`FORWARD_TIMEOUT`].
pub const TRANSFER_HOLD: Duration = Duration::from_millis(500);

/// A group hosted here: its Raft instance (requests use it directly) and its actor (which owns
/// the instance's lifecycle; see [`super::group`]).
pub(super) struct Group {
    pub(super) raft: GroupRaft,
    pub(super) actor: ActorRef<GroupMsg>,
    /// When this replica last accepted an AppendEntries from its leader (see [`super::tick`]).
    pub(super) heard: super::tick::Heard,
    /// The term and leader this replica knows, as the node tick last saw them: cheaper to wait
    /// on than openraft's metrics, which change several times per log entry.
    pub(super) leadership: watch::Sender<(u64, Option<NodeId>)>,
    /// Whether, led here, the group is quiet (see [`super::tick`]).
    pub(super) quiet: super::tick::Quiet,
}

/// A snapshot being received from a group's leader, chunk by chunk (see
/// [`RaftHost::receive_snapshot_chunk`]).
struct Incoming {
    /// The sender's id of the transfer.
    transfer: String,
    /// Offset of the next chunk.
    next: u64,
    /// The file it is written to.
    data: SnapshotData,
}

impl Group {
    /// Stops the group's actor, whose `post_stop` shuts the Raft core down; shuts the core down
    /// here only when the actor cannot (it failed already: ractor skips `post_stop` then, or
    /// it did not stop in time).
    pub(super) async fn stop(&self, group: GroupId) {
        let running = self.actor.get_status() < ActorStatus::Stopping;
        if running && self.actor.stop_and_wait(None, Some(TRANSFER_TIMEOUT)).await.is_ok() {
            return;
        }
        if let Err(e) = self.raft.shutdown().await {
            debug!(group, error = %e, "raft group did not shut down cleanly");
        }
    }
}

/// All Raft groups of this node.
pub struct RaftHost {
    pub(super) node_id: NodeId,
    pub(super) cfg: Config,
    raft_config: Arc<openraft::Config>,
    /// How recent a leader's quorum acknowledgement must be for it to count as leader.
    quorum_lease_ms: u64,
    /// Whether idle groups go quiet (`raft.quiescence`).
    pub(super) quiescence: bool,
    pub(super) store: Arc<Store>,
    pub(super) transport: Arc<Transport>,
    pub(super) metrics: RaftMetrics,
    pub(super) groups: RwLock<HashMap<GroupId, Arc<Group>>>,
    /// Groups whose membership change runs on this node right now.
    pub(super) reconfiguring: Mutex<HashSet<GroupId>>,
    /// Groups this node is handing leadership away from right now; the receiver turns true when
    /// the hand-over ended. Requests for them wait (see [`RaftHost::hand_over`]).
    pub(super) transfers: Mutex<HashMap<GroupId, watch::Receiver<bool>>>,
    /// Snapshots being received, per group.
    incoming: Mutex<HashMap<GroupId, Incoming>>,
    pub(super) me: Weak<RaftHost>,
    /// What [`Group::heard`] counts from.
    pub(super) epoch: std::time::Instant,
    tasks: Mutex<Vec<AbortOnDrop<()>>>,
    /// The Raft actor: every group actor is linked under it.
    supervisor: ActorCell,
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
        // Heartbeats are the node tick's job (see `super::tick`), so a group's own tick only
        // checks its election timer, and runs only while that can fire. openraft ticks every
        // `heartbeat_interval * 13 / 64`; this interval makes that a seventh of the shortest
        // election timeout (57 ms at the default 400 ms) instead of a fifth of the heartbeat
        // interval (20 ms). It also bounds a replication call's wait.
        heartbeat_interval: openraft_heartbeat_ms(r.election_timeout_min),
        enable_heartbeat: false,
        election_timeout_min: r.election_timeout_min.as_millis() as u64,
        election_timeout_max: r.election_timeout_max.as_millis() as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_after_entries),
        max_in_snapshot_log_to_keep: r.keep_logs_after_snapshot,
        install_snapshot_timeout: 2000,
        // A follower whose election timer fires first asks whether the others would vote for it
        // (nothing persisted); only then does it raise its term. A node that was cut off or
        // restarted cannot win, so it no longer bumps the term and unseats a healthy leader.
        enable_pre_vote: Some(true),
        // A leader restarted after a crash must not take its leadership back unasked: the commit
        // index of its newest entries rides along with a later log flush and its state machine
        // is checkpointed lazily, so it restarts behind what it acknowledged, and openraft's
        // read index for a restored leader is that stale commit index (a linearizable read
        // would miss an acknowledged write). It also may have replicated entries it never
        // wrote itself (the leader appends in parallel with replication); a restored leader
        // would reuse their log ids for new entries. Disabled, it rejoins as a follower and a
        // new term's election decides, by log, who leads.
        enable_leader_restore: Some(false),
        ..Default::default()
    };
    Ok(Arc::new(c.validate().map_err(|e| RaftHostError::Config(e.to_string()))?))
}

/// openraft's own `heartbeat_interval` for a shortest election timeout of `election_min`: its
/// tick (`* 13 / 64` of it) is a seventh of `election_min`, which keeps openraft's rule that a
/// heartbeat interval plus a tick stays below the election timeout.
fn openraft_heartbeat_ms(election_min: Duration) -> u64 {
    (election_min.as_millis() as u64 * 64 / (13 * 7)).max(1)
}

/// The placement the founders bootstrap with, from `cluster.initial_members`.
pub fn initial_placement(cfg: &Config) -> Placement {
    let founders: Vec<NodeId> = cfg.cluster.initial_members.iter().map(|m| m.id).collect();
    Placement {
        members: cfg
            .cluster
            .initial_members
            .iter()
            .map(|m| {
                let rec =
                    MemberRec { id: m.id, peer_addr: m.peer_addr.clone(), http_addr: m.http_addr.clone(), dead: false };
                (m.id, rec)
            })
            .collect(),
        layout: Layout {
            version: 1,
            groups: crate::placement::initial_layout(&founders, cfg.raft.partitions, cfg.raft.replication_factor),
        },
    }
}

pub fn info_of(m: &MemberRec) -> NodeInfo {
    NodeInfo { peer_addr: m.peer_addr.clone(), http_addr: m.http_addr.clone() }
}

impl RaftHost {
    /// Starts the groups this node replicates: the meta group always; as a founder, the groups of
    /// the initial layout (initialised exactly once: an initialised store is never initialised
    /// again); groups with state in the store; and groups the stored layout gives this node.
    pub async fn start(
        cfg: &Config,
        store: Arc<Store>,
        transport: Arc<Transport>,
        metrics: RaftMetrics,
        supervisor: ActorCell,
    ) -> Result<Arc<Self>, RaftHostError> {
        let node_id = cfg.node.id;
        let raft_config = raft_config(cfg)?;
        let host = Arc::new_cyclic(|me| Self {
            node_id,
            cfg: cfg.clone(),
            raft_config,
            quorum_lease_ms: cfg.raft.election_timeout_max.as_millis() as u64,
            quiescence: cfg.raft.quiescence,
            store: Arc::clone(&store),
            transport,
            metrics,
            groups: RwLock::new(HashMap::new()),
            reconfiguring: Mutex::new(HashSet::new()),
            transfers: Mutex::new(HashMap::new()),
            incoming: Mutex::new(HashMap::new()),
            me: me.clone(),
            epoch: std::time::Instant::now(),
            tasks: Mutex::new(Vec::new()),
            supervisor,
        });
        let initial = initial_placement(cfg);
        let store_err = |e: crate::storage::StoreError| RaftHostError::Group { group: 0, reason: e.to_string() };
        let mut wanted: BTreeMap<GroupId, Option<BTreeMap<NodeId, NodeInfo>>> = BTreeMap::new();
        wanted.insert(0, None);
        for (group, replicas) in initial.layout.groups.iter().filter(|(_, r)| r.contains(&node_id)) {
            let members = replicas.iter().filter_map(|id| initial.members.get(id).map(|m| (*id, info_of(m))));
            wanted.insert(*group, Some(members.collect()));
        }
        for group in store.stored_groups().map_err(store_err)? {
            wanted.entry(group).or_insert(None);
        }
        if let Some(p) = store.placement(0).map_err(store_err)? {
            for (group, replicas) in &p.layout.groups {
                if replicas.contains(&node_id) {
                    wanted.entry(*group).or_insert(None);
                }
            }
        }
        // Leaders spread at bootstrap: only a group's preferred founder initialises it at once
        // (and so campaigns first); the others initialise only if the group is still empty
        // after two election timeouts (the preferred founder may be down).
        let founders: Vec<NodeId> = initial.members.keys().copied().collect();
        let mut deferred = Vec::new();
        for (group, init) in wanted {
            match init {
                Some(members) if crate::placement::preferred_leader(&founders, group) != Some(node_id) => {
                    host.open_group(group, None).await?;
                    deferred.push((group, members));
                }
                init => host.open_group(group, init).await?,
            }
        }
        if !deferred.is_empty() {
            let me = Arc::downgrade(&host);
            let wait = cfg.raft.election_timeout_max * 2;
            let task = AbortOnDrop::spawn(async move {
                tokio::time::sleep(wait).await;
                let Some(host) = me.upgrade() else { return };
                for (group, members) in deferred {
                    let Some(g) = host.group(group) else { continue };
                    if matches!(g.raft.is_initialized().await, Ok(false)) {
                        info!(group, "preferred founder did not start the group; initialising it here");
                        if let Err(e) = g.raft.initialize(members).await {
                            warn!(group, error = %e, "group initialisation skipped");
                        }
                    }
                }
            });
            lock(&host.tasks).push(task);
        }
        let tick = AbortOnDrop::spawn(super::tick::run(Arc::downgrade(&host), super::tick::Timing::new(&cfg.raft)));
        lock(&host.tasks).push(tick);
        info!(groups = host.read_groups().len(), partitions = cfg.raft.partitions, "raft groups started");
        Ok(host)
    }

    pub(super) fn read_groups(&self) -> std::sync::RwLockReadGuard<'_, HashMap<GroupId, Arc<Group>>> {
        crate::util::read(&self.groups)
    }

    pub(super) fn group(&self, id: GroupId) -> Option<Arc<Group>> {
        self.read_groups().get(&id).cloned()
    }

    /// openraft's leader lease, which is also Shoal's quorum lease.
    pub(super) fn lease(&self) -> Duration {
        Duration::from_millis(self.quorum_lease_ms)
    }

    /// Whether a membership change or a leader hand-over of `group` runs here now (such a group
    /// does not go quiet).
    pub(super) fn busy(&self, group: GroupId) -> bool {
        lock(&self.reconfiguring).contains(&group)
            || lock(&self.transfers).get(&group).is_some_and(|done| !*done.borrow())
    }

    /// Starts hosting `group` (from its stored state, if any); `init` initialises a new store
    /// with that membership (founders only; every founder passes the same one).
    pub(super) async fn open_group(
        &self,
        group: GroupId,
        init: Option<BTreeMap<NodeId, NodeInfo>>,
    ) -> Result<(), RaftHostError> {
        if self.group(group).is_some() {
            return Ok(());
        }
        let err = |e: &dyn std::fmt::Display| RaftHostError::Group { group, reason: e.to_string() };
        let sm = self.store.state_machine(group).map_err(|e| err(&e))?;
        let network = GroupNetworkFactory { group, transport: Arc::clone(&self.transport) };
        let raft = Raft::new(self.node_id, Arc::clone(&self.raft_config), network, self.store.log_store(group), sm)
            .await
            .map_err(|e| err(&e))?;
        if let Some(members) = init
            && !raft.is_initialized().await.map_err(|e| err(&e))?
            && let Err(e) = raft.initialize(members).await
        {
            warn!(group, error = %e, "group initialisation skipped");
        }
        let args = GroupArgs {
            group,
            me: self.node_id,
            raft: raft.clone(),
            metrics: self.metrics.clone(),
            store: Arc::clone(&self.store),
        };
        let actor = match GroupActor::start(args, self.supervisor.clone()).await {
            Ok(actor) => actor,
            Err(e) => {
                let _ = raft.shutdown().await;
                return Err(err(&e));
            }
        };
        let leadership = watch::Sender::new((0, None));
        let opened = Arc::new(Group {
            raft,
            actor,
            heard: super::tick::Heard::default(),
            leadership,
            quiet: super::tick::Quiet::default(),
        });
        let duplicate = {
            let mut groups = crate::util::write(&self.groups);
            match groups.entry(group) {
                std::collections::hash_map::Entry::Occupied(_) => true,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Arc::clone(&opened));
                    false
                }
            }
        };
        if duplicate {
            // Opened concurrently; keep the first.
            opened.stop(group).await;
        } else {
            info!(group, "hosting raft group");
        }
        Ok(())
    }

    /// The leader of `group` as this node's replica knows it (itself only while its quorum
    /// lease holds: a leader that has not heard from a quorum within an election timeout cannot
    /// commit, and its followers are electing a new one; for a quiet group, quiet beats
    /// acknowledged by a quorum count). `None` when this replica cannot tell: the group is not
    /// hosted here, or only just opened here and knows no leader yet.
    pub fn local_leader(&self, group: GroupId) -> Option<Option<NodeId>> {
        let g = self.group(group)?;
        let rx = g.raft.metrics();
        let m = rx.borrow_watched();
        match m.current_leader {
            Some(l) if l == self.node_id => {
                // A leader that is its own quorum needs no acknowledgement (openraft reports none).
                let alone = m.membership_config.membership().voter_ids().all(|v| v == l);
                let lease = Duration::from_millis(self.quorum_lease_ms);
                let acked = m.last_quorum_acked.is_some_and(|at| at.elapsed() <= lease)
                    || g.quiet.quorum_within(m.membership_config.membership().voter_ids(), l, m.current_term, lease);
                Some((alone || acked).then_some(l))
            }
            Some(l) => Some(Some(l)),
            // An initialised group without a leader is electing one.
            None if m.membership_config.membership().voter_ids().next().is_some() => Some(None),
            // A replica this node only starts to host knows no leader yet: ask the others.
            None => None,
        }
    }

    /// The leader of `group` as its Raft metrics on this node say, lease or not; `None` when the
    /// group is not hosted here.
    pub fn current_leader(&self, group: GroupId) -> Option<Option<NodeId>> {
        Some(self.group(group)?.raft.metrics().borrow_watched().current_leader)
    }

    /// Whether this node's replica of `group` is its leader (by role, lease or not).
    pub fn is_leader(&self, group: GroupId) -> bool {
        self.group(group).is_some_and(|g| g.raft.metrics().borrow_watched().state == ServerState::Leader)
    }

    /// The groups hosted here, in ascending order.
    pub fn hosted_groups(&self) -> Vec<GroupId> {
        let mut hosted: Vec<GroupId> = self.read_groups().keys().copied().collect();
        hosted.sort_unstable();
        hosted
    }

    /// Answers an encoded query of `service` from this node's replica of `group` (possibly
    /// behind the leader); `None` when the group is not hosted here or the store failed.
    pub fn query(&self, group: GroupId, service: ServiceId, query: &[u8]) -> Option<Result<Vec<u8>, ProposeError>> {
        self.group(group)?;
        let handled = self.store.query(group, service, query).ok()?;
        Some(answer(service, handled))
    }

    /// The members and layout in this node's copy of meta state.
    pub fn placement(&self) -> Option<Placement> {
        self.store.placement(0).ok().flatten()
    }

    /// Raft state of every group: hosted ones from their Raft metrics, the others from the
    /// layout (with `leader_hint`'s leader). Meta first.
    pub fn view(&self, leader_hint: impl Fn(GroupId) -> Option<NodeId>) -> Vec<GroupView> {
        let mut out: Vec<GroupView> = self
            .read_groups()
            .iter()
            .map(|(id, g)| {
                let m = g.raft.metrics().borrow_watched().clone();
                view::hosted(*id, &m, self.node_id, self.store.committed_index(*id))
            })
            .collect();
        if let Some(p) = self.placement() {
            for (id, replicas) in p.layout.groups {
                if !out.iter().any(|g| g.id == id) {
                    out.push(view::not_hosted(id, replicas, leader_hint(id)));
                }
            }
        }
        out.sort_by_key(|g| g.id);
        out
    }

    /// Commits `commands` as one log entry of `group`, led by this node.
    async fn commit_batch(&self, group: GroupId, commands: Vec<Command>) -> RaftResponse {
        // Not hosted here (moved away, or not yet arrived): nothing was proposed, so the
        // router may safely try the leader it learns of next.
        let Some(g) = self.group(group) else { return RaftResponse::NotLeader { leader: None } };
        let label = group.to_string();
        let start = std::time::Instant::now();
        let count = commands.len() as u64;
        self.metrics.batch_size.with_label_values(&[&label]).observe(count as f64);
        if super::tick::renew_lease(&g.raft, &g.quiet, self.lease()).await {
            self.metrics.quiet_wakes.with_label_values(&[&label, "write"]).inc();
        }
        let result = g.raft.client_write(CommandBatch(commands)).await;
        let outcome = if result.is_ok() { "committed" } else { "failed" };
        self.metrics.proposals.with_label_values(&[&label, outcome]).inc_by(count);
        self.metrics.proposal_seconds.with_label_values(&[&label]).observe(start.elapsed().as_secs_f64());
        match result {
            Ok(resp) => RaftResponse::Proposed(resp.data.0),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                RaftResponse::NotLeader { leader: f.leader_id }
            }
            // Including `LogEntryDiscarded` (leadership changed after the entry was appended:
            // it may still commit), so the outcome is unknown.
            Err(e) => RaftResponse::Unavailable { reason: e.to_string() },
        }
    }

    /// Answers a query of `group` from local state after a read-index round on its leader
    /// (this node).
    async fn read_linearizable(&self, group: GroupId, service: ServiceId, query: &[u8]) -> RaftResponse {
        let Some(g) = self.group(group) else { return RaftResponse::NotLeader { leader: None } };
        match g.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => match self.store.query(group, service, query).map_err(|e| e.to_string()) {
                Ok(handled) => match answer(service, handled) {
                    Ok(bytes) => RaftResponse::Answer(bytes),
                    Err(e) => unavailable(e),
                },
                Err(reason) => RaftResponse::Unavailable { reason },
            },
            Err(RaftError::APIError(openraft::errors::LinearizableReadError::ForwardToLeader(f))) => {
                RaftResponse::NotLeader { leader: f.leader_id }
            }
            Err(e) => RaftResponse::Unavailable { reason: e.to_string() },
        }
    }

    /// Serves a proposal, read or reconfiguration of `group` here (its supposed leader).
    pub async fn serve(&self, group: GroupId, body: RaftRequestBody) -> RaftResponse {
        match body {
            RaftRequestBody::Propose { commands } => self.commit_batch(group, commands).await,
            RaftRequestBody::Read { service, query } => self.read_linearizable(group, service, &query).await,
            RaftRequestBody::Reconfigure { layout_version, voters, learners } => {
                self.reconfigure(group, layout_version, voters, learners)
            }
            RaftRequestBody::TransferLeader { to } => self.transfer_leader(group, to),
            RaftRequestBody::MemberOf { node } => self.member_of(group, node),
            other => RaftResponse::Unavailable { reason: format!("not a routed request: {other:?}") },
        }
    }

    /// Serves a Raft message from peer `from`.
    pub async fn handle(&self, from: NodeId, request: RaftRequest) -> RaftResponse {
        if let RaftRequestBody::QuietBeat { groups } = &request.body {
            return self.quiet_beat(from, groups);
        }
        let group = request.group;
        let Some(g) = self.group(group) else { return unavailable(not_hosted(group)) };
        if request.body.is_client_request() && !self.wait_transfer(group, TRANSFER_HOLD).await {
            // Still handing over: nothing was proposed, the client may retry.
            return RaftResponse::HandingOver;
        }
        match request.body {
            RaftRequestBody::Append { vote, prev_log_id, entries, leader_commit } => {
                let rpc = match wire::to_append(vote, prev_log_id, entries, leader_commit) {
                    Ok(rpc) => rpc,
                    Err(e) => return RaftResponse::Unavailable { reason: e.to_string() },
                };
                match g.raft.append_entries(rpc).await {
                    Ok(r) => {
                        // The sender is this replica's leader unless it was refused for a newer
                        // vote seen here.
                        if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
                            g.heard.note(self.epoch);
                        }
                        wire::append_response(r)
                    }
                    Err(e) => RaftResponse::Unavailable { reason: e.to_string() },
                }
            }
            RaftRequestBody::Vote { vote, last_log_id, leadership_transfer, pre_vote } => {
                if !leadership_transfer && let Some(refusal) = self.refuses_vote(&g, vote.node) {
                    return refusal;
                }
                let rpc = wire::to_vote(vote, last_log_id, leadership_transfer);
                let answer = if pre_vote { g.raft.pre_vote(rpc).await } else { g.raft.vote(rpc).await };
                match answer {
                    Ok(r) => wire::vote_response(r),
                    Err(e) => RaftResponse::Unavailable { reason: e.to_string() },
                }
            }
            RaftRequestBody::Snapshot { vote, last_log_id, last_membership, snapshot_id, offset, data, done } => {
                let chunk =
                    SnapshotChunk { vote, last_log_id, last_membership, transfer: snapshot_id, offset, data, done };
                self.receive_snapshot_chunk(group, &g.raft, chunk).await
            }
            RaftRequestBody::LeaderTransferNotice { from, to, last_log_id } => {
                match g.raft.handle_transfer_leader(wire::to_transfer_notice(from, to, last_log_id)).await {
                    Ok(r) => wire::transfer_response(r),
                    Err(e) => RaftResponse::Unavailable { reason: e.to_string() },
                }
            }
            // Forwarded proposals reach the router's queue first (crate::router::Router::handle);
            // one arriving here is committed as it is.
            RaftRequestBody::QuietBeat { .. } => self.quiet_beat(from, &[]),
            body @ (RaftRequestBody::Propose { .. }
            | RaftRequestBody::Read { .. }
            | RaftRequestBody::Reconfigure { .. }
            | RaftRequestBody::TransferLeader { .. }
            | RaftRequestBody::MemberOf { .. }) => self.serve(group, body).await,
        }
    }

    /// Takes one chunk of a snapshot `group`'s leader sends (see [`super::network`]): chunks of
    /// one transfer arrive in order, the first starts a new file (dropping any unfinished
    /// transfer), the last installs the snapshot. A chunk that does not continue the transfer
    /// under way is refused; the leader starts over.
    async fn receive_snapshot_chunk(&self, group: GroupId, raft: &GroupRaft, chunk: SnapshotChunk) -> RaftResponse {
        use tokio::io::AsyncWriteExt;
        let SnapshotChunk { vote, last_log_id, last_membership, transfer, offset, data, done } = chunk;
        let current = if offset == 0 {
            if let Some(old) = lock(&self.incoming).remove(&group) {
                let _ = std::fs::remove_file(&old.data.path);
            }
            match self.store.receive_snapshot(group).await {
                Ok(data) => Incoming { transfer: transfer.clone(), next: 0, data },
                Err(e) => return RaftResponse::Unavailable { reason: e.to_string() },
            }
        } else {
            let mut incoming = lock(&self.incoming);
            match incoming.remove(&group) {
                Some(i) if i.transfer == transfer && i.next == offset => i,
                other => {
                    let (expect_id, expect_offset) =
                        other.as_ref().map(|i| (i.transfer.clone(), i.next)).unwrap_or_default();
                    if let Some(i) = other {
                        incoming.insert(group, i);
                    }
                    return RaftResponse::SnapshotMismatch {
                        expect_id,
                        expect_offset,
                        got_id: transfer,
                        got_offset: offset,
                    };
                }
            }
        };
        let mut current = current;
        let written = async {
            current.data.file.write_all(&data).await?;
            if done {
                current.data.file.flush().await?;
            }
            Ok::<_, std::io::Error>(())
        };
        if let Err(e) = written.await {
            let _ = std::fs::remove_file(&current.data.path);
            return RaftResponse::Unavailable { reason: format!("cannot write a received snapshot: {e}") };
        }
        if !done {
            current.next += data.len() as u64;
            lock(&self.incoming).insert(group, current);
            return RaftResponse::Snapshot { vote: (&raft.metrics().borrow_watched().vote).into() };
        }
        let meta = match wire::to_snapshot_meta(last_log_id, &last_membership) {
            Ok(meta) => meta,
            Err(e) => {
                let _ = std::fs::remove_file(&current.data.path);
                return RaftResponse::Unavailable { reason: e.to_string() };
            }
        };
        let path = current.data.path.clone();
        let snapshot = crate::storage::entry::Snapshot { meta, snapshot: current.data };
        let installed = raft.install_full_snapshot((&vote).into(), snapshot).await;
        // Installing moves the file into place; one refused (a stale leader's) is removed.
        if path.exists() {
            let _ = std::fs::remove_file(&path);
        }
        match installed {
            Ok(r) => RaftResponse::Snapshot { vote: (&r.vote).into() },
            Err(e) => RaftResponse::Unavailable { reason: e.to_string() },
        }
    }

    /// The group whose actor is `actor`, while that actor is the group's current one (a group
    /// removed on purpose is no longer found).
    pub fn group_of_actor(&self, actor: ActorId) -> Option<GroupId> {
        self.read_groups().iter().find(|(_, g)| g.actor.get_id() == actor).map(|(id, _)| *id)
    }

    /// Restarts one group from its durable state (its actor failed: the Raft core stopped with a
    /// fatal error); the others keep running.
    pub async fn restart_group(&self, group: GroupId) -> Result<(), RaftHostError> {
        let old = crate::util::write(&self.groups).remove(&group);
        if let Some(g) = old {
            g.stop(group).await;
        }
        self.open_group(group, None).await?;
        self.metrics.group_restarts.with_label_values(&[&group.to_string()]).inc();
        Ok(())
    }

    /// Whether this node hosts `group`.
    pub fn hosts(&self, group: GroupId) -> bool {
        self.group(group).is_some()
    }

    /// Test-only (`testing.fault_injection`): this node's next write for `group` fails.
    pub fn inject_storage_fault(&self, group: GroupId) {
        self.store.inject_write_failure(group);
    }

    /// Stops every group (their logs are already durable).
    pub async fn shutdown(&self) {
        lock(&self.tasks).clear();
        let groups: Vec<(GroupId, Arc<Group>)> = self.read_groups().iter().map(|(k, v)| (*k, Arc::clone(v))).collect();
        for (group, g) in groups {
            g.stop(group).await;
        }
    }

    /// Resolves once this node's replica of `group` learns of a leader other than `old`,
    /// elected in a later term than the replica knew when this was called (so `old` leads no
    /// more; a replica that merely lags behind `old`'s election does not count), as the node
    /// tick sees it (within half a heartbeat interval); never when the group is not hosted here.
    pub async fn leader_other_than(&self, group: GroupId, old: NodeId) -> NodeId {
        if let Some(g) = self.group(group) {
            let mut rx = g.leadership.subscribe();
            let term = rx.borrow().0;
            if let Ok(seen) = rx.wait_for(|(t, l)| *t > term && l.is_some_and(|l| l != old)).await
                && let Some(l) = seen.1
            {
                return l;
            }
        }
        std::future::pending().await
    }

    /// Waits until `group` has a leader, up to `deadline`.
    pub async fn wait_for_leader(&self, group: GroupId, deadline: Duration) -> Option<NodeId> {
        let g = self.group(group)?;
        let mut rx = g.raft.metrics();
        let wait = rx.wait_until(|m| m.current_leader.is_some());
        tokio::time::timeout(deadline, wait).await.ok()?.ok()?.current_leader
    }
}

/// One received snapshot chunk ([`RaftRequestBody::Snapshot`]).
struct SnapshotChunk {
    vote: crate::storage::records::VoteRec,
    last_log_id: Option<crate::storage::records::LogIdRec>,
    last_membership: crate::storage::records::StoredMembershipRec,
    transfer: String,
    offset: u64,
    data: Vec<u8>,
    done: bool,
}
