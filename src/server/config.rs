//! The gateway's configuration: a TOML or JSON file, overridden by flags, checked before
//! anything listens.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What can be wrong with a gateway configuration. Every variant names the setting (or file)
/// at fault and says what to do; none of them contains a password or a hash.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read the gateway configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or JSON, or has unknown or mistyped settings.
    #[error("the gateway configuration {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (line and column included).
        message: String,
    },
    /// A setting has a value that cannot work.
    #[error("gateway setting `{field}`: {message}")]
    Invalid {
        /// The setting, as written in the file (`tls.cert`, `users[2].grants`).
        field: String,
        /// What is wrong, and what to do.
        message: String,
    },
    /// The listen address is not a loopback address, there is no TLS, and plaintext on the
    /// network was not explicitly allowed.
    #[error(
        "refusing to listen on {addr} without TLS: passwords and states would cross the network \
         in clear text. Configure [tls] cert and key (PEM files), listen on 127.0.0.1, or pass \
         --insecure-listen (insecure_listen = true) if a TLS-terminating proxy is in front"
    )]
    InsecureListen {
        /// The address.
        addr: SocketAddr,
    },
    /// A TLS certificate or key file could not be used.
    #[error("TLS {what} {path}: {message}")]
    Tls {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The PEM file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A role on the states under a name prefix. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `GET` of states, history and versions.
    Read,
    /// Also `POST` (update), `LOCK`, `UNLOCK` with the holder's ID, and `DELETE`.
    Write,
    /// Also force-unlock: `UNLOCK` without the holder's ID (Terraform's `force-unlock`).
    Admin,
}

impl Role {
    /// The role's name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// One grant: `role` on every state whose name is `prefix` or starts with `prefix/`
/// (an empty prefix is every state). The longest matching prefix decides.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// A state-name prefix, matched on whole path segments: `team-a` covers `team-a` and
    /// `team-a/network`, not `team-ab`. Empty for all states.
    #[serde(default)]
    pub prefix: String,
    /// What the credential may do there.
    pub role: Role,
}

/// One credential for HTTP basic authentication (Terraform's `username`/`password`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user name.
    pub name: String,
    /// An argon2 password hash in PHC format (`$argon2id$v=19$...`), as
    /// `s3state serve --hash-password` prints.
    #[serde(default)]
    pub password_hash: Option<String>,
    /// Or: the name of an environment variable holding the password itself, read once at
    /// start-up.
    #[serde(default)]
    pub password_env: Option<String>,
    /// What this credential may do, by state-name prefix.
    pub grants: Vec<Grant>,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("password_env", &self.password_env)
            .field("grants", &self.grants)
            .finish()
    }
}

/// Where the states live.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    /// The bucket (required). Versioning must be enabled unless `require_versioning = false`.
    #[serde(default)]
    pub bucket: String,
    /// Prepended to every state name: `/<name>` is the object `<key_prefix>/<name>`. Empty
    /// puts states at the bucket's root.
    #[serde(default)]
    pub key_prefix: String,
    /// The AWS region (else `AWS_REGION` or the profile).
    #[serde(default)]
    pub region: Option<String>,
    /// A custom endpoint (LocalStack, MinIO).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Path-style addressing.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// An AWS profile.
    #[serde(default)]
    pub profile: Option<String>,
    /// Refuse an unversioned bucket (default true: history is the point).
    #[serde(default)]
    pub require_versioning: Option<bool>,
    /// Terraform's DynamoDB lock table (`dynamodb_table`), for a bucket whose S3-backend
    /// Terraforms lock through it. Every lock the gateway takes then also takes the table's
    /// lock item, a lock held only in the table refuses the gateway's locks and writes, and
    /// the state digest is kept in the table after every write and compared on every read,
    /// as Terraform does. Needs the `dynamodb` feature (on with `cli`).
    #[serde(default)]
    pub dynamodb_table: Option<String>,
    /// The DynamoDB endpoint (else `AWS_ENDPOINT_URL_DYNAMODB`, else AWS's).
    #[serde(default)]
    pub dynamodb_endpoint_url: Option<String>,
    /// How long opening a connection to S3, DynamoDB or STS may take, such as `"5s"`
    /// ([`crate::Timeouts::connect`]; default 5 s).
    #[serde(default, deserialize_with = "duration")]
    pub connect_timeout: Option<Duration>,
    /// How long a request may wait for the start of its answer, and a body between two
    /// chunks, such as `"30s"` ([`crate::Timeouts::read`]; default 30 s).
    #[serde(default, deserialize_with = "duration")]
    pub read_timeout: Option<Duration>,
    /// How long one attempt of a request may take, such as `"60s"`
    /// ([`crate::Timeouts::operation_attempt`]; default 60 s).
    #[serde(default, deserialize_with = "duration")]
    pub operation_attempt_timeout: Option<Duration>,
    /// How long a request may take with its retries, such as `"2m"`
    /// ([`crate::Timeouts::operation`]; default 120 s). A gateway request waiting on S3
    /// longer than `limits.request_timeout_secs` is answered 408 first; a write that has
    /// started still finishes, or fails, within this bound.
    #[serde(default, deserialize_with = "duration")]
    pub operation_timeout: Option<Duration>,
    /// Use this client instead of building one from the settings above (for embedding and
    /// tests). Not read from files.
    #[serde(skip)]
    pub client: Option<aws_sdk_s3::Client>,
    /// Use this DynamoDB client for `dynamodb_table` (for embedding and tests). Not read from
    /// files.
    #[cfg(feature = "dynamodb")]
    #[serde(skip)]
    pub dynamodb_client: Option<aws_sdk_dynamodb::Client>,
}

