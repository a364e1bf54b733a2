//! Terraform's S3 workspace layout: the default workspace's state is at `key`, workspace `W`'s
//! at `<workspace_key_prefix>/W/<key>` (prefix `env:` by default).

use super::S3Store;
use super::config::S3Config;
use super::errors::{is_access_denied, is_missing, sdk_error};
use super::layout::{DEFAULT_WORKSPACE, validate_workspace};
use super::with_customer_key;
use crate::error::{Error, Result};
use crate::remote::{RemoteState, RemoteStateOptions};
use crate::state::State;
use crate::statemgr::{LockInfo, Locker, Persister, Refresher, Transient};
use crate::store::{DeleteOutcome, ETag, Fetched, Store};
use std::sync::Arc;

/// A bucket, a state key and a workspace prefix: every workspace's state, and the operations
/// across them. Built by [`super::S3Builder::build_backend`]; cheap to clone.
///
/// ```no_run
/// # async fn demo() -> s3state::Result<()> {
/// use s3state::S3Builder;
/// let backend = S3Builder::from_env().with_bucket("tfstate").with_key("app/terraform.tfstate")
///     .build_backend().await?;
/// backend.create_workspace("staging").await?;          // env:/staging/app/terraform.tfstate
/// assert!(backend.workspaces().await?.contains(&"staging".to_string()));
/// let staging = backend.manager("staging")?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct S3Backend {
    /// The client, bucket and settings, shared with every store opened here.
    pub(super) config: Arc<S3Config>,
    /// The default workspace's state key.
    pub(super) key: String,
    pub(super) workspace_key_prefix: String,
    pub(super) options: RemoteStateOptions,
}

impl S3Backend {
    /// Checks `workspace` against Terraform's rule for workspace names, as every method here
    /// does before any request: only ASCII letters, digits and `- _ . ~ $ & + : = @` (a name
    /// that reads the same after URL path escaping), and not empty, `.` or `..`. A bad name is
    /// [`Error::InvalidConfig`] for the `workspace` field.
    pub fn validate_workspace_name(workspace: &str) -> Result<()> {
        validate_workspace(workspace)
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.config.bucket
    }

    /// The state key of `workspace`.
    pub fn state_key(&self, workspace: &str) -> Result<String> {
        super::layout::state_key(&self.key, &self.workspace_key_prefix, workspace)
    }

    /// The store of `workspace`'s state object.
    pub fn store(&self, workspace: &str) -> Result<S3Store> {
        Ok(S3Store::new(Arc::clone(&self.config), self.state_key(workspace)?).with_state_digest())
    }

    /// The store of the object at `key` in this backend's bucket, with its encryption and
    /// retry settings, for callers that address states by key (the HTTP gateway). The caller
    /// validates `key`.
    #[cfg(feature = "server")]
    pub(crate) fn store_at_key(&self, key: String) -> S3Store {
        // A state: its digest is kept in the lock table, when one is configured.
        S3Store::new(Arc::clone(&self.config), key).with_state_digest()
    }

    /// A state manager for `workspace`. It does no I/O until asked.
    pub fn manager(&self, workspace: &str) -> Result<RemoteState<S3Store>> {
        // The store brings its table's lock item, if any (`Store::secondary_lock`).
        Ok(RemoteState::with_options(
            self.store(workspace)?,
            self.options.clone(),
        ))
    }

