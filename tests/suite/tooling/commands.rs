//! `s3state list`, `show`, `rm` and `mv` against LocalStack, on a state Terraform 1.15.5 wrote
//! (modules, `count`, `for_each` keys with quotes and `<>&`, a data source).

use crate::common;

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;

const KEY: &str = "tooling/terraform.tfstate";
const OTHER_KEY: &str = "tooling/other.tfstate";
const STATE: &[u8] = include_bytes!("../../data/addresses/terraform-1.15.5.tfstate");

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
    common::s3state_on(bucket, KEY, common::temp_dir("s3state-tooling"))
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

use common::object_exists as exists;

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

    let old_version = common::head(&bucket, KEY)
        .await
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
        common::s3state_at(common::endpoint(), common::temp_dir("s3state-tooling"))
            .args(["ls", "--json", "--resources"])
            .env("S3STATE_BUCKET", &bucket),
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

/// The names of the commands `s3state --help` lists (so a new command is checked too).
fn listed_commands() -> Vec<String> {
    let help = stdout(common::s3state_binary().arg("--help"));
    let commands: Vec<String> = help
        .split("Commands:\n")
        .nth(1)
        .expect("a Commands section")
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .map(|line| line.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert!(commands.len() > 20, "{commands:?}");
    commands
}

#[test]
fn the_completion_scripts_and_man_page_name_every_command() {
    let commands = listed_commands();
    let bash = stdout(common::s3state_binary().args(["completions", "bash"]));
    assert!(bash.contains("complete -F _s3state"), "{bash}");
    for command in &commands {
        assert!(
            bash.contains(&format!("s3state,{command})")),
            "bash completion lacks {command}"
        );
    }
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let script = stdout(common::s3state_binary().args(["completions", shell]));
        assert!(
            script.contains("force-unlock") && script.contains("older-than"),
            "{shell}: {script}"
        );
    }

    let man = stdout(common::s3state_binary().arg("man"));
    assert!(man.contains("\n.TH s3state 1"), "{man}");
    assert!(man.contains("\n.SH SUBCOMMANDS"), "{man}");
    for command in commands.iter().filter(|c| *c != "help") {
        // roff escapes the hyphen.
        let name = format!("s3state\\-{}(1)", command.replace('-', "\\-"));
        assert!(man.contains(&name), "the man page lacks {name}");
    }
}

#[test]
fn man_dir_writes_one_page_per_command_and_subcommand() {
    let dir = common::temp_dir("s3state-man").join("man1");
    let written = stdout(common::s3state_binary().args(["man", "--dir"]).arg(&dir));
    for command in listed_commands().iter().filter(|c| *c != "help") {
        let page = dir.join(format!("s3state-{command}.1"));
        let text = std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{page:?}: {e}"));
        assert!(text.contains(&format!(".TH s3state-{command} 1")), "{text}");
        assert!(written.contains(&page.display().to_string()), "{written}");
    }
    let workspace_new = std::fs::read_to_string(dir.join("s3state-workspace-new.1")).unwrap();
    assert!(
        workspace_new.contains("Create a workspace"),
        "{workspace_new}"
    );
    assert!(dir.join("s3state.1").exists());
}

