//! OpenTofu state encryption (issue 24): the library layer over S3, the format checked
//! against an independent implementation, and the key providers.

mod cross_implementation;
mod key_providers;
mod library;

use s3state::encryption::{EncryptionConfig, StateEncryption};

/// A passphrase long enough for OpenTofu (16 characters or more).
pub const PASSPHRASE: &str = "correct-horse-battery-staple";

/// OpenTofu's lowest accepted iteration count, so that the tests derive quickly.
pub const ITERATIONS: u32 = 200_000;

/// The JSON configuration of a pbkdf2 + aes_gcm state target, optionally with fallbacks
/// (`method.<type>.<name>` references, declared in `extra_methods`).
pub fn pbkdf2_config(passphrase: &str, enforced: bool, fallback: Option<&str>) -> String {
    let fallback = fallback
        .map(|method| format!(r#","fallback":{{"method":"{method}"}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"key_provider":{{"pbkdf2":{{"key":{{"passphrase":"{passphrase}","iterations":{ITERATIONS}}}}}}},
            "method":{{"aes_gcm":{{"main":{{"keys":"${{key_provider.pbkdf2.key}}"}}}},"unencrypted":{{"migrate":{{}}}}}},
            "state":{{"method":"${{method.aes_gcm.main}}","enforced":{enforced}{fallback}}}}}"#
    )
}

/// [`pbkdf2_config`], built.
pub fn pbkdf2(passphrase: &str) -> StateEncryption {
    encryption(&pbkdf2_config(passphrase, false, None))
}

/// A configuration (JSON or HCL), built.
pub fn encryption(config: &str) -> StateEncryption {
    StateEncryption::from_config(&EncryptionConfig::parse(config).expect("parsing the config"))
        .expect("resolving the config")
}
