//! Who s3state is at AWS, beyond aws-config's default chain: a role to assume (Terraform's
//! `assume_role`), and the checks made on it before any request. The builder hands the
//! credentials made here to both the S3 and the DynamoDB clients.

use crate::error::{Error, Result};
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_s3::config::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::error::DisplayErrorContext;
use std::collections::BTreeMap;
use std::time::Duration;

/// A role to assume with STS before talking to S3 and DynamoDB: Terraform's `assume_role`
/// backend setting. The base credentials (the default chain, a profile or static keys) are
/// used only to call STS `AssumeRole`; every S3 and DynamoDB request then uses the role's
/// temporary credentials, renewed before they expire.
///
/// ```
/// use s3state::{AssumeRole, S3Builder};
/// use std::time::Duration;
///
/// let builder = S3Builder::new()
///     .with_bucket("tfstate")
///     .with_key("network/terraform.tfstate")
///     .with_assume_role(AssumeRole {
///         session_name: Some("ci-deploy".into()),
///         external_id: Some("team-network".into()),
///         duration: Some(AssumeRole::parse_duration("1h")?),
///         tags: [("team".to_owned(), "network".to_owned())].into(),
///         ..AssumeRole::new("arn:aws:iam::123456789012:role/terraform-state")
///     });
/// # let _ = builder;
/// # Ok::<(), s3state::Error>(())
/// ```
///
/// Everything is checked by [`crate::S3Builder::build`] before any request, with Terraform's
/// rules, and a mistake is [`Error::InvalidConfig`] naming the setting. The role is then
/// assumed once during `build`, so that a refusal by STS is [`Error::AssumeRole`] there,
/// before anything is read or written.
///
/// Terraform's `source_identity` and `transitive_tag_keys` cannot be sent: aws-config's
/// `AssumeRoleProvider`, which s3state uses, has no setting for them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssumeRole {
    /// The role's ARN, such as `arn:aws:iam::123456789012:role/terraform` (required).
    pub role_arn: String,
    /// The session name, as seen in CloudTrail and in the assumed role's ARN (2–64 characters
    /// of letters, digits and `+=,.@-`). Default: one made by aws-config.
    pub session_name: Option<String>,
    /// The external ID the role's trust policy asks for (2–1224 characters of letters, digits
    /// and `+=,.@:/-`).
    pub external_id: Option<String>,
    /// How long the temporary credentials last, between 15 minutes and 12 hours (STS's
    /// default is 1 hour). They are renewed before they expire.
    pub duration: Option<Duration>,
    /// An inline session policy (JSON) further restricting the role.
    pub policy: Option<String>,
    /// ARNs of managed policies further restricting the role.
    pub policy_arns: Vec<String>,
    /// Session tags.
    pub tags: BTreeMap<String, String>,
}

impl AssumeRole {
    /// A role to assume, with every other setting left to its default.
    pub fn new(role_arn: impl Into<String>) -> Self {
        Self {
            role_arn: role_arn.into(),
            ..Self::default()
        }
    }

    /// Parses a duration as Terraform writes it (Go's `time.ParseDuration`): a sequence of
    /// decimal numbers with units `h`, `m`, `s`, `ms`, `us` (or `µs`) and `ns`, such as `1h`,
    /// `90m` or `1h30m`. The 15-minute to 12-hour range is checked by `build`.
    ///
    /// ```
    /// use s3state::AssumeRole;
    /// use std::time::Duration;
    /// assert_eq!(AssumeRole::parse_duration("1h30m")?, Duration::from_secs(5400));
    /// assert!(AssumeRole::parse_duration("3600").is_err()); // a unit is required
    /// # Ok::<(), s3state::Error>(())
    /// ```
    pub fn parse_duration(text: &str) -> Result<Duration> {
        parse_go_duration(text).map_err(|message| Error::InvalidConfig {
            field: "role_duration",
            env: "S3STATE_ROLE_DURATION",
            message,
        })
    }

