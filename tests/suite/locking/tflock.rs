//! Terraform-compatible locks on a real S3.

use crate::common;

use s3state::{Error, LockDisabled, LockInfo, LockRetry, Locker, RemoteStateOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const KEY: &str = "demo/terraform.tfstate";
const LOCK_KEY: &str = "demo/terraform.tfstate.tflock";

fn fast_retry() -> RemoteStateOptions {
    RemoteStateOptions {
        lock_retry: LockRetry {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        ..Default::default()
    }
}

async fn lock_exists(bucket: &str) -> bool {
    common::client()
        .head_object()
        .bucket(bucket)
        .key(LOCK_KEY)
        .send()
        .await
        .is_ok()
}

#[tokio::test]
async fn of_two_lockers_exactly_one_acquires_and_the_other_sees_the_holder() {
    let (bucket, first) = common::bucket_and_manager(KEY).await;
    let second = common::manager(&bucket, KEY).await;
    let mine = LockInfo::new("OperationTypeApply").with_info("first");
    let theirs = LockInfo::new("OperationTypePlan");

    let (a, b) = tokio::join!(first.lock(&mine), second.lock(&theirs));
    let (winner_id, err) = match (a, b) {
        (Ok(id), Err(err)) | (Err(err), Ok(id)) => (id, err),
        other => panic!("expected exactly one lock holder, got {other:?}"),
    };
    match err {
        Error::Locked {
            holder: Some(holder),
            location,
            ..
        } => {
            assert_eq!(holder.id, winner_id);
            assert_eq!(holder.path, format!("{bucket}/{KEY}"));
            assert_eq!(location, format!("s3://{bucket}/{LOCK_KEY}"));
        }
        other => panic!("expected Locked with the holder, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_eight_contending_lockers_at_most_one_holds_at_any_time() {
    let bucket = common::bucket(true).await;
    let holders = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let manager = common::builder(&bucket, KEY)
            .with_options(fast_retry())
            .build()
            .await
            .unwrap();
        let (holders, most) = (Arc::clone(&holders), Arc::clone(&most));
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let id =
                    common::lock_within(&manager, "OperationTypeApply", Duration::from_secs(60))
                        .await
                        .expect("lock within a minute");
                let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                holders.fetch_sub(1, Ordering::SeqCst);
                manager.unlock(&id).await.expect("unlock");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 1);
    assert!(!lock_exists(&bucket).await, "no lock may be left behind");
}

#[tokio::test]
async fn lock_with_timeout_waits_for_a_holder_that_releases() {
    let (bucket, holder) = common::bucket_and_manager(KEY).await;
    let held = holder
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        holder.unlock(&held).await.unwrap();
    });

    let waiter = common::manager(&bucket, KEY).await;
    let started = std::time::Instant::now();
    let id = common::lock_within(&waiter, "OperationTypePlan", Duration::from_secs(30))
        .await
        .expect("acquired after the holder released");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it cannot have acquired while held"
    );
    release.await.unwrap();
    assert_eq!(waiter.locker().current().await.unwrap().unwrap().id, id);
}

#[tokio::test]
async fn lock_with_timeout_gives_up_with_the_holders_info() {
    let (bucket, holder) = common::bucket_and_manager(KEY).await;
    let held = holder
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    let waiter = common::builder(&bucket, KEY)
        .with_options(fast_retry())
        .build()
        .await
        .unwrap();
    let err = common::lock_within(&waiter, "OperationTypePlan", Duration::from_millis(300))
        .await
        .unwrap_err();
    match &err {
        Error::Locked {
            holder: Some(info),
            waited: Some(waited),
            ..
        } => {
            assert_eq!(info.id, held);
            assert!(*waited >= Duration::from_millis(300));
        }
        other => panic!("expected Locked after waiting, got {other:?}"),
    }
    assert!(err.to_string().contains("gave up after"), "{err}");
}

#[tokio::test]
async fn a_terraform_lock_is_reported_with_its_holder_operation_and_time() {
    let bucket = common::bucket(true).await;
    let terraform_lock = common::TERRAFORM_LOCK;
    common::put_raw(&bucket, LOCK_KEY, terraform_lock).await;
    let manager = common::manager(&bucket, KEY).await;

    let err = common::refused_apply_lock(&manager).await;
    let holder = common::locked_holder(&err);
    assert_eq!(holder.id, "91731845-4e72-fefa-2c11-97277aabd814");
    assert_eq!(holder.operation, "OperationTypeApply");
    assert_eq!(holder.who, "root@vm");
    assert_eq!(holder.version, "1.15.5");
    assert_eq!(holder.created.unix_timestamp(), 1_795_544_665);
    assert_eq!(holder.created.nanosecond(), 54_307_943);
    let message = err.to_string();
    common::assert_contains_all(
        &message,
        &[
            "root@vm",
            "OperationTypeApply",
            "2026-11-24T18:24:25.054307943Z",
            "91731845",
        ],
    );
}

