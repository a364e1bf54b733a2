//! `s3state ls`: every Terraform state under a bucket or prefix, workspaces included, from one
//! listing plus bounded parallel HEADs. A body is read only when s3state's metadata is absent
//! or for `--resources` (then one GET replaces the HEAD, since it carries the metadata too).
//! `--versions` lists every version under the prefix once (1,000 a page), or, when the filters
//! kept fewer than one state in ten, each kept state's versions. Filters that the listing can
//! answer (`--locked`, `--older-than`) are applied before any per-state request.

use crate::error::CliError;
use crate::{settings, ui};
use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
use futures::StreamExt;
use s3state::history::meta_from_metadata;
use s3state::remote::metadata_keys;
use s3state::{S3Store, State};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::{Duration, SystemTime};

type Result<T = ()> = std::result::Result<T, CliError>;

/// How many per-state requests (HEAD, GET, version listing) run at once.
const PARALLEL: usize = 16;

/// `s3state ls`'s options.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only keys under this prefix (default: the whole bucket).
    #[arg(value_name = "PREFIX", default_value = "")]
    prefix: String,
    /// JSON output (one array of objects; never a progress bar).
    #[arg(long)]
    json: bool,
    /// Only states whose lock is held.
    #[arg(long)]
    locked: bool,
    /// Only states last modified longer ago than this (e.g. 30d, 12h, 1h30m).
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    /// Also count each state's resources (reads every body).
    #[arg(long)]
    resources: bool,
    /// Also count each state's stored versions (one more listing, of every version under the
    /// prefix; or one per state when the filters keep fewer than one state in ten).
    #[arg(long)]
    versions: bool,
    /// Order rows by this column (`resources` implies --resources).
    #[arg(long, value_enum, value_name = "COLUMN", default_value_t = SortKey::Key)]
    sort: SortKey,
    /// Reverse the order.
    #[arg(long)]
    reverse: bool,
}

/// The columns `ls` can sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// The object key.
    Key,
    /// Last modified, oldest first.
    Modified,
    /// The state's serial, lowest first.
    Serial,
    /// The stored size, smallest first.
    Size,
    /// The number of resources, fewest first.
    Resources,
}

/// One state, as `ls` prints it.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    key: String,
    workspace: String,
    serial: Option<u64>,
    lineage: Option<String>,
    terraform_version: Option<String>,
    size: u64,
    resources: Option<usize>,
    last_modified: Option<String>,
    lock_holder: Option<String>,
    lock_id: Option<String>,
    versions: Option<usize>,
    /// Whether the state is stored encrypted (OpenTofu state encryption); `None` when
    /// unknown (not a state).
    encrypted: Option<bool>,
    /// For sorting (the string above is for people and JSON).
    #[serde(skip)]
    modified: Option<DateTime>,
}

/// One `*.tfstate` object from the listing.
struct Listed {
    key: String,
    size: u64,
    modified: Option<DateTime>,
}

/// The workspace a key belongs to: `<prefix>/<workspace>/<key>` is a workspace's state,
/// anything else the default workspace's.
fn workspace_of(key: &str, workspace_prefix: &str) -> String {
    key.strip_prefix(workspace_prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.split_once('/'))
        .map(|(workspace, _)| workspace.to_owned())
        .unwrap_or_else(|| "default".into())
}

/// Whether an object last modified at `modified` is older than `age` at `now`. An age reaching
/// back before 1970 keeps nothing; an object without a modification time is never kept.
fn is_older_than(modified: Option<DateTime>, now: SystemTime, age: Duration) -> bool {
    match (modified, now.checked_sub(age)) {
        (Some(modified), Some(cutoff)) => modified <= DateTime::from(cutoff),
        _ => false,
    }
}

/// Sorts rows by `by` (ties by key, so the order is total), then reverses them if asked.
fn sort_rows(rows: &mut [Row], by: SortKey, reverse: bool) {
    rows.sort_by(|a, b| {
        let by_column = match by {
            SortKey::Key => std::cmp::Ordering::Equal,
            SortKey::Modified => a.modified.cmp(&b.modified),
            SortKey::Serial => a.serial.cmp(&b.serial),
            SortKey::Size => a.size.cmp(&b.size),
            SortKey::Resources => a.resources.cmp(&b.resources),
        };
        by_column.then_with(|| a.key.cmp(&b.key))
    });
    if reverse {
        rows.reverse();
    }
}

