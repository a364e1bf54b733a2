//! Terraform-compatible locking over any [`Store`]: the lock is an object beside the state
//! (`<key>.tflock`) holding [`LockInfo`] as compact JSON, created with a create-only write.

use crate::error::{Error, Result};
use crate::state::{OutputValue, State};
use crate::statemgr::{
    LockInfo, Locker, OutputReader, PersistentMeta, Persister, Refresher, SnapshotMeta, Transient,
};
use crate::store::{DeleteOutcome, ETag, Fetched, ObjectMetadata, Precondition, PutOutcome, Store};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The suffix Terraform (1.10+, `use_lockfile`) and OpenTofu give the lock object.
pub const LOCK_SUFFIX: &str = ".tflock";

/// Object metadata s3state writes beside a lock: a value unique to one `lock` call, so that a
/// lock is recognised as ours only when it is the very object this call wrote, not merely one
/// with the same ID (Terraform ignores the metadata).
pub const LOCK_NONCE_KEY: &str = "s3state-lock-nonce";

/// How [`StoreLocker::lock_with_timeout`] waits for a held lock: Terraform's schedule by
/// default, 1 s doubling up to 16 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockRetry {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait between attempts.
    pub max: Duration,
}

impl Default for LockRetry {
    fn default() -> Self {
        LockRetry {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(16),
        }
    }
}

pub use crate::store::SecondaryLock;

/// The lock of one state, kept in the object `<state>.tflock` of a [`Store`].
///
/// Persisting never locks by itself (as in Terraform). A change that must not interleave with
/// Terraform, OpenTofu or another tool takes the same lock they take, in this sequence: lock,
/// refresh, change, persist, unlock. [`crate::RemoteState::locker`] gives the manager's locker;
/// [`Locker`] on the manager itself delegates to it.
///
/// ```no_run
/// use s3state::{Error, LockInfo, Locker, Persister, Refresher, S3Builder, Transient};
/// use std::time::Duration;
///
/// # async fn demo() -> s3state::Result<()> {
/// let manager = S3Builder::from_env()
///     .with_bucket("tfstate")
///     .with_key("app/terraform.tfstate")
///     .build()
///     .await?;
///
/// // 1. Lock, waiting up to a minute on Terraform's back-off (1 s doubling to 16 s).
/// let info = LockInfo::new("OperationTypeApply").with_info("nightly cleanup");
/// let id = match manager.locker().lock_with_timeout(&info, Duration::from_secs(60)).await {
///     Ok(id) => id,
///     Err(Error::Locked { holder, .. }) => {
///         // Still held after the timeout; `holder` says who has it (if the lock is readable).
///         eprintln!("giving up: held by {holder:?}");
///         return Ok(());
///     }
///     Err(err) => return Err(err),
/// };
///
/// let result = async {
///     manager.refresh_state().await?;                    // 2. refresh under the lock
///     if let Some(mut state) = manager.state() {         // 3. change
///         state.outputs.remove("obsolete");
///         manager.write_state(state);
///     }
///     manager.persist_state().await                      // 4. persist
/// }
/// .await;
/// manager.unlock(&id).await?;                            // 5. unlock, whatever happened
/// result
/// # }
/// ```
///
/// An operator clears a lock left behind by a crashed process with
/// [`StoreLocker::force_unlock`], given the ID that [`StoreLocker::current`] reports.
#[derive(Debug)]
pub struct StoreLocker<S> {
    lock_object: S,
    state_path: String,
    retry: LockRetry,
    /// Tags of the locks this locker created, by ID, so `unlock` can delete exactly that
    /// object with one conditional request.
    held: Mutex<HashMap<String, HeldLock>>,
    /// IDs of our locks whose delete got no answer: it may have gone through, so finding
    /// another lock in their place later means ours was released, not broken.
    deletes_in_doubt: Mutex<std::collections::HashSet<String>>,
    /// A lock taken after the object and released after it (Terraform's DynamoDB lock).
    secondary: Option<Arc<dyn SecondaryLock>>,
}

/// The lock info as written: `Created` is when this call takes the lock. Besides being the
/// truth, it makes the body of each call's lock unique, so that content-hash tags of two
/// callers that reuse one `LockInfo` differ and a conditional delete never removes the other's.
fn taken_now(info: &LockInfo) -> LockInfo {
    LockInfo {
        created: time::OffsetDateTime::now_utc(),
        ..info.clone()
    }
}

