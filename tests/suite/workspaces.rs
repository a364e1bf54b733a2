//! Workspaces in Terraform's S3 layout, on a real S3.

use crate::common;
use crate::common::hooks::Hooks;

use s3state::{Error, LockInfo, Locker, PersistentMeta, Refresher, Transient};

const KEY: &str = "demo/terraform.tfstate";

async fn keys(bucket: &str) -> Vec<String> {
    let request = common::client().list_objects_v2().bucket(bucket);
    let listing = request.send().await.unwrap();
    let objects = listing.contents.unwrap_or_default().into_iter();
    objects.filter_map(|o| o.key).collect()
}

#[tokio::test]
async fn workspaces_are_created_listed_and_deleted_in_terraforms_layout() {
    let bucket = common::bucket(true).await;
    let backend = common::builder(&bucket, KEY).build_backend().await.unwrap();
    assert!(
        backend.workspaces().await.unwrap().is_empty(),
        "nothing exists yet"
    );

    let dev = backend.create_workspace("dev").await.unwrap();
    backend.create_workspace("prod").await.unwrap();
    assert_eq!(
        keys(&bucket).await,
        [
            "env:/dev/demo/terraform.tfstate",
            "env:/prod/demo/terraform.tfstate"
        ]
    );
    let meta = dev.state_snapshot_meta().unwrap();
    assert_eq!(meta.serial, 1);
    assert!(uuid::Uuid::parse_str(&meta.lineage).is_ok());

    backend
        .manager("default")
        .unwrap()
        .update(common::set_output("a", 1))
        .await
        .unwrap();
    assert_eq!(
        backend.workspaces().await.unwrap(),
        ["default", "dev", "prod"]
    );

    backend.delete_workspace("dev").await.unwrap();
    assert_eq!(backend.workspaces().await.unwrap(), ["default", "prod"]);
    assert_eq!(
        common::version_count(&bucket, "env:/dev/demo/terraform.tfstate").await,
        1,
        "deleting keeps the history"
    );
    // Neither the creation nor the deletion left a lock behind.
    assert!(keys(&bucket).await.iter().all(|k| !k.ends_with(".tflock")));
}

#[tokio::test]
async fn keys_that_only_resemble_the_layout_are_not_workspaces() {
    let bucket = common::bucket(true).await;
    for key in [
        "env:/real/demo/terraform.tfstate",
        "env:/real/demo/terraform.tfstate.tflock",
        "env:/nested/deeper/demo/terraform.tfstate",
        "env:/other/demo/other.tfstate",
        "env:/backup/demo/terraform.tfstate.backup",
        "env:/demo/terraform.tfstate",
        "demo/terraform.tfstate.tflock",
    ] {
        common::put_raw(&bucket, key, b"").await;
    }
    let backend = common::builder(&bucket, KEY).build_backend().await.unwrap();
    assert_eq!(backend.workspaces().await.unwrap(), ["real"]);
}

#[tokio::test]
async fn a_custom_prefix_is_used_for_every_workspace_operation() {
    let bucket = common::bucket(true).await;
    let backend = common::builder(&bucket, KEY)
        .with_workspace_key_prefix("teams/platform")
        .build_backend()
        .await
        .unwrap();
    backend.create_workspace("staging").await.unwrap();
    common::put_raw(&bucket, "env:/ignored/demo/terraform.tfstate", b"").await;
    assert_eq!(
        keys(&bucket).await[1],
        "teams/platform/staging/demo/terraform.tfstate"
    );
    assert_eq!(backend.workspaces().await.unwrap(), ["staging"]);

    let by_builder = common::builder(&bucket, KEY)
        .with_workspace_key_prefix("teams/platform")
        .with_workspace("staging")
        .build()
        .await
        .unwrap();
    by_builder.refresh_state().await.unwrap();
    assert!(by_builder.state().is_some());
}

#[tokio::test]
async fn creating_an_existing_workspace_is_refused_without_touching_it() {
    let bucket = common::bucket(true).await;
    let backend = common::builder(&bucket, KEY).build_backend().await.unwrap();
    backend.create_workspace("dev").await.unwrap();
    let err = backend.create_workspace("dev").await.unwrap_err();
    assert!(
        matches!(&err, Error::WorkspaceExists { workspace, .. } if workspace == "dev"),
        "{err:?}"
    );
    assert_eq!(
        common::version_count(&bucket, "env:/dev/demo/terraform.tfstate").await,
        1
    );
}

