//! Terraform's `http` backend protocol over S3: GET, update (POST), LOCK, UNLOCK, DELETE, and
//! the read-only history endpoints.
//!
//! This module translates between HTTP and the library, and owns no rules. Each request works
//! through a [`RemoteState`] over its state: a POST is [`RemoteState::write_sent`] (the
//! library's verdict and its one write primitive), LOCK, UNLOCK and DELETE are the library's
//! locks held across requests ([`RemoteState::lock_bound`], `unlock_bound`, `delete_bound`:
//! bound to a snapshot, owned by the principal that took them). Library errors become
//! statuses here: a refusal is 409, 423 or 403 with the library's message, a store failure
//! 502 (Terraform retries 5xx).

use super::audit::{Audit, Event};
use super::metrics::Metrics;
use crate::encryption::StateEncryption;
use crate::error::{Error, LockRefusal};
use crate::remote::{
    BoundLockTaken, BoundUnlock, BoundWrite, RemoteState, RemoteStateOptions, SentState,
    UpdateLocking, metadata_keys,
};
use crate::s3::S3Store;
use crate::state::{DecodeError, State};
use crate::statemgr::LockInfo;
use crate::store::{Fetched, Store, VersionedStore};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// Lock-object metadata: the state's ETag when the lock was taken (`none` when there was no
/// state).
pub const LOCK_STATE_ETAG_KEY: &str = metadata_keys::LOCK_STATE_ETAG;
/// Lock-object metadata: the state's serial when the lock was taken.
pub const LOCK_STATE_SERIAL_KEY: &str = metadata_keys::LOCK_STATE_SERIAL;
/// Lock-object metadata: the state's lineage when the lock was taken.
pub const LOCK_STATE_LINEAGE_KEY: &str = metadata_keys::LOCK_STATE_LINEAGE;
/// Lock- and state-object metadata: the gateway user who took the lock or wrote the state.
pub const USER_KEY: &str = metadata_keys::AUTHOR;
/// State-object metadata: the nonce of the lock a state was written under.
pub const STATE_LOCK_NONCE_KEY: &str = metadata_keys::LOCK_NONCE;

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

/// A store failure, as the client sees it: 502 (Terraform retries 5xx) with a short message
/// and a request id; the SDK's error chain (endpoints, bucket, keys) goes only to the log,
/// under that id.
fn store_failed(error: &Error) -> Response {
    let request_id = uuid::Uuid::new_v4();
    tracing::warn!(%request_id, error = %error, "the store failed");
    // The one failure the client can act on (as Terraform's S3 backend reports it): digests
    // only, no bucket, table or key.
    if let Error::DigestMismatch {
        expected, actual, ..
    } = error
    {
        let actual = actual.as_deref().unwrap_or("(no state)");
        return text(
            StatusCode::BAD_GATEWAY,
            format!(
                "the state's MD5 is {actual} but the digest in the lock table is {expected}; \
                 an operator must check the state and repair the digest (request id {request_id})"
            ),
        );
    }
    text(
        StatusCode::BAD_GATEWAY,
        format!(
            "the gateway could not complete this with the state store; retry (request id {request_id})"
        ),
    )
}

// ---------------------------------------------------------------------------------------
// GET

/// A state's bytes as Terraform's `http` backend reads them: JSON, with its `Content-MD5`.
fn state_response(body: Bytes) -> Response {
    let md5 = content_md5(&body);
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&md5) {
        response.headers_mut().insert("content-md5", value);
    }
    response
}

pub(crate) async fn get<S: GatewayStore>(store: &S, encryption: Encryption<'_>) -> Response {
    match store.get(None).await {
        Ok(Fetched::Found(object)) if !object.body.is_empty() => {
            plaintext_response(&manager(store, encryption), object.body).await
        }
        Ok(_) => text(StatusCode::NOT_FOUND, "no state"),
        Err(error) => store_failed(&error),
    }
}

/// The OpenTofu encryption the gateway stores states with (`[encryption]`), if any.
pub(crate) type Encryption<'a> = Option<&'a Arc<StateEncryption>>;

