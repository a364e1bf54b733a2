//! Terraform's serial and lineage rules over any [`Store`], plus the locked
//! compare-and-swap [`RemoteState::update`] loop.
//!
//! Every write of every front end (the library's persist, update, push and restore, the CLI's
//! commands, the gateway's requests) goes through three things here, each in one place:
//!
//! - **the verdict** (`verdict`): Terraform's rules on a candidate snapshot against the stored
//!   one: write (numbered how), unchanged, or refused with a typed reason;
//! - **the write primitive** (`RemoteState::write_snapshot`): the conditional PUT, the write
//!   ids and metadata (`metadata`), the lookup of a write whose answer was lost, and the
//!   marking of a write in doubt;
//! - **the coordinator** (`coordinator`): turns, the release gate and the writes in doubt of
//!   one object, with its lock order and its words.
//!
//! Around them: `push` (Terraform's `state push`, judged from a HEAD when it can be), and
//! `bound_lock` (locks a client holds across requests, for front ends that keep nothing
//! between them). History, diff and restore are in [`crate::history`], on top of these.

use crate::encryption::{self, DecryptionStatus, EncryptionError, EnvelopeIds, StateEncryption};
use crate::error::{Error, Result};
use crate::lock::{LockHolder, LockRetry, LockWait, StoreLocker};
use crate::state::{COMPATIBLE_TERRAFORM_VERSION, OutputValue, State};
use crate::statemgr::{
    LockInfo, Locker, OutputReader, PersistentMeta, Persister, Refresher, SnapshotMeta, Transient,
};
use crate::store::{ETag, Fetched, ObjectMetadata, Precondition, PutOutcome, Store, StoredObject};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod bound_lock;
mod bound_turns;
mod coordinator;
pub(crate) mod metadata;
mod push;
pub(crate) mod verdict;

pub use bound_lock::{BoundLockTaken, BoundUnlock, BoundWrite, SentState};
pub use coordinator::queue::LockQueue;
use coordinator::queue::{QUEUE_SUFFIX, Waiters};
use coordinator::release_gate::{OnTheWire, ReleaseGate};
use coordinator::turns::Turnstile;
pub use metadata::keys as metadata_keys;
pub use push::Pushed;
pub(crate) use verdict::serial_after;
use verdict::{Rules, Verdict};

/// A Terraform state manager over one object in a [`Store`].
///
/// It implements the whole [`crate::statemgr`] contract and adds [`RemoteState::update`],
/// the locked refresh–change–persist loop most tools want. Share it between tasks with an
/// `Arc`: a [`Transient::write_state`] made while another task persists is never dropped.
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
    /// Serialises store I/O (refresh, persist, update) so the base snapshot and its tag always
    /// change together. `write_state` does not wait for it; see [`Pending`].
    io: tokio::sync::Mutex<()>,
    /// Where updates queue before they take the store's lock: shared with every manager over
    /// the same object in this process (see [`Store::identity`]).
    turnstile: Arc<Turnstile>,
    /// The queue across processes beside the lock (`<key>.tflock.queue`), and what this
    /// process knows of it.
    queue_object: S,
    waiters: Arc<Waiters>,
    /// What a caller's unlock waits for: updates running under the caller's lock, through any
    /// manager over this object in this process.
    release_gate: Arc<ReleaseGate>,
}

/// Releases a write's lock in the background if the write never got to release it, after
/// what is left of the settle time of a write that got no answer.
pub(crate) struct ReleaseOnDrop<'a, S: Store> {
    manager: &'a RemoteState<S>,
    id: Option<String>,
}

impl<S: Store> Drop for ReleaseOnDrop<'_, S> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            // In the background: after writes that rely on the lock are done, and after any
            // that got no answer can no longer land.
            let gate = Arc::clone(&self.manager.release_gate);
            self.manager
                .locker
                .release_in_background(&id, Box::pin(async move { gate.until_releasable().await }));
        }
    }
}

/// How a write holds the state's lock ([`RemoteState::take_write_lock`]).
pub(crate) enum WriteLock<'a, S: Store> {
    /// Locking is disabled: compare-and-swap only, in this process's line for such writes.
    Unlocked {
        _turn: tokio::sync::MutexGuard<'a, ()>,
    },
    /// Under the lock the caller holds through this manager; its unlock waits for us.
    Callers {
        _gate: tokio::sync::RwLockReadGuard<'a, ()>,
    },
    /// A lock of our own, released by [`RemoteState::release_write_lock`] (or in the
    /// background if the write is dropped).
    // Fields drop in this order: a dropped write's lock is on its way out before the next
    // write in this process gets its turn.
    Own {
        guard: ReleaseOnDrop<'a, S>,
        id: String,
        _turn: tokio::sync::MutexGuard<'a, ()>,
    },
}

/// Whether [`RemoteState::update`] takes the state's lock.
///
/// A conditional write protects only against writers that also write conditionally.
/// Terraform writes its state with plain PUTs while it holds the lock, so a change made under
/// Terraform's lock, however carefully, is overwritten at Terraform's next persist (or, for a
/// state that did not exist, makes Terraform drop its own results). Only honouring the lock
/// protects against Terraform; that is why it is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateLocking {
    /// Take the `.tflock` lock for each update (unless this manager already holds a lock, in
    /// which case the update runs under it), waiting for a held lock up to `timeout` with
    /// short jittered waits, then failing with [`Error::Locked`].
    Lock {
        /// How long to wait for a lock someone else holds.
        timeout: Duration,
    },
    /// Compare-and-swap only, for callers that lock themselves or that share the state only
    /// with other compare-and-swap writers. A Terraform that holds the lock can overwrite
    /// such an update.
    Disabled,
}

impl Default for UpdateLocking {
    fn default() -> Self {
        UpdateLocking::Lock {
            timeout: Duration::from_secs(60),
        }
    }
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
    /// Whether `update` takes the lock. Default: it does, waiting up to 60 s.
    pub update_locking: UpdateLocking,
    /// How `update` waits for a lock held by another process when it does not wait in the
    /// lock queue (`lock_queue` off, or the queue unusable): short and jittered, so that many
    /// writers take turns quickly. A process that sees contention and finds nobody queued
    /// leaves a gap a little over its `max` (at most 120 ms) after releasing, so a waiter
    /// that does not read the queue (Terraform, older s3state) polling at that pace finds the
    /// lock free. Default 5 ms doubling to 100 ms.
    pub update_lock_retry: LockRetry,
    /// How long a lock is kept after a write of this manager's got no answer (and was not
    /// found in the store), before it is released: the request may still be on its way, and
    /// no client can recall it. Conditional, it can land only while the state is still what
    /// it was sent against; but if the state did not exist, a Terraform that locked and read
    /// "no state" meanwhile would adopt the late state at its first persist and drop its own
    /// apply. Every unlock through the manager, and `update`'s own release, waits out what
    /// is left of this. Default 10 s.
    pub unanswered_write_settle: Duration,
    /// Who this manager writes as: recorded as the author of every snapshot it writes
    /// (`history` shows it). When `None` (the default), the author is the `Who` of the lock
    /// held for the write (the caller's, or the one `update` takes, whose `Who` is
    /// `user@host`), and nothing is recorded for a write made without a lock.
    pub author: Option<String>,
    /// Fair turns across processes for updates that take the lock: a queue of waiting
    /// s3state writers beside the `.tflock` (in `<key>.tflock.queue`, which Terraform never
    /// reads), so that a writer that has just released does not take the lock straight back
    /// while others wait. Default: on, with a 10 s lease.
    pub lock_queue: LockQueue,
    /// OpenTofu state encryption: how stored states are decrypted when read and encrypted
    /// when written (see [`crate::encryption`]). The serial and lineage rules are applied to
    /// the plaintext, before encrypting, so an unchanged state still writes nothing. `None`
    /// (the default): states are written as plaintext, and an encrypted state is refused with
    /// [`crate::encryption::EncryptionError::NoKeyConfigured`].
    pub encryption: Option<Arc<StateEncryption>>,
    /// How long [`RemoteState::lock_bound`] waits, in this process's first-come-first-served
    /// line, for a bound lock taken through this process to be let go, before asking the
    /// store (which then answers [`Error::Locked`] if it is still held). Default zero: ask
    /// at once. The gateway sets it from `limits.lock_wait_secs`, so that clients waiting for
    /// one state take turns instead of polling the store.
    pub bound_lock_wait: Duration,
}

