//! The collector: deletes this node's chunk files that nothing references any more (objects
//! overwritten or deleted, uploads aborted or failed), once they are older than
//! `objects.gc_grace`.
//!
//! A pass notes its cutoff (now minus the grace) first, then reads what every partition this
//! node replicates references (objects and parts of uploads in progress, linearizably, from
//! each partition's leader), then deletes each chunk file that is unreferenced and was last
//! stored before the cutoff. A chunk an upload is writing, or found present and renewed (see
//! [`super::chunks`]), has a fresh mtime and is kept; one referenced by a record committed after
//! the scan was stored after the cutoff, unless storing that body took longer than the grace.
//! So the grace must exceed the longest single PUT or UploadPart (a multipart upload's parts
//! are referenced once each part is stored). Any partition that cannot answer skips the pass:
//! nothing is deleted on partial knowledge.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use tracing::{debug, info};

use super::{ObjError, ObjectService};
use crate::services::Consistency;

/// What one collector pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// Chunk files deleted.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Temporary files of interrupted writes deleted.
    pub temps: u64,
}

impl ObjectService {
    /// Runs a collector pass every `objects.gc_interval` until the node stops.
    pub async fn run_gc(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.cfg.gc_interval).await;
            match self.gc_pass().await {
                Ok(done) => {
                    self.metrics.gc_passes.inc();
                    if done.chunks + done.temps > 0 {
                        info!(
                            chunks = done.chunks,
                            bytes = done.bytes,
                            temps = done.temps,
                            "collected unreferenced chunks"
                        );
                    }
                }
                Err(e) => debug!(error = %e, "collector pass skipped"),
            }
        }
    }

    /// One collector pass (see the module docs).
    pub(super) async fn gc_pass(&self) -> Result<Collected, ObjError> {
        let cutoff = SystemTime::now().checked_sub(self.cfg.gc_grace).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut referenced = HashSet::new();
        for group in self.my_partitions()? {
            referenced.extend(self.referenced_in(group, Consistency::Linearizable).await?);
        }
        let mut done = Collected::default();
        for shard in 0..=u8::MAX {
            let files = self.chunks.list_shard(shard).await.map_err(|e| ObjError::Internal(e.to_string()))?;
            for file in files {
                if file.modified >= cutoff || file.hash.is_some_and(|h| referenced.contains(&h)) {
                    continue;
                }
                let removed =
                    self.chunks.remove_if_older(&file, cutoff).await.map_err(|e| ObjError::Internal(e.to_string()))?;
                match (removed, file.hash) {
                    (Some(bytes), Some(_)) => {
                        done.chunks += 1;
                        done.bytes += bytes;
                        self.metrics.gc_chunks.inc();
                        self.metrics.gc_bytes.inc_by(bytes);
                    }
                    (Some(_), None) => done.temps += 1,
                    (None, _) => {}
                }
            }
        }
        Ok(done)
    }
}
