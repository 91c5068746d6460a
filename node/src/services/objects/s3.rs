//! The S3 endpoint: the `s3s` crate speaks the protocol (routing, XML, SigV4 in headers and
//! pre-signed queries); this module answers its operations from [`ObjectService`].
//!
//! Access: a signed request acts as the user of its access key. Buckets have an owner; a
//! private bucket serves only its owner; a bucket created with the canned ACL
//! `x-amz-acl: public-read` also serves GET and HEAD of its objects to unsigned requests.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use hyper_util::rt::TokioIo;
use s3s::auth::{Credentials, S3Auth, SecretKey};
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};
use tracing::{debug, info, warn};

use super::state::{Listed, ObjectRec};
use super::{ACCEPT_BACKOFF, ObjError, ObjectService};
use crate::services::client::CallError;

/// Accepts connections on `listener` and serves S3 on each until the task is aborted.
pub async fn serve(svc: Arc<ObjectService>, listener: std::net::TcpListener) {
    let listener = match listener.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(listener)) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "the S3 listener could not be used");
            return;
        }
    };
    let mut builder = S3ServiceBuilder::new(Front { svc: Arc::clone(&svc) });
    builder.set_auth(KeyAuth { svc: Arc::clone(&svc) });
    builder.set_access(OpenAccess);
    let service = builder.build();
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "S3 endpoint listening");
    }
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                warn!(error = %e, "S3 accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        // Headers and body go out in separate writes: without this, Nagle's algorithm and the
        // client's delayed ACK hold small answers for tens of milliseconds.
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(error = %e, "S3 connection ended with an error");
            }
        });
    }
}

/// Secrets of S3 keys, from the meta group.
struct KeyAuth {
    svc: Arc<ObjectService>,
}

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.svc.key(access_key, true).await {
            Ok(Some(rec)) => Ok(SecretKey::from(rec.secret.as_str())),
            Ok(None) => Err(s3_error!(InvalidAccessKeyId, "no such access key")),
            Err(e) => Err(obj_error(e)),
        }
    }
}

/// Lets unsigned requests through to the operations, which decide (public-read buckets).
struct OpenAccess;

#[async_trait::async_trait]
impl s3s::access::S3Access for OpenAccess {
    async fn check(&self, _cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        Ok(())
    }
}

/// The S3 operations.
struct Front {
    svc: Arc<ObjectService>,
}

/// Maps an object error to its S3 error.
fn obj_error(e: ObjError) -> S3Error {
    let code = match &e {
        ObjError::NoSuchBucket => S3ErrorCode::NoSuchBucket,
        ObjError::NoSuchKey => S3ErrorCode::NoSuchKey,
        ObjError::BucketExists { mine: true } => S3ErrorCode::BucketAlreadyOwnedByYou,
        ObjError::BucketExists { mine: false } => S3ErrorCode::BucketAlreadyExists,
        ObjError::BucketNotEmpty => S3ErrorCode::BucketNotEmpty,
        ObjError::TooLarge(_) => S3ErrorCode::EntityTooLarge,
        ObjError::Body(_) => S3ErrorCode::IncompleteBody,
        ObjError::NoSuchUpload => S3ErrorCode::NoSuchUpload,
        ObjError::InvalidPart(_) => S3ErrorCode::InvalidPart,
        ObjError::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
        ObjError::Cluster(CallError::Starting | CallError::Cluster(_)) | ObjError::Replicas(_) => {
            S3ErrorCode::ServiceUnavailable
        }
        ObjError::Cluster(CallError::Corrupt(_)) | ObjError::Internal(_) => S3ErrorCode::InternalError,
    };
    S3Error::with_message(code, e.to_string())
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(ms))
}

fn unix_secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

fn etag(rec: &ObjectRec) -> ETag {
    ETag::Strong(rec.etag.clone())
}

fn access_denied() -> S3Error {
    s3_error!(AccessDenied, "Access Denied")
}

