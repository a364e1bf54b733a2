//! The state-manager contract against a real S3 (after Terraform's `statemgr.TestFull`).

use crate::common;

use s3state::{
    OutputReader, OutputValue, PersistentMeta, Persister, Refresher, SnapshotOrdering, State,
    Transient,
};

const KEY: &str = "demo/terraform.tfstate";

#[tokio::test]
async fn a_fresh_state_gets_a_lineage_and_serial_one_on_first_persist() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    manager.refresh_state().await.unwrap();
    assert!(manager.state().is_none(), "no object yet, so no state");
    assert!(manager.state_snapshot_meta().is_none());

    let mut state = State::new(semver::Version::new(1, 15, 5));
    state
        .outputs
        .insert("greeting".into(), OutputValue::new("hello"));
    manager.write_state(state);
    manager.persist_state().await.unwrap();

    common::assert_first_snapshot(&manager);
    assert_eq!(common::version_count(&bucket, KEY).await, 1);
}

#[tokio::test]
async fn serial_moves_by_one_per_change_and_never_on_a_no_op() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    manager.write_state(State::new(semver::Version::new(1, 15, 5)));
    manager.persist_state().await.unwrap();
    let first = manager.state_snapshot_meta().unwrap();

    // No-op persists: the same state, twice.
    manager.persist_state().await.unwrap();
    manager.write_state(manager.state().unwrap());
    manager.persist_state().await.unwrap();
    assert_eq!(manager.state_snapshot_meta().unwrap(), first);
    assert_eq!(common::version_count(&bucket, KEY).await, 1);

    // A change.
    let mut state = manager.state().unwrap();
    state.outputs.insert("n".into(), OutputValue::new(&1));
    manager.write_state(state);
    manager.persist_state().await.unwrap();
    let second = manager.state_snapshot_meta().unwrap();
    assert_eq!(second.serial, first.serial + 1);
    assert_eq!(second.lineage, first.lineage);
    assert_eq!(second.terraform_version, first.terraform_version);
    assert_eq!(second.compare(&first), SnapshotOrdering::Newer);
    assert_eq!(common::version_count(&bucket, KEY).await, 2);

    // A second manager reads exactly what was persisted.
    let reader = common::manager(&bucket, KEY).await;
    reader.refresh_state().await.unwrap();
    assert_eq!(reader.state(), manager.state());
    assert_eq!(
        reader.state_snapshot_meta().unwrap().compare(&second),
        SnapshotOrdering::Equal
    );
}

#[tokio::test]
async fn refresh_picks_up_other_writers_but_never_discards_an_unsaved_write_state() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    manager
        .update(common::set_output("kept", true))
        .await
        .unwrap();
    // Another writer moves the state on; a refresh brings its change in.
    let other = common::manager(&bucket, KEY).await;
    other.update(common::set_output("theirs", 1)).await.unwrap();
    manager.refresh_state().await.unwrap();
    assert!(manager.state().unwrap().outputs.contains_key("theirs"));

    // A write_state not yet persisted survives a refresh (another task sharing the manager may
    // refresh at any time), and the next persist writes it.
    let mut scratch = manager.state().unwrap();
    scratch.outputs.insert("mine".into(), OutputValue::new(&1));
    manager.write_state(scratch);
    manager.refresh_state().await.unwrap();
    assert!(manager.state().unwrap().outputs.contains_key("mine"));
    manager.persist_state().await.unwrap();
    other.refresh_state().await.unwrap();
    let stored = other.state().unwrap();
    assert!(stored.outputs.contains_key("mine") && stored.outputs.contains_key("theirs"));
}

#[tokio::test]
async fn root_outputs_carry_value_type_and_sensitivity() {
    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, KEY, common::TERRAFORM_STATE).await;
    let manager = common::manager(&bucket, KEY).await;

    let outputs = manager.root_output_values().await.unwrap();
    assert_eq!(
        outputs.keys().collect::<Vec<_>>(),
        ["data_id", "greeting", "numbers", "secret"]
    );
    assert_eq!(outputs["greeting"].to_value(), "hello from terraform");
    assert_eq!(outputs["greeting"].value_type.as_str(), "\"string\"");
    assert!(outputs["secret"].sensitive);
    assert!(!outputs["numbers"].sensitive);
    assert_eq!(outputs["numbers"].to_value(), serde_json::json!([1, 2, 3]));
}

#[tokio::test]
async fn a_no_op_persist_of_a_terraform_written_state_creates_no_version() {
    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, KEY, common::TERRAFORM_STATE).await;
    let manager = common::manager(&bucket, KEY).await;
    manager.refresh_state().await.unwrap();
    let meta = manager.state_snapshot_meta().unwrap();
    assert_eq!(
        (meta.serial, meta.terraform_version.to_string()),
        (1, "1.15.5".into())
    );

    manager.write_state(manager.state().unwrap());
    manager.persist_state().await.unwrap();

    assert_eq!(common::version_count(&bucket, KEY).await, 1);
    assert_eq!(common::get_raw(&bucket, KEY).await, common::TERRAFORM_STATE);
}

#[tokio::test]
async fn a_change_and_its_reversal_reproduce_terraforms_bytes_apart_from_the_serial() {
    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, KEY, common::TERRAFORM_STATE).await;
    let manager = common::manager(&bucket, KEY).await;

    common::add_and_remove_output(&manager, "extra").await;

    let ours = String::from_utf8(common::get_raw(&bucket, KEY).await).unwrap();
    let theirs = std::str::from_utf8(common::TERRAFORM_STATE).unwrap();
    assert_eq!(ours.replace("\"serial\": 3,", "\"serial\": 1,"), theirs);
    assert!(ours.contains("\"serial\": 3,"));
}

