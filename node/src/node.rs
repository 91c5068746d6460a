//! Running one node: load identity, bind sockets, start the supervisor, wait for a signal.

use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use ractor::Actor;
use tracing::{Instrument, info, info_span};

use crate::NodeId;
use crate::config::{Config, LogFormat, LogSection};
use crate::membership::{Membership, MembershipMetrics};
use crate::raft::wire::RaftRequest;
use crate::router::RouterSlot;
use crate::services::{Client, Platform, Registry, Services};
use crate::storage::Store;
use crate::supervisor::{Deps, NodeMetrics, Supervisor, SupervisorMsg};
use crate::transport::proto::{Request, Response, RpcError, RpcErrorCode};
use crate::transport::tls::{Identity, TlsError};
use crate::transport::{RpcHandler, Transport, TransportError};

/// How long a graceful stop waits for services to finish (the last clicks to reach their
/// partitions).
const SERVICES_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a node could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// TLS material is missing or unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The certificate names another node than the config.
    #[error("certificate {path} is for node {cert_id}, but node.id is {config_id}")]
    IdentityMismatch {
        /// The certificate file.
        path: String,
        /// The id in the certificate.
        cert_id: NodeId,
        /// `node.id`.
        config_id: NodeId,
    },
    /// The data directory cannot be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The peer endpoint could not be set up.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The HTTP address could not be bound.
    #[error("cannot bind HTTP address {addr}: {source}")]
    HttpBind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The database could not be opened.
    #[error(transparent)]
    Storage(#[from] crate::storage::StoreError),
    /// Metrics could not be registered (a bug: duplicate names).
    #[error("metrics registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The supervisor could not start its children.
    #[error("startup failed: {0}")]
    Startup(#[from] ractor::SpawnErr),
    /// An actor kept failing and the supervisor gave up.
    #[error("{0}")]
    Fatal(String),
}

/// Answers peer requests by handing them to the subsystem that owns them.
struct NodeRpc {
    membership: Arc<Membership>,
    raft: RouterSlot,
    services: Arc<Services>,
}

impl RpcHandler for NodeRpc {
    fn handle(&self, from: NodeId, request: Request) -> BoxFuture<'static, Response> {
        let response = match request {
            Request::Raft(r) => return self.raft(from, r),
            Request::Ping(ping) => Response::Pong(self.membership.on_ping(ping)),
            Request::Echo(echo) => Response::Echo(echo),
            Request::Service(call) => return self.services.on_peer(from, call),
            Request::Join(join) => match self.membership.on_join(from, join) {
                Ok(joined) => Response::Joined(joined),
                Err(message) => Response::Error(RpcError { code: RpcErrorCode::Refused, message }),
            },
        };
        Box::pin(std::future::ready(response))
    }
}

impl NodeRpc {
    fn raft(&self, from: NodeId, request: RaftRequest) -> BoxFuture<'static, Response> {
        match self.raft.get() {
            Some(router) => Box::pin(async move { Response::Raft(router.handle(from, request).await) }),
            None => Box::pin(std::future::ready(Response::Error(RpcError {
                code: RpcErrorCode::Unavailable,
                message: "raft groups are starting".into(),
            }))),
        }
    }
}

/// Sets up logging for a node process: `RUST_LOG` if set, else `log.filter`. Colours only on a
/// terminal: log files (`dev up`, the test harness, systemd) get plain text.
pub fn init_tracing(log: &LogSection) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs a node until SIGTERM or SIGINT, then shuts it down gracefully.
pub async fn run(config: Config) -> Result<(), NodeError> {
    run_until(config, shutdown_signal()).await
}

/// Runs a node until `shutdown` completes (or an actor keeps failing).
pub async fn run_until(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let span = info_span!("node", node_id = config.node.id);
    run_inner(config, shutdown).instrument(span).await
}

async fn run_inner(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let identity = Identity::load(&config.tls)?;
    if identity.node_id != config.node.id {
        return Err(NodeError::IdentityMismatch {
            path: config.tls.cert.display().to_string(),
            cert_id: identity.node_id,
            config_id: config.node.id,
        });
    }
    std::fs::create_dir_all(&config.node.data_dir)
        .map_err(|source| NodeError::DataDir { path: config.node.data_dir.display().to_string(), source })?;
    let metrics = NodeMetrics::new(config.node.id)?;
    let store = Store::open(&config.node.data_dir, metrics.storage.clone(), Registry::dispatch())?;
    let transport = Transport::bind(&identity, &config.peer, metrics.transport.clone())?;
    let membership = Membership::new(
        crate::transport::proto::MemberRecord {
            id: config.node.id,
            peer_addr: config.advertised_peer_addr(),
            http_addr: config.advertised_http_addr(),
        },
        &config.cluster.initial_members,
        config.cluster.join.clone(),
        config.membership.clone(),
        Arc::clone(&transport),
        MembershipMetrics::clone(&metrics.membership),
    );
    let raft = RouterSlot::default();
    let services = Services::new(Platform {
        config: &config,
        client: Client::new(raft.clone()),
        transport: &transport,
        membership: &membership,
        registry: &metrics.registry,
    })?;
    transport.set_handler(Arc::new(NodeRpc {
        membership: Arc::clone(&membership),
        raft: raft.clone(),
        services: Arc::clone(&services),
    }));
    let http_listener = std::net::TcpListener::bind(config.http.listen)
        .map_err(|source| NodeError::HttpBind { addr: config.http.listen, source })?;
    let fatal = Arc::new(Mutex::new(None));
    let http_addr = config.http.listen;
    let peer_addr = config.peer.listen;
    let deps = Deps {
        config,
        metrics,
        transport,
        membership,
        http_listener,
        store,
        raft: raft.clone(),
        services: Arc::clone(&services),
        fatal: Arc::clone(&fatal),
    };
    let (supervisor, handle) = Actor::spawn(None, Supervisor, deps).await?;
    info!(%http_addr, %peer_addr, "node started");
    let mut handle = std::pin::pin!(handle);
    tokio::select! {
        _ = shutdown => {
            info!("shutdown requested; draining");
            // Clicks counted here reach their partitions before the groups stop.
            let _ = tokio::time::timeout(SERVICES_DRAIN, services.drain()).await;
            let _ = supervisor.call(SupervisorMsg::Shutdown, None).await;
            let _ = handle.await;
        }
        _ = &mut handle => {}
    }
    let fatal = crate::util::lock(&fatal).take();
    match fatal {
        Some(reason) => Err(NodeError::Fatal(reason)),
        None => {
            info!("shutdown complete");
            Ok(())
        }
    }
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
