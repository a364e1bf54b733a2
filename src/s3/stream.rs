//! Copying a state's bytes out as they arrive, for commands that only pass them on (`pull`).
//!
//! [`crate::Store::get`] collects the whole body, because the state logic parses it. A command
//! that prints the stored bytes does not need that: copying each network chunk as it comes
//! keeps memory flat whatever the state's size, and the output starts before the download ends.

use super::S3Store;
use super::errors::{is_not_found, sdk_error, version_error};
use crate::error::{Error, Result};
#[cfg(feature = "dynamodb")]
use crate::store::{Fetched, Store};
use std::io::Write;

/// What [`S3Store::copy_to`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Copied {
    /// There is no object at the key (or its latest version is a delete marker); nothing was
    /// written.
    Absent,
    /// The whole body was written; its length in bytes.
    Body {
        /// How many bytes were written.
        bytes: u64,
    },
}

impl S3Store {
    /// Writes the object's body, or one version's (`version_id`), to `out` as it arrives.
    ///
    /// Only one network chunk is held at a time, so memory stays flat whatever the state's
    /// size. Nothing is parsed: the bytes are the stored bytes.
    ///
    /// - **Integrity.** The SDK checks the object's stored checksum (s3state stores a SHA-256
    ///   with every write) as the body ends, so a corrupted transfer is an error.
    /// - **Errors after output started.** A body cut off before its first byte is retried; one
    ///   cut off after bytes were written is an error, never silently resumed. On any error
    ///   `out` may hold part of the body: treat it as incomplete.
    /// - **DynamoDB digests.** When a digest is kept for this state (`dynamodb_table`), the
    ///   current version is read whole and compared with the digest first, as
    ///   [`crate::Store::get`] does, and only then written, so a state that fails Terraform's check
    ///   is never printed.
    ///
    /// ```no_run
    /// # async fn demo(store: s3state::S3Store) -> s3state::Result<()> {
    /// let copied = store.copy_to(None, &mut std::io::stdout()).await?;
    /// if copied == s3state::s3::Copied::Absent {
    ///     eprintln!("no state yet");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn copy_to(
        &self,
        version_id: Option<&str>,
        out: &mut (dyn Write + Send),
    ) -> Result<Copied> {
        #[cfg(feature = "dynamodb")]
        if version_id.is_none() && self.digest_table().is_some() {
            return match self.get(None).await? {
                Fetched::Found(object) => {
                    self.write_out(out, &object.body)?;
                    self.flush_out(out)?;
                    Ok(Copied::Body {
                        bytes: object.body.len() as u64,
                    })
                }
                _ => Ok(Copied::Absent),
            };
        }
        let mut attempt = 1;
        loop {
            let request = self
                .client()
                .get_object()
                .bucket(&self.config.bucket)
                .key(&self.key)
                .set_version_id(version_id.map(str::to_owned));
            let request = super::with_customer_key!(request, &self.config.sse);
            let output = match super::send_read!(
                request,
                &self.config,
                "GetObject",
                &self.location,
                false
            ) {
                Ok(output) => output,
                Err(err) => {
                    return match version_id {
                        Some(id) => Err(version_error("GetObject", &self.location, id, err)),
                        None if is_not_found(&err) => Ok(Copied::Absent),
                        None => Err(sdk_error("GetObject", &self.location, err)),
                    };
                }
            };
            let mut body = output.body;
            let mut written: u64 = 0;
            let read = self.body_read_timeout();
            loop {
                match super::next_chunk(&mut body, read).await {
                    Ok(Some(chunk)) => {
                        self.write_out(out, &chunk)?;
                        written += chunk.len() as u64;
                    }
                    Ok(None) => {
                        self.flush_out(out)?;
                        return Ok(Copied::Body { bytes: written });
                    }
                    // Waited for as long as the read timeout allows: not tried again.
                    Err(super::BodyError::Stalled(after)) => {
                        return Err(self.body_stalled("GetObject", after));
                    }
                    // Nothing reached `out` yet: the request can simply be made again.
                    Err(super::BodyError::Stream(err))
                        if written == 0 && attempt < super::BODY_READ_ATTEMPTS =>
                    {
                        tracing::debug!(attempt, location = %self.location, error = %err, "reading the body failed before its first byte; retrying");
                        attempt += 1;
                        break;
                    }
                    Err(super::BodyError::Stream(err)) => {
                        return Err(Error::Store {
                            operation: "GetObject",
                            location: self.location.clone(),
                            message: format!(
                                "reading the body failed after {written} bytes were written out; \
                                 the output is incomplete: {err}"
                            ),
                            source: Some(Box::new(err)),
                        });
                    }
                }
            }
        }
    }

    fn write_out(&self, out: &mut (dyn Write + Send), bytes: &[u8]) -> Result<()> {
        out.write_all(bytes)
            .map_err(|source| self.output_error(source))
    }

    fn flush_out(&self, out: &mut (dyn Write + Send)) -> Result<()> {
        out.flush().map_err(|source| self.output_error(source))
    }

    fn output_error(&self, source: std::io::Error) -> Error {
        Error::Output {
            location: self.location.clone(),
            source,
        }
    }
}
