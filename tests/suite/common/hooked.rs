//! The one hookable store of the suite: an in-memory store whose requests a test scripts, per
//! object (the state, or its `.tflock`), to act at the exact moment that matters. A write can
//! be paused, preceded by another writer, applied with its answer lost, failed, stalled in the
//! network (kept, and landed when the test says so), hung, or answered by the test itself; a
//! delete can be applied with its answer lost, failed, or answered by the test; a read can be
//! preceded by an action. It counts the bodies and heads it serves, shows a version id as S3's
//! `"null"` (a version written before versioning was on), and, as a test chooses, forwards the
//! object's identity (managers over clones then share turns and the release gate, as managers
//! over one S3 object do), keeps or hides the history and the heads, adds latency to every
//! request, or brings a secondary lock.
//!
//! Siblings (`<key>.tflock`) share the script, the stalled requests and the options (but not
//! the secondary lock, which is the state's): a hook names the key it applies to.

use async_trait::async_trait;
use bytes::Bytes;
use s3state::store::memory::MemoryStore;
use s3state::store::{
    DeleteOutcome, ETag, Fetched, Headed, ObjectMetadata, ObjectVersion, Precondition, PutOutcome,
    Store, StoredObject, VersionedStore, Written,
};
use s3state::{Error, LockInfo, OutputValue, SecondaryLock, State};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Something a hook does with the store (through the hooks, or around them on `inner`).
pub type Action = Box<dyn FnOnce(Hooked) -> BoxFuture<()> + Send>;

/// An answer to a write, given by the test instead of the store.
pub type PutAnswer = Box<dyn FnOnce(Hooked, Put) -> BoxFuture<s3state::Result<PutOutcome>> + Send>;

/// An answer to a delete (given its `If-Match`), given by the test instead of the store.
pub type DeleteAnswer =
    Arc<dyn Fn(Hooked, Option<ETag>) -> BoxFuture<s3state::Result<DeleteOutcome>> + Send + Sync>;

pub fn action<F, Fut>(f: F) -> Action
where
    F: FnOnce(Hooked) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Box::new(move |store| Box::pin(f(store)))
}

/// A write as it was sent.
#[derive(Debug, Clone)]
pub struct Put {
    pub body: Bytes,
    pub precondition: Precondition,
    pub metadata: ObjectMetadata,
}

/// What happens to the next PUT of one object.
pub enum OnPut {
    /// Hold the request until `release`, after telling `entered`.
    Pause {
        entered: Arc<Notify>,
        release: Arc<Notify>,
    },
    /// Run `first`, then apply the request normally.
    Before(Action),
    /// Apply it, run `then`, and answer as if the response was lost: the SDK's retry met the
    /// object (`412`), or it gave up (an error).
    LandThen { then: Action, gave_up: bool },
    /// Not applied: an error without an answer.
    Fail,
    /// The request stalls in the network: it is kept (see [`Hooked::land_stalled`]) and the
    /// caller gets a timeout now.
    Stall,
    /// The first attempt stalls (kept), and the caller gets the SDK's retry's answer.
    StallThenRetry,
    /// The request is kept and never answered.
    Hang,
    /// The test answers.
    Answer(PutAnswer),
}

impl OnPut {
    /// Applied, and the answer lost after the SDK's retries: an error.
    pub fn apply_then_fail() -> Self {
        OnPut::LandThen {
            then: action(|_| async {}),
            gave_up: true,
        }
    }

    /// Applied, its answer lost (the SDK's retry meets it: `412`), and Terraform writes on top
    /// (a plain PUT) before the caller looks.
    pub fn lose_answer_then_terraform_writes() -> Self {
        OnPut::LandThen {
            then: action(|store: Hooked| async move {
                let mut state = store.stored().unwrap();
                state.serial += 1;
                state
                    .outputs
                    .insert("terraform".into(), OutputValue::new(&"applied"));
                store.inner.put_unconditional(Bytes::from(state.to_bytes()));
            }),
            gave_up: false,
        }
    }

    /// Terraform writes `body` (a plain PUT) just before this request arrives.
    pub fn terraform_writes_first(body: &'static [u8]) -> Self {
        OnPut::Before(action(move |store: Hooked| async move {
            store.inner.put_unconditional(Bytes::from_static(body));
        }))
    }
}

/// What happens to the next DELETE of one object.
pub enum OnDelete {
    /// Applied, the answer lost.
    ApplyThenFail,
    /// Not applied, an error.
    FailWithoutApplying,
}

