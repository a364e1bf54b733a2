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
    /// Which checksums s3state sends and asks for, and what was learnt of the endpoint.
    pub(super) checksums: Checksums,
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

/// Which checksums s3state sends with its writes and asks for on its reads (Terraform's
/// `skip_s3_checksum`; the SDK's `request_checksum_calculation` and
/// `response_checksum_validation`).
///
/// Every write is integrity-checked by the store in each mode; only the header that carries
/// the digest differs. Some S3-compatible stores (Ceph RGW releases, Hetzner, Backblaze B2,
/// OCI) refuse the flexible-checksum headers the AWS SDKs send by default, with
/// `400 XAmzContentSHA256Mismatch`, `InvalidArgument` or `NotImplemented`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChecksumMode {
    /// The flexible checksums (below, `Always`) until the store refuses them in a way that names
    /// a checksum; then the refused request is sent once more in the `Compatible` way, and, if
    /// that is accepted, every later request of this backend too (a warning says so once).
    /// A store's refusal is a 4xx: nothing was applied, so sending the request again, still
    /// conditional, is safe. A wrong digest (`BadDigest`) never switches: that is corruption.
    #[default]
    Auto,
    /// Always `x-amz-checksum-sha256` on writes (with an unsigned payload, so the body is hashed
    /// once) and `x-amz-checksum-mode: ENABLED` on reads, so that the SDK checks the stored
    /// checksum of what it reads. A store that refuses them fails every request.
    Always,
    /// No `x-amz-checksum-*` header at all (`when_required`): writes carry `Content-MD5` and a
    /// SigV4-signed payload, whose SHA-256 (`x-amz-content-sha256`) the store checks before it
    /// stores anything; reads do not ask for the stored checksum.
    Compatible,
}

impl ChecksumMode {
    /// The setting's name as written in `S3STATE_CHECKSUMS` and `--checksums`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChecksumMode::Auto => "auto",
            ChecksumMode::Always => "always",
            ChecksumMode::Compatible => "compatible",
        }
    }
}

impl std::str::FromStr for ChecksumMode {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "auto" => Ok(ChecksumMode::Auto),
            "always" | "when_supported" => Ok(ChecksumMode::Always),
            "compatible" | "when_required" => Ok(ChecksumMode::Compatible),
            _ => Err(format!(
                "{text:?} is not a checksum mode; use auto, always or compatible"
            )),
        }
    }
}

/// The configured [`ChecksumMode`] and, under `Auto`, whether this endpoint was found to
/// refuse the flexible checksums (shared by every store of a backend, so atomic).
#[derive(Debug, Default)]
pub(super) struct Checksums {
    pub(super) mode: ChecksumMode,
    fell_back: std::sync::atomic::AtomicBool,
}

impl Checksums {
    pub(super) fn new(mode: ChecksumMode) -> Self {
        Checksums {
            mode,
            fell_back: Default::default(),
        }
    }

    /// Whether requests go out the `Compatible` way: so configured, or learnt under `Auto`.
    pub(super) fn compatible(&self) -> bool {
        match self.mode {
            ChecksumMode::Compatible => true,
            ChecksumMode::Always => false,
            _ => self.fell_back.load(Ordering::Relaxed),
        }
    }

    /// Whether a refusal naming a checksum may be answered by trying the `Compatible` way.
    pub(super) fn may_fall_back(&self) -> bool {
        self.mode == ChecksumMode::Auto && !self.compatible()
    }

    /// Records that the store refused the flexible checksums and accepted the compatible
    /// request; warns once per backend.
    pub(super) fn fall_back(&self, operation: &str, location: &str) {
        if !self.fell_back.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                operation,
                location,
                "the store refuses the SDK's checksum headers; s3state now sends Content-MD5 and a \
                 signed payload instead (set S3STATE_CHECKSUMS=compatible to skip the first try)"
            );
        }
    }
}

/// Client settings for a request sent the `Compatible` way: the SDK adds no checksum of its
/// own to a write, and does not ask for one on a read.
pub(super) fn compatible_requests() -> aws_sdk_s3::config::Builder {
    use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
    aws_sdk_s3::config::Builder::default()
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
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

    #[test]
    fn only_auto_falls_back_and_only_once() {
        let auto = Checksums::new(ChecksumMode::Auto);
        assert!(!auto.compatible() && auto.may_fall_back());
        auto.fall_back("PutObject", "s3://b/k");
        assert!(auto.compatible() && !auto.may_fall_back());
        let always = Checksums::new(ChecksumMode::Always);
        assert!(!always.compatible() && !always.may_fall_back());
        let compatible = Checksums::new(ChecksumMode::Compatible);
        assert!(compatible.compatible() && !compatible.may_fall_back());
    }

    #[test]
    fn modes_parse_from_their_names_and_the_sdks() {
        for (text, mode) in [
            ("auto", ChecksumMode::Auto),
            ("ALWAYS", ChecksumMode::Always),
            ("when_supported", ChecksumMode::Always),
            ("compatible", ChecksumMode::Compatible),
            ("when_required", ChecksumMode::Compatible),
        ] {
            assert_eq!(text.parse::<ChecksumMode>(), Ok(mode), "{text}");
        }
        assert!("off".parse::<ChecksumMode>().is_err());
    }
}
