//! The scrub: re-hashes every chunk file of this node at most `objects.scrub_bytes_per_sec`,
//! so corruption is found before a read needs the chunk, and replaces a corrupt file with a
//! good copy from another node (any node's copy will do: it is checked against the hash).
//! A pass walks the 256 shard folders in order; the next starts `objects.scrub_interval` after
//! it ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use super::chunks::{self, ChunkError};
use super::{ChunkAnswer, ChunkCall, ObjError, ObjectService};
use crate::NodeId;
use crate::services::peer;

/// The longest wait before the first pass after start.
const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);

/// Paces a pass to a byte rate: after `bytes` in all since `started`, the caller waits until
/// `bytes / rate` seconds have passed. No I/O, so it is tested with made-up instants.
#[derive(Debug, Clone)]
pub struct Pacer {
    rate: u64,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    /// A pacer to `rate` bytes per second (at least 1), starting at `now`.
    pub fn new(rate: u64, now: Instant) -> Self {
        Self { rate: rate.max(1), started: now, bytes: 0 }
    }

    /// Counts `bytes` more and answers how long to wait at `now` to stay within the rate.
    pub fn after(&mut self, bytes: u64, now: Instant) -> Duration {
        self.bytes = self.bytes.saturating_add(bytes);
        let due = self.started + Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        due.saturating_duration_since(now)
    }
}

/// What one scrub pass found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scrubbed {
    /// Chunk files re-hashed.
    pub chunks: u64,
    /// Of which corrupt.
    pub corrupt: u64,
    /// Of which replaced by a good copy.
    pub replaced: u64,
}

impl ObjectService {
    /// Runs scrub passes until the node stops.
    pub async fn run_scrub(self: Arc<Self>) {
        let mut wait = self.cfg.scrub_interval.min(FIRST_PASS_AFTER);
        loop {
            tokio::time::sleep(wait).await;
            wait = self.cfg.scrub_interval;
            match self.scrub_pass().await {
                Ok(done) => {
                    self.metrics.scrub_passes.inc();
                    if done.corrupt > 0 {
                        warn!(corrupt = done.corrupt, replaced = done.replaced, "scrub found corrupt chunks");
                    }
                }
                Err(e) => {
                    debug!(error = %e, "scrub pass stopped; retrying soon");
                    wait = self.cfg.scrub_interval.min(FIRST_PASS_AFTER);
                }
            }
        }
    }

    /// One scrub pass over every chunk file (see the module docs).
    pub(super) async fn scrub_pass(&self) -> Result<Scrubbed, ObjError> {
        let mut pacer = Pacer::new(self.cfg.scrub_bytes_per_sec, Instant::now());
        let mut done = Scrubbed::default();
        for shard in 0..=u8::MAX {
            let files = self.chunks.list_shard(shard).await.map_err(|e| ObjError::Internal(e.to_string()))?;
            for (hash, len) in files.iter().filter_map(|f| f.hash.map(|h| (h, f.len))) {
                tokio::time::sleep(pacer.after(len, Instant::now())).await;
                match self.chunks.get(hash).await {
                    Ok(_) => {}
                    Err(ChunkError::Missing(_)) => continue,
                    Err(ChunkError::Corrupt(name)) => {
                        done.corrupt += 1;
                        self.metrics.corrupt_chunks.inc();
                        self.metrics.scrub_corrupt.inc();
                        warn!(chunk = name, "the scrub found a corrupt chunk; fetching a good copy");
                        if self.replace(hash).await {
                            done.replaced += 1;
                        }
                    }
                    Err(ChunkError::Io(e)) => {
                        warn!(chunk = chunks::hex(&hash), error = %e, "the scrub could not read a chunk")
                    }
                }
                done.chunks += 1;
                self.metrics.scrub_chunks.inc();
                self.metrics.scrub_bytes.inc_by(len);
            }
        }
        Ok(done)
    }

    /// Replaces this node's copy of chunk `hash` with a good one from another node; answers
    /// whether it did.
    async fn replace(&self, hash: [u8; 32]) -> bool {
        let mut others: Vec<NodeId> =
            (1..=self.client.partitions()).flat_map(|g| self.client.replicas_of(g)).filter(|n| *n != self.me).collect();
        others.sort_unstable();
        others.dedup();
        for node in others {
            let answer = peer::call(&self.transport, node, &ChunkCall::Get { hash }, self.cfg.replica_timeout).await;
            if let Ok(ChunkAnswer::Data(data)) = answer
                && blake3::hash(&data).as_bytes() == &hash
                && self.chunks.put(hash, Bytes::from(data)).await.is_ok()
            {
                self.metrics.chunks_repaired.inc();
                return true;
            }
        }
        warn!(chunk = chunks::hex(&hash), "no other node holds a good copy of a corrupt chunk");
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_holds_a_pass_to_its_byte_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000, t0);
        // 500 bytes at once: due at 0.5 s.
        assert_eq!(p.after(500, t0), Duration::from_millis(500));
        // Reading took longer than the rate asks: no wait.
        assert_eq!(p.after(500, t0 + Duration::from_secs(2)), Duration::ZERO);
        // 3,000 bytes in all are due at 3 s; at 2.5 s that is 0.5 s away.
        assert_eq!(p.after(2000, t0 + Duration::from_millis(2500)), Duration::from_millis(500));
        // A rate of 0 is taken as 1 byte per second rather than dividing by zero.
        let mut slow = Pacer::new(0, t0);
        assert_eq!(slow.after(2, t0), Duration::from_secs(2));
    }
}
