//! The Raft type configuration shared by every group, and the commands groups replicate.

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize, Serialize};

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

/// One state-machine command. Each service adds its variants; a log entry carries a batch.
/// New variants go at the end and stay no larger than the largest one (a compile-time check
/// below), so logs written by earlier builds still decode.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Adds `by` to counter `name` (absent counters are 0); answers the new value.
    CounterIncrement {
        /// Counter name.
        name: String,
        /// Amount, at least 1.
        by: u64,
    },
    /// Creates a user (meta group) reachable by the SHA-256 of its bearer token; answers 1, or
    /// rejects a token hash already in use.
    UserCreate {
        /// SHA-256 of the token, hex.
        token_hash: String,
        /// New user id.
        id: String,
        /// Display name.
        name: String,
    },
    /// Reserves `count` consecutive values of counter `name`; answers the first reserved value.
    CounterReserve {
        /// Counter name.
        name: String,
        /// How many values.
        count: u64,
    },
    /// Meta: records the bootstrap placement unless one exists; answers the layout version.
    PlacementInit {
        /// Members and layout the founders started with.
        placement: Placement,
    },
    /// Meta: adds a member or updates its addresses and dead flag; answers the layout version.
    MemberUpsert {
        /// The member.
        member: MemberRec,
    },
    /// Meta: replaces the layout if its version is still `expected_version`; answers the new
    /// version, or rejects a stale proposal.
    LayoutSet {
        /// The version the proposer planned from.
        expected_version: u64,
        /// The new replicas of every group.
        groups: BTreeMap<GroupId, Vec<NodeId>>,
    },
    /// Stores service record `value` under `key` unless the key exists; answers 1, or rejects.
    RecordCreate {
        /// Namespaced key (`url/{code}`, …).
        key: String,
        /// Encoded record.
        value: Vec<u8>,
    },
    /// Replaces the service record under `key` if it still is `expected` (compare-and-set);
    /// answers 1, or rejects a missing or changed record.
    RecordReplace {
        /// Namespaced key.
        key: String,
        /// The encoded record the proposer read.
        expected: Vec<u8>,
        /// The new encoded record.
        value: Vec<u8>,
    },
    /// Shortener: adds clicks of link `code` (counted on one node) to its click record; answers
    /// the new total.
    ClicksAdd {
        /// The link's code.
        code: String,
        /// Clicks per day (days since the Unix epoch, UTC).
        days: Vec<(u32, u64)>,
        /// Clicks per referrer host.
        referrers: Vec<(String, u64)>,
    },
}

// Logs hold commands in archived vectors: a larger archived `Command` would misplace the
// elements of every entry written before. Keep new variants within this size.
const _: () = assert!(std::mem::size_of::<ArchivedCommand>() == 40);

/// The answer to one [`Command`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    /// A counter value.
    Value(u64),
    /// The command was refused by the state machine (e.g. overflow); nothing changed.
    Rejected {
        /// Why.
        reason: String,
    },
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

/// A Raft group id: 0 is meta, 1..=P are partitions.
pub type GroupId = u64;