impl Default for RemoteStateOptions {
    fn default() -> Self {
        RemoteStateOptions {
            max_update_attempts: 32,
            initial_update_backoff: Duration::from_millis(10),
            max_update_backoff: Duration::from_secs(1),
            new_state_terraform_version: COMPATIBLE_TERRAFORM_VERSION,
            lock_retry: LockRetry::default(),
            update_locking: UpdateLocking::default(),
            update_lock_retry: LockRetry {
                initial: Duration::from_millis(5),
                max: Duration::from_millis(100),
            },
            unanswered_write_settle: Duration::from_secs(10),
            author: None,
            lock_queue: LockQueue::default(),
            encryption: None,
            bound_lock_wait: Duration::ZERO,
        }
    }
}

/// Whether the transient snapshot holds a `write_state` that is not persisted yet.
///
/// `write_state` is synchronous and does not wait for a persist in flight, so a persist
/// records the generation it took and, when it finishes, replaces the transient snapshot
/// only if no `write_state` came in meanwhile. A refresh replaces it only if nothing unsaved
/// is there: a write that no persist has tried yet is never discarded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Pending {
    /// The transient snapshot is what was last read or written.
    #[default]
    Clean,
    /// A `write_state` that no persist has tried yet.
    Unsaved,
    /// A `write_state` whose persist failed; the next refresh replaces it, as in Terraform.
    Failed,
}

#[derive(Debug, Default)]
struct Snapshots {
    transient: Option<State>,
    /// Bumped by every `write_state`.
    generation: u64,
    /// Every `write_state` up to this generation is persisted (or was replaced by a later
    /// one that is).
    persisted_generation: u64,
    /// A refresh threw away the unsaved `write_state`s up to this generation, after a persist
    /// of them failed.
    discarded_generation: u64,
    pending: Pending,
    /// The base the unsaved `write_state`s were made on, while there are any: their persist is
    /// conditional on it, not on a newer base a refresh brought in meanwhile, which they do
    /// not contain.
    made_on: Option<Base>,
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
    /// The write id of the snapshot it was written on top of, if s3state wrote it.
    parent_write_id: Option<String>,
    /// The object's user metadata, as read or written.
    metadata: ObjectMetadata,
    /// It was read with a fallback of the configured encryption (or read as plaintext
    /// through an `unencrypted` fallback): it is not stored as the primary method would
    /// store it ([`RemoteState::migrate_encryption`]).
    needs_migration: bool,
}

/// One snapshot to write ([`RemoteState::write_snapshot`]): the state, its bytes, and what is
/// recorded beside it.
struct Outgoing {
    state: State,
    body: Bytes,
    /// The body is the state's canonical bytes (`State::to_bytes`), so the metadata may say
    /// it describes the body exactly. False for bytes stored as a client sent them.
    canonical: bool,
    /// Metadata recorded beside the snapshot besides the library's own (the bound lock it was
    /// written under).
    extra: ObjectMetadata,
    /// Who writes it, when the entry point knows (the gateway's principal); else the write
    /// primitive asks the manager's options and the lock held (see [`RemoteState::write_snapshot`]).
    author: Option<String>,
    /// What writes it, when no lock held by this manager says: the entry point (`persist`,
    /// `push`), or the `Operation` of the client's bound lock a sent state is written under.
    operation: String,
}

impl Outgoing {
    /// A snapshot written as the library serialises it, by the entry point `operation`.
    fn canonical(state: State, body: Bytes, operation: &str) -> Self {
        Outgoing {
            state,
            body,
            canonical: true,
            extra: ObjectMetadata::new(),
            author: None,
            operation: operation.to_owned(),
        }
    }
}

/// What [`RemoteState::migrate_encryption`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncryptionMigration {
    /// There is no state.
    Absent,
    /// The state is stored as the primary method stores it: nothing to do.
    Current,
    /// The state was (or, in a dry run, would be) rewritten with the primary method, as
    /// this serial.
    Rewritten {
        /// The serial of the rewritten snapshot.
        serial: u64,
    },
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

/// How the write of one candidate snapshot ended, when it did not fail.
enum WriteOutcome {
    /// Nothing to write: the candidate has the persisted content and serial.
    Unchanged,
    /// A write of ours landed: `write_id` says which attempt. `now` is what the store holds
    /// now: that write, or (`superseded`) a later snapshot another writer built on it.
    Landed {
        write_id: String,
        now: Base,
        superseded: bool,
    },
}

enum PersistError {
    /// Nothing of ours landed. `current` is what the store holds now. `in_doubt` is set when
    /// the request failed without an answer: it was not among the versions when we looked,
    /// but a request still in flight may yet arrive (only onto an unchanged state).
    NotWritten {
        current: Box<Base>,
        error: Error,
        in_doubt: bool,
    },
    Other(Error),
}

impl From<Error> for PersistError {
    fn from(error: Error) -> Self {
        PersistError::Other(error)
    }
}

/// Whether any of a caller's write attempts is in the store.
enum Lookup {
    Landed {
        write_id: String,
        now: Base,
        superseded: bool,
    },
    NotLanded {
        current: Base,
    },
}

impl<S: Store> RemoteState<S> {
    /// A manager over `store` with default options. It does no I/O until asked.
    pub fn new(store: S) -> Self {
        Self::with_options(store, RemoteStateOptions::default())
    }

    /// A manager over `store` with the given options.
    pub fn with_options(store: S, options: RemoteStateOptions) -> Self {
        RemoteState {
            turnstile: Turnstile::for_object(store.identity()),
            queue_object: store.sibling(QUEUE_SUFFIX),
            waiters: Waiters::for_object(store.identity()),
            release_gate: ReleaseGate::for_object(store.identity()),
            locker: StoreLocker::for_state(&store).with_retry(options.lock_retry),
            store,
            options,
            snapshots: Mutex::new(Snapshots::default()),
            io: tokio::sync::Mutex::new(()),
        }
    }

