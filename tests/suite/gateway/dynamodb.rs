//! The gateway over a bucket whose S3-backend Terraforms lock through a DynamoDB table
//! (`[s3] dynamodb_table`), against LocalStack's S3 and moto's DynamoDB: its locks take the
//! table's lock item too, a lock held only in the table (a Terraform without `use_lockfile`)
//! refuses the gateway's locks and writes, and every write keeps the state digest Terraform
//! compares on read. Then the table attacked: a `.tflock` without its item (a crash halfway),
//! a Terraform holding the item alone, non-admin unlocks and deletes with Terraform's ID, a
//! lost digest update, a missing table.
#![cfg(feature = "dynamodb")]

use crate::common;
use crate::common::gateway;
use aws_sdk_dynamodb::types::AttributeValue;
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

// ---------------------------------------------------------------------------------------------
// The gateway's DynamoDB table attacked
//
// Adversarial review of the gateway's `[s3] dynamodb_table` support (LocalStack S3, moto
// DynamoDB). Each test was written against a problem the review found (the doc comment says
// what went wrong); all were fixed, and the tests now assert the fixed behaviour.
// ---------------------------------------------------------------------------------------------

const SECOND_LINEAGE: &str = "abababab-2222-3333-4444-555555555555";

/// A gateway with the table, and a second one over the same bucket without it (used only to
/// leave a `.tflock` exactly as the table gateway writes it before it takes the item: the
/// state a crash between the two leaves behind).
async fn gateways() -> (Running, Running, String) {
    let bucket = common::bucket(true).await;
    let table = table().await;
    let mut config = gateway::config(&bucket);
    config.s3.dynamodb_table = Some(table.clone());
    config.s3.dynamodb_client = Some(dynamodb());
    let with_table = gateway::start_with(config).await;
    let plain = gateway::start_with(gateway::config(&bucket)).await;
    (with_table, plain, table)
}

/// What a Terraform with `dynamodb_table` (no `use_lockfile`) does to lock: a conditional
/// PutItem. `true` when it got the lock.
async fn terraform_takes_item(table: &str, lock_id: &str) -> (bool, LockInfo) {
    let mut info = LockInfo::new("OperationTypeApply");
    info.path = lock_id.to_owned();
    let put = dynamodb()
        .put_item()
        .table_name(table)
        .item("LockID", AttributeValue::S(lock_id.into()))
        .item(
            "Info",
            AttributeValue::S(serde_json::to_string(&info).unwrap()),
        )
        .condition_expression("attribute_not_exists(LockID)")
        .send()
        .await;
    (put.is_ok(), info)
}

async fn seed(gateway: &Running, name: &str) -> Vec<u8> {
    let body = state_body(SECOND_LINEAGE, 1, 1);
    let written = send(
        gateway.addr,
        "POST",
        &format!("/{name}"),
        Some(WRITER),
        &body,
    )
    .await;
    assert_eq!(written.status, 200, "{}", written.text());
    body
}

// ---------------------------------------------------------------------------------------
// 1. A `.tflock` without its table item

/// The gateway crashed (or its `.tflock` release failed 5 times) after the `.tflock` PUT and
/// before the item PUT. Terraform's http backend retries the LOCK with the same ID: the
/// "repeated request" path answers 200 from the `.tflock` alone, and never takes the item.
///
/// From the adversarial review of the gateway's `[s3] dynamodb_table` support.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_lock_over_its_own_orphan_tflock_takes_the_table_item_or_is_refused() {
    let (gateway, plain, table) = gateways().await;
    seed(&gateway, "app").await;
    let id = "0b1c2d3e-0000-4000-8000-0000000000a1";
    // The first LOCK: its .tflock landed, then the gateway died before the item.
    let first = send(
        plain.addr,
        "LOCK",
        "/app",
        Some(WRITER),
        &lock_body(id, "ci"),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(
        item(&table, &lock_item_id(&gateway, "app"), "Info").await,
        None
    );

    // The client's retry of the same LOCK.
    let retry = send(
        gateway.addr,
        "LOCK",
        "/app",
        Some(WRITER),
        &lock_body(id, "ci"),
    )
    .await;
    assert_eq!(retry.status, 200, "{}", retry.text());

    // The gateway's client now believes it holds the lock; a DynamoDB-only Terraform must
    // be refused.
    let (terraform_got_it, _) = terraform_takes_item(&table, &lock_item_id(&gateway, "app")).await;
    assert!(
        !terraform_got_it,
        "LOCK answered 200, yet a DynamoDB-only Terraform took the lock item too: both hold the lock"
    );
}

