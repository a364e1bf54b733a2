//! OpenTofu's `encryption` configuration: read from JSON or HCL, merged as OpenTofu merges
//! the `TF_ENCRYPTION` variable over the block, and resolved into key providers, methods and
//! the `state` target.
//!
//! Both syntaxes are first turned into one JSON shape (`{"key_provider": {type: {name:
//! {...}}}, "method": {...}, "state": {...}}`), in which references (`key_provider.pbkdf2.k`,
//! `method.aes_gcm.m`) are strings, with or without HCL's `${…}` around them.

use super::EncryptionError;
use super::secret::Secret;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// An `encryption` configuration as written (the body of `terraform { encryption { … } }`,
/// or the `TF_ENCRYPTION` variable), before it is checked. Its `Debug` hides every value:
/// passphrases are in it.
#[derive(Clone, Default, PartialEq)]
pub struct EncryptionConfig {
    pub(crate) body: Map<String, Value>,
}

impl fmt::Debug for EncryptionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionConfig")
            .field("sections", &self.body.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Its JSON shape, from any serde format (the gateway's TOML `[encryption]` section).
impl<'de> serde::Deserialize<'de> for EncryptionConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        EncryptionConfig::from_json(value).map_err(serde::de::Error::custom)
    }
}

impl EncryptionConfig {
    /// Reads a configuration written as OpenTofu's `TF_ENCRYPTION` accepts it: JSON when it
    /// starts with `{`, HCL otherwise (HCL needs the `hcl` feature, on with `cli`).
    pub fn parse(text: &str) -> Result<Self, EncryptionError> {
        if text.trim_start().starts_with('{') {
            let value: Value = serde_json::from_str(text).map_err(|e| {
                // serde_json's message names a line and column, never the content.
                EncryptionError::Config(format!("the JSON is not valid: {e}"))
            })?;
            return Self::from_json(value);
        }
        Self::parse_hcl(text)
    }

    /// A configuration from its JSON form.
    pub fn from_json(value: Value) -> Result<Self, EncryptionError> {
        match value {
            Value::Object(body) => Ok(EncryptionConfig { body }),
            _ => Err(EncryptionError::Config(
                "the configuration must be an object".into(),
            )),
        }
    }

    #[cfg(feature = "hcl")]
    fn parse_hcl(text: &str) -> Result<Self, EncryptionError> {
        let body: hcl::Body = hcl::parse(text).map_err(|e| {
            EncryptionError::Config(format!("the HCL is not valid: {}", hcl_position(&e)))
        })?;
        Ok(EncryptionConfig {
            body: super::hcl_body::to_json(&body)?,
        })
    }

    #[cfg(not(feature = "hcl"))]
    fn parse_hcl(_text: &str) -> Result<Self, EncryptionError> {
        Err(EncryptionError::Config(
            "HCL configurations need the `hcl` feature; give the configuration as JSON".into(),
        ))
    }

    /// Whether nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// `override_` merged over `self`, as OpenTofu merges `TF_ENCRYPTION` over the block: key
    /// providers and methods by type and name, attribute by attribute (the override's win);
    /// the `state` target's `method` and `fallback` from the override when it sets them;
    /// `enforced` when either sets it.
    pub fn merge(mut self, override_: EncryptionConfig) -> EncryptionConfig {
        for (section, value) in override_.body {
            match (section.as_str(), self.body.get_mut(&section), value) {
                ("key_provider" | "method", Some(Value::Object(base)), Value::Object(over)) => {
                    merge_labelled(base, over)
                }
                ("state" | "plan", Some(Value::Object(base)), Value::Object(over)) => {
                    let enforced = truthy(base.get("enforced")) || truthy(over.get("enforced"));
                    for (key, value) in over {
                        base.insert(key, value);
                    }
                    if enforced {
                        base.insert("enforced".into(), Value::Bool(true));
                    }
                }
                (_, _, value) => {
                    self.body.insert(section, value);
                }
            }
        }
        self
    }
}

