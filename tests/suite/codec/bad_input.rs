//! Bad input gives a typed error and overwrites nothing: each test counts versions before and
//! after.

use crate::common;

use s3state::{DecodeError, Error, Locker, OutputValue, Persister, Refresher, State, Transient};

const KEY: &str = "bad/terraform.tfstate";

async fn fresh_state_write_is_refused_without_overwriting(bucket: &str, original: &[u8]) {
    let manager = common::manager(bucket, KEY).await;
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state
        .outputs
        .insert("intruder".into(), OutputValue::new(&true));
    manager.write_state(state);
    let err = manager.persist_state().await.unwrap_err();
    assert!(
        matches!(err, Error::Conflict { remote: None, .. }),
        "{err:?}"
    );
    assert_eq!(common::version_count(bucket, KEY).await, 1);
    assert_eq!(common::get_raw(bucket, KEY).await, original);
}

#[tokio::test]
async fn a_corrupt_object_is_a_decode_error_with_position_and_is_never_overwritten() {
    let bucket = common::bucket(true).await;
    let corrupt = b"{\n  \"version\": 4,\n  \"serial\": ]\n}\n";
    common::put_raw(&bucket, KEY, corrupt).await;
    let manager = common::manager(&bucket, KEY).await;

    let err = manager.refresh_state().await.unwrap_err();
    match &err {
        Error::Decode {
            location,
            source: DecodeError::InvalidJson { line, column, .. },
        } => {
            assert_eq!(location, &format!("s3://{bucket}/{KEY}"));
            assert_eq!((*line, *column), (3, 13));
        }
        other => panic!("expected a Decode error, got {other:?}"),
    }
    let update = manager.update(|_| ()).await.unwrap_err();
    assert!(matches!(update, Error::Decode { .. }), "{update:?}");
    fresh_state_write_is_refused_without_overwriting(&bucket, corrupt).await;
}

#[tokio::test]
async fn a_state_from_a_newer_format_is_refused_naming_both_versions() {
    let bucket = common::bucket(true).await;
    let future = br#"{"version": 5, "serial": 9, "lineage": "x", "things": []}"#;
    common::put_raw(&bucket, KEY, future).await;
    let manager = common::manager(&bucket, KEY).await;

    let err = manager.refresh_state().await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Decode {
                source: DecodeError::UnsupportedVersion {
                    found: 5,
                    supported: 4
                },
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("version 5") && message.contains("version 4"),
        "{message}"
    );
    fresh_state_write_is_refused_without_overwriting(&bucket, future).await;
}

#[tokio::test]
async fn an_empty_object_reads_as_no_state_and_is_replaced_only_conditionally() {
    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, KEY, b"").await;
    let manager = common::manager(&bucket, KEY).await;
    manager.refresh_state().await.unwrap();
    assert!(manager.state().is_none());
    manager.update(common::set_output("a", 1)).await.unwrap();
    assert_eq!(common::version_count(&bucket, KEY).await, 2);
}

#[tokio::test]
async fn a_state_of_an_unrelated_lineage_is_refused() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    manager.update(common::set_output("a", 1)).await.unwrap();
    let before = common::get_raw(&bucket, KEY).await;

    let mut stranger = manager.state().unwrap();
    stranger.lineage = uuid::Uuid::new_v4().to_string();
    stranger.outputs.insert("b".into(), OutputValue::new(&2));
    manager.write_state(stranger.clone());
    let err = manager.persist_state().await.unwrap_err();
    match &err {
        Error::LineageMismatch { local, .. } => assert_eq!(local, &stranger.lineage),
        other => panic!("expected LineageMismatch, got {other:?}"),
    }
    assert_eq!(common::version_count(&bucket, KEY).await, 1);
    assert_eq!(common::get_raw(&bucket, KEY).await, before);
}

