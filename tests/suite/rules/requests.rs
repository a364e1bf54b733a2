//! What each operation costs in HTTP requests, counted at the SDK's transport layer.

use crate::common;

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
    let fresh = State::new(semver::Version::new(1, 15, 5));
    let create = persist_recorded(&manager, &recorder, fresh, "a", 1).await;
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
    let held = manager.state().unwrap();
    let update = persist_recorded(&manager, &recorder, held, "b", 2).await;
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

/// Persists `state` with the output `name` = `value`: the requests that made.
async fn persist_recorded(
    manager: &s3state::RemoteState<s3state::S3Store>,
    recorder: &Recorder,
    mut state: State,
    name: &str,
    value: i64,
) -> Vec<common::Exchange> {
    state.outputs.insert(name.into(), OutputValue::new(&value));
    manager.write_state(state);
    manager.persist_state().await.unwrap();
    recorder.take()
}

/// The ETag of the version before the current one: what an If-Match update must have named.
async fn create_etag_of(bucket: &str) -> Option<String> {
    common::versions_under(bucket, KEY)
        .await
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
    let config = common::with_interceptor(
        common::client_with(Some(recorder)).config().to_builder(),
        deletes.map(common::ConditionalDeletes::hooks),
    );
    let manager = common::builder_with_config(bucket, KEY, config.build())
        .build()
        .await
        .unwrap();
    recorder.take();
    manager
}

