//! Mapping S3 responses to [`crate::Error`]: the one place that reads S3 status and error
//! codes. The rest of `s3` asks what an answer means (`is_missing`, `is_precondition_failed`,
//! …), never which number it carried.

use crate::error::Error;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// The HTTP status of a service response, if the request got that far.
fn status_of<E, R>(err: &SdkError<E, R>) -> Option<u16>
where
    R: HasStatus,
{
    err.raw_response().map(HasStatus::status)
}

trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

/// `304 Not Modified`: a conditional GET found the tag it was given.
pub(super) fn is_not_modified<E>(err: &SdkError<E, HttpResponse>) -> bool {
    status_of(err) == Some(304)
}

/// `404`, whatever the error code: what the request named is not there (HEAD answers carry no
/// code; a conditional PUT or DELETE gets it when the object it was conditional on is gone).
pub(super) fn is_missing<E>(err: &SdkError<E, HttpResponse>) -> bool {
    status_of(err) == Some(404)
}

/// `412 Precondition Failed`: the object's tag is not the one the request was conditional on
/// (or, for `If-None-Match: *`, the object exists).
pub(super) fn is_precondition_failed<E>(err: &SdkError<E, HttpResponse>) -> bool {
    status_of(err) == Some(412)
}

/// `409 ConditionalRequestConflict`: overlapping conditional writes to one key; the write was
/// not applied and may be retried.
pub(super) fn is_conditional_conflict<E>(err: &SdkError<E, HttpResponse>) -> bool {
    status_of(err) == Some(409)
}

/// `501 Not Implemented`: the endpoint does not support this form of the request (LocalStack's
/// answer to a conditional DeleteObject).
pub(super) fn is_not_implemented<E>(err: &SdkError<E, HttpResponse>) -> bool {
    status_of(err) == Some(501)
}

/// Whether the store refused a request because of its checksum headers (the SDK's flexible
/// checksums, `x-amz-checksum-mode`, aws-chunked trailers) rather than because of its body:
/// a `400` or `501` whose code is `XAmzContentSHA256Mismatch`, or whose code or message names a
/// checksum, `x-amz-content-sha256`, `aws-chunked` or a trailer. `bodiless` is for a HEAD,
/// whose error has no code to read: there any `400` counts (the request is then tried once
/// more without the header, which settles it).
///
/// `BadDigest` and `InvalidDigest` never count: the store checked the digest and it was wrong,
/// which is corruption on the way, not a store that cannot read the header.
pub(super) fn is_checksum_refused<E: ProvideErrorMetadata>(
    err: &SdkError<E, HttpResponse>,
    bodiless: bool,
) -> bool {
    let status = status_of(err);
    if !matches!(status, Some(400 | 501)) {
        return false;
    }
    let code = err.code().unwrap_or_default();
    if matches!(code, "BadDigest" | "InvalidDigest") {
        return false;
    }
    if code == "XAmzContentSHA256Mismatch" {
        return true;
    }
    if code.is_empty() && bodiless && status == Some(400) {
        return true;
    }
    let text = format!("{code} {}", err.message().unwrap_or_default()).to_ascii_lowercase();
    ["checksum", "x-amz-content-sha256", "aws-chunked", "trailer"]
        .iter()
        .any(|word| text.contains(word))
}

/// A `200` answer to GetBucketVersioning that the SDK could not read (moto's XML root is
/// `GetBucketVersioningResponse`): the `Status` it names, read from the raw body. `None` when
/// the answer was not a `200` or its body has no readable status; `Some(None)` for a bucket
/// whose versioning was never set (no `Status` element in a readable body).
pub(super) fn versioning_status_of_unreadable_success<E>(
    err: &SdkError<E, HttpResponse>,
) -> Option<Option<aws_sdk_s3::types::BucketVersioningStatus>> {
    let response = err.raw_response()?;
    if response.status().as_u16() != 200 {
        return None;
    }
    let body = std::str::from_utf8(response.body().bytes()?).ok()?;
    if !body.contains("VersioningConfiguration") && !body.contains("GetBucketVersioningResponse") {
        return None;
    }
    let status = body
        .split_once("<Status>")
        .and_then(|(_, rest)| rest.split_once("</Status>"))
        .map(|(status, _)| aws_sdk_s3::types::BucketVersioningStatus::from(status.trim()));
    Some(status)
}

/// `403 Forbidden`: these credentials may not do this.
pub(super) fn is_access_denied<E>(err: &SdkError<E, HttpResponse>) -> bool {
    status_of(err) == Some(403)
}

/// The error of a request for one version of `location`: 405 means the id names a delete
/// marker, 400 or 404 that there is no such version; anything else is [`sdk_error`].
pub(super) fn version_error<E>(
    operation: &'static str,
    location: &str,
    version_id: &str,
    err: SdkError<E, HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let not_found = |is_delete_marker| Error::VersionNotFound {
        location: location.to_owned(),
        version_id: version_id.to_owned(),
        is_delete_marker,
    };
    match status_of(&err) {
        Some(405) => not_found(true),
        Some(400 | 404) => not_found(false),
        _ => sdk_error(operation, location, err),
    }
}

/// True when the object (or a version of it) does not exist, including the case where its
/// latest version is a delete marker.
pub(super) fn is_not_found<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> bool {
    status_of(err) == Some(404) && matches!(err.code(), Some("NoSuchKey") | Some("NotFound") | None)
}

/// An error from the SDK, turned into [`Error::Store`] (or a more specific variant when the
/// code says so), with the code and message in the text. A request the SDK gave up on because
/// a timeout ran out is [`Error::Timeout`], naming the timeout.
pub(super) fn sdk_error<E>(
    operation: &'static str,
    location: &str,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let Some((setting, after)) = crate::timeouts::sdk_timed_out(&err) {
        return Error::Timeout {
            operation,
            location: location.to_owned(),
            setting,
            after,
            source: Some(Box::new(err)),
        };
    }
    if err.code() == Some("NoSuchBucket") {
        return Error::BucketNotFound {
            bucket: bucket_of(location),
        };
    }
    let status = status_of(&err);
    let mut message = match (err.code(), err.message(), status) {
        (Some(code), Some(message), _) => format!("{code}: {message}"),
        (Some(code), None, Some(status)) => format!("{code} (HTTP {status})"),
        (None, _, Some(status)) => format!("HTTP {status}: {}", DisplayErrorContext(&err)),
        _ => format!("no answer from S3: {}", DisplayErrorContext(&err)),
    };
    // These are retried by the SDK; reaching here means its retry budget ran out.
    let transient = matches!(status, Some(500 | 502 | 503 | 504) | None)
        || matches!(
            err.code(),
            Some("SlowDown" | "Throttling" | "RequestTimeout")
        );
    if transient {
        message.push_str(
            "; still failing after the SDK's retries (the budget is S3Builder::with_max_attempts)",
        );
    }
    Error::Store {
        operation,
        location: location.to_owned(),
        message,
        source: Some(Box::new(err)),
    }
}

/// `s3://bucket/key` → `bucket`.
fn bucket_of(location: &str) -> String {
    let rest = location.strip_prefix("s3://").unwrap_or(location);
    rest.split('/').next().unwrap_or(rest).to_owned()
}
