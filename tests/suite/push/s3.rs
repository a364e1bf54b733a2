//! `push` on a real S3 (LocalStack), judged from a HEAD: the lineage it checks a push against
//! is the one in the object's user metadata, which travels as an HTTP header, so a lineage a
//! header does not carry unchanged is compared in its altered form; and under SSE-C, the HEAD
//! carries the customer key, and its stored checksum lets a push of the stored state write
//! nothing and read no body. From the adversarial review of the head-judged push (87e9567).

use crate::common;
use base64::Engine as _;
use s3state::{Error, State};

use common::answer_state as state;

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

// ---------------------------------------------------------------------------------------------
// SSE-C
//
// Adversarial review of the head-judged push (87e9567) on a real S3 (LocalStack) with SSE-C:
// the HEAD must carry the customer key, and the stored checksum it returns must let a push of
// the stored state write nothing and read no body.
// ---------------------------------------------------------------------------------------------

const SSE_C_LINEAGE: &str = "6a0f3f2e-5b1c-4d0e-8f7a-2c9b1d3e4f50";

/// The requests made on the state object since the last call (building a manager also asks
/// for the bucket's versioning), as method and status.
fn on_the_state(recorder: &common::Recorder) -> Vec<(String, Option<u16>)> {
    recorder
        .take()
        .into_iter()
        .filter(|exchange| exchange.uri.contains("/sse-c.tfstate"))
        .map(|exchange| (exchange.method, exchange.status))
        .collect()
}

/// From the adversarial review of the head-judged push (87e9567), with SSE-C.
#[tokio::test]
async fn a_push_under_sse_c_is_judged_from_a_head_that_carries_the_key() {
    let bucket = common::bucket(true).await;
    let key = "sse-c.tfstate";
    let sse_key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let recorder = common::Recorder::default();
    let manager = || {
        s3state::S3Builder::new()
            .with_client(common::client_with(Some(&recorder)))
            .with_bucket(&bucket)
            .with_key(key)
            .with_sse_customer_key(sse_key.clone())
            .build()
    };
    let push = |serial| async move {
        let manager = manager().await.unwrap();
        manager
            .push(state(SSE_C_LINEAGE, serial, 1), false)
            .await
            .unwrap()
    };
    let first = push(3).await;
    assert!(first.written);
    recorder.take();
    if !common::store_facts().sse_c_head {
        // This store's answer to a HEAD under SSE-C cannot be read (SeaweedFS 4.48 sends the
        // key's MD5 header twice, which the SDK refuses): the push stops with the store's
        // error on HeadObject, and never judges without the head.
        let refused = manager()
            .await
            .unwrap()
            .push(state(SSE_C_LINEAGE, 4, 1), false)
            .await
            .unwrap_err();
        assert!(
            matches!(
                &refused,
                s3state::Error::Store {
                    operation: "HeadObject",
                    ..
                }
            ),
            "{refused:?}"
        );
        return;
    }
    let without_key = common::client()
        .head_object()
        .bucket(&bucket)
        .key(key)
        .send()
        .await;
    let refused = without_key.map(|_| ()).unwrap_err();
    assert_eq!(
        refused
            .raw_response()
            .map(|response| response.status().as_u16()),
        Some(400),
        "the store enforces SSE-C, so a head that works carries the key"
    );

    let again = push(3).await;
    assert!(!again.written, "the stored state again: nothing to push");
    assert_eq!(
        on_the_state(&recorder),
        [("HEAD".to_owned(), Some(200))],
        "one head, no body"
    );

    let newer = push(4).await;
    assert!(newer.written);
    assert_eq!(
        newer.stored.serial, 4,
        "the same content keeps its newer serial"
    );
    assert_eq!(
        on_the_state(&recorder),
        [
            ("HEAD".to_owned(), Some(200)),
            ("PUT".to_owned(), Some(200))
        ]
    );
}
