//! Zero configuration for Terraform users: the `backend "s3"` block of the `.tf` files in a
//! directory, read with an HCL parser.

use hcl::{Body, Expression, ObjectKey};
use s3state::AssumeRole;
use std::path::Path;

/// Messages from here become one CLI error line.
type Result<T> = std::result::Result<T, String>;

macro_rules! bail {
    ($($arg:tt)*) => { return Err(format!($($arg)*)) };
}

/// The settings of a `backend "s3"` block that s3state uses.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BackendBlock {
    pub file: String,
    /// The `terraform { encryption { … } }` block (OpenTofu state encryption), if any.
    pub encryption: Option<s3state::encryption::EncryptionConfig>,
    pub bucket: Option<String>,
    pub key: Option<String>,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub path_style: Option<bool>,
    pub workspace_key_prefix: Option<String>,
    pub profile: Option<String>,
    pub encrypt: Option<bool>,
    pub kms_key_id: Option<String>,
    pub sse_customer_key: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// `token`: the session token of temporary `access_key`/`secret_key` credentials.
    pub token: Option<String>,
    /// `assume_role` (or the older top-level `role_arn`, `session_name`, ...).
    pub assume_role: Option<AssumeRole>,
    /// `endpoints.sts` (or the older `sts_endpoint`).
    pub sts_endpoint: Option<String>,
    pub sts_region: Option<String>,
    pub shared_config_files: Vec<String>,
    /// `shared_credentials_files` (or the older `shared_credentials_file`).
    pub shared_credentials_files: Vec<String>,
    /// `max_retries`: Terraform passes it to the AWS SDK as the maximum number of attempts.
    pub max_retries: Option<u32>,
    /// `skip_s3_checksum`: no flexible checksums (s3state's `checksums = compatible`).
    pub skip_s3_checksum: Option<bool>,
    /// Terraform's DynamoDB lock table.
    pub dynamodb_table: Option<String>,
    /// `endpoints.dynamodb` (or the older `dynamodb_endpoint`).
    pub dynamodb_endpoint: Option<String>,
    /// One line per setting that has no effect here, for the user to see.
    pub notes: Vec<String>,
}

/// Settings that change nothing for s3state, each with the reason shown to the user.
const NO_EFFECT: &[(&str, &str)] = &[
    (
        "skip_credentials_validation",
        "it only skips Terraform's own STS check of the credentials",
    ),
    (
        "skip_region_validation",
        "it only skips Terraform's own check of the region name",
    ),
    (
        "skip_metadata_api_check",
        "it only stops Terraform asking the EC2 metadata service; s3state's credential chain still may",
    ),
    (
        "skip_requesting_account_id",
        "s3state never asks for the account ID",
    ),
    (
        "use_lockfile",
        "s3state always takes the lock file (and the DynamoDB lock when dynamodb_table is set)",
    ),
    (
        "retry_mode",
        "s3state uses the SDK's standard retry mode (max_retries is honoured)",
    ),
    (
        "ec2_metadata_service_endpoint_mode",
        "set AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE instead",
    ),
    (
        "custom_ca_bundle",
        "s3state trusts the system's root certificates only",
    ),
    ("http_proxy", "s3state does not use a proxy"),
    ("https_proxy", "s3state does not use a proxy"),
    ("no_proxy", "s3state does not use a proxy"),
    ("insecure", "s3state always verifies TLS certificates"),
    (
        "use_dualstack_endpoint",
        "set AWS_USE_DUALSTACK_ENDPOINT instead",
    ),
    ("iam_endpoint", "s3state makes no IAM requests"),
];

/// Settings s3state cannot honour; ignoring them would change who is locked out or who we
/// are, so they are errors.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "assume_role_with_web_identity",
        "web identity is not supported in the backend block; set AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE, which s3state's credential chain reads",
    ),
    (
        "acl",
        "s3state does not set object ACLs, and without this one the state could be unreadable to the bucket's owner; set the bucket's Object Ownership to \"bucket owner enforced\" and remove `acl`",
    ),
    (
        "allowed_account_ids",
        "s3state does not check the account, and ignoring this guard could read or write a state in another account",
    ),
    (
        "forbidden_account_ids",
        "s3state does not check the account, and ignoring this guard could read or write a state in a forbidden account",
    ),
    (
        "ec2_metadata_service_endpoint",
        "it changes where credentials come from; set AWS_EC2_METADATA_SERVICE_ENDPOINT instead",
    ),
    ("sse_customer_key_md5", "not a backend setting"),
];