/// A progress indicator that is drawn only for a person watching: never for --json, and only
/// when both stdout and stderr are terminals (not when the table is piped somewhere).
fn progress(show: bool, message: &str, total: Option<u64>) -> indicatif::ProgressBar {
    if show {
        ui::progress(message, total)
    } else {
        indicatif::ProgressBar::hidden()
    }
}

fn s3_error(what: &str, location: &str, err: impl std::fmt::Display) -> CliError {
    CliError::Other(format!("cannot {what} {location}: {err}"))
}

pub async fn run(flags: &settings::Flags, mut args: LsArgs) -> Result {
    if args.sort == SortKey::Resources {
        args.resources = true;
    }
    let store = store_for_bucket(flags).await?;
    let client = store.client().clone();
    let bucket = store.bucket().to_owned();
    let workspace_prefix = flags
        .workspace_key_prefix
        .clone()
        .unwrap_or_else(|| "env:".into());
    let show_progress =
        !args.json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();

    let location = format!("s3://{bucket}/{}", args.prefix);
    let spinner = progress(show_progress, &format!("listing {location}"), None);
    let mut listed = Vec::new();
    let mut locks = BTreeSet::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(&args.prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| {
            s3_error(
                "list",
                &location,
                aws_sdk_s3::error::DisplayErrorContext(err),
            )
        })?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            if let Some(state) = key.strip_suffix(".tflock") {
                locks.insert(state.to_owned());
            } else if key.ends_with(".tfstate") {
                listed.push(Listed {
                    key: key.to_owned(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified: object.last_modified().copied(),
                });
            }
        }
        spinner.set_message(format!("listing {location}: {} states", listed.len()));
    }
    spinner.finish_and_clear();

    let now = SystemTime::now();
    let before_filters = listed.len();
    listed.retain(|state| {
        (!args.locked || locks.contains(&state.key))
            && args
                .older_than
                .is_none_or(|age| is_older_than(state.modified, now, age))
    });

    // Versions: one listing of every version under the prefix (1,000 per page) costs far less
    // than one version listing per state, unless the filters kept only a few of the states.
    let per_state_versions = args.versions && listed.len() * 10 < before_filters;
    let version_counts = if args.versions && !per_state_versions {
        let spinner = progress(
            show_progress,
            &format!("counting versions in {location}"),
            None,
        );
        let counts = count_versions_under(&client, &bucket, &args.prefix, &location).await?;
        spinner.finish_and_clear();
        Some(counts)
    } else {
        None
    };

    let bar = progress(show_progress, "reading states", Some(listed.len() as u64));
    let reader = Reader {
        client: &client,
        bucket: &bucket,
        workspace_prefix: &workspace_prefix,
        with_resources: args.resources,
        with_versions: per_state_versions,
    };
    let results: Vec<Result<Option<Row>>> = futures::stream::iter(listed)
        .map(|state| {
            let locked = locks.contains(&state.key);
            let (reader, bar) = (&reader, &bar);
            async move {
                let row = reader.row(state, locked).await;
                bar.inc(1);
                row
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut rows = Vec::with_capacity(results.len());
    for result in results {
        // A state deleted, or a lock released, since the listing is left out.
        if let Some(mut row) = result?
            && (!args.locked || row.lock_holder.is_some())
        {
            if let Some(counts) = &version_counts {
                row.versions = Some(counts.get(&row.key).copied().unwrap_or(0));
            }
            rows.push(row);
        }
    }
    sort_rows(&mut rows, args.sort, args.reverse);

    let text = if args.json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&rows).expect("rows serialise")
        )
    } else {
        table(&rows, args.versions)
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|err| CliError::Other(format!("cannot write to stdout: {err}")))
}