    /// The same manager, whose lock also takes `secondary` after the `.tflock` object and
    /// releases it after. Every lock the manager takes, `update`'s included, takes both. A
    /// store that keeps such a lock brings it itself ([`Store::secondary_lock`]: an S3 state
    /// with `dynamodb_table` brings Terraform's DynamoDB lock item); this is for other stores.
    pub fn with_secondary_lock(
        mut self,
        secondary: std::sync::Arc<dyn crate::lock::SecondaryLock>,
    ) -> Self {
        self.locker = self.locker.with_secondary(secondary);
        self
    }

    /// The store underneath.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The options this manager was built with.
    pub fn options(&self) -> &RemoteStateOptions {
        &self.options
    }

    /// The state's Terraform-compatible lock (`<key>.tflock`). [`crate::Locker`] on the
    /// manager delegates to it; it also offers `lock_with_timeout`, `force_unlock` and
    /// `current`.
    ///
    /// Release a lock through the manager ([`crate::Locker::unlock`] on it), not through this
    /// locker: the manager's unlock first waits for its writes in flight, which may rely on
    /// that lock.
    pub fn locker(&self) -> &StoreLocker<S> {
        &self.locker
    }

    /// Refreshes, applies `change` to the state (an empty one if none exists), and persists,
    /// retrying from a fresh read whenever another writer wins the race. Returns what
    /// `change` returned in the round that was persisted.
    ///
    /// By default it holds the state's lock throughout (see [`UpdateLocking`] for why and
    /// how to opt out), so it never writes while Terraform applies.
    ///
    /// `change` may run several times, each time on the then-latest state, so it must derive
    /// its result from the state it is given. Its change is applied exactly once: when a
    /// write's answer is lost, the state's versions are searched for it before any retry. A
    /// round in which `change` leaves the state as it was persists nothing.
    ///
    /// The update works on the persisted state, not on the transient snapshot: a
    /// [`Transient::write_state`] another task made is neither used nor discarded.
    pub async fn update<F, T>(&self, change: F) -> Result<T>
    where
        F: FnMut(&mut State) -> T + Send,
        T: Send,
    {
        let (lock, io) = self.take_write_lock("s3state update").await?;
        let result = self.update_rounds(io, change).await;
        self.release_write_lock(lock).await;
        result
    }

    /// Takes the state's lock for a write, as [`UpdateLocking`] says, and the I/O lock: under
    /// the caller's lock when the caller holds one through this manager, else a lock of its
    /// own (after this process's earlier writes, first come first served), or none when
    /// locking is disabled. `operation` is the lock's `Info`. Give the lock back with
    /// [`RemoteState::release_write_lock`].
    pub(crate) async fn take_write_lock(
        &self,
        operation: &str,
    ) -> Result<(WriteLock<'_, S>, tokio::sync::MutexGuard<'_, ()>)> {
        let UpdateLocking::Lock { timeout } = self.options.update_locking else {
            let turn = self.turnstile.unlocked_turn().await;
            return Ok((WriteLock::Unlocked { _turn: turn }, self.io.lock().await));
        };
        if let Some((gate, io)) = self.under_caller_lock().await? {
            // The caller took the lock through this manager, and it is still theirs in the
            // store: run under it, without queueing behind writes that wait for that lock.
            return Ok((WriteLock::Callers { _gate: gate }, io));
        }
        // Writes over this object in this process take turns here, first come first served,
        // instead of polling the store for each other's locks.
        let started = tokio::time::Instant::now();
        let Some(turn) = self.turnstile.locked_turn(timeout).await else {
            // The write ahead of us is still waiting for the store's lock: name who holds it,
            // as a write that waited at the lock itself would.
            let holder = self.locker.current().await.ok().flatten();
            return Err(Error::Locked {
                location: self.locker.location().to_owned(),
                holder: holder.map(Box::new),
                waited: Some(started.elapsed()),
            });
        };
        if let Some((gate, io)) = self.under_caller_lock().await? {
            // Taken through this manager while we queued.
            return Ok((WriteLock::Callers { _gate: gate }, io));
        }
        // A courtesy gap for waiters that do not read the queue (Terraform, older s3state);
        // the queue decides whether it applies.
        let gap = self
            .turnstile
            .courtesy_gap(self.options.update_lock_retry.max)
            .min(timeout.saturating_sub(started.elapsed()));
        // `operation` starts with `QUEUED_WRITE_INFO`: other s3state writers then know this
        // lock's holder waits in the queue.
        debug_assert!(operation.starts_with(crate::lock::QUEUED_WRITE_INFO));
        let info = LockInfo::new("OperationTypeApply").with_info(operation);
        let how = LockWait {
            timeout: timeout.saturating_sub(started.elapsed()),
            retry: self.options.update_lock_retry,
            jitter: true,
            holder: LockHolder::OwnWrite,
        };
        let waited = coordinator::queue::lock_in_turn(
            &self.waiters,
            &self.queue_object,
            &self.locker,
            &info,
            &self.options.lock_queue,
            how,
            gap,
        )
        .await;
        // Only a contender that may not read the lock queue (Terraform, a caller's own lock)
        // makes this process leave courtesy gaps: s3state's writers wait in the queue.
        if waited.refused_by_other_tools {
            self.turnstile.note_refused();
        }
        let id = waited.id?;
        // Released in the background if the write's future is dropped (cancelled) or its
        // closure panics.
        let guard = ReleaseOnDrop {
            manager: self,
            id: Some(id.clone()),
        };
        Ok((
            WriteLock::Own {
                _turn: turn,
                id,
                guard,
            },
            self.io.lock().await,
        ))
    }

    /// Gives back a lock from [`RemoteState::take_write_lock`]: an own lock is released once
    /// no write that got no answer can land any more. The write's outcome stands whatever
    /// happens here: reporting an error after a write that landed would invite the caller to
    /// apply its change a second time.
    pub(crate) async fn release_write_lock(&self, lock: WriteLock<'_, S>) {
        let WriteLock::Own { id, mut guard, .. } = lock else {
            return;
        };
        self.wait_for_unanswered_writes().await;
        // The guard stays armed while unlocking, so a cancel during the release still
        // releases the lock in the background.
        let released = self.locker.unlock_patiently(&id).await;
        guard.id = None;
        match released {
            Ok(()) => self.turnstile.note_released(),
            Err(error) => {
                // Forgotten here, so no later write mistakes it for one the caller holds.
                self.locker.forget_lock(&id);
                tracing::warn!(location = %self.locker.location(), %id, %error,
                    "could not release the lock after a write; clear it with force-unlock");
            }
        }
    }

    /// The release gate (held open) and the I/O lock, if the caller holds a lock taken
    /// through this manager; `None` (both let go) if not. Both are taken before looking at the
    /// lock and held by the update that runs under it, so no unlock through a manager over
    /// this object in this process can release the lock between our look and our write, nor
    /// while we wait for the write's answer (see `release_gate`). A request left on the wire by
    /// a cancelled update, or another process's unlock, is beyond this: Terraform has the same
    /// gap.
    async fn under_caller_lock(
        &self,
    ) -> Result<
        Option<(
            tokio::sync::RwLockReadGuard<'_, ()>,
            tokio::sync::MutexGuard<'_, ()>,
        )>,
    > {
        let gate = self.release_gate.relying_on_lock().await;
        let io = self.io.lock().await;
        Ok(self.locker.caller_lock().await?.map(|_| (gate, io)))
    }

