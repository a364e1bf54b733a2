//! Adversarial review of the head-judged push (87e9567) against a real Terraform 1.15.5
//! (tests/terraform/install.sh): when Terraform writes over a state s3state wrote, its PUT
//! leaves no s3state metadata behind, so a push is judged on Terraform's body, not on the
//! serial s3state recorded before.

use crate::common;
use crate::common::terraform::Workdir;

use s3state::{Error, OutputValue, Refresher, State, Transient};

const KEY: &str = "review/terraform.tfstate";

const CONFIG: &str = r#"
variable "n" {
  type    = number
  default = 1
}
resource "terraform_data" "example" {
  input = var.n
}
output "n" {
  value = var.n
}
"#;

/// From the adversarial review of the head-judged push (87e9567), with a real Terraform.
#[tokio::test]
async fn a_push_after_terraform_wrote_over_an_s3state_write_is_judged_on_terraforms_state() {
    let bucket = common::bucket(true).await;
    let backend = common::terraform_backend_block(&bucket, KEY);
    let terraform = Workdir::new("s3state-review-push-tf", &backend, CONFIG);
    terraform.apply(&[]);

    // s3state writes (its serial and lineage go into the metadata)...
    let manager = common::manager(&bucket, KEY).await;
    manager
        .update(common::set_output("by_s3state", true))
        .await
        .unwrap();
    let ours = manager.state().unwrap();
    // ...then Terraform writes over it, twice (two applies, two serials).
    terraform.apply(&["-var", "n=2"]);
    terraform.apply(&["-var", "n=3"]);
    let head = common::head(&bucket, KEY).await;
    let left: Vec<_> = head
        .metadata()
        .into_iter()
        .flatten()
        .filter(|(name, _)| name.starts_with("s3state-"))
        .collect();
    assert!(
        left.is_empty(),
        "Terraform's PUT kept s3state metadata: {left:?}"
    );
    let terraform_wrote = common::get_raw(&bucket, KEY).await;
    let theirs = State::from_slice(&terraform_wrote).unwrap();
    assert!(theirs.serial > ours.serial + 1);

    // What s3state wrote, one serial newer than it was: older than Terraform's, refused.
    let mut stale = ours.clone();
    stale.serial += 1;
    let refused = common::manager(&bucket, KEY).await.push(stale, false).await;
    assert!(
        matches!(refused, Err(Error::SerialRegression { .. })),
        "{refused:?}"
    );
    // Terraform's own state: nothing to push, and the bytes are Terraform's still.
    let same = common::manager(&bucket, KEY)
        .await
        .push(theirs.clone(), false)
        .await
        .unwrap();
    assert!(!same.written);
    // Terraform's state with a change, one serial newer: written, and Terraform reads it.
    let mut next = theirs.clone();
    next.serial += 1;
    next.outputs
        .insert("pushed".into(), OutputValue::new(&"by s3state"));
    let pushed = common::manager(&bucket, KEY)
        .await
        .push(next, false)
        .await
        .unwrap();
    assert!(pushed.written);
    terraform.pull();
    let manager = common::manager(&bucket, KEY).await;
    manager.refresh_state().await.unwrap();
    assert!(manager.state().unwrap().outputs.contains_key("pushed"));
}
