//! The one error type of the crate.
//!
//! Every variant carries enough context (where, what was expected, what was found) for an
//! operator to act on the message alone. The enum is `#[non_exhaustive]`: match the variants
//! you handle and keep a fallback arm.

use crate::encryption::EncryptionError;
use crate::state::DecodeError;
use crate::state::meta::{LockInfo, SnapshotMeta};
use std::time::Duration;

/// A boxed error from a lower layer (the AWS SDK, an I/O source).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Shorthand for `Result<T, s3state::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in s3state.
///
/// Most callers handle a few variants and pass the rest on. Pushing a state file under the
/// lock, as `terraform state push` does:
///
/// ```no_run
/// use s3state::{
///     Error, LockInfo, Locker, Persister, Refresher, RemoteState, S3Store, State, Transient,
/// };
///
/// async fn push(manager: &RemoteState<S3Store>, state: State) -> Result<(), String> {
///     let result = async {
///         let id = manager.lock(&LockInfo::new("OperationTypeApply")).await?;
///         let persisted = async {
///             manager.refresh_state().await?;
///             manager.write_state(state);
///             manager.persist_state().await
///         }
///         .await;
///         manager.unlock(&id).await?; // always, whatever the outcome
///         persisted
///     }
///     .await;
///     match result {
///         Ok(()) => Ok(()),
///         // Someone else holds the lock: say who, since when, and for what.
///         Err(Error::Locked { holder: Some(holder), .. }) => Err(format!(
///             "locked by {} since {} ({}); lock ID {}",
///             holder.who, holder.created, holder.operation, holder.id
///         )),
///         // Another writer won the race. Nothing was overwritten: refresh and try again.
///         Err(Error::Conflict { remote: Some(now), .. }) => Err(format!(
///             "the state moved on to serial {} while we wrote; refresh and retry",
///             now.serial
///         )),
///         // The file is a different state altogether (another lineage): refuse it.
///         Err(Error::LineageMismatch { local, remote, .. }) => Err(format!(
///             "the file is state {local}, the bucket holds state {remote}; not pushing"
///         )),
///         // `Error` is `#[non_exhaustive]`: keep a fallback arm. Its message says what to do.
///         Err(other) => Err(other.to_string()),
///     }
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is missing or invalid. Nothing was sent to the store.
    #[error("invalid configuration for `{field}` (env {env}): {message}")]
    InvalidConfig {
        /// The builder field (and CLI flag) name.
        field: &'static str,
        /// The environment variable that sets it.
        env: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// The snapshot stored at `location` could not be decoded as Terraform state.
    #[error("cannot read the state at {location}: {source}")]
    Decode {
        /// Where the bytes came from, such as `s3://bucket/key`.
        location: String,
        /// The decode failure, with position or versions where relevant.
        #[source]
        source: DecodeError,
    },

    /// Another writer changed the state since we last read it, so our conditional write
    /// was refused. Nothing was overwritten. Refresh, re-apply the change, and persist again
    /// (or use `update`, which does exactly that).
    #[error("conflict writing {location}: {}", describe_conflict(.remote))]
    Conflict {
        /// Where the write was attempted.
        location: String,
        /// What is known of the snapshot that is there now: `None` when it was deleted or
        /// could not be decoded.
        remote: Option<SnapshotMeta>,
    },

    /// The in-memory state belongs to a different lineage than the persisted one; writing it
    /// would replace an unrelated state.
    #[error(
        "refusing to write state of lineage {local} over {location}, which holds lineage {remote}: \
         they are unrelated states"
    )]
    LineageMismatch {
        /// Where the write was attempted.
        location: String,
        /// The lineage of the state we were asked to write.
        local: String,
        /// The lineage of the persisted state.
        remote: String,
    },

    /// The in-memory state has an older serial than the persisted one; writing it would roll
    /// back newer changes.
    #[error(
        "refusing to write state with serial {local} over {location}, which holds the newer serial {remote}: \
         refresh first"
    )]
    SerialRegression {
        /// Where the write was attempted.
        location: String,
        /// The serial of the state we were asked to write.
        local: u64,
        /// The serial of the persisted state.
        remote: u64,
    },

    /// `update` lost the race more often than its attempt budget allows.
    #[error(
        "gave up updating {location} after {attempts} attempts, each lost to a concurrent writer"
    )]
    UpdateContention {
        /// Where the update was attempted.
        location: String,
        /// How many refresh–change–persist rounds were tried.
        attempts: u32,
    },

    /// Someone else holds the lock. The holder's info says who, since when, and for what.
    #[error("{location} is locked{}: {}", describe_wait(.waited), describe_holder(.holder))]
    Locked {
        /// The lock object.
        location: String,
        /// The holder's lock info; `None` when the lock body could not be read, or when the
        /// time ran out queueing behind another update of this state in this process.
        holder: Option<Box<LockInfo>>,
        /// How long we waited for it, when a timeout was given.
        waited: Option<Duration>,
    },

    /// An unlock named a different lock than the one there; the lock was left in place.
    #[error("cannot unlock {location} with ID {given}: the lock there has ID {held}")]
    LockIdMismatch {
        /// The lock object.
        location: String,
        /// The ID the caller gave.
        given: String,
        /// The ID of the lock actually there.
        held: String,
    },

    /// An unlock found no lock at all.
    #[error("cannot unlock {location} with ID {id}: it is not locked")]
    NotLocked {
        /// The lock object.
        location: String,
        /// The ID the caller gave.
        id: String,
    },

    /// No version with this id exists for this object (or it is a delete marker, which has no
    /// content).
    #[error("{location} has no version {version_id}{}", if *.is_delete_marker { " with content: it is a delete marker" } else { "" })]
    VersionNotFound {
        /// The object.
        location: String,
        /// The id asked for.
        version_id: String,
        /// True when the id names a delete marker.
        is_delete_marker: bool,
    },

    /// The workspace already exists.
    #[error("workspace `{workspace}` already exists at {location}")]
    WorkspaceExists {
        /// The workspace name.
        workspace: String,
        /// Its state object.
        location: String,
    },

    /// The workspace does not exist.
    #[error("workspace `{workspace}` does not exist (no state at {location})")]
    WorkspaceNotFound {
        /// The workspace name.
        workspace: String,
        /// Where its state would be.
        location: String,
    },

    /// The default workspace cannot be deleted, as in Terraform.
    #[error("the default workspace cannot be deleted")]
    DefaultWorkspaceUndeletable,

    /// The bucket does not exist (or is not visible with these credentials).
    #[error("bucket `{bucket}` does not exist")]
    BucketNotFound {
        /// The bucket name.
        bucket: String,
    },

    /// The bucket does not have versioning enabled, which s3state requires by default so
    /// that every snapshot is kept.
    #[error(
        "bucket `{bucket}` has versioning {status}; s3state keeps every snapshot through bucket versioning. \
         Enable it with `aws s3api put-bucket-versioning --bucket {bucket} --versioning-configuration Status=Enabled`, \
         or opt out with `S3Builder::with_versioning_required(false)` (S3STATE_REQUIRE_VERSIONING=false)"
    )]
    VersioningNotEnabled {
        /// The bucket name.
        bucket: String,
        /// What the bucket reported: `disabled` (never enabled) or `suspended`.
        status: String,
    },

    /// A change would need a serial after the largest one (2^64 − 1): it was not written.
    #[error(
        "cannot write {location}: its serial is already the largest possible, so a change cannot \
         be numbered after it; nothing was written"
    )]
    SerialExhausted {
        /// The state.
        location: String,
    },

    /// A state with the same serial as the stored one but other content was pushed: it was
    /// not made from the stored snapshot, so writing it could undo someone's change.
    #[error(
        "refusing to push a state with serial {serial} over {location}, which holds different content \
         under the same serial: pull the current state and apply your change to it, or push with force"
    )]
    SerialCollision {
        /// Where the push was attempted.
        location: String,
        /// The serial both have.
        serial: u64,
    },

    /// A request under a lock that a client holds across requests (the HTTP gateway's
    /// LOCK, then POST, DELETE or UNLOCK under its ID) was refused: see [`LockRefusal`].
    /// Nothing was written, deleted or released.
    #[error("{refusal} ({location})")]
    LockRefused {
        /// The state.
        location: String,
        /// Why.
        refusal: LockRefusal,
    },

    /// A workspace whose state still tracks resources was not deleted: they would be left
    /// with no state to manage them. Delete it with force (`workspace delete --force`) if that
    /// is meant; the bucket's versions keep the snapshot either way.
    #[error(
        "workspace {workspace:?} ({location}) is not empty: its state tracks {resources} \
         resource instance(s); destroy them first, or delete it with --force"
    )]
    WorkspaceNotEmpty {
        /// The workspace.
        workspace: String,
        /// Its state.
        location: String,
        /// How many managed resource instances the state tracks.
        resources: usize,
    },

    /// A state that must be stored exactly as sent (a Terraform `http` backend's POST) has no
    /// lineage: filling one in would store other bytes than were sent, and a state without a
    /// lineage cannot be told apart from an unrelated one.
    #[error("refusing to write {location}: the state has no lineage; nothing was written")]
    MissingLineage {
        /// Where the write was attempted.
        location: String,
    },

    /// A write failed without an answer, and it was not among the state's versions when they
    /// were checked. A request still in flight could still land, but only onto the unchanged
    /// snapshot it was conditional on: check the state before writing the same change again.
    #[error(
        "writing {location} failed, and it was not among the state's versions when checked \
         (a request still in flight could land only onto the unchanged snapshot it was \
         conditional on): {source}"
    )]
    WriteFailed {
        /// Where the write was attempted.
        location: String,
        /// The store's failure.
        #[source]
        source: Box<Error>,
    },

    /// A write failed without an answer, and whether it landed could not be checked (the
    /// lookup failed too). It may have been applied: refresh before retrying.
    #[error(
        "writing {location} failed and whether it was applied is unknown ({source}); \
         refresh before retrying, and look for s3state-write-id {} among the state's versions",
        .write_ids.join(" or ")
    )]
    WriteOutcomeUnknown {
        /// Where the write was attempted.
        location: String,
        /// The write ids (object metadata `s3state-write-id`) that may have landed.
        write_ids: Vec<String>,
        /// The failure.
        #[source]
        source: Box<Error>,
    },

    /// Taking the lock failed without an answer, and the lock was not there when we looked;
    /// but a request still in flight may create it later. If a lock with this ID appears, it
    /// is ours and nobody holds it: remove it with `force-unlock`.
    #[error(
        "taking the lock {location} failed without an answer ({source}); a lock with ID {id} may \
         still appear, and nobody would hold it: if `lock-info` shows it, remove it with force-unlock {id}"
    )]
    LockOutcomeUnknown {
        /// The lock object.
        location: String,
        /// The ID of the lock that may appear.
        id: String,
        /// The store's failure.
        #[source]
        source: Box<Error>,
    },

    /// A `write_state` was thrown away before it was persisted: another task sharing the
    /// manager tried to persist it, failed, and refreshed. Nothing of it was written; build
    /// the change again on the refreshed state.
    #[error(
        "the state given to write_state for {location} was discarded before it was persisted: \
         another task's persist of it failed and a refresh replaced it. Nothing of it was written; \
         apply the change again to the refreshed state"
    )]
    WriteDiscarded {
        /// Where the write was meant to go.
        location: String,
    },

    /// The lock info given to `lock` cannot be used (an empty ID, say). Nothing was written.
    #[error("invalid lock info for {location}: {message}")]
    InvalidLockInfo {
        /// The lock object.
        location: String,
        /// What is wrong.
        message: String,
    },

    /// The store accepted a conditional write it should have refused, so it ignores
    /// `If-Match`/`If-None-Match` (some S3-compatible stores do): compare-and-swap and the
    /// lock protect nothing there, and s3state stops rather than go on. `evidence` names the
    /// writes that prove it. Check the store with `s3state probe`. The only other cause is
    /// someone deleting versions, or copying an old version back, by hand.
    #[error(
        "the store holding {location} ignores conditional writes: {evidence}. s3state stops, because its \
         compare-and-swap and lock rely on the store refusing such writes; check the store with \
         `s3state probe` and look at the state's history (the only other cause is versions deleted, \
         or an old version copied back, by hand)"
    )]
    StoreIgnoresConditions {
        /// The object written.
        location: String,
        /// What was seen: the write ids and versions involved.
        evidence: String,
    },

    /// The store refused a conditional write as not implemented (`501 NotImplemented` to
    /// `If-Match` or `If-None-Match` on PutObject, as Backblaze B2 answered). Nothing was
    /// written. Without conditional writes neither the lock nor compare-and-swap can be
    /// enforced, and s3state does not fall back to unconditional writes: that would be the
    /// silent loss of updates it exists to prevent. Check the store with `s3state probe`.
    #[error(
        "the store holding {location} does not implement conditional writes ({answer}); nothing was \
         written. s3state needs If-None-Match and If-Match on PutObject for its lock and its \
         compare-and-swap and does not write without them; check the store with `s3state probe`"
    )]
    ConditionalWritesUnsupported {
        /// The object that was to be written.
        location: String,
        /// The store's answer, such as `501 NotImplemented`.
        answer: String,
    },

    /// The store's listing of the state's versions contradicts itself or the object: the
    /// current object exists but no listed version is it, or a truncated listing gave no
    /// marker to go on from, or a marker that does not move, or was cut among the key's own
    /// versions after listing another key's first (so the rest may never be listed). s3state refuses to report such a
    /// listing as the history (an empty history would read as "no versions"); nothing was
    /// changed. SeaweedFS does this when ListObjectVersions pages under a prefix that other
    /// keys share; `s3state probe` checks the store for it.
    #[error(
        "the version listing of {location} cannot be trusted: {evidence}. Nothing was changed; \
         check the store with `s3state probe` (paged ListObjectVersions)"
    )]
    InconsistentListing {
        /// The object whose versions were listed.
        location: String,
        /// What contradicted what.
        evidence: String,
    },

    /// The state's body does not match the MD5 digest Terraform keeps in the DynamoDB lock table
    /// (`dynamodb_table`), after waiting for them to agree as Terraform does. Another tool wrote
    /// the state without updating the digest, or a write is still settling. Check the state,
    /// then set the digest to the body's (`s3state digest repair`).
    #[error("the state at {location} does not have the expected content: its MD5 is {}, the digest in DynamoDB table {table} is {expected}; check the state, then set the digest with `s3state digest repair`", .actual.as_deref().unwrap_or("(no state)"))]
    DigestMismatch {
        /// The state object.
        location: String,
        /// The DynamoDB table holding the digest.
        table: String,
        /// The digest stored in the table (lower-case hex MD5).
        expected: String,
        /// The MD5 of the body read, or `None` when there is no state object.
        actual: Option<String>,
    },

    /// Writing a state's bytes to the caller's output failed (a closed pipe, a full disk).
    /// What was written before the failure is incomplete.
    #[error("writing {location} out failed: {source}; the output is incomplete")]
    Output {
        /// The object being copied.
        location: String,
        /// The output's error.
        #[source]
        source: std::io::Error,
    },

    /// STS did not give the credentials of the role to assume (`assume_role`): the role does
    /// not exist or does not trust the base credentials, the external ID or session policy
    /// is refused, or STS cannot be reached. Nothing was read or written.
    #[error("cannot assume role {role_arn}: {message}")]
    AssumeRole {
        /// The role's ARN.
        role_arn: String,
        /// STS's answer, or why there was none.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// A request to S3, DynamoDB or STS was given up on because one of its [`Timeouts`] ran
    /// out: the store (or something between, such as a proxy) did not answer in time. For a
    /// read nothing changed. For a write this is *no answer*, not a refusal: the write may
    /// still land, so the state manager looks it up and reports [`Error::WriteFailed`] or
    /// [`Error::WriteOutcomeUnknown`] (and taking a lock, [`Error::LockOutcomeUnknown`]), with
    /// this as the source.
    ///
    /// [`Timeouts`]: crate::Timeouts
    #[error(
        "{operation} {location} timed out: no answer within the {setting}{} (after the SDK's \
         retries); if the store is only slow, raise it with {} or {}",
        describe_after(.after), .setting.flag(), .setting.env()
    )]
    Timeout {
        /// The operation, such as `GetObject` or `PutObject`.
        operation: &'static str,
        /// The object, bucket, table item or role addressed.
        location: String,
        /// The bound that ran out.
        setting: crate::TimeoutSetting,
        /// Its value, when the SDK said.
        after: Option<Duration>,
        /// The SDK's error.
        #[source]
        source: Option<BoxError>,
    },

    /// The store failed in a way not covered above (network, permissions, throttling after
    /// retries). The source carries the store's own error code and message.
    #[error("{operation} {location} failed: {message}")]
    Store {
        /// The operation, such as `GetObject`.
        operation: &'static str,
        /// The object or bucket addressed.
        location: String,
        /// A one-line description, including the store's error code when it gave one.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// OpenTofu state encryption refused the state at `location` (see [`EncryptionError`]
    /// for which case: no key, a failed decryption naming each method tried, an envelope
    /// whose serial or lineage is not its state's, an unknown version, plaintext where it is
    /// refused). Nothing was written. No secret is in the message.
    #[error("{location}: {source}")]
    Encryption {
        /// The state (or version) concerned.
        location: String,
        /// What went wrong.
        #[source]
        source: EncryptionError,
    },
}

