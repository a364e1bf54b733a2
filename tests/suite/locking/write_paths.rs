//! Review of every write path against Terraform's lock. Each test was written against a
//! problem the review found (its doc comment says what was wrong); all were fixed, and the
//! tests now assert the fixed behaviour.

use crate::common;
use crate::common::gateway;

use common::hooked::{Hooked, terraform_lock};

use bytes::Bytes;
use s3state::store::memory::MemoryStore;
use s3state::store::{PutOutcome, Store, VersionedStore};
use s3state::{
    Error, LockInfo, OutputValue, PruneOptions, RemoteState, RemoteStateOptions, State,
    UpdateLocking, VersionSelector,
};
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn state_with(n: u64, serial: u64, lineage: &str) -> State {
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state.lineage = lineage.into();
    state.serial = serial;
    state.outputs.insert("n".into(), OutputValue::new(&n));
    state
}

// ---------------------------------------------------------------------------------------------
// Library
// ---------------------------------------------------------------------------------------------

/// Found: `RemoteState::restore` (history.rs) never looked at the lock, so by default it wrote
/// while a Terraform held `.tflock`, and Terraform's next blind PUT discarded the restore (or,
/// over a deleted state, Terraform adopted it and dropped its own results). Now it takes the
/// lock as `update` does: it waits for Terraform's, times out with `Locked`, writes nothing.
///
/// From the review of every write path against Terraform's lock.
#[tokio::test(start_paused = true)]
async fn library_restore_waits_for_terraforms_lock_and_writes_nothing_under_it() {
    let store = MemoryStore::new("restore/terraform.tfstate");
    let lineage = "11111111-2222-3333-4444-555555555555";
    store.put_unconditional(Bytes::from(state_with(1, 1, lineage).to_bytes()));
    store.put_unconditional(Bytes::from(state_with(2, 2, lineage).to_bytes()));
    let manager = RemoteState::new(store.clone());
    let previous = manager
        .resolve_version(&VersionSelector::Back(1))
        .await
        .unwrap();

    // A Terraform locks and reads (serial 2) for an apply.
    let terraform = terraform_lock(&store)
        .await
        .expect("Terraform gets the lock");
    let before = store.current_body();

    let restored = manager.restore(&previous, false).await;
    let landed = store.current_body() != before;
    assert!(
        matches!(restored, Err(Error::Locked { .. })) && !landed,
        "restore answered {restored:?} and wrote ({landed}) while Terraform {} held the lock; \
         Terraform's next persist overwrites it",
        terraform.id
    );
}

/// Found: `update()` (default locking) on a state that does not exist, whose create requests
/// got no answer (a stalled network), reported `WriteOutcomeUnknown` and released the lock at
/// once. A Terraform could then lock and read "no state" before the stalled
/// `If-None-Match: *` create landed, and Terraform's first persist adopts such a state and
/// discards its own results (../shared/notes/terraform-peer.md). Now the lock is kept for
/// `unanswered_write_settle` after such a write: a create arriving 5 s late lands under the
/// update's own lock, and the next Terraform reads it from the start.
///
/// From the review of every write path against Terraform's lock.
#[tokio::test(start_paused = true)]
async fn an_in_doubt_create_lands_under_the_updates_own_lock_not_the_next_terraforms() {
    let store = Hooked::new("new/terraform.tfstate").forwarding_identity();
    store.every_write(Some(false));
    let manager = Arc::new(RemoteState::new(store.clone()));
    let update = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.update(common::set_output("s3state", 1)).await }
    });
    // The stalled creates arrive 5 s later.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        terraform_lock(&store.inner).await.is_none(),
        "update released its lock although its writes were still on the wire"
    );
    store.every_write(None);
    let landed = store.land_stalled().await;
    assert!(
        landed
            .iter()
            .any(|outcome| matches!(outcome, PutOutcome::Written(_))),
        "one stalled create lands, under the update's lock"
    );
    let error = update.await.unwrap().unwrap_err();
    assert!(
        matches!(error, Error::WriteOutcomeUnknown { .. }),
        "{error}"
    );

    // The next Terraform finds the lock free and the state already there.
    let terraform = terraform_lock(&store.inner).await;
    assert!(
        terraform.is_some(),
        "the lock was released after the settle"
    );
    assert!(
        store.inner.current_body().is_some(),
        "Terraform reads the state that landed"
    );
}

