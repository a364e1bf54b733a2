//! `S3Backend::probe`: what an S3 endpoint and bucket really do with the conditions, checksums
//! and versions s3state relies on, measured with scratch objects under a prefix of the probe's
//! own, and a verdict on whether s3state is safe there.
//!
//! Many S3-compatible stores accept `If-None-Match`/`If-Match` and ignore them, refuse them, or
//! lack `ListObjectVersions`. The probe sends each kind of request once the way s3state does
//! and once in a way that must be refused, and reports the HTTP status the store answered.
//! It is the one place in `s3` that reports raw statuses rather than what they mean
//! (`errors.rs` maps them for everything else): here the number is the finding. It knows
//! nothing of serials or states: its objects are a few bytes of text.
//!
//! Everything it writes (every version and delete marker) is removed by version id before it
//! returns, also when a check fails half-way; what could not be removed is listed in
//! [`ProbeCleanup::left_behind`].

use super::S3Store;
use super::errors::sdk_error;
use super::workspace::S3Backend;
use crate::error::{Error, Result};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
use aws_sdk_s3::primitives::ByteStream;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::Digest as _;
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The prefix under which every probe writes, followed by a random id per run.
pub const PROBE_PREFIX: &str = ".s3state-probe/";

/// How many rounds of racing conditional writes the probe sends.
const RACE_ROUNDS: usize = 3;

/// A tag no object has: the "wrong ETag" of the checks that must be refused.
const WRONG_ETAG: &str = "\"00000000000000000000000000000000\"";

/// What a probe found: one entry per check, the verdict, and what its cleanup removed.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ProbeReport {
    /// The bucket probed.
    pub bucket: String,
    /// The scratch prefix used (`.s3state-probe/<uuid>/`).
    pub prefix: String,
    /// The checks, in the order they ran.
    pub checks: Vec<ProbeCheck>,
    /// Safe, safe with limits, safe only under the lock, or unsafe, with the reasons.
    pub verdict: Verdict,
    /// What the store did, typed, for programs and test harnesses that adapt to a store (a
    /// field is `None` when its check did not run).
    pub findings: ProbeFindings,
    /// What the cleanup removed and what it could not.
    pub cleanup: ProbeCleanup,
}

/// One check: what was sent, what the store answered, and what that means for s3state.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ProbeCheck {
    /// A stable identifier, for scripts, in the order the checks run: `versioning`,
    /// `checksum_sha256`, `checksum_trailer`, `checksum_mode_get`, `etag_shape`,
    /// `if_none_match`, `if_match`, `if_match_absent`, `race`, `cas_versioned`,
    /// `conditional_get`, `conditional_delete`, `conditional_delete_absent`,
    /// `list_object_versions`, `paged_listing`, and `dynamodb` when a lock table is configured.
    /// When encryption is configured, `sse_lock` runs right after `versioning`; if the store
    /// refuses the encryption, the probe stops there.
    pub id: &'static str,
    /// What was tested, for people.
    pub title: &'static str,
    /// What the store did, in a few words (`enforced (412)`, `ignored (200, overwrote)`).
    pub result: String,
    /// The HTTP statuses the store answered, in order (empty for checks that send nothing of
    /// their own).
    pub statuses: Vec<u16>,
    /// What the result means for s3state.
    pub level: CheckLevel,
    /// One line on why this matters.
    pub explanation: String,
}

/// What a check's result means for s3state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckLevel {
    /// The store gives the guarantee s3state relies on.
    Pass,
    /// Worth knowing; no guarantee depends on it (an ETag's shape, a missing `304`).
    Info,
    /// No guarantee is broken, but a feature fails here with an error rather than working
    /// (history of a state with more versions than one listing page, on a store that pages
    /// wrongly). Never silently wrong.
    Limited,
    /// A guarantee is missing that holding the state's lock makes up for.
    UnderLock,
    /// The store breaks a guarantee s3state relies on, or refuses requests s3state must send.
    Unsafe,
}

/// The probe's conclusion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "level", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// Every guarantee s3state relies on holds.
    Safe,
    /// Every guarantee holds, but some features fail here with an error: `limits` names them.
    SafeWithLimits {
        /// What fails, one line each.
        limits: Vec<String>,
    },
    /// s3state is safe here only while every writer holds the state's lock (Terraform always
    /// does; `s3state push`/`restore` and `update` do by default). `missing` names what the
    /// store does not give.
    SafeOnlyUnderLock {
        /// The guarantees the store lacks, one line each.
        missing: Vec<String>,
    },
    /// s3state is not safe here: `reasons` names what the store breaks or refuses.
    Unsafe {
        /// What the store breaks, one line each.
        reasons: Vec<String>,
    },
}

impl Verdict {
    /// The verdict for these checks: unsafe if any is, else safe only under the lock if any
    /// check needs it, else safe with limits if any check found one, else safe.
    fn of(checks: &[ProbeCheck]) -> Verdict {
        let lines = |level| {
            checks
                .iter()
                .filter(|check| check.level == level)
                .map(|check| format!("{}: {}", check.title, check.result))
                .collect::<Vec<_>>()
        };
        let reasons = lines(CheckLevel::Unsafe);
        if !reasons.is_empty() {
            return Verdict::Unsafe { reasons };
        }
        let missing = lines(CheckLevel::UnderLock);
        if !missing.is_empty() {
            return Verdict::SafeOnlyUnderLock { missing };
        }
        let limits = lines(CheckLevel::Limited);
        if !limits.is_empty() {
            return Verdict::SafeWithLimits { limits };
        }
        Verdict::Safe
    }
}

/// What the probe's cleanup did.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct ProbeCleanup {
    /// How many versions and delete markers were deleted by version id (or objects, where
    /// the bucket keeps no versions).
    pub removed: usize,
    /// `key` or `key@version` of what is still there afterwards; empty when all is gone.
    pub left_behind: Vec<String>,
}

/// What the store did with a condition s3state relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Enforcement {
    /// Refused when it did not hold (`412`), applied when it did.
    Enforced,
    /// Accepted and ignored: the write or delete went through although it did not hold.
    Ignored,
    /// The request was refused whatever the condition (`400`, `501`, …): this status.
    Refused {
        /// The status the store answered.
        status: u16,
    },
}

/// The probe's findings as typed values: what a program (or a test suite run against many
/// stores) asks instead of assuming one store's quirks. Every field is `None` when its check
/// did not run (an unversioned bucket has no paged listing to check; no encryption is
/// configured).
///
/// ```
/// # fn demo(report: &s3state::s3::ProbeReport) {
/// if report.findings.conditional_delete_on_absent == Some(412) {
///     // SeaweedFS: a conditional DELETE of an object that is not there answers 412, not 404.
/// }
/// # }
/// ```
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct ProbeFindings {
    /// The bucket's versioning is `Enabled`.
    pub versioning_enabled: Option<bool>,
    /// A PUT with `x-amz-checksum-sha256` (the SDK's flexible checksums) was accepted.
    pub checksum_header_accepted: Option<bool>,
    /// A PUT with a wrong digest was refused: `x-amz-checksum-sha256`, or `Content-MD5` where
    /// the probe wrote the compatible way.
    pub wrong_digest_refused: Option<bool>,
    /// A PUT the SDK's default way for a streamed body (`aws-chunked`, with an
    /// `x-amz-checksum-crc32` trailer) was accepted and stored as sent.
    pub checksum_trailer_accepted: Option<bool>,
    /// A GET with `x-amz-checksum-mode: ENABLED` was answered.
    pub checksum_mode_accepted: Option<bool>,
    /// The probe wrote the compatible way (Content-MD5, signed payload), as s3state then does:
    /// configured, or because the store refused the checksum header.
    pub writes_compatible: bool,
    /// `If-None-Match: *` on a PUT over an existing object.
    pub if_none_match: Option<Enforcement>,
    /// `If-Match` with a wrong tag on a PUT.
    pub if_match: Option<Enforcement>,
    /// The status of a PUT with `If-Match` on a key that was never written (AWS: `404`).
    pub if_match_on_absent: Option<u16>,
    /// In every round of racing conditional writers, at most one won.
    pub race_single_winner: Option<bool>,
    /// If-Match compare-and-swap on a versioned bucket: a tag of an older version was refused
    /// and the versions hold exactly the writes that won.
    pub cas_versioned: Option<bool>,
    /// The store answered a conditional GET with `304`.
    pub conditional_get_304: Option<bool>,
    /// `If-Match` with a wrong tag on DeleteObject.
    pub conditional_delete: Option<Enforcement>,
    /// The status of a DeleteObject with `If-Match` on a key that was never written (AWS: `404`
    /// or `204`; SeaweedFS `412`; LocalStack `501`).
    pub conditional_delete_on_absent: Option<u16>,
    /// A paged ListObjectVersions (one entry a page, by key and version-id markers) returned
    /// every version and delete marker of the exact key exactly once, with siblings sharing
    /// its prefix.
    pub paged_listing_exact: Option<bool>,
    /// The lock object, written with the configured encryption, reads back as encrypted.
    pub sse_on_lock: Option<bool>,
}

/// A store's answer that was not a success: its status and error code.
#[derive(Debug, Clone)]
struct Refusal {
    status: u16,
    code: Option<String>,
    /// The store's message, when it sent one.
    message: Option<String>,
}

