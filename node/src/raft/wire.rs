//! Raft RPCs on the peer transport: rkyv mirrors of openraft's messages, multiplexed by group.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, TransferLeaderError, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use rkyv::{Archive, Deserialize, Serialize};

use super::{Command, CommandResult, GroupId, NodeInfo, ServiceId, TypeConfig};
use crate::NodeId;
use crate::storage::entry::{LogId, SnapshotMeta, Vote};
use crate::storage::records::{EntryRec, LogIdRec, RecordError, StoredMembershipRec, VoteRec};

/// A Raft message for one group.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RaftRequest {
    /// The group.
    pub group: GroupId,
    /// The message.
    pub body: RaftRequestBody,
}

/// openraft's three RPCs plus the proposal and read forwarding of the router.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum RaftRequestBody {
    /// AppendEntries.
    Append {
        /// Leader's vote.
        vote: VoteRec,
        /// Entry before `entries`.
        prev_log_id: Option<LogIdRec>,
        /// Entries.
        entries: Vec<EntryRec>,
        /// Leader's commit index.
        leader_commit: Option<LogIdRec>,
    },
    /// RequestVote, or a Pre-Vote (would the receiver grant it? nothing is persisted).
    Vote {
        /// Candidate's vote.
        vote: VoteRec,
        /// Candidate's last log id.
        last_log_id: Option<LogIdRec>,
        /// The candidate was asked to campaign by a leader handing over (openraft's leader
        /// transfer): voters grant it despite their leader lease.
        leadership_transfer: bool,
        /// Only a Pre-Vote round.
        pre_vote: bool,
    },
    /// One chunk of a snapshot: openraft 0.10 hands the network a whole snapshot, which is sent
    /// in chunks, a transfer at a time, and installed once the last chunk arrived.
    Snapshot {
        /// Leader's vote.
        vote: VoteRec,
        /// Last entry included.
        last_log_id: Option<LogIdRec>,
        /// Membership as of it.
        last_membership: StoredMembershipRec,
        /// Id of this transfer (chosen by the sender).
        snapshot_id: String,
        /// Byte offset of this chunk.
        offset: u64,
        /// The chunk.
        data: Vec<u8>,
        /// Last chunk.
        done: bool,
    },
    /// Commands forwarded to the group's leader by another node's router.
    Propose {
        /// The commands, answered in order.
        commands: Vec<Command>,
    },
    /// A service query, answered by the group's leader after a read-index round
    /// (linearizable).
    Read {
        /// The service.
        service: ServiceId,
        /// The query, encoded by the service.
        query: Vec<u8>,
    },
    /// Placement driver → group leader: make the group's voters exactly `voters` (new nodes join
    /// as learners first, then the voters are replaced) and its learners exactly `learners`.
    /// Answered at once; the change runs on the leader in the background.
    Reconfigure {
        /// Layout version asking for it.
        layout_version: u64,
        /// The voters wanted, with their addresses.
        voters: Vec<(NodeId, NodeInfo)>,
        /// The learners wanted (meta group: every other live member), with their addresses.
        learners: Vec<(NodeId, NodeInfo)>,
    },
    /// Placement driver → group leader: hand leadership to `to` (a caught-up voter). Answered
    /// at once; the hand-over runs on the leader in the background.
    TransferLeader {
        /// The node that should lead.
        to: NodeId,
    },
    /// openraft's leader transfer, from the leader handing over to every other voter: `to` is
    /// the next leader (voters drop their leader lease; `to` campaigns once its log holds
    /// `last_log_id`).
    LeaderTransferNotice {
        /// The vote of the leader handing over.
        from: VoteRec,
        /// The next leader.
        to: NodeId,
        /// The leader's last log entry.
        last_log_id: Option<LogIdRec>,
    },
    /// A node whose layout no longer lists it for the group → the group's leader: is `node`
    /// still in the group's membership (or may it be again: a change not yet committed)?
    MemberOf {
        /// The node asking about itself.
        node: NodeId,
    },
    /// The node tick → a peer, every heartbeat interval: the quiet groups the sender leads that
    /// the peer replicates, in place of their heartbeats (see `super::tick`). Not for one group:
    /// the request's `group` is 0 and means nothing.
    QuietBeat {
        /// The groups, with the leader's term and last index.
        groups: Vec<QuietGroup>,
    },
}

/// One quiet group in a [`RaftRequestBody::QuietBeat`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietGroup {
    /// The group.
    pub group: GroupId,
    /// The sender's term in it.
    pub term: u64,
    /// Its last (committed, applied, replicated) index.
    pub last_index: u64,
}

impl RaftRequestBody {
    /// Proposals and reads, which a leader hand-over holds back (proposals would add entries the
    /// next leader has to catch up on first; once the transfer started, both are refused).
    pub fn is_client_request(&self) -> bool {
        matches!(self, Self::Propose { .. } | Self::Read { .. })
    }
}

