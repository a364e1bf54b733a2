//! Encryption at rest through the gateway (issue 24): with `[encryption]`, states are stored
//! as OpenTofu's envelope while Terraform's `http` backend sees plaintext; the stored object
//! decrypts with the independent implementation; `enforced` never stores plaintext and
//! refuses to serve a plaintext state.

use crate::common;
use crate::common::gateway;

use gateway::{WRITER, Workdir, http_backend, key, send};
use s3state::encryption::inspect;

const PASSPHRASE: &str = "gateway-at-rest-passphrase";

const CONFIG: &str = r#"
resource "terraform_data" "example" {
  input = { name = "encrypted at rest" }
}
output "greeting" {
  value = "hello through an encrypting gateway"
}
"#;

/// The gateway's configuration, its `[encryption]` section written in TOML as an operator
/// writes it.
fn encrypting_config(bucket: &str, enforced: bool) -> s3state::server::GatewayConfig {
    let toml = format!(
        r#"
[s3]
bucket = "{bucket}"

[encryption.key_provider.pbkdf2.main]
passphrase = "{PASSPHRASE}"

[encryption.method.aes_gcm.main]
keys = "key_provider.pbkdf2.main"

[encryption.state]
method = "method.aes_gcm.main"
enforced = {enforced}
"#
    );
    let parsed =
        s3state::server::GatewayConfig::from_str_at(&toml, std::path::Path::new("gateway.toml"))
            .unwrap();
    assert!(
        !format!("{parsed:?}").contains(PASSPHRASE),
        "the configuration's Debug hides the passphrase"
    );
    s3state::server::GatewayConfig {
        encryption: parsed.encryption,
        ..gateway::config(bucket)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terraform_through_an_encrypting_gateway_sees_plaintext_and_s3_holds_envelopes() {
    let bucket = common::bucket(true).await;
    let gateway = gateway::start_with(encrypting_config(&bucket, true)).await;
    let name = "app/at-rest.tfstate";
    let terraform = Workdir::new(&http_backend(&gateway, name, WRITER, ""), CONFIG).await;
    terraform.apply(&[]).await;

    let stored = common::get_raw(&bucket, &key(name)).await;
    let envelope = inspect(&stored).expect("stored as OpenTofu's envelope");
    assert!(!String::from_utf8_lossy(&stored).contains("encrypted at rest"));
    // The independent implementation decrypts what the gateway stored (OpenTofu defaults:
    // 600,000 iterations of sha512).
    let plaintext = common::opentofu_envelope(
        &["decrypt", "--meta-key", "key_provider.pbkdf2.main"],
        &stored,
        PASSPHRASE,
    );
    let state: serde_json::Value = serde_json::from_slice(&plaintext).unwrap();
    assert_eq!(
        state["outputs"]["greeting"]["value"],
        "hello through an encrypting gateway"
    );
    assert_eq!(state["serial"].as_u64(), envelope.serial);

    // Terraform reads plaintext back: no change planned, the outputs and the pulled state.
    let plan = terraform
        .run(&["plan", "-detailed-exitcode", "-input=false", "-no-color"])
        .await;
    assert_eq!(
        plan.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&plan.stdout)
    );
    let pulled = terraform.pull().await;
    assert_eq!(pulled["lineage"], state["lineage"]);
    assert_eq!(
        pulled["outputs"]["greeting"]["value"],
        "hello through an encrypting gateway"
    );
    gateway.stop().await;
}

/// With `enforced`, a plaintext state in the bucket is refused (not served, not replaced),
/// and nothing the gateway stores is plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_enforcing_gateway_refuses_a_plaintext_state_and_writes_nothing() {
    let bucket = common::bucket(true).await;
    let gateway = gateway::start_with(encrypting_config(&bucket, true)).await;
    let name = "app/plain.tfstate";
    common::put_raw(&bucket, &key(name), common::TERRAFORM_STATE).await;
    let reply = send(gateway.addr, "GET", &format!("/{name}"), Some(WRITER), b"").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(
        reply.text().contains("enforces encryption"),
        "{}",
        reply.text()
    );
    let mut next: serde_json::Value = serde_json::from_slice(common::TERRAFORM_STATE).unwrap();
    next["serial"] = serde_json::json!(next["serial"].as_u64().unwrap() + 1);
    let reply = send(
        gateway.addr,
        "POST",
        &format!("/{name}"),
        Some(WRITER),
        &serde_json::to_vec(&next).unwrap(),
    )
    .await;
    assert!(reply.status >= 400, "{} {}", reply.status, reply.text());
    assert_eq!(common::version_count(&bucket, &key(name)).await, 1);
    assert_eq!(
        common::get_raw(&bucket, &key(name)).await,
        common::TERRAFORM_STATE
    );
    gateway.stop().await;
}

