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

/// A signature algorithm an OIDC issuer may sign its tokens with. Only asymmetric ones: HMAC
/// (`HS256`…) and `none` are not accepted anywhere, so that a public key can never serve as
/// an HMAC secret and an unsigned token is never taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum TokenAlgorithm {
    /// RSA PKCS#1 v1.5 with SHA-256 (GitHub Actions, GitLab CI), keys of 2048 to 8192 bits.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
}

impl TokenAlgorithm {
    /// The algorithm's name in a token header (`alg`).
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAlgorithm::RS256 => "RS256",
            TokenAlgorithm::ES256 => "ES256",
            TokenAlgorithm::EdDSA => "EdDSA",
        }
    }
}

/// One rule of an issuer: when every claim named here matches the token's, the grants apply.
/// A value is matched exactly, or as a glob when it contains `*` (any run of characters,
/// `/` included) or `?` (one character). Claims that are booleans or numbers are compared as
/// they are written in JSON (`true`, `42`). A rule must name a claim other than `iss` and
/// `aud` with a pattern that is not only wildcards, or every token of the issuer matches it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRule {
    /// Claim name → pattern, such as `repository = "acme/infra"`, `ref = "refs/heads/main"`.
    pub claims: std::collections::BTreeMap<String, String>,
    /// What a token matching the rule may do (the same grants as a user's).
    pub grants: Vec<Grant>,
}

/// A trusted OIDC issuer: its tokens (JWTs) are accepted as `Authorization: Bearer <token>`,
/// or as the password of HTTP basic authentication (Terraform's `TF_HTTP_PASSWORD`).
///
/// ```toml
/// [[oidc]]
/// issuer = "https://token.actions.githubusercontent.com"
/// audience = "s3state"
/// [[oidc.rules]]
/// claims = { repository = "acme/infra", ref = "refs/heads/main" }
/// grants = [{ prefix = "infra", role = "write" }]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuerConfig {
    /// The issuer, exactly as tokens name it in `iss` (`https://…`; `http://` only on a
    /// loopback address). Its keys come from `<issuer>/.well-known/openid-configuration`'s
    /// `jwks_uri`, unless `jwks_file` is set.
    pub issuer: String,
    /// The audience tokens must be issued for (`aud`), such as `s3state` or the gateway's URL.
    pub audience: String,
    /// The algorithms accepted (default: all of `RS256`, `ES256`, `EdDSA`).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<TokenAlgorithm>,
    /// The issuer's keys (a JWKS document) from this file rather than from the network, for
    /// air-gapped setups. Read at start-up, and again (at most once per
    /// `jwks_refresh_interval_secs`) when a token names a key it does not hold.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// When set, the basic-auth user name sent with a token as password must be this one
    /// (else any user name is accepted with a token).
    #[serde(default)]
    pub username: Option<String>,
    /// How far a token's `exp` and `nbf` may be off the gateway's clock, in seconds (default
    /// 30, at most 300).
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// The least time between two fetches of the keys, in seconds (default 60): tokens naming
    /// an unknown key cannot make the gateway fetch more often than this.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_interval_secs: u64,
    /// How long the keys are used before they are fetched again (default 3600 s), so that a
    /// key the issuer withdrew stops being accepted.
    #[serde(default = "default_jwks_max_age")]
    pub jwks_max_age_secs: u64,
    /// How long one fetch of the discovery document or the keys may take (default 10 s).
    #[serde(default = "default_fetch_timeout")]
    pub fetch_timeout_secs: u64,
    /// The rules: a token gets the grants of every rule it matches; one matching no rule is
    /// refused.
    pub rules: Vec<ClaimRule>,
}

fn default_algorithms() -> Vec<TokenAlgorithm> {
    vec![
        TokenAlgorithm::RS256,
        TokenAlgorithm::ES256,
        TokenAlgorithm::EdDSA,
    ]
}

fn default_leeway() -> u64 {
    30
}

fn default_jwks_refresh() -> u64 {
    60
}

fn default_jwks_max_age() -> u64 {
    3600
}

fn default_fetch_timeout() -> u64 {
    10
}

