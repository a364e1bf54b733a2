//! Terraform's `http` backend protocol over S3: GET, update (POST), LOCK, UNLOCK, DELETE, and
//! the read-only history endpoints.
//!
//! The gateway keeps nothing in memory between requests. What a later request needs is in S3:
//! the lock object (`<key>.tflock`, the one Terraform's S3 backend uses) carries in its user
//! metadata the ETag, serial and lineage of the state when the lock was taken, and every
//! state the gateway writes under a lock carries that lock's nonce. An update under the lock
//! is accepted only onto the snapshot the lock was taken on, or onto one written under the
//! same lock; anything else changed the state behind the gateway's back and is refused.

use super::Shared;
use super::auth::Principal;
use super::config::Role;
use crate::error::Error;
use crate::lock::{LOCK_NONCE_KEY, LOCK_SUFFIX};
use crate::remote::metadata_keys;
use crate::remote::release_gate::ReleaseGate;
use crate::s3::S3Store;
use crate::state::{DecodeError, State};
use crate::statemgr::LockInfo;
use crate::store::{
    DeleteOutcome, Fetched, ObjectMetadata, Precondition, PutOutcome, Store, StoredObject,
    VersionedStore,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use std::sync::Arc;

/// Lock-object metadata: the state's ETag when the lock was taken (`none` when there was no
/// state).
pub const LOCK_STATE_ETAG_KEY: &str = "s3state-gateway-state-etag";
/// Lock-object metadata: the state's serial when the lock was taken.
pub const LOCK_STATE_SERIAL_KEY: &str = "s3state-gateway-state-serial";
/// Lock-object metadata: the state's lineage when the lock was taken.
pub const LOCK_STATE_LINEAGE_KEY: &str = "s3state-gateway-state-lineage";
/// Lock- and state-object metadata: the gateway user who took the lock or wrote the state.
pub const USER_KEY: &str = "s3state-gateway-user";
/// State-object metadata: the nonce of the lock a state was written under.
pub const STATE_LOCK_NONCE_KEY: &str = "s3state-gateway-lock-nonce";

const NO_STATE: &str = "none";
const AUDIT: &str = "s3state::audit";

pub(crate) fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut message = message.into();
    message.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A held lock answered as Terraform reads it: the holder's LockInfo as JSON.
fn locked(holder: Option<&LockInfo>) -> Response {
    let body = match holder {
        Some(info) => serde_json::to_vec(info).unwrap_or_default(),
        // A lock object that is not lock info: still locked, by someone we cannot name.
        None => br#"{"ID":"","Operation":"","Info":"the lock object is not readable lock info","Who":"unknown","Version":"","Created":"0001-01-01T00:00:00Z","Path":""}"#.to_vec(),
    };
    json_response(StatusCode::LOCKED, body)
}

fn content_md5(body: &[u8]) -> String {
    use md5::Digest as _;
    BASE64.encode(md5::Md5::digest(body))
}

/// A store failure, as the client sees it: 502 (Terraform retries 5xx).
fn store_failed(error: &Error) -> Response {
    tracing::warn!(error = %error, "the store failed");
    text(
        StatusCode::BAD_GATEWAY,
        format!("the gateway could not reach the state store: {error}"),
    )
}

fn describe(state: Option<&State>) -> String {
    match state {
        Some(state) => format!("serial {} (lineage {})", state.serial, state.lineage),
        None => "no state".into(),
    }
}

fn writer_of(object: &StoredObject) -> String {
    match object.metadata.get(USER_KEY) {
        Some(user) => format!("gateway user {user:?}"),
        None if object.metadata.contains_key(metadata_keys::WRITE_ID) => {
            "an s3state client writing to S3 directly".into()
        }
        None => "a writer outside the gateway (Terraform's S3 backend or another tool)".into(),
    }
}

// ---------------------------------------------------------------------------------------
// GET

pub(crate) async fn get(store: &S3Store) -> Response {
    match store.get(None).await {
        Ok(Fetched::Found(object)) if !object.body.is_empty() => {
            let md5 = content_md5(&object.body);
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                object.body,
            )
                .into_response();
            if let Ok(value) = HeaderValue::from_str(&md5) {
                response.headers_mut().insert("content-md5", value);
            }
            response
        }
        Ok(_) => text(StatusCode::NOT_FOUND, "no state"),
        Err(error) => store_failed(&error),
    }
}

// ---------------------------------------------------------------------------------------
// The lock as the gateway sees it