/// A timeout written as the `S3STATE_*_TIMEOUT` variables take it: `"30s"`, `"2m"`, `"1m30s"`.
fn duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    crate::Timeouts::parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

impl S3Settings {
    /// The [`crate::Timeouts`] these settings give, each unset one taking its default.
    pub fn timeouts(&self) -> crate::Timeouts {
        let defaults = crate::Timeouts::default();
        crate::Timeouts {
            connect: self.connect_timeout.unwrap_or(defaults.connect),
            read: self.read_timeout.unwrap_or(defaults.read),
            operation_attempt: self
                .operation_attempt_timeout
                .unwrap_or(defaults.operation_attempt),
            operation: self.operation_timeout.unwrap_or(defaults.operation),
        }
    }

    /// Whether any timeout is set (else a client given in `client` keeps its own).
    pub(crate) fn sets_timeouts(&self) -> bool {
        self.connect_timeout.is_some()
            || self.read_timeout.is_some()
            || self.operation_attempt_timeout.is_some()
            || self.operation_timeout.is_some()
    }
}

/// TLS from PEM files (rustls).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The largest request body accepted, in bytes (default 32 MiB); larger is 413.
    pub max_body_bytes: usize,
    /// How long one request may take, body upload included (default 60 s); then 408. A write
    /// that has started is finished regardless.
    pub request_timeout_secs: u64,
    /// How long a client may take to send a request's headers, and the TLS handshake
    /// (default 10 s): slow-loris clients are disconnected.
    pub header_timeout_secs: u64,
    /// How long a client may take to accept the next 64 KiB of an answer (default 30 s). A
    /// client that stops reading, or reads slower than that, is disconnected and its
    /// connection slot freed.
    pub write_timeout_secs: u64,
    /// Connections served at once (default 256); more wait to be accepted. A connection idle
    /// between requests is closed after `header_timeout_secs`.
    pub max_connections: usize,
    /// Failed logins (wrong or unknown credentials) one client address may make per minute
    /// (default 10); past that, requests needing a password check are answered 429 with
    /// `Retry-After` until the minute is over. Credentials already verified keep working.
    pub failed_logins_per_minute: u32,
    /// Password checks (argon2, deliberately slow) run at once, on blocking threads
    /// (default: the number of CPUs). More wait their turn.
    pub max_concurrent_logins: usize,
    /// How long a graceful shutdown waits for requests in flight (default 30 s).
    pub shutdown_grace_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 32 * 1024 * 1024,
            request_timeout_secs: 60,
            header_timeout_secs: 10,
            write_timeout_secs: 30,
            max_connections: 256,
            failed_logins_per_minute: 10,
            max_concurrent_logins: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2),
            shutdown_grace_secs: 30,
        }
    }
}

impl Limits {
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub(crate) fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_secs(self.write_timeout_secs)
    }
}

