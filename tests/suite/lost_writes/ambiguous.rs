//! A write that S3 applied but whose response was lost. The SDK retries it, the retry meets
//! the object the first attempt wrote and gets 412, and s3state must recognise its own write.
//!
//! LocalStack never loses a response, so an SDK interceptor turns the first PUT's real `200`
//! into a `500` after S3 has applied it, which is what a dropped connection looks like to the
//! retry logic.

use crate::common;

use common::hooks::Hooks;
use s3state::{OutputValue, PersistentMeta, Persister, State, Transient};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const KEY: &str = "ambiguous/terraform.tfstate";

/// Replaces the status of the first `lost` successful PUT responses with 500. The tests
/// issue one request at a time, so the request in flight is the last one transmitted.
fn lose_first_put_responses(lost: usize) -> Hooks {
    let remaining = Arc::new(AtomicUsize::new(lost));
    let in_flight_is_put = Arc::new(AtomicBool::new(false));
    let is_put = in_flight_is_put.clone();
    Hooks::new("lose-first-put-responses")
        .read_request(move |request| is_put.store(request.method() == "PUT", Ordering::SeqCst))
        .modify_response(move |response| {
            let is_put_success =
                response.status().as_u16() == 200 && in_flight_is_put.load(Ordering::SeqCst);
            if is_put_success
                && remaining
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                *response.status_mut() = 500.try_into().unwrap();
            }
        })
}

async fn manager_losing_first_put_responses(
    bucket: &str,
    lost: usize,
    recorder: &common::Recorder,
) -> s3state::RemoteState<s3state::S3Store> {
    let config = common::client_with(Some(recorder))
        .config()
        .to_builder()
        .interceptor(lose_first_put_responses(lost))
        .build();
    common::manager_with_config(bucket, KEY, config).await
}

#[tokio::test]
async fn a_retried_create_that_meets_its_own_write_succeeds_with_one_version() {
    let bucket = common::bucket(true).await;
    let recorder = common::Recorder::default();
    let manager = manager_losing_first_put_responses(&bucket, 1, &recorder).await;
    recorder.take();

    let mut state = State::new(semver::Version::new(1, 15, 5));
    state.outputs.insert("a".into(), OutputValue::new(&1));
    manager.write_state(state);
    manager
        .persist_state()
        .await
        .expect("our own write is a success, not a conflict");

    // The recorder sees the wire: S3 applied the first PUT (200, which the SDK was then told
    // was a 500), the SDK's retry met that object (412), and one GET proved it ours.
    let exchanges = recorder.take();
    let statuses: Vec<_> = exchanges
        .iter()
        .map(|e| (e.method.as_str(), e.status))
        .collect();
    assert_eq!(
        statuses,
        [("PUT", Some(200)), ("PUT", Some(412)), ("GET", Some(200))],
        "{exchanges:?}"
    );
    assert_eq!(common::version_count(&bucket, KEY).await, 1);
    assert_eq!(manager.state_snapshot_meta().unwrap().serial, 1);
}

#[tokio::test]
async fn a_retried_update_that_meets_its_own_write_succeeds_and_the_next_write_chains_on_it() {
    let (bucket, seed) = common::bucket_and_manager(KEY).await;
    seed.update(common::set_output("n", 0)).await.unwrap();

    let recorder = common::Recorder::default();
    let manager = manager_losing_first_put_responses(&bucket, 1, &recorder).await;
    for n in 1..=2 {
        manager.update(common::set_output("n", n)).await.unwrap();
    }
    assert_eq!(common::version_count(&bucket, KEY).await, 3);
    assert_eq!(manager.state_snapshot_meta().unwrap().serial, 3);
    let statuses: Vec<_> = recorder.take().iter().filter_map(|e| e.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        1,
        "{statuses:?}"
    );
}

/// Makes the first `conflicts` PUTs fail the way real S3 fails overlapping conditional
/// writes: the write is not applied (its If-Match is spoiled, so S3 refuses it) and the answer
/// is `409 ConditionalRequestConflict`. No emulator produces this status.
fn conflict_first_puts(conflicts: usize) -> Hooks {
    let remaining = Arc::new(AtomicUsize::new(conflicts));
    let spoiled = Arc::new(AtomicBool::new(false));
    let spoiling = spoiled.clone();
    Hooks::new("conflict-first-puts")
        .modify_request(move |request| {
            // The state's PUTs only: the lock that update() takes first is left alone.
            let spoil = request.method() == "PUT"
                && !request.uri().contains(".tflock")
                && remaining
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            if spoil {
                request.headers_mut().remove("if-none-match");
                request.headers_mut().insert("if-match", "\"spoiled\"");
            }
            spoiling.store(spoil, Ordering::SeqCst);
        })
        .modify_response(move |response| {
            if spoiled.load(Ordering::SeqCst) {
                *response.status_mut() = 409.try_into().unwrap();
            }
        })
}

#[tokio::test]
async fn conditional_request_conflicts_from_s3_are_retried_until_the_write_lands() {
    let bucket = common::bucket(true).await;
    let recorder = common::Recorder::default();
    let config = common::client_with(Some(&recorder))
        .config()
        .to_builder()
        .interceptor(conflict_first_puts(3))
        .build();
    let manager = common::manager_with_config(&bucket, KEY, config).await;
    recorder.take();

    manager.update(common::set_output("a", 1)).await.unwrap();

    let puts = recorder
        .take()
        .into_iter()
        .filter(|e| e.method == "PUT" && !e.uri.contains(".tflock"))
        .count();
    assert_eq!(puts, 4, "three refused attempts, then the one that landed");
    assert_eq!(common::version_count(&bucket, KEY).await, 1);
}

#[tokio::test]
async fn conflicts_beyond_the_retry_budget_fail_clearly_and_write_nothing() {
    let bucket = common::bucket(true).await;
    let config = common::client()
        .config()
        .to_builder()
        .interceptor(conflict_first_puts(100))
        .build();
    let manager = common::builder_with_config(&bucket, KEY, config)
        .with_conflict_retries(2)
        .build()
        .await
        .unwrap();
    let err = manager
        .update(common::set_output("a", 1))
        .await
        .unwrap_err();
    // Each round's write was refused three times; the versions show none landed, and after a
    // few such rounds update gives up, saying the outcome is unknown (it cannot tell a refusal
    // from a request still in flight), never that nothing was written.
    assert!(
        matches!(
            &err,
            s3state::Error::WriteOutcomeUnknown { source, .. }
                if matches!(**source, s3state::Error::WriteFailed { .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("409 ConditionalRequestConflict to 3 attempts"),
        "{err}"
    );
    assert_eq!(common::version_count(&bucket, KEY).await, 0);
}
