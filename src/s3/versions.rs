//! An object's versions through S3 bucket versioning.

use super::errors::{sdk_error, version_error};
use super::{S3Store, user_metadata, with_customer_key};
use crate::error::{Error, Result};
use crate::store::{ETag, ObjectMetadata, ObjectVersion, StoredObject, VersionedStore};
use async_trait::async_trait;

/// A `$operation` (`get_object`, `head_object`) request for one version of `$store`'s object,
/// with the SSE-C headers when the store uses a customer key. (The request builders share
/// these methods but no trait, hence a macro.)
macro_rules! version_request {
    ($store:expr, $operation:ident, $version_id:expr) => {{
        let request = $store
            .client()
            .$operation()
            .bucket(&$store.config.bucket)
            .key(&$store.key)
            .version_id($version_id);
        with_customer_key!(request, &$store.config.sse)
    }};
}

/// A listed version of the object, as the store's entry.
fn version_entry(version: &aws_sdk_s3::types::ObjectVersion) -> ObjectVersion {
    ObjectVersion {
        version_id: version.version_id().unwrap_or("null").to_owned(),
        last_modified: to_time(version.last_modified()),
        size: version.size().unwrap_or(0).max(0) as u64,
        etag: version.e_tag().map(ETag::new),
        is_latest: version.is_latest().unwrap_or(false),
        is_delete_marker: false,
    }
}

/// A listed delete marker of the object, as the store's entry (no body, no tag).
fn marker_entry(marker: &aws_sdk_s3::types::DeleteMarkerEntry) -> ObjectVersion {
    ObjectVersion {
        version_id: marker.version_id().unwrap_or("null").to_owned(),
        last_modified: to_time(marker.last_modified()),
        size: 0,
        etag: None,
        is_latest: marker.is_latest().unwrap_or(false),
        is_delete_marker: true,
    }
}

fn to_time(at: Option<&aws_sdk_s3::primitives::DateTime>) -> time::OffsetDateTime {
    at.and_then(|at| time::OffsetDateTime::from_unix_timestamp_nanos(at.as_nanos()).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

impl S3Store {
    /// The error of a request for one version (see [`version_error`]).
    fn version_error<E>(
        &self,
        operation: &'static str,
        version_id: &str,
        err: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        version_error(operation, &self.location, version_id, err)
    }
}

/// Puts S3's two newest-first lists (versions, delete markers) into one newest-first list,
/// keeping each list's own order: within one list S3's order is authoritative even when
/// timestamps tie, which they do at LocalStack's millisecond resolution.
fn merge_newest_first(
    versions: Vec<ObjectVersion>,
    markers: Vec<ObjectVersion>,
) -> Vec<ObjectVersion> {
    let mut merged = Vec::with_capacity(versions.len() + markers.len());
    let (mut v, mut m) = (
        versions.into_iter().peekable(),
        markers.into_iter().peekable(),
    );
    loop {
        let take_marker = match (v.peek(), m.peek()) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(version), Some(marker)) => {
                marker.is_latest
                    || (!version.is_latest && marker.last_modified > version.last_modified)
            }
        };
        merged.extend(if take_marker { m.next() } else { v.next() });
    }
    merged
}

/// The markers a paged listing was asked from, so that it ends in an error rather than
/// going round for ever when a store's `NextKeyMarker` leads nowhere new: missing (the next
/// request would start over), the marker just asked from, or any earlier one (a store that
/// leads the listing back two pages as easily as one).
#[derive(Default)]
struct AskedFrom(std::collections::HashSet<(Option<String>, Option<String>)>);

impl AskedFrom {
    /// `next` (a truncated page's key and version-id markers) to ask from, once it is known to
    /// be new; else what is wrong with it.
    fn next(
        &mut self,
        next: (Option<String>, Option<String>),
    ) -> std::result::Result<(Option<String>, Option<String>), String> {
        if self.0.is_empty() {
            self.0.insert((None, None));
        }
        let Some(key) = next.0.clone() else {
            return Err("a ListObjectVersions page was truncated but gave no NextKeyMarker".into());
        };
        if !self.0.insert(next.clone()) {
            return Err(format!(
                "a truncated ListObjectVersions page gave a marker the listing was already asked \
                 from ({key}), so it would never end"
            ));
        }
        Ok(next)
    }
}