impl Refusal {
    fn describe(&self) -> String {
        match &self.code {
            Some(code) => format!("{} {code}", self.status),
            None => self.status.to_string(),
        }
    }
}

/// A success, or the store's refusal. A request that got no HTTP answer at all is an error
/// of the probe (it cannot tell anything from it).
type Answer<T> = std::result::Result<T, Refusal>;

fn answer<T, E>(
    sent: std::result::Result<T, SdkError<E, HttpResponse>>,
    operation: &'static str,
    location: &str,
) -> Result<Answer<T>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match sent {
        Ok(output) => Ok(Ok(output)),
        Err(err) => match err.raw_response().map(|r| r.status().as_u16()) {
            // A success the SDK cannot read (moto's GetBucketVersioning has another XML root).
            Some(status @ 200..=299) => Ok(Err(Refusal {
                status,
                code: Some("unreadable answer".into()),
                message: None,
            })),
            Some(status) => Ok(Err(Refusal {
                status,
                code: err.code().map(str::to_owned),
                message: err.message().map(str::to_owned),
            })),
            None => Err(sdk_error(operation, location, err)),
        },
    }
}

/// A PUT the store applied.
#[derive(Debug, Clone)]
struct Put {
    etag: String,
}

/// How a PUT is conditioned.
#[derive(Clone, Copy)]
enum Condition<'a> {
    None,
    IfNoneMatch(&'a str),
    IfMatch(&'a str),
}

/// Whether a refusal says the store does not support the request rather than that its
/// condition failed: `501 Not Implemented`, or `400` (an unknown header or argument).
fn is_refused(refusal: &Refusal) -> bool {
    matches!(refusal.status, 400 | 501)
}

/// Whether a refusal names the checksum headers (the same reading as s3state's own requests
/// make, `errors::is_checksum_refused`, on what the probe kept of the answer).
fn names_checksum(refusal: &Refusal, bodiless: bool) -> bool {
    if !matches!(refusal.status, 400 | 501) {
        return false;
    }
    let code = refusal.code.as_deref().unwrap_or_default();
    if matches!(code, "BadDigest" | "InvalidDigest") {
        return false;
    }
    if code == "XAmzContentSHA256Mismatch" || (code.is_empty() && bodiless) {
        return true;
    }
    let text =
        format!("{code} {}", refusal.message.as_deref().unwrap_or_default()).to_ascii_lowercase();
    ["checksum", "x-amz-content-sha256", "aws-chunked", "trailer"]
        .iter()
        .any(|word| text.contains(word))
}

/// How many writers race one `If-Match` in each round of the race check.
const RACERS: usize = 8;

struct Probe<'a> {
    backend: &'a S3Backend,
    /// The scratch object's store, for its SSE settings.
    store: S3Store,
    prefix: String,
    /// Every key written.
    keys: BTreeSet<String>,
    /// Every `(key, version id)` an answer named.
    versions: Vec<(String, String)>,
    checks: Vec<ProbeCheck>,
    findings: ProbeFindings,
    /// Writes go out the compatible way (Content-MD5, signed payload, no checksum header).
    compatible: bool,
    /// Reads go out without `x-amz-checksum-mode`, as s3state's then do.
    reads_compatible: bool,
}

fn check(
    id: &'static str,
    title: &'static str,
    result: impl Into<String>,
    statuses: Vec<u16>,
    level: CheckLevel,
    explanation: impl Into<String>,
) -> ProbeCheck {
    ProbeCheck {
        id,
        title,
        result: result.into(),
        statuses,
        level,
        explanation: explanation.into(),
    }
}

fn sha256_base64(body: &[u8]) -> String {
    BASE64.encode(sha2::Sha256::digest(body))
}

fn md5_base64(body: &[u8]) -> String {
    BASE64.encode(md5::Md5::digest(body))
}

fn no_retries() -> aws_sdk_s3::config::Builder {
    // The probe reports what the store answered to one request: the SDK must not retry a 409
    // or a 5xx behind its back (a retried conditional write could also meet itself).
    aws_sdk_s3::config::Builder::default()
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
}

impl S3Backend {
    /// Measures what this endpoint and bucket do with the requests s3state relies on, and
    /// concludes whether s3state is safe there (see [`ProbeReport`] and [`Verdict`]).
    ///
    /// It writes a few small objects under `.s3state-probe/<uuid>/` (never touching a
    /// state) and removes every version and delete marker it made before returning, also
    /// when a check fails. It checks:
    ///
    /// - `If-None-Match: *` on PUT over an existing object, and `If-Match` on PUT with a wrong
    ///   tag: enforced (`412`), ignored (the write went through) or refused (`400`/`501`);
    /// - two racing PUTs with the same `If-Match`: which status the loser gets (`412` or
    ///   `409`), or whether both went through;
    /// - conditional GET (`304`), conditional DELETE with a wrong tag;
    /// - bucket versioning and whether `ListObjectVersions` lists the probe's versions;
    /// - SHA-256 checksums (a wrong one must be refused) and the shape of ETags;
    /// - the DynamoDB lock table, when one is configured.
    ///
    /// A request that gets no HTTP answer at all fails the probe with the store's error
    /// (after the cleanup); a refusal is a finding, not an error.
    pub async fn probe(&self) -> Result<ProbeReport> {
        let prefix = format!("{PROBE_PREFIX}{}/", uuid::Uuid::new_v4());
        let mut probe = Probe {
            backend: self,
            store: S3Store::new(Arc::clone(&self.config), format!("{prefix}conditions")),
            prefix,
            keys: BTreeSet::new(),
            versions: Vec::new(),
            checks: Vec::new(),
            findings: ProbeFindings::default(),
            compatible: self.config.checksums.mode == super::ChecksumMode::Compatible,
            reads_compatible: self.config.checksums.mode == super::ChecksumMode::Compatible,
        };
        let checked = probe.run().await;
        let cleanup = probe.cleanup().await;
        if let (Err(_), Ok(cleanup)) = (&checked, &cleanup)
            && !cleanup.left_behind.is_empty()
        {
            // The check's error is returned, and with it no report: say what is left here.
            tracing::warn!(
                left_behind = cleanup.left_behind.join(", "),
                "the probe failed and could not remove everything it wrote; delete these by hand"
            );
        }
        checked?;
        let cleanup = cleanup?;
        Ok(ProbeReport {
            bucket: self.config.bucket.clone(),
            prefix: probe.prefix,
            verdict: Verdict::of(&probe.checks),
            checks: probe.checks,
            findings: probe.findings,
            cleanup,
        })
    }
}

impl<'a> Probe<'a> {
    fn client(&self) -> &aws_sdk_s3::Client {
        &self.backend.config.client
    }

