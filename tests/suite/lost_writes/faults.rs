//! Faults between the SDK and S3, injected by a proxy in front of LocalStack: lost responses,
//! resets, stalls, S3's 409 and 503, truncated bodies, SSE-KMS-style ETags. For each: no lost
//! update, no false conflict, no orphaned lock, no corrupt state.

use crate::common;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use common::proxy::{Fault, FaultProxy, Rule};
use s3state::{
    Error, LockInfo, Locker, OutputValue, PersistentMeta, Persister, Refresher, RemoteState,
    S3Store, Transient,
};
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "faults/terraform.tfstate";
const LOCK_KEY: &str = "faults/terraform.tfstate.tflock";

/// A manager whose requests go through `proxy`, with quick SDK retries. Its `update` does not
/// take the lock, so each scenario sees the state's own requests; the lock's faults have
/// their own scenarios below, and the locked update is covered by the simulation suite.
async fn manager_via(proxy: &FaultProxy, bucket: &str, max_attempts: u32) -> RemoteState<S3Store> {
    manager_via_with(proxy, bucket, max_attempts, None).await
}

/// [`manager_via`], with `interceptor` on its client.
async fn manager_via_with(
    proxy: &FaultProxy,
    bucket: &str,
    max_attempts: u32,
    interceptor: Option<common::hooks::Hooks>,
) -> RemoteState<S3Store> {
    let config = common::with_interceptor(common::config_for(proxy.endpoint()), interceptor)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(max_attempts)
                .with_initial_backoff(Duration::from_millis(20)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(2))
                .build(),
        )
        .build();
    let manager = common::builder_with_config(bucket, KEY, config)
        .with_options(s3state::RemoteStateOptions {
            update_locking: s3state::UpdateLocking::Disabled,
            ..Default::default()
        })
        .build()
        .await
        .unwrap();
    proxy.take_requests(); // the versioning check
    manager
}

fn set(value: i64) -> impl FnMut(&mut s3state::State) + Send {
    common::set_output("n", value)
}

fn calls(proxy: &FaultProxy) -> Vec<(String, Option<u16>)> {
    proxy
        .take_requests()
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect()
}

fn put(status: Option<u16>) -> (String, Option<u16>) {
    ("PUT".into(), status)
}

fn get(status: Option<u16>) -> (String, Option<u16>) {
    ("GET".into(), status)
}

#[tokio::test]
async fn a_persist_whose_response_was_lost_after_s3_applied_it_succeeds_once() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let manager = manager_via(&proxy, &bucket, 3).await;
    manager.update(set(1)).await.unwrap();
    proxy.take_requests();

    proxy.inject(Rule::new(Fault::DropResponse).method("PUT").path(KEY));
    manager
        .update(set(2))
        .await
        .expect("our own write is not a conflict");

    assert_eq!(
        calls(&proxy),
        [get(Some(304)), put(None), put(Some(412)), get(Some(200))]
    );
    assert_eq!(common::version_count(&bucket, KEY).await, 2);
    assert_eq!(manager.state_snapshot_meta().unwrap().serial, 2);
}

#[tokio::test]
async fn a_persist_reset_before_s3_saw_it_is_retried_into_one_version() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let manager = manager_via(&proxy, &bucket, 3).await;
    manager.update(set(1)).await.unwrap();
    proxy.take_requests();

    proxy.inject(Rule::new(Fault::ResetBeforeForward).method("PUT").path(KEY));
    manager.update(set(2)).await.unwrap();

    assert_eq!(calls(&proxy), [get(Some(304)), put(None), put(Some(200))]);
    assert_eq!(common::version_count(&bucket, KEY).await, 2);
}

#[tokio::test]
async fn three_409_conflicts_then_success() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let manager = manager_via(&proxy, &bucket, 3).await;
    proxy.inject(
        Rule::new(Fault::Status(409, "ConditionalRequestConflict"))
            .method("PUT")
            .times(3),
    );
    manager.update(set(1)).await.unwrap();
    let puts: Vec<_> = calls(&proxy)
        .into_iter()
        .filter(|(m, _)| m == "PUT")
        .collect();
    assert_eq!(
        puts,
        [
            put(Some(409)),
            put(Some(409)),
            put(Some(409)),
            put(Some(200))
        ]
    );
    assert_eq!(common::version_count(&bucket, KEY).await, 1);
}

