//! Services' peer messages: typed messages a service sends to its own counterpart on another
//! node, carried by the transport as `(service id, payload)` ([`ServiceCall`]) so the transport
//! never knows a service.

use std::sync::Arc;
use std::time::Duration;

use super::{Payload, ServiceId};
use crate::NodeId;
use crate::storage::records::RecordError;
use crate::transport::proto::ServiceCall;
use crate::transport::{Transport, TransportError};

/// A message of one service to the same service on another node.
pub trait PeerMessage: Payload {
    /// The service that sends and serves it.
    const SERVICE: ServiceId;
    /// Method name for transport metrics and logs.
    const METHOD: &'static str;
    /// The answer.
    type Reply: Payload;
}

/// Why a peer message got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The call failed (unreachable, timed out, refused).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The message or its answer could not be encoded or decoded.
    #[error("peer message could not be coded: {0}")]
    Codec(#[from] RecordError),
}

/// Sends `message` to `to` and waits at most `deadline` for its answer.
pub async fn call<M: PeerMessage>(
    transport: &Arc<Transport>,
    to: NodeId,
    message: &M,
    deadline: Duration,
) -> Result<M::Reply, PeerError> {
    let call = ServiceCall { service: M::SERVICE, payload: message.encode()? };
    let bytes = transport.call_with_timeout(to, call, deadline).await?;
    Ok(M::Reply::decode(&bytes)?)
}

/// The name of service `service`'s peer method, for transport metrics (`None`: unknown id).
pub fn method_of(service: ServiceId) -> Option<&'static str> {
    use super::Service;
    match service {
        super::ratelimit::ID => Some(<super::ratelimit::RateChecks as PeerMessage>::METHOD),
        s if s == super::urls::Urls::ID => Some(<super::urls::UrlDeleted as PeerMessage>::METHOD),
        s if s == super::chat::Chat::ID => Some(<super::chat::delivery::ChatPeer as PeerMessage>::METHOD),
        s if s == super::objects::Objects::ID => Some(<super::objects::ChunkCall as PeerMessage>::METHOD),
        _ => None,
    }
}
