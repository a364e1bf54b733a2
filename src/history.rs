//! A state's history, over any [`VersionedStore`]: list past snapshots, read one, diff two,
//! and restore one as a new snapshot.
//!
//! Nothing here deletes history: a restore writes a *new* version on top of the current one,
//! conditional on the current tag, so a concurrent writer makes one of the two fail with
//! [`Error::Conflict`] rather than lose an update.

use crate::error::{Error, Result};
use crate::remote::RemoteState;
use crate::state::{State, StateDiff};
use crate::statemgr::SnapshotMeta;
use crate::store::{MAX_LISTING_PAGE, ObjectVersion, VersionedStore, list_versions_checked};
use futures::{StreamExt, TryStreamExt};

use crate::remote::metadata;
pub use crate::remote::metadata::meta_from_metadata;

/// How [`RemoteState::history`] lists.
#[derive(Debug, Clone)]
pub struct HistoryOptions {
    /// Versions per listing request (1 to 1,000; S3's maximum is the default).
    pub page_size: u32,
    /// Also fetch each version's serial, lineage and Terraform version: from the metadata
    /// s3state writes (one HEAD per version), or from the body for versions written by other
    /// tools (one GET). Without details, listing costs one request per page.
    pub details: bool,
    /// How many versions are inspected at once when `details` is set.
    pub concurrency: usize,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        HistoryOptions {
            page_size: 1000,
            details: false,
            concurrency: 8,
        }
    }
}

/// One version of the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The store's view: id, time, size, tag, latest, delete marker.
    pub version: ObjectVersion,
    /// The snapshot's identity, when details were asked for (and it is not a delete marker
    /// or an undecodable body).
    pub meta: Option<SnapshotMeta>,
    /// Who wrote it, when details were asked for and s3state recorded it: a gateway's
    /// principal (a user, or `<issuer>#<subject>`), a manager's
    /// [`RemoteStateOptions::author`](crate::RemoteStateOptions::author), or the `Who` of the
    /// lock the writer held. `None` is unknown: a version Terraform wrote directly records
    /// no author, and none is guessed.
    pub author: Option<String>,
    /// What wrote it, when recorded: the `Operation` of the writer's lock (Terraform's
    /// `OperationTypeApply`, the CLI's `state-push`), or the library's entry point.
    pub operation: Option<String>,
    /// How many resources it holds, when details were asked for.
    pub resources: Option<usize>,
}

impl HistoryEntry {
    /// A version without details.
    fn bare(version: ObjectVersion) -> Self {
        HistoryEntry {
            version,
            meta: None,
            author: None,
            operation: None,
            resources: None,
        }
    }

    /// Sets what [`RemoteState::version_details`] found.
    pub fn set_details(&mut self, details: VersionDetails) {
        self.meta = details.meta;
        self.author = details.author;
        self.operation = details.operation;
        self.resources = details.resources;
    }
}

/// What one version holds and who wrote it ([`RemoteState::version_details`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VersionDetails {
    /// Its serial, lineage and Terraform version (`None`: a delete marker, or not a state).
    pub meta: Option<SnapshotMeta>,
    /// Who wrote it, when recorded (see [`HistoryEntry::author`]); `None` is unknown.
    pub author: Option<String>,
    /// What wrote it, when recorded.
    pub operation: Option<String>,
    /// How many resources it holds.
    pub resources: Option<usize>,
}

/// One past snapshot, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The version it was read from.
    pub version_id: String,
    /// The state.
    pub state: State,
    /// Its identity.
    pub meta: SnapshotMeta,
}

/// Names a version relative to the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    /// The current (latest) snapshot.
    Current,
    /// `n` content versions before the current one (`Back(1)` is the previous snapshot);
    /// delete markers are not counted.
    Back(usize),
    /// A version id.
    Id(String),
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The version whose content was restored.
    pub from_version: String,
    /// The identity of the snapshot now current.
    pub meta: SnapshotMeta,
    /// False when the current snapshot already had that content, so nothing was written.
    pub written: bool,
}