/// Answers to [`RaftRequestBody`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum RaftResponse {
    /// AppendEntries accepted everything.
    AppendSuccess,
    /// AppendEntries accepted up to this entry.
    AppendPartial(Option<LogIdRec>),
    /// AppendEntries: `prev_log_id` does not match.
    AppendConflict,
    /// A higher vote was seen.
    HigherVote(VoteRec),
    /// QuietBeat answer: the listed groups to wake (heartbeat again); the others follow.
    QuietAck {
        /// Groups whose replica here is not where the beat says.
        wake: Vec<GroupId>,
    },
    /// RequestVote answer.
    Vote {
        /// Responder's vote.
        vote: VoteRec,
        /// Granted or not.
        granted: bool,
        /// Responder's last log id.
        last_log_id: Option<LogIdRec>,
    },
    /// Snapshot chunk accepted (the last one: the snapshot was installed).
    Snapshot {
        /// Responder's vote.
        vote: VoteRec,
    },
    /// The chunk does not continue what the receiver has; restart at the expected offset (the
    /// sender restarts the transfer).
    SnapshotMismatch {
        /// Expected snapshot id.
        expect_id: String,
        /// Expected offset.
        expect_offset: u64,
        /// Received snapshot id.
        got_id: String,
        /// Received offset.
        got_offset: u64,
    },
    /// Results of forwarded commands.
    Proposed(Vec<CommandResult>),
    /// A service query's answer, encoded by the service.
    Answer(Vec<u8>),
    /// Answer to `Reconfigure`: whether the group's voters already match.
    Reconfigured {
        /// True when voters and learners already match; false while the change is under way.
        done: bool,
    },
    /// Answer to `TransferLeader` and `LeaderTransferNotice`: whether the wanted node leads
    /// already (or, for the notice, that it was taken).
    Transferred {
        /// True when done.
        done: bool,
    },
    /// This node is handing the group's leadership over right now: ask again shortly.
    HandingOver,
    /// A `LeaderTransferNotice` refused (openraft's `TransferLeaderError`).
    TransferRefused(TransferRefusal),
    /// Answer to `MemberOf`: false only when the leader's committed membership leaves the node out.
    Member {
        /// Whether the node is (or may still be) a member.
        member: bool,
    },
    /// This node does not lead the group; `leader` may.
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// The group is not hosted here or cannot serve now.
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// Why a voter refused a leader transfer notice.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum TransferRefusal {
    /// The voter's vote is no longer the handing-over leader's.
    VoteChanged {
        /// The leader's vote.
        expected: VoteRec,
        /// The voter's.
        actual: VoteRec,
    },
    /// The next leader's log did not hold the leader's last entry in time.
    LogNotFlushed {
        /// The leader's last entry.
        expected: Option<LogIdRec>,
        /// The next leader's last flushed entry.
        actual: Option<LogIdRec>,
    },
}

/// The wire form of openraft's leader transfer request.
pub fn transfer_notice(req: &TransferLeaderRequest<TypeConfig>) -> RaftRequestBody {
    RaftRequestBody::LeaderTransferNotice {
        from: req.from_leader().into(),
        to: *req.to_node_id(),
        last_log_id: req.last_log_id().map(LogIdRec::from),
    }
}

/// openraft's leader transfer request from its wire form.
pub fn to_transfer_notice(
    from: VoteRec,
    to: NodeId,
    last_log_id: Option<LogIdRec>,
) -> TransferLeaderRequest<TypeConfig> {
    TransferLeaderRequest::new(vote(&from), to, log_id(&last_log_id))
}

/// The wire form of a voter's answer to a leader transfer notice.
pub fn transfer_response(r: TransferLeaderResponse<TypeConfig>) -> RaftResponse {
    match r {
        Ok(()) => RaftResponse::Transferred { done: true },
        Err(TransferLeaderError::VoteChanged { expected, actual }) => {
            RaftResponse::TransferRefused(TransferRefusal::VoteChanged {
                expected: (&expected).into(),
                actual: (&actual).into(),
            })
        }
        Err(TransferLeaderError::LogNotFlushed { expected, actual }) => {
            RaftResponse::TransferRefused(TransferRefusal::LogNotFlushed {
                expected: log_rec(&expected),
                actual: log_rec(&actual),
            })
        }
    }
}

/// openraft's answer to a leader transfer notice from its wire form.
pub fn from_transfer_response(r: RaftResponse) -> Option<TransferLeaderResponse<TypeConfig>> {
    match r {
        RaftResponse::Transferred { done: true } => Some(Ok(())),
        RaftResponse::TransferRefused(TransferRefusal::VoteChanged { expected, actual }) => {
            Some(Err(TransferLeaderError::VoteChanged { expected: vote(&expected), actual: vote(&actual) }))
        }
        RaftResponse::TransferRefused(TransferRefusal::LogNotFlushed { expected, actual }) => {
            Some(Err(TransferLeaderError::LogNotFlushed { expected: log_id(&expected), actual: log_id(&actual) }))
        }
        _ => None,
    }
}

