//! Configuration of an S3-backed state manager, in the style of object_store's
//! `AmazonS3Builder`: start from [`S3Builder::new`] or [`S3Builder::from_env`], override with
//! `with_*`, and [`S3Builder::build`]. Validation happens in `build`, before any request.

use super::config::{ChecksumMode, Checksums, ConditionalDelete, S3Config};
use super::credentials::{self, AssumeRole};
use super::errors::sdk_error;
use super::layout::{
    DEFAULT_WORKSPACE, DEFAULT_WORKSPACE_KEY_PREFIX, validate_bucket, validate_key, validate_layout,
};
use super::sse::{CustomerKey, ServerSideEncryption};
use super::{S3Backend, S3Store};
use crate::error::{Error, Result};
use crate::remote::{RemoteState, RemoteStateOptions};
use crate::timeouts::{TimeoutOverrides, Timeouts};
use aws_sdk_s3::Client;
use aws_sdk_s3::types::BucketVersioningStatus;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Builds an S3-backed [`RemoteState`].
///
/// ```no_run
/// # async fn demo() -> s3state::Result<()> {
/// use s3state::{Refresher, S3Builder};
/// let manager = S3Builder::from_env()          // S3STATE_* and the standard AWS_* variables
///     .with_bucket("tfstate")
///     .with_key("network/terraform.tfstate")
///     .with_workspace("staging")               // env:/staging/network/terraform.tfstate
///     .build()
///     .await?;
/// manager.refresh_state().await?;
/// # Ok(()) }
/// ```
///
/// Every setting can also be given in code, which overrides the environment. The object the
/// state lives in is worked out without any request:
///
/// ```
/// use s3state::{S3Builder, ServerSideEncryption};
///
/// let builder = S3Builder::new()
///     .with_bucket("tfstate")
///     .with_key("network/terraform.tfstate")
///     .with_workspace("staging")
///     .with_region("eu-west-1")
///     .with_endpoint_url("http://localhost:4566") // LocalStack, MinIO, ...
///     .with_path_style(true)
///     .with_server_side_encryption(ServerSideEncryption::Kms { key_id: None });
/// assert_eq!(builder.state_key()?, "env:/staging/network/terraform.tfstate");
/// # Ok::<(), s3state::Error>(())
/// ```
///
/// Configuration is checked before any request, and a mistake is [`Error::InvalidConfig`]
/// naming the setting and its environment variable:
///
/// ```no_run
/// use s3state::{Error, S3Builder};
///
/// # async fn demo(builder: S3Builder) -> s3state::Result<()> {
/// let manager = match builder.build().await {
///     Ok(manager) => manager,
///     Err(Error::InvalidConfig { field, env, message }) => {
///         eprintln!("fix `{field}` (or {env}): {message}");
///         return Ok(());
///     }
///     Err(Error::VersioningNotEnabled { bucket, .. }) => {
///         eprintln!("enable versioning on {bucket}, or use with_versioning_required(false)");
///         return Ok(());
///     }
///     Err(err) => return Err(err),
/// };
/// # let _ = manager;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct S3Builder {
    bucket: Option<String>,
    key: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    force_path_style: Option<bool>,
    profile: Option<String>,
    workspace: Option<String>,
    workspace_key_prefix: Option<String>,
    sse: Option<SseSetting>,
    require_versioning: Option<bool>,
    conflict_retries: Option<u32>,
    max_attempts: Option<u32>,
    checksums: Option<ChecksumMode>,
    /// How long a request may take ([`Timeouts`]); each unset one takes its default.
    timeouts: TimeoutOverrides,
    client: Option<Client>,
    static_credentials: Option<(String, Redacted)>,
    session_token: Option<Redacted>,
    assume_role: Option<AssumeRole>,
    sts_endpoint_url: Option<String>,
    sts_region: Option<String>,
    shared_config_files: Vec<PathBuf>,
    shared_credentials_files: Vec<PathBuf>,
    options: RemoteStateOptions,
    /// Terraform's DynamoDB lock table (`lock_table.rs`).
    pub(super) dynamodb: super::lock_table::DynamoSettings,
    /// A malformed environment variable seen by `from_env`, reported by `build`.
    env_error: Option<(&'static str, &'static str, String)>,
    /// An `S3STATE_ROLE_*` variable set without `S3STATE_ROLE_ARN`, reported by `build` only
    /// when no role is given in code either (whose settings it would then be meant for).
    role_env_orphan: Option<&'static str>,
}

#[derive(Clone, Debug)]
enum SseSetting {
    Ready(ServerSideEncryption),
    /// Decoded (and validated) in `build`, so a bad key is a configuration error there.
    CustomerKeyBase64(Redacted),
}

