//! `s3state ls`: every Terraform state under a bucket or prefix, workspaces included, from one
//! listing plus bounded parallel HEADs (a body is read only when s3state's metadata is absent,
//! or for `--resources`).

use crate::error::CliError;
use crate::{settings, ui};
use futures::StreamExt;
use s3state::history::meta_from_metadata;
use s3state::{S3Store, State};

type Result<T = ()> = std::result::Result<T, CliError>;

/// How many HEADs (or GETs) run at once.
const PARALLEL: usize = 16;

/// `s3state ls`'s options.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only keys under this prefix (default: the whole bucket).
    #[arg(value_name = "PREFIX", default_value = "")]
    prefix: String,
    /// JSON output (one array of objects).
    #[arg(long)]
    json: bool,
    /// Only states whose lock is held.
    #[arg(long)]
    locked: bool,
    /// Also count each state's resources (reads every body).
    #[arg(long)]
    resources: bool,
}

#[derive(Debug, serde::Serialize)]
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

pub async fn run(flags: &settings::Flags, args: LsArgs) -> Result {
    let store = store_for_bucket(flags).await?;
    let client = store.client().clone();
    let bucket = store.bucket().to_owned();
    let workspace_prefix = flags
        .workspace_key_prefix
        .clone()
        .unwrap_or_else(|| "env:".into());

    let spinner = ui::progress(&format!("listing s3://{bucket}/{}", args.prefix), None);
    let mut objects = Vec::new();
    let mut locks = std::collections::BTreeSet::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(&args.prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| {
            CliError::Other(format!(
                "cannot list s3://{bucket}/{}: {}",
                args.prefix,
                aws_sdk_s3::error::DisplayErrorContext(err)
            ))
        })?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            if let Some(state) = key.strip_suffix(".tflock") {
                locks.insert(state.to_owned());
            } else if key.ends_with(".tfstate") {
                objects.push((
                    key.to_owned(),
                    object.size().unwrap_or(0).max(0) as u64,
                    object.last_modified().map(|t| t.to_string()),
                ));
            }
        }
    }
    spinner.finish_and_clear();

    let bar = ui::progress("reading states", Some(objects.len() as u64));
    let rows: Vec<Result<Row>> = futures::stream::iter(objects)
        .filter(|(key, _, _)| std::future::ready(!args.locked || locks.contains(key)))
        .map(|(key, size, last_modified)| {
            let (client, bucket, bar) = (&client, &bucket, &bar);
            let locked = locks.contains(&key);
            let workspace = workspace_of(&key, &workspace_prefix);
            let with_resources = args.resources;
            async move {
                let error = |what: &str, err: String| {
                    CliError::Other(format!("cannot {what} s3://{bucket}/{key}: {err}"))
                };
                let head = client
                    .head_object()
                    .bucket(bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| {
                        error(
                            "read",
                            aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
                        )
                    })?;
                let metadata: s3state::store::ObjectMetadata = head
                    .metadata()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                let mut row = Row {
                    key: key.clone(),
                    workspace,
                    serial: None,
                    lineage: None,
                    terraform_version: None,
                    size,
                    resources: None,
                    last_modified,
                    lock_holder: None,
                };
                let meta = meta_from_metadata(&metadata);
                if let Some(meta) = &meta {
                    row.serial = Some(meta.serial);
                    row.lineage = Some(meta.lineage.clone());
                    row.terraform_version = Some(meta.terraform_version.to_string());
                }
                if meta.is_none() || with_resources {
                    let body = get(client, bucket, &key)
                        .await
                        .map_err(|e| error("read", e))?;
                    if let Ok(state) = State::from_slice(&body) {
                        row.serial = Some(state.serial);
                        row.lineage = Some(state.lineage.clone());
                        row.terraform_version = Some(state.terraform_version.to_string());
                        row.resources = state
                            .resources
                            .deserialize::<Vec<serde::de::IgnoredAny>>()
                            .ok()
                            .map(|r| r.len());
                    }
                }
                if locked {
                    let body = get(client, bucket, &format!("{key}.tflock")).await.ok();
                    row.lock_holder = Some(
                        body.and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                            .and_then(|v| v.get("Who").and_then(|w| w.as_str()).map(str::to_owned))
                            .unwrap_or_else(|| "(unreadable lock)".into()),
                    );
                }
                bar.inc(1);
                Ok(row)
            }
        })
        .buffered(PARALLEL)
        .collect()
        .await;
    bar.finish_and_clear();
    let rows: Vec<Row> = rows.into_iter().collect::<Result<_>>()?;

    let text = if args.json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&rows).expect("rows serialise")
        )
    } else {
        let dash = || "-".to_owned();
        let mut text = String::from(
            "KEY\tWORKSPACE\tSERIAL\tLINEAGE\tVERSION\tSIZE\tRESOURCES\tMODIFIED\tLOCKED BY\n",
        );
        for row in &rows {
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                row.key,
                row.workspace,
                row.serial.map(|s| s.to_string()).unwrap_or_else(dash),
                row.lineage.clone().unwrap_or_else(dash),
                row.terraform_version.clone().unwrap_or_else(dash),
                ui::size(row.size),
                row.resources.map(|r| r.to_string()).unwrap_or_else(dash),
                row.last_modified.clone().unwrap_or_else(dash),
                row.lock_holder.clone().unwrap_or_else(dash),
            ));
        }
        text
    };
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|err| CliError::Other(format!("cannot write to stdout: {err}")))
}

async fn get(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> std::result::Result<Vec<u8>, String> {
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())?;
    let body = object.body.collect().await.map_err(|e| e.to_string())?;
    Ok(body.into_bytes().to_vec())
}

/// A store on the configured bucket (its key does not matter: `ls` needs no key).
async fn store_for_bucket(flags: &settings::Flags) -> Result<S3Store> {
    let resolved = match settings::resolve(flags) {
        Ok(resolved) => resolved,
        Err(CliError::Usage(message)) if message.contains("key") && flags.key.is_none() => {
            let mut builder = s3state::S3Builder::from_env().with_key("-");
            if let Some(bucket) = &flags.bucket {
                builder = builder.with_bucket(bucket);
            }
            if let Some(region) = &flags.region {
                builder = builder.with_region(region);
            }
            if let Some(endpoint) = &flags.endpoint_url {
                builder = builder.with_endpoint_url(endpoint);
            }
            if let Some(path_style) = flags.path_style {
                builder = builder.with_path_style(path_style);
            }
            if let Some(profile) = &flags.profile {
                builder = builder.with_profile(profile);
            }
            return Ok(builder.build_store().await?);
        }
        Err(err) => return Err(err),
    };
    Ok(resolved.builder.build_store().await?)
}
