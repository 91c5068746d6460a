//! The one wiring place: builds every subsystem and service of a node from its config, in
//! dependency order, and connects them (the peer RPC handler, the metrics registry). The
//! supervisor then runs them; nothing else constructs a subsystem.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;

use super::{Deps, NodeMetrics};
use crate::NodeId;
use crate::config::Config;
use crate::membership::{Membership, MembershipMetrics};
use crate::raft::wire::RaftRequest;
use crate::router::RouterSlot;
use crate::services::{Client, Platform, Registry, Services};
use crate::storage::Store;
use crate::transport::proto::{Request, Response, RpcError, RpcErrorCode};
use crate::transport::tls::{Identity, TlsError};
use crate::transport::{RpcHandler, Transport, TransportError};

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
    /// The S3 address could not be bound.
    #[error("cannot bind S3 address {addr}: {source}")]
    S3Bind {
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

/// Builds every subsystem and service of the node `config` describes, and binds its sockets.
pub fn build(config: Config, identity: &Identity) -> Result<Deps, NodeError> {
    let metrics = NodeMetrics::new(config.node.id)?;
    let store = Store::open(&config.node.data_dir, metrics.storage.clone(), Registry::dispatch())?;
    let transport = Transport::bind(identity, &config.peer, metrics.transport.clone())?;
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
    let s3_listener = match config.s3.listen {
        Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|source| NodeError::S3Bind { addr, source })?),
        None => None,
    };
    let services = Services::new(Platform {
        config: &config,
        client: Client::new(raft.clone(), config.raft.partitions),
        transport: &transport,
        membership: &membership,
        registry: &metrics.registry,
        s3_listener,
    })?;
    transport.set_handler(Arc::new(NodeRpc {
        membership: Arc::clone(&membership),
        raft: raft.clone(),
        services: Arc::clone(&services),
    }));
    let http_listener = std::net::TcpListener::bind(config.http.listen)
        .map_err(|source| NodeError::HttpBind { addr: config.http.listen, source })?;
    Ok(Deps {
        config,
        metrics,
        transport,
        membership,
        http_listener,
        store,
        raft,
        services,
        fatal: Arc::new(Mutex::new(None)),
    })
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
            // The transport consumes it; it never reaches a handler.
            Request::OpenLane => Response::Error(RpcError {
                code: RpcErrorCode::BadFrame,
                message: "open_lane is only the first frame of a stream".into(),
            }),
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
