//! The CLI on OpenTofu-encrypted states (issue 24): every command works given the key,
//! from the `encryption` block (`--chdir`) or `TF_ENCRYPTION`; `ls` tells encrypted states
//! apart without a key; `rekey` moves states between keys; a missing key is an error that
//! names the key provider and writes nothing.

use crate::common;
use s3state::encryption::inspect;

const KEY: &str = "enc/terraform.tfstate";
const PASSPHRASE: &str = "cli-passphrase-never-printed";

/// A directory with a backend block for `bucket` and, optionally, an `encryption` block.
fn project(bucket: &str, with_block: bool) -> std::path::PathBuf {
    let dir = common::temp_dir("s3state-encrypted-cli");
    let block = if with_block {
        format!(
            r#"
  encryption {{
    key_provider "pbkdf2" "main" {{
      passphrase = "{PASSPHRASE}"
      iterations = 200000
    }}
    method "aes_gcm" "main" {{
      keys = key_provider.pbkdf2.main
    }}
    method "unencrypted" "migrate" {{}}
    state {{
      method = method.aes_gcm.main
      fallback {{
        method = method.unencrypted.migrate
      }}
    }}
  }}"#
        )
    } else {
        String::new()
    };
    std::fs::write(
        dir.join("main.tf"),
        format!(
            "terraform {{\n  backend \"s3\" {{\n    bucket = \"{bucket}\"\n    key = \"{KEY}\"\n    region = \"us-east-1\"\n  }}{block}\n}}\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("state.json"), common::TERRAFORM_STATE).unwrap();
    dir
}

fn run(command: &mut assert_cmd::Command) -> (bool, String, String) {
    let output = command.env("RUST_LOG", "debug").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !stdout.contains(PASSPHRASE) && !stderr.contains(PASSPHRASE),
        "the passphrase was printed: {stdout}{stderr}"
    );
    (output.status.success(), stdout, stderr)
}

fn ok(command: &mut assert_cmd::Command) -> String {
    let (success, stdout, stderr) = run(command);
    assert!(success, "{stdout}{stderr}");
    stdout
}

fn s3state(bucket: &str, dir: &std::path::Path) -> assert_cmd::Command {
    let mut command = common::s3state_on(bucket, KEY, dir.to_owned());
    command.arg("--chdir").arg(dir);
    command
}

/// From the encryption block: push stores an envelope; pull, outputs, meta, history, diff,
/// list, show, mv, rm and restore work on the plaintext; `pull --raw` gives the envelope.
/// Passphrases never appear, even at debug level.
#[tokio::test]
async fn every_command_works_on_an_encrypted_state_with_the_block() {
    let bucket = common::bucket(true).await;
    let dir = project(&bucket, true);
    every_command(&bucket, &dir, None, "key_provider.pbkdf2.main").await;
}

/// The same commands on a state whose data key comes from KMS (moto's), configured with
/// TF_ENCRYPTION alone.
#[tokio::test]
async fn every_command_works_on_an_aws_kms_encrypted_state() {
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
             endpoints {{ kms = "{endpoint}" }}
           }}
           method "aes_gcm" "main" {{ keys = key_provider.aws_kms.main }}
           state {{ method = method.aes_gcm.main }}"#
    );
    let bucket = common::bucket(true).await;
    let dir = project(&bucket, false);
    every_command(&bucket, &dir, Some(&config), "key_provider.aws_kms.main").await;
}

async fn every_command(
    bucket: &str,
    dir: &std::path::Path,
    tf_encryption: Option<&str>,
    provider: &str,
) {
    let s3state = |bucket: &str, dir: &std::path::Path| {
        let mut command = s3state(bucket, dir);
        if let Some(config) = tf_encryption {
            command.env("TF_ENCRYPTION", config);
        }
        command
    };
    ok(s3state(bucket, dir).args(["push", "state.json"]));
    let stored = common::get_raw(bucket, KEY).await;
    let envelope = inspect(&stored).expect("push stores an envelope");
    assert_eq!(envelope.key_providers, vec![provider.to_owned()]);

    let pulled = ok(s3state(bucket, dir).arg("pull"));
    let expected = s3state::State::from_slice(common::TERRAFORM_STATE).unwrap();
    assert!(
        s3state::State::from_slice(pulled.as_bytes())
            .unwrap()
            .same_content(&expected)
    );
    let raw = ok(s3state(bucket, dir).args(["pull", "--raw"]));
    assert_eq!(raw.as_bytes(), &stored[..]);
    // Trace logging (the SDK's too) shows no data key: KMS answers it as `Plaintext`.
    let traced = s3state(bucket, dir)
        .arg("pull")
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(traced.status.success());
    let logs = String::from_utf8_lossy(&traced.stderr);
    assert!(
        !logs.contains("Plaintext") && !logs.contains("plaintext: Some"),
        "a data key in the trace log"
    );
    if provider.contains("aws_kms") {
        assert!(logs.contains("Decrypt"), "the SDK's KMS call is traced");
    }
    ok(s3state(bucket, dir).args(["outputs", "--json"]));
    assert!(ok(s3state(bucket, dir).arg("meta")).contains(&expected.lineage));
    assert!(ok(s3state(bucket, dir).arg("list")).contains("terraform_data.example"));
    ok(s3state(bucket, dir).args(["show", "terraform_data.example"]));
    ok(s3state(bucket, dir).args(["mv", "terraform_data.example", "terraform_data.renamed"]));
    assert!(ok(s3state(bucket, dir).arg("list")).contains("terraform_data.renamed"));
    ok(s3state(bucket, dir).args(["rm", "terraform_data.renamed"]));
    assert_eq!(ok(s3state(bucket, dir).arg("list")).trim(), "");
    assert!(ok(s3state(bucket, dir).args(["diff", "~2"])).contains("terraform_data.example"));
    assert!(ok(s3state(bucket, dir).args(["history", "--details"])).contains(&expected.lineage));
    ok(s3state(bucket, dir).args(["restore", "~2", "--yes"]));
    assert!(ok(s3state(bucket, dir).arg("list")).contains("terraform_data.example"));
    assert!(inspect(&common::get_raw(bucket, KEY).await).is_some());
    // A pushed envelope (from `pull --raw`) is the state it holds.
    std::fs::write(dir.join("raw.json"), raw).unwrap();
    ok(s3state(bucket, dir).args(["push", "--force", "raw.json"]));
}