/// Whether a truncated page may leave entries of `own` for later pages although another key
/// was seen: its entries (`keys`, one list of the page, in the store's order) show another
/// key before an entry of `own`, and end with `own`. In S3's key order `own` (the prefix of
/// every key listed) comes first, so the first other key ends its versions; a store that lists
/// in another order (SeaweedFS puts `<key>.tflock`'s versions before `<key>`'s) may have more
/// of them on the next page, and stopping there would list part of the history as all of it.
fn own_entries_may_continue<'k>(
    keys: impl IntoIterator<Item = Option<&'k str>>,
    own: &str,
) -> bool {
    let mut other_seen = false;
    let mut other_then_own = false;
    let mut last_is_own = false;
    for key in keys {
        last_is_own = key == Some(own);
        if last_is_own {
            other_then_own |= other_seen;
        } else {
            other_seen = true;
        }
    }
    other_then_own && last_is_own
}

impl S3Store {
    /// `err`, told more precisely when it says a version was not found: S3 answers a request
    /// for a delete marker's id with 405, but some stores (SeaweedFS) with a plain 404, so
    /// there the listing is asked whether the id is one of this object's delete markers.
    async fn name_delete_marker(&self, err: Error) -> Error {
        let Error::VersionNotFound {
            location,
            version_id,
            is_delete_marker: false,
        } = err
        else {
            return err;
        };
        let is_delete_marker = self.list_versions(1000).await.is_ok_and(|versions| {
            versions
                .iter()
                .any(|v| v.is_delete_marker && v.version_id == version_id)
        });
        Error::VersionNotFound {
            location,
            version_id,
            is_delete_marker,
        }
    }
}

#[async_trait]
impl VersionedStore for S3Store {
    async fn list_versions(&self, page_size: u32) -> Result<Vec<ObjectVersion>> {
        let mut versions = Vec::new();
        let mut markers = Vec::new();
        let (mut key_marker, mut version_marker) = (None, None);
        let mut asked_from = AskedFrom::default();
        let page_size = i32::try_from(page_size.clamp(1, 1000)).unwrap_or(1000);
        loop {
            let page = self
                .client()
                .list_object_versions()
                .bucket(&self.config.bucket)
                // Other keys share this prefix (`<key>.tflock`, `<key>.backup`, `<key>2`); they
                // are filtered out below, and since they all sort after `key`, the first one
                // seen ends the listing.
                .prefix(&self.key)
                .max_keys(page_size)
                .set_key_marker(key_marker.clone())
                .set_version_id_marker(version_marker.clone())
                .send()
                .await
                .map_err(|err| sdk_error("ListObjectVersions", &self.location, err))?;
            let own = |key: Option<&str>| key == Some(self.key.as_str());
            let other_key_seen = !page.versions().iter().all(|v| own(v.key()))
                || !page.delete_markers().iter().all(|m| own(m.key()));
            versions.extend(
                page.versions()
                    .iter()
                    .filter(|v| own(v.key()))
                    .map(version_entry),
            );
            markers.extend(
                page.delete_markers()
                    .iter()
                    .filter(|m| own(m.key()))
                    .map(marker_entry),
            );
            let truncated = page.is_truncated() == Some(true);
            if truncated
                && other_key_seen
                && (own_entries_may_continue(page.versions().iter().map(|v| v.key()), &self.key)
                    || own_entries_may_continue(
                        page.delete_markers().iter().map(|m| m.key()),
                        &self.key,
                    ))
            {
                // Stopping here would report part of the history as all of it, and going on
                // does not help: such a store compares its markers in key order, and skips.
                return Err(Error::InconsistentListing {
                    location: self.location.clone(),
                    evidence: "a truncated ListObjectVersions page listed this key's versions \
                               after another key's, so more of them may follow on pages this \
                               store cannot page to"
                        .into(),
                });
            }
            if other_key_seen || !truncated {
                break;
            }
            // A truncated page must say where the next one starts, and that must be past where
            // this one started: without a marker the next request would start over (forever),
            // and a marker that does not move would list the same page forever.
            let next = (
                page.next_key_marker().map(str::to_owned),
                page.next_version_id_marker().map(str::to_owned),
            );
            let inconsistent = |evidence: String| Error::InconsistentListing {
                location: self.location.clone(),
                evidence,
            };
            (key_marker, version_marker) = asked_from.next(next).map_err(inconsistent)?;
        }
        Ok(merge_newest_first(versions, markers))
    }

