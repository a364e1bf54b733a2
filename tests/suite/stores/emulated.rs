//! Stores that refuse what the AWS SDKs send, emulated with the fault proxy in front of the
//! store under test (issue 25; the refusals as hashicorp/terraform 34086, 36704 and 37130, and
//! Backblaze B2's answer to conditional writes, reported them). Each ends either in a working
//! s3state with the right checksum setting, or in a probe verdict of "unsafe" naming the
//! problem and a typed error from s3state, never in a write that silently went wrong.

use crate::common;
use common::proxy::{FaultProxy, Quirk, Recorded};
use s3state::s3::{CheckLevel, ChecksumMode, ProbeReport, Verdict};
use s3state::statemgr::LockInfo;
use s3state::{
    Error, Locker, OutputValue, Persister, Refresher, RemoteState, S3Store, State, Transient,
};

const KEY: &str = "stores/terraform.tfstate";

/// A manager for `bucket` through `proxy`, with this checksum setting.
async fn manager(proxy: &FaultProxy, bucket: &str, mode: ChecksumMode) -> RemoteState<S3Store> {
    common::builder(bucket, KEY)
        .with_client(common::client_for(proxy.endpoint()))
        .with_checksums(mode)
        .build()
        .await
        .expect("opening the bucket")
}

async fn probe(proxy: &FaultProxy, bucket: &str, mode: ChecksumMode) -> ProbeReport {
    common::builder(bucket, "unused.tfstate")
        .with_client(common::client_for(proxy.endpoint()))
        .with_checksums(mode)
        .build_backend()
        .await
        .expect("opening the bucket")
        .probe()
        .await
        .expect("the probe runs")
}

fn level_of(report: &ProbeReport, id: &str) -> (String, CheckLevel) {
    let check = report
        .checks
        .iter()
        .find(|check| check.id == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#?}"));
    (check.result.clone(), check.level)
}

/// Takes the lock, writes a state with output `n`, releases the lock.
async fn locked_write(manager: &RemoteState<S3Store>, n: i64) -> s3state::Result<()> {
    let id = manager.lock(&LockInfo::new("OperationTypeApply")).await?;
    manager.refresh_state().await?;
    let mut state = manager
        .state()
        .unwrap_or_else(|| State::new(semver::Version::new(1, 15, 5)));
    state.outputs.insert("n".into(), OutputValue::new(&n));
    manager.write_state(state);
    let persisted = manager.persist_state().await;
    manager.unlock(&id).await?;
    persisted
}

/// The output `n` of the state as a fresh manager reads it.
async fn read_back(manager: &RemoteState<S3Store>) -> Option<u64> {
    manager.refresh_state().await.expect("reading the state");
    let state = manager.state()?;
    state.outputs.get("n").and_then(|o| o.to_value().as_u64())
}

fn header<'r>(request: &'r Recorded, name: &str) -> Option<&'r str> {
    request
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn state_puts(requests: &[Recorded]) -> Vec<&Recorded> {
    requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with(KEY))
        .collect()
}

