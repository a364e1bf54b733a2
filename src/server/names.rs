//! State names in URLs: `/<name>`, where a name is one or more path segments. Checked on the
//! raw (undecoded) request path, so that no encoding can smuggle a separator or a dot segment.

use crate::lock::LOCK_SUFFIX;

/// The longest name accepted (S3 keys are at most 1,024 bytes, and the prefix and
/// `.tflock` need room).
const MAX_NAME_BYTES: usize = 900;

/// Checks a `/`-separated path: segments non-empty, not `.` or `..`, and made only of ASCII
/// letters, digits and `- _ . ~ = @ + : , $ &` (nothing a URL must escape: no `%`, no
/// spaces, no control characters, no backslash).
pub(crate) fn check_segments(path: &str) -> Result<(), String> {
    if path.len() > MAX_NAME_BYTES {
        return Err(format!("longer than {MAX_NAME_BYTES} bytes"));
    }
    if let Some(bad) = path
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "-_.~=@+:,$&/".contains(c)))
    {
        return Err(format!(
            "{bad:?} is not allowed; use ASCII letters, digits and - _ . ~ = @ + : , $ & \
             (no percent-encoding)"
        ));
    }
    for segment in path.split('/') {
        if segment.is_empty() {
            return Err("empty path segment (a leading, trailing or double '/')".into());
        }
        if segment == "." || segment == ".." {
            return Err("'.' and '..' path segments are not allowed".into());
        }
    }
    Ok(())
}

/// The suffix of a digest item's ID in Terraform's DynamoDB table (`<bucket>/<key>-md5`).
const DIGEST_SUFFIX: &str = "-md5";

/// The state name in a raw request path (`/team/app.tfstate` → `team/app.tfstate`), or why it
/// is refused.
pub(crate) fn state_name(raw_path: &str) -> Result<&str, String> {
    let name = raw_path.strip_prefix('/').unwrap_or(raw_path);
    if name.is_empty() {
        return Err("no state name: use /<name>".into());
    }
    check_segments(name)?;
    if name.ends_with(LOCK_SUFFIX) {
        return Err(format!(
            "names ending in {LOCK_SUFFIX} are lock objects, not states"
        ));
    }
    if name.ends_with(DIGEST_SUFFIX) {
        // Terraform's DynamoDB table keys a state's digest item `<bucket>/<key>-md5`: a state
        // named `X-md5` would have its lock item there, so a user granted only `X-md5` could
        // lock or disturb `X`'s digest (issue 23, item 17).
        return Err(format!(
            "names ending in {DIGEST_SUFFIX} are refused: with a DynamoDB table, their lock \
             item would be another state's digest item"
        ));
    }
    let first = name.split('/').next().unwrap_or_default();
    if first.starts_with('_') || first == "healthz" || first == "metrics" {
        return Err(format!(
            "{first:?} is reserved for the gateway's own endpoints"
        ));
    }
    Ok(name)
}

/// The S3 key of state `name` under `prefix`.
pub(crate) fn state_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_segments_and_never_escape_the_prefix() {
        for good in [
            "app",
            "team/app.tfstate",
            "env:/dev/app",
            "a-b_c.d~e=f@g+h,i$j&k",
        ] {
            assert_eq!(state_name(&format!("/{good}")), Ok(good), "{good}");
        }
        for bad in [
            "/",
            "/a//b",
            "/a/",
            "/../x",
            "/a/../b",
            "/.",
            "/a/./b",
            "/a%2Fb",
            "/a%2e%2e/b",
            "/a\0b",
            "/a b",
            "/a\\b",
            "/x.tflock",
            "/x-md5",
            "/team/app.tfstate-md5",
            "/_history/x",
            "/healthz",
            "/metrics/x",
            "/é",
        ] {
            assert!(state_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(state_key("", "a/b"), "a/b");
        assert_eq!(state_key("gw", "a/b"), "gw/a/b");
    }
}
