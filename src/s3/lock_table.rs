//! Terraform's DynamoDB lock table (`dynamodb_table`) on the S3 side: the builder's settings,
//! the one table a backend and its stores share, the lock item handed to each manager, and the
//! state digest, written after every state write and compared on every read of a state
//! object, as Terraform 1.15 does. Without the `dynamodb` feature the types here are empty and
//! every hook is a no-op.

#[cfg(feature = "dynamodb")]
use super::S3Builder;
use super::S3Store;
use crate::error::Result;
use crate::store::{DeleteOutcome, ETag, Fetched, ObjectMetadata, Precondition, PutOutcome};
use bytes::Bytes;
#[cfg(feature = "dynamodb")]
use {
    crate::dynamodb::{LockTable, md5_hex},
    crate::error::Error,
    crate::store::Store,
    std::sync::Arc,
    std::time::Duration,
};

/// What the builder was told about the lock table.
#[derive(Debug, Clone, Default)]
pub(super) struct DynamoSettings {
    #[cfg(feature = "dynamodb")]
    table: Option<String>,
    #[cfg(feature = "dynamodb")]
    endpoint_url: Option<String>,
    #[cfg(feature = "dynamodb")]
    client: Option<aws_sdk_dynamodb::Client>,
    #[cfg(feature = "dynamodb")]
    digest_wait: Option<Duration>,
}

/// The table a backend and its stores share, when one is configured.
#[derive(Debug, Clone, Default)]
pub(super) struct SharedTable(#[cfg(feature = "dynamodb")] Option<Arc<LockTable>>);

/// Reads `S3STATE_DYNAMODB_TABLE` and `S3STATE_DYNAMODB_ENDPOINT_URL`; returns the error to
/// report at build when the table is set but this build cannot honour it.
pub(super) fn from_env(
    settings: &mut DynamoSettings,
) -> Option<(&'static str, &'static str, String)> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let table = var("S3STATE_DYNAMODB_TABLE")?;
    #[cfg(feature = "dynamodb")]
    {
        settings.table = Some(table);
        settings.endpoint_url = var("S3STATE_DYNAMODB_ENDPOINT_URL");
        None
    }
    #[cfg(not(feature = "dynamodb"))]
    {
        let _ = settings;
        Some((
            "dynamodb_table",
            "S3STATE_DYNAMODB_TABLE",
            format!(
                "{table:?} is set, but s3state was built without the `dynamodb` feature; without it Terraform's DynamoDB lock would be ignored"
            ),
        ))
    }
}

#[cfg(feature = "dynamodb")]
#[cfg_attr(docsrs, doc(cfg(feature = "dynamodb")))]
impl S3Builder {
    /// Terraform's `dynamodb_table`: take the lock item in this DynamoDB table as well as the
    /// `.tflock` object (after it, as Terraform does with both), keep the state digest there
    /// after every write, and compare it on every read. The DynamoDB client uses the S3
    /// client's region and credentials; its endpoint is
    /// [`S3Builder::with_dynamodb_endpoint_url`], else `AWS_ENDPOINT_URL_DYNAMODB`, else AWS's.
    pub fn with_dynamodb_table(mut self, table: impl Into<String>) -> Self {
        self.dynamodb.table = Some(table.into());
        self
    }

    /// The DynamoDB endpoint (Terraform's `endpoints.dynamodb`).
    pub fn with_dynamodb_endpoint_url(mut self, endpoint_url: impl Into<String>) -> Self {
        self.dynamodb.endpoint_url = Some(endpoint_url.into());
        self
    }

    /// A ready DynamoDB client, instead of one made from the S3 client's settings.
    pub fn with_dynamodb_client(mut self, client: aws_sdk_dynamodb::Client) -> Self {
        self.dynamodb.client = Some(client);
        self
    }

    /// How long a read waits for the state and its digest to agree before failing with
    /// [`Error::DigestMismatch`] (10 s by default, as in Terraform, which polls every 2 s).
    pub fn with_digest_wait(mut self, wait: Duration) -> Self {
        self.dynamodb.digest_wait = Some(wait);
        self
    }
}

