//! The key providers: `pbkdf2` (with `chain`), `aws_kms` and `external`, as OpenTofu runs
//! them. Each gives an encryption key with fresh metadata (stored in the envelope's `meta`
//! under its key), or the decryption key the stored metadata leads to.

use super::config::{Addr, HashFunction, PassphraseSource, Provider, ProviderSpec};
use super::secret::Secret;
use super::{EncryptionError, StateEncryption};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Chains deeper than this are refused (the configuration check refuses cycles already).
const MAX_CHAIN: usize = 8;

/// pbkdf2 metadata, as OpenTofu stores it (`salt` in base64).
#[derive(Serialize, Deserialize)]
struct Pbkdf2Meta {
    #[serde(with = "base64_bytes")]
    salt: Vec<u8>,
    iterations: u64,
    hash_function: String,
    key_length: u64,
}

/// aws_kms metadata, as OpenTofu stores it.
#[derive(Serialize, Deserialize)]
struct KmsMeta {
    #[serde(with = "base64_bytes")]
    ciphertext_blob: Vec<u8>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    encryption_context: BTreeMap<String, String>,
}

mod base64_bytes {
    use super::BASE64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = Option::<String>::deserialize(d)?.unwrap_or_default();
        BASE64.decode(text).map_err(serde::de::Error::custom)
    }
}

fn provider<'a>(
    encryption: &'a StateEncryption,
    addr: &Addr,
) -> Result<&'a Provider, EncryptionError> {
    encryption
        .resolved
        .providers
        .get(addr)
        .ok_or_else(|| EncryptionError::Config(format!("no key_provider {addr} is declared")))
}

fn failure(provider: &Provider, message: impl Into<String>) -> EncryptionError {
    EncryptionError::KeyProvider {
        provider: provider.addr.provider_name(),
        message: message.into(),
    }
}

/// The key that encrypts a new envelope, with the metadata of every provider it took
/// (chained ones included) added to `meta`.
pub(super) fn encryption_key<'a>(
    encryption: &'a StateEncryption,
    addr: &'a Addr,
    meta: &'a mut BTreeMap<String, Vec<u8>>,
    depth: usize,
) -> BoxFuture<'a, Result<Secret, EncryptionError>> {
    Box::pin(async move {
        let provider = provider(encryption, addr)?;
        if depth > MAX_CHAIN {
            return Err(failure(provider, "the chain is too long"));
        }
        let (key, own_meta) = match &provider.spec {
            ProviderSpec::Pbkdf2 {
                passphrase,
                key_length,
                iterations,
                hash,
                salt_length,
            } => {
                let passphrase = match passphrase {
                    PassphraseSource::Literal(secret) => secret.clone(),
                    PassphraseSource::Chain(upstream) => {
                        encryption_key(encryption, upstream, meta, depth + 1).await?
                    }
                };
                check_chained_length(provider, &passphrase)?;
                let mut salt = vec![0u8; *salt_length];
                aws_lc_rs::rand::fill(&mut salt)
                    .map_err(|_| failure(provider, "no randomness for the salt"))?;
                let key = pbkdf2_off_the_runtime(
                    provider,
                    &passphrase,
                    &salt,
                    *iterations,
                    *hash,
                    *key_length,
                )
                .await?;
                let own = Pbkdf2Meta {
                    salt,
                    iterations: u64::from(*iterations),
                    hash_function: hash.name().to_owned(),
                    key_length: *key_length as u64,
                };
                (key, serde_json::to_vec(&own).unwrap_or_default())
            }
            ProviderSpec::External { command } => {
                let output = run_external(encryption, provider, command, None).await?;
                let key = output
                    .keys
                    .encryption_key
                    .ok_or_else(|| failure(provider, "the command gave no encryption_key"))?;
                (key, output.meta)
            }
            ProviderSpec::AwsKms { .. } => kms::generate(provider, &encryption.data_keys).await?,
        };
        if meta.insert(provider.meta_key.clone(), own_meta).is_some() {
            return Err(failure(
                provider,
                format!(
                    "the metadata key {} is used twice; set encrypted_metadata_alias",
                    provider.meta_key
                ),
            ));
        }
        Ok(key)
    })
}

