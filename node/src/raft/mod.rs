//! Raft: the meta group and the partition groups hosted on this node, their network on the QUIC
//! transport, and what a group's leader serves (proposals, reads, membership changes, leader
//! hand-overs). Routing to the leader and batching are [`crate::router`]'s. Durable state, and the log entry format
//! ([`crate::storage::entry`]), are in [`crate::storage`].

pub mod error;
pub mod group;
mod handover;
pub mod host;
pub mod metrics;
pub mod network;
mod reconfigure;
mod tick;
pub mod view;
pub mod wire;

pub use crate::storage::entry::{
    BatchResult, Command, CommandBatch, CommandResult, GroupId, MetaCommand, MetaResult, NodeInfo, Refusal, ServiceId,
    SnapshotData, TypeConfig,
};
pub use error::{ProposeError, RaftHostError};

/// One group's Raft instance (openraft 0.10 names the state machine type in it).
pub type GroupRaft = openraft::Raft<TypeConfig, crate::storage::StateMachineStore>;
pub use host::RaftHost;
pub use tick::QUIET_AFTER;