    fn bucket(&self) -> &str {
        &self.backend.config.bucket
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket())
    }

    fn remember(&mut self, key: &str, version_id: Option<&str>) {
        self.keys.insert(key.to_owned());
        if let Some(version_id) = version_id {
            self.versions.push((key.to_owned(), version_id.to_owned()));
        }
    }

    /// One PUT as s3state sends it (SSE settings, SHA-256 checksum, unsigned payload), under
    /// `condition`; `checksum` overrides the body's own.
    async fn put(
        &mut self,
        key: &str,
        body: &[u8],
        condition: Condition<'_>,
        checksum: Option<String>,
    ) -> Result<Answer<Put>> {
        // Remembered before sending: a request whose answer is lost may still have landed.
        self.keys.insert(key.to_owned());
        let mut request = self
            .client()
            .put_object()
            .bucket(self.bucket())
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .content_type("text/plain");
        request = match condition {
            Condition::None => request,
            Condition::IfNoneMatch(tag) => request.if_none_match(tag),
            Condition::IfMatch(tag) => request.if_match(tag),
        };
        request = self.store.apply_sse_to_put(request);
        let sent = if self.compatible {
            // As s3state writes the compatible way: Content-MD5 and a signed payload.
            request
                .content_md5(checksum.unwrap_or_else(|| md5_base64(body)))
                .customize()
                .config_override(
                    super::config::compatible_requests()
                        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()),
                )
                .send()
                .await
        } else {
            request
                .checksum_sha256(checksum.unwrap_or_else(|| sha256_base64(body)))
                .customize()
                .config_override(no_retries())
                .disable_payload_signing()
                .send()
                .await
        };
        let answered = answer(sent, "PutObject", &self.location(key))?;
        Ok(answered.map(|output| {
            self.remember(key, output.version_id());
            Put {
                etag: output.e_tag().unwrap_or_default().to_owned(),
            }
        }))
    }

    async fn run(&mut self) -> Result<()> {
        self.check_versioning().await?;
        // First: when the store refuses the configured encryption, every other write would be
        // refused the same way, and that is the finding.
        if !self.check_sse_lock().await? {
            return Ok(());
        }
        self.check_checksums().await?;
        self.check_checksum_trailer().await?;
        self.check_checksum_mode().await?;
        let current = self.check_conditional_puts().await?;
        self.check_if_match_absent().await?;
        let current = self.check_race(current).await?;
        self.check_cas_versioned().await?;
        self.check_conditional_get(&current).await?;
        self.check_conditional_delete(&current).await?;
        self.check_conditional_delete_absent().await?;
        self.check_listing().await?;
        self.check_paged_listing().await?;
        self.check_dynamodb().await;
        Ok(())
    }

    async fn check_versioning(&mut self) -> Result<()> {
        let sent = self
            .client()
            .get_bucket_versioning()
            .bucket(self.bucket())
            .send()
            .await;
        // Read as s3state reads it when it opens the bucket: moto's answer, whose XML root the
        // SDK does not accept, by its `Status` element.
        let sent = match sent {
            Err(err) => match super::errors::versioning_status_of_unreadable_success(&err) {
                Some(status) => Ok(
                    aws_sdk_s3::operation::get_bucket_versioning::GetBucketVersioningOutput::builder()
                        .set_status(status)
                        .build(),
                ),
                None => Err(err),
            },
            ok => ok,
        };
        let location = format!("s3://{}", self.bucket());
        let found = match answer(sent, "GetBucketVersioning", &location)? {
            Ok(output) => match output.status().map(|s| s.as_str().to_owned()) {
                Some(status) if status == "Enabled" => check(
                    "versioning",
                    "bucket versioning",
                    "enabled",
                    vec![200],
                    CheckLevel::Pass,
                    "every snapshot is kept, and a write whose answer was lost is looked up exactly among the versions",
                ),
                status => check(
                    "versioning",
                    "bucket versioning",
                    match status {
                        Some(status) => status.to_lowercase(),
                        None => "never enabled".into(),
                    },
                    vec![200],
                    CheckLevel::UnderLock,
                    "no history to restore from, and a write whose answer was lost can be checked only against the current object, \
                     which is exact only while nobody else writes (s3state refuses such a bucket unless S3STATE_REQUIRE_VERSIONING=false)",
                ),
            },
            Err(refusal)
                if refusal.status == 404 && refusal.code.as_deref() == Some("NoSuchBucket") =>
            {
                return Err(Error::BucketNotFound {
                    bucket: self.bucket().to_owned(),
                });
            }
            Err(refusal) if (200..300).contains(&refusal.status) => check(
                "versioning",
                "bucket versioning",
                format!("unknown ({})", refusal.describe()),
                vec![refusal.status],
                CheckLevel::Info,
                "s3state checks versioning when it opens the bucket and fails here unless S3STATE_REQUIRE_VERSIONING=false; \
                 whether versions are kept is checked below",
            ),
            Err(refusal) => check(
                "versioning",
                "bucket versioning",
                format!("unknown ({})", refusal.describe()),
                vec![refusal.status],
                CheckLevel::UnderLock,
                "GetBucketVersioning was refused, so s3state cannot tell whether snapshots are kept; \
                 without versions a lost write's outcome is exact only while nobody else writes",
            ),
        };
        self.findings.versioning_enabled = Some(found.result == "enabled");
        self.checks.push(found);
        Ok(())
    }

    /// Whether the store gave the probe's writes version ids (moto's GetBucketVersioning
    /// answer cannot be read, but its writes are versioned).
    fn keeps_versions(&self) -> bool {
        self.versions.iter().any(|(_, id)| id != "null")
    }

    /// If-None-Match and If-Match on PUT, and the ETag's shape. Returns the scratch object's
    /// current tag.
    async fn check_conditional_puts(&mut self) -> Result<String> {
        let key = self.store.key.clone();
        let first = b"s3state probe: first write\n";
        let mut statuses = Vec::new();
        let mut current = match self
            .put(&key, first, Condition::IfNoneMatch("*"), None)
            .await?
        {
            Ok(put) => {
                statuses.push(200);
                put
            }
            Err(refusal) => {
                // Refused even where nothing exists: still measure the rest on a plain write.
                statuses.push(refusal.status);
                match self.put(&key, first, Condition::None, None).await? {
                    Ok(put) => put,
                    Err(plain) => {
                        return Err(Error::Store {
                            operation: "PutObject",
                            location: self.location(&key),
                            message: format!(
                                "the probe cannot write its scratch object: a plain PUT was answered {} \
                                 (a create-only PUT {}); check the credentials' permissions on the bucket",
                                plain.describe(),
                                refusal.describe()
                            ),
                            source: None,
                        });
                    }
                }
            }
        };
        self.checks.push(etag_shape(&current.etag, first));

        let create_refused = statuses[0] != 200;
        let over = self
            .put(
                &key,
                b"s3state probe: create over an existing object\n",
                Condition::IfNoneMatch("*"),
                None,
            )
            .await?;
        let found = match over {
            _ if create_refused => {
                self.findings.if_none_match = Some(Enforcement::Refused {
                    status: statuses[0],
                });
                check(
                    "if_none_match",
                    "If-None-Match: * on PUT",
                    format!("refused ({})", statuses[0]),
                    statuses.clone(),
                    CheckLevel::Unsafe,
                    "s3state creates its lock (<key>.tflock) and new states with If-None-Match: *; every such write would fail",
                )
            }
            Ok(put) => {
                current = put;
                self.findings.if_none_match = Some(Enforcement::Ignored);
                check(
                    "if_none_match",
                    "If-None-Match: * on PUT",
                    "ignored (200, overwrote the existing object)",
                    vec![200, 200],
                    CheckLevel::Unsafe,
                    "a lock could be taken while someone holds it, and a new state could replace an existing one",
                )
            }
            Err(refusal) if refusal.status == 412 => {
                self.findings.if_none_match = Some(Enforcement::Enforced);
                check(
                    "if_none_match",
                    "If-None-Match: * on PUT",
                    "enforced (412)",
                    vec![200, 412],
                    CheckLevel::Pass,
                    "locks and new states are created only where nothing exists",
                )
            }
            Err(refusal) => {
                self.findings.if_none_match = Some(Enforcement::Refused {
                    status: refusal.status,
                });
                check(
                    "if_none_match",
                    "If-None-Match: * on PUT",
                    if is_refused(&refusal) {
                        format!("refused ({})", refusal.describe())
                    } else {
                        format!("unexpected answer ({})", refusal.describe())
                    },
                    vec![200, refusal.status],
                    CheckLevel::Unsafe,
                    "s3state creates its lock and new states with If-None-Match: *; over an existing object it must get 412",
                )
            }
        };
        self.checks.push(found);

        let wrong = self
            .put(
                &key,
                b"s3state probe: write on a wrong tag\n",
                Condition::IfMatch(WRONG_ETAG),
                None,
            )
            .await?;
        let mut statuses = Vec::new();
        let (result, level, explanation) = match wrong {
            Ok(put) => {
                current = put;
                statuses.push(200);
                (
                    "ignored (200, overwrote)".to_owned(),
                    CheckLevel::Unsafe,
                    "compare-and-swap is broken: a write made on an old snapshot replaces a newer one",
                )
            }
            Err(refusal) if refusal.status == 412 => {
                statuses.push(412);
                // Enforced against a wrong tag; the right tag must then be accepted.
                let current_tag = current.etag.clone();
                match self
                    .put(
                        &key,
                        b"s3state probe: write on the right tag\n",
                        Condition::IfMatch(&current_tag),
                        None,
                    )
                    .await?
                {
                    Ok(put) => {
                        current = put;
                        statuses.push(200);
                        (
                            "enforced (412 on a wrong tag, 200 on the right one)".to_owned(),
                            CheckLevel::Pass,
                            "a write made on an old snapshot is refused, never applied",
                        )
                    }
                    Err(right) => {
                        statuses.push(right.status);
                        (
                            format!("refuses even the right tag ({})", right.describe()),
                            CheckLevel::Unsafe,
                            "every s3state write to an existing state would fail",
                        )
                    }
                }
            }
            Err(refusal) => {
                statuses.push(refusal.status);
                (
                    if is_refused(&refusal) {
                        format!("refused ({})", refusal.describe())
                    } else {
                        format!("unexpected answer ({})", refusal.describe())
                    },
                    CheckLevel::Unsafe,
                    "every s3state write to an existing state is conditional on its tag; it must get 412 on a wrong one",
                )
            }
        };
        self.findings.if_match = Some(match (statuses.first(), level) {
            (Some(200), _) => Enforcement::Ignored,
            (_, CheckLevel::Pass) => Enforcement::Enforced,
            (Some(412), _) => Enforcement::Enforced,
            (status, _) => Enforcement::Refused {
                status: status.copied().unwrap_or_default(),
            },
        });
        self.checks.push(check(
            "if_match",
            "If-Match on PUT (wrong tag)",
            result,
            statuses,
            level,
            explanation,
        ));
        Ok(current.etag)
    }

    /// `RACERS` PUTs with the same `If-Match` at once, a few rounds: at most one may win, the
    /// others must lose with 412 or 409. Returns the object's tag afterwards.
    async fn check_race(&mut self, mut current: String) -> Result<String> {
        let key = self.store.key.clone();
        let mut statuses = Vec::new();
        let mut several_won = 0;
        let mut lost = std::collections::BTreeMap::<u16, usize>::new();
        for round in 0..RACE_ROUNDS {
            let bodies: Vec<String> = (0..RACERS)
                .map(|writer| format!("s3state probe: race {round}, writer {writer}\n"))
                .collect();
            let tag = current.clone();
            let mut racers: Vec<Probe<'a>> = (0..RACERS).map(|_| self.clone_for_race()).collect();
            let outcomes =
                futures::future::join_all(racers.iter_mut().zip(&bodies).map(|(racer, body)| {
                    racer.put(&key, body.as_bytes(), Condition::IfMatch(&tag), None)
                }))
                .await;
            for racer in racers {
                self.versions.extend(racer.versions);
            }
            let mut winners = 0;
            for outcome in outcomes {
                match outcome? {
                    Ok(put) => {
                        winners += 1;
                        statuses.push(200);
                        current = put.etag;
                    }
                    Err(refusal) => {
                        statuses.push(refusal.status);
                        *lost.entry(refusal.status).or_default() += 1;
                    }
                }
            }
            if winners > 1 {
                several_won += 1;
            }
        }
        if several_won > 0 {
            // When several writes went through, which one is current is the store's call, not
            // the order of our answers: ask, so the checks that follow use the right tag.
            let request = self.client().head_object().bucket(self.bucket()).key(&key);
            if let Ok(head) = super::with_customer_key!(request, &self.backend.config.sse)
                .send()
                .await
                && let Some(tag) = head.e_tag()
            {
                current = tag.to_owned();
            }
        }
        let losers = lost
            .iter()
            .map(|(status, count)| format!("{status} ×{count}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.findings.race_single_winner = Some(several_won == 0);
        const TITLE: &str = "8 writers racing one If-Match";
        let found = if several_won > 0 {
            check(
                "race",
                TITLE,
                format!(
                    "more than one write went through in {several_won} of {RACE_ROUNDS} rounds"
                ),
                statuses,
                CheckLevel::Unsafe,
                "writers made on the same snapshot both succeeded: one silently replaced the other",
            )
        } else if lost.keys().all(|status| matches!(status, 409 | 412)) {
            check(
                "race",
                TITLE,
                format!("at most one winner a round; the losers got {losers}"),
                statuses,
                CheckLevel::Pass,
                "a lost race is refused: 412 is reported as a conflict, 409 is retried by s3state",
            )
        } else {
            check(
                "race",
                TITLE,
                format!("unexpected answers ({losers})"),
                statuses,
                CheckLevel::Unsafe,
                "a write that lost a race must get 412 or 409",
            )
        };
        self.checks.push(found);
        Ok(current)
    }

    /// A probe sharing this one's client and settings, recording its own versions (for one
    /// of two concurrent requests).
    fn clone_for_race(&self) -> Probe<'a> {
        Probe {
            backend: self.backend,
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            keys: BTreeSet::new(),
            versions: Vec::new(),
            checks: Vec::new(),
            findings: ProbeFindings::default(),
            compatible: self.compatible,
            reads_compatible: self.reads_compatible,
        }
    }

    async fn check_conditional_get(&mut self, current: &str) -> Result<()> {
        let key = self.store.key.clone();
        let request = self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(&key)
            .if_none_match(current);
        let settings = if self.reads_compatible {
            super::config::compatible_requests()
                .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        } else {
            no_retries()
        };
        let sent = super::with_customer_key!(request, &self.backend.config.sse)
            .customize()
            .config_override(settings)
            .send()
            .await;
        let found = match answer(sent, "GetObject", &self.location(&key))? {
            Ok(_) => check(
                "conditional_get",
                "conditional GET (If-None-Match: <etag>)",
                "ignored (200, body sent again)",
                vec![200],
                CheckLevel::Info,
                "a refresh of an unchanged state downloads it again: bandwidth only",
            ),
            Err(refusal) if refusal.status == 304 => check(
                "conditional_get",
                "conditional GET (If-None-Match: <etag>)",
                "supported (304)",
                vec![304],
                CheckLevel::Pass,
                "a refresh of an unchanged state downloads nothing",
            ),
            Err(refusal) => check(
                "conditional_get",
                "conditional GET (If-None-Match: <etag>)",
                format!("unexpected answer ({})", refusal.describe()),
                vec![refusal.status],
                CheckLevel::Unsafe,
                "every refresh of an unchanged state sends this request; it must get 304 or the object",
            ),
        };
        self.findings.conditional_get_304 = Some(found.statuses == [304]);
        self.checks.push(found);
        Ok(())
    }

    async fn delete(&mut self, key: &str, if_match: Option<&str>) -> Result<Answer<()>> {
        let sent = self
            .client()
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .set_if_match(if_match.map(str::to_owned))
            .customize()
            .config_override(no_retries())
            .send()
            .await;
        let answered = answer(sent, "DeleteObject", &self.location(key))?;
        Ok(answered.map(|output| {
            if output.delete_marker() == Some(true) {
                self.remember(key, output.version_id());
            }
        }))
    }

    async fn check_conditional_delete(&mut self, current: &str) -> Result<()> {
        let key = self.store.key.clone();
        let found = match self.delete(&key, Some(WRONG_ETAG)).await? {
            Ok(()) => check(
                "conditional_delete",
                "conditional DELETE (If-Match, wrong tag)",
                "ignored (deleted)",
                vec![204],
                CheckLevel::Unsafe,
                "s3state releases its lock and deletes workspaces with If-Match; the store deleted an object whose tag did not match",
            ),
            Err(refusal) if refusal.status == 412 => {
                let right = self.delete(&key, Some(current)).await?;
                match right {
                    Ok(()) => check(
                        "conditional_delete",
                        "conditional DELETE (If-Match, wrong tag)",
                        "enforced (412 on a wrong tag, 204 on the right one)",
                        vec![412, 204],
                        CheckLevel::Pass,
                        "a lock or workspace replaced meanwhile is never deleted",
                    ),
                    Err(right) => check(
                        "conditional_delete",
                        "conditional DELETE (If-Match, wrong tag)",
                        format!("refuses even the right tag ({})", right.describe()),
                        vec![412, right.status],
                        CheckLevel::UnderLock,
                        "s3state falls back to reading the object then deleting it unconditionally, which is exact only while nobody else writes",
                    ),
                }
            }
            Err(refusal) => check(
                "conditional_delete",
                "conditional DELETE (If-Match, wrong tag)",
                if is_refused(&refusal) {
                    format!("refused ({})", refusal.describe())
                } else {
                    format!("unexpected answer ({})", refusal.describe())
                },
                vec![refusal.status],
                CheckLevel::UnderLock,
                "s3state falls back to reading the object then deleting it unconditionally, which is exact only while nobody else writes",
            ),
        };
        self.findings.conditional_delete = Some(match found.statuses.as_slice() {
            [204] => Enforcement::Ignored,
            [412, 204] => Enforcement::Enforced,
            [first, ..] => Enforcement::Refused { status: *first },
            [] => Enforcement::Refused { status: 0 },
        });
        self.checks.push(found);
        Ok(())
    }

    /// Checksums on PUT: whether the store takes `x-amz-checksum-sha256` (else, under
    /// `ChecksumMode::Auto`, the probe goes on the compatible way, as s3state would), and
    /// whether it refuses a wrong digest.
    async fn check_checksums(&mut self) -> Result<()> {
        let key = format!("{}checksum", self.prefix);
        let body = b"s3state probe: checksum\n";
        let mode = self.backend.config.checksums.mode;
        let mut statuses = Vec::new();
        let mut header = String::new();
        let mut level = CheckLevel::Pass;
        let mut explanation = "a body corrupted on the way is refused, never stored".to_owned();
        if self.compatible {
            header.push_str("not sent (checksums = compatible); ");
        } else {
            match self.put(&key, body, Condition::None, None).await? {
                Ok(_) => {
                    statuses.push(200);
                    self.findings.checksum_header_accepted = Some(true);
                }
                Err(refusal) => {
                    statuses.push(refusal.status);
                    self.findings.checksum_header_accepted = Some(false);
                    let named = names_checksum(&refusal, false);
                    if named && mode == super::ChecksumMode::Auto {
                        self.compatible = true;
                        header = format!(
                            "x-amz-checksum-sha256 refused ({}), so s3state writes with Content-MD5 and a signed payload here; ",
                            refusal.describe()
                        );
                        level = CheckLevel::Info;
                        explanation = "checksums = auto: s3state learns this on its first refused write, sends it again the compatible way (nothing was applied) and keeps to that way; set S3STATE_CHECKSUMS=compatible to skip the first try".into();
                    } else {
                        let why = if named {
                            "every s3state write carries x-amz-checksum-sha256 with checksums = always; every one would fail: use checksums = auto or compatible (Terraform's skip_s3_checksum)"
                        } else {
                            "every s3state write carries x-amz-checksum-sha256; every one would fail"
                        };
                        self.checks.push(check(
                            "checksum_sha256",
                            "checksums on PUT",
                            format!("x-amz-checksum-sha256 refused ({})", refusal.describe()),
                            statuses,
                            CheckLevel::Unsafe,
                            why,
                        ));
                        // The checks that follow write the compatible way, to measure the rest.
                        self.compatible = true;
                        return Ok(());
                    }
                }
            }
        }
        let what = if self.compatible {
            "Content-MD5"
        } else {
            "SHA-256 checksum"
        };
        let wrong = if self.compatible {
            md5_base64(b"not the body")
        } else {
            sha256_base64(b"not the body")
        };
        if self.compatible {
            // The right digest first: the object must be writable the compatible way at all.
            match self.put(&key, body, Condition::None, None).await? {
                Ok(_) => statuses.push(200),
                Err(refusal) => {
                    statuses.push(refusal.status);
                    self.checks.push(check(
                        "checksum_sha256",
                        "checksums on PUT",
                        format!(
                            "{header}and a Content-MD5 write refused too ({})",
                            refusal.describe()
                        ),
                        statuses,
                        CheckLevel::Unsafe,
                        "every s3state write would fail",
                    ));
                    return Ok(());
                }
            }
        }
        let (result, verdict_level) = match self
            .put(&key, body, Condition::None, Some(wrong))
            .await?
        {
            Ok(_) => {
                statuses.push(200);
                self.findings.wrong_digest_refused = Some(false);
                explanation = "s3state relies on the store verifying the digest it sends; a body corrupted on the way would be stored as the state".into();
                (
                    format!("{header}a wrong {what} is not verified (accepted)"),
                    CheckLevel::Unsafe,
                )
            }
            Err(refusal) if matches!(refusal.status, 400 | 422) => {
                statuses.push(refusal.status);
                self.findings.wrong_digest_refused = Some(true);
                (
                    format!("{header}a wrong {what} is refused ({})", refusal.describe()),
                    level,
                )
            }
            Err(refusal) => {
                statuses.push(refusal.status);
                explanation = "a wrong digest must be refused with 400".into();
                (
                    format!(
                        "{header}unexpected answer to a wrong {what} ({})",
                        refusal.describe()
                    ),
                    CheckLevel::Unsafe,
                )
            }
        };
        self.findings.writes_compatible = self.compatible;
        self.checks.push(check(
            "checksum_sha256",
            "checksums on PUT",
            result,
            statuses,
            verdict_level,
            explanation,
        ));
        Ok(())
    }

    /// A PUT as the AWS SDKs send a streamed body by default: `aws-chunked`, with an
    /// `x-amz-checksum-crc32` trailer. s3state never sends one; Terraform does.
    async fn check_checksum_trailer(&mut self) -> Result<()> {
        use aws_sdk_s3::config::RequestChecksumCalculation;
        let key = format!("{}trailer", self.prefix);
        let body = b"s3state probe: a body sent aws-chunked with a trailing checksum\n";
        let scratch = std::env::temp_dir().join(format!("s3state-probe-{}", uuid::Uuid::new_v4()));
        let output = |error: std::io::Error| Error::Store {
            operation: "PutObject",
            location: self.location(&key),
            message: format!(
                "the probe cannot stage its streamed body in {}: {error}",
                scratch.display()
            ),
            source: None,
        };
        std::fs::write(&scratch, body).map_err(output)?;
        // A file is a streamed body to the SDK (an in-memory one gets a header, not a trailer).
        // Opened as it is sent: the file is removed once the request is answered.
        let streamed = ByteStream::from_path(&scratch).await;
        let streamed = streamed.map_err(|error| {
            let _ = std::fs::remove_file(&scratch);
            Error::Store {
                operation: "PutObject",
                location: self.location(&key),
                message: format!("the probe cannot stream its body: {error}"),
                source: None,
            }
        })?;
        self.keys.insert(key.clone());
        let request = self
            .client()
            .put_object()
            .bucket(self.bucket())
            .key(&key)
            .body(streamed)
            .content_length(body.len() as i64)
            .content_type("text/plain");
        let sent = self
            .store
            .apply_sse_to_put(request)
            .customize()
            .config_override(
                no_retries()
                    .request_checksum_calculation(RequestChecksumCalculation::WhenSupported),
            )
            .send()
            .await;
        let _ = std::fs::remove_file(&scratch);
        let found = match answer(sent, "PutObject", &self.location(&key))? {
            Ok(output) => {
                self.remember(&key, output.version_id());
                let stored = self.read_back(&key).await?;
                let exact = stored.as_deref() == Some(&body[..]);
                self.findings.checksum_trailer_accepted = Some(exact);
                if exact {
                    check(
                        "checksum_trailer",
                        "aws-chunked PUT with a CRC32 trailer (the SDKs' default)",
                        "accepted, stored as sent",
                        vec![200],
                        CheckLevel::Pass,
                        "Terraform's own writes (aws-sdk-go-v2's default checksums) work here too",
                    )
                } else {
                    check(
                        "checksum_trailer",
                        "aws-chunked PUT with a CRC32 trailer (the SDKs' default)",
                        "accepted, but stored with the chunk framing in the body",
                        vec![200],
                        CheckLevel::Info,
                        "s3state never sends trailers, but Terraform does: its states written here would be stored corrupted (s3state then refuses to read them); give Terraform AWS_REQUEST_CHECKSUM_CALCULATION=when_required",
                    )
                }
            }
            Err(refusal) => {
                self.findings.checksum_trailer_accepted = Some(false);
                check(
                    "checksum_trailer",
                    "aws-chunked PUT with a CRC32 trailer (the SDKs' default)",
                    format!("refused ({})", refusal.describe()),
                    vec![refusal.status],
                    CheckLevel::Info,
                    "s3state never sends trailers; Terraform does, and needs AWS_REQUEST_CHECKSUM_CALCULATION=when_required (or skip_s3_checksum) here",
                )
            }
        };
        self.checks.push(found);
        Ok(())
    }

    /// The object's body, read without asking for its checksum; `None` when it is not there.
    async fn read_back(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let request = self.client().get_object().bucket(self.bucket()).key(key);
        let sent = super::with_customer_key!(request, &self.backend.config.sse)
            .customize()
            .config_override(
                super::config::compatible_requests()
                    .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()),
            )
            .send()
            .await;
        match answer(sent, "GetObject", &self.location(key))? {
            Ok(output) => {
                let body = output.body.collect().await.map_err(|error| Error::Store {
                    operation: "GetObject",
                    location: self.location(key),
                    message: format!("reading the probe's object failed: {error}"),
                    source: None,
                })?;
                Ok(Some(body.to_vec()))
            }
            Err(_) => Ok(None),
        }
    }

    /// GET with `x-amz-checksum-mode: ENABLED`, which the SDK sends on every read by default.
    async fn check_checksum_mode(&mut self) -> Result<()> {
        let key = format!("{}checksum", self.prefix);
        let mode = self.backend.config.checksums.mode;
        let request = self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(&key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled);
        let sent = super::with_customer_key!(request, &self.backend.config.sse)
            .customize()
            .config_override(no_retries())
            .send()
            .await;
        const TITLE: &str = "GET with x-amz-checksum-mode: ENABLED";
        let found = match answer(sent, "GetObject", &self.location(&key))? {
            Ok(_) => {
                self.findings.checksum_mode_accepted = Some(true);
                check(
                    "checksum_mode_get",
                    TITLE,
                    "answered (200)",
                    vec![200],
                    CheckLevel::Pass,
                    "reads check the stored checksum of what they receive",
                )
            }
            Err(refusal) => {
                self.findings.checksum_mode_accepted = Some(false);
                let named = names_checksum(&refusal, false);
                let (level, explanation) = match mode {
                    super::ChecksumMode::Always => (
                        CheckLevel::Unsafe,
                        "with checksums = always every read sends this header and would fail: use auto or compatible",
                    ),
                    _ if named => {
                        self.reads_compatible = true;
                        (
                            CheckLevel::Info,
                            "s3state reads without the header here (auto learns it on the first refused read; compatible never sends it)",
                        )
                    }
                    _ => (
                        CheckLevel::Unsafe,
                        "every s3state read sends this header; the store's answer does not say it refused the header, so s3state does not drop it",
                    ),
                };
                check(
                    "checksum_mode_get",
                    TITLE,
                    format!("refused ({})", refusal.describe()),
                    vec![refusal.status],
                    level,
                    explanation,
                )
            }
        };
        self.checks.push(found);
        Ok(())
    }

    /// `If-Match` on a key that was never written: AWS answers 404. A store that writes the
    /// object anyway would let a write meant for a state deleted meanwhile recreate it.
    async fn check_if_match_absent(&mut self) -> Result<()> {
        let key = format!("{}never-written-put", self.prefix);
        let found = match self
            .put(
                &key,
                b"s3state probe: if-match on nothing\n",
                Condition::IfMatch(WRONG_ETAG),
                None,
            )
            .await?
        {
            Ok(_) => {
                self.findings.if_match_on_absent = Some(200);
                check(
                    "if_match_absent",
                    "If-Match on PUT, key absent",
                    "ignored (200, created the object)",
                    vec![200],
                    CheckLevel::Unsafe,
                    "a write conditional on a state that was deleted meanwhile (a workspace deleted, a lock released) recreates it instead of failing",
                )
            }
            Err(refusal) if matches!(refusal.status, 404 | 412) => {
                self.findings.if_match_on_absent = Some(refusal.status);
                check(
                    "if_match_absent",
                    "If-Match on PUT, key absent",
                    format!("refused ({})", refusal.describe()),
                    vec![refusal.status],
                    CheckLevel::Pass,
                    "a write on a state deleted meanwhile fails as a conflict, as on AWS",
                )
            }
            Err(refusal) => {
                self.findings.if_match_on_absent = Some(refusal.status);
                check(
                    "if_match_absent",
                    "If-Match on PUT, key absent",
                    format!("unexpected answer ({})", refusal.describe()),
                    vec![refusal.status],
                    CheckLevel::Unsafe,
                    "a write on a state deleted meanwhile must get 404 or 412",
                )
            }
        };
        self.checks.push(found);
        Ok(())
    }

    /// If-Match compare-and-swap on a versioned bucket: a write on the tag of the version
    /// just replaced must be refused, and the versions must hold exactly the writes that won.
    async fn check_cas_versioned(&mut self) -> Result<()> {
        const TITLE: &str = "If-Match compare-and-swap on a versioned bucket";
        if !self.keeps_versions() {
            self.checks.push(check(
                "cas_versioned",
                TITLE,
                "not run (the bucket keeps no versions)",
                Vec::new(),
                CheckLevel::Info,
                "the bucket keeps no versions to compare",
            ));
            return Ok(());
        }
        let key = format!("{}cas", self.prefix);
        let mut statuses = Vec::new();
        let first = self
            .put(&key, b"s3state probe: cas 1\n", Condition::None, None)
            .await?;
        let (result, level) = match first {
            Err(refusal) => {
                statuses.push(refusal.status);
                (
                    format!("the first write was refused ({})", refusal.describe()),
                    CheckLevel::Unsafe,
                )
            }
            Ok(first) => {
                statuses.push(200);
                let second = self
                    .put(
                        &key,
                        b"s3state probe: cas 2\n",
                        Condition::IfMatch(&first.etag),
                        None,
                    )
                    .await?;
                match second {
                    Err(refusal) => {
                        statuses.push(refusal.status);
                        (
                            format!(
                                "a write on the current tag was refused ({})",
                                refusal.describe()
                            ),
                            CheckLevel::Unsafe,
                        )
                    }
                    Ok(second) => {
                        statuses.push(200);
                        let stale = self
                            .put(
                                &key,
                                b"s3state probe: cas 3, on an older version\n",
                                Condition::IfMatch(&first.etag),
                                None,
                            )
                            .await?;
                        let listed: Vec<String> = match self.list_versions().await? {
                            Ok(listed) => listed
                                .into_iter()
                                .filter(|(k, _)| *k == key)
                                .map(|(_, id)| id)
                                .collect(),
                            Err(_) => Vec::new(),
                        };
                        let written: Vec<&String> = self
                            .versions
                            .iter()
                            .filter(|(k, _)| *k == key)
                            .map(|(_, id)| id)
                            .collect();
                        match stale {
                            Ok(_) => {
                                statuses.push(200);
                                (
                                    "a write on the previous version's tag went through".into(),
                                    CheckLevel::Unsafe,
                                )
                            }
                            Err(refusal) if matches!(refusal.status, 409 | 412) => {
                                statuses.push(refusal.status);
                                let exact = listed.len() == 2
                                    && written.len() == 2
                                    && written.iter().all(|id| listed.contains(id));
                                if exact && second.etag != first.etag {
                                    (
                                        format!(
                                            "enforced ({} on the previous version's tag; the versions hold the two winning writes)",
                                            refusal.status
                                        ),
                                        CheckLevel::Pass,
                                    )
                                } else {
                                    (
                                        format!(
                                            "refused the stale write, but the versions do not match the winning writes (listed {}, written {})",
                                            listed.len(),
                                            written.len()
                                        ),
                                        CheckLevel::Unsafe,
                                    )
                                }
                            }
                            Err(refusal) => {
                                statuses.push(refusal.status);
                                (
                                    format!(
                                        "unexpected answer to a stale tag ({})",
                                        refusal.describe()
                                    ),
                                    CheckLevel::Unsafe,
                                )
                            }
                        }
                    }
                }
            }
        };
        self.findings.cas_versioned = Some(level == CheckLevel::Pass);
        self.checks.push(check(
            "cas_versioned",
            TITLE,
            result,
            statuses,
            level,
            if level == CheckLevel::Pass {
                "a write made on a snapshot that was replaced meanwhile is refused, and history holds only what was written"
            } else {
                "compare-and-swap on a versioned bucket is what every s3state write relies on"
            },
        ));
        Ok(())
    }

    /// A conditional DELETE of a key that was never written: AWS answers 404 (or 204),
    /// SeaweedFS 412, LocalStack 501.
    async fn check_conditional_delete_absent(&mut self) -> Result<()> {
        const TITLE: &str = "conditional DELETE (If-Match), key absent";
        let key = format!("{}never-written-delete", self.prefix);
        self.keys.insert(key.clone());
        let found = match self.delete(&key, Some(WRONG_ETAG)).await? {
            Ok(()) => {
                self.findings.conditional_delete_on_absent = Some(204);
                check(
                    "conditional_delete_absent",
                    TITLE,
                    "204 (nothing to delete)",
                    vec![204],
                    CheckLevel::Pass,
                    "releasing a lock that is already gone succeeds",
                )
            }
            Err(refusal) => {
                self.findings.conditional_delete_on_absent = Some(refusal.status);
                match refusal.status {
                    404 => check(
                        "conditional_delete_absent",
                        TITLE,
                        format!("{} (as AWS)", refusal.describe()),
                        vec![404],
                        CheckLevel::Pass,
                        "s3state reads it as absent",
                    ),
                    412 => check(
                        "conditional_delete_absent",
                        TITLE,
                        "412, the same answer as a wrong tag",
                        vec![412],
                        CheckLevel::Info,
                        "the status does not tell an absent object from a changed one; s3state looks at the object before calling it changed",
                    ),
                    400 | 501 => check(
                        "conditional_delete_absent",
                        TITLE,
                        format!("refused ({})", refusal.describe()),
                        vec![refusal.status],
                        CheckLevel::Info,
                        "conditional DELETE is not supported at all (see the check above)",
                    ),
                    _ => check(
                        "conditional_delete_absent",
                        TITLE,
                        format!("unexpected answer ({})", refusal.describe()),
                        vec![refusal.status],
                        CheckLevel::Unsafe,
                        "releasing a lock that is already gone must not fail in an unknown way",
                    ),
                }
            }
        };
        self.checks.push(found);
        Ok(())
    }

    /// A paged ListObjectVersions as s3state's history lists an object (prefix = the key,
    /// key and version-id markers), one entry a page, over versions and delete markers of the
    /// key and siblings sharing its prefix (`.backup`, `.tflock`).
    async fn check_paged_listing(&mut self) -> Result<()> {
        const TITLE: &str = "paged ListObjectVersions (1 a page, siblings sharing the prefix)";
        if !self.keeps_versions() {
            self.checks.push(check(
                "paged_listing",
                TITLE,
                "not run (the bucket keeps no versions)",
                Vec::new(),
                CheckLevel::Info,
                "the bucket keeps no versions to list",
            ));
            return Ok(());
        }
        let base = format!("{}paged/x.tfstate", self.prefix);
        let backup = format!("{base}.backup");
        let lock = format!("{base}.tflock");
        let put = |n: usize| format!("s3state probe: paged {n}\n").into_bytes();
        let mut refused = None;
        for (key, action) in [
            (&base, 'p'),
            (&backup, 'p'),
            (&base, 'p'),
            (&lock, 'p'),
            (&base, 'd'),
            (&lock, 'd'),
            (&base, 'p'),
        ] {
            let outcome = if action == 'p' {
                self.put(key, &put(self.versions.len()), Condition::None, None)
                    .await?
                    .map(|_| ())
            } else {
                self.delete(key, None).await?
            };
            if let Err(refusal) = outcome {
                refused.get_or_insert(refusal);
            }
        }
        if let Some(refusal) = refused {
            self.checks.push(check(
                "paged_listing",
                TITLE,
                format!("could not set up ({})", refusal.describe()),
                vec![refusal.status],
                CheckLevel::Info,
                "the probe could not write the versions to list",
            ));
            return Ok(());
        }
        let expected: BTreeSet<String> = self
            .versions
            .iter()
            .filter(|(key, _)| *key == base)
            .map(|(_, id)| id.clone())
            .collect();
        let mut seen: Vec<String> = Vec::new();
        let mut first_key = None;
        let mut broken = None;
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        let mut pages = 0;
        loop {
            pages += 1;
            let sent = self
                .client()
                .list_object_versions()
                .bucket(self.bucket())
                .prefix(&base)
                .max_keys(1)
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(version_marker.clone())
                .send()
                .await;
            let page = match answer(sent, "ListObjectVersions", &self.location(&base))? {
                Ok(page) => page,
                Err(refusal) => {
                    broken = Some(format!("page {pages} refused ({})", refusal.describe()));
                    break;
                }
            };
            let entries = versions_under(&base, &page);
            if first_key.is_none() {
                first_key = entries.first().map(|(key, _)| key.clone());
            }
            seen.extend(
                entries
                    .into_iter()
                    .filter(|(key, _)| *key == base)
                    .map(|(_, id)| id),
            );
            if page.is_truncated() != Some(true) {
                break;
            }
            if pages >= 40 {
                broken = Some("more than 40 pages for 9 entries".into());
                break;
            }
            match next_markers(&(key_marker.clone(), version_marker.clone()), &page) {
                Some((key, version)) => (key_marker, version_marker) = (key, version),
                None => {
                    broken = Some(format!("page {pages} is truncated without a new marker"));
                    break;
                }
            }
        }
        let distinct: BTreeSet<String> = seen.iter().cloned().collect();
        let missing = expected.difference(&distinct).count();
        let repeated = seen.len() - distinct.len();
        let foreign = distinct.difference(&expected).count();
        let exact = broken.is_none() && missing == 0 && repeated == 0 && foreign == 0;
        self.findings.paged_listing_exact = Some(exact);
        let found = if exact {
            check(
                "paged_listing",
                TITLE,
                format!(
                    "every one of the key's {} versions and delete markers, once each",
                    expected.len()
                ),
                vec![200],
                CheckLevel::Pass,
                "history, restore, prune and the lookup of a lost write see every version of a state, however many pages it takes",
            )
        } else {
            let mut what = Vec::new();
            if let Some(broken) = broken {
                what.push(broken);
            }
            if missing > 0 {
                what.push(format!(
                    "missed {missing} of the key's {} entries",
                    expected.len()
                ));
            }
            if repeated > 0 {
                what.push(format!("listed {repeated} twice"));
            }
            if foreign > 0 {
                what.push(format!("listed {foreign} unknown versions"));
            }
            if let Some(first) = first_key.filter(|first| *first != base) {
                let shown = first
                    .strip_prefix(&format!("{}paged/", self.prefix))
                    .unwrap_or(&first)
                    .to_owned();
                what.push(format!("the first page began at {shown}"));
            }
            check(
                "paged_listing",
                TITLE,
                what.join("; "),
                vec![200],
                CheckLevel::Limited,
                "a state whose versions and siblings (.tflock, .backup) fill more than one listing page (1000 entries) cannot be listed whole here: its history, restore, prune and the lookup of a lost write cannot rely on the listing, and s3state refuses a listing that contradicts itself rather than show a short history",
            )
        };
        self.checks.push(found);
        Ok(())
    }

    /// The lock object written with the configured encryption, as s3state writes it, and read
    /// back: the store must say it is encrypted as configured. Returns whether the store took
    /// the write at all (without encryption configured, true).
    async fn check_sse_lock(&mut self) -> Result<bool> {
        use super::ServerSideEncryption as Sse;
        let Some(sse) = self.backend.config.sse.clone() else {
            return Ok(true);
        };
        let mut accepted = true;
        const TITLE: &str = "encryption headers on the lock object";
        let key = format!("{}x.tfstate.tflock", self.prefix);
        let found = match self
            .put(
                &key,
                b"{\"ID\":\"probe\"}",
                Condition::IfNoneMatch("*"),
                None,
            )
            .await?
        {
            Err(refusal) => {
                self.findings.sse_on_lock = Some(false);
                accepted = false;
                check(
                    "sse_lock",
                    TITLE,
                    format!("refused ({})", refusal.describe()),
                    vec![refusal.status],
                    CheckLevel::Unsafe,
                    "every lock and every state write carries the configured encryption; every one would fail (the probe stops here)",
                )
            }
            Ok(_) => {
                let request = self.client().head_object().bucket(self.bucket()).key(&key);
                let head = super::with_customer_key!(request, &self.backend.config.sse)
                    .customize()
                    .config_override(no_retries())
                    .send()
                    .await;
                let (said, expected) =
                    match (answer(head, "HeadObject", &self.location(&key))?, &sse) {
                        (Ok(head), Sse::CustomerKey(_)) => (
                            head.sse_customer_algorithm().map(str::to_owned),
                            "SSE-C AES256",
                        ),
                        (Ok(head), Sse::S3Managed) => (
                            head.server_side_encryption().map(|s| s.as_str().to_owned()),
                            "AES256",
                        ),
                        (Ok(head), Sse::Kms { .. }) => (
                            head.server_side_encryption().map(|s| s.as_str().to_owned()),
                            "aws:kms",
                        ),
                        (Err(refusal), _) => {
                            (Some(format!("HEAD refused ({})", refusal.describe())), "—")
                        }
                    };
                let holds = match &sse {
                    Sse::CustomerKey(_) => said.as_deref() == Some("AES256"),
                    Sse::S3Managed => said.as_deref() == Some("AES256"),
                    Sse::Kms { .. } => said.as_deref() == Some("aws:kms"),
                };
                self.findings.sse_on_lock = Some(holds);
                if holds {
                    check(
                        "sse_lock",
                        TITLE,
                        format!("stored encrypted ({expected})"),
                        vec![200, 200],
                        CheckLevel::Pass,
                        "locks and states are stored encrypted as configured",
                    )
                } else {
                    check(
                        "sse_lock",
                        TITLE,
                        format!(
                            "accepted, but reads back as {} (configured: {expected})",
                            said.as_deref().unwrap_or("not encrypted")
                        ),
                        vec![200, 200],
                        CheckLevel::Unsafe,
                        "the store takes the encryption headers and does not say it applied them: states would be stored without the encryption configured for them",
                    )
                }
            }
        };
        self.checks.push(found);
        Ok(accepted)
    }

    /// Every version and delete marker under the probe's prefix, as `(key, version id)`;
    /// a refusal when the store does not list versions.
    async fn list_versions(&self) -> Result<Answer<Vec<(String, String)>>> {
        let mut found = Vec::new();
        let mut asked_from = std::collections::HashSet::new();
        let (mut key_marker, mut version_marker) = (None, None);
        loop {
            let sent = self
                .client()
                .list_object_versions()
                .bucket(self.bucket())
                .prefix(&self.prefix)
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(version_marker.clone())
                .send()
                .await;
            let location = self.location(&self.prefix);
            let page = match answer(sent, "ListObjectVersions", &location)? {
                Ok(page) => page,
                Err(refusal) => return Ok(Err(refusal)),
            };
            found.extend(versions_under(&self.prefix, &page));
            if page.is_truncated() != Some(true) {
                return Ok(Ok(found));
            }
            let previous = (key_marker, version_marker);
            asked_from.insert(previous.clone());
            // Any marker asked from before, not only the last, would go round for ever.
            (key_marker, version_marker) = next_markers(&previous, &page)
                .filter(|next| !asked_from.contains(next))
                .ok_or_else(|| Error::Store {
                    operation: "ListObjectVersions",
                    location,
                    message: "the store says the listing goes on but gives no new place to go on \
                              from (NextKeyMarker missing or repeated)"
                        .into(),
                    source: None,
                })?;
        }
    }

    async fn check_listing(&mut self) -> Result<()> {
        let found = match self.list_versions().await? {
            Err(refusal) => check(
                "list_object_versions",
                "ListObjectVersions",
                format!("refused ({})", refusal.describe()),
                vec![refusal.status],
                CheckLevel::UnderLock,
                "after a lost answer s3state cannot search the history for its write; the current object answers exactly only while nobody else writes",
            ),
            Ok(listed) => {
                let listed: BTreeSet<_> = listed.into_iter().collect();
                let written: Vec<_> = self
                    .versions
                    .iter()
                    .filter(|(_, id)| id != "null")
                    .collect();
                let missing = written.iter().filter(|v| !listed.contains(*v)).count();
                if written.is_empty() {
                    // Said once: when the versioning check already named it, this adds nothing.
                    let known = self
                        .checks
                        .iter()
                        .any(|c| c.id == "versioning" && c.level == CheckLevel::UnderLock);
                    check(
                        "list_object_versions",
                        "ListObjectVersions",
                        "nothing to list (the writes got no version ids)",
                        vec![200],
                        if known {
                            CheckLevel::Info
                        } else {
                            CheckLevel::UnderLock
                        },
                        "the bucket keeps no versions: no history, and a lost answer is checked against the current object only",
                    )
                } else if missing == 0 {
                    check(
                        "list_object_versions",
                        "ListObjectVersions",
                        format!("lists all {} versions the probe made", written.len()),
                        vec![200],
                        CheckLevel::Pass,
                        "after a lost answer s3state finds exactly whether its write landed",
                    )
                } else {
                    check(
                        "list_object_versions",
                        "ListObjectVersions",
                        format!(
                            "misses {missing} of the {} versions the probe made",
                            written.len()
                        ),
                        vec![200],
                        CheckLevel::UnderLock,
                        "after a lost answer s3state could miss its own write in the history; the current object answers exactly only while nobody else writes",
                    )
                }
            }
        };
        self.checks.push(found);
        Ok(())
    }

    async fn check_dynamodb(&mut self) {
        #[cfg(feature = "dynamodb")]
        if let Some(table) = self.store.dynamodb_table().map(str::to_owned) {
            // A consistent read of a digest item no state has: it needs the table to exist, to
            // be reachable with these credentials, and to be keyed by a string LockID alone
            // (anything else is a ValidationException), as Terraform's table is.
            let found = match self.store.stored_digest().await {
                Ok(_) => check(
                    "dynamodb",
                    "DynamoDB lock table",
                    format!("{table}: reachable, keyed by a string LockID"),
                    Vec::new(),
                    CheckLevel::Pass,
                    "s3state and Terraform take the same lock item and keep the same digest",
                ),
                Err(error) => check(
                    "dynamodb",
                    "DynamoDB lock table",
                    format!("{table}: unusable ({error})"),
                    Vec::new(),
                    CheckLevel::Unsafe,
                    "every locked operation would fail; the table must exist with a string hash key LockID",
                ),
            };
            self.checks.push(found);
        }
    }

    /// Deletes every version and delete marker the probe made, by version id, then lists the
    /// prefix again to report what is left.
    async fn cleanup(&mut self) -> Result<ProbeCleanup> {
        let mut targets: BTreeSet<(String, Option<String>)> = self
            .versions
            .iter()
            .map(|(key, id)| (key.clone(), Some(id.clone())))
            .collect();
        // A request without an answer does not stop the cleanup: the rest is still deleted,
        // and the first such error is returned afterwards. That includes this first listing:
        // the versions the probe was told of, and every key it wrote, are deleted anyway.
        let mut unanswered = None;
        match self.list_versions().await {
            Ok(Ok(listed)) => {
                targets.extend(
                    listed
                        .iter()
                        .map(|(key, id)| (key.clone(), Some(id.clone()))),
                );
            }
            // Without version listings, each key is deleted as it is.
            Ok(Err(_)) => targets.extend(self.keys.iter().map(|key| (key.clone(), None))),
            Err(error) => {
                unanswered.get_or_insert(error);
                targets.extend(self.keys.iter().map(|key| (key.clone(), None)));
            }
        }
        if targets.iter().all(|(_, id)| id.is_none()) {
            // Nothing had a version id: the bucket keeps none; delete each key once.
            targets.extend(self.keys.iter().map(|key| (key.clone(), None)));
        }
        let mut removed = 0;
        let mut targets: Vec<_> = targets.into_iter().collect();
        while let Some((key, version_id)) = targets.pop() {
            let sent = self
                .client()
                .delete_object()
                .bucket(self.bucket())
                .key(&key)
                .set_version_id(version_id.clone())
                .send()
                .await;
            let answered = match answer(sent, "DeleteObject", &self.location(&key)) {
                Ok(answered) => answered,
                Err(error) => {
                    unanswered.get_or_insert(error);
                    continue;
                }
            };
            match answered {
                Ok(output) => {
                    // Deleting a key without a version id in a versioned bucket (versions
                    // could not be listed) only adds a delete marker: remove it too.
                    if version_id.is_none()
                        && output.delete_marker() == Some(true)
                        && let Some(marker) = output.version_id()
                    {
                        targets.push((key.clone(), Some(marker.to_owned())));
                    } else {
                        removed += 1;
                    }
                }
                Err(refusal) => {
                    tracing::warn!(
                        key,
                        version_id,
                        status = refusal.status,
                        "the probe could not delete what it wrote"
                    )
                }
            }
        }
        let mut left_behind = Vec::new();
        match self.list_versions().await? {
            Ok(listed) => {
                left_behind.extend(listed.into_iter().map(|(key, id)| format!("{key}@{id}")));
            }
            Err(_) => {
                let listed = self
                    .client()
                    .list_objects_v2()
                    .bucket(self.bucket())
                    .prefix(&self.prefix)
                    .send()
                    .await
                    .map_err(|err| sdk_error("ListObjectsV2", &self.location(&self.prefix), err))?;
                left_behind.extend(
                    listed
                        .contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_owned)),
                );
            }
        }
        if let Some(error) = unanswered {
            tracing::warn!(
                left_behind = left_behind.join(", "),
                "the probe's cleanup lost an answer; delete what is left by hand"
            );
            return Err(error);
        }
        Ok(ProbeCleanup {
            removed,
            left_behind,
        })
    }
}