    /// The refresh–change–persist rounds of an update, holding the I/O lock `_io`.
    async fn update_rounds<F, T>(
        &self,
        _io: tokio::sync::MutexGuard<'_, ()>,
        mut change: F,
    ) -> Result<T>
    where
        F: FnMut(&mut State) -> T + Send,
        T: Send,
    {
        let mut backoff = self.options.initial_update_backoff;
        // Every write id this update sent, with the result of the round that sent it: any of
        // them landing means the change is applied, and must not be applied again.
        let mut attempts: Vec<String> = Vec::new();
        let mut results: Vec<(String, T)> = Vec::new();
        // The base of an attempt whose answer was lost and that was not found in the store,
        // with that attempt's write id (later attempts may have been made on newer bases).
        let mut in_doubt: Option<(Base, String)> = None;
        // Rounds whose write failed without landing: the store is failing, not contended, so
        // give up after a few rather than use the whole attempt budget.
        let mut failed_writes = 0;
        for attempt in 1..=self.options.max_update_attempts {
            if let Err(error) = self.refresh_now().await {
                return Err(self.doubtful(error, &attempts, in_doubt.is_some()));
            }
            if let Some((doubt, made_on_doubt)) = &in_doubt {
                match self.find_landed(&attempts, doubt, made_on_doubt).await {
                    Ok(Lookup::Landed { write_id, now, .. }) => {
                        self.adopt(now);
                        return Ok(take_result(&mut results, &write_id));
                    }
                    Ok(Lookup::NotLanded { .. }) => {}
                    Err(error) => return Err(self.doubtful(error, &attempts, true)),
                }
            }
            let base = self.lock_snapshots().base.clone();
            let mut state =
                base.state.as_deref().cloned().unwrap_or_else(|| {
                    State::new(self.options.new_state_terraform_version.clone())
                });
            let result = change(&mut state);
            let sent = attempts.len();
            match self
                .write_candidate(state, false, &mut attempts, None, "update")
                .await
            {
                Ok(WriteOutcome::Unchanged) => return Ok(result),
                Ok(WriteOutcome::Landed { write_id, now, .. }) => {
                    self.adopt(now);
                    if attempts.last() == Some(&write_id) {
                        return Ok(result);
                    }
                    return Ok(take_result(&mut results, &write_id));
                }
                Err(PersistError::NotWritten {
                    current,
                    error,
                    in_doubt: doubtful,
                }) => {
                    tracing::debug!(attempt, %error, "update round not written; retrying");
                    if doubtful {
                        failed_writes += 1;
                        if failed_writes >= FAILED_WRITES_BEFORE_GIVING_UP {
                            // Not found when we looked, but a request still in flight may
                            // land yet: the caller must not take this as "not applied".
                            return Err(self.doubtful(error, &attempts, true));
                        }
                        if in_doubt.is_none() {
                            // A write that was not answered was sent: it is the last attempt.
                            let sent = attempts.last().cloned().unwrap_or_default();
                            in_doubt = Some((base, sent));
                        }
                    }
                    // What the store holds now becomes our base, so the next refresh is a
                    // cheap conditional read.
                    self.remember_base(*current);
                }
                Err(PersistError::Other(error)) => {
                    return Err(self.doubtful(error, &attempts, in_doubt.is_some()));
                }
            }
            if attempts.len() > sent {
                results.push((attempts[attempts.len() - 1].clone(), result));
            }
            if attempt < self.options.max_update_attempts {
                let jittered = backoff.mul_f64(fastrand::f64());
                tokio::time::sleep(jittered).await;
                backoff = (backoff * 2).min(self.options.max_update_backoff);
            }
        }
        let contention = Error::UpdateContention {
            location: self.store.location().to_owned(),
            attempts: self.options.max_update_attempts,
        };
        Err(self.doubtful(contention, &attempts, in_doubt.is_some()))
    }

    /// An error that ends an update: when an earlier write's answer was lost, the caller must
    /// know the change may have been applied.
    fn doubtful(&self, error: Error, attempts: &[String], in_doubt: bool) -> Error {
        if !in_doubt || matches!(error, Error::StoreIgnoresConditions { .. }) {
            return error;
        }
        Error::WriteOutcomeUnknown {
            location: self.store.location().to_owned(),
            write_ids: attempts.to_vec(),
            source: Box::new(error),
        }
    }

    /// Like [`Persister::persist_state`], but a snapshot of another lineage, or with an older
    /// serial than the persisted one, is written anyway, numbered after the persisted serial
    /// (Terraform's `state push -force`). The write is still conditional on the snapshot this
    /// manager last read, so a concurrent change is a [`Error::Conflict`], and the replaced
    /// snapshot stays in the store's history as an older version.
    pub async fn persist_state_forced(&self) -> Result<()> {
        self.persist_transient(true).await
    }

    /// Persists `candidate` (not the transient snapshot) under the serial rules, remembering
    /// what was written. The caller holds the I/O lock.
    /// `operation` names the entry point, recorded when no lock names it.
    pub(crate) async fn persist_candidate(
        &self,
        candidate: State,
        force: bool,
        operation: &str,
    ) -> Result<()> {
        match self
            .write_candidate(candidate, force, &mut Vec::new(), None, operation)
            .await
        {
            Ok(WriteOutcome::Unchanged) => Ok(()),
            Ok(WriteOutcome::Landed { now, .. }) => {
                self.adopt(now);
                Ok(())
            }
            Err(PersistError::NotWritten { current, error, .. }) => {
                self.remember_base(*current);
                Err(error)
            }
            Err(PersistError::Other(error)) => Err(error),
        }
    }

