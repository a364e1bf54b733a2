//! The state-manager contract, after Terraform's `statemgr` package, made async.
//!
//! A state manager holds two snapshots:
//! - the **transient** snapshot, in memory, which callers read with [`Transient::state`] and
//!   replace with [`Transient::write_state`];
//! - the **persisted** snapshot, in durable storage, which [`Refresher::refresh_state`] loads
//!   and [`Persister::persist_state`] replaces.
//!
//! All methods take `&self`, so one manager can be shared between tasks behind an `Arc`.
//! Implementations serialise their own I/O, as Terraform's managers do behind a mutex.

use crate::error::Result;
use crate::state::{OutputValue, State};
use async_trait::async_trait;
use std::collections::BTreeMap;

// The plain data the contract speaks in lives with the state model, so that the error type can
// name it without depending on the contract.
pub use crate::state::meta::{LockInfo, SnapshotMeta, SnapshotOrdering};

/// The in-memory snapshot. No method here does I/O, so they are plain (not async) methods.
pub trait Transient: Send + Sync {
    /// A copy of the current in-memory snapshot; `None` when there is no state yet.
    fn state(&self) -> Option<State>;

    /// Replaces the in-memory snapshot. Nothing is written until
    /// [`Persister::persist_state`].
    fn write_state(&self, state: State);
}

/// Loads the latest persisted snapshot.
#[async_trait]
pub trait Refresher: Send + Sync {
    /// Loads the latest persisted snapshot and makes it the in-memory snapshot too.
    ///
    /// A [`Transient::write_state`] that no persist has tried yet is kept (another task
    /// sharing the manager may refresh at any moment, and must not throw it away); one whose
    /// persist failed is replaced, as Terraform does, so that the change can be made again
    /// on the refreshed state.
    ///
    /// Safe while other processes persist concurrently: the snapshot read is always one whole
    /// persisted version, never a mix.
    async fn refresh_state(&self) -> Result<()>;
}

/// Writes the in-memory snapshot as the new persisted snapshot.
#[async_trait]
pub trait Persister: Send + Sync {
    /// Persists the in-memory snapshot.
    ///
    /// Guarantees:
    /// - an unchanged snapshot makes no request;
    /// - a changed snapshot gets `serial + 1` and keeps its lineage; a brand-new one gets a fresh
    ///   lineage;
    /// - a write never replaces a persisted snapshot that this manager has not read: if another
    ///   process persisted since, the result is [`crate::Error::Conflict`] and nothing is
    ///   overwritten;
    /// - a snapshot of another lineage, or with an older serial than the persisted one, is
    ///   refused ([`crate::Error::LineageMismatch`], [`crate::Error::SerialRegression`]).
    ///
    /// - when it returns `Ok`, every `write_state` made before the call is persisted, whichever
    ///   task's persist wrote it; if one was discarded by a refresh after a failed persist, the
    ///   answer is [`crate::Error::WriteDiscarded`], never a silent `Ok`.
    ///
    /// It does not lock; locking is the caller's decision, as in Terraform. (`update` on
    /// [`crate::RemoteState`] locks by default.)
    async fn persist_state(&self) -> Result<()>;
}

/// Reads the root module's output values.
#[async_trait]
pub trait OutputReader: Send + Sync {
    /// The root module outputs of the latest persisted snapshot, by name. Like Terraform's
    /// implementation, this refreshes first. Empty when there is no state.
    async fn root_output_values(&self) -> Result<BTreeMap<String, OutputValue>>;
}

/// A manager whose snapshots can be refreshed, persisted, and read for outputs.
pub trait Persistent: Refresher + Persister + OutputReader {}

impl<T: Refresher + Persister + OutputReader> Persistent for T {}

/// Describes the persisted snapshot a manager last read or wrote.
pub trait PersistentMeta: Send + Sync {
    /// The meta of the snapshot most recently read or written; `None` before any snapshot
    /// was seen.
    fn state_snapshot_meta(&self) -> Option<SnapshotMeta>;
}

/// Mutual exclusion for a state, compatible with Terraform's lock objects.
///
/// Persisting never locks by itself; the caller decides, as in Terraform. The recommended
/// sequence for a change that must not interleave with other tools (Terraform included) is:
///
/// 1. `lock` (or `lock_with_timeout`), keeping the returned ID;
/// 2. [`Refresher::refresh_state`];
/// 3. [`Transient::write_state`] with the change;
/// 4. [`Persister::persist_state`];
/// 5. `unlock` with the ID, also when a step failed.
#[async_trait]
pub trait Locker: Send + Sync {
    /// Acquires the lock described by `info` and returns its ID (`info.id`). If another
    /// holder has it, fails at once with [`crate::Error::Locked`] carrying the holder's info.
    async fn lock(&self, info: &LockInfo) -> Result<String>;

    /// Releases the lock with this ID. Fails with [`crate::Error::LockIdMismatch`], naming
    /// both IDs, when the lock there is someone else's; it is then left alone.
    async fn unlock(&self, id: &str) -> Result<()>;
}