/// The rows as a tab-separated table with a header line.
fn table(rows: &[Row], with_versions: bool) -> String {
    let dash = || "-".to_owned();
    let mut text = String::from(
        "KEY\tWORKSPACE\tSERIAL\tLINEAGE\tVERSION\tSIZE\tRESOURCES\tMODIFIED\tLOCKED BY\tENCRYPTED",
    );
    if with_versions {
        text.push_str("\tVERSIONS");
    }
    text.push('\n');
    for row in rows {
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            row.key,
            row.workspace,
            row.serial.map(|s| s.to_string()).unwrap_or_else(dash),
            row.lineage.clone().unwrap_or_else(dash),
            row.terraform_version.clone().unwrap_or_else(dash),
            ui::size(row.size),
            row.resources.map(|r| r.to_string()).unwrap_or_else(dash),
            row.last_modified.clone().unwrap_or_else(dash),
            row.lock_holder.clone().unwrap_or_else(dash),
            match row.encrypted {
                Some(true) => "yes".to_owned(),
                Some(false) => "no".to_owned(),
                None => dash(),
            },
        ));
        if with_versions {
            text.push('\t');
            text.push_str(&row.versions.map(|v| v.to_string()).unwrap_or_else(dash));
        }
        text.push('\n');
    }
    text
}

/// Reads what the listing does not say about one state.
struct Reader<'a> {
    client: &'a aws_sdk_s3::Client,
    bucket: &'a str,
    workspace_prefix: &'a str,
    with_resources: bool,
    with_versions: bool,
}

impl Reader<'_> {
    /// The row for one listed state, or `None` if it was deleted since the listing.
    async fn row(&self, state: Listed, locked: bool) -> Result<Option<Row>> {
        let Listed {
            key,
            size,
            modified,
        } = state;
        let location = format!("s3://{}/{key}", self.bucket);
        let mut row = Row {
            workspace: workspace_of(&key, self.workspace_prefix),
            serial: None,
            lineage: None,
            terraform_version: None,
            size,
            resources: None,
            last_modified: modified.and_then(|t| t.fmt(DateTimeFormat::DateTime).ok()),
            lock_holder: None,
            lock_id: None,
            versions: None,
            encrypted: None,
            modified,
            key,
        };

        // With --resources the body is needed anyway, and a GET carries the metadata too.
        let mut body = None;
        let metadata = if self.with_resources {
            let Some((object_body, metadata)) = self.get(&row.key, &location).await? else {
                return Ok(None);
            };
            body = Some(object_body);
            metadata
        } else {
            let head = match self
                .client
                .head_object()
                .bucket(self.bucket)
                .key(&row.key)
                .send()
                .await
            {
                Ok(head) => head,
                Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => {
                    return Ok(None);
                }
                Err(err) => {
                    return Err(s3_error(
                        "read",
                        &location,
                        aws_sdk_s3::error::DisplayErrorContext(err),
                    ));
                }
            };
            to_metadata(head.metadata())
        };
        if let Some(meta) = meta_from_metadata(&metadata) {
            row.serial = Some(meta.serial);
            row.lineage = Some(meta.lineage);
            row.terraform_version = Some(meta.terraform_version.to_string());
            row.encrypted = Some(metadata.contains_key(metadata_keys::ENCRYPTION));
        } else if body.is_none() {
            // Not written by s3state (Terraform, or by hand): only the body says.
            let Some((object_body, _)) = self.get(&row.key, &location).await? else {
                return Ok(None);
            };
            body = Some(object_body);
        }
        // An OpenTofu envelope says its serial and lineage in plaintext: no key is needed.
        if let Some(envelope) = body.as_deref().and_then(s3state::encryption::inspect) {
            row.encrypted = Some(true);
            row.serial = envelope.serial.or(row.serial);
            row.lineage = envelope.lineage.or(row.lineage.take());
        } else if let Some(body) = body
            && let Ok(state) = State::from_slice(&body)
        {
            row.encrypted = Some(false);
            row.serial = Some(state.serial);
            row.lineage = Some(state.lineage.clone());
            row.terraform_version = Some(state.terraform_version.to_string());
            row.resources = state
                .resources
                .deserialize::<Vec<serde::de::IgnoredAny>>()
                .ok()
                .map(|resources| resources.len());
        }

        if locked {
            let lock_key = format!("{}.tflock", row.key);
            let lock_location = format!("s3://{}/{lock_key}", self.bucket);
            if let Some((lock, _)) = self.get(&lock_key, &lock_location).await? {
                let info = serde_json::from_slice::<serde_json::Value>(&lock).ok();
                let field = |name: &str| {
                    info.as_ref()
                        .and_then(|info| info.get(name))
                        .and_then(|value| value.as_str())
                        .map(str::to_owned)
                };
                row.lock_holder = Some(field("Who").unwrap_or_else(|| "(unreadable lock)".into()));
                row.lock_id = field("ID");
            }
        }
        if self.with_versions {
            row.versions = Some(self.version_count(&row.key, &location).await?);
        }
        Ok(Some(row))
    }

    /// An object's body and metadata, or `None` if it does not exist (any more).
    async fn get(
        &self,
        key: &str,
        location: &str,
    ) -> Result<Option<(Vec<u8>, s3state::store::ObjectMetadata)>> {
        let object = match self
            .client
            .get_object()
            .bucket(self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => object,
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(err) => {
                return Err(s3_error(
                    "read",
                    location,
                    aws_sdk_s3::error::DisplayErrorContext(err),
                ));
            }
        };
        let metadata = to_metadata(object.metadata());
        let body = object
            .body
            .collect()
            .await
            .map_err(|err| s3_error("read", location, err))?;
        Ok(Some((body.into_bytes().to_vec(), metadata)))
    }

    /// How many versions (delete markers aside) are stored under exactly `key`. The listing is
    /// by prefix and in key order, so it stops at the first page that reaches past `key` (its
    /// `.tflock` versions come right after it).
    async fn version_count(&self, key: &str, location: &str) -> Result<usize> {
        let mut count = 0;
        let (mut key_marker, mut version_marker) = (None, None);
        let mut asked = std::collections::HashSet::new();
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(self.bucket)
                .prefix(key)
                .set_key_marker(key_marker)
                .set_version_id_marker(version_marker)
                .send()
                .await
                .map_err(|err| {
                    s3_error(
                        "list the versions of",
                        location,
                        aws_sdk_s3::error::DisplayErrorContext(err),
                    )
                })?;
            count += page
                .versions()
                .iter()
                .filter(|version| version.key() == Some(key))
                .count();
            let past_key = page
                .versions()
                .iter()
                .filter_map(|version| version.key())
                .chain(page.delete_markers().iter().filter_map(|m| m.key()))
                .any(|other| other > key);
            if past_key || page.is_truncated() != Some(true) {
                return Ok(count);
            }
            (key_marker, version_marker) = next_markers(&page, &mut asked, location)?;
        }
    }
}

