//! Mapping S3 responses to [`crate::Error`]: the one place that reads S3 error codes.

use crate::error::Error;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// The HTTP status of a service response, if the request got that far.
pub(super) fn status_of<E, R>(err: &SdkError<E, R>) -> Option<u16>
where
    R: HasStatus,
{
    err.raw_response().map(HasStatus::status)
}

pub(super) trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
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
/// code says so), with the code and message in the text.
pub(super) fn sdk_error<E>(
    operation: &'static str,
    location: &str,
    err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
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
