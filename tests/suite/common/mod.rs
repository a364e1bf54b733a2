//! The integration-test harness: a real S3 (LocalStack, started on demand), one fresh bucket per
//! test, and a request recorder that sees every HTTP exchange the SDK makes.

#[cfg(feature = "dynamodb")]
pub mod dynamo;
pub mod gateway;
pub mod hooked;
pub mod hooks;
pub mod memory;
pub mod oidc;
pub mod proxy;
pub mod terraform;
pub mod webdriver;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use s3state::{RemoteState, S3Builder, S3Store};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

/// The S3 endpoint under test: `S3STATE_TEST_ENDPOINT` if set, else the store that
/// `S3STATE_TEST_STORE` names (`localstack`, the default, or `seaweedfs`), which this harness
/// installs and starts (once, shared by every test binary) with that store's `start.sh`.
///
/// If the store cannot be started the test fails here, loudly: an integration test that
/// silently skips is a broken promise.
pub fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        if let Ok(endpoint) = std::env::var("S3STATE_TEST_ENDPOINT") {
            return endpoint;
        }
        let store = test_store();
        let (script, status) = run_start_script(store.start_script());
        assert!(
            status.success(),
            "{} could not be started by {} ({status}); integration tests need a real S3. \
             Set S3STATE_TEST_ENDPOINT to use another one.",
            store.name(),
            script.display()
        );
        let port = std::env::var(store.port_setting()).unwrap_or_else(|_| store.default_port());
        format!("http://127.0.0.1:{port}")
    })
}

/// The S3-compatible stores the suite runs against (`S3STATE_TEST_STORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestStore {
    /// LocalStack's S3 in host mode (`localstack/`): the default.
    LocalStack,
    /// SeaweedFS, a real distributed S3-compatible store (`seaweedfs/`).
    SeaweedFs,
}

impl TestStore {
    fn name(self) -> &'static str {
        match self {
            TestStore::LocalStack => "LocalStack",
            TestStore::SeaweedFs => "SeaweedFS",
        }
    }

    fn start_script(self) -> &'static str {
        match self {
            TestStore::LocalStack => "localstack/start.sh",
            TestStore::SeaweedFs => "seaweedfs/start.sh",
        }
    }

    fn port_setting(self) -> &'static str {
        match self {
            TestStore::LocalStack => "S3STATE_LOCALSTACK_PORT",
            TestStore::SeaweedFs => "S3STATE_SEAWEEDFS_PORT",
        }
    }

    fn default_port(self) -> String {
        match self {
            TestStore::LocalStack => "4566".into(),
            TestStore::SeaweedFs => "8333".into(),
        }
    }
}

/// The store `S3STATE_TEST_STORE` names; panics on a name it does not know, rather than
/// running the suite against another store than the one asked for.
pub fn test_store() -> TestStore {
    match std::env::var("S3STATE_TEST_STORE").as_deref() {
        Err(_) | Ok("" | "localstack") => TestStore::LocalStack,
        Ok("seaweedfs") => TestStore::SeaweedFs,
        Ok(other) => panic!("S3STATE_TEST_STORE={other}: expected `localstack` or `seaweedfs`"),
    }
}

/// What the store under test does where S3-compatible stores differ, as `s3state probe`
/// finds it. A test that depends on a store's quirk asks here, never assumes LocalStack.
#[derive(Debug, Clone)]
pub struct StoreFacts {
    /// The probe's `conditional_delete` check passed: DeleteObject with `If-Match` is enforced
    /// (412 on a wrong tag, 204 on the right one), as on real S3 and SeaweedFS. LocalStack
    /// answers 501, and s3state falls back to reading the object, then deleting it.
    pub conditional_delete: bool,
    /// HeadObject under SSE-C answers what the SDK can read. SeaweedFS 4.48 sends the
    /// customer key's MD5 header twice, which the SDK refuses to parse (so s3state reports a
    /// `Store` error on HeadObject rather than go on).
    pub sse_c_head: bool,
    /// Requests signed with a session token the store never issued are accepted (LocalStack
    /// accepts any credentials; SeaweedFS checks a token against its own STS).
    pub any_session_token: bool,
}

