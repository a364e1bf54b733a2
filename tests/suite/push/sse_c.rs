//! Adversarial review of the head-judged push (87e9567) on a real S3 (LocalStack) with SSE-C:
//! the HEAD must carry the customer key, and the stored checksum it returns must let a push of
//! the stored state write nothing and read no body.

use crate::common;

use base64::Engine as _;
use s3state::{OutputValue, State};

fn state(serial: u64, output: i64) -> State {
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state.lineage = "6a0f3f2e-5b1c-4d0e-8f7a-2c9b1d3e4f50".into();
    state.serial = serial;
    state
        .outputs
        .insert("answer".into(), OutputValue::new(&output));
    state
}

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
    let first = manager()
        .await
        .unwrap()
        .push(state(3, 1), false)
        .await
        .unwrap();
    assert!(first.written);
    recorder.take();
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

    let again = manager()
        .await
        .unwrap()
        .push(state(3, 1), false)
        .await
        .unwrap();
    assert!(!again.written, "the stored state again: nothing to push");
    assert_eq!(
        on_the_state(&recorder),
        [("HEAD".to_owned(), Some(200))],
        "one head, no body"
    );

    let newer = manager()
        .await
        .unwrap()
        .push(state(4, 1), false)
        .await
        .unwrap();
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
