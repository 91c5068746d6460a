//! The log entry: the Raft type configuration shared by every group, and the commands groups
//! replicate (meta commands, or services' commands as `(service id, payload)`).

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize, Serialize};

pub use super::kv::ServiceId;
use crate::NodeId;
use crate::placement::{MemberRec, Placement};

/// What a Raft group knows about a member node.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// QUIC address, host:port.
    pub peer_addr: String,
    /// HTTP address, host:port.
    pub http_addr: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.peer_addr)
    }
}

/// One state-machine command: a meta command of the substrate, or a service's command as the
/// service encoded it. The archived layout does not change when services are added.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Placement in the meta group.
    Meta(MetaCommand),
    /// A service's command, applied by the service registry.
    Service {
        /// The service's id.
        service: ServiceId,
        /// The command, encoded by the service (`[format version][rkyv]`).
        payload: Vec<u8>,
    },
}

/// The substrate's own commands (meta group).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum MetaCommand {
    /// Records the bootstrap placement unless one exists; answers the layout version.
    PlacementInit {
        /// Members and layout the founders started with.
        placement: Placement,
    },
    /// Adds a member or updates its addresses and dead flag; answers the layout version.
    MemberUpsert {
        /// The member.
        member: MemberRec,
    },
    /// Replaces the layout if its version is still `expected_version`; answers the new version.
    LayoutSet {
        /// The version the proposer planned from.
        expected_version: u64,
        /// The new replicas of every group.
        groups: BTreeMap<GroupId, Vec<NodeId>>,
    },
}

/// The answer to a [`MetaCommand`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaResult {
    /// The layout version after the command.
    Version(u64),
    /// No placement is recorded yet; nothing changed.
    NotInitialised,
    /// `LayoutSet` planned from an older layout; nothing changed.
    StaleLayout {
        /// The layout version in force.
        current: u64,
    },
}

/// Why the substrate could not hand a service command to its service; nothing changed.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No service has this id in the build that applied it.
    #[error("no service has id {service}")]
    UnknownService {
        /// The id.
        service: ServiceId,
    },
    /// The payload did not decode as the service's command.
    #[error("the command does not decode as a command of service {service}")]
    BadPayload {
        /// The id.
        service: ServiceId,
    },
}

/// The answer to one [`Command`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    /// A meta command's answer.
    Meta(MetaResult),
    /// A service command's answer (its reply or its rejection), encoded by the service.
    Service(Vec<u8>),
    /// Not applied.
    Refused(Refusal),
}

/// The application data of one log entry: every command the batching proposer packed together.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandBatch(pub Vec<Command>);

/// The answers to a [`CommandBatch`], in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchResult(pub Vec<CommandResult>);

/// Snapshot data: a file. Snapshots are streamed to and from disk, never held whole in memory.
pub type SnapshotData = tokio::fs::File;

openraft::declare_raft_types!(
    /// Shoal's Raft type configuration: every group uses it.
    pub TypeConfig:
        D = CommandBatch,
        R = BatchResult,
        NodeId = NodeId,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotData,
);

pub use crate::placement::GroupId;