#[tokio::test]
async fn the_default_workspace_and_locked_or_missing_workspaces_are_not_deleted() {
    let bucket = common::bucket(true).await;
    let backend = common::builder(&bucket, KEY).build_backend().await.unwrap();
    assert!(matches!(
        backend.delete_workspace("default").await,
        Err(Error::DefaultWorkspaceUndeletable)
    ));
    assert!(matches!(
        backend.delete_workspace("ghost").await,
        Err(Error::WorkspaceNotFound { .. })
    ));

    let dev = backend.create_workspace("dev").await.unwrap();
    let id = dev
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    let err = backend.delete_workspace("dev").await.unwrap_err();
    assert!(
        matches!(&err, Error::Locked { holder: Some(h), .. } if h.id == id),
        "{err:?}"
    );
    assert_eq!(backend.workspaces().await.unwrap(), ["dev"]);
    dev.unlock(&id).await.unwrap();
    backend.delete_workspace("dev").await.unwrap();
    assert!(backend.workspaces().await.unwrap().is_empty());
}

/// Writes the state of workspace `dev` once, with a plain PUT from another client, just before
/// the client it is installed on tries to take a lock: another writer that does not lock (an
/// older tool, an operator) changing the state between the deletion's check and its delete.
fn write_before_locking(bucket: &str, body: &'static [u8]) -> Hooks {
    let bucket = bucket.to_owned();
    let done = std::sync::atomic::AtomicBool::new(false);
    Hooks::new("write-before-locking").read_request(move |request| {
        if request.method() == "PUT"
            && request.uri().contains(".tflock")
            && !done.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let bucket = bucket.clone();
            blocking(async move { common::put_raw(&bucket, DEV_KEY, body).await });
        }
    })
}

/// Makes LocalStack (which answers 501 to a conditional DeleteObject) delete as real S3 does,
/// on stores that do not themselves (`common::store_facts`):
/// a DELETE with `If-Match` is performed only when the tag is the object's current one, and is
/// otherwise answered 412 without deleting anything.
#[derive(Debug, Clone, Default)]
struct RealS3ConditionalDeletes {
    bucket: String,
    conditional_state_deletes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    refuse: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl RealS3ConditionalDeletes {
    /// The interceptor; it shares `self`'s state.
    fn hooks(&self) -> Hooks {
        let this = self.clone();
        let refused = self.refuse.clone();
        Hooks::new("real-s3-conditional-deletes")
            .modify_request(move |request| this.make_conditional(request))
            .modify_response(move |response| {
                if refused.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    *response.status_mut() = 412.try_into().unwrap();
                }
            })
    }

    fn make_conditional(&self, request: &mut aws_sdk_s3::config::http::HttpRequest) {
        let Some(if_match) = request.headers().get("if-match").map(str::to_owned) else {
            return;
        };
        if request.method() != "DELETE" {
            return;
        }
        let is_lock = request.uri().contains(".tflock");
        if !is_lock {
            self.conditional_state_deletes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if common::store_facts().conditional_delete {
            // The store enforces the condition itself (and checks the request's signature,
            // which a rewrite here would break).
            return;
        }
        let key = if is_lock {
            format!("{DEV_KEY}.tflock")
        } else {
            DEV_KEY.to_owned()
        };
        let bucket = self.bucket.clone();
        let current = blocking(async move {
            common::client()
                .head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .ok()
                .and_then(|head| head.e_tag)
        });
        request.headers_mut().remove("if-match");
        let refuse = current.as_deref() != Some(if_match.as_str());
        if refuse {
            // Point the refused delete at a key that does not exist, so nothing is deleted.
            let uri = request.uri().replace(".tfstate", ".tfstate-refused");
            request.set_uri(uri).unwrap();
        }
        self.refuse
            .store(refuse, std::sync::atomic::Ordering::SeqCst);
    }
}

const DEV_KEY: &str = "env:/dev/demo/terraform.tfstate";
const WRITTEN_MEANWHILE: &[u8] = b"{\"written\": \"meanwhile\"}";

/// Runs `work` to completion on a runtime of its own, from synchronous code (an interceptor).
fn blocking<T: Send + 'static>(work: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work)
    })
    .join()
    .unwrap()
}