/// Same orphan `.tflock`, but a DynamoDB-only Terraform took the (free) item first. `read_lock`
/// looks at the table only when there is no `.tflock`, so POST ?ID=<the .tflock's ID> is
/// accepted while Terraform holds the table lock; Terraform's blind PUT then overwrites it.
///
/// From the adversarial review of the gateway's `[s3] dynamodb_table` support.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_under_a_tflock_is_refused_while_terraform_holds_the_table_item() {
    let (gateway, plain, table) = gateways().await;
    seed(&gateway, "app").await;
    let id = "0b1c2d3e-0000-4000-8000-0000000000a2";
    let first = send(
        plain.addr,
        "LOCK",
        "/app",
        Some(WRITER),
        &lock_body(id, "ci"),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text());

    // A Terraform with dynamodb_table and no use_lockfile: gets the lock.
    let (terraform_got_it, terraform) =
        terraform_takes_item(&table, &lock_item_id(&gateway, "app")).await;
    assert!(terraform_got_it);

    // The gateway's client retries its LOCK (lost answer / -lock-timeout): 200 today.
    let retry = send(
        gateway.addr,
        "LOCK",
        "/app",
        Some(WRITER),
        &lock_body(id, "ci"),
    )
    .await;
    eprintln!("retried LOCK: {} {}", retry.status, retry.text());

    let mine = state_body(SECOND_LINEAGE, 2, 2);
    let post = send(
        gateway.addr,
        "POST",
        &format!("/app?ID={id}"),
        Some(WRITER),
        &mine,
    )
    .await;
    if post.status == 200 {
        // Terraform (holding the table lock) now writes its state blindly, as it does.
        let theirs = state_body(SECOND_LINEAGE, 2, 99);
        common::put_raw(&gateway.bucket, &key("app"), &theirs).await;
        put_item(
            &table,
            &format!("{}-md5", terraform.path),
            "Digest",
            &md5_hex(&theirs),
        )
        .await;
        let now = common::get_raw(&gateway.bucket, &key("app")).await;
        assert_ne!(now, mine, "(the gateway's acknowledged write is gone)");
    }
    assert!(
        [409, 423].contains(&post.status),
        "a write was accepted while Terraform {} held the table lock: {} {}",
        terraform.id,
        post.status,
        post.text()
    );
    assert_ne!(common::get_raw(&gateway.bucket, &key("app")).await, mine);
}

// ---------------------------------------------------------------------------------------
// 2. A table-only Terraform's lock, as a non-admin sees it

/// The 423 answer names Terraform's lock ID to any writer; an UNLOCK carrying that ID is not a
/// force-unlock, so a non-admin removes a lock that no gateway client can ever hold, and can
/// then lock and write while Terraform is mid-apply.
///
/// From the adversarial review of the gateway's `[s3] dynamodb_table` support.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_admin_unlock_with_terraforms_id_cannot_remove_its_table_only_lock() {
    let (gateway, _plain, table) = gateways().await;
    seed(&gateway, "db").await;
    let (got, terraform) = terraform_takes_item(&table, &lock_item_id(&gateway, "db")).await;
    assert!(got);

    let refused = send(
        gateway.addr,
        "LOCK",
        "/db",
        Some(WRITER),
        &lock_body("0b1c2d3e-0000-4000-8000-0000000000b1", "ci"),
    )
    .await;
    assert_eq!(refused.status, 423);
    let shown = refused.json()["ID"].as_str().unwrap().to_owned();
    assert_eq!(shown, terraform.id, "the 423 hands out Terraform's lock ID");

    let unlock = send(
        gateway.addr,
        "UNLOCK",
        "/db",
        Some(WRITER),
        &lock_body(&shown, "ci"),
    )
    .await;
    let still_held = item(&table, &terraform.path, "Info").await.is_some();
    assert!(
        unlock.status == 403 && still_held,
        "a writer (not admin) unlocked Terraform's table-only lock: {} {}, item still there: {still_held}",
        unlock.status,
        unlock.text()
    );
}

