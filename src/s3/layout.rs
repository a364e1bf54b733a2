//! Terraform's S3 layout, in one place: which bucket names, keys, prefixes and workspace names
//! are valid, and where a workspace's state lives (the default workspace's at `key`,
//! workspace `W`'s at `<workspace_key_prefix>/W/<key>`). The builder and the backend both use
//! it; neither knows the rules itself.

use crate::error::{Error, Result};
use crate::lock::LOCK_SUFFIX;

/// Terraform's default `workspace_key_prefix`.
pub const DEFAULT_WORKSPACE_KEY_PREFIX: &str = "env:";
/// The workspace whose state lives at `key` itself.
pub const DEFAULT_WORKSPACE: &str = "default";

/// The state key of `workspace`: `key` itself for the default workspace, else
/// `<prefix>/<workspace>/<key>`. The workspace name is checked first; `key` and `prefix` are
/// the caller's to check ([`validate_key`], [`validate_layout`]).
pub(super) fn state_key(key: &str, prefix: &str, workspace: &str) -> Result<String> {
    validate_workspace(workspace)?;
    if workspace == DEFAULT_WORKSPACE {
        return Ok(key.to_owned());
    }
    Ok(format!("{prefix}/{workspace}/{key}"))
}

/// The error for an unusable value of the setting `field` (environment variable `env`).
fn invalid_setting(field: &'static str, env: &'static str) -> impl Fn(String) -> Error {
    move |message| Error::InvalidConfig {
        field,
        env,
        message,
    }
}

pub(super) fn validate_bucket(bucket: &str) -> Result<()> {
    let invalid = invalid_setting("bucket", "S3STATE_BUCKET");
    if bucket.is_empty() {
        return Err(invalid("the bucket name is empty".into()));
    }
    if bucket.contains('/') {
        return Err(invalid(format!(
            "{bucket:?} contains '/'; give the path inside the bucket as the key"
        )));
    }
    Ok(())
}

/// Terraform's rule for workspace names (`validWorkspaceName` in its `workspace` commands): the
/// name must read the same after Go's `url.PathEscape`, so it holds only ASCII letters and
/// digits and `- _ . ~ $ & + : = @`. Terraform still lets `.` and `..` through, which would make
/// the state key `env:/../key`; they are refused here, and so is the empty name.
pub(super) fn validate_workspace(workspace: &str) -> Result<()> {
    const ALLOWED: &str = "letters, digits and - _ . ~ $ & + : = @";
    let problem = if workspace.is_empty() {
        Some("a workspace name cannot be empty".to_owned())
    } else if workspace == "." || workspace == ".." {
        Some("\".\" and \"..\" are path segments, not workspace names".to_owned())
    } else {
        workspace
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || "-_.~$&+:=@".contains(c)))
            .map(|c| {
                format!(
                    "{c:?} is not allowed: as in Terraform, a workspace name may contain only {ALLOWED} \
                     (no path separators, nothing a URL path would have to escape)"
                )
            })
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(Error::InvalidConfig {
            field: "workspace",
            env: "S3STATE_WORKSPACE",
            message: format!("{workspace:?} is not a valid workspace name: {problem}"),
        }),
    }
}

pub(super) fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty()
        || prefix.starts_with('/')
        || prefix.ends_with('/')
        || prefix.contains("//")
    {
        return Err(Error::InvalidConfig {
            field: "workspace_key_prefix",
            env: "S3STATE_WORKSPACE_KEY_PREFIX",
            message: format!(
                "{prefix:?} must be non-empty, must not start or end with '/', and must not contain '//'"
            ),
        });
    }
    Ok(())
}

pub(super) fn validate_key(key: &str) -> Result<()> {
    let invalid = invalid_setting("key", "S3STATE_KEY");
    if key.is_empty() {
        return Err(invalid("the key is empty".into()));
    }
    if key.starts_with('/') || key.ends_with('/') {
        return Err(invalid(format!("{key:?} must not start or end with '/'")));
    }
    if key.contains("//") {
        return Err(invalid(format!("{key:?} must not contain '//'")));
    }
    if key
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(invalid(format!(
            "{key:?} must not contain '.' or '..' path segments"
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{key:?} must not contain control characters"
        )));
    }
    Ok(())
}

/// Checks the prefix, and that the key does not name a lock object.
pub(super) fn validate_layout(key: &str, prefix: &str) -> Result<()> {
    validate_prefix(prefix)?;
    if key.ends_with(LOCK_SUFFIX) {
        return Err(Error::InvalidConfig {
            field: "key",
            env: "S3STATE_KEY",
            message: format!("{key:?} ends with {LOCK_SUFFIX:?}, which names lock objects"),
        });
    }
    Ok(())
}
