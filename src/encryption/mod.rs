//! OpenTofu's state encryption (OpenTofu 1.7 and later), read and written natively: the layer
//! between the codec and the store.
//!
//! A stored state is either a plain Terraform state or OpenTofu's envelope:
//!
//! ```json
//! {"serial": 4, "lineage": "…", "meta": {"key_provider.pbkdf2.k": "<base64 of JSON>"},
//!  "encrypted_data": "<base64 of nonce ‖ ciphertext ‖ tag>", "encryption_version": "v0"}
//! ```
//!
//! [`StateEncryption`] is OpenTofu's configuration for the `state` target, resolved: the
//! method that writes, the fallbacks that read, `enforced`. Key providers: `pbkdf2` (with
//! `chain`), `aws_kms` and `external`; methods: `aes_gcm` and `unencrypted`. It knows nothing
//! of serial rules or of storage: [`crate::RemoteState`] asks it to open what it read and to
//! seal what it writes, after the verdict was made on the plaintext.
//!
//! Secrets (passphrases, derived keys, data keys) are [`Secret`]s: never in `Debug`, errors
//! or logs.

mod config;
#[cfg(feature = "hcl")]
mod hcl_body;
mod keys;
mod secret;

pub use config::EncryptionConfig;
pub use secret::Secret;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use config::{Addr, MethodSpec, Resolved};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// The only envelope version OpenTofu writes and reads.
pub const ENCRYPTION_VERSION: &str = "v0";

/// The environment variable OpenTofu reads its encryption configuration from.
pub const ENV_VAR: &str = "TF_ENCRYPTION";

/// Why a state could not be encrypted or decrypted. None of these writes anything. No
/// message holds a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncryptionError {
    /// The configuration is invalid (unknown type, missing reference, short passphrase…).
    #[error("invalid encryption configuration: {0}")]
    Config(String),
    /// The state is encrypted and no encryption is configured to read it.
    #[error(
        "the state is encrypted (OpenTofu state encryption, key provider metadata: {}); configure its key with TF_ENCRYPTION or the encryption block",
        if .key_providers.is_empty() { "none".to_owned() } else { .key_providers.join(", ") }
    )]
    NoKeyConfigured {
        /// The metadata keys in the envelope (`key_provider.<type>.<name>`): which key it needs.
        key_providers: Vec<String>,
    },
    /// Every configured method failed to decrypt the state.
    #[error("decryption failed for every configured method: {}", .attempts.join("; "))]
    DecryptionFailed {
        /// One line per method tried: the method, its key provider, why it failed.
        attempts: Vec<String>,
    },
    /// The envelope's plaintext serial or lineage differ from the decrypted state's.
    #[error(
        "the envelope says {field} {envelope} but the decrypted state has {field} {state}; refusing it"
    )]
    EnvelopeMismatch {
        /// `serial` or `lineage`.
        field: &'static str,
        /// What the envelope says.
        envelope: String,
        /// What the decrypted state says.
        state: String,
    },
    /// The envelope's `encryption_version` is not one s3state (or OpenTofu) knows.
    #[error("unknown encryption_version {version:?} (s3state reads \"v0\")")]
    UnknownVersion {
        /// The version found.
        version: String,
    },
    /// A plaintext state where the configuration allows no unencrypted method (or enforces
    /// encryption).
    #[error(
        "the state is not encrypted, and the configuration {}; add an `unencrypted` fallback to migrate it",
        if *.enforced { "enforces encryption" } else { "has no unencrypted method" }
    )]
    PlaintextRefused {
        /// Whether the configuration is `enforced`.
        enforced: bool,
    },
    /// The envelope is not readable (bad JSON, bad base64).
    #[error("the encrypted state is malformed: {0}")]
    Malformed(String),
    /// A key provider failed (KMS answered an error, the external command failed).
    #[error("key provider {provider} failed: {message}")]
    KeyProvider {
        /// `key_provider.<type>.<name>`.
        provider: String,
        /// What went wrong, without any key.
        message: String,
    },
}

