//! A [`VersionedStore`] in memory: versions, ETags, conditional reads, writes and deletes, and
//! optional seeded fault injection.
//!
//! It exists so that the state rules, locking, history and restore can be tested in
//! milliseconds and deterministically, and so that the simulation suite can interleave many
//! actors with faults that no real server produces on demand. It behaves like a versioned S3
//! bucket as seen through [`crate::s3::S3Store`] (after the SDK's own retries), and it passes
//! the same contract suite ([`crate::store::conformance`]).
//!
//! ```
//! use s3state::store::memory::MemoryStore;
//! use s3state::{OutputValue, RemoteState};
//!
//! # async fn demo() -> s3state::Result<()> {
//! let manager = RemoteState::new(MemoryStore::new("app/terraform.tfstate"));
//! manager.update(|state| {
//!     state.outputs.insert("region".into(), OutputValue::new(&"eu-west-1"));
//! }).await?;
//! assert_eq!(manager.state().unwrap().serial, 1);
//! # Ok(()) }
//! # use s3state::Transient;
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```

use crate::error::{Error, Result};
use crate::store::{
    DeleteOutcome, ETag, Fetched, Headed, ObjectHead, ObjectMetadata, ObjectVersion, Precondition,
    PutOutcome, Store, StoredObject, VersionedStore, Written,
};
use async_trait::async_trait;
use bytes::Bytes;
use md5::Digest as _;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// How the store tags objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ETagStyle {
    /// The hex MD5 of the body in quotes, as S3 does without KMS: identical bodies share a tag.
    #[default]
    ContentMd5,
    /// A tag unique to each write, unrelated to the content, as S3 does under SSE-KMS.
    Opaque,
}

/// The bucket-wide options of a [`MemoryStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryOptions {
    /// How objects are tagged. Default [`ETagStyle::ContentMd5`].
    pub etag_style: ETagStyle,
    /// Whether `DeleteObject` honours `If-Match`. When false, a conditional delete answers
    /// [`DeleteOutcome::ConditionalUnsupported`], as LocalStack does. Default true.
    pub conditional_delete: bool,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions {
            etag_style: ETagStyle::ContentMd5,
            conditional_delete: true,
        }
    }
}

/// One stored version of one key.
#[derive(Debug, Clone)]
struct Version {
    id: String,
    /// `None` for a delete marker.
    body: Option<Bytes>,
    etag: ETag,
    metadata: ObjectMetadata,
    /// The SHA-256 of the body, recorded at write time as S3 records `x-amz-checksum-sha256`.
    sha256: Option<[u8; 32]>,
    /// The bucket's logical clock when this version was written.
    written_at: u64,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Every key's versions, oldest first.
    objects: BTreeMap<String, Vec<Version>>,
    clock: u64,
}

impl Bucket {
    fn current(&self, key: &str) -> Option<&Version> {
        self.objects
            .get(key)
            .and_then(|versions| versions.last())
            .filter(|version| version.body.is_some())
    }

    fn push(
        &mut self,
        key: &str,
        body: Option<Bytes>,
        metadata: ObjectMetadata,
        style: ETagStyle,
    ) -> Written {
        self.clock += 1;
        let id = format!("v{:08}", self.clock);
        let etag = match (&body, style) {
            (Some(body), ETagStyle::ContentMd5) => {
                let digest = md5::Md5::digest(body);
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                ETag::new(format!("\"{hex}\""))
            }
            _ => ETag::new(format!("\"opaque-{}\"", self.clock)),
        };
        let sha256 = body.as_ref().map(|body| sha2::Sha256::digest(body).into());
        self.objects
            .entry(key.to_owned())
            .or_default()
            .push(Version {
                id: id.clone(),
                body,
                etag: etag.clone(),
                metadata,
                sha256,
                written_at: self.clock,
            });
        Written {
            etag,
            version_id: Some(id),
        }
    }
}

/// What a store operation does to the world and what its caller is told, decided by the
/// fault plan before the operation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Applied; answered normally.
    None,
    /// Applied, the response lost; the SDK retried the same request, and the caller gets the
    /// retry's answer (for a conditional write, usually "precondition failed" against itself).
    LostResponseRetried,
    /// Applied, the response lost, and the retries gave up: the caller gets an error.
    LostResponseGaveUp,
    /// The connection reset before the request arrived, and retries gave up: not applied, an
    /// error.
    ResetBeforeApply,
    /// `409 ConditionalRequestConflict` until the store's budget ran out: not applied, an
    /// error.
    Conflict409,
    /// `503 SlowDown` until the retries ran out: not applied, an error.
    Unavailable503,
    /// The request stalls in the network: the caller gets a timeout error at once, and the
    /// request is applied later (its precondition evaluated then). Writes only.
    StalledArrivesLate,
    /// The body was cut off on every attempt: an error. Reads only.
    TruncatedBody,
}