/// Deletes workspace `dev` through a client with `interceptors`, while another writer changes
/// its state just before the deletion takes the lock; then checks that the change is kept.
async fn delete_races_a_writer(
    bucket: &str,
    conditional_deletes: Option<&RealS3ConditionalDeletes>,
) {
    common::builder(bucket, KEY)
        .build_backend()
        .await
        .unwrap()
        .create_workspace("dev")
        .await
        .unwrap();
    let config = common::with_interceptor(
        common::config_for(common::endpoint())
            .interceptor(write_before_locking(bucket, WRITTEN_MEANWHILE)),
        conditional_deletes.map(RealS3ConditionalDeletes::hooks),
    );
    let backend = common::builder_with_config(bucket, KEY, config.build())
        .build_backend()
        .await
        .unwrap();

    let err = backend.delete_workspace("dev").await.unwrap_err();
    assert!(matches!(&err, Error::Conflict { .. }), "{err:?}");
    assert_eq!(
        common::get_raw(bucket, DEV_KEY).await,
        WRITTEN_MEANWHILE,
        "the state written after the check is kept"
    );
    assert_eq!(backend.workspaces().await.unwrap(), ["dev"]);
    assert!(
        keys(bucket).await.iter().all(|k| !k.ends_with(".tflock")),
        "the lock was released"
    );

    // Nothing changes it now: the same call deletes it.
    backend.delete_workspace("dev").await.unwrap();
    assert!(backend.workspaces().await.unwrap().is_empty());
    assert_eq!(common::version_count(bucket, DEV_KEY).await, 2);
}

#[tokio::test]
async fn a_workspace_written_after_delete_checked_it_is_kept_where_deletes_are_conditional() {
    let bucket = common::bucket(true).await;
    let deletes = RealS3ConditionalDeletes {
        bucket: bucket.clone(),
        ..Default::default()
    };
    delete_races_a_writer(&bucket, Some(&deletes)).await;
    assert_eq!(
        deletes
            .conditional_state_deletes
            .load(std::sync::atomic::Ordering::SeqCst),
        2,
        "each deletion of the state was conditional on the tag it checked"
    );
}

#[tokio::test]
async fn a_workspace_written_after_delete_checked_it_is_kept_where_deletes_cannot_be_conditional() {
    // LocalStack answers a conditional DeleteObject with 501: the deletion re-reads the object
    // under the lock and deletes only the snapshot it checked.
    let bucket = common::bucket(true).await;
    delete_races_a_writer(&bucket, None).await;
}

/// From issue 23, item 12: `workspace delete` removed a state that still tracked resources
/// without `--force`, which Terraform refuses (the resources would be left with no state).
#[tokio::test]
async fn a_workspace_whose_state_tracks_resources_is_deleted_only_with_force() {
    let bucket = common::bucket(true).await;
    let backend = common::builder(&bucket, KEY).build_backend().await.unwrap();
    backend.create_workspace("dev").await.unwrap();
    common::put_raw(&bucket, DEV_KEY, common::TERRAFORM_STATE).await;
    let err = backend.delete_workspace("dev").await.unwrap_err();
    assert!(
        matches!(&err, Error::WorkspaceNotEmpty { resources, .. } if *resources > 0),
        "{err:?}"
    );
    assert_eq!(
        backend.workspaces().await.unwrap(),
        ["dev"],
        "nothing deleted"
    );
    common::s3state_on(&bucket, KEY, common::temp_dir("s3state-ws"))
        .args(["workspace", "delete", "dev"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("--force"));
    common::s3state_on(&bucket, KEY, common::temp_dir("s3state-ws"))
        .args(["workspace", "delete", "--force", "dev"])
        .assert()
        .success();
    assert!(backend.workspaces().await.unwrap().is_empty());
    // An empty state needs no force.
    backend.create_workspace("empty").await.unwrap();
    backend.delete_workspace("empty").await.unwrap();
}