/// A stored body as Terraform reads it: decrypted when it is OpenTofu's envelope (Terraform's
/// `http` backend sees plaintext), refused without the key.
async fn plaintext_response<S: Store>(manager: &RemoteState<S>, body: Bytes) -> Response {
    match manager.open_body(body).await {
        Ok(plaintext) => state_response(plaintext),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{error}; nothing was written"),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// One request about one state

/// A store the gateway serves states from: the handle a request's writes go through.
pub trait GatewayStore: Store + Clone {
    /// The same object, as a write path reads it: only to write conditionally on what it read
    /// (S3 with `dynamodb_table`: without comparing Terraform's digest, which the write sets).
    fn for_writes(&self) -> Self;
}

impl GatewayStore for S3Store {
    fn for_writes(&self) -> Self {
        self.without_digest_check()
    }
}

impl GatewayStore for crate::store::memory::MemoryStore {
    fn for_writes(&self) -> Self {
        self.clone()
    }
}

/// What a state request asks, in Terraform's `http` backend protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateMethod {
    /// GET: the state.
    Get,
    /// POST: store the body as the new state (under `lock_id` when given).
    Update,
    /// LOCK: take the lock, with the body as lock info.
    Lock,
    /// UNLOCK: release it (the body names the lock; none, or another's, is a force-unlock).
    Unlock,
    /// DELETE: delete the state (under `lock_id` when given).
    Delete,
}

/// One request about one state, authenticated and authorised: what the gateway's HTTP layer
/// hands over after checking credentials and grants, and what [`handle_state_request`]
/// answers over any store, with no sockets (the simulation drives the gateway this way).
#[derive(Debug, Clone)]
pub struct StateRequest {
    /// What is asked.
    pub method: StateMethod,
    /// The state's name (its path in the URL).
    pub state_name: String,
    /// Who asks: the lock's owner and the snapshot's author.
    pub principal: String,
    /// Whether the principal is an admin on this state (may force-unlock).
    pub admin: bool,
    /// `?ID=`: the lock the request is sent under.
    pub lock_id: Option<String>,
    /// The body.
    pub body: Bytes,
    /// The `Content-MD5` header, if any.
    pub content_md5: Option<String>,
}

/// The answer to a [`StateRequest`].
#[derive(Debug, Clone)]
pub struct StateResponse {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

/// Answers one state request over `store`, as the gateway does behind its HTTP layer.
pub async fn handle_state_request<S: GatewayStore>(
    store: &S,
    request: StateRequest,
) -> StateResponse {
    let response = answer(
        &Metrics::default(),
        &Audit::default(),
        store,
        None,
        request,
        Duration::ZERO,
    )
    .await;
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    StateResponse { status, body }
}

/// The gateway's answer to one state request, counted in `metrics`. A LOCK of a state whose
/// lock was taken through this gateway waits up to `lock_wait` for its turn before asking the
/// store (`limits.lock_wait_secs`; see `RemoteStateOptions::bound_lock_wait`).
pub(crate) async fn answer<S: GatewayStore>(
    metrics: &Metrics,
    log: &Audit,
    store: &S,
    encryption: Encryption<'_>,
    request: StateRequest,
    lock_wait: Duration,
) -> Response {
    let name = request.state_name.clone();
    let who = request.principal.clone();
    match request.method {
        StateMethod::Get => get(store, encryption).await,
        StateMethod::Update => update(metrics, log, store, encryption, request).await,
        StateMethod::Lock => {
            let manager = manager_waiting(store, encryption, lock_wait);
            lock(metrics, log, &who, &name, manager, &request.body).await
        }
        StateMethod::Unlock => {
            unlock(
                log,
                &who,
                request.admin,
                &name,
                store,
                encryption,
                &request.body,
            )
            .await
        }
        StateMethod::Delete => {
            delete(
                metrics,
                log,
                &who,
                &name,
                store,
                encryption,
                request.lock_id.as_deref(),
            )
            .await
        }
    }
}

// ---------------------------------------------------------------------------------------
// The library's answers, as HTTP

/// The manager a request works through: over the state read without comparing Terraform's
/// digest (the write path reads only to write conditionally on what it read, and sets the
/// digest itself), and refusing at once rather than waiting when the state is locked.
pub(crate) fn manager<S: GatewayStore>(store: &S, encryption: Encryption<'_>) -> RemoteState<S> {
    manager_waiting(store, encryption, Duration::ZERO)
}

/// [`manager`], whose `lock_bound` waits up to `lock_wait` for its turn in this process.
fn manager_waiting<S: GatewayStore>(
    store: &S,
    encryption: Encryption<'_>,
    lock_wait: Duration,
) -> RemoteState<S> {
    RemoteState::with_options(
        store.for_writes(),
        RemoteStateOptions {
            update_locking: UpdateLocking::Lock {
                timeout: Duration::ZERO,
            },
            encryption: encryption.cloned(),
            bound_lock_wait: lock_wait,
            ..RemoteStateOptions::default()
        },
    )
}

/// The status a client gets for a library error, and whether it is a refusal (counted as a
/// conflict) rather than a failure. `nothing` ends the message ("Nothing was written").
fn refusal(error: &Error, nothing: &str) -> Response {
    let status = match error {
        Error::Locked { holder, .. } => return locked(holder.as_deref()),
        Error::LockRefused { refusal, .. } => match refusal {
            LockRefusal::Foreign { .. } | LockRefusal::OnlyInTable { .. } => StatusCode::LOCKED,
            LockRefusal::NotOwner { .. } | LockRefusal::ForceUnlockNeeded { .. } => {
                StatusCode::FORBIDDEN
            }
            LockRefusal::KeptChanging => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::CONFLICT,
        },
        Error::LineageMismatch { .. }
        | Error::SerialRegression { .. }
        | Error::SerialCollision { .. }
        | Error::Conflict { .. }
        | Error::LockIdMismatch { .. }
        // The stored object is not a state this gateway can update.
        | Error::Decode { .. } => StatusCode::CONFLICT,
        Error::MissingLineage { .. } | Error::InvalidLockInfo { .. } => StatusCode::BAD_REQUEST,
        Error::LockOutcomeUnknown { .. } => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{error}; nothing was written, retry the same request"),
            );
        }
        _ => return store_failed(error),
    };
    text(status, format!("{error}. {nothing}"))
}

