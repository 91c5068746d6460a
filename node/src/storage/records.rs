//! On-disk records: `[format version: u8][rkyv archive]`, decoded through one migration point.
//!
//! openraft's own types have no rkyv support, so each stored openraft value has a mirror record
//! here with conversions both ways. Every read goes through rkyv validation.

use std::collections::{BTreeMap, BTreeSet};

use openraft::EntryPayload;
use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::de::Pool;
use rkyv::rancor::{self, Strategy};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use super::entry::{CommandBatch, CommittedLeaderId, Entry, LogId, Membership, NodeInfo, StoredMembership, Vote};
use crate::NodeId;

/// The record format this build writes.
pub const FORMAT_VERSION: u8 = 1;

/// A stored record could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Written by a newer (or unknown) format.
    #[error("stored record has format version {0}; this build reads up to {FORMAT_VERSION}")]
    UnknownVersion(u8),
    /// Zero bytes.
    #[error("stored record is empty")]
    Empty,
    /// Failed validation.
    #[error("stored record is corrupt")]
    Corrupt,
    /// Could not be encoded.
    #[error("record could not be encoded")]
    Encode,
}

/// Encodes a record with the current format version.
pub fn encode<T>(value: &T) -> Result<Vec<u8>, RecordError>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    let body = rkyv::to_bytes::<rancor::Error>(value).map_err(|_| RecordError::Encode)?;
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a record: the one migration point. A future format 2 reads format-1 bytes here and
/// converts them.
pub fn decode<T>(bytes: &[u8]) -> Result<T, RecordError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + Deserialize<T, Strategy<Pool, rancor::Error>>,
{
    let (&version, body) = bytes.split_first().ok_or(RecordError::Empty)?;
    match version {
        FORMAT_VERSION => {
            let mut aligned = AlignedVec::<16>::with_capacity(body.len());
            aligned.extend_from_slice(body);
            rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(|_| RecordError::Corrupt)
        }
        other => Err(RecordError::UnknownVersion(other)),
    }
}

/// Mirror of [`LogId`] (openraft's `leader_id_adv`: term, leader node, index).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogIdRec {
    /// Term of the leader that proposed it.
    pub term: u64,
    /// That leader.
    pub node: NodeId,
    /// Log index.
    pub index: u64,
}

impl From<&LogId> for LogIdRec {
    fn from(l: &LogId) -> Self {
        Self { term: l.leader_id.term, node: l.leader_id.node_id, index: l.index }
    }
}

impl From<&LogIdRec> for LogId {
    fn from(r: &LogIdRec) -> Self {
        LogId { leader_id: CommittedLeaderId { term: r.term, node_id: r.node }, index: r.index }
    }
}

/// Mirror of [`Vote`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteRec {
    /// Term.
    pub term: u64,
    /// Candidate or leader.
    pub node: NodeId,
    /// Granted by a quorum.
    pub committed: bool,
}

impl From<&Vote> for VoteRec {
    fn from(v: &Vote) -> Self {
        Self { term: v.leader_id.term, node: v.leader_id.node_id, committed: v.committed }
    }
}

impl From<&VoteRec> for Vote {
    fn from(r: &VoteRec) -> Self {
        if r.committed { Vote::new_committed(r.term, r.node) } else { Vote::new(r.term, r.node) }
    }
}

/// Mirror of [`Membership`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct MembershipRec {
    /// Voter sets (two during a joint change).
    pub configs: Vec<Vec<NodeId>>,
    /// Every node, voters and learners.
    pub nodes: Vec<(NodeId, NodeInfo)>,
}

impl From<&Membership> for MembershipRec {
    fn from(m: &Membership) -> Self {
        Self {
            configs: m.get_joint_config().iter().map(|c| c.iter().copied().collect()).collect(),
            nodes: m.nodes().map(|(id, n)| (*id, n.clone())).collect(),
        }
    }
}

/// openraft checks a membership when it is built (every voter has its node, no voter set is
/// empty); a record failing that is corrupt.
impl TryFrom<&MembershipRec> for Membership {
    type Error = RecordError;

    fn try_from(r: &MembershipRec) -> Result<Self, RecordError> {
        let configs: Vec<BTreeSet<NodeId>> = r.configs.iter().map(|c| c.iter().copied().collect()).collect();
        let nodes: BTreeMap<NodeId, NodeInfo> = r.nodes.iter().cloned().collect();
        Membership::new(configs, nodes).map_err(|_| RecordError::Corrupt)
    }
}

/// Mirror of [`StoredMembership`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoredMembershipRec {
    /// The entry that carried it.
    pub log_id: Option<LogIdRec>,
    /// The membership.
    pub membership: MembershipRec,
}