/// The [`StoreFacts`] of the store under test: the probe runs once per test process, in a
/// bucket of its own, and its findings are kept.
pub fn store_facts() -> &'static StoreFacts {
    static FACTS: OnceLock<StoreFacts> = OnceLock::new();
    FACTS.get_or_init(|| {
        let endpoint = endpoint().to_owned();
        // Tests run on runtimes of their own; the probe gets one too, so that what it leaves
        // behind (the client's connections) dies with it rather than with some test.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(probe_store(&endpoint))
        })
        .join()
        .expect("probing the store under test")
    })
}

async fn probe_store(endpoint: &str) -> StoreFacts {
    let client = client_for(endpoint);
    let bucket = format!(
        "s3state-facts-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    create_bucket_on(&client, &bucket, true).await;
    let report = S3Builder::new()
        .with_client(client)
        .with_bucket(&bucket)
        .with_key("facts.tfstate")
        .build_backend()
        .await
        .expect("opening the facts bucket")
        .probe()
        .await
        .expect("the probe of the store under test ran");
    let passed = |id: &str| {
        report
            .checks
            .iter()
            .find(|check| check.id == id)
            .unwrap_or_else(|| panic!("the probe has no `{id}` check: {report:?}"))
            .level
            == s3state::s3::CheckLevel::Pass
    };
    StoreFacts {
        conditional_delete: passed("conditional_delete"),
        sse_c_head: sse_c_head_is_readable(endpoint, &bucket).await,
        any_session_token: an_unissued_session_token_is_accepted(endpoint, &bucket).await,
    }
}

/// Whether a HeadObject of an SSE-C object, with its key, gives an answer the SDK reads.
async fn sse_c_head_is_readable(endpoint: &str, bucket: &str) -> bool {
    use base64::Engine as _;
    let key = [3u8; 32];
    let (key_b64, md5_b64) = (
        base64::engine::general_purpose::STANDARD.encode(key),
        base64::engine::general_purpose::STANDARD.encode(<md5::Md5 as md5::Digest>::digest(key)),
    );
    let client = client_for(endpoint);
    client
        .put_object()
        .bucket(bucket)
        .key("facts-sse-c")
        .body(b"{}".to_vec().into())
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&key_b64)
        .sse_customer_key_md5(&md5_b64)
        .send()
        .await
        .expect("an SSE-C write to the store under test");
    client
        .head_object()
        .bucket(bucket)
        .key("facts-sse-c")
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&key_b64)
        .sse_customer_key_md5(&md5_b64)
        .send()
        .await
        .is_ok()
}

/// Whether a request signed with the test keys and a made-up session token is accepted.
async fn an_unissued_session_token_is_accepted(endpoint: &str, bucket: &str) -> bool {
    let config = config_for(endpoint).credentials_provider(Credentials::new(
        "test",
        "test",
        Some("s3state-made-up-session-token".into()),
        None,
        "s3state-tests",
    ));
    Client::from_conf(config.build())
        .get_bucket_versioning()
        .bucket(bucket)
        .send()
        .await
        .is_ok()
}

/// One HTTP exchange seen by the SDK.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    pub uri: String,
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub status: Option<u16>,
    pub response_body_bytes: Option<u64>,
}

/// Records every request made through a client, in order.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Exchange>>>);

impl Recorder {
    pub fn take(&self) -> Vec<Exchange> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// The exchanges so far, without taking them.
    #[allow(dead_code)]
    pub fn peek(&self) -> Vec<Exchange> {
        self.0.lock().unwrap().clone()
    }
}

impl Recorder {
    /// The interceptor that records into `self`.
    pub fn hooks(&self) -> hooks::Hooks {
        let (requests, responses) = (self.0.clone(), self.0.clone());
        hooks::Hooks::new("s3state-test-recorder")
            .read_request(move |request| {
                let header = |name: &str| request.headers().get(name).map(str::to_owned);
                requests.lock().unwrap().push(Exchange {
                    method: request.method().to_string(),
                    uri: request.uri().to_string(),
                    if_match: header("if-match"),
                    if_none_match: header("if-none-match"),
                    status: None,
                    response_body_bytes: None,
                });
            })
            .read_response(move |response| {
                let mut exchanges = responses.lock().unwrap();
                // Tests that count requests issue them one at a time, so the newest open
                // exchange is this response's request.
                if let Some(open) = exchanges.iter_mut().rev().find(|e| e.status.is_none()) {
                    open.status = Some(response.status().as_u16());
                    open.response_body_bytes = response
                        .headers()
                        .get("content-length")
                        .and_then(|v| v.parse().ok())
                        .or(Some(response.body().content_length().unwrap_or(0)));
                }
            })
    }
}