    async fn persist_transient(&self, force: bool) -> Result<()> {
        // This call answers for every write_state made before it: those must be persisted
        // when it returns Ok, even if another task's persist or refresh handled them first.
        let target = self.lock_snapshots().generation;
        let _io = self.io.lock().await;
        let (candidate, generation, made_on) = {
            let snapshots = self.lock_snapshots();
            if target > snapshots.persisted_generation && target <= snapshots.discarded_generation {
                return Err(Error::WriteDiscarded {
                    location: self.store.location().to_owned(),
                });
            }
            match &snapshots.transient {
                Some(state) => (
                    state.clone(),
                    snapshots.generation,
                    snapshots.made_on.clone(),
                ),
                None => return Ok(()),
            }
        };
        let (taken_lineage, taken_serial) = (candidate.lineage.clone(), candidate.serial);
        let outcome = self
            .write_candidate(candidate, force, &mut Vec::new(), made_on, "persist")
            .await;
        let mut snapshots = self.lock_snapshots();
        let untouched = snapshots.generation == generation;
        match outcome {
            Ok(WriteOutcome::Unchanged) => {
                if untouched {
                    snapshots.pending = Pending::Clean;
                    snapshots.made_on = None;
                }
                snapshots.persisted_generation = snapshots.persisted_generation.max(generation);
                Ok(())
            }
            Ok(WriteOutcome::Landed {
                now, superseded, ..
            }) => {
                snapshots.persisted_generation = snapshots.persisted_generation.max(generation);
                if untouched {
                    snapshots.transient = now.state.as_deref().cloned();
                    snapshots.pending = Pending::Clean;
                    snapshots.made_on = None;
                } else if let (Some(written), false) = (now.state.as_deref(), superseded) {
                    // A write_state came in while we wrote. It was made from the snapshot we
                    // just persisted (or an earlier one); number it after what we wrote, so
                    // its own persist succeeds instead of looking like a rollback.
                    if let Some(newer) = snapshots.transient.as_mut() {
                        let same_line =
                            newer.lineage == taken_lineage || newer.lineage == written.lineage;
                        if same_line && newer.serial == taken_serial {
                            newer.serial = written.serial;
                            newer.lineage = written.lineage.clone();
                            snapshots.made_on = Some(now.clone());
                        }
                    }
                }
                snapshots.base = now;
                snapshots.base_known = true;
                Ok(())
            }
            Err(PersistError::NotWritten { current, error, .. }) => {
                // Remember what won, so the caller's next refresh is a cheap conditional read
                // and a blind retry of this persist is refused as a serial regression.
                snapshots.base = *current;
                snapshots.base_known = true;
                if untouched {
                    snapshots.pending = Pending::Failed;
                }
                Err(error)
            }
            Err(PersistError::Other(error)) => {
                if untouched {
                    snapshots.pending = Pending::Failed;
                }
                Err(error)
            }
        }
    }

    /// The I/O lock, for operations in other modules that refresh and persist as one step.
    pub(crate) async fn lock_io(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.io.lock().await
    }

    /// What is left of the settle time of writes to this object that got no answer; zero if
    /// none is in doubt.
    fn unanswered_settle_left(&self) -> Duration {
        self.release_gate.settle_left()
    }

    /// Before a lock is released: waits out what is left of the settle time of a write that
    /// got no answer, so that such a write cannot land under the next holder's lock.
    async fn wait_for_unanswered_writes(&self) {
        let left = self.unanswered_settle_left();
        if !left.is_zero() {
            tracing::warn!(location = %self.store.location(), wait = ?left,
                "a write got no answer and may still land; keeping the lock until it cannot");
            tokio::time::sleep(left).await;
        }
    }