/// DELETE checks only that ?ID= equals the holder's ID; unlike POST it does not refuse a lock
/// held only in the table, so the state is deleted under a running Terraform's lock.
///
/// From the adversarial review of the gateway's `[s3] dynamodb_table` support.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_with_terraforms_id_is_refused_under_its_table_only_lock() {
    let (gateway, _plain, table) = gateways().await;
    seed(&gateway, "db").await;
    let (got, terraform) = terraform_takes_item(&table, &lock_item_id(&gateway, "db")).await;
    assert!(got);

    let deleted = send(
        gateway.addr,
        "DELETE",
        &format!("/db?ID={}", terraform.id),
        Some(WRITER),
        b"",
    )
    .await;
    let exists = common::object_exists(&gateway.bucket, &key("db")).await;
    assert!(
        deleted.status == 423 && exists,
        "DELETE under Terraform's table-only lock: {} {}, state still there: {exists}",
        deleted.status,
        deleted.text()
    );
}

/// A LOCK carrying the table-only holder's ID takes the `.tflock`, is refused the item, lets
/// the `.tflock` go, and then answers 200 ("repeated request") for a lock it does not hold.
///
/// From the adversarial review of the gateway's `[s3] dynamodb_table` support.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_with_the_table_holders_id_is_refused() {
    let (gateway, _plain, table) = gateways().await;
    seed(&gateway, "db").await;
    let (got, terraform) = terraform_takes_item(&table, &lock_item_id(&gateway, "db")).await;
    assert!(got);
    let lock = send(
        gateway.addr,
        "LOCK",
        "/db",
        Some(WRITER),
        &lock_body(&terraform.id, "ci"),
    )
    .await;
    assert_eq!(
        lock.status,
        423,
        "LOCK answered {} for a lock only Terraform holds: {}",
        lock.status,
        lock.text()
    );
}

// ---------------------------------------------------------------------------------------
// 3. Digest

/// A GET of a state whose digest is stale: after the 10 s wait, 502 naming both digests, with
/// no password or credential in the answer; history still serves versions.
///
/// From the adversarial review of the gateway's `[s3] dynamodb_table` support.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_digest_get_is_a_502_naming_the_digests_and_no_secret() {
    let (gateway, _plain, table) = gateways().await;
    let body = seed(&gateway, "s").await;
    let stale = "0123456789abcdef0123456789abcdef";
    put_item(
        &table,
        &format!("{}-md5", lock_item_id(&gateway, "s")),
        "Digest",
        stale,
    )
    .await;
    let read = send(gateway.addr, "GET", "/s", Some(WRITER), b"").await;
    let text = read.text();
    eprintln!("{} {text}", read.status);
    assert_eq!(read.status, 502);
    assert!(
        text.contains(stale) && text.contains(&md5_hex(&body)),
        "{text}"
    );
    for secret in [WRITER.1, ADMIN.1, "argon2", "Basic "] {
        assert!(!text.contains(secret), "{text}");
    }
    let history = send(gateway.addr, "GET", "/_history/s", Some(WRITER), b"").await;
    assert_eq!(history.status, 200, "{}", history.text());
}