/// The table for a backend built with `settings`; `shared` is the AWS configuration the S3
/// client was made from (region, credentials, retries), `None` when the S3 client was given.
#[cfg(feature = "dynamodb")]
pub(super) async fn open(
    settings: &DynamoSettings,
    shared: Option<aws_config::SdkConfig>,
    timeouts: &crate::timeouts::TimeoutOverrides,
) -> SharedTable {
    let Some(table) = &settings.table else {
        return SharedTable::default();
    };
    let client = match &settings.client {
        // A given client keeps its own timeouts, but for those given to the builder and
        // those it leaves unset, as the S3 client given with `with_client` does.
        Some(client) => {
            let config = client.config();
            let bounded = timeouts.applied_to(config.timeout_config());
            if config.timeout_config() == Some(&bounded) {
                client.clone()
            } else {
                aws_sdk_dynamodb::Client::from_conf(
                    config.to_builder().timeout_config(bounded).build(),
                )
            }
        }
        None => {
            // The S3 client's configuration carries the timeouts already; one loaded here
            // (the S3 client was given) is given them.
            let shared = match shared {
                Some(shared) => shared,
                None => {
                    aws_config::defaults(aws_config::BehaviorVersion::latest())
                        .timeout_config(timeouts.applied_to(None))
                        .load()
                        .await
                }
            };
            // The S3 endpoint is not DynamoDB's: only a DynamoDB endpoint is used here.
            let endpoint = settings.endpoint_url.clone().or_else(|| {
                std::env::var("AWS_ENDPOINT_URL_DYNAMODB")
                    .ok()
                    .filter(|v| !v.is_empty())
            });
            let mut config = aws_sdk_dynamodb::config::Builder::from(&shared);
            config.set_endpoint_url(endpoint);
            aws_sdk_dynamodb::Client::from_conf(config.build())
        }
    };
    let mut table = LockTable::new(client, table.clone());
    if let Some(wait) = settings.digest_wait {
        table = table.with_digest_wait(wait);
    }
    SharedTable(Some(Arc::new(table)))
}

/// Without the feature there is never a table.
#[cfg(not(feature = "dynamodb"))]
pub(super) async fn open(
    _settings: &DynamoSettings,
    _shared: Option<aws_config::SdkConfig>,
    _timeouts: &crate::timeouts::TimeoutOverrides,
) -> SharedTable {
    SharedTable::default()
}

impl S3Store {
    /// The table's lock item for this state, when a table is configured and this store holds
    /// a state: [`crate::Store::secondary_lock`], so every locker over the state takes it.
    pub(super) fn state_lock_item(&self) -> Option<std::sync::Arc<dyn crate::lock::SecondaryLock>> {
        #[cfg(feature = "dynamodb")]
        if let Some(table) = self.digest_table() {
            return Some(std::sync::Arc::new(table.lock_for(self.path())));
        }
        None
    }

    /// The same object, read without comparing the digest, which its writes still keep: for
    /// a write path that reads only to write conditionally on what it read (the gateway's),
    /// so that a digest another tool left stale does not stop the write that repairs it.
    pub fn without_digest_check(&self) -> S3Store {
        S3Store {
            compares_digest: false,
            ..self.clone()
        }
    }

    /// This store holds a state: its digest is kept in the lock table, when one is configured.
    /// (Siblings such as the `.tflock` object are not states.)
    pub(super) fn with_state_digest(mut self) -> Self {
        self.tracks_digest = true;
        self
    }

    #[cfg(feature = "dynamodb")]
    pub(super) fn digest_table(&self) -> Option<Arc<LockTable>> {
        self.tracks_digest
            .then(|| self.config.lock_table.0.clone())
            .flatten()
    }

    /// The same object, without digest bookkeeping: what the hooks read and write through.
    #[cfg(feature = "dynamodb")]
    fn without_digest(&self) -> S3Store {
        S3Store {
            tracks_digest: false,
            ..self.clone()
        }
    }

    /// The DynamoDB table keeping this state's lock item and digest, if one is configured.
    #[cfg(feature = "dynamodb")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dynamodb")))]
    pub fn dynamodb_table(&self) -> Option<&str> {
        self.config.lock_table.0.as_ref().map(|table| table.table())
    }

    /// Sets the digest in the lock table to the MD5 of the state's current body (or removes it
    /// when there is no state), and returns the digest set. For an operator repairing a digest
    /// another tool left stale; call it while holding the state's lock, so that no write
    /// comes in between.
    #[cfg(feature = "dynamodb")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dynamodb")))]
    pub async fn repair_digest(&self) -> Result<Option<String>> {
        let Some(table) = self.config.lock_table.0.clone() else {
            return Err(Error::InvalidConfig {
                field: "dynamodb_table",
                env: "S3STATE_DYNAMODB_TABLE",
                message: "no DynamoDB table is configured; there is no digest to repair".into(),
            });
        };
        match self.without_digest().get(None).await? {
            Fetched::Found(object) if !object.body.is_empty() => {
                let digest = md5_hex(&object.body);
                table.put_digest(self.path(), &digest).await?;
                Ok(Some(digest))
            }
            _ => {
                table.delete_digest(self.path()).await?;
                Ok(None)
            }
        }
    }

    /// The stored digest of this state, if any.
    #[cfg(feature = "dynamodb")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dynamodb")))]
    pub async fn stored_digest(&self) -> Result<Option<String>> {
        match &self.config.lock_table.0 {
            Some(table) => table.digest(self.path()).await,
            None => Ok(None),
        }
    }
}

