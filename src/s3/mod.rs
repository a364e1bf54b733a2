//! Everything that knows about S3, and nothing about serials or lineages.
//!
//! - [`S3Builder`] configures and validates a connection (`from_env()`, `with_*()`).
//! - [`S3Store`] implements [`crate::Store`] for one object with conditional S3 requests.
//! - S3 error codes are mapped to [`crate::Error`] here and nowhere else.

mod builder;
mod config;
mod credentials;
mod errors;
mod layout;
mod lock_table;
mod probe;
mod sse;
mod stream;
mod versions;
mod workspace;

pub use builder::S3Builder;
pub use config::ChecksumMode;
pub use credentials::AssumeRole;
pub use layout::{DEFAULT_WORKSPACE, DEFAULT_WORKSPACE_KEY_PREFIX};
pub use probe::{
    CheckLevel, Enforcement, PROBE_PREFIX, ProbeCheck, ProbeCleanup, ProbeFindings, ProbeReport,
    Verdict,
};
pub use sse::{CustomerKey, ServerSideEncryption};
pub use stream::Copied;
pub use workspace::S3Backend;

pub(crate) use credentials::parse_go_duration;

use crate::error::{Error, Result};
use crate::store::{
    DeleteOutcome, ETag, Fetched, Headed, ObjectHead, ObjectMetadata, Precondition, PutOutcome,
    Store, StoredObject, Written,
};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use config::{DeleteSupport, S3Config};
use errors::{
    is_checksum_refused, is_conditional_conflict, is_missing, is_not_found, is_not_implemented,
    is_not_modified, is_precondition_failed, sdk_error,
};
use sha2::Digest as _;
use std::sync::Arc;
use std::time::Duration;

/// One state object in S3, read and written with conditional requests.
///
/// Built by [`S3Builder::build_store`]; cheap to clone (the SDK client is shared).
#[derive(Clone, Debug)]
pub struct S3Store {
    /// The client, bucket and settings, shared with the backend and its other stores.
    config: Arc<S3Config>,
    key: String,
    /// `s3://bucket/key`, for messages ([`Store::location`]).
    location: String,
    /// `bucket/key`, as Terraform names the state in lock info ([`Store::path`]).
    path: String,
    /// A state object (not a sibling such as the lock): its digest is kept in the DynamoDB
    /// lock table when one is configured (`lock_table.rs`).
    tracks_digest: bool,
    /// Reads compare the body with that digest (as Terraform does). Off for a write path
    /// that reads only to write conditionally on what it read, and sets the digest itself.
    #[cfg_attr(not(feature = "dynamodb"), allow(dead_code))]
    compares_digest: bool,
}

/// Adds the SSE-C headers to a request when the store uses a customer key. (The request
/// builders share these methods but no trait, hence a macro.)
macro_rules! with_customer_key {
    ($request:expr, $sse:expr) => {
        match $sse {
            Some($crate::s3::ServerSideEncryption::CustomerKey(key)) => $request
                .sse_customer_algorithm("AES256")
                .sse_customer_key(key.key_base64())
                .sse_customer_key_md5(key.key_md5_base64()),
            _ => $request,
        }
    };
}
pub(crate) use with_customer_key;

/// Sends a read request (`GetObject`, `HeadObject`) as the backend's [`ChecksumMode`] says:
/// the `Compatible` way once that is configured or learnt; else as built, and, under `Auto`,
/// once more the `Compatible` way when the store refused it naming a checksum (learnt only if
/// that second try is answered). `$bodiless` is true for a HEAD, whose errors have no code.
macro_rules! send_read {
    ($request:expr, $config:expr, $operation:expr, $location:expr, $bodiless:expr) => {{
        let request = $request;
        let config: &$crate::s3::config::S3Config = $config;
        if config.checksums.compatible() {
            request
                .customize()
                .config_override($crate::s3::config::compatible_requests())
                .send()
                .await
        } else {
            match request.clone().send().await {
                Err(err)
                    if config.checksums.may_fall_back()
                        && $crate::s3::errors::is_checksum_refused(&err, $bodiless) =>
                {
                    let retried = request
                        .customize()
                        .config_override($crate::s3::config::compatible_requests())
                        .send()
                        .await;
                    if retried.is_ok() {
                        config.checksums.fall_back($operation, $location);
                    }
                    retried
                }
                other => other,
            }
        }
    }};
}
pub(crate) use send_read;

