//! Secrets stay secret: sensitive output values, SSE-C keys and credentials never appear in
//! `Debug`, `Display`, errors, logs or CLI output unless explicitly asked for.

use crate::common;

use base64::Engine as _;
use s3state::{OutputValue, S3Builder, State};

const SECRET_VALUE: &str = "s3cr3t-output-value";
const SECRET_KEY: &str = "supersecret-access-key-value";
/// The access key these tests sign with: a store that checks signatures (SeaweedFS) knows it
/// with `SECRET_KEY` (`seaweedfs/start.sh`); LocalStack accepts any.
const ACCESS_KEY: &str = "s3state-secrets";

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
            "terraform {{\n  backend \"s3\" {{\n    bucket = \"{bucket}\"\n    key = \"{key}\"\n    region = \"us-east-1\"\n    endpoints = {{ s3 = \"{}\" }}\n    use_path_style = true\n    access_key = \"{ACCESS_KEY}\"\n    secret_key = \"{SECRET_KEY}\"\n  }}\n}}\n",
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

const SESSION_TOKEN: &str = "sessiontoken-never-shown-0123456789";

#[test]
fn a_session_token_never_appears_in_the_builders_debug_output_beside_a_role() {
    let builder = S3Builder::new()
        .with_bucket("b")
        .with_key("k")
        .with_static_credentials("AKIDEXAMPLE", SECRET_KEY)
        .with_session_token(SESSION_TOKEN)
        .with_assume_role(s3state::AssumeRole::new(
            "arn:aws:iam::123456789012:role/terraform",
        ));
    let rendered = format!("{builder:?} {builder:#?}");
    for secret in [SECRET_KEY, SESSION_TOKEN] {
        assert!(!rendered.contains(secret), "{rendered}");
    }
    assert!(rendered.contains("role/terraform"), "the role is shown");
}

#[tokio::test]
async fn a_built_backend_shows_no_key_token_or_sse_c_key_in_debug_output() {
    let bucket = common::bucket(true).await;
    let sse_key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let mut builder = S3Builder::new()
        .with_bucket(&bucket)
        .with_key("secrets/built.tfstate")
        .with_region("us-east-1")
        .with_endpoint_url(common::endpoint())
        .with_path_style(true)
        .with_static_credentials(ACCESS_KEY, SECRET_KEY)
        .with_sse_customer_key(sse_key.clone());
    // A store that checks session tokens (SeaweedFS) refuses a made-up one; the builder's
    // Debug output is checked without a token there (and with one on LocalStack, and in
    // `a_session_token_never_appears_in_the_builders_debug_output_beside_a_role`).
    if common::store_facts().any_session_token {
        builder = builder.with_session_token(SESSION_TOKEN);
    }
    let backend = builder.build_backend().await.unwrap();
    let rendered = format!("{backend:?} {backend:#?}");
    for secret in [SECRET_KEY, SESSION_TOKEN, sse_key.as_str()] {
        assert!(!rendered.contains(secret), "printed {secret}: {rendered}");
    }
    assert!(rendered.contains(&bucket), "{rendered}");
}

#[tokio::test]
async fn debug_and_trace_logging_never_show_the_secret_key_session_token_or_sse_c_key() {
    let bucket = common::bucket(true).await;
    let key = "secrets/logged.tfstate";
    // The key's bytes spell a recognisable text, so its raw form is searched for too.
    let raw_key = "sse-c-key-never-shown-32-bytes!!";
    let sse_key = base64::engine::general_purpose::STANDARD.encode(raw_key);
    let dir = common::temp_dir("s3state-secrets-logged");
    // What the store under test cannot take is left out, and checked on LocalStack: a made-up
    // session token where the store checks tokens (SeaweedFS), SSE-C where the store's answer
    // to a HEAD under SSE-C cannot be read (SeaweedFS 4.48; see `common::StoreFacts`).
    let facts = common::store_facts();
    let token = if facts.any_session_token {
        format!("    token = \"{SESSION_TOKEN}\"\n")
    } else {
        String::new()
    };
    let sse_c = if facts.sse_c_head {
        format!("    sse_customer_key = \"{sse_key}\"\n")
    } else {
        String::new()
    };
    std::fs::write(
        dir.join("backend.tf"),
        format!(
            "terraform {{\n  backend \"s3\" {{\n    bucket = \"{bucket}\"\n    key = \"{key}\"\n    region = \"us-east-1\"\n    endpoints = {{ s3 = \"{}\" }}\n    use_path_style = true\n    access_key = \"{ACCESS_KEY}\"\n    secret_key = \"{SECRET_KEY}\"\n{token}{sse_c}  }}\n}}\n",
            common::endpoint()
        ),
    )
    .unwrap();
    let state = dir.join("state.json");
    std::fs::write(&state, state_with_a_secret().to_bytes()).unwrap();

    let runs: [(&[&str], Option<&str>); 6] = [
        (&["push", "state.json"], Some("debug")),
        (&["pull"], Some("debug")),
        // The SDK's signer logs whole requests, headers included, at trace level.
        (&["meta"], Some("trace")),
        (&["-vv", "meta"], None),
        (&["-vv", "outputs", "--json"], None),
        (&["-v", "history"], None),
    ];
    for (args, rust_log) in runs {
        let mut command = common::s3state_binary();
        command.current_dir(&dir).args(args);
        if let Some(level) = rust_log {
            command.env("RUST_LOG", level);
        }
        let output = command.output().unwrap();
        let everything = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{args:?}: {everything}");
        // (`pull` prints the state itself, sensitive outputs included, as Terraform does.)
        for secret in [SECRET_KEY, SESSION_TOKEN, &sse_key, raw_key] {
            assert!(!everything.contains(secret), "{args:?} printed {secret}");
        }
        assert!(everything.contains("DEBUG"), "{args:?}: the debug log ran");
    }
}