/// The kind of operation a fault is chosen for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `GetObject` (and `HeadObject`, which fails the same ways, without a body to cut off).
    Get,
    /// `PutObject`.
    Put,
    /// `DeleteObject`, with or without `If-Match`.
    Delete {
        /// True for a conditional delete.
        conditional: bool,
    },
}

/// Seeded choices of faults and of interleaving points, shared by every handle of a store.
///
/// Each operation first yields to the scheduler a seeded number of times (so concurrent tasks
/// on a single-threaded runtime interleave differently for each seed), then draws its fault.
pub struct FaultPlan {
    rng: Mutex<fastrand::Rng>,
    /// Probability, in percent, that an operation gets a fault other than [`Fault::None`].
    pub fault_percent: u8,
    /// The most times an operation yields before it applies and before it answers.
    pub max_yields: u8,
}

impl fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultPlan")
            .field("fault_percent", &self.fault_percent)
            .field("max_yields", &self.max_yields)
            .finish_non_exhaustive()
    }
}

impl FaultPlan {
    /// A plan drawing from `seed`, faulting `fault_percent`% of operations.
    pub fn new(seed: u64, fault_percent: u8) -> Self {
        FaultPlan {
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            fault_percent,
            max_yields: 3,
        }
    }

    fn rng(&self) -> std::sync::MutexGuard<'_, fastrand::Rng> {
        self.rng.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A seeded number in `0..n`, for callers that make their own choices from the plan.
    pub fn below(&self, n: u64) -> u64 {
        self.rng().u64(0..n.max(1))
    }

    fn choose(&self, operation: Operation) -> Fault {
        let mut rng = self.rng();
        if rng.u8(0..100) >= self.fault_percent {
            return Fault::None;
        }
        let choices: &[Fault] = match operation {
            Operation::Get => &[
                Fault::LostResponseRetried,
                Fault::LostResponseGaveUp,
                Fault::ResetBeforeApply,
                Fault::Unavailable503,
                Fault::TruncatedBody,
            ],
            Operation::Put => &[
                Fault::LostResponseRetried,
                Fault::LostResponseGaveUp,
                Fault::ResetBeforeApply,
                Fault::Conflict409,
                Fault::Unavailable503,
                Fault::StalledArrivesLate,
            ],
            // The store never retries an unconditional delete blindly (a retry could delete an
            // object created meanwhile), so its lost response is always an error.
            Operation::Delete { conditional: false } => &[
                Fault::LostResponseGaveUp,
                Fault::ResetBeforeApply,
                Fault::Unavailable503,
            ],
            Operation::Delete { conditional: true } => &[
                Fault::LostResponseRetried,
                Fault::LostResponseGaveUp,
                Fault::ResetBeforeApply,
                Fault::Unavailable503,
            ],
        };
        choices[rng.usize(0..choices.len())]
    }

    async fn interleave(&self) {
        let yields = self.rng().u8(0..=self.max_yields);
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
    }
}

/// One object (one key) of an in-memory versioned bucket. Cloning, or [`Store::sibling`],
/// gives another handle on the same bucket.
#[derive(Clone)]
pub struct MemoryStore {
    bucket: Arc<Mutex<Bucket>>,
    options: MemoryOptions,
    faults: Option<Arc<FaultPlan>>,
    /// Writes and deletes through this handle skip their conditions (see
    /// [`MemoryStore::ignoring_conditions`]).
    ignores_conditions: bool,
    /// What [`Store::head`] through this handle answers (see [`MemoryStore::without_checksums`]
    /// and [`MemoryStore::without_heads`]).
    heads: Heads,
    /// Which process this handle is in (see [`MemoryStore::in_another_process`]): 0 for this
    /// one.
    process: u64,
    key: String,
    location: String,
    path: String,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("location", &self.location)
            .field("options", &self.options)
            .field("faults", &self.faults)
            .field("ignores_conditions", &self.ignores_conditions)
            .field("heads", &self.heads)
            .finish()
    }
}

/// What [`Store::head`] answers through one handle, so that callers can be tested against
/// stores that keep less than S3 does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heads {
    /// Heads with the body's SHA-256, as S3 answers for an object written with a checksum.
    WithChecksum,
    /// Heads without a checksum, as a store that keeps none answers.
    WithoutChecksum,
    /// [`Headed::Unsupported`], as a store without a head request answers.
    Unsupported,
}