#[cfg(feature = "hcl")]
fn hcl_position(error: &hcl::Error) -> String {
    // hcl-rs's message quotes the offending line, which may hold a passphrase: keep only
    // where it is.
    match error {
        hcl::Error::Parse(parse) => {
            let at = parse.location();
            format!("line {}, column {}", at.line(), at.column())
        }
        _ => "unreadable".into(),
    }
}

fn truthy(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::Bool(true)))
}

/// `type → name → body`, merged attribute by attribute.
fn merge_labelled(base: &mut Map<String, Value>, over: Map<String, Value>) {
    for (kind, names) in over {
        let Value::Object(names) = names else {
            base.insert(kind, names);
            continue;
        };
        let slot = base
            .entry(kind)
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(slot) = slot else { continue };
        for (name, body) in names {
            match (slot.get_mut(&name), body) {
                (Some(Value::Object(existing)), Value::Object(body)) => {
                    for (key, value) in body {
                        existing.insert(key, value);
                    }
                }
                (_, body) => {
                    slot.insert(name, body);
                }
            }
        }
    }
}

/// `key_provider.<type>.<name>` or `method.<type>.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Addr {
    pub(crate) kind: String,
    pub(crate) name: String,
}

impl Addr {
    fn parse(root: &str, text: &str) -> Result<Addr, EncryptionError> {
        let text = text.trim();
        let text = text
            .strip_prefix("${")
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(text)
            .trim();
        let parts: Vec<&str> = text.split('.').collect();
        match parts.as_slice() {
            [r, kind, name] if *r == root && !kind.is_empty() && !name.is_empty() => Ok(Addr {
                kind: (*kind).into(),
                name: (*name).into(),
            }),
            _ => Err(EncryptionError::Config(format!(
                "`{text}` is not a reference of the form {root}.<type>.<name>"
            ))),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind, self.name)
    }
}

/// PBKDF2's hash functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HashFunction {
    Sha256,
    Sha512,
}

impl HashFunction {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(HashFunction::Sha256),
            "sha512" => Some(HashFunction::Sha512),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            HashFunction::Sha256 => "sha256",
            HashFunction::Sha512 => "sha512",
        }
    }
}

/// Where a pbkdf2 key provider takes its passphrase from.
#[derive(Debug, Clone)]
pub(crate) enum PassphraseSource {
    Literal(Secret),
    Chain(Addr),
}

/// A key provider, checked.
#[derive(Debug, Clone)]
pub(crate) enum ProviderSpec {
    Pbkdf2 {
        passphrase: PassphraseSource,
        key_length: usize,
        iterations: u32,
        hash: HashFunction,
        salt_length: usize,
    },
    // Read only by the `kms` feature's provider; without it the provider says so.
    #[cfg_attr(not(feature = "kms"), allow(dead_code))]
    AwsKms {
        kms_key_id: String,
        key_spec: String,
        region: Option<String>,
        endpoint: Option<String>,
        encryption_context: BTreeMap<String, String>,
        profile: Option<String>,
        /// `access_key`, `secret_key` and `token`, when the configuration gives them.
        static_credentials: Option<(String, Secret, Option<Secret>)>,
    },
    External {
        command: Vec<String>,
    },
}

/// A key provider with the name its metadata is stored under.
#[derive(Debug, Clone)]
pub(crate) struct Provider {
    pub(crate) addr: Addr,
    pub(crate) meta_key: String,
    pub(crate) spec: ProviderSpec,
}

/// A method, checked.
#[derive(Debug, Clone)]
pub(crate) enum MethodSpec {
    AesGcm { keys: Addr, aad: Option<Vec<u8>> },
    Unencrypted,
}

/// The configuration, resolved for the `state` target.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) providers: BTreeMap<Addr, Provider>,
    /// The method to write with, then the fallbacks to read with, in order.
    pub(crate) methods: Vec<(Addr, MethodSpec)>,
    pub(crate) enforced: bool,
}