/// Whether an error is the library refusing the request (as opposed to the store failing).
fn is_refusal(error: &Error) -> bool {
    matches!(
        error,
        Error::Locked { .. }
            | Error::LockRefused { .. }
            | Error::LineageMismatch { .. }
            | Error::SerialRegression { .. }
            | Error::SerialCollision { .. }
            | Error::Conflict { .. }
            | Error::LockIdMismatch { .. }
            | Error::Decode { .. }
            | Error::MissingLineage { .. }
    )
}

/// A short outcome for the audit line.
fn outcome_of(error: &Error) -> String {
    match error {
        Error::Locked { .. } => "refused: locked".into(),
        Error::LockRefused { refusal, .. } => format!("refused: {}", refusal_name(refusal)),
        Error::LineageMismatch { .. } => "refused: other lineage".into(),
        Error::SerialRegression { .. } => "refused: older serial".into(),
        Error::SerialCollision { .. } => "refused: same serial, other content".into(),
        Error::Conflict { .. } => "refused: changed during the write".into(),
        Error::LockIdMismatch { .. } => "refused: lock changed".into(),
        Error::Decode { .. } => "refused: stored object is not a state".into(),
        Error::MissingLineage { .. } => "refused: no lineage".into(),
        Error::LockOutcomeUnknown { .. } => "failed: outcome unknown".into(),
        _ => "failed: store error".into(),
    }
}

fn refusal_name(refusal: &LockRefusal) -> &'static str {
    match refusal {
        LockRefusal::NotHeld { .. } => "lock not held",
        LockRefusal::WrongId { .. } => "wrong lock ID",
        LockRefusal::Foreign { .. } => "lock not taken through the gateway",
        LockRefusal::OnlyInTable { .. } => "locked in the lock table",
        LockRefusal::ItemMissing { .. } => "lock item missing",
        LockRefusal::NotOwner { .. } => "lock owned by another principal",
        LockRefusal::ChangedBehind { .. } => "changed behind the gateway's back",
        LockRefusal::ForceUnlockNeeded { .. } => "force-unlock needs admin",
        LockRefusal::KeptChanging => "state kept changing",
    }
}

// ---------------------------------------------------------------------------------------
// POST: update

pub(crate) async fn update<S: GatewayStore>(
    metrics: &Metrics,
    log: &Audit,
    store: &S,
    encryption: Encryption<'_>,
    request: StateRequest,
) -> Response {
    let StateRequest {
        principal: who,
        state_name: name,
        lock_id,
        body,
        content_md5: md5,
        ..
    } = request;
    let audit = |outcome: &str, serial: Option<u64>, version_id: Option<&str>| {
        log.record(Event {
            principal: Some(&who),
            state: Some(&name),
            serial,
            version_id,
            lock_id: lock_id.as_deref(),
            outcome,
        });
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
    let serial = sent.serial;
    let written = manager(store, encryption)
        .write_sent(SentState {
            state: sent,
            body,
            lock_id: lock_id.as_deref(),
            author: &who,
        })
        .await;
    match written {
        Ok(BoundWrite::Done { version_id, .. }) => {
            metrics.write();
            audit("written", Some(serial), version_id.as_deref());
            text(StatusCode::OK, "written")
        }
        Ok(BoundWrite::Unchanged { version_id }) => {
            audit("unchanged", Some(serial), version_id.as_deref());
            text(StatusCode::OK, "unchanged")
        }
        Err(error) => {
            audit(&outcome_of(&error), Some(serial), None);
            if is_refusal(&error) {
                metrics.conflict();
            }
            refusal(&error, "Nothing was written")
        }
    }
}

// ---------------------------------------------------------------------------------------
// LOCK

/// The audit line of a LOCK or UNLOCK: its outcome and the lock ID (`-` for none).
fn lock_audit<'a>(log: &'a Audit, who: &'a str, name: &'a str) -> impl Fn(&str, &str) + 'a {
    move |outcome, id| {
        log.record(Event {
            principal: Some(who),
            state: Some(name),
            lock_id: (id != "-").then_some(id),
            outcome,
            ..Event::default()
        });
    }
}