/// The name the memory bucket goes by in locations and lock paths.
const BUCKET_NAME: &str = "memory";

impl MemoryStore {
    /// The object `key` of a new, empty bucket with default options and no faults.
    pub fn new(key: impl Into<String>) -> Self {
        Self::with_options(key, MemoryOptions::default())
    }

    /// The object `key` of a new, empty bucket with the given options.
    pub fn with_options(key: impl Into<String>, options: MemoryOptions) -> Self {
        let key = key.into();
        MemoryStore {
            bucket: Arc::new(Mutex::new(Bucket::default())),
            options,
            faults: None,
            ignores_conditions: false,
            heads: Heads::WithChecksum,
            process: 0,
            location: format!("memory://{BUCKET_NAME}/{key}"),
            path: format!("{BUCKET_NAME}/{key}"),
            key,
        }
    }

    /// Another object of the same bucket, with the same options and faults.
    pub fn object(&self, key: impl Into<String>) -> Self {
        let key = key.into();
        MemoryStore {
            bucket: Arc::clone(&self.bucket),
            options: self.options,
            faults: self.faults.clone(),
            ignores_conditions: self.ignores_conditions,
            heads: self.heads,
            process: self.process,
            location: format!("memory://{BUCKET_NAME}/{key}"),
            path: format!("{BUCKET_NAME}/{key}"),
            key,
        }
    }