#[test]
fn a_malformed_sse_c_key_or_a_lone_token_is_refused_without_showing_it() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // 31 bytes: right alphabet, wrong length.
    let short_key = base64::engine::general_purpose::STANDARD.encode([9u8; 31]);
    let builders = [
        S3Builder::new().with_sse_customer_key(short_key.clone()),
        S3Builder::new().with_session_token(SESSION_TOKEN),
    ];
    for builder in builders {
        let err = runtime
            .block_on(builder.with_bucket("b").with_key("k").build_backend())
            .unwrap_err();
        let rendered = format!("{err} {err:?}");
        assert!(
            matches!(err, s3state::Error::InvalidConfig { .. }),
            "{rendered}"
        );
        for secret in [short_key.as_str(), SESSION_TOKEN] {
            assert!(!rendered.contains(secret), "{rendered}");
        }
    }
}

/// OpenTofu encryption passphrases (issue 24) never appear: not at trace level, not in the
/// error for a wrong passphrase, a passphrase too short, or an HCL configuration that does
/// not parse (on the passphrase's own line), nor in `Debug` of the configuration.
#[tokio::test]
async fn opentofu_encryption_passphrases_never_appear_in_output_logs_or_errors() {
    let bucket = common::bucket(true).await;
    let key = "secrets/encrypted.tfstate";
    let passphrase = "tofu-passphrase-never-shown";
    let config = |passphrase: &str| {
        format!(
            "key_provider \"pbkdf2\" \"k\" {{\n  passphrase = \"{passphrase}\"\n  iterations = 200000\n}}\nmethod \"aes_gcm\" \"m\" {{\n  keys = key_provider.pbkdf2.k\n}}\nstate {{\n  method = method.aes_gcm.m\n}}\n"
        )
    };
    let dir = common::temp_dir("s3state-secrets-tofu");
    std::fs::write(dir.join("state.json"), state_with_a_secret().to_bytes()).unwrap();
    let s3state = |tf_encryption: &str, args: &[&str]| {
        let output = common::s3state_on(&bucket, key, dir.clone())
            .env("TF_ENCRYPTION", tf_encryption)
            .env("RUST_LOG", "trace")
            .args(args)
            .output()
            .unwrap();
        let everything = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), everything)
    };
    let right = config(passphrase);
    for args in [
        &["push", "state.json"][..],
        &["meta"],
        &["outputs", "--json"],
        &["history", "--details"],
    ] {
        let (success, everything) = s3state(&right, args);
        assert!(success, "{args:?}: {everything}");
        assert!(
            !everything.contains(passphrase),
            "{args:?} printed the passphrase"
        );
    }
    let wrong = "another-passphrase-never-shown";
    let short = "short-secret";
    let unparsable = format!(
        "{}\nkey_provider \"pbkdf2\" {{ passphrase = \"{wrong}\" ",
        config(wrong)
    );
    for (config, secret) in [
        (config(wrong), wrong),
        (config(short), short),
        (unparsable, wrong),
    ] {
        let (success, everything) = s3state(&config, &["meta"]);
        assert!(!success, "{everything}");
        assert!(everything.contains("error"), "{everything}");
        assert!(
            !everything.contains(secret),
            "printed {secret}: {everything}"
        );
        assert!(!everything.contains(passphrase), "{everything}");
    }
    let parsed = s3state::encryption::EncryptionConfig::parse(&right).unwrap();
    let built = s3state::encryption::StateEncryption::from_config(&parsed).unwrap();
    let rendered = format!("{parsed:?} {built:?}");
    assert!(!rendered.contains(passphrase), "{rendered}");
}