/// Why a request under a client's lock was refused ([`Error::LockRefused`]). Each names the
/// lock held, so the client can tell its own lock from another's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LockRefusal {
    /// The request named a lock, and no lock is held on the state.
    #[error("lock {id:?} is not held on this state (it was released or force-unlocked)")]
    NotHeld {
        /// The ID the request named.
        id: String,
    },
    /// The request named another lock than the one held.
    #[error("lock ID {given:?} does not match the lock held on this state ({holder})")]
    WrongId {
        /// The ID the request named.
        given: String,
        /// The lock held.
        holder: String,
    },
    /// The lock held was not taken through the gateway (an S3-backend Terraform's `.tflock`,
    /// `s3state lock`): no gateway client holds it, whatever ID it sends.
    #[error(
        "the lock held on this state was not taken through the gateway (an S3-backend \
         Terraform's .tflock, or `s3state lock`): {holder}; sending its ID does not make a \
         gateway client its holder"
    )]
    Foreign {
        /// The lock held.
        holder: String,
    },
    /// The lock is held in the DynamoDB table alone, by a Terraform that does not take the
    /// `.tflock`.
    #[error(
        "the state is locked in the DynamoDB table by a Terraform that does not take the \
         .tflock ({holder})"
    )]
    OnlyInTable {
        /// The lock held.
        holder: String,
    },
    /// The `.tflock` is held but the table's lock item is not (taken halfway, or removed
    /// since): a Terraform locking through the table could write too.
    #[error(
        "lock {id:?} holds the .tflock but not the DynamoDB table's lock item (it was taken \
         halfway, or the item was removed), so a Terraform locking through the table could \
         write too; LOCK again"
    )]
    ItemMissing {
        /// The lock's ID.
        id: String,
    },
    /// The lock belongs to another principal: only the principal that took a lock writes,
    /// repeats or releases under it.
    #[error(
        "the lock held on this state belongs to {owner:?}, not to {requester:?}: only the \
         principal that took a lock writes, repeats or releases under it ({holder})"
    )]
    NotOwner {
        /// Who took the lock.
        owner: String,
        /// Who asked.
        requester: String,
        /// The lock held.
        holder: String,
    },
    /// The state changed behind the lock's back while it was held: a write under it would
    /// replace a snapshot its holder never saw.
    #[error(
        "the state changed behind the gateway's back while lock {id} was held: it was {then} \
         when the lock was taken, it is {now} now{by}; inspect the history before retrying"
    )]
    ChangedBehind {
        /// The lock's ID.
        id: String,
        /// The snapshot the lock was taken on.
        then: String,
        /// The snapshot stored now.
        now: String,
        /// Who wrote it, when known (", written by ...").
        by: String,
    },
    /// Releasing a lock one does not hold is a force-unlock, which needs the admin role.
    #[error(
        "releasing a lock without being its holder is a force-unlock, which needs the admin \
         role; the lock is {holder}"
    )]
    ForceUnlockNeeded {
        /// The lock held.
        holder: String,
    },
    /// The state kept changing while the lock was being bound to it.
    #[error(
        "the state kept changing while the lock was being taken (a writer that does not lock \
         is active); retry"
    )]
    KeptChanging,
}

