//! The peer transport: one QUIC endpoint per node, one connection per peer pair, typed RPC.
//!
//! [`Transport`] is a long-lived handle shared by every subsystem that talks to peers. It owns the
//! quinn endpoint and the links; the transport actor ([`actor`]) owns the accept loop and is
//! restarted by the supervisor without rebinding the socket.
//!
//! Calls travel on a lane ([`lane`]): one long-lived bidirectional stream per connection that
//! carries many tagged calls, batched into few writes; a call whose request frame is larger
//! than [`lane::LANE_MAX_FRAME`] gets a bidirectional stream of its own (a request frame, a
//! response frame). Connections:
//! - either side may dial; when two live connections exist for a pair, the one dialled by the
//!   lower node id wins on both sides, and a new dial from the same dialer replaces the old one;
//! - a failed dial backs off exponentially, and callers fail fast until the next attempt is due;
//! - the stateless-reset key is derived from the node key, so a restarted peer resets its old
//!   connections on their first packet.

pub mod actor;
pub mod frame;
mod lane;
pub mod metrics;
pub mod proto;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::NodeId;
use crate::config::PeerSection;
use crate::util::Backoff;
use crate::util::backoff::jittered;
use crate::util::lock;
use frame::FrameError;
pub use metrics::TransportMetrics;
use proto::{Request, Response, Rpc, RpcError, RpcErrorCode};
use tls::{Identity, TlsError};

/// Application close codes on peer connections.
mod close_code {
    pub const SHUTDOWN: u32 = 1;
    pub const DUPLICATE: u32 = 2;
    pub const REPLACED: u32 = 3;
    pub const SELF_CONNECTION: u32 = 4;
    pub const PEER_DOWN: u32 = 5;
}

/// Why a peer call or the endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No address is known for this peer.
    #[error("peer {peer} is unknown (no address)")]
    UnknownPeer {
        /// The peer.
        peer: NodeId,
    },
    /// The last dial failed and the next attempt is not due yet.
    #[error("peer {peer} is unreachable; next dial in {retry_in:?}")]
    Unreachable {
        /// The peer.
        peer: NodeId,
        /// Time until the next dial attempt.
        retry_in: Duration,
    },
    /// Dialling failed.
    #[error("cannot connect to peer {peer} at {addr}: {reason}")]
    Connect {
        /// The peer.
        peer: NodeId,
        /// The address dialled.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The node at the address is not the peer we meant to reach.
    #[error("dialled peer {expected} but node {got} answered")]
    WrongPeer {
        /// The peer we dialled.
        expected: NodeId,
        /// The id in the certificate presented.
        got: NodeId,
    },
    /// The connection or stream broke during the call.
    #[error("connection to peer {peer} lost: {reason}")]
    ConnectionLost {
        /// The peer.
        peer: NodeId,
        /// What quinn reported.
        reason: String,
    },
    /// The call did not finish within the RPC timeout.
    #[error("call to peer {peer} timed out after {after:?}")]
    Timeout {
        /// The peer.
        peer: NodeId,
        /// The deadline.
        after: Duration,
    },
    /// A frame could not be encoded or the response frame was refused.
    #[error("bad frame from peer: {0}")]
    Frame(#[from] FrameError),
    /// The callee answered with an error.
    #[error("peer {peer} refused the call ({code:?}): {message}")]
    Remote {
        /// The peer.
        peer: NodeId,
        /// Its error code.
        code: RpcErrorCode,
        /// Its message.
        message: String,
    },
    /// The callee answered with a response of the wrong kind.
    #[error("peer {peer} answered {method} with an unexpected response")]
    UnexpectedReply {
        /// The peer.
        peer: NodeId,
        /// The method called.
        method: &'static str,
    },
    /// The UDP socket could not be bound.
    #[error("cannot bind peer address {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TLS material or configuration problem.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl TransportError {
    /// A label for metrics (small fixed set).
    pub fn outcome(&self) -> &'static str {
        match self {
            TransportError::Timeout { .. } => "timeout",
            TransportError::Remote { .. } | TransportError::UnexpectedReply { .. } => "remote_error",
            TransportError::Unreachable { .. }
            | TransportError::UnknownPeer { .. }
            | TransportError::Connect { .. }
            | TransportError::WrongPeer { .. } => "unreachable",
            TransportError::ConnectionLost { .. } => "connection_lost",
            TransportError::Frame(_) => "bad_frame",
            TransportError::Bind { .. } | TransportError::Tls(_) => "error",
        }
    }
}

