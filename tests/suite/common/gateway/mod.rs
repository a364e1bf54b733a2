//! Harness for the gateway tests: a gateway on 127.0.0.1 over a fresh LocalStack bucket, a
//! raw HTTP/1.1 client that can send anything (bad paths, slow bodies), and Terraform
//! 1.15.5 working directories with `backend "http"` (or `backend "s3"`) blocks.

pub mod load;

use crate::common;
use crate::common::terraform_binary;
use s3state::server::{Gateway, GatewayConfig, Grant, Limits, Role, S3Settings, UserConfig};
use std::path::PathBuf;
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The key prefix every test gateway uses: `/<name>` is `gw/<name>` in the bucket.
pub const PREFIX: &str = "gw";

pub const ADMIN: (&str, &str) = ("admin", "admin-password-0123");
pub const WRITER: (&str, &str) = ("writer", "writer-password-4567");
pub const READER: (&str, &str) = ("reader", "reader-password-89ab");
/// May write only under `team-a/`.
pub const TEAM_A: (&str, &str) = ("team-a", "team-a-password-cdef");

/// argon2 hashes of the test passwords, computed once per process (argon2 is slow by design).
fn hashes() -> &'static [(String, String); 4] {
    static HASHES: OnceLock<[(String, String); 4]> = OnceLock::new();
    HASHES.get_or_init(|| {
        [ADMIN, WRITER, READER, TEAM_A]
            .map(|(user, password)| (user.to_owned(), s3state::server::hash_password(password)))
    })
}

fn user(name: &str, grants: Vec<Grant>) -> UserConfig {
    let hash = hashes()
        .iter()
        .find(|(user, _)| user == name)
        .map(|(_, hash)| hash.clone())
        .unwrap();
    UserConfig {
        name: name.into(),
        password_hash: Some(hash),
        password_env: None,
        grants,
    }
}

fn grant(prefix: &str, role: Role) -> Grant {
    Grant {
        prefix: prefix.into(),
        role,
    }
}

/// A configuration for `bucket` on the test endpoint with the four test users.
pub fn config(bucket: &str) -> GatewayConfig {
    GatewayConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        s3: S3Settings {
            bucket: bucket.into(),
            key_prefix: PREFIX.into(),
            client: Some(common::client()),
            ..S3Settings::default()
        },
        users: vec![
            user(ADMIN.0, vec![grant("", Role::Admin)]),
            user(WRITER.0, vec![grant("", Role::Write)]),
            user(READER.0, vec![grant("", Role::Read)]),
            user(
                TEAM_A.0,
                vec![grant("", Role::Read), grant("team-a", Role::Write)],
            ),
        ],
        limits: Limits {
            max_body_bytes: 1024 * 1024,
            ..Limits::default()
        },
        // Audit lines default to standard error, which the test harness does not capture;
        // tests that read them set a file.
        audit_log: Some(PathBuf::from("/dev/null")),
        ..GatewayConfig::default()
    }
}

/// A running gateway; dropping it shuts it down.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub bucket: String,
    pub tls: bool,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn url(&self, name: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/{name}", self.addr)
    }

    /// The shutdown trigger, for a test that fires it itself (then [`Running::stop`] only
    /// waits).
    pub fn take_shutdown(&mut self) -> tokio::sync::oneshot::Sender<()> {
        self.shutdown.take().expect("the shutdown trigger")
    }

    /// Shuts down gracefully and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Starts a gateway with `config`.