/// The older top-level spellings of `assume_role`'s settings (Terraform before 1.6), read
/// into the same role with a note.
const DEPRECATED_ROLE: &[(&str, &str)] = &[
    ("role_arn", "role_arn"),
    ("session_name", "session_name"),
    ("external_id", "external_id"),
    ("assume_role_duration_seconds", "duration"),
    ("assume_role_policy", "policy"),
    ("assume_role_policy_arns", "policy_arns"),
    ("assume_role_tags", "tags"),
    ("assume_role_transitive_tag_keys", "transitive_tag_keys"),
];

/// Finds and reads the `backend "s3"` block in `dir`'s `.tf` files. `None` when there is none.
pub fn read(dir: &Path) -> Result<Option<BackendBlock>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|err| format!("cannot read directory {}: {err}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| is_tf_name(&entry.file_name()))
        .map(|entry| entry.path())
        .collect();
    files.sort();
    let mut found = None;
    let mut encryption = None;
    for path in files {
        let text = std::fs::read_to_string(&path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let body: Body =
            hcl::parse(&text).map_err(|err| format!("cannot parse {}: {err}", path.display()))?;
        for terraform in body.blocks().filter(|b| b.identifier() == "terraform") {
            for block in terraform
                .body()
                .blocks()
                .filter(|b| b.identifier() == "encryption")
            {
                if encryption.is_some() {
                    bail!(
                        "more than one encryption block found (the second in {})",
                        path.display()
                    );
                }
                // Read as TF_ENCRYPTION is: the block's body, in HCL.
                let text = hcl::format::to_string(block.body()).map_err(|_| {
                    format!("cannot read the encryption block in {}", path.display())
                })?;
                encryption = Some(
                    s3state::encryption::EncryptionConfig::parse(&text)
                        .map_err(|err| format!("{}: {err}", path.display()))?,
                );
            }
            for backend in terraform
                .body()
                .blocks()
                .filter(|b| b.identifier() == "backend")
            {
                let kind = backend
                    .labels()
                    .first()
                    .map(|l| l.as_str())
                    .unwrap_or_default();
                if kind != "s3" {
                    bail!(
                        "{} configures a \"{kind}\" backend; s3state works with the \"s3\" backend only",
                        path.display()
                    );
                }
                if found.is_some() {
                    bail!(
                        "more than one backend \"s3\" block found (the second in {})",
                        path.display()
                    );
                }
                found = Some(parse_block(&path.display().to_string(), backend.body())?);
            }
        }
    }
    if encryption.is_some() {
        let mut block = found.unwrap_or_default();
        block.encryption = encryption;
        found = Some(block);
    }
    Ok(found)
}

/// Whether a directory entry named `name` is a `.tf` file: the test `Path::extension() ==
/// "tf"` makes (a non-empty stem, then `.tf`), on the name alone.
///
/// Every command scans the current directory, which may be large (`/tmp`, a home directory);
/// building each entry's path and parsing its components took about 2,000 instructions per
/// entry, which in a directory of 3,900 entries was twice the rest of a 1 KB `pull`.
fn is_tf_name(name: &std::ffi::OsStr) -> bool {
    let bytes = name.as_encoded_bytes();
    bytes.len() > b".tf".len() && bytes.ends_with(b".tf")
}

fn parse_block(file: &str, body: &Body) -> Result<BackendBlock> {
    let mut block = BackendBlock {
        file: file.to_owned(),
        ..Default::default()
    };
    // `assume_role = { ... }` (Terraform's form), an `assume_role { ... }` block, or the older
    // top-level settings: all are read into one role.
    let mut role = RoleSettings::default();
    for attribute in body.attributes() {
        let name = attribute.key();
        let expr = attribute.expr();
        let text = || string(file, name, expr);
        match name {
            "bucket" => block.bucket = Some(text()?),
            "key" => block.key = Some(text()?),
            "region" => block.region = Some(text()?),
            "endpoint" => block.endpoint_url = Some(text()?),
            "endpoints" => endpoints(file, expr, &mut block)?,
            "dynamodb_table" => block.dynamodb_table = Some(text()?),
            "dynamodb_endpoint" => block.dynamodb_endpoint = Some(text()?),
            "sts_endpoint" => block.sts_endpoint = Some(text()?),
            "sts_region" => block.sts_region = Some(text()?),
            "use_path_style" | "force_path_style" => {
                block.path_style = Some(boolean(file, name, expr)?)
            }
            "workspace_key_prefix" => block.workspace_key_prefix = Some(text()?),
            "profile" => block.profile = Some(text()?),
            "encrypt" => block.encrypt = Some(boolean(file, name, expr)?),
            "kms_key_id" => block.kms_key_id = Some(text()?),
            "sse_customer_key" => block.sse_customer_key = Some(text()?),
            "access_key" => block.access_key = Some(text()?),
            "secret_key" => block.secret_key = Some(text()?),
            "token" => block.token = Some(text()?),
            "shared_config_files" => block.shared_config_files = strings(file, name, expr)?,
            "shared_credentials_files" => {
                block.shared_credentials_files = strings(file, name, expr)?
            }
            "shared_credentials_file" => block.shared_credentials_files = vec![text()?],
            "max_retries" => block.max_retries = Some(max_retries(file, expr)?),
            "skip_s3_checksum" => block.skip_s3_checksum = Some(boolean(file, name, expr)?),
            "use_fips_endpoint" => {
                if boolean(file, name, expr)? {
                    bail!(
                        "backend setting `use_fips_endpoint` in {file} is not supported: set AWS_USE_FIPS_ENDPOINT=true instead, which s3state's AWS configuration reads"
                    );
                }
            }
            "assume_role" => {
                let Expression::Object(object) = expr else {
                    bail!("backend setting `assume_role` in {file} must be an object");
                };
                for (key, value) in object {
                    role.set(file, &object_key(file, "assume_role", key)?, value)?;
                }
            }
            _ if DEPRECATED_ROLE.iter().any(|(old, _)| *old == name) => {
                let (_, new) = DEPRECATED_ROLE
                    .iter()
                    .find(|(old, _)| *old == name)
                    .unwrap();
                block.notes.push(format!(
                    "backend setting `{name}` in {file} is deprecated by Terraform; s3state reads it as `assume_role.{new}`"
                ));
                if name == "assume_role_duration_seconds" {
                    let seconds = integer(file, name, expr)?;
                    role.duration = Some(std::time::Duration::from_secs(seconds));
                } else {
                    role.set(file, new, expr)?;
                }
            }
            _ => match NO_EFFECT.iter().find(|(setting, _)| *setting == name) {
                Some((_, why)) => block.notes.push(format!(
                    "backend setting `{name}` in {file} has no effect in s3state: {why}"
                )),
                None => refuse(file, "setting", name)?,
            },
        }
    }
    for nested in body.blocks() {
        let name = nested.identifier();
        if name != "assume_role" {
            refuse(file, "block", name)?;
        }
        for attribute in nested.body().attributes() {
            role.set(file, attribute.key(), attribute.expr())?;
        }
        if let Some(inner) = nested.body().blocks().next() {
            bail!(
                "`assume_role` in {file} has a block `{}`; write its settings as attributes",
                inner.identifier()
            );
        }
    }
    block.assume_role = role.finish(file, &mut block.notes)?;
    Ok(block)
}

/// A setting s3state refuses, with the reason when it has one.
fn refuse(file: &str, what: &str, name: &str) -> Result<()> {
    match UNSUPPORTED
        .iter()
        .find(|(unsupported, _)| *unsupported == name)
    {
        Some((_, why)) => bail!("backend {what} `{name}` in {file} is not supported: {why}"),
        None => bail!("backend {what} `{name}` in {file} is not known to s3state"),
    }
}

/// `assume_role`'s settings as they are read, before they become an [`AssumeRole`].
#[derive(Default)]
struct RoleSettings {
    role_arn: Option<String>,
    session_name: Option<String>,
    external_id: Option<String>,
    duration: Option<std::time::Duration>,
    policy: Option<String>,
    policy_arns: Vec<String>,
    tags: std::collections::BTreeMap<String, String>,
    /// Read but not sent (aws-config's provider cannot), each becoming a note.
    unsent: Vec<&'static str>,
    /// Whether any setting was seen.
    seen: bool,
}

impl RoleSettings {
    fn set(&mut self, file: &str, name: &str, expr: &Expression) -> Result<()> {
        self.seen = true;
        let path = format!("assume_role.{name}");
        let text = || string(file, &path, expr);
        match name {
            "role_arn" => self.role_arn = Some(text()?),
            "session_name" => self.session_name = Some(text()?),
            "external_id" => self.external_id = Some(text()?),
            "duration" => {
                let duration = text()?;
                self.duration = Some(AssumeRole::parse_duration(&duration).map_err(
                    |err| match err {
                        s3state::Error::InvalidConfig { message, .. } => {
                            format!("backend setting `{path}` in {file}: {message}")
                        }
                        other => other.to_string(),
                    },
                )?);
            }
            "policy" => self.policy = Some(text()?),
            "policy_arns" => self.policy_arns = strings(file, &path, expr)?,
            "tags" => self.tags = string_map(file, &path, expr)?,
            "source_identity" => {
                text()?;
                self.unsent.push("source_identity");
            }
            "transitive_tag_keys" => {
                strings(file, &path, expr)?;
                self.unsent.push("transitive_tag_keys");
            }
            other => {
                bail!("backend setting `assume_role.{other}` in {file} is not known to s3state")
            }
        }
        Ok(())
    }

    fn finish(self, file: &str, notes: &mut Vec<String>) -> Result<Option<AssumeRole>> {
        if !self.seen {
            return Ok(None);
        }
        let Some(role_arn) = self.role_arn else {
            bail!("`assume_role` in {file} has no `role_arn`; it is required");
        };
        for name in self.unsent {
            notes.push(format!(
                "backend setting `assume_role.{name}` in {file} has no effect in s3state: aws-config's AssumeRole provider cannot send it (if the role's trust policy requires it, assuming the role fails)"
            ));
        }
        Ok(Some(AssumeRole {
            session_name: self.session_name,
            external_id: self.external_id,
            duration: self.duration,
            policy: self.policy,
            policy_arns: self.policy_arns,
            tags: self.tags,
            ..AssumeRole::new(role_arn)
        }))
    }
}

fn string(file: &str, name: &str, expr: &Expression) -> Result<String> {
    match expr {
        Expression::String(value) => Ok(value.clone()),
        _ => bail!("backend setting `{name}` in {file} must be a literal string"),
    }
}

fn boolean(file: &str, name: &str, expr: &Expression) -> Result<bool> {
    match expr {
        Expression::Bool(value) => Ok(*value),
        _ => bail!("backend setting `{name}` in {file} must be true or false"),
    }
}

fn integer(file: &str, name: &str, expr: &Expression) -> Result<u64> {
    match expr {
        Expression::Number(number) => match number.as_u64() {
            Some(value) => Ok(value),
            None => bail!("backend setting `{name}` in {file} must be a whole number, 0 or more"),
        },
        _ => bail!("backend setting `{name}` in {file} must be a number"),
    }
}

/// `max_retries`: Terraform's default (when unset or 0) is 5; s3state then keeps the SDK's
/// own default of 3 attempts.
fn max_retries(file: &str, expr: &Expression) -> Result<u32> {
    let value = integer(file, "max_retries", expr)?;
    u32::try_from(value)
        .ok()
        .filter(|attempts| *attempts <= 100)
        .ok_or_else(|| format!("backend setting `max_retries` in {file} is {value}; at most 100 attempts are allowed"))
}

/// A list of literal strings, such as `shared_config_files = ["~/.aws/config"]`.
fn strings(file: &str, name: &str, expr: &Expression) -> Result<Vec<String>> {
    let Expression::Array(items) = expr else {
        bail!("backend setting `{name}` in {file} must be a list of strings");
    };
    items.iter().map(|item| string(file, name, item)).collect()
}

/// An object of literal strings, such as `tags = { team = "network" }`.
fn string_map(
    file: &str,
    name: &str,
    expr: &Expression,
) -> Result<std::collections::BTreeMap<String, String>> {
    let Expression::Object(object) = expr else {
        bail!("backend setting `{name}` in {file} must be an object of strings");
    };
    object
        .iter()
        .map(|(key, value)| Ok((object_key(file, name, key)?, string(file, name, value)?)))
        .collect()
}

fn object_key(file: &str, name: &str, key: &ObjectKey) -> Result<String> {
    match key {
        ObjectKey::Identifier(identifier) => Ok(identifier.as_str().to_owned()),
        ObjectKey::Expression(Expression::String(text)) => Ok(text.clone()),
        _ => bail!("`{name}` keys in {file} must be names or literal strings"),
    }
}

/// `endpoints`: S3's, DynamoDB's and STS's endpoints (s3state talks to no other service).
fn endpoints(file: &str, expr: &Expression, block: &mut BackendBlock) -> Result<()> {
    let Expression::Object(endpoints) = expr else {
        bail!("backend setting `endpoints` in {file} must be an object");
    };
    for (key, value) in endpoints {
        let service = object_key(file, "endpoints", key)?;
        let url = || string(file, &format!("endpoints.{service}"), value);
        match service.as_str() {
            "s3" => block.endpoint_url = Some(url()?),
            "dynamodb" => block.dynamodb_endpoint = Some(url()?),
            "sts" => block.sts_endpoint = Some(url()?),
            "iam" => {
                url()?;
                block.notes.push(format!(
                    "backend setting `endpoints.iam` in {file} has no effect in s3state: it makes no IAM requests"
                ));
            }
            "sso" => {
                url()?;
                block.notes.push(format!(
                    "backend setting `endpoints.sso` in {file} has no effect in s3state: set AWS_ENDPOINT_URL_SSO instead"
                ));
            }
            other => {
                bail!(
                    "`endpoints.{other}` in {file} is not supported: s3state talks to S3, DynamoDB and STS only"
                )
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tf_file_is_told_by_its_name_as_by_its_paths_extension() {
        for name in [
            "main.tf",
            "a.tf",
            ".tf",
            "..tf",
            "x..tf",
            "main.tf.bak",
            "tf",
            "main.TF",
            "main.tf~",
            "vars.tfvars",
            "main.tf.json",
            ".hidden.tf",
            "",
            "é.tf",
        ] {
            let by_path = std::path::Path::new("/some/dir")
                .join(name)
                .extension()
                .is_some_and(|ext| ext == "tf");
            assert_eq!(
                super::is_tf_name(std::ffi::OsStr::new(name)),
                by_path,
                "{name:?}"
            );
        }
    }

    use super::*;

    fn parse(text: &str) -> Result<BackendBlock> {
        let body: Body = hcl::parse(text).unwrap();
        let terraform = body.blocks().next().unwrap();
        let backend = terraform.body().blocks().next().unwrap();
        parse_block("main.tf", backend.body())
    }

    #[test]
    fn a_localstack_backend_block_is_read_with_notes_for_settings_without_effect() {
        let block = parse(
            r#"terraform {
  backend "s3" {
    bucket = "b"
    key = "demo/terraform.tfstate"
    region = "us-east-1"
    endpoints = { s3 = "http://127.0.0.1:4566" }
    use_path_style = true
    skip_credentials_validation = true
    access_key = "test"
    secret_key = "test"
    use_lockfile = true
  }
}"#,
        )
        .unwrap();
        assert_eq!(block.bucket.as_deref(), Some("b"));
        assert_eq!(block.endpoint_url.as_deref(), Some("http://127.0.0.1:4566"));
        assert_eq!(block.path_style, Some(true));
        assert_eq!(block.notes.len(), 2);
    }

    #[test]
    fn a_dynamodb_table_and_its_endpoint_are_read_from_the_block() {
        let block = parse(
            "terraform {\n backend \"s3\" {\n dynamodb_table = \"locks\"\n endpoints = { s3 = \"http://s3\", dynamodb = \"http://ddb\" }\n }\n}",
        )
        .unwrap();
        assert_eq!(block.dynamodb_table.as_deref(), Some("locks"));
        assert_eq!(block.endpoint_url.as_deref(), Some("http://s3"));
        assert_eq!(block.dynamodb_endpoint.as_deref(), Some("http://ddb"));
    }

    fn backend(settings: &str) -> Result<BackendBlock> {
        parse(&format!(
            "terraform {{\n backend \"s3\" {{\n bucket = \"b\"\n key = \"k\"\n{settings}\n }}\n}}"
        ))
    }

    const ROLE: &str = "arn:aws:iam::123456789012:role/terraform";

    #[test]
    fn terraforms_assume_role_attribute_is_read_with_every_setting_aws_config_can_send() {
        let block = backend(&format!(
            r#"assume_role = {{
  role_arn = "{ROLE}"
  session_name = "ci"
  external_id = "tenant-42"
  duration = "1h30m"
  policy = "{{\"Version\":\"2012-10-17\",\"Statement\":[]}}"
  policy_arns = ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
  tags = {{ team = "network", "cost-center" = "42" }}
  source_identity = "alice"
  transitive_tag_keys = ["team"]
}}
endpoints = {{ sts = "http://sts.local" }}
sts_region = "eu-west-1""#
        ))
        .unwrap();
        let role = block.assume_role.expect("a role");
        assert_eq!(role.role_arn, ROLE);
        assert_eq!(role.session_name.as_deref(), Some("ci"));
        assert_eq!(role.external_id.as_deref(), Some("tenant-42"));
        assert_eq!(role.duration, Some(std::time::Duration::from_secs(5400)));
        assert!(role.policy.unwrap().contains("2012-10-17"));
        assert_eq!(role.policy_arns, ["arn:aws:iam::aws:policy/ReadOnlyAccess"]);
        assert_eq!(role.tags.get("team").map(String::as_str), Some("network"));
        assert_eq!(role.tags.get("cost-center").map(String::as_str), Some("42"));
        assert_eq!(block.sts_endpoint.as_deref(), Some("http://sts.local"));
        assert_eq!(block.sts_region.as_deref(), Some("eu-west-1"));
        // What cannot be sent is said, not silently dropped.
        assert_eq!(block.notes.len(), 2, "{:?}", block.notes);
        assert!(block.notes[0].contains("assume_role.source_identity"));
        assert!(block.notes[1].contains("assume_role.transitive_tag_keys"));
    }

    #[test]
    fn an_assume_role_block_and_the_older_top_level_settings_are_read_as_the_same_role() {
        let nested = backend(&format!(
            "assume_role {{\n role_arn = \"{ROLE}\"\n session_name = \"ci\"\n }}"
        ))
        .unwrap();
        let older = backend(&format!(
            "role_arn = \"{ROLE}\"\n session_name = \"ci\"\n assume_role_duration_seconds = 900\n assume_role_tags = {{ team = \"network\" }}"
        ))
        .unwrap();
        let nested_role = nested.assume_role.unwrap();
        assert_eq!(nested_role.session_name.as_deref(), Some("ci"));
        let older_role = older.assume_role.unwrap();
        assert_eq!(older_role.role_arn, ROLE);
        assert_eq!(older_role.session_name.as_deref(), Some("ci"));
        assert_eq!(
            older_role.duration,
            Some(std::time::Duration::from_secs(900))
        );
        assert_eq!(older_role.tags.len(), 1);
        assert_eq!(older.notes.len(), 4, "{:?}", older.notes);
        assert!(older.notes.iter().all(|note| note.contains("deprecated")));
    }

    #[test]
    fn a_bad_role_duration_or_a_role_without_an_arn_is_refused_naming_the_setting() {
        let err = backend(&format!(
            "assume_role = {{\n role_arn = \"{ROLE}\"\n duration = \"3600\"\n }}"
        ))
        .unwrap_err();
        assert!(
            err.contains("assume_role.duration") && err.contains("main.tf"),
            "{err}"
        );
        let err = backend("assume_role = {\n session_name = \"ci\"\n }").unwrap_err();
        assert!(err.contains("no `role_arn`"), "{err}");
        let err = backend(&format!(
            "assume_role = {{\n role_arn = \"{ROLE}\"\n colour = \"red\"\n }}"
        ))
        .unwrap_err();
        assert!(err.contains("assume_role.colour"), "{err}");
    }

    #[test]
    fn shared_files_max_retries_and_a_session_token_are_read() {
        let block = backend(
            r#"shared_config_files = ["/tmp/config", "~/.aws/config"]
shared_credentials_file = "/tmp/credentials"
max_retries = 7
access_key = "AKIA"
secret_key = "s3cr3t"
token = "t0k3n""#,
        )
        .unwrap();
        assert_eq!(block.shared_config_files, ["/tmp/config", "~/.aws/config"]);
        assert_eq!(block.shared_credentials_files, ["/tmp/credentials"]);
        assert_eq!(block.max_retries, Some(7));
        assert_eq!(block.token.as_deref(), Some("t0k3n"));
        assert!(block.notes.is_empty(), "{:?}", block.notes);
        let err = backend("max_retries = -1").unwrap_err();
        assert!(err.contains("max_retries"), "{err}");
    }

    #[test]
    fn settings_that_would_make_s3state_unsafe_to_ignore_are_refused_with_their_reason() {
        for (setting, reason) in [
            ("acl = \"bucket-owner-full-control\"", "Object Ownership"),
            (
                "allowed_account_ids = [\"123456789012\"]",
                "another account",
            ),
            (
                "forbidden_account_ids = [\"123456789012\"]",
                "forbidden account",
            ),
            (
                "assume_role_with_web_identity = { role_arn = \"x\" }",
                "AWS_WEB_IDENTITY_TOKEN_FILE",
            ),
            (
                "ec2_metadata_service_endpoint = \"http://169.254.169.254\"",
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            ),
            ("use_fips_endpoint = true", "AWS_USE_FIPS_ENDPOINT"),
        ] {
            let err = backend(setting).unwrap_err();
            assert!(
                err.contains("not supported") && err.contains(reason),
                "{setting}: {err}"
            );
        }
        assert!(backend("use_fips_endpoint = false").is_ok());
    }

    #[test]
    fn every_skip_flag_and_connection_setting_gets_a_note_with_its_reason() {
        let block = backend(
            "skip_credentials_validation = true\n skip_region_validation = true\n skip_metadata_api_check = true\n skip_requesting_account_id = true\n skip_s3_checksum = true\n retry_mode = \"adaptive\"\n endpoints = { iam = \"http://iam\" }",
        )
        .unwrap();
        // skip_s3_checksum is a setting of s3state's own (checksums = compatible), not a note.
        assert_eq!(block.notes.len(), 6, "{:?}", block.notes);
        assert_eq!(block.skip_s3_checksum, Some(true));
        assert!(
            block
                .notes
                .iter()
                .all(|note| note.contains("has no effect in s3state: "))
        );
    }

    #[test]
    fn notes_and_errors_never_show_secret_values() {
        let block = backend(
            "access_key = \"AKIA\"\n secret_key = \"s3cr3t-value\"\n token = \"t0k3n-value\"\n sse_customer_key = \"c3VwZXItc2VjcmV0\"\n skip_s3_checksum = true\n role_arn = \"arn:aws:iam::123456789012:role/x\"",
        )
        .unwrap();
        let err = backend("secret_key = \"s3cr3t-value\"\n acl = \"private\"").unwrap_err();
        for text in block.notes.iter().chain([&err]) {
            for secret in ["s3cr3t-value", "t0k3n-value", "c3VwZXItc2VjcmV0"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
    }

    #[test]
    fn unknown_settings_are_named() {
        let err = parse("terraform {\n backend \"s3\" {\n flux_capacitor = 1\n }\n}").unwrap_err();
        assert!(err.contains("flux_capacitor"), "{err}");
    }
}
