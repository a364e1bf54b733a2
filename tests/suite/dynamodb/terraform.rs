//! A real Terraform 1.15.5 whose `backend "s3"` block has `dynamodb_table` (S3 on LocalStack,
//! DynamoDB on moto) and s3state sharing one state: the lock item excludes each side from the
//! other, and the digest each keeps in the table is the one the other expects.
#![cfg(feature = "dynamodb")]

use crate::common;
use crate::common::gateway;
use crate::common::terraform::{self, PAUSING_CONFIG, Workdir};

use s3state::dynamodb::md5_hex;
use s3state::{OutputReader, PersistentMeta, Refresher, RemoteState, S3Store};
use std::path::Path;
use std::process::{Child, Output};
use std::time::{Duration, Instant};

const KEY: &str = "demo/terraform.tfstate";

use common::dynamo::{dynamodb, item, table};
use common::moto_endpoint;

/// The lock JSON held in the lock item of `bucket`/`KEY`, if it is locked.
async fn lock_item(table: &str, bucket: &str) -> Option<serde_json::Value> {
    item(table, &format!("{bucket}/{KEY}"), "Info")
        .await
        .map(|info| serde_json::from_str(&info).expect("the lock item's Info is JSON"))
}

/// The digest item of `bucket`/`KEY`.
async fn digest_item(table: &str, bucket: &str) -> Option<String> {
    item(table, &format!("{bucket}/{KEY}-md5"), "Digest").await
}

/// A library manager for the state, with the lock table.
async fn manager(bucket: &str, table: &str) -> RemoteState<S3Store> {
    common::builder(bucket, KEY)
        .with_dynamodb_table(table)
        .with_dynamodb_client(dynamodb())
        .with_digest_wait(Duration::from_secs(2))
        .build()
        .await
        .expect("opening the state")
}

/// Which locks the backend block asks Terraform for.
#[derive(Clone, Copy)]
enum Locks {
    /// `dynamodb_table` alone: Terraform's only lock is the DynamoDB item.
    TableOnly,
    /// `dynamodb_table` and `use_lockfile`: both, as recorded in the samples.
    TableAndLockfile,
}

/// A `terraform { backend "s3" { ... } }` block with `dynamodb_table` and both endpoints.
fn backend_block(bucket: &str, table: &str, locks: Locks) -> String {
    let s3 = format!("{{ s3 = \"{}\" }}", common::endpoint());
    let settings = common::backend_settings(bucket, KEY);
    assert!(settings.contains(&s3), "{settings}");
    let settings = settings.replace(
        &s3,
        &format!(
            "{{ s3 = \"{}\", dynamodb = \"{}\" }}",
            common::endpoint(),
            moto_endpoint()
        ),
    );
    let lockfile = match locks {
        Locks::TableOnly => "",
        Locks::TableAndLockfile => "    use_lockfile                = true\n",
    };
    format!(
        "terraform {{\n  backend \"s3\" {{\n{settings}    dynamodb_table              = \"{table}\"\n{lockfile}  }}\n}}\n"
    )
}

/// A Terraform working directory using that backend block.
fn workdir(bucket: &str, table: &str, locks: Locks, body: &str) -> Workdir {
    Workdir::new("s3state-tf-ddb", &backend_block(bucket, table, locks), body)
}

/// A plan that does not wait for a lock.
fn plan_unlocked(terraform: &Workdir) -> Output {
    terraform.run(&["plan", "-input=false", "-no-color", "-lock-timeout=0s"])
}

/// A plan succeeds without waiting for the digest: the table's digest matches the state.
#[track_caller]
fn assert_plan_does_not_wait(terraform: &Workdir) {
    let started = Instant::now();
    let plan = plan_unlocked(terraform);
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    assert!(
        started.elapsed() < DIGEST_WAIT,
        "the plan waited for the digest"
    );
}

/// `s3state` reading `terraform`'s backend block (`--chdir`), with no other settings.
fn s3state_in(terraform: &Workdir) -> assert_cmd::Command {
    let mut command = common::s3state_binary();
    command
        .current_dir(common::temp_dir("s3state-tf-ddb-cli"))
        .arg("--chdir")
        .arg(&terraform.dir)
        .env("NO_COLOR", "1");
    command
}