pub async fn start_with(config: GatewayConfig) -> Running {
    let bucket = config.s3.bucket.clone();
    let gateway = Gateway::bind(config).await.expect("starting the gateway");
    let addr = gateway.local_addr();
    let tls = gateway.is_tls();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(gateway.run(async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        bucket,
        tls,
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// A gateway over a fresh versioned bucket.
pub async fn start() -> Running {
    let bucket = common::bucket(true).await;
    start_with(config(&bucket)).await
}

/// A gateway over a fresh versioned bucket whose S3 requests go through a fault proxy.
pub async fn start_through_proxy() -> (Running, common::proxy::FaultProxy) {
    let proxy = common::proxy::FaultProxy::start(common::endpoint()).await;
    let bucket = common::bucket(true).await;
    let mut config = config(&bucket);
    config.s3.client = Some(aws_sdk_s3::Client::from_conf(
        common::config_for(proxy.endpoint()).build(),
    ));
    (start_with(config).await, proxy)
}

/// A gateway over a fresh bucket, with `adjust` applied to its configuration; and, when
/// `proxied`, its S3 requests through a fault proxy.
pub async fn start_configured(
    proxied: bool,
    adjust: impl FnOnce(&mut s3state::server::GatewayConfig),
) -> (Running, Option<common::proxy::FaultProxy>) {
    let bucket = common::bucket(true).await;
    let mut config = config(&bucket);
    let proxy = if proxied {
        let proxy = common::proxy::FaultProxy::start(common::endpoint()).await;
        config.s3.client = Some(aws_sdk_s3::Client::from_conf(
            common::config_for(proxy.endpoint()).build(),
        ));
        Some(proxy)
    } else {
        None
    };
    adjust(&mut config);
    (start_with(config).await, proxy)
}

/// Pipelines `GET /healthz` on `stream` and never reads an answer, until the gateway closes
/// the connection (true) or a few hundred megabytes were sent (false).
pub async fn flood_without_reading(mut stream: tokio::net::TcpStream) -> bool {
    let chunk = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n".repeat(1000);
    for _ in 0..10_000 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            return true;
        }
    }
    false
}

/// Sends a never-ending header on `stream`, one byte every 100 ms (each well within any
/// header timeout), until the gateway closes the connection (true) or a minute passed (false).
pub async fn dribble_headers(mut stream: tokio::net::TcpStream) -> bool {
    for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: "
        .iter()
        .cycle()
        .take(600)
    {
        if stream.write_all(&[*byte]).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Every key in `bucket`.
pub async fn list_keys(bucket: &str) -> Vec<String> {
    let listed = common::client()
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    listed
        .contents()
        .iter()
        .filter_map(|object| object.key().map(str::to_owned))
        .collect()
}

/// A connection to `addr` whose receive buffer is small, so that a few answers fill it.
pub async fn small_window_connection(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.connect(addr).await.unwrap()
}

/// The S3 key of state `name`.
pub fn key(name: &str) -> String {
    format!("{PREFIX}/{name}")
}

// ---------------------------------------------------------------------------------------
// A raw HTTP/1.1 client

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.text()))
    }
}

pub fn basic(credentials: (&str, &str)) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", credentials.0, credentials.1));
    format!("Basic {encoded}")
}

/// Sends one request (the path exactly as given, unescaped) and reads the whole reply.
pub async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    body: &[u8],
) -> Reply {
    send_with(addr, method, path, auth, &[], body).await
}

pub async fn send_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connecting");
    write_request(&mut stream, method, path, auth, extra_headers, body).await;
    read_reply(&mut stream).await
}

/// Sends one request; `None` when the connection is refused or closed without a complete
/// reply (a gateway stopping, or not started yet).
pub async fn try_send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    body: &[u8],
) -> Option<Reply> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    write_request(&mut stream, method, path, auth, &[], body).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut raw))
        .await
        .expect("the gateway answered within two minutes");
    raw.windows(4)
        .any(|w| w == b"\r\n\r\n")
        .then(|| parse_reply(&raw))
}

async fn write_request(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    extra_headers: &[(&str, &str)],
    body: &[u8],
) {
    let addr = stream.peer_addr().expect("a connected stream");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(credentials) = auth {
        head.push_str(&format!("Authorization: {}\r\n", basic(credentials)));
    }
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    // The server may answer (413, 401) and close before reading the whole body.
    let _ = stream.write_all(&request).await;
}

pub async fn read_reply(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut raw))
        .await
        .expect("the gateway answered within two minutes");
    parse_reply(&raw)
}

pub fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete reply: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&data[..end])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

/// A lock-info body as Terraform sends it.
pub fn lock_body(id: &str, who: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ID": id,
        "Operation": "OperationTypeApply",
        "Info": "",
        "Who": who,
        "Version": "1.15.5",
        "Created": "2026-11-25T10:00:00.123456789Z",
        "Path": ""
    }))
    .unwrap()
}

/// A state body with this lineage, serial and output `n`.
pub fn state_body(lineage: &str, serial: u64, n: u64) -> Vec<u8> {
    let mut state = s3state::State::new(s3state::state::COMPATIBLE_TERRAFORM_VERSION);
    state.lineage = lineage.into();
    state.serial = serial;
    state
        .outputs
        .insert("n".into(), s3state::OutputValue::new(&n));
    state.to_bytes()
}