/// A fresh bucket whose state (at `KEY`) has the output `n` = 0.
async fn bucket_with_n_0() -> String {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    manager.update(common::set_output("n", 0)).await.unwrap();
    bucket
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
        let head = common::head(bucket, &format!("{KEY}.tflock")).await;
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
    let (bucket, recorder) = (bucket_with_n_0().await, Recorder::default());
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

/// A manager of `bucket` whose client records its requests and goes through a proxy that
/// makes the store refuse conditional deletes with 501 as LocalStack does (the proxy answers
/// the first one so on stores that enforce them). Keep the proxy while the manager is used.
async fn recorded_manager_refusing_conditional_deletes(
    bucket: &str,
    recorder: &Recorder,
    options: s3state::RemoteStateOptions,
) -> (
    s3state::RemoteState<s3state::S3Store>,
    common::proxy::FaultProxy,
) {
    let proxy = common::proxy::FaultProxy::start(common::endpoint()).await;
    common::refuse_next_conditional_delete(&proxy, ".tflock");
    let manager = common::builder(bucket, KEY)
        .with_client(common::recorded_client_for(proxy.endpoint(), recorder))
        .with_options(options)
        .build()
        .await
        .unwrap();
    recorder.take();
    (manager, proxy)
}

#[tokio::test]
async fn where_conditional_deletes_are_refused_the_same_cycle_costs_six_requests_then_five() {
    let (bucket, recorder) = (bucket_with_n_0().await, Recorder::default());
    let (manager, _proxy) =
        recorded_manager_refusing_conditional_deletes(&bucket, &recorder, Default::default()).await;

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

/// Lets a conditional DELETE of the lock through (as real S3 does) when it names the lock
/// that was last created: records the ETag of every successful lock PUT for
/// `common::ConditionalDeletes`, for operations that take the lock themselves, like `update()`.
/// (Requests are sent one at a time, so a response belongs to the request seen last.)
fn track_lock_etag(deletes: &common::ConditionalDeletes) -> common::hooks::Hooks {
    use std::sync::atomic::{AtomicBool, Ordering};
    let etag = deletes.current_lock_etag.clone();
    let lock_put_in_flight = std::sync::Arc::new(AtomicBool::new(false));
    let in_flight = lock_put_in_flight.clone();
    common::hooks::Hooks::new("track-lock-etag")
        .read_request(move |request| {
            let lock_put = request.method() == "PUT" && request.uri().contains(".tflock");
            lock_put_in_flight.store(lock_put, Ordering::SeqCst);
        })
        .read_response(move |response| {
            if in_flight.swap(false, Ordering::SeqCst) && response.status().as_u16() == 200 {
                *etag.lock().unwrap() = response.headers().get("etag").map(str::to_owned);
            }
        })
}

/// A manager with `options` of a fresh state (`n` = 0), and the recorder of its requests;
/// deletes are conditional (as on real S3) when `conditional_deletes` is set, else LocalStack
/// answers them 501.
async fn recorded_update_manager(
    conditional_deletes: bool,
    options: s3state::RemoteStateOptions,
) -> (s3state::RemoteState<s3state::S3Store>, Recorder) {
    let (bucket, recorder) = (bucket_with_n_0().await, Recorder::default());
    let mut config = common::client_with(Some(&recorder)).config().to_builder();
    if conditional_deletes {
        let deletes = common::ConditionalDeletes::default();
        config = config
            .interceptor(deletes.hooks())
            .interceptor(track_lock_etag(&deletes));
    }
    let manager = common::builder_with_config(&bucket, KEY, config.build())
        .with_options(options)
        .build()
        .await
        .unwrap();
    recorder.take();
    (manager, recorder)
}

fn calls(recorder: &Recorder) -> Vec<(String, bool, Option<u16>)> {
    recorder
        .take()
        .into_iter()
        .map(|e| (e.method, e.uri.contains(".tflock"), e.status))
        .collect()
}

/// The calls one `update()` setting `n` makes.
async fn update_calls(
    manager: &s3state::RemoteState<s3state::S3Store>,
    recorder: &Recorder,
    n: i64,
) -> Vec<(String, bool, Option<u16>)> {
    manager.update(common::set_output("n", n)).await.unwrap();
    calls(recorder)
}

fn call(method: &str, lock: bool, status: u16) -> (String, bool, Option<u16>) {
    (method.to_owned(), lock, Some(status))
}

#[tokio::test]
async fn update_looks_at_the_queue_and_takes_the_lock_so_it_costs_five_requests_where_deletes_are_conditional()
 {
    let (manager, recorder) = recorded_update_manager(true, Default::default()).await;

    assert_eq!(
        update_calls(&manager, &recorder, 1).await,
        [
            call("GET", true, 404),    // the lock queue (`.tflock.queue`): nobody waits
            call("PUT", true, 200),    // lock
            call("GET", false, 200),   // refresh (first read of this manager)
            call("PUT", false, 200),   // conditional write
            call("DELETE", true, 204), // unlock: conditional delete
        ]
    );
    assert_eq!(
        update_calls(&manager, &recorder, 2).await,
        [
            call("GET", true, 404),
            call("PUT", true, 200),
            call("GET", false, 304), // nobody else wrote: no body
            call("PUT", false, 200),
            call("DELETE", true, 204),
        ]
    );
}

#[tokio::test]
async fn where_conditional_deletes_are_refused_an_update_costs_seven_requests_then_six() {
    let (bucket, recorder) = (bucket_with_n_0().await, Recorder::default());
    let (manager, _proxy) =
        recorded_manager_refusing_conditional_deletes(&bucket, &recorder, Default::default()).await;

    assert_eq!(
        update_calls(&manager, &recorder, 1).await,
        [
            call("GET", true, 404), // the lock queue: nobody waits
            call("PUT", true, 200),
            call("GET", false, 200),
            call("PUT", false, 200),
            call("DELETE", true, 501), // no conditional delete here
            call("GET", true, 200),    // read the lock, check it is ours
            call("DELETE", true, 204),
        ]
    );
    assert_eq!(
        update_calls(&manager, &recorder, 2).await,
        [
            call("GET", true, 404),
            call("PUT", true, 200),
            call("GET", false, 304),
            call("PUT", false, 200),
            call("GET", true, 200), // the 501 is remembered
            call("DELETE", true, 204),
        ]
    );
}

#[tokio::test]
async fn an_update_without_the_lock_costs_a_read_and_a_write() {
    let options = s3state::RemoteStateOptions {
        update_locking: s3state::UpdateLocking::Disabled,
        ..Default::default()
    };
    let (manager, recorder) = recorded_update_manager(false, options).await;
    assert_eq!(
        update_calls(&manager, &recorder, 1).await,
        [call("GET", false, 200), call("PUT", false, 200)]
    );
    // A round that changes nothing writes nothing.
    assert_eq!(
        update_calls(&manager, &recorder, 1).await,
        [call("GET", false, 304)]
    );
}

/// The requests `s3state push` makes, seen by a proxy in front of LocalStack, without the
/// versioning check every command opens with.
async fn cli_push_requests(bucket: &str, file: &std::path::Path, args: &[&str]) -> Vec<String> {
    let proxy = common::proxy::FaultProxy::start(common::endpoint()).await;
    let mut command = common::s3state_at(proxy.endpoint(), common::temp_dir("s3state-requests"));
    command
        .env("S3STATE_BUCKET", bucket)
        .env("S3STATE_KEY", KEY)
        .arg("push")
        .args(args)
        .arg(file);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let requests = proxy.take_requests();
    assert!(
        requests[0].query.contains("versioning"),
        "opens with the versioning check: {requests:?}"
    );
    requests[1..]
        .iter()
        .map(|r| {
            let what = if r.path.ends_with(".tflock") {
                "lock"
            } else {
                "state"
            };
            format!("{} {what} {}", r.method, r.status.unwrap_or(0))
        })
        .collect()
}

#[tokio::test]
async fn a_cli_push_reads_the_body_only_of_a_state_terraform_wrote() {
    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, KEY, common::TERRAFORM_STATE).await;
    let edited = |serial: u64| {
        let mut state: serde_json::Value = serde_json::from_slice(common::TERRAFORM_STATE).unwrap();
        state["serial"] = serial.into();
        state["outputs"]["pushed"] = serde_json::json!({"value": serial, "type": "number"});
        let path = common::temp_dir("s3state-requests").join("state.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
        path
    };
    // Where the store has no conditional delete (LocalStack), the unlock's 501 is followed by a
    // read of the lock and a plain delete; where it has (real S3, SeaweedFS), the first DELETE
    // is answered 204 and the other two are not sent.
    let unlock: &[&str] = if common::store_facts().conditional_delete {
        &["DELETE lock 204"]
    } else {
        &["DELETE lock 501", "GET lock 200", "DELETE lock 204"]
    };

    // Terraform records no serial beside its state: the head says so, and the body is read.
    assert_eq!(
        cli_push_requests(&bucket, &edited(2), &[]).await,
        [
            &[
                "PUT lock 200",
                "HEAD state 200",
                "GET state 200",
                "PUT state 200"
            ][..],
            unlock,
        ]
        .concat()
    );
    // s3state's own state is judged from its head: no GET of the state.
    assert_eq!(
        cli_push_requests(&bucket, &edited(4), &[]).await,
        [
            &["PUT lock 200", "HEAD state 200", "PUT state 200"][..],
            unlock,
        ]
        .concat()
    );
    assert_eq!(
        cli_push_requests(&bucket, &edited(6), &["--lock=false"]).await,
        ["HEAD state 200", "PUT state 200"]
    );

    // Pushing what is stored: the checksum says so, and nothing is read or written.
    let stored = common::temp_dir("s3state-requests").join("stored.json");
    std::fs::write(&stored, common::get_raw(&bucket, KEY).await).unwrap();
    assert_eq!(
        cli_push_requests(&bucket, &stored, &["--lock=false"]).await,
        ["HEAD state 200"]
    );
    assert_eq!(common::version_count(&bucket, KEY).await, 4);
}

#[tokio::test]
async fn a_waiting_lock_polls_with_one_conditional_get_and_takes_the_lock_once_it_is_released() {
    use s3state::{LockInfo, Locker};
    let (bucket, holder) = common::bucket_and_manager(KEY).await;
    let held = holder.lock(&LockInfo::new("apply")).await.unwrap();

    let (waiter, recorder) = common::recorded_manager(&bucket, KEY).await;
    let waiting = tokio::spawn(async move {
        waiter
            .locker()
            .lock_with_timeout(&LockInfo::new("wait"), std::time::Duration::from_secs(120))
            .await
    });
    // Release only after the waiter has polled at least once (a 304), however slow the machine.
    loop {
        if recorder.peek().iter().any(|e| e.status == Some(304)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    holder.unlock(&held).await.unwrap();
    waiting.await.unwrap().expect("the lock, once released");

    let exchanges = recorder.take();
    let summary: Vec<_> = exchanges
        .iter()
        .map(|e| {
            format!(
                "{} {:?} inm={}",
                e.method,
                e.status,
                e.if_none_match.as_deref().unwrap_or("-")
            )
        })
        .collect();
    // The first attempt is refused and the holder is read once...
    assert_eq!(exchanges[0].method, "PUT", "{summary:?}");
    assert_eq!(exchanges[0].status, Some(412), "{summary:?}");
    assert_eq!(exchanges[1].method, "GET", "{summary:?}");
    assert_eq!(exchanges[1].status, Some(200), "{summary:?}");
    // ...then each poll is one conditional GET of that lock, answered 304 without a body,
    // until it is gone; only then is the lock tried again, and taken.
    let polls = &exchanges[2..exchanges.len() - 2];
    assert!(!polls.is_empty(), "{summary:?}");
    for poll in polls {
        assert_eq!(poll.method, "GET", "{summary:?}");
        assert_eq!(poll.status, Some(304), "{summary:?}");
        assert!(poll.if_none_match.is_some(), "{summary:?}");
    }
    let gone = &exchanges[exchanges.len() - 2];
    assert_eq!(
        (gone.method.as_str(), gone.status),
        ("GET", Some(404)),
        "{summary:?}"
    );
    let taken = &exchanges[exchanges.len() - 1];
    assert_eq!(
        (taken.method.as_str(), taken.status),
        ("PUT", Some(200)),
        "{summary:?}"
    );
}