/// Which versions [`RemoteState::prune`] keeps. A version is kept when any rule keeps it;
/// the current version, and the newest version with content, are always kept.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Keep the newest N versions with content, and the delete markers among them (delete
    /// markers do not count toward N: over a deleted state, N snapshots stay to restore).
    pub keep_newest: Option<usize>,
    /// Keep versions written at or after this time.
    pub keep_since: Option<time::OffsetDateTime>,
    /// Only report what would be removed. Callers should show this first.
    pub dry_run: bool,
}

impl<S: VersionedStore> RemoteState<S> {
    /// The state's versions, newest first, delete markers included.
    ///
    /// ```no_run
    /// use s3state::{HistoryOptions, S3Builder};
    ///
    /// # async fn demo() -> s3state::Result<()> {
    /// let manager = S3Builder::from_env()
    ///     .with_bucket("tfstate")
    ///     .with_key("app/terraform.tfstate")
    ///     .build()
    ///     .await?;
    /// // With details, each entry also carries the snapshot's serial and lineage.
    /// let options = HistoryOptions { details: true, ..HistoryOptions::default() };
    /// for entry in manager.history(&options).await?.iter().take(10) {
    ///     let version = &entry.version;
    ///     match &entry.meta {
    ///         Some(meta) => println!("{} serial {}", version.version_id, meta.serial),
    ///         None if version.is_delete_marker => println!("{} (deleted)", version.version_id),
    ///         None => println!("{} (not a state)", version.version_id),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn history(&self, options: &HistoryOptions) -> Result<Vec<HistoryEntry>> {
        let versions = list_versions_checked(self.store(), options.page_size).await?;
        if !options.details {
            return Ok(versions.into_iter().map(HistoryEntry::bare).collect());
        }
        futures::stream::iter(versions)
            .map(|version| async move {
                let details = self.version_details(&version).await?;
                let mut entry = HistoryEntry::bare(version);
                entry.set_details(details);
                Ok::<_, Error>(entry)
            })
            .buffered(options.concurrency.max(1))
            .try_collect()
            .await
    }

    /// The identity of one version: from the metadata s3state wrote (one HEAD), else from its
    /// body (one GET). `None` for a delete marker or a body that is not a state.
    pub async fn version_meta(&self, version: &ObjectVersion) -> Result<Option<SnapshotMeta>> {
        if version.is_delete_marker {
            return Ok(None);
        }
        let metadata = self.store().version_metadata(&version.version_id).await?;
        if let Some(meta) = meta_from_metadata(&metadata) {
            return Ok(Some(meta));
        }
        // Written by another tool (Terraform sends no such metadata): read the body.
        let object = self.store().get_version(&version.version_id).await?;
        let Ok(body) = self.open_body(object.body).await else {
            return Ok(None);
        };
        Ok(State::from_slice(&body)
            .ok()
            .map(|state| SnapshotMeta::of(&state)))
    }

    /// What one version holds and who wrote it: from the metadata s3state wrote (one HEAD),
    /// and from its body (one GET) for what the metadata lack (versions written by Terraform,
    /// or by an s3state that did not count resources). The author is only ever read from
    /// the metadata: `None` is unknown, never guessed.
    pub async fn version_details(&self, version: &ObjectVersion) -> Result<VersionDetails> {
        if version.is_delete_marker {
            return Ok(VersionDetails::default());
        }
        let metadata = self.store().version_metadata(&version.version_id).await?;
        let mut details = VersionDetails {
            meta: meta_from_metadata(&metadata),
            author: metadata::author(&metadata),
            operation: metadata::operation(&metadata),
            resources: metadata::resource_count(&metadata),
        };
        if details.meta.is_none() || details.resources.is_none() {
            let object = self.store().get_version(&version.version_id).await?;
            if let Ok(state) = State::from_slice(&object.body) {
                details.meta = Some(SnapshotMeta::of(&state));
                details.resources = state.resource_count();
            }
        }
        Ok(details)
    }

    /// The id of the version `selector` names.
    pub async fn resolve_version(&self, selector: &VersionSelector) -> Result<String> {
        let back = match selector {
            VersionSelector::Id(id) => return Ok(id.clone()),
            VersionSelector::Current => 0,
            VersionSelector::Back(n) => *n,
        };
        let versions = list_versions_checked(self.store(), MAX_LISTING_PAGE).await?;
        let location = self.store().location().to_owned();
        if back == 0 {
            // The newest entry is the current one; a delete marker there means no state.
            return match versions.first() {
                Some(v) if !v.is_delete_marker => Ok(v.version_id.clone()),
                first => Err(Error::VersionNotFound {
                    location,
                    version_id: "current".into(),
                    is_delete_marker: first.is_some(),
                }),
            };
        }
        versions
            .iter()
            .filter(|v| !v.is_delete_marker)
            .nth(back)
            .map(|v| v.version_id.clone())
            .ok_or_else(|| Error::VersionNotFound {
                location,
                version_id: format!(
                    "~{back} (the state has {} versions)",
                    versions.iter().filter(|v| !v.is_delete_marker).count()
                ),
                is_delete_marker: false,
            })
    }

    /// The snapshot stored in one version.
    pub async fn snapshot_at(&self, version_id: &str) -> Result<Snapshot> {
        let object = self.store().get_version(version_id).await?;
        let state = self
            .decode_snapshot(object.body, &format!("version {version_id}"))
            .await?;
        Ok(Snapshot {
            version_id: version_id.to_owned(),
            meta: SnapshotMeta::of(&state),
            state,
        })
    }

    /// What changed from one version to another.
    pub async fn diff_versions(
        &self,
        from: &VersionSelector,
        to: &VersionSelector,
    ) -> Result<StateDiff> {
        let from = self.snapshot_at(&self.resolve_version(from).await?).await?;
        let to = self.snapshot_at(&self.resolve_version(to).await?).await?;
        Ok(StateDiff::between(&from.state, &to.state))
    }

    /// Writes the content of `version_id` as a new snapshot on top of the current one: same
    /// lineage, serial = current + 1. Refuses a snapshot of another lineage unless `force`.
    /// When the state was deleted (its latest version is a delete marker), this brings it
    /// back, numbered after the last serial it had.
    ///
    /// It holds the state's lock while it writes, as [`RemoteState::update`] does (see
    /// [`crate::UpdateLocking`]; under the caller's lock when the caller took one through this
    /// manager): a Terraform that holds the lock is waited for, never written under.
    ///
    /// Like [`crate::Persister::persist_state`], the write is conditional on the snapshot this
    /// manager last read (it refreshes first only if it has read nothing yet). So a tool can
    /// refresh, show the operator what will change, and restore exactly onto what was shown:
    /// if anyone wrote in between, the restore fails with [`Error::Conflict`].
    ///
    /// ```no_run
    /// use s3state::{Refresher, S3Builder, VersionSelector};
    ///
    /// # async fn demo() -> s3state::Result<()> {
    /// let manager = S3Builder::from_env()
    ///     .with_bucket("tfstate")
    ///     .with_key("app/terraform.tfstate")
    ///     .build()
    ///     .await?;
    /// // Undo the last write: show what going back changes, then restore exactly onto the
    /// // snapshot that was shown.
    /// manager.refresh_state().await?;
    /// let previous = manager.resolve_version(&VersionSelector::Back(1)).await?;
    /// let diff = manager
    ///     .diff_versions(&VersionSelector::Current, &VersionSelector::Id(previous.clone()))
    ///     .await?;
    /// println!("{} outputs and {} resources change", diff.outputs.len(), diff.resources.len());
    /// let restored = manager.restore(&previous, false).await?;
    /// if restored.written {
    ///     println!("restored {} as serial {}", restored.from_version, restored.meta.serial);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn restore(&self, version_id: &str, force: bool) -> Result<Restored> {
        let snapshot = self.snapshot_at(version_id).await?;
        // Under the state's lock, as `update` takes it: a Terraform holding the lock would
        // overwrite the restored snapshot at its next persist.
        let (lock, io) = self.take_write_lock("s3state restore").await?;
        let restored = self
            .restore_holding_io(version_id, snapshot.state, force)
            .await;
        drop(io);
        self.release_write_lock(lock).await;
        restored
    }

    /// The restore itself; the caller holds the I/O lock (and the state's lock, unless
    /// locking is disabled).
    async fn restore_holding_io(
        &self,
        version_id: &str,
        snapshot: State,
        force: bool,
    ) -> Result<Restored> {
        self.refresh_if_unread().await?;
        let restored = self.restore_candidate(snapshot).await?;
        let before = self.persisted_state();
        // Written directly, not through the transient snapshot, where another task's
        // write_state could replace it.
        self.persist_candidate(restored, force, "restore").await?;
        let now = self.persisted_state().expect("just persisted");
        Ok(Restored {
            from_version: version_id.to_owned(),
            written: before.as_ref() != Some(&now),
            meta: SnapshotMeta::of(&now),
        })
    }

    /// What [`RemoteState::restore`] would write for `state` (a past snapshot's content) over
    /// the persisted snapshot this manager last read: that content, numbered exactly as the
    /// restore numbers it, or `None` when the current snapshot already has it and nothing would
    /// be written. A snapshot of another lineage is numbered as a forced restore numbers it (a
    /// restore without `force` refuses it). It refreshes only if nothing was read yet, and
    /// makes a listing request only when no state is persisted (to find the last serial).
    ///
    /// Show this, then [`RemoteState::restore`] writes what was shown, or fails with
    /// [`Error::Conflict`] if the state moved on in between.
    pub async fn restore_preview(&self, state: State) -> Result<Option<State>> {
        let _io = self.lock_io().await;
        self.refresh_if_unread().await?;
        let candidate = self.restore_candidate(state).await?;
        self.next_snapshot(candidate, self.persisted_state().as_ref(), true)
    }

    /// Restore's numbering, the one place it is decided. The content takes the current
    /// serial when the lineage is the same (the verdict then numbers it after the current
    /// snapshot, or writes nothing when the content is already there); another lineage keeps
    /// its serial for the verdict, which refuses it unless `force` (then numbering it after
    /// both serials); over a deleted state it is numbered after the last serial the state had.
    async fn restore_candidate(&self, mut restored: State) -> Result<State> {
        match self.persisted_state() {
            Some(current) => {
                if restored.lineage == current.lineage {
                    restored.serial = current.serial;
                }
            }
            None => {
                let last = restored.serial.max(self.last_serial().await?);
                restored.serial =
                    crate::remote::serial_after(last, &|| self.store().location().to_owned())?;
            }
        }
        Ok(restored)
    }

    /// Removes old versions permanently, keeping those `options` names and always the current
    /// one and the newest one with content (so a deleted state keeps a snapshot to restore);
    /// returns the versions removed (or, with `dry_run`, those that would be). With no rule at
    /// all it removes nothing: pruning everything but the newest snapshot must be asked for
    /// (`keep_newest: Some(1)`).
    pub async fn prune(&self, options: &PruneOptions) -> Result<Vec<ObjectVersion>> {
        if options.keep_newest.is_none() && options.keep_since.is_none() {
            return Ok(Vec::new());
        }
        let versions = list_versions_checked(self.store(), MAX_LISTING_PAGE).await?;
        // Newest first: how many versions with content are newer than each version. A delete
        // marker is not a snapshot, so it never takes the place of one in `keep_newest`.
        let mut with_content_before = 0;
        let doomed: Vec<ObjectVersion> = versions
            .into_iter()
            .enumerate()
            .filter(|(index, version)| {
                let newer_with_content = with_content_before;
                if !version.is_delete_marker {
                    with_content_before += 1;
                }
                let kept = *index == 0
                    || version.is_latest
                    || (!version.is_delete_marker && newer_with_content == 0)
                    || options.keep_newest.is_some_and(|n| newer_with_content < n)
                    || options
                        .keep_since
                        .is_some_and(|since| version.last_modified >= since);
                !kept
            })
            .map(|(_, version)| version)
            .collect();
        if !options.dry_run {
            for version in &doomed {
                self.store().delete_version(&version.version_id).await?;
            }
        }
        Ok(doomed)
    }

    /// The serial of the newest version with content, or 0.
    async fn last_serial(&self) -> Result<u64> {
        let versions = list_versions_checked(self.store(), MAX_LISTING_PAGE).await?;
        match versions.iter().find(|v| !v.is_delete_marker) {
            Some(version) => Ok(self
                .version_meta(version)
                .await?
                .map_or(0, |meta| meta.serial)),
            None => Ok(0),
        }
    }
}
