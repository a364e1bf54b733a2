//! Key material and passphrases, kept out of every `Debug` and `Display`.

use std::fmt;
use zeroize::Zeroizing;

/// Secret bytes: a passphrase, a derived key, a data key from KMS. Its `Debug` prints
/// `[redacted]`, it has no `Display`, and its memory is zeroed when dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// The secret bytes, for the one place that uses them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Its length in bytes (not secret: it is in the metadata).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Secret::new(text.as_bytes().to_vec())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let secret = Secret::from("correct-horse-battery-staple");
        let shown = format!("{secret:?} {:?}", Some(secret.clone()));
        assert!(!shown.contains("horse"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }
}