/// How many versions (delete markers aside) each `*.tfstate` key under `prefix` has, from one
/// listing of every version under it.
async fn count_versions_under(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    location: &str,
) -> Result<std::collections::HashMap<String, usize>> {
    let mut counts = std::collections::HashMap::new();
    let (mut key_marker, mut version_marker) = (None, None);
    let mut asked = std::collections::HashSet::new();
    loop {
        let page = client
            .list_object_versions()
            .bucket(bucket)
            .prefix(prefix)
            .set_key_marker(key_marker)
            .set_version_id_marker(version_marker)
            .send()
            .await
            .map_err(|err| {
                s3_error(
                    "list the versions under",
                    location,
                    aws_sdk_s3::error::DisplayErrorContext(err),
                )
            })?;
        for key in page.versions().iter().filter_map(|version| version.key()) {
            if key.ends_with(".tfstate") {
                *counts.entry(key.to_owned()).or_insert(0) += 1;
            }
        }
        if page.is_truncated() != Some(true) {
            return Ok(counts);
        }
        (key_marker, version_marker) = next_markers(&page, &mut asked, location)?;
    }
}

/// The markers to ask for a truncated listing's next page. A page that is truncated but names
/// no marker, or a marker already asked from, would page forever (a store that leads the
/// listing back, as some S3-compatible stores do): an error instead, never a silent count.
fn next_markers(
    page: &aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput,
    asked: &mut std::collections::HashSet<(Option<String>, Option<String>)>,
    location: &str,
) -> Result<(Option<String>, Option<String>)> {
    let markers = (
        page.next_key_marker().map(str::to_owned),
        page.next_version_id_marker().map(str::to_owned),
    );
    if markers.0.is_none() || !asked.insert(markers.clone()) {
        return Err(s3_error(
            "list the versions of",
            location,
            "the store's version listing is truncated without a new marker to go on from \
             (check the store with `s3state probe`)",
        ));
    }
    Ok(markers)
}