/// Whether the configuration's primary method read the state, or a fallback did (the state
/// should be migrated: the next write uses the primary method).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecryptionStatus {
    /// Read with the method that writes.
    Satisfied,
    /// Read with a fallback (or as plaintext through an `unencrypted` fallback).
    Migration,
}

/// What a stored body says about itself without any key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeSummary {
    /// The plaintext serial the envelope carries.
    pub serial: Option<u64>,
    /// The plaintext lineage the envelope carries.
    pub lineage: Option<String>,
    /// `encryption_version`.
    pub version: String,
    /// The metadata keys: which key providers encrypted it.
    pub key_providers: Vec<String>,
}

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    serial: Option<u64>,
    lineage: &'a str,
    meta: &'a BTreeMap<String, String>,
    encrypted_data: &'a str,
    encryption_version: &'a str,
}

/// The serial and lineage of a state, read without building it.
#[derive(Deserialize)]
struct StateIds {
    #[serde(default)]
    serial: Option<u64>,
    #[serde(default)]
    lineage: Option<String>,
}

/// Whether `body` is an OpenTofu envelope, and what it says in plaintext. `None` for anything
/// else (a plain state, an empty object, not JSON).
pub fn inspect(body: &[u8]) -> Option<EnvelopeSummary> {
    if !looks_like_envelope(body) {
        return None;
    }
    let envelope = parse_envelope(body)?.head;
    let version = envelope.encryption_version.filter(|v| !v.is_empty())?;
    Some(EnvelopeSummary {
        serial: envelope.serial,
        lineage: envelope.lineage,
        version,
        key_providers: envelope.meta.into_keys().collect(),
    })
}

/// A cheap first look before parsing: an envelope names `encryption_version` at its top
/// level. A plain state (tens of megabytes, perhaps) is searched once, fast, and parsed a
/// second time only if the name appears somewhere in it.
fn looks_like_envelope(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"\"encryption_version\"").is_some()
}

/// OpenTofu's encryption of the `state` target: the method that writes, the fallbacks that
/// read, whether plaintext is refused. Build it from a configuration
/// ([`StateEncryption::from_config`], [`StateEncryption::from_env`]), then hand it to
/// [`crate::S3Builder::with_encryption`] or [`crate::RemoteStateOptions::encryption`].
///
/// ```
/// use s3state::encryption::{EncryptionConfig, StateEncryption};
/// let config = EncryptionConfig::parse(r#"{
///   "key_provider": {"pbkdf2": {"mykey": {"passphrase": "correct-horse-battery-staple"}}},
///   "method": {"aes_gcm": {"new": {"keys": "${key_provider.pbkdf2.mykey}"}}},
///   "state": {"method": "${method.aes_gcm.new}", "enforced": true}
/// }"#).unwrap();
/// let encryption = StateEncryption::from_config(&config).unwrap();
/// assert!(!format!("{encryption:?}").contains("horse"));
/// ```
#[derive(Clone)]
pub struct StateEncryption {
    resolved: Resolved,
    external_timeout: Duration,
    /// KMS data keys this configuration generated or had decrypted, by their encrypted blob.
    /// Per configuration, not per process: KMS (with this configuration's credentials)
    /// decides who may have a data key, and another configuration in the process may not
    /// be allowed it.
    data_keys: keys::DataKeyCache,
}

impl fmt::Debug for StateEncryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateEncryption")
            .field("method", &self.method_name())
            .field(
                "fallbacks",
                &self.resolved.methods[1..]
                    .iter()
                    .map(|(addr, _)| addr.to_string())
                    .collect::<Vec<_>>(),
            )
            .field("enforced", &self.resolved.enforced)
            .finish_non_exhaustive()
    }
}

/// How long an `external` key provider's command may run (OpenTofu's own limit).
pub const DEFAULT_EXTERNAL_TIMEOUT: Duration = Duration::from_secs(60);