/// Without a key: `ls` shows the state as encrypted with its serial and lineage; `pull`
/// fails naming the key provider, and a write writes nothing. With TF_ENCRYPTION (JSON)
/// instead of the block, the same state reads.
#[tokio::test]
async fn without_the_key_ls_still_tells_and_commands_refuse_naming_the_provider() {
    let bucket = common::bucket(true).await;
    let with_block = project(&bucket, true);
    ok(s3state(&bucket, &with_block).args(["push", "state.json"]));
    let keyless = project(&bucket, false);
    let listed = ok(s3state(&bucket, &keyless).args(["ls", "--json"]));
    let rows: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let expected = s3state::State::from_slice(common::TERRAFORM_STATE).unwrap();
    assert_eq!(rows[0]["encrypted"], true, "{rows}");
    assert_eq!(rows[0]["lineage"], expected.lineage.as_str());
    assert!(ok(s3state(&bucket, &keyless).arg("ls")).contains("\tyes"));

    let versions = common::version_count(&bucket, KEY).await;
    let (success, _, stderr) = run(s3state(&bucket, &keyless).arg("pull"));
    assert!(!success);
    assert!(stderr.contains("key_provider.pbkdf2.main"), "{stderr}");
    let (success, _, stderr) =
        run(s3state(&bucket, &keyless).args(["rm", "terraform_data.example"]));
    assert!(!success && stderr.contains("encrypted"), "{stderr}");
    let wrong = r#"{"key_provider":{"pbkdf2":{"main":{"passphrase":"wrong-passphrase-but-long","iterations":200000}}},
            "method":{"aes_gcm":{"main":{"keys":"${key_provider.pbkdf2.main}"}}},
            "state":{"method":"${method.aes_gcm.main}"}}"#;
    let (success, _, stderr) = run(s3state(&bucket, &keyless)
        .env("TF_ENCRYPTION", wrong)
        .args(["rm", "terraform_data.example"]));
    assert!(!success, "{stderr}");
    assert!(
        stderr.contains("key_provider.pbkdf2.main") && !stderr.contains("wrong-passphrase"),
        "{stderr}"
    );
    assert_eq!(
        common::version_count(&bucket, KEY).await,
        versions,
        "nothing was written"
    );

    let right = wrong.replace("wrong-passphrase-but-long", PASSPHRASE);
    let outputs = ok(s3state(&bucket, &keyless)
        .env("TF_ENCRYPTION", &right)
        .args(["outputs", "--json"]));
    assert!(outputs.starts_with('{'), "{outputs}");
}

/// `rekey` over a prefix: a plaintext state and an encrypted one, moved to a new passphrase
/// (the old key and `unencrypted` as fallbacks); a dry run first writes nothing.
#[tokio::test]
async fn rekey_moves_every_state_under_a_prefix_to_the_new_key() {
    let bucket = common::bucket(true).await;
    let dir = project(&bucket, true);
    ok(s3state(&bucket, &dir).args(["push", "state.json"]));
    common::put_raw(&bucket, "enc/plain.tfstate", common::TERRAFORM_STATE).await;
    let keyless = project(&bucket, false);
    let rekeyed = format!(
        r#"key_provider "pbkdf2" "next" {{
             passphrase = "the-next-passphrase-0001"
             iterations = 200000
           }}
           key_provider "pbkdf2" "main" {{
             passphrase = "{PASSPHRASE}"
             iterations = 200000
           }}
           method "aes_gcm" "next" {{ keys = key_provider.pbkdf2.next }}
           method "aes_gcm" "main" {{ keys = key_provider.pbkdf2.main }}
           method "unencrypted" "migrate" {{}}
           state {{
             method = method.aes_gcm.next
             fallback {{
               method = method.aes_gcm.main
               fallback {{ method = method.unencrypted.migrate }}
             }}
           }}"#
    );
    let dry = ok(s3state(&bucket, &keyless)
        .env("TF_ENCRYPTION", &rekeyed)
        .args(["rekey", "--prefix", "enc/", "--dry-run"]));
    assert_eq!(dry.matches("would rewrite").count(), 2, "{dry}");
    assert_eq!(common::version_count(&bucket, "enc/plain.tfstate").await, 1);
    let done = ok(s3state(&bucket, &keyless)
        .env("TF_ENCRYPTION", &rekeyed)
        .args(["rekey", "--prefix", "enc/"]));
    assert_eq!(done.matches("rewritten as serial").count(), 2, "{done}");
    for key in [KEY, "enc/plain.tfstate"] {
        let envelope = inspect(&common::get_raw(&bucket, key).await).unwrap();
        assert_eq!(
            envelope.key_providers,
            vec!["key_provider.pbkdf2.next".to_owned()]
        );
    }
    let again = ok(s3state(&bucket, &keyless)
        .env("TF_ENCRYPTION", &rekeyed)
        .args(["rekey", "--prefix", "enc/"]));
    assert_eq!(again.matches("current").count(), 2, "{again}");
}