/// `prune --keep 1` after `workspace delete` (or gateway DELETE). It was wrong: the delete
/// marker counted as the one version kept, so every snapshot of the deleted state was destroyed
/// for good, although the delete told the operator "its history is kept in the bucket's
/// versions". Now delete markers do not count toward `keep`, and the newest snapshot with
/// content survives any prune: the marker and serial 2 stay, serial 1 goes.
///
/// From the review of every write path against Terraform's lock.
#[tokio::test]
async fn prune_keep_one_over_a_deleted_state_keeps_its_newest_snapshot() {
    let store = MemoryStore::new("env:/old/app.tfstate");
    let lineage = "11111111-2222-3333-4444-666666666666";
    store.put_unconditional(Bytes::from(state_with(1, 1, lineage).to_bytes()));
    store.put_unconditional(Bytes::from(state_with(2, 2, lineage).to_bytes()));
    store.delete(None).await.unwrap();
    let manager = RemoteState::new(store.clone());
    manager
        .prune(&PruneOptions {
            keep_newest: Some(1),
            ..PruneOptions::default()
        })
        .await
        .unwrap();
    let left = store
        .list_versions(1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_delete_marker)
        .collect::<Vec<_>>();
    assert_eq!(
        left.len(),
        1,
        "no snapshot of the deleted state is left to restore"
    );
    let kept = store.get_version(&left[0].version_id).await.unwrap();
    assert_eq!(
        State::from_slice(&kept.body).unwrap().serial,
        2,
        "the newest is kept"
    );
    assert!(store.current_body().is_none(), "the state stays deleted");
}

/// Found: a manager made the documented way from `build_store()` (with `dynamodb_table` set)
/// kept the digest but not the lock: `RemoteState::new(store)` built a `StoreLocker` without
/// the table's lock item, so `update()` ran while a DynamoDB-only Terraform held the lock. Now
/// the store brings its lock item (`Store::secondary_lock`) and the update is refused.
///
/// From the review of every write path against Terraform's lock.
#[cfg(feature = "dynamodb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_over_build_store_takes_the_dynamodb_lock_item_too() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let bucket = common::bucket(true).await;
    let table = common::dynamo::table().await;
    let key = "ddb/terraform.tfstate";
    let builder = || {
        common::builder(&bucket, key)
            .with_dynamodb_table(&table)
            .with_dynamodb_client(common::dynamo::dynamodb())
    };
    let options = RemoteStateOptions {
        update_locking: UpdateLocking::Lock {
            timeout: Duration::from_secs(1),
        },
        ..RemoteStateOptions::default()
    };

    // A Terraform with dynamodb_table and no use_lockfile takes the item.
    let lock_id = format!("{bucket}/{key}");
    let mut info = LockInfo::new("OperationTypeApply");
    info.path = lock_id.clone();
    common::dynamo::dynamodb()
        .put_item()
        .table_name(&table)
        .item("LockID", AttributeValue::S(lock_id))
        .item(
            "Info",
            AttributeValue::S(serde_json::to_string(&info).unwrap()),
        )
        .condition_expression("attribute_not_exists(LockID)")
        .send()
        .await
        .unwrap();

    // Control: the manager from build() is refused.
    let built = builder()
        .with_options(options.clone())
        .build()
        .await
        .unwrap();
    let refused = built.update(|s| s.outputs.clear()).await;
    assert!(matches!(refused, Err(Error::Locked { .. })), "{refused:?}");

    // The same object through build_store(): written under Terraform's lock.
    let store = builder().build_store().await.unwrap();
    let manager = RemoteState::with_options(store, options);
    let result = manager.update(common::set_output("s3state", 1)).await;
    assert!(
        matches!(result, Err(Error::Locked { .. })),
        "update through RemoteState::new(build_store()) answered {result:?} while Terraform {} held \
         the DynamoDB lock",
        info.id
    );
}

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

/// An S3-backend Terraform (`use_lockfile = true`, key `gw/<name>`) holds the `.tflock`.
async fn s3_backend_terraform_locks(bucket: &str, name: &str) -> LockInfo {
    let key = gateway::key(name);
    let mut info = LockInfo::new("OperationTypeApply");
    info.path = format!("{bucket}/{key}");
    common::client()
        .put_object()
        .bucket(bucket)
        .key(format!("{key}.tflock"))
        .if_none_match("*")
        .body(serde_json::to_vec(&info).unwrap().into())
        .send()
        .await
        .expect("Terraform takes the lock");
    info
}

