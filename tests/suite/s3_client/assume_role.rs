//! `assume_role` against moto's STS, with LocalStack's S3: the role is really assumed (every S3
//! request is signed with the temporary key STS issued, with its session token), from the
//! library builder, the environment and a Terraform backend block; mistakes are typed errors
//! made before anything is written; secrets are never printed. Also the backend block's
//! `shared_config_files` and `shared_credentials_files`.
//!
//! Requests are seen by a small recording proxy in front of each server, which keeps the
//! signing key of every request and the bodies of STS's answers.

use crate::common;

use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use s3state::{AssumeRole, Error, Persister, Refresher, S3Builder, State, Transient};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ROLE: &str = "arn:aws:iam::123456789012:role/terraform-state";

use common::moto_endpoint;

/// One request as the recording proxy saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// The access key ID from the SigV4 `Authorization` header's `Credential=`.
    access_key: Option<String>,
    security_token: Option<String>,
    request_body: String,
    response_body: String,
}

/// Forwards every request to `upstream` and records it.
struct RecordingProxy {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingProxy {
    async fn start(upstream: &str) -> RecordingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client: Client<HttpConnector, Full<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let log = Arc::clone(&seen);
        let task = common::proxy::serve_http1(listener, move || {
            let (log, client, upstream) = (Arc::clone(&log), client.clone(), upstream.clone());
            hyper::service::service_fn(move |request| {
                forward(request, Arc::clone(&log), client.clone(), upstream.clone())
            })
        });
        RecordingProxy {
            endpoint,
            seen,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(
    request: Request<Incoming>,
    log: Arc<Mutex<Vec<Seen>>>,
    client: Client<HttpConnector, Full<bytes::Bytes>>,
    upstream: String,
) -> Result<Response<Full<bytes::Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let header = |name: &str| common::proxy::header_value(&parts.headers, name);
    let access_key = header("authorization").and_then(|auth| {
        let credential = auth.split("Credential=").nth(1)?;
        Some(credential.split('/').next()?.to_owned())
    });
    let mut seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        access_key,
        security_token: header("x-amz-security-token"),
        request_body: String::from_utf8_lossy(&body).into_owned(),
        response_body: String::new(),
    };
    parts.uri = format!(
        "{upstream}{}",
        parts.uri.path_and_query().map_or("/", |pq| pq.as_str())
    )
    .parse()?;
    let response = client
        .request(Request::from_parts(parts, Full::new(body)))
        .await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    seen.response_body = String::from_utf8_lossy(&body).into_owned();
    log.lock().unwrap().push(seen);
    Ok(Response::from_parts(parts, Full::new(body)))
}

/// The text between `<tag>` and `</tag>` in each STS answer.
fn xml_values(seen: &[Seen], tag: &str) -> Vec<String> {
    seen.iter()
        .filter_map(|s| {
            let start = s.response_body.find(&format!("<{tag}>"))? + tag.len() + 2;
            let end = s.response_body[start..].find(&format!("</{tag}>"))? + start;
            Some(s.response_body[start..end].to_owned())
        })
        .collect()
}

/// Asserts that STS issued credentials and that every S3 request was signed with one of the
/// issued keys and carried its session token: the role was used, not the base `test` key.
fn assert_signed_with_the_assumed_role(sts: &RecordingProxy, s3: &RecordingProxy) {
    let sts_seen = sts.seen();
    let issued_keys = xml_values(&sts_seen, "AccessKeyId");
    let issued_tokens = xml_values(&sts_seen, "SessionToken");
    assert!(!issued_keys.is_empty(), "STS issued nothing: {sts_seen:#?}");
    assert!(
        issued_keys.iter().all(|key| key.starts_with("ASIA")),
        "{issued_keys:?}"
    );
    // The base credentials asked STS; STS's requests are not signed with a role key.
    assert!(
        sts_seen
            .iter()
            .all(|s| s.access_key.as_deref() == Some("test")),
        "{sts_seen:#?}"
    );
    let s3_seen = s3.seen();
    assert!(!s3_seen.is_empty(), "no S3 request was made");
    for request in &s3_seen {
        let key = request.access_key.as_deref().unwrap_or("(unsigned)");
        assert!(
            issued_keys.iter().any(|issued| issued == key),
            "{} {} was signed with {key}, not with a key STS issued ({issued_keys:?})",
            request.method,
            request.path
        );
        let token = request.security_token.as_deref().unwrap_or_default();
        assert!(
            issued_tokens.iter().any(|issued| issued == token),
            "{} {} did not carry the role's session token",
            request.method,
            request.path
        );
    }
}

/// The parameters of the AssumeRole calls STS received (form-encoded).
fn assume_role_calls(sts: &RecordingProxy) -> Vec<String> {
    sts.seen()
        .into_iter()
        .filter(|s| s.request_body.contains("Action=AssumeRole"))
        .map(|s| s.request_body)
        .collect()
}

fn state_with_output(value: &str) -> State {
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state
        .outputs
        .insert("greeting".into(), s3state::OutputValue::new(value));
    state
}

/// A builder for `bucket`/`key` through the S3 proxy, with the base credentials `test`.
fn builder_through(s3: &RecordingProxy, bucket: &str, key: &str) -> S3Builder {
    S3Builder::new()
        .with_bucket(bucket)
        .with_key(key)
        .with_region("us-east-1")
        .with_endpoint_url(&s3.endpoint)
        .with_path_style(true)
        .with_static_credentials("test", "test")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_assumes_the_role_and_signs_every_s3_request_with_its_credentials() {
    let bucket = common::bucket(true).await;
    let key = "role/library.tfstate";
    let s3 = RecordingProxy::start(common::endpoint()).await;
    let sts = RecordingProxy::start(moto_endpoint()).await;

    let manager = builder_through(&s3, &bucket, key)
        .with_sts_endpoint_url(&sts.endpoint)
        .with_assume_role(AssumeRole {
            session_name: Some("s3state-library".into()),
            external_id: Some("tenant-42".into()),
            duration: Some(AssumeRole::parse_duration("1h").unwrap()),
            tags: [("team".to_owned(), "network".to_owned())].into(),
            ..AssumeRole::new(ROLE)
        })
        .build()
        .await
        .expect("build with an assumed role");
    manager.refresh_state().await.unwrap();
    manager.write_state(state_with_output("from the role"));
    manager.persist_state().await.unwrap();

    let calls = assume_role_calls(&sts);
    assert!(!calls.is_empty());
    for call in &calls {
        common::assert_contains_all(
            call,
            &[
                "RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fterraform-state",
                "RoleSessionName=s3state-library",
                "ExternalId=tenant-42",
                "DurationSeconds=3600",
                "Tags.member.1.Key=team",
                "Tags.member.1.Value=network",
            ],
        );
    }
    assert_signed_with_the_assumed_role(&sts, &s3);
    let stored = State::from_slice(&common::get_raw(&bucket, key).await).unwrap();
    assert_eq!(stored.outputs["greeting"].to_value(), "from the role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sts_refusing_the_role_is_a_typed_error_naming_it_and_nothing_is_written() {
    let bucket = common::bucket(true).await;
    let key = "role/refused.tfstate";
    let s3 = RecordingProxy::start(common::endpoint()).await;
    let sts = common::proxy::FaultProxy::start(moto_endpoint()).await;
    sts.inject(common::proxy::Rule::new(common::proxy::Fault::Status(
        403,
        "AccessDenied",
    )));

    let err = builder_through(&s3, &bucket, key)
        .with_sts_endpoint_url(sts.endpoint())
        .with_assume_role(AssumeRole::new(ROLE))
        .build()
        .await
        .expect_err("STS refused the role");
    match &err {
        Error::AssumeRole { role_arn, .. } => assert_eq!(role_arn, ROLE),
        other => panic!("expected Error::AssumeRole, got {other:?}"),
    }
    assert!(err.to_string().contains(ROLE), "{err}");
    assert!(!sts.requests().is_empty(), "STS was asked");
    assert!(s3.seen().is_empty(), "S3 was reached: {:?}", s3.seen());
    assert!(!common::object_exists(&bucket, key).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_role_arn_or_duration_is_refused_before_any_request() {
    let bucket = common::bucket(true).await;
    let key = "role/malformed.tfstate";
    let s3 = RecordingProxy::start(common::endpoint()).await;
    let sts = RecordingProxy::start(moto_endpoint()).await;
    let cases = [
        (AssumeRole::new("terraform-state"), "role_arn"),
        (
            AssumeRole::new("arn:aws:iam::123456789012:user/alice"),
            "role_arn",
        ),
        (
            AssumeRole {
                duration: Some(Duration::from_secs(5 * 60)),
                ..AssumeRole::new(ROLE)
            },
            "role_duration",
        ),
        (
            AssumeRole {
                duration: Some(Duration::from_secs(13 * 3600)),
                ..AssumeRole::new(ROLE)
            },
            "role_duration",
        ),
    ];
    for (role, expected_field) in cases {
        let err = builder_through(&s3, &bucket, key)
            .with_sts_endpoint_url(&sts.endpoint)
            .with_assume_role(role.clone())
            .build()
            .await
            .expect_err("a malformed role");
        match err {
            Error::InvalidConfig { field, .. } => assert_eq!(field, expected_field, "{role:?}"),
            other => panic!("{role:?}: expected InvalidConfig, got {other:?}"),
        }
    }
    assert!(sts.seen().is_empty(), "STS was asked: {:?}", sts.seen());
    assert!(s3.seen().is_empty(), "S3 was reached: {:?}", s3.seen());
    assert!(!common::object_exists(&bucket, key).await);
}

/// A Terraform 1.15 backend block for `bucket`/`key` through the proxies, with `extra`.
fn backend_dir(s3: &RecordingProxy, sts: &str, bucket: &str, key: &str, extra: &str) -> PathBuf {
    let dir = common::temp_dir("s3state-assume-role");
    std::fs::write(
        dir.join("backend.tf"),
        format!(
            r#"terraform {{
  backend "s3" {{
    bucket                      = "{bucket}"
    key                         = "{key}"
    region                      = "us-east-1"
    endpoints                   = {{ s3 = "{s3}", sts = "{sts}" }}
    use_path_style              = true
    skip_credentials_validation = true
    skip_requesting_account_id  = true
    access_key                  = "test"
    secret_key                  = "test"
    use_lockfile                = true
{extra}
  }}
}}
"#,
            s3 = s3.endpoint
        ),
    )
    .unwrap();
    dir
}

fn write_state_file(dir: &Path, value: &str) -> PathBuf {
    let path = dir.join("state.json");
    std::fs::write(&path, state_with_output(value).to_bytes()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_block_with_assume_role_is_honoured_by_push_and_pull() {
    let bucket = common::bucket(true).await;
    let key = "role/block.tfstate";
    let s3 = RecordingProxy::start(common::endpoint()).await;
    let sts = RecordingProxy::start(moto_endpoint()).await;
    let dir = backend_dir(
        &s3,
        &sts.endpoint,
        &bucket,
        key,
        &format!(
            r#"    assume_role = {{
      role_arn     = "{ROLE}"
      session_name = "s3state-block"
      external_id  = "tenant-7"
      duration     = "1h"
      tags         = {{ team = "platform" }}
    }}"#
        ),
    );
    let file = write_state_file(&dir, "pushed through the role");

    let push = common::s3state_binary()
        .arg("--chdir")
        .arg(&dir)
        .arg("push")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        push.status.success(),
        "{}",
        String::from_utf8_lossy(&push.stderr)
    );
    let pull = common::s3state_binary()
        .arg("--chdir")
        .arg(&dir)
        .arg("pull")
        .output()
        .unwrap();
    assert!(
        pull.status.success(),
        "{}",
        String::from_utf8_lossy(&pull.stderr)
    );
    let pulled = State::from_slice(&pull.stdout).unwrap();
    assert_eq!(
        pulled.outputs["greeting"].to_value(),
        "pushed through the role"
    );

    let calls = assume_role_calls(&sts);
    assert!(calls.len() >= 2, "one per command at least: {calls:?}");
    for call in &calls {
        common::assert_contains_all(
            call,
            &[
                "RoleSessionName=s3state-block",
                "ExternalId=tenant-7",
                "DurationSeconds=3600",
                "Tags.member.1.Key=team",
                "Tags.member.1.Value=platform",
            ],
        );
    }
    assert_signed_with_the_assumed_role(&sts, &s3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_role_can_come_from_the_environment_with_stss_endpoint_from_aws_endpoint_url_sts() {
    let bucket = common::bucket(true).await;
    let key = "role/env.tfstate";
    let s3 = RecordingProxy::start(common::endpoint()).await;
    let sts = RecordingProxy::start(moto_endpoint()).await;
    let dir = common::temp_dir("s3state-assume-role-env");
    let file = write_state_file(&dir, "pushed with env settings");

    let output = common::s3state_binary()
        .current_dir(&dir)
        .args(["--bucket", &bucket, "--key", key, "--region", "us-east-1"])
        .args(["--endpoint-url", &s3.endpoint, "--path-style"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("S3STATE_ROLE_ARN", ROLE)
        .env("S3STATE_ROLE_SESSION_NAME", "s3state-env")
        .env("S3STATE_ROLE_DURATION", "45m")
        .env("S3STATE_ROLE_TAGS", "team=data,stage=prod")
        .env("AWS_ENDPOINT_URL_STS", &sts.endpoint)
        .arg("push")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let calls = assume_role_calls(&sts);
    assert!(
        !calls.is_empty(),
        "STS was not asked through AWS_ENDPOINT_URL_STS"
    );
    for call in &calls {
        common::assert_contains_all(
            call,
            &[
                "RoleSessionName=s3state-env",
                "DurationSeconds=2700",
                "Tags.member.1.Key=stage",
                "Tags.member.2.Key=team",
            ],
        );
    }
    assert_signed_with_the_assumed_role(&sts, &s3);
    assert!(common::object_exists(&bucket, key).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_duration_in_the_block_or_a_bad_role_arn_flag_fails_and_writes_nothing() {
    let bucket = common::bucket(true).await;
    let key = "role/bad-cli.tfstate";
    let s3 = RecordingProxy::start(common::endpoint()).await;
    let sts = RecordingProxy::start(moto_endpoint()).await;
    let bad_duration = backend_dir(
        &s3,
        &sts.endpoint,
        &bucket,
        key,
        &format!(
            "    assume_role = {{\n      role_arn = \"{ROLE}\"\n      duration = \"3600\"\n    }}"
        ),
    );
    let file = write_state_file(&bad_duration, "never written");
    let output = common::s3state_binary()
        .arg("--chdir")
        .arg(&bad_duration)
        .arg("push")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("assume_role.duration"), "{stderr}");

    let good_block = backend_dir(&s3, &sts.endpoint, &bucket, key, "");
    let output = common::s3state_binary()
        .arg("--chdir")
        .arg(&good_block)
        .args(["--role-arn", "arn:aws:iam::123456789012:group/admins"])
        .arg("push")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("role_arn") && stderr.contains("not an IAM role ARN"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--role-arn"),
        "the hint names the flag: {stderr}"
    );

    assert!(sts.seen().is_empty(), "STS was asked: {:?}", sts.seen());
    assert!(s3.seen().is_empty(), "S3 was reached: {:?}", s3.seen());
    assert!(!common::object_exists(&bucket, key).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_the_base_secret_nor_the_assumed_credentials_are_ever_printed() {
    const BASE_SECRET: &str = "base-secret-never-shown";
    let bucket = common::bucket(true).await;
    let key = "role/secrets.tfstate";
    let s3 = RecordingProxy::start(common::endpoint()).await;
    let sts = RecordingProxy::start(moto_endpoint()).await;
    let dir = backend_dir(
        &s3,
        &sts.endpoint,
        &bucket,
        key,
        &format!("    assume_role = {{ role_arn = \"{ROLE}\" }}"),
    );
    let block = std::fs::read_to_string(dir.join("backend.tf"))
        .unwrap()
        .replace(
            "secret_key                  = \"test\"",
            &format!("secret_key = \"{BASE_SECRET}\"\n    token = \"base-token-never-shown\""),
        );
    std::fs::write(dir.join("backend.tf"), block).unwrap();
    let file = write_state_file(&dir, "secret test");

    let mut everything = String::new();
    for args in [&["-vv", "push"][..], &["-vv", "pull"], &["-vv", "meta"]] {
        let mut command = common::s3state_binary();
        command.arg("--chdir").arg(&dir).args(args);
        if args[1] == "push" {
            command.arg(&file);
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        everything.push_str(&String::from_utf8_lossy(&output.stdout));
        everything.push_str(&String::from_utf8_lossy(&output.stderr));
    }
    let issued_secrets = xml_values(&sts.seen(), "SecretAccessKey");
    let issued_tokens = xml_values(&sts.seen(), "SessionToken");
    assert!(!issued_secrets.is_empty() && !issued_tokens.is_empty());
    for secret in issued_secrets
        .iter()
        .chain(&issued_tokens)
        .map(String::as_str)
        .chain([BASE_SECRET, "base-token-never-shown"])
    {
        assert!(!everything.contains(secret), "printed a secret: {secret}");
    }
    assert!(
        everything.contains("DEBUG") || everything.contains("debug"),
        "-vv logs something"
    );
}

/// A profile named `ci` in `file`: region, and the base credentials `test`.
fn profile_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_config_files_in_the_block_supply_the_profiles_region_and_credentials() {
    let bucket = common::bucket(true).await;
    let key = "profiles/config.tfstate";
    let dir = common::temp_dir("s3state-shared-config");
    let config = profile_file(
        &dir,
        "aws-config",
        "[profile ci]\nregion = us-east-1\naws_access_key_id = test\naws_secret_access_key = test\n",
    );
    // No region or keys in the block: they can only come from the profile in the file.
    std::fs::write(
        dir.join("backend.tf"),
        format!(
            "terraform {{\n  backend \"s3\" {{\n    bucket = \"{bucket}\"\n    key = \"{key}\"\n    endpoints = {{ s3 = \"{}\" }}\n    use_path_style = true\n    profile = \"ci\"\n    shared_config_files = [\"{}\"]\n  }}\n}}\n",
            common::endpoint(),
            config.display()
        ),
    )
    .unwrap();
    let file = write_state_file(&dir, "via the config file");
    let output = common::s3state_binary()
        .arg("--chdir")
        .arg(&dir)
        .env("HOME", &dir) // no ~/.aws of the machine's user
        .arg("push")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(common::object_exists(&bucket, key).await);

    // Without the file the profile does not exist: the same block minus the file fails.
    let text = std::fs::read_to_string(dir.join("backend.tf")).unwrap();
    let without = text.replace(
        &format!("    shared_config_files = [\"{}\"]\n", config.display()),
        "",
    );
    assert_ne!(text, without);
    std::fs::write(dir.join("backend.tf"), without).unwrap();
    let output = common::s3state_binary()
        .arg("--chdir")
        .arg(&dir)
        .env("HOME", &dir)
        .arg("pull")
        .output()
        .unwrap();
    assert!(!output.status.success(), "the profile came from elsewhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_credentials_files_in_the_block_supply_the_keys_that_sign_requests() {
    let bucket = common::bucket(true).await;
    let key = "profiles/credentials.tfstate";
    let s3 = RecordingProxy::start(common::endpoint()).await;
    let dir = common::temp_dir("s3state-shared-credentials");
    let credentials = profile_file(
        &dir,
        "aws-credentials",
        "[ci]\naws_access_key_id = AKIDFROMTHEFILE\naws_secret_access_key = test\n",
    );
    std::fs::write(
        dir.join("backend.tf"),
        format!(
            "terraform {{\n  backend \"s3\" {{\n    bucket = \"{bucket}\"\n    key = \"{key}\"\n    region = \"us-east-1\"\n    endpoints = {{ s3 = \"{}\" }}\n    use_path_style = true\n    profile = \"ci\"\n    shared_credentials_files = [\"{}\"]\n  }}\n}}\n",
            s3.endpoint,
            credentials.display()
        ),
    )
    .unwrap();
    let output = common::s3state_binary()
        .arg("--chdir")
        .arg(&dir)
        .env("HOME", &dir)
        .arg("meta")
        .output()
        .unwrap();
    let seen = s3.seen();
    assert!(
        !seen.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for request in &seen {
        assert_eq!(
            request.access_key.as_deref(),
            Some("AKIDFROMTHEFILE"),
            "{} {}",
            request.method,
            request.path
        );
    }

    // A file that does not exist is a configuration error naming it, before any request.
    let missing = dir.join("no-such-credentials");
    let text = std::fs::read_to_string(dir.join("backend.tf"))
        .unwrap()
        .replace(
            &credentials.display().to_string(),
            &missing.display().to_string(),
        );
    std::fs::write(dir.join("backend.tf"), text).unwrap();
    let before = s3.seen().len();
    let output = common::s3state_binary()
        .arg("--chdir")
        .arg(&dir)
        .env("HOME", &dir)
        .arg("meta")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("shared_credentials_files") && stderr.contains("no-such-credentials"),
        "{stderr}"
    );
    assert_eq!(s3.seen().len(), before, "a request was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_without_a_key_assumes_the_role_for_every_request() {
    let bucket = common::bucket(true).await;
    let s3 = RecordingProxy::start(common::endpoint()).await;
    let sts = RecordingProxy::start(moto_endpoint()).await;
    let dir = common::temp_dir("s3state-assume-role-ls");

    let output = common::s3state_binary()
        .current_dir(&dir)
        .args(["--bucket", &bucket, "--region", "us-east-1"])
        .args(["--endpoint-url", &s3.endpoint, "--path-style"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .args(["--role-arn", ROLE])
        .env("AWS_ENDPOINT_URL_STS", &sts.endpoint)
        .arg("ls")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !assume_role_calls(&sts).is_empty(),
        "ls without a key did not assume the role"
    );
    assert_signed_with_the_assumed_role(&sts, &s3);
}

#[test]
fn serve_refuses_a_role_or_a_backend_block_it_would_not_use_and_listens_on_nothing() {
    for (flag, value) in [("--role-arn", ROLE), ("--chdir", ".")] {
        let output = common::s3state_binary()
            .args(["--bucket", "any", "--region", "us-east-1", flag, value])
            .args(["serve", "--listen", "127.0.0.1:0"])
            // A gateway that started would serve until stopped.
            .timeout(Duration::from_secs(60))
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag}: {stderr}");
        assert!(stderr.contains(flag), "{flag}: {stderr}");
        assert!(!stderr.contains("listening"), "{flag}: {stderr}");
    }
}
