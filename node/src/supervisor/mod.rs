//! The root supervisor: builds the node ([`wiring`], the one wiring place) and starts, restarts
//! and stops the node's subsystem actors.
//!
//! Children start in dependency order (transport, membership, raft, services, http). A child that fails is
//! restarted after an exponential backoff and counted in `shoal_actor_restarts_total{actor}`; a
//! child that fails more than `supervisor.max_restarts` times within `supervisor.restart_window`
//! stops the node with a fatal error, so the process supervisor (systemd, Kubernetes,
//! `shoal dev up`) takes over. Shutdown stops children in reverse order.

pub mod wiring;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::http::AppState;
use crate::http::actor::{HttpActor, HttpArgs, HttpMsg};
use crate::http::metrics::HttpMetrics;
use crate::membership::Membership;
use crate::membership::MembershipMetrics;
use crate::membership::actor::{MembershipActor, MembershipMsg};
use crate::raft::metrics::RaftMetrics;
use crate::router::actor::{RaftActor, RaftArgs, RaftMsg, RouterSlot};
use crate::services::Services;
use crate::services::actor::{ServicesActor, ServicesMsg};
use crate::storage::StorageMetrics;
use crate::storage::Store;
use crate::transport::Transport;
use crate::transport::TransportMetrics;
use crate::transport::actor::{TransportActor, TransportMsg};
use crate::util::Backoff;
pub use wiring::NodeError;

/// The supervised subsystems, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChildKind {
    /// Peer transport accept loop.
    Transport,
    /// Heartbeats and failure detection.
    Membership,
    /// The Raft groups hosted here.
    Raft,
    /// The services' background tasks.
    Services,
    /// The HTTP API.
    Http,
}

impl ChildKind {
    /// Every child, in start order.
    pub const ALL: [ChildKind; 5] =
        [ChildKind::Transport, ChildKind::Membership, ChildKind::Raft, ChildKind::Services, ChildKind::Http];

    /// The actor's name (metric label, fault-injection path).
    pub fn name(self) -> &'static str {
        match self {
            ChildKind::Transport => "transport",
            ChildKind::Membership => "membership",
            ChildKind::Raft => "raft",
            ChildKind::Services => "services",
            ChildKind::Http => "http",
        }
    }

    /// The child with this name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Supervision instruments.
#[derive(Clone)]
pub struct SupervisorMetrics {
    /// Restarts by actor.
    pub restarts: IntCounterVec,
    /// 1 while the actor runs.
    pub up: IntGaugeVec,
}

impl SupervisorMetrics {
    /// Creates and registers the instruments.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            restarts: IntCounterVec::new(
                Opts::new("shoal_actor_restarts_total", "Restarts of a failed subsystem actor."),
                &["actor"],
            )?,
            up: IntGaugeVec::new(Opts::new("shoal_actor_up", "1 while the subsystem actor runs."), &["actor"])?,
        };
        registry.register(Box::new(m.restarts.clone()))?;
        registry.register(Box::new(m.up.clone()))?;
        for k in ChildKind::ALL {
            m.restarts.with_label_values(&[k.name()]);
            m.up.with_label_values(&[k.name()]);
        }
        Ok(m)
    }
}

/// The instruments of the node's subsystems, registered in one registry (services register
/// theirs when they are built).
#[derive(Clone)]
pub struct NodeMetrics {
    /// The registry behind `/metrics`.
    pub registry: Registry,
    /// Peer transport.
    pub transport: TransportMetrics,
    /// Membership and failure detection.
    pub membership: MembershipMetrics,
    /// HTTP server.
    pub http: HttpMetrics,
    /// Actor supervision.
    pub supervisor: SupervisorMetrics,
    /// Durable storage.
    pub storage: StorageMetrics,
    /// Raft groups.
    pub raft: RaftMetrics,
}

impl NodeMetrics {
    /// Creates the registry and every subsystem's instruments.
    pub fn new(node_id: crate::NodeId) -> prometheus::Result<Self> {
        let registry = crate::metrics::node_registry(node_id)?;
        Ok(Self {
            transport: TransportMetrics::new(&registry)?,
            membership: MembershipMetrics::new(&registry)?,
            http: HttpMetrics::new(&registry)?,
            supervisor: SupervisorMetrics::new(&registry)?,
            storage: StorageMetrics::new(&registry)?,
            raft: RaftMetrics::new(&registry)?,
            registry,
        })
    }
}

/// Fault injection through the supervisor (what the HTTP layer's test endpoint calls).
struct Faults(ActorRef<SupervisorMsg>);

impl crate::util::FaultInjector for Faults {
    fn actors(&self) -> Vec<&'static str> {
        ChildKind::ALL.map(ChildKind::name).to_vec()
    }

    fn inject(&self, actor: &str) -> Result<&'static str, crate::util::InjectError> {
        let child = ChildKind::from_name(actor).ok_or(crate::util::InjectError::UnknownActor)?;
        self.0.send_message(SupervisorMsg::InjectFault(child)).map_err(|_| crate::util::InjectError::Stopped)?;
        Ok(child.name())
    }
}