/// A store that refuses the flexible checksum headers (Ceph RGW's `XAmzContentSHA256Mismatch`):
/// under `auto` s3state's first write is refused, sent again with Content-MD5 and a signed
/// payload, and every later request goes that way; state and lock work. Under `always` the
/// write fails with the setting named, and the probe calls the store unsafe.
#[tokio::test]
async fn a_store_refusing_checksum_headers_works_under_auto_with_md5_and_a_signed_payload() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    proxy.emulate(Quirk::RefuseChecksumHeaders);

    let writer = manager(&proxy, &bucket, ChecksumMode::Auto).await;
    locked_write(&writer, 1).await.expect("first write");
    locked_write(&writer, 2).await.expect("second write");
    let reader = manager(&proxy, &bucket, ChecksumMode::Auto).await;
    assert_eq!(read_back(&reader).await, Some(2));

    let requests = proxy.take_requests();
    let first_put = requests.iter().find(|r| r.method == "PUT").unwrap();
    assert_eq!(
        first_put.status,
        Some(400),
        "the first write (the lock) went out with the checksum header and was refused: {first_put:#?}"
    );
    assert!(
        header(first_put, "x-amz-checksum-sha256").is_some(),
        "{first_put:#?}"
    );
    let puts = state_puts(&requests);
    let accepted: Vec<_> = puts.iter().filter(|put| put.status == Some(200)).collect();
    assert_eq!(accepted.len(), 2, "{puts:#?}");
    for put in accepted {
        assert!(header(put, "content-md5").is_some(), "{put:#?}");
        let payload = header(put, "x-amz-content-sha256").unwrap_or_default();
        assert!(
            payload.len() == 64 && payload.chars().all(|c| c.is_ascii_hexdigit()),
            "the payload is signed with its SHA-256, which the store checks: {put:#?}"
        );
        assert!(
            put.headers
                .iter()
                .all(|(name, _)| !name.starts_with("x-amz-checksum-")),
            "{put:#?}"
        );
    }
    // Learnt once: after the first refusal, nothing more is refused.
    let refused = requests.iter().filter(|r| r.status == Some(400)).count();
    assert_eq!(refused, 1, "{requests:#?}");

    let report = probe(&proxy, &bucket, ChecksumMode::Auto).await;
    let (result, level) = level_of(&report, "checksum_sha256");
    assert_eq!(level, CheckLevel::Info, "{result}");
    assert!(result.contains("XAmzContentSHA256Mismatch"), "{result}");
    assert_eq!(report.findings.checksum_header_accepted, Some(false));
    assert_eq!(report.findings.wrong_digest_refused, Some(true));
    assert!(report.findings.writes_compatible);
    assert_eq!(report.findings.checksum_trailer_accepted, Some(false));
    assert!(
        !matches!(report.verdict, Verdict::Unsafe { .. }),
        "{:?}",
        report.verdict
    );

    let strict = manager(&proxy, &bucket, ChecksumMode::Always).await;
    let err = locked_write(&strict, 3).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("XAmzContentSHA256Mismatch") && text.contains("S3STATE_CHECKSUMS"),
        "{text}"
    );
    let report = probe(&proxy, &bucket, ChecksumMode::Always).await;
    let Verdict::Unsafe { reasons } = &report.verdict else {
        panic!("expected unsafe, got {:?}", report.verdict);
    };
    assert!(
        reasons.iter().any(|r| r.contains("checksums on PUT")),
        "{reasons:?}"
    );

    // Configured compatible: no refused request at all.
    proxy.take_requests();
    let compatible = manager(&proxy, &bucket, ChecksumMode::Compatible).await;
    locked_write(&compatible, 4)
        .await
        .expect("compatible write");
    assert_eq!(read_back(&compatible).await, Some(4));
    let refused: Vec<_> = proxy
        .take_requests()
        .into_iter()
        .filter(|r| r.status == Some(400))
        .collect();
    assert_eq!(refused.len(), 0, "{refused:#?}");
}

/// A store that refuses `x-amz-checksum-mode` on reads (hashicorp/terraform 36704): under
/// `auto` the refused read is sent again without it and the state reads back; under `always`
/// the read fails and the probe calls the store unsafe.
#[tokio::test]
async fn a_store_refusing_checksum_mode_is_read_without_it_under_auto() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let writer = manager(&proxy, &bucket, ChecksumMode::Auto).await;
    locked_write(&writer, 7)
        .await
        .expect("writing before the quirk");
    proxy.emulate(Quirk::RefuseChecksumMode);
    proxy.take_requests();

    let reader = manager(&proxy, &bucket, ChecksumMode::Auto).await;
    assert_eq!(read_back(&reader).await, Some(7));
    locked_write(&reader, 8)
        .await
        .expect("a locked write after it");
    assert_eq!(read_back(&reader).await, Some(8));
    let gets: Vec<_> = proxy
        .take_requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(KEY))
        .collect();
    assert_eq!(
        gets.first().and_then(|get| get.status),
        Some(400),
        "{gets:#?}"
    );
    assert!(
        gets[1..]
            .iter()
            .all(|get| get.status != Some(400) && header(get, "x-amz-checksum-mode").is_none()),
        "{gets:#?}"
    );

    let report = probe(&proxy, &bucket, ChecksumMode::Auto).await;
    assert_eq!(level_of(&report, "checksum_mode_get").1, CheckLevel::Info);
    assert_eq!(report.findings.checksum_mode_accepted, Some(false));
    assert!(
        !matches!(report.verdict, Verdict::Unsafe { .. }),
        "{:?}",
        report.verdict
    );

    let strict = manager(&proxy, &bucket, ChecksumMode::Always).await;
    let err = strict.refresh_state().await.unwrap_err();
    assert!(err.to_string().contains("InvalidArgument"), "{err}");
    let report = probe(&proxy, &bucket, ChecksumMode::Always).await;
    let Verdict::Unsafe { reasons } = &report.verdict else {
        panic!("expected unsafe, got {:?}", report.verdict);
    };
    assert!(
        reasons.iter().any(|r| r.contains("x-amz-checksum-mode")),
        "{reasons:?}"
    );
}