// ---------------------------------------------------------------------------------------
// Terraform

/// A Terraform working directory.
pub struct Workdir {
    pub dir: PathBuf,
    /// Environment variables every Terraform command here gets (`TF_HTTP_PASSWORD`).
    pub env: Vec<(String, String)>,
}

/// The `backend "http"` block for state `name` on `gateway`, with `credentials`.
pub fn http_backend(
    gateway: &Running,
    name: &str,
    credentials: (&str, &str),
    extra: &str,
) -> String {
    let url = gateway.url(name);
    format!(
        r#"terraform {{
  backend "http" {{
    address        = "{url}"
    lock_address   = "{url}"
    unlock_address = "{url}"
    username       = "{user}"
    password       = "{password}"
    retry_wait_min = 0
    retry_wait_max = 1
{extra}  }}
}}
"#,
        user = credentials.0,
        password = credentials.1,
    )
}

impl Workdir {
    /// A directory with `backend` and `body` in main.tf, initialised.
    pub async fn new(backend: &str, body: &str) -> Workdir {
        Self::new_with_env(backend, body, &[]).await
    }

    /// A directory with `backend` and `body` in main.tf, whose Terraform commands get `env`,
    /// initialised.
    pub async fn new_with_env(backend: &str, body: &str, env: &[(&str, &str)]) -> Workdir {
        let workdir = Self::uninitialised(backend, body, env);
        workdir.ok(&["init", "-input=false", "-no-color"]).await;
        workdir
    }

    /// What `terraform init` says in such a directory (which is then removed).
    pub async fn try_new_with_env(backend: &str, body: &str, env: &[(&str, &str)]) -> Output {
        Self::uninitialised(backend, body, env)
            .run(&["init", "-input=false", "-no-color"])
            .await
    }

    fn uninitialised(backend: &str, body: &str, env: &[(&str, &str)]) -> Workdir {
        let dir = common::temp_dir("s3state-gw-tf");
        std::fs::write(dir.join("main.tf"), format!("{backend}\n{body}")).unwrap();
        Workdir {
            dir,
            env: env
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        }
    }

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let binary = terraform_binary();
        let mut command = tokio::process::Command::new(binary);
        command
            .args(args)
            .current_dir(&self.dir)
            .env("TF_CLI_CONFIG_FILE", binary.with_file_name("terraformrc"))
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .kill_on_drop(true);
        command
    }

    pub async fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .await
            .expect("running terraform")
    }

    pub async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "terraform {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    pub async fn apply(&self, vars: &[&str]) -> String {
        let mut args = vec!["apply", "-auto-approve", "-input=false", "-no-color"];
        args.extend(vars);
        self.ok(&args).await
    }

    pub async fn pull(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["state", "pull"]).await).unwrap()
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A configuration whose apply waits (inside a provisioner, holding the lock) until the file
/// `release` exists in the working directory.
pub const PAUSING_CONFIG: &str = r#"
resource "terraform_data" "pause" {
  triggers_replace = timestamp()
  provisioner "local-exec" {
    command = "while [ ! -f release ]; do sleep 0.1; done"
  }
}
output "done" {
  value = "yes"
}
"#;

/// Waits (at most a minute) until the lock object of `key` exists.
pub async fn wait_for_lock(bucket: &str, key: &str, child: &mut tokio::process::Child) {
    let lock_key = format!("{key}.tflock");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while common::client()
        .head_object()
        .bucket(bucket)
        .key(&lock_key)
        .send()
        .await
        .is_err()
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "terraform exited before locking"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "terraform did not take the lock within a minute"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `terraform apply` in the background; returns once it holds the lock of `key`.
pub async fn start_paused_apply(
    workdir: &Workdir,
    bucket: &str,
    key: &str,
) -> tokio::process::Child {
    let _ = std::fs::remove_file(workdir.dir.join("release"));
    let mut apply = workdir
        .command(&["apply", "-auto-approve", "-input=false", "-no-color"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_lock(bucket, key, &mut apply).await;
    apply
}

/// Lets a paused apply finish and asserts that it succeeded.
pub async fn release(workdir: &Workdir, apply: tokio::process::Child) {
    std::fs::write(workdir.dir.join("release"), "").unwrap();
    let output = apply.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "the paused apply failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