impl StateEncryption {
    /// The `state` target of `config`, checked.
    pub fn from_config(config: &EncryptionConfig) -> Result<Self, EncryptionError> {
        Ok(StateEncryption {
            resolved: config.resolve()?,
            external_timeout: DEFAULT_EXTERNAL_TIMEOUT,
            data_keys: keys::DataKeyCache::default(),
        })
    }

    /// The configuration in `TF_ENCRYPTION` (HCL or JSON) merged over `block` (the
    /// `encryption` block of the configuration, if any), as OpenTofu merges them. `None` when
    /// neither configures anything.
    pub fn from_env(block: Option<EncryptionConfig>) -> Result<Option<Self>, EncryptionError> {
        let env = match std::env::var(ENV_VAR) {
            Ok(text) if !text.trim().is_empty() => Some(EncryptionConfig::parse(&text)?),
            _ => None,
        };
        let merged = match (block, env) {
            (None, None) => return Ok(None),
            (Some(block), None) => block,
            (None, Some(env)) => env,
            (Some(block), Some(env)) => block.merge(env),
        };
        if merged.is_empty() {
            return Ok(None);
        }
        Self::from_config(&merged).map(Some)
    }

    /// The same, with another limit on an `external` command's run time.
    pub fn with_external_timeout(mut self, timeout: Duration) -> Self {
        self.external_timeout = timeout;
        self
    }

    /// `method.<type>.<name>` of the method that writes.
    pub fn method_name(&self) -> String {
        format!("method.{}", self.resolved.methods[0].0)
    }

    /// Whether writes are encrypted (the primary method is not `unencrypted`).
    pub fn encrypts(&self) -> bool {
        !matches!(self.resolved.methods[0].1, MethodSpec::Unencrypted)
    }

    /// Whether plaintext is refused.
    pub fn enforced(&self) -> bool {
        self.resolved.enforced
    }

    /// The plaintext of a stored body: an envelope is decrypted with the method, then each
    /// fallback, and its plaintext serial and lineage are checked against the state's; a
    /// plain state is returned as it is when an `unencrypted` method is configured, and
    /// refused otherwise. An empty body is returned as it is.
    pub async fn decrypt(&self, body: Bytes) -> Result<(Bytes, DecryptionStatus), EncryptionError> {
        let opened = self.decrypt_unchecked(body).await?;
        if let Some(ids) = &opened.envelope {
            let Ok(state) = serde_json::from_slice::<StateIds>(&opened.plaintext) else {
                return Err(EncryptionError::Malformed(
                    "the decrypted data is not a state".into(),
                ));
            };
            ids.check(state.serial, state.lineage.as_deref())?;
        }
        Ok((opened.plaintext, opened.status))
    }