/// Whether a GET/HEAD with these conditions answers 304 Not Modified.
fn not_modified(rec: &ObjectRec, if_none_match: Option<&ETagCondition>, if_modified_since: Option<&Timestamp>) -> bool {
    if let Some(cond) = if_none_match {
        return match cond {
            ETagCondition::Any => true,
            ETagCondition::ETag(e) => e.value() == rec.etag,
        };
    }
    if let Some(since) = if_modified_since {
        return (rec.modified_ms / 1000) as i64 <= unix_secs(since);
    }
    false
}

/// 304 Not Modified with the object's validators. `s3s` sends an operation's own status only
/// through an error; hyper sends no body with a 304.
fn not_modified_answer(rec: &ObjectRec) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::Custom("NotModified".into()), "Not Modified");
    e.set_status_code(hyper::StatusCode::NOT_MODIFIED);
    let mut headers = hyper::HeaderMap::new();
    if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("\"{}\"", rec.etag)) {
        headers.insert(hyper::header::ETAG, v);
    }
    let mut date = Vec::new();
    if timestamp(rec.modified_ms).format(TimestampFormat::HttpDate, &mut date).is_ok()
        && let Ok(v) = hyper::header::HeaderValue::from_bytes(&date)
    {
        headers.insert(hyper::header::LAST_MODIFIED, v);
    }
    e.set_headers(headers);
    e
}

impl Front {
    /// The user a request acts as (`None`: unsigned).
    async fn user(&self, creds: Option<&Credentials>) -> S3Result<Option<String>> {
        let Some(creds) = creds else { return Ok(None) };
        match self.svc.key(&creds.access_key, false).await.map_err(obj_error)? {
            Some(rec) => Ok(Some(rec.user)),
            None => Err(s3_error!(InvalidAccessKeyId, "no such access key")),
        }
    }

    /// The signed caller, or AccessDenied.
    async fn signed(&self, creds: Option<&Credentials>) -> S3Result<String> {
        self.user(creds).await?.ok_or_else(access_denied)
    }

    /// Bucket `name` if the caller owns it.
    async fn owned_bucket(&self, name: &str, user: &str) -> S3Result<super::state::BucketRec> {
        let rec = self.svc.bucket(name).await.map_err(obj_error)?.ok_or_else(|| obj_error(ObjError::NoSuchBucket))?;
        if rec.owner != user {
            return Err(access_denied());
        }
        Ok(rec)
    }

    /// Bucket `name` if the caller may read it (its owner, or anyone when public).
    async fn readable_bucket(&self, name: &str, creds: Option<&Credentials>) -> S3Result<super::state::BucketRec> {
        let user = self.user(creds).await?;
        let rec = self.svc.bucket(name).await.map_err(obj_error)?;
        let Some(rec) = rec else {
            // An unsigned caller learns nothing about buckets it may not read.
            return Err(if user.is_some() { obj_error(ObjError::NoSuchBucket) } else { access_denied() });
        };
        if rec.public || user.as_deref() == Some(rec.owner.as_str()) { Ok(rec) } else { Err(access_denied()) }
    }

