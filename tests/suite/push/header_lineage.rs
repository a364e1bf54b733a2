//! Adversarial review of the head-judged push (87e9567) on a real S3 (LocalStack): the
//! lineage it checks a push against is the one in the object's user metadata, which travels as
//! an HTTP header. A lineage that a header does not carry unchanged is then compared in its
//! altered form.

use crate::common;

use s3state::{Error, OutputValue, State};

fn state(lineage: &str, serial: u64, output: i64) -> State {
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state.lineage = lineage.into();
    state.serial = serial;
    state
        .outputs
        .insert("answer".into(), OutputValue::new(&output));
    state
}

/// A lineage with surrounding blanks (Terraform accepts any string) is stored by s3state in
/// the body exactly, and as a header value in the metadata, which HTTP trims. A push of the
/// trimmed lineage (another lineage) must be refused, as when the body is read.
///
/// From the adversarial review of the head-judged push (87e9567), on LocalStack.
#[tokio::test]
async fn a_push_of_another_lineage_is_refused_even_when_the_stored_one_has_blanks() {
    let bucket = common::bucket(true).await;
    let key = "blanks.tfstate";
    let stored_lineage = " 9b8f1f7e-lineage-with-blanks ";
    let manager = common::manager(&bucket, key).await;
    manager
        .push(state(stored_lineage, 3, 1), false)
        .await
        .expect("the first push creates the state");

    let other = stored_lineage.trim();
    let answer = common::manager(&bucket, key)
        .await
        .push(state(other, 4, 2), false)
        .await;
    let stored = State::from_slice(&common::get_raw(&bucket, key).await).unwrap();
    assert!(
        matches!(answer, Err(Error::LineageMismatch { .. })),
        "a push of lineage {other:?} over {stored_lineage:?} answered {answer:?}; the store now \
         holds lineage {:?} serial {}",
        stored.lineage,
        stored.serial
    );
    assert_eq!(stored.lineage, stored_lineage);
}

/// The same lineage pushed again under a newer serial is accepted, and the stored lineage is
/// kept; a refusal here would be a wrong "other lineage".
///
/// From the adversarial review of the head-judged push (87e9567), on LocalStack.
#[tokio::test]
async fn a_newer_push_of_the_same_lineage_with_blanks_is_accepted() {
    let bucket = common::bucket(true).await;
    let key = "same-blanks.tfstate";
    let lineage = " 9b8f1f7e-lineage-with-blanks ";
    common::manager(&bucket, key)
        .await
        .push(state(lineage, 3, 1), false)
        .await
        .expect("the first push creates the state");
    let pushed = common::manager(&bucket, key)
        .await
        .push(state(lineage, 4, 2), false)
        .await;
    assert!(pushed.is_ok(), "{pushed:?}");
}