/// The key that decrypts an envelope with metadata `meta`; `None` when the envelope holds
/// no metadata for this provider (it was not encrypted with it).
pub(super) fn decryption_key<'a>(
    encryption: &'a StateEncryption,
    addr: &'a Addr,
    meta: &'a BTreeMap<String, String>,
    depth: usize,
) -> BoxFuture<'a, Result<Option<Secret>, EncryptionError>> {
    Box::pin(async move {
        let provider = provider(encryption, addr)?;
        if depth > MAX_CHAIN {
            return Err(failure(provider, "the chain is too long"));
        }
        let own =
            match meta.get(&provider.meta_key) {
                Some(encoded) => Some(BASE64.decode(encoded).map_err(|_| {
                    failure(provider, "its metadata in the envelope is not base64")
                })?),
                None => None,
            };
        match &provider.spec {
            ProviderSpec::Pbkdf2 {
                passphrase,
                iterations: configured_iterations,
                key_length: configured_length,
                ..
            } => {
                let Some(own) = own else { return Ok(None) };
                let stored: Pbkdf2Meta = serde_json::from_slice(&own)
                    .map_err(|e| failure(provider, format!("unreadable metadata: {e}")))?;
                let passphrase = match passphrase {
                    PassphraseSource::Literal(secret) => secret.clone(),
                    PassphraseSource::Chain(upstream) => {
                        match decryption_key(encryption, upstream, meta, depth + 1).await? {
                            Some(key) => key,
                            None => return Ok(None),
                        }
                    }
                };
                check_chained_length(provider, &passphrase)?;
                // The stored parameters decide, not the configuration's (OpenTofu does the
                // same, so that a changed default still reads old states).
                let hash = HashFunction::parse(&stored.hash_function).ok_or_else(|| {
                    failure(
                        provider,
                        format!("unknown hash function {:?}", stored.hash_function),
                    )
                })?;
                // The envelope is not authenticated before the key is derived: anyone who
                // can write the bucket chooses these. A huge count (or a long key, which
                // PBKDF2 derives block by block, each block paying every iteration) would
                // hold this thread for hours; OpenTofu bounds neither. The count is bounded
                // by the larger of the configured one and MAX_METADATA_ITERATIONS, the
                // length likewise (a chained pbkdf2 may derive more than AES-GCM uses).
                let ceiling = u64::from(*configured_iterations).max(MAX_METADATA_ITERATIONS);
                let iterations = u32::try_from(stored.iterations)
                    .ok()
                    .filter(|n| *n > 0 && u64::from(*n) <= ceiling)
                    .ok_or_else(|| {
                        failure(
                            provider,
                            format!(
                                "invalid iterations in its metadata ({}; at most {ceiling} are accepted)",
                                stored.iterations
                            ),
                        )
                    })?;
                let longest = (*configured_length).max(MAX_METADATA_KEY_LENGTH);
                let key_length = usize::try_from(stored.key_length)
                    .ok()
                    .filter(|n| (1..=longest).contains(n))
                    .ok_or_else(|| {
                        failure(
                            provider,
                            format!(
                                "invalid key_length in its metadata ({}; at most {longest} is accepted)",
                                stored.key_length
                            ),
                        )
                    })?;
                if stored.salt.is_empty() {
                    return Ok(None);
                }
                pbkdf2_off_the_runtime(
                    provider,
                    &passphrase,
                    &stored.salt,
                    iterations,
                    hash,
                    key_length,
                )
                .await
                .map(Some)
            }
            ProviderSpec::External { command } => {
                let Some(own) = own else { return Ok(None) };
                let output = run_external(encryption, provider, command, Some(&own)).await?;
                Ok(output.keys.decryption_key)
            }
            ProviderSpec::AwsKms {
                encryption_context, ..
            } => {
                let Some(own) = own else { return Ok(None) };
                let stored: KmsMeta = serde_json::from_slice(&own)
                    .map_err(|e| failure(provider, format!("unreadable metadata: {e}")))?;
                if stored.ciphertext_blob.is_empty() {
                    return Ok(None);
                }
                // KMS is asked with the configured context, never the one the envelope
                // claims: whoever can write the bucket chooses that one, and with it could
                // have KMS open a data key made for another purpose (another context) under
                // the same KMS key, one they may hold, and so a state of theirs would read as
                // ours. A state written under an older context reads through a fallback
                // provider configured with it.
                kms::decrypt(
                    provider,
                    &encryption.data_keys,
                    &stored.ciphertext_blob,
                    encryption_context,
                )
                .await
                .map(Some)
            }
        }
    })
}