impl OidcIssuerConfig {
    /// An issuer with the defaults: all three algorithms, keys by discovery, 30 s leeway.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        OidcIssuerConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            algorithms: default_algorithms(),
            jwks_file: None,
            username: None,
            leeway_secs: default_leeway(),
            jwks_refresh_interval_secs: default_jwks_refresh(),
            jwks_max_age_secs: default_jwks_max_age(),
            fetch_timeout_secs: default_fetch_timeout(),
            rules: Vec::new(),
        }
    }

    /// Checks the issuer's settings; `index` names it in errors.
    fn validate(&self, index: usize) -> Result<(), ConfigError> {
        let field = |name: &str| format!("oidc[{index}].{name}");
        let invalid = |name: &str, message: String| ConfigError::Invalid {
            field: field(name),
            message,
        };
        issuer_url_problem(&self.issuer).map_or(Ok(()), |problem| {
            Err(invalid("issuer", format!("{:?}: {problem}", self.issuer)))
        })?;
        if self.audience.trim().is_empty() {
            return Err(invalid("audience", "the audience is required".into()));
        }
        if self.algorithms.is_empty() {
            return Err(invalid(
                "algorithms",
                "at least one of RS256, ES256, EdDSA".into(),
            ));
        }
        if self.leeway_secs > 300 {
            return Err(invalid(
                "leeway_secs",
                "at most 300 seconds: a larger leeway keeps expired tokens alive".into(),
            ));
        }
        for (name, value) in [
            (
                "jwks_refresh_interval_secs",
                self.jwks_refresh_interval_secs,
            ),
            ("jwks_max_age_secs", self.jwks_max_age_secs),
            ("fetch_timeout_secs", self.fetch_timeout_secs),
        ] {
            if value == 0 {
                return Err(invalid(name, "must be greater than zero".into()));
            }
        }
        if self
            .username
            .as_ref()
            .is_some_and(|name| name.is_empty() || name.contains(':'))
        {
            return Err(invalid(
                "username",
                "must be non-empty and must not contain ':' (HTTP basic auth)".into(),
            ));
        }
        if self.rules.is_empty() {
            return Err(invalid(
                "rules",
                "an issuer without rules grants nothing; add [[oidc.rules]] with claims and grants"
                    .into(),
            ));
        }
        for (rule_index, rule) in self.rules.iter().enumerate() {
            let name = format!("rules[{rule_index}]");
            // An issuer such as GitHub's signs tokens for every repository on it: a rule that
            // any of its tokens matches would grant the whole world.
            // A claim narrows nothing when its pattern is wildcards only (`?*` is any non-empty
            // value), or when it is `iss` or `aud`, which every token accepted here has as
            // configured.
            if rule.claims.iter().all(|(claim, pattern)| {
                claim == "iss" || claim == "aud" || pattern.chars().all(|c| c == '*' || c == '?')
            }) {
                return Err(invalid(
                    &name,
                    "a rule must name at least one claim other than iss and aud with a value \
                     that is not only wildcards (\"*\", \"?\"): every token of this issuer \
                     (for GitHub, every repository) would match"
                        .into(),
                ));
            }
            if rule.grants.is_empty() {
                return Err(invalid(&name, "a rule without grants does nothing".into()));
            }
            check_grants(&rule.grants).map_err(|message| invalid(&name, message))?;
        }
        Ok(())
    }
}

/// Why `issuer` cannot be an issuer URL: not `https://host…` (or `http://` on a loopback
/// address), or with a query, fragment or user info (OpenID Connect Discovery forbids them).
pub(crate) fn issuer_url_problem(issuer: &str) -> Option<String> {
    let uri: axum::http::Uri = match issuer.parse() {
        Ok(uri) => uri,
        Err(err) => return Some(format!("not a URL ({err})")),
    };
    let Some(host) = uri.host() else {
        return Some("no host".into());
    };
    if issuer.contains(['?', '#', '@']) || issuer.chars().any(|c| c.is_whitespace()) {
        return Some("an issuer has no query, fragment, user info or blanks".into());
    }
    match uri.scheme_str() {
        Some("https") => None,
        Some("http") if is_loopback_host(host) => None,
        Some("http") => Some("plain http is accepted only on a loopback address".into()),
        _ => Some("must start with https://".into()),
    }
}

/// Whether `host` (as in a URL) is a loopback address or `localhost`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Checks grants' prefixes; the message says which is wrong.
fn check_grants(grants: &[Grant]) -> Result<(), String> {
    for grant in grants {
        if !grant.prefix.is_empty()
            && let Err(problem) = super::names::check_segments(&grant.prefix)
        {
            return Err(format!("prefix {:?}: {problem}", grant.prefix));
        }
    }
    Ok(())
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
    /// How long a LOCK of a state whose lock was taken through this gateway waits for it to
    /// be let go (clients waiting for one state take turns, first come first served), before
    /// the store is asked and a lock still held is answered 423 (default 2 s; 0: never wait,
    /// answer at once). At most `request_timeout_secs` less one second.
    pub lock_wait_secs: u64,
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
            lock_wait_secs: 2,
            shutdown_grace_secs: 30,
        }
    }
}

impl Limits {
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// `lock_wait_secs`, kept at least a second below `request_timeout_secs`: a LOCK that
    /// waited past the request's deadline would be answered 503 while it goes on, instead of
    /// getting its own answer.
    pub(crate) fn lock_wait(&self) -> Duration {
        Duration::from_secs(
            self.lock_wait_secs
                .min(self.request_timeout_secs.saturating_sub(1)),
        )
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
    /// Trusted OIDC issuers whose tokens (JWTs) log in, with the rules that map their claims
    /// to grants. Besides `users`, or instead of them.
    #[serde(default)]
    pub oidc: Vec<OidcIssuerConfig>,
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
            oidc: Vec::new(),
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
        } else if self.users.is_empty() && self.oidc.is_empty() {
            return Err(invalid(
                "users",
                "no credentials are configured; add [[users]] with a password_hash \
                 (s3state serve --hash-password prints one) or password_env, or [[oidc]] issuers"
                    .into(),
            ));
        }
        let mut issuers = std::collections::HashSet::new();
        for (index, issuer) in self.oidc.iter().enumerate() {
            issuer.validate(index)?;
            if !issuers.insert(issuer.issuer.as_str()) {
                return Err(invalid(
                    &format!("oidc[{index}].issuer"),
                    format!(
                        "the issuer {:?} is configured twice; put all its rules in one [[oidc]]",
                        issuer.issuer
                    ),
                ));
            }
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
            // Without ':', no user is named like a token's principal (`<issuer>#<subject>`,
            // the issuer a URL), whose locks it would own.
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
            check_grants(&user.grants).map_err(|message| invalid(&field("grants"), message))?;
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
