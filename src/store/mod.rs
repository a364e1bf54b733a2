//! The storage protocol a state manager needs: one object, read conditionally and written
//! conditionally. It knows nothing of serials or lineages.
//!
//! [`crate::RemoteState`] implements Terraform's rules over any [`Store`]; [`crate::s3::S3Store`]
//! implements it for S3. A second backend (a filesystem, another object store) is one new
//! implementation of this trait.

pub mod conformance;
pub mod memory;

use crate::error::Result;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::fmt;

/// An opaque version tag of the stored object (an S3 ETag, quotes included).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// Wraps a tag exactly as the store returned it.
    pub fn new(tag: impl Into<String>) -> Self {
        ETag(tag.into())
    }

    /// The tag as the store returned it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Free-form string metadata stored with an object (S3 user metadata).
pub type ObjectMetadata = BTreeMap<String, String>;

/// An object as read from the store. `Debug` shows the body's size, never its content: a
/// state holds secrets.
#[derive(Clone)]
pub struct StoredObject {
    /// The whole body.
    pub body: Bytes,
    /// Its tag, for a later conditional write.
    pub etag: ETag,
    /// The store's version id, when it keeps versions.
    pub version_id: Option<String>,
    /// The metadata written with it.
    pub metadata: ObjectMetadata,
}

impl fmt::Debug for StoredObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredObject")
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .field("etag", &self.etag)
            .field("version_id", &self.version_id)
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// The answer to a conditional read.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// The object, which differs from the tag we passed.
    Found(StoredObject),
    /// The object still has the tag we passed; nothing was downloaded.
    NotModified,
    /// There is no object (never written, or deleted).
    Absent,
}

/// An object's head: what the store knows of it without its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    /// Its tag, for a later conditional write.
    pub etag: ETag,
    /// The store's version id, when it keeps versions.
    pub version_id: Option<String>,
    /// The body's size in bytes.
    pub size: u64,
    /// The metadata written with it.
    pub metadata: ObjectMetadata,
    /// The SHA-256 of the whole body, as the store recorded it when the body was written
    /// (S3's `x-amz-checksum-sha256` of a single-part upload). `None` when the store keeps no
    /// such checksum for this object: its content can then be known only by reading it.
    pub sha256: Option<[u8; 32]>,
}

/// The answer to [`Store::head`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Headed {
    /// The object's head.
    Found(ObjectHead),
    /// There is no object (never written, or deleted).
    Absent,
    /// This store cannot describe the object without reading it: it has no such request, or
    /// every read must be checked against the body (a DynamoDB digest). Read it with
    /// [`Store::get`].
    Unsupported,
}

/// The condition a write is made under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Write only if no object exists (`If-None-Match: *`).
    Create,
    /// Write only if the object still has this tag (`If-Match`).
    Match(ETag),
}

/// A successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The new object's tag.
    pub etag: ETag,
    /// The new object's version id, when the store keeps versions.
    pub version_id: Option<String>,
}

/// The answer to a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// The write was applied.
    Written(Written),
    /// The precondition did not hold: the object exists when `Create` was asked, or it has
    /// another tag (or is gone) when `Match` was asked. Nothing was written.
    ///
    /// A write whose response was lost and was retried may also end here, against the object
    /// it wrote itself; the caller resolves that by comparing contents.
    PreconditionFailed,
}

/// The answer to a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The object was deleted (or, unconditionally, there was nothing to delete).
    Deleted,
    /// The object has another tag than the one given. Nothing was deleted.
    PreconditionFailed,
    /// A conditional delete found no object.
    Absent,
    /// The store cannot delete conditionally (LocalStack answers 501). Nothing was deleted;
    /// the store remembers this and answers so at once next time.
    ConditionalUnsupported,
}