fn vote(v: &VoteRec) -> Vote {
    v.into()
}

fn log_id(l: &Option<LogIdRec>) -> Option<LogId> {
    l.as_ref().map(LogId::from)
}

fn log_rec(l: &Option<LogId>) -> Option<LogIdRec> {
    l.as_ref().map(LogIdRec::from)
}

/// Builds the wire form of an AppendEntries request.
pub fn append_request(rpc: &AppendEntriesRequest<TypeConfig>) -> RaftRequestBody {
    RaftRequestBody::Append {
        vote: (&rpc.vote).into(),
        prev_log_id: log_rec(&rpc.prev_log_id),
        entries: rpc.entries.iter().map(EntryRec::from).collect(),
        leader_commit: log_rec(&rpc.leader_commit),
    }
}

/// Builds the wire form of a RequestVote (or, `pre_vote`, Pre-Vote) request.
pub fn vote_request(rpc: &VoteRequest<TypeConfig>, pre_vote: bool) -> RaftRequestBody {
    RaftRequestBody::Vote {
        vote: (&rpc.vote).into(),
        last_log_id: log_rec(&rpc.last_log_id),
        leadership_transfer: rpc.leadership_transfer,
        pre_vote,
    }
}

/// Builds the wire form of a snapshot chunk.
pub fn snapshot_chunk(
    vote: &Vote,
    meta: &SnapshotMeta,
    transfer: &str,
    offset: u64,
    data: Vec<u8>,
    done: bool,
) -> RaftRequestBody {
    RaftRequestBody::Snapshot {
        vote: vote.into(),
        last_log_id: log_rec(&meta.last_log_id),
        last_membership: (&meta.last_membership).into(),
        snapshot_id: transfer.to_string(),
        offset,
        data,
        done,
    }
}

/// Turns a received AppendEntries into openraft's type (`Err`: an entry does not decode).
pub fn to_append(
    vote_rec: VoteRec,
    prev: Option<LogIdRec>,
    entries: Vec<EntryRec>,
    commit: Option<LogIdRec>,
) -> Result<AppendEntriesRequest<TypeConfig>, RecordError> {
    Ok(AppendEntriesRequest {
        vote: vote(&vote_rec),
        prev_log_id: log_id(&prev),
        entries: entries.into_iter().map(EntryRec::into_entry).collect::<Result<_, _>>()?,
        leader_commit: log_id(&commit),
    })
}

/// Turns a received RequestVote into openraft's type.
pub fn to_vote(vote_rec: VoteRec, last: Option<LogIdRec>, leadership_transfer: bool) -> VoteRequest<TypeConfig> {
    VoteRequest { vote: vote(&vote_rec), last_log_id: log_id(&last), leadership_transfer }
}

/// The snapshot metadata of a received chunk.
pub fn to_snapshot_meta(
    last_log_id: Option<LogIdRec>,
    last_membership: &StoredMembershipRec,
) -> Result<SnapshotMeta, RecordError> {
    Ok(SnapshotMeta { last_log_id: log_id(&last_log_id), last_membership: last_membership.try_into()? })
}

/// The wire form of an AppendEntries answer.
pub fn append_response(r: AppendEntriesResponse<TypeConfig>) -> RaftResponse {
    match r {
        AppendEntriesResponse::Success => RaftResponse::AppendSuccess,
        AppendEntriesResponse::PartialSuccess(l) => RaftResponse::AppendPartial(log_rec(&l)),
        AppendEntriesResponse::Conflict => RaftResponse::AppendConflict,
        AppendEntriesResponse::HigherVote(v) => RaftResponse::HigherVote((&v).into()),
    }
}

/// The wire form of a RequestVote answer.
pub fn vote_response(r: VoteResponse<TypeConfig>) -> RaftResponse {
    RaftResponse::Vote { vote: (&r.vote).into(), granted: r.vote_granted, last_log_id: log_rec(&r.last_log_id) }
}

/// openraft's AppendEntries answer from its wire form (`None`: not an append answer).
pub fn from_append_response(r: RaftResponse) -> Option<AppendEntriesResponse<TypeConfig>> {
    Some(match r {
        RaftResponse::AppendSuccess => AppendEntriesResponse::Success,
        RaftResponse::AppendPartial(l) => AppendEntriesResponse::PartialSuccess(log_id(&l)),
        RaftResponse::AppendConflict => AppendEntriesResponse::Conflict,
        RaftResponse::HigherVote(v) => AppendEntriesResponse::HigherVote(vote(&v)),
        _ => return None,
    })
}

/// openraft's RequestVote answer from its wire form.
pub fn from_vote_response(r: RaftResponse) -> Option<VoteResponse<TypeConfig>> {
    match r {
        RaftResponse::Vote { vote: v, granted, last_log_id } => {
            Some(VoteResponse { vote: vote(&v), vote_granted: granted, last_log_id: log_id(&last_log_id) })
        }
        _ => None,
    }
}
