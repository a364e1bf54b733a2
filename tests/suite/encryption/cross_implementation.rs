//! s3state's envelopes against a second, independent implementation of OpenTofu's format
//! (Python's `cryptography`, `tests/encryption/opentofu_envelope.py`), both ways, through S3.
//! No OpenTofu binary can be installed where the tests run, so this and OpenTofu's own
//! pbkdf2 vector (a unit test of `encryption`) are the evidence of interoperability.

use super::{ITERATIONS, PASSPHRASE, pbkdf2};
use crate::common;
use s3state::encryption::inspect;
use s3state::{Refresher, Transient};

const KEY: &str = "tofu/terraform.tfstate";

/// An envelope made by the independent implementation, stored in S3, is read by s3state
/// with the same passphrase, byte for byte the state it encrypted.
#[tokio::test]
async fn an_envelope_made_by_python_is_decrypted_by_s3state() {
    let iterations = ITERATIONS.to_string();
    let envelope = common::opentofu_envelope(
        &["encrypt", "--iterations", &iterations],
        common::TERRAFORM_STATE,
        PASSPHRASE,
    );
    assert!(inspect(&envelope).is_some());
    let (plaintext, _) = pbkdf2(PASSPHRASE)
        .decrypt(envelope.clone().into())
        .await
        .unwrap();
    assert_eq!(&plaintext[..], common::TERRAFORM_STATE);

    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, KEY, &envelope).await;
    let manager = common::builder(&bucket, KEY)
        .with_encryption(pbkdf2(PASSPHRASE))
        .build()
        .await
        .unwrap();
    manager.refresh_state().await.unwrap();
    let expected = s3state::State::from_slice(common::TERRAFORM_STATE).unwrap();
    assert_eq!(manager.state().unwrap().to_bytes(), expected.to_bytes());
}

/// What s3state stores is decrypted by the independent implementation into the state
/// s3state wrote, with OpenTofu's default parameters (600,000 iterations of sha512).
#[tokio::test]
async fn an_envelope_s3state_stores_is_decrypted_by_python() {
    let bucket = common::bucket(true).await;
    let config = format!(
        r#"{{"key_provider":{{"pbkdf2":{{"key":{{"passphrase":"{PASSPHRASE}"}}}}}},
            "method":{{"aes_gcm":{{"main":{{"keys":"key_provider.pbkdf2.key"}}}}}},
            "state":{{"method":"method.aes_gcm.main"}}}}"#
    );
    let manager = common::builder(&bucket, KEY)
        .with_encryption(super::encryption(&config))
        .build()
        .await
        .unwrap();
    manager
        .update(common::set_output("answer", 42))
        .await
        .unwrap();
    let stored = common::get_raw(&bucket, KEY).await;
    let meta = inspect(&stored).unwrap();
    assert_eq!(
        meta.key_providers,
        vec!["key_provider.pbkdf2.key".to_owned()]
    );
    let plaintext = common::opentofu_envelope(&["decrypt"], &stored, PASSPHRASE);
    let state = s3state::State::from_slice(&plaintext).unwrap();
    assert_eq!(state.outputs["answer"].to_value(), serde_json::json!(42));
    assert_eq!(Some(state.serial), meta.serial);
    let defaults: serde_json::Value = {
        use base64::Engine as _;
        let envelope: serde_json::Value = serde_json::from_slice(&stored).unwrap();
        let encoded = envelope["meta"]["key_provider.pbkdf2.key"]
            .as_str()
            .unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(defaults["iterations"], 600_000);
    assert_eq!(defaults["hash_function"], "sha512");
    assert_eq!(defaults["key_length"], 32);
    assert_eq!(
        defaults["salt"].as_str().unwrap().len(),
        44,
        "32 bytes of salt"
    );
}
