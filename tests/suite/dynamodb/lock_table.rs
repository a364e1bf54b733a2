//! `dynamodb_table` as Terraform 1.15 keeps it, against LocalStack's S3 and moto's DynamoDB:
//! the lock item taken with the `.tflock` object, and the state digest.
#![cfg(feature = "dynamodb")]

use crate::common;

use s3state::dynamodb::md5_hex;
use s3state::{Error, LockInfo, Locker, RemoteState, S3Builder, S3Store, Store};
use std::time::Duration;

use common::dynamo::{dynamodb, item, put_item, table};

fn builder(bucket: &str, key: &str, table: &str) -> S3Builder {
    common::builder(bucket, key)
        .with_dynamodb_table(table)
        .with_dynamodb_client(dynamodb())
        .with_digest_wait(Duration::from_secs(1))
}

async fn manager(bucket: &str, key: &str, table: &str) -> RemoteState<S3Store> {
    builder(bucket, key, table).build().await.expect("opening")
}

async fn lock_object_exists(bucket: &str, key: &str) -> bool {
    common::object_exists(bucket, &format!("{key}.tflock")).await
}

#[tokio::test]
async fn a_lock_takes_the_lock_item_with_the_lock_object_and_excludes_another_holder() {
    let (bucket, table) = (common::bucket(true).await, table().await);
    let key = "app/terraform.tfstate";
    let ours = manager(&bucket, key, &table).await;
    let theirs = manager(&bucket, key, &table).await;

    let id = ours
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    let info: LockInfo = serde_json::from_str(
        &item(&table, &format!("{bucket}/{key}"), "Info")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(info.id, id);
    assert_eq!(info.path, format!("{bucket}/{key}"));
    assert!(lock_object_exists(&bucket, key).await);

    match theirs.lock(&LockInfo::new("OperationTypeApply")).await {
        Err(Error::Locked {
            holder: Some(holder),
            ..
        }) => assert_eq!(holder.id, id),
        other => panic!("expected Locked, got {other:?}"),
    }
    ours.unlock(&id).await.unwrap();
    assert_eq!(item(&table, &format!("{bucket}/{key}"), "Info").await, None);
    assert!(!lock_object_exists(&bucket, key).await);
    common::lock_and_unlock(&theirs, "OperationTypeApply").await;
}

#[tokio::test]
async fn a_lock_item_held_by_terraform_alone_leaves_no_orphaned_lock_object() {
    let (bucket, table) = (common::bucket(true).await, table().await);
    let key = "env:/staging/app.tfstate";
    let mut held = LockInfo::new("OperationTypeApply");
    held.path = format!("{bucket}/{key}");
    put_item(
        &table,
        &held.path,
        "Info",
        &serde_json::to_string(&held).unwrap(),
    )
    .await;
    let ours = builder(&bucket, "app.tfstate", &table)
        .with_workspace("staging")
        .build()
        .await
        .unwrap();

    match ours.lock(&LockInfo::new("OperationTypeApply")).await {
        Err(Error::Locked {
            holder: Some(holder),
            ..
        }) => assert_eq!(holder.id, held.id),
        other => panic!("expected Locked by the item's holder, got {other:?}"),
    }
    assert!(
        !lock_object_exists(&bucket, key).await,
        "the .tflock was left behind"
    );
    assert_eq!(
        ours.locker().current().await.unwrap().map(|i| i.id),
        Some(held.id.clone())
    );

    ours.locker().force_unlock(&held.id).await.unwrap();
    assert_eq!(item(&table, &held.path, "Info").await, None);
    common::lock_and_unlock(&ours, "OperationTypeApply").await;
}

#[tokio::test]
async fn force_unlock_removes_both_the_lock_object_and_the_lock_item() {
    let (bucket, table) = (common::bucket(true).await, table().await);
    let key = "app/terraform.tfstate";
    let crashed = manager(&bucket, key, &table).await;
    let id = crashed
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    let operator = manager(&bucket, key, &table).await;
    operator.locker().force_unlock(&id).await.unwrap();
    assert_eq!(item(&table, &format!("{bucket}/{key}"), "Info").await, None);
    assert!(!lock_object_exists(&bucket, key).await);
    assert!(matches!(
        operator.locker().force_unlock(&id).await,
        Err(Error::NotLocked { .. })
    ));
}

const APP_KEY: &str = "app/terraform.tfstate";

/// A fresh bucket and lock table, and a manager of `APP_KEY` that wrote its state once.
async fn written_with_a_digest() -> (String, String, RemoteState<S3Store>) {
    let (bucket, table) = (common::bucket(true).await, table().await);
    let ours = manager(&bucket, APP_KEY, &table).await;
    ours.update(common::set_output("a", 1)).await.unwrap();
    (bucket, table, ours)
}

#[tokio::test]
async fn every_state_write_keeps_the_digest_and_deleting_a_workspace_removes_it() {
    let (bucket, table, ours) = written_with_a_digest().await;
    let key = APP_KEY;
    let digest = |key: String| {
        let (table, bucket) = (table.clone(), bucket.clone());
        async move { item(&table, &format!("{bucket}/{key}-md5"), "Digest").await }
    };
    let body = common::get_raw(&bucket, key).await;
    assert_eq!(digest(key.into()).await, Some(md5_hex(&body)));
    ours.update(common::set_output("a", 2)).await.unwrap();
    let body = common::get_raw(&bucket, key).await;
    assert_eq!(digest(key.into()).await, Some(md5_hex(&body)));
    // No lock item is left, and the lock object has no digest of its own.
    assert_eq!(item(&table, &format!("{bucket}/{key}"), "Info").await, None);
    assert_eq!(digest(format!("{key}.tflock")).await, None);

    let backend = builder(&bucket, key, &table).build_backend().await.unwrap();
    backend.create_workspace("staging").await.unwrap();
    let staging = "env:/staging/app/terraform.tfstate".to_owned();
    let body = common::get_raw(&bucket, &staging).await;
    assert_eq!(digest(staging.clone()).await, Some(md5_hex(&body)));
    backend.delete_workspace("staging").await.unwrap();
    assert_eq!(digest(staging).await, None);
}

#[tokio::test]
async fn a_stale_digest_is_a_typed_error_naming_both_and_repair_fixes_it() {
    let (bucket, table, _ours) = written_with_a_digest().await;
    let key = APP_KEY;
    let body = common::get_raw(&bucket, key).await;
    let stale = "0123456789abcdef0123456789abcdef";
    put_item(&table, &format!("{bucket}/{key}-md5"), "Digest", stale).await;

    let reader = manager(&bucket, key, &table).await;
    match s3state::Refresher::refresh_state(&reader).await {
        Err(Error::DigestMismatch {
            expected,
            actual,
            table: named,
            ..
        }) => {
            assert_eq!(expected, stale);
            assert_eq!(actual, Some(md5_hex(&body)));
            assert_eq!(named, table);
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert_eq!(
        reader.store().repair_digest().await.unwrap(),
        Some(md5_hex(&body))
    );
    s3state::Refresher::refresh_state(&reader).await.unwrap();
    assert!(reader.store().get(None).await.is_ok());
}

#[tokio::test]
async fn a_push_compares_the_digest_as_a_read_does_and_writes_nothing_when_it_is_stale() {
    let (bucket, table, ours) = written_with_a_digest().await;
    let key = APP_KEY;
    let mut next = s3state::Transient::state(&ours).unwrap();
    next.serial += 1;
    next.outputs
        .insert("b".into(), s3state::OutputValue::new(&2));
    let stale = "0123456789abcdef0123456789abcdef";
    put_item(&table, &format!("{bucket}/{key}-md5"), "Digest", stale).await;

    // A head carries no body to compare with the digest: the push reads the body, as Terraform
    // does, and refuses to write over a state that fails the check.
    let pusher = manager(&bucket, key, &table).await;
    let refused = pusher.push(next.clone(), false).await.unwrap_err();
    assert!(
        matches!(refused, Error::DigestMismatch { .. }),
        "{refused:?}"
    );
    assert_eq!(common::version_count(&bucket, key).await, 1);

    pusher.store().repair_digest().await.unwrap();
    assert!(pusher.push(next, false).await.unwrap().written);
    assert_eq!(common::version_count(&bucket, key).await, 2);
}

#[tokio::test]
async fn a_manager_made_over_build_store_takes_the_lock_item_too() {
    let (bucket, table) = (common::bucket(true).await, table().await);
    let key = "store/terraform.tfstate";
    let store = builder(&bucket, key, &table).build_store().await.unwrap();
    let manager = RemoteState::new(store);
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    let held = item(&table, &format!("{bucket}/{key}"), "Info")
        .await
        .expect("the lock item was taken with the .tflock");
    assert!(held.contains(&id), "{held}");
    manager.unlock(&id).await.unwrap();
    assert_eq!(item(&table, &format!("{bucket}/{key}"), "Info").await, None);
}