#[tokio::test]
async fn slowdown_storms_are_retried_and_an_exhausted_budget_says_so() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let manager = manager_via(&proxy, &bucket, 3).await;
    proxy.inject(
        Rule::new(Fault::Status(503, "SlowDown"))
            .method("PUT")
            .times(2),
    );
    manager
        .update(set(1))
        .await
        .expect("two 503s fit a budget of three attempts");
    assert_eq!(common::version_count(&bucket, KEY).await, 1);
    proxy.take_requests();

    proxy.inject(
        Rule::new(Fault::Status(503, "SlowDown"))
            .method("PUT")
            .times(100),
    );
    let err = manager.update(set(2)).await.unwrap_err();
    let message = err.to_string();
    // After each round, the versions show the write did not land; after three such rounds
    // update gives up. It cannot tell a refusal from a request still in flight, so it says the
    // outcome is unknown and names the write ids to look for, never "not applied".
    assert!(
        matches!(
            &err,
            Error::WriteOutcomeUnknown { source, write_ids, .. }
                if write_ids.len() == 3 && matches!(**source, Error::WriteFailed { .. })
        ),
        "{err:?}"
    );
    assert!(
        message.contains("SlowDown")
            && message.contains("still failing after the SDK's retries")
            && message.contains("whether it was applied is unknown"),
        "{message}"
    );
    let puts = calls(&proxy)
        .into_iter()
        .filter(|(m, _)| m == "PUT")
        .count();
    assert_eq!(
        puts, 9,
        "three rounds, each with the SDK's budget of three attempts"
    );
    assert_eq!(
        common::version_count(&bucket, KEY).await,
        1,
        "nothing was written"
    );
    manager.refresh_state().await.unwrap();
    assert_eq!(manager.state().unwrap().outputs["n"].to_value(), 1);
}

#[tokio::test]
async fn a_truncated_body_is_read_again_and_never_yields_a_partial_state() {
    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, KEY, common::TERRAFORM_STATE).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let manager = manager_via(&proxy, &bucket, 3).await;

    proxy.inject(Rule::new(Fault::TruncateBody(100)).method("GET").path(KEY));
    manager
        .refresh_state()
        .await
        .expect("a second read gets the whole body");
    assert_eq!(manager.state().unwrap().to_bytes(), common::TERRAFORM_STATE);
    assert_eq!(calls(&proxy), [get(Some(200)), get(Some(200))]);

    // Someone else writes; every read of it is cut off.
    common::manager(&bucket, KEY)
        .await
        .update(set(7))
        .await
        .unwrap();
    proxy.inject(
        Rule::new(Fault::TruncateBody(100))
            .method("GET")
            .path(KEY)
            .times(100),
    );
    let err = manager.refresh_state().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Store {
                operation: "GetObject",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        !manager.state().unwrap().outputs.contains_key("n"),
        "still the last whole snapshot"
    );

    // A write based on the old snapshot is refused, not an overwrite of the newer one.
    proxy.clear_rules();
    common::assert_stale_write_refused(&manager, "mine", 1).await;
    assert_eq!(common::version_count(&bucket, KEY).await, 2);
}

#[tokio::test]
async fn a_stalled_request_times_out_and_its_late_copy_is_refused_by_s3() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let manager = manager_via(&proxy, &bucket, 3).await;
    manager.update(set(1)).await.unwrap();

    // Stalled before S3 sees it: the retry lands first, and the stale copy, arriving later,
    // is refused by its If-Match.
    proxy.inject(Rule::new(Fault::StallBeforeForward(Duration::from_secs(3))).method("PUT"));
    manager.update(set(2)).await.unwrap();

    tokio::time::sleep(Duration::from_secs(2)).await; // let the stalled copy reach S3
    assert_eq!(common::version_count(&bucket, KEY).await, 2);
    manager.refresh_state().await.unwrap();
    assert_eq!(manager.state().unwrap().outputs["n"].to_value(), 2);
    let late_copy = proxy
        .requests()
        .into_iter()
        .find(|r| r.fault == Some("stall"))
        .unwrap();
    assert_eq!(late_copy.status, Some(412), "S3 refused the late copy");
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_is_resolved_as_our_own_write() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let manager = manager_via(&proxy, &bucket, 3).await;
    manager.update(set(1)).await.unwrap();

    // Applied, but answered too late: the retry meets our own write.
    proxy.inject(Rule::new(Fault::DelayResponse(Duration::from_secs(3))).method("PUT"));
    manager.update(set(2)).await.unwrap();

    assert_eq!(common::version_count(&bucket, KEY).await, 2);
    assert_eq!(manager.state_snapshot_meta().unwrap().serial, 2);
    manager.refresh_state().await.unwrap();
    assert_eq!(manager.state().unwrap().outputs["n"].to_value(), 2);
}

