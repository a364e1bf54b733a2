//! Terraform's DynamoDB lock table (the S3 backend's `dynamodb_table`), as Terraform 1.15 keeps
//! it: one table, keyed by the string attribute `LockID`, holding two items per state.
//!
//! - **The lock item**: `LockID = <bucket>/<key>` (the workspace's key), `Info` = the lock info
//!   as compact JSON, created with a conditional put (`attribute_not_exists(LockID)`).
//!   [`DynamoDbLock`] takes and releases it; [`crate::StoreLocker`] takes it after the
//!   `.tflock` object and releases both, as Terraform does with both locks configured.
//! - **The digest item**: `LockID = <bucket>/<key>-md5`, `Digest` = lower-case hex MD5 of the
//!   state's body. Terraform writes it after every state write and compares it on every read;
//!   [`crate::S3Store`] does the same when the table is configured
//!   ([`crate::S3Builder::with_dynamodb_table`]).

use crate::error::{BoxError, Error, Result};
use crate::lock::SecondaryLock;
use crate::statemgr::LockInfo;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use md5::Digest as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The suffix of the digest item's `LockID` (Terraform's `stateIDSuffix`).
pub const DIGEST_SUFFIX: &str = "-md5";

/// How long a read waits for the state and its digest to agree before failing, as Terraform
/// does (its `consistencyRetryTimeout`).
pub const DEFAULT_DIGEST_WAIT: Duration = Duration::from_secs(10);

/// Between two reads of a state whose digest does not match (Terraform's poll interval).
const DIGEST_POLL: Duration = Duration::from_secs(2);

/// The lower-case hex MD5 of `body`, as Terraform stores it in `Digest`.
pub fn md5_hex(body: &[u8]) -> String {
    md5::Md5::digest(body)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// One DynamoDB lock table: the client, the table's name, and how long reads wait for a
/// digest to match.
#[derive(Debug, Clone)]
pub struct LockTable {
    client: Client,
    table: String,
    digest_wait: Duration,
}

impl LockTable {
    /// The table `table`, reached with `client`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        LockTable {
            client,
            table: table.into(),
            digest_wait: DEFAULT_DIGEST_WAIT,
        }
    }

    /// How long a read waits for the state and its digest to agree (10 s by default, as in
    /// Terraform) before failing with [`Error::DigestMismatch`].
    pub fn with_digest_wait(mut self, wait: Duration) -> Self {
        self.digest_wait = wait;
        self
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// How long a read waits for a matching digest.
    pub fn digest_wait(&self) -> Duration {
        self.digest_wait
    }

    /// The time between two reads of a state whose digest does not match yet.
    pub fn digest_poll(&self) -> Duration {
        DIGEST_POLL.min(self.digest_wait.max(Duration::from_millis(50)))
    }

    /// The lock of the state at `state_path` (`bucket/key`).
    pub fn lock_for(self: &Arc<Self>, state_path: &str) -> DynamoDbLock {
        DynamoDbLock {
            table: Arc::clone(self),
            lock_id: state_path.to_owned(),
            held: Mutex::default(),
        }
    }

    /// `dynamodb://<table>/<LockID>`, for messages.
    pub fn location(&self, lock_id: &str) -> String {
        format!("dynamodb://{}/{lock_id}", self.table)
    }

    fn store_error<E, R>(
        &self,
        operation: &'static str,
        lock_id: &str,
        err: SdkError<E, R>,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        if let Some((setting, after)) = crate::timeouts::sdk_timed_out(&err) {
            return Error::Timeout {
                operation,
                location: self.location(lock_id),
                setting,
                after,
                source: Some(Box::new(err) as BoxError),
            };
        }
        let message = match err.as_service_error() {
            Some(service) => format!(
                "{}: {}",
                service.code().unwrap_or("error"),
                service.message().unwrap_or("no message")
            ),
            None => format!("{err}"),
        };
        Error::Store {
            operation,
            location: self.location(lock_id),
            message,
            source: Some(Box::new(err) as BoxError),
        }
    }

    /// One string attribute of the item `lock_id`, read consistently; `None` when the item or
    /// the attribute is absent.
    async fn attribute(&self, lock_id: &str, name: &str) -> Result<Option<String>> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("LockID", AttributeValue::S(lock_id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| self.store_error("GetItem", lock_id, err))?;
        Ok(output
            .item
            .and_then(|mut item| item.remove(name))
            .and_then(|value| value.as_s().ok().cloned()))
    }

    /// The digest Terraform expects for the state at `state_path`: `None` when there is no
    /// digest item, or when its value is not an MD5 (Terraform ignores such a digest too).
    pub async fn digest(&self, state_path: &str) -> Result<Option<String>> {
        let lock_id = format!("{state_path}{DIGEST_SUFFIX}");
        let digest = self.attribute(&lock_id, "Digest").await?;
        Ok(digest
            .map(|d| d.to_ascii_lowercase())
            .filter(|d| d.len() == 32 && d.bytes().all(|b| b.is_ascii_hexdigit())))
    }

    /// Sets the digest of the state at `state_path` to `md5_hex`.
    pub async fn put_digest(&self, state_path: &str, md5_hex: &str) -> Result<()> {
        let lock_id = format!("{state_path}{DIGEST_SUFFIX}");
        self.client
            .put_item()
            .table_name(&self.table)
            .item("LockID", AttributeValue::S(lock_id.clone()))
            .item("Digest", AttributeValue::S(md5_hex.to_owned()))
            .send()
            .await
            .map_err(|err| self.store_error("PutItem", &lock_id, err))?;
        Ok(())
    }

    /// Removes the digest of the state at `state_path` (its state was deleted).
    pub async fn delete_digest(&self, state_path: &str) -> Result<()> {
        let lock_id = format!("{state_path}{DIGEST_SUFFIX}");
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("LockID", AttributeValue::S(lock_id.clone()))
            .send()
            .await
            .map_err(|err| self.store_error("DeleteItem", &lock_id, err))?;
        Ok(())
    }

    /// Deletes the item `lock_id` only if its `Info` is still `info`: `Ok(false)` when it was
    /// not (another lock is there, or none).
    async fn delete_lock_if(&self, lock_id: &str, info: &str) -> Result<bool> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("LockID", AttributeValue::S(lock_id.to_owned()))
            .condition_expression("Info = :info")
            .expression_attribute_values(":info", AttributeValue::S(info.to_owned()))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(true),
            Err(err) if is_condition_failed(&err) => Ok(false),
            Err(err) => Err(self.store_error("DeleteItem", lock_id, err)),
        }
    }
}