/// A store that answers `501 NotImplemented` to conditional writes (Backblaze B2 did): the
/// probe calls it unsafe naming If-None-Match, and s3state refuses to lock or write with
/// `Error::ConditionalWritesUnsupported` rather than write unconditionally. Nothing is
/// written.
#[tokio::test]
async fn a_store_answering_501_to_conditions_is_unsafe_and_s3state_writes_nothing() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    proxy.emulate(Quirk::ConditionsNotImplemented);

    let report = probe(&proxy, &bucket, ChecksumMode::Auto).await;
    let Verdict::Unsafe { reasons } = &report.verdict else {
        panic!("expected unsafe, got {:?}", report.verdict);
    };
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("If-None-Match") && r.contains("501")),
        "{reasons:?}"
    );
    assert_eq!(
        report.findings.if_none_match,
        Some(s3state::s3::Enforcement::Refused { status: 501 })
    );

    let manager = manager(&proxy, &bucket, ChecksumMode::Auto).await;
    let err = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::ConditionalWritesUnsupported { .. }),
        "{err:?}"
    );
    manager.refresh_state().await.unwrap();
    manager.write_state(State::new(semver::Version::new(1, 15, 5)));
    // A refusal is an answer: the write did not land, so it is said as it is, not as a
    // failure whose outcome is in doubt.
    let err = manager.persist_state().await.unwrap_err();
    assert!(
        matches!(&err, Error::ConditionalWritesUnsupported { .. }),
        "{err:?}"
    );
    // An update is refused at once: one PUT, no retry rounds, and never "may have been
    // applied" (`WriteOutcomeUnknown`), which would tell a caller to check by hand.
    let unlocked = common::builder(&bucket, KEY)
        .with_client(common::client_for(proxy.endpoint()))
        .with_options(s3state::RemoteStateOptions {
            update_locking: s3state::UpdateLocking::Disabled,
            ..Default::default()
        })
        .build()
        .await
        .expect("opening the bucket");
    let puts_before = state_puts(&proxy.requests()).len();
    let err = unlocked
        .update(|state| {
            state.outputs.insert("n".into(), OutputValue::new(&1));
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ConditionalWritesUnsupported { .. }),
        "{err:?}"
    );
    assert_eq!(state_puts(&proxy.requests()).len(), puts_before + 1);
    let listed = common::client()
        .list_object_versions()
        .bucket(&bucket)
        .prefix("stores/")
        .send()
        .await
        .unwrap();
    assert!(
        listed.versions().is_empty() && listed.delete_markers().is_empty(),
        "nothing may be written: {listed:?}"
    );
}

/// A store that accepts If-Match/If-None-Match and ignores them makes locking useless, and
/// no single answer shows it: the probe calls it unsafe (it sends writes that must be
/// refused), and s3state, which cannot tell from a `200`, catches the lost update it causes
/// from what it reads next (`Error::StoreIgnoresConditions`) instead of building on it.
#[tokio::test]
async fn a_store_ignoring_conditions_is_unsafe_and_its_lost_update_is_caught() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    proxy.strip_conditional_headers();

    let report = probe(&proxy, &bucket, ChecksumMode::Auto).await;
    let Verdict::Unsafe { reasons } = &report.verdict else {
        panic!("expected unsafe, got {:?}", report.verdict);
    };
    for named in ["If-None-Match", "If-Match on PUT", "racing"] {
        assert!(
            reasons.iter().any(|r| r.contains(named)),
            "{named}: {reasons:?}"
        );
    }
    assert_eq!(report.findings.if_match_on_absent, Some(200));
    assert_eq!(report.findings.race_single_winner, Some(false));

    let first = manager(&proxy, &bucket, ChecksumMode::Auto).await;
    let second = manager(&proxy, &bucket, ChecksumMode::Auto).await;
    let write = |manager: &RemoteState<S3Store>, n: i64| {
        let mut state = manager
            .state()
            .unwrap_or_else(|| State::new(semver::Version::new(1, 15, 5)));
        state.outputs.insert("n".into(), OutputValue::new(&n));
        manager.write_state(state);
    };
    first.refresh_state().await.unwrap();
    write(&first, 1);
    first.persist_state().await.unwrap();
    second.refresh_state().await.unwrap();
    first.refresh_state().await.unwrap();
    write(&first, 2);
    first.persist_state().await.unwrap();
    // On a store that enforced If-Match this would be a conflict; here it lands over write 2.
    write(&second, 3);
    second.persist_state().await.unwrap();
    write(&first, 4);
    let caught = match first.refresh_state().await {
        Err(err) => err,
        Ok(()) => first.persist_state().await.unwrap_err(),
    };
    assert!(
        matches!(caught, Error::StoreIgnoresConditions { .. }),
        "{caught:?}"
    );
}
