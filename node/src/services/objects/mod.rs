//! Object storage behind an S3-compatible endpoint.
//!
//! Buckets live in the partition of their name, objects in the partition of `{bucket}/{key}`
//! ([`state`]). A PUT cuts the body into `objects.chunk_size` chunks as it streams in; each
//! chunk is named by its BLAKE3 hash and written to every replica of the object's partition
//! ([`chunks`], over QUIC with [`ChunkCall`]), and counts once a write quorum has fsynced it.
//! Only after the last chunk does the object's record (size, type, ETag, chunk list, owner,
//! time) commit through the partition's Raft group: a reader sees the old object or the new
//! one, never a part. A GET streams chunk by chunk, each read locally first, then from the
//! other replicas, and checked against its hash ([`replicate`]). Repair runs in the
//! background on every node: resync fetches missing chunks ([`repair`]), the scrub re-hashes
//! stored ones ([`scrub`]), the collector deletes unreferenced ones ([`gc`]).
//!
//! The S3 protocol (XML, SigV4 with header and pre-signed query auth) is the `s3s` crate
//! ([`s3`]); S3 keys are per user (`/v1/users/me/s3-keys`, [`http`]).

pub mod chunks;
mod gc;
pub mod http;
pub mod metrics;
mod repair;
mod replicate;
pub mod s3;
mod scrub;
pub mod state;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tracing::warn;

pub use self::chunks::{ChunkError, ChunkStore};
pub use self::metrics::ObjectMetrics;
pub use self::replicate::{ChunkAnswer, ChunkCall};
use self::state::{Answer, BucketRec, Command, KeyRec, Listed, ObjectRec, PartRec, Query, Rejection, Reply, UploadRec};
pub use self::state::{LIST_PER_PARTITION, Objects};
use super::Consistency;
use super::client::{CallError, Client, Route};
use crate::NodeId;
use crate::config::ObjectsSection;
use crate::storage::records::RecordError;
use crate::transport::Transport;

/// Why an object operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjError {
    /// No such bucket.
    #[error("the bucket does not exist")]
    NoSuchBucket,
    /// No such object.
    #[error("the key does not exist")]
    NoSuchKey,
    /// The bucket exists (`mine`: owned by the caller).
    #[error("the bucket exists")]
    BucketExists {
        /// Owned by the caller.
        mine: bool,
    },
    /// A bucket to delete still holds objects.
    #[error("the bucket is not empty")]
    BucketNotEmpty,
    /// The body is larger than `objects.max_size`.
    #[error("the object is larger than {0} bytes")]
    TooLarge(u64),
    /// The request body failed while streaming.
    #[error("the request body failed: {0}")]
    Body(String),
    /// A chunk could not reach a write quorum, or be read from any replica.
    #[error("{0}")]
    Replicas(String),
    /// No such multipart upload.
    #[error("the upload does not exist (completed, aborted, or never started)")]
    NoSuchUpload,
    /// A listed part is missing or has another ETag.
    #[error("part {0} was not uploaded with that ETag")]
    InvalidPart(u32),
    /// The listed parts are not in ascending order.
    #[error("the parts are not listed in ascending order")]
    InvalidPartOrder,
    /// The cluster could not answer.
    #[error(transparent)]
    Cluster(#[from] CallError),
    /// An answer of the wrong kind (a bug).
    #[error("{0}")]
    Internal(String),
}

impl From<RecordError> for ObjError {
    fn from(e: RecordError) -> Self {
        ObjError::Internal(e.to_string())
    }
}

fn unexpected<T: std::fmt::Debug>(what: T) -> ObjError {
    ObjError::Internal(format!("unexpected answer {what:?}"))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    super::urls::now_ms()
}

/// The partition key of an object.
fn object_route(bucket: &str, key: &str) -> String {
    format!("{bucket}/{key}")
}

