//! Errors of the Raft subsystem.

use super::wire::RaftResponse;
use super::{GroupId, Refusal, ServiceId};
use crate::NodeId;
use crate::storage::Handled;

/// Why a proposal or read did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProposeError {
    /// No node leads the group right now (election, or no quorum).
    #[error("partition {group} has no leader right now")]
    NoLeader {
        /// The group.
        group: GroupId,
    },
    /// This node does not lead the group (nothing was proposed); `leader` may.
    #[error("this node does not lead partition {group}")]
    NotLeader {
        /// The group.
        group: GroupId,
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// The leader could not be reached or failed the request.
    #[error("partition {group} is unavailable: {reason}")]
    Unavailable {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
    /// The state machine could not hand the command to its service; nothing changed.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum RaftHostError {
    /// openraft rejected the configuration.
    #[error("invalid raft configuration: {0}")]
    Config(String),
    /// A group could not be created.
    #[error("cannot start raft group {group}: {reason}")]
    Group {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
}

/// A group this node does not host.
pub fn not_hosted(group: GroupId) -> ProposeError {
    ProposeError::Unavailable { group, reason: "group not hosted on this node".into() }
}

/// A failure as a peer's answer.
pub fn unavailable(e: ProposeError) -> RaftResponse {
    RaftResponse::Unavailable { reason: e.to_string() }
}

/// A query's answer, or why no service answered it.
pub(super) fn answer(service: ServiceId, handled: Handled) -> Result<Vec<u8>, ProposeError> {
    match handled {
        Handled::Done(bytes) => Ok(bytes),
        Handled::UnknownService => Err(Refusal::UnknownService { service }.into()),
        Handled::BadPayload => Err(Refusal::BadPayload { service }.into()),
    }
}