#[derive(Clone)]
struct Redacted(String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl S3Builder {
    /// An empty builder. Region, endpoint and credentials still come from `aws-config`'s
    /// standard chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, profiles, …) unless set here.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder filled from `S3STATE_*` environment variables:
    ///
    /// | variable | setting |
    /// |---|---|
    /// | `S3STATE_BUCKET` | bucket |
    /// | `S3STATE_KEY` | key |
    /// | `S3STATE_REGION` | region (else `AWS_REGION`, profile) |
    /// | `S3STATE_ENDPOINT_URL` | endpoint (else `AWS_ENDPOINT_URL`) |
    /// | `S3STATE_PATH_STYLE` | `true` for path-style addressing |
    /// | `S3STATE_PROFILE` | AWS profile (else `AWS_PROFILE`) |
    /// | `S3STATE_WORKSPACE` | workspace (default `default`) |
    /// | `S3STATE_WORKSPACE_KEY_PREFIX` | workspace prefix (default `env:`) |
    /// | `S3STATE_SSE` | `AES256` or `aws:kms` |
    /// | `S3STATE_SSE_KMS_KEY_ID` | KMS key for `aws:kms` |
    /// | `S3STATE_SSE_CUSTOMER_KEY` | base64 SSE-C key (32 bytes) |
    /// | `S3STATE_REQUIRE_VERSIONING` | `false` to allow unversioned buckets |
    /// | `S3STATE_CHECKSUMS` | [`ChecksumMode`]: `auto` (default), `always` or `compatible` |
    /// | `S3STATE_DYNAMODB_TABLE` | Terraform's `dynamodb_table` (feature `dynamodb`) |
    /// | `S3STATE_DYNAMODB_ENDPOINT_URL` | DynamoDB endpoint (else `AWS_ENDPOINT_URL_DYNAMODB`) |
    /// | `S3STATE_ROLE_ARN` | a role to assume ([`AssumeRole`]) |
    /// | `S3STATE_ROLE_SESSION_NAME` | its session name |
    /// | `S3STATE_ROLE_EXTERNAL_ID` | its external ID |
    /// | `S3STATE_ROLE_DURATION` | its session length, as Terraform writes it (`1h`, `90m`) |
    /// | `S3STATE_ROLE_POLICY` | an inline session policy (JSON) |
    /// | `S3STATE_ROLE_POLICY_ARNS` | managed session policies, comma-separated |
    /// | `S3STATE_ROLE_TAGS` | session tags, as `key=value,key=value` |
    /// | `S3STATE_STS_ENDPOINT_URL` | STS endpoint (else `AWS_ENDPOINT_URL_STS`) |
    /// | `S3STATE_STS_REGION` | STS region (else the region) |
    /// | `S3STATE_CONNECT_TIMEOUT` | [`Timeouts::connect`], such as `5s` |
    /// | `S3STATE_READ_TIMEOUT` | [`Timeouts::read`], such as `30s` |
    /// | `S3STATE_OPERATION_ATTEMPT_TIMEOUT` | [`Timeouts::operation_attempt`], such as `60s` |
    /// | `S3STATE_OPERATION_TIMEOUT` | [`Timeouts::operation`], such as `2m` |
    ///
    /// The `S3STATE_ROLE_*` settings other than the ARN need `S3STATE_ROLE_ARN` (or a role
    /// given with [`S3Builder::with_assume_role`], which replaces them all).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut builder = Self::new();
        builder.bucket = var("S3STATE_BUCKET");
        builder.key = var("S3STATE_KEY");
        builder.region = var("S3STATE_REGION");
        builder.endpoint_url = var("S3STATE_ENDPOINT_URL");
        builder.profile = var("S3STATE_PROFILE");
        builder.workspace = var("S3STATE_WORKSPACE");
        builder.workspace_key_prefix = var("S3STATE_WORKSPACE_KEY_PREFIX");
        let mut flag = |field: &'static str, env: &'static str| -> Option<bool> {
            let value = var(env)?;
            match value.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Some(true),
                "0" | "false" | "no" | "off" => Some(false),
                _ => {
                    builder.env_error.get_or_insert((
                        field,
                        env,
                        format!("{value:?} is not a boolean; use true or false"),
                    ));
                    None
                }
            }
        };
        let path_style = flag("path_style", "S3STATE_PATH_STYLE");
        let require_versioning = flag("require_versioning", "S3STATE_REQUIRE_VERSIONING");
        builder.force_path_style = path_style;
        builder.require_versioning = require_versioning;
        if let Some(text) = var("S3STATE_CHECKSUMS") {
            match text.parse::<ChecksumMode>() {
                Ok(mode) => builder.checksums = Some(mode),
                Err(message) => {
                    builder
                        .env_error
                        .get_or_insert(("checksums", "S3STATE_CHECKSUMS", message));
                }
            }
        }
        match var("S3STATE_SSE").as_deref() {
            None => {}
            Some("AES256") => {
                builder.sse = Some(SseSetting::Ready(ServerSideEncryption::S3Managed))
            }
            Some("aws:kms") => {
                builder.sse = Some(SseSetting::Ready(ServerSideEncryption::Kms {
                    key_id: var("S3STATE_SSE_KMS_KEY_ID"),
                }))
            }
            Some(other) => {
                builder.env_error.get_or_insert((
                    "sse",
                    "S3STATE_SSE",
                    format!("{other:?} is not supported; use AES256 or aws:kms (or S3STATE_SSE_CUSTOMER_KEY for SSE-C)"),
                ));
            }
        }
        if let Some(key) = var("S3STATE_SSE_CUSTOMER_KEY") {
            builder.sse = Some(SseSetting::CustomerKeyBase64(Redacted(key)));
        }
        if let Some(error) = super::lock_table::from_env(&mut builder.dynamodb) {
            builder.env_error.get_or_insert(error);
        }
        match TimeoutOverrides::from_env(&var) {
            Ok(timeouts) => builder.timeouts = timeouts,
            Err(error) => {
                builder.env_error.get_or_insert(error);
            }
        }
        builder.sts_endpoint_url = var("S3STATE_STS_ENDPOINT_URL");
        builder.sts_region = var("S3STATE_STS_REGION");
        match role_from_env(&var) {
            Ok(RoleFromEnv::Role(role)) => builder.assume_role = Some(role),
            Ok(RoleFromEnv::Orphan(variable)) => builder.role_env_orphan = Some(variable),
            Ok(RoleFromEnv::None) => {}
            Err(error) => {
                builder.env_error.get_or_insert(error);
            }
        }
        builder
    }

    /// The bucket holding the state (required).
    pub fn with_bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// The state's key for the default workspace, such as `app/terraform.tfstate` (required).
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The AWS region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// A custom endpoint, such as `http://127.0.0.1:4566` for LocalStack.
    pub fn with_endpoint_url(mut self, endpoint_url: impl Into<String>) -> Self {
        self.endpoint_url = Some(endpoint_url.into());
        self
    }

    /// Path-style addressing (`endpoint/bucket/key`), needed by most emulators.
    pub fn with_path_style(mut self, path_style: bool) -> Self {
        self.force_path_style = Some(path_style);
        self
    }

    /// The AWS shared-config profile to take credentials and region from.
    pub fn with_profile(mut self, profile: impl Into<String>) -> Self {
        self.profile = Some(profile.into());
        self
    }

    /// The workspace; `default` (the default) uses `key` itself.
    pub fn with_workspace(mut self, workspace: impl Into<String>) -> Self {
        self.workspace = Some(workspace.into());
        self
    }

    /// Where non-default workspaces live: `<prefix>/<workspace>/<key>`. Default `env:`.
    pub fn with_workspace_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.workspace_key_prefix = Some(prefix.into());
        self
    }

    /// Server-side encryption for written snapshots.
    pub fn with_server_side_encryption(mut self, sse: ServerSideEncryption) -> Self {
        self.sse = Some(SseSetting::Ready(sse));
        self
    }

    /// SSE-C with a base64-encoded 32-byte key; validated by `build`.
    pub fn with_sse_customer_key(mut self, key_base64: impl Into<String>) -> Self {
        self.sse = Some(SseSetting::CustomerKeyBase64(Redacted(key_base64.into())));
        self
    }

    /// Whether `build` insists that the bucket has versioning enabled. Default `true`: without
    /// versioning, history is lost on every write.
    pub fn with_versioning_required(mut self, required: bool) -> Self {
        self.require_versioning = Some(required);
        self
    }

    /// How often a write answered with S3's `409 ConditionalRequestConflict` is retried.
    /// Default 5.
    pub fn with_conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = Some(retries);
        self
    }

    /// Which checksums writes carry and reads ask for: see [`ChecksumMode`]. Default
    /// [`ChecksumMode::Auto`]: the SDK's flexible checksums (`x-amz-checksum-sha256`,
    /// `x-amz-checksum-mode`), and Content-MD5 with a signed payload on a store that refuses
    /// them. [`ChecksumMode::Compatible`] is Terraform's `skip_s3_checksum = true` (and the
    /// SDK's `when_required`); the backend block's `skip_s3_checksum` sets it in the CLI.
    pub fn with_checksums(mut self, mode: ChecksumMode) -> Self {
        self.checksums = Some(mode);
        self
    }

    /// The SDK's total attempts per request for transient failures (5xx, throttling,
    /// connection errors). Default 3, as the SDK's standard mode.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// How long a request to S3, DynamoDB or STS may take before it is given up on with
    /// [`Error::Timeout`]: see [`Timeouts`] for each bound, its default and why. Replaces
    /// every `S3STATE_*_TIMEOUT` variable read by [`S3Builder::from_env`]; applies to the
    /// clients `build` makes, and overrides a client's own given with
    /// [`S3Builder::with_client`] or [`S3Builder::with_dynamodb_client`].
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = TimeoutOverrides::all(timeouts);
        self
    }

    /// The timeouts in effect for the clients `build` makes: those given (in code or in
    /// `S3STATE_*_TIMEOUT`), else the defaults.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts.resolved()
    }

    /// Use these credentials instead of `aws-config`'s chain (Terraform's `access_key` and
    /// `secret_key`). The secret is never printed.
    pub fn with_static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.static_credentials = Some((access_key_id.into(), Redacted(secret_access_key.into())));
        self
    }

    /// With [`S3Builder::with_static_credentials`], the session token of temporary credentials
    /// (Terraform's `token`). The token is never printed.
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(Redacted(token.into()));
        self
    }

    /// Assume this role (Terraform's `assume_role`) for every S3 and DynamoDB request, with
    /// the other credentials (default chain, profile or static keys) used only to call STS.
    /// See [`AssumeRole`].
    pub fn with_assume_role(mut self, role: AssumeRole) -> Self {
        self.assume_role = Some(role);
        self
    }

    /// The STS endpoint used to assume the role (Terraform's `endpoints.sts`); else
    /// `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`, else AWS's.
    pub fn with_sts_endpoint_url(mut self, endpoint_url: impl Into<String>) -> Self {
        self.sts_endpoint_url = Some(endpoint_url.into());
        self
    }

    /// The region of the STS endpoint used to assume the role (Terraform's `sts_region`);
    /// default: the region.
    pub fn with_sts_region(mut self, region: impl Into<String>) -> Self {
        self.sts_region = Some(region.into());
        self
    }

    /// Read profiles from these shared config files instead of `~/.aws/config` (or
    /// `AWS_CONFIG_FILE`): Terraform's `shared_config_files`. Each must exist.
    pub fn with_shared_config_files(
        mut self,
        files: impl IntoIterator<Item = impl Into<PathBuf>>,
    ) -> Self {
        self.shared_config_files = files.into_iter().map(Into::into).collect();
        self
    }

    /// Read credentials from these shared credentials files instead of `~/.aws/credentials`
    /// (or `AWS_SHARED_CREDENTIALS_FILE`): Terraform's `shared_credentials_files`. Each must
    /// exist.
    pub fn with_shared_credentials_files(
        mut self,
        files: impl IntoIterator<Item = impl Into<PathBuf>>,
    ) -> Self {
        self.shared_credentials_files = files.into_iter().map(Into::into).collect();
        self
    }

    /// Use this client instead of building one; region, endpoint, path style and profile are
    /// then the client's own. Its timeouts are its own too, but for those given with
    /// [`S3Builder::with_timeouts`] (or `S3STATE_*_TIMEOUT`), which replace them, and those it
    /// leaves unset, which take the defaults of [`Timeouts`], so that no request waits
    /// forever. (A timeout the client disables explicitly stays disabled.) A client does not tell its endpoint, so the stores of one build
    /// (a backend's, a manager's) share their [`crate::RemoteState::update`] turns and
    /// release gates, but not with those of another build over the same client: each build
    /// is coordinated as another process would be.
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Options of the state manager `build` returns.
    pub fn with_options(mut self, options: RemoteStateOptions) -> Self {
        self.options = options;
        self
    }

    /// OpenTofu state encryption for every state this builder's managers (and backend)
    /// read and write: envelopes are decrypted when read, and writes are encrypted with the
    /// configuration's method. Build it from `TF_ENCRYPTION` with
    /// [`crate::encryption::StateEncryption::from_env`].
    pub fn with_encryption(mut self, encryption: crate::encryption::StateEncryption) -> Self {
        self.options.encryption = Some(std::sync::Arc::new(encryption));
        self
    }

    /// The object key for the configured workspace, after validation.
    pub fn state_key(&self) -> Result<String> {
        let key = self.key.as_deref().unwrap_or_default();
        validate_key(key)?;
        let prefix = self.prefix();
        validate_layout(key, prefix)?;
        let workspace = self.workspace.as_deref().unwrap_or(DEFAULT_WORKSPACE);
        super::layout::state_key(key, prefix, workspace)
    }

    fn prefix(&self) -> &str {
        self.workspace_key_prefix
            .as_deref()
            .unwrap_or(DEFAULT_WORKSPACE_KEY_PREFIX)
    }

    /// Validates the configuration, checks the bucket (its versioning, with one request on
    /// every build), and returns a state manager for the configured workspace.
    pub async fn build(self) -> Result<RemoteState<S3Store>> {
        let workspace = self
            .workspace
            .clone()
            .unwrap_or_else(|| DEFAULT_WORKSPACE.into());
        self.build_backend().await?.manager(&workspace)
    }

    /// Like [`S3Builder::build`], but returns only the store.
    pub async fn build_store(self) -> Result<S3Store> {
        let workspace = self
            .workspace
            .clone()
            .unwrap_or_else(|| DEFAULT_WORKSPACE.into());
        self.build_backend().await?.store(&workspace)
    }

    /// Validates the configuration, checks the bucket, and returns the backend: every
    /// workspace of this key, and the operations across them.
    pub async fn build_backend(self) -> Result<S3Backend> {
        if let Some((field, env, message)) = self.env_error.clone() {
            return Err(Error::InvalidConfig {
                field,
                env,
                message,
            });
        }
        let bucket = self.bucket.clone().unwrap_or_default();
        validate_bucket(&bucket)?;
        self.state_key()?;
        self.validate_credentials()?;
        self.timeouts.validate()?;
        let sse = match &self.sse {
            None => None,
            Some(SseSetting::Ready(sse)) => Some(sse.clone()),
            Some(SseSetting::CustomerKeyBase64(Redacted(encoded))) => Some(
                ServerSideEncryption::CustomerKey(CustomerKey::from_base64(encoded)?),
            ),
        };
        let (client, shared) = match self.client.clone() {
            Some(client) => (self.bounded(client), None),
            None => {
                let (client, shared) = self.make_client().await?;
                (client, Some(shared))
            }
        };
        // The endpoint make_client gave the client: ours, else the environment's (AWS's own
        // when neither is set). Unknown for a client given with with_client.
        let endpoint = shared.as_ref().map(|shared| {
            self.endpoint_url
                .clone()
                .or_else(|| shared.endpoint_url().map(str::to_owned))
        });
        let lock_table = super::lock_table::open(&self.dynamodb, shared, &self.timeouts).await;
        let backend = S3Backend {
            config: Arc::new(S3Config {
                bucket,
                sse,
                conflict_retries: self.conflict_retries.unwrap_or(5),
                conditional_delete: ConditionalDelete::default(),
                checksums: Checksums::new(self.checksums.unwrap_or_default()),
                lock_table,
                endpoint,
                client,
            }),
            key: self.key.clone().unwrap_or_default(),
            workspace_key_prefix: self.prefix().to_owned(),
            options: self.options.clone(),
        };
        if self.require_versioning.unwrap_or(true) {
            ensure_versioning(&backend).await?;
        }
        Ok(backend)
    }

    /// The credential settings, checked before any request.
    fn validate_credentials(&self) -> Result<()> {
        let invalid = |field, env, message: String| {
            Err(Error::InvalidConfig {
                field,
                env,
                message,
            })
        };
        if let (None, Some(orphan)) = (&self.assume_role, self.role_env_orphan) {
            return invalid(
                "role_arn",
                "S3STATE_ROLE_ARN",
                format!("{orphan} is set but no role to assume is; set S3STATE_ROLE_ARN"),
            );
        }
        if let Some(role) = &self.assume_role {
            role.validate()?;
            if self.client.is_some() {
                return invalid(
                    "role_arn",
                    "S3STATE_ROLE_ARN",
                    "a role to assume cannot be applied to a client given with with_client; \
                     configure the client's credentials instead"
                        .into(),
                );
            }
        }
        if self.session_token.is_some() && self.static_credentials.is_none() {
            return invalid(
                "token",
                "AWS_SESSION_TOKEN",
                "a session token needs the access key and secret key it belongs to".into(),
            );
        }
        let files = [
            (
                "shared_config_files",
                "AWS_CONFIG_FILE",
                &self.shared_config_files,
            ),
            (
                "shared_credentials_files",
                "AWS_SHARED_CREDENTIALS_FILE",
                &self.shared_credentials_files,
            ),
        ];
        for (field, env, paths) in files {
            if let Some(missing) = paths.iter().find(|path| !expand_home(path).is_file()) {
                return invalid(field, env, format!("{} is not a file", missing.display()));
            }
        }
        Ok(())
    }

    /// aws-config's loader with this builder's region, profile, credentials, retries and
    /// timeouts (so that the STS and DynamoDB clients made from it are bounded too). The
    /// S3 endpoint is not set here but on the S3 client alone, so that STS and DynamoDB keep
    /// their own.
    fn loader(&self) -> aws_config::ConfigLoader {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        } else if let Some(region) = environment_region() {
            loader = loader.region(region);
        }
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile);
        }
        if !self.shared_config_files.is_empty() || !self.shared_credentials_files.is_empty() {
            loader = loader.profile_files(self.profile_files());
        }
        if let Some((access_key_id, Redacted(secret))) = &self.static_credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                access_key_id,
                secret,
                self.session_token
                    .as_ref()
                    .map(|Redacted(token)| token.clone()),
                None,
                "s3state-static",
            ));
        } else if let Some(profile) = &self.profile {
            // A profile named here (flag, S3STATE_PROFILE, the block's `profile`) is used
            // instead of keys in the environment, as Terraform and the AWS CLI use a named
            // profile: aws-config's default chain would try the environment first, and one
            // backend block would then act as two identities.
            if answering_environment_credentials().is_some() {
                tracing::warn!(
                    profile,
                    "a profile was named along with AWS_ACCESS_KEY_ID in the environment: the \
                     profile's credentials are used, as Terraform does"
                );
            }
            let mut provider = aws_config::profile::ProfileFileCredentialsProvider::builder()
                .profile_name(profile);
            if !self.shared_config_files.is_empty() || !self.shared_credentials_files.is_empty() {
                provider = provider.profile_files(self.profile_files());
            }
            loader = loader.credentials_provider(provider.build());
        } else if let Some(environment) = answering_environment_credentials() {
            loader = loader.credentials_provider(environment);
        }
        loader = loader.timeout_config(self.timeouts.applied_to(None));
        if let Some(attempts) = self.max_attempts {
            loader = loader.retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(attempts),
            );
        }
        loader
    }

    /// The shared config and credentials files to read. As in Terraform, files given for one
    /// kind replace that kind's default only.
    // aws-config's loader takes these type aliases, deprecated in favour of types of
    // aws-runtime, a crate s3state does not depend on directly; aws-config allows them too.
    #[allow(deprecated)]
    fn profile_files(&self) -> aws_config::profile::profile_file::ProfileFiles {
        use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
        let mut files = ProfileFiles::builder()
            .include_default_config_file(self.shared_config_files.is_empty())
            .include_default_credentials_file(self.shared_credentials_files.is_empty());
        for path in &self.shared_config_files {
            files = files.with_file(ProfileFileKind::Config, path);
        }
        for path in &self.shared_credentials_files {
            files = files.with_file(ProfileFileKind::Credentials, path);
        }
        files.build()
    }

    /// A client given with `with_client`, with the timeouts it leaves unset (and those given
    /// here) applied.
    fn bounded(&self, client: Client) -> Client {
        let config = client.config();
        let timeouts = self.timeouts.applied_to(config.timeout_config());
        if config.timeout_config() == Some(&timeouts) {
            return client;
        }
        Client::from_conf(config.to_builder().timeout_config(timeouts).build())
    }

    async fn make_client(&self) -> Result<(Client, aws_config::SdkConfig)> {
        let mut shared = self.loader().load().await;
        if shared.region().is_none() {
            return Err(Error::InvalidConfig {
                field: "region",
                env: "S3STATE_REGION",
                message: "no region is configured; set it with --region, S3STATE_REGION, AWS_REGION or a profile".into(),
            });
        }
        if let Some(role) = &self.assume_role {
            let sts_config = match &self.sts_endpoint_url {
                Some(endpoint) => self.loader().endpoint_url(endpoint).load().await,
                None => shared.clone(),
            };
            shared =
                credentials::assume_role(shared, &sts_config, role, self.sts_region.as_deref())
                    .await?;
        }
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(self.force_path_style.unwrap_or(false));
        if self.checksums == Some(ChecksumMode::Compatible) {
            // On the client itself, so that requests made with `S3Store::client` (the CLI's
            // inventory) go out the compatible way too.
            use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
            config = config
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        if let Some(endpoint) = &self.endpoint_url {
            config = config.endpoint_url(endpoint);
            if let Some(http_client) = plain_http_client(endpoint) {
                config = config.http_client(http_client);
            }
        }
        Ok((Client::from_conf(config.build()), shared))
    }
}

