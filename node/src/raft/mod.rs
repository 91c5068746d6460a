//! Raft: the type configuration and commands every group replicates. Groups, the batching
//! proposer and the QUIC network arrive on top of [`crate::storage`].

pub mod types;

pub use types::{
    BatchResult, Command, CommandBatch, CommandResult, GroupId, NodeInfo, SnapshotData, TypeConfig,
};