/// An object's user metadata as S3 answered it (GetObject, HeadObject), as the store's map;
/// none is an empty map.
fn user_metadata(metadata: Option<&std::collections::HashMap<String, String>>) -> ObjectMetadata {
    metadata.cloned().unwrap_or_default().into_iter().collect()
}

/// How many times a GET is tried when its body is cut off midway.
const BODY_READ_ATTEMPTS: u32 = 3;

enum GetError {
    Body(BodyError),
    Other(Error),
}

/// Why reading a body stopped short.
enum BodyError {
    /// The stream failed (cut off, or its checksum did not match).
    Stream(aws_sdk_s3::primitives::ByteStreamError),
    /// No chunk came within the read timeout.
    Stalled(Duration),
}

/// The next chunk of `body`, waiting for it at most `read` (the client's read timeout). The
/// SDK bounds the wait for a response's headers, not for its body: a server (or proxy) that
/// sends the headers and then stops would otherwise be waited for forever.
async fn next_chunk(
    body: &mut ByteStream,
    read: Option<Duration>,
) -> std::result::Result<Option<Bytes>, BodyError> {
    let next = body.try_next();
    match read {
        None => next.await.map_err(BodyError::Stream),
        Some(limit) => match tokio::time::timeout(limit, next).await {
            Ok(chunk) => chunk.map_err(BodyError::Stream),
            Err(_) => Err(BodyError::Stalled(limit)),
        },
    }
}

/// The most a body's announced length reserves up front. A larger state still reads whole (the
/// buffer grows); a wrong `Content-Length` cannot make the process ask for absurd memory at once.
const MAX_BODY_RESERVATION: usize = 1 << 30;

/// Reads a GetObject body to its end into one buffer.
///
/// Each chunk is copied as it arrives, while the next is still on the wire, into a buffer sized
/// from `Content-Length`; `collect` followed by `into_bytes` would instead copy the whole body a
/// second time after its last byte. A body of one chunk is returned as it came, without a copy.
///
/// The stream is always read to its end: the SDK validates the object's checksum there, so a
/// corrupted body is an error here, as a body cut off early is. Nothing partial is returned.
async fn read_whole_body(
    mut body: aws_sdk_s3::primitives::ByteStream,
    content_length: Option<i64>,
    read: Option<Duration>,
) -> std::result::Result<Bytes, BodyError> {
    let Some(first) = next_chunk(&mut body, read).await? else {
        return Ok(Bytes::new());
    };
    let Some(second) = next_chunk(&mut body, read).await? else {
        return Ok(first);
    };
    let announced = content_length
        .and_then(|length| usize::try_from(length).ok())
        .unwrap_or(0);
    // Content-Length is the server's word, not yet checked against the body: a reservation
    // the allocator refuses falls back to growing as chunks arrive, rather than aborting.
    let mut whole = Vec::new();
    let wanted = announced
        .min(MAX_BODY_RESERVATION)
        .max(first.len() + second.len());
    if whole.try_reserve_exact(wanted).is_err() {
        whole.reserve(first.len() + second.len());
    }
    whole.extend_from_slice(&first);
    whole.extend_from_slice(&second);
    drop((first, second));
    while let Some(chunk) = next_chunk(&mut body, read).await? {
        whole.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(whole))
}

/// A body's digests, computed once per write however often it is sent: SHA-256 for
/// `x-amz-checksum-sha256`, MD5 for `Content-MD5` (the compatible way), both base64.
struct Digests {
    sha256: String,
    md5: String,
}

impl Digests {
    fn of(body: &[u8]) -> Digests {
        Digests {
            sha256: BASE64.encode(sha2::Sha256::digest(body)),
            md5: BASE64.encode(md5::Md5::digest(body)),
        }
    }
}

