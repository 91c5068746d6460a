//! openraft's network for one group, over the node's QUIC transport.
//!
//! `new_client` is cheap: it only names the target; the transport pools one connection per peer
//! and multiplexes every group's RPCs on it (one stream per call). openraft 0.10 hands the network
//! a whole snapshot (`RaftNetworkV2::full_snapshot`); it goes out as a transfer of chunks read
//! from the snapshot file, one call each, and the receiver installs it after the last chunk
//! (see [`super::RaftHost::receive_snapshot_chunk`]).

use std::future::Future;
use std::sync::Arc;

use openraft::OptionalSend;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::wire::{self, RaftRequest, RaftRequestBody, RaftResponse};
use super::{GroupId, NodeInfo, SnapshotData, TypeConfig};
use crate::NodeId;
use crate::storage::entry::{Snapshot, Vote};
use crate::transport::{Transport, TransportError};

/// Bytes per snapshot chunk when openraft names none (it passes `snapshot_max_chunk_size`).
const SNAPSHOT_CHUNK: usize = 1024 * 1024;

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

fn is_unreachable(e: &TransportError) -> bool {
    matches!(
        e,
        TransportError::Unreachable { .. }
            | TransportError::UnknownPeer { .. }
            | TransportError::Connect { .. }
            | TransportError::WrongPeer { .. }
    )
}

fn transport_error(e: TransportError) -> RPCError<TypeConfig> {
    match is_unreachable(&e) {
        true => RPCError::Unreachable(Unreachable::new(&e)),
        false => RPCError::Network(NetworkError::new(&e)),
    }
}

fn streaming_error(e: TransportError) -> StreamingError<TypeConfig> {
    match is_unreachable(&e) {
        true => StreamingError::Unreachable(Unreachable::new(&e)),
        false => StreamingError::Network(NetworkError::new(&e)),
    }
}

fn unexpected_io(r: &RaftResponse) -> std::io::Error {
    std::io::Error::other(format!("unexpected raft response: {r:?}"))
}

fn unexpected(r: &RaftResponse) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&unexpected_io(r)))
}

impl GroupNetwork {
    async fn send(&self, body: RaftRequestBody, option: &RPCOption) -> Result<RaftResponse, TransportError> {
        self.transport.call_with_timeout(self.target, RaftRequest { group: self.group, body }, option.hard_ttl()).await
    }

    async fn vote_or_pre_vote(
        &self,
        rpc: VoteRequest<TypeConfig>,
        pre_vote: bool,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let r = self.send(wire::vote_request(&rpc, pre_vote), &option).await.map_err(transport_error)?;
        wire::from_vote_response(r.clone()).ok_or_else(|| unexpected(&r))
    }

    /// Sends `snapshot` as one transfer of chunks; the answer to the last one carries the vote
    /// the receiver installed it under. A receiver with a higher vote ends the transfer early.
    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let io = |e: std::io::Error| StreamingError::Network(NetworkError::new(&e));
        let transfer = format!("{:016x}", rand::random::<u64>());
        let chunk = option.snapshot_chunk_size().unwrap_or(SNAPSHOT_CHUNK).max(1);
        let Snapshot { meta, snapshot: SnapshotData { mut file, .. } } = snapshot;
        file.seek(std::io::SeekFrom::Start(0)).await.map_err(io)?;
        let mut offset = 0u64;
        loop {
            let mut data = Vec::with_capacity(chunk);
            let read = (&mut file).take(chunk as u64).read_to_end(&mut data).await.map_err(io)?;
            let done = read < chunk;
            let body = wire::snapshot_chunk(&vote, &meta, &transfer, offset, data, done);
            match self.send(body, &option).await.map_err(streaming_error)? {
                RaftResponse::Snapshot { vote: theirs } => {
                    let theirs = Vote::from(&theirs);
                    if done || theirs > vote {
                        return Ok(SnapshotResponse::new(theirs));
                    }
                }
                // The receiver lost the transfer (restarted, or another one replaced it):
                // openraft sends the snapshot again after a backoff.
                other => return Err(io(unexpected_io(&other))),
            }
            offset += read as u64;
        }
    }
}

impl RaftNetworkV2<TypeConfig> for GroupNetwork {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let r = self.send(wire::append_request(&rpc), &option).await.map_err(transport_error)?;
        wire::from_append_response(r.clone()).ok_or_else(|| unexpected(&r))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_or_pre_vote(rpc, false, option).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.vote_or_pre_vote(rpc, true, option).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        let r = self.send(wire::transfer_notice(&req), &option).await.map_err(transport_error)?;
        wire::from_transfer_response(r.clone()).ok_or_else(|| unexpected(&r))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            sent = self.send_snapshot(vote, snapshot, option) => sent,
        }
    }
}
