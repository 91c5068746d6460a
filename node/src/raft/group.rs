//! One actor per hosted Raft group, linked under the Raft actor (its supervisor).
//!
//! The actor owns the group's lifecycle: it mirrors the group's Raft metrics into Prometheus,
//! fails as soon as the group's Raft core stops with a fatal error (a storage failure, say), and
//! shuts the core down when stopped. The Raft actor answers that failure by restarting this one
//! group from its durable state ([`super::RaftHost::restart_group`]); the other groups keep
//! serving. Requests do not pass through the actor: the router calls the group's Raft handle
//! directly, so the actor costs nothing per request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::watch::WatchReceiver;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tracing::{debug, info};

use super::metrics::RaftMetrics;
use super::view::progress;
use super::{GroupId, GroupRaft};
use crate::NodeId;
use crate::storage::Store;
use crate::util::AbortOnDrop;

/// Messages of a group actor.
#[derive(Debug)]
pub enum GroupMsg {
    /// The group's Raft core stopped with this fatal error.
    Stopped(String),
}

/// What a group actor is started with: the group's freshly opened Raft instance.
pub(crate) struct GroupArgs {
    pub(crate) group: GroupId,
    pub(crate) me: NodeId,
    pub(crate) raft: GroupRaft,
    pub(crate) metrics: RaftMetrics,
    pub(crate) store: Arc<Store>,
}

/// A running group actor's state.
pub(crate) struct GroupState {
    group: GroupId,
    raft: GroupRaft,
    _watcher: AbortOnDrop<()>,
}

/// See the module docs.
pub(crate) struct GroupActor;

impl GroupActor {
    /// Starts the actor of `args.group`, linked under `supervisor`.
    pub(crate) async fn start(
        args: GroupArgs,
        supervisor: ActorCell,
    ) -> Result<ActorRef<GroupMsg>, ActorProcessingErr> {
        let (actor, _) = Actor::spawn_linked(None, GroupActor, args, supervisor).await?;
        Ok(actor)
    }
}

impl Actor for GroupActor {
    type Msg = GroupMsg;
    type State = GroupState;
    type Arguments = GroupArgs;

    async fn pre_start(&self, myself: ActorRef<GroupMsg>, args: GroupArgs) -> Result<GroupState, ActorProcessingErr> {
        let GroupArgs { group, me, raft, metrics, store } = args;
        let watcher = AbortOnDrop::spawn(watch_group(group, me, raft.clone(), metrics, store, myself));
        Ok(GroupState { group, raft, _watcher: watcher })
    }

    async fn handle(
        &self,
        _myself: ActorRef<GroupMsg>,
        msg: GroupMsg,
        state: &mut GroupState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GroupMsg::Stopped(error) => Err(format!("raft group {} stopped: {error}", state.group).into()),
        }
    }

    async fn post_stop(&self, _myself: ActorRef<GroupMsg>, state: &mut GroupState) -> Result<(), ActorProcessingErr> {
        if let Err(e) = state.raft.shutdown().await {
            debug!(group = state.group, error = %e, "raft group did not shut down cleanly");
        }
        Ok(())
    }
}

/// Mirrors a group's Raft metrics into Prometheus, logs leader changes, and tells the group's
/// actor when the Raft core stopped with a fatal error.
async fn watch_group(
    group: GroupId,
    me: NodeId,
    raft: GroupRaft,
    metrics: RaftMetrics,
    store: Arc<Store>,
    actor: ActorRef<GroupMsg>,
) {
    /// Raft metrics change several times per log entry; mirroring them at most this often keeps
    /// the watcher cheap (Prometheus scrapes every few seconds).
    const MIRROR_EVERY: Duration = Duration::from_millis(50);
    let label = group.to_string();
    let term = metrics.term.with_label_values(&[&label]);
    let is_leader = metrics.leader.with_label_values(&[&label]);
    let applied = metrics.applied_index.with_label_values(&[&label]);
    let commit = metrics.commit_index.with_label_values(&[&label]);
    let last_log = metrics.last_log_index.with_label_values(&[&label]);
    let leader_changes = metrics.leader_changes.with_label_values(&[&label]);
    let mut rx = raft.metrics();
    let mut leader = None;
    // Lag gauges of the peers this node exports (only while it leads the group).
    let mut lag_gauges: BTreeMap<NodeId, prometheus::IntGauge> = BTreeMap::new();
    loop {
        let (current_leader, current_term, state, stopped, p) = {
            let m = rx.borrow_and_update();
            let stopped = m.running_state.as_ref().err().map(ToString::to_string);
            (m.current_leader, m.current_term, m.state, stopped, progress(&m, me, store.committed_index(group)))
        };
        if let Some(error) = stopped {
            let _ = actor.send_message(GroupMsg::Stopped(error));
            return;
        }
        let replicas = p.replicas.unwrap_or_default();
        for r in &replicas {
            let gauge = lag_gauges
                .entry(r.node)
                .or_insert_with(|| metrics.replica_lag.with_label_values(&[label.as_str(), &r.node.to_string()]));
            gauge.set(r.lag as i64);
        }
        let gone: Vec<NodeId> =
            lag_gauges.keys().copied().filter(|peer| !replicas.iter().any(|r| r.node == *peer)).collect();
        for peer in gone {
            lag_gauges.remove(&peer);
            let _ = metrics.replica_lag.remove_label_values(&[label.as_str(), &peer.to_string()]);
        }
        term.set(current_term as i64);
        is_leader.set(i64::from(state == ServerState::Leader));
        applied.set(p.applied_index as i64);
        commit.set(p.commit_index as i64);
        last_log.set(p.last_log_index as i64);
        if current_leader != leader {
            leader = current_leader;
            leader_changes.inc();
            info!(group, leader = ?leader, term = current_term, "group leader changed");
        }
        if rx.changed().await.is_err() {
            // The core is gone without reporting an error in its metrics: a stop all the same.
            let _ = actor.send_message(GroupMsg::Stopped("the raft core exited".into()));
            return;
        }
        tokio::time::sleep(MIRROR_EVERY).await;
    }
}
