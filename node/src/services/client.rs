//! The typed Raft client: the only way services reach Raft. It encodes a service's command or
//! query, routes it to the partition of its key (or to the meta group), and decodes the answer.

use std::sync::Arc;

use super::{Consistency, Payload, Service, decode_outcome};
use crate::NodeId;
use crate::raft::{Command, CommandResult, GroupId, ProposeError};
use crate::router::{Router, RouterSlot};
use crate::storage::records::RecordError;

/// Where a command or query goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// The partition of this key.
    Key(&'a str),
    /// The meta group (cluster-wide records such as users).
    Meta,
    /// Partition group `1..=partitions` itself (a scatter over every partition).
    Partition(GroupId),
}

impl<'a> From<&'a str> for Route<'a> {
    fn from(key: &'a str) -> Self {
        Route::Key(key)
    }
}

/// Why a call did not get the service's answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The Raft groups of this node are starting.
    #[error("the raft groups are starting")]
    Starting,
    /// The cluster did not answer (see the inner error for whether anything happened).
    #[error(transparent)]
    Cluster(#[from] ProposeError),
    /// The answer did not decode (a node of another build answered, or a bug).
    #[error("the answer could not be decoded: {0}")]
    Corrupt(String),
}

impl From<RecordError> for CallError {
    fn from(e: RecordError) -> Self {
        CallError::Corrupt(e.to_string())
    }
}

/// See the module docs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    router: RouterSlot,
    /// `raft.partitions`: fixed for the cluster's life, so a key's partition needs no router.
    partitions: u64,
}

impl Client {
    /// A client of the router the Raft actor publishes in `router`, for a cluster of
    /// `partitions` partitions.
    pub fn new(router: RouterSlot, partitions: u64) -> Self {
        Self { router, partitions }
    }

    fn router(&self) -> Result<Arc<Router>, CallError> {
        self.router.get().ok_or(CallError::Starting)
    }

    fn group(&self, route: Route<'_>) -> GroupId {
        match route {
            Route::Key(key) => self.partition_of(key),
            Route::Meta => 0,
            Route::Partition(group) => group,
        }
    }

    /// Commits `command` of service `S` in the group of `route` and answers what the service
    /// decided: its reply, or its rejection (nothing changed then).
    pub async fn propose<'a, S: Service>(
        &self,
        route: impl Into<Route<'a>>,
        command: &S::Command,
    ) -> Result<Result<S::Reply, S::Rejection>, CallError> {
        let router = self.router()?;
        let group = self.group(route.into());
        let command = Command::Service { service: S::ID, payload: command.encode()? };
        match router.propose(group, command).await? {
            CommandResult::Service(bytes) => Ok(decode_outcome::<S>(&bytes)?),
            other => Err(CallError::Corrupt(format!("a service command was answered {other:?}"))),
        }
    }

    /// Answers `query` of service `S` in the group of `route`.
    pub async fn read<'a, S: Service>(
        &self,
        route: impl Into<Route<'a>>,
        query: &S::Query,
        consistency: Consistency,
    ) -> Result<S::Answer, CallError> {
        let router = self.router()?;
        let group = self.group(route.into());
        let bytes = router.read(group, S::ID, query.encode()?, consistency).await?;
        Ok(S::Answer::decode(&bytes)?)
    }

    /// How many partitions the cluster has (groups `1..=partitions`).
    pub fn partitions(&self) -> u64 {
        self.partitions
    }

    /// The partition group of `key`.
    pub fn partition_of(&self, key: &str) -> GroupId {
        crate::placement::partition_of(key, self.partitions)
    }

    /// The node leading the partition of `key`, as this node knows it (`None`: no leader now,
    /// or the groups are starting).
    pub fn leader_of_key(&self, key: &str) -> Option<NodeId> {
        self.router.get()?.leader_of(self.partition_of(key))
    }

    /// The nodes holding a replica of `group`, as this node's layout has it (empty while the
    /// groups are starting).
    pub fn replicas_of(&self, group: GroupId) -> Vec<NodeId> {
        let placement = self.router.get().and_then(|r| r.placement());
        placement.and_then(|p| p.layout.groups.get(&group).cloned()).unwrap_or_default()
    }

    /// The partitions this node leads now.
    pub fn led_partitions(&self) -> Vec<GroupId> {
        self.router.get().map(|r| r.led_partitions()).unwrap_or_default()
    }
}