struct HeldLock {
    /// `None` when the lock object is not lock info.
    info: Option<LockInfo>,
    metadata: ObjectMetadata,
    /// Held in the DynamoDB table by someone the `.tflock` object does not name (a Terraform
    /// that does not take the `.tflock`): never a gateway client's lock, so it admits no
    /// write, and releasing it is a force-unlock.
    only_in_table: bool,
    /// The `.tflock` object is there but the table's lock item is not (a lock taken halfway,
    /// or an item removed since): a Terraform locking through the table alone could take it
    /// at any moment, so it admits no write until the holder locks again.
    item_missing: bool,
}

impl HeldLock {
    fn id(&self) -> &str {
        self.info.as_ref().map(|i| i.id.as_str()).unwrap_or("")
    }

    fn describe(&self) -> String {
        match &self.info {
            Some(info) => info.to_string(),
            None => "an unreadable lock object".into(),
        }
    }

    /// Taken by the gateway's LOCK: only that LOCK binds the lock to the snapshot it was taken
    /// on (`LOCK_STATE_ETAG_KEY`), which is what fences a write under it. Any other lock (an
    /// S3-backend Terraform's `.tflock`, one taken with `s3state lock`, the gateway's own
    /// write lock, a lock held only in the table) is foreign: no gateway client holds it,
    /// whatever ID it sends (every 423 reveals the ID), so it admits no write or delete, and
    /// releasing it is a force-unlock.
    fn taken_through_gateway(&self) -> bool {
        !self.only_in_table && self.metadata.contains_key(LOCK_STATE_ETAG_KEY)
    }

    /// The answer to a write or delete sent under a foreign lock's ID.
    fn refuse_foreign(&self, nothing: &str) -> Response {
        text(
            StatusCode::LOCKED,
            format!(
                "the lock held on this state was not taken through the gateway (an S3-backend Terraform's .tflock, or `s3state lock`): {}; sending its ID does not make a gateway client its holder. {nothing}",
                self.describe()
            ),
        )
    }
}

/// The lock as the gateway sees it: the `.tflock` object and, when a table is configured, the
/// table's lock item, which a Terraform without `use_lockfile` takes alone. A lock is the
/// gateway client's only when both name the same holder.
async fn read_lock(store: &S3Store) -> Result<Option<HeldLock>, Error> {
    let object = match store.sibling(LOCK_SUFFIX).get(None).await? {
        Fetched::Found(object) => Some(HeldLock {
            info: serde_json::from_slice(&object.body).ok(),
            metadata: object.metadata,
            only_in_table: false,
            item_missing: false,
        }),
        Fetched::Absent | Fetched::NotModified => None,
    };
    let Some(table) = store.state_locker().secondary().cloned() else {
        return Ok(object);
    };
    let in_table = |info: LockInfo| HeldLock {
        info: Some(info),
        metadata: ObjectMetadata::new(),
        only_in_table: true,
        item_missing: false,
    };
    Ok(match (object, table.current().await?) {
        (None, None) => None,
        (Some(held), Some(item)) if item.id == held.id() => Some(held),
        // The table's holder decides for the Terraforms that look only there.
        (_, Some(item)) => Some(in_table(item)),
        (Some(held), None) => Some(HeldLock {
            item_missing: true,
            ..held
        }),
    })
}

/// Sets the state's digest to the MD5 of `body` (what is stored now) when a table is kept and
/// its digest says otherwise: a write whose digest update failed left it stale.
async fn repair_digest_of(store: &S3Store, body: &[u8]) {
    #[cfg(feature = "dynamodb")]
    if store.dynamodb_table().is_some() {
        let expected = crate::dynamodb::md5_hex(body);
        if let Ok(Some(digest)) = store.stored_digest().await
            && digest != expected
            && let Err(error) = store.repair_digest().await
        {
            tracing::warn!(location = %store.location(), %error, "could not repair the state digest");
        }
    }
    let _ = (store, body);
}

/// The release gate of `store`'s state, shared with every request (and every library
/// manager) over that object in this process: a write under a lock holds it open, an UNLOCK
/// closes it, and it remembers writes that got no answer (see `crate::remote::release_gate`).
fn state_gate(store: &S3Store) -> Arc<ReleaseGate> {
    // A gateway given its S3 client cannot tell the endpoint, but all its stores share that
    // client: the key alone names the object among them.
    let identity = store
        .identity()
        .unwrap_or_else(|| format!("gateway|{}", store.path()));
    ReleaseGate::for_object(Some(identity))
}

/// The settle after a write that got no answer, as the library's managers keep it.
fn unanswered_write_settle() -> std::time::Duration {
    crate::RemoteStateOptions::default().unanswered_write_settle
}

/// Releases the gateway's own lock `id` once no write relies on it and none that got no
/// answer can land under the next holder's lock.
async fn release_own_lock(
    gate: &ReleaseGate,
    locker: &crate::lock::StoreLocker<S3Store>,
    name: &str,
    id: &str,
) {
    gate.until_releasable().await;
    if let Err(error) = locker.unlock_patiently(id).await {
        tracing::warn!(state = %name, %id, error = %error, "could not release the gateway's own lock");
    }
}

