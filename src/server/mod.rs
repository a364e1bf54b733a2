//! An HTTP gateway that speaks Terraform's `http` backend protocol and stores through
//! s3state: conditional writes that never overwrite a state changed behind their back,
//! Terraform's serial and lineage rules, the same `.tflock` lock Terraform's S3 backend takes,
//! history over HTTP, and no AWS credentials on the clients. `s3state serve` runs it.
//!
//! | request | does |
//! |---|---|
//! | `GET /<name>` | the state (200, with `Content-MD5`), or 404 |
//! | `POST /<name>[?ID=<lock id>]` | writes a state; under a lock only with the holder's ID |
//! | `LOCK /<name>` | takes `<key>.tflock`; 423 with the holder's lock info when held |
//! | `UNLOCK /<name>` | releases it (the holder's ID; without one: force-unlock, admin only) |
//! | `DELETE /<name>` | deletes the current snapshot (history keeps it) |
//! | `GET /_history/<name>[?limit=N]` | versions, newest first, with serial, author, operation and resource count (JSON) |
//! | `GET /_history/<name>?version=<id>` | one past snapshot |
//! | `GET /healthz`, `GET /metrics` | liveness; Prometheus metrics (admins and `metrics_users`) |
//!
//! `/<name>` is the object `<key_prefix>/<name>` of the configured bucket, so the same state
//! is reachable with Terraform's S3 backend (`key = "<key_prefix>/<name>"`, `use_lockfile =
//! true`), and both exclude each other through the one lock object.
//!
//! ```no_run
//! use s3state::server::{Gateway, GatewayConfig};
//! # async fn demo() -> Result<(), s3state::server::ServeError> {
//! let config = GatewayConfig::from_file("gateway.toml".as_ref())?;
//! let gateway = Gateway::bind(config).await?;
//! println!("listening on {}", gateway.local_addr());
//! gateway.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```

mod audit;
mod auth;
mod config;
mod listener;
mod metrics;
mod names;
mod oidc;
mod protocol;
mod ui;

pub use auth::hash_password;
pub use config::{
    ClaimRule, ConfigError, GatewayConfig, Grant, Limits, OidcIssuerConfig, Role, S3Settings,
    TlsSettings, TokenAlgorithm, UserConfig,
};
pub use protocol::{
    GatewayStore, LOCK_STATE_ETAG_KEY, LOCK_STATE_LINEAGE_KEY, LOCK_STATE_SERIAL_KEY,
    STATE_LOCK_NONCE_KEY, StateMethod, StateRequest, StateResponse, USER_KEY, handle_state_request,
};