/// The versions and delete markers of a listing page whose keys lie under `prefix`.
///
/// The cleanup deletes what this returns, by version id: a store that ignores the `prefix`
/// parameter (and lists the whole bucket) must not make the probe delete anyone else's objects,
/// states and their history among them.
fn versions_under(prefix: &str, page: &ListObjectVersionsOutput) -> Vec<(String, String)> {
    let versions = page.versions().iter().map(|v| (v.key(), v.version_id()));
    let markers = page
        .delete_markers()
        .iter()
        .map(|m| (m.key(), m.version_id()));
    versions
        .chain(markers)
        .filter_map(|(key, id)| match (key, id) {
            (Some(key), Some(id)) if key.starts_with(prefix) => {
                Some((key.to_owned(), id.to_owned()))
            }
            _ => None,
        })
        .collect()
}

/// Where the next page of a truncated listing starts, or `None` when the store gives no
/// marker or the one it gave last time: asking again from there would list the same page
/// forever.
fn next_markers(
    previous: &(Option<String>, Option<String>),
    page: &ListObjectVersionsOutput,
) -> Option<(Option<String>, Option<String>)> {
    let next = (
        Some(page.next_key_marker()?.to_owned()),
        page.next_version_id_marker().map(str::to_owned),
    );
    (next != *previous).then_some(next)
}