/// The web UI of an encrypting gateway reads every state through the library, so its pages
/// show the plaintext state (history with resource counts, outputs) although S3 holds only
/// envelopes; before, it parsed the stored bytes itself and showed nothing of them. From the
/// merge of the web UI with encryption at rest (issues 24 and 26).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_web_ui_of_an_encrypting_gateway_shows_the_plaintext_state() {
    use super::ui::{NAME, fixture_state, page};
    let bucket = common::bucket(true).await;
    let gateway = gateway::start_with(encrypting_config(&bucket, true)).await;
    for version in [1, 2] {
        let reply = send(
            gateway.addr,
            "POST",
            &format!("/{NAME}"),
            Some(WRITER),
            &fixture_state(version),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let stored = common::get_raw(&bucket, &key(NAME)).await;
    assert!(inspect(&stored).is_some(), "S3 holds an envelope");

    let history = page(&gateway, &format!("/ui/state/{NAME}"), gateway::ADMIN, 200).await;
    // The page's text, without its markup.
    let text: String = history
        .split('<')
        .map(|part| part.split_once('>').map_or(part, |(_, text)| text))
        .collect();
    assert!(
        text.contains("+1 ~1 -0") && text.contains("outputs (3)"),
        "the timeline diffs the decrypted versions: {text}"
    );
    let outputs = page(
        &gateway,
        &format!("/ui/outputs/{NAME}"),
        gateway::ADMIN,
        200,
    )
    .await;
    assert!(
        outputs.contains("db-1.example.internal:5432"),
        "the decrypted outputs: {outputs}"
    );
    for shown in [&history, &outputs] {
        assert!(!shown.contains("encrypted_data") && !shown.contains(PASSPHRASE));
        assert!(
            !shown.contains("out-SECRET"),
            "sensitive outputs stay masked"
        );
    }
    gateway.stop().await;
}

/// A mistake on a secret's line of the gateway's TOML file (an unclosed string, a key given
/// twice) is reported by line and column, without quoting the line: the error is printed and
/// logged, and the line holds a passphrase. From the adversarial review of state encryption.
#[test]
fn a_configuration_error_never_quotes_a_passphrase() {
    for (mistake, line) in [
        (
            format!("passphrase = \"{PASSPHRASE}\npassphrase = \"other\""),
            5,
        ),
        (
            format!("passphrase = \"{PASSPHRASE}\"\npassphrase = \"{PASSPHRASE}\""),
            6,
        ),
        (format!("passphrase = \"{PASSPHRASE}\" iterations = 1"), 5),
    ] {
        let toml =
            format!("[s3]\nbucket = \"b\"\n\n[encryption.key_provider.pbkdf2.main]\n{mistake}\n");
        let error = s3state::server::GatewayConfig::from_str_at(
            &toml,
            std::path::Path::new("gateway.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(!error.contains(PASSPHRASE), "{error}");
        assert!(error.contains(&format!("line {line},")), "{error}");
    }
}