/// The most pbkdf2 iterations an envelope's metadata may ask for, unless the configuration
/// asks for more: over 16 times OpenTofu's default (600 000), a few seconds of one core.
pub(crate) const MAX_METADATA_ITERATIONS: u64 = 10_000_000;

/// The longest pbkdf2 key an envelope's metadata may ask for, unless the configuration asks
/// for longer: AES-256 takes 32 bytes; 64 leaves room for a chained passphrase.
const MAX_METADATA_KEY_LENGTH: usize = 64;

fn check_chained_length(provider: &Provider, passphrase: &Secret) -> Result<(), EncryptionError> {
    if passphrase.len() < super::config::MINIMUM_PASSPHRASE_LENGTH {
        return Err(failure(
            provider,
            format!(
                "the passphrase is too short (minimum {} characters)",
                super::config::MINIMUM_PASSPHRASE_LENGTH
            ),
        ));
    }
    Ok(())
}

/// Keys by an identifier, at most [`KEY_CACHE_ENTRIES`] of them (then it starts over), so
/// that a long-running process (the gateway) does not keep every key it ever used.
#[derive(Clone, Default)]
pub(super) struct DataKeyCache(std::sync::Arc<Mutex<HashMap<Vec<u8>, Secret>>>);

// Only the aws_kms provider keeps data keys.
#[cfg_attr(not(feature = "kms"), allow(dead_code))]
impl DataKeyCache {
    pub(super) fn get(&self, id: &[u8]) -> Option<Secret> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub(super) fn remember(&self, id: Vec<u8>, key: Secret) {
        remember(
            &mut self.0.lock().unwrap_or_else(|e| e.into_inner()),
            id,
            key,
        );
    }
}

/// The most keys a cache holds.
const KEY_CACHE_ENTRIES: usize = 1024;

fn remember<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Secret>, id: K, key: Secret) {
    if map.len() >= KEY_CACHE_ENTRIES {
        map.clear();
    }
    map.insert(id, key);
}

pub(super) static PBKDF2_DERIVATIONS: AtomicU64 = AtomicU64::new(0);

/// Cached derived keys, by a SHA-256 of (passphrase, salt, parameters): the passphrase itself
/// is not kept as a map key.
fn pbkdf2_cache() -> &'static Mutex<HashMap<[u8; 32], Secret>> {
    static CACHE: OnceLock<Mutex<HashMap<[u8; 32], Secret>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// [`pbkdf2_cached`] on tokio's blocking pool: a derivation takes up to seconds of CPU, and
/// on the async runtime it would stall every other task on its thread (the gateway's other
/// requests).
async fn pbkdf2_off_the_runtime(
    provider: &Provider,
    passphrase: &Secret,
    salt: &[u8],
    iterations: u32,
    hash: HashFunction,
    key_length: usize,
) -> Result<Secret, EncryptionError> {
    let (passphrase, salt) = (passphrase.clone(), salt.to_vec());
    tokio::task::spawn_blocking(move || {
        pbkdf2_cached(&passphrase, &salt, iterations, hash, key_length)
    })
    .await
    .map_err(|_| failure(provider, "the key derivation panicked"))?
}