/// Runs the start script at `path` (from the crate's root) with bash: the script and its exit.
fn run_start_script(path: &str) -> (PathBuf, std::process::ExitStatus) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    let status = Command::new("bash")
        .arg(&script)
        .status()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", script.display()));
    (script, status)
}

/// moto's server (S3, DynamoDB and STS on one port), installed and started once per test
/// process by `moto/start.sh`; fails loudly if it cannot be. `S3STATE_MOTO_PORT` moves it.
pub fn moto_endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        let (script, status) = run_start_script("moto/start.sh");
        assert!(
            status.success(),
            "moto could not be started by {} ({status}); this test needs it",
            script.display()
        );
        let port = std::env::var("S3STATE_MOTO_PORT").unwrap_or_else(|_| "4577".into());
        format!("http://127.0.0.1:{port}")
    })
}

/// The SDK configuration for `endpoint`, with LocalStack's credentials and path-style.
pub fn config_for(endpoint: &str) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "s3state-tests",
        ))
        .force_path_style(true)
}

/// Makes LocalStack look like real S3 (which honours `If-Match` on DeleteObject), on stores
/// that do not ([`StoreFacts::conditional_delete`]): a
/// conditional DELETE whose tag matches the current lock is sent without the condition (so
/// LocalStack performs it), and one whose tag does not match is answered 412.
#[derive(Debug, Clone, Default)]
pub struct ConditionalDeletes {
    pub current_lock_etag: Arc<std::sync::Mutex<Option<String>>>,
    refuse: Arc<std::sync::atomic::AtomicBool>,
}

impl ConditionalDeletes {
    /// The interceptor; every clone of `self` shares its state. On a store that enforces
    /// conditional deletes itself ([`store_facts`]) it changes nothing: the store is already
    /// what this emulates (and rewriting a signed request would break its signature there).
    pub fn hooks(&self) -> hooks::Hooks {
        if store_facts().conditional_delete {
            return hooks::Hooks::new("conditional-deletes-by-the-store");
        }
        let (etag, refuse) = (self.current_lock_etag.clone(), self.refuse.clone());
        let refused = self.refuse.clone();
        hooks::Hooks::new("conditional-deletes")
            .modify_request(move |request| {
                let mut refusing = false;
                if request.method() == "DELETE"
                    && let Some(if_match) = request.headers().get("if-match").map(str::to_owned)
                {
                    let current = etag.lock().unwrap().clone();
                    refusing = current.as_deref() != Some(if_match.as_str());
                    request.headers_mut().remove("if-match");
                    if refusing {
                        // Point the refused delete at a key that does not exist, so nothing
                        // is deleted.
                        let uri = request.uri().replace(".tflock", ".tflock-refused");
                        request.set_uri(uri).unwrap();
                    }
                }
                refuse.store(refusing, std::sync::atomic::Ordering::SeqCst);
            })
            .modify_response(move |response| {
                if refused.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    *response.status_mut() = 412.try_into().unwrap();
                }
            })
    }
}

/// Disguises ETags as SSE-KMS makes them (not an MD5 of the body): each ETag the store
/// answers gets a `kms-` prefix on its way to s3state, and the prefix is taken off the
/// conditional headers s3state sends before they are signed, so that the store (which checks
/// signatures, as SeaweedFS and real S3 do) sees its own tags.
pub fn kms_style_etags() -> hooks::Hooks {
    const PREFIX: &str = "\"kms-";
    hooks::Hooks::new("kms-style-etags")
        .modify_unsigned_request(|request| {
            for name in ["if-match", "if-none-match"] {
                if let Some(value) = request.headers().get(name).map(str::to_owned) {
                    request
                        .headers_mut()
                        .insert(name, value.replace(PREFIX, "\""));
                }
            }
        })
        .modify_response(|response| {
            if let Some(etag) = response.headers().get("etag").map(str::to_owned) {
                response
                    .headers_mut()
                    .insert("etag", etag.replacen('"', PREFIX, 1));
            }
        })
}