/// How long to wait before retrying after S3's `409 ConditionalRequestConflict`, doubled on
/// each further conflict.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(50);

impl S3Store {
    /// The object at `key` in the configured bucket.
    fn new(config: Arc<S3Config>, key: String) -> Self {
        S3Store {
            location: format!("s3://{}/{key}", config.bucket),
            path: format!("{}/{key}", config.bucket),
            config,
            key,
            tracks_digest: false,
            compares_digest: true,
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.config.bucket
    }

    /// The object key (workspace prefix included).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The SDK client, for operations this crate does not wrap.
    pub fn client(&self) -> &Client {
        &self.config.client
    }

    /// How long to wait for each chunk of a body: the client's read timeout.
    fn body_read_timeout(&self) -> Option<Duration> {
        self.client()
            .config()
            .timeout_config()
            .and_then(|timeouts| timeouts.read_timeout())
    }

    /// A body that stopped coming: [`Error::Timeout`] on the read timeout.
    fn body_stalled(&self, operation: &'static str, after: Duration) -> Error {
        Error::Timeout {
            operation,
            location: self.location.clone(),
            setting: crate::TimeoutSetting::Read,
            after: Some(after),
            source: None,
        }
    }

    async fn get_once(&self, if_none_match: Option<&ETag>) -> Result<Fetched, GetError> {
        let request = self
            .client()
            .get_object()
            .bucket(&self.config.bucket)
            .key(&self.key)
            .set_if_none_match(if_none_match.map(|etag| etag.as_str().to_owned()));
        let request = with_customer_key!(request, &self.config.sse);
        let output = match send_read!(request, &self.config, "GetObject", &self.location, false) {
            Ok(output) => output,
            Err(err) if is_not_modified(&err) => return Ok(Fetched::NotModified),
            Err(err) if is_not_found(&err) => return Ok(Fetched::Absent),
            Err(err) => return Err(GetError::Other(sdk_error("GetObject", &self.location, err))),
        };
        let etag = ETag::new(output.e_tag.clone().unwrap_or_default());
        let version_id = output.version_id.clone();
        let metadata = user_metadata(output.metadata.as_ref());
        let body = read_whole_body(output.body, output.content_length, self.body_read_timeout())
            .await
            .map_err(GetError::Body)?;
        Ok(Fetched::Found(StoredObject {
            body,
            etag,
            version_id,
            metadata,
        }))
    }

    /// Whether the object exists (its latest version is not a delete marker), by HEAD, so
    /// that a large state is not downloaded to find out.
    pub async fn exists(&self) -> Result<bool> {
        let mut request = self
            .client()
            .head_object()
            .bucket(&self.config.bucket)
            .key(&self.key);
        if let Some(ServerSideEncryption::CustomerKey(key)) = &self.config.sse {
            request = request
                .sse_customer_algorithm("AES256")
                .sse_customer_key(key.key_base64())
                .sse_customer_key_md5(key.key_md5_base64());
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(err) if is_missing(&err) => Ok(false),
            Err(err) => Err(sdk_error("HeadObject", &self.location, err)),
        }
    }

    /// The object's head by HeadObject, with its stored SHA-256 (`ChecksumMode: ENABLED`, so
    /// that S3 returns the checksum s3state sent with the body).
    async fn head_object(&self) -> Result<Headed> {
        let request = self
            .client()
            .head_object()
            .bucket(&self.config.bucket)
            .key(&self.key);
        // The stored checksum is asked for only where the store takes the header; without it
        // the head has no SHA-256 and callers read the body instead.
        let request = if self.config.checksums.compatible() {
            request
        } else {
            request.checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        };
        let request = with_customer_key!(request, &self.config.sse);
        let output = match send_read!(request, &self.config, "HeadObject", &self.location, true) {
            Ok(output) => output,
            Err(err) if is_missing(&err) => return Ok(Headed::Absent),
            Err(err) => return Err(sdk_error("HeadObject", &self.location, err)),
        };
        // A multipart upload's checksum is a checksum of its parts' checksums (`…-N`), which
        // says nothing comparable about the body: it decodes to no 32 bytes and is dropped.
        let sha256 = output
            .checksum_sha256()
            .and_then(|encoded| BASE64.decode(encoded).ok())
            .and_then(|digest| <[u8; 32]>::try_from(digest).ok());
        Ok(Headed::Found(ObjectHead {
            etag: ETag::new(output.e_tag.clone().unwrap_or_default()),
            version_id: output.version_id.clone(),
            size: output
                .content_length
                .and_then(|length| u64::try_from(length).ok())
                .unwrap_or_default(),
            metadata: output
                .metadata
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            sha256,
        }))
    }

    fn apply_sse_to_put(
        &self,
        request: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        use aws_sdk_s3::types::ServerSideEncryption as Sse;
        match &self.config.sse {
            None => request,
            Some(ServerSideEncryption::S3Managed) => request.server_side_encryption(Sse::Aes256),
            Some(ServerSideEncryption::Kms { key_id }) => request
                .server_side_encryption(Sse::AwsKms)
                .set_ssekms_key_id(key_id.clone()),
            Some(ServerSideEncryption::CustomerKey(_)) => {
                with_customer_key!(request, &self.config.sse)
            }
        }
    }

    async fn put_once(
        &self,
        body: &Bytes,
        checksum: &Digests,
        precondition: &Precondition,
        metadata: &ObjectMetadata,
        compatible_now: bool,
    ) -> Result<
        PutOutcome,
        aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::put_object::PutObjectError>,
    > {
        let mut request = self
            .client()
            .put_object()
            .bucket(&self.config.bucket)
            .key(&self.key)
            .body(ByteStream::from(body.clone()))
            .content_type("application/json")
            .set_metadata(Some(metadata.clone().into_iter().collect()));
        request = match precondition {
            Precondition::Create => request.if_none_match("*"),
            Precondition::Match(etag) => request.if_match(etag.as_str()),
        };
        request = self.apply_sse_to_put(request);
        let sent = if compatible_now || self.config.checksums.compatible() {
            // No x-amz-checksum-* header: Content-MD5, and the payload signed, so the store
            // checks the body's SHA-256 (x-amz-content-sha256) before storing it.
            request
                .content_md5(&checksum.md5)
                .customize()
                .config_override(config::compatible_requests())
                .send()
                .await
        } else {
            // S3 verifies the x-amz-checksum-sha256 we send, so signing the payload as well
            // would only hash the whole body a second time.
            request
                .checksum_sha256(&checksum.sha256)
                .customize()
                .disable_payload_signing()
                .send()
                .await
        };
        match sent {
            Ok(output) => Ok(PutOutcome::Written(Written {
                etag: ETag::new(output.e_tag.unwrap_or_default()),
                version_id: output.version_id,
            })),
            // 412: the tag moved, or the object exists. 404 on If-Match: the object we
            // expected was deleted meanwhile. Both mean someone else changed it.
            Err(err)
                if is_precondition_failed(&err)
                    || (is_missing(&err) && matches!(precondition, Precondition::Match(_))) =>
            {
                Ok(PutOutcome::PreconditionFailed)
            }
            Err(err) => Err(err),
        }
    }
}

#[async_trait]
impl Store for S3Store {
    async fn get(&self, if_none_match: Option<&ETag>) -> Result<Fetched> {
        if let Some(checked) = lock_table::checked_get(self, if_none_match).await {
            return checked;
        }
        // The SDK retries a request that fails before its body starts; a body cut off midway
        // (a dropped connection) surfaces while reading it, so that is retried here. A partial
        // body is never returned.
        let mut attempt = 1;
        loop {
            match self.get_once(if_none_match).await {
                // A body that stopped coming was already waited for as long as the read
                // timeout allows; trying again would only multiply the wait.
                Err(GetError::Body(BodyError::Stalled(after))) => {
                    return Err(self.body_stalled("GetObject", after));
                }
                Err(GetError::Body(BodyError::Stream(err))) if attempt < BODY_READ_ATTEMPTS => {
                    tracing::debug!(attempt, location = %self.location, error = %err, "reading the body failed; retrying");
                    attempt += 1;
                }
                Err(GetError::Body(BodyError::Stream(err))) => {
                    return Err(Error::Store {
                        operation: "GetObject",
                        location: self.location.clone(),
                        message: format!(
                            "reading the body failed {BODY_READ_ATTEMPTS} times in a row; the last error: {}",
                            aws_sdk_s3::error::DisplayErrorContext(&err)
                        ),
                        source: Some(Box::new(err)),
                    });
                }
                Err(GetError::Other(err)) => return Err(err),
                Ok(fetched) => return Ok(fetched),
            }
        }
    }

