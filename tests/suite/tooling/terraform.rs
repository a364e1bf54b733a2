//! `s3state list`, `rm` and `mv` on states a real Terraform 1.15.5 wrote, read back by that
//! Terraform: modules, `count`, `for_each` keys with quotes and `<>&`, and a data source, all
//! from `terraform_data` resources and a local module (no provider download).

use crate::common;
use crate::common::terraform;

const MODULE: &str = r#"
resource "terraform_data" "inner" {
  input = { pw = sensitive("x"), n = 1 }
}
"#;

/// Everything `terraform state list` can print: a data source, a plain resource, `count`,
/// `for_each` with awkward keys, and modules with and without keys.
const FULL: &str = r#"
resource "terraform_data" "single" {
  input = "s"
}
resource "terraform_data" "counted" {
  count = 2
  input = count.index
}
resource "terraform_data" "each" {
  for_each = toset(["a\"b", "<&>", "plain"])
  input    = sensitive(each.key)
}
data "terraform_remote_state" "r" {
  backend = "local"
  config  = { path = "empty.tfstate" }
}
module "m" {
  source   = "./mod"
  for_each = toset(["k<1>"])
}
module "c" {
  source = "./mod"
}
"#;

/// A Terraform working directory with the local module and an empty local state, whose
/// backend is `key` in `bucket`.
struct Workdir {
    terraform: terraform::Workdir,
    bucket: String,
    key: String,
}

impl std::ops::Deref for Workdir {
    type Target = terraform::Workdir;

    fn deref(&self) -> &terraform::Workdir {
        &self.terraform
    }
}

impl Workdir {
    fn new(bucket: &str, key: &str, body: &str) -> Workdir {
        let terraform = terraform::Workdir::empty("s3state-tooling-tf");
        let dir = &terraform.dir;
        std::fs::create_dir_all(dir.join("mod")).unwrap();
        std::fs::write(dir.join("mod/main.tf"), MODULE).unwrap();
        std::fs::write(
            dir.join("empty.tfstate"),
            r#"{"version":4,"terraform_version":"1.15.5","serial":1,"lineage":"e","outputs":{},"resources":[]}"#,
        )
        .unwrap();
        let workdir = Workdir {
            terraform,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        };
        workdir.configure(body);
        workdir.init();
        workdir
    }

    fn configure(&self, body: &str) {
        let backend = common::terraform_backend_block(&self.bucket, &self.key);
        self.terraform.configure(&backend, body);
    }

    fn state_list(&self) -> String {
        self.ok(&["state", "list"])
    }

    fn s3state(&self, args: &[&str]) -> String {
        let output = common::s3state_binary()
            .args(args)
            .current_dir(&self.dir)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        common::assert_success(&format!("s3state {args:?}"), &output);
        String::from_utf8(output.stdout).unwrap()
    }
}

#[tokio::test]
async fn s3state_list_and_show_match_terraform_and_terraform_no_longer_lists_what_s3state_removed()
{
    let bucket = common::bucket(true).await;
    let terraform = Workdir::new(&bucket, "a/terraform.tfstate", FULL);
    terraform.apply(&[]);
    let listed = terraform.state_list();
    assert_eq!(listed.lines().count(), 9, "{listed}");
    // s3state reads the backend block of the same directory.
    assert_eq!(terraform.s3state(&["list"]), listed);
    assert_eq!(
        terraform.s3state(&["list", "module.m"]),
        terraform.ok(&["state", "list", "module.m"])
    );
    assert_eq!(
        terraform.s3state(&["list", "terraform_data.each"]),
        terraform.ok(&["state", "list", "terraform_data.each"])
    );

    // show: the instance Terraform shows, with the same attributes masked.
    for address in listed.lines() {
        let shown = terraform.ok(&["state", "show", "-no-color", address]);
        assert!(shown.starts_with(&format!("# {address}:\n")), "{shown}");
        let ours: serde_json::Value =
            serde_json::from_str(&terraform.s3state(&["show", address])).unwrap();
        for line in shown.lines() {
            let Some((name, value)) = line.strip_prefix("    ").and_then(|l| l.split_once(" = "))
            else {
                continue;
            };
            let name = name.trim_end();
            if name.starts_with(' ') {
                continue; // nested
            }
            if value == "(sensitive value)" {
                assert_eq!(ours[name], "(sensitive value)", "{address}.{name}");
            } else if name == "id" {
                assert_eq!(format!("\"{}\"", ours["id"].as_str().unwrap()), value);
                assert_eq!(
                    terraform.s3state(&["show", &format!("{address}.id")]),
                    format!("{}\n", value.trim_matches('"'))
                );
            }
        }
    }
    let inner = "module.c.terraform_data.inner";
    assert!(
        terraform
            .ok(&["state", "show", "-no-color", inner])
            .contains("pw = (sensitive value)")
    );
    assert_eq!(
        terraform.s3state(&["show", &format!("{inner}.input.value.pw")]),
        "(sensitive value)\n"
    );
    assert_eq!(
        terraform.s3state(&[
            "show",
            &format!("{inner}.input.value.pw"),
            "--show-sensitive"
        ]),
        "x\n"
    );

    terraform.s3state(&["rm", r#"terraform_data.each["<&>"]"#, r#"module.m["k<1>"]"#]);
    let after = terraform.state_list();
    let expected: String = listed
        .lines()
        .filter(|line| !line.contains("<&>") && !line.starts_with("module.m"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(after, expected);
    assert_eq!(terraform.s3state(&["list"]), after);
}

#[tokio::test]
async fn after_mv_across_two_states_terraform_lists_the_move_in_both_and_plans_no_changes() {
    let bucket = common::bucket(true).await;
    let source = Workdir::new(&bucket, "source/terraform.tfstate", FULL);
    source.apply(&[]);
    let destination = Workdir::new(&bucket, "destination/terraform.tfstate", "");
    let before = source.state_list();

    let to = ["--to-key", "destination/terraform.tfstate"];
    source.s3state(&[&["mv"][..], &to, &["module.c", "module.c"]].concat());
    source.s3state(
        &[
            &["mv"][..],
            &to,
            &[
                r#"terraform_data.each["a\"b"]"#,
                r#"terraform_data.moved["a\"b"]"#,
            ],
        ]
        .concat(),
    );

    assert_eq!(
        destination.state_list(),
        "terraform_data.moved[\"a\\\"b\"]\nmodule.c.terraform_data.inner\n"
    );
    let expected: String = before
        .lines()
        .filter(|line| !line.starts_with("module.c.") && !line.contains(r#"a\"b"#))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(source.state_list(), expected);

    // With the configurations updated to match, Terraform plans no change in either.
    source.configure(
        &FULL
            .replace("module \"c\" {\n  source = \"./mod\"\n}\n", "")
            .replace(
                r#"toset(["a\"b", "<&>", "plain"])"#,
                r#"toset(["<&>", "plain"])"#,
            ),
    );
    destination.configure(
        r#"
resource "terraform_data" "moved" {
  for_each = toset(["a\"b"])
  input    = sensitive(each.key)
}
module "c" {
  source = "./mod"
}
"#,
    );
    for workdir in [&source, &destination] {
        workdir.init();
        let plan = workdir.run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"]);
        assert_eq!(
            plan.status.code(),
            Some(0),
            "changes planned:\n{}\n{}",
            String::from_utf8_lossy(&plan.stdout),
            String::from_utf8_lossy(&plan.stderr)
        );
    }
}
