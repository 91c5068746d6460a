//! The peer RPC vocabulary: one [`Request`] enum, one [`Response`] enum, and [`Rpc`] tying each
//! request type to its reply type. Services' messages travel as [`ServiceCall`]s: the transport
//! never names a service.

use rkyv::{Archive, Deserialize, Serialize};

use crate::NodeId;

/// A member as nodes tell each other about it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// Node id.
    pub id: NodeId,
    /// QUIC address, host:port.
    pub peer_addr: String,
    /// HTTP address, host:port.
    pub http_addr: String,
}

/// Heartbeat: "are you there?", carrying the members the sender knows.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// The sender's member list, so members learn of joined nodes.
    pub members: Vec<MemberRecord>,
}

/// Heartbeat answer, carrying the members the responder knows.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    /// The responder's member list.
    pub members: Vec<MemberRecord>,
}

/// Echo: the payload comes back unchanged (benchmarks and diagnostics).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Echo {
    /// Arbitrary bytes.
    pub payload: Vec<u8>,
}

/// A node not among the founders asks to be added.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The joining node; its id must match its certificate.
    pub member: MemberRecord,
}

/// Answer to [`Join`]: everyone the member knows, the joiner included.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The member list.
    pub members: Vec<MemberRecord>,
}

/// A message for one service: the transport carries it without knowing the service.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ServiceCall {
    /// The service's id.
    pub service: u16,
    /// The message, encoded by the service.
    pub payload: Vec<u8>,
}

impl From<ServiceCall> for Request {
    fn from(c: ServiceCall) -> Self {
        Request::Service(c)
    }
}

impl Rpc for ServiceCall {
    type Reply = Vec<u8>;
    const METHOD: &'static str = "service";
    fn reply(response: Response) -> Option<Vec<u8>> {
        match response {
            Response::Service(r) => Some(r),
            _ => None,
        }
    }
}

/// Names a service's peer method for metrics (`None`: unknown id).
pub type ServiceMethods = fn(u16) -> Option<&'static str>;

static SERVICE_METHODS: std::sync::OnceLock<ServiceMethods> = std::sync::OnceLock::new();

/// Tells the transport how to name service calls in metrics and logs (once per process; the
/// service registry provides it).
pub fn name_service_methods(names: ServiceMethods) {
    let _ = SERVICE_METHODS.set(names);
}

/// Every request a peer can send.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Heartbeat.
    Ping(Ping),
    /// Echo.
    Echo(Echo),
    /// Join the cluster.
    Join(Join),
    /// A Raft group's message.
    Raft(crate::raft::wire::RaftRequest),
    /// A message for a service, served by the same service on the callee.
    Service(ServiceCall),
    /// The first frame of a lane: the stream carries many tagged calls from here on (see
    /// `transport::lane`). Never a call of its own.
    OpenLane,
}

impl Request {
    /// Method name for metrics and logs.
    pub fn method(&self) -> &'static str {
        match self {
            Request::Ping(_) => Ping::METHOD,
            Request::Echo(_) => Echo::METHOD,
            Request::Join(_) => Join::METHOD,
            Request::OpenLane => "open_lane",
            Request::Service(call) => SERVICE_METHODS.get().and_then(|name| name(call.service)).unwrap_or("service"),
            Request::Raft(r) => {
                use crate::raft::wire::RaftRequestBody as B;
                match r.body {
                    B::Append { .. } => "raft_append",
                    B::Vote { .. } => "raft_vote",
                    B::Snapshot { .. } => "raft_snapshot",
                    B::Propose { .. } => "raft_propose",
                    B::Read { .. } => "raft_read",
                    B::Reconfigure { .. } => "raft_reconfigure",
                    B::TransferLeader { .. } | B::LeaderTransferNotice { .. } => "raft_transfer_leader",
                    B::MemberOf { .. } => "raft_member_of",
                    B::QuietBeat { .. } => "raft_quiet_beat",
                }
            }
        }
    }
}

/// Machine-readable reason of a failed call, answered by the callee.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcErrorCode {
    /// The request frame could not be decoded.
    BadFrame,
    /// The request frame's version is not spoken here.
    UnsupportedVersion,
    /// The request frame exceeds the callee's limit.
    FrameTooLarge,
    /// The callee cannot serve this request now (e.g. shutting down).
    Unavailable,
    /// The request was understood but refused.
    Refused,
}

/// A failed call, as answered by the callee.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// Why.
    pub code: RpcErrorCode,
    /// A human sentence.
    pub message: String,
}

/// Every response a peer can send.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// To [`Request::Ping`].
    Pong(Pong),
    /// To [`Request::Echo`].
    Echo(Echo),
    /// To [`Request::Join`].
    Joined(Joined),
    /// To [`Request::Raft`].
    Raft(crate::raft::wire::RaftResponse),
    /// To [`Request::Service`]: the service's answer, encoded by it.
    Service(Vec<u8>),
    /// The call failed at the callee.
    Error(RpcError),
}

/// A request type and the reply type it is answered with.
pub trait Rpc: Into<Request> {
    /// The successful answer.
    type Reply;
    /// Method name for metrics and logs.
    const METHOD: &'static str;
    /// Picks the reply out of a response; `None` when the response is of another kind.
    fn reply(response: Response) -> Option<Self::Reply>;
}

macro_rules! rpc {
    ($req:ident => $variant:ident($reply:ident), $method:literal) => {
        impl From<$req> for Request {
            fn from(r: $req) -> Self {
                Request::$req(r)
            }
        }
        impl Rpc for $req {
            type Reply = $reply;
            const METHOD: &'static str = $method;
            fn reply(response: Response) -> Option<$reply> {
                match response {
                    Response::$variant(r) => Some(r),
                    _ => None,
                }
            }
        }
    };
}

rpc!(Ping => Pong(Pong), "ping");
rpc!(Echo => Echo(Echo), "echo");
rpc!(Join => Joined(Joined), "join");

impl From<crate::raft::wire::RaftRequest> for Request {
    fn from(r: crate::raft::wire::RaftRequest) -> Self {
        Request::Raft(r)
    }
}

impl Rpc for crate::raft::wire::RaftRequest {
    type Reply = crate::raft::wire::RaftResponse;
    const METHOD: &'static str = "raft";
    fn reply(response: Response) -> Option<Self::Reply> {
        match response {
            Response::Raft(r) => Some(r),
            _ => None,
        }
    }
}