    async fn head(&self) -> Result<Headed> {
        // Terraform's digest (`dynamodb_table`) is compared with the body on every read of the
        // state, and a head has no body to compare: such a state is read whole.
        #[cfg(feature = "dynamodb")]
        if self.digest_table().is_some() {
            return Ok(Headed::Unsupported);
        }
        self.head_object().await
    }

    async fn put(
        &self,
        body: Bytes,
        precondition: &Precondition,
        metadata: &ObjectMetadata,
    ) -> Result<PutOutcome> {
        if let Some(put) = lock_table::checked_put(self, &body, precondition, metadata).await {
            return put;
        }
        let checksum = Digests::of(&body);
        let mut backoff = CONFLICT_BACKOFF;
        let mut conflicts = 0;
        // Whether this write already tried the compatible way after a refused checksum.
        let mut fell_back = false;
        loop {
            match self
                .put_once(&body, &checksum, precondition, metadata, fell_back)
                .await
            {
                Ok(outcome) => {
                    if fell_back {
                        self.config.checksums.fall_back("PutObject", &self.location);
                    }
                    return Ok(outcome);
                }
                // A store that cannot read the checksum header refused the request before
                // applying it: sent once more (still conditional) without it, under `Auto`.
                Err(err)
                    if !fell_back
                        && self.config.checksums.may_fall_back()
                        && is_checksum_refused(&err, false) =>
                {
                    tracing::debug!(location = %self.location, error = %aws_sdk_s3::error::DisplayErrorContext(&err), "checksum headers refused; trying the compatible way");
                    fell_back = true;
                }
                Err(err) if is_checksum_refused(&err, false) => {
                    let mut error = sdk_error("PutObject", &self.location, err);
                    if let Error::Store { message, .. } = &mut error {
                        message.push_str(&format!(
                            "; the store refuses the checksum headers (checksums = {}): set \
                             S3STATE_CHECKSUMS=compatible (Terraform's skip_s3_checksum)",
                            if fell_back {
                                "auto, after trying both ways"
                            } else {
                                self.config.checksums.mode.as_str()
                            }
                        ));
                    }
                    return Err(error);
                }
                // Every PUT of the store is conditional: a 501 is the store refusing the
                // condition itself, never to be answered by writing without it.
                Err(err) if is_not_implemented(&err) => {
                    use aws_sdk_s3::error::ProvideErrorMetadata as _;
                    return Err(Error::ConditionalWritesUnsupported {
                        location: self.location.clone(),
                        answer: format!("501 {}", err.code().unwrap_or("NotImplemented")),
                    });
                }
                // Real S3 answers 409 ConditionalRequestConflict when conditional writes to one
                // key overlap; the write was not applied and may be retried.
                Err(err) if is_conditional_conflict(&err) => {
                    if conflicts == self.config.conflict_retries {
                        return Err(Error::Store {
                            operation: "PutObject",
                            location: self.location.clone(),
                            message: format!(
                                "S3 answered 409 ConditionalRequestConflict to {} attempts in a row; \
                                 gave up (the budget is set by S3Builder::with_conflict_retries). \
                                 Nothing was written",
                                conflicts + 1
                            ),
                            source: Some(Box::new(err)),
                        });
                    }
                    conflicts += 1;
                    tracing::debug!(conflicts, location = %self.location, "409 from PutObject; retrying");
                    tokio::time::sleep(backoff.mul_f64(0.5 + fastrand::f64() / 2.0)).await;
                    backoff *= 2;
                }
                Err(err) => return Err(sdk_error("PutObject", &self.location, err)),
            }
        }
    }

