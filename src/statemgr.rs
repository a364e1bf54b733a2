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
use std::cmp::Ordering;
use std::collections::BTreeMap;

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

/// The identity of one snapshot: its lineage, its serial, and who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SnapshotMeta {
    /// The state's history identifier.
    pub lineage: String,
    /// The snapshot's position in that history.
    pub serial: u64,
    /// The Terraform (or tool) version that wrote it.
    pub terraform_version: semver::Version,
}

/// How one snapshot relates to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotOrdering {
    /// Different lineages: the snapshots belong to unrelated states.
    Unrelated,
    /// Same lineage, lower serial.
    Older,
    /// Same lineage, higher serial.
    Newer,
    /// Same lineage and serial.
    Equal,
}

impl SnapshotMeta {
    /// The meta of a state.
    pub fn of(state: &State) -> Self {
        SnapshotMeta {
            lineage: state.lineage.clone(),
            serial: state.serial,
            terraform_version: state.terraform_version.clone(),
        }
    }

    /// How `self` relates to `other`.
    ///
    /// ```
    /// use s3state::{SnapshotMeta, SnapshotOrdering};
    /// let v = semver::Version::new(1, 15, 5);
    /// let a = SnapshotMeta { lineage: "L".into(), serial: 3, terraform_version: v.clone() };
    /// let b = SnapshotMeta { serial: 4, ..a.clone() };
    /// assert_eq!(a.compare(&b), SnapshotOrdering::Older);
    /// assert_eq!(b.compare(&a), SnapshotOrdering::Newer);
    /// let other = SnapshotMeta { lineage: "M".into(), ..a.clone() };
    /// assert_eq!(a.compare(&other), SnapshotOrdering::Unrelated);
    /// ```
    pub fn compare(&self, other: &SnapshotMeta) -> SnapshotOrdering {
        if self.lineage != other.lineage {
            return SnapshotOrdering::Unrelated;
        }
        match self.serial.cmp(&other.serial) {
            Ordering::Less => SnapshotOrdering::Older,
            Ordering::Greater => SnapshotOrdering::Newer,
            Ordering::Equal => SnapshotOrdering::Equal,
        }
    }
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

/// Who holds a lock, since when, and for what: Terraform's `statemgr.LockInfo`, serialised with
/// Terraform's field names, compactly.
///
/// ```
/// use s3state::LockInfo;
/// let info = LockInfo::new("OperationTypeApply");
/// let json = serde_json::to_string(&info).unwrap();
/// assert!(json.starts_with(&format!(r#"{{"ID":"{}","Operation":"OperationTypeApply","#, info.id)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockInfo {
    /// A unique ID (a UUID) that the holder needs to unlock.
    #[serde(rename = "ID")]
    pub id: String,
    /// The operation, such as `OperationTypeApply`.
    #[serde(rename = "Operation")]
    pub operation: String,
    /// Free-form extra information.
    #[serde(rename = "Info")]
    pub info: String,
    /// `user@host` of the holder.
    #[serde(rename = "Who")]
    pub who: String,
    /// The version of the tool that took the lock.
    #[serde(rename = "Version")]
    pub version: String,
    /// When the lock was taken (RFC 3339, UTC).
    #[serde(rename = "Created", with = "time::serde::rfc3339")]
    pub created: time::OffsetDateTime,
    /// The locked state, as `bucket/key`. The locker fills it in.
    #[serde(rename = "Path")]
    pub path: String,
}

impl LockInfo {
    /// Lock info for `operation`, with a fresh ID, `user@host`, this crate's version and the
    /// current time.
    pub fn new(operation: impl Into<String>) -> Self {
        let user = whoami::username().unwrap_or_else(|_| "unknown".into());
        let host = whoami::hostname().unwrap_or_else(|_| "unknown".into());
        LockInfo {
            id: uuid::Uuid::new_v4().to_string(),
            operation: operation.into(),
            info: String::new(),
            who: format!("{user}@{host}"),
            version: concat!("s3state ", env!("CARGO_PKG_VERSION")).into(),
            created: time::OffsetDateTime::now_utc(),
            path: String::new(),
        }
    }

    /// The same lock info with `info` set.
    pub fn with_info(mut self, info: impl Into<String>) -> Self {
        self.info = info.into();
        self
    }
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let created = self
            .created
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| self.created.to_string());
        write!(
            f,
            "ID {}, held by {} since {} for {}",
            self.id, self.who, created, self.operation
        )?;
        if !self.info.is_empty() {
            write!(f, " ({})", self.info)?;
        }
        write!(f, ", path {}, version {}", self.path, self.version)
    }
}