/// OpenTofu's defaults and limits for pbkdf2.
pub(crate) const MINIMUM_PASSPHRASE_LENGTH: usize = 16;
const MINIMUM_ITERATIONS: u64 = 200_000;
const DEFAULT_ITERATIONS: u32 = 600_000;
const DEFAULT_KEY_LENGTH: usize = 32;
const DEFAULT_SALT_LENGTH: usize = 32;

impl EncryptionConfig {
    /// Checks the configuration and resolves what the `state` target uses.
    pub(crate) fn resolve(&self) -> Result<Resolved, EncryptionError> {
        let Some(Value::Object(target)) = self.body.get("state") else {
            return Err(EncryptionError::Config(
                "no `state` block: say which method encrypts the state (state { method = method.<type>.<name> })".into(),
            ));
        };
        let enforced = truthy(target.get("enforced"));
        let mut chain = Vec::new();
        let mut at = Some(target);
        let mut depth = 0;
        while let Some(level) = at {
            depth += 1;
            if depth > 16 {
                return Err(EncryptionError::Config("fallbacks nest too deep".into()));
            }
            let method = level.get("method").and_then(Value::as_str).ok_or_else(|| {
                EncryptionError::Config("a state target or fallback has no `method`".into())
            })?;
            chain.push(Addr::parse("method", method)?);
            at = match level.get("fallback") {
                Some(Value::Object(next)) => Some(next),
                Some(Value::Array(list)) => list.first().and_then(Value::as_object),
                _ => None,
            };
        }
        let mut methods = Vec::new();
        let mut providers = BTreeMap::new();
        for addr in chain {
            let body = labelled(&self.body, "method", &addr)
                .ok_or_else(|| EncryptionError::Config(format!("no method {addr} is declared")))?;
            let spec = match addr.kind.as_str() {
                "aes_gcm" => {
                    let keys = body.get("keys").and_then(Value::as_str).ok_or_else(|| {
                        EncryptionError::Config(format!("method {addr} has no `keys`"))
                    })?;
                    let keys = Addr::parse("key_provider", keys)?;
                    self.resolve_provider(&keys, &mut providers, 0)?;
                    MethodSpec::AesGcm {
                        keys,
                        aad: body.get("aad").map(bytes_of).transpose()?,
                    }
                }
                "unencrypted" => {
                    if enforced {
                        return Err(EncryptionError::Config(
                            "the unencrypted method cannot be used: the state target is enforced"
                                .into(),
                        ));
                    }
                    MethodSpec::Unencrypted
                }
                other => {
                    return Err(EncryptionError::Config(format!(
                        "unknown method type `{other}` (s3state knows aes_gcm and unencrypted)"
                    )));
                }
            };
            methods.push((addr, spec));
        }
        Ok(Resolved {
            providers,
            methods,
            enforced,
        })
    }

