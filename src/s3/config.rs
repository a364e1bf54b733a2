//! What every store of one bucket shares: the client, the bucket, encryption, the retry budget
//! for S3's `409`, and what was learnt about the endpoint. The builder makes one
//! [`S3Config`]; the backend and each store it opens hold the same `Arc` of it.

use super::sse::ServerSideEncryption;
use aws_sdk_s3::Client;
use std::sync::atomic::{AtomicU8, Ordering};

/// The settings shared by [`super::S3Backend`] and every [`super::S3Store`] it opens.
#[derive(Debug)]
pub(super) struct S3Config {
    pub(super) client: Client,
    pub(super) bucket: String,
    pub(super) sse: Option<ServerSideEncryption>,
    /// How often a write answered `409 ConditionalRequestConflict` is retried.
    pub(super) conflict_retries: u32,
    /// Whether this endpoint honours `If-Match` on DeleteObject.
    pub(super) conditional_delete: ConditionalDelete,
    /// Terraform's DynamoDB lock table, when `dynamodb_table` is configured.
    #[cfg_attr(not(feature = "dynamodb"), allow(dead_code))]
    pub(super) lock_table: super::lock_table::SharedTable,
    /// The S3 endpoint the client talks to (`None` for AWS's own), when known: it is not
    /// when the client was given with `with_client`, since a client does not tell.
    pub(super) endpoint: Option<Option<String>>,
}

/// What is known of an endpoint's support for conditional DeleteObject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum DeleteSupport {
    /// Not tried yet.
    Unknown = 0,
    /// A conditional delete was answered.
    Supported = 1,
    /// The endpoint answered `501 Not Implemented` (LocalStack does).
    Unsupported = 2,
}

/// [`DeleteSupport`], learnt on first use and shared by every store of a backend (so it is
/// atomic rather than behind a lock).
#[derive(Debug, Default)]
pub(super) struct ConditionalDelete(AtomicU8);

impl ConditionalDelete {
    /// What is known now.
    pub(super) fn get(&self) -> DeleteSupport {
        match self.0.load(Ordering::Relaxed) {
            1 => DeleteSupport::Supported,
            2 => DeleteSupport::Unsupported,
            _ => DeleteSupport::Unknown,
        }
    }

    /// Records what a conditional delete showed.
    pub(super) fn learn(&self, support: DeleteSupport) {
        self.0.store(support as u8, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_delete_support_starts_unknown_and_keeps_what_was_learnt() {
        let support = ConditionalDelete::default();
        assert_eq!(support.get(), DeleteSupport::Unknown);
        support.learn(DeleteSupport::Unsupported);
        assert_eq!(support.get(), DeleteSupport::Unsupported);
        support.learn(DeleteSupport::Supported);
        assert_eq!(support.get(), DeleteSupport::Supported);
    }
}