fn describe_conflict(remote: &Option<SnapshotMeta>) -> String {
    match remote {
        Some(meta) => format!(
            "it now holds serial {} of lineage {} (terraform_version {}); refresh and retry",
            meta.serial, meta.lineage, meta.terraform_version
        ),
        None => "the state there changed or was deleted since we read it; refresh and retry".into(),
    }
}

fn describe_wait(waited: &Option<Duration>) -> String {
    waited.map_or(String::new(), |w| {
        format!(" (gave up after {:.1}s)", w.as_secs_f64())
    })
}

fn describe_after(after: &Option<Duration>) -> String {
    after.map_or(String::new(), |after| format!(" of {after:?}"))
}

fn describe_holder(holder: &Option<Box<LockInfo>>) -> String {
    match holder {
        Some(info) => info.to_string(),
        None => "the lock object exists but its content is not readable lock info".into(),
    }
}

impl Error {
    /// True for [`Error::Conflict`]: the write lost a race and may be retried after a refresh.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// True for [`Error::Timeout`], or an error caused by one (a write or lock whose request
    /// timed out: [`Error::WriteFailed`], [`Error::WriteOutcomeUnknown`],
    /// [`Error::LockOutcomeUnknown`]).
    pub fn is_timeout(&self) -> bool {
        match self {
            Error::Timeout { .. } => true,
            Error::WriteFailed { source, .. }
            | Error::WriteOutcomeUnknown { source, .. }
            | Error::LockOutcomeUnknown { source, .. } => source.is_timeout(),
            _ => false,
        }
    }
}