#[derive(Default)]
struct Script {
    puts: HashMap<String, VecDeque<OnPut>>,
    /// Keys every PUT of which stalls (`false`) or hangs (`true`), after the queued hooks.
    every_put: HashMap<String, bool>,
    deletes: HashMap<String, VecDeque<OnDelete>>,
    every_delete: Option<DeleteAnswer>,
    gets: HashMap<String, VecDeque<Action>>,
    stalled: Vec<(MemoryStore, Put)>,
    /// Bodies served (gets that found the object) and heads answered, per key.
    reads: HashMap<String, (usize, usize)>,
    /// (key, version id) shown as S3's `"null"`: an object written before versioning was on.
    null_version: Option<(String, String)>,
    /// Listings in pages smaller than this answer no versions at all, as SeaweedFS's paged
    /// ListObjectVersions did under a prefix other keys share.
    lose_versions_below: Option<u32>,
}

/// How the store presents itself; shared by siblings.
#[derive(Clone, Copy)]
struct Options {
    identity: bool,
    versioned: bool,
    heads: bool,
    latency: Option<Duration>,
}

#[derive(Clone)]
pub struct Hooked {
    pub inner: MemoryStore,
    script: Arc<Mutex<Script>>,
    options: Options,
    secondary: Option<Arc<dyn SecondaryLock>>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

pub fn timeout_error(what: &'static str) -> Error {
    Error::Store {
        operation: what,
        location: "scripted".into(),
        message: "the request timed out and the retries gave up".into(),
        source: None,
    }
}

impl Hooked {
    /// A fresh versioned bucket holding `key`: heads served, no identity, no latency.
    pub fn new(key: &str) -> Self {
        Self::over(MemoryStore::new(key))
    }

    pub fn over(inner: MemoryStore) -> Self {
        Hooked {
            inner,
            script: Arc::default(),
            options: Options {
                identity: false,
                versioned: true,
                heads: true,
                latency: None,
            },
            secondary: None,
        }
    }

    /// Gives the object's identity, so that managers over clones share one line of updates
    /// and one release gate, as managers over one S3 object do.
    pub fn forwarding_identity(mut self) -> Self {
        self.options.identity = true;
        self
    }

    /// Keeps no history (`as_versioned` is `None`).
    pub fn unversioned(mut self) -> Self {
        self.options.versioned = false;
        self
    }

    /// Answers no head (`Headed::Unsupported`), so callers read the body.
    pub fn without_heads(mut self) -> Self {
        self.options.heads = false;
        self
    }

    /// Every get, put and delete takes `latency` first.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.options.latency = Some(latency);
        self
    }

    /// The state object brings `lock` as its secondary lock.
    pub fn with_secondary(mut self, lock: Arc<dyn SecondaryLock>) -> Self {
        self.secondary = Some(lock);
        self
    }

    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// Every listing in pages smaller than `page_size` (with `u32::MAX`, every listing) answers
    /// no versions, though the object has them: the listing SeaweedFS gave when it paged under
    /// a prefix that other keys share.
    pub fn lose_listed_versions_below(&self, page_size: u32) {
        self.script.lock().unwrap().lose_versions_below = Some(page_size);
    }

    pub fn lock_key(&self) -> String {
        format!("{}.tflock", self.inner.key())
    }

    /// What the next queued PUT of `key` does.
    pub fn on_put(&self, key: &str, what: OnPut) {
        let mut script = self.script.lock().unwrap();
        script.puts.entry(key.into()).or_default().push_back(what);
    }

    /// What the next write of this object does.
    pub fn next_write(&self, what: OnPut) {
        self.on_put(self.key(), what);
    }

    /// Holds the next PUT of `key` (see [`OnPut::Pause`]); returns the notices it gives when
    /// it is held (`entered`) and that let it go on (`release`).
    pub fn pause_put(&self, key: &str) -> (Arc<Notify>, Arc<Notify>) {
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        self.on_put(
            key,
            OnPut::Pause {
                entered: Arc::clone(&entered),
                release: Arc::clone(&release),
            },
        );
        (entered, release)
    }

    /// [`Hooked::pause_put`] for the next write of this object.
    pub fn pause_next_write(&self) -> (Arc<Notify>, Arc<Notify>) {
        self.pause_put(self.key())
    }

    /// [`Hooked::pause_put`] for the next write of this object's `.tflock`.
    pub fn pause_next_lock_write(&self) -> (Arc<Notify>, Arc<Notify>) {
        self.pause_put(&self.lock_key())
    }

    /// The next `n` writes of this object stall (see [`OnPut::Stall`]), instead of what was
    /// queued for them.
    pub fn stall(&self, n: usize) {
        self.script.lock().unwrap().puts.remove(self.key());
        for _ in 0..n {
            self.next_write(OnPut::Stall);
        }
    }