    /// Refreshes unless this manager has already read or written a snapshot, so that a
    /// following write is conditional on what the caller last saw.
    pub(crate) async fn refresh_if_unread(&self) -> Result<()> {
        if self.lock_snapshots().base_known {
            return Ok(());
        }
        self.refresh_now().await
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

    pub(crate) async fn decode_snapshot(&self, body: Bytes, what: &str) -> Result<State> {
        let location = format!("{} ({what})", self.store.location());
        let (body, _, envelope) = self.open_with_status(body, &location).await?;
        let state = State::from_slice(&body).map_err(|source| Error::Decode {
            location: location.clone(),
            source,
        })?;
        check_envelope(envelope, Some(&state), &location)?;
        Ok(state)
    }

    /// The plaintext of a body read from the store: decrypted when it is OpenTofu's envelope
    /// and encryption is configured ([`RemoteStateOptions::encryption`]), as it is otherwise.
    /// An envelope without a configured key, or plaintext the configuration refuses, is a
    /// typed [`Error::Encryption`].
    pub async fn open_body(&self, body: Bytes) -> Result<Bytes> {
        self.open_at(body, self.store.location()).await
    }

    async fn open_at(&self, body: Bytes, location: &str) -> Result<Bytes> {
        match &self.options.encryption {
            Some(encryption) => encryption
                .decrypt(body)
                .await
                .map(|(plaintext, _)| plaintext)
                .map_err(|source| Error::Encryption {
                    location: location.to_owned(),
                    source,
                }),
            None => self
                .open_with_status(body, location)
                .await
                .map(|(plaintext, _, _)| plaintext),
        }
    }

    /// [`RemoteState::open_body`] for a caller that parses the state: also whether the
    /// primary method read it, and the envelope's serial and lineage, which the caller checks
    /// against the parsed state ([`check_envelope`]; checking here would scan the state a
    /// second time).
    async fn open_with_status(
        &self,
        body: Bytes,
        location: &str,
    ) -> Result<(Bytes, DecryptionStatus, Option<EnvelopeIds>)> {
        let opened = match &self.options.encryption {
            Some(encryption) => encryption
                .decrypt_unchecked(body)
                .await
                .map(|d| (d.plaintext, d.status, d.envelope)),
            None => match encryption::inspect(&body) {
                Some(envelope) => Err(EncryptionError::NoKeyConfigured {
                    key_providers: envelope.key_providers,
                }),
                None => Ok((body, DecryptionStatus::Satisfied, None)),
            },
        };
        opened.map_err(|source| Error::Encryption {
            location: location.to_owned(),
            source,
        })
    }

    /// Rewrites the state in the form the configured encryption's primary method stores
    /// (encrypting a plaintext state, decrypting one, or re-keying), when it was read with a
    /// fallback; under the lock, as [`RemoteState::update`] takes it. The rewrite is a new
    /// snapshot with the same content and the next serial, so the old form stays in the
    /// history. With `dry_run`, only reads, and says what it would do.
    pub async fn migrate_encryption(&self, dry_run: bool) -> Result<EncryptionMigration> {
        let judge = |state: Option<&mut State>| {
            let base = self.lock_snapshots().base.clone();
            match (&base.state, base.needs_migration) {
                (None, _) => EncryptionMigration::Absent,
                (Some(_), false) => EncryptionMigration::Current,
                (Some(stored), true) => {
                    let serial = stored.serial.saturating_add(1);
                    // Same content, next serial: the verdict writes it (a newer serial) and
                    // the write primitive stores it with the primary method.
                    if let Some(state) = state {
                        state.serial = serial;
                    }
                    EncryptionMigration::Rewritten { serial }
                }
            }
        };
        {
            let _io = self.lock_io().await;
            self.refresh_now().await?;
            // Nothing stored: nothing to migrate. `update` would start from an empty state
            // and create it, so the absence is answered here, before it. (A state deleted
            // between this read and the update's own is the one gap left.)
            if dry_run || self.lock_snapshots().base.state.is_none() {
                return Ok(judge(None));
            }
        }
        self.update(|state| judge(Some(state))).await
    }

    /// The body to store for `plaintext`: encrypted with the configured method, or as it is.
    /// The second value says whether it was encrypted.
    pub async fn seal_body(&self, plaintext: Bytes) -> Result<(Bytes, bool)> {
        match &self.options.encryption {
            Some(encryption) if encryption.encrypts() => encryption
                .encrypt(plaintext)
                .await
                .map(|sealed| (sealed, true))
                .map_err(|source| Error::Encryption {
                    location: self.store.location().to_owned(),
                    source,
                }),
            _ => Ok((plaintext, false)),
        }
    }

    fn remember_base(&self, base: Base) {
        let mut snapshots = self.lock_snapshots();
        snapshots.base = base;
        snapshots.base_known = true;
    }

    /// Remembers a snapshot this manager wrote (or found its write under), and makes it the
    /// transient snapshot too unless an unsaved `write_state` is there.
    fn adopt(&self, now: Base) {
        let mut snapshots = self.lock_snapshots();
        if snapshots.pending == Pending::Clean {
            snapshots.transient = now.state.as_deref().cloned();
        }
        snapshots.base = now;
        snapshots.base_known = true;
    }

    fn lock_snapshots(&self) -> std::sync::MutexGuard<'_, Snapshots> {
        // A panic while holding this lock cannot leave the snapshots half-updated (each update
        // is a single assignment), so a poisoned lock is still consistent.
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the persisted snapshot (conditionally on the one we know). The caller holds the
    /// I/O lock.
    async fn refresh_now(&self) -> Result<()> {
        let known = self.lock_snapshots().base.etag.clone();
        let fetched = self.store.get(known.as_ref()).await?;
        let base = match fetched {
            Fetched::NotModified => None,
            Fetched::Absent => Some(Base::default()),
            Fetched::Found(object) => Some(self.decode(object).await?),
        };
        if let Some(seen) = &base {
            let known = self.lock_snapshots().base.clone();
            self.check_not_siblings(&known, seen).await?;
        }
        self.apply_read(base);
        Ok(())
    }

    /// Remembers what a read found the store holding (`None`: unchanged since the base),
    /// as a refresh does: a `write_state` whose persist failed is discarded, one not yet
    /// persisted is kept, and otherwise the transient snapshot becomes the stored one.
    fn apply_read(&self, now: Option<Base>) {
        let mut snapshots = self.lock_snapshots();
        if let Some(base) = now {
            snapshots.base = base;
        }
        snapshots.base_known = true;
        if snapshots.pending == Pending::Failed {
            snapshots.discarded_generation = snapshots.generation;
        }
        if snapshots.pending != Pending::Unsaved {
            snapshots.transient = snapshots.base.state.as_deref().cloned();
            snapshots.pending = Pending::Clean;
            snapshots.made_on = None;
        }
    }

    async fn decode(&self, object: StoredObject) -> Result<Base> {
        let stored_size = object.body.len() as u64;
        let (body, status, envelope) = self
            .open_with_status(object.body, self.store.location())
            .await?;
        let state = match State::from_slice(&body) {
            Ok(state) => Some(state),
            Err(crate::state::DecodeError::Empty) => None,
            Err(source) => {
                return Err(Error::Decode {
                    location: self.store.location().to_owned(),
                    source,
                });
            }
        };
        check_envelope(envelope, state.as_ref(), self.store.location())?;
        Ok(Base {
            etag: Some(object.etag),
            state: state.map(Arc::new),
            version_id: object.version_id,
            size: stored_size,
            write_id: metadata::write_id(&object.metadata),
            parent_write_id: metadata::parent_write_id(&object.metadata),
            metadata: object.metadata,
            needs_migration: status == DecryptionStatus::Migration,
        })
    }

    /// Writes `candidate` under the serial rules, conditionally on the base this manager
    /// knows, and finds out exactly what happened when the answer is not a plain success.
    /// `attempts` holds the write ids of the caller's earlier attempts at the same change;
    /// this attempt's id is added to it.
    ///
    /// The serial rules are checked against the newest base this manager knows; the write is
    /// conditional on `made_on` when given (the base the candidate was made on), so a
    /// candidate made before a newer snapshot was read never replaces that snapshot.
    /// `operation` names the entry point (`persist`, `update`), recorded when no lock does.
    async fn write_candidate(
        &self,
        candidate: State,
        force: bool,
        attempts: &mut Vec<String>,
        made_on: Option<Base>,
        operation: &str,
    ) -> Result<WriteOutcome, PersistError> {
        let newest = self.lock_snapshots().base.clone();
        let Some(next) = self.next_snapshot(candidate, newest.state.as_deref(), force)? else {
            return Ok(WriteOutcome::Unchanged);
        };
        let base = made_on.unwrap_or(newest);
        let body = Bytes::from(next.to_bytes());
        self.write_snapshot(Outgoing::canonical(next, body, operation), &base, attempts)
            .await
    }

    /// The one write primitive: writes `outgoing` conditionally on `base`, with its write id
    /// and metadata, marks it in doubt while it is on the wire and when it gets no answer, and
    /// finds out exactly what happened when the answer is not a plain success (a lost answer
    /// is looked up, never guessed). `attempts` holds the write ids of the caller's earlier
    /// attempts at the same change; this attempt's id is added to it.
    ///
    /// It records who wrote the snapshot: the entry point's author (the gateway's principal),
    /// else the manager's [`RemoteStateOptions::author`], else the `Who` of the lock held for
    /// the write; none when none of these is known (never a guess). And what wrote it: the
    /// held lock's `Operation` when the caller took it, its `Info` when the write took it for
    /// itself (`s3state update`, `s3state restore`), else the entry point's name.
    async fn write_snapshot(
        &self,
        outgoing: Outgoing,
        base: &Base,
        attempts: &mut Vec<String>,
    ) -> Result<WriteOutcome, PersistError> {
        let Outgoing {
            state: next,
            body,
            canonical,
            extra,
            author,
            operation,
        } = outgoing;
        // The verdict was made on the plaintext; what is stored is its envelope when
        // encryption is configured (whose size then says nothing of the canonical bytes).
        let (body, sealed) = self.seal_body(body).await?;
        let canonical = canonical && !sealed;
        let write_id = uuid::Uuid::new_v4().to_string();
        attempts.push(write_id.clone());
        let held = self.locker.held_info();
        let author = author
            .or_else(|| self.options.author.clone())
            .or_else(|| held.as_ref().map(|(info, _)| info.who.clone()));
        let operation = match &held {
            Some((info, LockHolder::Caller)) if !info.operation.is_empty() => {
                info.operation.clone()
            }
            Some((info, LockHolder::OwnWrite)) if !info.info.is_empty() => info.info.clone(),
            _ => operation,
        };
        let mut metadata = metadata::for_snapshot(
            &next,
            &write_id,
            base.write_id.as_deref(),
            canonical.then_some(body.len()),
            metadata::WrittenBy {
                author: author.as_deref(),
                operation: Some(&operation),
            },
        );
        metadata.extend(extra);
        if sealed {
            metadata::mark_encrypted(&mut metadata);
        }
        let size = body.len() as u64;
        let condition = base.precondition();
        let settle = self.options.unanswered_write_settle;
        let on_the_wire = OnTheWire::new(&self.release_gate, &condition, settle);
        let put = self.store.put(body, &condition, &metadata).await;
        on_the_wire.answered();
        let failure = match put {
            Ok(PutOutcome::Written(written)) => {
                // The state moved on from what any write still on the wire was conditional on.
                self.release_gate.none_can_land();
                return Ok(WriteOutcome::Landed {
                    now: Base {
                        etag: Some(written.etag),
                        state: Some(Arc::new(next)),
                        version_id: written.version_id,
                        size,
                        write_id: Some(write_id.clone()),
                        parent_write_id: base.write_id.clone(),
                        metadata,
                        needs_migration: false,
                    },
                    write_id,
                    superseded: false,
                });
            }
            Ok(PutOutcome::PreconditionFailed) => {
                // Evaluated and refused: the object is not in that state, so no request
                // conditional on it (an earlier attempt of this one included) can land.
                self.release_gate.cannot_land(&condition);
                None
            }
            // The store refused the condition itself (501): an answer, and nothing was applied.
            // Neither in doubt nor a lost race, so no lookup, no settle time before the lock
            // is released, and no retry round that would only be refused again.
            Err(error @ Error::ConditionalWritesUnsupported { .. }) => {
                self.release_gate.cannot_land(&condition);
                return Err(PersistError::Other(error));
            }
            Err(error) => {
                self.release_gate
                    .may_land(&condition, tokio::time::Instant::now() + settle);
                Some(error)
            }
        };
        // Refused, or no answer. Either another writer got there first, or one of our
        // attempts landed and only its answer was lost (the SDK then retried and met it). The
        // store's versions say which, exactly.
        let lookup = match self.find_landed(attempts, base, &write_id).await {
            Ok(lookup) => lookup,
            // Said as it is: "unknown" would hide that the store cannot be trusted.
            Err(error @ Error::StoreIgnoresConditions { .. }) => {
                return Err(PersistError::Other(error));
            }
            Err(lookup_error) => {
                return Err(PersistError::Other(Error::WriteOutcomeUnknown {
                    location: self.store.location().to_owned(),
                    write_ids: attempts.clone(),
                    source: Box::new(failure.unwrap_or(lookup_error)),
                }));
            }
        };
        match lookup {
            Lookup::Landed {
                write_id,
                now,
                superseded,
            } => {
                tracing::info!(location = %self.store.location(), superseded,
                    "a write whose answer was lost is in the store; treating it as written");
                self.release_gate.none_can_land();
                Ok(WriteOutcome::Landed {
                    write_id,
                    now,
                    superseded,
                })
            }
            Lookup::NotLanded { current } => {
                let location = self.store.location().to_owned();
                let (error, in_doubt) = match failure {
                    None => (
                        Error::Conflict {
                            location,
                            remote: current.state.as_deref().map(SnapshotMeta::of),
                        },
                        false,
                    ),
                    Some(source) => (
                        Error::WriteFailed {
                            location,
                            source: Box::new(source),
                        },
                        true,
                    ),
                };
                Err(PersistError::NotWritten {
                    current: Box::new(current),
                    error,
                    in_doubt,
                })
            }
        }
    }

    /// Whether any write in `attempts` is in the store. `made_on_base` is the one among them
    /// that was conditional on `base`; the others (an update's earlier or later rounds) may
    /// have been made on other snapshots, so only it can show a store ignoring `If-Match`.
    ///
    /// The current object answers most cases in one GET: it is ours, or was written directly
    /// on ours (its parent id), or directly on our base by someone else (then ours cannot have
    /// landed). Otherwise a writer that records no ids (Terraform), or several writers in a
    /// row, wrote since; the versions written after our base are then searched for our ids.
    /// Tags are not compared, because under SSE-KMS they are not content hashes.
    async fn find_landed(
        &self,
        attempts: &[String],
        base: &Base,
        made_on_base: &str,
    ) -> Result<Lookup> {
        let ours = |id: Option<&String>| id.filter(|id| attempts.contains(id)).cloned();
        let current = match self.store.get(None).await? {
            Fetched::Found(object) => {
                let ids = (
                    metadata::write_id(&object.metadata),
                    metadata::parent_write_id(&object.metadata),
                );
                // An object that is not a state is reported as a conflict with an unknown
                // remote; it is remembered as "unknown", so the next write can only create,
                // and nothing ever overwrites it.
                self.decode(object).await.unwrap_or_else(|_| Base {
                    write_id: ids.0,
                    parent_write_id: ids.1,
                    ..Base::default()
                })
            }
            Fetched::Absent | Fetched::NotModified => Base::default(),
        };
        self.check_not_siblings(base, &current).await?;
        if let Some(write_id) = ours(current.write_id.as_ref()) {
            return Ok(Lookup::Landed {
                write_id,
                now: current,
                superseded: false,
            });
        }
        if let Some(write_id) = ours(current.parent_write_id.as_ref()) {
            return Ok(Lookup::Landed {
                write_id,
                now: current,
                superseded: true,
            });
        }
        let built_on_our_base =
            current.parent_write_id.is_some() && current.parent_write_id == base.write_id;
        let Some(versions) = self.store.as_versioned().filter(|_| !built_on_our_base) else {
            return Ok(Lookup::NotLanded { current });
        };
        let listing =
            crate::store::list_versions_checked(versions, crate::store::MAX_LISTING_PAGE).await?;
        let unanswerable = || Error::Store {
            operation: "ListObjectVersions",
            location: self.store.location().to_owned(),
            message: "versioning is suspended for this object (a version `null` was written since \
                      our base), so its history cannot tell whether our write landed"
                .into(),
            source: None,
        };
        // The current object written while versioning was off, and not our base unchanged:
        // it may have replaced ours without a trace.
        if current.version_id.as_deref() == Some("null") && current.etag != base.etag {
            return Err(unanswerable());
        }
        for (index, version) in listing.iter().enumerate() {
            if base.version_id.as_deref() == Some(version.version_id.as_str()) {
                break;
            }
            // A `null` version newer than our base: written while versioning was suspended,
            // it may have replaced ours without a trace.
            if version.version_id == "null" {
                return Err(unanswerable());
            }
            if version.is_delete_marker
                || current.version_id.as_deref() == Some(version.version_id.as_str())
            {
                continue;
            }
            let metadata = versions.version_metadata(&version.version_id).await?;
            if let Some(write_id) = ours(metadata::write_id(&metadata).as_ref()) {
                if write_id == made_on_base {
                    let older = &listing[index + 1..];
                    self.check_replaced_base(versions, version, older, base, &write_id)
                        .await?;
                }
                return Ok(Lookup::Landed {
                    write_id,
                    now: current,
                    superseded: true,
                });
            }
        }
        Ok(Lookup::NotLanded { current })
    }

    /// Fails when `seen` and `known` are two different s3state writes made on the same parent.
    /// Each was conditional on that parent being current, so whichever came second was
    /// accepted after the parent had been replaced: the store ignored `If-Match`. Costs no
    /// request: both snapshots' ids were read already.
    ///
    /// Unless `known` is no longer among the versions: an operator who rolls back by deleting
    /// the newest version (S3's own way to restore the previous one) makes its parent current
    /// again, and a write on it is then legitimate. That is asked (one request) only when the
    /// two writes are siblings, and nothing is concluded unless the answer confirms `known`
    /// is still stored.
    async fn check_not_siblings(&self, known: &Base, seen: &Base) -> Result<()> {
        let (Some(known_id), Some(parent), Some(seen_id)) = (
            known.write_id.as_ref(),
            known.parent_write_id.as_ref(),
            seen.write_id.as_ref(),
        ) else {
            return Ok(());
        };
        if seen_id == known_id || seen.parent_write_id.as_ref() != Some(parent) {
            return Ok(());
        }
        // The accusation is made only when the known write is confirmed still stored: a
        // failed lookup (timeout, 5xx, 403) or a store without versions proves nothing, and
        // must not replace an honest "unknown" with a wrong verdict.
        let known_still_stored = match (self.store.as_versioned(), known.version_id.as_deref()) {
            (Some(versions), Some(known_version)) => {
                versions.version_metadata(known_version).await.is_ok()
            }
            _ => false,
        };
        if !known_still_stored {
            return Ok(());
        }
        Err(Error::StoreIgnoresConditions {
            location: self.store.location().to_owned(),
            evidence: format!(
                "s3state writes {known_id} and {seen_id} were both stored on top of write {parent}, \
                 each conditional (If-Match) on {parent} being current; the second was accepted after \
                 {parent} had been replaced by the first"
            ),
        })
    }

    /// Called when the version listing found our write `ours` (stored as `landed`): `older`
    /// is the listing below it. The write was conditional on `base`, so the version it
    /// replaced (the next older one that is not a delete marker) must have `base`'s tag. If
    /// it has another tag, the store accepted the write over a version it was not
    /// conditional on: it ignored `If-Match`. The listing is already at hand; a request is
    /// made only to name the evidence. When `base` is no longer listed (pruned), nothing is
    /// concluded.
    async fn check_replaced_base(
        &self,
        versions: &dyn crate::store::VersionedStore,
        landed: &crate::store::ObjectVersion,
        older: &[crate::store::ObjectVersion],
        base: &Base,
        ours: &str,
    ) -> Result<()> {
        let (Some(base_version), Some(base_etag)) = (base.version_id.as_deref(), &base.etag) else {
            return Ok(());
        };
        let Some(base_at) = older.iter().position(|v| v.version_id == base_version) else {
            return Ok(());
        };
        let Some(replaced) = older[..base_at].iter().find(|v| !v.is_delete_marker) else {
            return Ok(());
        };
        if replaced.etag.as_ref() == Some(base_etag) {
            return Ok(());
        }
        let replaced_id = versions
            .version_metadata(&replaced.version_id)
            .await
            .ok()
            .and_then(|metadata| metadata::write_id(&metadata));
        let evidence = if replaced_id.as_deref() == Some(ours) {
            format!(
                "our write {ours} is stored twice (versions {} and {}): its answer was lost, the \
                 request was sent again, and the store accepted the repeat although its If-Match named \
                 version {base_version}, which the first had already replaced",
                replaced.version_id, landed.version_id
            )
        } else {
            format!(
                "our write {ours} (version {}) was conditional (If-Match {base_etag}) on version \
                 {base_version}, but was stored over version {}, written after it",
                landed.version_id, replaced.version_id
            )
        };
        Err(Error::StoreIgnoresConditions {
            location: self.store.location().to_owned(),
            evidence,
        })
    }

    /// Terraform's verdict on `next` over `base` (see [`verdict`]): the snapshot to write, or
    /// `None` when there is nothing to write. With `force`, a snapshot of another lineage or
    /// an older serial is accepted and numbered after the persisted one.
    pub(crate) fn next_snapshot(
        &self,
        next: State,
        base: Option<&State>,
        force: bool,
    ) -> Result<Option<State>> {
        let rules = if force { Rules::Forced } else { Rules::Persist };
        let location = || self.store.location().to_owned();
        let verdict = verdict::judge_whole(next, base, rules, &location)?;
        Ok(match verdict {
            Verdict::Unchanged(_) => None,
            Verdict::Write(next) => Some(next),
            Verdict::Undecided(_) => unreachable!("whole states are always compared"),
        })
    }
}

/// OpenTofu's check after decrypting, on the parsed state: the envelope's plaintext serial
/// and lineage are the state's.
fn check_envelope(
    envelope: Option<EnvelopeIds>,
    state: Option<&State>,
    location: &str,
) -> Result<()> {
    let Some(ids) = envelope else { return Ok(()) };
    let (serial, lineage) = match state {
        Some(state) => (Some(state.serial), Some(state.lineage.as_str())),
        None => (None, None),
    };
    ids.check(serial, lineage)
        .map_err(|source| Error::Encryption {
            location: location.to_owned(),
            source,
        })
}

/// How many of `update`'s rounds may fail without landing (a failing store, not a lost
/// race) before it reports the failure.
const FAILED_WRITES_BEFORE_GIVING_UP: u32 = 3;

/// The result of the round whose write landed.
fn take_result<T>(results: &mut Vec<(String, T)>, write_id: &str) -> T {
    let index = results
        .iter()
        .position(|(id, _)| id == write_id)
        .expect("a landed write id is one this update sent");
    results.swap_remove(index).1
}

impl<S: Store> Transient for RemoteState<S> {
    fn state(&self) -> Option<State> {
        self.lock_snapshots().transient.clone()
    }

