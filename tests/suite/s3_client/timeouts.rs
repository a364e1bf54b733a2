//! No request to S3 waits forever (issue 23): through a proxy that accepts requests and never
//! answers, the library and the `s3state` command give up within their timeouts with
//! `Error::Timeout` naming the operation and the setting to raise, and a write or lock whose
//! request timed out is reported as in doubt (looked up), never as "not written".
//!
//! Short timeouts (1 s) keep these quick. Durations are not asserted, only that each call
//! returns, with the error it should: every test is bounded by `SAFETY_NET` in case it does not.

use crate::common;

use common::proxy::{Fault, FaultProxy, Rule};
use s3state::{
    Error, LockInfo, Locker, Refresher, RemoteState, RemoteStateOptions, S3Store, TimeoutSetting,
    Timeouts, UpdateLocking,
};
use std::future::Future;
use std::time::Duration;

const KEY: &str = "timeouts/terraform.tfstate";
const LOCK_KEY: &str = "timeouts/terraform.tfstate.tflock";

/// Far beyond what any test here should take: it fails the test instead of hanging it.
const SAFETY_NET: Duration = Duration::from_secs(90);

/// The bounds the tests run with: a stalled request is given up on after a second.
fn short() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(1),
        read: Duration::from_secs(1),
        operation_attempt: Duration::from_secs(5),
        operation: Duration::from_secs(10),
    }
}

async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(SAFETY_NET, future)
        .await
        .expect("the call returned within the safety net: a request waited without bound")
}

/// A manager configured as an application would (endpoint, region, credentials: the client is
/// built by s3state), whose requests go through `proxy`, with `timeouts`. Its updates take the
/// lock, and a write that got no answer is waited for a second before the lock is released.
async fn manager_via(proxy: &FaultProxy, bucket: &str, timeouts: Timeouts) -> RemoteState<S3Store> {
    let manager = common::settings_builder(proxy.endpoint(), bucket, KEY)
        .with_timeouts(timeouts)
        .with_max_attempts(2)
        .with_options(RemoteStateOptions {
            update_locking: UpdateLocking::Lock {
                timeout: Duration::from_secs(5),
            },
            unanswered_write_settle: Duration::from_secs(1),
            ..Default::default()
        })
        .build()
        .await
        .unwrap();
    proxy.take_requests(); // the versioning check
    manager
}

/// A bucket holding a state (serial 1, output `n` = 1), and a manager over it through a proxy.
async fn seeded(timeouts: Timeouts) -> (String, FaultProxy, RemoteState<S3Store>) {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let manager = manager_via(&proxy, &bucket, timeouts).await;
    manager.update(common::set_output("n", 1)).await.unwrap();
    proxy.take_requests();
    (bucket, proxy, manager)
}

