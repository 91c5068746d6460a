//! The Raft actor: owns the lifecycle of this node's [`RaftHost`] and the [`Router`] in front of
//! it under supervision.
//!
//! Starting it starts every hosted group from storage, then the router and its placement loop; each under its own group actor linked
//! under this one ([`crate::raft::group`]). A group actor fails when its Raft core stops with a fatal
//! error (a storage failure, say); this actor then restarts that group alone from its durable
//! state. Only if that fails does this actor fail, and the node supervisor restarts every group.
//! Other subsystems reach the current router through the shared [`RouterSlot`].

use std::sync::{Arc, RwLock};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tracing::{info, warn};

use super::Router;
use crate::config::Config;
use crate::raft::RaftHost;
use crate::storage::Store;
use crate::transport::Transport;
use crate::util::InjectedFault;

/// Where the current [`Router`] (and through it the running [`RaftHost`]) lives; empty while
/// the Raft actor (re)starts.
#[derive(Debug, Clone, Default)]
pub struct RouterSlot(Arc<RwLock<Option<Arc<Router>>>>);

impl RouterSlot {
    /// The running router, if any.
    pub fn get(&self) -> Option<Arc<Router>> {
        crate::util::read(&self.0).clone()
    }

    fn replace(&self, host: Option<Arc<Router>>) -> Option<Arc<Router>> {
        std::mem::replace(&mut *crate::util::write(&self.0), host)
    }
}

/// Messages of the Raft actor.
#[derive(Debug)]
pub enum RaftMsg {
    /// Test-only (`testing.fault_injection`): fail now, so the supervisor restarts the actor.
    InjectFault,
}

/// What the Raft actor is started with.
#[derive(Clone)]
pub struct RaftArgs {
    /// Node configuration.
    pub config: Config,
    /// The node's database.
    pub store: Arc<Store>,
    /// The node's transport.
    pub transport: Arc<Transport>,
    /// Where to publish the router.
    pub slot: RouterSlot,
    /// Raft instruments.
    pub metrics: crate::raft::metrics::RaftMetrics,
    /// The membership view (member health for the placement driver).
    pub membership: Arc<crate::membership::Membership>,
}

/// See the module docs.
pub struct RaftActor;

impl Actor for RaftActor {
    type Msg = RaftMsg;
    type State = RaftArgs;
    type Arguments = RaftArgs;

    async fn pre_start(&self, myself: ActorRef<RaftMsg>, args: RaftArgs) -> Result<RaftArgs, ActorProcessingErr> {
        // A previous incarnation's groups must stop before the same storage is reopened.
        if let Some(old) = args.slot.replace(None) {
            old.shutdown().await;
        }
        let host = RaftHost::start(
            &args.config,
            Arc::clone(&args.store),
            Arc::clone(&args.transport),
            args.metrics.clone(),
            myself.get_cell(),
        )
        .await?;
        let router = Router::new(&args.config, host, Arc::clone(&args.transport));
        router.start_placement(Arc::clone(&args.membership));
        args.slot.replace(Some(router));
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RaftMsg>,
        msg: RaftMsg,
        _state: &mut RaftArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RaftMsg::InjectFault => Err(Box::new(InjectedFault("raft"))),
        }
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<RaftMsg>,
        event: SupervisionEvent,
        state: &mut RaftArgs,
    ) -> Result<(), ActorProcessingErr> {
        let (actor, reason) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped unexpectedly".into()))
            }
            _ => return Ok(()),
        };
        // Groups stopped on purpose have left the host's map first: only failures are found.
        let Some(router) = state.slot.get() else { return Ok(()) };
        let host = router.host();
        let Some(group) = host.group_of_actor(actor.get_id()) else { return Ok(()) };
        warn!(group, error = %reason, "raft group stopped; restarting it from storage");
        if let Err(e) = host.restart_group(group).await {
            return Err(format!("raft group {group} failed ({reason}) and cannot restart: {e}").into());
        }
        info!(group, "raft group restarted from storage");
        Ok(())
    }

    async fn post_stop(&self, _myself: ActorRef<RaftMsg>, state: &mut RaftArgs) -> Result<(), ActorProcessingErr> {
        if let Some(host) = state.slot.replace(None) {
            host.shutdown().await;
        }
        Ok(())
    }
}
