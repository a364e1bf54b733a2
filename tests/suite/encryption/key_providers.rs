//! The `external` and `aws_kms` key providers (the latter against moto's KMS), and `chain`.

use super::{PASSPHRASE, encryption};
use crate::common;
use bytes::Bytes;
use s3state::encryption::{EncryptionError, inspect};
use std::time::Duration;

/// A key provider command speaking OpenTofu's external protocol: the header line, then the
/// keys (a fixed 32-byte key, base64) and metadata. It records its input beside itself.
fn external_provider(dir: &std::path::Path, sleep: u32) -> std::path::PathBuf {
    let script = dir.join("provider.sh");
    let input = dir.join("input.json");
    std::fs::write(
        &script,
        format!(
            r#"#!/usr/bin/env bash
set -eu
echo '{{"magic":"OpenTofu-External-Key-Provider","version":1}}'
cat > '{input}'
sleep {sleep}
key=$(printf 'k%.0s' $(seq 1 32) | base64)
if [ "$(cat '{input}')" = null ]; then
  echo '{{"keys":{{"encryption_key":"'"$key"'"}},"meta":{{"external_data":{{"id":"7"}}}}}}'
else
  echo '{{"keys":{{"encryption_key":"'"$key"'","decryption_key":"'"$key"'"}},"meta":{{"external_data":{{"id":"7"}}}}}}'
fi
"#,
            input = input.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn external_config(script: &std::path::Path, chained: bool) -> String {
    let keys = if chained {
        "key_provider.pbkdf2.chained"
    } else {
        "key_provider.external.cmd"
    };
    format!(
        r#"{{"key_provider":{{"external":{{"cmd":{{"command":["{}"]}}}},
              "pbkdf2":{{"chained":{{"chain":"key_provider.external.cmd","iterations":200000}}}}}},
            "method":{{"aes_gcm":{{"main":{{"keys":"{keys}"}}}}}},
            "state":{{"method":"method.aes_gcm.main"}}}}"#,
        script.display()
    )
}

/// The external provider is run with `null` to encrypt and with its stored metadata to
/// decrypt; chained into pbkdf2, both providers' metadata are stored.
#[tokio::test]
async fn the_external_key_provider_speaks_opentofus_protocol_alone_and_chained() {
    let dir = common::temp_dir("external-kp");
    let script = external_provider(&dir, 0);
    for chained in [false, true] {
        let encryption = encryption(&external_config(&script, chained));
        let sealed = encryption
            .encrypt(Bytes::from_static(common::TERRAFORM_STATE))
            .await
            .unwrap();
        let envelope = inspect(&sealed).unwrap();
        let mut expected = vec!["key_provider.external.cmd".to_owned()];
        if chained {
            expected.push("key_provider.pbkdf2.chained".to_owned());
        }
        assert_eq!(envelope.key_providers, expected);
        let (opened, _) = encryption.decrypt(sealed).await.unwrap();
        assert_eq!(&opened[..], common::TERRAFORM_STATE);
        let input = std::fs::read_to_string(dir.join("input.json")).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&input).unwrap(),
            serde_json::json!({"external_data": {"id": "7"}}),
            "decryption hands the command its stored metadata"
        );
    }
}

/// A command that does not answer in time is stopped, and the error names the provider.
#[tokio::test]
async fn an_external_command_that_hangs_is_stopped_at_its_timeout() {
    let dir = common::temp_dir("external-kp-hang");
    let script = external_provider(&dir, 30);
    let encryption =
        encryption(&external_config(&script, false)).with_external_timeout(Duration::from_secs(1));
    let started = std::time::Instant::now();
    let error = encryption
        .encrypt(Bytes::from_static(common::TERRAFORM_STATE))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        matches!(&error, EncryptionError::KeyProvider { provider, message }
            if provider == "key_provider.external.cmd" && message.contains("did not finish")),
        "{error:?}"
    );
}