/// Takes a lock for the gateway's own use (a write or delete sent without one), or the
/// response that refuses the request.
async fn take_own_lock(
    locker: &crate::lock::StoreLocker<S3Store>,
    operation: &str,
) -> Result<String, Response> {
    let info = LockInfo::new(operation).with_info("s3state gateway");
    match crate::statemgr::Locker::lock(locker, &info).await {
        Ok(id) => Ok(id),
        Err(Error::Locked { holder, .. }) => Err(locked(holder.as_deref())),
        Err(error @ Error::LockOutcomeUnknown { .. }) => Err(text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{error}; nothing was written, retry the same request"),
        )),
        Err(error) => Err(store_failed(&error)),
    }
}

// ---------------------------------------------------------------------------------------
// POST: update

pub(crate) struct UpdateRequest {
    pub(crate) who: String,
    pub(crate) name: String,
    pub(crate) store: S3Store,
    pub(crate) lock_id: Option<String>,
    pub(crate) body: Bytes,
    pub(crate) md5: Option<String>,
}

pub(crate) async fn update(shared: Arc<Shared>, request: UpdateRequest) -> Response {
    let UpdateRequest {
        who,
        name,
        store,
        lock_id,
        body,
        md5,
    } = request;
    let audit = |outcome: &str, serial: Option<u64>, version_id: Option<&str>| {
        tracing::info!(target: AUDIT, user = %who, state = %name, action = "write",
            serial = serial.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            version_id = version_id.unwrap_or("-"), outcome);
    };
    if let Some(md5) = md5
        && md5.trim() != content_md5(&body)
    {
        audit("refused: Content-MD5 mismatch", None, None);
        return text(
            StatusCode::BAD_REQUEST,
            "the body does not match its Content-MD5 header; nothing was written",
        );
    }
    let sent = match State::from_slice(&body) {
        Ok(state) => state,
        Err(DecodeError::Empty) => {
            audit("refused: empty body", None, None);
            return text(
                StatusCode::BAD_REQUEST,
                "the body is empty; an update must carry a Terraform state",
            );
        }
        Err(error) => {
            audit("refused: not a state", None, None);
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not a Terraform state this gateway accepts: {error}; nothing was written"
                ),
            );
        }
    };
    if sent.lineage.is_empty() {
        audit("refused: no lineage", Some(sent.serial), None);
        return text(
            StatusCode::BAD_REQUEST,
            "the state has no lineage; nothing was written",
        );
    }

    // The lock: an update while the state is locked must come from the holder.
    // Held open from the look at the lock to the end of the write: an UNLOCK of that lock
    // waits for it, so no Terraform can lock and read in between.
    let gate = state_gate(&store);
    let relying = gate.relying_on_lock().await;
    let lock = match read_lock(&store).await {
        Ok(lock) => lock,
        Err(error) => return store_failed(&error),
    };
    let fence = match (lock, lock_id) {
        (Some(held), None) => {
            audit("refused: locked", Some(sent.serial), None);
            shared.metrics.conflict();
            return text(
                StatusCode::LOCKED,
                format!(
                    "the state is locked ({}); an update must carry the holder's ID as ?ID=<lock id>. Nothing was written",
                    held.describe()
                ),
            );
        }
        (Some(held), Some(id)) if held.id() != id => {
            audit("refused: wrong lock ID", Some(sent.serial), None);
            shared.metrics.conflict();
            return text(
                StatusCode::CONFLICT,
                format!(
                    "lock ID {id:?} does not match the lock held on this state ({}). Nothing was written",
                    held.describe()
                ),
            );
        }
        (None, Some(id)) => {
            audit("refused: lock not held", Some(sent.serial), None);
            shared.metrics.conflict();
            return text(
                StatusCode::CONFLICT,
                format!(
                    "lock {id:?} is not held on this state (it was released or force-unlocked); nothing was written"
                ),
            );
        }
        (Some(held), Some(_)) if held.only_in_table => {
            audit("refused: locked in the lock table", Some(sent.serial), None);
            shared.metrics.conflict();
            return text(
                StatusCode::LOCKED,
                format!(
                    "the state is locked in the DynamoDB table by a Terraform that does not take the .tflock ({}); nothing was written",
                    held.describe()
                ),
            );
        }
        (Some(held), Some(_)) if !held.taken_through_gateway() => {
            audit(
                "refused: lock not taken through the gateway",
                Some(sent.serial),
                None,
            );
            shared.metrics.conflict();
            return held.refuse_foreign("Nothing was written");
        }
        (Some(held), Some(id)) if held.item_missing => {
            audit("refused: lock item missing", Some(sent.serial), None);
            shared.metrics.conflict();
            return text(
                StatusCode::CONFLICT,
                format!(
                    "lock {id:?} holds the .tflock but not the DynamoDB table's lock item (it was taken halfway, or the item was removed), so a Terraform locking through the table could write too; LOCK again. Nothing was written"
                ),
            );
        }
        (Some(held), Some(_)) => Some(held),
        (None, None) => None,
    };

    // Without a lock the gateway takes one for the write. Seeing no lock is not enough: a
    // Terraform could lock and read between that look and our write, then overwrite the
    // write with its blind PUT.
    let locker = store.state_locker();
    let own_lock = match &fence {
        Some(_) => None,
        None => match take_own_lock(&locker, "OperationTypeApply").await {
            Ok(id) => Some(id),
            Err(refused) => {
                audit("refused: locked", Some(sent.serial), None);
                shared.metrics.conflict();
                return refused;
            }
        },
    };
    let response = write_checked(&shared, &store, &who, &name, &sent, &body, fence.as_ref()).await;
    drop(relying);
    if let Some(id) = own_lock {
        release_own_lock(&gate, &locker, &name, &id).await;
    }
    response
}

