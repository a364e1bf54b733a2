//! The encryption layer between the codec and the store: what is stored is OpenTofu's
//! envelope, the rules apply to the plaintext, and every refusal writes nothing.

use super::{PASSPHRASE, encryption, pbkdf2, pbkdf2_config};
use crate::common;
use bytes::Bytes;
use s3state::encryption::{EncryptionError, inspect};
use s3state::{Error, Persister, Refresher, RemoteState, S3Store, Transient, VersionSelector};

const KEY: &str = "crypto/terraform.tfstate";

async fn encrypted_manager(bucket: &str, passphrase: &str) -> RemoteState<S3Store> {
    common::builder(bucket, KEY)
        .with_encryption(pbkdf2(passphrase))
        .build()
        .await
        .unwrap()
}

fn encryption_error(error: Error) -> EncryptionError {
    match error {
        Error::Encryption { source, .. } => source,
        other => panic!("expected an encryption error, got {other:?}"),
    }
}

/// Every state sample in `tests/data`, encrypted and decrypted, is byte-identical.
#[tokio::test]
async fn every_sample_state_round_trips_byte_identical() {
    let samples: [&[u8]; 2] = [
        include_bytes!("../../data/terraform-1.15.5/terraform.tfstate.json"),
        include_bytes!("../../data/addresses/terraform-1.15.5.tfstate"),
    ];
    let encryption = pbkdf2(PASSPHRASE);
    for sample in samples {
        let sealed = encryption
            .encrypt(Bytes::from_static(sample))
            .await
            .unwrap();
        let envelope = inspect(&sealed).expect("an envelope");
        let plain: serde_json::Value = serde_json::from_slice(sample).unwrap();
        assert_eq!(envelope.serial, plain["serial"].as_u64());
        assert_eq!(envelope.lineage.as_deref(), plain["lineage"].as_str());
        assert_eq!(
            envelope.key_providers,
            vec!["key_provider.pbkdf2.key".to_owned()]
        );
        let (opened, _) = encryption.decrypt(sealed).await.unwrap();
        assert_eq!(&opened[..], sample);
    }
}