use crate::s3::S3Backend;
use audit::{Audit, AuditLog, Event};
use auth::{AuthOutcome, Authenticator};
use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::Metrics;
use protocol::{HeaderQuery, text};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The bucket could not be used (missing, unversioned, no credentials, unreachable).
    #[error("the state store: {0}")]
    Store(#[from] crate::Error),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

pub(crate) struct Shared {
    backend: S3Backend,
    /// `[encryption]` (with `TF_ENCRYPTION` merged over it): states are stored as OpenTofu's
    /// envelope, and Terraform's `http` backend sees plaintext.
    encryption: Option<Arc<crate::encryption::StateEncryption>>,
    key_prefix: String,
    auth: Authenticator,
    metrics: Metrics,
    /// Writes in progress, which a graceful shutdown waits for (they run to completion even
    /// when their client disconnects or times out).
    writes: tokio_util::task::TaskTracker,
    limits: Limits,
    audit: Arc<AuditLog>,
    /// Users who may read `/metrics` besides admins.
    metrics_users: Vec<String>,
    /// Writes in progress by what they ask (see [`in_flight_key`]): a retry of one gets its
    /// answer rather than racing it.
    in_flight: Mutex<HashMap<[u8; 32], Pending>>,
}

/// The answer of a write in progress, once it has one.
type Pending = tokio::sync::watch::Receiver<Option<Arc<Answer>>>;

/// A gateway bound to its address, ready to [`Gateway::run`].
pub struct Gateway {
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Gateway {
    /// Validates `config`, opens the bucket (checking its versioning unless turned off), and
    /// binds the listen address (port 0 picks a free one; see [`Gateway::local_addr`]).
    pub async fn bind(config: GatewayConfig) -> Result<Gateway, ServeError> {
        config.validate()?;
        let tls = config.tls.as_ref().map(config::load_tls).transpose()?;
        let auth = Authenticator::new(&config)?;
        let audit = Arc::new(AuditLog::open(config.audit_log.as_deref())?);
        let s3 = &config.s3;
        let mut builder = crate::S3Builder::new()
            .with_bucket(&s3.bucket)
            // The backend's own key is unused: the gateway addresses states by name.
            .with_key("terraform.tfstate")
            .with_versioning_required(s3.require_versioning.unwrap_or(true));
        if let Some(client) = &s3.client {
            builder = builder.with_client(client.clone());
        }
        if let Some(region) = &s3.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &s3.endpoint_url {
            builder = builder.with_endpoint_url(endpoint);
        }
        if let Some(path_style) = s3.path_style {
            builder = builder.with_path_style(path_style);
        }
        if let Some(profile) = &s3.profile {
            builder = builder.with_profile(profile);
        }
        // Bounds on every S3, DynamoDB and STS request: without them a request that gets no
        // answer would hold its state's lock, and the gateway request, forever.
        if s3.sets_timeouts() {
            builder = builder.with_timeouts(s3.timeouts());
        }
        #[cfg(feature = "dynamodb")]
        {
            if let Some(table) = &s3.dynamodb_table {
                builder = builder.with_dynamodb_table(table);
            }
            if let Some(endpoint) = &s3.dynamodb_endpoint_url {
                builder = builder.with_dynamodb_endpoint_url(endpoint);
            }
            if let Some(client) = &s3.dynamodb_client {
                builder = builder.with_dynamodb_client(client.clone());
            }
        }
        // OpenTofu state encryption at rest: `[encryption]`, with TF_ENCRYPTION merged over
        // it as OpenTofu merges them (so a passphrase can stay out of the file).
        let encryption = crate::encryption::StateEncryption::from_env(config.encryption.clone())
            .map_err(|err| ConfigError::Invalid {
                field: "encryption".into(),
                message: err.to_string(),
            })?
            .map(Arc::new);
        let backend = builder.build_backend().await?;
        // A lock table that is missing or unreachable fails here, not at every LOCK.
        #[cfg(feature = "dynamodb")]
        if s3.dynamodb_table.is_some() {
            let check = names::state_key(&s3.key_prefix, ".s3state-gateway-start");
            backend.store_at_key(check).stored_digest().await?;
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
        Ok(Gateway {
            listener,
            local_addr,
            tls,
            shared: Arc::new(Shared {
                backend,
                encryption,
                key_prefix: config.s3.key_prefix.clone(),
                auth,
                metrics: Metrics::default(),
                writes: tokio_util::task::TaskTracker::new(),
                limits: config.limits.clone(),
                audit,
                metrics_users: config.metrics_users.clone(),
                in_flight: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether it speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` completes; then stops accepting connections, finishes the
    /// requests in flight (writes always run to completion) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let shared = self.shared;
        tracing::info!(addr = %self.local_addr, tls = self.tls.is_some(),
            bucket = %shared.backend.bucket(), prefix = %shared.key_prefix, "gateway listening");
        let router = router(Arc::clone(&shared));
        listener::run(
            self.listener,
            self.tls,
            router,
            shared.limits.clone(),
            shared.writes.clone(),
            shutdown,
        )
        .await;
    }
}

/// Binds and runs a gateway until `shutdown` completes (see [`Gateway`]).
pub async fn serve(
    config: GatewayConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    Gateway::bind(config).await?.run(shutdown).await;
    Ok(())
}

fn router(shared: Arc<Shared>) -> axum::Router {
    let limits = shared.limits.clone();
    axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/ui/style.css", axum::routing::get(ui::stylesheet))
        .fallback(dispatch)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(
            limits.max_body_bytes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            deadline,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            observe,
        ))
        .layer(axum::middleware::from_fn(ui::secure))
        .with_state(shared)
}

/// Set by [`dispatch`] once a request's work has started (its body received): past that, a
/// timeout answers 503 and the work goes on.
#[derive(Clone, Default)]
struct Started(Arc<AtomicBool>);

impl Started {
    fn set(request_extensions: &axum::http::Extensions) {
        if let Some(started) = request_extensions.get::<Started>() {
            started.0.store(true, Ordering::SeqCst);
        }
    }
}

/// `limits.request_timeout_secs`. A request whose body is still arriving is 408: nothing was
/// done. One whose work has started is 503 with `Retry-After`, which Terraform's client
/// (go-retryablehttp) retries, whereas it gives up on 408: the work runs to completion (LOCK,
/// POST, UNLOCK and DELETE in a task of their own), and the retry either gets its answer
/// (still running: see [`in_flight_key`]) or meets the idempotent path (a repeated LOCK of the
/// same lock info by the same principal is 200, a repeated POST of the same state "unchanged").
async fn deadline(
    AxumState(shared): AxumState<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Started::default();
    request.extensions_mut().insert(started.clone());
    match tokio::time::timeout(shared.limits.request_timeout(), next.run(request)).await {
        Ok(response) => response,
        Err(_) if started.0.load(Ordering::SeqCst) => {
            let mut response = text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the state store is slow: this request is still being carried out; \
                 retry the same request for its outcome",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            response
        }
        Err(_) => text(
            StatusCode::REQUEST_TIMEOUT,
            "the request took longer than limits.request_timeout_secs to arrive; nothing was done",
        ),
    }
}

/// Counts every request (method, status, latency) for `/metrics`. Logs no body.
async fn observe(
    AxumState(shared): AxumState<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let method = match method.as_str() {
        "GET" | "POST" | "PUT" | "DELETE" | "LOCK" | "UNLOCK" | "HEAD" => method.as_str(),
        _ => "other",
    };
    shared
        .metrics
        .observe(method, response.status().as_u16(), started.elapsed());
    response
}

fn unauthorized() -> Response {
    let mut response = text(StatusCode::UNAUTHORIZED, "authentication required");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"s3state\""),
    );
    response
}

fn too_many_failed_logins(retry_after: u64) -> Response {
    let mut response = text(
        StatusCode::TOO_MANY_REQUESTS,
        "too many failed logins from this address; retry later",
    );
    if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn forbidden(role: Role, name: &str) -> Response {
    text(
        StatusCode::FORBIDDEN,
        format!(
            "this credential lacks the {} role on {name:?}",
            role.as_str()
        ),
    )
}

async fn dispatch(AxumState(shared): AxumState<Arc<Shared>>, request: Request) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let audit = Audit::new(Arc::clone(&shared.audit), client, request.method());
    let refused = |principal: Option<&str>, state: Option<&str>, outcome: &str| {
        audit.record(Event {
            principal,
            state,
            outcome,
            ..Event::default()
        });
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    let principal = match shared
        .auth
        .authenticate(authorization, client.map(|addr| addr.ip()))
        .await
    {
        AuthOutcome::Ok(principal) => principal,
        AuthOutcome::Missing => return unauthorized(),
        AuthOutcome::Unauthenticated => {
            refused(None, None, "refused: unauthenticated");
            return unauthorized();
        }
        AuthOutcome::TokenRefused(refusal) => {
            refused(None, None, &format!("refused: {}", refusal.as_str()));
            return unauthorized();
        }
        AuthOutcome::Throttled(retry_after) => {
            refused(None, None, "refused: too many failed logins");
            return too_many_failed_logins(retry_after);
        }
    };
    let path = request.uri().path().to_owned();
    if ui::is_ui_path(&path) {
        Started::set(request.extensions());
        let ui = ui::UiRequest {
            backend: &shared.backend,
            key_prefix: &shared.key_prefix,
            principal: &principal,
            audit: &audit,
            encryption: shared.encryption.as_ref(),
        };
        return ui::handle(ui, request).await;
    }
    let query: HeaderQuery = match request.uri().query() {
        None => HeaderQuery::default(),
        Some(query) => match serde_urlencoded_query(query) {
            Ok(query) => query,
            Err(message) => return text(StatusCode::BAD_REQUEST, message),
        },
    };
    if path == "/metrics" && request.method() == Method::GET {
        // Request counts over every state: admins (on every state) and metrics_users only.
        if principal.role_on("") < Some(Role::Admin)
            && !shared.metrics_users.contains(&principal.name)
        {
            refused(Some(&principal.name), None, "refused: metrics");
            return text(
                StatusCode::FORBIDDEN,
                "/metrics is for admins and the configuration's metrics_users",
            );
        }
        return (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            shared.metrics.render(),
        )
            .into_response();
    }
    let (history, raw_name) = match path.strip_prefix("/_history/") {
        Some(rest) => (true, format!("/{rest}")),
        None => (false, path.clone()),
    };
    let name = match names::state_name(&raw_name) {
        Ok(name) => name.to_owned(),
        Err(problem) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("not a valid state name: {problem}"),
            );
        }
    };
    let needed = match request.method().as_str() {
        "GET" | "HEAD" => Role::Read,
        _ if history => return text(StatusCode::METHOD_NOT_ALLOWED, "history is read-only"),
        "POST" | "PUT" | "LOCK" | "UNLOCK" | "DELETE" => Role::Write,
        _ => {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "use GET, POST, LOCK, UNLOCK or DELETE",
            );
        }
    };
    if principal.role_on(&name) < Some(needed) {
        refused(
            Some(&principal.name),
            Some(&name),
            &format!("refused: no {} role", needed.as_str()),
        );
        return forbidden(needed, &name);
    }
    let store = shared
        .backend
        .store_at_key(names::state_key(&shared.key_prefix, &name));
    let method = request.method().clone();
    if history || method == Method::GET || method == Method::HEAD {
        Started::set(request.extensions());
        if history {
            return protocol::history(store, shared.encryption.as_ref(), &query).await;
        }
        return protocol::get(&store, shared.encryption.as_ref()).await;
    }
    let started = request.extensions().clone();
    let md5 = protocol::md5_header(request.headers());
    let body = match axum::body::to_bytes(request.into_body(), shared.limits.max_body_bytes).await {
        Ok(body) => body,
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is larger than {} bytes (limits.max_body_bytes), or was cut off; nothing was written",
                    shared.limits.max_body_bytes
                ),
            );
        }
    };
    let request = protocol::StateRequest {
        method: match method.as_str() {
            "POST" | "PUT" => protocol::StateMethod::Update,
            "LOCK" => protocol::StateMethod::Lock,
            "UNLOCK" => protocol::StateMethod::Unlock,
            _ => protocol::StateMethod::Delete,
        },
        admin: principal.role_on(&name) >= Some(Role::Admin),
        state_name: name,
        principal: principal.name.clone(),
        lock_id: query.id,
        body,
        content_md5: md5,
    };
    // Past this point the operation runs to completion even if the client goes away or the
    // request times out, and a graceful shutdown waits for it. The same request sent again
    // while it runs (a client's retry after a timeout) waits for its answer.
    Started::set(&started);
    let key = in_flight_key(&request);
    let mut answer = {
        let mut in_flight = shared.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        match in_flight.get(&key) {
            Some(running) => running.clone(),
            None => {
                let (sender, receiver) = tokio::sync::watch::channel(None);
                in_flight.insert(key, receiver.clone());
                let task_shared = Arc::clone(&shared);
                shared.writes.spawn(async move {
                    let shared = task_shared;
                    let _done = Forget(&shared, key);
                    let lock_wait = shared.limits.lock_wait();
                    let response = protocol::answer(
                        &shared.metrics,
                        &audit,
                        &store,
                        shared.encryption.as_ref(),
                        request,
                        lock_wait,
                    )
                    .await;
                    let _ = sender.send(Some(Arc::new(Answer::of(response).await)));
                });
                receiver
            }
        }
    };
    match answer.wait_for(Option::is_some).await {
        Ok(answer) => answer
            .as_ref()
            .map_or_else(internal_error, |a| a.response()),
        Err(_) => internal_error(),
    }
}

fn internal_error() -> Response {
    tracing::error!("a request handler failed");
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// A write's answer, kept for the retries that arrive while it runs.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
}

impl Answer {
    async fn of(response: Response) -> Answer {
        let (parts, body) = response.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default(),
        }
    }

    fn response(&self) -> Response {
        let mut response = (self.status, self.body.clone()).into_response();
        *response.headers_mut() = self.headers.clone();
        response
    }
}

/// Takes a finished write out of [`Shared::in_flight`], however its task ends.
struct Forget<'a>(&'a Shared, [u8; 32]);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.1);
    }
}

/// What makes two write requests the same request: principal, state, method, lock ID and body
/// (a SHA-256 over them).
fn in_flight_key(request: &protocol::StateRequest) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for part in [
        request.principal.as_bytes(),
        request.state_name.as_bytes(),
        format!("{:?}", request.method).as_bytes(),
        request.lock_id.as_deref().unwrap_or("").as_bytes(),
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.update(&request.body);
    hasher.finalize().into()
}

fn serde_urlencoded_query(query: &str) -> Result<HeaderQuery, String> {
    let uri: axum::http::Uri = format!("/?{query}")
        .parse()
        .map_err(|_| "the query string is not valid".to_owned())?;
    axum::extract::Query::<HeaderQuery>::try_from_uri(&uri)
        .map(|axum::extract::Query(query)| query)
        .map_err(|error| format!("the query string is not valid: {error}"))
}

/// The `s3state serve` flags. S3 settings (`--bucket`, `--region`, `--endpoint-url`,
/// `--path-style`, `--profile`) are the command's global flags, passed in as [`S3Flags`].
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct ServeArgs {
    /// The configuration file (TOML, or JSON when it ends in .json).
    #[cfg_attr(feature = "cli", arg(long, short = 'c', value_name = "FILE"))]
    pub config: Option<PathBuf>,
    /// The address to listen on (default 127.0.0.1:8750).
    #[cfg_attr(feature = "cli", arg(long, value_name = "ADDR"))]
    pub listen: Option<SocketAddr>,
    /// Allow a non-loopback address without TLS (behind a TLS-terminating proxy).
    #[cfg_attr(feature = "cli", arg(long))]
    pub insecure_listen: bool,
    /// TLS certificate chain (PEM).
    #[cfg_attr(feature = "cli", arg(long, value_name = "PEM", requires = "tls_key"))]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[cfg_attr(feature = "cli", arg(long, value_name = "PEM", requires = "tls_cert"))]
    pub tls_key: Option<PathBuf>,
    /// The key prefix states live under: `/<name>` is the object `<prefix>/<name>`.
    #[cfg_attr(feature = "cli", arg(long, value_name = "PREFIX"))]
    pub key_prefix: Option<String>,
    /// Where audit lines go (JSON, one per line): this file, appended to, or `-` for
    /// standard error (the default).
    #[cfg_attr(feature = "cli", arg(long, value_name = "FILE"))]
    pub audit_log: Option<PathBuf>,
    /// Read a password on standard input, print its argon2 hash for the configuration's
    /// password_hash, and exit.
    #[cfg_attr(feature = "cli", arg(long))]
    pub hash_password: bool,
}

/// S3 settings given as flags, which override the configuration file.
#[derive(Debug, Clone, Default)]
pub struct S3Flags {
    /// `--bucket`.
    pub bucket: Option<String>,
    /// `--region`.
    pub region: Option<String>,
    /// `--endpoint-url`.
    pub endpoint_url: Option<String>,
    /// `--path-style`.
    pub path_style: Option<bool>,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--dynamodb-table`.
    pub dynamodb_table: Option<String>,
    /// `--dynamodb-endpoint-url`.
    pub dynamodb_endpoint_url: Option<String>,
    /// `--connect-timeout`.
    pub connect_timeout: Option<std::time::Duration>,
    /// `--read-timeout`.
    pub read_timeout: Option<std::time::Duration>,
    /// `--operation-attempt-timeout`.
    pub operation_attempt_timeout: Option<std::time::Duration>,
    /// `--operation-timeout`.
    pub operation_timeout: Option<std::time::Duration>,
}

impl ServeArgs {
    /// The configuration: the file (if any), then these flags and `s3` on top.
    pub fn config(&self, s3: &S3Flags) -> Result<GatewayConfig, ConfigError> {
        let mut config = match &self.config {
            Some(path) => GatewayConfig::from_file(path)?,
            None => GatewayConfig::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if self.insecure_listen {
            config.insecure_listen = true;
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls = Some(TlsSettings {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        if let Some(prefix) = &self.key_prefix {
            config.s3.key_prefix = prefix.clone();
        }
        if let Some(audit_log) = &self.audit_log {
            config.audit_log = Some(audit_log.clone());
        }
        if let Some(bucket) = &s3.bucket {
            config.s3.bucket = bucket.clone();
        }
        // A flag given overrides the file's setting; one not given keeps it.
        override_with(&mut config.s3.region, &s3.region);
        override_with(&mut config.s3.endpoint_url, &s3.endpoint_url);
        override_with(&mut config.s3.path_style, &s3.path_style);
        override_with(&mut config.s3.profile, &s3.profile);
        override_with(&mut config.s3.dynamodb_table, &s3.dynamodb_table);
        override_with(
            &mut config.s3.dynamodb_endpoint_url,
            &s3.dynamodb_endpoint_url,
        );
        override_with(&mut config.s3.connect_timeout, &s3.connect_timeout);
        override_with(&mut config.s3.read_timeout, &s3.read_timeout);
        override_with(
            &mut config.s3.operation_attempt_timeout,
            &s3.operation_attempt_timeout,
        );
        override_with(&mut config.s3.operation_timeout, &s3.operation_timeout);
        Ok(config)
    }
}

/// Sets `setting` to `flag` when the flag was given.
fn override_with<T: Clone>(setting: &mut Option<T>, flag: &Option<T>) {
    if flag.is_some() {
        setting.clone_from(flag);
    }
}

/// `s3state serve`: runs the gateway until Ctrl-C or SIGTERM. Exit code 0 after a clean
/// shutdown, 1 when it cannot start.
pub async fn run_cli(args: ServeArgs, s3: S3Flags) -> std::process::ExitCode {
    use std::process::ExitCode;
    if args.hash_password {
        let mut password = String::new();
        if std::io::stdin().read_line(&mut password).is_err() {
            eprintln!("error: cannot read a password on standard input");
            return ExitCode::from(1);
        }
        let password = password.trim_end_matches(['\r', '\n']);
        if password.is_empty() {
            eprintln!("error: the password is empty");
            return ExitCode::from(1);
        }
        println!("{}", hash_password(password));
        return ExitCode::SUCCESS;
    }
    let gateway = match args.config(&s3) {
        Ok(config) => Gateway::bind(config).await,
        Err(error) => Err(error.into()),
    };
    let gateway = match gateway {
        Ok(gateway) => gateway,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "s3state gateway listening on {}://{}",
        if gateway.is_tls() { "https" } else { "http" },
        gateway.local_addr()
    );
    gateway.run(shutdown_signal()).await;
    ExitCode::SUCCESS
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
