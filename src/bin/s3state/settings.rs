//! Where the CLI's settings come from: flags, then `S3STATE_*` variables (both through clap),
//! then the Terraform backend block.

use crate::backend_block;
use crate::error::CliError;
use s3state::{AssumeRole, S3Builder};
use std::path::PathBuf;
use std::time::Duration;

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
    /// Assume this IAM role for every S3 and DynamoDB request (Terraform's
    /// `assume_role.role_arn`); the other credentials are used only to ask STS for it.
    #[arg(long, env = "S3STATE_ROLE_ARN", global = true, value_name = "ARN")]
    pub role_arn: Option<String>,
    /// The role session's name (`assume_role.session_name`).
    #[arg(
        long,
        env = "S3STATE_ROLE_SESSION_NAME",
        global = true,
        value_name = "NAME"
    )]
    pub role_session_name: Option<String>,
    /// The external ID the role's trust policy asks for (`assume_role.external_id`).
    #[arg(
        long,
        env = "S3STATE_ROLE_EXTERNAL_ID",
        global = true,
        value_name = "ID"
    )]
    pub role_external_id: Option<String>,
    /// How long the role's credentials last, 15m to 12h, as Terraform writes it: 1h, 90m
    /// (`assume_role.duration`).
    #[arg(long, env = "S3STATE_ROLE_DURATION", global = true, value_name = "DURATION", value_parser = role_duration)]
    pub role_duration: Option<Duration>,
    /// An inline session policy, JSON (`assume_role.policy`).
    #[arg(long, env = "S3STATE_ROLE_POLICY", global = true, value_name = "JSON")]
    pub role_policy: Option<String>,
    /// Managed session policies, comma-separated ARNs (`assume_role.policy_arns`).
    #[arg(
        long,
        env = "S3STATE_ROLE_POLICY_ARNS",
        global = true,
        value_name = "ARN",
        value_delimiter = ','
    )]
    pub role_policy_arns: Vec<String>,
    /// Session tags, comma-separated KEY=VALUE pairs (`assume_role.tags`).
    #[arg(long, env = "S3STATE_ROLE_TAGS", global = true, value_name = "KEY=VALUE", value_delimiter = ',', value_parser = role_tag)]
    pub role_tags: Vec<(String, String)>,
    /// The STS endpoint used to assume the role (else `AWS_ENDPOINT_URL_STS`).
    #[arg(
        long,
        env = "S3STATE_STS_ENDPOINT_URL",
        global = true,
        value_name = "URL"
    )]
    pub sts_endpoint_url: Option<String>,
    /// How long opening a connection to S3, DynamoDB or STS may take (default 5s).
    #[arg(long, env = "S3STATE_CONNECT_TIMEOUT", global = true, value_name = "DURATION", value_parser = timeout)]
    pub connect_timeout: Option<Duration>,
    /// How long a request may wait for the start of its answer, and a download between two
    /// chunks (default 30s). Raise it for large states over slow links.
    #[arg(long, env = "S3STATE_READ_TIMEOUT", global = true, value_name = "DURATION", value_parser = timeout)]
    pub read_timeout: Option<Duration>,
    /// How long one attempt of a request may take (default 60s).
    #[arg(long, env = "S3STATE_OPERATION_ATTEMPT_TIMEOUT", global = true, value_name = "DURATION", value_parser = timeout)]
    pub operation_attempt_timeout: Option<Duration>,
    /// How long a request may take with all its retries (default 2m).
    #[arg(long, env = "S3STATE_OPERATION_TIMEOUT", global = true, value_name = "DURATION", value_parser = timeout)]
    pub operation_timeout: Option<Duration>,
    /// Which checksums writes carry and reads ask for: `auto` (default: the SDK's
    /// `x-amz-checksum-sha256`, and Content-MD5 with a signed payload on a store that refuses
    /// it), `always`, or `compatible` (Terraform's `skip_s3_checksum = true`, which the backend
    /// block may set).
    #[arg(long, env = "S3STATE_CHECKSUMS", global = true, value_name = "MODE", value_parser = checksum_mode)]
    pub checksums: Option<s3state::s3::ChecksumMode>,
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

/// `--role-duration`, as Terraform writes durations.
fn role_duration(text: &str) -> Result<Duration, String> {
    AssumeRole::parse_duration(text).map_err(|err| match err {
        s3state::Error::InvalidConfig { message, .. } => message,
        other => other.to_string(),
    })
}

/// A `--*-timeout`, written as the `S3STATE_*_TIMEOUT` variables take it (`30s`, `2m`).
fn checksum_mode(text: &str) -> Result<s3state::s3::ChecksumMode, String> {
    text.parse()
}

fn timeout(text: &str) -> Result<Duration, String> {
    s3state::Timeouts::parse_duration(text)
}

