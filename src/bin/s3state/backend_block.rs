//! Zero configuration for Terraform users: the `backend "s3"` block of the `.tf` files in a
//! directory, read with an HCL parser.

use hcl::{Body, Expression, ObjectKey};
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
    /// Terraform's DynamoDB lock table.
    pub dynamodb_table: Option<String>,
    /// `endpoints.dynamodb` (or the older `dynamodb_endpoint`).
    pub dynamodb_endpoint: Option<String>,
    /// One line per setting that has no effect here, for the user to see.
    pub notes: Vec<String>,
}

/// Settings that only make sense for Terraform's own client and change nothing for s3state.
const NO_EFFECT: &[&str] = &[
    "skip_credentials_validation",
    "skip_region_validation",
    "skip_metadata_api_check",
    "skip_requesting_account_id",
    "skip_s3_checksum",
    "max_retries",
    "use_lockfile",
];

/// Settings s3state cannot honour; ignoring them would change who is locked out or who we
/// are, so they are errors.
const UNSUPPORTED: &[(&str, &str)] = &[
    (
        "role_arn",
        "assuming a role is not supported; use a profile with role_arn instead (--profile)",
    ),
    (
        "assume_role",
        "assuming a role is not supported; use a profile with role_arn instead (--profile)",
    ),
    (
        "assume_role_with_web_identity",
        "web identity is not supported in the backend block; use AWS_WEB_IDENTITY_TOKEN_FILE",
    ),
    (
        "token",
        "session tokens in the backend block are not supported; use AWS_SESSION_TOKEN",
    ),
    (
        "shared_credentials_files",
        "custom credential files are not supported; use AWS_SHARED_CREDENTIALS_FILE",
    ),
    (
        "shared_config_files",
        "custom config files are not supported; use AWS_CONFIG_FILE",
    ),
    ("acl", "object ACLs are not supported"),
    ("sse_customer_key_md5", "not a backend setting"),
];

/// Finds and reads the `backend "s3"` block in `dir`'s `.tf` files. `None` when there is none.
pub fn read(dir: &Path) -> Result<Option<BackendBlock>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|err| format!("cannot read directory {}: {err}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "tf"))
        .collect();
    files.sort();
    let mut found = None;
    for path in files {
        let text = std::fs::read_to_string(&path)
            .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
        let body: Body =
            hcl::parse(&text).map_err(|err| format!("cannot parse {}: {err}", path.display()))?;
        for terraform in body.blocks().filter(|b| b.identifier() == "terraform") {
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
    Ok(found)
}

fn parse_block(file: &str, body: &Body) -> Result<BackendBlock> {
    let mut block = BackendBlock {
        file: file.to_owned(),
        ..Default::default()
    };
    for attribute in body.attributes() {
        let name = attribute.key();
        let expr = attribute.expr();
        let text = || string(file, name, expr);
        match name {
            "bucket" => block.bucket = Some(text()?),
            "key" => block.key = Some(text()?),
            "region" => block.region = Some(text()?),
            "endpoint" => block.endpoint_url = Some(text()?),
            "endpoints" => (block.endpoint_url, block.dynamodb_endpoint) = endpoints(file, expr)?,
            "dynamodb_table" => block.dynamodb_table = Some(text()?),
            "dynamodb_endpoint" => block.dynamodb_endpoint = Some(text()?),
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
            _ if NO_EFFECT.contains(&name) => block.notes.push(format!(
                "backend setting `{name}` in {file} has no effect in s3state"
            )),
            _ => match UNSUPPORTED
                .iter()
                .find(|(unsupported, _)| *unsupported == name)
            {
                Some((_, why)) => {
                    bail!("backend setting `{name}` in {file} is not supported: {why}")
                }
                None => bail!("backend setting `{name}` in {file} is not known to s3state"),
            },
        }
    }
    if let Some(nested) = body.blocks().next() {
        let name = nested.identifier();
        match UNSUPPORTED
            .iter()
            .find(|(unsupported, _)| *unsupported == name)
        {
            Some((_, why)) => bail!("backend block `{name}` in {file} is not supported: {why}"),
            None => bail!("backend block `{name}` in {file} is not supported by s3state"),
        }
    }
    Ok(block)
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

/// `endpoints`: the S3 endpoint and the DynamoDB endpoint.
fn endpoints(file: &str, expr: &Expression) -> Result<(Option<String>, Option<String>)> {
    let Expression::Object(endpoints) = expr else {
        bail!("backend setting `endpoints` in {file} must be an object");
    };
    let (mut s3, mut dynamodb) = (None, None);
    for (key, value) in endpoints {
        let service = match key {
            ObjectKey::Identifier(identifier) => identifier.as_str().to_owned(),
            ObjectKey::Expression(Expression::String(name)) => name.clone(),
            _ => bail!("`endpoints` keys in {file} must be service names"),
        };
        match service.as_str() {
            "s3" => s3 = Some(string(file, "endpoints.s3", value)?),
            "dynamodb" => dynamodb = Some(string(file, "endpoints.dynamodb", value)?),
            other => {
                bail!(
                    "`endpoints.{other}` in {file} is not supported: s3state talks to S3 and DynamoDB only"
                )
            }
        }
    }
    Ok((s3, dynamodb))
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn unknown_settings_are_named() {
        let err = parse("terraform {\n backend \"s3\" {\n flux_capacitor = 1\n }\n}").unwrap_err();
        assert!(err.contains("flux_capacitor"), "{err}");
    }
}