/// Everything the gateway needs. Build it with [`GatewayConfig::from_file`] (then adjust
/// fields, as the flags do) or in code, and check it with [`GatewayConfig::validate`]
/// ([`crate::server::Gateway::bind`] does).
///
/// ```toml
/// listen = "127.0.0.1:8750"
///
/// [s3]
/// bucket = "tfstate"
/// key_prefix = "gateway"
/// region = "eu-west-1"
///
/// [[users]]
/// name = "ci"
/// password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
/// grants = [{ prefix = "", role = "write" }]
///
/// [[users]]
/// name = "ops"
/// password_env = "GATEWAY_OPS_PASSWORD"
/// grants = [{ prefix = "", role = "admin" }]
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where to listen (default `127.0.0.1:8750`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Allow a non-loopback address without TLS (behind a TLS-terminating proxy).
    #[serde(default)]
    pub insecure_listen: bool,
    /// TLS; without it the gateway speaks plain HTTP (loopback only, unless
    /// `insecure_listen`).
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// The bucket and prefix.
    #[serde(default)]
    pub s3: S3Settings,
    /// The credentials. At least one is required unless `auth_disabled`.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Turn authentication off (every request is admin). Only on a loopback address.
    #[serde(default)]
    pub auth_disabled: bool,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Where audit lines go: one JSON object per line (time, principal, client address,
    /// method, state, serial, version id, lock id, outcome) for every state request and every
    /// refused login or grant. Standard error when unset (or `-`); otherwise this file,
    /// appended to. Never a password, a hash or state content.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// Users who may read `/metrics` besides admins (users with the admin role on every
    /// state: a grant with an empty prefix). For a Prometheus scraper's credential.
    #[serde(default)]
    pub metrics_users: Vec<String>,
    /// OpenTofu state encryption at rest, as OpenTofu's `encryption` block
    /// (`[encryption.key_provider.pbkdf2.main]`, `[encryption.method.aes_gcm.main]`,
    /// `[encryption.state]` with `method`, `fallback`, `enforced`); `TF_ENCRYPTION` is merged
    /// over it. States are stored as OpenTofu's envelope while Terraform's `http` backend
    /// sees plaintext; with `enforced`, plaintext is never stored.
    #[serde(default)]
    pub encryption: Option<crate::encryption::EncryptionConfig>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8750))
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: default_listen(),
            insecure_listen: false,
            tls: None,
            s3: S3Settings::default(),
            users: Vec::new(),
            auth_disabled: false,
            limits: Limits::default(),
            audit_log: None,
            metrics_users: Vec::new(),
            encryption: None,
        }
    }
}

/// A TOML error as "line L, column C: message". toml's own text quotes the offending line,
/// which may hold a passphrase (`[encryption]`) or a password hash: it is printed and logged.
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}