/// `method path` with `body`, sent to `gateway` as its writer.
async fn as_writer(
    gateway: &gateway::Running,
    method: &str,
    path: &str,
    body: &[u8],
) -> gateway::Reply {
    gateway::send(gateway.addr, method, path, Some(gateway::WRITER), body).await
}

/// A gateway with state `name` seeded, whose lock Terraform's S3 backend then holds.
async fn seeded_and_locked_by_terraform(name: &str) -> (gateway::Running, LockInfo) {
    let gateway = seeded_gateway(name).await;
    let terraform = s3_backend_terraform_locks(&gateway.bucket, name).await;
    (gateway, terraform)
}

async fn seeded_gateway(name: &str) -> gateway::Running {
    let gateway = gateway::start().await;
    let seeded = as_writer(
        &gateway,
        "POST",
        &format!("/{name}"),
        &gateway::state_body(LINEAGE, 1, 1),
    )
    .await;
    assert_eq!(seeded.status, 200, "{}", seeded.text());
    gateway
}

const LINEAGE: &str = "cdcdcdcd-2222-3333-4444-555555555555";

/// POST ?ID=<an S3-backend Terraform's lock ID>. It was wrong: the ID (handed to any writer in
/// the 423 answer to a POST without one) was taken as the client's own lock although the lock
/// was never taken through the gateway (no bound ETag in its metadata), so the "changed behind
/// the gateway's back" check was skipped and the write landed under Terraform's lock. Now a
/// lock without the gateway's bound ETag is foreign: the POST is refused with 423, naming the
/// holder, and nothing is written.
///
/// From the review of every write path against Terraform's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_post_carrying_an_s3_backend_terraforms_lock_id_is_refused_with_423() {
    let (gateway, terraform) = seeded_and_locked_by_terraform("app").await;

    let refused = as_writer(
        &gateway,
        "POST",
        "/app",
        &gateway::state_body(LINEAGE, 2, 2),
    )
    .await;
    assert_eq!(refused.status, 423);
    assert!(
        refused.text().contains(&terraform.id),
        "the 423 names the ID"
    );

    let mine = gateway::state_body(LINEAGE, 2, 2);
    let post = as_writer(
        &gateway,
        "POST",
        &format!("/app?ID={}", terraform.id),
        &mine,
    )
    .await;
    let stored = common::get_raw(&gateway.bucket, &gateway::key("app")).await;
    assert!(
        post.status == 423
            && post.text().contains("not taken through the gateway")
            && post.text().contains(&terraform.id)
            && stored != mine,
        "the gateway wrote ({} {}) while S3-backend Terraform {} held the lock; its next blind PUT \
         discards the write",
        post.status,
        post.text().trim(),
        terraform.id
    );
}

/// The same for DELETE ?ID=. It was wrong: the state was deleted under a running Terraform's
/// lock. Now the DELETE is refused with 423 and the state stays.
///
/// From the review of every write path against Terraform's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_delete_carrying_an_s3_backend_terraforms_lock_id_is_refused_with_423() {
    let (gateway, terraform) = seeded_and_locked_by_terraform("db").await;
    let deleted = as_writer(&gateway, "DELETE", &format!("/db?ID={}", terraform.id), b"").await;
    let exists = common::object_exists(&gateway.bucket, &gateway::key("db")).await;
    assert!(
        deleted.status == 423 && deleted.text().contains("not taken through the gateway") && exists,
        "DELETE under S3-backend Terraform {}'s lock: {} {}, state still there: {exists}",
        terraform.id,
        deleted.status,
        deleted.text().trim()
    );
}

/// The same for UNLOCK by a non-admin writer. It was wrong: a lock no gateway client took was
/// released as the writer's own (not a force-unlock), so the writer could then lock and write
/// mid-apply. Now releasing a lock not taken through the gateway is a force-unlock, whatever
/// ID is sent: 403 for a writer, and the lock stays.
///
/// From the review of every write path against Terraform's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_admin_unlock_of_an_s3_backend_terraforms_lock_is_a_refused_force_unlock() {
    let (gateway, terraform) = seeded_and_locked_by_terraform("net").await;
    let unlock = as_writer(
        &gateway,
        "UNLOCK",
        "/net",
        &gateway::lock_body(&terraform.id, "ci"),
    )
    .await;
    let still_held =
        common::object_exists(&gateway.bucket, &format!("{}.tflock", gateway::key("net"))).await;
    assert!(
        unlock.status == 403 && still_held,
        "a writer (not admin) released S3-backend Terraform {}'s lock: {} {}",
        terraform.id,
        unlock.status,
        unlock.text().trim()
    );
}
