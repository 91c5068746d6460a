//! Object storage's replicated state (service id 7). Rows:
//!
//! - meta group: `k/{access_key_id}` → [`KeyRec`] (an S3 key and its user) and
//!   `uk/{user}/{access_key_id}` → the same record (a user's keys, one scan);
//! - the partition of the bucket name: `b/{bucket}` → [`BucketRec`];
//! - the partition of `{bucket}/{key}`: `o/{bucket}/{key}` → [`ObjectRec`] (size, type, ETag,
//!   chunk list, owner, times). Its chunks are files on the partition's replicas, written
//!   before the record is committed, so a committed record never names a missing chunk on a
//!   write quorum, and replacing the record is what makes an overwrite atomic.
//!
//! Time comes only from commands (stamped by the proposing node).

use rkyv::{Archive, Deserialize, Serialize};

use crate::services::{Kv, KvRead, Payload, Service, ServiceId, StoreError, get};

/// Keys one scan of a partition answers at most in a listing.
pub const LIST_PER_PARTITION: usize = 1000;

/// An S3 access key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct KeyRec {
    /// The access key id (`SH` and 18 upper-case hex digits).
    pub access_key_id: String,
    /// The secret, as SigV4 needs it to compute signatures (see "Object storage" in
    /// `docs/design.md`).
    pub secret: String,
    /// The user it acts as.
    pub user: String,
    /// Unix milliseconds.
    pub created_ms: u64,
}

/// A bucket.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BucketRec {
    /// User id of its owner.
    pub owner: String,
    /// Public-read (`x-amz-acl: public-read` at creation): anyone may GET and HEAD its objects.
    pub public: bool,
    /// Unix milliseconds.
    pub created_ms: u64,
}

/// One chunk of an object: its BLAKE3 hash and length.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    /// BLAKE3 of its bytes (the file name on every replica).
    pub hash: [u8; 32],
    /// Bytes.
    pub len: u32,
}

/// An object.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ObjectRec {
    /// Bytes.
    pub size: u64,
    /// `Content-Type` as stored.
    pub content_type: String,
    /// `Cache-Control` as stored.
    pub cache_control: Option<String>,
    /// ETag without quotes (hex MD5 of the body for a single PUT).
    pub etag: String,
    /// The chunks, in order.
    pub chunks: Vec<ChunkRef>,
    /// User id of the writer.
    pub owner: String,
    /// Unix milliseconds of the write.
    pub modified_ms: u64,
}

/// A multipart upload in progress (`u/{upload_id}` in the object's partition).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UploadRec {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// User id of the uploader.
    pub owner: String,
    /// `Content-Type` for the object.
    pub content_type: String,
    /// `Cache-Control` for the object.
    pub cache_control: Option<String>,
    /// Unix milliseconds.
    pub created_ms: u64,
}

/// One uploaded part (`p/{upload_id}/{part:05}`); its chunks are stored like an object's.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartRec {
    /// Hex MD5 of the part.
    pub etag: String,
    /// Bytes.
    pub size: u64,
    /// The chunks, in order.
    pub chunks: Vec<ChunkRef>,
    /// Unix milliseconds.
    pub modified_ms: u64,
}

/// Largest part number (as S3).
pub const MAX_PART: u32 = 10_000;