#[test]
fn an_unknown_shell_is_a_usage_error_and_prints_no_script() {
    for args in [
        &["completions", "nushell"][..],
        &["completions"],
        &["completions", "bash", "zsh"],
    ] {
        common::s3state_binary()
            .args(args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(contains("error:"));
    }
    let file = common::temp_dir("s3state-man").join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    common::s3state_binary()
        .args(["man", "--dir"])
        .arg(&file)
        .assert()
        .code(1)
        .stdout("")
        .stderr(contains("cannot create"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

/// A small v4 state: `resources` resources, and an output `padding` characters long.
fn small_state(serial: u64, lineage: &str, resources: usize, padding: usize) -> String {
    let resources: Vec<serde_json::Value> = (0..resources)
        .map(|i| {
            serde_json::json!({
                "mode": "managed",
                "type": "terraform_data",
                "name": format!("r{i}"),
                "provider": "provider[\"terraform.io/builtin/terraform\"]",
                "instances": [{"schema_version": 0, "attributes": {"id": format!("id-{i}")}, "sensitive_attributes": []}]
            })
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "version": 4,
        "terraform_version": "1.15.5",
        "serial": serial,
        "lineage": lineage,
        "outputs": {"padding": {"value": "x".repeat(padding), "type": "string"}},
        "resources": resources,
        "check_results": null
    }))
    .unwrap()
}

/// Writes a state through `s3state push` (so s3state's metadata is stored beside it).
fn push(bucket: &str, key: &str, body: String) {
    s3state(bucket)
        .env("S3STATE_KEY", key)
        .args(["push", "--force", "-"])
        .write_stdin(body)
        .assert()
        .success();
}

fn ls_json(bucket: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let out = stdout(s3state(bucket).args(["ls", "--json"]).args(args));
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn keys(rows: &[serde_json::Value]) -> Vec<&str> {
    rows.iter()
        .map(|row| row["key"].as_str().unwrap())
        .collect()
}

/// Three states under `sorted/`: `c` first (pushed), then a second later `a` (pushed) and `b`
/// (a plain PUT, as Terraform writes it, with no s3state metadata).
async fn bucket_with_three_states() -> String {
    let bucket = common::bucket(true).await;
    push(&bucket, "sorted/c.tfstate", small_state(9, "lc", 2, 200));
    // LocalStack's LastModified has whole seconds: a and b come a second later than c.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    push(&bucket, "sorted/a.tfstate", small_state(5, "la", 3, 1000));
    common::put_raw(
        &bucket,
        "sorted/b.tfstate",
        small_state(1, "lb", 1, 0).as_bytes(),
    )
    .await;
    bucket
}

#[tokio::test]
async fn ls_sorts_by_each_column_and_reverses() {
    let bucket = bucket_with_three_states().await;
    let cases: &[(&[&str], [&str; 3])] = &[
        (&[], ["a", "b", "c"]),
        (&["--sort", "key", "--reverse"], ["c", "b", "a"]),
        (&["--sort", "serial"], ["b", "a", "c"]),
        (&["--sort", "serial", "--reverse"], ["c", "a", "b"]),
        (&["--sort", "size"], ["b", "c", "a"]),
        (&["--sort", "resources"], ["b", "c", "a"]),
        (&["--sort", "modified"], ["c", "a", "b"]),
        (&["--sort=modified", "--reverse"], ["b", "a", "c"]),
    ];
    for (args, expected) in cases {
        let rows = ls_json(&bucket, args);
        let expected: Vec<String> = expected
            .iter()
            .map(|name| format!("sorted/{name}.tfstate"))
            .collect();
        assert_eq!(keys(&rows), expected, "{args:?}");
    }
    let by_resources = ls_json(&bucket, &["--sort", "resources"]);
    let counts: Vec<u64> = by_resources
        .iter()
        .map(|row| row["resources"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 2, 3], "sorting by resources counts them");
    let table = stdout(s3state(&bucket).args(["ls", "--sort", "serial", "--reverse"]));
    let first_column: Vec<&str> = table
        .lines()
        .map(|line| line.split('\t').next().unwrap())
        .collect();
    assert_eq!(
        first_column,
        [
            "KEY",
            "sorted/c.tfstate",
            "sorted/a.tfstate",
            "sorted/b.tfstate"
        ]
    );
}

#[tokio::test]
async fn ls_older_than_keeps_states_last_modified_before_now_minus_the_age() {
    let bucket = bucket_with_three_states().await;
    assert_eq!(ls_json(&bucket, &["--older-than", "0s"]).len(), 3);
    assert!(ls_json(&bucket, &["--older-than", "3650d"]).is_empty());
    let table = stdout(s3state(&bucket).args(["ls", "--older-than", "3650d"]));
    assert_eq!(table.lines().count(), 1, "only the header: {table}");
    assert!(
        ls_json(&bucket, &["--older-than", "0s", "--locked"]).is_empty(),
        "filters combine"
    );
}

#[tokio::test]
async fn ls_json_has_every_column_and_counts_versions_only_on_request_either_way() {
    let bucket = common::bucket(true).await;
    let key = "counted/terraform.tfstate";
    for serial in 1..=4 {
        push(&bucket, key, small_state(serial, "lineage-v", 2, 10));
    }
    // The lock object's own versions sit right after the state's in the listing; they are not
    // the state's.
    let id = stdout(s3state(&bucket).env("S3STATE_KEY", key).arg("lock"));
    s3state(&bucket)
        .env("S3STATE_KEY", key)
        .args(["unlock", id.trim()])
        .assert()
        .success();
    push(
        &bucket,
        "counted/terraform.tfstate.old.tfstate",
        small_state(1, "o", 0, 0),
    );
    let held = stdout(s3state(&bucket).env("S3STATE_KEY", key).arg("lock"));

    let rows = ls_json(&bucket, &["counted/", "--versions"]);
    assert_eq!(keys(&rows), [key, "counted/terraform.tfstate.old.tfstate"]);
    let row = rows[0].as_object().unwrap();
    let mut fields: Vec<&str> = row.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "encrypted",
            "key",
            "last_modified",
            "lineage",
            "lock_holder",
            "lock_id",
            "resources",
            "serial",
            "size",
            "terraform_version",
            "versions",
            "workspace"
        ]
    );
    assert_eq!(row["versions"], 4, "four pushes, the lock's versions aside");
    assert_eq!(rows[1]["versions"], 1);
    assert_eq!(row["serial"], 4);
    assert_eq!(row["lineage"], "lineage-v");
    assert_eq!(row["terraform_version"], "1.15.5");
    assert_eq!(row["workspace"], "default");
    assert_eq!(
        row["size"].as_u64().unwrap() as usize,
        common::get_raw(&bucket, key).await.len()
    );
    assert_eq!(row["resources"], serde_json::Value::Null, "not asked for");
    assert_eq!(row["lock_id"], held.trim());
    assert!(
        row["lock_holder"].as_str().unwrap().contains('@'),
        "{row:?}"
    );
    let modified = row["last_modified"].as_str().unwrap();
    assert!(
        modified.len() >= 20 && modified.as_bytes()[10] == b'T' && modified.ends_with('Z'),
        "RFC 3339: {modified}"
    );

    // Ten more unlocked states: --locked keeps one state in twelve, so the versions are listed
    // for that state alone instead of for the whole prefix; the counts agree.
    for n in 0..10 {
        let other = format!("counted/more-{n}.tfstate");
        common::put_raw(&bucket, &other, small_state(1, "m", 0, 0).as_bytes()).await;
        common::put_raw(&bucket, &other, small_state(2, "m", 0, 0).as_bytes()).await;
    }
    let whole_prefix = ls_json(&bucket, &["counted/", "--versions"]);
    assert_eq!(whole_prefix.len(), 12);
    // Keys in order: more-0 … more-9, then terraform.tfstate and its .old sibling.
    assert!(whole_prefix[..10].iter().all(|row| row["versions"] == 2));
    assert_eq!(whole_prefix[10]["key"], key);
    assert_eq!(whole_prefix[10]["versions"], 4);
    assert_eq!(whole_prefix[11]["versions"], 1);
    let one_state = ls_json(&bucket, &["counted/", "--versions", "--locked"]);
    assert_eq!(keys(&one_state), [key]);
    assert_eq!(one_state[0]["versions"], 4);

    let without = ls_json(&bucket, &["counted/"]);
    assert_eq!(without[0]["versions"], serde_json::Value::Null);
    let table = stdout(s3state(&bucket).args(["ls", "counted/", "--versions"]));
    let header: Vec<&str> = table.lines().next().unwrap().split('\t').collect();
    assert_eq!(header.last(), Some(&"VERSIONS"));
    assert!(
        table
            .lines()
            .find(|line| line.starts_with(&format!("{key}\t")))
            .unwrap()
            .ends_with("\t4"),
        "{table}"
    );
    let plain = stdout(s3state(&bucket).args(["ls", "counted/"]));
    assert!(!plain.contains("VERSIONS"), "{plain}");
    s3state(&bucket)
        .env("S3STATE_KEY", key)
        .args(["unlock", held.trim()])
        .assert()
        .success();
}

#[tokio::test]
async fn ls_reads_a_body_only_where_s3state_metadata_is_missing() {
    use common::proxy::FaultProxy;
    let bucket = bucket_with_three_states().await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    let run = |args: &'static [&'static str]| {
        let mut command = s3state(&bucket);
        command
            .env("S3STATE_ENDPOINT_URL", proxy.endpoint())
            .arg("ls")
            .args(args);
        // Off the runtime's thread: the proxy serves the command on this runtime.
        async move {
            let output = tokio::task::spawn_blocking(move || command.output().unwrap())
                .await
                .unwrap();
            assert!(output.status.success(), "{output:?}");
        }
    };
    let count = |requests: &[common::proxy::Recorded], method: &str, key: &str| {
        requests
            .iter()
            .filter(|r| r.method == method && r.path.ends_with(key))
            .count()
    };

    run(&[]).await;
    let requests = proxy.take_requests();
    let s3_requests: Vec<_> = requests
        .iter()
        .filter(|r| r.path.contains(&bucket))
        .collect();
    assert_eq!(
        s3_requests
            .iter()
            .filter(|r| r.query.contains("list-type=2"))
            .count(),
        1,
        "{s3_requests:#?}"
    );
    for name in ["a", "b", "c"] {
        let key = format!("sorted/{name}.tfstate");
        assert_eq!(count(&requests, "HEAD", &key), 1, "{key}");
    }
    assert_eq!(count(&requests, "GET", "sorted/a.tfstate"), 0, "metadata");
    assert_eq!(count(&requests, "GET", "sorted/c.tfstate"), 0, "metadata");
    assert_eq!(
        count(&requests, "GET", "sorted/b.tfstate"),
        1,
        "no metadata"
    );

    run(&["--resources"]).await;
    let requests = proxy.take_requests();
    for name in ["a", "b", "c"] {
        let key = format!("sorted/{name}.tfstate");
        assert_eq!(count(&requests, "GET", &key), 1, "{key}");
        assert_eq!(count(&requests, "HEAD", &key), 0, "a GET has the metadata");
    }

    run(&["--versions"]).await;
    let requests = proxy.take_requests();
    let version_listings: Vec<_> = requests
        .iter()
        .filter(|r| r.query.contains("versions") && !r.query.contains("versioning"))
        .collect();
    assert_eq!(
        version_listings.len(),
        1,
        "one listing of every version, not one per state: {version_listings:#?}"
    );
}

#[tokio::test]
async fn ls_bad_sort_keys_and_durations_are_usage_errors() {
    let bucket = bucket_with_three_states().await;
    for (args, message) in [
        (&["--sort", "name"][..], "invalid value 'name' for '--sort"),
        (&["--sort"], "a value is required"),
        (
            &["--older-than", "3x"],
            "invalid value '3x' for '--older-than",
        ),
        (
            &["--older-than=-1d"],
            "invalid value '-1d' for '--older-than",
        ),
        (&["--older-than", "soon"], "--older-than"),
        (&["--reverse=yes"], "unexpected value"),
    ] {
        s3state(&bucket)
            .arg("ls")
            .args(args)
            .assert()
            .code(2)
            .stdout("")
            .stderr(contains(message));
    }
}