    async fn get_version(&self, version_id: &str) -> Result<StoredObject> {
        let request = version_request!(self, get_object, version_id);
        let output =
            match super::send_read!(request, &self.config, "GetObject", &self.location, false) {
                Ok(output) => output,
                Err(err) => {
                    let err = self.version_error("GetObject", version_id, err);
                    return Err(self.name_delete_marker(err).await);
                }
            };
        let etag = ETag::new(output.e_tag.clone().unwrap_or_default());
        let metadata = user_metadata(output.metadata.as_ref());
        let version = output.version_id.clone();
        let body =
            super::read_whole_body(output.body, output.content_length, self.body_read_timeout())
                .await
                .map_err(|err| match err {
                    super::BodyError::Stalled(after) => self.body_stalled("GetObject", after),
                    super::BodyError::Stream(err) => Error::Store {
                        operation: "GetObject",
                        location: self.location.clone(),
                        message: format!("reading version {version_id} failed: {err}"),
                        source: Some(Box::new(err)),
                    },
                })?;
        Ok(StoredObject {
            body,
            etag,
            version_id: version,
            metadata,
        })
    }

    async fn delete_version(&self, version_id: &str) -> Result<()> {
        self.client()
            .delete_object()
            .bucket(&self.config.bucket)
            .key(&self.key)
            .version_id(version_id)
            .send()
            .await
            .map_err(|err| {
                sdk_error(
                    "DeleteObject",
                    &format!("{} (version {version_id})", self.location),
                    err,
                )
            })?;
        Ok(())
    }

    async fn version_metadata(&self, version_id: &str) -> Result<ObjectMetadata> {
        let output = match version_request!(self, head_object, version_id).send().await {
            Ok(output) => output,
            Err(err) => {
                let err = self.version_error("HeadObject", version_id, err);
                return Err(self.name_delete_marker(err).await);
            }
        };
        Ok(user_metadata(output.metadata.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(id: &str, at: i64, latest: bool, marker: bool) -> ObjectVersion {
        ObjectVersion {
            version_id: id.into(),
            last_modified: time::OffsetDateTime::from_unix_timestamp(at).unwrap(),
            size: 0,
            etag: None,
            is_latest: latest,
            is_delete_marker: marker,
        }
    }

    #[test]
    fn merging_keeps_each_lists_order_and_places_markers_by_time() {
        let versions = vec![
            version("v3", 30, false, false),
            version("v2", 20, false, false),
            version("v1", 20, false, false),
        ];
        let markers = vec![
            version("d2", 40, true, true),
            version("d1", 25, false, true),
        ];
        let ids: Vec<_> = merge_newest_first(versions, markers)
            .into_iter()
            .map(|v| v.version_id)
            .collect();
        assert_eq!(ids, ["d2", "v3", "d1", "v2", "v1"]);
    }

    /// From the review of issue 25's SeaweedFS work: only the marker just asked from was
    /// refused, so a store leading the listing back two pages made it go round for ever.
    #[test]
    fn a_listing_led_back_to_any_marker_it_was_asked_from_ends() {
        let marker = |key: &str, version: &str| (Some(key.to_owned()), Some(version.to_owned()));
        let mut asked_from = AskedFrom::default();
        assert!(asked_from.next((None, Some("v".into()))).is_err());
        assert_eq!(asked_from.next(marker("k", "1")), Ok(marker("k", "1")));
        assert!(asked_from.next(marker("k", "1")).is_err());
        assert_eq!(asked_from.next(marker("k", "2")), Ok(marker("k", "2")));
        assert!(asked_from.next(marker("k", "1")).is_err());
        assert!(asked_from.next((Some("k".into()), None)).is_ok());
    }

    /// From the review of issue 25's SeaweedFS work: a truncated page that lists the key's
    /// own versions after a sibling's (SeaweedFS's order) and ends with them was taken as the
    /// whole history, silently, because the current version was in it.
    #[test]
    fn a_page_in_another_order_that_ends_with_the_key_may_continue() {
        let own = "env/terraform.tfstate";
        let tflock = "env/terraform.tfstate.tflock";
        let keys = |keys: &[&'static str]| keys.iter().map(|k| Some(*k)).collect::<Vec<_>>();
        // SeaweedFS: the lock's versions first, then the key's, truncated among them.
        assert!(own_entries_may_continue(
            keys(&[tflock, tflock, own, own]),
            own
        ));
        // S3's key order: the key's versions first; the first other key ends them.
        assert!(!own_entries_may_continue(keys(&[own, own, tflock]), own));
        // Another order, but another key after the key's versions: they are all here.
        assert!(!own_entries_may_continue(
            keys(&[tflock, own, "env/terraform.tfstate2"]),
            own
        ));
        // Only the key, or only others: nothing out of order.
        assert!(!own_entries_may_continue(keys(&[own, own]), own));
        assert!(!own_entries_may_continue(keys(&[tflock]), own));
    }
}