/// Messages of the root supervisor.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// A failed child's backoff has elapsed: start it again.
    Restart(ChildKind),
    /// Test-only: make the named child fail (the HTTP layer checks `testing.fault_injection`).
    InjectFault(ChildKind),
    /// Stop every child in reverse start order, then the supervisor; answered when done.
    Shutdown(RpcReplyPort<()>),
}

/// Everything the children are built from; outlives any one child.
pub struct Deps {
    /// The node configuration.
    pub config: Config,
    /// The node's instruments.
    pub metrics: NodeMetrics,
    /// The bound QUIC endpoint and links.
    pub transport: Arc<Transport>,
    /// The membership view.
    pub membership: Arc<Membership>,
    /// The bound HTTP listener.
    pub http_listener: std::net::TcpListener,
    /// The node's database.
    pub store: Arc<Store>,
    /// Where the Raft actor publishes the router in front of the running groups.
    pub raft: RouterSlot,
    /// Every service (caches, owned keys and reserved codes outlive actor restarts).
    pub services: Arc<Services>,
    /// Set when the supervisor gives up; the node then exits non-zero.
    pub fatal: Arc<Mutex<Option<String>>>,
}

enum Child {
    Transport(ActorRef<TransportMsg>),
    Membership(ActorRef<MembershipMsg>),
    Raft(ActorRef<RaftMsg>),
    Services(ActorRef<ServicesMsg>),
    Http(ActorRef<HttpMsg>),
}

impl Child {
    fn cell(&self) -> ActorCell {
        match self {
            Child::Transport(a) => a.get_cell(),
            Child::Membership(a) => a.get_cell(),
            Child::Raft(a) => a.get_cell(),
            Child::Services(a) => a.get_cell(),
            Child::Http(a) => a.get_cell(),
        }
    }

    fn inject_fault(&self) {
        let _ = match self {
            Child::Transport(a) => a.send_message(TransportMsg::InjectFault).map_err(|_| ()),
            Child::Membership(a) => a.send_message(MembershipMsg::InjectFault).map_err(|_| ()),
            Child::Raft(a) => a.send_message(RaftMsg::InjectFault).map_err(|_| ()),
            Child::Services(a) => a.send_message(ServicesMsg::InjectFault).map_err(|_| ()),
            Child::Http(a) => a.send_message(HttpMsg::InjectFault).map_err(|_| ()),
        };
    }
}

struct Slot {
    child: Option<Child>,
    failures: VecDeque<Instant>,
}

/// See the module docs.
pub struct Supervisor;

/// The supervisor's state.
pub struct SupervisorState {
    deps: Deps,
    slots: BTreeMap<ChildKind, Slot>,
    shutting_down: bool,
}

impl Supervisor {
    async fn spawn_child(
        myself: &ActorRef<SupervisorMsg>,
        deps: &Deps,
        kind: ChildKind,
    ) -> Result<Child, ActorProcessingErr> {
        let name = Some(format!("node-{}/{}", deps.config.node.id, kind.name()));
        let sup = myself.get_cell();
        let child = match kind {
            ChildKind::Transport => {
                let (a, _) = Actor::spawn_linked(name, TransportActor, Arc::clone(&deps.transport), sup).await?;
                Child::Transport(a)
            }
            ChildKind::Membership => {
                let (a, _) = Actor::spawn_linked(name, MembershipActor, Arc::clone(&deps.membership), sup).await?;
                Child::Membership(a)
            }
            ChildKind::Raft => {
                let args = RaftArgs {
                    config: deps.config.clone(),
                    store: Arc::clone(&deps.store),
                    transport: Arc::clone(&deps.transport),
                    slot: deps.raft.clone(),
                    metrics: deps.metrics.raft.clone(),
                    membership: Arc::clone(&deps.membership),
                };
                let (a, _) = Actor::spawn_linked(name, RaftActor, args, sup).await?;
                Child::Raft(a)
            }
            ChildKind::Services => {
                let (a, _) = Actor::spawn_linked(name, ServicesActor, Arc::clone(&deps.services), sup).await?;
                Child::Services(a)
            }
            ChildKind::Http => {
                let c = &deps.config;
                let args = HttpArgs {
                    listener: deps.http_listener.try_clone()?,
                    state: AppState {
                        node_id: c.node.id,
                        membership: Arc::clone(&deps.membership),
                        raft: deps.raft.clone(),
                        registry: deps.metrics.registry.clone(),
                        http_metrics: deps.metrics.http.clone(),
                        faults: Arc::new(Faults(myself.clone())),
                        fault_injection: c.testing.fault_injection,
                        request_timeout: c.http.request_timeout,
                        services: Arc::clone(&deps.services),
                    },
                    body_limit: c.http.body_limit_bytes,
                    max_in_flight: c.http.max_in_flight,
                    drain_timeout: c.shutdown.drain_timeout,
                };
                let (a, _) = Actor::spawn_linked(name, HttpActor, args, sup).await?;
                Child::Http(a)
            }
        };
        deps.metrics.supervisor.up.with_label_values(&[kind.name()]).set(1);
        Ok(child)
    }

