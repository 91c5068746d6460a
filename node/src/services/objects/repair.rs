//! Repair on this node: the resync task, which makes this node hold every chunk the
//! partitions it replicates reference (objects and parts of uploads in progress), fetching
//! missing ones from the other replicas.

use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::state::{Answer, Query};
use super::{ObjError, ObjectService, Objects, unexpected};
use crate::raft::GroupId;
use crate::services::Consistency;
use crate::services::client::Route;

impl ObjectService {
    /// Makes this node hold every chunk the partitions it replicates reference: a pass soon
    /// after start, then every `objects.resync_interval`; missing chunks are fetched from the
    /// other replicas (hash-checked). Runs until the node stops.
    pub async fn run_resync(self: Arc<Self>) {
        let mut wait = Duration::from_secs(1);
        loop {
            tokio::time::sleep(wait).await;
            wait = self.cfg.resync_interval;
            match self.resync_pass().await {
                Ok(missing) => {
                    self.metrics.missing_chunks.set(missing as i64);
                    self.metrics.resync_passes.inc();
                }
                Err(e) => {
                    debug!(error = %e, "resync pass incomplete; retrying soon");
                    wait = Duration::from_secs(1);
                }
            }
        }
    }

    /// The partitions this node replicates (an error until the layout is known).
    pub(super) fn my_partitions(&self) -> Result<Vec<GroupId>, ObjError> {
        let mine: Vec<GroupId> =
            (1..=self.client.partitions()).filter(|g| self.client.replicas_of(*g).contains(&self.me)).collect();
        if mine.is_empty() {
            return Err(ObjError::Replicas("this node's partitions are not known yet".into()));
        }
        Ok(mine)
    }

    /// Every chunk partition `group` references: its objects' and its multipart uploads' parts'
    /// (a chunk may be listed more than once).
    pub(super) async fn referenced_in(
        &self,
        group: GroupId,
        consistency: Consistency,
    ) -> Result<Vec<[u8; 32]>, ObjError> {
        let mut all = Vec::new();
        for parts in [false, true] {
            let mut after = None;
            loop {
                let query = if parts {
                    Query::PartChunks { after: after.take(), limit: 256 }
                } else {
                    Query::Chunks { after: after.take(), limit: 256 }
                };
                match self.client.read::<Objects>(Route::Partition(group), &query, consistency).await? {
                    Answer::Chunks(hashes, next) => {
                        all.extend(hashes);
                        match next {
                            Some(n) => after = Some(n),
                            None => break,
                        }
                    }
                    other => return Err(unexpected(other)),
                }
            }
        }
        Ok(all)
    }

    /// One resync pass; answers the chunks still missing after it.
    async fn resync_pass(self: &Arc<Self>) -> Result<u64, ObjError> {
        let mine = self.my_partitions()?;
        let mut missing = 0u64;
        for group in mine {
            for hash in self.referenced_in(group, Consistency::Local).await? {
                if !self.chunks.has(&hash).await && self.read_chunk(group, hash).await.is_err() {
                    missing += 1;
                }
            }
        }
        Ok(missing)
    }
}