    fn resolve_provider(
        &self,
        addr: &Addr,
        providers: &mut BTreeMap<Addr, Provider>,
        depth: usize,
    ) -> Result<(), EncryptionError> {
        if providers.contains_key(addr) {
            return Ok(());
        }
        if depth > 8 {
            return Err(EncryptionError::Config(format!(
                "key provider {addr} is part of a circular chain"
            )));
        }
        let body = labelled(&self.body, "key_provider", addr).ok_or_else(|| {
            EncryptionError::Config(format!("no key_provider {addr} is declared"))
        })?;
        let bad = |what: &str| EncryptionError::Config(format!("key_provider {addr}: {what}"));
        let string = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
        let integer = |name: &str, default: u64| -> Result<u64, EncryptionError> {
            match body.get(name) {
                None => Ok(default),
                Some(value) => value
                    .as_u64()
                    .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad(&format!("`{name}` must be a positive integer"))),
            }
        };
        let spec = match addr.kind.as_str() {
            "pbkdf2" => {
                let passphrase = match (string("passphrase"), string("chain")) {
                    (Some(_), Some(_)) => {
                        return Err(bad("passphrase and chain are mutually exclusive"));
                    }
                    (Some(passphrase), None) => {
                        if passphrase.chars().count() < MINIMUM_PASSPHRASE_LENGTH {
                            return Err(bad(&format!(
                                "the passphrase is too short (minimum {MINIMUM_PASSPHRASE_LENGTH} characters)"
                            )));
                        }
                        PassphraseSource::Literal(Secret::from(passphrase.as_str()))
                    }
                    (None, Some(chain)) => {
                        let upstream = Addr::parse("key_provider", &chain)?;
                        self.resolve_provider(&upstream, providers, depth + 1)?;
                        PassphraseSource::Chain(upstream)
                    }
                    (None, None) => {
                        return Err(bad(
                            "no passphrase provided and no chained provider defined",
                        ));
                    }
                };
                let iterations = integer("iterations", DEFAULT_ITERATIONS.into())?;
                if iterations < MINIMUM_ITERATIONS {
                    return Err(bad(&format!(
                        "the number of iterations is dangerously low (<{MINIMUM_ITERATIONS})"
                    )));
                }
                let hash = match string("hash_function") {
                    None => HashFunction::Sha512,
                    Some(name) => HashFunction::parse(&name)
                        .ok_or_else(|| bad(&format!("invalid hash function name: {name}")))?,
                };
                ProviderSpec::Pbkdf2 {
                    passphrase,
                    key_length: integer("key_length", DEFAULT_KEY_LENGTH as u64)? as usize,
                    iterations: u32::try_from(iterations)
                        .map_err(|_| bad("`iterations` is too large"))?,
                    hash,
                    salt_length: integer("salt_length", DEFAULT_SALT_LENGTH as u64)? as usize,
                }
            }
            "aws_kms" => {
                let kms_key_id =
                    string("kms_key_id").ok_or_else(|| bad("no kms_key_id provided"))?;
                let key_spec = string("key_spec").ok_or_else(|| bad("no key_spec provided"))?;
                if !matches!(key_spec.as_str(), "AES_256" | "AES_128") {
                    return Err(bad(&format!(
                        "invalid key_spec {key_spec}, expected one of [AES_256 AES_128]"
                    )));
                }
                let endpoint = match body.get("endpoints") {
                    Some(Value::Object(e)) => {
                        e.get("kms").and_then(Value::as_str).map(str::to_owned)
                    }
                    Some(Value::Array(list)) => list
                        .iter()
                        .find_map(|e| e.get("kms").and_then(Value::as_str))
                        .map(str::to_owned),
                    _ => None,
                };
                let encryption_context = match body.get("encryption_context") {
                    Some(Value::Object(map)) => map
                        .iter()
                        .map(|(k, v)| {
                            v.as_str()
                                .map(|v| (k.clone(), v.to_owned()))
                                .ok_or_else(|| bad("encryption_context values must be strings"))
                        })
                        .collect::<Result<_, _>>()?,
                    None => BTreeMap::new(),
                    Some(_) => return Err(bad("encryption_context must be a map of strings")),
                };
                let static_credentials = match (string("access_key"), string("secret_key")) {
                    (Some(access), Some(secret)) => Some((
                        access,
                        Secret::from(secret.as_str()),
                        string("token").map(|t| Secret::from(t.as_str())),
                    )),
                    (None, None) => None,
                    _ => return Err(bad("access_key and secret_key go together")),
                };
                ProviderSpec::AwsKms {
                    kms_key_id,
                    key_spec,
                    region: string("region"),
                    endpoint,
                    encryption_context,
                    profile: string("profile"),
                    static_credentials,
                }
            }
            "external" => {
                let command = match body.get("command") {
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .map(|p| p.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| bad("`command` must be a list of strings"))?,
                    _ => return Err(bad("the command option is required")),
                };
                if command.is_empty() {
                    return Err(bad("the command option is required"));
                }
                ProviderSpec::External { command }
            }
            other => {
                return Err(EncryptionError::Config(format!(
                    "unknown key_provider type `{other}` (s3state knows pbkdf2, aws_kms and external)"
                )));
            }
        };
        let meta_key = string("encrypted_metadata_alias")
            .filter(|alias| !alias.is_empty())
            .unwrap_or_else(|| format!("key_provider.{addr}"));
        providers.insert(
            addr.clone(),
            Provider {
                addr: addr.clone(),
                meta_key,
                spec,
            },
        );
        Ok(())
    }
}