/// The timeouts given as flags (or their variables), over the builder's (the defaults).
fn timeouts(flags: &Flags, builder: &S3Builder) -> s3state::Timeouts {
    let mut timeouts = builder.timeouts();
    if let Some(value) = flags.connect_timeout {
        timeouts.connect = value;
    }
    if let Some(value) = flags.read_timeout {
        timeouts.read = value;
    }
    if let Some(value) = flags.operation_attempt_timeout {
        timeouts.operation_attempt = value;
    }
    if let Some(value) = flags.operation_timeout {
        timeouts.operation = value;
    }
    timeouts
}

/// One `--role-tags` pair.
fn role_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// A builder for the configured state, plus the workspace to use.
/// Whether the backend block's notes (settings s3state does not apply) are printed.
static SHOW_BACKEND_NOTES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Prints the backend block's notes (settings s3state does not apply), or keeps them quiet.
pub fn show_backend_notes(show: bool) {
    SHOW_BACKEND_NOTES.store(show, std::sync::atomic::Ordering::Relaxed);
}

pub struct Resolved {
    pub builder: S3Builder,
    pub workspace: String,
}

pub fn resolve(flags: &Flags) -> Result<Resolved, CliError> {
    resolve_with(flags, KeyNeeded::Yes)
}

/// Refuses the settings `s3state serve` does not apply, instead of serving without them. The
/// gateway reads the bucket, region, endpoint, path style, profile and DynamoDB table: a role
/// the operator asked for would not be assumed (the gateway would act as its own identity),
/// and a backend block's settings would not be read. Serving without them must be a choice,
/// not a surprise.
pub fn serve_takes_these(flags: &Flags) -> Result<(), CliError> {
    let ignored = [
        ("--role-arn (S3STATE_ROLE_ARN)", flags.role_arn.is_some()),
        (
            "--role-session-name (S3STATE_ROLE_SESSION_NAME)",
            flags.role_session_name.is_some(),
        ),
        (
            "--role-external-id (S3STATE_ROLE_EXTERNAL_ID)",
            flags.role_external_id.is_some(),
        ),
        (
            "--role-duration (S3STATE_ROLE_DURATION)",
            flags.role_duration.is_some(),
        ),
        (
            "--role-policy (S3STATE_ROLE_POLICY)",
            flags.role_policy.is_some(),
        ),
        (
            "--role-policy-arns (S3STATE_ROLE_POLICY_ARNS)",
            !flags.role_policy_arns.is_empty(),
        ),
        (
            "--role-tags (S3STATE_ROLE_TAGS)",
            !flags.role_tags.is_empty(),
        ),
        (
            "--sts-endpoint-url (S3STATE_STS_ENDPOINT_URL)",
            flags.sts_endpoint_url.is_some(),
        ),
        ("--chdir", flags.chdir.is_some()),
    ];
    let given: Vec<&str> = ignored
        .iter()
        .filter(|(_, given)| *given)
        .map(|(flag, _)| *flag)
        .collect();
    if given.is_empty() {
        return Ok(());
    }
    Err(CliError::usage(format!(
        "`s3state serve` does not apply {}: it would serve without them. The gateway takes \
         --bucket, --region, --endpoint-url, --path-style, --profile (a profile may assume a \
         role: role_arn in ~/.aws/config), --dynamodb-table/--dynamodb-endpoint-url and the \
         --*-timeout flags. Unset the others to serve",
        given.join(", ")
    )))
}

/// Like [`resolve`], for a command that works on the whole bucket (`ls`): a missing key is
/// not an error. Every other setting (role, lock table, encryption, credentials) applies as
/// for a single state; the key is a placeholder never read.
pub fn resolve_for_bucket(flags: &Flags) -> Result<Resolved, CliError> {
    resolve_with(flags, KeyNeeded::No)
}

#[derive(PartialEq)]
enum KeyNeeded {
    Yes,
    No,
}