/// `aws_kms`: a data key from KMS (moto's) encrypts the state; its encrypted blob is in the
/// metadata under OpenTofu's field names, and Decrypt gives it back. A manager with the
/// provider reads what another wrote; without it, the error names the provider.
#[cfg(feature = "kms")]
#[tokio::test]
async fn the_aws_kms_key_provider_works_against_moto() {
    let endpoint = common::moto_endpoint();
    let kms = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::new()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build(),
    );
    let key_id = kms
        .create_key()
        .send()
        .await
        .expect("creating a KMS key in moto")
        .key_metadata
        .unwrap()
        .key_id;
    let config = format!(
        r#"key_provider "aws_kms" "main" {{
             kms_key_id = "{key_id}"
             key_spec   = "AES_256"
             region     = "us-east-1"
             access_key = "test"
             secret_key = "test"
             endpoints {{ kms = "{endpoint}" }}
             encryption_context = {{ purpose = "tfstate" }}
           }}
           method "aes_gcm" "main" {{ keys = key_provider.aws_kms.main }}
           state {{ method = method.aes_gcm.main }}"#
    );
    let bucket = common::bucket(true).await;
    let key = "kms/terraform.tfstate";
    let writer = common::builder(&bucket, key)
        .with_encryption(encryption(&config))
        .build()
        .await
        .unwrap();
    writer.update(common::set_output("n", 1)).await.unwrap();
    let stored = common::get_raw(&bucket, key).await;
    let envelope: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    let meta = {
        use base64::Engine as _;
        let encoded = envelope["meta"]["key_provider.aws_kms.main"]
            .as_str()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(
            &base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
        )
        .unwrap()
    };
    assert!(
        meta["ciphertext_blob"]
            .as_str()
            .is_some_and(|b| !b.is_empty()),
        "{meta}"
    );
    assert_eq!(
        meta["encryption_context"],
        serde_json::json!({"purpose": "tfstate"})
    );

    let reader = common::builder(&bucket, key)
        .with_encryption(encryption(&config))
        .build()
        .await
        .unwrap();
    reader.update(common::set_output("n", 2)).await.unwrap();
    use s3state::{Refresher, Transient};
    writer.refresh_state().await.unwrap();
    assert_eq!(
        writer.state().unwrap().outputs["n"].to_value(),
        serde_json::json!(2)
    );

    let without = common::builder(&bucket, key)
        .with_encryption(super::pbkdf2(PASSPHRASE))
        .build()
        .await
        .unwrap();
    let error = without.refresh_state().await.unwrap_err().to_string();
    assert!(error.contains("key_provider.pbkdf2.key"), "{error}");
}

/// An envelope whose pbkdf2 metadata was rewritten by someone who can write the bucket (the
/// metadata is read before anything is authenticated). A count of iterations far above the
/// configuration, or a key length PBKDF2 derives block by block, each block paying every
/// iteration, would hold the reader for minutes or hours; both are refused before deriving.
/// From the adversarial review of state encryption.
#[tokio::test]
async fn forged_pbkdf2_metadata_is_refused_before_any_derivation() {
    use base64::Engine as _;
    let base64 = base64::engine::general_purpose::STANDARD;
    let encryption = super::pbkdf2(PASSPHRASE);
    let sealed = encryption
        .encrypt(Bytes::from_static(common::TERRAFORM_STATE))
        .await
        .unwrap();
    let forge = |field: &str, value: serde_json::Value| {
        let mut envelope: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        let slot = &mut envelope["meta"]["key_provider.pbkdf2.key"];
        let mut meta: serde_json::Value =
            serde_json::from_slice(&base64.decode(slot.as_str().unwrap()).unwrap()).unwrap();
        meta[field] = value;
        *slot = base64.encode(serde_json::to_vec(&meta).unwrap()).into();
        Bytes::from(serde_json::to_vec(&envelope).unwrap())
    };
    for (field, value, said) in [
        (
            "iterations",
            serde_json::json!(10_000_001u64),
            "invalid iterations",
        ),
        (
            "iterations",
            serde_json::json!(4_000_000_000u64),
            "invalid iterations",
        ),
        ("key_length", serde_json::json!(4096), "invalid key_length"),
    ] {
        let error = encryption
            .decrypt(forge(field, value.clone()))
            .await
            .unwrap_err();
        let shown = error.to_string();
        assert!(shown.contains(said), "{field} = {value}: {shown}");
    }
    // The bounds leave genuine parameters alone: a forged but modest count derives (and then
    // fails authentication, as any wrong key does).
    let error = encryption
        .decrypt(forge("iterations", serde_json::json!(200_001)))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("authentication failed"),
        "{error}"
    );
    let (opened, _) = encryption.decrypt(sealed).await.unwrap();
    assert_eq!(&opened[..], common::TERRAFORM_STATE);
}

