//! A state body handed to the SDK in slices, so that the trailing SHA-256 is computed while
//! the bytes go out instead of in a full pass before the first byte is sent.
//!
//! The SDK sends a streaming body of known length `aws-chunked`, with the checksum in a
//! trailer (`x-amz-trailer`), and hashes each frame as it reads it. An in-memory body is
//! one frame: the SDK would hash all of it at once (and send it as a header instead). Here
//! every frame is one aws-chunked chunk's worth, a zero-copy view into the same `Bytes`.

use aws_sdk_s3::primitives::{ByteStream, SdkBody};
use bytes::Bytes;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The SDK's aws-chunked chunk size (64 KiB): one frame becomes one chunk on the wire.
const SLICE_LEN: usize = 64 * 1024;

/// `body` as a streaming, retryable [`ByteStream`]: each retry starts again from the first
/// byte (cloning `Bytes` shares the buffer; nothing is copied).
pub(super) fn streaming(body: Bytes) -> ByteStream {
    ByteStream::new(SdkBody::retryable(move || {
        SdkBody::from_body_1_x(Slices { rest: body.clone() })
    }))
}

/// What is left to send.
struct Slices {
    rest: Bytes,
}

impl http_body::Body for Slices {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let len = self.rest.len().min(SLICE_LEN);
        Poll::Ready(Some(Ok(http_body::Frame::data(self.rest.split_to(len)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.rest.len() as u64)
    }
}