/// The write itself, under the client's lock (`fence`) or the gateway's own: the serial and
/// lineage rules against what is stored now, then one conditional PUT.
async fn write_checked(
    shared: &Shared,
    store: &S3Store,
    who: &str,
    name: &str,
    sent: &State,
    body: &Bytes,
    fence: Option<&HeldLock>,
) -> Response {
    let audit = |outcome: &str, serial: Option<u64>, version_id: Option<&str>| {
        tracing::info!(target: AUDIT, user = %who, state = %name, action = "write",
            serial = serial.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            version_id = version_id.unwrap_or("-"), outcome);
    };
    // What is stored now. Read without comparing the digest: the write is conditional on what
    // is read, and sets the digest for what it writes, so a digest another tool left stale
    // does not stop the write that repairs it.
    let current = match store.without_digest_check().get(None).await {
        Ok(Fetched::Found(object)) => Some(object),
        Ok(_) => None,
        Err(error) => return store_failed(&error),
    };
    let current_state = match &current {
        Some(object) if !object.body.is_empty() => match State::from_slice(&object.body) {
            Ok(state) => Some(state),
            Err(error) => {
                audit(
                    "refused: stored object is not a state",
                    Some(sent.serial),
                    None,
                );
                return text(
                    StatusCode::CONFLICT,
                    format!(
                        "the stored object is not a state this gateway can update ({error}); nothing was written"
                    ),
                );
            }
        },
        _ => None,
    };

    // Under a lock: only onto the snapshot the lock was taken on, or one written under it.
    if let Some(held) = fence
        && let Some(bound) = held.metadata.get(LOCK_STATE_ETAG_KEY)
    {
        let nonce = held.metadata.get(LOCK_NONCE_KEY);
        let unchanged = match &current {
            None => bound == NO_STATE,
            Some(object) => {
                object.etag.as_str() == bound
                    || (nonce.is_some() && object.metadata.get(STATE_LOCK_NONCE_KEY) == nonce)
            }
        };
        if !unchanged {
            audit(
                "refused: changed behind the gateway's back",
                Some(sent.serial),
                None,
            );
            shared.metrics.conflict();
            let then = match (
                held.metadata.get(LOCK_STATE_SERIAL_KEY),
                held.metadata.get(LOCK_STATE_LINEAGE_KEY),
            ) {
                (Some(serial), Some(lineage)) => format!("serial {serial} (lineage {lineage})"),
                _ => "no state".into(),
            };
            let by = current
                .as_ref()
                .map(|object| format!(", written by {}", writer_of(object)))
                .unwrap_or_default();
            return text(
                StatusCode::CONFLICT,
                format!(
                    "the state changed behind the gateway's back while lock {} was held: it was {then} when the lock was taken, it is {} now{by}. Nothing was written; inspect the history before retrying",
                    held.id(),
                    describe(current_state.as_ref())
                ),
            );
        }
    }

    // Terraform's serial and lineage rules.
    let precondition = match (&current, &current_state) {
        (None, _) => Precondition::Create,
        (Some(object), None) => Precondition::Match(object.etag.clone()),
        (Some(object), Some(stored)) => {
            let refuse = |outcome: &str, message: String| {
                audit(outcome, Some(sent.serial), None);
                shared.metrics.conflict();
                text(StatusCode::CONFLICT, message)
            };
            if stored.lineage != sent.lineage {
                return refuse(
                    "refused: other lineage",
                    format!(
                        "the state sent has lineage {}, the stored state {} (serial {}): they are unrelated states. Nothing was written",
                        sent.lineage, stored.lineage, stored.serial
                    ),
                );
            }
            if sent.serial < stored.serial {
                return refuse(
                    "refused: older serial",
                    format!(
                        "the state sent has serial {}, older than the stored serial {}: it was made from an out-of-date state. Nothing was written",
                        sent.serial, stored.serial
                    ),
                );
            }
            if sent.serial == stored.serial {
                if object.body == body || stored.same_content(sent) {
                    // A repeat of a write already applied (go-retryablehttp re-sends on 5xx),
                    // or a persist with nothing new: success, nothing to write. A digest the
                    // first attempt failed to set is set now.
                    repair_digest_of(store, &object.body).await;
                    audit("unchanged", Some(sent.serial), object.version_id.as_deref());
                    return text(StatusCode::OK, "unchanged");
                }
                return refuse(
                    "refused: same serial, other content",
                    format!(
                        "the state sent has serial {} like the stored state, but other content: one of them was not made from the other. Nothing was written",
                        sent.serial
                    ),
                );
            }
            Precondition::Match(object.etag.clone())
        }
    };

    let write_id = uuid::Uuid::new_v4().to_string();
    let mut metadata = ObjectMetadata::from([
        (metadata_keys::SERIAL.to_owned(), sent.serial.to_string()),
        (metadata_keys::LINEAGE.to_owned(), sent.lineage.clone()),
        (
            metadata_keys::TERRAFORM_VERSION.to_owned(),
            sent.terraform_version.to_string(),
        ),
        (metadata_keys::WRITE_ID.to_owned(), write_id.clone()),
        (USER_KEY.to_owned(), who.to_owned()),
    ]);
    if let Some(parent) = current
        .as_ref()
        .and_then(|object| object.metadata.get(metadata_keys::WRITE_ID))
    {
        metadata.insert(metadata_keys::PARENT_WRITE_ID.to_owned(), parent.clone());
    }
    if let Some(nonce) = fence.and_then(|held| held.metadata.get(LOCK_NONCE_KEY)) {
        metadata.insert(STATE_LOCK_NONCE_KEY.to_owned(), nonce.clone());
    }
    let outcome = store.put(body.clone(), &precondition, &metadata).await;
    match outcome {
        Ok(PutOutcome::Written(written)) => {
            state_gate(store).none_can_land();
            shared.metrics.write();
            audit("written", Some(sent.serial), written.version_id.as_deref());
            text(StatusCode::OK, "written")
        }
        Ok(PutOutcome::PreconditionFailed) | Err(_) => {
            // Refused, or no answer: look at what is there now.
            let now = store.without_digest_check().get(None).await;
            if let Ok(Fetched::Found(object)) = &now
                && object.body == body
            {
                // The state is at this body now: no request on an older state can land.
                state_gate(store).none_can_land();
                let ours = object.metadata.get(metadata_keys::WRITE_ID) == Some(&write_id);
                audit(
                    if ours { "written" } else { "unchanged" },
                    Some(sent.serial),
                    object.version_id.as_deref(),
                );
                return text(StatusCode::OK, "written");
            }
            match outcome {
                Err(error) => {
                    audit("failed: store error", Some(sent.serial), None);
                    state_gate(store).may_land(
                        &precondition,
                        tokio::time::Instant::now() + unanswered_write_settle(),
                    );
                    store_failed(&error)
                }
                Ok(_) => {
                    audit("refused: changed during the write", Some(sent.serial), None);
                    shared.metrics.conflict();
                    let now = match now {
                        Ok(Fetched::Found(object)) => State::from_slice(&object.body).ok(),
                        _ => None,
                    };
                    text(
                        StatusCode::CONFLICT,
                        format!(
                            "the state changed while it was being written (it was {}, it is {} now). Nothing was written",
                            describe(current_state.as_ref()),
                            describe(now.as_ref())
                        ),
                    )
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// LOCK

pub(crate) async fn lock(
    shared: &Shared,
    who: &str,
    name: &str,
    store: &S3Store,
    body: &[u8],
) -> Response {
    let audit = |outcome: &str, id: &str| {
        tracing::info!(target: AUDIT, user = %who, state = %name, action = "lock", lock_id = %id, outcome);
    };
    let info: LockInfo = match serde_json::from_slice(body) {
        Ok(info) => info,
        Err(error) => {
            audit("refused: invalid lock info", "-");
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not Terraform lock info (JSON with ID, Operation, Who, Created...): {error}"
                ),
            );
        }
    };
    if info.id.trim().is_empty() {
        audit("refused: empty ID", "-");
        return text(StatusCode::BAD_REQUEST, "the lock info has an empty ID");
    }
    for _ in 0..3 {
        // The state the lock binds to (its digest is not compared: only its tag is bound).
        let bound = match store.without_digest_check().get(None).await {
            Ok(Fetched::Found(object)) => Some(object),
            Ok(_) => None,
            Err(error) => return store_failed(&error),
        };
        let bound_state = bound
            .as_ref()
            .and_then(|object| State::from_slice(&object.body).ok());
        let mut extra = ObjectMetadata::from([
            (
                LOCK_STATE_ETAG_KEY.to_owned(),
                bound.as_ref().map_or(NO_STATE.to_owned(), |object| {
                    object.etag.as_str().to_owned()
                }),
            ),
            (USER_KEY.to_owned(), who.to_owned()),
        ]);
        if let Some(state) = &bound_state {
            extra.insert(LOCK_STATE_SERIAL_KEY.to_owned(), state.serial.to_string());
            extra.insert(LOCK_STATE_LINEAGE_KEY.to_owned(), state.lineage.clone());
        }
        let locker = store.state_locker();
        match locker.lock_with_metadata(&info, &extra).await {
            Ok(id) => {
                // A writer that does not lock may have written between our read and the lock:
                // then the lock is bound to a stale snapshot. Let go and bind again.
                let after = match &bound {
                    Some(object) => store.without_digest_check().get(Some(&object.etag)).await,
                    None => store.without_digest_check().get(None).await,
                };
                let unchanged = matches!(
                    (&after, &bound),
                    (Ok(Fetched::NotModified), Some(_)) | (Ok(Fetched::Absent), None)
                );
                if unchanged {
                    audit("locked", &id);
                    return json_response(
                        StatusCode::OK,
                        serde_json::to_vec(&info).unwrap_or_default(),
                    );
                }
                if let Err(error) = crate::statemgr::Locker::unlock(&locker, &id).await {
                    audit("failed: could not rebind", &id);
                    return store_failed(&error);
                }
            }
            Err(Error::Locked { holder, .. }) => {
                if holder.as_ref().is_some_and(|holder| holder.id == info.id) {
                    // Perhaps a retry of a LOCK whose answer was lost. The lock is this
                    // client's only if the .tflock and (with a table) the table's item both
                    // are: the same ID in the table alone is someone else's lock.
                    match read_lock(store).await {
                        // A lock the gateway's LOCK did not take is never a repeat of one.
                        Ok(Some(held)) if held.id() == info.id && held.taken_through_gateway() => {
                            if held.item_missing {
                                // Taken halfway: take the table's item now, or refuse.
                                let taken = match (locker.secondary(), held.info.as_ref()) {
                                    (Some(table), Some(taken)) => table.lock(taken).await,
                                    _ => Err(Error::Locked {
                                        location: store.location().to_owned(),
                                        holder: held.info.clone().map(Box::new),
                                        waited: None,
                                    }),
                                };
                                match taken {
                                    Ok(()) => {}
                                    Err(Error::Locked { holder, .. }) => {
                                        shared.metrics.lock_wait();
                                        audit("refused: held in the lock table", &info.id);
                                        return locked(holder.as_deref());
                                    }
                                    Err(error) => {
                                        audit("failed: store error", &info.id);
                                        return store_failed(&error);
                                    }
                                }
                            }
                            audit("locked (repeated request)", &info.id);
                            return json_response(
                                StatusCode::OK,
                                serde_json::to_vec(&held.info).unwrap_or_default(),
                            );
                        }
                        Ok(Some(held)) => {
                            shared.metrics.lock_wait();
                            audit("refused: held", &info.id);
                            return locked(held.info.as_ref());
                        }
                        // Released meanwhile: take it again.
                        Ok(None) => continue,
                        Err(error) => return store_failed(&error),
                    }
                }
                shared.metrics.lock_wait();
                audit("refused: held", &info.id);
                return locked(holder.as_deref());
            }
            Err(error @ Error::LockOutcomeUnknown { .. }) => {
                audit("failed: outcome unknown", &info.id);
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the lock's outcome is unknown ({error}); retry the same request"),
                );
            }
            Err(error) => {
                audit("failed: store error", &info.id);
                return store_failed(&error);
            }
        }
    }
    audit("failed: state kept changing", &info.id);
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the state kept changing while the lock was being taken (a writer that does not lock is active); retry",
    )
}

// ---------------------------------------------------------------------------------------
// UNLOCK

pub(crate) async fn unlock(
    principal: &Principal,
    name: &str,
    store: &S3Store,
    body: &[u8],
) -> Response {
    let who = &principal.name;
    let audit = |outcome: &str, id: &str| {
        tracing::info!(target: AUDIT, user = %who, state = %name, action = "unlock", lock_id = %id, outcome);
    };
    let given: Option<LockInfo> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice(body) {
            Ok(info) => Some(info),
            Err(error) => {
                audit("refused: invalid lock info", "-");
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not Terraform lock info: {error}"),
                );
            }
        }
    };
    let given_id = given.map(|info| info.id).filter(|id| !id.is_empty());
    let held = match read_lock(store).await {
        Ok(Some(held)) => held,
        Ok(None) => {
            // Already released: a retried UNLOCK whose first answer was lost, or a
            // force-unlock of a lock someone else released first.
            audit("not locked", given_id.as_deref().unwrap_or("-"));
            return text(StatusCode::OK, "not locked");
        }
        Err(error) => return store_failed(&error),
    };
    let force = match &given_id {
        Some(id) if id == held.id() && held.taken_through_gateway() => false,
        Some(id) if id != held.id() => {
            audit("refused: wrong ID", id);
            return text(
                StatusCode::CONFLICT,
                format!(
                    "lock ID {id:?} does not match the lock held ({}); nothing was unlocked",
                    held.describe()
                ),
            );
        }
        _ if principal.role_on(name) >= Some(Role::Admin) => true,
        _ if held.only_in_table => {
            // No gateway client holds a lock found only in the table: releasing it is a
            // force-unlock, whatever ID is sent.
            audit("refused: force-unlock needs admin", held.id());
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "the lock is held in the DynamoDB table by a Terraform that does not take the .tflock ({}); releasing it is a force-unlock, which needs the admin role",
                    held.describe()
                ),
            );
        }
        Some(_) => {
            // The holder's ID, but of a lock no gateway client took: a force-unlock.
            audit("refused: force-unlock needs admin", held.id());
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "the lock was not taken through the gateway ({}; an S3-backend Terraform's .tflock, or `s3state lock`): releasing it is a force-unlock, which needs the admin role; nothing was unlocked",
                    held.describe()
                ),
            );
        }
        None => {
            audit("refused: force-unlock needs admin", held.id());
            return text(
                StatusCode::FORBIDDEN,
                format!(
                    "an UNLOCK without the holder's lock ID is a force-unlock, which needs the admin role; the lock is {}",
                    held.describe()
                ),
            );
        }
    };
    // Closed while the lock goes: writes under it are done, and none that got no answer
    // can still land under the next holder's lock.
    let gate = state_gate(store);
    let _closed = loop {
        let left = gate.settle_left();
        if !left.is_zero() {
            tracing::warn!(location = %store.location(), wait = ?left,
                "a write got no answer and may still land; keeping the lock until it cannot");
            tokio::time::sleep(left).await;
        }
        let closed = gate.releasing().await;
        if gate.settle_left().is_zero() {
            break closed;
        }
    };
    let locker = store.state_locker();
    match locker.force_unlock(held.id()).await {
        Ok(()) | Err(Error::NotLocked { .. }) => {
            audit(if force { "force-unlocked" } else { "unlocked" }, held.id());
            text(StatusCode::OK, "unlocked")
        }
        Err(error @ Error::LockIdMismatch { .. }) => {
            audit("refused: lock changed", held.id());
            text(
                StatusCode::CONFLICT,
                format!("{error}; nothing was unlocked"),
            )
        }
        Err(error) => {
            audit("failed: store error", held.id());
            store_failed(&error)
        }
    }
}

