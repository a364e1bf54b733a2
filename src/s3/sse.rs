//! Server-side encryption of the state objects: SSE-S3, SSE-KMS, or SSE-C with a key that is
//! never printed.

use crate::error::{Error, Result};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::fmt;

/// Server-side encryption for the state objects.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerSideEncryption {
    /// SSE-S3 (`AES256`).
    S3Managed,
    /// SSE-KMS (`aws:kms`), with the bucket's default key or the given one.
    Kms {
        /// A KMS key id or ARN; `None` uses the AWS-managed key.
        key_id: Option<String>,
    },
    /// SSE-C with a customer-provided 256-bit key, sent with every request.
    CustomerKey(CustomerKey),
}

/// A 256-bit SSE-C key. Its `Debug` output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomerKey([u8; 32]);

impl CustomerKey {
    /// Decodes a base64 key (as Terraform's `sse_customer_key` takes it); it must be 32 bytes.
    pub fn from_base64(encoded: &str) -> Result<Self> {
        let invalid = |message: String| Error::InvalidConfig {
            field: "sse_customer_key",
            env: "S3STATE_SSE_CUSTOMER_KEY",
            message,
        };
        let bytes = BASE64
            .decode(encoded.trim())
            .map_err(|err| invalid(format!("the key is not valid base64: {err}")))?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            invalid(format!(
                "an SSE-C key must be 32 bytes (256 bits); this one is {} bytes",
                bytes.len()
            ))
        })?;
        Ok(CustomerKey(key))
    }

    pub(super) fn key_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    pub(super) fn key_md5_base64(&self) -> String {
        use md5::Digest as _;
        BASE64.encode(md5::Md5::digest(self.0))
    }
}

impl fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomerKey(<redacted>)")
    }
}

impl fmt::Debug for ServerSideEncryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerSideEncryption::S3Managed => f.write_str("AES256"),
            ServerSideEncryption::Kms { key_id } => write!(f, "aws:kms({key_id:?})"),
            ServerSideEncryption::CustomerKey(key) => write!(f, "SSE-C({key:?})"),
        }
    }
}
