//! What each operation costs in HTTP requests, counted at the SDK's transport layer.

mod common;

use common::Recorder;
use s3state::{OutputValue, Persister, Refresher, State, Transient};

const KEY: &str = "count/terraform.tfstate";

#[tokio::test]
async fn every_request_is_conditional_and_an_unchanged_refresh_downloads_nothing() {
    let bucket = common::bucket(true).await;
    let recorder = Recorder::default();
    let manager = common::builder(&bucket, KEY)
        .with_client(common::client_with(Some(&recorder)))
        .build()
        .await
        .unwrap();
    let opening = recorder.take();
    assert_eq!(
        opening.len(),
        1,
        "opening checks versioning once: {opening:?}"
    );
    assert!(opening[0].uri.contains("versioning"), "{opening:?}");

    // The first persist creates the object with If-None-Match: *.
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state.outputs.insert("a".into(), OutputValue::new(&1));
    manager.write_state(state);
    manager.persist_state().await.unwrap();
    let create = recorder.take();
    assert_eq!(create.len(), 1, "{create:?}");
    assert_eq!(create[0].method, "PUT");
    assert_eq!(create[0].if_none_match.as_deref(), Some("*"));
    assert_eq!(create[0].status, Some(200));

    // Refreshing what we just wrote: one conditional GET, answered 304 with no body.
    manager.refresh_state().await.unwrap();
    let refresh = recorder.take();
    assert_eq!(refresh.len(), 1, "{refresh:?}");
    assert_eq!(refresh[0].method, "GET");
    assert!(refresh[0].if_none_match.is_some());
    assert_eq!(refresh[0].status, Some(304));
    assert_eq!(refresh[0].response_body_bytes, Some(0));

    // Persisting the unchanged state: no request at all.
    manager.persist_state().await.unwrap();
    assert!(recorder.take().is_empty());

    // A change: exactly one PUT, conditional on the tag we hold.
    let mut state = manager.state().unwrap();
    state.outputs.insert("b".into(), OutputValue::new(&2));
    manager.write_state(state);
    manager.persist_state().await.unwrap();
    let update = recorder.take();
    assert_eq!(update.len(), 1, "{update:?}");
    assert_eq!(update[0].method, "PUT");
    assert_eq!(update[0].if_match, create_etag_of(&bucket).await);

    // Someone else writes; our refresh is one GET that downloads the new body.
    let other = common::manager(&bucket, KEY).await;
    other.update(common::set_output("c", 3)).await.unwrap();
    manager.refresh_state().await.unwrap();
    let changed = recorder.take();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].status, Some(200));
    assert!(changed[0].response_body_bytes.unwrap() > 0);
}

/// The ETag of the version before the current one: what an If-Match update must have named.
async fn create_etag_of(bucket: &str) -> Option<String> {
    let versions = common::client()
        .list_object_versions()
        .bucket(bucket)
        .prefix(KEY)
        .send()
        .await
        .unwrap();
    versions
        .versions()
        .get(1)
        .and_then(|v| v.e_tag().map(str::to_owned))
}

#[tokio::test]
async fn the_versioning_check_is_one_request_per_build_and_none_per_workspace() {
    let bucket = common::bucket(true).await;
    let recorder = Recorder::default();
    for key in [
        "a/terraform.tfstate",
        "b/terraform.tfstate",
        "c/terraform.tfstate",
    ] {
        common::builder(&bucket, key)
            .with_client(common::client_with(Some(&recorder)))
            .build()
            .await
            .unwrap();
    }
    let checks = recorder.take();
    assert_eq!(checks.len(), 3, "{checks:?}");
    assert!(
        checks.iter().all(|c| c.uri.contains("versioning")),
        "{checks:?}"
    );

    let backend = common::builder(&bucket, "a/terraform.tfstate")
        .with_client(common::client_with(Some(&recorder)))
        .build_backend()
        .await
        .unwrap();
    for workspace in ["default", "dev", "prod"] {
        backend.manager(workspace).unwrap();
    }
    assert_eq!(recorder.take().len(), 1);
}

/// A manager whose client records requests and, like real S3, honours `If-Match` on
/// DeleteObject (LocalStack answers 501; see `common::ConditionalDeletes`).
async fn recorded_manager(
    bucket: &str,
    recorder: &Recorder,
    deletes: Option<&common::ConditionalDeletes>,
) -> s3state::RemoteState<s3state::S3Store> {
    let mut config = common::client_with(Some(recorder)).config().to_builder();
    if let Some(deletes) = deletes {
        config = config.interceptor(deletes.clone());
    }
    let manager = common::builder(bucket, KEY)
        .with_client(aws_sdk_s3::Client::from_conf(config.build()))
        .build()
        .await
        .unwrap();
    recorder.take();
    manager
}

async fn lock_refresh_persist_unlock(
    manager: &s3state::RemoteState<s3state::S3Store>,
    bucket: &str,
    deletes: Option<&common::ConditionalDeletes>,
    n: i64,
) {
    use s3state::{LockInfo, Locker};
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    if let Some(deletes) = deletes {
        let head = common::client()
            .head_object()
            .bucket(bucket)
            .key(format!("{KEY}.tflock"))
            .send()
            .await
            .unwrap();
        *deletes.current_lock_etag.lock().unwrap() = head.e_tag().map(str::to_owned);
    }
    manager.refresh_state().await.unwrap();
    let mut state = manager.state().unwrap();
    state.outputs.insert("n".into(), OutputValue::new(&n));
    manager.write_state(state);
    manager.persist_state().await.unwrap();
    manager.unlock(&id).await.unwrap();
}

#[tokio::test]
async fn a_whole_locked_update_costs_four_requests_where_deletes_are_conditional() {
    let bucket = common::bucket(true).await;
    common::manager(&bucket, KEY)
        .await
        .update(common::set_output("n", 0))
        .await
        .unwrap();
    let recorder = Recorder::default();
    let deletes = common::ConditionalDeletes::default();
    let manager = recorded_manager(&bucket, &recorder, Some(&deletes)).await;

    lock_refresh_persist_unlock(&manager, &bucket, Some(&deletes), 1).await;
    let methods: Vec<_> = recorder.take().into_iter().map(|e| e.method).collect();
    assert_eq!(
        methods,
        ["PUT", "GET", "PUT", "DELETE"],
        "lock, refresh, persist, unlock"
    );
}

#[tokio::test]
async fn on_localstack_the_same_cycle_costs_six_requests_then_five() {
    let bucket = common::bucket(true).await;
    common::manager(&bucket, KEY)
        .await
        .update(common::set_output("n", 0))
        .await
        .unwrap();
    let recorder = Recorder::default();
    let manager = recorded_manager(&bucket, &recorder, None).await;

    lock_refresh_persist_unlock(&manager, &bucket, None, 1).await;
    let first: Vec<_> = recorder
        .take()
        .into_iter()
        .map(|e| (e.method, e.status))
        .collect();
    assert_eq!(
        first,
        [
            ("PUT".into(), Some(200)),
            ("GET".into(), Some(200)),
            ("PUT".into(), Some(200)),
            ("DELETE".into(), Some(501)),
            ("GET".into(), Some(200)),
            ("DELETE".into(), Some(204)),
        ]
    );
    lock_refresh_persist_unlock(&manager, &bucket, None, 2).await;
    let second: Vec<_> = recorder.take().into_iter().map(|e| e.method).collect();
    assert_eq!(
        second,
        ["PUT", "GET", "PUT", "GET", "DELETE"],
        "the 501 is remembered"
    );
}