/// Object storage's commands.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Stores an S3 key (meta group).
    PutKey(KeyRec),
    /// Revokes `user`'s key `access_key_id` (meta group); answers [`Reply::Deleted`].
    DeleteKey {
        /// The key's user.
        user: String,
        /// The key.
        access_key_id: String,
    },
    /// Creates a bucket unless it exists.
    CreateBucket {
        /// Name.
        name: String,
        /// Its record.
        rec: BucketRec,
    },
    /// Deletes a bucket (its emptiness is checked by the caller across partitions).
    DeleteBucket {
        /// Name.
        name: String,
    },
    /// Stores (or replaces) an object's record.
    PutObject {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The record.
        rec: ObjectRec,
    },
    /// Starts a multipart upload.
    CreateUpload {
        /// Upload id (random).
        upload_id: String,
        /// Its record.
        rec: UploadRec,
    },
    /// Stores (or replaces) part `part` of an upload.
    PutPart {
        /// Upload id.
        upload_id: String,
        /// Part number, 1..=[`MAX_PART`].
        part: u32,
        /// The part.
        rec: PartRec,
    },
    /// Completes an upload: the object becomes the listed parts, in order, and the upload and
    /// its parts are gone; answers [`Reply::Completed`].
    CompleteUpload {
        /// Upload id.
        upload_id: String,
        /// (part number, ETag without quotes), ascending.
        parts: Vec<(u32, String)>,
        /// Unix milliseconds.
        modified_ms: u64,
    },
    /// Drops an upload and its parts; answers [`Reply::Deleted`].
    AbortUpload {
        /// Upload id.
        upload_id: String,
    },
    /// Deletes an object's record; answers [`Reply::Deleted`].
    DeleteObject {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
}

/// Object storage's command answers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Done.
    Done,
    /// Whether the row existed.
    Deleted(bool),
    /// The object a completed upload made.
    Completed(ObjectRec),
}

/// Why a command changed nothing.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The bucket exists.
    #[error("the bucket exists (owner {owner})")]
    BucketExists {
        /// Its owner.
        owner: String,
    },
    /// No such bucket.
    #[error("no such bucket")]
    NoSuchBucket,
    /// The access key id is taken.
    #[error("the access key id is taken")]
    KeyTaken,
    /// No such upload (completed, aborted, or never started).
    #[error("no such upload")]
    NoSuchUpload,
    /// A listed part is missing or has another ETag.
    #[error("part {0} was not uploaded with that ETag")]
    InvalidPart(u32),
    /// Parts not in ascending order, or none.
    #[error("the parts are not listed in ascending order")]
    InvalidPartOrder,
}

/// Object storage's queries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The key `access_key_id` (meta).
    Key(String),
    /// `user`'s keys (meta).
    UserKeys(String),
    /// The bucket `name`.
    Bucket(String),
    /// Buckets of `owner` in this partition.
    Buckets(String),
    /// The object `key` of `bucket`.
    Object {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// Objects of `bucket` in this partition whose key starts with `prefix` and sorts after
    /// `after`, with keys sharing a segment up to `delimiter` after the prefix rolled up into
    /// one common prefix; at most `limit` entries.
    List {
        /// Bucket.
        bucket: String,
        /// Key prefix.
        prefix: String,
        /// Delimiter (empty: none).
        delimiter: String,
        /// Only keys (and common prefixes) after this one.
        after: Option<String>,
        /// Entries at most.
        limit: u32,
    },
    /// Whether this partition holds any object of `bucket`.
    AnyObject(String),
    /// An upload and its parts.
    Upload(String),
    /// The chunks of up to `limit` objects after the object row `after`, in row order.
    Chunks {
        /// Resume after this row key.
        after: Option<Vec<u8>>,
        /// Objects at most.
        limit: u32,
    },
    /// The chunks of up to `limit` parts of multipart uploads in progress after the part row
    /// `after`, in row order (answered as [`Answer::Chunks`]).
    PartChunks {
        /// Resume after this row key.
        after: Option<Vec<u8>>,
        /// Parts at most.
        limit: u32,
    },
}

/// One entry of a listing.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// An object.
    Object {
        /// Key.
        key: String,
        /// Bytes.
        size: u64,
        /// ETag without quotes.
        etag: String,
        /// Unix milliseconds.
        modified_ms: u64,
    },
    /// Keys rolled up by the delimiter.
    Prefix(String),
}

