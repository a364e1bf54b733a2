//! The `s3state` binary against LocalStack: every command's happy path and a failure path with
//! its exit code and message.

use crate::common;

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;
use std::path::PathBuf;

const KEY: &str = "cli/terraform.tfstate";
const TERRAFORM_LINEAGE: &str = "17be2140-cb35-fcbf-2b9f-a8e4e43cbc8b";

fn empty_dir() -> PathBuf {
    common::temp_dir("s3state-cli")
}

/// The binary, pointed at the test endpoint through the environment, run in an empty
/// directory so no stray backend block is read.
fn s3state(bucket: &str) -> Command {
    common::s3state_on(bucket, KEY, empty_dir())
}

async fn bucket_with_terraform_state() -> String {
    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, KEY, common::TERRAFORM_STATE).await;
    bucket
}

fn write_temp(contents: &[u8]) -> PathBuf {
    let path = empty_dir().join("state.json");
    std::fs::write(&path, contents).unwrap();
    path
}

#[tokio::test]
async fn pull_prints_the_stored_bytes_and_fails_clearly_without_a_state() {
    let bucket = bucket_with_terraform_state().await;
    s3state(&bucket)
        .arg("pull")
        .assert()
        .success()
        .stdout(predicate::eq(common::TERRAFORM_STATE));

    let empty = common::bucket(true).await;
    s3state(&empty)
        .arg("pull")
        .assert()
        .code(1)
        .stderr(contains("there is no state at s3://"));
    s3state(&bucket)
        .args(["pull", "--version-id", "nope"])
        .assert()
        .code(1)
        .stderr(
            contains("has no version nope")
                .and(contains("hint: list versions with: s3state history")),
        );
}

#[tokio::test]
async fn push_writes_with_lineage_checks_and_force_keeps_history() {
    let bucket = common::bucket(true).await;
    let file = write_temp(common::TERRAFORM_STATE);
    s3state(&bucket)
        .arg("push")
        .arg(&file)
        .assert()
        .success()
        .stderr(contains("Pushed serial 1"));
    assert_eq!(
        common::get_raw(&bucket, KEY).await,
        common::TERRAFORM_STATE,
        "stored byte for byte"
    );
    s3state(&bucket)
        .arg("push")
        .arg(&file)
        .assert()
        .success()
        .stderr(contains("Nothing to push"));

    let other = String::from_utf8(common::TERRAFORM_STATE.to_vec())
        .unwrap()
        .replace(TERRAFORM_LINEAGE, "00000000-0000-0000-0000-000000000000");
    let other_file = write_temp(other.as_bytes());
    s3state(&bucket)
        .arg("push")
        .arg(&other_file)
        .assert()
        .code(1)
        .stderr(contains("unrelated states").and(contains("--force")));
    assert_eq!(common::version_count(&bucket, KEY).await, 1);

    s3state(&bucket)
        .arg("push")
        .arg(&other_file)
        .arg("--force")
        .assert()
        .success();
    assert_eq!(
        common::version_count(&bucket, KEY).await,
        2,
        "forced push is a new version"
    );

    s3state(&bucket)
        .args(["push", "-"])
        .write_stdin("{ not json")
        .assert()
        .code(1)
        .stderr(contains("invalid JSON at line 1"));
}