    /// Every write of this object stalls from now on (`Some(false)`), hangs (`Some(true)`),
    /// or is applied again (`None`; what is queued is dropped too).
    pub fn every_write(&self, stall_or_hang: Option<bool>) {
        let key = self.key().to_owned();
        let mut script = self.script.lock().unwrap();
        match stall_or_hang {
            Some(hang) => {
                script.every_put.insert(key, hang);
            }
            None => {
                script.every_put.remove(&key);
                script.puts.remove(&key);
            }
        }
    }

    pub fn on_delete(&self, key: &str, what: OnDelete) {
        let mut script = self.script.lock().unwrap();
        script
            .deletes
            .entry(key.into())
            .or_default()
            .push_back(what);
    }

    /// Every delete of every object is answered by `answer`.
    pub fn every_delete(&self, answer: DeleteAnswer) {
        self.script.lock().unwrap().every_delete = Some(answer);
    }

    /// Runs `what` before the next GET of `key`.
    pub fn on_get(&self, key: &str, what: Action) {
        let mut script = self.script.lock().unwrap();
        script.gets.entry(key.into()).or_default().push_back(what);
    }

    /// Shows `version_id` of this object as S3's `"null"`.
    pub fn show_as_null(&self, version_id: String) {
        self.script.lock().unwrap().null_version = Some((self.key().to_owned(), version_id));
    }

    /// The requests stalled so far and not landed.
    pub fn stalled(&self) -> usize {
        self.script.lock().unwrap().stalled.len()
    }

    /// Stalled requests arrive now, in the order they were sent.
    pub async fn land_stalled(&self) -> Vec<PutOutcome> {
        let stalled = std::mem::take(&mut self.script.lock().unwrap().stalled);
        let mut outcomes = Vec::new();
        for (store, put) in stalled {
            let outcome = store.put(put.body, &put.precondition, &put.metadata);
            outcomes.push(outcome.await.unwrap());
        }
        outcomes
    }

    /// The bodies and heads of this object served since the last call.
    pub fn reads(&self) -> (usize, usize) {
        let mut script = self.script.lock().unwrap();
        script.reads.remove(self.key()).unwrap_or_default()
    }

    pub fn stored(&self) -> Option<State> {
        self.inner
            .current_body()
            .map(|body| State::from_slice(&body).unwrap())
    }

    /// The lock object's body, if a lock is held.
    pub fn lock_body(&self) -> Option<Bytes> {
        self.inner.sibling(".tflock").current_body()
    }

    pub fn lock_held(&self) -> bool {
        self.lock_body().is_some()
    }

    fn keep(&self, put: Put) {
        let inner = self.inner.clone();
        self.script.lock().unwrap().stalled.push((inner, put));
    }

    async fn wait(&self) {
        if let Some(latency) = self.options.latency {
            tokio::time::sleep(latency).await;
        }
    }

    fn count(&self, body: bool) {
        let mut script = self.script.lock().unwrap();
        let reads = script.reads.entry(self.key().to_owned()).or_default();
        if body {
            reads.0 += 1;
        } else {
            reads.1 += 1;
        }
    }

    fn show(&self, id: String) -> String {
        match &self.script.lock().unwrap().null_version {
            Some((key, null)) if key == self.inner.key() && *null == id => "null".into(),
            _ => id,
        }
    }

    fn unshow(&self, id: &str) -> String {
        match &self.script.lock().unwrap().null_version {
            Some((key, null)) if key == self.inner.key() && id == "null" => null.clone(),
            _ => id.to_owned(),
        }
    }

    fn show_written(&self, outcome: PutOutcome) -> PutOutcome {
        match outcome {
            PutOutcome::Written(Written { etag, version_id }) => PutOutcome::Written(Written {
                etag,
                version_id: version_id.map(|id| self.show(id)),
            }),
            other => other,
        }
    }

    fn next_put_hook(&self) -> Option<OnPut> {
        let mut script = self.script.lock().unwrap();
        let key = self.inner.key();
        if let Some(what) = script.puts.get_mut(key).and_then(VecDeque::pop_front) {
            return Some(what);
        }
        script
            .every_put
            .get(key)
            .map(|&hang| if hang { OnPut::Hang } else { OnPut::Stall })
    }
}

/// Terraform's S3-backend lock (`use_lockfile`): If-None-Match on `<key>.tflock`. The lock
/// info, when taken.
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

#[async_trait]
impl Store for Hooked {
    async fn get(&self, if_none_match: Option<&ETag>) -> s3state::Result<Fetched> {
        self.wait().await;
        let hook = {
            let mut script = self.script.lock().unwrap();
            script
                .gets
                .get_mut(self.inner.key())
                .and_then(VecDeque::pop_front)
        };
        if let Some(hook) = hook {
            hook(self.clone()).await;
        }
        Ok(match self.inner.get(if_none_match).await? {
            Fetched::Found(mut object) => {
                self.count(true);
                object.version_id = object.version_id.map(|id| self.show(id));
                Fetched::Found(object)
            }
            other => other,
        })
    }