/// Persist stores an envelope; another manager with the key reads the same state; an
/// unchanged state writes nothing; history and restore work on the plaintext.
#[tokio::test]
async fn persist_stores_an_envelope_and_the_rules_apply_to_the_plaintext() {
    let bucket = common::bucket(true).await;
    let writer = encrypted_manager(&bucket, PASSPHRASE).await;
    writer.update(common::set_output("n", 1)).await.unwrap();
    writer.update(common::set_output("n", 2)).await.unwrap();
    let stored = common::get_raw(&bucket, KEY).await;
    let envelope = inspect(&stored).expect("the stored object is an envelope");
    assert!(!String::from_utf8_lossy(&stored).contains("\"outputs\""));
    let reader = encrypted_manager(&bucket, PASSPHRASE).await;
    reader.refresh_state().await.unwrap();
    let state = reader.state().unwrap();
    assert_eq!(Some(state.serial), envelope.serial);
    assert_eq!(state.outputs["n"].to_value(), serde_json::json!(2));

    // Unchanged: nothing is written (the verdict is made before encrypting, whose output
    // differs every time).
    let before = common::version_count(&bucket, KEY).await;
    reader.write_state(state.clone());
    reader.persist_state().await.unwrap();
    reader.update(|_| ()).await.unwrap();
    assert_eq!(common::version_count(&bucket, KEY).await, before);

    // History reads each version through the key; restore writes an envelope.
    let old = reader
        .snapshot_at(
            &reader
                .resolve_version(&VersionSelector::Back(1))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(old.state.outputs["n"].to_value(), serde_json::json!(1));
    let history = reader
        .history(&s3state::HistoryOptions {
            details: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|entry| entry.meta.is_some()));
    reader
        .restore(
            &reader
                .resolve_version(&VersionSelector::Back(1))
                .await
                .unwrap(),
            false,
        )
        .await
        .unwrap();
    let restored = common::get_raw(&bucket, KEY).await;
    assert!(inspect(&restored).is_some(), "restore encrypts");
    reader.refresh_state().await.unwrap();
    assert_eq!(
        reader.state().unwrap().outputs["n"].to_value(),
        serde_json::json!(1)
    );
}

/// A wrong passphrase, or none, is a typed error naming the key provider; no write is
/// attempted, and the versions are the same before and after.
#[tokio::test]
async fn a_wrong_or_missing_key_is_a_typed_error_and_nothing_is_written() {
    let bucket = common::bucket(true).await;
    let writer = encrypted_manager(&bucket, PASSPHRASE).await;
    writer.update(common::set_output("n", 1)).await.unwrap();
    let before = common::version_count(&bucket, KEY).await;

    let wrong = encrypted_manager(&bucket, "a-different-passphrase-entirely").await;
    let error = encryption_error(wrong.update(common::set_output("n", 2)).await.unwrap_err());
    let EncryptionError::DecryptionFailed { attempts } = &error else {
        panic!("expected DecryptionFailed, got {error:?}")
    };
    assert_eq!(attempts.len(), 1);
    assert!(
        attempts[0].contains("key_provider.pbkdf2.key"),
        "{attempts:?}"
    );
    let message = error.to_string();
    assert!(
        !message.contains("a-different") && !message.contains(PASSPHRASE),
        "{message}"
    );

    let keyless = common::manager(&bucket, KEY).await;
    let error = encryption_error(
        keyless
            .update(common::set_output("n", 3))
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(&error, EncryptionError::NoKeyConfigured { key_providers } if key_providers == &["key_provider.pbkdf2.key".to_owned()]),
        "{error:?}"
    );
    assert_eq!(
        common::version_count(&bucket, KEY).await,
        before,
        "nothing was written"
    );
}

/// A plain state where encryption is enforced is refused; with an `unencrypted` fallback it
/// is read, and the next write encrypts it (OpenTofu's migration path).
#[tokio::test]
async fn plaintext_is_refused_where_enforced_and_migrated_through_an_unencrypted_fallback() {
    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, KEY, common::TERRAFORM_STATE).await;
    let enforced = common::builder(&bucket, KEY)
        .with_encryption(encryption(&pbkdf2_config(PASSPHRASE, true, None)))
        .build()
        .await
        .unwrap();
    let error = encryption_error(
        enforced
            .update(common::set_output("n", 1))
            .await
            .unwrap_err(),
    );
    assert!(
        matches!(error, EncryptionError::PlaintextRefused { enforced: true }),
        "{error:?}"
    );
    assert_eq!(common::version_count(&bucket, KEY).await, 1);

    let migrating = common::builder(&bucket, KEY)
        .with_encryption(encryption(&pbkdf2_config(
            PASSPHRASE,
            false,
            Some("method.unencrypted.migrate"),
        )))
        .build()
        .await
        .unwrap();
    migrating.update(common::set_output("n", 1)).await.unwrap();
    assert!(inspect(&common::get_raw(&bucket, KEY).await).is_some());
    // And back: unencrypted first, the old method as the fallback, decrypts it.
    let decrypting = common::builder(&bucket, KEY)
        .with_encryption(encryption(&format!(
            r#"{{"key_provider":{{"pbkdf2":{{"key":{{"passphrase":"{PASSPHRASE}","iterations":200000}}}}}},
                "method":{{"aes_gcm":{{"main":{{"keys":"key_provider.pbkdf2.key"}}}},"unencrypted":{{"migrate":{{}}}}}},
                "state":{{"method":"method.unencrypted.migrate","fallback":{{"method":"method.aes_gcm.main"}}}}}}"#
        )))
        .build()
        .await
        .unwrap();
    decrypting.update(common::set_output("n", 2)).await.unwrap();
    let stored = common::get_raw(&bucket, KEY).await;
    assert!(inspect(&stored).is_none());
    assert!(s3state::State::from_slice(&stored).is_ok());
}

/// An envelope whose plaintext serial differs from the state it holds, and an unknown
/// `encryption_version`, are refused with their own errors; nothing is written.
#[tokio::test]
async fn a_tampered_envelope_or_an_unknown_version_is_refused() {
    let bucket = common::bucket(true).await;
    let writer = encrypted_manager(&bucket, PASSPHRASE).await;
    writer.update(common::set_output("n", 1)).await.unwrap();
    let stored = common::get_raw(&bucket, KEY).await;
    let mut envelope: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    envelope["serial"] = serde_json::json!(99);
    common::put_raw(&bucket, KEY, &serde_json::to_vec(&envelope).unwrap()).await;
    let reader = encrypted_manager(&bucket, PASSPHRASE).await;
    let error = encryption_error(reader.refresh_state().await.unwrap_err());
    assert!(
        matches!(
            error,
            EncryptionError::EnvelopeMismatch {
                field: "serial",
                ..
            }
        ),
        "{error:?}"
    );
    envelope["serial"] = serde_json::json!(1);
    envelope["encryption_version"] = serde_json::json!("v9");
    common::put_raw(&bucket, KEY, &serde_json::to_vec(&envelope).unwrap()).await;
    let before = common::version_count(&bucket, KEY).await;
    let error = encryption_error(reader.update(common::set_output("n", 2)).await.unwrap_err());
    assert!(
        matches!(&error, EncryptionError::UnknownVersion { version } if version == "v9"),
        "{error:?}"
    );
    assert_eq!(common::version_count(&bucket, KEY).await, before);
}