/// `s3state` given everything by flags and variables (no backend block), with the table flags.
fn s3state_with_flags(bucket: &str, table: &str) -> assert_cmd::Command {
    let mut command = common::s3state_on(bucket, KEY, common::temp_dir("s3state-tf-ddb-cli"));
    command
        .args(["--dynamodb-table", table])
        .args(["--dynamodb-endpoint-url", moto_endpoint()]);
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Terraform waits, then polls, while a state and its digest disagree: a plan that fails on
/// the digest takes at least this long, and one that does not is well under it.
const DIGEST_WAIT: Duration = Duration::from_secs(8);

const CONFIG: &str = r#"
resource "terraform_data" "example" {
  input = { name = "hello" }
}
output "greeting" {
  value = "hello from terraform"
}
"#;

/// Starts `terraform apply` and returns once Terraform's lock item is in the table.
async fn start_paused_apply(terraform: &Workdir, bucket: &str, table: &str) -> Child {
    terraform
        .spawn_apply_until("lock item", || async {
            lock_item(table, bucket).await.is_some()
        })
        .await
}

/// The state Terraform wrote with an output added and the serial bumped, for a push.
fn derived_from(terraform_wrote: &[u8], output: &str) -> Vec<u8> {
    let mut state: serde_json::Value = serde_json::from_slice(terraform_wrote).unwrap();
    state["serial"] = (state["serial"].as_u64().unwrap() + 1).into();
    state["outputs"][output] = serde_json::json!({"value": "pushed by s3state", "type": "string"});
    serde_json::to_vec_pretty(&state).unwrap()
}

/// A push while Terraform's apply holds the lock item: exit 4, naming Terraform's lock.
fn assert_push_refused(mut s3state: assert_cmd::Command, file: &Path, holder: &serde_json::Value) {
    let output = s3state.arg("push").arg(file).output().unwrap();
    terraform::assert_push_names_the_lock(&output, holder, "1.15.5");
}

#[tokio::test]
async fn s3state_push_exits_4_naming_terraform_while_a_terraform_apply_holds_the_lock_item() {
    let (bucket, table) = (common::bucket(true).await, table().await);
    // dynamodb_table alone: Terraform's lock is only the DynamoDB item, no .tflock object.
    let terraform = workdir(&bucket, &table, Locks::TableOnly, PAUSING_CONFIG);
    let release = terraform.dir.join("release");
    std::fs::write(&release, "").unwrap();
    terraform.apply(&[]);
    std::fs::remove_file(&release).unwrap();
    let terraform_wrote = common::get_raw(&bucket, KEY).await;
    let digest = digest_item(&table, &bucket).await;
    assert_eq!(digest, Some(md5_hex(&terraform_wrote)));
    let versions = common::version_count(&bucket, KEY).await;

    let mut apply = start_paused_apply(&terraform, &bucket, &table).await;
    let holder = lock_item(&table, &bucket).await.unwrap();
    assert_eq!(holder["Operation"], "OperationTypeApply");
    assert!(
        !common::object_exists(&bucket, &format!("{KEY}.tflock")).await,
        "Terraform took no lock object: only the table can exclude us"
    );
    let file = common::temp_dir("s3state-tf-ddb-push").join("state.json");
    std::fs::write(&file, derived_from(&terraform_wrote, "during_apply")).unwrap();

    // Through the backend block (--chdir) and through the table flags.
    assert_push_refused(s3state_in(&terraform), &file, &holder);
    assert_push_refused(s3state_with_flags(&bucket, &table), &file, &holder);

    // Nothing was written, and our failed attempts left no lock object behind.
    assert_eq!(common::get_raw(&bucket, KEY).await, terraform_wrote);
    assert_eq!(common::version_count(&bucket, KEY).await, versions);
    assert_eq!(digest_item(&table, &bucket).await, digest);
    assert!(
        !common::object_exists(&bucket, &format!("{KEY}.tflock")).await,
        "the refused push left its .tflock behind"
    );
    assert_eq!(lock_item(&table, &bucket).await, Some(holder));

    std::fs::write(&release, "").unwrap();
    assert!(apply.wait().unwrap().success());
    assert!(lock_item(&table, &bucket).await.is_none());
    let after = common::get_raw(&bucket, KEY).await;
    assert_eq!(digest_item(&table, &bucket).await, Some(md5_hex(&after)));
}

#[tokio::test]
async fn terraform_plan_fails_showing_our_lock_while_s3state_lock_holds_it_and_works_after_unlock()
{
    let (bucket, table) = (common::bucket(true).await, table().await);
    let terraform = workdir(&bucket, &table, Locks::TableOnly, CONFIG);
    terraform.apply(&[]);

    let locked = s3state_in(&terraform)
        .args([
            "lock",
            "--operation",
            "OperationTypeApply",
            "--info",
            "s3state holds this",
        ])
        .output()
        .unwrap();
    assert!(locked.status.success(), "{}", text(&locked.stderr));
    let id = text(&locked.stdout).trim().to_owned();
    let ours = lock_item(&table, &bucket)
        .await
        .expect("s3state lock took the lock item");
    assert_eq!(ours["ID"], id.as_str());
    let who = ours["Who"].as_str().unwrap().to_owned();
    assert!(!who.is_empty());

    let refused = plan_unlocked(&terraform);
    let output = format!("{}{}", text(&refused.stdout), text(&refused.stderr));
    assert!(!refused.status.success(), "{output}");
    assert!(
        output.contains("Error acquiring the state lock")
            && output.contains(&id)
            && output.contains(&who)
            && output.contains("s3state holds this"),
        "Terraform shows our lock: {output}"
    );
    assert_eq!(
        lock_item(&table, &bucket).await.map(|l| l["ID"].clone()),
        Some(serde_json::Value::from(id.as_str())),
        "Terraform left our lock alone"
    );

    s3state_in(&terraform)
        .args(["unlock", &id])
        .assert()
        .success()
        .stderr(predicates::str::contains("Released lock"));
    assert!(lock_item(&table, &bucket).await.is_none());
    let plan = plan_unlocked(&terraform);
    assert!(plan.status.success(), "{}", text(&plan.stderr));
}

#[tokio::test]
async fn terraform_plan_succeeds_after_s3state_push_and_library_update_because_the_digest_matches()
{
    let (bucket, table) = (common::bucket(true).await, table().await);
    let terraform = workdir(&bucket, &table, Locks::TableAndLockfile, CONFIG);
    terraform.apply(&[]);

    // A push through the backend block.
    let file = common::temp_dir("s3state-tf-ddb-push").join("state.json");
    std::fs::write(
        &file,
        derived_from(&common::get_raw(&bucket, KEY).await, "pushed"),
    )
    .unwrap();
    terraform::assert_pushes(s3state_in(&terraform), &file);
    let body = common::get_raw(&bucket, KEY).await;
    assert_eq!(digest_item(&table, &bucket).await, Some(md5_hex(&body)));
    assert_plan_does_not_wait(&terraform);
    assert_eq!(
        terraform.pull()["outputs"]["pushed"]["value"],
        "pushed by s3state"
    );

    // An update through the library.
    let manager = manager(&bucket, &table).await;
    manager
        .update(common::set_output("updated", "by the library"))
        .await
        .unwrap();
    let body = common::get_raw(&bucket, KEY).await;
    assert_eq!(digest_item(&table, &bucket).await, Some(md5_hex(&body)));
    assert_plan_does_not_wait(&terraform);
    let pulled = terraform.pull();
    assert_eq!(pulled["outputs"]["updated"]["value"], "by the library");
    assert_eq!(
        pulled["serial"].as_u64().unwrap(),
        manager.state_snapshot_meta().unwrap().serial
    );

    // The control: a write that does not keep the digest breaks Terraform, as the samples
    // record, and `s3state digest repair` mends it.
    common::put_raw(&bucket, KEY, &derived_from(&body, "raw")).await;
    let broken = common::get_raw(&bucket, KEY).await;
    let refused = plan_unlocked(&terraform);
    let output = format!("{}{}", text(&refused.stdout), text(&refused.stderr));
    assert!(!refused.status.success(), "{output}");
    assert!(
        output.contains("does not have the expected content") && output.contains(&md5_hex(&broken)),
        "{output}"
    );
    s3state_in(&terraform)
        .args(["digest", "repair"])
        .assert()
        .success()
        .stderr(predicates::str::contains(md5_hex(&broken)));
    let plan = plan_unlocked(&terraform);
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    // Terraform can write again, and keeps the digest itself.
    terraform.apply(&[]);
    let body = common::get_raw(&bucket, KEY).await;
    assert_eq!(digest_item(&table, &bucket).await, Some(md5_hex(&body)));
}

#[tokio::test]
async fn after_terraform_applies_s3state_pull_digest_show_and_refresh_see_a_matching_digest() {
    let (bucket, table) = (common::bucket(true).await, table().await);
    let terraform = workdir(&bucket, &table, Locks::TableAndLockfile, CONFIG);
    terraform.apply(&[]);
    let body = common::get_raw(&bucket, KEY).await;
    let md5 = md5_hex(&body);
    assert_eq!(digest_item(&table, &bucket).await, Some(md5.clone()));

    // `s3state pull` through the backend block (--chdir with dynamodb_table): the exact body.
    let pulled = s3state_in(&terraform).arg("pull").output().unwrap();
    assert!(pulled.status.success(), "{}", text(&pulled.stderr));
    assert_eq!(pulled.stdout, body);

    // `s3state digest show`, through the block and through the flags.
    for mut s3state in [s3state_in(&terraform), s3state_with_flags(&bucket, &table)] {
        let shown = s3state.args(["digest", "show"]).output().unwrap();
        assert!(shown.status.success(), "{}", text(&shown.stderr));
        let stdout = text(&shown.stdout);
        assert_eq!(
            stdout,
            format!("stored:  {md5}\ncurrent: {md5}\n"),
            "{}",
            text(&shown.stderr)
        );
    }

    // The library's refresh: no DigestMismatch, and Terraform's outputs.
    let manager = manager(&bucket, &table).await;
    manager.refresh_state().await.unwrap();
    let outputs = manager.root_output_values().await.unwrap();
    assert_eq!(outputs["greeting"].to_value(), "hello from terraform");
    let meta = manager.state_snapshot_meta().unwrap();
    assert_eq!(meta.serial, terraform.pull()["serial"].as_u64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_the_table_is_excluded_by_terraforms_lock_item_and_terraform_reads_what_it_wrote()
 {
    let (bucket, table) = (common::bucket(true).await, table().await);
    // The gateway serves `demo/terraform.tfstate` as `/terraform.tfstate`: the state this
    // Terraform uses, locking only through the table.
    let mut config = gateway::config(&bucket);
    config.s3.key_prefix = "demo".into();
    config.s3.dynamodb_table = Some(table.clone());
    config.s3.dynamodb_client = Some(dynamodb());
    let gateway = gateway::start_with(config).await;
    let name = "/terraform.tfstate";
    let writer = gateway::WRITER;

    let terraform = workdir(&bucket, &table, Locks::TableOnly, PAUSING_CONFIG);
    let mut apply = start_paused_apply(&terraform, &bucket, &table).await;
    let holder = lock_item(&table, &bucket).await.unwrap();
    let lock = gateway::send(
        gateway.addr,
        "LOCK",
        name,
        Some(writer),
        &gateway::lock_body("0b1c2d3e-0000-4000-8000-00000000000c", "ci@runner"),
    )
    .await;
    assert_eq!(lock.status, 423, "{}", lock.text());
    assert_eq!(lock.json()["ID"], holder["ID"], "names Terraform's lock");
    let state = gateway::state_body("99999999-2222-3333-4444-555555555555", 7, 7);
    let write = gateway::send(gateway.addr, "POST", name, Some(writer), &state).await;
    assert_eq!(write.status, 423, "{}", write.text());
    std::fs::write(terraform.dir.join("release"), "").unwrap();
    assert!(apply.wait().unwrap().success(), "terraform apply failed");

    // Terraform's state, read through the gateway (which compared Terraform's digest), with an
    // output added and the serial bumped, written back through the gateway without a lock.
    let read = gateway::send(gateway.addr, "GET", name, Some(writer), b"").await;
    assert_eq!(read.status, 200, "{}", read.text());
    let derived = derived_from(&read.body, "from_gateway");
    let write = gateway::send(gateway.addr, "POST", name, Some(writer), &derived).await;
    assert_eq!(write.status, 200, "{}", write.text());
    assert_eq!(digest_item(&table, &bucket).await, Some(md5_hex(&derived)));

    // Terraform compares that digest (a mismatch fails the command) and reads the write.
    let outputs = terraform.ok(&["output", "-json"]);
    assert!(outputs.contains("pushed by s3state"), "{outputs}");
}