#[tokio::test]
async fn a_state_with_an_older_serial_is_refused() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    for n in 0..3 {
        manager.update(common::set_output("n", n)).await.unwrap();
    }
    let mut stale = manager.state().unwrap();
    stale.serial -= 1;
    stale.outputs.insert("n".into(), OutputValue::new(&99));
    manager.write_state(stale);
    let err = manager.persist_state().await.unwrap_err();
    common::assert_serial_regression(&err, 2, 3);
    assert_eq!(common::version_count(&bucket, KEY).await, 3);
}

#[tokio::test]
async fn a_state_deleted_meanwhile_is_a_conflict_not_a_resurrection() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    manager.update(common::set_output("a", 1)).await.unwrap();
    common::delete_object(&bucket, KEY).await;

    let mut state = manager.state().unwrap();
    state.outputs.insert("a".into(), OutputValue::new(&2));
    manager.write_state(state);
    let err = manager.persist_state().await.unwrap_err();
    assert!(
        matches!(err, Error::Conflict { remote: None, .. }),
        "{err:?}"
    );
    assert_eq!(common::version_count(&bucket, KEY).await, 1);
}

#[tokio::test]
async fn a_missing_bucket_is_reported_by_name() {
    let err = common::builder("s3state-test-no-such-bucket", KEY)
        .build()
        .await
        .unwrap_err();
    match err {
        Error::BucketNotFound { bucket } => assert_eq!(bucket, "s3state-test-no-such-bucket"),
        other => panic!("expected BucketNotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bucket_without_versioning_is_refused_with_the_fix_unless_opted_out() {
    let bucket = common::bucket(false).await;
    let err = common::builder(&bucket, KEY).build().await.unwrap_err();
    assert!(
        matches!(&err, Error::VersioningNotEnabled { status, .. } if status == "disabled"),
        "{err:?}"
    );
    assert!(err.to_string().contains("put-bucket-versioning"), "{err}");
    assert_eq!(common::version_count(&bucket, KEY).await, 0);

    let manager = common::builder(&bucket, KEY)
        .with_versioning_required(false)
        .build()
        .await
        .unwrap();
    manager.update(common::set_output("a", 1)).await.unwrap();
    assert_eq!(common::version_count(&bucket, KEY).await, 1);
}

#[tokio::test]
async fn bad_configuration_is_refused_before_any_request() {
    let recorder = common::Recorder::default();
    let bucket = common::bucket(true).await;
    let cases: Vec<(s3state::S3Builder, &str)> = vec![
        (s3state::S3Builder::new().with_bucket(&bucket), "key"),
        (s3state::S3Builder::new().with_key(KEY), "bucket"),
        (
            s3state::S3Builder::new()
                .with_bucket(&bucket)
                .with_key("/abs/key"),
            "key",
        ),
        (
            s3state::S3Builder::new()
                .with_bucket(&bucket)
                .with_key("a//b"),
            "key",
        ),
        (
            s3state::S3Builder::new()
                .with_bucket(&bucket)
                .with_key(KEY)
                .with_workspace("a/b"),
            "workspace",
        ),
        (
            s3state::S3Builder::new()
                .with_bucket(&bucket)
                .with_key(KEY)
                .with_sse_customer_key("c2hvcnQ="),
            "sse_customer_key",
        ),
    ];
    for (builder, expected_field) in cases {
        let err = builder
            .with_client(common::client_with(Some(&recorder)))
            .build()
            .await
            .unwrap_err();
        match err {
            Error::InvalidConfig { field, env, .. } => {
                assert_eq!(field, expected_field);
                assert!(env.starts_with("S3STATE_"), "{env}");
            }
            other => panic!("expected InvalidConfig for {expected_field}, got {other:?}"),
        }
    }
    assert!(
        recorder.take().is_empty(),
        "no request may be sent for bad configuration"
    );
    assert_eq!(common::version_count(&bucket, KEY).await, 0);
}

/// A state with `field` replaced by raw JSON text.
fn sample_with(field: &str, raw: &str) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(common::TERRAFORM_STATE).unwrap();
    value[field] = serde_json::from_str(raw).unwrap();
    serde_json::to_vec(&value).unwrap()
}

/// Whether an error is the one a case expects.
type Check = Box<dyn Fn(&Error) -> bool>;

#[tokio::test]
async fn every_kind_of_bad_state_is_a_typed_error_and_writes_nothing() {
    let bucket = common::bucket(true).await;
    let truncated = &common::TERRAFORM_STATE[..common::TERRAFORM_STATE.len() / 2];
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(common::TERRAFORM_STATE);
    let duplicate = String::from_utf8(common::TERRAFORM_STATE.to_vec())
        .unwrap()
        .replacen("\"serial\": 1,", "\"serial\": 1,\n  \"serial\": 9,", 1);
    let deep = format!(
        r#"{{"version":4,"terraform_version":"1.15.5","serial":1,"lineage":"x","outputs":{{"o":{{"type":"dynamic","value":{}{}}}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let decode = |check: fn(&DecodeError) -> bool| -> Check {
        Box::new(move |err| matches!(err, Error::Decode { source, .. } if check(source)))
    };
    let cases: Vec<(&str, Vec<u8>, Check, &str)> = vec![
        (
            "non-JSON body",
            b"<html>oops</html>".to_vec(),
            decode(|e| {
                matches!(
                    e,
                    DecodeError::InvalidJson {
                        line: 1,
                        column: 1,
                        ..
                    }
                )
            }),
            "invalid JSON at line 1, column 1",
        ),
        (
            "truncated body",
            truncated.to_vec(),
            decode(|e| matches!(e, DecodeError::InvalidJson { .. })),
            "EOF while parsing",
        ),
        (
            "UTF-8 BOM",
            bom,
            decode(|e| {
                matches!(
                    e,
                    DecodeError::InvalidJson {
                        line: 1,
                        column: 1,
                        ..
                    }
                )
            }),
            "invalid JSON",
        ),
        (
            "JSON array",
            b"[1, 2]".to_vec(),
            decode(|e| matches!(e, DecodeError::InvalidJson { .. })),
            "expected a JSON object",
        ),
        (
            "v3 state",
            sample_with("version", "3"),
            decode(|e| matches!(e, DecodeError::LegacyVersion { found: 3, .. })),
            "legacy format version 3",
        ),
        (
            "v5 state",
            sample_with("version", "5"),
            decode(|e| matches!(e, DecodeError::UnsupportedVersion { found: 5, .. })),
            "format version 5",
        ),
        (
            "negative serial",
            sample_with("serial", "-1"),
            decode(|e| matches!(e, DecodeError::InvalidField { field, .. } if field == "serial")),
            "invalid field \"serial\"",
        ),
        (
            "serial beyond u64",
            sample_with("serial", "18446744073709551616"),
            decode(|e| matches!(e, DecodeError::InvalidField { field, .. } if field == "serial")),
            "invalid field \"serial\"",
        ),
        (
            "non-string lineage",
            sample_with("lineage", "42"),
            decode(|e| matches!(e, DecodeError::InvalidField { field, .. } if field == "lineage")),
            "invalid field \"lineage\"",
        ),
        (
            "duplicate keys",
            duplicate.into_bytes(),
            decode(|e| matches!(e, DecodeError::InvalidJson { .. })),
            "duplicate key \"serial\"",
        ),
        (
            "deeply nested value",
            deep.into_bytes(),
            decode(|e| {
                matches!(
                    e,
                    DecodeError::InvalidField { .. } | DecodeError::InvalidJson { .. }
                )
            }),
            "nested 100000 levels deep",
        ),
    ];
    for (n, (name, body, check, message)) in cases.into_iter().enumerate() {
        let key = format!("table/{n}/terraform.tfstate");
        common::put_raw(&bucket, &key, &body).await;
        let manager = common::manager(&bucket, &key).await;
        let Err(err) = manager.refresh_state().await else {
            panic!("{name}: was accepted");
        };
        assert!(check(&err), "{name}: unexpected error {err:?}");
        assert!(
            err.to_string().contains(message),
            "{name}: message {err} lacks {message:?}"
        );
        let _ = manager.update(common::set_output("x", 1)).await;
        assert_eq!(
            common::version_count(&bucket, &key).await,
            1,
            "{name}: something was written"
        );
        assert_eq!(
            common::get_raw(&bucket, &key).await,
            body,
            "{name}: the object changed"
        );
    }
}

#[tokio::test]
async fn large_but_valid_values_are_read_exactly() {
    let bucket = common::bucket(true).await;
    // Serials beyond 2^53 lose precision in JavaScript, not in Terraform's uint64.
    let big_serial = sample_with("serial", "9007199254740993");
    common::put_raw(&bucket, KEY, &big_serial).await;
    let manager = common::manager(&bucket, KEY).await;
    manager.refresh_state().await.unwrap();
    assert_eq!(manager.state().unwrap().serial, 9_007_199_254_740_993);

    let mut state = State::new(semver::Version::new(1, 15, 5));
    state.outputs.insert(
        "blob".into(),
        OutputValue::new(&"x".repeat(50 * 1024 * 1024)),
    );
    let body = state.to_bytes();
    let key = "big/terraform.tfstate";
    common::put_raw(&bucket, key, &body).await;
    let manager = common::manager(&bucket, key).await;
    manager.refresh_state().await.unwrap();
    assert_eq!(manager.state().unwrap(), state);
    manager.persist_state().await.unwrap();
    assert_eq!(
        common::version_count(&bucket, key).await,
        1,
        "a no-op persist of 50 MB writes nothing"
    );
}

#[tokio::test]
async fn a_lock_body_that_is_not_json_still_locks_and_says_so() {
    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, &format!("{KEY}.tflock"), b"garbage").await;
    let manager = common::manager(&bucket, KEY).await;
    let err = manager
        .lock(&s3state::LockInfo::new("OperationTypeApply"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Locked { holder: None, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not readable lock info"), "{err}");
    let current = manager.locker().current().await.unwrap_err();
    assert!(
        matches!(current, Error::Locked { holder: None, .. }),
        "lock-info must not say unlocked"
    );
}

#[tokio::test]
async fn keys_with_dot_segments_or_control_characters_are_refused() {
    for key in [
        "a/../b.tfstate",
        "./a.tfstate",
        "a/\u{0}b",
        "a\nb",
        "a.tfstate.tflock",
    ] {
        let err = common::builder("any-bucket", key)
            .build()
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { field: "key", .. }),
            "{key:?}: {err:?}"
        );
    }
    let err = common::builder("any-bucket", KEY)
        .with_workspace("a/b")
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::InvalidConfig {
                field: "workspace",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_bucket_whose_versioning_is_suspended_later_is_refused_by_the_next_build() {
    use aws_sdk_s3::types::BucketVersioningStatus;
    let bucket = common::bucket(true).await;
    common::builder(&bucket, KEY).build().await.unwrap();
    common::set_versioning(
        &common::client(),
        &bucket,
        BucketVersioningStatus::Suspended,
    )
    .await;
    let Err(err) = common::builder(&bucket, KEY).build().await else {
        panic!("the bucket was accepted after its versioning was suspended");
    };
    assert!(
        matches!(&err, Error::VersioningNotEnabled { status, .. } if status == "suspended"),
        "{err:?}"
    );
    // Once versioning is back on, the bucket is accepted again.
    common::set_versioning(&common::client(), &bucket, BucketVersioningStatus::Enabled).await;
    common::builder(&bucket, KEY).build().await.unwrap();
}
