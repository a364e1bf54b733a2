//! `s3state rekey`: moves states between OpenTofu encryption keys or methods (encrypts a
//! plaintext state, decrypts one, or re-keys it), one state or every state under a prefix,
//! each under its lock and as a new version, so the history keeps the old form.

use crate::error::CliError;
use crate::{settings, ui};
use s3state::{EncryptionMigration, RemoteState, S3Store, Store};

type Result<T = ()> = std::result::Result<T, CliError>;

/// The `rekey` command's arguments.
#[derive(Debug, clap::Args)]
pub struct RekeyArgs {
    /// Every `*.tfstate` under this key prefix in the bucket (workspaces included), instead
    /// of the configured state. An empty prefix is the whole bucket.
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// Say what would be rewritten; write nothing.
    #[arg(long)]
    dry_run: bool,
}

const NO_ENCRYPTION: &str = "rekey needs an OpenTofu encryption configuration (TF_ENCRYPTION, or \
     the encryption block with --chdir): the method to write with, and the fallback that reads \
     the states as they are stored now";

pub async fn run(flags: &settings::Flags, args: RekeyArgs) -> Result {
    let Some(prefix) = args.prefix else {
        let resolved = settings::resolve(flags)?;
        let manager = resolved
            .builder
            .build_backend()
            .await?
            .manager(&resolved.workspace)?;
        let outcome = migrate(&manager, args.dry_run).await?;
        println!(
            "{}",
            describe(manager.store().location(), outcome, args.dry_run)
        );
        return Ok(());
    };
    let resolved = settings::resolve_for_bucket(flags)?;
    let store = resolved.builder.clone().build_store().await?;
    let bucket = store.bucket().to_owned();
    let mut keys = Vec::new();
    let mut pages = store
        .client()
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(&prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| {
            CliError::Other(format!(
                "cannot list s3://{bucket}/{prefix}: {}",
                aws_sdk_s3::error::DisplayErrorContext(err)
            ))
        })?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|object| object.key())
                .filter(|key| key.ends_with(".tfstate"))
                .map(str::to_owned),
        );
    }
    let bar = ui::progress(
        if args.dry_run {
            "checking states"
        } else {
            "rewriting states"
        },
        Some(keys.len() as u64),
    );
    let mut failures = Vec::new();
    for key in keys {
        bar.set_message(key.clone());
        let result = async {
            let manager = resolved.builder.clone().with_key(&key).build().await?;
            migrate(&manager, args.dry_run).await
        }
        .await;
        bar.inc(1);
        let location = format!("s3://{bucket}/{key}");
        match result {
            // On stdout, one line per state (the bar is drawn on stderr, when it is a terminal).
            Ok(outcome) => {
                bar.suspend(|| println!("{}", describe(&location, outcome, args.dry_run)))
            }
            Err(err) => {
                bar.suspend(|| println!("{location}\tfailed: {err}"));
                failures.push(location);
            }
        }
    }
    bar.finish_and_clear();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::Other(format!(
            "{} state(s) could not be rewritten (nothing was written to them): {}",
            failures.len(),
            failures.join(", ")
        )))
    }
}

async fn migrate(manager: &RemoteState<S3Store>, dry_run: bool) -> Result<EncryptionMigration> {
    if manager.options().encryption.is_none() {
        return Err(CliError::usage(NO_ENCRYPTION));
    }
    Ok(manager.migrate_encryption(dry_run).await?)
}

fn describe(location: &str, outcome: EncryptionMigration, dry_run: bool) -> String {
    match outcome {
        EncryptionMigration::Absent => format!("{location}\tno state"),
        EncryptionMigration::Current => format!("{location}\tcurrent"),
        EncryptionMigration::Rewritten { serial } if dry_run => {
            format!("{location}\twould rewrite as serial {serial}")
        }
        EncryptionMigration::Rewritten { serial } => {
            format!("{location}\trewritten as serial {serial}")
        }
        _ => format!("{location}\t{outcome:?}"),
    }
}
