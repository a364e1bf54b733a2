//! The states under the gateway's key prefix, a page at a time, for the web UI's state list:
//! one folder level at a time (S3's delimiter listing), or, with a search, every key under a
//! folder whose name contains the search text, scanning a bounded number of keys per page.
//!
//! Lock status comes from the same listing (`<name>.tflock` sorts after `<name>`), so a page
//! costs one or a few listing requests; the caller adds the per-state details (a HEAD each)
//! only for the states it shows.

use aws_sdk_s3::Client;
use std::collections::BTreeSet;

/// Keys read per listing request (S3's maximum).
const KEYS_PER_REQUEST: i32 = 1000;

/// At most this many keys are read for one page of search results; past it, the page ends
/// with a link that carries the search on from the last key read.
pub(crate) const MAX_KEYS_SCANNED: usize = 10_000;

/// What to list.
pub(crate) struct ListRequest<'a> {
    /// The bucket.
    pub(crate) bucket: &'a str,
    /// The gateway's key prefix, `""` or ending in `/`.
    pub(crate) base: &'a str,
    /// The folder shown, `""` or ending in `/` (relative to `base`).
    pub(crate) folder: &'a str,
    /// Search text (case-insensitive, anywhere in the name under `folder`), if any.
    pub(crate) search: Option<&'a str>,
    /// Continue after this name (relative to `base`).
    pub(crate) after: Option<&'a str>,
    /// How many entries (folders and states) a page holds.
    pub(crate) page_size: usize,
}

/// One state in a listing.
pub(crate) struct ListedState {
    /// Its name (its path in the gateway's URLs).
    pub(crate) name: String,
    /// When its current version was written.
    pub(crate) last_modified: Option<time::OffsetDateTime>,
    /// Whether `<name>.tflock` exists; `None` when the listing did not reach it.
    pub(crate) locked: Option<bool>,
}

/// One page of a listing.
#[derive(Default)]
pub(crate) struct Listing {
    /// Sub-folders (relative to `base`, ending in `/`); none when searching.
    pub(crate) folders: Vec<String>,
    /// States.
    pub(crate) states: Vec<ListedState>,
    /// Where the next page starts, when there is one.
    pub(crate) next_after: Option<String>,
    /// Keys read for this page.
    pub(crate) keys_scanned: usize,
}

enum Item {
    Folder(String),
    Object(String, Option<time::OffsetDateTime>),
}

impl Item {
    fn key(&self) -> &str {
        match self {
            Item::Folder(key) | Item::Object(key, _) => key,
        }
    }
}

/// One page of `request`, keeping only the names `wanted` accepts (`is_folder` tells it
/// whether the name is a folder). An error is the SDK's message, for the log.
pub(crate) async fn list(
    client: &Client,
    request: &ListRequest<'_>,
    is_state: impl Fn(&str) -> bool,
    wanted: impl Fn(&str, bool) -> bool,
) -> Result<Listing, String> {
    let needle = request.search.map(str::to_lowercase);
    let mut listing = Listing::default();
    let mut locks = BTreeSet::new();
    let mut token: Option<String> = None;
    let mut last_read: Option<String> = None;
    let mut seen_to = String::new();
    let mut skipped = false;
    let mut truncated;
    let mut full = false;
    loop {
        let mut call = client
            .list_objects_v2()
            .bucket(request.bucket)
            .prefix(format!("{}{}", request.base, request.folder))
            .max_keys(KEYS_PER_REQUEST);
        if needle.is_none() {
            call = call.delimiter("/");
        }
        match (&token, request.after) {
            (Some(token), _) => call = call.continuation_token(token),
            (None, Some(after)) => call = call.start_after(format!("{}{after}", request.base)),
            (None, None) => {}
        }
        let page = call.send().await.map_err(|error| {
            format!(
                "listing s3://{}/{}: {error:?}",
                request.bucket, request.base
            )
        })?;
        let mut items: Vec<Item> = page
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().map(|p| Item::Folder(p.to_owned())))
            .chain(page.contents().iter().filter_map(|object| {
                let modified = object
                    .last_modified()
                    .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t.secs()).ok());
                object
                    .key()
                    .map(|key| Item::Object(key.to_owned(), modified))
            }))
            .collect();
        items.sort_by(|a, b| a.key().cmp(b.key()));
        truncated = page.is_truncated().unwrap_or(false);
        token = page.next_continuation_token().map(str::to_owned);
        for item in items {
            let Some(name) = item.key().strip_prefix(request.base).map(str::to_owned) else {
                continue;
            };
            listing.keys_scanned += 1;
            seen_to.clone_from(&name);
            if let Some(state) = name.strip_suffix(crate::lock::LOCK_SUFFIX) {
                locks.insert(state.to_owned());
            }
            if full {
                // Past the page's last entry: read on only for the locks of states shown.
                skipped = true;
                continue;
            }
            last_read = Some(name.clone());
            let matches = needle
                .as_deref()
                .is_none_or(|needle| name[request.folder.len()..].to_lowercase().contains(needle));
            match item {
                Item::Folder(_) if wanted(&name, true) => listing.folders.push(name),
                Item::Object(_, modified) if matches && is_state(&name) && wanted(&name, false) => {
                    listing.states.push(ListedState {
                        name,
                        last_modified: modified,
                        locked: None,
                    });
                }
                _ => {}
            }
            if listing.folders.len() + listing.states.len() >= request.page_size {
                full = true;
            }
        }
        if !truncated || token.is_none() || full || listing.keys_scanned >= MAX_KEYS_SCANNED {
            break;
        }
    }
    // A state's lock key sorts after it, perhaps past the keys read: unknown then, and the
    // caller asks the store.
    for state in &mut listing.states {
        let lock = format!("{}{}", state.name, crate::lock::LOCK_SUFFIX);
        state.locked = if locks.contains(&state.name) {
            Some(true)
        } else if !truncated || lock <= seen_to {
            Some(false)
        } else {
            None
        };
    }
    if (truncated && token.is_some()) || skipped {
        listing.next_after = last_read;
    }
    Ok(listing)
}
