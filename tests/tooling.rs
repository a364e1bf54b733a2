//! `s3state list`, `show`, `rm` and `mv` against LocalStack, on a state Terraform 1.15.5 wrote
//! (modules, `count`, `for_each` keys with quotes and `<>&`, a data source).

mod common;

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;

const KEY: &str = "tooling/terraform.tfstate";
const OTHER_KEY: &str = "tooling/other.tfstate";
const STATE: &[u8] = include_bytes!("data/addresses/terraform-1.15.5.tfstate");

const LISTED: &str = r#"data.terraform_remote_state.r
terraform_data.counted[0]
terraform_data.counted[1]
terraform_data.each["<&>"]
terraform_data.each["a\"b"]
terraform_data.each["plain"]
terraform_data.single
module.c.terraform_data.inner
module.m["k<1>"].terraform_data.inner
"#;

fn s3state(bucket: &str) -> Command {
    let mut command = common::s3state_binary();
    command
        .current_dir(common::temp_dir("s3state-tooling"))
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("S3STATE_ENDPOINT_URL", common::endpoint())
        .env("S3STATE_PATH_STYLE", "true")
        .env("S3STATE_BUCKET", bucket)
        .env("S3STATE_KEY", KEY)
        .env("NO_COLOR", "1");
    command
}

async fn bucket_with_state() -> String {
    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, KEY, STATE).await;
    bucket
}