#[tokio::test]
async fn our_lock_body_is_compact_json_with_terraforms_field_names_in_order() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    let info = LockInfo::new("OperationTypeApply").with_info("<deploy & test>");
    manager.lock(&info).await.unwrap();

    let body = String::from_utf8(common::get_raw(&bucket, LOCK_KEY).await).unwrap();
    assert!(
        !body.contains('\n') && !body.contains(": "),
        "not compact: {body}"
    );
    let fields: Vec<String> =
        serde_json::from_str::<indexmap::IndexMap<String, serde_json::Value>>(&body)
            .unwrap()
            .into_keys()
            .collect();
    assert_eq!(
        fields,
        [
            "ID",
            "Operation",
            "Info",
            "Who",
            "Version",
            "Created",
            "Path"
        ]
    );
    // Go escapes HTML characters; Terraform's reader accepts either form.
    assert!(
        body.contains(r#""Info":"\u003cdeploy \u0026 test\u003e""#),
        "{body}"
    );
    assert!(
        body.contains(&format!(r#""Path":"{bucket}/{KEY}""#)),
        "{body}"
    );
    // `Created` is when the lock was taken (it makes each call's lock body unique); every
    // other field is the caller's.
    let parsed: LockInfo = serde_json::from_str(&body).unwrap();
    assert!(parsed.created >= info.created, "{body}");
    assert_eq!(
        (parsed.id, parsed.operation, parsed.info, parsed.who),
        (info.id, info.operation, info.info, info.who)
    );
}

#[tokio::test]
async fn unlock_with_a_wrong_id_names_both_ids_and_leaves_the_lock() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();

    let other = common::manager(&bucket, KEY).await;
    let err = other.unlock("not-the-id").await.unwrap_err();
    match &err {
        Error::LockIdMismatch { given, held, .. } => {
            assert_eq!(given, "not-the-id");
            assert_eq!(held, &id);
        }
        other => panic!("expected LockIdMismatch, got {other:?}"),
    }
    assert!(lock_exists(&bucket).await);
    assert_eq!(other.locker().current().await.unwrap().unwrap().id, id);
}

/// Where the store refuses conditional deletes with 501 (LocalStack does; on a store that
/// enforces them, the fault proxy answers the first one so), the unlock falls back to reading
/// the lock and deleting it, and remembers the refusal.
#[tokio::test]
async fn unlock_where_conditional_deletes_are_refused_falls_back_once_then_reads_and_deletes() {
    let bucket = common::bucket(true).await;
    let proxy = common::proxy::FaultProxy::start(common::endpoint()).await;
    common::refuse_next_conditional_delete(&proxy, LOCK_KEY);
    let recorder = common::Recorder::default();
    let manager = common::builder(&bucket, KEY)
        .with_client(common::recorded_client_for(proxy.endpoint(), &recorder))
        .build()
        .await
        .unwrap();
    recorder.take();

    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    assert_eq!(recorder.take().len(), 1, "an uncontended lock is one PUT");
    manager.unlock(&id).await.unwrap();
    let first: Vec<_> = recorder
        .take()
        .iter()
        .map(|e| (e.method.clone(), e.status))
        .collect();
    assert_eq!(
        first,
        [
            ("DELETE".into(), Some(501)),
            ("GET".into(), Some(200)),
            ("DELETE".into(), Some(204))
        ]
    );
    assert!(!lock_exists(&bucket).await);

    // The 501 is remembered: the next unlock goes straight to the fallback.
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    recorder.take();
    manager.unlock(&id).await.unwrap();
    let second: Vec<_> = recorder.take().iter().map(|e| e.method.clone()).collect();
    assert_eq!(second, ["GET", "DELETE"]);
    assert!(!lock_exists(&bucket).await);
}

#[tokio::test]
async fn unlock_on_a_store_with_conditional_delete_is_one_request_and_never_deletes_a_newer_lock() {
    let bucket = common::bucket(true).await;
    let recorder = common::Recorder::default();
    let deletes = common::ConditionalDeletes::default();
    let config = common::client_with(Some(&recorder))
        .config()
        .to_builder()
        .interceptor(deletes.hooks())
        .build();
    let manager = common::manager_with_config(&bucket, KEY, config).await;
    let current_etag = || async {
        let head = common::client()
            .head_object()
            .bucket(&bucket)
            .key(LOCK_KEY)
            .send()
            .await
            .unwrap();
        head.e_tag().map(str::to_owned)
    };

    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    *deletes.current_lock_etag.lock().unwrap() = current_etag().await;
    recorder.take();
    manager.unlock(&id).await.unwrap();
    let exchanges = recorder.take();
    assert_eq!(exchanges.len(), 1, "{exchanges:?}");
    assert_eq!(exchanges[0].method, "DELETE");
    assert!(!lock_exists(&bucket).await);

    // Our lock was force-unlocked and someone else locked: our stale unlock must not delete theirs.
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    *deletes.current_lock_etag.lock().unwrap() = current_etag().await;
    manager.locker().force_unlock(&id).await.unwrap();
    let other = common::manager(&bucket, KEY).await;
    let theirs = other
        .lock(&LockInfo::new("OperationTypePlan"))
        .await
        .unwrap();
    *deletes.current_lock_etag.lock().unwrap() = current_etag().await;
    let err = manager.unlock(&id).await.unwrap_err();
    assert!(
        matches!(&err, Error::LockIdMismatch { held, .. } if *held == theirs),
        "{err:?}"
    );
    assert_eq!(other.locker().current().await.unwrap().unwrap().id, theirs);
}

#[tokio::test]
async fn a_lock_with_our_id_that_this_call_did_not_write_belongs_to_someone_else() {
    // Two callers that reuse one LockInfo must not both hold the lock: a lock body equal to
    // ours is not ours unless this very call wrote it (its nonce). The genuine case, our own
    // retried acquire, is covered with a real lost response in the fault suite.
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    let mut info = LockInfo::new("OperationTypeApply");
    info.path = format!("{bucket}/{KEY}");
    common::put_raw(
        &bucket,
        LOCK_KEY,
        serde_json::to_string(&info).unwrap().as_bytes(),
    )
    .await;

    let err = manager.lock(&info).await.unwrap_err();
    assert!(
        matches!(&err, Error::Locked { holder: Some(holder), .. } if holder.id == info.id),
        "{err:?}"
    );
    assert!(lock_exists(&bucket).await, "the other holder's lock stays");
}

#[tokio::test]
async fn a_retried_unlock_whose_first_response_was_lost_reports_success() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    // The first unlock's delete happened, but we never heard back.
    common::client()
        .delete_object()
        .bucket(&bucket)
        .key(LOCK_KEY)
        .send()
        .await
        .unwrap();
    manager
        .unlock(&id)
        .await
        .expect("our lock is gone, which is what unlock wanted");
    let err = manager.unlock(&id).await.unwrap_err();
    assert!(
        matches!(err, Error::NotLocked { .. }),
        "a second unlock is a mistake: {err:?}"
    );
}