/// Whether the tag is the quoted hex MD5 of `body` (plain S3) or something opaque (SSE-KMS,
/// some S3-compatible stores). s3state never compares tags with content, so both are fine.
fn etag_shape(etag: &str, body: &[u8]) -> ProbeCheck {
    let md5: String = md5::Md5::digest(body)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let result = if etag.trim_matches('"') == md5 {
        "quoted hex MD5 of the body".to_owned()
    } else if etag.is_empty() {
        "none returned".to_owned()
    } else {
        format!("opaque ({etag})")
    };
    let level = if etag.is_empty() {
        CheckLevel::Unsafe
    } else {
        CheckLevel::Info
    };
    check(
        "etag_shape",
        "ETag shape",
        result,
        Vec::new(),
        level,
        if etag.is_empty() {
            "s3state's conditional writes need the tag of what it wrote"
        } else {
            "s3state uses tags only as opaque conditions, never as content hashes"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_level(level: CheckLevel) -> ProbeCheck {
        check("x", "a check", "a result", vec![], level, "why")
    }

    #[test]
    fn the_verdict_is_the_worst_level_among_the_checks() {
        assert_eq!(
            Verdict::of(&[with_level(CheckLevel::Pass), with_level(CheckLevel::Info)]),
            Verdict::Safe
        );
        assert_eq!(
            Verdict::of(&[
                with_level(CheckLevel::Pass),
                with_level(CheckLevel::UnderLock)
            ]),
            Verdict::SafeOnlyUnderLock {
                missing: vec!["a check: a result".into()]
            }
        );
        assert!(matches!(
            Verdict::of(&[with_level(CheckLevel::UnderLock), with_level(CheckLevel::Unsafe)]),
            Verdict::Unsafe { reasons } if reasons.len() == 1
        ));
    }

    const PREFIX: &str = ".s3state-probe/0b6c/";

    /// A listing page as a store that ignores `prefix` would send it: the whole bucket.
    fn whole_bucket_page() -> ListObjectVersionsOutput {
        use aws_sdk_s3::types::{DeleteMarkerEntry, ObjectVersion};
        let version =
            |key: &str, id: &str| ObjectVersion::builder().key(key).version_id(id).build();
        let marker =
            |key: &str, id: &str| DeleteMarkerEntry::builder().key(key).version_id(id).build();
        ListObjectVersionsOutput::builder()
            .versions(version("terraform.tfstate", "state-v1"))
            .versions(version("env:/dev/terraform.tfstate", "dev-v1"))
            .versions(version(".s3state-probe/0b6c", "no-slash"))
            .versions(version(".s3state-probe/0b6c-other/conditions", "other-run"))
            .versions(version(".s3state-probe/other/conditions", "other-run-2"))
            .versions(version(&format!("{PREFIX}conditions"), "ours-1"))
            .delete_markers(marker("terraform.tfstate.tflock", "lock-marker"))
            .delete_markers(marker(&format!("{PREFIX}conditions"), "ours-marker"))
            .build()
    }

    #[test]
    fn a_listing_of_the_whole_bucket_yields_only_the_probes_own_versions() {
        assert_eq!(
            versions_under(PREFIX, &whole_bucket_page()),
            [
                (format!("{PREFIX}conditions"), "ours-1".to_owned()),
                (format!("{PREFIX}conditions"), "ours-marker".to_owned()),
            ]
        );
    }

    #[test]
    fn a_truncated_listing_without_a_new_marker_stops_instead_of_repeating_a_page() {
        let page = |key: Option<&str>, version: Option<&str>| {
            ListObjectVersionsOutput::builder()
                .is_truncated(true)
                .set_next_key_marker(key.map(str::to_owned))
                .set_next_version_id_marker(version.map(str::to_owned))
                .build()
        };
        let start = (None, None);
        assert_eq!(next_markers(&start, &page(None, None)), None);
        assert_eq!(next_markers(&start, &page(None, Some("v"))), None);
        let next = next_markers(&start, &page(Some("k"), Some("v"))).unwrap();
        assert_eq!(next, (Some("k".to_owned()), Some("v".to_owned())));
        assert_eq!(next_markers(&next, &page(Some("k"), Some("v"))), None);
        assert!(next_markers(&next, &page(Some("k"), Some("w"))).is_some());
        assert!(next_markers(&start, &page(Some("k"), None)).is_some());
    }

    #[test]
    fn an_md5_tag_and_an_opaque_tag_are_told_apart() {
        let body = b"abc";
        assert_eq!(
            etag_shape("\"900150983cd24fb0d6963f7d28e17f72\"", body).result,
            "quoted hex MD5 of the body"
        );
        let opaque = etag_shape("\"kms-123\"", body);
        assert!(opaque.result.starts_with("opaque"), "{}", opaque.result);
        assert_eq!(opaque.level, CheckLevel::Info);
        assert_eq!(etag_shape("", body).level, CheckLevel::Unsafe);
    }
}