    /// The workspaces that have a state: `default` first when its state exists, then the
    /// others sorted by name. Found as Terraform finds them, by listing `<prefix>/`; keys that
    /// only resemble the layout (a nested path, another key, a lock object) are not
    /// workspaces. Without permission to list the prefix, only `default` is reported, as
    /// Terraform does.
    ///
    /// This differs from `terraform workspace list` in one way: Terraform always lists
    /// `default`, because that workspace exists before anything is written to it, while this
    /// lists `default` only when its state object exists, so a caller can tell whether there is
    /// a state to read. To show Terraform's list, put `default` first when it is missing (as
    /// `s3state workspace list` does).
    pub async fn workspaces(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        if self.store(DEFAULT_WORKSPACE)?.exists().await? {
            names.push(DEFAULT_WORKSPACE.to_owned());
        }
        let prefix = format!("{}/", self.workspace_key_prefix);
        let mut others = Vec::new();
        let mut pages = self
            .config
            .client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                Err(err) if is_access_denied(&err) => {
                    tracing::warn!(bucket = %self.config.bucket, %prefix, "no permission to list workspaces; reporting only the default workspace");
                    return Ok(names);
                }
                Err(err) => {
                    return Err(sdk_error(
                        "ListObjectsV2",
                        &format!("s3://{}/{prefix}", self.config.bucket),
                        err,
                    ));
                }
            };
            for object in page.contents() {
                if let Some(name) = object.key().and_then(|key| self.workspace_of(&prefix, key)) {
                    others.push(name.to_owned());
                }
            }
        }
        others.sort();
        others.dedup();
        names.extend(others);
        Ok(names)
    }

    /// The workspace whose state `key` is, if it is one.
    fn workspace_of<'k>(&self, prefix: &str, key: &'k str) -> Option<&'k str> {
        let (name, rest) = key.strip_prefix(prefix)?.split_once('/')?;
        (rest == self.key && !name.is_empty() && name != DEFAULT_WORKSPACE).then_some(name)
    }

    /// Creates `workspace` with an empty state (a new lineage, serial 1), under the
    /// workspace's lock, as Terraform does. Fails if it already exists.
    pub async fn create_workspace(&self, workspace: &str) -> Result<RemoteState<S3Store>> {
        let manager = self.manager(workspace)?;
        let lock_id = manager.lock(&LockInfo::new("init")).await?;
        let created = async {
            manager.refresh_state().await?;
            if manager.state().is_some() {
                return Err(Error::WorkspaceExists {
                    workspace: workspace.to_owned(),
                    location: manager.store().location().to_owned(),
                });
            }
            manager.write_state(State::new(self.options.new_state_terraform_version.clone()));
            manager.persist_state().await
        }
        .await;
        let unlocked = manager.unlock(&lock_id).await;
        created?;
        unlocked?;
        Ok(manager)
    }

    /// Deletes `workspace`'s state. Refuses `default`, and refuses while the workspace is
    /// locked by someone else ([`Error::Locked`]); it takes the lock itself for the deletion.
    /// The state object gets a delete marker; bucket versioning keeps every earlier snapshot.
    ///
    /// Only the snapshot that was checked is deleted: the delete is conditional on the ETag
    /// read first (`If-Match`), so a state written in between (by a writer that does not lock)
    /// is kept and the call fails with [`Error::Conflict`]. Where the store cannot delete
    /// conditionally, the object is re-read under the lock and deleted only if it still has
    /// that ETag.
    ///
    /// As Terraform's `workspace delete`, a state that still tracks managed resources is
    /// refused ([`Error::WorkspaceNotEmpty`]): they would be left with no state to manage
    /// them. [`S3Backend::delete_workspace_forced`] deletes it anyway.
    pub async fn delete_workspace(&self, workspace: &str) -> Result<()> {
        self.delete_workspace_checked(workspace, false).await
    }

    /// [`S3Backend::delete_workspace`], whatever the state holds (Terraform's
    /// `workspace delete -force`): its resources are no longer tracked by any state, though
    /// the bucket's versions keep the snapshot.
    pub async fn delete_workspace_forced(&self, workspace: &str) -> Result<()> {
        self.delete_workspace_checked(workspace, true).await
    }

    async fn delete_workspace_checked(&self, workspace: &str, force: bool) -> Result<()> {
        validate_workspace(workspace)?;
        if workspace == DEFAULT_WORKSPACE {
            return Err(Error::DefaultWorkspaceUndeletable);
        }
        let manager = self.manager(workspace)?;
        let store = manager.store();
        let checked = if force {
            current_etag(store).await?
        } else {
            // As Terraform: a state that still tracks resources is not deleted without force,
            // or those resources would be left running with no state to manage them.
            match store.get(None).await? {
                Fetched::Found(object) => {
                    let resources = managed_resources(&object.body);
                    if resources > 0 {
                        return Err(Error::WorkspaceNotEmpty {
                            workspace: workspace.to_owned(),
                            location: store.location().to_owned(),
                            resources,
                        });
                    }
                    Some(object.etag)
                }
                _ => None,
            }
        };
        let Some(checked) = checked else {
            return Err(not_found(workspace, store));
        };
        let lock_id = manager.lock(&LockInfo::new("workspace delete")).await?;
        let deleted = delete_if_unchanged(workspace, store, &checked).await;
        let unlocked = manager.unlock(&lock_id).await;
        deleted?;
        unlocked
    }
}