#[tokio::test]
async fn outputs_mask_sensitive_values_unless_asked_and_raw_prints_bare_strings() {
    let bucket = bucket_with_terraform_state().await;
    s3state(&bucket).arg("outputs").assert().success().stdout(
        contains("greeting = \"hello from terraform\"").and(contains("secret = <sensitive>")),
    );
    let json = s3state(&bucket)
        .args(["outputs", "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["secret"]["value"], serde_json::Value::Null);
    assert_eq!(json["secret"]["sensitive"], true);
    // Issue 23, item 13: a withheld value is marked, so it is not mistaken for a null output,
    // and the help says so rather than promising Terraform's output.
    assert_eq!(json["secret"]["withheld"], true);
    assert_eq!(json["numbers"].get("withheld"), None);
    let help = s3state(&bucket)
        .args(["outputs", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("withheld"));
    assert_eq!(json["numbers"]["value"], serde_json::json!([1, 2, 3]));
    s3state(&bucket)
        .args(["outputs", "greeting", "--raw"])
        .assert()
        .success()
        .stdout("hello from terraform");
    s3state(&bucket)
        .args(["outputs", "secret", "--raw", "--show-sensitive"])
        .assert()
        .success()
        .stdout("s3cr3t");

    s3state(&bucket)
        .args(["outputs", "secret", "--raw"])
        .assert()
        .code(2)
        .stderr(contains("sensitive; add --show-sensitive"));
    s3state(&bucket)
        .args(["outputs", "nope"])
        .assert()
        .code(1)
        .stderr(contains(
            "no output named \"nope\" (there are: data_id, greeting, numbers, secret)",
        ));
}

#[tokio::test]
async fn meta_shows_identity_and_storage_and_fails_without_a_state() {
    let bucket = bucket_with_terraform_state().await;
    s3state(&bucket).arg("meta").assert().success().stdout(
        contains(TERRAFORM_LINEAGE)
            .and(contains("serial:            1"))
            .and(contains("terraform_version: 1.15.5"))
            .and(contains("size:              1.7 KiB (1739 bytes)")),
    );
    let empty = common::bucket(true).await;
    s3state(&empty)
        .arg("meta")
        .assert()
        .code(1)
        .stderr(contains("there is no state"));
}

#[tokio::test]
async fn history_lists_versions_with_details_and_a_missing_bucket_is_named() {
    let bucket = bucket_with_terraform_state().await;
    let manager = common::manager(&bucket, KEY).await;
    for n in 0..3 {
        manager.update(common::set_output("n", n)).await.unwrap();
    }
    let output = s3state(&bucket)
        .args(["history", "--details"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(output).unwrap();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(
        text.lines().nth(1).unwrap().starts_with('*'),
        "newest first, marked: {text}"
    );
    assert!(text.contains(TERRAFORM_LINEAGE));
    let json = s3state(&bucket)
        .args(["history", "--json", "--limit", "2", "--details"])
        .output()
        .unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    let serials: Vec<_> = rows.iter().map(|r| r["serial"].as_u64().unwrap()).collect();
    assert_eq!(serials, [4, 3]);

    // Who wrote each version (issue 26): the library's updates name the process's
    // `user@host` (the Who of the lock `update` takes), a push by the CLI names the CLI's
    // identity, and Terraform's own write is unknown, not guessed.
    let identity = s3state::LockInfo::new("").who;
    let file = write_temp(&common::state_with_resources(TERRAFORM_LINEAGE, 9, 2));
    s3state(&bucket).arg("push").arg(&file).assert().success();
    let json = s3state(&bucket)
        .args(["history", "--json", "--details"])
        .output()
        .unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    let column = |name: &str| -> Vec<serde_json::Value> {
        rows.iter().map(|row| row[name].clone()).collect()
    };
    let identity = serde_json::Value::from(identity);
    assert_eq!(
        column("author"),
        [
            identity.clone(),
            identity.clone(),
            identity.clone(),
            identity,
            serde_json::Value::Null
        ],
        "{rows:?}"
    );
    assert_eq!(
        column("operation")[0],
        "state-push",
        "the CLI's lock names the push"
    );
    assert_eq!(column("operation")[1], "s3state update");
    assert_eq!(column("operation")[4], serde_json::Value::Null);
    assert_eq!(column("resources")[0], 2);
    let text = s3state(&bucket)
        .args(["history", "--details"])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    let oldest = text.lines().last().unwrap();
    assert!(oldest.contains("unknown"), "Terraform's write: {text}");

    s3state("s3state-test-missing-bucket")
        .arg("history")
        .assert()
        .code(1)
        .stderr(contains(
            "bucket `s3state-test-missing-bucket` does not exist",
        ));
}

#[tokio::test]
async fn diff_shows_changes_between_versions_and_rejects_bad_selectors() {
    let bucket = bucket_with_terraform_state().await;
    let manager = common::manager(&bucket, KEY).await;
    manager
        .update(|s| {
            s.outputs
                .insert("added".into(), s3state::OutputValue::new(&1));
            s.outputs.remove("greeting");
        })
        .await
        .unwrap();
    s3state(&bucket)
        .args(["diff", "previous"])
        .assert()
        .success()
        .stdout(
            contains("serial 1 → 2")
                .and(contains("+ added = 1"))
                .and(contains("- greeting (was \"hello from terraform\")")),
        );
    let json = s3state(&bucket)
        .args(["diff", "~1", "current", "--json"])
        .output()
        .unwrap();
    let diff: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(diff["outputs"].as_array().unwrap().len(), 2);

    s3state(&bucket)
        .args(["diff", "~x"])
        .assert()
        .code(2)
        .stderr(contains("number of versions back"));
    s3state(&bucket)
        .args(["diff", "~9"])
        .assert()
        .code(1)
        .stderr(contains("has no version ~9"));
}

#[tokio::test]
async fn restore_needs_confirmation_and_writes_a_new_version() {
    let bucket = bucket_with_terraform_state().await;
    let manager = common::manager(&bucket, KEY).await;
    manager
        .update(|s| {
            s.outputs.clear();
        })
        .await
        .unwrap();

    s3state(&bucket)
        .args(["restore", "previous"])
        .assert()
        .code(2)
        .stderr(
            contains("serial 2 → 3")
                .and(contains("+ greeting"))
                .and(contains("pass --yes")),
        );
    assert_eq!(common::version_count(&bucket, KEY).await, 2);

    s3state(&bucket)
        .args(["restore", "previous", "--yes"])
        .assert()
        .success()
        .stderr(contains("+ greeting").and(contains("as serial 3")));
    assert_eq!(common::version_count(&bucket, KEY).await, 3);
    s3state(&bucket)
        .args(["outputs", "greeting", "--raw"])
        .assert()
        .success()
        .stdout("hello from terraform");
}

#[tokio::test]
async fn lock_commands_show_the_holder_and_exit_4_when_locked() {
    let bucket = bucket_with_terraform_state().await;
    let output = s3state(&bucket)
        .args(["lock", "--operation", "maintenance"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let id = String::from_utf8(output).unwrap().trim().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    s3state(&bucket)
        .args(["lock", "--timeout", "300ms"])
        .assert()
        .code(4)
        .stderr(
            contains(&id)
                .and(contains("maintenance"))
                .and(contains(format!("s3state force-unlock {id}"))),
        );
    s3state(&bucket)
        .arg("lock-info")
        .assert()
        .success()
        .stdout(contains(format!("ID:        {id}")).and(contains("Operation: maintenance")));
    s3state(&bucket)
        .args(["unlock", "wrong-id"])
        .assert()
        .code(1)
        .stderr(contains("wrong-id").and(contains(&id)));
    s3state(&bucket).args(["unlock", &id]).assert().success();
    s3state(&bucket)
        .arg("lock-info")
        .assert()
        .success()
        .stdout(contains("is not locked"));

    common::put_raw(&bucket, &format!("{KEY}.tflock"), common::TERRAFORM_LOCK).await;
    s3state(&bucket)
        .args(["force-unlock", "wrong"])
        .assert()
        .code(1);
    s3state(&bucket)
        .args(["force-unlock", "91731845-4e72-fefa-2c11-97277aabd814"])
        .assert()
        .success();
    s3state(&bucket)
        .arg("unlock")
        .arg(&id)
        .assert()
        .code(1)
        .stderr(contains("not locked"));
}

#[tokio::test]
async fn workspace_commands_follow_terraforms_layout() {
    let bucket = bucket_with_terraform_state().await;
    s3state(&bucket)
        .args(["workspace", "new", "staging"])
        .assert()
        .success();
    s3state(&bucket)
        .args(["-w", "staging", "workspace", "list"])
        .assert()
        .success()
        .stdout("  default\n* staging\n");
    s3state(&bucket)
        .args(["-w", "staging", "meta"])
        .assert()
        .success()
        .stdout(contains(format!("s3://{bucket}/env:/staging/{KEY}")));
    s3state(&bucket)
        .args(["workspace", "new", "staging"])
        .assert()
        .code(1)
        .stderr(contains("already exists"));
    s3state(&bucket)
        .args(["workspace", "delete", "default"])
        .assert()
        .code(1)
        .stderr(contains("cannot be deleted"));
    s3state(&bucket)
        .args(["workspace", "delete", "staging"])
        .assert()
        .success();
    s3state(&bucket)
        .args(["workspace", "list"])
        .assert()
        .success()
        .stdout("* default\n");
}

#[tokio::test]
async fn chdir_reads_a_terraform_backend_block() {
    let bucket = bucket_with_terraform_state().await;
    let dir = empty_dir();
    std::fs::write(
        dir.join("main.tf"),
        common::terraform_backend_block(&bucket, KEY),
    )
    .unwrap();
    let mut command = common::s3state_binary();
    command
        .current_dir(empty_dir())
        .arg("--chdir")
        .arg(&dir)
        .arg("meta")
        .assert()
        .success()
        .stdout(contains(format!("s3://{bucket}/{KEY}")).and(contains(TERRAFORM_LINEAGE)))
        .stderr(contains("`skip_region_validation`").and(contains("has no effect")));

    // A block with `dynamodb_table` is read too; tests/terraform_dynamodb.rs runs it against
    // a real Terraform.
}

#[test]
fn half_a_set_of_static_credentials_in_a_backend_block_is_refused_without_showing_them() {
    let lines = [
        "access_key = \"AKIAEXAMPLEONLY\"",
        "secret_key = \"half-a-secret-never-shown\"",
        "token = \"a-token-never-shown\"",
    ];
    for given in [&lines[..1], &lines[1..2], &lines[2..3]] {
        let dir = empty_dir();
        std::fs::write(
            dir.join("main.tf"),
            format!(
                "terraform {{\n  backend \"s3\" {{\n    bucket = \"b\"\n    key = \"k\"\n    region = \"us-east-1\"\n    {}\n  }}\n}}\n",
                given.join("\n    ")
            ),
        )
        .unwrap();
        let output = common::s3state_binary()
            .current_dir(&dir)
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .arg("meta")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{given:?}: {stderr}");
        assert!(
            stderr.contains("without both access_key and secret_key"),
            "{stderr}"
        );
        for secret in [
            "AKIAEXAMPLEONLY",
            "half-a-secret-never-shown",
            "a-token-never-shown",
        ] {
            assert!(!stderr.contains(secret), "{stderr}");
        }
    }
}

#[test]
fn missing_settings_name_the_flag_and_the_variable() {
    let mut command = s3state("unused");
    command
        .env_remove("S3STATE_BUCKET")
        .arg("meta")
        .assert()
        .code(2)
        .stderr(contains("--bucket").and(contains("S3STATE_BUCKET")));
}

#[test]
fn every_command_has_an_example_in_its_help() {
    let commands: &[&[&str]] = &[
        &["pull"],
        &["push"],
        &["outputs"],
        &["meta"],
        &["history"],
        &["diff"],
        &["restore"],
        &["lock"],
        &["unlock"],
        &["force-unlock"],
        &["lock-info"],
        &["workspace", "list"],
        &["workspace", "new"],
        &["workspace", "delete"],
        &["prune"],
    ];
    for command in commands {
        Command::cargo_bin("s3state")
            .unwrap()
            .args(*command)
            .arg("--help")
            .assert()
            .success()
            .stdout(contains("Example"));
    }
    Command::cargo_bin("s3state")
        .unwrap()
        .arg("--help")
        .assert()
        .success()
        .stdout(contains("3  conflict").and(contains("4  locked")));
}

#[tokio::test]
async fn prune_shows_what_it_would_remove_and_deletes_only_with_yes() {
    let bucket = bucket_with_terraform_state().await;
    let manager = common::manager(&bucket, KEY).await;
    for n in 0..4 {
        manager.update(common::set_output("n", n)).await.unwrap();
    }
    assert_eq!(common::version_count(&bucket, KEY).await, 5);
    let output = s3state(&bucket)
        .args(["prune", "--keep", "2"])
        .assert()
        .success()
        .stderr(contains("Would remove 3 versions (nothing was deleted)"))
        .get_output()
        .stdout
        .clone();
    assert_eq!(String::from_utf8(output).unwrap().lines().count(), 3);
    assert_eq!(common::version_count(&bucket, KEY).await, 5);

    s3state(&bucket)
        .args(["prune", "--keep", "2", "--yes"])
        .assert()
        .success()
        .stderr(contains("Removed 3 versions permanently"));
    assert_eq!(common::version_count(&bucket, KEY).await, 2);
    s3state(&bucket)
        .args(["outputs", "n", "--raw"])
        .assert()
        .success()
        .stdout("3");

    s3state(&bucket)
        .arg("prune")
        .assert()
        .code(2)
        .stderr(contains("--keep N"));
}

#[tokio::test]
async fn workspace_list_always_shows_default_as_terraform_does() {
    let bucket = common::bucket(true).await;
    s3state(&bucket)
        .args(["workspace", "list"])
        .assert()
        .success()
        .stdout("* default\n");
    s3state(&bucket)
        .args(["workspace", "new", "staging"])
        .assert()
        .success();
    s3state(&bucket)
        .args(["workspace", "list"])
        .assert()
        .success()
        .stdout("* default\n  staging\n");
    s3state(&bucket)
        .args(["-w", "staging", "workspace", "list"])
        .assert()
        .success()
        .stdout("  default\n* staging\n");
    // The default workspace still has no state: listing it did not create one.
    s3state(&bucket)
        .arg("pull")
        .assert()
        .code(1)
        .stderr(contains("there is no state at s3://"));
}

#[tokio::test]
async fn a_boolean_flag_never_takes_the_command_after_it_as_its_value() {
    let bucket = bucket_with_terraform_state().await;
    let without_env = || {
        let mut command = s3state(&bucket);
        command.env_remove("S3STATE_PATH_STYLE");
        command
    };
    without_env()
        .args(["--bucket", &bucket, "--key", KEY, "--path-style", "pull"])
        .assert()
        .success()
        .stdout(predicate::eq(common::TERRAFORM_STATE));
    for flag in ["--path-style=true", "--path-style=false"] {
        without_env()
            .args([flag, "meta"])
            .assert()
            .success()
            .stdout(contains(TERRAFORM_LINEAGE));
    }
    without_env()
        .args(["pull", "--path-style"])
        .assert()
        .success()
        .stdout(predicate::eq(common::TERRAFORM_STATE));
    for value in ["true", "1", "yes"] {
        without_env()
            .env("S3STATE_PATH_STYLE", value)
            .arg("meta")
            .assert()
            .success()
            .stdout(contains(TERRAFORM_LINEAGE));
    }
    without_env()
        .env("S3STATE_PATH_STYLE", "maybe")
        .arg("meta")
        .assert()
        .code(2)
        .stderr(contains("S3STATE_PATH_STYLE").or(contains("--path-style")));
}

#[tokio::test]
async fn workspace_names_terraform_refuses_are_usage_errors_and_nothing_is_written() {
    let bucket = common::bucket(true).await;
    for args in [
        &["workspace", "new", ".."][..],
        &["workspace", "new", "a/b"],
        &["workspace", "new", ""],
        &["workspace", "delete", "."],
        &["-w", "..", "push", "-"],
        &["--workspace", "../x", "lock"],
    ] {
        s3state(&bucket)
            .args(args)
            .write_stdin(common::TERRAFORM_STATE)
            .assert()
            .code(2)
            .stderr(contains("is not a valid workspace name"));
    }
    s3state(&bucket)
        .env("S3STATE_WORKSPACE", "..")
        .arg("meta")
        .assert()
        .code(2)
        .stderr(contains("is not a valid workspace name"));
    let listing = common::versions_under(&bucket, "").await;
    assert!(
        listing.versions().is_empty() && listing.delete_markers().is_empty(),
        "nothing was written: {listing:?}"
    );
}

const LOCK_KEY: &str = "cli/terraform.tfstate.tflock";
const TERRAFORM_LOCK_ID: &str = "91731845-4e72-fefa-2c11-97277aabd814";

/// Terraform's lock, as a running `terraform apply` on another machine holds it.
async fn terraform_holds_the_lock(bucket: &str) {
    common::put_raw(bucket, LOCK_KEY, common::TERRAFORM_LOCK).await;
}

/// How often the lock object was created and deleted (the bucket is versioned, so every lock
/// taken and released leaves a version and a delete marker).
async fn lock_history(bucket: &str) -> (usize, usize) {
    let listing = common::versions_under(bucket, LOCK_KEY).await;
    (listing.versions().len(), listing.delete_markers().len())
}

/// Terraform's state with the greeting output changed, under the same serial (1).
fn changed_terraform_state() -> Vec<u8> {
    String::from_utf8(common::TERRAFORM_STATE.to_vec())
        .unwrap()
        .replace("hello from terraform", "hello from a colleague")
        .into_bytes()
}

/// Terraform's state numbered as made from serial 1, with the greeting changed.
fn next_terraform_state() -> Vec<u8> {
    String::from_utf8(changed_terraform_state())
        .unwrap()
        .replace("\"serial\": 1,", "\"serial\": 2,")
        .into_bytes()
}

#[tokio::test]
async fn push_takes_the_lock_and_releases_it_and_lock_false_takes_none() {
    let bucket = bucket_with_terraform_state().await;
    let file = write_temp(&next_terraform_state());
    s3state(&bucket)
        .arg("push")
        .arg(&file)
        .assert()
        .success()
        .stderr(contains("Pushed serial 3"));
    assert_eq!(
        lock_history(&bucket).await,
        (1, 1),
        "one lock taken and released"
    );
    s3state(&bucket)
        .arg("lock-info")
        .assert()
        .success()
        .stdout(contains("is not locked"));

    let file = write_temp(
        &String::from_utf8(next_terraform_state())
            .unwrap()
            // Made from serial 3, as a user bumps the serial of a hand-edited state.
            .replace("\"serial\": 2,", "\"serial\": 4,")
            .replace("hello from a colleague", "hello again")
            .into_bytes(),
    );
    s3state(&bucket)
        .arg("push")
        .arg("--lock=false")
        .arg(&file)
        .assert()
        .success()
        .stderr(contains("Pushed serial 5"));
    assert_eq!(lock_history(&bucket).await, (1, 1), "no lock this time");
}

#[tokio::test]
async fn push_is_refused_with_exit_4_naming_the_holder_while_terraform_holds_the_lock() {
    let bucket = bucket_with_terraform_state().await;
    terraform_holds_the_lock(&bucket).await;
    let file = write_temp(&next_terraform_state());
    s3state(&bucket)
        .arg("push")
        .arg(&file)
        .assert()
        .code(4)
        .stderr(
            contains(format!("{LOCK_KEY} is locked"))
                .and(contains(TERRAFORM_LOCK_ID))
                .and(contains("held by root@vm"))
                .and(contains("OperationTypeApply"))
                .and(contains(format!(
                    "s3state force-unlock {TERRAFORM_LOCK_ID}"
                ))),
        );
    assert_eq!(
        common::version_count(&bucket, KEY).await,
        1,
        "nothing written"
    );
    assert_eq!(common::get_raw(&bucket, KEY).await, common::TERRAFORM_STATE);
    assert_eq!(
        common::get_raw(&bucket, LOCK_KEY).await,
        common::TERRAFORM_LOCK,
        "Terraform's lock is left alone"
    );

    // Opting out writes under Terraform's lock (and leaves that lock in place).
    s3state(&bucket)
        .args(["push", "--lock=false"])
        .arg(&file)
        .assert()
        .success()
        .stderr(contains("Pushed serial 3"));
    assert_eq!(common::version_count(&bucket, KEY).await, 2);
    assert_eq!(
        common::get_raw(&bucket, LOCK_KEY).await,
        common::TERRAFORM_LOCK
    );
}

#[tokio::test]
async fn push_with_a_lock_timeout_waits_for_a_lock_released_meanwhile() {
    use s3state::{LockInfo, Locker};
    let bucket = bucket_with_terraform_state().await;
    let manager = common::manager(&bucket, KEY).await;
    let file = write_temp(&next_terraform_state());

    // A short timeout gives up, saying how long it waited.
    let held = manager
        .lock(&LockInfo::new("OperationTypeApply").with_info("held by the test"))
        .await
        .unwrap();
    s3state(&bucket)
        .args(["push", "--lock-timeout", "1500ms"])
        .arg(&file)
        .assert()
        .code(4)
        .stderr(contains("gave up after").and(contains(&held)));
    assert_eq!(common::version_count(&bucket, KEY).await, 1);

    // A long one waits until the holder releases the lock, then pushes.
    let mut push = s3state(&bucket);
    push.args(["push", "--lock-timeout", "60s"]).arg(&file);
    let started = std::time::Instant::now();
    let running = tokio::task::spawn_blocking(move || push.output().unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(!running.is_finished(), "the push waits for the lock");
    assert_eq!(common::version_count(&bucket, KEY).await, 1);
    manager.unlock(&held).await.unwrap();
    let output = running.await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(2500));
    assert!(String::from_utf8_lossy(&output.stderr).contains("Pushed serial 3"));
    assert_eq!(common::version_count(&bucket, KEY).await, 2);
    s3state(&bucket)
        .arg("lock-info")
        .assert()
        .success()
        .stdout(contains("is not locked"));
}

#[tokio::test]
async fn push_refuses_a_different_state_with_the_same_serial_unless_forced() {
    let bucket = bucket_with_terraform_state().await;
    let file = write_temp(&changed_terraform_state());
    s3state(&bucket)
        .arg("push")
        .arg(&file)
        .assert()
        .code(1)
        .stderr(
            contains("serial 1")
                .and(contains("different content under the same serial"))
                .and(contains("--force")),
        );
    assert_eq!(
        common::version_count(&bucket, KEY).await,
        1,
        "nothing written"
    );
    assert_eq!(common::get_raw(&bucket, KEY).await, common::TERRAFORM_STATE);
    assert_eq!(
        lock_history(&bucket).await,
        (1, 1),
        "the lock was released after the refusal"
    );

    s3state(&bucket)
        .args(["push", "--force"])
        .arg(&file)
        .assert()
        .success()
        .stderr(contains("Pushed serial 2"));
    assert_eq!(common::version_count(&bucket, KEY).await, 2);
    s3state(&bucket)
        .args(["outputs", "greeting", "--raw"])
        .assert()
        .success()
        .stdout("hello from a colleague");
}

#[tokio::test]
async fn restore_is_refused_with_exit_4_while_someone_else_holds_the_lock() {
    let bucket = bucket_with_terraform_state().await;
    common::manager(&bucket, KEY)
        .await
        .update(|s| {
            s.outputs.clear();
        })
        .await
        .unwrap();
    let (lock_versions, _) = lock_history(&bucket).await;
    terraform_holds_the_lock(&bucket).await;
    s3state(&bucket)
        .args(["restore", "previous", "--yes"])
        .assert()
        .code(4)
        .stderr(contains(TERRAFORM_LOCK_ID).and(contains("held by root@vm")));
    assert_eq!(
        common::version_count(&bucket, KEY).await,
        2,
        "nothing written"
    );
    assert_eq!(
        common::get_raw(&bucket, LOCK_KEY).await,
        common::TERRAFORM_LOCK
    );

    // Once Terraform is done, the restore goes through and releases its own lock.
    common::delete_object(&bucket, LOCK_KEY).await;
    s3state(&bucket)
        .args(["restore", "previous", "--yes"])
        .assert()
        .success()
        .stderr(contains("as serial 3"));
    assert_eq!(common::version_count(&bucket, KEY).await, 3);
    assert_eq!(
        lock_history(&bucket).await,
        (lock_versions + 2, lock_versions + 2),
        "Terraform's lock and ours, each removed"
    );
}

#[tokio::test]
async fn a_push_whose_lock_cannot_be_released_fails_and_says_how_to_remove_the_lock() {
    use common::proxy::{Fault, FaultProxy, Rule};
    let bucket = bucket_with_terraform_state().await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    proxy.inject(
        Rule::new(Fault::Status(403, "AccessDenied"))
            .method("DELETE")
            .path(".tflock")
            .times(usize::MAX),
    );
    let file = write_temp(&next_terraform_state());
    let mut push = s3state(&bucket);
    push.env("S3STATE_ENDPOINT_URL", proxy.endpoint())
        .arg("push")
        .arg(&file);
    // Off the runtime's thread: the proxy serves the command on this runtime.
    let output = tokio::task::spawn_blocking(move || push.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let left = common::get_raw(&bucket, LOCK_KEY).await;
    let left: serde_json::Value = serde_json::from_slice(&left).unwrap();
    let id = left["ID"].as_str().unwrap();
    assert_eq!(left["Operation"], "state-push");
    assert!(
        stderr.contains("Pushed serial 3")
            && stderr.contains("the push succeeded, but releasing the lock")
            && stderr.contains(&format!("s3state force-unlock {id}")),
        "{stderr}"
    );
    assert_eq!(
        common::version_count(&bucket, KEY).await,
        2,
        "the push landed"
    );
}

#[tokio::test]
async fn ctrl_c_during_a_push_releases_the_lock_before_exiting() {
    use common::proxy::{Fault, FaultProxy, Rule};
    let bucket = bucket_with_terraform_state().await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    // The state's PUT hangs (the first PUT, the lock's, goes through), so the push is
    // interrupted while it holds the lock.
    proxy.inject(
        Rule::new(Fault::StallBeforeForward(std::time::Duration::from_secs(
            60,
        )))
        .method("PUT")
        .after(1)
        .times(usize::MAX),
    );
    let file = write_temp(&next_terraform_state());
    // A plain process (not assert_cmd's), so the test can interrupt it while it runs.
    let mut push = std::process::Command::new(assert_cmd::cargo::cargo_bin!("s3state"));
    for (name, _) in std::env::vars() {
        if name.starts_with("S3STATE_") || name.starts_with("AWS_") {
            push.env_remove(name);
        }
    }
    push.current_dir(empty_dir())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("S3STATE_ENDPOINT_URL", proxy.endpoint())
        .env("S3STATE_PATH_STYLE", "true")
        .env("S3STATE_BUCKET", &bucket)
        .env("S3STATE_KEY", KEY)
        .arg("push")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = push.spawn().unwrap();
    // Wait until the lock is there (the push holds it), then interrupt.
    let mut held = false;
    for _ in 0..100 {
        if lock_present(&bucket).await {
            held = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(held, "the push never took the lock");
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        !lock_present(&bucket).await,
        "the interrupted push left its lock behind: {stderr}"
    );
}

async fn lock_present(bucket: &str) -> bool {
    common::object_exists(bucket, LOCK_KEY).await
}

/// A state body of `len` bytes that is not a repetition of one short pattern, so a dropped or
/// repeated chunk would show.
fn numbered_body(len: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(len + 16);
    let mut line = 0u64;
    while body.len() < len {
        body.extend_from_slice(format!("{line:015}\n").as_bytes());
        line += 1;
    }
    body.truncate(len);
    body
}

/// Runs `command` off the runtime's thread (a proxy serving it runs on this runtime).
async fn output_of(mut command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn pull_streams_a_large_state_byte_for_byte_with_one_request_and_no_versioning_check() {
    use common::proxy::FaultProxy;
    let bucket = common::bucket(true).await;
    let body = numbered_body(6 * 1024 * 1024 + 7);
    common::put_raw(&bucket, KEY, &body).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let mut pull = s3state(&bucket);
    pull.env("S3STATE_ENDPOINT_URL", proxy.endpoint())
        .arg("pull");
    let output = output_of(pull).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stdout == body,
        "the output differs from the stored bytes"
    );
    let requests: Vec<_> = proxy
        .requests()
        .into_iter()
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    assert_eq!(
        requests.len(),
        1,
        "a read-only command makes one request: {requests:?}"
    );
    assert!(
        requests[0].starts_with("GET ") && !requests[0].contains("versioning"),
        "{requests:?}"
    );
}

#[tokio::test]
async fn pull_cut_off_midway_fails_and_says_the_output_is_incomplete() {
    use common::proxy::{Fault, FaultProxy, Rule};
    let bucket = common::bucket(true).await;
    let body = numbered_body(2 * 1024 * 1024);
    common::put_raw(&bucket, KEY, &body).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    // Most of the body is sent before the cut: a short prefix stays in the proxy's write
    // buffer and never reaches the client, which then sees no answer at all.
    proxy.inject(
        Rule::new(Fault::TruncateBody(1_500_000))
            .method("GET")
            .times(usize::MAX),
    );
    let mut pull = s3state(&bucket);
    pull.env("S3STATE_ENDPOINT_URL", proxy.endpoint())
        .arg("pull");
    let output = output_of(pull).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the output is incomplete"), "{stderr}");
    assert!(
        output.stdout.len() < body.len() && body.starts_with(&output.stdout),
        "what was written is a prefix of the state ({} of {} bytes)",
        output.stdout.len(),
        body.len()
    );
}

#[tokio::test]
async fn pull_recovers_when_a_read_is_cut_off_before_any_byte_was_written() {
    use common::proxy::{Fault, FaultProxy, Rule};
    let bucket = common::bucket(true).await;
    let body = numbered_body(300_000);
    common::put_raw(&bucket, KEY, &body).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    proxy.inject(Rule::new(Fault::TruncateBody(0)).method("GET"));
    let mut pull = s3state(&bucket);
    pull.env("S3STATE_ENDPOINT_URL", proxy.endpoint())
        .arg("pull");
    let output = output_of(pull).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.stdout == body, "the retried read is complete");
    assert_eq!(
        proxy
            .requests()
            .iter()
            .filter(|r| r.method == "GET")
            .count(),
        2,
        "one cut-off read, one retry"
    );
}

#[tokio::test]
async fn a_named_profile_is_used_over_keys_in_the_environment_as_terraform_uses_it() {
    let bucket = bucket_with_terraform_state().await;
    let dir = empty_dir();
    let (config, mark) = common::profile_with_marked_credential_process(&dir);
    let with_profile = |command: &mut Command| {
        command
            .env("AWS_CONFIG_FILE", &config)
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.join("no-credentials-file"),
            )
            .args(["--profile", "marked", "pull"]);
    };

    // A profile named on the command line wins over the environment's keys, as in Terraform
    // and the AWS CLI, and the CLI says so.
    let mut pull = s3state(&bucket);
    with_profile(&mut pull);
    pull.assert()
        .success()
        .stdout(predicate::eq(common::TERRAFORM_STATE))
        .stderr(predicate::str::contains("profile's credentials are used"));
    assert!(
        mark.exists(),
        "the named profile's credential process did not run: the environment's keys were used"
    );

    // Without a named profile, the environment's keys answer first, and the profile is not
    // asked.
    std::fs::remove_file(&mark).unwrap();
    let mut pull = s3state(&bucket);
    pull.env("AWS_CONFIG_FILE", &config).arg("pull");
    pull.assert()
        .success()
        .stdout(predicate::eq(common::TERRAFORM_STATE));
    assert!(!mark.exists(), "no profile was named, yet one was asked");
}

#[tokio::test]
async fn a_plain_http_endpoint_is_read_without_the_systems_root_certificates() {
    // No root certificate can be found here: a client that loaded them for a plain-http
    // endpoint would warn that it found none (and the SDK's debug build refuses an empty
    // native store).
    let bucket = bucket_with_terraform_state().await;
    let no_certificates = empty_dir();
    s3state(&bucket)
        .env("SSL_CERT_FILE", no_certificates.join("none.pem"))
        .env("SSL_CERT_DIR", &no_certificates)
        .arg("pull")
        .assert()
        .success()
        .stdout(predicate::eq(common::TERRAFORM_STATE))
        .stderr(contains("certificate").not());
}

#[tokio::test]
async fn restore_with_lock_false_writes_without_waiting_for_a_lock_the_operator_holds() {
    // The documented script flow: lock, work with --lock=false, unlock. The library's restore
    // locks by default; with --lock=false it must neither lock nor wait on the script's lock.
    let bucket = bucket_with_terraform_state().await;
    common::manager(&bucket, KEY)
        .await
        .update(|s| {
            s.outputs.clear();
        })
        .await
        .unwrap();
    let held = s3state(&bucket).args(["lock"]).output().unwrap();
    assert!(
        held.status.success(),
        "{}",
        String::from_utf8_lossy(&held.stderr)
    );
    let id = String::from_utf8(held.stdout).unwrap().trim().to_owned();
    s3state(&bucket)
        .args(["restore", "previous", "--yes", "--lock=false"])
        .timeout(std::time::Duration::from_secs(30))
        .assert()
        .success()
        .stderr(contains("as serial 3"));
    s3state(&bucket).args(["unlock", &id]).assert().success();
    assert!(!common::object_exists(&bucket, LOCK_KEY).await);
}