/// The environment's credentials provider, when it answers: then it is the provider
/// aws-config's default chain would use, since the environment comes first in that chain and
/// a provider that answers ends it.
///
/// Handing it to the loader directly gives the same credentials without building the rest of
/// the chain, which costs milliseconds at every start: its web-identity provider builds an STS
/// client, and that loads and parses every certificate in the system's trust store (about 150
/// files on Debian), for an answer that was already in the environment. When the environment
/// has no (or blank) keys, the whole chain is built as before.
fn answering_environment_credentials()
-> Option<aws_config::environment::EnvironmentVariableCredentialsProvider> {
    use aws_sdk_s3::config::ProvideCredentials as _;
    use futures::FutureExt as _;
    let environment = aws_config::environment::EnvironmentVariableCredentialsProvider::new();
    // The provider reads variables only, so its answer is ready at once.
    let answer = environment.provide_credentials().now_or_never()?;
    answer.is_ok().then_some(environment)
}

/// The region in `AWS_REGION` (else `AWS_DEFAULT_REGION`), when set: the region aws-config's
/// default chain would pick, since the environment comes first in that chain.
///
/// Handing it to the loader directly gives the same region without building the rest of the
/// chain, whose last provider builds an IMDS client at every start (a few percent of a
/// one-request command's instructions), for an answer that was already in the environment.
fn environment_region() -> Option<aws_config::Region> {
    use aws_config::meta::region::ProvideRegion as _;
    use futures::FutureExt as _;
    // The provider reads variables only, so its answer is ready at once.
    aws_config::environment::region::EnvironmentVariableRegionProvider::new()
        .region()
        .now_or_never()
        .flatten()
}