// ---------------------------------------------------------------------------------------
// DELETE

pub(crate) async fn delete(
    shared: &Shared,
    who: &str,
    name: &str,
    store: &S3Store,
    lock_id: Option<&str>,
) -> Response {
    let audit = |outcome: &str, version_id: Option<&str>| {
        tracing::info!(target: AUDIT, user = %who, state = %name, action = "delete",
            version_id = version_id.unwrap_or("-"), outcome);
    };
    // Deletion happens under the lock: the caller's (with ?ID=) or one the gateway takes.
    let gate = state_gate(store);
    let relying = gate.relying_on_lock().await;
    let locker = store.state_locker();
    let own_lock = match read_lock(store).await {
        Err(error) => return store_failed(&error),
        Ok(Some(held)) => match lock_id {
            Some(id) if id == held.id() && !held.only_in_table && !held.taken_through_gateway() => {
                audit("refused: lock not taken through the gateway", None);
                shared.metrics.conflict();
                return held.refuse_foreign("Nothing was deleted");
            }
            Some(id) if id == held.id() && held.taken_through_gateway() && !held.item_missing => {
                None
            }
            _ => {
                audit("refused: locked", None);
                shared.metrics.conflict();
                return locked(held.info.as_ref());
            }
        },
        Ok(None) => match take_own_lock(&locker, "OperationTypeInvalid").await {
            Ok(id) => Some(id),
            Err(refused) => {
                audit("refused: locked", None);
                return refused;
            }
        },
    };
    let result = delete_under_lock(store).await;
    drop(relying);
    if let Some(id) = own_lock {
        release_own_lock(&gate, &locker, name, &id).await;
    }
    match result {
        Ok(Some(version_id)) => {
            audit("deleted", version_id.as_deref());
            text(StatusCode::OK, "deleted")
        }
        Ok(None) => {
            audit("not found", None);
            text(StatusCode::OK, "no state")
        }
        Err(DeleteError::Changed) => {
            audit("refused: changed", None);
            shared.metrics.conflict();
            text(
                StatusCode::CONFLICT,
                "the state changed while it was being deleted; nothing was deleted",
            )
        }
        Err(DeleteError::Store(error)) => {
            audit("failed: store error", None);
            store_failed(&error)
        }
    }
}