    async fn delete(&self, if_match: Option<&ETag>) -> Result<DeleteOutcome> {
        if let Some(deleted) = lock_table::checked_delete(self, if_match).await {
            return deleted;
        }
        let conditional = if_match.is_some();
        if conditional && self.config.conditional_delete.get() == DeleteSupport::Unsupported {
            return Ok(DeleteOutcome::ConditionalUnsupported);
        }
        let request = self
            .client()
            .delete_object()
            .bucket(&self.config.bucket)
            .key(&self.key)
            .set_if_match(if_match.map(|etag| etag.as_str().to_owned()));
        // An unconditional delete is never retried blindly: if its response was lost, a retry
        // could delete an object someone created in the meantime. The caller re-reads instead.
        let sent = if conditional {
            request.send().await
        } else {
            request
                .customize()
                .config_override(
                    aws_sdk_s3::config::Builder::default()
                        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()),
                )
                .send()
                .await
        };
        match sent {
            Ok(_) => {
                if conditional {
                    self.config
                        .conditional_delete
                        .learn(DeleteSupport::Supported);
                }
                Ok(DeleteOutcome::Deleted)
            }
            Err(err) if conditional && is_not_implemented(&err) => {
                tracing::debug!(location = %self.location, "conditional DeleteObject is not implemented here; falling back");
                self.config
                    .conditional_delete
                    .learn(DeleteSupport::Unsupported);
                Ok(DeleteOutcome::ConditionalUnsupported)
            }
            Err(err) if conditional && is_precondition_failed(&err) => {
                // A 412 says "not the tag you named", but some stores (SeaweedFS) also answer
                // 412 when there is no object at all, where S3 answers 404. A lost race and
                // an absent object mean different things to the caller (a replaced lock or
                // workspace, against one already gone), so a HEAD tells them apart.
                // The 412 itself is certain (nothing was deleted): a HEAD without an answer
                // leaves it a refusal, on which every caller re-reads or stops, never an
                // error, which a caller would take for a delete that may have landed.
                match self.exists().await {
                    Ok(false) => {
                        tracing::debug!(location = %self.location, "conditional DeleteObject answered 412 for an absent object");
                        Ok(DeleteOutcome::Absent)
                    }
                    Ok(true) => Ok(DeleteOutcome::PreconditionFailed),
                    Err(error) => {
                        tracing::debug!(location = %self.location, %error, "no answer to the HEAD after a 412 to a conditional DeleteObject; taking it as refused");
                        Ok(DeleteOutcome::PreconditionFailed)
                    }
                }
            }
            Err(err) if conditional && is_missing(&err) => Ok(DeleteOutcome::Absent),
            Err(err) => Err(sdk_error("DeleteObject", &self.location, err)),
        }
    }