/// Who holds a lock a [`StoreLocker`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockHolder {
    /// The caller, through the public API: updates through the manager run under it.
    Caller,
    /// A write, for itself (`update`, `restore`, the gateway's write without a lock).
    OwnWrite,
}

/// How [`StoreLocker::lock_waiting`] waits for a held lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockWait {
    /// How long to wait in all.
    pub(crate) timeout: Duration,
    /// The schedule of waits between attempts.
    pub(crate) retry: LockRetry,
    /// Each wait drawn uniformly from zero to the scheduled wait, so that many waiters do not
    /// retry in step.
    pub(crate) jitter: bool,
    /// Who holds the lock once taken.
    pub(crate) holder: LockHolder,
}

/// One taking of the lock, which may span several waits: the lock info as it will be
/// written (its `Created` set once) and the nonce every request of it carries.
#[derive(Debug, Clone)]
pub(crate) struct LockAttempt {
    info: LockInfo,
    nonce: String,
}

impl LockAttempt {
    /// A new taking of the lock with `info`.
    pub(crate) fn new(info: &LockInfo) -> Self {
        LockAttempt {
            info: taken_now(info),
            nonce: uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// What [`StoreLocker::lock_waiting`] got.
#[derive(Debug)]
pub(crate) struct LockWaited {
    /// The lock's ID, or why it was not taken.
    pub(crate) id: Result<String>,
    /// The lock was found held by someone else at least once: others want the state too.
    pub(crate) was_refused: bool,
    /// It was found held at least once by something other than an s3state write that waits
    /// in the lock queue (a Terraform, a caller's explicit lock, an unreadable lock): a
    /// contender that may not read the queue, for whom a courtesy gap is worth leaving.
    pub(crate) refused_by_other_tools: bool,
}

/// The start of the lock info (`Info`) of the locks s3state's writes take for themselves
/// (`update`, `restore`, the gateway's writes without a client lock): the writers that wait
/// in the lock queue. Anything else holding the lock may be a tool that does not read it.
pub(crate) const QUEUED_WRITE_INFO: &str = "s3state ";

/// Whether a lock's holder is an s3state write that waits in the lock queue (its
/// `Operation` is `OperationTypeApply` and its `Info` starts with [`QUEUED_WRITE_INFO`]).
fn is_queued_write(holder: Option<&LockInfo>) -> bool {
    holder.is_some_and(|h| {
        h.operation == "OperationTypeApply" && h.info.starts_with(QUEUED_WRITE_INFO)
    })
}

/// A lock this locker took and has not released.
#[derive(Debug, Clone)]
struct HeldLock {
    /// The lock object's tag, for a conditional delete.
    etag: ETag,
    /// The nonce written in its metadata: the proof that the object there is ours.
    nonce: String,
    /// Who holds it: the caller, or a write for itself.
    holder: LockHolder,
    /// The lock info it was taken with: its `Who` becomes the author of what is written
    /// under it.
    info: LockInfo,
}

impl<S: Store> StoreLocker<S> {
    /// The locker for the state in `state_store`.
    pub fn for_state(state_store: &S) -> Self {
        StoreLocker {
            lock_object: state_store.sibling(LOCK_SUFFIX),
            state_path: state_store.path().to_owned(),
            retry: LockRetry::default(),
            held: Mutex::new(HashMap::new()),
            deletes_in_doubt: Mutex::default(),
            // The store's own second lock (Terraform's DynamoDB item for an S3 state with
            // `dynamodb_table`), so that every locker over the state takes it.
            secondary: state_store.secondary_lock(),
        }
    }

    /// The same locker, also taking `secondary` (after the lock object) and releasing it
    /// (after the object): Terraform's order with both `use_lockfile` and `dynamodb_table`.
    ///
    /// A locker over a store that brings its own second lock ([`Store::secondary_lock`]:
    /// Terraform's DynamoDB item) keeps it and takes `secondary` after it: adding a lock never
    /// drops one another tool relies on.
    pub fn with_secondary(mut self, secondary: Arc<dyn SecondaryLock>) -> Self {
        self.secondary = Some(match self.secondary.take() {
            None => secondary,
            Some(first) => Arc::new(BothSecondaries {
                first,
                then: secondary,
            }),
        });
        self
    }

    /// The second lock taken with the object, if any.
    pub fn secondary(&self) -> Option<&Arc<dyn SecondaryLock>> {
        self.secondary.as_ref()
    }

    /// The lock object itself (`<key>.tflock`), for reading it as a front end sees it.
    pub(crate) fn lock_object(&self) -> &S {
        &self.lock_object
    }

    /// The same locker, waiting on the given schedule.
    pub fn with_retry(mut self, retry: LockRetry) -> Self {
        self.retry = retry;
        self
    }

    /// Where the lock object lives.
    pub fn location(&self) -> &str {
        self.lock_object.location()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, HeldLock>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deletes_in_doubt(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.deletes_in_doubt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Stops counting lock `id` as held, without touching the store (its release failed and
    /// the caller was told how to remove it).
    pub(crate) fn forget_lock(&self, id: &str) {
        self.forget(id);
    }

    /// The info of a lock held through this locker, and who holds it: the caller's lock before
    /// one a write took for itself. What a write records as its author and operation.
    pub(crate) fn held_info(&self) -> Option<(LockInfo, LockHolder)> {
        self.held()
            .values()
            .min_by_key(|held| held.holder != LockHolder::Caller)
            .map(|held| (held.info.clone(), held.holder))
    }

    /// Our lock `id` is gone: it no longer counts as held.
    fn forget(&self, id: &str) {
        self.held().remove(id);
        self.deletes_in_doubt().remove(id);
    }

    /// The ID of a lock the caller took through this locker (not one `update` took for
    /// itself) and that is still in the store with our nonce, checked with one read. A lock
    /// that is gone (force-unlocked, say) is forgotten, and `None` is the answer.
    pub(crate) async fn caller_lock(&self) -> Result<Option<String>> {
        let callers: Vec<(String, HeldLock)> = self
            .held()
            .iter()
            .filter(|(_, held)| held.holder == LockHolder::Caller)
            .map(|(id, held)| (id.clone(), held.clone()))
            .collect();
        if callers.is_empty() {
            return Ok(None);
        }
        let there = self.read_object().await?;
        for (id, held) in callers {
            let ours = there.as_ref().is_some_and(|(info, object)| {
                info.as_ref().is_some_and(|info| info.id == id)
                    && object.metadata.get(LOCK_NONCE_KEY) == Some(&held.nonce)
            });
            if ours {
                return Ok(Some(id));
            }
            self.forget(&id);
        }
        Ok(None)
    }

    /// Forgets lock `id` at once and releases it in the background: for a holder that is
    /// being dropped (a cancelled or panicking update), which cannot wait for the store.
    /// Waits for `first` (writes that rely on the lock, or may still land under it; see
    /// `RemoteStateOptions::unanswered_write_settle`).
    pub(crate) fn release_in_background(
        &self,
        id: &str,
        first: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) {
        let held = self.held().get(id).cloned();
        self.forget(id);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let secondary = self.secondary.clone();
        let object = self.lock_object.sibling("");
        let id = id.to_owned();
        runtime.spawn(async move {
            first.await;
            if let Some(secondary) = secondary
                && let Err(error) = secondary.unlock(&id).await
            {
                tracing::warn!(%id, %error, "could not release an abandoned lock; clear it with force-unlock");
            }
            let Some(held) = held else { return };
            // Delete only the very object we wrote (its nonce), never a successor's.
            for _ in 0..5 {
                let found = match object.get(None).await {
                    Ok(Fetched::Found(found)) => found,
                    Ok(_) => return,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if found.metadata.get(LOCK_NONCE_KEY) != Some(&held.nonce) {
                    return;
                }
                match object.delete(Some(&found.etag)).await {
                    Ok(DeleteOutcome::ConditionalUnsupported) => {
                        let _ = object.delete(None).await;
                        return;
                    }
                    Ok(_) => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            tracing::warn!(%id, "could not release an abandoned lock; clear it with force-unlock");
        });
    }

    /// The current holder's lock info, or `None` when the state is not locked. A lock object
    /// whose content is not lock info is [`Error::Locked`] without a holder: the state is
    /// locked, by someone we cannot name.
    pub async fn current(&self) -> Result<Option<LockInfo>> {
        match self.read().await? {
            None => match &self.secondary {
                Some(secondary) => secondary.current().await,
                None => Ok(None),
            },
            Some((Some(info), _)) => Ok(Some(info)),
            Some((None, _)) => Err(self.locked(None, None)),
        }
    }

    /// The lock object: its parsed info (`None` if unreadable) and its tag.
    async fn read(&self) -> Result<Option<(Option<LockInfo>, ETag)>> {
        Ok(self
            .read_object()
            .await?
            .map(|(info, object)| (info, object.etag)))
    }

    /// Reads the lock object, trying again a few times when the store fails: used where the
    /// answer decides whether a lock we may have created is ours.
    async fn read_back(&self) -> Result<Option<(Option<LockInfo>, crate::store::StoredObject)>> {
        let mut attempt = 1;
        loop {
            match self.read_object().await {
                Err(Error::Store { .. }) if attempt < 4 => {
                    tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn read_object(&self) -> Result<Option<(Option<LockInfo>, crate::store::StoredObject)>> {
        match self.lock_object.get(None).await? {
            Fetched::Found(object) => {
                let info = serde_json::from_slice(&object.body).ok();
                Ok(Some((info, object)))
            }
            Fetched::Absent | Fetched::NotModified => Ok(None),
        }
    }

    fn locked(&self, holder: Option<LockInfo>, waited: Option<Duration>) -> Error {
        Error::Locked {
            location: self.location().to_owned(),
            holder: holder.map(Box::new),
            waited,
        }
    }

    /// Like [`Locker::lock`], but waits for a held lock, retrying on [`LockRetry`]'s schedule
    /// until `timeout` has passed; then fails with [`Error::Locked`] and the holder's info.
    pub async fn lock_with_timeout(&self, info: &LockInfo, timeout: Duration) -> Result<String> {
        let how = LockWait {
            timeout,
            retry: self.retry,
            jitter: false,
            holder: LockHolder::Caller,
        };
        self.lock_waiting(info, &how).await.id
    }

    /// Takes the lock, waiting for a held one as `how` says.
    ///
    /// Every attempt carries the same nonce, so an earlier attempt that stalled and created
    /// the lock late is still recognised as ours rather than waited on. The answer also says
    /// whether the lock was found held by someone else at least once.
    pub(crate) async fn lock_waiting(&self, info: &LockInfo, how: &LockWait) -> LockWaited {
        self.lock_waiting_as(&LockAttempt::new(info), how).await
    }

    /// [`StoreLocker::lock_waiting`] as a part of `attempt`, which may span several waits
    /// (the lock queue's): every one of them tries with the attempt's body and nonce, so a
    /// request of an earlier wait that lands late is still recognised as ours.
    pub(crate) async fn lock_waiting_as(
        &self,
        attempt: &LockAttempt,
        how: &LockWait,
    ) -> LockWaited {
        let mut refusals = (false, false);
        let id = self.lock_waiting_noting(attempt, how, &mut refusals).await;
        LockWaited {
            id,
            was_refused: refusals.0,
            refused_by_other_tools: refusals.1,
        }
    }

    async fn lock_waiting_noting(
        &self,
        attempt: &LockAttempt,
        how: &LockWait,
        refused: &mut (bool, bool),
    ) -> Result<String> {
        let LockWait {
            timeout,
            retry,
            jitter,
            holder: lock_holder,
        } = *how;
        let started = tokio::time::Instant::now();
        let mut wait = retry.initial;
        let LockAttempt { info, nonce } = attempt;
        // The lock object that last refused us, and its holder, while it is known to be there.
        let mut refused_by: Option<ETag> = None;
        let mut holder = None;
        loop {
            // While the lock that refused us is still there, another attempt would only be
            // refused again, at the cost of a PUT and a read. A conditional GET answered 304
            // (no body) says so in one request; anything else (gone, replaced, unreadable)
            // means trying again.
            let still_refused = match &refused_by {
                Some(etag) => match self.lock_object.get(Some(etag)).await {
                    Ok(Fetched::NotModified) => true,
                    // A store that ignores If-None-Match on GET: compare the tags ourselves.
                    Ok(Fetched::Found(object)) => object.etag == *etag,
                    Ok(Fetched::Absent) | Err(_) => false,
                },
                None => false,
            };
            if !still_refused {
                refused_by = None;
                match self
                    .acquire_both(
                        info,
                        &ObjectMetadata::new(),
                        nonce,
                        lock_holder,
                        &mut refused_by,
                    )
                    .await
                {
                    Err(Error::Locked { holder: seen, .. }) => {
                        refused.0 = true;
                        refused.1 |= !is_queued_write(seen.as_deref());
                        holder = seen;
                    }
                    other => return other,
                }
            }
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                return Err(self.locked(holder.map(|h| *h), Some(elapsed)));
            }
            let pause = if jitter {
                wait.mul_f64(fastrand::f64()).max(Duration::from_millis(1))
            } else {
                wait
            };
            tokio::time::sleep(pause.min(timeout - elapsed)).await;
            wait = (wait * 2).min(retry.max);
        }
    }

    /// Releases a lock this locker took, trying again a few times when the store fails, so a
    /// passing fault does not leave the lock behind.
    pub(crate) async fn unlock_patiently(&self, id: &str) -> Result<()> {
        let mut wait = Duration::from_millis(20);
        let mut attempt = 1;
        loop {
            match self.unlock(id).await {
                Err(Error::Store { .. }) if attempt < 10 => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Removes the lock with this ID whoever took it, for operators clearing a stale lock
    /// (Terraform's `force-unlock`). The ID must match the lock that is there.
    pub async fn force_unlock(&self, id: &str) -> Result<()> {
        let object = self.unlock_by_reading(id).await;
        match &self.secondary {
            None => object,
            Some(secondary) => both_released(object, secondary.force_unlock(id).await),
        }
    }

    /// Reads the lock, checks its ID, and deletes exactly the object read.
    async fn unlock_by_reading(&self, id: &str) -> Result<()> {
        // A conditional delete refused after a read that matched means the lock was replaced
        // in between; re-read a few times, then give up rather than spin.
        const ATTEMPTS: usize = 3;
        // Set when an unconditional delete of our lock failed without an answer: it may have
        // gone through, so finding the lock gone (or someone else's) means ours was deleted.
        let mut maybe_deleted = false;
        for _ in 0..ATTEMPTS {
            let our_nonce = self.held().get(id).map(|held| held.nonce.clone());
            let ours_was_here = maybe_deleted || our_nonce.is_some();
            let Some((info, object)) = self.read_object().await? else {
                // Our lock already gone: a retried unlock whose first response was lost.
                if ours_was_here {
                    self.forget(id);
                    return Ok(());
                }
                return Err(Error::NotLocked {
                    location: self.location().to_owned(),
                    id: id.to_owned(),
                });
            };
            let etag = object.etag;
            let held_id = info.map(|info| info.id).unwrap_or_default();
            // Our ID with another nonce: someone who reused our lock info took the lock after
            // ours was removed. It is theirs, not ours to delete.
            let reused_id =
                our_nonce.is_some_and(|nonce| object.metadata.get(LOCK_NONCE_KEY) != Some(&nonce));
            if held_id != id || reused_id {
                if ours_was_here {
                    // Locks are created only where none exists, so another lock where ours
                    // was means ours is gone: theirs stays, and ours no longer counts as held.
                    let our_delete_may_have_landed =
                        maybe_deleted || self.deletes_in_doubt().contains(id);
                    self.forget(id);
                    if our_delete_may_have_landed {
                        return Ok(());
                    }
                    // Someone removed our lock (a force-unlock) while we held it: say so.
                }
                return Err(Error::LockIdMismatch {
                    location: self.location().to_owned(),
                    given: id.to_owned(),
                    held: held_id,
                });
            }
            // Prefer deleting only the object we just read; without conditional deletes there
            // is a short window between the read and the delete, as in Terraform.
            let deleted = self.lock_object.delete(Some(&etag)).await;
            if deleted.is_err() {
                self.deletes_in_doubt().insert(id.to_owned());
            }
            match deleted? {
                DeleteOutcome::ConditionalUnsupported => {
                    if let Err(err) = self.lock_object.delete(None).await {
                        tracing::debug!(error = %err, "unconditional lock delete got no answer; re-reading");
                        maybe_deleted = true;
                        continue;
                    }
                }
                DeleteOutcome::PreconditionFailed => continue,
                DeleteOutcome::Deleted | DeleteOutcome::Absent => {}
            }
            self.forget(id);
            return Ok(());
        }
        Err(Error::Store {
            operation: "DeleteObject",
            location: self.location().to_owned(),
            message: format!(
                "could not release the lock with ID {id} in {ATTEMPTS} attempts (it kept changing, \
                 or the store kept failing); it may still be in place: check with lock-info"
            ),
            source: None,
        })
    }
}

#[async_trait]
impl<S: Store> Locker for StoreLocker<S> {
    async fn lock(&self, info: &LockInfo) -> Result<String> {
        self.lock_with_metadata(info, &ObjectMetadata::new()).await
    }

    async fn unlock(&self, id: &str) -> Result<()> {
        let object = self.unlock_held(id).await;
        match &self.secondary {
            None => object,
            Some(secondary) => both_released(object, secondary.unlock(id).await),
        }
    }
}

/// Two second locks, taken in order (the second released again when it cannot be taken) and
/// released in the reverse order.
#[derive(Debug)]
struct BothSecondaries {
    first: Arc<dyn SecondaryLock>,
    then: Arc<dyn SecondaryLock>,
}

#[async_trait]
impl SecondaryLock for BothSecondaries {
    fn location(&self) -> String {
        format!("{} and {}", self.first.location(), self.then.location())
    }

    async fn lock(&self, info: &LockInfo) -> Result<()> {
        self.first.lock(info).await?;
        if let Err(error) = self.then.lock(info).await {
            if let Err(release) = self.first.unlock(&info.id).await {
                tracing::warn!(%release, id = %info.id, location = %self.first.location(),
                    "could not release a lock after its companion was refused");
            }
            return Err(error);
        }
        Ok(())
    }

    async fn unlock(&self, id: &str) -> Result<()> {
        let then = self.then.unlock(id).await;
        both_released(then, self.first.unlock(id).await)
    }

    async fn force_unlock(&self, id: &str) -> Result<()> {
        let then = self.then.force_unlock(id).await;
        both_released(then, self.first.force_unlock(id).await)
    }

    async fn current(&self) -> Result<Option<LockInfo>> {
        match self.first.current().await? {
            Some(holder) => Ok(Some(holder)),
            None => self.then.current().await,
        }
    }
}

/// The outcome of releasing both locks: released when each was released or was not there
/// (a retried unlock whose first attempt released one of them), else the first failure.
fn both_released(object: Result<()>, secondary: Result<()>) -> Result<()> {
    match (object, secondary) {
        (Ok(()), Ok(()) | Err(Error::NotLocked { .. }))
        | (Err(Error::NotLocked { .. }), Ok(())) => Ok(()),
        (Err(err), _) | (Ok(()), Err(err)) => Err(err),
    }
}

impl<S: Store> StoreLocker<S> {
    /// Like [`Locker::lock`], but stores `extra` as user metadata of the lock object, beside
    /// s3state's own nonce. Terraform reads only the lock's body, so the metadata does not
    /// disturb it; the HTTP gateway keeps there what a later request, perhaps to another
    /// replica, needs to know about the lock (the state's ETag when it was taken).
    pub async fn lock_with_metadata(
        &self,
        info: &LockInfo,
        extra: &ObjectMetadata,
    ) -> Result<String> {
        let nonce = uuid::Uuid::new_v4().to_string();
        self.acquire_both(
            &taken_now(info),
            extra,
            &nonce,
            LockHolder::Caller,
            &mut None,
        )
        .await
    }

    /// Takes the lock object, then the secondary lock with the same info; when the second
    /// cannot be taken, the object is released again (no orphan) and its error returned.
    async fn acquire_both(
        &self,
        info: &LockInfo,
        extra: &ObjectMetadata,
        nonce: &str,
        holder: LockHolder,
        refused_by: &mut Option<ETag>,
    ) -> Result<String> {
        // Armed until this acquisition returns: if its future is dropped while a request is
        // on the wire (a caller's timeout, Ctrl-C), the request may have been applied with
        // its answer not back yet, and nobody would hold that lock. It is then released in
        // the background.
        let mut abandoned = AbandonedAcquisition {
            lock_object: self.lock_object.sibling(""),
            secondary: None,
            id: info.id.clone(),
            nonce: nonce.to_owned(),
            armed: true,
        };
        let acquired = self
            .acquire_both_armed(info, extra, nonce, holder, refused_by, &mut abandoned)
            .await;
        abandoned.armed = false;
        acquired
    }

    async fn acquire_both_armed(
        &self,
        info: &LockInfo,
        extra: &ObjectMetadata,
        nonce: &str,
        holder: LockHolder,
        refused_by: &mut Option<ETag>,
        abandoned: &mut AbandonedAcquisition<S>,
    ) -> Result<String> {
        let id = self.acquire(info, extra, nonce, holder, refused_by).await?;
        let Some(secondary) = &self.secondary else {
            return Ok(id);
        };
        let mut taken = info.clone();
        taken.path = self.state_path.clone();
        // From here a dropped acquisition also leaves the secondary lock to release.
        abandoned.secondary = Some(Arc::clone(secondary));
        let Err(error) = secondary.lock(&taken).await else {
            return Ok(id);
        };
        let mut attempt = 1;
        while let Err(release) = self.unlock_held(&id).await {
            if attempt == 5 {
                self.forget(&id);
                tracing::warn!(location = %self.location(), %id, error = %release,
                    "could not release the lock object after the second lock failed; clear it with force-unlock");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            attempt += 1;
        }
        Err(error)
    }

    /// One attempt at the lock, recognising as ours only an object with our body and `nonce`.
    /// When another holder's lock object refuses us, `refused_by` is set to its ETag.
    async fn acquire(
        &self,
        info: &LockInfo,
        extra: &ObjectMetadata,
        nonce: &str,
        holder: LockHolder,
        refused_by: &mut Option<ETag>,
    ) -> Result<String> {
        let mut info = info.clone();
        info.path = self.state_path.clone();
        if info.id.trim().is_empty() {
            return Err(Error::InvalidLockInfo {
                location: self.location().to_owned(),
                message: "the lock ID is empty; use LockInfo::new, which makes a fresh UUID".into(),
            });
        }
        if self.held().contains_key(&info.id) {
            // Another call through this locker holds a lock with this ID: sharing one
            // LockInfo does not make two callers one holder.
            return Err(self.locked(Some(info), None));
        }
        let body = Bytes::from(crate::state::to_go_json(&info));
        let mut metadata = extra.clone();
        metadata.insert(LOCK_NONCE_KEY.to_owned(), nonce.to_owned());
        let hold = |etag: ETag| {
            self.held().insert(
                info.id.clone(),
                HeldLock {
                    etag,
                    nonce: nonce.to_owned(),
                    holder,
                    info: info.clone(),
                },
            );
        };
        // The lock is ours only if it is exactly the object this call wrote: the same body
        // and this call's nonce. Another holder that reuses our ID is still another holder.
        let is_ours = |object: &crate::store::StoredObject| {
            object.body == body
                && object.metadata.get(LOCK_NONCE_KEY).map(String::as_str) == Some(nonce)
        };
        // A lock released between our refused attempt and our read is tried again, a few
        // times at most, so a lock that keeps flapping cannot keep us here.
        for _ in 0..3 {
            let put = self
                .lock_object
                .put(body.clone(), &Precondition::Create, &metadata)
                .await;
            match put {
                Ok(PutOutcome::Written(written)) => {
                    hold(written.etag);
                    return Ok(info.id);
                }
                Ok(PutOutcome::PreconditionFailed) => match self.read_back().await {
                    // Our own earlier attempt created it and only the response was lost (the
                    // OpenTofu #4405 case): the lock is ours.
                    Ok(Some((_, object))) if is_ours(&object) => {
                        hold(object.etag);
                        return Ok(info.id);
                    }
                    Ok(Some((holder, object))) => {
                        *refused_by = Some(object.etag);
                        return Err(self.locked(holder, None));
                    }
                    Ok(None) => continue,
                    // The refusal may have met our own retried request: it may be ours.
                    Err(error) => {
                        return Err(Error::LockOutcomeUnknown {
                            location: self.location().to_owned(),
                            id: info.id,
                            source: Box::new(error),
                        });
                    }
                },
                // The store refused the condition itself: it applied nothing, and no lock can
                // be taken there.
                Err(error @ Error::ConditionalWritesUnsupported { .. }) => return Err(error),
                Err(error) => {
                    // No answer: the lock may have been created. Look, so that it is neither
                    // left orphaned nor believed taken when it is not.
                    if let Ok(Some((_, object))) = self.read_back().await
                        && is_ours(&object)
                    {
                        hold(object.etag);
                        return Ok(info.id);
                    }
                    // Not there (or unreadable): a request still in flight may create it yet.
                    return Err(Error::LockOutcomeUnknown {
                        location: self.location().to_owned(),
                        id: info.id,
                        source: Box::new(error),
                    });
                }
            }
        }
        // Taken and released by others three times while we tried: to the caller that is a
        // lock held by others (holder unknown, it changed each time), so a caller that waits
        // (`lock_with_timeout`, `update`) waits on, and Terraform retries under
        // `-lock-timeout`. It was a store error, which ended such waits at once; 8 lockers
        // contending on SeaweedFS met it.
        Err(self.locked(None, None))
    }

    async fn unlock_held(&self, id: &str) -> Result<()> {
        let etag = self.held().get(id).map(|held| held.etag.clone());
        if let Some(etag) = etag {
            let deleted = self.lock_object.delete(Some(&etag)).await;
            if deleted.is_err() {
                self.deletes_in_doubt().insert(id.to_owned());
            }
            match deleted? {
                DeleteOutcome::Deleted | DeleteOutcome::Absent => {
                    self.forget(id);
                    return Ok(());
                }
                DeleteOutcome::PreconditionFailed | DeleteOutcome::ConditionalUnsupported => {}
            }
        }
        self.unlock_by_reading(id).await
    }
}

/// A lock acquisition whose future may be dropped while a request is on the wire: its drop,
/// while armed, releases in the background whatever of the lock the request may have taken.
struct AbandonedAcquisition<S: Store> {
    /// The lock object (a handle of its own, for the background task).
    lock_object: S,
    /// The secondary lock, once the acquisition got as far as taking it.
    secondary: Option<Arc<dyn SecondaryLock>>,
    id: String,
    /// The acquisition's nonce: only an object carrying it is ours to delete.
    nonce: String,
    armed: bool,
}

impl<S: Store> Drop for AbandonedAcquisition<S> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let object = self.lock_object.sibling("");
        let secondary = self.secondary.take();
        let (id, nonce) = (self.id.clone(), self.nonce.clone());
        tracing::warn!(%id, "a lock acquisition was dropped mid-request; releasing what it may have taken");
        runtime.spawn(async move {
            if let Some(secondary) = secondary
                && let Err(error) = secondary.unlock(&id).await
                && !matches!(error, Error::NotLocked { .. })
            {
                tracing::warn!(%id, %error, "could not release an abandoned lock; clear it with force-unlock");
            }
            // Delete only the very object this acquisition wrote (its nonce), never another's.
            for _ in 0..5 {
                let found = match object.get(None).await {
                    Ok(Fetched::Found(found)) => found,
                    Ok(_) => return,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if found.metadata.get(LOCK_NONCE_KEY) != Some(&nonce) {
                    return;
                }
                match object.delete(Some(&found.etag)).await {
                    Ok(DeleteOutcome::ConditionalUnsupported) => {
                        let _ = object.delete(None).await;
                        return;
                    }
                    Ok(_) => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            tracing::warn!(%id, "could not release an abandoned lock; clear it with force-unlock");
        });
    }
}

/// A state manager with locking switched off: `lock` succeeds at once without touching the
/// store and `unlock` does nothing. For users who opt out (Terraform's `-lock=false`).
#[derive(Debug)]
pub struct LockDisabled<T>(pub T);

#[async_trait]
impl<T: Send + Sync> Locker for LockDisabled<T> {
    async fn lock(&self, info: &LockInfo) -> Result<String> {
        Ok(info.id.clone())
    }

    async fn unlock(&self, _id: &str) -> Result<()> {
        Ok(())
    }
}

impl<T: Transient> Transient for LockDisabled<T> {
    fn state(&self) -> Option<State> {
        self.0.state()
    }

    fn write_state(&self, state: State) {
        self.0.write_state(state)
    }
}

#[async_trait]
impl<T: Refresher> Refresher for LockDisabled<T> {
    async fn refresh_state(&self) -> Result<()> {
        self.0.refresh_state().await
    }
}

#[async_trait]
impl<T: Persister> Persister for LockDisabled<T> {
    async fn persist_state(&self) -> Result<()> {
        self.0.persist_state().await
    }
}

#[async_trait]
impl<T: OutputReader> OutputReader for LockDisabled<T> {
    async fn root_output_values(&self) -> Result<BTreeMap<String, OutputValue>> {
        self.0.root_output_values().await
    }
}

impl<T: PersistentMeta> PersistentMeta for LockDisabled<T> {
    fn state_snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.0.state_snapshot_meta()
    }
}