/// `migrate_encryption` rewrites a state read through a fallback with the primary method
/// (here: a plaintext state encrypted; then a re-key to another passphrase), as a new
/// version with the next serial and the same content; a dry run writes nothing, and a state
/// already in the primary form is left alone.
#[tokio::test]
async fn migrate_encryption_encrypts_rekeys_and_keeps_the_history() {
    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, KEY, common::TERRAFORM_STATE).await;
    let original = s3state::State::from_slice(common::TERRAFORM_STATE).unwrap();
    let migrating = |config: String| {
        let bucket = bucket.clone();
        async move {
            common::builder(&bucket, KEY)
                .with_encryption(encryption(&config))
                .build()
                .await
                .unwrap()
        }
    };
    let encrypting = migrating(pbkdf2_config(
        PASSPHRASE,
        false,
        Some("method.unencrypted.migrate"),
    ))
    .await;
    let planned = encrypting.migrate_encryption(true).await.unwrap();
    assert_eq!(
        planned,
        s3state::EncryptionMigration::Rewritten {
            serial: original.serial + 1
        }
    );
    assert_eq!(
        common::version_count(&bucket, KEY).await,
        1,
        "a dry run writes nothing"
    );
    assert_eq!(encrypting.migrate_encryption(false).await.unwrap(), planned);
    assert!(inspect(&common::get_raw(&bucket, KEY).await).is_some());
    assert_eq!(
        encrypting.migrate_encryption(false).await.unwrap(),
        s3state::EncryptionMigration::Current
    );
    assert_eq!(common::version_count(&bucket, KEY).await, 2);

    // Re-key: the new passphrase first, the old one as the fallback (under its old name:
    // the envelope's metadata is found by the key provider's name).
    let rekeying = migrating(format!(
        r#"{{"key_provider":{{"pbkdf2":{{"new":{{"passphrase":"another-long-passphrase","iterations":200000}},
                                     "key":{{"passphrase":"{PASSPHRASE}","iterations":200000}}}}}},
            "method":{{"aes_gcm":{{"new":{{"keys":"key_provider.pbkdf2.new"}},"old":{{"keys":"key_provider.pbkdf2.key"}}}}}},
            "state":{{"method":"method.aes_gcm.new","fallback":{{"method":"method.aes_gcm.old"}}}}}}"#
    ))
    .await;
    assert!(matches!(
        rekeying.migrate_encryption(false).await.unwrap(),
        s3state::EncryptionMigration::Rewritten { .. }
    ));
    let stored = inspect(&common::get_raw(&bucket, KEY).await).unwrap();
    assert_eq!(
        stored.key_providers,
        vec!["key_provider.pbkdf2.new".to_owned()]
    );
    assert!(rekeying.refresh_state().await.is_ok());
    let state = rekeying.state().unwrap();
    assert!(state.same_content(&original));
    assert_eq!(state.serial, original.serial + 2);
    // The plaintext first version is still in the history (readable where an unencrypted
    // method is configured, refused where none is).
    let first = rekeying
        .resolve_version(&VersionSelector::Back(2))
        .await
        .unwrap();
    assert!(rekeying.snapshot_at(&first).await.is_err());
    let first = encrypting.snapshot_at(&first).await.unwrap();
    assert_eq!(first.state.serial, original.serial);
}

/// Migrating a key where no state is stored writes nothing: before, `update` started from an
/// empty state and created one, encrypted, while the answer said "absent". From the final
/// review of the write paths (issue 24).
#[tokio::test]
async fn migrating_where_no_state_is_stored_creates_none() {
    let bucket = common::bucket(true).await;
    let manager = common::builder(&bucket, KEY)
        .with_encryption(encryption(&pbkdf2_config(
            PASSPHRASE,
            false,
            Some("method.unencrypted.migrate"),
        )))
        .build()
        .await
        .unwrap();
    assert_eq!(
        manager.migrate_encryption(false).await.unwrap(),
        s3state::EncryptionMigration::Absent
    );
    assert_eq!(
        common::version_count(&bucket, KEY).await,
        0,
        "nothing written"
    );
}