fn stdout(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn state_at(body: &[u8]) -> s3state::State {
    s3state::State::from_slice(body).unwrap()
}

async fn exists(bucket: &str, key: &str) -> bool {
    common::client()
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .is_ok()
}

#[tokio::test]
async fn list_prints_addresses_as_terraform_state_list_does_and_filters_them() {
    let bucket = bucket_with_state().await;
    assert_eq!(stdout(s3state(&bucket).arg("list")), LISTED);
    assert_eq!(
        stdout(s3state(&bucket).args(["list", "module.m", "terraform_data.counted"])),
        "terraform_data.counted[0]\nterraform_data.counted[1]\nmodule.m[\"k<1>\"].terraform_data.inner\n"
    );
    assert_eq!(
        stdout(s3state(&bucket).args(["list", r#"terraform_data.each["a\"b"]"#])),
        "terraform_data.each[\"a\\\"b\"]\n"
    );
    assert_eq!(stdout(s3state(&bucket).args(["list", "module.zz"])), "");
}

#[tokio::test]
async fn show_prints_attributes_with_sensitive_values_masked_and_one_attribute_raw() {
    let bucket = bucket_with_state().await;
    let all: serde_json::Value = serde_json::from_str(&stdout(
        s3state(&bucket).args(["show", r#"terraform_data.each["<&>"]"#]),
    ))
    .unwrap();
    assert_eq!(all["input"], "(sensitive value)");
    assert!(all["id"].is_string());
    assert_eq!(
        stdout(s3state(&bucket).args([
            "show",
            r#"terraform_data.each["<&>"].input.value"#,
            "--show-sensitive"
        ])),
        "<&>\n"
    );
    assert_eq!(
        stdout(s3state(&bucket).args([
            "show",
            r#"module.m["k<1>"].terraform_data.inner.input.value.n"#
        ])),
        "1\n"
    );
    assert_eq!(
        stdout(s3state(&bucket).args(["show", "module.c.terraform_data.inner.input.value.pw"])),
        "(sensitive value)\n"
    );
    assert_eq!(
        stdout(s3state(&bucket).args(["show", "terraform_data.counted[1].input.value"])),
        "1\n"
    );
    assert_eq!(
        stdout(s3state(&bucket).args(["show", "data.terraform_remote_state.r.backend"])),
        "local\n"
    );
    assert_eq!(stdout(s3state(&bucket).args(["show", "output.o"])), "v\n");
    s3state(&bucket)
        .args(["show", "terraform_data.counted"])
        .assert()
        .code(1)
        .stderr(contains(
            "name one of: terraform_data.counted[0], terraform_data.counted[1]",
        ));
}

#[tokio::test]
async fn rm_removes_under_the_lock_and_names_the_version_that_still_has_the_content() {
    let bucket = bucket_with_state().await;
    s3state(&bucket)
        .args(["rm", "--dry-run", "module.m", "terraform_data.counted[0]"])
        .assert()
        .success()
        .stdout(contains(
            "Would remove module.m[\"k<1>\"].terraform_data.inner",
        ));
    assert_eq!(
        common::version_count(&bucket, KEY).await,
        1,
        "a dry run writes nothing"
    );

    let old_version = common::client()
        .head_object()
        .bucket(&bucket)
        .key(KEY)
        .send()
        .await
        .unwrap()
        .version_id()
        .unwrap()
        .to_owned();
    s3state(&bucket)
        .args(["rm", "module.m", "terraform_data.counted[0]"])
        .assert()
        .success()
        .stdout(contains(
            "Successfully removed 2 resource instance(s); serial",
        ))
        .stderr(contains(format!("stays in version {old_version}")));
    let after = state_at(&common::get_raw(&bucket, KEY).await);
    assert_eq!(after.serial, state_at(STATE).serial + 1);
    let listed: Vec<String> = after
        .instances()
        .unwrap()
        .iter()
        .map(|i| i.to_string())
        .collect();
    assert!(
        !listed
            .iter()
            .any(|a| a.contains("module.m") || a == "terraform_data.counted[0]")
    );
    assert_eq!(listed.len(), 7);
    assert!(
        !exists(&bucket, &format!("{KEY}.tflock")).await,
        "the lock is released"
    );

    // A held lock: refused with exit 4, nothing written.
    let id = stdout(s3state(&bucket).arg("lock"));
    s3state(&bucket)
        .args(["rm", "terraform_data.single"])
        .assert()
        .code(4);
    assert_eq!(common::version_count(&bucket, KEY).await, 2);
    s3state(&bucket)
        .args(["unlock", id.trim()])
        .assert()
        .success();
}

#[tokio::test]
async fn mv_within_a_state_moves_resources_instances_and_modules() {
    let bucket = bucket_with_state().await;
    s3state(&bucket)
        .args(["mv", "--dry-run", "module.c", "module.d"])
        .assert()
        .success()
        .stdout(contains(
            "Would move \"module.c.terraform_data.inner\" to \"module.d.terraform_data.inner\"",
        ));
    assert_eq!(common::version_count(&bucket, KEY).await, 1);
    for (from, to) in [
        ("module.c", r#"module.d["x"]"#),
        (
            "terraform_data.counted[1]",
            r#"terraform_data.each["<new>"]"#,
        ),
        ("terraform_data.single", "terraform_data.renamed"),
    ] {
        s3state(&bucket).args(["mv", from, to]).assert().success();
    }
    let listed = stdout(s3state(&bucket).arg("list"));
    assert_eq!(
        listed,
        r#"data.terraform_remote_state.r
terraform_data.counted[0]
terraform_data.each["<&>"]
terraform_data.each["<new>"]
terraform_data.each["a\"b"]
terraform_data.each["plain"]
terraform_data.renamed
module.d["x"].terraform_data.inner
module.m["k<1>"].terraform_data.inner
"#
    );
    assert_eq!(common::version_count(&bucket, KEY).await, 4);
}

#[tokio::test]
async fn mv_to_another_state_writes_both_and_a_rerun_after_a_crash_completes_without_duplicates() {
    let bucket = bucket_with_state().await;
    s3state(&bucket)
        .args([
            "mv",
            "--to-key",
            OTHER_KEY,
            r#"module.m["k<1>"]"#,
            r#"module.m["k<1>"]"#,
        ])
        .assert()
        .success()
        .stdout(contains("Successfully moved 1 object(s)"));
    let dst_once = common::get_raw(&bucket, OTHER_KEY).await;
    assert_eq!(
        stdout(s3state(&bucket).env("S3STATE_KEY", OTHER_KEY).arg("list")),
        "module.m[\"k<1>\"].terraform_data.inner\n"
    );
    assert!(!stdout(s3state(&bucket).arg("list")).contains("module.m"));

    // The crash: the destination was written, the source was not (its old content is back).
    common::put_raw(&bucket, KEY, STATE).await;
    s3state(&bucket)
        .args([
            "mv",
            "--to-key",
            OTHER_KEY,
            r#"module.m["k<1>"]"#,
            r#"module.m["k<1>"]"#,
        ])
        .assert()
        .success()
        .stderr(contains("already has these instances"));
    assert_eq!(
        common::get_raw(&bucket, OTHER_KEY).await,
        dst_once,
        "the destination is not written twice"
    );
    assert!(!stdout(s3state(&bucket).arg("list")).contains("module.m"));
    // A third run: nothing left to do, and it says so.
    s3state(&bucket)
        .args([
            "mv",
            "--to-key",
            OTHER_KEY,
            r#"module.m["k<1>"]"#,
            r#"module.m["k<1>"]"#,
        ])
        .assert()
        .code(1)
        .stderr(contains("the move looks done already"));

    // Into an existing state, and to a workspace.
    s3state(&bucket)
        .args([
            "mv",
            "--to-key",
            OTHER_KEY,
            "terraform_data.counted[0]",
            "terraform_data.c",
        ])
        .assert()
        .success();
    assert_eq!(
        stdout(s3state(&bucket).env("S3STATE_KEY", OTHER_KEY).arg("list")),
        "terraform_data.c\nmodule.m[\"k<1>\"].terraform_data.inner\n"
    );
    let other = state_at(&common::get_raw(&bucket, OTHER_KEY).await);
    assert_eq!(other.serial, 2);
    s3state(&bucket)
        .args([
            "mv",
            "--to-workspace",
            "staging",
            "terraform_data.single",
            "terraform_data.single",
        ])
        .assert()
        .success();
    assert_eq!(
        stdout(s3state(&bucket).args(["-w", "staging", "list"])),
        "terraform_data.single\n"
    );
    assert!(!exists(&bucket, &format!("{KEY}.tflock")).await);
    assert!(!exists(&bucket, &format!("{OTHER_KEY}.tflock")).await);

    // To another bucket, same key.
    let other_bucket = common::bucket(true).await;
    s3state(&bucket)
        .args([
            "mv",
            "--to-bucket",
            &other_bucket,
            "data.terraform_remote_state.r",
            "data.terraform_remote_state.r",
        ])
        .assert()
        .success();
    assert_eq!(
        stdout(s3state(&other_bucket).arg("list")),
        "data.terraform_remote_state.r\n"
    );
    let source = stdout(s3state(&bucket).arg("list"));
    assert!(
        !source.lines().any(|line| line.starts_with("data.")),
        "{source}"
    );
}

#[tokio::test]
async fn bad_input_for_each_command_is_refused_and_nothing_is_written() {
    let bucket = bucket_with_state().await;
    // Another state at OTHER_KEY, written by a Terraform of another major version.
    let old_major = String::from_utf8(STATE.to_vec()).unwrap().replace(
        "\"terraform_version\": \"1.15.5\"",
        "\"terraform_version\": \"2.0.0\"",
    );
    let third_key = "tooling/third.tfstate";
    common::put_raw(&bucket, third_key, old_major.as_bytes()).await;
    let cases: &[(&[&str], i32, &str)] = &[
        (&["list", "x."], 2, "invalid address"),
        (&["list", "output.o"], 2, "outputs are not resources"),
        (&["show"], 2, "required"),
        (&["show", "module.c"], 2, "names a module"),
        (
            &["show", "terraform_data.nope"],
            1,
            "no instance terraform_data.nope",
        ),
        (
            &["show", "terraform_data.single.nope"],
            1,
            "no attribute at that path",
        ),
        (&["show", "output.none"], 1, "no output"),
        (&["show", r#"x.y["${a}"]"#], 2, "templates are not allowed"),
        (&["rm"], 2, "required"),
        (
            &["rm", "terraform_data.nope"],
            1,
            "no resource, instance or module",
        ),
        (
            &["rm", "terraform_data.single", "module.zz"],
            1,
            "module.zz",
        ),
        (&["rm", "terraform_data.single["], 2, "invalid address"),
        (
            &["rm", "--lock=maybe", "terraform_data.single"],
            2,
            "invalid value",
        ),
        (&["mv", "terraform_data.single"], 2, "required"),
        (
            &["mv", "terraform_data.nope", "terraform_data.x"],
            1,
            "no resource, instance or module",
        ),
        (
            &["mv", "terraform_data.single", "terraform_data.counted"],
            1,
            "already exists",
        ),
        (
            &[
                "mv",
                "terraform_data.counted[0]",
                "terraform_data.counted[1]",
            ],
            1,
            "already exists",
        ),
        (
            &["mv", "terraform_data.single", "null_resource.single"],
            1,
            "keeps its mode and type",
        ),
        (&["mv", "module.c", "terraform_data.x"], 1, "cannot move"),
        (&["mv", "module.c", "module.c.module.d"], 1, "into itself"),
        (
            &["mv", "--to-workspace", "../x", "module.c", "module.c"],
            2,
            "not a valid workspace name",
        ),
        (
            &["mv", "--to-key", third_key, "module.c", "module.c"],
            1,
            "different formats",
        ),
        (
            &[
                "mv",
                "--to-key",
                third_key,
                "terraform_data.single",
                "terraform_data.single",
                "--dry-run",
            ],
            1,
            "different formats",
        ),
    ];
    for (args, code, message) in cases {
        s3state(&bucket)
            .args(*args)
            .assert()
            .code(*code)
            .stderr(contains(*message).or(contains(message.to_lowercase())));
        assert_eq!(common::version_count(&bucket, KEY).await, 1, "{args:?}");
        assert_eq!(
            common::version_count(&bucket, third_key).await,
            1,
            "{args:?}"
        );
        assert!(!exists(&bucket, OTHER_KEY).await, "{args:?}");
        assert!(!exists(&bucket, &format!("{KEY}.tflock")).await, "{args:?}");
    }
    assert_eq!(common::get_raw(&bucket, KEY).await, STATE);
    let empty = common::bucket(true).await;
    s3state(&empty)
        .arg("list")
        .assert()
        .code(1)
        .stderr(contains("there is no state at s3://"));
}

#[tokio::test]
async fn ls_lists_every_state_with_its_workspace_identity_and_lock_holder() {
    let bucket = bucket_with_state().await;
    // One written by s3state (metadata beside it), one in a workspace, one locked.
    s3state(&bucket)
        .args([
            "mv",
            "--to-key",
            OTHER_KEY,
            "terraform_data.single",
            "terraform_data.single",
        ])
        .assert()
        .success();
    s3state(&bucket)
        .args(["mv", "--to-workspace", "staging", "module.c", "module.c"])
        .assert()
        .success();
    common::put_raw(&bucket, "notes/readme.txt", b"not a state").await;
    let id = stdout(s3state(&bucket).env("S3STATE_KEY", OTHER_KEY).arg("lock"));

    let rows: serde_json::Value = serde_json::from_str(&stdout(
        common::s3state_binary()
            .args(["ls", "--json", "--resources"])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("S3STATE_ENDPOINT_URL", common::endpoint())
            .env("S3STATE_PATH_STYLE", "true")
            .env("S3STATE_BUCKET", &bucket)
            .current_dir(common::temp_dir("s3state-tooling")),
    ))
    .unwrap();
    let summary: Vec<(String, String, u64, u64, bool)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["key"].as_str().unwrap().to_owned(),
                row["workspace"].as_str().unwrap().to_owned(),
                row["serial"].as_u64().unwrap(),
                row["resources"].as_u64().unwrap(),
                row["lock_holder"].is_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "env:/staging/tooling/terraform.tfstate".to_owned(),
                "staging".to_owned(),
                1,
                1,
                false
            ),
            (OTHER_KEY.to_owned(), "default".to_owned(), 1, 1, true),
            (KEY.to_owned(), "default".to_owned(), 11, 4, false),
        ]
    );
    let locked = stdout(s3state(&bucket).args(["ls", "--locked"]));
    assert_eq!(locked.lines().count(), 2, "{locked}");
    assert!(
        locked.lines().nth(1).unwrap().starts_with(OTHER_KEY),
        "{locked}"
    );
    let under = stdout(s3state(&bucket).args(["ls", "env:/"]));
    assert_eq!(under.lines().count(), 2, "{under}");
    s3state(&bucket)
        .env("S3STATE_KEY", OTHER_KEY)
        .args(["unlock", id.trim()])
        .assert()
        .success();
}

#[tokio::test]
async fn a_move_whose_source_write_is_lost_is_completed_by_running_it_again() {
    use common::proxy::{Fault, FaultProxy, Rule};
    let bucket = bucket_with_state().await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    // PUTs: the two locks, the destination state, then the source state, which never arrives.
    proxy.inject(
        Rule::new(Fault::ResetBeforeForward)
            .method("PUT")
            .after(3)
            .times(usize::MAX),
    );
    let args = ["mv", "--to-key", OTHER_KEY, "module.c", "module.c"];
    let mut crashed = s3state(&bucket);
    crashed
        .env("S3STATE_ENDPOINT_URL", proxy.endpoint())
        .args(args);
    // Off the runtime's thread: the proxy serves the command on this runtime.
    let output = tokio::task::spawn_blocking(move || crashed.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("run the same command again"), "{stderr}");
    assert_eq!(
        common::get_raw(&bucket, KEY).await,
        STATE,
        "the source is as it was"
    );
    let destination = common::get_raw(&bucket, OTHER_KEY).await;
    assert!(
        !exists(&bucket, &format!("{KEY}.tflock")).await,
        "locks released"
    );
    assert!(!exists(&bucket, &format!("{OTHER_KEY}.tflock")).await);

    s3state(&bucket)
        .args(args)
        .assert()
        .success()
        .stderr(contains("already has these instances"));
    assert_eq!(common::get_raw(&bucket, OTHER_KEY).await, destination);
    assert_eq!(
        common::version_count(&bucket, OTHER_KEY).await,
        1,
        "written once"
    );
    assert_eq!(
        stdout(s3state(&bucket).env("S3STATE_KEY", OTHER_KEY).arg("list")),
        "module.c.terraform_data.inner\n"
    );
    let source = stdout(s3state(&bucket).arg("list"));
    assert!(!source.contains("module.c"), "{source}");
    assert_eq!(source.lines().count(), 8);
}