    /// This handle as another process would have it: the same bucket and objects, but none of
    /// this process's coordination (update turns, release gates), because its
    /// [`Store::identity`] is another. Managers over it race this process's managers through
    /// the store's lock and conditional writes, as separate processes do; for simulations and
    /// tests of that race in one process.
    pub fn in_another_process(mut self) -> Self {
        static PROCESSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        self.process = PROCESSES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// This handle, injecting faults from `plan` (other handles are unaffected).
    pub fn with_faults(mut self, plan: Arc<FaultPlan>) -> Self {
        self.faults = Some(plan);
        self
    }

    /// This handle as a store that accepts `If-Match`/`If-None-Match` and ignores them, as
    /// some S3-compatible stores do: every write and delete through it is applied whatever
    /// its condition, and answered as a success. For tests of the checks that catch such a
    /// store (other handles are unaffected).
    pub fn ignoring_conditions(mut self) -> Self {
        self.ignores_conditions = true;
        self
    }

    /// This handle as a store that keeps no checksum of its bodies: its heads carry none, so a
    /// caller must read a body to know its content (other handles are unaffected).
    pub fn without_checksums(mut self) -> Self {
        self.heads = Heads::WithoutChecksum;
        self
    }

    /// This handle as a store with no head request: [`Store::head`] answers
    /// [`Headed::Unsupported`] (other handles are unaffected).
    pub fn without_heads(mut self) -> Self {
        self.heads = Heads::Unsupported;
        self
    }

    /// This handle without fault injection: what a healthy peer on the same bucket sees.
    pub fn without_faults(mut self) -> Self {
        self.faults = None;
        self
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Writes unconditionally, as Terraform writes its state while it holds the lock. s3state
    /// never does this; the simulation's Terraform actor does.
    pub fn put_unconditional(&self, body: Bytes) -> Written {
        self.bucket().push(
            &self.key,
            Some(body),
            ObjectMetadata::new(),
            self.options.etag_style,
        )
    }

    /// The current body, without faults or interleaving: for checkers and test assertions.
    pub fn current_body(&self) -> Option<Bytes> {
        self.bucket()
            .current(&self.key)
            .and_then(|version| version.body.clone())
    }

    /// How many versions (delete markers included) the object has.
    pub fn version_count(&self) -> usize {
        self.bucket().objects.get(&self.key).map_or(0, Vec::len)
    }

    /// Every key in the bucket that currently has content.
    pub fn keys(&self) -> Vec<String> {
        let bucket = self.bucket();
        bucket
            .objects
            .keys()
            .filter(|key| bucket.current(key).is_some())
            .cloned()
            .collect()
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, Bucket> {
        // Every mutation is completed under the lock before it is released, so a poisoned
        // lock still guards a consistent bucket.
        self.bucket.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failure(&self, operation: &'static str, fault: Fault) -> Error {
        let message = match fault {
            Fault::LostResponseGaveUp => "the response was lost and the retries gave up",
            Fault::ResetBeforeApply => "connection reset by peer; the retries gave up",
            Fault::Conflict409 => "409 ConditionalRequestConflict on every attempt",
            Fault::Unavailable503 => "503 SlowDown on every attempt",
            Fault::StalledArrivesLate => "the request timed out (it may still arrive)",
            Fault::TruncatedBody => "the body was cut off on every attempt",
            Fault::None | Fault::LostResponseRetried => "no failure",
        };
        Error::Store {
            operation,
            location: self.location.clone(),
            message: format!("simulated: {message}"),
            source: None,
        }
    }

    async fn plan(&self, operation: Operation) -> Fault {
        match &self.faults {
            None => Fault::None,
            Some(plan) => {
                plan.interleave().await;
                plan.choose(operation)
            }
        }
    }

    async fn after_apply(&self) {
        if let Some(plan) = &self.faults {
            plan.interleave().await;
        }
    }

    fn get_now(&self, if_none_match: Option<&ETag>) -> Fetched {
        let bucket = self.bucket();
        match bucket.current(&self.key) {
            None => Fetched::Absent,
            Some(version) if Some(&version.etag) == if_none_match => Fetched::NotModified,
            Some(version) => Fetched::Found(StoredObject {
                body: version.body.clone().unwrap_or_default(),
                etag: version.etag.clone(),
                version_id: Some(version.id.clone()),
                metadata: version.metadata.clone(),
            }),
        }
    }

    fn head_now(&self) -> Headed {
        let bucket = self.bucket();
        match bucket.current(&self.key) {
            None => Headed::Absent,
            Some(version) => Headed::Found(ObjectHead {
                etag: version.etag.clone(),
                version_id: Some(version.id.clone()),
                size: version.body.as_ref().map_or(0, |body| body.len() as u64),
                metadata: version.metadata.clone(),
                sha256: version.sha256.filter(|_| self.heads == Heads::WithChecksum),
            }),
        }
    }

    fn put_now(
        &self,
        body: &Bytes,
        precondition: &Precondition,
        metadata: &ObjectMetadata,
    ) -> PutOutcome {
        let mut bucket = self.bucket();
        let current = bucket
            .current(&self.key)
            .map(|version| version.etag.clone());
        let holds = match (precondition, &current) {
            (Precondition::Create, None) => true,
            (Precondition::Match(expected), Some(etag)) => expected == etag,
            _ => false,
        };
        if !holds && !self.ignores_conditions {
            return PutOutcome::PreconditionFailed;
        }
        PutOutcome::Written(bucket.push(
            &self.key,
            Some(body.clone()),
            metadata.clone(),
            self.options.etag_style,
        ))
    }

    fn delete_now(&self, if_match: Option<&ETag>) -> DeleteOutcome {
        let mut bucket = self.bucket();
        let current = bucket
            .current(&self.key)
            .map(|version| version.etag.clone());
        let if_match = if_match.filter(|_| !self.ignores_conditions);
        match (if_match, current) {
            (Some(_), None) => DeleteOutcome::Absent,
            (Some(expected), Some(etag)) if *expected != etag => DeleteOutcome::PreconditionFailed,
            // As in a versioned S3 bucket, an unconditional delete adds a delete marker even
            // when there is nothing to delete (never written, or already deleted).
            _ => {
                bucket.push(
                    &self.key,
                    None,
                    ObjectMetadata::new(),
                    self.options.etag_style,
                );
                DeleteOutcome::Deleted
            }
        }
    }

    fn version_location(&self, version_id: &str) -> Result<Version> {
        let bucket = self.bucket();
        let found = bucket
            .objects
            .get(&self.key)
            .and_then(|versions| versions.iter().find(|v| v.id == version_id));
        match found {
            Some(version) if version.body.is_some() => Ok(version.clone()),
            found => Err(Error::VersionNotFound {
                location: self.location.clone(),
                version_id: version_id.to_owned(),
                is_delete_marker: found.is_some(),
            }),
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, if_none_match: Option<&ETag>) -> Result<Fetched> {
        let fault = self.plan(Operation::Get).await;
        match fault {
            Fault::None | Fault::LostResponseRetried => {
                let fetched = self.get_now(if_none_match);
                self.after_apply().await;
                Ok(fetched)
            }
            _ => Err(self.failure("GetObject", fault)),
        }
    }

    async fn head(&self) -> Result<Headed> {
        if self.heads == Heads::Unsupported {
            return Ok(Headed::Unsupported);
        }
        let fault = self.plan(Operation::Get).await;
        match fault {
            Fault::None | Fault::LostResponseRetried => {
                let headed = self.head_now();
                self.after_apply().await;
                Ok(headed)
            }
            _ => Err(self.failure("HeadObject", fault)),
        }
    }

    async fn put(
        &self,
        body: Bytes,
        precondition: &Precondition,
        metadata: &ObjectMetadata,
    ) -> Result<PutOutcome> {
        let fault = self.plan(Operation::Put).await;
        match fault {
            Fault::None => {
                let outcome = self.put_now(&body, precondition, metadata);
                self.after_apply().await;
                Ok(outcome)
            }
            Fault::LostResponseRetried => {
                self.put_now(&body, precondition, metadata);
                self.after_apply().await;
                Ok(self.put_now(&body, precondition, metadata))
            }
            Fault::LostResponseGaveUp => {
                self.put_now(&body, precondition, metadata);
                self.after_apply().await;
                Err(self.failure("PutObject", fault))
            }
            Fault::StalledArrivesLate => {
                let late = self.clone();
                let precondition = precondition.clone();
                let metadata = metadata.clone();
                tokio::spawn(async move {
                    late.after_apply().await;
                    late.after_apply().await;
                    late.put_now(&body, &precondition, &metadata);
                });
                Err(self.failure("PutObject", fault))
            }
            _ => Err(self.failure("PutObject", fault)),
        }
    }

    async fn delete(&self, if_match: Option<&ETag>) -> Result<DeleteOutcome> {
        if if_match.is_some() && !self.options.conditional_delete {
            return Ok(DeleteOutcome::ConditionalUnsupported);
        }
        let fault = self
            .plan(Operation::Delete {
                conditional: if_match.is_some(),
            })
            .await;
        match fault {
            Fault::None => {
                let outcome = self.delete_now(if_match);
                self.after_apply().await;
                Ok(outcome)
            }
            Fault::LostResponseRetried => {
                self.delete_now(if_match);
                self.after_apply().await;
                Ok(self.delete_now(if_match))
            }
            Fault::LostResponseGaveUp => {
                self.delete_now(if_match);
                self.after_apply().await;
                Err(self.failure("DeleteObject", fault))
            }
            _ => Err(self.failure("DeleteObject", fault)),
        }
    }

    fn sibling(&self, suffix: &str) -> Self {
        self.object(format!("{}{suffix}", self.key))
    }

    fn location(&self) -> &str {
        &self.location
    }

    fn path(&self) -> &str {
        &self.path
    }

    fn identity(&self) -> Option<String> {
        // The bucket's address: separate MemoryStores are separate buckets even when their
        // keys (and so their locations) are the same.
        Some(format!(
            "memory:{:p}/{}#{}",
            Arc::as_ptr(&self.bucket),
            self.key,
            self.process
        ))
    }

    fn as_versioned(&self) -> Option<&dyn VersionedStore> {
        Some(self)
    }
}

#[async_trait]
impl VersionedStore for MemoryStore {
    async fn list_versions(&self, _page_size: u32) -> Result<Vec<ObjectVersion>> {
        let fault = self.plan(Operation::Get).await;
        if !matches!(fault, Fault::None | Fault::LostResponseRetried) {
            return Err(self.failure("ListObjectVersions", fault));
        }
        let bucket = self.bucket();
        let Some(versions) = bucket.objects.get(&self.key) else {
            return Ok(Vec::new());
        };
        let newest = versions.len().saturating_sub(1);
        Ok(versions
            .iter()
            .enumerate()
            .rev()
            .map(|(index, version)| ObjectVersion {
                version_id: version.id.clone(),
                last_modified: time::OffsetDateTime::UNIX_EPOCH
                    + time::Duration::milliseconds(version.written_at as i64),
                size: version.body.as_ref().map_or(0, |body| body.len() as u64),
                etag: version.body.as_ref().map(|_| version.etag.clone()),
                is_latest: index == newest,
                is_delete_marker: version.body.is_none(),
            })
            .collect())
    }

    async fn get_version(&self, version_id: &str) -> Result<StoredObject> {
        let fault = self.plan(Operation::Get).await;
        if !matches!(fault, Fault::None | Fault::LostResponseRetried) {
            return Err(self.failure("GetObject", fault));
        }
        let version = self.version_location(version_id)?;
        Ok(StoredObject {
            body: version.body.unwrap_or_default(),
            etag: version.etag,
            version_id: Some(version.id),
            metadata: version.metadata,
        })
    }

    async fn version_metadata(&self, version_id: &str) -> Result<ObjectMetadata> {
        let fault = self.plan(Operation::Get).await;
        if !matches!(fault, Fault::None | Fault::LostResponseRetried) {
            return Err(self.failure("HeadObject", fault));
        }
        Ok(self.version_location(version_id)?.metadata)
    }

    async fn delete_version(&self, version_id: &str) -> Result<()> {
        let mut bucket = self.bucket();
        if let Some(versions) = bucket.objects.get_mut(&self.key) {
            versions.retain(|version| version.id != version_id);
        }
        Ok(())
    }
}
