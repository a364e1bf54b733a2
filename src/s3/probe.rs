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

/// How many rounds of two racing conditional writes the probe sends.
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
    /// Safe, safe only under the lock, or unsafe, with the reasons.
    pub verdict: Verdict,
    /// What the cleanup removed and what it could not.
    pub cleanup: ProbeCleanup,
}

/// One check: what was sent, what the store answered, and what that means for s3state.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ProbeCheck {
    /// A stable identifier, for scripts: `if_none_match`, `if_match`, `race`,
    /// `conditional_get`, `conditional_delete`, `versioning`, `list_object_versions`,
    /// `checksum_sha256`, `etag_shape`, `dynamodb`.
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
    /// check needs it, else safe.
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

/// A store's answer that was not a success: its status and error code.
#[derive(Debug, Clone)]
struct Refusal {
    status: u16,
    code: Option<String>,
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
            })),
            Some(status) => Ok(Err(Refusal {
                status,
                code: err.code().map(str::to_owned),
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
            .content_type("text/plain")
            .checksum_sha256(checksum.unwrap_or_else(|| sha256_base64(body)));
        request = match condition {
            Condition::None => request,
            Condition::IfNoneMatch(tag) => request.if_none_match(tag),
            Condition::IfMatch(tag) => request.if_match(tag),
        };
        request = self.store.apply_sse_to_put(request);
        let sent = request
            .customize()
            .config_override(no_retries())
            .disable_payload_signing()
            .send()
            .await;
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
        let current = self.check_conditional_puts().await?;
        let current = self.check_race(current).await?;
        self.check_conditional_get(&current).await?;
        self.check_conditional_delete(&current).await?;
        self.check_checksums().await?;
        self.check_listing().await?;
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
        self.checks.push(found);
        Ok(())
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
            _ if create_refused => check(
                "if_none_match",
                "If-None-Match: * on PUT",
                format!("refused ({})", statuses[0]),
                statuses.clone(),
                CheckLevel::Unsafe,
                "s3state creates its lock (<key>.tflock) and new states with If-None-Match: *; every such write would fail",
            ),
            Ok(put) => {
                current = put;
                check(
                    "if_none_match",
                    "If-None-Match: * on PUT",
                    "ignored (200, overwrote the existing object)",
                    vec![200, 200],
                    CheckLevel::Unsafe,
                    "a lock could be taken while someone holds it, and a new state could replace an existing one",
                )
            }
            Err(refusal) if refusal.status == 412 => check(
                "if_none_match",
                "If-None-Match: * on PUT",
                "enforced (412)",
                vec![200, 412],
                CheckLevel::Pass,
                "locks and new states are created only where nothing exists",
            ),
            Err(refusal) => check(
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
            ),
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

    /// Two PUTs with the same `If-Match` at once, a few rounds: one may win, the other must
    /// lose with 412 or 409. Returns the object's tag afterwards.
    async fn check_race(&mut self, mut current: String) -> Result<String> {
        let key = self.store.key.clone();
        let mut statuses = Vec::new();
        let mut both_won = 0;
        let mut lost = std::collections::BTreeMap::<u16, usize>::new();
        for round in 0..RACE_ROUNDS {
            let (a, b) = (
                format!("s3state probe: race {round}, writer a\n"),
                format!("s3state probe: race {round}, writer b\n"),
            );
            let tag = current.clone();
            let (left, right) = {
                let mut left = self.clone_for_race();
                let mut right = self.clone_for_race();
                let (l, r) = tokio::join!(
                    left.put(&key, a.as_bytes(), Condition::IfMatch(&tag), None),
                    right.put(&key, b.as_bytes(), Condition::IfMatch(&tag), None)
                );
                self.versions.extend(left.versions);
                self.versions.extend(right.versions);
                (l?, r?)
            };
            let mut winners = 0;
            for outcome in [left, right] {
                match outcome {
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
            if winners == 2 {
                both_won += 1;
            }
        }
        if both_won > 0 {
            // When both writes went through, which one is current is the store's call, not
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
        let found = if both_won > 0 {
            check(
                "race",
                "412 vs 409 on a race",
                format!("both writes went through in {both_won} of {RACE_ROUNDS} rounds"),
                statuses,
                CheckLevel::Unsafe,
                "two writers made on the same snapshot both succeeded: one silently replaced the other",
            )
        } else if lost.keys().all(|status| matches!(status, 409 | 412)) {
            check(
                "race",
                "412 vs 409 on a race",
                format!("the loser got {losers}"),
                statuses,
                CheckLevel::Pass,
                "a lost race is refused: 412 is reported as a conflict, 409 is retried by s3state",
            )
        } else {
            check(
                "race",
                "412 vs 409 on a race",
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
        let sent = super::with_customer_key!(request, &self.backend.config.sse)
            .customize()
            .config_override(no_retries())
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
        self.checks.push(found);
        Ok(())
    }

    async fn check_checksums(&mut self) -> Result<()> {
        let key = format!("{}checksum", self.prefix);
        let body = b"s3state probe: checksum\n";
        let right = self.put(&key, body, Condition::None, None).await?;
        let found = match right {
            Err(refusal) => check(
                "checksum_sha256",
                "SHA-256 checksum on PUT",
                format!("refused ({})", refusal.describe()),
                vec![refusal.status],
                CheckLevel::Unsafe,
                "every s3state write carries x-amz-checksum-sha256; every one would fail",
            ),
            Ok(_) => {
                let wrong = sha256_base64(b"not the body");
                match self.put(&key, body, Condition::None, Some(wrong)).await? {
                    Ok(_) => check(
                        "checksum_sha256",
                        "SHA-256 checksum on PUT",
                        "not verified (a wrong checksum was accepted)",
                        vec![200, 200],
                        CheckLevel::Unsafe,
                        "s3state sends the body unsigned and relies on the store verifying its checksum; a body corrupted on the way would be stored as the state",
                    ),
                    Err(refusal) if matches!(refusal.status, 400 | 422) => check(
                        "checksum_sha256",
                        "SHA-256 checksum on PUT",
                        format!("verified ({} on a wrong checksum)", refusal.describe()),
                        vec![200, refusal.status],
                        CheckLevel::Pass,
                        "a body corrupted on the way is refused, never stored",
                    ),
                    Err(refusal) => check(
                        "checksum_sha256",
                        "SHA-256 checksum on PUT",
                        format!(
                            "unexpected answer to a wrong checksum ({})",
                            refusal.describe()
                        ),
                        vec![200, refusal.status],
                        CheckLevel::Unsafe,
                        "a wrong checksum must be refused with 400",
                    ),
                }
            }
        };
        self.checks.push(found);
        Ok(())
    }

    /// Every version and delete marker under the probe's prefix, as `(key, version id)`;
    /// a refusal when the store does not list versions.
    async fn list_versions(&self) -> Result<Answer<Vec<(String, String)>>> {
        let mut found = Vec::new();
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
            (key_marker, version_marker) =
                next_markers(&previous, &page).ok_or_else(|| Error::Store {
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
        let listed = self.list_versions().await?;
        match &listed {
            Ok(listed) => {
                targets.extend(
                    listed
                        .iter()
                        .map(|(key, id)| (key.clone(), Some(id.clone()))),
                );
            }
            // Without version listings, each key is deleted as it is.
            Err(_) => targets.extend(self.keys.iter().map(|key| (key.clone(), None))),
        }
        if targets.iter().all(|(_, id)| id.is_none()) {
            // Nothing had a version id: the bucket keeps none; delete each key once.
            targets.extend(self.keys.iter().map(|key| (key.clone(), None)));
        }
        let mut removed = 0;
        // A request without an answer does not stop the cleanup: the rest is still deleted,
        // and the first such error is returned afterwards.
        let mut unanswered = None;
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