#[tokio::test]
async fn force_unlock_removes_a_lock_held_by_someone_else_only_with_its_id() {
    let bucket = common::bucket(true).await;
    let terraform_lock = common::TERRAFORM_LOCK;
    common::put_raw(&bucket, LOCK_KEY, terraform_lock).await;
    let operator = common::manager(&bucket, KEY).await;

    let wrong = operator.locker().force_unlock("0000").await.unwrap_err();
    assert!(matches!(wrong, Error::LockIdMismatch { .. }), "{wrong:?}");
    assert!(lock_exists(&bucket).await);
    operator
        .locker()
        .force_unlock("91731845-4e72-fefa-2c11-97277aabd814")
        .await
        .unwrap();
    assert!(!lock_exists(&bucket).await);
}

#[tokio::test]
async fn lock_disabled_never_touches_the_store() {
    let bucket = common::bucket(true).await;
    let recorder = common::Recorder::default();
    let manager = LockDisabled(
        common::builder(&bucket, KEY)
            .with_client(common::client_with(Some(&recorder)))
            .build()
            .await
            .unwrap(),
    );
    recorder.take();
    let info = LockInfo::new("OperationTypeApply");
    assert_eq!(manager.lock(&info).await.unwrap(), info.id);
    manager.unlock(&info.id).await.unwrap();
    assert!(recorder.take().is_empty());
}

/// From issue 25: eight lockers contending on SeaweedFS met a lock that was taken and released
/// by others three times in a row while one of them tried (refused, then gone when read), and
/// that ended its `lock_with_timeout` at once with a store error. Such a lock is held by others
/// as far as the caller is concerned: `lock` says `Locked` (holder unknown), and a waiting
/// caller waits on and gets the lock once it stops changing hands.
#[tokio::test]
async fn a_lock_that_keeps_changing_hands_is_waited_on_like_a_held_one() {
    use common::hooked::{Hooked, OnPut};
    let store = Hooked::new("flapping/terraform.tfstate");
    let refuse_three_times = || {
        for _ in 0..3 {
            store.on_put(
                &store.lock_key(),
                OnPut::Answer(Box::new(|_, _| {
                    Box::pin(async { Ok(s3state::store::PutOutcome::PreconditionFailed) })
                })),
            );
        }
    };
    let manager = s3state::RemoteState::new(store.clone());

    refuse_three_times();
    let refused = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::Locked { holder: None, .. }),
        "{refused:?}"
    );
    assert!(!store.lock_held());

    refuse_three_times();
    common::lock_within(&manager, "OperationTypeApply", Duration::from_secs(10))
        .await
        .expect("the wait goes on until the lock is free");
    assert!(store.lock_held());
}