    /// [`StateEncryption::decrypt`] without the check of the envelope's serial and lineage
    /// against the state, for a caller that parses the state anyway and then calls
    /// [`EnvelopeIds::check`] (a second scan of a large state costs as much as the
    /// decryption).
    pub async fn decrypt_unchecked(&self, body: Bytes) -> Result<Decrypted, EncryptionError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Decrypted {
                plaintext: body,
                status: DecryptionStatus::Satisfied,
                envelope: None,
            });
        }
        let envelope = if looks_like_envelope(&body) {
            parse_envelope(&body).filter(|e| {
                e.head
                    .encryption_version
                    .as_deref()
                    .is_some_and(|v| !v.is_empty())
            })
        } else {
            None
        };
        let Some(envelope) = envelope else {
            let unencrypted_at = self
                .resolved
                .methods
                .iter()
                .position(|(_, m)| matches!(m, MethodSpec::Unencrypted));
            let status = match unencrypted_at {
                Some(0) => DecryptionStatus::Satisfied,
                Some(_) => DecryptionStatus::Migration,
                None => {
                    return Err(EncryptionError::PlaintextRefused {
                        enforced: self.resolved.enforced,
                    });
                }
            };
            return Ok(Decrypted {
                plaintext: body,
                status,
                envelope: None,
            });
        };
        let version = envelope
            .head
            .encryption_version
            .as_deref()
            .unwrap_or_default();
        if version != ENCRYPTION_VERSION {
            return Err(EncryptionError::UnknownVersion {
                version: version.to_owned(),
            });
        }
        let data = envelope
            .data
            .ok_or_else(|| EncryptionError::Malformed("no encrypted_data".into()))?;
        let mut data = base64_simd::STANDARD
            .decode_to_vec(&*data)
            .map_err(|_| EncryptionError::Malformed("encrypted_data is not base64".into()))?;
        let ids = EnvelopeIds {
            serial: envelope.head.serial,
            lineage: envelope.head.lineage.clone(),
        };
        let tries = self
            .resolved
            .methods
            .iter()
            .filter(|(_, m)| matches!(m, MethodSpec::AesGcm { .. }))
            .count();
        let mut attempts = Vec::new();
        for (index, (addr, method)) in self.resolved.methods.iter().enumerate() {
            let MethodSpec::AesGcm {
                keys: provider,
                aad,
            } = method
            else {
                continue;
            };
            let tried = format!("method.{addr} (key_provider.{provider})");
            let key = match keys::decryption_key(self, provider, &envelope.head.meta, 0).await {
                Ok(Some(key)) => key,
                Ok(None) => {
                    attempts.push(format!(
                        "{tried}: the envelope has no metadata for this key provider"
                    ));
                    continue;
                }
                Err(error) => {
                    attempts.push(format!("{tried}: {error}"));
                    continue;
                }
            };
            // In place when no other method may need the ciphertext after a failure (a
            // failed open leaves the buffer unspecified).
            let last = attempts.len() + 1 == tries;
            let mut spare;
            let buffer = if last {
                &mut data
            } else {
                spare = data.clone();
                &mut spare
            };
            match aes_gcm_open_in_place(&key, aad.as_deref(), buffer) {
                Ok(range) => {
                    let plaintext = Bytes::from(std::mem::take(buffer)).slice(range);
                    let status = if index == 0 {
                        DecryptionStatus::Satisfied
                    } else {
                        DecryptionStatus::Migration
                    };
                    return Ok(Decrypted {
                        plaintext,
                        status,
                        envelope: Some(ids),
                    });
                }
                Err(reason) => attempts.push(format!("{tried}: {reason}")),
            }
        }
        if attempts.is_empty() {
            attempts.push("no encrypting method is configured (only unencrypted)".into());
        }
        Err(EncryptionError::DecryptionFailed { attempts })
    }

    /// The body to store for `plaintext`: OpenTofu's envelope made with the primary method,
    /// or the plaintext itself when that method is `unencrypted`.
    pub async fn encrypt(&self, plaintext: Bytes) -> Result<Bytes, EncryptionError> {
        let (addr, method) = &self.resolved.methods[0];
        let MethodSpec::AesGcm {
            keys: provider,
            aad,
        } = method
        else {
            return Ok(plaintext);
        };
        let ids: StateIds = serde_json::from_slice(&plaintext)
            .map_err(|_| EncryptionError::Malformed("the plaintext is not a state".into()))?;
        let mut meta = BTreeMap::new();
        let key = keys::encryption_key(self, provider, &mut meta, 0).await?;
        let sealed = aes_gcm_seal(&key, aad.as_deref(), &plaintext).map_err(|reason| {
            EncryptionError::KeyProvider {
                provider: format!("method.{addr}"),
                message: reason,
            }
        })?;
        let meta: BTreeMap<String, String> = meta
            .into_iter()
            .map(|(k, v): (String, Vec<u8>)| (k, BASE64.encode(v)))
            .collect();
        let encoded = base64_simd::STANDARD.encode_to_string(sealed);
        let envelope = EnvelopeOut {
            serial: ids.serial,
            lineage: ids.lineage.as_deref().unwrap_or_default(),
            meta: &meta,
            encrypted_data: &encoded,
            encryption_version: ENCRYPTION_VERSION,
        };
        let out = serde_json::to_vec(&envelope)
            .map_err(|e| EncryptionError::Malformed(format!("cannot write the envelope: {e}")))?;
        Ok(Bytes::from(out))
    }
}