    /// Records a failure of `kind` and schedules its restart, or gives up on a restart storm.
    fn child_failed(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, kind: ChildKind, reason: &str) {
        let cfg = &state.deps.config.supervisor;
        state.deps.metrics.supervisor.up.with_label_values(&[kind.name()]).set(0);
        let Some(slot) = state.slots.get_mut(&kind) else {
            return;
        };
        slot.child = None;
        let now = Instant::now();
        slot.failures.push_back(now);
        while slot.failures.front().is_some_and(|t| now.duration_since(*t) > cfg.restart_window) {
            slot.failures.pop_front();
        }
        let recent = slot.failures.len() as u32;
        if recent > cfg.max_restarts {
            let fatal = format!(
                "the {} actor failed {recent} times within {:?}; last error: {reason}",
                kind.name(),
                cfg.restart_window
            );
            error!(actor = kind.name(), "{fatal}");
            *crate::util::lock(&state.deps.fatal) = Some(fatal.clone());
            myself.stop(Some(fatal));
            return;
        }
        let delay = Backoff::new(cfg.restart_backoff_min, cfg.restart_backoff_max).delay_for(recent - 1);
        warn!(actor = kind.name(), error = reason, restart_in = ?delay, "actor failed; restarting");
        myself.send_after(delay, move || SupervisorMsg::Restart(kind));
    }

    fn kind_of(state: &SupervisorState, cell: &ActorCell) -> Option<ChildKind> {
        state
            .slots
            .iter()
            .find(|(_, s)| s.child.as_ref().is_some_and(|c| c.cell().get_id() == cell.get_id()))
            .map(|(k, _)| *k)
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Deps;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        deps: Deps,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let mut slots = BTreeMap::new();
        for kind in ChildKind::ALL {
            let child = Self::spawn_child(&myself, &deps, kind).await?;
            info!(actor = kind.name(), "actor started");
            slots.insert(kind, Slot { child: Some(child), failures: VecDeque::new() });
        }
        Ok(SupervisorState { deps, slots, shutting_down: false })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Restart(kind) => {
                if state.shutting_down || state.slots.get(&kind).is_some_and(|s| s.child.is_some()) {
                    return Ok(());
                }
                match Self::spawn_child(&myself, &state.deps, kind).await {
                    Ok(child) => {
                        state.deps.metrics.supervisor.restarts.with_label_values(&[kind.name()]).inc();
                        info!(actor = kind.name(), "actor restarted");
                        if let Some(slot) = state.slots.get_mut(&kind) {
                            slot.child = Some(child);
                        }
                    }
                    Err(e) => Self::child_failed(&myself, state, kind, &e.to_string()),
                }
            }
            SupervisorMsg::InjectFault(kind) => {
                if let Some(child) = state.slots.get(&kind).and_then(|s| s.child.as_ref()) {
                    warn!(actor = kind.name(), "injecting a fault (testing.fault_injection)");
                    child.inject_fault();
                }
            }
            SupervisorMsg::Shutdown(reply) => {
                state.shutting_down = true;
                let drain = state.deps.config.shutdown.drain_timeout;
                for kind in ChildKind::ALL.into_iter().rev() {
                    let Some(child) = state.slots.get_mut(&kind).and_then(|s| s.child.take()) else {
                        continue;
                    };
                    if let Child::Transport(t) = &child {
                        let wait = Duration::from_secs(1);
                        let _ = t.call(|reply| TransportMsg::Close { wait, reply }, Some(wait * 2)).await;
                    }
                    if child.cell().stop_and_wait(None, Some(drain + Duration::from_secs(2))).await.is_err() {
                        warn!(actor = kind.name(), "actor did not stop in time; killing it");
                        child.cell().kill();
                    }
                    state.deps.metrics.supervisor.up.with_label_values(&[kind.name()]).set(0);
                    info!(actor = kind.name(), "actor stopped");
                }
                let _ = reply.send(());
                myself.stop(None);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if state.shutting_down {
            return Ok(());
        }
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(kind) = Self::kind_of(state, &cell) {
                    Self::child_failed(&myself, state, kind, &err.to_string());
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(kind) = Self::kind_of(state, &cell) {
                    let reason = reason.unwrap_or_else(|| "stopped unexpectedly".to_string());
                    Self::child_failed(&myself, state, kind, &reason);
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // After a fatal error the children are still running: stop them in reverse order.
        for kind in ChildKind::ALL.into_iter().rev() {
            if let Some(child) = state.slots.get_mut(&kind).and_then(|s| s.child.take()) {
                let _ = child.cell().stop_and_wait(None, Some(Duration::from_secs(5))).await;
            }
        }
        Ok(())
    }
}
