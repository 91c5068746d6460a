//! The HTTP actor: serves the router on the node's listener under supervision.
//!
//! The listener is bound once at startup and shared, so a restart reuses the socket. Stopping the
//! actor stops accepting and lets in-flight requests finish within the drain deadline.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;
use tracing::{info, warn};

use super::{AppState, router};
use crate::util::AbortOnDrop;
use crate::util::InjectedFault;

/// Messages of the HTTP actor.
#[derive(Debug)]
pub enum HttpMsg {
    /// Test-only (`testing.fault_injection`): fail now, so the supervisor restarts the actor.
    InjectFault,
}

/// What the HTTP actor is started with.
pub struct HttpArgs {
    /// The bound listener (cloned for each start).
    pub listener: std::net::TcpListener,
    /// Handler state.
    pub state: AppState,
    /// `http.body_limit_bytes`.
    pub body_limit: usize,
    /// `http.max_in_flight`.
    pub max_in_flight: usize,
    /// `shutdown.drain_timeout`.
    pub drain_timeout: Duration,
}

/// See the module docs.
pub struct HttpActor;

/// State: the server task and the switch that starts its graceful shutdown.
pub struct HttpState {
    stop: watch::Sender<bool>,
    server: Option<AbortOnDrop<()>>,
    drain_timeout: Duration,
}

impl Actor for HttpActor {
    type Msg = HttpMsg;
    type State = HttpState;
    type Arguments = HttpArgs;

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, args: HttpArgs) -> Result<HttpState, ActorProcessingErr> {
        let std_listener = args.listener.try_clone()?;
        std_listener.set_nonblocking(true)?;
        // No Nagle: WebSocket sessions write many small frames, and a response held back for a
        // delayed ACK costs up to 40 ms.
        let listener = axum::serve::ListenerExt::tap_io(tokio::net::TcpListener::from_std(std_listener)?, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = router(args.state, args.body_limit, args.max_in_flight);
        let (stop, mut stopped) = watch::channel(false);
        let server = AbortOnDrop::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let service = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            if let Err(e) = axum::serve(listener, service).with_graceful_shutdown(shutdown).await {
                warn!(error = %e, "HTTP server stopped with an error");
            }
        });
        Ok(HttpState { stop, server: Some(server), drain_timeout: args.drain_timeout })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HttpMsg::InjectFault => Err(Box::new(InjectedFault("http"))),
        }
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut HttpState) -> Result<(), ActorProcessingErr> {
        let _ = state.stop.send(true);
        if let Some(mut server) = state.server.take() {
            match tokio::time::timeout(state.drain_timeout, &mut server.0).await {
                Ok(_) => info!("HTTP server drained"),
                Err(_) => {
                    warn!(deadline = ?state.drain_timeout, "HTTP drain deadline passed; cutting requests off")
                }
            }
        }
        Ok(())
    }
}
