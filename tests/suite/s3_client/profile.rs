//! Review of 4181f5a (environment credentials handed to aws-config directly): it picks what
//! aws-config's default chain picks, environment first, even over a profile named explicitly.
//! Terraform does not: its S3 backend (aws-sdk-go-base, on aws-sdk-go-v2) uses a `profile`
//! given in the backend block *instead of* `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, with the
//! warning "The Profile is now used instead of the environment variable credentials". The same
//! block can therefore act as two different principals under Terraform and s3state.

use crate::common;

use predicates::prelude::*;

const KEY: &str = "review-profile/terraform.tfstate";

/// From the review of 4181f5a (environment credentials handed to aws-config).
#[tokio::test]
async fn a_profile_in_the_backend_block_is_used_over_keys_in_the_environment_as_terraform_does() {
    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, KEY, common::TERRAFORM_STATE).await;
    let dir = common::temp_dir("s3state-review-profile");
    let (config, mark) = common::profile_with_marked_credential_process(&dir);
    let block = format!(
        "terraform {{\n  backend \"s3\" {{\n    bucket = \"{bucket}\"\n    key = \"{KEY}\"\n    region = \"us-east-1\"\n    endpoints = {{ s3 = \"{endpoint}\" }}\n    use_path_style = true\n    profile = \"marked\"\n    use_lockfile = true\n  }}\n}}\n",
        endpoint = common::endpoint()
    );
    std::fs::write(dir.join("main.tf"), block).unwrap();
    common::s3state_binary()
        .current_dir(&dir)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_CONFIG_FILE", &config)
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.join("no-credentials-file"),
        )
        .env("NO_COLOR", "1")
        .arg("pull")
        .assert()
        .success()
        .stdout(predicate::eq(common::TERRAFORM_STATE));
    assert!(
        mark.exists(),
        "the block names profile `marked`, which Terraform would use; s3state used the \
         environment's keys instead"
    );
}