/// A key provider command's stderr is never part of an error (the gateway answers errors to
/// its HTTP clients, and a provider's diagnostics may name a key), and what it writes on
/// stdout is bounded. From the adversarial review of state encryption.
#[tokio::test]
async fn an_external_commands_stderr_stays_out_of_errors_and_its_output_is_bounded() {
    let dir = common::temp_dir("external-kp-stderr");
    let failing = dir.join("failing.sh");
    let chatty = dir.join("chatty.sh");
    let garbled = dir.join("garbled.sh");
    let header = r#"echo '{"magic":"OpenTofu-External-Key-Provider","version":1}'"#;
    for (script, body) in [
        (
            &failing,
            "echo 'key=SECRET-FROM-STDERR' >&2\nexit 3".to_owned(),
        ),
        (
            &garbled,
            "echo 'key=SECRET-FROM-STDERR' >&2\necho 'not json'".to_owned(),
        ),
        (
            &chatty,
            "head -c 4000000 /dev/zero | tr '\\0' 'a'".to_owned(),
        ),
    ] {
        std::fs::write(
            script,
            format!("#!/usr/bin/env bash\nset -u\n{header}\n{body}\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for script in [&failing, &garbled, &chatty] {
        let error = encryption(&external_config(script, false))
            .encrypt(Bytes::from_static(common::TERRAFORM_STATE))
            .await
            .unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(
            matches!(error, EncryptionError::KeyProvider { .. }),
            "{shown}"
        );
        assert!(!shown.contains("SECRET-FROM-STDERR"), "{shown}");
        if script == &chatty {
            assert!(
                shown.len() < 2000,
                "the output is not echoed: {}",
                shown.len()
            );
        }
    }
}

/// KMS decides who may decrypt a data key: a decrypted (or generated) data key is not handed
/// to another configuration in the same process that KMS was never asked about (a library
/// serving several tenants, each with its own credentials). Here the second configuration
/// names the same provider and key but a KMS endpoint that does not answer: it must fail.
/// From the adversarial review of state encryption.
#[cfg(feature = "kms")]
#[tokio::test]
async fn a_kms_data_key_is_not_shared_with_another_configuration() {
    let endpoint = common::moto_endpoint();
    let kms = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::new()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build(),
    );
    let key_id = kms
        .create_key()
        .send()
        .await
        .expect("creating a KMS key in moto")
        .key_metadata
        .unwrap()
        .key_id;
    let config = |endpoint: &str| {
        format!(
            r#"key_provider "aws_kms" "main" {{
                 kms_key_id = "{key_id}"
                 key_spec   = "AES_256"
                 region     = "us-east-1"
                 access_key = "test"
                 secret_key = "test"
                 endpoints {{ kms = "{endpoint}" }}
               }}
               method "aes_gcm" "main" {{ keys = key_provider.aws_kms.main }}
               state {{ method = method.aes_gcm.main }}"#
        )
    };
    let owner = encryption(&config(endpoint));
    let sealed = owner
        .encrypt(Bytes::from_static(common::TERRAFORM_STATE))
        .await
        .unwrap();
    let (opened, _) = owner.decrypt(sealed.clone()).await.unwrap();
    assert_eq!(&opened[..], common::TERRAFORM_STATE);
    let stranger = encryption(&config("http://127.0.0.1:9"));
    let error = stranger.decrypt(sealed).await.unwrap_err();
    assert!(
        matches!(error, EncryptionError::DecryptionFailed { .. }),
        "{error:?}"
    );
}

/// A pbkdf2 derivation (seconds for the most iterations an envelope may ask for) does not
/// hold the async runtime: on a one-thread runtime another task runs while it derives, as
/// the gateway's other requests must. From the adversarial review of state encryption.
#[tokio::test(flavor = "current_thread")]
async fn a_pbkdf2_derivation_does_not_block_the_runtime() {
    use base64::Engine as _;
    let base64 = base64::engine::general_purpose::STANDARD;
    let encryption = super::pbkdf2(PASSPHRASE);
    let sealed = encryption
        .encrypt(Bytes::from_static(common::TERRAFORM_STATE))
        .await
        .unwrap();
    // The most iterations the metadata may ask for, and a fresh salt: nothing is cached.
    let mut envelope: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
    let slot = &mut envelope["meta"]["key_provider.pbkdf2.key"];
    let mut meta: serde_json::Value =
        serde_json::from_slice(&base64.decode(slot.as_str().unwrap()).unwrap()).unwrap();
    meta["iterations"] = serde_json::json!(10_000_000);
    meta["salt"] = base64.encode(uuid::Uuid::new_v4().as_bytes()).into();
    *slot = base64.encode(serde_json::to_vec(&meta).unwrap()).into();
    let forged = Bytes::from(serde_json::to_vec(&envelope).unwrap());
    let first = tokio::select! {
        biased;
        _ = encryption.decrypt(forged) => "the derivation",
        _ = tokio::time::sleep(Duration::from_millis(20)) => "the other task",
    };
    assert_eq!(first, "the other task");
}

