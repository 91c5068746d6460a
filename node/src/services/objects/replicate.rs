//! Chunk replication: a body cut into chunks written to a write quorum of its partition's
//! replicas (several chunks in flight per upload), chunk reads local first then from the other
//! replicas (hash-checked), and the peer messages that carry chunks between nodes.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use rkyv::{Archive, Deserialize, Serialize};
use tracing::warn;

use super::chunks::{self, ChunkError};
use super::state::ChunkRef;
use super::{ObjError, ObjectService, Objects, hex};
use crate::NodeId;
use crate::raft::GroupId;
use crate::services::Payload;
use crate::services::Service;
use crate::services::peer::{self, PeerMessage};
use crate::storage::records::RecordError;

/// A chunk message between the object services of two nodes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ChunkCall {
    /// Store this chunk durably (answer once fsynced).
    Put {
        /// BLAKE3 of `data`.
        hash: [u8; 32],
        /// The bytes.
        data: Vec<u8>,
    },
    /// Send the chunk `hash` if stored here and whole.
    Get {
        /// BLAKE3 of the bytes.
        hash: [u8; 32],
    },
}

/// A chunk message's answer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum ChunkAnswer {
    /// Stored and fsynced.
    Stored,
    /// The bytes asked for.
    Data(Vec<u8>),
    /// Not here (or corrupt here).
    Missing,
    /// The store failed.
    Failed(String),
}

impl PeerMessage for ChunkCall {
    const SERVICE: crate::services::ServiceId = Objects::ID;
    const METHOD: &'static str = "objects_chunk";
    type Reply = ChunkAnswer;
}

impl ObjectService {
    /// Stores a body's chunks on a write quorum of `group`'s replicas as it streams in, up to
    /// `objects.write_parallelism` chunks at once (the body held in memory is at most that many
    /// chunks and the one being cut); answers the chunk list in body order, the size and the
    /// hex MD5. Any chunk failing fails the whole body: nothing refers to the chunks already
    /// stored, and the collector removes them after `objects.gc_grace`.
    pub(super) async fn store_stream<S, E>(
        self: &Arc<Self>,
        group: GroupId,
        mut body: S,
        max_size: u64,
    ) -> Result<(Vec<ChunkRef>, u64, String), ObjError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use md5::Digest;
        let chunk_size = self.cfg.chunk_size;
        let mut md5 = md5::Md5::new();
        let mut buf = BytesMut::with_capacity(chunk_size);
        let mut chunks = Vec::new();
        let mut size = 0u64;
        let mut writes = InFlight::new(self.cfg.write_parallelism);
        loop {
            let next = body.next().await.transpose().map_err(|e| ObjError::Body(e.to_string()))?;
            let done = next.is_none();
            if let Some(bytes) = next {
                size += bytes.len() as u64;
                if size > max_size {
                    return Err(ObjError::TooLarge(max_size));
                }
                md5.update(&bytes);
                buf.extend_from_slice(&bytes);
            }
            while buf.len() >= chunk_size || (done && !buf.is_empty()) {
                let n = buf.len().min(chunk_size);
                // A copy of exactly the chunk: it holds no share of `buf`, which is reused.
                let data = Bytes::copy_from_slice(&buf[..n]);
                buf.advance(n);
                let hash = *blake3::hash(&data).as_bytes();
                chunks.push(ChunkRef { hash, len: n as u32 });
                writes.room().await?;
                let me = Arc::clone(self);
                writes.push(tokio::spawn(async move { me.store_chunk(group, hash, data).await }));
            }
            if done {
                writes.drain().await?;
                return Ok((chunks, size, hex(&md5.finalize())));
            }
        }
    }

    /// Writes a chunk to every replica of `group` and returns once a write quorum has fsynced
    /// it (the other writes go on in the background).
    pub(super) async fn store_chunk(
        self: &Arc<Self>,
        group: GroupId,
        hash: [u8; 32],
        data: Bytes,
    ) -> Result<(), ObjError> {
        let replicas = self.client.replicas_of(group);
        if replicas.is_empty() {
            return Err(ObjError::Replicas(format!("partition {group} has no known replicas yet")));
        }
        let quorum = replicas.len() / 2 + 1;
        let mut writes = futures::stream::FuturesUnordered::new();
        for node in replicas.iter().copied() {
            let me = Arc::clone(self);
            let data = data.clone();
            writes.push(tokio::spawn(async move { me.put_on(node, hash, data).await.map_err(|e| (node, e)) }));
        }
        let (mut ok, mut failed) = (0, Vec::new());
        while let Some(done) = writes.next().await {
            match done {
                Ok(Ok(())) => ok += 1,
                Ok(Err((node, e))) => failed.push(format!("node {node}: {e}")),
                Err(e) => failed.push(e.to_string()),
            }
            if ok >= quorum {
                return Ok(());
            }
            if failed.len() > replicas.len() - quorum {
                break;
            }
        }
        Err(ObjError::Replicas(format!(
            "chunk {} reached {ok} of the {quorum} replicas it needs: {}",
            chunks::hex(&hash),
            failed.join("; ")
        )))
    }

    /// Stores a chunk on `node` (this node: directly).
    async fn put_on(&self, node: NodeId, hash: [u8; 32], data: Bytes) -> Result<(), String> {
        if node == self.me {
            self.chunks.put(hash, data).await.map_err(|e| e.to_string())?;
            self.metrics.chunks_written.inc();
            return Ok(());
        }
        let _sending = self.sends.acquire().await.map_err(|e| e.to_string())?;
        let call = ChunkCall::Put { hash, data: data.to_vec() };
        match peer::call(&self.transport, node, &call, self.cfg.replica_timeout).await {
            Ok(ChunkAnswer::Stored) => Ok(()),
            Ok(other) => Err(format!("answered {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Chunk `hash` of partition `group`: from this node when whole here, else from the other
    /// replicas (checked against the hash; a replica of `group` keeps the good copy).
    pub(super) async fn read_chunk(&self, group: GroupId, hash: [u8; 32]) -> Result<Bytes, ObjError> {
        match self.chunks.get(hash).await {
            Ok(data) => return Ok(data),
            Err(ChunkError::Corrupt(name)) => {
                self.metrics.corrupt_chunks.inc();
                warn!(chunk = name, "corrupt chunk found on read; fetching it from a replica");
            }
            Err(_) => {}
        }
        let replicas = self.client.replicas_of(group);
        for node in replicas.iter().copied().filter(|n| *n != self.me) {
            let answer = peer::call(&self.transport, node, &ChunkCall::Get { hash }, self.cfg.replica_timeout).await;
            if let Ok(ChunkAnswer::Data(data)) = answer
                && blake3::hash(&data).as_bytes() == &hash
            {
                let data = Bytes::from(data);
                if replicas.contains(&self.me) && self.chunks.put(hash, data.clone()).await.is_ok() {
                    self.metrics.chunks_repaired.inc();
                }
                return Ok(data);
            }
        }
        Err(ObjError::Replicas(format!("chunk {} could not be read from any replica", chunks::hex(&hash))))
    }

    /// Serves another node's chunk message.
    pub async fn on_peer(&self, payload: &[u8]) -> Result<Vec<u8>, RecordError> {
        let answer = match ChunkCall::decode(payload)? {
            ChunkCall::Put { hash, data } => match self.chunks.put(hash, Bytes::from(data)).await {
                Ok(()) => {
                    self.metrics.chunks_written.inc();
                    ChunkAnswer::Stored
                }
                Err(e) => ChunkAnswer::Failed(e.to_string()),
            },
            ChunkCall::Get { hash } => match self.chunks.get(hash).await {
                Ok(data) => ChunkAnswer::Data(data.to_vec()),
                Err(ChunkError::Corrupt(_)) => {
                    self.metrics.corrupt_chunks.inc();
                    ChunkAnswer::Missing
                }
                Err(_) => ChunkAnswer::Missing,
            },
        };
        answer.encode()
    }
}

/// The chunk writes of one upload in flight, at most `limit` at once. Each is a task, so it
/// progresses while the body is read; dropping the set aborts the writes not yet at a quorum.
struct InFlight {
    limit: usize,
    tasks: futures::stream::FuturesUnordered<AbortOnDrop>,
}

/// A chunk write's task, aborted if dropped unfinished (the upload failed).
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), ObjError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::future::Future for AbortOnDrop {
    type Output = Result<(), ObjError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| joined.unwrap_or_else(|e| Err(ObjError::Internal(format!("a chunk write stopped: {e}")))))
    }
}

