//! Raft: the meta group and the partition groups, their network on the QUIC transport, the
//! batching proposer and the router in front of them. Durable state, and the log entry format
//! ([`crate::storage::entry`]), are in [`crate::storage`].

pub mod actor;
pub mod group;
mod handover;
pub mod host;
pub mod metrics;
pub mod network;
mod placement_loop;
mod reconfigure;
pub mod view;
pub mod wire;

pub use crate::storage::entry::{
    BatchResult, Command, CommandBatch, CommandResult, GroupId, MetaCommand, MetaResult, NodeInfo, Refusal, ServiceId,
    SnapshotData, TypeConfig,
};
pub use host::{ProposeError, RaftHost};