/// The configured `encryption_context` decides what KMS is asked to decrypt with, not the
/// one an envelope claims: someone who can write the bucket and holds a data key made under
/// the same KMS key for another purpose (another context) must not get a state of theirs
/// accepted as ours. From the adversarial review of state encryption.
#[cfg(feature = "kms")]
#[tokio::test]
async fn an_envelopes_own_encryption_context_cannot_replace_the_configured_one() {
    use base64::Engine as _;
    let base64 = base64::engine::general_purpose::STANDARD;
    let endpoint = common::moto_endpoint();
    let kms = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::new()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .build(),
    );
    let key_id = kms
        .create_key()
        .send()
        .await
        .expect("creating a KMS key in moto")
        .key_metadata
        .unwrap()
        .key_id;
    // Another application's data key: same KMS key, its own context.
    let other = kms
        .generate_data_key()
        .key_id(&key_id)
        .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
        .encryption_context("purpose", "something-else")
        .send()
        .await
        .unwrap();
    let data_key = other.plaintext.unwrap().into_inner();
    let blob = other.ciphertext_blob.unwrap().into_inner();
    // A state sealed with it, in OpenTofu's envelope, claiming the other context.
    let forged_state = br#"{"version":4,"terraform_version":"1.15.5","serial":99,"lineage":"forged","outputs":{},"resources":[],"check_results":null}"#;
    let sealed = {
        use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &data_key).unwrap());
        let nonce = [7u8; 12];
        let mut body = forged_state.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut body)
            .unwrap();
        [nonce.to_vec(), body].concat()
    };
    let meta = serde_json::json!({
        "ciphertext_blob": base64.encode(&blob),
        "encryption_context": {"purpose": "something-else"},
    });
    let envelope = serde_json::json!({
        "serial": 99,
        "lineage": "forged",
        "meta": {"key_provider.aws_kms.main": base64.encode(serde_json::to_vec(&meta).unwrap())},
        "encrypted_data": base64.encode(&sealed),
        "encryption_version": "v0",
    });
    let ours = encryption(&format!(
        r#"key_provider "aws_kms" "main" {{
             kms_key_id = "{key_id}"
             key_spec   = "AES_256"
             region     = "us-east-1"
             access_key = "test"
             secret_key = "test"
             endpoints {{ kms = "{endpoint}" }}
             encryption_context = {{ purpose = "tfstate" }}
           }}
           method "aes_gcm" "main" {{ keys = key_provider.aws_kms.main }}
           state {{ method = method.aes_gcm.main }}"#
    ));
    let outcome = ours
        .decrypt(Bytes::from(serde_json::to_vec(&envelope).unwrap()))
        .await;
    assert!(
        matches!(outcome, Err(EncryptionError::DecryptionFailed { .. })),
        "a forged state was accepted: {outcome:?}"
    );
    // Our own envelopes still read.
    let own = ours
        .encrypt(Bytes::from_static(common::TERRAFORM_STATE))
        .await
        .unwrap();
    let (opened, _) = ours.decrypt(own).await.unwrap();
    assert_eq!(&opened[..], common::TERRAFORM_STATE);
}

/// A command that exits but leaves a process of its own holding its output open: the wait
/// for that output is bounded by the provider's timeout too, and fails naming it. From the
/// adversarial review of state encryption.
#[tokio::test]
async fn an_external_commands_output_held_open_after_it_exits_is_waited_for_within_the_timeout() {
    let dir = common::temp_dir("external-kp-held");
    let script = dir.join("held.sh");
    let pid_file = dir.join("pid");
    std::fs::write(
        &script,
        format!(
            "#!/usr/bin/env bash\necho '{{\"magic\":\"OpenTofu-External-Key-Provider\",\"version\":1}}'\nsleep 600 &\necho $! > '{}'\nexit 0\n",
            pid_file.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let encryption =
        encryption(&external_config(&script, false)).with_external_timeout(Duration::from_secs(2));
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        encryption.encrypt(Bytes::from_static(common::TERRAFORM_STATE)),
    )
    .await;
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }
    let error = outcome
        .expect("the wait for the output is bounded")
        .unwrap_err();
    assert!(
        matches!(&error, EncryptionError::KeyProvider { message, .. } if message.contains("output was still open")),
        "{error:?}"
    );
}
