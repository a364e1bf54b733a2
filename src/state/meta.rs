//! The plain data that describes a snapshot and a lock: [`SnapshotMeta`] (a snapshot's identity),
//! [`SnapshotOrdering`] (how two relate) and [`LockInfo`] (who holds a lock). They depend on
//! nothing but the state itself, so the error type, the contract ([`crate::statemgr`], which
//! re-exports them) and the diff can all name them without importing one another.

use super::State;
use std::cmp::Ordering;

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