/// One object in a store, with conditional reads and writes.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Reads the object. With `if_none_match`, an object that still has that tag is answered
    /// with [`Fetched::NotModified`] and no body.
    async fn get(&self, if_none_match: Option<&ETag>) -> Result<Fetched>;

    /// The object's head (tag, version, size, metadata, stored checksum) without its body, so
    /// that a caller can decide from it whether the body is worth downloading.
    ///
    /// The default answers [`Headed::Unsupported`], which sends callers to [`Store::get`];
    /// a store overrides it only when a head it returns can be trusted as much as a `get`.
    async fn head(&self) -> Result<Headed> {
        Ok(Headed::Unsupported)
    }

    /// Writes the whole object under `precondition`, with `metadata` stored beside it.
    ///
    /// Transient failures are retried inside the store; a lost race is
    /// [`PutOutcome::PreconditionFailed`], never an error.
    async fn put(
        &self,
        body: Bytes,
        precondition: &Precondition,
        metadata: &ObjectMetadata,
    ) -> Result<PutOutcome>;

    /// Deletes the object; with `if_match`, only if it still has that tag.
    ///
    /// An unconditional delete is not retried by the store after an ambiguous failure (a lost
    /// response), because the retry could delete an object created meanwhile; it returns the
    /// error and the caller re-reads to learn what happened.
    async fn delete(&self, if_match: Option<&ETag>) -> Result<DeleteOutcome>;

    /// The object whose name is this one's plus `suffix` (`<key>.tflock`), in the same store
    /// and sharing its connection.
    fn sibling(&self, suffix: &str) -> Self
    where
        Self: Sized;

    /// The object's name for people: a URL-like address used in every error message and log
    /// line (`s3://bucket/key`, `memory://bucket/key`).
    ///
    /// The same object as [`Store::path`], in another format: `location` is what an operator
    /// reads, `path` is what Terraform writes.
    fn location(&self) -> &str;

    /// The object's name for Terraform: the `Path` field of lock info (`bucket/key`, without a
    /// scheme), which Terraform shows when it reports a held lock, so it must be what Terraform
    /// itself would write for this state.
    ///
    /// The same object as [`Store::location`], in another format.
    fn path(&self) -> &str;

    /// This store's version history, when it keeps one. With it, "did my write land?" has an
    /// exact answer after an ambiguous failure: look for the write's id among the versions.
    /// Without it, the answer comes from the current object alone.
    fn as_versioned(&self) -> Option<&dyn VersionedStore> {
        None
    }

    /// A name that every handle on this very object in this process gives, and no handle on
    /// another object does: the managers over one object queue their
    /// [`crate::RemoteState::update`]s in one line instead of
    /// racing each other through the store. Two objects sharing a name would wait for each
    /// other's locks and hung requests, so a store that cannot tell its object apart (an S3
    /// client whose endpoint is unknown) answers `None`, the default: each manager's updates
    /// then keep a line of their own.
    fn identity(&self) -> Option<String> {
        None
    }

    /// A second lock that every lock on this state must take with its `.tflock` object, if the
    /// store keeps one: Terraform's DynamoDB lock item for an S3 state with `dynamodb_table`.
    /// [`crate::StoreLocker::for_state`] takes it, so no manager over such a state can lock
    /// without it. `None` by default.
    fn secondary_lock(&self) -> Option<std::sync::Arc<dyn SecondaryLock>> {
        None
    }

    /// Brings what the store keeps beside the object in line with the object as stored now:
    /// for an S3 state with `dynamodb_table`, Terraform's digest, which a write whose digest
    /// update failed left stale. Called after a write found its bytes already stored, so a
    /// repeated write repairs what the first one left undone. Nothing by default.
    async fn repair_bookkeeping(&self) -> Result<()> {
        Ok(())
    }
}

/// A second lock a [`crate::StoreLocker`] takes together with its `.tflock` object: Terraform's
/// DynamoDB lock item when `dynamodb_table` is configured (`s3state::dynamodb::DynamoDbLock`
/// with the `dynamodb` feature). As in Terraform 1.15 with both locks configured, it is taken
/// after the object (the object is released again when it cannot be taken, so no orphan is
/// left) and released after it; both are always attempted.
#[async_trait]
pub trait SecondaryLock: Send + Sync + std::fmt::Debug {
    /// Where the lock lives, for messages.
    fn location(&self) -> String;

    /// Takes the lock with `info` exactly as given (its ID, path and time are set), or fails
    /// with [`crate::Error::Locked`] naming the holder.
    async fn lock(&self, info: &crate::state::meta::LockInfo) -> Result<()>;

    /// Releases our lock `id`; succeeds when it is already gone.
    async fn unlock(&self, id: &str) -> Result<()>;

    /// Removes the lock with this ID whoever took it: [`crate::Error::NotLocked`] when there is none,
    /// [`crate::Error::LockIdMismatch`] when another lock is there.
    async fn force_unlock(&self, id: &str) -> Result<()>;

