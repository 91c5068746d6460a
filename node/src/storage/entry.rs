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

/// openraft logs application data by `Display`: the number of commands, not their bytes.
impl std::fmt::Display for CommandBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} command(s)", self.0.len())
    }
}

/// The answers to a [`CommandBatch`], in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchResult(pub Vec<CommandResult>);

/// Snapshot data: a snapshot file, open, and where it lies. Snapshots are streamed to and from
/// disk, never held whole in memory. A snapshot received from a leader is written to an
/// `incoming-*.part` file of the group's snapshot folder (see `Store::receive_snapshot`) and moved
/// into place when installed; any other is copied.
#[derive(Debug)]
pub struct SnapshotData {
    /// The open file, positioned anywhere (readers seek to the start).
    pub file: tokio::fs::File,
    /// Its path.
    pub path: std::path::PathBuf,
}

openraft::declare_raft_types!(
    /// Shoal's Raft type configuration: every group uses it. The leader id is openraft's default
    /// (`leader_id_adv`: a log id is `(term, node, index)`), as in openraft 0.9, so stored log ids
    /// and votes keep their layout.
    pub TypeConfig:
        D = CommandBatch,
        R = BatchResult,
        NodeId = NodeId,
        Node = NodeInfo,
);

/// A log id of every group.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A vote of every group.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A log entry of every group.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A stored membership of every group.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// A membership of every group.
pub type Membership = openraft::Membership<NodeId, NodeInfo>;
/// The committed leader id in a log id.
pub type CommittedLeaderId = openraft::type_config::alias::CommittedLeaderIdOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with its data.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;

pub use crate::placement::GroupId;
