//! Terraform's serial and lineage rules over any [`Store`], plus the compare-and-swap
//! [`RemoteState::update`] loop.

use crate::error::{Error, Result};
use crate::lock::{LockRetry, StoreLocker};
use crate::state::{COMPATIBLE_TERRAFORM_VERSION, OutputValue, State};
use crate::statemgr::{
    OutputReader, PersistentMeta, Persister, Refresher, SnapshotMeta, Transient,
};
use crate::store::{
    ETag, Fetched, ObjectMetadata, Precondition, PutOutcome, Store, StoredObject, Written,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// User-metadata keys written beside every snapshot, so that history listings can show a
/// version's identity without downloading it.
pub mod metadata_keys {
    /// The snapshot's serial, in decimal.
    pub const SERIAL: &str = "s3state-serial";
    /// The snapshot's lineage.
    pub const LINEAGE: &str = "s3state-lineage";
    /// The snapshot's `terraform_version`.
    pub const TERRAFORM_VERSION: &str = "s3state-terraform-version";
    /// A random id unique to one persist, which tells our own write apart from another
    /// writer's write of identical bytes.
    pub const WRITE_ID: &str = "s3state-write-id";
    /// The write id of the snapshot this one was written on top of, which shows that a write
    /// whose answer was lost did land: another writer has already built on it.
    pub const PARENT_WRITE_ID: &str = "s3state-parent-write-id";
}

/// A Terraform state manager over one object in a [`Store`].
///
/// It implements the whole [`crate::statemgr`] contract and adds [`RemoteState::update`],
/// the refresh–change–persist loop most tools want. Share it between tasks with an `Arc`.
///
/// ```no_run
/// # async fn demo() -> s3state::Result<()> {
/// use s3state::{OutputValue, S3Builder};
/// let manager = S3Builder::from_env().with_bucket("tfstate").with_key("app/terraform.tfstate")
///     .build().await?;
/// let runs = manager
///     .update(|state| {
///         let runs = state.outputs.get("runs").and_then(|o| o.to_value().as_u64()).unwrap_or(0) + 1;
///         state.outputs.insert("runs".into(), OutputValue::new(&runs));
///         runs
///     })
///     .await?;
/// println!("run number {runs}");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RemoteState<S> {
    store: S,
    locker: StoreLocker<S>,
    options: RemoteStateOptions,
    snapshots: Mutex<Snapshots>,
    /// Serialises refresh and persist so the base snapshot and its tag always change together.
    io: tokio::sync::Mutex<()>,
}

/// Tunables of a [`RemoteState`].
#[derive(Debug, Clone)]
pub struct RemoteStateOptions {
    /// How many refresh–change–persist rounds [`RemoteState::update`] tries before giving up
    /// with [`Error::UpdateContention`]. Default 32.
    pub max_update_attempts: u32,
    /// The first back-off after a lost round; it doubles, with full jitter, up to
    /// `max_update_backoff`. Default 10 ms.
    pub initial_update_backoff: Duration,
    /// The back-off cap. Default 1 s.
    pub max_update_backoff: Duration,
    /// The `terraform_version` stamped on a state that `update` creates from nothing.
    /// Default [`COMPATIBLE_TERRAFORM_VERSION`].
    pub new_state_terraform_version: semver::Version,
    /// How `lock_with_timeout` waits for a held lock. Default: Terraform's 1 s doubling to 16 s.
    pub lock_retry: LockRetry,
}