/// Serves the requests peers send. Installed once, before the accept loop starts.
pub trait RpcHandler: Send + Sync + 'static {
    /// Answers one request from `from` (the id in its certificate).
    fn handle(&self, from: NodeId, request: Request) -> BoxFuture<'static, Response>;
}

#[derive(Clone)]
struct Conn {
    conn: quinn::Connection,
    /// Who opened it; decides which of two concurrent connections survives.
    dialer: NodeId,
}

impl Conn {
    fn is_alive(&self) -> bool {
        self.conn.close_reason().is_none()
    }
}

struct DialState {
    backoff: Backoff,
    next_attempt: Option<Instant>,
}

/// Everything about one peer: where it is, the live connection, dialling state, in-flight cap.
struct Link {
    peer: NodeId,
    addr: Mutex<Option<String>>,
    conn: Mutex<Option<Conn>>,
    dial: tokio::sync::Mutex<DialState>,
    in_flight: Semaphore,
    /// The lane to the peer on the current connection (opened on first use).
    lane: tokio::sync::Mutex<Option<Arc<lane::Lane>>>,
}

/// The node's QUIC endpoint and its peer links.
pub struct Transport {
    node_id: NodeId,
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    cfg: PeerSection,
    links: Mutex<HashMap<NodeId, Arc<Link>>>,
    handler: OnceLock<Arc<dyn RpcHandler>>,
    metrics: TransportMetrics,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl Transport {
    /// Binds the QUIC endpoint on `cfg.listen`. Must run inside a tokio runtime.
    pub fn bind(
        identity: &Identity,
        cfg: &PeerSection,
        metrics: TransportMetrics,
    ) -> Result<Arc<Self>, TransportError> {
        let socket = std::net::UdpSocket::bind(cfg.listen)
            .map_err(|source| TransportError::Bind { addr: cfg.listen, source })?;
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(identity.reset_key()));
        let cid_key = identity.cid_key();
        endpoint_config.cid_generator(move || Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key)));
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(identity.server_config(cfg)?),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| TransportError::Bind { addr: cfg.listen, source })?;
        Ok(Arc::new(Self {
            node_id: identity.node_id,
            endpoint,
            client_config: identity.client_config(cfg)?,
            cfg: cfg.clone(),
            links: Mutex::new(HashMap::new()),
            handler: OnceLock::new(),
            metrics,
        }))
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Installs the request handler; later calls are ignored.
    pub fn set_handler(&self, handler: Arc<dyn RpcHandler>) {
        let _ = self.handler.set(handler);
    }

    /// Records (or updates) where `peer` can be dialled.
    pub fn set_peer_addr(&self, peer: NodeId, addr: &str) {
        if peer == self.node_id {
            return;
        }
        let link = self.link(peer);
        *lock(&link.addr) = Some(addr.to_string());
    }

    /// Peers that currently have a live connection.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        let links: Vec<Arc<Link>> = lock(&self.links).values().cloned().collect();
        links.into_iter().filter(|l| lock(&l.conn).as_ref().is_some_and(Conn::is_alive)).map(|l| l.peer).collect()
    }

    fn link(&self, peer: NodeId) -> Arc<Link> {
        lock(&self.links)
            .entry(peer)
            .or_insert_with(|| {
                Arc::new(Link {
                    peer,
                    addr: Mutex::new(None),
                    conn: Mutex::new(None),
                    dial: tokio::sync::Mutex::new(DialState {
                        backoff: Backoff::new(self.cfg.reconnect_backoff_min, self.cfg.reconnect_backoff_max),
                        next_attempt: None,
                    }),
                    in_flight: Semaphore::new(self.cfg.max_in_flight_per_peer as usize),
                    lane: tokio::sync::Mutex::new(None),
                })
            })
            .clone()
    }

    /// Calls `peer` with a typed request and waits for its typed reply, within the RPC timeout.
    pub async fn call<R: Rpc>(self: &Arc<Self>, peer: NodeId, request: R) -> Result<R::Reply, TransportError> {
        self.call_with_timeout(peer, request, self.cfg.rpc_timeout).await
    }

    /// Like [`Transport::call`] with a shorter (or longer) deadline.
    pub async fn call_with_timeout<R: Rpc>(
        self: &Arc<Self>,
        peer: NodeId,
        request: R,
        deadline: Duration,
    ) -> Result<R::Reply, TransportError> {
        let start = Instant::now();
        let request: Request = request.into();
        let method = request.method();
        let frame = frame::encode(&request)?;
        let result = match tokio::time::timeout(deadline, self.call_frame(peer, frame)).await {
            Ok(Ok(response)) => match response {
                Response::Error(RpcError { code, message }) => Err(TransportError::Remote { peer, code, message }),
                other => R::reply(other).ok_or(TransportError::UnexpectedReply { peer, method }),
            },
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TransportError::Timeout { peer, after: deadline }),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics.calls.with_label_values(&[method, outcome]).inc();
        self.metrics.call_seconds.with_label_values(&[method]).observe(start.elapsed().as_secs_f64());
        result
    }

    async fn call_frame(self: &Arc<Self>, peer: NodeId, frame: Vec<u8>) -> Result<Response, TransportError> {
        let link = self.link(peer);
        let _permit = link
            .in_flight
            .acquire()
            .await
            .map_err(|_| TransportError::ConnectionLost { peer, reason: "transport closed".into() })?;
        let conn = self.connection(&link).await?;
        let lost = |reason: String| TransportError::ConnectionLost { peer, reason };
        if frame.len() <= lane::LANE_MAX_FRAME {
            let lane = self.lane(&link, &conn).await?;
            let response = lane.call(frame).await.map_err(lost)?;
            return Ok(frame::decode::<Response>(&response, self.cfg.max_frame_bytes)?);
        }
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(e.to_string()))?;
        send.write_all(&frame).await.map_err(|e| lost(e.to_string()))?;
        send.finish().map_err(|e| lost(e.to_string()))?;
        let payload = frame::read_frame(&mut recv, self.cfg.max_frame_bytes).await.map_err(|e| match e {
            FrameError::Stream { reason } => lost(reason),
            other => TransportError::Frame(other),
        })?;
        Ok(frame::decode_payload::<Response>(&payload)?)
    }

    /// The lane on `conn` to `link.peer`, opened if there is none on this connection yet (or
    /// the last one failed).
    async fn lane(&self, link: &Link, conn: &quinn::Connection) -> Result<Arc<lane::Lane>, TransportError> {
        let mut slot = link.lane.lock().await;
        if let Some(lane) = slot.as_ref().filter(|l| l.conn_id == conn.stable_id() && l.is_alive()) {
            return Ok(Arc::clone(lane));
        }
        let lost = |reason: String| TransportError::ConnectionLost { peer: link.peer, reason };
        let (mut send, recv) = conn.open_bi().await.map_err(|e| lost(e.to_string()))?;
        send.write_all(&frame::encode(&Request::OpenLane)?).await.map_err(|e| lost(e.to_string()))?;
        let capacity = self.cfg.max_in_flight_per_peer as usize;
        let lane = Arc::new(lane::Lane::start(conn.stable_id(), send, recv, capacity, self.cfg.max_frame_bytes));
        *slot = Some(Arc::clone(&lane));
        Ok(lane)
    }

    /// The live connection to `link.peer`, dialling if there is none and a dial is due.
    async fn connection(self: &Arc<Self>, link: &Arc<Link>) -> Result<quinn::Connection, TransportError> {
        if let Some(c) = lock(&link.conn).as_ref().filter(|c| c.is_alive()) {
            return Ok(c.conn.clone());
        }
        let mut dial = link.dial.lock().await;
        // Someone else may have connected (or the peer dialled us) while we waited.
        if let Some(c) = lock(&link.conn).as_ref().filter(|c| c.is_alive()) {
            return Ok(c.conn.clone());
        }
        let now = Instant::now();
        if let Some(at) = dial.next_attempt.filter(|at| *at > now) {
            return Err(TransportError::Unreachable { peer: link.peer, retry_in: at - now });
        }
        let addr = lock(&link.addr).clone().ok_or(TransportError::UnknownPeer { peer: link.peer })?;
        match self.dial(link.peer, &addr).await {
            Ok(conn) => {
                dial.backoff.reset();
                dial.next_attempt = None;
                Ok(conn)
            }
            Err(e) => {
                dial.next_attempt = Some(Instant::now() + jittered(dial.backoff.next_delay()));
                Err(e)
            }
        }
    }

    async fn dial(self: &Arc<Self>, peer: NodeId, addr: &str) -> Result<quinn::Connection, TransportError> {
        let conn = self
            .handshake(addr, &crate::certs::node_server_name(peer))
            .await
            .map_err(|reason| TransportError::Connect { peer, addr: addr.to_string(), reason })?;
        let got = tls::peer_node_id(&conn)?;
        if got != peer {
            conn.close(close_code::SELF_CONNECTION.into(), b"wrong peer");
            return Err(TransportError::WrongPeer { expected: peer, got });
        }
        Ok(self.install(peer, conn, self.node_id))
    }

    /// Dials an address without knowing who is there (joining a cluster); returns the node id
    /// its certificate names. The address is remembered for that node.
    pub async fn connect_addr(self: &Arc<Self>, addr: &str) -> Result<NodeId, TransportError> {
        let conn = self
            .handshake(addr, crate::certs::CLUSTER_SERVER_NAME)
            .await
            .map_err(|reason| TransportError::Connect { peer: 0, addr: addr.to_string(), reason })?;
        let peer = tls::peer_node_id(&conn)?;
        if peer == self.node_id {
            conn.close(close_code::SELF_CONNECTION.into(), b"self");
            return Ok(peer);
        }
        self.set_peer_addr(peer, addr);
        self.install(peer, conn, self.node_id);
        Ok(peer)
    }

    async fn handshake(&self, addr: &str, server_name: &str) -> Result<quinn::Connection, String> {
        let target = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| format!("cannot resolve: {e}"))?
            .next()
            .ok_or_else(|| "address resolves to nothing".to_string())?;
        let connecting =
            self.endpoint.connect_with(self.client_config.clone(), target, server_name).map_err(|e| e.to_string())?;
        let outcome = tokio::time::timeout(self.cfg.connect_timeout, connecting).await;
        let result = match outcome {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("handshake timed out after {:?}", self.cfg.connect_timeout)),
        };
        let label = if result.is_ok() { "ok" } else { "failed" };
        self.metrics.handshakes.with_label_values(&["outbound", label]).inc();
        result
    }

    /// Makes `conn` the connection of `peer` unless a live connection that wins the tie-break
    /// exists; returns the connection in use afterwards.
    fn install(self: &Arc<Self>, peer: NodeId, conn: quinn::Connection, dialer: NodeId) -> quinn::Connection {
        let link = self.link(peer);
        let new = Conn { conn, dialer };
        {
            let mut slot = lock(&link.conn);
            if let Some(cur) = slot.as_ref().filter(|c| c.is_alive()) {
                if cur.dialer != dialer && cur.dialer < dialer {
                    // Both ends keep the connection dialled by the lower id.
                    new.conn.close(close_code::DUPLICATE.into(), b"duplicate connection");
                    return cur.conn.clone();
                }
                let code = if cur.dialer == dialer { close_code::REPLACED } else { close_code::DUPLICATE };
                cur.conn.close(code.into(), b"superseded");
            }
            *slot = Some(new.clone());
        }
        self.metrics.connected.with_label_values(&[&peer.to_string()]).set(1);
        debug!(peer, dialer, remote = %new.conn.remote_address(), "peer link established");
        let this = Arc::clone(self);
        let span = info_span!("peer_link", node_id = self.node_id, peer);
        tokio::spawn(this.serve_connection(peer, new.conn.clone()).instrument(span));
        new.conn
    }

    /// Serves streams the peer opens on `conn` until it closes, then forgets it.
    async fn serve_connection(self: Arc<Self>, peer: NodeId, conn: quinn::Connection) {
        let reason = loop {
            match conn.accept_bi().await {
                Ok((send, recv)) => {
                    let this = Arc::clone(&self);
                    tokio::spawn(this.serve_stream(peer, send, recv).in_current_span());
                }
                Err(e) => break e,
            }
        };
        let label = match &reason {
            quinn::ConnectionError::Reset => "reset",
            quinn::ConnectionError::TimedOut => "timed_out",
            quinn::ConnectionError::ApplicationClosed(_) | quinn::ConnectionError::ConnectionClosed(_) => {
                "closed_by_peer"
            }
            quinn::ConnectionError::LocallyClosed => "local",
            _ => "other",
        };
        self.metrics.closed.with_label_values(&[label]).inc();
        let link = self.link(peer);
        let mut slot = lock(&link.conn);
        if slot.as_ref().is_some_and(|c| c.conn.stable_id() == conn.stable_id()) {
            *slot = None;
            self.metrics.connected.with_label_values(&[&peer.to_string()]).set(0);
            info!(peer, reason = %reason, "peer link closed");
        }
    }

    async fn serve_stream(self: Arc<Self>, peer: NodeId, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let read = tokio::time::timeout(self.cfg.rpc_timeout, frame::read_frame(&mut recv, self.cfg.max_frame_bytes));
        let response = match read.await {
            Err(_) => return, // The caller gave up or stalled; drop the stream.
            Ok(Err(e)) => self.frame_error(peer, e),
            Ok(Ok(payload)) => match frame::decode_payload::<Request>(&payload) {
                Err(e) => self.frame_error(peer, e),
                Ok(Request::OpenLane) => return self.serve_lane(peer, send, recv).await,
                Ok(request) => self.respond(peer, request).await,
            },
        };
        match frame::encode(&response) {
            Ok(bytes) => {
                if send.write_all(&bytes).await.is_ok() {
                    let _ = send.finish();
                }
            }
            Err(e) => warn!(peer, error = %e, "cannot encode response"),
        }
    }

    /// Serves a lane: its requests concurrently (up to `max_in_flight_per_peer` at once), each
    /// response tagged with its request's id, in completion order.
    async fn serve_lane(&self, peer: NodeId, send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let capacity = self.cfg.max_in_flight_per_peer as usize;
        let (tx, rx) = tokio::sync::mpsc::channel(capacity.max(1));
        tokio::spawn(lane::write_loop(send, rx).in_current_span());
        let permits = lane::server_permits(self.cfg.max_in_flight_per_peer);
        loop {
            let (id, bytes) = match lane::read_message(&mut recv, self.cfg.max_frame_bytes).await {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(e) => {
                    // A broken length leaves nothing to resynchronise on: the lane ends.
                    self.frame_error(peer, e);
                    break;
                }
            };
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { break };
            let response = match frame::decode::<Request>(&bytes, self.cfg.max_frame_bytes) {
                Ok(request) => self.respond(peer, request),
                Err(e) => {
                    let error = self.frame_error(peer, e);
                    Box::pin(async move { error })
                }
            };
            let tx = tx.clone();
            tokio::spawn(
                async move {
                    let response = response.await;
                    match frame::encode(&response) {
                        Ok(bytes) => {
                            let _ = tx.send((id, bytes)).await;
                        }
                        Err(e) => warn!(peer, error = %e, "cannot encode response"),
                    }
                    drop(permit);
                }
                .in_current_span(),
            );
        }
    }

    /// Answers one request through the installed handler.
    fn respond(&self, peer: NodeId, request: Request) -> BoxFuture<'static, Response> {
        self.metrics.served.with_label_values(&[request.method()]).inc();
        let error = |code, message: &str| -> BoxFuture<'static, Response> {
            let response = Response::Error(RpcError { code, message: message.into() });
            Box::pin(async move { response })
        };
        match (request, self.handler.get()) {
            (Request::OpenLane, _) => error(RpcErrorCode::BadFrame, "open_lane is only the first frame of a stream"),
            (request, Some(h)) => h.handle(peer, request),
            (_, None) => error(RpcErrorCode::Unavailable, "node is starting"),
        }
    }

    fn frame_error(&self, peer: NodeId, e: FrameError) -> Response {
        self.metrics.frame_errors.with_label_values(&[e.kind()]).inc();
        warn!(peer, error = %e, "refused a peer frame");
        let code = match e {
            FrameError::TooLarge { .. } => RpcErrorCode::FrameTooLarge,
            FrameError::UnsupportedVersion { .. } => RpcErrorCode::UnsupportedVersion,
            _ => RpcErrorCode::BadFrame,
        };
        Response::Error(RpcError { code, message: e.to_string() })
    }

    /// Accepts incoming connections until the endpoint closes. Run by the transport actor.
    pub async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let this = Arc::clone(&self);
            let span = info_span!("peer_accept", node_id = self.node_id, remote = %incoming.remote_address());
            tokio::spawn(async move { this.accept_one(incoming).await }.instrument(span));
        }
    }

    async fn accept_one(self: Arc<Self>, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        let conn = match tokio::time::timeout(self.cfg.connect_timeout, incoming).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                self.metrics.handshakes.with_label_values(&["inbound", "failed"]).inc();
                warn!(%remote, error = %e, "refused an inbound peer handshake");
                return;
            }
            Err(_) => {
                self.metrics.handshakes.with_label_values(&["inbound", "failed"]).inc();
                warn!(%remote, "inbound peer handshake timed out");
                return;
            }
        };
        let peer = match tls::peer_node_id(&conn) {
            Ok(peer) if peer != self.node_id => peer,
            Ok(_) => {
                conn.close(close_code::SELF_CONNECTION.into(), b"same node id");
                self.metrics.handshakes.with_label_values(&["inbound", "failed"]).inc();
                warn!(%remote, "refused a peer presenting this node's own id");
                return;
            }
            Err(e) => {
                conn.close(close_code::SELF_CONNECTION.into(), b"no node id");
                self.metrics.handshakes.with_label_values(&["inbound", "failed"]).inc();
                warn!(%remote, error = %e, "refused a peer certificate without a node id");
                return;
            }
        };
        self.metrics.handshakes.with_label_values(&["inbound", "ok"]).inc();
        self.install(peer, conn, peer);
    }

    /// Closes the connection to `peer`, if any (e.g. when the failure detector gave up on it).
    pub fn disconnect(&self, peer: NodeId) {
        let link = self.link(peer);
        let current = lock(&link.conn).take();
        if let Some(c) = current {
            c.conn.close(close_code::PEER_DOWN.into(), b"peer considered down");
            self.metrics.connected.with_label_values(&[&peer.to_string()]).set(0);
        }
    }

    /// Closes every connection and the endpoint, waiting briefly for the close to reach peers.
    pub async fn shutdown(&self, wait: Duration) {
        self.endpoint.close(close_code::SHUTDOWN.into(), b"node shutting down");
        let _ = tokio::time::timeout(wait, self.endpoint.wait_idle()).await;
    }
}

#[cfg(test)]
mod tests;