    async fn head(&self) -> s3state::Result<Headed> {
        if !self.options.heads {
            return Ok(Headed::Unsupported);
        }
        self.count(false);
        Ok(match self.inner.head().await? {
            Headed::Found(mut head) => {
                head.version_id = head.version_id.map(|id| self.show(id));
                Headed::Found(head)
            }
            other => other,
        })
    }

    async fn put(
        &self,
        body: Bytes,
        precondition: &Precondition,
        metadata: &ObjectMetadata,
    ) -> s3state::Result<PutOutcome> {
        self.wait().await;
        let put = Put {
            body,
            precondition: precondition.clone(),
            metadata: metadata.clone(),
        };
        let apply = |put: Put| async move {
            let (body, precondition, metadata) = (put.body, put.precondition, put.metadata);
            self.inner.put(body, &precondition, &metadata).await
        };
        let outcome = match self.next_put_hook() {
            None => apply(put).await?,
            Some(OnPut::Pause { entered, release }) => {
                entered.notify_one();
                release.notified().await;
                apply(put).await?
            }
            Some(OnPut::Before(first)) => {
                first(self.clone()).await;
                apply(put).await?
            }
            Some(OnPut::LandThen { then, gave_up }) => {
                apply(put).await?;
                then(self.clone()).await;
                if gave_up {
                    return Err(timeout_error("PutObject"));
                }
                PutOutcome::PreconditionFailed
            }
            Some(OnPut::Fail) => return Err(timeout_error("PutObject")),
            Some(OnPut::Stall) => {
                self.keep(put);
                return Err(timeout_error("PutObject"));
            }
            Some(OnPut::StallThenRetry) => {
                self.keep(put.clone());
                apply(put).await?
            }
            Some(OnPut::Hang) => {
                self.keep(put);
                std::future::pending().await
            }
            Some(OnPut::Answer(answer)) => answer(self.clone(), put).await?,
        };
        Ok(self.show_written(outcome))
    }

    async fn delete(&self, if_match: Option<&ETag>) -> s3state::Result<DeleteOutcome> {
        self.wait().await;
        let (what, every) = {
            let mut script = self.script.lock().unwrap();
            let what = script
                .deletes
                .get_mut(self.inner.key())
                .and_then(VecDeque::pop_front);
            (what, script.every_delete.clone())
        };
        match (what, every) {
            (Some(OnDelete::ApplyThenFail), _) => {
                self.inner.delete(if_match).await?;
                Err(timeout_error("DeleteObject"))
            }
            (Some(OnDelete::FailWithoutApplying), _) => Err(timeout_error("DeleteObject")),
            (None, Some(answer)) => answer(self.clone(), if_match.cloned()).await,
            (None, None) => self.inner.delete(if_match).await,
        }
    }

    fn sibling(&self, suffix: &str) -> Self {
        Hooked {
            inner: self.inner.sibling(suffix),
            script: Arc::clone(&self.script),
            options: self.options,
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
        self.options
            .versioned
            .then_some(self as &dyn VersionedStore)
    }

    fn identity(&self) -> Option<String> {
        self.options
            .identity
            .then(|| self.inner.identity())
            .flatten()
    }

    fn secondary_lock(&self) -> Option<Arc<dyn SecondaryLock>> {
        self.secondary.clone()
    }
}

#[async_trait]
impl VersionedStore for Hooked {
    async fn list_versions(&self, page_size: u32) -> s3state::Result<Vec<ObjectVersion>> {
        let lost = self.script.lock().unwrap().lose_versions_below;
        if lost.is_some_and(|below| page_size < below) {
            return Ok(Vec::new());
        }
        let versions = self.inner.list_versions(page_size).await?;
        Ok(versions
            .into_iter()
            .map(|mut version| {
                version.version_id = self.show(version.version_id);
                version
            })
            .collect())
    }

    async fn get_version(&self, version_id: &str) -> s3state::Result<StoredObject> {
        let mut object = self.inner.get_version(&self.unshow(version_id)).await?;
        object.version_id = object.version_id.map(|id| self.show(id));
        Ok(object)
    }

    async fn version_metadata(&self, version_id: &str) -> s3state::Result<ObjectMetadata> {
        self.inner.version_metadata(&self.unshow(version_id)).await
    }

    async fn delete_version(&self, version_id: &str) -> s3state::Result<()> {
        self.inner.delete_version(&self.unshow(version_id)).await
    }
}
