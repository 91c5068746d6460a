//! openraft's network for one group, over the node's QUIC transport.
//!
//! `new_client` is cheap: it only names the target; the transport pools one connection per peer
//! and multiplexes every group's RPCs on it (one stream per call).

use std::sync::Arc;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use super::wire::{self, RaftRequest, RaftRequestBody, RaftResponse};
use super::{GroupId, NodeInfo, TypeConfig};
use crate::NodeId;
use crate::transport::{Transport, TransportError};

/// Makes clients for one group.
pub struct GroupNetworkFactory {
    /// The group.
    pub group: GroupId,
    /// The node's transport.
    pub transport: Arc<Transport>,
}

/// A client of one peer for one group.
pub struct GroupNetwork {
    group: GroupId,
    target: NodeId,
    transport: Arc<Transport>,
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> GroupNetwork {
        if !node.peer_addr.is_empty() {
            self.transport.set_peer_addr(target, &node.peer_addr);
        }
        GroupNetwork { group: self.group, target, transport: Arc::clone(&self.transport) }
    }
}

type Err<E = openraft::error::Infallible> = RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>;

fn transport_error<E: std::error::Error>(e: TransportError) -> RPCError<NodeId, NodeInfo, E> {
    match e {
        TransportError::Unreachable { .. }
        | TransportError::UnknownPeer { .. }
        | TransportError::Connect { .. }
        | TransportError::WrongPeer { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

fn unexpected<E: std::error::Error>(r: &RaftResponse) -> RPCError<NodeId, NodeInfo, E> {
    let e = std::io::Error::other(format!("unexpected raft response: {r:?}"));
    RPCError::Network(NetworkError::new(&e))
}

impl GroupNetwork {
    async fn send(&self, body: RaftRequestBody, option: &RPCOption) -> Result<RaftResponse, TransportError> {
        self.transport.call_with_timeout(self.target, RaftRequest { group: self.group, body }, option.hard_ttl()).await
    }
}

impl RaftNetwork<TypeConfig> for GroupNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, Err> {
        let r = self.send(wire::append_request(&rpc), &option).await.map_err(transport_error)?;
        wire::from_append_response(r.clone()).ok_or_else(|| unexpected(&r))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, Err<InstallSnapshotError>> {
        let r = self.send(wire::snapshot_request(&rpc), &option).await.map_err(transport_error)?;
        match r {
            RaftResponse::Snapshot { vote } => Ok(InstallSnapshotResponse { vote: (&vote).into() }),
            RaftResponse::SnapshotMismatch { expect_id, expect_offset, got_id, got_offset } => {
                let mismatch = wire::snapshot_mismatch(expect_id, expect_offset, got_id, got_offset);
                Err(RPCError::RemoteError(RemoteError::new(
                    self.target,
                    RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch)),
                )))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, Err> {
        let r = self.send(wire::vote_request(&rpc), &option).await.map_err(transport_error)?;
        wire::from_vote_response(r.clone()).ok_or_else(|| unexpected(&r))
    }
}