pub(super) fn pbkdf2_cached(
    passphrase: &Secret,
    salt: &[u8],
    iterations: u32,
    hash: HashFunction,
    key_length: usize,
) -> Result<Secret, EncryptionError> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    for part in [passphrase.expose(), salt] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.update(iterations.to_be_bytes());
    hasher.update(hash.name().as_bytes());
    hasher.update((key_length as u64).to_be_bytes());
    let id: [u8; 32] = hasher.finalize().into();
    let cache = pbkdf2_cache();
    if let Some(key) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return Ok(key.clone());
    }
    let iterations_nz = std::num::NonZeroU32::new(iterations)
        .ok_or_else(|| EncryptionError::Config("pbkdf2 iterations must be positive".into()))?;
    let algorithm = match hash {
        HashFunction::Sha256 => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
        HashFunction::Sha512 => aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA512,
    };
    let mut out = vec![0u8; key_length];
    aws_lc_rs::pbkdf2::derive(
        algorithm,
        iterations_nz,
        salt,
        passphrase.expose(),
        &mut out,
    );
    PBKDF2_DERIVATIONS.fetch_add(1, Ordering::Relaxed);
    let key = Secret::new(out);
    remember(
        &mut cache.lock().unwrap_or_else(|e| e.into_inner()),
        id,
        key.clone(),
    );
    Ok(key)
}

/// What an `external` command answers: its keys (base64) and its metadata.
struct ExternalOutput {
    keys: ExternalKeys,
    meta: Vec<u8>,
}

#[derive(Default)]
struct ExternalKeys {
    encryption_key: Option<Secret>,
    decryption_key: Option<Secret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExternalAnswer {
    keys: ExternalAnswerKeys,
    #[serde(default)]
    meta: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ExternalAnswerKeys {
    #[serde(default)]
    encryption_key: Option<String>,
    #[serde(default)]
    decryption_key: Option<String>,
}

#[derive(Deserialize)]
struct ExternalHeader {
    magic: String,
    version: u64,
}

/// The external protocol's header magic.
const EXTERNAL_MAGIC: &str = "OpenTofu-External-Key-Provider";

/// Runs an `external` key provider: its header line, then one JSON answer, within the
/// configured time. `input` is the stored metadata (`null` when encrypting).
async fn run_external(
    encryption: &StateEncryption,
    provider: &Provider,
    command: &[String],
    input: Option<&[u8]>,
) -> Result<ExternalOutput, EncryptionError> {
    let timeout = encryption.external_timeout;
    let input = input.map_or_else(|| b"null".to_vec(), <[u8]>::to_vec);
    let command = command.to_vec();
    let name = provider.addr.provider_name();
    let run = tokio::task::spawn_blocking(move || run_command(&command, &input, timeout));
    let stdout = run
        .await
        .map_err(|_| failure(provider, "the command's runner panicked"))?
        .map_err(|message| EncryptionError::KeyProvider {
            provider: name.clone(),
            message,
        })?;
    let text = String::from_utf8_lossy(&stdout);
    let Some((header, rest)) = text.split_once('\n') else {
        return Err(failure(provider, "the command wrote no header line"));
    };
    let header: ExternalHeader = serde_json::from_str(header).map_err(|_| {
        failure(
            provider,
            "the command's header line is not the protocol's JSON",
        )
    })?;
    if header.magic != EXTERNAL_MAGIC || header.version != 1 {
        return Err(failure(
            provider,
            format!(
                "the command's header has magic {:?} version {} (expected {EXTERNAL_MAGIC:?} version 1)",
                header.magic, header.version
            ),
        ));
    }
    let answer: ExternalAnswer = serde_json::from_str(rest.trim()).map_err(|e| {
        failure(
            provider,
            format!(
                "the command's answer is not valid (at line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    let decode = |key: Option<String>| -> Result<Option<Secret>, EncryptionError> {
        key.map(|text| {
            BASE64
                .decode(text)
                .map(Secret::new)
                .map_err(|_| failure(provider, "a key in the command's answer is not base64"))
        })
        .transpose()
    };
    let meta = match answer.meta {
        Some(meta) => serde_json::to_vec(&meta).unwrap_or_default(),
        None => br#"{"external_data":null}"#.to_vec(),
    };
    Ok(ExternalOutput {
        keys: ExternalKeys {
            encryption_key: decode(answer.keys.encryption_key)?,
            decryption_key: decode(answer.keys.decryption_key)?,
        },
        meta,
    })
}

/// The most an `external` command may write on its stdout.
const MAX_EXTERNAL_OUTPUT: usize = 1 << 20;

/// Runs `command` with `input` on its stdin; its stdout, or why not. Killed after `timeout`.
/// Its stderr goes to ours.
fn run_command(
    command: &[String],
    input: &[u8],
    timeout: std::time::Duration,
) -> Result<Vec<u8>, String> {
    use std::io::{Read as _, Write as _};
    use std::process::{Command, Stdio};
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // Its stderr is its own diagnostics, for whoever runs s3state (as OpenTofu passes it
        // through). It is never put into an error: the gateway answers errors to its clients,
        // and a provider's diagnostics may name a key.
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", command[0]))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped");
    // Bounded: a command that writes without end is cut off (its pipe is closed once the
    // limit is read, so it stops) instead of filling memory.
    // Read on a thread that hands its result over a channel, so that the wait for it is
    // bounded too: a process the command started may hold the pipe open after it exits.
    let (sender, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout)
            .take(MAX_EXTERNAL_OUTPUT as u64 + 1)
            .read_to_end(&mut out);
        let _ = sender.send(out);
    });
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the command did not finish within {timeout:?} (the external key provider timeout); it was stopped"
                ));
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(e) => return Err(format!("cannot wait for the command: {e}")),
        }
    };
    let _ = writer.join();
    let left = timeout.saturating_sub(started.elapsed());
    let Ok(stdout) = output.recv_timeout(left) else {
        return Err(format!(
            "the command exited, but its output was still open after {timeout:?} (the external key provider timeout; a process it started holds it?)"
        ));
    };
    if !status.success() {
        return Err(format!("the command exited with {status}"));
    }
    if stdout.len() > MAX_EXTERNAL_OUTPUT {
        return Err(format!(
            "the command wrote more than {MAX_EXTERNAL_OUTPUT} bytes (a key and its metadata are far smaller)"
        ));
    }
    Ok(stdout)
}