    fn sibling(&self, suffix: &str) -> Self {
        S3Store::new(Arc::clone(&self.config), format!("{}{suffix}", self.key))
    }

    fn location(&self) -> &str {
        &self.location
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn secondary_lock(&self) -> Option<Arc<dyn crate::lock::SecondaryLock>> {
        self.state_lock_item()
    }

    async fn repair_bookkeeping(&self) -> Result<()> {
        lock_table::repair_stale_digest(self).await
    }

    fn identity(&self) -> Option<String> {
        // A client given with with_client does not tell its endpoint, and the same bucket and
        // key on two endpoints are two objects. But every store built from one configuration
        // shares its client, so the configuration itself names the endpoint among them (a
        // gateway's stores, made per request from one backend, share their turns and gates).
        let Some(endpoint) = self.config.endpoint.as_ref() else {
            return Some(format!(
                "s3-client:{:p}|{}",
                Arc::as_ptr(&self.config),
                self.path
            ));
        };
        let region = self.client().config().region().map(|r| r.to_string());
        Some(format!(
            "s3:{}|{}|{}",
            endpoint.as_deref().unwrap_or("aws"),
            region.unwrap_or_default(),
            self.path
        ))
    }

    fn as_versioned(&self) -> Option<&dyn crate::store::VersionedStore> {
        Some(self)
    }
}