/// On a store that enforces conditional deletes ([`StoreFacts::conditional_delete`]), makes
/// `proxy` answer the next DELETE of a path containing `path` with LocalStack's `501
/// NotImplemented`, so that a test of s3state's fallback (read the object, then delete it
/// unconditionally) runs the same way on every store. Returns whether it did.
pub fn refuse_next_conditional_delete(proxy: &proxy::FaultProxy, path: &str) -> bool {
    let enforced = store_facts().conditional_delete;
    if enforced {
        proxy.inject(
            proxy::Rule::new(proxy::Fault::Status(501, "NotImplemented"))
                .method("DELETE")
                .path(path.to_owned())
                .times(1),
        );
    }
    enforced
}

/// `config` with `interceptor` added, when there is one.
pub fn with_interceptor(
    config: aws_sdk_s3::config::Builder,
    interceptor: Option<hooks::Hooks>,
) -> aws_sdk_s3::config::Builder {
    match interceptor {
        Some(interceptor) => config.interceptor(interceptor),
        None => config,
    }
}

/// A client for the test endpoint, optionally recording its requests.
pub fn client_with(recorder: Option<&Recorder>) -> Client {
    let mut config = config_for(endpoint());
    if let Some(recorder) = recorder {
        config = config.interceptor(recorder.hooks());
    }
    Client::from_conf(config.build())
}

/// A client for `endpoint` (a fault proxy's, say) whose requests `recorder` records.
pub fn recorded_client_for(endpoint: &str, recorder: &Recorder) -> Client {
    Client::from_conf(config_for(endpoint).interceptor(recorder.hooks()).build())
}

pub fn client() -> Client {
    client_with(None)
}

/// A client of its own for `endpoint`. Managers built each over a client of their own are
/// coordinated as separate processes are: they race through the store's lock.
pub fn client_for(endpoint: &str) -> Client {
    Client::from_conf(config_for(endpoint).build())
}

/// A new bucket with a unique name, versioned when asked.
pub async fn bucket(versioned: bool) -> String {
    let name = format!(
        "s3state-test-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..16]
    );
    create_bucket_on(&client(), &name, versioned).await;
    name
}

/// Creates the bucket `name` through `client`, versioned when asked.
pub async fn create_bucket_on(client: &Client, name: &str, versioned: bool) {
    client
        .create_bucket()
        .bucket(name)
        .send()
        .await
        .unwrap_or_else(|err| {
            panic!(
                "creating bucket {name}: {}",
                aws_sdk_s3::error::DisplayErrorContext(err)
            )
        });
    if versioned {
        set_versioning(client, name, BucketVersioningStatus::Enabled).await;
    }
}

/// Sets the versioning of `bucket` (through `client`) to `status`.
pub async fn set_versioning(client: &Client, bucket: &str, status: BucketVersioningStatus) {
    client
        .put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(VersioningConfiguration::builder().status(status).build())
        .send()
        .await
        .expect("setting the bucket's versioning");
}

/// A builder for `bucket`/`key` on the test endpoint.
pub fn builder(bucket: &str, key: &str) -> S3Builder {
    S3Builder::new()
        .with_client(client())
        .with_bucket(bucket)
        .with_key(key)
}

/// A builder for `bucket`/`key` on `endpoint` from settings alone (endpoint, region,
/// path style, the test credentials), as an application configures s3state, rather than
/// with a client of the test's own. Managers built this way over one object share their
/// update turns in the process (a given client does not tell its endpoint, so those do not).
#[allow(dead_code)]
pub fn settings_builder(endpoint: &str, bucket: &str, key: &str) -> S3Builder {
    S3Builder::new()
        .with_endpoint_url(endpoint)
        .with_region("us-east-1")
        .with_path_style(true)
        .with_static_credentials("test", "test")
        .with_bucket(bucket)
        .with_key(key)
}