impl From<&StoredMembership> for StoredMembershipRec {
    fn from(m: &StoredMembership) -> Self {
        Self { log_id: m.log_id().as_ref().map(LogIdRec::from), membership: m.membership().into() }
    }
}

impl TryFrom<&StoredMembershipRec> for StoredMembership {
    type Error = RecordError;

    fn try_from(r: &StoredMembershipRec) -> Result<Self, RecordError> {
        Ok(StoredMembership::new(r.log_id.as_ref().map(LogId::from), (&r.membership).try_into()?))
    }
}

/// Mirror of an entry's payload.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum PayloadRec {
    /// No-op (a new leader's first entry).
    Blank,
    /// Application commands.
    Normal(CommandBatch),
    /// A membership change.
    Membership(MembershipRec),
}

/// Mirror of a log entry.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EntryRec {
    /// Its id.
    pub log_id: LogIdRec,
    /// Its payload.
    pub payload: PayloadRec,
}

impl From<&Entry> for EntryRec {
    fn from(e: &Entry) -> Self {
        let payload = match &e.payload {
            EntryPayload::Blank => PayloadRec::Blank,
            EntryPayload::Normal(batch) => PayloadRec::Normal(batch.clone()),
            EntryPayload::Membership(m) => PayloadRec::Membership(m.into()),
        };
        Self { log_id: (&e.log_id).into(), payload }
    }
}

impl EntryRec {
    /// openraft's entry (a membership openraft refuses makes the record corrupt).
    pub fn into_entry(self) -> Result<Entry, RecordError> {
        let r = self;
        let payload = match r.payload {
            PayloadRec::Blank => EntryPayload::Blank,
            PayloadRec::Normal(batch) => EntryPayload::Normal(batch),
            PayloadRec::Membership(m) => EntryPayload::Membership((&m).try_into()?),
        };
        Ok(Entry { log_id: (&r.log_id).into(), payload })
    }
}

/// What a snapshot file starts with.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Last entry included.
    pub last_log_id: Option<LogIdRec>,
    /// Membership as of that entry.
    pub last_membership: StoredMembershipRec,
    /// Unique id of this snapshot.
    pub snapshot_id: String,
}

/// One state-machine row in a snapshot file.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum SnapshotRow {
    /// The meta group's placement record, as stored (an encoded [`crate::placement::Placement`]).
    Placement {
        /// The encoded record.
        record: Vec<u8>,
    },
    /// A service's row, as stored.
    Service {
        /// The service's id.
        service: u16,
        /// Its key.
        key: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::entry::Command;

    #[test]
    fn entry_round_trips_through_a_record() {
        let e = Entry {
            log_id: LogId { leader_id: CommittedLeaderId { term: 3, node_id: 2 }, index: 17 },
            payload: EntryPayload::Normal(CommandBatch(vec![Command::Service { service: 3, payload: vec![1, 2] }])),
        };
        let bytes = encode(&EntryRec::from(&e)).expect("encode");
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back = decode::<EntryRec>(&bytes).expect("decode").into_entry().expect("valid entry");
        assert_eq!(back.log_id, e.log_id);
        assert!(matches!(back.payload, EntryPayload::Normal(ref b) if b.0.len() == 1));
    }

    #[test]
    fn unknown_versions_and_corruption_are_refused() {
        let mut bytes = encode(&VoteRec { term: 1, node: 2, committed: true }).expect("encode");
        bytes[0] = 9;
        assert!(matches!(decode::<VoteRec>(&bytes), Err(RecordError::UnknownVersion(9))));
        assert!(matches!(decode::<VoteRec>(&[]), Err(RecordError::Empty)));
        assert!(matches!(decode::<EntryRec>(&[FORMAT_VERSION, 1, 2, 3]), Err(RecordError::Corrupt)));
    }

    #[test]
    fn membership_round_trips() {
        let m = Membership::new(
            vec![[1, 2, 3].into_iter().collect()],
            (1..=4)
                .map(|i| (i, NodeInfo { peer_addr: format!("h:{i}"), http_addr: String::new() }))
                .collect::<BTreeMap<_, _>>(),
        )
        .expect("valid membership");
        let back = Membership::try_from(&MembershipRec::from(&m)).expect("valid record");
        assert_eq!(back, m);
        // A voter without its node is refused by openraft: such a record is corrupt.
        let broken = MembershipRec { configs: vec![vec![1, 5]], nodes: vec![(1, NodeInfo::default())] };
        assert!(matches!(Membership::try_from(&broken), Err(RecordError::Corrupt)));
    }
}