/// For an `http://` endpoint, an HTTP client that does not load the system's trusted root
/// certificates: the default client reads and parses all of them (milliseconds at every start)
/// before the first request, and a plain-HTTP endpoint never uses them.
///
/// The client still speaks TLS, with an empty trust store, so that nothing is ever accepted
/// unverified should an `https://` URL reach it. When a proxy variable is set the default
/// client is kept: it routes through the proxy, which may itself be reached over TLS.
fn plain_http_client(endpoint: &str) -> Option<aws_sdk_s3::config::SharedHttpClient> {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let scheme_is_http = endpoint
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"));
    let proxied = [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
    if !scheme_is_http || proxied {
        return None;
    }
    let no_roots = TlsContext::builder()
        .with_trust_store(TrustStore::empty())
        .build()
        .ok()?;
    Some(
        aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(no_roots)
            .build_https(),
    )
}

/// `~/x` as aws-config reads it, for checking that a file exists.
fn expand_home(path: &std::path::Path) -> PathBuf {
    match (path.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => path.to_owned(),
    }
}

/// What the `S3STATE_ROLE_*` variables say.
enum RoleFromEnv {
    /// None is set.
    None,
    /// A role to assume.
    Role(AssumeRole),
    /// This variable is set, but `S3STATE_ROLE_ARN` is not.
    Orphan(&'static str),
}

/// Reads the `S3STATE_ROLE_*` variables; an error names the first malformed one.
fn role_from_env(
    var: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<RoleFromEnv, (&'static str, &'static str, String)> {
    let Some(role_arn) = var("S3STATE_ROLE_ARN") else {
        let others = [
            "S3STATE_ROLE_SESSION_NAME",
            "S3STATE_ROLE_EXTERNAL_ID",
            "S3STATE_ROLE_DURATION",
            "S3STATE_ROLE_POLICY",
            "S3STATE_ROLE_POLICY_ARNS",
            "S3STATE_ROLE_TAGS",
        ];
        return Ok(others
            .into_iter()
            .find(|name| var(name).is_some())
            .map_or(RoleFromEnv::None, RoleFromEnv::Orphan));
    };
    let mut role = AssumeRole::new(role_arn);
    role.session_name = var("S3STATE_ROLE_SESSION_NAME");
    role.external_id = var("S3STATE_ROLE_EXTERNAL_ID");
    role.policy = var("S3STATE_ROLE_POLICY");
    if let Some(text) = var("S3STATE_ROLE_DURATION") {
        match AssumeRole::parse_duration(&text) {
            Ok(duration) => role.duration = Some(duration),
            Err(Error::InvalidConfig {
                field,
                env,
                message,
            }) => return Err((field, env, message)),
            Err(other) => {
                return Err(("role_duration", "S3STATE_ROLE_DURATION", other.to_string()));
            }
        }
    }
    if let Some(list) = var("S3STATE_ROLE_POLICY_ARNS") {
        role.policy_arns = list
            .split(',')
            .map(str::trim)
            .filter(|arn| !arn.is_empty())
            .map(str::to_owned)
            .collect();
    }
    if let Some(list) = var("S3STATE_ROLE_TAGS") {
        for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err((
                    "role_tags",
                    "S3STATE_ROLE_TAGS",
                    format!("{pair:?} is not key=value"),
                ));
            };
            role.tags
                .insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    Ok(RoleFromEnv::Role(role))
}

/// Checks that the bucket keeps versions, with one GetBucketVersioning request.
///
/// The check is made on every build, not remembered: a bucket whose versioning is suspended
/// after a first check must be noticed by the next build, and an answer remembered per bucket
/// name could also be another endpoint's bucket of the same name (a client passed with
/// `with_client` hides its endpoint). The request is small (no object is read) and is paid once
/// per [`S3Backend`]; opening many workspaces of one backend (`S3Backend::manager`) makes no
/// further checks.
async fn ensure_versioning(store: &S3Backend) -> Result<()> {
    let location = format!("s3://{}", store.config.bucket);
    let sent = store
        .config
        .client
        .get_bucket_versioning()
        .bucket(&store.config.bucket)
        .send()
        .await;
    let output = match sent {
        Ok(output) => output,
        // moto answers 200 with another XML root (`GetBucketVersioningResponse`), which the
        // SDK cannot read although its `Status` is plain: read that one element.
        Err(err) => match super::errors::versioning_status_of_unreadable_success(&err) {
            Some(status) => {
                aws_sdk_s3::operation::get_bucket_versioning::GetBucketVersioningOutput::builder()
                    .set_status(status)
                    .build()
            }
            None => return Err(sdk_error("GetBucketVersioning", &location, err)),
        },
    };
    match output.status() {
        Some(BucketVersioningStatus::Enabled) => Ok(()),
        status => Err(Error::VersioningNotEnabled {
            bucket: store.config.bucket.clone(),
            status: status.map_or("disabled".into(), |s| s.as_str().to_lowercase()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as BASE64;

    fn field_of(err: Error) -> &'static str {
        match err {
            Error::InvalidConfig { field, .. } => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn workspaces_live_under_the_prefix_and_default_uses_the_key() {
        let b = S3Builder::new().with_key("demo/terraform.tfstate");
        assert_eq!(b.state_key().unwrap(), "demo/terraform.tfstate");
        let b = b.with_workspace("dev");
        assert_eq!(b.state_key().unwrap(), "env:/dev/demo/terraform.tfstate");
        let b = b.with_workspace_key_prefix("workspaces");
        assert_eq!(
            b.state_key().unwrap(),
            "workspaces/dev/demo/terraform.tfstate"
        );
    }

    #[test]
    fn keys_with_double_or_leading_slashes_are_rejected() {
        for key in ["", "/a", "a//b", "a/", "a/../b", "./a", "a\nb", "a\u{7f}"] {
            let err = S3Builder::new().with_key(key).state_key().unwrap_err();
            assert_eq!(field_of(err), "key", "{key:?}");
        }
    }

    #[test]
    fn workspace_names_follow_terraforms_rule_and_dot_segments_are_refused() {
        for name in [
            "", ".", "..", "a/b", "/", "../x", "a b", "a?b", "a%2Fb", "a;b", "a,b", "a#b", "é",
            "a\\b", "a\nb", "a*b", "(a)",
        ] {
            let err = S3Builder::new()
                .with_key("k")
                .with_workspace(name)
                .state_key()
                .unwrap_err();
            assert!(
                err.to_string().contains("is not a valid workspace name"),
                "{name:?}: {err}"
            );
            assert_eq!(field_of(err), "workspace", "{name:?}");
        }
        for name in ["dev", "a.b", "...", "x-y_z~1", "$&+:=@", "Prod2", "default"] {
            let key = S3Builder::new()
                .with_key("k")
                .with_workspace(name)
                .state_key();
            assert!(key.is_ok(), "{name:?}: {key:?}");
        }
    }

    #[test]
    fn workspace_names_with_slashes_are_rejected() {
        let err = S3Builder::new()
            .with_key("k")
            .with_workspace("a/b")
            .state_key()
            .unwrap_err();
        assert_eq!(field_of(err), "workspace");
    }

    #[test]
    fn sse_c_keys_must_be_32_bytes_and_never_print() {
        let err = CustomerKey::from_base64(&BASE64.encode([7u8; 16])).unwrap_err();
        assert!(err.to_string().contains("16 bytes"), "{err}");
        let key = CustomerKey::from_base64(&BASE64.encode([7u8; 32])).unwrap();
        let secret = key.key_base64();
        let shown = format!("{:?}", ServerSideEncryption::CustomerKey(key));
        assert!(!shown.contains(&secret), "{shown}");
        let builder = S3Builder::new().with_sse_customer_key(secret.clone());
        assert!(!format!("{builder:?}").contains(&secret));
    }

    #[tokio::test]
    async fn build_rejects_bad_configuration_before_any_request() {
        let no_bucket = S3Builder::new()
            .with_key("k")
            .build_store()
            .await
            .unwrap_err();
        assert_eq!(field_of(no_bucket), "bucket");
        let short_key = S3Builder::new()
            .with_bucket("b")
            .with_key("k")
            .with_sse_customer_key(BASE64.encode([1u8; 31]))
            .build_store()
            .await
            .unwrap_err();
        assert_eq!(field_of(short_key), "sse_customer_key");
    }
}