fn to_metadata(
    metadata: Option<&std::collections::HashMap<String, String>>,
) -> s3state::store::ObjectMetadata {
    metadata
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// A store on the configured bucket (its key does not matter: `ls` needs no key), with every
/// other setting applied as for a single state: a role to assume most of all.
async fn store_for_bucket(flags: &settings::Flags) -> Result<S3Store> {
    let resolved = settings::resolve_for_bucket(flags)?;
    Ok(resolved.builder.build_store().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime {
        DateTime::from_secs(seconds)
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    #[test]
    fn older_than_keeps_only_what_was_last_modified_before_now_minus_the_age() {
        let hour = Duration::from_secs(3600);
        assert!(is_older_than(Some(at(1_000_000 - 7200)), now(), hour));
        assert!(
            is_older_than(Some(at(1_000_000 - 3600)), now(), hour),
            "exactly at the cutoff"
        );
        assert!(!is_older_than(Some(at(1_000_000 - 3599)), now(), hour));
        assert!(!is_older_than(Some(at(1_000_000 + 10)), now(), hour));
        assert!(is_older_than(Some(at(1_000_000)), now(), Duration::ZERO));
        assert!(
            !is_older_than(Some(at(0)), now(), Duration::from_secs(2_000_000)),
            "a cutoff before 1970 keeps nothing"
        );
        assert!(!is_older_than(None, now(), Duration::ZERO));
    }

    fn row(key: &str, serial: u64, size: u64, resources: Option<usize>, modified: i64) -> Row {
        Row {
            key: key.into(),
            workspace: "default".into(),
            serial: Some(serial),
            lineage: None,
            terraform_version: None,
            size,
            resources,
            last_modified: None,
            lock_holder: None,
            lock_id: None,
            versions: None,
            encrypted: None,
            modified: Some(at(modified)),
        }
    }

    fn keys_sorted(by: SortKey, reverse: bool) -> Vec<String> {
        let mut rows = vec![
            row("b", 3, 10, Some(2), 300),
            row("a", 1, 30, Some(5), 200),
            row("d", 3, 20, None, 100),
            row("c", 2, 10, Some(1), 400),
        ];
        sort_rows(&mut rows, by, reverse);
        rows.into_iter().map(|row| row.key).collect()
    }

    #[test]
    fn rows_sort_by_the_chosen_column_with_ties_broken_by_key() {
        assert_eq!(keys_sorted(SortKey::Key, false), ["a", "b", "c", "d"]);
        assert_eq!(keys_sorted(SortKey::Key, true), ["d", "c", "b", "a"]);
        assert_eq!(keys_sorted(SortKey::Modified, false), ["d", "a", "b", "c"]);
        assert_eq!(keys_sorted(SortKey::Serial, false), ["a", "c", "b", "d"]);
        assert_eq!(keys_sorted(SortKey::Size, false), ["b", "c", "d", "a"]);
        assert_eq!(keys_sorted(SortKey::Size, true), ["a", "d", "c", "b"]);
        assert_eq!(
            keys_sorted(SortKey::Resources, false),
            ["d", "c", "b", "a"],
            "an unknown count sorts first"
        );
    }

    #[test]
    fn a_workspace_is_the_path_segment_after_the_workspace_prefix() {
        assert_eq!(workspace_of("env:/staging/a/b.tfstate", "env:"), "staging");
        assert_eq!(workspace_of("a/b.tfstate", "env:"), "default");
        assert_eq!(workspace_of("env:/b.tfstate", "env:"), "default");
        assert_eq!(workspace_of("ws/prod/k.tfstate", "ws"), "prod");
    }
}