/// What [`StateEncryption::decrypt_unchecked`] gives: the plaintext, which method read it,
/// and the envelope's plaintext serial and lineage (`None` for a state that was not
/// encrypted) to check against the state once it is parsed.
#[derive(Debug, Clone)]
pub struct Decrypted {
    /// The state's bytes.
    pub plaintext: Bytes,
    /// Whether the primary method read it.
    pub status: DecryptionStatus,
    /// The envelope's serial and lineage.
    pub envelope: Option<EnvelopeIds>,
}

/// The serial and lineage an envelope carries in plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeIds {
    /// `serial`.
    pub serial: Option<u64>,
    /// `lineage`.
    pub lineage: Option<String>,
}

impl EnvelopeIds {
    /// OpenTofu's check after decrypting: the envelope's serial and lineage are the state's.
    pub fn check(&self, serial: Option<u64>, lineage: Option<&str>) -> Result<(), EncryptionError> {
        if let (Some(outer), Some(inner)) = (self.serial, serial)
            && outer != inner
        {
            return Err(EncryptionError::EnvelopeMismatch {
                field: "serial",
                envelope: outer.to_string(),
                state: inner.to_string(),
            });
        }
        if let Some(outer) = self.lineage.as_deref().filter(|l| !l.is_empty())
            && lineage != Some(outer)
        {
            return Err(EncryptionError::EnvelopeMismatch {
                field: "lineage",
                envelope: outer.to_owned(),
                state: lineage.unwrap_or_default().to_owned(),
            });
        }
        Ok(())
    }
}

/// An envelope's fields, `encrypted_data` kept as the base64 text.
struct ParsedEnvelope<'a> {
    head: EnvelopeHead,
    data: Option<std::borrow::Cow<'a, [u8]>>,
}

/// The envelope without its data.
#[derive(Deserialize)]
struct EnvelopeHead {
    #[serde(default)]
    serial: Option<u64>,
    #[serde(default)]
    lineage: Option<String>,
    #[serde(default)]
    meta: BTreeMap<String, String>,
    #[serde(default)]
    encrypted_data: Option<String>,
    #[serde(default)]
    encryption_version: Option<String>,
}

/// Parses an envelope. The data (a third larger than the state) is not run through the JSON
/// parser: its string is found directly (base64 has no quotes or escapes) and the rest is
/// parsed with it left empty, which also proves the string found is the top-level one;
/// anything unusual falls back to parsing the whole document.
fn parse_envelope(body: &[u8]) -> Option<ParsedEnvelope<'_>> {
    if let Some(found) = find_data(body) {
        let (start, end) = found;
        let mut rest = Vec::with_capacity(body.len() - (end - start));
        rest.extend_from_slice(&body[..start]);
        rest.extend_from_slice(&body[end..]);
        if let Ok(mut head) = serde_json::from_slice::<EnvelopeHead>(&rest)
            && head.encrypted_data.as_deref() == Some("")
        {
            head.encrypted_data = None;
            return Some(ParsedEnvelope {
                head,
                data: Some(std::borrow::Cow::Borrowed(&body[start..end])),
            });
        }
    }
    let mut head: EnvelopeHead = serde_json::from_slice(body).ok()?;
    let data = head
        .encrypted_data
        .take()
        .map(|d| std::borrow::Cow::Owned(d.into_bytes()));
    Some(ParsedEnvelope { head, data })
}

/// Where the `encrypted_data` string's content is: `(start, end)`, end at its closing quote.
fn find_data(body: &[u8]) -> Option<(usize, usize)> {
    let key = b"\"encrypted_data\"";
    let mut at = memchr::memmem::find(body, key)? + key.len();
    let skip = |at: &mut usize| {
        while body.get(*at).is_some_and(u8::is_ascii_whitespace) {
            *at += 1;
        }
    };
    skip(&mut at);
    (body.get(at) == Some(&b':')).then_some(())?;
    at += 1;
    skip(&mut at);
    (body.get(at) == Some(&b'"')).then_some(())?;
    let start = at + 1;
    let end = start + memchr::memchr2(b'"', b'\\', &body[start..])?;
    (body[end] == b'"').then_some((start, end))
}