    /// Counts and times one operation.
    fn done<T>(&self, op: &'static str, started: Instant, result: S3Result<T>) -> S3Result<T> {
        let m = self.svc.metrics();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.status_code().is_some_and(|s| s.is_server_error()) => "server_error",
            Err(e) if matches!(e.code(), S3ErrorCode::ServiceUnavailable | S3ErrorCode::InternalError) => {
                "server_error"
            }
            Err(_) => "client_error",
        };
        m.requests.with_label_values(&[op, outcome]).inc();
        m.seconds.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
        result
    }

    async fn get_or_head(
        &self,
        creds: Option<&Credentials>,
        bucket: &str,
        key: &str,
        range: Option<&Range>,
        if_none_match: Option<&ETagCondition>,
        if_modified_since: Option<&Timestamp>,
    ) -> S3Result<(ObjectRec, Option<std::ops::Range<u64>>, bool)> {
        let b = self.readable_bucket(bucket, creds).await?;
        let rec =
            self.svc.object(bucket, key).await.map_err(obj_error)?.ok_or_else(|| obj_error(ObjError::NoSuchKey))?;
        if not_modified(&rec, if_none_match, if_modified_since) {
            return Err(not_modified_answer(&rec));
        }
        let range = range.map(|r| r.check(rec.size)).transpose()?;
        Ok((rec, range, b.public))
    }

    fn cache_control(&self, rec: &ObjectRec, public: bool) -> Option<String> {
        rec.cache_control
            .clone()
            .or_else(|| public.then(|| format!("public, max-age={}", self.svc.config().public_max_age)))
    }
}

