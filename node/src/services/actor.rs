//! The services actor: runs every service's background tasks (the rate limiter's sweeper, the
//! shortener's click flusher, …) under supervision. A task that ends (they run until the node
//! stops) or panics fails the actor; the root supervisor then restarts it, and so every task,
//! with backoff, counted in `shoal_actor_restarts_total{actor="services"}`.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::warn;

use super::Services;
use crate::util::{AbortOnDrop, InjectedFault};

/// Messages of the services actor.
#[derive(Debug)]
pub enum ServicesMsg {
    /// A task ended (or panicked): fail, so the supervisor restarts every task.
    TaskEnded(&'static str),
    /// Test-only (`testing.fault_injection`): fail now, so the supervisor restarts the actor.
    InjectFault,
}

/// A task that ended although it should run until the node stops.
#[derive(Debug, thiserror::Error)]
#[error("service task {0} ended")]
pub struct TaskEnded(pub &'static str);

/// See the module docs.
pub struct ServicesActor;

impl Actor for ServicesActor {
    type Msg = ServicesMsg;
    /// The running tasks (aborted when the actor stops or fails).
    type State = Vec<AbortOnDrop<()>>;
    type Arguments = Arc<Services>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        services: Arc<Services>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let tasks = services
            .tasks()
            .into_iter()
            .map(|task| {
                let run = (task.start)();
                let me = myself.clone();
                let name = task.name;
                AbortOnDrop::spawn(async move {
                    // A panic ends only this task; it is reported like an end.
                    if futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run)).await.is_err() {
                        warn!(task = name, "service task panicked");
                    }
                    let _ = me.send_message(ServicesMsg::TaskEnded(name));
                })
            })
            .collect();
        Ok(tasks)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _tasks: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ServicesMsg::TaskEnded(name) => Err(Box::new(TaskEnded(name))),
            ServicesMsg::InjectFault => Err(Box::new(InjectedFault("services"))),
        }
    }
}
