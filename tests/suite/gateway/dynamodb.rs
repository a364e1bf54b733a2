//! The gateway over a bucket whose S3-backend Terraforms lock through a DynamoDB table
//! (`[s3] dynamodb_table`), against LocalStack's S3 and moto's DynamoDB: its locks take the
//! table's lock item too, a lock held only in the table (a Terraform without `use_lockfile`)
//! refuses the gateway's locks and writes, and every write keeps the state digest Terraform
//! compares on read.
#![cfg(feature = "dynamodb")]

use crate::common;
use crate::common::gateway;

use common::dynamo::{dynamodb, item, put_item, table};
use gateway::{ADMIN, Running, WRITER, key, lock_body, send, state_body};
use s3state::LockInfo;
use s3state::dynamodb::md5_hex;

const LINEAGE: &str = "d1d1d1d1-2222-3333-4444-555555555555";

async fn gateway_with_table() -> (Running, String) {
    let bucket = common::bucket(true).await;
    let table = table().await;
    let mut config = gateway::config(&bucket);
    config.s3.dynamodb_table = Some(table.clone());
    config.s3.dynamodb_client = Some(dynamodb());
    (gateway::start_with(config).await, table)
}

/// The `LockID` of state `name`'s lock item, as Terraform keys it: `<bucket>/<key>`.
fn lock_item_id(gateway: &Running, name: &str) -> String {
    format!("{}/{}", gateway.bucket, key(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_through_the_gateway_keeps_the_digest_terraform_compares() {
    let (gateway, table) = gateway_with_table().await;
    let digest_id = format!("{}-md5", lock_item_id(&gateway, "app"));

    let first = state_body(LINEAGE, 1, 1);
    let written = send(gateway.addr, "POST", "/app", Some(WRITER), &first).await;
    assert_eq!(written.status, 200, "{}", written.text());
    assert_eq!(
        item(&table, &digest_id, "Digest").await,
        Some(md5_hex(&first))
    );

    let second = state_body(LINEAGE, 2, 2);
    let written = send(gateway.addr, "POST", "/app", Some(WRITER), &second).await;
    assert_eq!(written.status, 200, "{}", written.text());
    assert_eq!(
        item(&table, &digest_id, "Digest").await,
        Some(md5_hex(&second))
    );

    // A read compares it, as Terraform's does: a digest another tool left stale is an error
    // (after the wait), not a silent read of what may be an old state.
    let read = send(gateway.addr, "GET", "/app", Some(WRITER), b"").await;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.body, second);

    let deleted = send(gateway.addr, "DELETE", "/app", Some(ADMIN), b"").await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    assert_eq!(item(&table, &digest_id, "Digest").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_lock_takes_the_tables_lock_item_and_unlock_releases_both() {
    let (gateway, table) = gateway_with_table().await;
    let id = "0b1c2d3e-0000-4000-8000-00000000000a";

    let locked = send(
        gateway.addr,
        "LOCK",
        "/net",
        Some(WRITER),
        &lock_body(id, "ci@runner"),
    )
    .await;
    assert_eq!(locked.status, 200, "{}", locked.text());
    let info = item(&table, &lock_item_id(&gateway, "net"), "Info")
        .await
        .expect("the lock item was taken with the .tflock");
    let info: LockInfo = serde_json::from_str(&info).unwrap();
    assert_eq!(info.id, id);

    let written = send(
        gateway.addr,
        "POST",
        &format!("/net?ID={id}"),
        Some(WRITER),
        &state_body(LINEAGE, 1, 1),
    )
    .await;
    assert_eq!(written.status, 200, "{}", written.text());

    let unlocked = send(
        gateway.addr,
        "UNLOCK",
        "/net",
        Some(WRITER),
        &lock_body(id, "ci@runner"),
    )
    .await;
    assert_eq!(unlocked.status, 200, "{}", unlocked.text());
    assert_eq!(
        item(&table, &lock_item_id(&gateway, "net"), "Info").await,
        None
    );
    assert!(
        !common::object_exists(&gateway.bucket, &format!("{}.tflock", key("net"))).await,
        "the .tflock was left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_only_in_the_table_refuses_the_gateways_locks_and_writes() {
    let (gateway, table) = gateway_with_table().await;
    let before = state_body(LINEAGE, 1, 1);
    assert_eq!(
        send(gateway.addr, "POST", "/db", Some(WRITER), &before)
            .await
            .status,
        200
    );
    // A Terraform with `dynamodb_table` and without `use_lockfile` takes only the item.
    let mut terraform = LockInfo::new("OperationTypeApply");
    terraform.path = lock_item_id(&gateway, "db");
    put_item(
        &table,
        &terraform.path,
        "Info",
        &serde_json::to_string(&terraform).unwrap(),
    )
    .await;

    let lock = send(
        gateway.addr,
        "LOCK",
        "/db",
        Some(WRITER),
        &lock_body("0b1c2d3e-0000-4000-8000-00000000000b", "ci@runner"),
    )
    .await;
    assert_eq!(lock.status, 423, "{}", lock.text());
    assert_eq!(lock.json()["ID"], terraform.id.as_str(), "names the holder");
    assert!(
        !common::object_exists(&gateway.bucket, &format!("{}.tflock", key("db"))).await,
        "a refused lock left its .tflock behind"
    );

    for path in ["/db".to_owned(), format!("/db?ID={}", terraform.id)] {
        let write = send(
            gateway.addr,
            "POST",
            &path,
            Some(WRITER),
            &state_body(LINEAGE, 2, 2),
        )
        .await;
        assert_eq!(write.status, 423, "{path}: {}", write.text());
    }
    let stored = send(gateway.addr, "GET", "/db", Some(WRITER), b"").await;
    assert_eq!(
        stored.body, before,
        "nothing was written under Terraform's lock"
    );

    // An admin's force-unlock clears the item, and the gateway locks again.
    let forced = send(gateway.addr, "UNLOCK", "/db", Some(ADMIN), b"").await;
    assert_eq!(forced.status, 200, "{}", forced.text());
    assert_eq!(item(&table, &terraform.path, "Info").await, None);
}