enum DeleteError {
    Changed,
    Store(Error),
}

/// Deletes the current snapshot only (If-Match its ETag; where the store cannot delete
/// conditionally, a re-read under the lock). `Ok(None)`: there was no state.
async fn delete_under_lock(store: &S3Store) -> Result<Option<Option<String>>, DeleteError> {
    let unchecked = store.without_digest_check();
    let current = match unchecked.get(None).await.map_err(DeleteError::Store)? {
        Fetched::Found(object) => object,
        _ => return Ok(None),
    };
    match store
        .delete(Some(&current.etag))
        .await
        .map_err(DeleteError::Store)?
    {
        DeleteOutcome::Deleted => Ok(Some(current.version_id)),
        DeleteOutcome::Absent => Ok(None),
        DeleteOutcome::PreconditionFailed => Err(DeleteError::Changed),
        DeleteOutcome::ConditionalUnsupported => {
            match unchecked
                .get(Some(&current.etag))
                .await
                .map_err(DeleteError::Store)?
            {
                Fetched::NotModified => {}
                Fetched::Absent => return Ok(None),
                Fetched::Found(_) => return Err(DeleteError::Changed),
            }
            store.delete(None).await.map_err(DeleteError::Store)?;
            Ok(Some(current.version_id))
        }
    }
}