fn is_condition_failed<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// The DynamoDB lock item of one state: Terraform's `dynamodb_table` lock. Used by
/// [`crate::StoreLocker`] as its [`SecondaryLock`]; recognises a lock as ours only when its
/// `Info` is exactly what this locker wrote.
#[derive(Debug)]
pub struct DynamoDbLock {
    table: Arc<LockTable>,
    lock_id: String,
    /// The `Info` we wrote, by lock ID.
    held: Mutex<HashMap<String, String>>,
}

impl DynamoDbLock {
    /// The item's `LockID` (`bucket/key`).
    pub fn lock_id(&self) -> &str {
        &self.lock_id
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn location(&self) -> String {
        self.table.location(&self.lock_id)
    }

    async fn read_info(&self) -> Result<Option<String>> {
        self.table.attribute(&self.lock_id, "Info").await
    }

    fn locked(&self, info: Option<&str>) -> Error {
        Error::Locked {
            location: self.location(),
            holder: info
                .and_then(|info| serde_json::from_str::<LockInfo>(info).ok())
                .map(Box::new),
            waited: None,
        }
    }
}

#[async_trait]
impl SecondaryLock for DynamoDbLock {
    fn location(&self) -> String {
        DynamoDbLock::location(self)
    }

    async fn lock(&self, info: &LockInfo) -> Result<()> {
        let body = crate::state::to_go_json(info);
        let put = self
            .table
            .client
            .put_item()
            .table_name(&self.table.table)
            .item("LockID", AttributeValue::S(self.lock_id.clone()))
            .item("Info", AttributeValue::S(body.clone()))
            .condition_expression("attribute_not_exists(LockID)")
            .send()
            .await;
        match put {
            Ok(_) => {
                self.held().insert(info.id.clone(), body);
                Ok(())
            }
            Err(err) => {
                let refused = is_condition_failed(&err);
                // Either way, look: a retried request of ours may have created it.
                let there = self.read_info().await;
                match there {
                    Ok(Some(found)) if found == body => {
                        self.held().insert(info.id.clone(), body);
                        Ok(())
                    }
                    Ok(found) if refused => Err(self.locked(found.as_deref())),
                    _ => Err(Error::LockOutcomeUnknown {
                        location: self.location(),
                        id: info.id.clone(),
                        source: Box::new(self.table.store_error("PutItem", &self.lock_id, err)),
                    }),
                }
            }
        }
    }

    async fn unlock(&self, id: &str) -> Result<()> {
        let ours = self.held().get(id).cloned();
        let Some(ours) = ours else {
            return self.force_unlock(id).await;
        };
        if self.table.delete_lock_if(&self.lock_id, &ours).await? {
            self.held().remove(id);
            return Ok(());
        }
        // Not ours any more: gone (a retried unlock, or force-unlocked), or another holder's.
        self.held().remove(id);
        match self.read_info().await? {
            None => Ok(()),
            Some(other) => Err(Error::LockIdMismatch {
                location: self.location(),
                given: id.to_owned(),
                held: serde_json::from_str::<LockInfo>(&other)
                    .map(|info| info.id)
                    .unwrap_or_default(),
            }),
        }
    }

    async fn force_unlock(&self, id: &str) -> Result<()> {
        for _ in 0..3 {
            let Some(info) = self.read_info().await? else {
                return Err(Error::NotLocked {
                    location: self.location(),
                    id: id.to_owned(),
                });
            };
            let held = serde_json::from_str::<LockInfo>(&info)
                .map(|info| info.id)
                .unwrap_or_default();
            if held != id {
                return Err(Error::LockIdMismatch {
                    location: self.location(),
                    given: id.to_owned(),
                    held,
                });
            }
            // Delete exactly the item read, never a successor's.
            if self.table.delete_lock_if(&self.lock_id, &info).await? {
                self.held().remove(id);
                return Ok(());
            }
        }
        Err(Error::Store {
            operation: "DeleteItem",
            location: self.location(),
            message: format!("the lock kept changing; could not release the lock with ID {id}"),
            source: None,
        })
    }

    async fn current(&self) -> Result<Option<LockInfo>> {
        match self.read_info().await? {
            None => Ok(None),
            Some(info) => match serde_json::from_str::<LockInfo>(&info) {
                Ok(info) => Ok(Some(info)),
                Err(_) => Err(self.locked(None)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::md5_hex;

    #[test]
    fn the_digest_is_the_lower_case_hex_md5_of_the_body() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }
}
