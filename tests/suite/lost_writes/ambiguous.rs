//! A write that S3 applied but whose response was lost. The SDK retries it, the retry meets
//! the object the first attempt wrote and gets 412, and s3state must recognise its own write.
//!
//! LocalStack never loses a response, so an SDK interceptor turns the first PUT's real `200`
//! into a `500` after S3 has applied it, which is what a dropped connection looks like to the
//! retry logic.

use crate::common;

use aws_sdk_s3::config::{
    ConfigBag, Intercept, RuntimeComponents,
    interceptors::{
        BeforeDeserializationInterceptorContextMut, BeforeTransmitInterceptorContextRef,
    },
};
use s3state::{OutputValue, PersistentMeta, Persister, State, Transient};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const KEY: &str = "ambiguous/terraform.tfstate";

/// Replaces the status of the first `remaining` successful PUT responses with 500. The tests
/// issue one request at a time, so the request in flight is the last one transmitted.
#[derive(Debug, Clone, Default)]
struct LoseFirstPutResponses {
    remaining: Arc<AtomicUsize>,
    in_flight_is_put: Arc<AtomicBool>,
}

impl Intercept for LoseFirstPutResponses {
    fn name(&self) -> &'static str {
        "lose-first-put-responses"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let is_put = context.request().method() == "PUT";
        self.in_flight_is_put.store(is_put, Ordering::SeqCst);
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let response = context.response_mut();
        let is_put_success =
            response.status().as_u16() == 200 && self.in_flight_is_put.load(Ordering::SeqCst);
        if is_put_success
            && self
                .remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            *response.status_mut() = 500.try_into().unwrap();
        }
        Ok(())
    }
}

async fn manager_losing_first_put_responses(
    bucket: &str,
    lost: usize,
    recorder: &common::Recorder,
) -> s3state::RemoteState<s3state::S3Store> {
    let config = common::client_with(Some(recorder))
        .config()
        .to_builder()
        .interceptor(LoseFirstPutResponses {
            remaining: Arc::new(AtomicUsize::new(lost)),
            ..Default::default()
        })
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

/// Makes the first `remaining` PUTs fail the way real S3 fails overlapping conditional writes:
/// the write is not applied (its If-Match is spoiled, so S3 refuses it) and the answer is
/// `409 ConditionalRequestConflict`. No emulator produces this status.
#[derive(Debug, Clone)]
struct ConflictFirstPuts(Arc<AtomicUsize>, Arc<AtomicBool>);

impl Intercept for ConflictFirstPuts {
    fn name(&self) -> &'static str {
        "conflict-first-puts"
    }

    fn modify_before_transmit(
        &self,
        context: &mut aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let request = context.request_mut();
        // The state's PUTs only: the lock that update() takes first is left alone.
        let spoil = request.method() == "PUT"
            && !request.uri().contains(".tflock")
            && self
                .0
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if spoil {
            request.headers_mut().remove("if-none-match");
            request.headers_mut().insert("if-match", "\"spoiled\"");
        }
        self.1.store(spoil, Ordering::SeqCst);
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        if self.1.load(Ordering::SeqCst) {
            *context.response_mut().status_mut() = 409.try_into().unwrap();
        }
        Ok(())
    }
}

#[tokio::test]
async fn conditional_request_conflicts_from_s3_are_retried_until_the_write_lands() {
    let bucket = common::bucket(true).await;
    let recorder = common::Recorder::default();
    let config = common::client_with(Some(&recorder))
        .config()
        .to_builder()
        .interceptor(ConflictFirstPuts(
            Arc::new(AtomicUsize::new(3)),
            Default::default(),
        ))
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
        .interceptor(ConflictFirstPuts(
            Arc::new(AtomicUsize::new(100)),
            Default::default(),
        ))
        .build();
    let manager = common::builder(&bucket, KEY)
        .with_client(aws_sdk_s3::Client::from_conf(config))
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