/// LOCK, through `manager` (the state's, whose `lock_bound` waits its turn in this process as
/// [`manager_waiting`] set it up).
pub(crate) async fn lock<S: GatewayStore>(
    metrics: &Metrics,
    log: &Audit,
    who: &str,
    name: &str,
    manager: RemoteState<S>,
    body: &[u8],
) -> Response {
    let audit = lock_audit(log, who, name);
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
    match manager.lock_bound(&info, who).await {
        Ok(BoundLockTaken::Taken(info)) => {
            audit("locked", &info.id);
            json_response(
                StatusCode::OK,
                serde_json::to_vec(&info).unwrap_or_default(),
            )
        }
        Ok(BoundLockTaken::Repeated(info)) => {
            audit("locked (repeated request)", &info.id);
            json_response(
                StatusCode::OK,
                serde_json::to_vec(&info).unwrap_or_default(),
            )
        }
        Err(error) => {
            audit(&outcome_of(&error), &info.id);
            if matches!(error, Error::Locked { .. }) {
                metrics.lock_wait();
            }
            refusal(&error, "Nothing was locked")
        }
    }
}

// ---------------------------------------------------------------------------------------
// UNLOCK

pub(crate) async fn unlock<S: GatewayStore>(
    log: &Audit,
    who: &str,
    may_force: bool,
    name: &str,
    store: &S,
    encryption: Encryption<'_>,
    body: &[u8],
) -> Response {
    let audit = lock_audit(log, who, name);
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
    let shown_id = given_id.as_deref().unwrap_or("-");
    match manager(store, encryption)
        .unlock_bound(given_id.as_deref(), who, may_force)
        .await
    {
        Ok(BoundUnlock::NotLocked) => {
            audit("not locked", shown_id);
            text(StatusCode::OK, "not locked")
        }
        Ok(BoundUnlock::ForceReleased) => {
            audit("force-unlocked", shown_id);
            text(StatusCode::OK, "unlocked")
        }
        Ok(_) => {
            audit("unlocked", shown_id);
            text(StatusCode::OK, "unlocked")
        }
        Err(error) => {
            audit(&outcome_of(&error), shown_id);
            refusal(&error, "Nothing was unlocked")
        }
    }
}

// ---------------------------------------------------------------------------------------
// DELETE

pub(crate) async fn delete<S: GatewayStore>(
    metrics: &Metrics,
    log: &Audit,
    who: &str,
    name: &str,
    store: &S,
    encryption: Encryption<'_>,
    lock_id: Option<&str>,
) -> Response {
    let audit = |outcome: &str, version_id: Option<&str>| {
        log.record(Event {
            principal: Some(who),
            state: Some(name),
            version_id,
            lock_id,
            outcome,
            ..Event::default()
        });
    };
    match manager(store, encryption).delete_bound(lock_id, who).await {
        Ok(BoundWrite::Done { version_id, .. }) => {
            audit("deleted", version_id.as_deref());
            text(StatusCode::OK, "deleted")
        }
        Ok(_) => {
            audit("not found", None);
            text(StatusCode::OK, "no state")
        }
        Err(error) => {
            audit(&outcome_of(&error), None);
            if is_refusal(&error) {
                metrics.conflict();
            }
            refusal(&error, "Nothing was deleted")
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
    /// Who wrote it; `null` when unknown (Terraform writing to S3 directly records none).
    author: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<usize>,
}

pub(crate) async fn history(
    store: S3Store,
    encryption: Encryption<'_>,
    query: &HeaderQuery,
) -> Response {
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
            Ok(object) => plaintext_response(&manager(&store, encryption), object.body).await,
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
            let details = manager
                .version_details(&entry.version)
                .await
                .unwrap_or_default();
            let meta = details.meta;
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
                author: details.author,
                operation: details.operation,
                resources: details.resources,
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