/// [`settings_builder`], in a process of its own when `separate_process` (over a client of
/// its own: see [`client_for`]), or sharing this process's coordination.
pub fn process_builder(
    endpoint: &str,
    bucket: &str,
    key: &str,
    separate_process: bool,
) -> S3Builder {
    let builder = settings_builder(endpoint, bucket, key);
    if separate_process {
        builder.with_client(client_for(endpoint))
    } else {
        builder
    }
}

/// A state manager for `bucket`/`key`.
pub async fn manager(bucket: &str, key: &str) -> RemoteState<S3Store> {
    builder(bucket, key)
        .build()
        .await
        .expect("opening the state")
}

/// A fresh versioned bucket and a manager for `key` in it.
pub async fn bucket_and_manager(key: &str) -> (String, RemoteState<S3Store>) {
    let bucket = bucket(true).await;
    let manager = manager(&bucket, key).await;
    (bucket, manager)
}

/// Number of object versions (delete markers excluded) stored under exactly `key`.
pub async fn version_count(bucket: &str, key: &str) -> usize {
    let mut count = 0;
    let (mut key_marker, mut version_marker) = (None, None);
    loop {
        let page = client()
            .list_object_versions()
            .bucket(bucket)
            .prefix(key)
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .send()
            .await
            .expect("listing versions");
        count += page
            .versions()
            .iter()
            .filter(|v| v.key() == Some(key))
            .count();
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        version_marker = page.next_version_id_marker().map(str::to_owned);
    }
    count
}

/// Whether an object is at `key` now.
pub async fn object_exists(bucket: &str, key: &str) -> bool {
    head_object(bucket, key).send().await.is_ok()
}

fn head_object(
    bucket: &str,
    key: &str,
) -> aws_sdk_s3::operation::head_object::builders::HeadObjectFluentBuilder {
    client().head_object().bucket(bucket).key(key)
}

/// The first page of the versions (and delete markers) in `bucket` under `prefix`.
pub async fn versions_under(
    bucket: &str,
    prefix: &str,
) -> aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput {
    let listing = client()
        .list_object_versions()
        .bucket(bucket)
        .prefix(prefix);
    listing.send().await.expect("listing versions")
}

/// A state of `lineage` and `serial` holding `resources` managed `terraform_data` resources.
pub fn state_with_resources(lineage: &str, serial: u64, resources: usize) -> Vec<u8> {
    let resources: Vec<serde_json::Value> = (0..resources)
        .map(|n| {
            serde_json::json!({
                "mode": "managed",
                "type": "terraform_data",
                "name": format!("r{n}"),
                "provider": "provider[\"terraform.io/builtin/terraform\"]",
                "instances": [{"schema_version": 0, "attributes": {"id": format!("id-{n}")}}],
            })
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "version": 4,
        "terraform_version": "1.15.5",
        "serial": serial,
        "lineage": lineage,
        "outputs": {},
        "resources": resources,
        "check_results": null,
    }))
    .unwrap()
}

/// Writes `body` at `key` with a plain, unconditional PUT, as Terraform or an operator would.
pub async fn put_raw(bucket: &str, key: &str, body: &[u8]) {
    client()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.to_vec().into())
        .send()
        .await
        .expect("raw put");
}

/// The current body at `key`.
pub async fn get_raw(bucket: &str, key: &str) -> Vec<u8> {
    let output = client()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("raw get");
    output.body.collect().await.unwrap().into_bytes().to_vec()
}

/// The state Terraform 1.15.5 wrote, from `tests/data`.
pub const TERRAFORM_STATE: &[u8] =
    include_bytes!("../../data/terraform-1.15.5/terraform.tfstate.json");

/// The lock info Terraform 1.15.5 wrote into a `.tflock`, from `tests/data`.
pub const TERRAFORM_LOCK: &[u8] = include_bytes!("../../data/terraform-1.15.5/lock-info.json");

