//! Where the CLI's settings come from: flags, then `S3STATE_*` variables (both through clap),
//! then the Terraform backend block.

use crate::backend_block;
use crate::error::CliError;
use s3state::S3Builder;
use std::path::PathBuf;

/// The global flags naming the state.
#[derive(Debug, clap::Args)]
pub struct Flags {
    /// The bucket holding the state.
    #[arg(long, env = "S3STATE_BUCKET", global = true)]
    pub bucket: Option<String>,
    /// The state's key (for the default workspace).
    #[arg(long, env = "S3STATE_KEY", global = true)]
    pub key: Option<String>,
    /// The AWS region.
    #[arg(long, env = "S3STATE_REGION", global = true)]
    pub region: Option<String>,
    /// A custom S3 endpoint, such as http://127.0.0.1:4566.
    #[arg(long, env = "S3STATE_ENDPOINT_URL", global = true)]
    pub endpoint_url: Option<String>,
    /// Path-style addressing (needed by most emulators). `--path-style` alone turns it on;
    /// give a value only with `=`, as in `--path-style=false`.
    // `require_equals`: a flag with an optional value must not take the next word as its
    // value (`--path-style pull` would read `pull` as the value, not as the command).
    #[arg(
        long,
        env = "S3STATE_PATH_STYLE",
        global = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub path_style: Option<bool>,
    /// Where non-default workspaces live (default `env:`).
    #[arg(long, env = "S3STATE_WORKSPACE_KEY_PREFIX", global = true)]
    pub workspace_key_prefix: Option<String>,
    /// The AWS profile.
    #[arg(long, env = "S3STATE_PROFILE", global = true)]
    pub profile: Option<String>,
    /// Terraform's DynamoDB lock table (`dynamodb_table`): also take its lock item, and keep
    /// the state digest there after every write.
    #[arg(long, env = "S3STATE_DYNAMODB_TABLE", global = true)]
    pub dynamodb_table: Option<String>,
    /// The DynamoDB endpoint (else `AWS_ENDPOINT_URL_DYNAMODB`).
    #[arg(long, env = "S3STATE_DYNAMODB_ENDPOINT_URL", global = true)]
    pub dynamodb_endpoint_url: Option<String>,
    /// The workspace (default `default`).
    #[arg(short = 'w', long, env = "S3STATE_WORKSPACE", global = true, value_parser = workspace_name)]
    pub workspace: Option<String>,
    /// Read the `backend "s3"` block from this directory's .tf files (default: the current
    /// directory, if it has one).
    #[arg(long, value_name = "DIR", global = true)]
    pub chdir: Option<PathBuf>,
}

/// A workspace name, refused (a usage error, before any request) unless Terraform would accept
/// it too.
pub fn workspace_name(name: &str) -> Result<String, String> {
    match s3state::s3::S3Backend::validate_workspace_name(name) {
        Ok(()) => Ok(name.to_owned()),
        Err(s3state::Error::InvalidConfig { message, .. }) => Err(message),
        Err(other) => Err(other.to_string()),
    }
}

/// A builder for the configured state, plus the workspace to use.
pub struct Resolved {
    pub builder: S3Builder,
    pub workspace: String,
}

pub fn resolve(flags: &Flags) -> Result<Resolved, CliError> {
    let dir = flags.chdir.clone().unwrap_or_else(|| PathBuf::from("."));
    let block = match backend_block::read(&dir) {
        Ok(block) => block,
        // An explicit --chdir must work; an unreadable current directory is only a problem
        // when it is the sole source of settings.
        Err(message) if flags.chdir.is_some() || flags.bucket.is_none() => {
            return Err(CliError::usage(message));
        }
        Err(_) => None,
    }
    .unwrap_or_default();
    for note in &block.notes {
        eprintln!("note: {note}");
    }

    let bucket = pick(&flags.bucket, &block.bucket)
        .ok_or_else(|| missing("bucket", "--bucket", "S3STATE_BUCKET"))?;
    let key = pick(&flags.key, &block.key).ok_or_else(|| missing("key", "--key", "S3STATE_KEY"))?;

    let mut builder = S3Builder::from_env().with_bucket(bucket).with_key(key);
    if let Some(region) = pick(&flags.region, &block.region) {
        builder = builder.with_region(region);
    }
    if let Some(endpoint) = pick(&flags.endpoint_url, &block.endpoint_url) {
        builder = builder.with_endpoint_url(endpoint);
    }
    if let Some(path_style) = pick(&flags.path_style, &block.path_style) {
        builder = builder.with_path_style(path_style);
    }
    if let Some(prefix) = pick(&flags.workspace_key_prefix, &block.workspace_key_prefix) {
        builder = builder.with_workspace_key_prefix(prefix);
    }
    if let Some(profile) = pick(&flags.profile, &block.profile) {
        builder = builder.with_profile(profile);
    }
    if let Some(table) = pick(&flags.dynamodb_table, &block.dynamodb_table) {
        builder = builder.with_dynamodb_table(table);
    }
    if let Some(endpoint) =
        pick(&flags.dynamodb_endpoint_url, &block.dynamodb_endpoint).or_else(|| {
            std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
                .ok()
                .filter(|v| !v.is_empty())
        })
    {
        builder = builder.with_dynamodb_endpoint_url(endpoint);
    }
    if !env_sets(&["S3STATE_SSE", "S3STATE_SSE_CUSTOMER_KEY"]) {
        if let Some(key) = &block.sse_customer_key {
            builder = builder.with_sse_customer_key(key.clone());
        } else if let Some(key_id) = &block.kms_key_id {
            builder = builder.with_server_side_encryption(s3state::ServerSideEncryption::Kms {
                key_id: Some(key_id.clone()),
            });
        } else if block.encrypt == Some(true) {
            builder = builder.with_server_side_encryption(s3state::ServerSideEncryption::S3Managed);
        }
    }
    if let (Some(access), Some(secret), false) = (
        &block.access_key,
        &block.secret_key,
        env_sets(&["AWS_ACCESS_KEY_ID"]),
    ) {
        builder = builder.with_static_credentials(access.clone(), secret.clone());
    }
    Ok(Resolved {
        builder,
        workspace: flags.workspace.clone().unwrap_or_else(|| "default".into()),
    })
}

// The precedence of every setting, in one place: a flag, else its environment variable, else
// the backend block. Clap folds the first two into one value (`#[arg(env = ...)]` on `Flags`),
// so a setting with a flag takes `pick(flag_or_env, block)`. Settings without a flag (SSE,
// credentials) are read from the environment by `S3Builder::from_env` and aws-config; the
// block's value applies only when `env_sets` says none of their variables is set.

/// The flag or its `S3STATE_*` variable (as clap resolved them), else the backend block's value.
fn pick<T: Clone>(flag_or_env: &Option<T>, from_block: &Option<T>) -> Option<T> {
    flag_or_env.clone().or_else(|| from_block.clone())
}

/// Whether any of `vars` is set, so that it (read by the library) wins over the block.
fn env_sets(vars: &[&str]) -> bool {
    vars.iter().any(|name| std::env::var_os(name).is_some())
}

fn missing(what: &str, flag: &str, env: &str) -> CliError {
    CliError::usage(format!(
        "no {what} configured: pass {flag}, set {env}, or run in (or --chdir to) a directory with a backend \"s3\" block"
    ))
}