    /// The holder's lock info, or `None` when not locked.
    async fn current(&self) -> Result<Option<crate::state::meta::LockInfo>>;
}

/// One version in an object's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The store's id for this version.
    pub version_id: String,
    /// When it was written.
    pub last_modified: time::OffsetDateTime,
    /// Body size in bytes (0 for a delete marker).
    pub size: u64,
    /// Its tag (`None` for a delete marker).
    pub etag: Option<ETag>,
    /// True for the current version.
    pub is_latest: bool,
    /// True when this version records a deletion rather than content.
    pub is_delete_marker: bool,
}

/// Every version of `store`'s object, as [`VersionedStore::list_versions`] lists them, but
/// never a listing that contradicts the object: when the listing shows no current content (no
/// entry at all, or a delete marker on top), the object itself is asked (one HEAD). If it
/// exists and its version is not listed, the listing is taken again in pages as large as
/// stores allow (a concurrent first write explains the difference; a store that pages wrongly
/// under a shared prefix, as SeaweedFS does, lists everything in one page), and if the
/// version is still missing the answer is [`Error::InconsistentListing`](crate::Error). A
/// listing in small pages that the store itself calls inconsistent is likewise taken again in
/// the largest pages before that is the answer.
///
/// The callers that report or act on a history (history, restore, prune, the lookup of a
/// lost write) list through this, so an empty or self-contradicting listing is never shown
/// as an empty history.
pub async fn list_versions_checked<S: VersionedStore + ?Sized>(
    store: &S,
    page_size: u32,
) -> Result<Vec<ObjectVersion>> {
    let listed = match store.list_versions(page_size).await {
        // Pages as large as stores allow may hold the whole listing where small ones cannot
        // be trusted (a store that pages in its own order); if not, that is the answer.
        Err(crate::Error::InconsistentListing { .. }) if page_size < MAX_LISTING_PAGE => {
            store.list_versions(MAX_LISTING_PAGE).await?
        }
        listed => listed?,
    };
    if listed
        .first()
        .is_some_and(|newest| newest.is_latest && !newest.is_delete_marker)
    {
        return Ok(listed);
    }
    let current = match store.head().await? {
        Headed::Found(head) => Some(head.version_id),
        Headed::Absent => None,
        Headed::Unsupported => match store.get(None).await? {
            Fetched::Found(object) => Some(object.version_id),
            Fetched::Absent | Fetched::NotModified => None,
        },
    };
    // No current object: a listing without current content agrees with it.
    let Some(current) = current else {
        return Ok(listed);
    };
    let lists_current = |versions: &[ObjectVersion]| match &current {
        Some(id) => versions.iter().any(|v| &v.version_id == id),
        None => versions.iter().any(|v| !v.is_delete_marker),
    };
    if lists_current(&listed) {
        return Ok(listed);
    }
    let relisted = store.list_versions(MAX_LISTING_PAGE).await?;
    if lists_current(&relisted) {
        return Ok(relisted);
    }
    Err(crate::Error::InconsistentListing {
        location: store.location().to_owned(),
        evidence: format!(
            "the object exists (version {}) but the listing (pages of {page_size}, then of \
             {MAX_LISTING_PAGE}) has {} entries and not that version",
            current.as_deref().unwrap_or("unknown"),
            relisted.len()
        ),
    })
}

/// The largest page a version listing asks for (S3's maximum).
pub const MAX_LISTING_PAGE: u32 = 1000;

/// A [`Store`] that keeps every version of its object.
#[async_trait]
pub trait VersionedStore: Store {
    /// Every version of the object, newest first, delete markers included. `page_size` bounds
    /// each listing request; all pages are followed.
    async fn list_versions(&self, page_size: u32) -> Result<Vec<ObjectVersion>>;

    /// The body and metadata of one version. An unknown id is
    /// [`crate::Error::VersionNotFound`].
    async fn get_version(&self, version_id: &str) -> Result<StoredObject>;

    /// The metadata of one version, without its body.
    async fn version_metadata(&self, version_id: &str) -> Result<ObjectMetadata>;

    /// Deletes one version permanently (not a delete marker: that version is gone).
    async fn delete_version(&self, version_id: &str) -> Result<()>;
}
