//! The transport actor: runs the accept loop of the node's [`Transport`] under supervision.
//!
//! The endpoint itself lives in the shared [`Transport`] handle, so a restart of this actor
//! starts a new accept loop without rebinding the socket or dropping established links.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::Transport;
use crate::util::AbortOnDrop;
use crate::util::InjectedFault;

/// Messages of the transport actor.
#[derive(Debug)]
pub enum TransportMsg {
    /// Test-only (`testing.fault_injection`): fail now, so the supervisor restarts the actor.
    InjectFault,
    /// Close every peer connection and the endpoint; used on graceful shutdown.
    Close {
        /// How long to wait for peers to see the close.
        wait: Duration,
        /// Answered when done.
        reply: ractor::RpcReplyPort<()>,
    },
}

/// See the module docs.
pub struct TransportActor;

/// State: the accept loop, aborted if the actor fails.
pub struct TransportState {
    transport: Arc<Transport>,
    _accept: AbortOnDrop<()>,
}

impl Actor for TransportActor {
    type Msg = TransportMsg;
    type State = TransportState;
    type Arguments = Arc<Transport>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        transport: Arc<Transport>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let accept = AbortOnDrop::spawn(Arc::clone(&transport).accept_loop());
        Ok(TransportState { transport, _accept: accept })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TransportMsg::InjectFault => Err(Box::new(InjectedFault("transport"))),
            TransportMsg::Close { wait, reply } => {
                state.transport.shutdown(wait).await;
                let _ = reply.send(());
                Ok(())
            }
        }
    }
}