fn assert_timeout(err: &Error, operation: &str, setting: TimeoutSetting) {
    match err {
        Error::Timeout {
            operation: op,
            location,
            setting: ran_out,
            ..
        } => {
            assert_eq!(*op, operation, "{err}");
            assert_eq!(*ran_out, setting, "{err}");
            assert!(location.contains("timeouts/terraform.tfstate"), "{err}");
        }
        other => panic!("expected Error::Timeout for {operation}, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("timed out"), "{message}");
    assert!(message.contains(setting.flag()), "{message}");
    assert!(message.contains(setting.env()), "{message}");
}

/// Every `method` request to a path ending in `path_ending` gets `fault` (the proxy accepts
/// it and never answers, or answers its headers and never its body).
fn stall(proxy: &FaultProxy, fault: Fault, method: &'static str, path_ending: &str) {
    proxy.inject(
        Rule::new(fault)
            .method(method)
            .path_ending(path_ending)
            .times(100),
    );
}

#[tokio::test]
async fn a_refresh_over_a_store_that_never_answers_fails_with_the_read_timeout() {
    let (_bucket, proxy, manager) = seeded(short()).await;
    proxy.inject(Rule::new(Fault::Stall).method("GET").times(100));
    let err = bounded(manager.refresh_state()).await.unwrap_err();
    assert_timeout(&err, "GetObject", TimeoutSetting::Read);
    assert!(err.is_timeout());
    // The SDK tried twice (with_max_attempts), each attempt given up on by the read timeout.
    let gets = proxy
        .take_requests()
        .into_iter()
        .filter(|request| request.method == "GET")
        .count();
    assert_eq!(gets, 2);
}

#[tokio::test]
async fn the_operation_timeout_bounds_a_request_with_all_its_attempts() {
    let (_bucket, proxy, manager) = seeded(Timeouts {
        read: Duration::from_secs(30),
        operation_attempt: Duration::from_secs(30),
        operation: Duration::from_secs(1),
        ..short()
    })
    .await;
    proxy.inject(Rule::new(Fault::Stall).method("GET").times(100));
    let err = bounded(manager.refresh_state()).await.unwrap_err();
    assert_timeout(&err, "GetObject", TimeoutSetting::Operation);
}

#[tokio::test]
async fn a_body_that_stops_after_its_headers_fails_with_the_read_timeout() {
    // The SDK's read timeout ends with the headers; s3state bounds each chunk of the body too.
    let (bucket, proxy, _writer) = seeded(short()).await;
    // A manager that has not read the state yet, so its refresh downloads the body.
    let manager = manager_via(&proxy, &bucket, short()).await;
    stall(&proxy, Fault::StallBody, "GET", KEY);
    let err = bounded(manager.refresh_state()).await.unwrap_err();
    assert_timeout(&err, "GetObject", TimeoutSetting::Read);
}

#[tokio::test]
async fn an_update_whose_read_never_answers_fails_and_releases_its_lock() {
    let (bucket, proxy, manager) = seeded(short()).await;
    stall(&proxy, Fault::Stall, "GET", KEY);
    let err = bounded(manager.update(common::set_output("n", 2)))
        .await
        .unwrap_err();
    assert_timeout(&err, "GetObject", TimeoutSetting::Read);
    assert!(
        !common::object_exists(&bucket, LOCK_KEY).await,
        "nothing was written, so the update's lock is released at once"
    );
}

#[tokio::test]
async fn an_update_whose_write_never_answers_is_in_doubt_not_unwritten() {
    let (bucket, proxy, manager) = seeded(short()).await;
    // Only the state's PUT is swallowed; the lock's PUT and every read go through, so the
    // write can be looked up (and is not there: the proxy never forwarded it).
    stall(&proxy, Fault::Stall, "PUT", KEY);
    let err = bounded(manager.update(common::set_output("n", 2)))
        .await
        .unwrap_err();
    match &err {
        // A timed-out write is no answer: it may land yet, so it is never "not written".
        Error::WriteOutcomeUnknown {
            write_ids, source, ..
        } => {
            assert!(!write_ids.is_empty(), "{err}");
            assert!(source.is_timeout(), "{err}");
        }
        other => panic!("expected WriteOutcomeUnknown, got {other:?}"),
    }
    assert!(err.is_timeout());
    let message = format!("{err}");
    assert!(
        message.contains("PutObject") && message.contains("timed out"),
        "{message}"
    );
    assert!(
        message.contains("--read-timeout"),
        "names the setting: {message}"
    );
    // The update waited out the settle for its unanswered write, then released the lock.
    assert!(
        !common::object_exists(&bucket, LOCK_KEY).await,
        "the update's lock is released"
    );
    let stored: serde_json::Value =
        serde_json::from_slice(&common::get_raw(&bucket, KEY).await).unwrap();
    assert_eq!(stored["serial"], 1, "the swallowed write never reached S3");
}

#[tokio::test]
async fn a_lock_whose_put_never_answers_is_reported_with_its_id() {
    let (_bucket, proxy, manager) = seeded(short()).await;
    stall(&proxy, Fault::Stall, "PUT", ".tflock");
    let info = LockInfo::new("OperationTypeApply");
    let err = bounded(manager.lock(&info)).await.unwrap_err();
    match &err {
        Error::LockOutcomeUnknown { id, source, .. } => {
            assert_eq!(*id, info.id);
            match source.as_ref() {
                Error::Timeout {
                    operation, setting, ..
                } => {
                    assert_eq!(*operation, "PutObject");
                    assert_eq!(*setting, TimeoutSetting::Read);
                }
                other => panic!("expected a PutObject timeout, got {other:?}"),
            }
        }
        other => panic!("expected LockOutcomeUnknown, got {other:?}"),
    }
    assert!(err.to_string().contains(&info.id), "{err}");
}

/// `s3state pull` through the proxy, with `args` before the command and `env` set.
async fn pull_via(
    proxy: &FaultProxy,
    bucket: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut pull = common::s3state_on(bucket, KEY, common::temp_dir("s3state-timeouts"));
    pull.env("S3STATE_ENDPOINT_URL", proxy.endpoint())
        .args(args)
        .arg("pull");
    for (name, value) in env {
        pull.env(name, value);
    }
    // Off the runtime's thread: the proxy serves the command on this runtime.
    bounded(tokio::task::spawn_blocking(move || pull.output().unwrap()))
        .await
        .unwrap()
}

#[tokio::test]
async fn pull_through_a_proxy_that_never_answers_exits_naming_the_timeout() {
    let (bucket, proxy, _manager) = seeded(short()).await;
    stall(&proxy, Fault::Stall, "GET", KEY);
    let output = pull_via(&proxy, &bucket, &["--read-timeout", "1s"], &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing was printed as the state");
    assert!(
        stderr.contains("GetObject") && stderr.contains("timed out"),
        "{stderr}"
    );
    assert!(stderr.contains("read timeout"), "{stderr}");
    assert!(stderr.contains("--read-timeout"), "{stderr}");
}

#[tokio::test]
async fn pull_takes_its_timeouts_from_the_environment_and_a_flag_wins() {
    let (bucket, proxy, _manager) = seeded(short()).await;
    stall(&proxy, Fault::Stall, "GET", KEY);
    // From the variables: the operation bound (1s) runs out before the read bound (30s).
    let env = [
        ("S3STATE_READ_TIMEOUT", "30s"),
        ("S3STATE_OPERATION_TIMEOUT", "1s"),
    ];
    let output = pull_via(&proxy, &bucket, &[], &env).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--operation-timeout"), "{stderr}");
    assert!(stderr.contains("S3STATE_OPERATION_TIMEOUT"), "{stderr}");

    // A flag wins over its variable: a read bound of 1s now runs out first.
    let env = [
        ("S3STATE_READ_TIMEOUT", "30s"),
        ("S3STATE_OPERATION_TIMEOUT", "20s"),
    ];
    let output = pull_via(&proxy, &bucket, &["--read-timeout", "1s"], &env).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--read-timeout"), "{stderr}");
}

#[tokio::test]
async fn a_malformed_timeout_is_a_usage_error_before_any_request() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let output = pull_via(&proxy, &bucket, &["--read-timeout", "30"], &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--read-timeout"), "{stderr}");
    assert!(proxy.requests().is_empty(), "nothing was sent");
}