fn gcm_algorithm(key: &Secret) -> Result<&'static aws_lc_rs::aead::Algorithm, String> {
    match key.len() {
        16 => Ok(&aws_lc_rs::aead::AES_128_GCM),
        24 => Ok(&aws_lc_rs::aead::AES_192_GCM),
        32 => Ok(&aws_lc_rs::aead::AES_256_GCM),
        n => Err(format!(
            "AES-GCM requires a key of 16, 24 or 32 bytes, the key provider gave {n}"
        )),
    }
}

/// `aes_gcm`: a random 12-byte nonce, then the ciphertext and its 16-byte tag.
fn aes_gcm_seal(key: &Secret, aad: Option<&[u8]>, plaintext: &[u8]) -> Result<Vec<u8>, String> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
    let algorithm = gcm_algorithm(key)?;
    let sealing = LessSafeKey::new(
        UnboundKey::new(algorithm, key.expose()).map_err(|_| "bad AES key".to_owned())?,
    );
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "no randomness for the nonce".to_owned())?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let mut body = out.split_off(NONCE_LEN);
    sealing
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.unwrap_or_default()),
            &mut body,
        )
        .map_err(|_| "AES-GCM encryption failed".to_owned())?;
    out.append(&mut body);
    Ok(out)
}

/// Opens `nonce ‖ ciphertext ‖ tag` in place; the plaintext is `buffer[range]`.
fn aes_gcm_open_in_place(
    key: &Secret,
    aad: Option<&[u8]>,
    buffer: &mut [u8],
) -> Result<std::ops::Range<usize>, String> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
    let algorithm = gcm_algorithm(key)?;
    if buffer.len() < NONCE_LEN + 16 {
        return Err("the encrypted data is too short (corrupted?)".into());
    }
    let opening = LessSafeKey::new(
        UnboundKey::new(algorithm, key.expose()).map_err(|_| "bad AES key".to_owned())?,
    );
    let (nonce, sealed) = buffer.split_at_mut(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_owned())?;
    let len = opening
        .open_in_place(nonce, Aad::from(aad.unwrap_or_default()), sealed)
        .map_err(|_| {
            "authentication failed: a wrong key or passphrase, or altered data".to_owned()
        })?
        .len();
    Ok(NONCE_LEN..NONCE_LEN + len)
}

#[cfg(test)]
fn aes_gcm_open(key: &Secret, aad: Option<&[u8]>, data: &[u8]) -> Result<Vec<u8>, String> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
    let algorithm = gcm_algorithm(key)?;
    if data.len() < NONCE_LEN + 16 {
        return Err("the encrypted data is too short (corrupted?)".into());
    }
    let opening = LessSafeKey::new(
        UnboundKey::new(algorithm, key.expose()).map_err(|_| "bad AES key".to_owned())?,
    );
    let (nonce, sealed) = data.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_owned())?;
    let mut buffer = sealed.to_vec();
    let len = opening
        .open_in_place(nonce, Aad::from(aad.unwrap_or_default()), &mut buffer)
        .map_err(|_| {
            "authentication failed: a wrong key or passphrase, or altered data".to_owned()
        })?
        .len();
    buffer.truncate(len);
    Ok(buffer)
}

/// PBKDF2 as OpenTofu's `pbkdf2` key provider runs it. Derived keys are cached in the
/// process per (passphrase, salt, parameters): a state read twice, or read back after this
/// process wrote it, pays the iterations once.
pub fn pbkdf2_key(
    passphrase: &Secret,
    salt: &[u8],
    iterations: u32,
    hash_function: &str,
    key_length: usize,
) -> Result<Secret, EncryptionError> {
    let hash = config::HashFunction::parse(hash_function).ok_or_else(|| {
        EncryptionError::Config(format!("invalid hash function name: {hash_function}"))
    })?;
    keys::pbkdf2_cached(passphrase, salt, iterations, hash, key_length)
}