impl InFlight {
    fn new(limit: usize) -> Self {
        Self { limit: limit.max(1), tasks: futures::stream::FuturesUnordered::new() }
    }

    /// Waits until another write may start; fails with the first write that failed.
    async fn room(&mut self) -> Result<(), ObjError> {
        while self.tasks.len() >= self.limit {
            if let Some(done) = self.tasks.next().await {
                done?;
            }
        }
        Ok(())
    }

    fn push(&mut self, task: tokio::task::JoinHandle<Result<(), ObjError>>) {
        self.tasks.push(AbortOnDrop(task));
    }

    /// Waits for every write; fails with the first that failed.
    async fn drain(&mut self) -> Result<(), ObjError> {
        while let Some(done) = self.tasks.next().await {
            done?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn in_flight_writes_stay_within_the_limit_and_all_finish() {
        let (running, most, finished) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut writes = InFlight::new(3);
        for i in 0..20u64 {
            writes.room().await.expect("no write fails");
            let (running, most, finished) = (Arc::clone(&running), Arc::clone(&most), Arc::clone(&finished));
            writes.push(tokio::spawn(async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1 + i % 4)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                finished.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }));
        }
        writes.drain().await.expect("no write fails");
        assert_eq!(finished.load(Ordering::SeqCst), 20);
        assert!(most.load(Ordering::SeqCst) <= 3, "{} writes ran at once", most.load(Ordering::SeqCst));
        assert!(most.load(Ordering::SeqCst) >= 2, "the writes never overlapped");
    }

    #[tokio::test]
    async fn a_failed_write_fails_the_upload_and_aborts_the_rest() {
        // The slow write holds `alive`; its receiver sees it dropped once the task is aborted.
        let (alive, mut gone) = tokio::sync::oneshot::channel::<()>();
        let mut writes = InFlight::new(4);
        writes.push(tokio::spawn(async move {
            let _alive = alive;
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(())
        }));
        writes.push(tokio::spawn(async { Err(ObjError::Replicas("no quorum".into())) }));
        let failed = tokio::time::timeout(Duration::from_secs(10), writes.drain()).await;
        assert!(matches!(failed, Ok(Err(ObjError::Replicas(_)))), "{failed:?}");
        drop(writes);
        let ended = tokio::time::timeout(Duration::from_secs(10), &mut gone).await;
        assert!(matches!(ended, Ok(Err(_))), "the slow write was not aborted: {ended:?}");
    }
}