impl Listed {
    /// The key or prefix: what a listing sorts by.
    pub fn name(&self) -> &str {
        match self {
            Listed::Object { key, .. } => key,
            Listed::Prefix(p) => p,
        }
    }
}

/// Answers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A key.
    Key(Option<KeyRec>),
    /// Keys.
    Keys(Vec<KeyRec>),
    /// A bucket.
    Bucket(Option<BucketRec>),
    /// Buckets with their names.
    Buckets(Vec<(String, BucketRec)>),
    /// An object.
    Object(Option<ObjectRec>),
    /// A listing page of one partition, in name order.
    Listed(Vec<Listed>),
    /// Whether any.
    Any(bool),
    /// An upload and its parts by number.
    Upload(Option<(UploadRec, Vec<(u32, PartRec)>)>),
    /// Chunk hashes of a page of objects, and the row to resume after (`None`: the end).
    Chunks(Vec<[u8; 32]>, Option<Vec<u8>>),
}

fn key_row(id: &str) -> Vec<u8> {
    format!("k/{id}").into_bytes()
}

fn user_key_row(user: &str, id: &str) -> Vec<u8> {
    format!("uk/{user}/{id}").into_bytes()
}

fn bucket_row(name: &str) -> Vec<u8> {
    format!("b/{name}").into_bytes()
}

fn upload_row(id: &str) -> Vec<u8> {
    format!("u/{id}").into_bytes()
}

fn part_prefix(id: &str) -> String {
    format!("p/{id}/")
}

fn part_row(id: &str, part: u32) -> Vec<u8> {
    format!("p/{id}/{part:05}").into_bytes()
}

/// Every part of upload `id`, by number.
fn parts_of(kv: &dyn KvRead, id: &str) -> Result<Vec<(u32, PartRec)>, StoreError> {
    let prefix = part_prefix(id);
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let rows = kv.scan(prefix.as_bytes(), after.as_deref(), 1000)?;
        let Some((last, _)) = rows.last() else { break };
        after = Some(last.clone());
        for (k, v) in &rows {
            let n = std::str::from_utf8(&k[prefix.len()..]).ok().and_then(|n| n.parse().ok()).unwrap_or(0);
            out.push((n, PartRec::decode(v)?));
        }
    }
    Ok(out)
}