/// How many pbkdf2 derivations this process has run (cache misses), for tests and
/// benchmarks.
pub fn pbkdf2_derivations() -> u64 {
    keys::PBKDF2_DERIVATIONS.load(std::sync::atomic::Ordering::Relaxed)
}

impl Addr {
    pub(crate) fn provider_name(&self) -> String {
        format!("key_provider.{self}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// OpenTofu's own vector (`keyprovider/pbkdf2`), as given in issue 24.
    #[test]
    fn pbkdf2_matches_opentofus_test_vector() {
        let salt = unhex("10ec3d3fe02ad2bee6f1f5540f8e6bbe3b8b29445cf502d27d47ad554aa8971f");
        let key = pbkdf2_key(
            &Secret::from("correct-horse-battery-staple"),
            &salt,
            600_000,
            "sha512",
            32,
        )
        .unwrap();
        assert_eq!(
            hex(key.expose()),
            "225872367198760137e0a18580433447bbf578fbe2b87ff36aef3c175fe5709c"
        );
    }

    #[test]
    fn aes_gcm_output_is_nonce_ciphertext_tag_and_the_aad_is_bound() {
        let key = Secret::new(vec![7; 32]);
        let sealed = aes_gcm_seal(&key, Some(b"ctx"), b"hello").unwrap();
        assert_eq!(sealed.len(), 12 + 5 + 16);
        assert_eq!(aes_gcm_open(&key, Some(b"ctx"), &sealed).unwrap(), b"hello");
        assert!(aes_gcm_open(&key, None, &sealed).is_err(), "other aad");
        assert!(aes_gcm_open(&Secret::new(vec![8; 32]), Some(b"ctx"), &sealed).is_err());
    }

    /// The envelope's data is found without the JSON parser; another key order, whitespace,
    /// or an escaped data string (which only the parser reads) read the same.
    #[tokio::test]
    async fn envelopes_in_any_json_layout_decrypt() {
        let config = EncryptionConfig::parse(
            r#"{"key_provider":{"pbkdf2":{"k":{"passphrase":"correct-horse-battery-staple","iterations":200000}}},
                "method":{"aes_gcm":{"m":{"keys":"key_provider.pbkdf2.k"}}},"state":{"method":"method.aes_gcm.m"}}"#,
        )
        .unwrap();
        let encryption = StateEncryption::from_config(&config).unwrap();
        let state = Bytes::from_static(br#"{"version":4,"serial":2,"lineage":"l"}"#);
        let sealed = encryption.encrypt(state.clone()).await.unwrap();
        let value: serde_json::Value = serde_json::from_slice(&sealed).unwrap();
        let pretty = serde_json::to_vec_pretty(&value).unwrap();
        let data = value["encrypted_data"]
            .as_str()
            .unwrap()
            .replace('/', "\\/");
        let escaped = String::from_utf8(sealed.to_vec())
            .unwrap()
            .replace(value["encrypted_data"].as_str().unwrap(), &data);
        for layout in [pretty, escaped.into_bytes()] {
            let (opened, _) = encryption.decrypt(Bytes::from(layout)).await.unwrap();
            assert_eq!(opened, state);
        }
    }

    #[test]
    fn a_plain_state_is_not_an_envelope_and_an_envelope_says_its_ids_without_a_key() {
        assert_eq!(inspect(br#"{"version":4,"serial":1,"lineage":"l"}"#), None);
        let envelope = br#"{"serial":3,"lineage":"abc","meta":{"key_provider.pbkdf2.k":"e30="},"encrypted_data":"AAAA","encryption_version":"v0"}"#;
        let summary = inspect(envelope).unwrap();
        assert_eq!(summary.serial, Some(3));
        assert_eq!(summary.lineage.as_deref(), Some("abc"));
        assert_eq!(
            summary.key_providers,
            vec!["key_provider.pbkdf2.k".to_owned()]
        );
    }
}
