//! Workspaces in Terraform's S3 layout, on a real S3.

mod common;

use s3state::{Error, LockInfo, Locker, PersistentMeta, Refresher, Transient};

const KEY: &str = "demo/terraform.tfstate";

async fn keys(bucket: &str) -> Vec<String> {
    let listing = common::client()
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    listing
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
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