/// S3's multipart ETag: hex MD5 of the parts' binary MD5s, `-` and the part count.
pub fn multipart_etag(part_etags: &[&str]) -> String {
    use md5::Digest;
    let mut md5 = md5::Md5::new();
    for etag in part_etags {
        let bytes: Vec<u8> = (0..etag.len() / 2)
            .filter_map(|i| etag.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect();
        md5.update(&bytes);
    }
    let hex: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{}", part_etags.len())
}

fn object_prefix(bucket: &str) -> String {
    format!("o/{bucket}/")
}

fn object_row(bucket: &str, key: &str) -> Vec<u8> {
    format!("o/{bucket}/{key}").into_bytes()
}

/// A byte that never occurs in UTF-8: a key `p` followed by it sorts after every key that
/// starts with `p`.
const PAST: u8 = 0xFF;

/// See the module docs.
#[derive(Debug)]
pub struct Objects;

impl Service for Objects {
    const ID: ServiceId = 7;
    const NAME: &'static str = "objects";
    type Command = Command;
    type Reply = Reply;
    type Rejection = Rejection;
    type Query = Query;
    type Answer = Answer;

    fn apply(kv: &mut dyn Kv, command: Command) -> Result<Result<Reply, Rejection>, StoreError> {
        match command {
            Command::PutKey(rec) => {
                if kv.get(&key_row(&rec.access_key_id))?.is_some() {
                    return Ok(Err(Rejection::KeyTaken));
                }
                let bytes = rec.encode()?;
                kv.put(&user_key_row(&rec.user, &rec.access_key_id), bytes.clone());
                kv.put(&key_row(&rec.access_key_id), bytes);
                Ok(Ok(Reply::Done))
            }
            Command::DeleteKey { user, access_key_id } => {
                let Some(rec) = get::<KeyRec>(kv, &key_row(&access_key_id))? else {
                    return Ok(Ok(Reply::Deleted(false)));
                };
                if rec.user != user {
                    return Ok(Ok(Reply::Deleted(false)));
                }
                kv.delete(&key_row(&access_key_id));
                kv.delete(&user_key_row(&user, &access_key_id));
                Ok(Ok(Reply::Deleted(true)))
            }
            Command::CreateBucket { name, rec } => {
                if let Some(old) = get::<BucketRec>(kv, &bucket_row(&name))? {
                    return Ok(Err(Rejection::BucketExists { owner: old.owner }));
                }
                kv.put(&bucket_row(&name), rec.encode()?);
                Ok(Ok(Reply::Done))
            }
            Command::DeleteBucket { name } => {
                if kv.get(&bucket_row(&name))?.is_none() {
                    return Ok(Err(Rejection::NoSuchBucket));
                }
                kv.delete(&bucket_row(&name));
                Ok(Ok(Reply::Done))
            }
            Command::PutObject { bucket, key, rec } => {
                kv.put(&object_row(&bucket, &key), rec.encode()?);
                Ok(Ok(Reply::Done))
            }
            Command::CreateUpload { upload_id, rec } => {
                kv.put(&upload_row(&upload_id), rec.encode()?);
                Ok(Ok(Reply::Done))
            }
            Command::PutPart { upload_id, part, rec } => {
                if kv.get(&upload_row(&upload_id))?.is_none() {
                    return Ok(Err(Rejection::NoSuchUpload));
                }
                kv.put(&part_row(&upload_id, part), rec.encode()?);
                Ok(Ok(Reply::Done))
            }
            Command::CompleteUpload { upload_id, parts, modified_ms } => {
                let Some(upload) = get::<UploadRec>(kv, &upload_row(&upload_id))? else {
                    return Ok(Err(Rejection::NoSuchUpload));
                };
                if parts.is_empty() || parts.windows(2).any(|w| w[0].0 >= w[1].0) {
                    return Ok(Err(Rejection::InvalidPartOrder));
                }
                let (mut chunks, mut size, mut etags) = (Vec::new(), 0u64, Vec::new());
                for (n, etag) in &parts {
                    match get::<PartRec>(kv, &part_row(&upload_id, *n))? {
                        Some(part) if part.etag == *etag => {
                            size += part.size;
                            chunks.extend(part.chunks);
                            etags.push(etag.as_str());
                        }
                        _ => return Ok(Err(Rejection::InvalidPart(*n))),
                    }
                }
                let rec = ObjectRec {
                    size,
                    content_type: upload.content_type,
                    cache_control: upload.cache_control,
                    etag: multipart_etag(&etags),
                    chunks,
                    owner: upload.owner,
                    modified_ms,
                };
                kv.put(&object_row(&upload.bucket, &upload.key), rec.encode()?);
                for (n, _) in parts_of(kv, &upload_id)? {
                    kv.delete(&part_row(&upload_id, n));
                }
                kv.delete(&upload_row(&upload_id));
                Ok(Ok(Reply::Completed(rec)))
            }
            Command::AbortUpload { upload_id } => {
                let existed = kv.get(&upload_row(&upload_id))?.is_some();
                for (n, _) in parts_of(kv, &upload_id)? {
                    kv.delete(&part_row(&upload_id, n));
                }
                kv.delete(&upload_row(&upload_id));
                Ok(Ok(Reply::Deleted(existed)))
            }
            Command::DeleteObject { bucket, key } => {
                let row = object_row(&bucket, &key);
                let existed = kv.get(&row)?.is_some();
                kv.delete(&row);
                Ok(Ok(Reply::Deleted(existed)))
            }
        }
    }

    fn query(kv: &dyn KvRead, query: Query) -> Result<Answer, StoreError> {
        Ok(match query {
            Query::Key(id) => Answer::Key(get(kv, &key_row(&id))?),
            Query::UserKeys(user) => {
                let prefix = format!("uk/{user}/");
                let rows = kv.scan(prefix.as_bytes(), None, 1000)?;
                Answer::Keys(rows.iter().map(|(_, v)| KeyRec::decode(v)).collect::<Result<_, _>>()?)
            }
            Query::Bucket(name) => Answer::Bucket(get(kv, &bucket_row(&name))?),
            Query::Buckets(owner) => {
                let mut out = Vec::new();
                let mut after: Option<Vec<u8>> = None;
                loop {
                    let rows = kv.scan(b"b/", after.as_deref(), 1000)?;
                    let Some((last, _)) = rows.last() else { break };
                    after = Some(last.clone());
                    for (k, v) in &rows {
                        let rec = BucketRec::decode(v)?;
                        if rec.owner == owner {
                            out.push((String::from_utf8_lossy(&k[2..]).into_owned(), rec));
                        }
                    }
                }
                Answer::Buckets(out)
            }
            Query::Object { bucket, key } => Answer::Object(get(kv, &object_row(&bucket, &key))?),
            Query::List { bucket, prefix, delimiter, after, limit } => {
                Answer::Listed(list(kv, &bucket, &prefix, &delimiter, after.as_deref(), limit)?)
            }
            Query::Upload(id) => Answer::Upload(match get::<UploadRec>(kv, &upload_row(&id))? {
                Some(rec) => Some((rec, parts_of(kv, &id)?)),
                None => None,
            }),
            Query::Chunks { after, limit } => {
                chunk_page(kv, b"o/", after, limit, |v| Ok(ObjectRec::decode(v)?.chunks))?
            }
            Query::PartChunks { after, limit } => {
                chunk_page(kv, b"p/", after, limit, |v| Ok(PartRec::decode(v)?.chunks))?
            }
            Query::AnyObject(bucket) => Answer::Any(!kv.scan(object_prefix(&bucket).as_bytes(), None, 1)?.is_empty()),
        })
    }
}

/// The chunk hashes of up to `limit` rows under `prefix` after `after`, each row's chunks read
/// by `chunks_of`, and the row to resume after (`None`: the end).
fn chunk_page(
    kv: &dyn KvRead,
    prefix: &[u8],
    after: Option<Vec<u8>>,
    limit: u32,
    chunks_of: impl Fn(&[u8]) -> Result<Vec<ChunkRef>, StoreError>,
) -> Result<Answer, StoreError> {
    let limit = (limit as usize).clamp(1, 1000);
    let rows = kv.scan(prefix, after.as_deref(), limit)?;
    let next = (rows.len() == limit).then(|| rows.last().map(|r| r.0.clone())).flatten();
    let mut hashes = Vec::new();
    for (_, v) in &rows {
        hashes.extend(chunks_of(v)?.iter().map(|c| c.hash));
    }
    Ok(Answer::Chunks(hashes, next))
}

/// One partition's page of a listing (see [`Query::List`]).
fn list(
    kv: &dyn KvRead,
    bucket: &str,
    prefix: &str,
    delimiter: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Listed>, StoreError> {
    let limit = (limit as usize).min(LIST_PER_PARTITION);
    let base = object_prefix(bucket);
    let scan_prefix = format!("{base}{prefix}");
    let mut out: Vec<Listed> = Vec::new();
    // Resume point: a row key; a common prefix given as `after` resumes past all its keys.
    let mut cursor: Option<Vec<u8>> = after.map(|a| {
        let mut k = format!("{base}{a}").into_bytes();
        if !delimiter.is_empty() && a.ends_with(delimiter) && a.starts_with(prefix) {
            k.push(PAST);
        }
        k
    });
    while out.len() < limit {
        let rows = kv.scan(scan_prefix.as_bytes(), cursor.as_deref(), limit - out.len())?;
        if rows.is_empty() {
            break;
        }
        let mut rolled = false;
        for (row, value) in rows {
            let key = String::from_utf8_lossy(&row[base.len()..]).into_owned();
            let rest = &key[prefix.len()..];
            if !delimiter.is_empty()
                && let Some(at) = rest.find(delimiter)
            {
                let common = format!("{prefix}{}", &rest[..at + delimiter.len()]);
                let mut past = format!("{base}{common}").into_bytes();
                past.push(PAST);
                out.push(Listed::Prefix(common));
                cursor = Some(past);
                rolled = true;
                break;
            }
            let rec = ObjectRec::decode(&value)?;
            out.push(Listed::Object { key, size: rec.size, etag: rec.etag, modified_ms: rec.modified_ms });
            cursor = Some(row);
            if out.len() == limit {
                break;
            }
        }
        if !rolled && out.len() < limit {
            // The scan ended without filling the page: nothing more matches.
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemKv;

    fn obj(size: u64) -> ObjectRec {
        ObjectRec {
            size,
            content_type: "text/plain".into(),
            cache_control: None,
            etag: "e".into(),
            chunks: vec![],
            owner: "u1".into(),
            modified_ms: 1,
        }
    }

    fn names(answer: Answer) -> Vec<String> {
        match answer {
            Answer::Listed(l) => l.iter().map(|e| e.name().to_string()).collect(),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn listing_rolls_up_by_delimiter_and_resumes_after_a_common_prefix() {
        let mut kv = MemKv::default();
        for key in ["a/1", "a/2", "b", "c/x/1", "c/y", "d"] {
            let put = Command::PutObject { bucket: "bk".into(), key: key.into(), rec: obj(1) };
            assert_eq!(Objects::apply(&mut kv, put).expect("apply"), Ok(Reply::Done));
        }
        let q = |prefix: &str, delimiter: &str, after: Option<&str>, limit| Query::List {
            bucket: "bk".into(),
            prefix: prefix.into(),
            delimiter: delimiter.into(),
            after: after.map(str::to_string),
            limit,
        };
        let all = |q| names(Objects::query(&kv, q).expect("query"));
        assert_eq!(all(q("", "/", None, 100)), ["a/", "b", "c/", "d"]);
        assert_eq!(all(q("", "/", None, 2)), ["a/", "b"]);
        assert_eq!(all(q("", "/", Some("a/"), 2)), ["b", "c/"]);
        assert_eq!(all(q("c/", "/", None, 10)), ["c/x/", "c/y"]);
        assert_eq!(all(q("", "", Some("b"), 10)), ["c/x/1", "c/y", "d"]);
        // Another bucket's objects never show.
        let other = Query::List { bucket: "b".into(), prefix: "".into(), delimiter: "".into(), after: None, limit: 10 };
        assert_eq!(all(other), Vec::<String>::new());
    }

    #[test]
    fn a_completed_upload_is_its_listed_parts_in_order_and_leaves_no_parts() {
        let mut kv = MemKv::default();
        let upload = UploadRec {
            bucket: "b".into(),
            key: "k".into(),
            owner: "u1".into(),
            content_type: "t".into(),
            cache_control: None,
            created_ms: 1,
        };
        let create = Command::CreateUpload { upload_id: "up".into(), rec: upload };
        assert_eq!(Objects::apply(&mut kv, create).expect("apply"), Ok(Reply::Done));
        let chunk = |b: u8| ChunkRef { hash: [b; 32], len: 10 };
        for (n, etag) in [(1, "00"), (2, "11"), (3, "22")] {
            let rec = PartRec { etag: etag.into(), size: 10, chunks: vec![chunk(n as u8)], modified_ms: 1 };
            let put = Command::PutPart { upload_id: "up".into(), part: n, rec };
            assert_eq!(Objects::apply(&mut kv, put).expect("apply"), Ok(Reply::Done));
        }
        let complete = |parts: Vec<(u32, &str)>| Command::CompleteUpload {
            upload_id: "up".into(),
            parts: parts.into_iter().map(|(n, e)| (n, e.to_string())).collect(),
            modified_ms: 2,
        };
        // Parts in progress reference their chunks, page by page.
        let first = Objects::query(&kv, Query::PartChunks { after: None, limit: 2 }).expect("q");
        let Answer::Chunks(hashes, Some(next)) = first else { panic!("no next page: {first:?}") };
        assert_eq!(hashes, vec![[1; 32], [2; 32]]);
        let rest = Objects::query(&kv, Query::PartChunks { after: Some(next), limit: 2 }).expect("q");
        assert_eq!(rest, Answer::Chunks(vec![[3; 32]], None));
        assert_eq!(
            Objects::apply(&mut kv, complete(vec![(1, "00"), (2, "ff")])).expect("apply"),
            Err(Rejection::InvalidPart(2))
        );
        assert_eq!(
            Objects::apply(&mut kv, complete(vec![(3, "22"), (1, "00")])).expect("apply"),
            Err(Rejection::InvalidPartOrder)
        );
        let Ok(Reply::Completed(rec)) = Objects::apply(&mut kv, complete(vec![(1, "00"), (3, "22")])).expect("apply")
        else {
            panic!("not completed")
        };
        assert_eq!((rec.size, rec.chunks, rec.etag.ends_with("-2")), (20, vec![chunk(1), chunk(3)], true));
        // The object now references the chunks of the parts it took; no part row is left.
        let page = |q| Objects::query(&kv, q).expect("q");
        assert_eq!(page(Query::PartChunks { after: None, limit: 10 }), Answer::Chunks(vec![], None));
        assert_eq!(page(Query::Chunks { after: None, limit: 10 }), Answer::Chunks(vec![[1; 32], [3; 32]], None));
        assert_eq!(Objects::query(&kv, Query::Upload("up".into())).expect("q"), Answer::Upload(None));
        assert!(kv.0.keys().all(|k| !k.starts_with(b"p/")), "parts left behind");
        let get = Query::Object { bucket: "b".into(), key: "k".into() };
        assert!(matches!(Objects::query(&kv, get).expect("q"), Answer::Object(Some(_))));
    }

    #[test]
    fn buckets_are_created_once_and_keys_belong_to_their_user() {
        let mut kv = MemKv::default();
        let rec = BucketRec { owner: "u1".into(), public: false, created_ms: 1 };
        let create = Command::CreateBucket { name: "x".into(), rec: rec.clone() };
        assert_eq!(Objects::apply(&mut kv, create.clone()).expect("apply"), Ok(Reply::Done));
        assert_eq!(
            Objects::apply(&mut kv, create).expect("apply"),
            Err(Rejection::BucketExists { owner: "u1".into() })
        );
        let key = KeyRec { access_key_id: "K".into(), secret: "s".into(), user: "u1".into(), created_ms: 1 };
        assert_eq!(Objects::apply(&mut kv, Command::PutKey(key.clone())).expect("apply"), Ok(Reply::Done));
        let other = Command::DeleteKey { user: "u2".into(), access_key_id: "K".into() };
        assert_eq!(Objects::apply(&mut kv, other).expect("apply"), Ok(Reply::Deleted(false)));
        assert_eq!(Objects::query(&kv, Query::Key("K".into())).expect("q"), Answer::Key(Some(key)));
        let mine = Command::DeleteKey { user: "u1".into(), access_key_id: "K".into() };
        assert_eq!(Objects::apply(&mut kv, mine).expect("apply"), Ok(Reply::Deleted(true)));
        assert_eq!(Objects::query(&kv, Query::UserKeys("u1".into())).expect("q"), Answer::Keys(vec![]));
    }
}