#[cfg(feature = "kms")]
mod kms {
    //! `aws_kms`: a data key from KMS `GenerateDataKey`, its encrypted blob kept in the
    //! metadata and decrypted with KMS `Decrypt`.

    use super::{DataKeyCache, KmsMeta, Provider, ProviderSpec, failure};
    use crate::encryption::{EncryptionError, Secret};
    use std::collections::{BTreeMap, HashMap};

    async fn client(provider: &Provider) -> aws_sdk_kms::Client {
        let ProviderSpec::AwsKms {
            region,
            endpoint,
            profile,
            static_credentials,
            ..
        } = &provider.spec
        else {
            unreachable!("called for aws_kms providers only")
        };
        // Bounded like every other wait: a KMS call that hangs fails as a key provider error.
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(10))
                    .operation_attempt_timeout(std::time::Duration::from_secs(30))
                    .operation_timeout(std::time::Duration::from_secs(60))
                    .build(),
            );
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(profile) = profile {
            loader = loader.profile_name(profile);
        }
        if let Some((access_key, secret_key, token)) = static_credentials {
            let text = |s: &Secret| String::from_utf8_lossy(s.expose()).into_owned();
            loader = loader.credentials_provider(aws_sdk_kms::config::Credentials::new(
                access_key.clone(),
                text(secret_key),
                token.as_ref().map(text),
                None,
                "opentofu-aws-kms-key-provider",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_kms::config::Builder::from(&shared);
        // The provider's `endpoints { kms = … }`, else AWS_ENDPOINT_URL_KMS (read by the SDK).
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        aws_sdk_kms::Client::from_conf(builder.build())
    }

    fn context(map: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
        (!map.is_empty()).then(|| map.clone().into_iter().collect())
    }

    fn describe(error: impl std::error::Error) -> String {
        // The SDK's error chain names the service's code and message; no key is in it.
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    /// A new data key; it is remembered in `cache` (this configuration's), so the state read
    /// back after this write asks KMS nothing.
    pub(super) async fn generate(
        provider: &Provider,
        cache: &DataKeyCache,
    ) -> Result<(Secret, Vec<u8>), EncryptionError> {
        let ProviderSpec::AwsKms {
            kms_key_id,
            key_spec,
            encryption_context,
            ..
        } = &provider.spec
        else {
            unreachable!("called for aws_kms providers only")
        };
        let answer = client(provider)
            .await
            .generate_data_key()
            .key_id(kms_key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::from(key_spec.as_str()))
            .set_encryption_context(context(encryption_context))
            .send()
            .await
            .map_err(|e| failure(provider, format!("GenerateDataKey: {}", describe(e))))?;
        let key = answer
            .plaintext
            .map(|blob| Secret::new(blob.into_inner()))
            .ok_or_else(|| failure(provider, "GenerateDataKey returned no plaintext key"))?;
        let blob = answer
            .ciphertext_blob
            .map(|blob| blob.into_inner())
            .ok_or_else(|| failure(provider, "GenerateDataKey returned no ciphertext blob"))?;
        cache.remember(blob.clone(), key.clone());
        let meta = KmsMeta {
            ciphertext_blob: blob,
            encryption_context: encryption_context.clone(),
        };
        Ok((key, serde_json::to_vec(&meta).unwrap_or_default()))
    }

    /// The data key in `blob`, from `cache` (a version read twice asks KMS once) or KMS.
    pub(super) async fn decrypt(
        provider: &Provider,
        cache: &DataKeyCache,
        blob: &[u8],
        encryption_context: &BTreeMap<String, String>,
    ) -> Result<Secret, EncryptionError> {
        let ProviderSpec::AwsKms { kms_key_id, .. } = &provider.spec else {
            unreachable!("called for aws_kms providers only")
        };
        if let Some(key) = cache.get(blob) {
            return Ok(key);
        }
        let answer = client(provider)
            .await
            .decrypt()
            .key_id(kms_key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob.to_vec()))
            .set_encryption_context(context(encryption_context))
            .send()
            .await
            .map_err(|e| failure(provider, format!("Decrypt: {}", describe(e))))?;
        let key = answer
            .plaintext
            .map(|blob| Secret::new(blob.into_inner()))
            .ok_or_else(|| failure(provider, "Decrypt returned no plaintext key"))?;
        cache.remember(blob.to_vec(), key.clone());
        Ok(key)
    }
}

#[cfg(not(feature = "kms"))]
mod kms {
    use super::{DataKeyCache, Provider, failure};
    use crate::encryption::{EncryptionError, Secret};
    use std::collections::BTreeMap;

    pub(super) async fn generate(
        provider: &Provider,
        _cache: &DataKeyCache,
    ) -> Result<(Secret, Vec<u8>), EncryptionError> {
        Err(failure(
            provider,
            "s3state was built without the `kms` feature",
        ))
    }

    pub(super) async fn decrypt(
        provider: &Provider,
        _cache: &DataKeyCache,
        _blob: &[u8],
        _context: &BTreeMap<String, String>,
    ) -> Result<Secret, EncryptionError> {
        Err(failure(
            provider,
            "s3state was built without the `kms` feature",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long-running process keeps at most KEY_CACHE_ENTRIES keys.
    #[test]
    fn a_key_cache_is_bounded() {
        let cache = DataKeyCache::default();
        for n in 0..(KEY_CACHE_ENTRIES as u32 * 3) {
            cache.remember(n.to_be_bytes().to_vec(), Secret::new(vec![1; 32]));
        }
        let held = cache.0.lock().unwrap().len();
        assert!((1..=KEY_CACHE_ENTRIES).contains(&held), "{held}");
        assert!(
            cache
                .get(&(KEY_CACHE_ENTRIES as u32 * 3 - 1).to_be_bytes())
                .is_some()
        );
    }
}
