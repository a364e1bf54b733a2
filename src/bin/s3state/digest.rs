//! `s3state digest`: the MD5 digest Terraform keeps of the state in its DynamoDB lock table
//! (`dynamodb_table`).

use crate::error::CliError;
use clap::Subcommand;
use s3state::{LockInfo, Locker, Store, s3::S3Backend};

/// What `s3state digest` does.
#[derive(Debug, Subcommand)]
pub enum DigestCommand {
    /// Show the stored digest and the MD5 of the current state.
    #[command(after_help = "Example:\n  s3state --dynamodb-table tflocks digest show")]
    Show,
    /// Set the digest to the MD5 of the current state (or remove it when there is no state),
    /// under the state's lock: after another tool rewrote the state without updating it.
    #[command(after_help = "Example:\n  s3state --dynamodb-table tflocks digest repair")]
    Repair,
}

/// Runs `command` on `workspace`'s state.
pub async fn run(
    backend: &S3Backend,
    workspace: &str,
    command: DigestCommand,
) -> Result<(), CliError> {
    let manager = backend.manager(workspace)?;
    let store = manager.store();
    if store.dynamodb_table().is_none() {
        return Err(CliError::usage(
            "no DynamoDB table is configured: give --dynamodb-table, S3STATE_DYNAMODB_TABLE or a backend block with dynamodb_table",
        ));
    }
    match command {
        DigestCommand::Show => {
            let stored = store.stored_digest().await?;
            let actual = match store.get(None).await {
                Ok(s3state::store::Fetched::Found(object)) if !object.body.is_empty() => {
                    Some(s3state::dynamodb::md5_hex(&object.body))
                }
                Ok(_) => None,
                Err(s3state::Error::DigestMismatch { actual, .. }) => actual,
                Err(err) => return Err(err.into()),
            };
            println!("stored:  {}", stored.as_deref().unwrap_or("(none)"));
            println!("current: {}", actual.as_deref().unwrap_or("(no state)"));
            Ok(())
        }
        DigestCommand::Repair => {
            let id = manager
                .lock(&LockInfo::new("digest repair").with_info("s3state digest repair"))
                .await?;
            let repaired = store.repair_digest().await;
            let unlocked = manager.unlock(&id).await;
            let digest = repaired?;
            unlocked?;
            match digest {
                Some(digest) => eprintln!("Set the digest of {} to {digest}.", store.location()),
                None => eprintln!("{} has no state; removed its digest.", store.location()),
            }
            Ok(())
        }
    }
}