/// The gateway died after a write's PUT and before its digest (or the 3 digest attempts
/// failed, which is answered 200 "written"). Found: the gateway's write path compared the
/// digest first, so the client's retry of that very write, and every later LOCK/POST, waited
/// 10 s and failed with 502 until an operator repaired it. Now the write path reads without
/// the digest (its write is conditional anyway), and a repeated write repairs the digest.
///
/// From the adversarial review of the gateway's `[s3] dynamodb_table` support.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_after_a_lost_digest_update_succeeds_and_repairs_the_digest() {
    let (gateway, _plain, table) = gateways().await;
    let first = seed(&gateway, "w").await;
    let second = state_body(SECOND_LINEAGE, 2, 2);
    let written = send(gateway.addr, "POST", "/w", Some(WRITER), &second).await;
    assert_eq!(written.status, 200);
    // The digest update of the second write never happened.
    put_item(
        &table,
        &format!("{}-md5", lock_item_id(&gateway, "w")),
        "Digest",
        &md5_hex(&first),
    )
    .await;
    let retry = send(gateway.addr, "POST", "/w", Some(WRITER), &second).await;
    assert_eq!(
        retry.status,
        200,
        "the retry of an applied write: {}",
        retry.text()
    );
    assert_eq!(
        item(
            &table,
            &format!("{}-md5", lock_item_id(&gateway, "w")),
            "Digest"
        )
        .await,
        Some(md5_hex(&second)),
        "the retry repairs the digest"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Config

/// From the adversarial review of the gateway's `[s3] dynamodb_table` support.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_table_name_is_refused_at_start() {
    let bucket = common::bucket(true).await;
    for name in ["", "   "] {
        let mut config = gateway::config(&bucket);
        config.s3.dynamodb_table = Some(name.into());
        config.s3.dynamodb_client = Some(dynamodb());
        let error = s3state::server::Gateway::bind(config)
            .await
            .expect_err("an empty table name was accepted");
        assert!(error.to_string().contains("dynamodb_table"), "{error}");
    }
}

/// A table that does not exist (a typo) is not noticed at start: every LOCK is then a 503
/// "outcome unknown; retry", every unlocked POST a 502, and GETs skip the digest silently.
///
/// From the adversarial review of the gateway's `[s3] dynamodb_table` support.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_table_stops_the_gateway_at_start() {
    let bucket = common::bucket(true).await;
    let mut config = gateway::config(&bucket);
    config.s3.dynamodb_table = Some("no-such-table-review".into());
    config.s3.dynamodb_client = Some(dynamodb());
    let started = s3state::server::Gateway::bind(config).await;
    let Ok(gateway) = started else { return };
    drop(gateway);
    let mut config = gateway::config(&bucket);
    config.s3.dynamodb_table = Some("no-such-table-review".into());
    config.s3.dynamodb_client = Some(dynamodb());
    let running = gateway::start_with(config).await;
    let lock = send(
        running.addr,
        "LOCK",
        "/x",
        Some(WRITER),
        &lock_body("0b1c2d3e-0000-4000-8000-0000000000c1", "ci"),
    )
    .await;
    panic!(
        "the gateway started with a missing table; LOCK: {} {}",
        lock.status,
        lock.text()
    );
}

/// UNLOCK of a `.tflock` whose table item is another holder's (an orphan `.tflock` and a
/// DynamoDB-only Terraform): the `.tflock` is deleted, the item is refused, and the answer is
/// 409 "nothing was unlocked".
///
/// From the adversarial review of the gateway's `[s3] dynamodb_table` support.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlock_naming_the_tflock_while_the_table_is_someone_elses_removes_nothing() {
    let (gateway, plain, table) = gateways().await;
    seed(&gateway, "u").await;
    let id = "0b1c2d3e-0000-4000-8000-0000000000d1";
    let first = send(plain.addr, "LOCK", "/u", Some(WRITER), &lock_body(id, "ci")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let (got, _) = terraform_takes_item(&table, &lock_item_id(&gateway, "u")).await;
    assert!(got);
    let unlock = send(
        gateway.addr,
        "UNLOCK",
        "/u",
        Some(WRITER),
        &lock_body(id, "ci"),
    )
    .await;
    let tflock = common::object_exists(&gateway.bucket, &format!("{}.tflock", key("u"))).await;
    assert!(
        unlock.status != 409 || tflock,
        "answered {} {} but the .tflock is gone",
        unlock.status,
        unlock.text()
    );
}