    /// Checks every setting with Terraform's rules; the first mistake is returned.
    pub(super) fn validate(&self) -> Result<()> {
        let invalid = |field, env, message: String| {
            Err(Error::InvalidConfig {
                field,
                env,
                message,
            })
        };
        if let Err(why) = check_arn(&self.role_arn, "role/") {
            return invalid(
                "role_arn",
                "S3STATE_ROLE_ARN",
                format!(
                    "{:?} is not an IAM role ARN ({why}); expected arn:aws:iam::<account>:role/<name>",
                    self.role_arn
                ),
            );
        }
        if let Some(name) = &self.session_name
            && let Err(why) = check_chars(name, 2, 64, "+=,.@-")
        {
            return invalid(
                "role_session_name",
                "S3STATE_ROLE_SESSION_NAME",
                format!("{name:?} is not a valid session name: {why}"),
            );
        }
        if let Some(id) = &self.external_id
            && let Err(why) = check_chars(id, 2, 1224, "+=,.@:/-")
        {
            return invalid(
                "role_external_id",
                "S3STATE_ROLE_EXTERNAL_ID",
                format!("the external ID is not valid: {why}"),
            );
        }
        if let Some(duration) = self.duration
            && !(MIN_SESSION..=MAX_SESSION).contains(&duration)
        {
            return invalid(
                "role_duration",
                "S3STATE_ROLE_DURATION",
                format!(
                    "{} is outside what STS allows: between 15m and 12h",
                    describe(duration)
                ),
            );
        }
        if let Some(policy) = &self.policy {
            let parsed: std::result::Result<serde_json::Value, _> = serde_json::from_str(policy);
            if !matches!(parsed, Ok(serde_json::Value::Object(_))) {
                return invalid(
                    "role_policy",
                    "S3STATE_ROLE_POLICY",
                    "the session policy must be an IAM policy document (a JSON object)".into(),
                );
            }
        }
        for arn in &self.policy_arns {
            if let Err(why) = check_arn(arn, "policy/") {
                return invalid(
                    "role_policy_arns",
                    "S3STATE_ROLE_POLICY_ARNS",
                    format!("{arn:?} is not an IAM policy ARN ({why})"),
                );
            }
        }
        for (key, value) in &self.tags {
            if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
                return invalid(
                    "role_tags",
                    "S3STATE_ROLE_TAGS",
                    format!(
                        "session tag {key:?}: keys are 1–128 characters and values at most 256"
                    ),
                );
            }
        }
        Ok(())
    }
}

/// STS's bounds on a role session, which Terraform checks too.
const MIN_SESSION: Duration = Duration::from_secs(15 * 60);
const MAX_SESSION: Duration = Duration::from_secs(12 * 60 * 60);

/// `shared` with its credentials replaced by `role`'s. `sts_config` is the configuration the
/// STS client is made from: `shared` itself, or the same settings loaded again with the STS
/// endpoint (an endpoint given in code must win over `AWS_ENDPOINT_URL_STS`, and only the
/// loader marks it so). The role is assumed once now, so that a refusal is reported by
/// `build`, naming the role, rather than by the first S3 request.
///
/// The check costs one more `AssumeRole` call per build: the provider handed to the clients
/// asks again on their first request (aws-config offers no way to seed its cache).
pub(super) async fn assume_role(
    shared: aws_config::SdkConfig,
    sts_config: &aws_config::SdkConfig,
    role: &AssumeRole,
    sts_region: Option<&str>,
) -> Result<aws_config::SdkConfig> {
    let mut provider = AssumeRoleProvider::builder(role.role_arn.clone()).configure(sts_config);
    if let Some(region) = sts_region {
        provider = provider.region(aws_config::Region::new(region.to_owned()));
    }
    if let Some(name) = &role.session_name {
        provider = provider.session_name(name);
    }
    if let Some(id) = &role.external_id {
        provider = provider.external_id(id);
    }
    if let Some(duration) = role.duration {
        provider = provider.session_length(duration);
    }
    if let Some(policy) = &role.policy {
        provider = provider.policy(policy.trim());
    }
    if !role.policy_arns.is_empty() {
        provider = provider.policy_arns(role.policy_arns.clone());
    }
    if !role.tags.is_empty() {
        provider = provider.tags(role.tags.clone());
    }
    let provider = provider.build().await;
    provider
        .provide_credentials()
        .await
        .map_err(|err| match crate::timeouts::timed_out(&err) {
            // STS did not answer in time: say which bound ran out, as for S3.
            Some((setting, after)) => Error::Timeout {
                operation: "AssumeRole",
                location: role.role_arn.clone(),
                setting,
                after,
                source: Some(Box::new(err)),
            },
            None => Error::AssumeRole {
                role_arn: role.role_arn.clone(),
                message: DisplayErrorContext(&err).to_string(),
                source: Some(Box::new(err)),
            },
        })?;
    Ok(shared
        .into_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build())
}

/// Terraform's ARN check: `arn:<partition>:iam::<12-digit account>:<resource_prefix><name>`.
/// AWS's own managed policies have the account `aws`.
fn check_arn(arn: &str, resource_prefix: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [scheme, partition, service, region, account, resource] = parts[..] else {
        return Err("an ARN has six parts separated by `:`".into());
    };
    if scheme != "arn" || partition.is_empty() {
        return Err("it must start with arn:<partition>:".into());
    }
    if service != "iam" {
        return Err(format!("the service is {service:?}, not \"iam\""));
    }
    if !region.is_empty() {
        return Err("IAM ARNs have no region".into());
    }
    let aws_managed = resource_prefix == "policy/" && account == "aws";
    if !aws_managed && (account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("the account {account:?} is not 12 digits"));
    }
    match resource.strip_prefix(resource_prefix) {
        Some(name) if !name.is_empty() => Ok(()),
        _ => Err(format!("the resource must be {resource_prefix}<name>")),
    }
}