impl GatewayConfig {
    /// Reads a configuration file: JSON when its name ends in `.json`, TOML otherwise. Unknown
    /// settings are errors (a typo must not silently drop a grant). Not yet validated.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_str_at(&text, path)
    }

    /// Parses configuration text; `path` decides the format and names the source in errors.
    pub fn from_str_at(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse {
            path: path.to_owned(),
            message,
        };
        if path.extension().is_some_and(|ext| ext == "json") {
            serde_json::from_str(text).map_err(|err| parse_error(err.to_string()))
        } else {
            toml::from_str(text).map_err(|err| parse_error(toml_error(text, &err)))
        }
    }

    /// Checks everything that can be checked without the network: the bucket and prefix,
    /// TLS files (loaded), the listen address against TLS, the users and their grants.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            field: field.to_owned(),
            message,
        };
        if self.s3.bucket.is_empty() {
            return Err(invalid(
                "s3.bucket",
                "the bucket is required (in [s3], or --bucket / S3STATE_BUCKET)".into(),
            ));
        }
        if self.s3.bucket.contains('/') {
            return Err(invalid(
                "s3.bucket",
                format!(
                    "{:?} contains '/'; put the path in s3.key_prefix",
                    self.s3.bucket
                ),
            ));
        }
        if let Some(table) = &self.s3.dynamodb_table {
            if table.trim().is_empty() {
                return Err(invalid(
                    "s3.dynamodb_table",
                    "the table name is empty".into(),
                ));
            }
            if !cfg!(feature = "dynamodb") {
                return Err(invalid(
                    "s3.dynamodb_table",
                    "this build has no DynamoDB support (cargo feature `dynamodb`)".into(),
                ));
            }
        }
        let prefix = &self.s3.key_prefix;
        if !prefix.is_empty()
            && let Err(problem) = super::names::check_segments(prefix)
        {
            return Err(invalid("s3.key_prefix", format!("{prefix:?}: {problem}")));
        }
        if let Some(tls) = &self.tls {
            load_tls(tls)?;
        }
        if self.tls.is_none() && !self.insecure_listen && !self.listen.ip().is_loopback() {
            return Err(ConfigError::InsecureListen { addr: self.listen });
        }
        if self.auth_disabled {
            if !self.listen.ip().is_loopback() {
                return Err(invalid(
                    "auth_disabled",
                    format!(
                        "authentication can be turned off only on a loopback address, not {}",
                        self.listen
                    ),
                ));
            }
        } else if self.users.is_empty() {
            return Err(invalid(
                "users",
                "no credentials are configured; add [[users]] with a password_hash \
                 (s3state serve --hash-password prints one) or password_env"
                    .into(),
            ));
        }
        let limits = &self.limits;
        for (field, zero) in [
            ("limits.max_body_bytes", limits.max_body_bytes == 0),
            (
                "limits.request_timeout_secs",
                limits.request_timeout_secs == 0,
            ),
            (
                "limits.header_timeout_secs",
                limits.header_timeout_secs == 0,
            ),
            ("limits.write_timeout_secs", limits.write_timeout_secs == 0),
            ("limits.max_connections", limits.max_connections == 0),
            (
                "limits.failed_logins_per_minute",
                limits.failed_logins_per_minute == 0,
            ),
            (
                "limits.max_concurrent_logins",
                limits.max_concurrent_logins == 0,
            ),
        ] {
            if zero {
                return Err(invalid(field, "must be greater than zero".into()));
            }
        }
        for (index, name) in self.metrics_users.iter().enumerate() {
            if !self.users.iter().any(|user| &user.name == name) {
                return Err(invalid(
                    &format!("metrics_users[{index}]"),
                    format!("{name:?} is not a configured user"),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (index, user) in self.users.iter().enumerate() {
            let field = |name: &str| format!("users[{index}].{name}");
            if user.name.is_empty() || user.name.contains(':') {
                return Err(invalid(
                    &field("name"),
                    "a user name must be non-empty and must not contain ':' (HTTP basic auth)"
                        .into(),
                ));
            }
            if !seen.insert(user.name.as_str()) {
                return Err(invalid(
                    &field("name"),
                    format!("the user {:?} is configured twice", user.name),
                ));
            }
            match (&user.password_hash, &user.password_env) {
                (Some(hash), None) => {
                    if let Err(err) = argon2::PasswordHash::new(hash) {
                        return Err(invalid(
                            &field("password_hash"),
                            format!(
                                "not an argon2 hash in PHC format ({err}); generate one with \
                                 s3state serve --hash-password"
                            ),
                        ));
                    }
                }
                (None, Some(var)) => match std::env::var(var) {
                    Ok(value) if !value.is_empty() => {}
                    _ => {
                        return Err(invalid(
                            &field("password_env"),
                            format!("the environment variable {var} is not set or empty"),
                        ));
                    }
                },
                _ => {
                    return Err(invalid(
                        &field("password_hash"),
                        "give exactly one of password_hash and password_env".into(),
                    ));
                }
            }
            if user.grants.is_empty() {
                return Err(invalid(
                    &field("grants"),
                    "a user without grants can do nothing; add grants = [{ prefix = \"\", role = \"read\" }]"
                        .into(),
                ));
            }
            for grant in &user.grants {
                if !grant.prefix.is_empty()
                    && let Err(problem) = super::names::check_segments(&grant.prefix)
                {
                    return Err(invalid(
                        &field("grants"),
                        format!("prefix {:?}: {problem}", grant.prefix),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Loads the certificate chain and key into a rustls server configuration.
pub(crate) fn load_tls(
    tls: &TlsSettings,
) -> Result<std::sync::Arc<tokio_rustls::rustls::ServerConfig>, ConfigError> {
    let certs: Vec<CertificateDer<'static>> =
        <CertificateDer as PemObject>::pem_file_iter(&tls.cert)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|err| ConfigError::Tls {
                what: "certificate",
                path: tls.cert.clone(),
                message: format!("cannot read a PEM certificate chain: {err}"),
            })?;
    if certs.is_empty() {
        return Err(ConfigError::Tls {
            what: "certificate",
            path: tls.cert.clone(),
            message: "no CERTIFICATE block found".into(),
        });
    }
    let key =
        <PrivateKeyDer as PemObject>::from_pem_file(&tls.key).map_err(|err| ConfigError::Tls {
            what: "private key",
            path: tls.key.clone(),
            message: format!("cannot read a PEM private key: {err}"),
        })?;
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|err| ConfigError::Tls {
            what: "certificate",
            path: tls.cert.clone(),
            message: format!("the certificate and key do not make a TLS configuration: {err}"),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(std::sync::Arc::new(config))
}