fn resolve_with(flags: &Flags, key_needed: KeyNeeded) -> Result<Resolved, CliError> {
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
    if SHOW_BACKEND_NOTES.load(std::sync::atomic::Ordering::Relaxed) {
        for note in &block.notes {
            eprintln!("note: {note}");
        }
    }

    let bucket = pick(&flags.bucket, &block.bucket)
        .ok_or_else(|| missing("bucket", "--bucket", "S3STATE_BUCKET"))?;
    let key = match pick(&flags.key, &block.key) {
        Some(key) => key,
        None if key_needed == KeyNeeded::No => "-".to_owned(),
        None => return Err(missing("key", "--key", "S3STATE_KEY")),
    };

    let mut builder = S3Builder::from_env()
        .with_bucket(bucket)
        .with_key(key)
        // Every version this command writes names its author: `user@host`, as the `Who` of
        // Terraform's (and our) lock info says it, with or without a lock.
        .with_options(s3state::RemoteStateOptions {
            author: Some(s3state::LockInfo::new("").who),
            ..s3state::RemoteStateOptions::default()
        });
    // OpenTofu state encryption: TF_ENCRYPTION merged over the encryption block, as OpenTofu
    // merges them. (Its errors name settings, never their values.)
    match s3state::encryption::StateEncryption::from_env(block.encryption.clone()) {
        Ok(Some(encryption)) => builder = builder.with_encryption(encryption),
        Ok(None) => {}
        Err(err) => return Err(CliError::usage(format!("OpenTofu encryption: {err}"))),
    }
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
    // Half a set of static credentials must not quietly fall back to the default chain, which
    // may be another identity. (Names only: the values are secrets.)
    match (&block.access_key, &block.secret_key, &block.token) {
        (Some(_), None, _) | (None, Some(_), _) | (None, None, Some(_)) => {
            let given: Vec<&str> = [
                ("access_key", block.access_key.is_some()),
                ("secret_key", block.secret_key.is_some()),
                ("token", block.token.is_some()),
            ]
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect();
            return Err(CliError::usage(format!(
                "the backend block in {} sets {} without both access_key and secret_key; \
                 set both, or remove them to use the default credential chain",
                block.file,
                given.join(" and ")
            )));
        }
        _ => {}
    }
    if let (Some(access), Some(secret), false) = (
        &block.access_key,
        &block.secret_key,
        env_sets(&["AWS_ACCESS_KEY_ID"]),
    ) {
        builder = builder.with_static_credentials(access.clone(), secret.clone());
        if let Some(token) = &block.token {
            builder = builder.with_session_token(token.clone());
        }
    }
    if let Some(role) = role(flags, &block)? {
        builder = builder.with_assume_role(role);
    }
    if let Some(endpoint) = pick(&flags.sts_endpoint_url, &block.sts_endpoint) {
        builder = builder.with_sts_endpoint_url(endpoint);
    }
    if let Some(region) = &block.sts_region {
        builder = builder.with_sts_region(region.clone());
    }
    // The files replace aws-config's defaults, which AWS_CONFIG_FILE and
    // AWS_SHARED_CREDENTIALS_FILE name: those variables win, as everywhere else.
    if !block.shared_config_files.is_empty() && !env_sets(&["AWS_CONFIG_FILE"]) {
        builder = builder.with_shared_config_files(&block.shared_config_files);
    }
    if !block.shared_credentials_files.is_empty() && !env_sets(&["AWS_SHARED_CREDENTIALS_FILE"]) {
        builder = builder.with_shared_credentials_files(&block.shared_credentials_files);
    }
    // Terraform treats 0 as unset.
    if let Some(attempts) = block.max_retries.filter(|attempts| *attempts > 0) {
        builder = builder.with_max_attempts(attempts);
    }
    let skip_checksum = block
        .skip_s3_checksum
        .filter(|skip| *skip)
        .map(|_| s3state::s3::ChecksumMode::Compatible);
    if let Some(mode) = pick(&flags.checksums, &skip_checksum) {
        builder = builder.with_checksums(mode);
    }
    // Terraform's backend block has no timeouts: a flag, else its variable, else the default.
    let timeouts = timeouts(flags, &builder);
    builder = builder.with_timeouts(timeouts);
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

/// The role to assume. A role named by `--role-arn` (or `S3STATE_ROLE_ARN`) replaces the
/// block's `assume_role` whole: its external ID or policy belong to the block's role, not to
/// another. The other `--role-*` flags adjust whichever role is used.
fn role(
    flags: &Flags,
    block: &backend_block::BackendBlock,
) -> Result<Option<AssumeRole>, CliError> {
    let base = match &flags.role_arn {
        Some(arn) => Some(AssumeRole::new(arn.clone())),
        None => block.assume_role.clone(),
    };
    let Some(mut role) = base else {
        let adjustments = [
            ("--role-session-name", flags.role_session_name.is_some()),
            ("--role-external-id", flags.role_external_id.is_some()),
            ("--role-duration", flags.role_duration.is_some()),
            ("--role-policy", flags.role_policy.is_some()),
            ("--role-policy-arns", !flags.role_policy_arns.is_empty()),
            ("--role-tags", !flags.role_tags.is_empty()),
        ];
        return match adjustments.iter().find(|(_, given)| *given) {
            Some((flag, _)) => Err(CliError::usage(format!(
                "{flag} needs a role to assume: pass --role-arn, set S3STATE_ROLE_ARN, or use a backend block with assume_role"
            ))),
            None => Ok(None),
        };
    };
    if let Some(name) = &flags.role_session_name {
        role.session_name = Some(name.clone());
    }
    if let Some(id) = &flags.role_external_id {
        role.external_id = Some(id.clone());
    }
    if let Some(duration) = flags.role_duration {
        role.duration = Some(duration);
    }
    if let Some(policy) = &flags.role_policy {
        role.policy = Some(policy.clone());
    }
    if !flags.role_policy_arns.is_empty() {
        role.policy_arns = flags.role_policy_arns.clone();
    }
    if !flags.role_tags.is_empty() {
        role.tags = flags.role_tags.iter().cloned().collect();
    }
    Ok(Some(role))
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