fn labelled<'a>(
    body: &'a Map<String, Value>,
    section: &str,
    addr: &Addr,
) -> Option<&'a Map<String, Value>> {
    body.get(section)?
        .get(&addr.kind)?
        .get(&addr.name)
        .and_then(|v| match v {
            Value::Array(list) => list.first(),
            other => Some(other),
        })?
        .as_object()
}

/// `aad`: a list of byte values, or a string taken as its bytes.
fn bytes_of(value: &Value) -> Result<Vec<u8>, EncryptionError> {
    match value {
        Value::String(text) => Ok(text.as_bytes().to_vec()),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| EncryptionError::Config("`aad` must be a list of bytes".into())),
        _ => Err(EncryptionError::Config(
            "`aad` must be a list of bytes".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> EncryptionConfig {
        EncryptionConfig::parse(json).unwrap()
    }

    #[test]
    fn the_environment_overrides_the_block_attribute_by_attribute_and_enforced_sticks() {
        let block = config(
            r#"{"key_provider":{"pbkdf2":{"k":{"passphrase":"aaaaaaaaaaaaaaaaaaaa","iterations":300000}}},
                "method":{"aes_gcm":{"m":{"keys":"${key_provider.pbkdf2.k}"}}},
                "state":{"method":"${method.aes_gcm.m}","enforced":true}}"#,
        );
        let env = config(
            r#"{"key_provider":{"pbkdf2":{"k":{"passphrase":"bbbbbbbbbbbbbbbbbbbb"}}},
                "state":{"method":"method.aes_gcm.m"}}"#,
        );
        let merged = block.merge(env);
        let resolved = merged.resolve().unwrap();
        assert!(
            resolved.enforced,
            "enforced is kept when the override omits it"
        );
        let provider = resolved.providers.values().next().unwrap();
        let ProviderSpec::Pbkdf2 {
            passphrase: PassphraseSource::Literal(p),
            iterations,
            ..
        } = &provider.spec
        else {
            panic!("pbkdf2 expected")
        };
        assert_eq!(p.expose(), b"bbbbbbbbbbbbbbbbbbbb");
        assert_eq!(
            *iterations, 300_000,
            "attributes the override omits are kept"
        );
        assert_eq!(provider.meta_key, "key_provider.pbkdf2.k");
    }

    #[test]
    fn short_passphrases_unknown_references_and_enforced_unencrypted_are_refused() {
        let short = config(
            r#"{"key_provider":{"pbkdf2":{"k":{"passphrase":"short"}}},
                "method":{"aes_gcm":{"m":{"keys":"key_provider.pbkdf2.k"}}},
                "state":{"method":"method.aes_gcm.m"}}"#,
        );
        let err = short.resolve().unwrap_err().to_string();
        assert!(
            err.contains("too short") && !err.contains("short\""),
            "{err}"
        );
        let missing = config(r#"{"state":{"method":"method.aes_gcm.nope"}}"#);
        assert!(
            missing
                .resolve()
                .unwrap_err()
                .to_string()
                .contains("no method aes_gcm.nope")
        );
        let enforced = config(
            r#"{"method":{"unencrypted":{"u":{}}},"state":{"method":"method.unencrypted.u","enforced":true}}"#,
        );
        assert!(
            enforced
                .resolve()
                .unwrap_err()
                .to_string()
                .contains("enforced")
        );
    }
}