/// Hex of bytes.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Object storage on one node.
pub struct ObjectService {
    cfg: ObjectsSection,
    me: NodeId,
    client: Client,
    transport: Arc<Transport>,
    chunks: Arc<ChunkStore>,
    metrics: ObjectMetrics,
    /// The S3 endpoint's socket (bound by the wiring place; `None`: no endpoint).
    listener: Option<std::net::TcpListener>,
    /// Chunk writes to other nodes in flight from this node, over all uploads: bulk transfers
    /// share the peer connections with heartbeats and Raft, which must not starve.
    sends: tokio::sync::Semaphore,
}

/// Chunk writes to other nodes in flight from one node at most (see `ObjectService::sends`).
pub const MAX_CHUNK_SENDS: usize = 16;

impl std::fmt::Debug for ObjectService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectService").finish_non_exhaustive()
    }
}

impl ObjectService {
    /// Object storage of node `me`, keeping chunks under `data_dir`.
    pub fn new(
        cfg: ObjectsSection,
        me: NodeId,
        data_dir: &std::path::Path,
        client: Client,
        transport: Arc<Transport>,
        metrics: ObjectMetrics,
        listener: Option<std::net::TcpListener>,
    ) -> Arc<Self> {
        let chunks = Arc::new(ChunkStore::new(data_dir));
        let sends = tokio::sync::Semaphore::new(MAX_CHUNK_SENDS);
        Arc::new(Self { cfg, me, client, transport, chunks, metrics, listener, sends })
    }

    /// The configuration.
    pub fn config(&self) -> &ObjectsSection {
        &self.cfg
    }

    /// The instruments.
    pub fn metrics(&self) -> &ObjectMetrics {
        &self.metrics
    }

    // ---- S3 keys (meta group) ----

    /// Creates an S3 key for `user`.
    pub async fn create_key(&self, user: &str) -> Result<KeyRec, ObjError> {
        let id = format!("SH{:016X}{:02X}", rand::random::<u64>(), rand::random::<u8>());
        let secret: String = {
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            (0..40).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect()
        };
        let rec = KeyRec { access_key_id: id, secret, user: user.to_string(), created_ms: now_ms() };
        match self.client.propose::<Objects>(Route::Meta, &Command::PutKey(rec.clone())).await? {
            Ok(Reply::Done) => Ok(rec),
            other => Err(unexpected(other)),
        }
    }

    /// `user`'s keys.
    pub async fn keys_of(&self, user: &str) -> Result<Vec<KeyRec>, ObjError> {
        let query = Query::UserKeys(user.to_string());
        match self.client.read::<Objects>(Route::Meta, &query, Consistency::Linearizable).await? {
            Answer::Keys(keys) => Ok(keys),
            other => Err(unexpected(other)),
        }
    }

    /// Revokes `user`'s key `id`; answers whether it existed.
    pub async fn delete_key(&self, user: &str, id: &str) -> Result<bool, ObjError> {
        let command = Command::DeleteKey { user: user.to_string(), access_key_id: id.to_string() };
        match self.client.propose::<Objects>(Route::Meta, &command).await? {
            Ok(Reply::Deleted(existed)) => Ok(existed),
            other => Err(unexpected(other)),
        }
    }

    /// The key `id`. `fresh`: linearizable (what signature checks use, so a revoked key is
    /// refused at once); else from this node's meta state when present, linearizably
    /// otherwise (enough to map a key whose signature was just checked to its user).
    pub async fn key(&self, id: &str, fresh: bool) -> Result<Option<KeyRec>, ObjError> {
        let query = Query::Key(id.to_string());
        if !fresh
            && let Ok(Answer::Key(Some(rec))) =
                self.client.read::<Objects>(Route::Meta, &query, Consistency::Local).await
        {
            return Ok(Some(rec));
        }
        match self.client.read::<Objects>(Route::Meta, &query, Consistency::Linearizable).await? {
            Answer::Key(rec) => Ok(rec),
            other => Err(unexpected(other)),
        }
    }

    // ---- buckets ----