#[async_trait::async_trait]
impl S3 for Front {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let started = Instant::now();
        let result = async {
            let user = self.signed(req.credentials.as_ref()).await?;
            let public = match req.input.acl.as_ref().map(|a| a.as_str()) {
                None | Some(BucketCannedACL::PRIVATE) => false,
                Some(BucketCannedACL::PUBLIC_READ) => true,
                Some(other) => {
                    return Err(S3Error::with_message(
                        S3ErrorCode::NotImplemented,
                        format!("canned ACL {other} is not supported: use private or public-read"),
                    ));
                }
            };
            self.svc.create_bucket(&req.input.bucket, &user, public).await.map_err(obj_error)?;
            let output = CreateBucketOutput { location: Some(format!("/{}", req.input.bucket)) };
            Ok(S3Response::new(output))
        }
        .await;
        self.done("CreateBucket", started, result)
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let started = Instant::now();
        let result = async {
            let user = self.signed(req.credentials.as_ref()).await?;
            self.owned_bucket(&req.input.bucket, &user).await?;
            self.svc.delete_bucket(&req.input.bucket).await.map_err(obj_error)?;
            Ok(S3Response::new(DeleteBucketOutput::default()))
        }
        .await;
        self.done("DeleteBucket", started, result)
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let started = Instant::now();
        let result = async {
            self.readable_bucket(&req.input.bucket, req.credentials.as_ref()).await?;
            Ok(S3Response::new(HeadBucketOutput::default()))
        }
        .await;
        self.done("HeadBucket", started, result)
    }

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let started = Instant::now();
        let result = async {
            let user = self.signed(req.credentials.as_ref()).await?;
            let buckets = self.svc.buckets_of(&user).await.map_err(obj_error)?;
            let buckets = buckets
                .into_iter()
                .map(|(name, rec)| Bucket {
                    name: Some(name),
                    creation_date: Some(timestamp(rec.created_ms)),
                    ..Default::default()
                })
                .collect();
            let owner = Owner { id: Some(user.clone()), display_name: Some(user) };
            Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), owner: Some(owner), ..Default::default() }))
        }
        .await;
        self.done("ListBuckets", started, result)
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let started = Instant::now();
        let result = async {
            let user = self.signed(req.credentials.as_ref()).await?;
            let input = req.input;
            self.owned_bucket(&input.bucket, &user).await?;
            if input.content_length.is_some_and(|n| n as u64 > self.svc.config().max_size) {
                return Err(obj_error(ObjError::TooLarge(self.svc.config().max_size)));
            }
            let content_type = input.content_type.unwrap_or_else(|| "binary/octet-stream".to_string());
            let body = match input.body {
                Some(body) => body,
                None => StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>()),
            };
            let rec = self
                .svc
                .put_object(&input.bucket, &input.key, body, content_type, input.cache_control, &user)
                .await
                .map_err(obj_error)?;
            Ok(S3Response::new(PutObjectOutput { e_tag: Some(etag(&rec)), ..Default::default() }))
        }
        .await;
        self.done("PutObject", started, result)
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let started = Instant::now();
        let result = async {
            let i = &req.input;
            let (rec, range, public) = self
                .get_or_head(
                    req.credentials.as_ref(),
                    &i.bucket,
                    &i.key,
                    i.range.as_ref(),
                    i.if_none_match.as_ref(),
                    i.if_modified_since.as_ref(),
                )
                .await?;
            let mut output = GetObjectOutput {
                e_tag: Some(etag(&rec)),
                last_modified: Some(timestamp(rec.modified_ms)),
                cache_control: self.cache_control(&rec, public),
                accept_ranges: Some("bytes".to_string()),
                ..Default::default()
            };
            let span = range.clone().unwrap_or(0..rec.size);
            output.content_length = Some((span.end - span.start) as i64);
            output.content_type = Some(rec.content_type.clone());
            if let Some(r) = &range {
                output.content_range = Some(format!("bytes {}-{}/{}", r.start, r.end - 1, rec.size));
            }
            output.body = Some(StreamingBlob::wrap(self.svc.read_object(&i.bucket, &i.key, &rec, span)));
            Ok(S3Response::new(output))
        }
        .await;
        self.done("GetObject", started, result)
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let started = Instant::now();
        let result = async {
            let i = &req.input;
            let (rec, _, public) = self
                .get_or_head(
                    req.credentials.as_ref(),
                    &i.bucket,
                    &i.key,
                    None,
                    i.if_none_match.as_ref(),
                    i.if_modified_since.as_ref(),
                )
                .await?;
            let output = HeadObjectOutput {
                e_tag: Some(etag(&rec)),
                last_modified: Some(timestamp(rec.modified_ms)),
                cache_control: self.cache_control(&rec, public),
                accept_ranges: Some("bytes".to_string()),
                content_length: Some(rec.size as i64),
                content_type: Some(rec.content_type.clone()),
                ..Default::default()
            };
            Ok(S3Response::new(output))
        }
        .await;
        self.done("HeadObject", started, result)
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let started = Instant::now();
        let result = async {
            let user = self.signed(req.credentials.as_ref()).await?;
            self.owned_bucket(&req.input.bucket, &user).await?;
            self.svc.delete_object(&req.input.bucket, &req.input.key).await.map_err(obj_error)?;
            Ok(S3Response::new(DeleteObjectOutput::default()))
        }
        .await;
        self.done("DeleteObject", started, result)
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let started = Instant::now();
        let result = async {
            let user = self.signed(req.credentials.as_ref()).await?;
            let bucket = &req.input.bucket;
            self.owned_bucket(bucket, &user).await?;
            let quiet = req.input.delete.quiet.unwrap_or(false);
            let (mut deleted, mut errors) = (Vec::new(), Vec::new());
            for object in &req.input.delete.objects {
                match self.svc.delete_object(bucket, &object.key).await {
                    Ok(_) if quiet => {}
                    Ok(_) => deleted.push(DeletedObject { key: Some(object.key.clone()), ..Default::default() }),
                    Err(e) => {
                        let e = obj_error(e);
                        errors.push(Error {
                            key: Some(object.key.clone()),
                            code: Some(e.code().as_str().to_string()),
                            message: e.message().map(str::to_string),
                            ..Default::default()
                        });
                    }
                }
            }
            Ok(S3Response::new(DeleteObjectsOutput {
                deleted: Some(deleted),
                errors: Some(errors),
                ..Default::default()
            }))
        }
        .await;
        self.done("DeleteObjects", started, result)
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let started = Instant::now();
        let result = async {
            let user = self.signed(req.credentials.as_ref()).await?;
            let i = &req.input;
            let CopySource::Bucket { bucket: src_bucket, key: src_key, .. } = &i.copy_source else {
                return Err(s3_error!(NotImplemented, "only bucket/key copy sources are supported"));
            };
            self.readable_bucket(src_bucket, req.credentials.as_ref()).await?;
            self.owned_bucket(&i.bucket, &user).await?;
            let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
            let content_type = if replace { i.content_type.clone() } else { None };
            let rec = self
                .svc
                .copy_object((src_bucket, src_key), (&i.bucket, &i.key), content_type, &user)
                .await
                .map_err(obj_error)?;
            let result = CopyObjectResult {
                e_tag: Some(etag(&rec)),
                last_modified: Some(timestamp(rec.modified_ms)),
                ..Default::default()
            };
            Ok(S3Response::new(CopyObjectOutput { copy_object_result: Some(result), ..Default::default() }))
        }
        .await;
        self.done("CopyObject", started, result)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let started = Instant::now();
        let result = async {
            let user = self.signed(req.credentials.as_ref()).await?;
            let i = req.input;
            self.owned_bucket(&i.bucket, &user).await?;
            let content_type = i.content_type.unwrap_or_else(|| "binary/octet-stream".to_string());
            let id = self
                .svc
                .create_upload(&i.bucket, &i.key, &user, content_type, i.cache_control)
                .await
                .map_err(obj_error)?;
            let output = CreateMultipartUploadOutput {
                bucket: Some(i.bucket),
                key: Some(i.key),
                upload_id: Some(id),
                ..Default::default()
            };
            Ok(S3Response::new(output))
        }
        .await;
        self.done("CreateMultipartUpload", started, result)
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let started = Instant::now();
        let result = async {
            let user = self.signed(req.credentials.as_ref()).await?;
            let i = req.input;
            let part = u32::try_from(i.part_number)
                .ok()
                .filter(|n| (1..=super::state::MAX_PART).contains(n))
                .ok_or_else(|| s3_error!(InvalidArgument, "part numbers are 1 to 10000"))?;
            let upload = self.svc.upload(&i.bucket, &i.key, &i.upload_id).await.map_err(obj_error)?;
            match upload {
                Some((rec, _)) if rec.owner == user => {}
                Some(_) => return Err(access_denied()),
                None => return Err(obj_error(ObjError::NoSuchUpload)),
            }
            let body = match i.body {
                Some(body) => body,
                None => StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>()),
            };
            let etag = self.svc.upload_part((&i.bucket, &i.key, &i.upload_id), part, body).await.map_err(obj_error)?;
            Ok(S3Response::new(UploadPartOutput { e_tag: Some(ETag::Strong(etag)), ..Default::default() }))
        }
        .await;
        self.done("UploadPart", started, result)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let started = Instant::now();
        let result = async {
            let user = self.signed(req.credentials.as_ref()).await?;
            let i = req.input;
            match self.svc.upload(&i.bucket, &i.key, &i.upload_id).await.map_err(obj_error)? {
                Some((rec, _)) if rec.owner == user => {}
                Some(_) => return Err(access_denied()),
                None => return Err(obj_error(ObjError::NoSuchUpload)),
            }
            let listed = i.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
            let mut parts = Vec::new();
            for p in listed {
                let n = p.part_number.and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
                let etag = p.e_tag.map(ETag::into_value).unwrap_or_default();
                parts.push((n, etag));
            }
            let rec = self.svc.complete_upload(&i.bucket, &i.key, &i.upload_id, parts).await.map_err(obj_error)?;
            let output = CompleteMultipartUploadOutput {
                bucket: Some(i.bucket.clone()),
                key: Some(i.key.clone()),
                e_tag: Some(etag(&rec)),
                location: Some(format!("/{}/{}", i.bucket, i.key)),
                ..Default::default()
            };
            Ok(S3Response::new(output))
        }
        .await;
        self.done("CompleteMultipartUpload", started, result)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let started = Instant::now();
        let result = async {
            let user = self.signed(req.credentials.as_ref()).await?;
            let i = req.input;
            match self.svc.upload(&i.bucket, &i.key, &i.upload_id).await.map_err(obj_error)? {
                Some((rec, _)) if rec.owner == user => {}
                Some(_) => return Err(access_denied()),
                None => return Err(obj_error(ObjError::NoSuchUpload)),
            }
            self.svc.abort_upload(&i.bucket, &i.key, &i.upload_id).await.map_err(obj_error)?;
            Ok(S3Response::new(AbortMultipartUploadOutput::default()))
        }
        .await;
        self.done("AbortMultipartUpload", started, result)
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let started = Instant::now();
        let result = async {
            let user = self.signed(req.credentials.as_ref()).await?;
            let i = req.input;
            let Some((rec, parts)) = self.svc.upload(&i.bucket, &i.key, &i.upload_id).await.map_err(obj_error)? else {
                return Err(obj_error(ObjError::NoSuchUpload));
            };
            if rec.owner != user {
                return Err(access_denied());
            }
            let marker = i.part_number_marker.unwrap_or(0).max(0) as u32;
            let max = i.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
            let after: Vec<_> = parts.into_iter().filter(|(n, _)| *n > marker).collect();
            let truncated = after.len() > max;
            let page: Vec<Part> = after
                .into_iter()
                .take(max)
                .map(|(n, p)| Part {
                    part_number: Some(n as i32),
                    e_tag: Some(ETag::Strong(p.etag)),
                    size: Some(p.size as i64),
                    last_modified: Some(timestamp(p.modified_ms)),
                    ..Default::default()
                })
                .collect();
            let next = if truncated { page.last().and_then(|p| p.part_number) } else { None };
            let output = ListPartsOutput {
                bucket: Some(i.bucket),
                key: Some(i.key),
                upload_id: Some(i.upload_id),
                max_parts: Some(max as i32),
                part_number_marker: i.part_number_marker,
                next_part_number_marker: next,
                is_truncated: Some(truncated),
                parts: Some(page),
                ..Default::default()
            };
            Ok(S3Response::new(output))
        }
        .await;
        self.done("ListParts", started, result)
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let started = Instant::now();
        let result = async {
            let i = &req.input;
            self.readable_bucket(&i.bucket, req.credentials.as_ref()).await?;
            let prefix = i.prefix.clone().unwrap_or_default();
            let delimiter = i.delimiter.clone().unwrap_or_default();
            let max = i.max_keys.unwrap_or(1000).clamp(0, super::LIST_PER_PARTITION as i32 - 1) as usize;
            let after = i.continuation_token.clone().or_else(|| i.start_after.clone());
            let (entries, more) = if max == 0 {
                (Vec::new(), false)
            } else {
                self.svc.list(&i.bucket, &prefix, &delimiter, after, max).await.map_err(obj_error)?
            };
            let next = if more { entries.last().map(|e| e.name().to_string()) } else { None };
            let (mut contents, mut prefixes) = (Vec::new(), Vec::new());
            for entry in entries {
                match entry {
                    Listed::Object { key, size, etag, modified_ms } => contents.push(Object {
                        key: Some(key),
                        size: Some(size as i64),
                        e_tag: Some(ETag::Strong(etag)),
                        last_modified: Some(timestamp(modified_ms)),
                        ..Default::default()
                    }),
                    Listed::Prefix(p) => prefixes.push(CommonPrefix { prefix: Some(p) }),
                }
            }
            let output = ListObjectsV2Output {
                name: Some(i.bucket.clone()),
                prefix: Some(prefix),
                delimiter: i.delimiter.clone(),
                max_keys: Some(max as i32),
                key_count: Some((contents.len() + prefixes.len()) as i32),
                continuation_token: i.continuation_token.clone(),
                start_after: i.start_after.clone(),
                is_truncated: Some(more),
                next_continuation_token: next,
                contents: Some(contents),
                common_prefixes: Some(prefixes),
                ..Default::default()
            };
            Ok(S3Response::new(output))
        }
        .await;
        self.done("ListObjectsV2", started, result)
    }
}
