//! What the CLI prints on stderr when nothing went wrong with s3state itself: its own
//! errors and hints, and nothing else unless asked.

use crate::common;
use predicates::prelude::*;
use predicates::str::contains;

const KEY: &str = "cli/stderr.tfstate";

/// From issue 23, item 15: a backend block with the usual `skip_*` settings (every LocalStack,
/// MinIO or R2 setup has them) made every command print a note per setting, even a read with
/// `--bucket` and `--key` given. The notes now come with `meta` and `probe`, or with `-v`.
#[tokio::test]
async fn notes_about_unapplied_backend_settings_come_with_meta_or_verbose_only() {
    let bucket = common::bucket(true).await;
    common::manager(&bucket, KEY)
        .await
        .update(common::set_output("greeting", 1))
        .await
        .unwrap();
    let dir = common::temp_dir("s3state-notes");
    std::fs::write(
        dir.join("main.tf"),
        common::terraform_backend_block(&bucket, KEY),
    )
    .unwrap();
    let run = |args: &[&str]| {
        common::s3state_binary()
            .arg("--chdir")
            .arg(&dir)
            .args(args)
            .assert()
            .success()
    };
    run(&["outputs"]).stderr(contains("has no effect").not());
    run(&["history"]).stderr(contains("has no effect").not());
    run(&["meta"]).stderr(contains("`skip_region_validation`").and(contains("has no effect")));
    run(&["-v", "outputs"]).stderr(contains("has no effect"));
}

/// From issue 23, item 16: with no region configured, a command printed the AWS SDK's own
/// `WARN failed to load region from IMDS` lines (raw dumps, with escape codes on a pipe)
/// before s3state's error. By default only s3state's errors and hints are printed.
#[test]
fn a_missing_region_is_reported_without_the_sdks_internals() {
    let home = common::temp_dir("s3state-no-region");
    let output = common::s3state_binary()
        .env("HOME", &home)
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"))
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9")
        .args(["--bucket", "b", "--key", "k", "history"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("region"),
        "s3state names the problem: {stderr}"
    );
    assert!(!stderr.contains("WARN"), "no SDK log lines: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no escape codes on a pipe: {stderr}"
    );
}