    /// The bucket `name`.
    pub async fn bucket(&self, name: &str) -> Result<Option<BucketRec>, ObjError> {
        let query = Query::Bucket(name.to_string());
        match self.client.read::<Objects>(name, &query, Consistency::Linearizable).await? {
            Answer::Bucket(rec) => Ok(rec),
            other => Err(unexpected(other)),
        }
    }

    /// Creates bucket `name` owned by `owner`.
    pub async fn create_bucket(&self, name: &str, owner: &str, public: bool) -> Result<(), ObjError> {
        let rec = BucketRec { owner: owner.to_string(), public, created_ms: now_ms() };
        let command = Command::CreateBucket { name: name.to_string(), rec };
        match self.client.propose::<Objects>(name, &command).await? {
            Ok(Reply::Done) => Ok(()),
            Err(Rejection::BucketExists { owner: o }) => Err(ObjError::BucketExists { mine: o == owner }),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes bucket `name` if it holds no object (checked on every partition first).
    pub async fn delete_bucket(&self, name: &str) -> Result<(), ObjError> {
        let query = Query::AnyObject(name.to_string());
        for answer in self.scatter(&query).await? {
            match answer {
                Answer::Any(false) => {}
                Answer::Any(true) => return Err(ObjError::BucketNotEmpty),
                other => return Err(unexpected(other)),
            }
        }
        match self.client.propose::<Objects>(name, &Command::DeleteBucket { name: name.to_string() }).await? {
            Ok(Reply::Done) => Ok(()),
            Err(Rejection::NoSuchBucket) => Err(ObjError::NoSuchBucket),
            other => Err(unexpected(other)),
        }
    }

    /// `owner`'s buckets, by name.
    pub async fn buckets_of(&self, owner: &str) -> Result<Vec<(String, BucketRec)>, ObjError> {
        let mut all = Vec::new();
        for answer in self.scatter(&Query::Buckets(owner.to_string())).await? {
            match answer {
                Answer::Buckets(some) => all.extend(some),
                other => return Err(unexpected(other)),
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(all)
    }

    /// One linearizable read of every partition, concurrently.
    async fn scatter(&self, query: &Query) -> Result<Vec<Answer>, ObjError> {
        let reads = (1..=self.client.partitions()).map(|group| async move {
            self.client.read::<Objects>(Route::Partition(group), query, Consistency::Linearizable).await
        });
        let mut out = Vec::new();
        for answer in futures::future::join_all(reads).await {
            out.push(answer?);
        }
        Ok(out)
    }

    // ---- objects ----

    /// The object `key` of `bucket`.
    pub async fn object(&self, bucket: &str, key: &str) -> Result<Option<ObjectRec>, ObjError> {
        let route = object_route(bucket, key);
        let query = Query::Object { bucket: bucket.to_string(), key: key.to_string() };
        match self.client.read::<Objects>(route.as_str(), &query, Consistency::Linearizable).await? {
            Answer::Object(rec) => Ok(rec),
            other => Err(unexpected(other)),
        }
    }

    /// Stores `body` as object `key` of `bucket`: chunks to a write quorum of the partition's
    /// replicas as they stream in, then the record through Raft.
    pub async fn put_object<S, E>(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        body: S,
        content_type: String,
        cache_control: Option<String>,
        owner: &str,
    ) -> Result<ObjectRec, ObjError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let group = self.client.partition_of(&object_route(bucket, key));
        let (chunks, size, etag) = self.store_stream(group, body, self.cfg.max_size).await?;
        self.metrics.bytes_in.inc_by(size);
        let rec = ObjectRec {
            size,
            content_type,
            cache_control,
            etag,
            chunks,
            owner: owner.to_string(),
            modified_ms: now_ms(),
        };
        self.commit(bucket, key, rec).await
    }

    // ---- multipart uploads ----

    /// Starts a multipart upload of `key` in `bucket`; answers its id.
    pub async fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        owner: &str,
        content_type: String,
        cache_control: Option<String>,
    ) -> Result<String, ObjError> {
        let upload_id = format!("{:016x}{:016x}", rand::random::<u64>(), rand::random::<u64>());
        let rec = UploadRec {
            bucket: bucket.to_string(),
            key: key.to_string(),
            owner: owner.to_string(),
            content_type,
            cache_control,
            created_ms: now_ms(),
        };
        let route = object_route(bucket, key);
        let command = Command::CreateUpload { upload_id: upload_id.clone(), rec };
        match self.client.propose::<Objects>(route.as_str(), &command).await? {
            Ok(Reply::Done) => Ok(upload_id),
            other => Err(unexpected(other)),
        }
    }

    /// Upload `id` of `key` in `bucket` with its parts (`None`: no such upload there).
    pub async fn upload(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> Result<Option<(UploadRec, Vec<(u32, PartRec)>)>, ObjError> {
        let route = object_route(bucket, key);
        match self
            .client
            .read::<Objects>(route.as_str(), &Query::Upload(id.to_string()), Consistency::Linearizable)
            .await?
        {
            Answer::Upload(Some((rec, parts))) if rec.bucket == bucket && rec.key == key => Ok(Some((rec, parts))),
            Answer::Upload(_) => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Stores part `part` of upload `id`; answers its hex MD5.
    pub async fn upload_part<S, E>(
        self: &Arc<Self>,
        (bucket, key, id): (&str, &str, &str),
        part: u32,
        body: S,
    ) -> Result<String, ObjError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let route = object_route(bucket, key);
        let group = self.client.partition_of(&route);
        let (chunks, size, etag) = self.store_stream(group, body, self.cfg.max_size).await?;
        let rec = PartRec { etag: etag.clone(), size, chunks, modified_ms: now_ms() };
        let command = Command::PutPart { upload_id: id.to_string(), part, rec };
        match self.client.propose::<Objects>(route.as_str(), &command).await? {
            Ok(Reply::Done) => {
                self.metrics.bytes_in.inc_by(size);
                Ok(etag)
            }
            Err(Rejection::NoSuchUpload) => Err(ObjError::NoSuchUpload),
            other => Err(unexpected(other)),
        }
    }

    /// Completes upload `id`: the object becomes the listed parts.
    pub async fn complete_upload(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        parts: Vec<(u32, String)>,
    ) -> Result<ObjectRec, ObjError> {
        let route = object_route(bucket, key);
        let command = Command::CompleteUpload { upload_id: id.to_string(), parts, modified_ms: now_ms() };
        match self.client.propose::<Objects>(route.as_str(), &command).await? {
            Ok(Reply::Completed(rec)) => Ok(rec),
            Err(Rejection::NoSuchUpload) => Err(ObjError::NoSuchUpload),
            Err(Rejection::InvalidPart(n)) => Err(ObjError::InvalidPart(n)),
            Err(Rejection::InvalidPartOrder) => Err(ObjError::InvalidPartOrder),
            other => Err(unexpected(other)),
        }
    }

    /// Drops upload `id` and its parts; answers whether it existed.
    pub async fn abort_upload(&self, bucket: &str, key: &str, id: &str) -> Result<bool, ObjError> {
        let route = object_route(bucket, key);
        match self
            .client
            .propose::<Objects>(route.as_str(), &Command::AbortUpload { upload_id: id.to_string() })
            .await?
        {
            Ok(Reply::Deleted(existed)) => Ok(existed),
            other => Err(unexpected(other)),
        }
    }

    /// Commits an object's record (its chunks are stored).
    async fn commit(&self, bucket: &str, key: &str, rec: ObjectRec) -> Result<ObjectRec, ObjError> {
        let route = object_route(bucket, key);
        let command = Command::PutObject { bucket: bucket.to_string(), key: key.to_string(), rec: rec.clone() };
        match self.client.propose::<Objects>(route.as_str(), &command).await? {
            Ok(Reply::Done) => Ok(rec),
            other => Err(unexpected(other)),
        }
    }

    /// Copies object `src` to `dst`: its chunks to the replicas of the destination's partition,
    /// then the destination's record.
    pub async fn copy_object(
        self: &Arc<Self>,
        src: (&str, &str),
        dst: (&str, &str),
        content_type: Option<String>,
        owner: &str,
    ) -> Result<ObjectRec, ObjError> {
        let rec = self.object(src.0, src.1).await?.ok_or(ObjError::NoSuchKey)?;
        let from = self.client.partition_of(&object_route(src.0, src.1));
        let to = self.client.partition_of(&object_route(dst.0, dst.1));
        // Stored again even within one partition: a replica that already holds a chunk renews
        // it, so the collector cannot take it should the source be deleted meanwhile.
        for c in &rec.chunks {
            let data = self.read_chunk(from, c.hash).await?;
            self.store_chunk(to, c.hash, data).await?;
        }
        let rec = ObjectRec {
            content_type: content_type.unwrap_or(rec.content_type),
            owner: owner.to_string(),
            modified_ms: now_ms(),
            ..rec
        };
        self.commit(dst.0, dst.1, rec).await
    }

    /// Deletes object `key` of `bucket`; answers whether it existed. (Its chunks stay until the
    /// collector finds them unreferenced: [`gc`].)
    pub async fn delete_object(&self, bucket: &str, key: &str) -> Result<bool, ObjError> {
        let route = object_route(bucket, key);
        let command = Command::DeleteObject { bucket: bucket.to_string(), key: key.to_string() };
        match self.client.propose::<Objects>(route.as_str(), &command).await? {
            Ok(Reply::Deleted(existed)) => Ok(existed),
            other => Err(unexpected(other)),
        }
    }

    /// Up to `max` entries of `bucket` after `after`, merged from every partition; and
    /// whether more follow.
    pub async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: &str,
        after: Option<String>,
        max: usize,
    ) -> Result<(Vec<Listed>, bool), ObjError> {
        let query = Query::List {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            delimiter: delimiter.to_string(),
            after,
            limit: (max + 1) as u32,
        };
        let mut all: Vec<Listed> = Vec::new();
        for answer in self.scatter(&query).await? {
            match answer {
                Answer::Listed(some) => all.extend(some),
                other => return Err(unexpected(other)),
            }
        }
        all.sort_by(|a, b| a.name().cmp(b.name()));
        // A common prefix may come from several partitions.
        all.dedup_by(|a, b| a.name() == b.name());
        let more = all.len() > max;
        all.truncate(max);
        Ok((all, more))
    }

    /// The bytes of `rec` in `range` (whole object if `None`), as a stream of chunk slices; a
    /// task reads ahead at most two chunks.
    pub fn read_object(
        self: &Arc<Self>,
        bucket: &str,
        key: &str,
        rec: &ObjectRec,
        range: std::ops::Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
        let group = self.client.partition_of(&object_route(bucket, key));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
        let me = Arc::clone(self);
        let chunks = rec.chunks.clone();
        tokio::spawn(async move {
            let mut offset = 0u64;
            for c in chunks {
                let (start, end) = (offset, offset + u64::from(c.len));
                offset = end;
                if end <= range.start {
                    continue;
                }
                if start >= range.end {
                    break;
                }
                let piece = match me.read_chunk(group, c.hash).await {
                    Ok(data) => {
                        let from = range.start.saturating_sub(start) as usize;
                        let to = (range.end.min(end) - start) as usize;
                        me.metrics.bytes_out.inc_by((to - from) as u64);
                        Ok(data.slice(from..to))
                    }
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                };
                let failed = piece.is_err();
                if tx.send(piece).await.is_err() || failed {
                    return;
                }
            }
        });
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    /// Serves the S3 endpoint until the node stops (nothing to do without a listener).
    pub async fn run_s3(self: Arc<Self>) {
        let Some(listener) = self.listener.as_ref().and_then(|l| l.try_clone().ok()) else {
            if self.listener.is_some() {
                warn!("the S3 listener could not be cloned");
                return;
            }
            std::future::pending::<()>().await;
            return;
        };
        s3::serve(self, listener).await;
    }
}

/// How long the S3 endpoint waits between accept errors.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