#[tokio::test]
async fn a_lost_lock_acquire_response_leaves_the_lock_ours_and_not_orphaned() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let manager = manager_via(&proxy, &bucket, 3).await;
    proxy.inject(Rule::new(Fault::DropResponse).method("PUT").path(LOCK_KEY));

    let info = LockInfo::new("OperationTypeApply");
    assert_eq!(manager.lock(&info).await.unwrap(), info.id);
    let puts: Vec<_> = calls(&proxy)
        .into_iter()
        .filter(|(m, _)| m == "PUT")
        .collect();
    assert_eq!(puts, [put(None), put(Some(412))]);

    manager.unlock(&info.id).await.unwrap();
    assert!(
        manager.locker().current().await.unwrap().is_none(),
        "no orphaned lock"
    );
}

#[tokio::test]
async fn a_lost_unlock_response_is_success_and_spares_a_newer_lock() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let manager = manager_via(&proxy, &bucket, 3).await;
    let mine = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();

    // The conditional DELETE is refused with 501 (LocalStack's answer; on a store that
    // enforces conditional deletes the proxy gives it); the fallback's plain DELETE is
    // applied, its answer lost, and before we learn anything someone else locks.
    let refused_by_proxy = common::refuse_next_conditional_delete(&proxy, LOCK_KEY);
    let newcomer = LockInfo::new("OperationTypePlan");
    let theirs = newcomer.id.clone();
    let (hook_bucket, body) = (bucket.clone(), serde_json::to_vec(&newcomer).unwrap());
    proxy.inject(
        Rule::new(Fault::DropResponse)
            .method("DELETE")
            .path(LOCK_KEY)
            // A rule that answers a request is the only one to see it: skip the 501 only
            // where the store gave it.
            .after(if refused_by_proxy { 0 } else { 1 })
            .then(Arc::new(move || {
                let (bucket, body) = (hook_bucket.clone(), body.clone());
                Box::pin(async move { common::put_raw(&bucket, LOCK_KEY, &body).await })
            })),
    );
    manager
        .unlock(&mine)
        .await
        .expect("our lock is gone, which is what unlock wanted");
    let current = common::current_lock(&manager)
        .await
        .expect("the newcomer's lock stays");
    assert_eq!(current.id, theirs);
    let deletes = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .count();
    assert_eq!(deletes, 2, "the lost plain DELETE is not blindly retried");
}

#[tokio::test]
async fn with_kms_style_etags_conditional_writes_and_lost_responses_still_resolve() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let manager = manager_via_with(&proxy, &bucket, 3, Some(common::kms_style_etags())).await;
    manager.update(set(1)).await.unwrap();
    let etag = manager.persisted_object().unwrap().etag;
    assert!(etag.as_str().starts_with("\"kms-"), "{etag}");

    proxy.inject(Rule::new(Fault::DropResponse).method("PUT").path(KEY));
    manager
        .update(set(2))
        .await
        .expect("resolved by content, not by ETag");
    assert_eq!(common::version_count(&bucket, KEY).await, 2);

    let rival = common::manager(&bucket, KEY).await;
    rival.update(set(3)).await.unwrap();
    let mut state = manager.state().unwrap();
    state.outputs.insert("n".into(), OutputValue::new(&4));
    manager.write_state(state);
    assert!(
        manager.persist_state().await.unwrap_err().is_conflict(),
        "a real conflict is still one"
    );
    assert_eq!(common::version_count(&bucket, KEY).await, 3);
}

#[tokio::test]
async fn a_lost_write_that_another_writer_built_on_is_not_applied_twice() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let manager = manager_via(&proxy, &bucket, 3).await;
    let increment = |s: &mut s3state::State| {
        let n = s
            .outputs
            .get("n")
            .and_then(|o| o.to_value().as_i64())
            .unwrap_or(0);
        s.outputs.insert("n".into(), OutputValue::new(&(n + 1)));
    };
    manager.update(increment).await.unwrap();

    // Our increment lands, its answer is lost, and before the SDK retries another writer
    // reads our write and increments on top of it.
    let hook_bucket = bucket.clone();
    proxy.inject(
        Rule::new(Fault::DropResponse)
            .method("PUT")
            .path(KEY)
            .then(Arc::new(move || {
                let bucket = hook_bucket.clone();
                Box::pin(async move {
                    let other = common::manager(&bucket, KEY).await;
                    other.update(increment).await.unwrap();
                })
            })),
    );
    manager.update(increment).await.expect("our write landed");

    let check = common::manager(&bucket, KEY).await;
    check.refresh_state().await.unwrap();
    assert_eq!(
        check.state().unwrap().outputs["n"].to_value(),
        3,
        "1 + ours + theirs, ours once"
    );
    assert_eq!(common::version_count(&bucket, KEY).await, 3);
    assert_eq!(
        manager.state_snapshot_meta().unwrap().serial,
        3,
        "the manager now holds the newest"
    );
}