/// A change for `update`: set output `name` to `value`.
pub fn set_output<T>(name: &'static str, value: T) -> impl FnMut(&mut s3state::State) + Send
where
    T: serde::Serialize + Send,
{
    move |state| {
        state
            .outputs
            .insert(name.into(), s3state::OutputValue::new(&value));
    }
}

/// The attributes of an S3 backend (or `terraform_remote_state` config) on the test endpoint,
/// as a Terraform user would write them for LocalStack.
pub fn backend_settings(bucket: &str, key: &str) -> String {
    format!(
        r#"    bucket                      = "{bucket}"
    key                         = "{key}"
    region                      = "us-east-1"
    endpoints                   = {{ s3 = "{endpoint}" }}
    use_path_style              = true
    skip_credentials_validation = true
    skip_region_validation      = true
    skip_metadata_api_check     = true
    skip_requesting_account_id  = true
    access_key                  = "test"
    secret_key                  = "test"
"#,
        endpoint = endpoint()
    )
}

/// A `terraform { backend "s3" { ... } }` block for `bucket`/`key`, locking with a lock file.
pub fn terraform_backend_block(bucket: &str, key: &str) -> String {
    format!(
        "terraform {{\n  backend \"s3\" {{\n{}    use_lockfile                = true\n  }}\n}}\n",
        backend_settings(bucket, key)
    )
}

/// A fresh, empty directory under the system's temp dir.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `manager` asking for an apply's lock, which must be refused: the error.
pub async fn refused_apply_lock<S: s3state::Store>(manager: &RemoteState<S>) -> s3state::Error {
    use s3state::Locker as _;
    manager
        .lock(&s3state::LockInfo::new("OperationTypeApply"))
        .await
        .expect_err("the lock is held elsewhere")
}

/// Asserts that `text` contains each of `parts`.
#[track_caller]
pub fn assert_contains_all(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{part} missing from: {text}");
    }
}

/// A manager for `bucket`/`key` whose client is built from `config` (with interceptors, say).
pub async fn manager_with_config(
    bucket: &str,
    key: &str,
    config: aws_sdk_s3::Config,
) -> RemoteState<S3Store> {
    builder_with_config(bucket, key, config)
        .build()
        .await
        .unwrap()
}

/// A builder for `bucket`/`key` whose client is built from `config`.
pub fn builder_with_config(bucket: &str, key: &str, config: aws_sdk_s3::Config) -> S3Builder {
    builder(bucket, key).with_client(Client::from_conf(config))
}

/// Asserts that `err` is a `SerialRegression` from `local` to `remote`.
#[track_caller]
pub fn assert_serial_regression(err: &s3state::Error, local: u64, remote: u64) {
    let found = match err {
        s3state::Error::SerialRegression {
            local: l,
            remote: r,
            ..
        } => Some((*l, *r)),
        _ => None,
    };
    assert_eq!(found, Some((local, remote)), "{err:?}");
}

/// Two updates: one adds the output `name` (= 1), the next removes it again.
pub async fn add_and_remove_output<S: s3state::Store>(
    manager: &RemoteState<S>,
    name: &'static str,
) {
    manager.update(set_output(name, 1)).await.unwrap();
    manager
        .update(|s| {
            s.outputs.remove(name);
        })
        .await
        .unwrap();
}

/// A manager of `store` with `options`, to share between tasks.
pub fn shared<S: s3state::Store>(
    store: S,
    options: s3state::RemoteStateOptions,
) -> Arc<RemoteState<S>> {
    Arc::new(RemoteState::with_options(store, options))
}

/// The lock `manager`'s locker sees now, if any.
pub async fn current_lock<S: s3state::Store>(
    manager: &RemoteState<S>,
) -> Option<s3state::LockInfo> {
    manager.locker().current().await.unwrap()
}

/// `manager` takes the lock for `operation` and releases it again.
pub async fn lock_and_unlock<S: s3state::Store>(manager: &RemoteState<S>, operation: &str) {
    use s3state::Locker as _;
    let id = manager
        .lock(&s3state::LockInfo::new(operation))
        .await
        .unwrap();
    manager.unlock(&id).await.unwrap();
}

/// The holder an `Error::Locked` names; panics on any other error.
#[track_caller]
pub fn locked_holder(err: &s3state::Error) -> &s3state::LockInfo {
    match err {
        s3state::Error::Locked {
            holder: Some(holder),
            ..
        } => holder,
        _ => panic!("expected Locked, got {err:?}"),
    }
}