/// A read of a state whose digest is kept: compared with the digest as Terraform does,
/// re-read every 2 s while they differ, and [`Error::DigestMismatch`] when they still differ
/// after the wait. `None` when the store keeps no digest (the caller reads as usual).
pub(super) async fn checked_get(
    store: &S3Store,
    if_none_match: Option<&ETag>,
) -> Option<Result<Fetched>> {
    #[cfg(feature = "dynamodb")]
    if let Some(table) = store.digest_table() {
        let plain = store.without_digest();
        if !store.compares_digest {
            return Some(plain.get(if_none_match).await);
        }
        let deadline = tokio::time::Instant::now() + table.digest_wait();
        return Some(
            async {
                loop {
                    let fetched = plain.get(if_none_match).await?;
                    let actual = match &fetched {
                        // Unchanged since a read that was compared.
                        Fetched::NotModified => return Ok(fetched),
                        Fetched::Found(object) if !object.body.is_empty() => {
                            Some(md5_hex(&object.body))
                        }
                        _ => None,
                    };
                    let expected = match table.digest(plain.path()).await {
                        Ok(Some(expected)) => expected,
                        Ok(None) => return Ok(fetched),
                        Err(error) => {
                            // Terraform goes on without the digest when it cannot read it.
                            tracing::warn!(%error, "could not read the state digest; not compared");
                            return Ok(fetched);
                        }
                    };
                    if actual.as_deref() == Some(expected.as_str()) {
                        return Ok(fetched);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::DigestMismatch {
                            location: plain.location().to_owned(),
                            table: table.table().to_owned(),
                            expected,
                            actual,
                        });
                    }
                    tracing::debug!(location = %plain.location(), "the state digest does not match yet; reading again");
                    tokio::time::sleep(table.digest_poll()).await;
                }
            }
            .await,
        );
    }
    let _ = (store, if_none_match);
    None
}

/// Sets the state's digest to the MD5 of what is stored now, when a table keeps it and it
/// says otherwise (a write whose digest update failed left it stale).
pub(super) async fn repair_stale_digest(store: &S3Store) -> Result<()> {
    #[cfg(feature = "dynamodb")]
    if let Some(table) = store.digest_table() {
        let current = match store.without_digest().get(None).await? {
            Fetched::Found(object) if !object.body.is_empty() => Some(md5_hex(&object.body)),
            _ => None,
        };
        if let Some(expected) = current
            && table.digest(store.path()).await?.as_deref() != Some(expected.as_str())
        {
            store.repair_digest().await?;
        }
    }
    let _ = store;
    Ok(())
}

/// A write of a state whose digest is kept: the digest follows a write that landed.
pub(super) async fn checked_put(
    store: &S3Store,
    body: &Bytes,
    precondition: &Precondition,
    metadata: &ObjectMetadata,
) -> Option<Result<PutOutcome>> {
    #[cfg(feature = "dynamodb")]
    if let Some(table) = store.digest_table() {
        let plain = store.without_digest();
        let outcome = plain.put(body.clone(), precondition, metadata).await;
        // A write whose answer was lost (an error, or a retry refused by the write itself) may
        // have landed: the state manager will find it among the versions and report success,
        // so the digest must follow it too. It is set only when these very bytes are what is
        // stored now, never for another writer's state.
        let landed = match &outcome {
            Ok(PutOutcome::Written(_)) => true,
            _ => matches!(
                plain.get(None).await,
                Ok(Fetched::Found(current)) if current.body == *body
            ),
        };
        if landed {
            let digest = md5_hex(body);
            let mut attempt = 1;
            while let Err(error) = table.put_digest(plain.path(), &digest).await {
                if attempt == 3 {
                    // As Terraform: the state is written; the next read reports the mismatch.
                    tracing::warn!(location = %plain.location(), %error,
                        "the state was written but its digest could not be updated; fix it with `s3state digest repair`");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                attempt += 1;
            }
        }
        return Some(outcome);
    }
    let _ = (store, body, precondition, metadata);
    None
}

/// A delete of a state whose digest is kept: the digest goes with the state.
pub(super) async fn checked_delete(
    store: &S3Store,
    if_match: Option<&ETag>,
) -> Option<Result<DeleteOutcome>> {
    #[cfg(feature = "dynamodb")]
    if let Some(table) = store.digest_table() {
        let plain = store.without_digest();
        let outcome = plain.delete(if_match).await;
        if let Ok(DeleteOutcome::Deleted | DeleteOutcome::Absent) = &outcome
            && let Err(error) = table.delete_digest(plain.path()).await
        {
            tracing::warn!(location = %plain.location(), %error, "the state was deleted but its digest could not be removed");
        }
        return Some(outcome);
    }
    let _ = (store, if_match);
    None
}
