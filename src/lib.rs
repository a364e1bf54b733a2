//! # s3state
//!
//! Terraform-format state snapshots in Amazon S3, for tools that need a state backend that is
//! safe under concurrency: every write is a conditional PUT (`If-None-Match: *` to create,
//! `If-Match: <etag>` to update), so a writer that lost a race gets [`Error::Conflict`] instead
//! of silently overwriting someone else's work.
//!
//! The crate follows Terraform's split:
//! - [`statemgr`] is the contract (Terraform's `statemgr`, made async);
//! - [`State`] is the v4 state format, read and written byte-for-byte as Terraform does;
//! - [`RemoteState`] applies the serial and lineage rules over any [`Store`];
//! - [`StoreLocker`] takes Terraform's `.tflock` lock over any [`Store`] (plus the store's
//!   DynamoDB lock item where a table is configured);
//! - [`s3`] is the S3 store, and the only part that knows about S3;
//! - the gateway ([`server`], feature `server`) and the `s3state` command are front ends: they
//!   translate their protocol into these calls and own no rules.
//!
//! ```no_run
//! use s3state::{OutputReader, OutputValue, S3Builder};
//!
//! # async fn demo() -> s3state::Result<()> {
//! let manager = S3Builder::from_env()
//!     .with_bucket("tfstate")
//!     .with_key("app/terraform.tfstate")
//!     .build()
//!     .await?;
//!
//! // Refresh, change, persist; retried automatically when another writer wins the race.
//! manager
//!     .update(|state| {
//!         state.outputs.insert("endpoint".into(), OutputValue::new("https://example.com"));
//!     })
//!     .await?;
//!
//! for (name, output) in manager.root_output_values().await? {
//!     println!("{name} = {}", if output.sensitive { "(sensitive)".into() } else { output.value.to_string() });
//! }
//! # Ok(()) }
//! ```
//!
//! Start with [`S3Builder`] (configuration), [`RemoteState::update`] (the write loop most tools
//! want), [`StoreLocker`] (the lock sequence), [`RemoteState::history`] and
//! [`RemoteState::restore`] (history), and [`Error`] (what can go wrong, and what to do).
//!
//! ## Feature flags
//!
//! | feature | default | what it adds | what it pulls in |
//! |---|---|---|---|
//! | `cli` | yes | the `s3state` operator command (a binary; the library API is the same without it); enables `server` | `clap`, `indicatif`, `hcl-rs`, `tracing-subscriber`, `anstyle`, `humantime` |
//! | `server` | with `cli` | [`server`]: Terraform's `http` backend over S3 (`s3state serve`), embeddable | `axum`, `hyper`, `tower-http`, `tokio-rustls`, `argon2`, `toml` |
//! | `dynamodb` | with `cli` | `dynamodb`: Terraform's DynamoDB lock table (`dynamodb_table`): the lock item, taken with the `.tflock`, and the state digest | `aws-sdk-dynamodb` |
//!
//! A tool that links s3state as a library needs none of the CLI's dependencies:
//!
//! ```toml
//! [dependencies]
//! s3state = { version = "0.1", default-features = false }
//! ```
//!
//! Without features, the library depends on the AWS SDK for S3 (`aws-config`, `aws-sdk-s3`),
//! `tokio`, `serde`/`serde_json` and a few small crates. Turn on `dynamodb` or `server` alone
//! for the lock table or the gateway without the CLI.
//!
//! How the crate is layered, and where a new store, lock backend or front end goes, is in the
//! repository's `ARCHITECTURE.md`; how to build and test it, in `CONTRIBUTING.md`.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "dynamodb")]
#[cfg_attr(docsrs, doc(cfg(feature = "dynamodb")))]
pub mod dynamodb;
pub mod encryption;
pub mod error;
pub mod history;
pub mod lock;
pub mod remote;
pub mod s3;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
pub mod state;
pub mod statemgr;
pub mod store;
mod timeouts;

pub use error::{Error, LockRefusal, Result};
pub use history::{
    HistoryEntry, HistoryOptions, PruneOptions, Restored, Snapshot, VersionDetails, VersionSelector,
};
pub use lock::{LockDisabled, LockRetry, SecondaryLock, StoreLocker};
pub use remote::{
    EncryptionMigration, LockQueue, PersistedObject, RemoteState, RemoteStateOptions, UpdateLocking,
};
pub use s3::{AssumeRole, S3Builder, S3Store, ServerSideEncryption};
pub use state::{DecodeError, OutputValue, RawJson, State};
pub use statemgr::{
    LockInfo, Locker, OutputReader, Persistent, PersistentMeta, Persister, Refresher, SnapshotMeta,
    SnapshotOrdering, Transient,
};
pub use store::{ETag, Store, VersionedStore};
pub use timeouts::{TimeoutSetting, Timeouts};

/// Compiles the README's example as a doctest, so the README cannot drift from the API.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