#[tokio::test]
async fn persisted_objects_carry_identity_metadata_checksum_and_content_type() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    manager.update(common::set_output("a", "b")).await.unwrap();
    let meta = manager.state_snapshot_meta().unwrap();

    let head = common::client()
        .head_object()
        .bucket(&bucket)
        .key(KEY)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    let user = head.metadata().unwrap();
    assert_eq!(user["s3state-serial"], meta.serial.to_string());
    assert_eq!(user["s3state-lineage"], meta.lineage);
    assert_eq!(user["s3state-terraform-version"], "1.15.5");
    assert_eq!(head.content_type(), Some("application/json"));

    use base64::Engine as _;
    use sha2::Digest as _;
    let body = common::get_raw(&bucket, KEY).await;
    let expected = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body));
    assert_eq!(head.checksum_sha256(), Some(expected.as_str()));
}

#[tokio::test]
async fn a_deleted_state_can_be_created_again() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    manager.update(common::set_output("a", 1)).await.unwrap();
    common::delete_object(&bucket, KEY).await;

    let fresh = common::manager(&bucket, KEY).await;
    fresh.refresh_state().await.unwrap();
    assert!(fresh.state().is_none(), "a delete marker reads as no state");
    fresh.update(common::set_output("b", 2)).await.unwrap();
    assert_eq!(fresh.state_snapshot_meta().unwrap().serial, 1);
    assert_eq!(common::version_count(&bucket, KEY).await, 2);
}

/// The whole store contract, `s3state::store::conformance::run_all`.
#[tokio::test]
async fn s3_store_keeps_the_whole_store_contract() {
    let bucket = common::bucket(true).await;
    let store = common::builder(&bucket, KEY).build_store().await.unwrap();
    s3state::store::conformance::run_all(&store).await;
    assert_eq!(
        common::version_count(&bucket, KEY).await,
        0,
        "the suite wrote its anchor object"
    );
}

/// A conditional DELETE answered 412 for an object that was never written is "absent", not a
/// lost race: SeaweedFS answers 412 there where S3 answers 404 (issue 25). The store asks the
/// object (a HEAD) before calling it a mismatch. Here the fault proxy gives the 412 on any
/// store; on SeaweedFS the store contract above meets the real answer. The 412 of a real
/// mismatch stays one.
#[tokio::test]
async fn a_conditional_delete_answered_412_for_an_absent_object_is_absent() {
    use s3state::Store as _;
    use s3state::store::DeleteOutcome;
    let bucket = common::bucket(true).await;
    let proxy = common::proxy::FaultProxy::start(common::endpoint()).await;
    let store = common::builder(&bucket, KEY)
        .with_client(common::client_for(proxy.endpoint()))
        .build_store()
        .await
        .unwrap();
    let etag = s3state::ETag::new("\"00000000000000000000000000000000\"");
    let precondition_failed = || {
        common::proxy::Rule::new(common::proxy::Fault::Status(412, "PreconditionFailed"))
            .method("DELETE")
            .times(1)
    };

    proxy.inject(precondition_failed());
    assert_eq!(
        store.delete(Some(&etag)).await.unwrap(),
        DeleteOutcome::Absent
    );

    common::put_raw(&bucket, KEY, b"{}").await;
    proxy.inject(precondition_failed());
    assert_eq!(
        store.delete(Some(&etag)).await.unwrap(),
        DeleteOutcome::PreconditionFailed,
        "a 412 for an object that exists is a mismatch"
    );
    assert!(common::object_exists(&bucket, KEY).await);
}

/// A 412 to a conditional DELETE is an answer: the object was not deleted. When the HEAD
/// that tells "absent" from "another tag" gets no answer, the delete is reported as refused
/// (`PreconditionFailed`, on which every caller re-reads or stops), not as an error: an error
/// here reads as "the delete may have landed", and the lock then takes another holder's lock
/// found where ours was for ours, already deleted, and reports the release as done. (From
/// the review of issue 25's SeaweedFS work.)
#[tokio::test]
async fn a_412_to_a_conditional_delete_stays_a_refusal_when_the_head_after_it_fails() {
    use s3state::Store as _;
    use s3state::store::DeleteOutcome;
    let bucket = common::bucket(true).await;
    let proxy = common::proxy::FaultProxy::start(common::endpoint()).await;
    let store = common::builder(&bucket, KEY)
        .with_client(common::client_for(proxy.endpoint()))
        .build_store()
        .await
        .unwrap();
    common::put_raw(&bucket, KEY, b"{}").await;
    let etag = s3state::ETag::new("\"00000000000000000000000000000000\"");
    proxy.inject(
        common::proxy::Rule::new(common::proxy::Fault::Status(412, "PreconditionFailed"))
            .method("DELETE")
            .times(1),
    );
    // Every attempt the SDK makes at the HEAD loses its answer.
    proxy.inject(
        common::proxy::Rule::new(common::proxy::Fault::DropResponse)
            .method("HEAD")
            .times(10),
    );
    let outcome = store.delete(Some(&etag)).await;
    assert!(
        matches!(outcome, Ok(DeleteOutcome::PreconditionFailed)),
        "{outcome:?}"
    );
    assert!(common::object_exists(&bucket, KEY).await);
}