    fn write_state(&self, state: State) {
        let mut snapshots = self.lock_snapshots();
        if snapshots.pending == Pending::Clean {
            snapshots.made_on = Some(snapshots.base.clone());
        }
        snapshots.transient = Some(state);
        snapshots.generation += 1;
        snapshots.pending = Pending::Unsaved;
    }
}

#[async_trait]
impl<S: Store> Refresher for RemoteState<S> {
    async fn refresh_state(&self) -> Result<()> {
        let _io = self.io.lock().await;
        self.refresh_now().await
    }
}

#[async_trait]
impl<S: Store> Persister for RemoteState<S> {
    async fn persist_state(&self) -> Result<()> {
        self.persist_transient(false).await
    }
}

#[async_trait]
impl<S: Store> OutputReader for RemoteState<S> {
    async fn root_output_values(&self) -> Result<BTreeMap<String, OutputValue>> {
        let _io = self.io.lock().await;
        self.refresh_now().await?;
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

#[async_trait]
impl<S: Store> Locker for RemoteState<S> {
    async fn lock(&self, info: &LockInfo) -> Result<String> {
        self.locker.lock(info).await
    }

    /// Releases lock `id` once no update runs under a caller's lock through any manager over
    /// this object in this process, and no request of this manager is in flight: releasing a
    /// lock mid-write would let a Terraform lock the state and overwrite that write. So it can
    /// wait as long as those take (an update's retries; a request the network holds up).
    async fn unlock(&self, id: &str) -> Result<()> {
        // If this call is dropped before it is done (a caller's timeout, Ctrl-C), the lock is
        // still released, in the background, once no write can land under the next holder.
        let mut abandoned = ReleaseOnDrop {
            manager: self,
            id: Some(id.to_owned()),
        };
        loop {
            {
                // The gate first, then the I/O lock: the order an update under the caller's
                // lock takes them in. Holding both, no write of ours is on the wire.
                let _gate = self.release_gate.releasing().await;
                let _no_write_in_flight = self.io.lock().await;
                if self.unanswered_settle_left().is_zero() {
                    let released = self.locker.unlock(id).await;
                    abandoned.id = None;
                    return released;
                }
            }
            // A write got no answer: wait it out without the gate and the I/O lock, so that
            // reads and other work on the manager go on meanwhile; then look again.
            self.wait_for_unanswered_writes().await;
        }
    }
}