impl Default for RemoteStateOptions {
    fn default() -> Self {
        RemoteStateOptions {
            max_update_attempts: 32,
            initial_update_backoff: Duration::from_millis(10),
            max_update_backoff: Duration::from_secs(1),
            new_state_terraform_version: COMPATIBLE_TERRAFORM_VERSION,
            lock_retry: LockRetry::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Snapshots {
    transient: Option<State>,
    base: Base,
    /// False until the first read or write: an unknown base differs from an absent object.
    base_known: bool,
}

/// What this manager last read from, or wrote to, the store: the snapshot its next write is
/// conditional on.
#[derive(Debug, Default, Clone)]
struct Base {
    /// `None` when the object did not exist: the next write must create it.
    etag: Option<ETag>,
    /// `None` when there was no object, or an empty one. Shared, because a persist reads it
    /// while the lock on the snapshots is released, and states can be tens of megabytes.
    state: Option<Arc<State>>,
    /// The store's version id of that object, when it keeps versions.
    version_id: Option<String>,
    /// Its size in bytes.
    size: u64,
    /// The write id s3state stored with it, if any.
    write_id: Option<String>,
}

/// Where the persisted snapshot a manager last read or wrote lives in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedObject {
    /// The object's tag.
    pub etag: ETag,
    /// The store's version id, when it keeps versions.
    pub version_id: Option<String>,
    /// The body's size in bytes.
    pub size: u64,
}

impl Base {
    fn precondition(&self) -> Precondition {
        match &self.etag {
            Some(etag) => Precondition::Match(etag.clone()),
            None => Precondition::Create,
        }
    }
}

enum PersistError {
    /// Another writer won; `current` is what the store holds now.
    Lost {
        current: Box<Base>,
        error: Error,
    },
    Other(Error),
}

impl From<Error> for PersistError {
    fn from(error: Error) -> Self {
        PersistError::Other(error)
    }
}

impl<S: Store> RemoteState<S> {
    /// A manager over `store` with default options. It does no I/O until asked.
    pub fn new(store: S) -> Self {
        Self::with_options(store, RemoteStateOptions::default())
    }

    /// A manager over `store` with the given options.
    pub fn with_options(store: S, options: RemoteStateOptions) -> Self {
        RemoteState {
            locker: StoreLocker::for_state(&store).with_retry(options.lock_retry),
            store,
            options,
            snapshots: Mutex::new(Snapshots::default()),
            io: tokio::sync::Mutex::new(()),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The state's Terraform-compatible lock (`<key>.tflock`). [`crate::Locker`] on the
    /// manager delegates to it; it also offers `lock_with_timeout`, `force_unlock` and
    /// `current`.
    pub fn locker(&self) -> &StoreLocker<S> {
        &self.locker
    }

    /// Refreshes, applies `change` to the state (an empty one if none exists), and persists,
    /// retrying from a fresh read whenever another writer wins the race. Returns what
    /// `change` returned in the round that was persisted.
    ///
    /// `change` may run several times, each time on the then-latest state, so it must derive
    /// its result from the state it is given. A round in which `change` leaves the state as it
    /// was persists nothing.
    pub async fn update<F, T>(&self, mut change: F) -> Result<T>
    where
        F: FnMut(&mut State) -> T + Send,
        T: Send,
    {
        let _io = self.io.lock().await;
        let mut backoff = self.options.initial_update_backoff;
        for attempt in 1..=self.options.max_update_attempts {
            self.refresh_locked().await?;
            let mut state = self
                .state()
                .unwrap_or_else(|| State::new(self.options.new_state_terraform_version.clone()));
            let result = change(&mut state);
            self.write_state(state);
            match self.persist_locked(false).await {
                Ok(()) => return Ok(result),
                Err(PersistError::Lost { current, error }) => {
                    tracing::debug!(attempt, %error, "update lost a race; retrying");
                    // What the store holds now becomes our base, so the next refresh is a
                    // cheap conditional read.
                    self.remember_base(*current);
                }
                Err(PersistError::Other(error)) => return Err(error),
            }
            if attempt < self.options.max_update_attempts {
                let jittered = backoff.mul_f64(fastrand::f64());
                tokio::time::sleep(jittered).await;
                backoff = (backoff * 2).min(self.options.max_update_backoff);
            }
        }
        Err(Error::UpdateContention {
            location: self.store.location().to_owned(),
            attempts: self.options.max_update_attempts,
        })
    }

    /// Like [`Persister::persist_state`], but a snapshot of another lineage, or with an older
    /// serial than the persisted one, is written anyway, numbered after the persisted serial
    /// (Terraform's `state push -force`). The write is still conditional on the snapshot this
    /// manager last read, so a concurrent change is a [`Error::Conflict`], and the replaced
    /// snapshot stays in the store's history as an older version.
    pub async fn persist_state_forced(&self) -> Result<()> {
        let _io = self.io.lock().await;
        self.persist_and_remember(true).await
    }

    pub(crate) async fn persist_and_remember(&self, force: bool) -> Result<()> {
        match self.persist_locked(force).await {
            Ok(()) => Ok(()),
            Err(PersistError::Lost { current, error }) => {
                // Remember what won, so the caller's next refresh is a cheap conditional read
                // and a blind retry of this persist is refused as a serial regression.
                self.remember_base(*current);
                Err(error)
            }
            Err(PersistError::Other(error)) => Err(error),
        }
    }

    /// The I/O lock, for operations in other modules that refresh and persist as one step.
    pub(crate) async fn lock_io(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.io.lock().await
    }

    /// Refreshes unless this manager has already read or written a snapshot, so that a
    /// following write is conditional on what the caller last saw.
    pub(crate) async fn refresh_if_unread(&self) -> Result<()> {
        if self.lock_snapshots().base_known {
            return Ok(());
        }
        self.refresh_locked().await
    }

    /// The store object behind the snapshot this manager last read or wrote; `None` when
    /// there was none.
    pub fn persisted_object(&self) -> Option<PersistedObject> {
        let snapshots = self.lock_snapshots();
        let base = &snapshots.base;
        base.etag.clone().map(|etag| PersistedObject {
            etag,
            version_id: base.version_id.clone(),
            size: base.size,
        })
    }

    pub(crate) fn persisted_state(&self) -> Option<State> {
        self.lock_snapshots().base.state.as_deref().cloned()
    }

    pub(crate) fn decode_snapshot(&self, body: &[u8], what: &str) -> Result<State> {
        State::from_slice(body).map_err(|source| Error::Decode {
            location: format!("{} ({what})", self.store.location()),
            source,
        })
    }

    fn remember_base(&self, base: Base) {
        let mut snapshots = self.lock_snapshots();
        snapshots.base = base;
        snapshots.base_known = true;
    }

    fn lock_snapshots(&self) -> std::sync::MutexGuard<'_, Snapshots> {
        // A panic while holding this lock cannot leave the snapshots half-updated (each update
        // is a single assignment), so a poisoned lock is still consistent.
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn refresh_locked(&self) -> Result<()> {
        let known = self.lock_snapshots().base.etag.clone();
        let base = match self.store.get(known.as_ref()).await? {
            Fetched::NotModified => {
                let mut snapshots = self.lock_snapshots();
                snapshots.transient = snapshots.base.state.as_deref().cloned();
                return Ok(());
            }
            Fetched::Absent => Base::default(),
            Fetched::Found(object) => self.decode(object)?,
        };
        let mut snapshots = self.lock_snapshots();
        snapshots.transient = base.state.as_deref().cloned();
        snapshots.base = base;
        snapshots.base_known = true;
        Ok(())
    }

    fn decode(&self, object: StoredObject) -> Result<Base> {
        let state = match State::from_slice(&object.body) {
            Ok(state) => Some(state),
            Err(crate::state::DecodeError::Empty) => None,
            Err(source) => {
                return Err(Error::Decode {
                    location: self.store.location().to_owned(),
                    source,
                });
            }
        };
        Ok(Base {
            etag: Some(object.etag),
            state: state.map(Arc::new),
            version_id: object.version_id,
            size: object.body.len() as u64,
            write_id: object.metadata.get(metadata_keys::WRITE_ID).cloned(),
        })
    }

    async fn persist_locked(&self, force: bool) -> Result<(), PersistError> {
        let (transient, base) = {
            let snapshots = self.lock_snapshots();
            match &snapshots.transient {
                Some(state) => (state.clone(), snapshots.base.clone()),
                None => return Ok(()),
            }
        };
        let Some(next) = self.next_snapshot(transient, base.state.as_deref(), force)? else {
            return Ok(());
        };

        let body = Bytes::from(next.to_bytes());
        let write_id = uuid::Uuid::new_v4().to_string();
        let mut metadata = snapshot_metadata(&next);
        metadata.insert(metadata_keys::WRITE_ID.to_owned(), write_id.clone());
        if let Some(parent) = &base.write_id {
            metadata.insert(metadata_keys::PARENT_WRITE_ID.to_owned(), parent.clone());
        }
        let written = match self
            .store
            .put(body.clone(), &base.precondition(), &metadata)
            .await?
        {
            PutOutcome::Written(written) => written,
            PutOutcome::PreconditionFailed => {
                match self.resolve_precondition_failure(&body, &write_id).await? {
                    Resolution::Ours(written) => written,
                    Resolution::Superseded(current) => {
                        // Our write landed; the state has moved on since, on top of it.
                        let mut snapshots = self.lock_snapshots();
                        snapshots.transient = current.state.as_deref().cloned();
                        snapshots.base = current;
                        snapshots.base_known = true;
                        return Ok(());
                    }
                }
            }
        };
        let mut snapshots = self.lock_snapshots();
        snapshots.transient = Some(next.clone());
        snapshots.base = Base {
            etag: Some(written.etag),
            state: Some(Arc::new(next)),
            version_id: written.version_id,
            size: body.len() as u64,
            write_id: Some(write_id),
        };
        snapshots.base_known = true;
        Ok(())
    }

    /// Applies the serial and lineage rules: `None` when there is nothing to write. With
    /// `force`, a snapshot of another lineage or an older serial is accepted and numbered after
    /// the persisted one.
    fn next_snapshot(
        &self,
        mut next: State,
        base: Option<&State>,
        force: bool,
    ) -> Result<Option<State>> {
        let location = || self.store.location().to_owned();
        let Some(base) = base else {
            // Nothing is persisted: a brand-new state starts at serial 1 with a fresh lineage,
            // and a state brought from elsewhere (a push, a restore) keeps its identity, so it
            // is stored byte for byte.
            if next.lineage.is_empty() {
                next.lineage = uuid::Uuid::new_v4().to_string();
            }
            next.serial = next.serial.max(1);
            return Ok(Some(next));
        };
        if next.lineage.is_empty() {
            next.lineage = base.lineage.clone();
        }
        if force && (next.lineage != base.lineage || next.serial < base.serial) {
            next.serial = next.serial.max(base.serial) + 1;
            return Ok(Some(next));
        }
        if next.lineage != base.lineage {
            return Err(Error::LineageMismatch {
                location: location(),
                local: next.lineage,
                remote: base.lineage.clone(),
            });
        }
        if next.serial < base.serial {
            return Err(Error::SerialRegression {
                location: location(),
                local: next.serial,
                remote: base.serial,
            });
        }
        if next.same_content(base) {
            return Ok((next.serial != base.serial).then_some(next));
        }
        next.serial += 1;
        Ok(Some(next))
    }

    /// Our conditional write was refused. Either another writer got there first, or our own
    /// earlier attempt was applied and only its response was lost (the SDK then retried and
    /// met the object it had written). Reading the object tells them apart:
    /// - it is ours when it holds exactly the bytes we sent *and* this persist's write id.
    ///   Content alone is not enough: two writers that start from the same snapshot and make
    ///   the same change produce identical bytes, and the loser must still see a conflict, or
    ///   `update` would lose its change;
    /// - it was written on top of ours when its parent write id is ours: our write landed and
    ///   another writer already built on it, so reporting a conflict would make `update`
    ///   apply its change twice.
    ///
    /// Tags are not compared, because under SSE-KMS they are not content hashes.
    async fn resolve_precondition_failure(
        &self,
        sent: &Bytes,
        write_id: &str,
    ) -> Result<Resolution, PersistError> {
        let location = self.store.location().to_owned();
        let has = |metadata: &ObjectMetadata, key: &str| {
            metadata.get(key).map(String::as_str) == Some(write_id)
        };
        match self.store.get(None).await? {
            Fetched::Found(object)
                if object.body == *sent && has(&object.metadata, metadata_keys::WRITE_ID) =>
            {
                tracing::info!(%location, "a retried write met its own earlier success; treating it as written");
                Ok(Resolution::Ours(Written {
                    etag: object.etag,
                    version_id: object.version_id,
                }))
            }
            Fetched::Found(object) if has(&object.metadata, metadata_keys::PARENT_WRITE_ID) => {
                tracing::info!(%location, "a retried write had landed and was already built upon");
                Ok(Resolution::Superseded(self.decode(object)?))
            }
            Fetched::Found(object) => {
                let remote = State::from_slice(&object.body)
                    .ok()
                    .map(|s| SnapshotMeta::of(&s));
                let current = Box::new(self.decode(object).unwrap_or_default());
                Err(PersistError::Lost {
                    current,
                    error: Error::Conflict { location, remote },
                })
            }
            Fetched::Absent | Fetched::NotModified => Err(PersistError::Lost {
                current: Box::default(),
                error: Error::Conflict {
                    location,
                    remote: None,
                },
            }),
        }
    }
}

/// How a refused write turned out.
enum Resolution {
    /// The object there is the one we wrote.
    Ours(Written),
    /// Ours landed and another writer has written on top of it; this is what is there now.
    Superseded(Base),
}

fn snapshot_metadata(state: &State) -> ObjectMetadata {
    ObjectMetadata::from([
        (metadata_keys::SERIAL.to_owned(), state.serial.to_string()),
        (metadata_keys::LINEAGE.to_owned(), state.lineage.clone()),
        (
            metadata_keys::TERRAFORM_VERSION.to_owned(),
            state.terraform_version.to_string(),
        ),
    ])
}

impl<S: Store> Transient for RemoteState<S> {
    fn state(&self) -> Option<State> {
        self.lock_snapshots().transient.clone()
    }

    fn write_state(&self, state: State) {
        self.lock_snapshots().transient = Some(state);
    }
}

#[async_trait]
impl<S: Store> Refresher for RemoteState<S> {
    async fn refresh_state(&self) -> Result<()> {
        let _io = self.io.lock().await;
        self.refresh_locked().await
    }
}

#[async_trait]
impl<S: Store> Persister for RemoteState<S> {
    async fn persist_state(&self) -> Result<()> {
        let _io = self.io.lock().await;
        self.persist_and_remember(false).await
    }
}

#[async_trait]
impl<S: Store> OutputReader for RemoteState<S> {
    async fn root_output_values(&self) -> Result<BTreeMap<String, OutputValue>> {
        let _io = self.io.lock().await;
        self.refresh_locked().await?;
        Ok(self
            .lock_snapshots()
            .base
            .state
            .as_ref()
            .map(|state| state.outputs.clone())
            .unwrap_or_default())
    }
}

impl<S: Store> PersistentMeta for RemoteState<S> {
    fn state_snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.lock_snapshots()
            .base
            .state
            .as_deref()
            .map(SnapshotMeta::of)
    }
}