// ---------------------------------------------------------------------------------------
// History

/// One version in `GET /_history/<name>`.
#[derive(Debug, serde::Serialize)]
struct VersionJson {
    version_id: String,
    last_modified: String,
    size: u64,
    is_latest: bool,
    is_delete_marker: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lineage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    terraform_version: Option<String>,
}

pub(crate) async fn history(store: S3Store, query: &HeaderQuery) -> Response {
    if let Some(version_id) = &query.version {
        if version_id.is_empty()
            || version_id.len() > 1024
            || !version_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+=".contains(c))
        {
            return text(StatusCode::BAD_REQUEST, "not a version id");
        }
        return match store.get_version(version_id).await {
            Ok(object) => {
                let md5 = content_md5(&object.body);
                let mut response = (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    object.body,
                )
                    .into_response();
                if let Ok(value) = HeaderValue::from_str(&md5) {
                    response.headers_mut().insert("content-md5", value);
                }
                response
            }
            Err(Error::VersionNotFound { .. }) => {
                text(StatusCode::NOT_FOUND, "no such version of this state")
            }
            Err(error) => store_failed(&error),
        };
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let manager = crate::RemoteState::new(store);
    let entries = match manager.history(&crate::HistoryOptions::default()).await {
        Ok(entries) => entries,
        Err(error) => return store_failed(&error),
    };
    use futures::StreamExt as _;
    let manager = &manager;
    let versions: Vec<VersionJson> = futures::stream::iter(entries.into_iter().take(limit))
        .map(|entry| async move {
            let meta = if entry.version.is_delete_marker {
                None
            } else {
                manager.version_meta(&entry.version).await.ok().flatten()
            };
            let version = entry.version;
            VersionJson {
                version_id: version.version_id,
                last_modified: version
                    .last_modified
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                size: version.size,
                is_latest: version.is_latest,
                is_delete_marker: version.is_delete_marker,
                serial: meta.as_ref().map(|m| m.serial),
                lineage: meta.as_ref().map(|m| m.lineage.clone()),
                terraform_version: meta.as_ref().map(|m| m.terraform_version.to_string()),
            }
        })
        .buffered(8)
        .collect()
        .await;
    json_response(
        StatusCode::OK,
        serde_json::to_vec_pretty(&versions).unwrap_or_default(),
    )
}

/// The query parameters the gateway reads.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct HeaderQuery {
    #[serde(rename = "ID")]
    pub(crate) id: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) limit: Option<usize>,
}

/// The `Content-MD5` request header, if any.
pub(crate) fn md5_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("content-md5")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}
