//! Configuration of an S3-backed state manager, in the style of object_store's
//! `AmazonS3Builder`: start from [`S3Builder::new`] or [`S3Builder::from_env`], override with
//! `with_*`, and [`S3Builder::build`]. Validation happens in `build`, before any request.

use super::config::{ConditionalDelete, S3Config};
use super::errors::sdk_error;
use super::layout::{
    DEFAULT_WORKSPACE, DEFAULT_WORKSPACE_KEY_PREFIX, validate_bucket, validate_key, validate_layout,
};
use super::sse::{CustomerKey, ServerSideEncryption};
use super::{S3Backend, S3Store};
use crate::error::{Error, Result};
use crate::remote::{RemoteState, RemoteStateOptions};
use aws_sdk_s3::Client;
use aws_sdk_s3::types::BucketVersioningStatus;
use std::fmt;
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
    client: Option<Client>,
    static_credentials: Option<(String, Redacted)>,
    options: RemoteStateOptions,
    /// Terraform's DynamoDB lock table (`lock_table.rs`).
    pub(super) dynamodb: super::lock_table::DynamoSettings,
    /// A malformed environment variable seen by `from_env`, reported by `build`.
    env_error: Option<(&'static str, &'static str, String)>,
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
    /// | `S3STATE_DYNAMODB_TABLE` | Terraform's `dynamodb_table` (feature `dynamodb`) |
    /// | `S3STATE_DYNAMODB_ENDPOINT_URL` | DynamoDB endpoint (else `AWS_ENDPOINT_URL_DYNAMODB`) |
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

    /// The SDK's total attempts per request for transient failures (5xx, throttling,
    /// connection errors). Default 3, as the SDK's standard mode.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
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

    /// Use this client instead of building one; region, endpoint, path style and profile are
    /// then the client's own.
    pub fn with_client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Options of the state manager `build` returns.
    pub fn with_options(mut self, options: RemoteStateOptions) -> Self {
        self.options = options;
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
        let sse = match &self.sse {
            None => None,
            Some(SseSetting::Ready(sse)) => Some(sse.clone()),
            Some(SseSetting::CustomerKeyBase64(Redacted(encoded))) => Some(
                ServerSideEncryption::CustomerKey(CustomerKey::from_base64(encoded)?),
            ),
        };
        let (client, shared) = match self.client.clone() {
            Some(client) => (client, None),
            None => {
                let (client, shared) = self.make_client().await?;
                (client, Some(shared))
            }
        };
        let lock_table = super::lock_table::open(&self.dynamodb, shared).await;
        let backend = S3Backend {
            config: Arc::new(S3Config {
                bucket,
                sse,
                conflict_retries: self.conflict_retries.unwrap_or(5),
                conditional_delete: ConditionalDelete::default(),
                lock_table,
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

    async fn make_client(&self) -> Result<(Client, aws_config::SdkConfig)> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(endpoint) = &self.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(profile) = &self.profile {
            loader = loader.profile_name(profile);
        }
        if let Some((access_key_id, Redacted(secret))) = &self.static_credentials {
            loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
                access_key_id,
                secret,
                None,
                None,
                "s3state-static",
            ));
        }
        if let Some(attempts) = self.max_attempts {
            loader = loader.retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(attempts),
            );
        }
        let shared = loader.load().await;
        if shared.region().is_none() {
            return Err(Error::InvalidConfig {
                field: "region",
                env: "S3STATE_REGION",
                message: "no region is configured; set it with --region, S3STATE_REGION, AWS_REGION or a profile".into(),
            });
        }
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(self.force_path_style.unwrap_or(false))
            .build();
        Ok((Client::from_conf(config), shared))
    }
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
    let output = store
        .config
        .client
        .get_bucket_versioning()
        .bucket(&store.config.bucket)
        .send()
        .await
        .map_err(|err| sdk_error("GetBucketVersioning", &location, err))?;
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
