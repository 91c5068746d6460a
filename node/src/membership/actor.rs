//! The membership actor: one heartbeat round per interval, joining first when needed.

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::warn;

use super::Membership;
use crate::util::InjectedFault;

/// Messages of the membership actor.
#[derive(Debug)]
pub enum MembershipMsg {
    /// Run one heartbeat round (and join first if this node is not a member yet).
    Tick,
    /// Test-only (`testing.fault_injection`): fail now, so the supervisor restarts the actor.
    InjectFault,
}

/// See the module docs.
pub struct MembershipActor;

impl Actor for MembershipActor {
    type Msg = MembershipMsg;
    type State = Arc<Membership>;
    type Arguments = Arc<Membership>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        membership: Arc<Membership>,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_message(MembershipMsg::Tick)?;
        Ok(membership)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        membership: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MembershipMsg::Tick => {
                let start = Instant::now();
                if !membership.is_joined() {
                    if let Err(e) = membership.join().await {
                        warn!(error = %e, "join failed; retrying");
                    }
                }
                membership.probe_round().await;
                // The next round starts one interval after this one started; a slow round does
                // not queue up ticks.
                let next = membership.heartbeat_interval().saturating_sub(start.elapsed());
                myself.send_after(next, || MembershipMsg::Tick);
                Ok(())
            }
            MembershipMsg::InjectFault => Err(Box::new(InjectedFault("membership"))),
        }
    }
}