/// Asserts that a finished process (`what`, for the message) succeeded; if not, the message
/// carries its stdout and stderr.
#[track_caller]
pub fn assert_success(what: &str, output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `s3state` binary with no `S3STATE_*` or `AWS_*` settings inherited from this process.
pub fn s3state_binary() -> assert_cmd::Command {
    let mut command = assert_cmd::Command::cargo_bin("s3state").unwrap();
    for (name, _) in std::env::vars() {
        if name.starts_with("S3STATE_") || name.starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
}

/// Deletes `key` as an operator would (a delete marker in a versioned bucket).
pub async fn delete_object(bucket: &str, key: &str) {
    client()
        .delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("delete");
}

/// A profile whose credentials come from a `credential_process` script that leaves a mark when
/// it runs, so a test can tell whether the profile's credentials were asked for. Returns the
/// config file and the mark's path.
#[allow(dead_code)]
pub fn profile_with_marked_credential_process(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let mark = dir.join("credential-process-ran");
    let script = dir.join("credentials.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ntouch '{}'\necho '{{\"Version\":1,\"AccessKeyId\":\"test\",\"SecretAccessKey\":\"test\"}}'\n",
            mark.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.join("config");
    let profile = format!(
        "[profile marked]\ncredential_process = {}\n",
        script.display()
    );
    std::fs::write(&config, profile).unwrap();
    (config, mark)
}

/// The `s3state` command with LocalStack's test credentials, against `endpoint` (path-style),
/// run in `dir`.
pub fn s3state_at(endpoint: &str, dir: PathBuf) -> assert_cmd::Command {
    let mut command = s3state_binary();
    command
        .current_dir(dir)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("S3STATE_ENDPOINT_URL", endpoint)
        .env("S3STATE_PATH_STYLE", "true");
    command
}

/// The `s3state` command on `bucket`/`key` in LocalStack, without colours, run in `dir`.
pub fn s3state_on(bucket: &str, key: &str, dir: PathBuf) -> assert_cmd::Command {
    let mut command = s3state_at(endpoint(), dir);
    command
        .env("S3STATE_BUCKET", bucket)
        .env("S3STATE_KEY", key)
        .env("NO_COLOR", "1");
    command
}

/// The `s3state` command on `bucket`/`key` in LocalStack as a process to spawn and signal
/// (what [`s3state_on`] runs, with only `PATH` inherited).
pub fn s3state_process(bucket: &str, key: &str) -> std::process::Command {
    let mut command = std::process::Command::new(assert_cmd::cargo::cargo_bin("s3state"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs([
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("S3STATE_ENDPOINT_URL", endpoint()),
            ("S3STATE_PATH_STYLE", "true"),
            ("S3STATE_BUCKET", bucket),
            ("S3STATE_KEY", key),
            ("NO_COLOR", "1"),
        ]);
    command
}

/// The `terraform` launcher (a real Terraform 1.15.5, `tests/terraform/install.sh`), installed
/// once per test process.
pub fn terraform_binary() -> &'static std::path::Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/terraform/install.sh");
        let output = Command::new("bash")
            .arg(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running tests/terraform/install.sh");
        assert!(
            output.status.success(),
            "installing Terraform failed; the interoperability tests need it"
        );
        PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
    })
}

/// A state manager for `bucket`/`key` whose requests `Recorder` records; what opening it asked
/// is already taken, so the recorder holds only what the test does next.
pub async fn recorded_manager(bucket: &str, key: &str) -> (RemoteState<S3Store>, Recorder) {
    let recorder = Recorder::default();
    let manager = builder(bucket, key)
        .with_client(client_with(Some(&recorder)))
        .build()
        .await
        .unwrap();
    recorder.take();
    (manager, recorder)
}

/// The history of `manager` with each version's serial and lineage read from its body, at
/// most `concurrency` bodies at a time (`None`: the default).
pub async fn detailed_history<S: s3state::VersionedStore>(
    manager: &RemoteState<S>,
    concurrency: Option<usize>,
) -> Vec<s3state::HistoryEntry> {
    let mut options = s3state::HistoryOptions {
        details: true,
        ..Default::default()
    };
    options.concurrency = concurrency.unwrap_or(options.concurrency);
    manager.history(&options).await.unwrap()
}

/// The `counter` output of `state` (0 when there is none): what the contention tests increment.
pub fn counter(state: &s3state::State) -> u64 {
    state
        .outputs
        .get("counter")
        .and_then(|o| o.to_value().as_u64())
        .unwrap_or(0)
}

/// The lock on `manager`, as Terraform takes it for `operation`, waiting at most `timeout`.
pub async fn lock_within<S: s3state::Store>(
    manager: &RemoteState<S>,
    operation: &str,
    timeout: std::time::Duration,
) -> s3state::Result<String> {
    manager
        .locker()
        .lock_with_timeout(&s3state::LockInfo::new(operation), timeout)
        .await
}

/// Writes a copy of `manager`'s snapshot with output `name` set to `value`, and asserts the
/// write is refused as a conflict: the snapshot is stale, and a stale write must never
/// overwrite.
pub async fn assert_stale_write_refused<S: s3state::Store, T: serde::Serialize>(
    manager: &RemoteState<S>,
    name: &str,
    value: T,
) {
    use s3state::{Persister as _, Transient as _};
    let mut state = manager.state().unwrap();
    state
        .outputs
        .insert(name.into(), s3state::OutputValue::new(&value));
    manager.write_state(state);
    let refused = manager.persist_state().await.unwrap_err();
    assert!(refused.is_conflict(), "{refused}");
}

/// The object at `key` now, as HeadObject answers (panics if there is none).
pub async fn head(bucket: &str, key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
    head_object(bucket, key).send().await.expect("head")
}

/// A Terraform 1.15.5 state of `lineage` at `serial` whose one output, `answer`, is `output`:
/// what the push tests send.
pub fn answer_state(lineage: &str, serial: u64, output: i64) -> s3state::State {
    let mut state = s3state::State::new(semver::Version::new(1, 15, 5));
    state.lineage = lineage.into();
    state.serial = serial;
    set_output("answer", output)(&mut state);
    state
}

/// Asserts that `manager` refuses a lock whose ID is empty, as invalid lock info.
pub async fn assert_empty_lock_id_refused<S: s3state::Store>(manager: &RemoteState<S>) {
    use s3state::Locker as _;
    let mut info = s3state::LockInfo::new("OperationTypeApply");
    info.id = String::new();
    let refused = manager.lock(&info).await.unwrap_err();
    assert!(
        matches!(refused, s3state::Error::InvalidLockInfo { .. }),
        "{refused}"
    );
}

/// Asserts that `manager`'s snapshot is a first one: serial 1, under a fresh UUID lineage.
/// Returns its identity for the test's further checks.
pub fn assert_first_snapshot<S: s3state::Store>(manager: &RemoteState<S>) -> s3state::SnapshotMeta {
    use s3state::PersistentMeta as _;
    let meta = manager.state_snapshot_meta().unwrap();
    assert_eq!(meta.serial, 1);
    assert!(
        uuid::Uuid::parse_str(&meta.lineage).is_ok(),
        "{}",
        meta.lineage
    );
    meta
}

/// Runs the independent Python implementation of OpenTofu's envelope
/// (`tests/encryption/opentofu_envelope.py`, on `cryptography` from moto's venv, installed by
/// `moto/install.sh` if needed) with `args`, `input` on stdin and the passphrase in its
/// environment; its stdout. Fails loudly if Python or the package is missing.
#[allow(dead_code)]
pub fn opentofu_envelope(args: &[&str], input: &[u8], passphrase: &str) -> Vec<u8> {
    use std::io::Write as _;
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = PYTHON.get_or_init(|| {
        let status = Command::new("bash")
            .arg(root.join("moto/install.sh"))
            .status()
            .expect("running moto/install.sh");
        assert!(status.success(), "moto/install.sh failed ({status})");
        let venv = std::env::var_os("S3STATE_MOTO_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("moto/.venv"));
        venv.join("bin/python")
    });
    let mut child = Command::new(python)
        .arg(root.join("tests/encryption/opentofu_envelope.py"))
        .args(args)
        .env("OPENTOFU_PASSPHRASE", passphrase)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", python.display()));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "opentofu_envelope.py {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}
