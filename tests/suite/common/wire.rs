//! An in-memory store whose state writes can be held "on the wire" (answered with a timeout
//! at once, applied when the test says so), and Terraform's `.tflock` taken as Terraform
//! takes it: for the tests of writes that got no answer.

use async_trait::async_trait;
use bytes::Bytes;
use s3state::store::memory::MemoryStore;
use s3state::store::{
    DeleteOutcome, ETag, Fetched, Headed, ObjectMetadata, ObjectVersion, Precondition, PutOutcome,
    Store, StoredObject, VersionedStore,
};
use s3state::{Error, LockInfo, SecondaryLock};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Terraform's S3-backend lock (`use_lockfile`): If-None-Match on `<key>.tflock`.
pub async fn terraform_lock<S: Store>(state_object: &S) -> Option<LockInfo> {
    let mut info = LockInfo::new("OperationTypeApply");
    info.path = state_object.path().to_owned();
    let body = Bytes::from(serde_json::to_vec(&info).unwrap());
    match state_object
        .sibling(".tflock")
        .put(body, &Precondition::Create, &ObjectMetadata::new())
        .await
        .unwrap()
    {
        PutOutcome::Written(_) => Some(info),
        PutOutcome::PreconditionFailed => None,
    }
}

pub type StalledPut = (MemoryStore, Bytes, Precondition, ObjectMetadata);

/// A store whose state PUTs (never `.tflock` PUTs) can stall in the network: `stall(n)` makes
/// the next `n` fail at once without an answer, `hang(true)` makes them never answer. Either
/// way the request is kept and lands when the test says so. It forwards the object's identity,
/// so managers over clones share the release gate, as managers over one S3 object do; and it
/// can bring a secondary lock.
#[derive(Clone)]
pub struct Wire {
    pub inner: MemoryStore,
    pub stall: Arc<Mutex<usize>>,
    pub hang: Arc<AtomicBool>,
    pub stalled: Arc<Mutex<Vec<StalledPut>>>,
    pub secondary: Option<Arc<dyn SecondaryLock>>,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Wire {
    pub fn new(key: &str) -> Self {
        Wire {
            inner: MemoryStore::new(key),
            stall: Arc::default(),
            hang: Arc::default(),
            stalled: Arc::default(),
            secondary: None,
        }
    }

    pub fn stall(&self, n: usize) {
        *self.stall.lock().unwrap() = n;
    }

    pub async fn land_stalled(&self) -> Vec<PutOutcome> {
        let stalled = std::mem::take(&mut *self.stalled.lock().unwrap());
        let mut outcomes = Vec::new();
        for (store, body, precondition, metadata) in stalled {
            outcomes.push(store.put(body, &precondition, &metadata).await.unwrap());
        }
        outcomes
    }

    pub fn lock_held(&self) -> bool {
        self.inner.sibling(".tflock").current_body().is_some()
    }
}

#[async_trait]
impl Store for Wire {
    async fn get(&self, if_none_match: Option<&ETag>) -> s3state::Result<Fetched> {
        self.inner.get(if_none_match).await
    }
    async fn head(&self) -> s3state::Result<Headed> {
        self.inner.head().await
    }
    async fn put(
        &self,
        body: Bytes,
        precondition: &Precondition,
        metadata: &ObjectMetadata,
    ) -> s3state::Result<PutOutcome> {
        let state_put = !self.inner.key().ends_with(".tflock");
        let keep = || {
            self.stalled.lock().unwrap().push((
                self.inner.clone(),
                body.clone(),
                precondition.clone(),
                metadata.clone(),
            ))
        };
        if state_put && self.hang.load(Ordering::SeqCst) {
            keep();
            std::future::pending::<()>().await;
        }
        let stall = state_put && {
            let mut left = self.stall.lock().unwrap();
            let stall = *left > 0;
            *left = left.saturating_sub(1);
            stall
        };
        if stall {
            keep();
            return Err(Error::Store {
                operation: "PutObject",
                location: "wire".into(),
                message: "the request timed out and the retries gave up".into(),
                source: None,
            });
        }
        self.inner.put(body, precondition, metadata).await
    }
    async fn delete(&self, if_match: Option<&ETag>) -> s3state::Result<DeleteOutcome> {
        self.inner.delete(if_match).await
    }
    fn sibling(&self, suffix: &str) -> Self {
        Wire {
            inner: self.inner.sibling(suffix),
            stall: Arc::clone(&self.stall),
            hang: Arc::clone(&self.hang),
            stalled: Arc::clone(&self.stalled),
            secondary: None,
        }
    }
    fn location(&self) -> &str {
        self.inner.location()
    }
    fn path(&self) -> &str {
        self.inner.path()
    }
    fn as_versioned(&self) -> Option<&dyn VersionedStore> {
        Some(self)
    }
    fn identity(&self) -> Option<String> {
        self.inner.identity()
    }
    fn secondary_lock(&self) -> Option<Arc<dyn SecondaryLock>> {
        self.secondary.clone()
    }
}

#[async_trait]
impl VersionedStore for Wire {
    async fn list_versions(&self, page_size: u32) -> s3state::Result<Vec<ObjectVersion>> {
        self.inner.list_versions(page_size).await
    }
    async fn get_version(&self, version_id: &str) -> s3state::Result<StoredObject> {
        self.inner.get_version(version_id).await
    }
    async fn version_metadata(&self, version_id: &str) -> s3state::Result<ObjectMetadata> {
        self.inner.version_metadata(version_id).await
    }
    async fn delete_version(&self, version_id: &str) -> s3state::Result<()> {
        self.inner.delete_version(version_id).await
    }
}