/// How many managed resource instances the state in `body` tracks (data sources aside). An
/// object that is not a state tracks none that any Terraform could manage (its snapshot stays
/// in the bucket's versions); a state whose resource list cannot be read counts as one, so it
/// is never taken for empty.
fn managed_resources(body: &[u8]) -> usize {
    let Ok(state) = crate::state::State::from_slice(body) else {
        return 0;
    };
    state
        .instances()
        .map(|instances| {
            instances
                .iter()
                .filter(|i| i.resource.mode == crate::state::ResourceMode::Managed)
                .count()
        })
        .unwrap_or(1)
}

fn not_found(workspace: &str, store: &S3Store) -> Error {
    Error::WorkspaceNotFound {
        workspace: workspace.to_owned(),
        location: store.location().to_owned(),
    }
}

/// The state object changed after it was checked; nothing was deleted.
fn changed(store: &S3Store) -> Error {
    Error::Conflict {
        location: store.location().to_owned(),
        remote: None,
    }
}

/// The ETag of the object's current version, by HEAD (a large state is not downloaded), or
/// `None` when it does not exist.
async fn current_etag(store: &S3Store) -> Result<Option<ETag>> {
    let request = store
        .client()
        .head_object()
        .bucket(store.bucket())
        .key(store.key());
    match with_customer_key!(request, &store.config.sse).send().await {
        Ok(output) => Ok(Some(ETag::new(output.e_tag.unwrap_or_default()))),
        Err(err) if is_missing(&err) => Ok(None),
        Err(err) => Err(sdk_error("HeadObject", store.location(), err)),
    }
}

/// Deletes the state object only if it still has the tag `checked`. The caller holds the lock.
async fn delete_if_unchanged(workspace: &str, store: &S3Store, checked: &ETag) -> Result<()> {
    match store.delete(Some(checked)).await? {
        DeleteOutcome::Deleted => Ok(()),
        DeleteOutcome::PreconditionFailed => Err(changed(store)),
        DeleteOutcome::Absent => Err(not_found(workspace, store)),
        DeleteOutcome::ConditionalUnsupported => {
            // The store cannot delete conditionally (LocalStack answers 501). We hold the lock,
            // so no writer that honours it can change the object between this re-read and the
            // delete: delete it only if it is still the snapshot that was checked.
            match current_etag(store).await? {
                None => Err(not_found(workspace, store)),
                Some(etag) if etag != *checked => Err(changed(store)),
                Some(_) => match store.delete(None).await {
                    Ok(_) => Ok(()),
                    // No answer: the delete may have been applied. Re-read to learn which.
                    Err(err) => match current_etag(store).await {
                        Ok(None) => Ok(()),
                        _ => Err(err),
                    },
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::Client;

    /// A backend whose endpoint accepts no connection: a request would fail as a store error,
    /// so an `InvalidConfig` proves the name was refused before any request.
    fn unreachable_backend() -> S3Backend {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
            .build();
        S3Backend {
            config: Arc::new(S3Config {
                client: Client::from_conf(config),
                bucket: "bucket".into(),
                sse: None,
                conflict_retries: 0,
                conditional_delete: Default::default(),
                checksums: Default::default(),
                lock_table: Default::default(),
                endpoint: None,
            }),
            key: "app/terraform.tfstate".into(),
            workspace_key_prefix: "env:".into(),
            options: RemoteStateOptions::default(),
        }
    }

    fn assert_refused(result: Result<impl std::fmt::Debug>, name: &str) {
        match result {
            Err(Error::InvalidConfig { field, message, .. }) => {
                assert_eq!(field, "workspace", "{name:?}");
                assert!(message.contains("not a valid workspace name"), "{message}");
            }
            other => panic!("{name:?}: expected a refused workspace name, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn every_backend_method_refuses_dot_segments_slashes_and_empty_names_before_any_request()
    {
        let backend = unreachable_backend();
        for name in ["", ".", "..", "a/b", "../../etc", "a b"] {
            assert_refused(S3Backend::validate_workspace_name(name), name);
            assert_refused(backend.state_key(name), name);
            assert_refused(backend.store(name), name);
            assert_refused(backend.manager(name), name);
            assert_refused(backend.create_workspace(name).await, name);
            assert_refused(backend.delete_workspace(name).await, name);
        }
        assert_eq!(
            backend.state_key("a.b").unwrap(),
            "env:/a.b/app/terraform.tfstate"
        );
        assert_eq!(
            backend.state_key("default").unwrap(),
            "app/terraform.tfstate"
        );
    }
}