/// Terraform's check of session names and external IDs: a length range and letters, digits,
/// `_` and the given punctuation.
fn check_chars(
    value: &str,
    min: usize,
    max: usize,
    punctuation: &str,
) -> std::result::Result<(), String> {
    let length = value.chars().count();
    if !(min..=max).contains(&length) {
        return Err(format!(
            "it has {length} characters; {min} to {max} are allowed"
        ));
    }
    match value
        .chars()
        .find(|c| !(c.is_alphanumeric() || *c == '_' || punctuation.contains(*c)))
    {
        Some(bad) => Err(format!(
            "{bad:?} is not allowed (only letters, digits, _ and {punctuation})"
        )),
        None => Ok(()),
    }
}

/// Go's `time.ParseDuration`, for non-negative durations.
pub(crate) fn parse_go_duration(text: &str) -> std::result::Result<Duration, String> {
    let invalid = || {
        format!("{text:?} is not a duration; write it as Terraform does, such as 1h, 90m or 1h30m")
    };
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let (number, after) = rest.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid());
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let seconds = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(invalid()),
        };
        total += value * seconds;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid())
}

/// A duration as Terraform would print it, for messages.
fn describe(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 3600, seconds % 3600 / 60, seconds % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, 0) => format!("{m}m"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(role: AssumeRole) -> &'static str {
        match role.validate() {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    const ROLE: &str = "arn:aws:iam::123456789012:role/terraform";

    #[test]
    fn durations_are_read_as_go_writes_them() {
        for (text, seconds) in [
            ("1h", 3600.0),
            ("90m", 5400.0),
            ("1h30m", 5400.0),
            ("1.5h", 5400.0),
            ("900s", 900.0),
            ("2h0m0s", 7200.0),
            ("1500ms", 1.5),
            ("0", 0.0),
        ] {
            let parsed = parse_go_duration(text).unwrap();
            assert_eq!(parsed.as_secs_f64(), seconds, "{text}");
        }
        for text in [
            "", "1", "3600", "h", "1x", "1h-5m", "-1h", "1..5h", "one hour", " 1h",
        ] {
            assert!(parse_go_duration(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn a_role_with_terraforms_settings_passes_the_checks() {
        let role = AssumeRole {
            session_name: Some("ci@example.com".into()),
            external_id: Some("tenant:42/a=b".into()),
            duration: Some(Duration::from_secs(3600)),
            policy: Some(r#"{"Version":"2012-10-17","Statement":[]}"#.into()),
            policy_arns: vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".into()],
            tags: [("team".to_owned(), "network".to_owned())].into(),
            ..AssumeRole::new("arn:aws-cn:iam::123456789012:role/path/terraform")
        };
        role.validate().unwrap();
        let role = AssumeRole {
            policy_arns: vec!["arn:aws:iam::123456789012:policy/state-only".into()],
            ..role
        };
        role.validate().unwrap();
        let role = AssumeRole {
            policy_arns: vec!["arn:aws:iam::123456789012:role/not-a-policy".into()],
            ..role
        };
        assert_eq!(field_of(role), "role_policy_arns");
    }

    #[test]
    fn malformed_role_arns_are_refused_naming_the_setting() {
        for arn in [
            "",
            "terraform",
            "arn:aws:iam::123456789012:user/alice",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::12345:role/x",
            "arn:aws:iam:us-east-1:123456789012:role/x",
            "arn:aws:iam::123456789012:role/",
        ] {
            assert_eq!(field_of(AssumeRole::new(arn)), "role_arn", "{arn:?}");
        }
    }

    #[test]
    fn durations_outside_fifteen_minutes_to_twelve_hours_are_refused() {
        for seconds in [0, 60, 899, 12 * 3600 + 1] {
            let role = AssumeRole {
                duration: Some(Duration::from_secs(seconds)),
                ..AssumeRole::new(ROLE)
            };
            assert_eq!(field_of(role), "role_duration", "{seconds}");
        }
        for seconds in [900, 12 * 3600] {
            let role = AssumeRole {
                duration: Some(Duration::from_secs(seconds)),
                ..AssumeRole::new(ROLE)
            };
            role.validate().unwrap();
        }
    }

    #[test]
    fn session_names_external_ids_and_policies_follow_terraforms_rules() {
        let with = |edit: fn(&mut AssumeRole)| {
            let mut role = AssumeRole::new(ROLE);
            edit(&mut role);
            field_of(role)
        };
        assert_eq!(
            with(|r| r.session_name = Some("has space".into())),
            "role_session_name"
        );
        assert_eq!(
            with(|r| r.session_name = Some("x".repeat(65))),
            "role_session_name"
        );
        assert_eq!(
            with(|r| r.external_id = Some("a".into())),
            "role_external_id"
        );
        assert_eq!(with(|r| r.policy = Some("not json".into())), "role_policy");
        assert_eq!(with(|r| r.policy = Some("[]".into())), "role_policy");
        assert_eq!(
            with(|r| r.tags = [(String::new(), "v".to_owned())].into()),
            "role_tags"
        );
    }
}
