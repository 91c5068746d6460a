//! The Raft actor: owns the lifecycle of this node's [`RaftHost`] under supervision.
//!
//! Starting it starts every hosted group from storage. A group whose Raft core stops with a
//! fatal error (a storage failure, say) is restarted on its own from its durable state; only if
//! that fails does the actor fail, and the supervisor restarts every group. Other subsystems
//! reach the current host through the shared [`RaftSlot`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{info, warn};

use super::RaftHost;
use crate::config::Config;
use crate::storage::Store;
use crate::supervisor::InjectedFault;
use crate::transport::Transport;

/// Where the current [`RaftHost`] lives; empty while the Raft actor (re)starts.
#[derive(Clone, Default)]
pub struct RaftSlot(Arc<RwLock<Option<Arc<RaftHost>>>>);

impl RaftSlot {
    /// The running host, if any.
    pub fn get(&self) -> Option<Arc<RaftHost>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, host: Option<Arc<RaftHost>>) -> Option<Arc<RaftHost>> {
        std::mem::replace(&mut *self.0.write().unwrap_or_else(|e| e.into_inner()), host)
    }
}

/// Messages of the Raft actor.
#[derive(Debug)]
pub enum RaftMsg {
    /// Check every group for a fatal error and restart those that stopped.
    Check,
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
    /// Where to publish the host.
    pub slot: RaftSlot,
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
            Arc::clone(&args.membership),
        )
        .await?;
        args.slot.replace(Some(host));
        myself.send_interval(Duration::from_secs(1), || RaftMsg::Check);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RaftMsg>,
        msg: RaftMsg,
        state: &mut RaftArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RaftMsg::Check => {
                let Some(host) = state.slot.get() else { return Ok(()) };
                for (group, error) in host.fatal_errors() {
                    warn!(group, error = %error, "raft group stopped; restarting it from storage");
                    if let Err(e) = host.restart_group(group).await {
                        return Err(format!("raft group {group} failed ({error}) and cannot restart: {e}").into());
                    }
                    info!(group, "raft group restarted from storage");
                }
                Ok(())
            }
            RaftMsg::InjectFault => Err(Box::new(InjectedFault("raft"))),
        }
    }

    async fn post_stop(&self, _myself: ActorRef<RaftMsg>, state: &mut RaftArgs) -> Result<(), ActorProcessingErr> {
        if let Some(host) = state.slot.replace(None) {
            host.shutdown().await;
        }
        Ok(())
    }
}
