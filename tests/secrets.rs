//! Secrets stay secret: sensitive output values, SSE-C keys and credentials never appear in
//! `Debug`, `Display`, errors, logs or CLI output unless explicitly asked for.

mod common;

use base64::Engine as _;
use s3state::{OutputValue, S3Builder, State};

const SECRET_VALUE: &str = "s3cr3t-output-value";
const SECRET_KEY: &str = "supersecret-access-key-value";

fn state_with_a_secret() -> State {
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state.outputs.insert(
        "password".into(),
        OutputValue::new(SECRET_VALUE).sensitive(),
    );
    state
        .outputs
        .insert("url".into(), OutputValue::new("https://example.com"));
    state
}

#[test]
fn sensitive_output_values_never_appear_in_debug_output() {
    let state = state_with_a_secret();
    for rendered in [
        format!("{state:?}"),
        format!("{state:#?}"),
        format!("{:?}", state.outputs["password"]),
    ] {
        assert!(!rendered.contains(SECRET_VALUE), "{rendered}");
        assert!(rendered.contains("<sensitive>"), "{rendered}");
    }
    assert!(
        format!("{:?}", state.outputs["url"]).contains("example.com"),
        "only sensitive values are hidden"
    );
}

#[test]
fn sse_c_keys_and_credentials_never_appear_in_debug_output() {
    let sse_key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let builder = S3Builder::new()
        .with_bucket("b")
        .with_key("k")
        .with_sse_customer_key(sse_key.clone())
        .with_static_credentials("AKIDEXAMPLE", SECRET_KEY);
    let rendered = format!("{builder:?} {builder:#?}");
    assert!(!rendered.contains(&sse_key), "{rendered}");
    assert!(!rendered.contains(SECRET_KEY), "{rendered}");
    let key = s3state::s3::CustomerKey::from_base64(&sse_key).unwrap();
    assert_eq!(format!("{key:?}"), "CustomerKey(<redacted>)");
}

#[tokio::test]
async fn the_cli_masks_sensitive_values_even_with_verbose_logging() {
    let bucket = common::bucket(true).await;
    let key = "secrets/terraform.tfstate";
    common::put_raw(&bucket, key, &state_with_a_secret().to_bytes()).await;
    let dir =
        std::env::temp_dir().join(format!("s3state-secrets-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("backend.tf"),
        format!(
            "terraform {{\n  backend \"s3\" {{\n    bucket = \"{bucket}\"\n    key = \"{key}\"\n    region = \"us-east-1\"\n    endpoints = {{ s3 = \"{}\" }}\n    use_path_style = true\n    access_key = \"test\"\n    secret_key = \"{SECRET_KEY}\"\n  }}\n}}\n",
            common::endpoint()
        ),
    )
    .unwrap();

    for args in [
        &["-vv", "outputs"][..],
        &["-vv", "outputs", "--json"],
        &["-vv", "outputs", "password"],
        &["-vv", "diff", "current"],
    ] {
        let mut command = common::s3state_binary();
        let output = command.current_dir(&dir).args(args).output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let everything = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            !everything.contains(SECRET_VALUE),
            "{args:?} printed the sensitive value"
        );
        assert!(
            !everything.contains(SECRET_KEY),
            "{args:?} printed the secret key"
        );
        assert!(
            everything.contains("s3state"),
            "{args:?}: the verbose log ran"
        );
    }
}
