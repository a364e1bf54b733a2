//! The gateway's web page, `/ui/`: server-rendered HTML, no JavaScript, under the same
//! authentication and grants as the API (the browser sends basic auth).
//!
//! | page | shows |
//! |---|---|
//! | `GET /ui/[?prefix=<folder/>&q=<text>&after=<name>]` | the states the principal may read, a folder at a time, or those whose name contains `q`; a page at a time |
//! | `GET /ui/state/<name>[?page=N]` | the lock holder, and the history as a timeline (version, author, time, serial, resources added, changed, removed), a page at a time |
//! | `GET /ui/diff/<name>?from=<version>&to=<version>[&page=N]` | what changed, by resource address and attribute, sensitive values masked |
//! | `GET /ui/outputs/<name>[?version=<version>]` | the outputs, sensitive values masked |
//! | `GET /ui/unlock/<name>?id=<lock id>` | admins: the force-unlock confirmation |
//! | `POST /ui/unlock/<name>` | admins: force-unlock (CSRF token and confirmation required), audit-logged |
//! | `GET /ui/style.css` | the stylesheet (the one resource served without credentials) |
//!
//! Every page reads and diffs through the library ([`RemoteState`], [`StateDiff`],
//! [`attribute_changes`]) and owns no rules; a force-unlock is the library's
//! [`RemoteState::unlock_bound`], as the API's admin UNLOCK is. Every response under `/ui`
//! carries [`secure`]'s headers (a strict Content-Security-Policy, no framing, no caching).

mod catalog;
mod html;

use super::audit::{Audit, Event};
use super::auth::Principal;
use super::config::Role;
use super::names;
use super::protocol;
use crate::remote::RemoteState;
use crate::s3::{S3Backend, S3Store};
use crate::state::{
    ChangeKind, InstanceView, SENSITIVE_PLACEHOLDER, State, StateDiff, attribute_changes,
};
use crate::store::{Fetched, Headed, ObjectMetadata, ObjectVersion, Store, VersionedStore};
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use html::{esc, query_value};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

/// States and folders per page of the state list.
const LIST_PAGE: usize = 50;
/// Versions per page of a history.
const HISTORY_PAGE: usize = 20;
/// Changed resources per page of a diff.
const DIFF_PAGE: usize = 100;
/// Per-state requests (HEAD, GET) at once when a page needs several.
const PARALLEL: usize = 16;
/// The largest form a POST may carry.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// The Content-Security-Policy of every UI response: nothing but the gateway's own
/// stylesheet and forms; no script, no frame, no plugin, no base URL.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` is the web UI's.
pub(crate) fn is_ui_path(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Middleware: the security headers on every response to a `/ui` request, whatever
/// answered it (the UI, a 401, a 404, a timeout). State content is never cached.
pub(crate) async fn secure(request: Request, next: Next) -> Response {
    let ui = is_ui_path(request.uri().path());
    let mut response = next.run(request).await;
    if ui {
        let headers = response.headers_mut();
        for (name, value) in [
            ("content-security-policy", CONTENT_SECURITY_POLICY),
            ("x-frame-options", "DENY"),
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cross-origin-opener-policy", "same-origin"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// `GET /ui/style.css`: static, the same for everyone, so served without credentials (a
/// browser fetching a stylesheet may not resend them).
pub(crate) async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        html::STYLESHEET,
    )
        .into_response()
}

/// What a UI request is served with: the store, and who asks.
pub(crate) struct UiRequest<'a> {
    /// The bucket the states are in.
    pub(crate) backend: &'a S3Backend,
    /// The gateway's key prefix.
    pub(crate) key_prefix: &'a str,
    /// The authenticated principal.
    pub(crate) principal: &'a Principal,
    /// This request's audit lines.
    pub(crate) audit: &'a Audit,
    /// The gateway's `[encryption]`: states are read through the library, which decrypts
    /// them, so pages show what Terraform sees and never an envelope's keys.
    pub(crate) encryption: protocol::Encryption<'a>,
}

/// Answers an authenticated request under `/ui`.
pub(crate) async fn handle(ui: UiRequest<'_>, request: Request) -> Response {
    // The parts alone (a body is not `Sync`, so no reference to the request is held across
    // an await).
    let (parts, body) = request.into_parts();
    let request = &parts.uri;
    let path = request.path().to_owned();
    let rest = &path["/ui".len()..];
    let method = parts.method.clone();
    if rest.is_empty() {
        return redirect("/ui/");
    }
    if rest == "/" {
        return only_get(&method).unwrap_or(ui.list(request).await);
    }
    let Some((page, name)) = rest[1..].split_once('/') else {
        return error_page(&ui, StatusCode::NOT_FOUND, "No such page.");
    };
    let name = match names::state_name(&format!("/{name}")) {
        Ok(name) => name.to_owned(),
        Err(problem) => {
            return error_page(
                &ui,
                StatusCode::BAD_REQUEST,
                &format!("Not a valid state name: {problem}"),
            );
        }
    };
    let needed = if method == Method::POST {
        Role::Admin
    } else {
        Role::Read
    };
    if ui.principal.role_on(&name) < Some(needed) {
        ui.audit.record(Event {
            principal: Some(&ui.principal.name),
            state: Some(&name),
            outcome: &format!("refused: no {} role (web UI)", needed.as_str()),
            ..Event::default()
        });
        return error_page(
            &ui,
            StatusCode::FORBIDDEN,
            &format!("You lack the {} role on {name:?}.", needed.as_str()),
        );
    }
    // HEAD is answered as GET (the server drops the body).
    let read = method == Method::GET || method == Method::HEAD;
    match (page, &method) {
        ("state", _) if read => ui.state_page(&name, request).await,
        ("diff", _) if read => ui.diff_page(&name, request).await,
        ("outputs", _) if read => ui.outputs_page(&name, request).await,
        ("unlock", _) if read => ui.unlock_confirmation(&name, request).await,
        ("unlock", &Method::POST) => ui.force_unlock(&name, body).await,
        ("state" | "diff" | "outputs", _) => only_get(&method)
            .unwrap_or_else(|| error_page(&ui, StatusCode::NOT_FOUND, "No such page.")),
        _ => error_page(&ui, StatusCode::NOT_FOUND, "No such page."),
    }
}

fn only_get(method: &Method) -> Option<Response> {
    (method != Method::GET && method != Method::HEAD).then(|| {
        protocol::text(
            StatusCode::METHOD_NOT_ALLOWED,
            "this page is read-only: use GET",
        )
    })
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn error_page(ui: &UiRequest<'_>, status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<h1>{}</h1><p>{}</p><p><a href=\"/ui/\">All states</a></p>",
        status.as_u16(),
        esc(message)
    );
    html_response(status, html::page("Error", &ui.principal.name, &body))
}

/// A store failure as a page: a short message and a request id; the error goes to the log.
fn store_failed(ui: &UiRequest<'_>, error: &dyn std::fmt::Display) -> Response {
    let request_id = uuid::Uuid::new_v4();
    tracing::warn!(%request_id, error = %error, "the web UI could not read the store");
    error_page(
        ui,
        StatusCode::BAD_GATEWAY,
        &format!("The state store could not be read; retry (request id {request_id})."),
    )
}

fn library_failed(ui: &UiRequest<'_>, error: &crate::Error) -> Response {
    match error {
        crate::Error::VersionNotFound { version_id, .. } => error_page(
            ui,
            StatusCode::NOT_FOUND,
            &format!("There is no version {version_id:?} of this state."),
        ),
        _ => store_failed(ui, error),
    }
}

fn query<T: serde::de::DeserializeOwned + Default>(uri: &axum::http::Uri) -> Result<T, String> {
    if uri.query().is_none() {
        return Ok(T::default());
    }
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|axum::extract::Query(query)| query)
        .map_err(|error| format!("the query string is not valid: {error}"))
}

/// The author of a version, from the metadata stored beside it; `None` when it has none
/// (then pages say "unknown", never a guess). The one place the UI reads an author: the
/// library's reader of the metadata it writes (`remote::metadata::author`).
fn author_of(metadata: &ObjectMetadata) -> Option<String> {
    crate::remote::metadata::author(metadata)
}

fn author_cell(author: Option<&str>) -> String {
    match author {
        Some(author) => esc(author),
        None => "<span class=\"muted\">unknown</span>".into(),
    }
}

fn state_link(name: &str) -> String {
    format!(
        "<a href=\"/ui/state/{}\" class=\"mono\">{}</a>",
        esc(name),
        esc(name)
    )
}

/// The per-process key of the force-unlock CSRF tokens.
fn csrf_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        // Two v4 UUIDs: 244 bits from the operating system's random source.
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key
    })
}

/// The CSRF token of a force-unlock form: HMAC-SHA256 (per-process key) of the principal,
/// the state and the lock id, so that it is good for that principal, that state and that
/// lock only, and only from a page this process served.
fn csrf_token(principal: &str, state: &str, lock_id: &str) -> String {
    use sha2::Digest as _;
    let key = csrf_key();
    let pad = |byte: u8| -> [u8; 64] {
        let mut block = [byte; 64];
        for (out, k) in block.iter_mut().zip(key) {
            *out ^= k;
        }
        block
    };
    let mut inner = sha2::Sha256::new();
    inner.update(pad(0x36));
    for part in [principal, state, lock_id] {
        inner.update((part.len() as u64).to_be_bytes());
        inner.update(part.as_bytes());
    }
    let mut outer = sha2::Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    let mac: [u8; 32] = outer.finalize().into();
    mac.iter().fold(String::with_capacity(64), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

#[derive(serde::Deserialize, Default)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    q: String,
    after: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct PageQuery {
    #[serde(default)]
    page: usize,
}

#[derive(serde::Deserialize, Default)]
struct DiffQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    page: usize,
}

#[derive(serde::Deserialize, Default)]
struct VersionQuery {
    version: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct UnlockQuery {
    #[serde(default)]
    id: String,
}

#[derive(serde::Deserialize, Default)]
struct UnlockForm {
    #[serde(default)]
    id: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

/// What the state list shows of one state besides its name.
struct StateRow {
    serial: Option<u64>,
    author: Option<String>,
    locked: Option<bool>,
}

/// One version in a timeline.
struct VersionRow {
    version: ObjectVersion,
    serial: Option<u64>,
    author: Option<String>,
    /// Resources added, changed and removed since the previous version, when both decode.
    counts: Option<(usize, usize, usize)>,
    outputs: Option<usize>,
}

impl UiRequest<'_> {
    fn store(&self, name: &str) -> S3Store {
        // Pages only read: the DynamoDB digest (a write path's check) is not waited for.
        self.backend
            .store_at_key(names::state_key(self.key_prefix, name))
            .without_digest_check()
    }

    /// The library's manager over a state, with the gateway's encryption: every state a page
    /// shows is read and decoded through it.
    fn manager(&self, store: S3Store) -> RemoteState<S3Store> {
        protocol::manager(&store, self.encryption)
    }

    /// The state in a body read from the store, decrypted when the gateway encrypts; `None`
    /// when it is not a state (or cannot be decrypted).
    async fn decode(&self, store: &S3Store, body: bytes::Bytes) -> Option<State> {
        self.manager(store.clone())
            .decode_snapshot(body, "current")
            .await
            .ok()
    }

    fn page(&self, status: StatusCode, title: &str, body: &str) -> Response {
        html_response(status, html::page(title, &self.principal.name, body))
    }

    fn readable(&self, name: &str) -> bool {
        self.principal.role_on(name).is_some()
    }

    // -----------------------------------------------------------------------------------
    // The state list

    async fn list(&self, request: &axum::http::Uri) -> Response {
        let query: ListQuery = match query(request) {
            Ok(query) => query,
            Err(message) => return error_page(self, StatusCode::BAD_REQUEST, &message),
        };
        let folder = query.prefix.trim_start_matches('/');
        if !folder.is_empty()
            && (!folder.ends_with('/')
                || names::check_segments(folder.trim_end_matches('/')).is_err())
        {
            return error_page(
                self,
                StatusCode::BAD_REQUEST,
                "prefix must be a folder: path segments ending in '/'",
            );
        }
        let search = Some(query.q.trim()).filter(|q| !q.is_empty());
        let base = if self.key_prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.key_prefix.trim_end_matches('/'))
        };
        let probe = self.store("probe");
        let listed = catalog::list(
            probe.client(),
            &catalog::ListRequest {
                bucket: self.backend.bucket(),
                base: &base,
                folder,
                search,
                after: query.after.as_deref(),
                page_size: LIST_PAGE,
            },
            |name| names::state_name(&format!("/{name}")).is_ok(),
            |name, is_folder| {
                if is_folder {
                    self.readable(name.trim_end_matches('/'))
                } else {
                    self.readable(name)
                }
            },
        )
        .await;
        let listing = match listed {
            Ok(listing) => listing,
            Err(error) => return store_failed(self, &error),
        };
        let rows: Vec<StateRow> = bounded(
            listing
                .states
                .iter()
                .map(|state| Box::pin(self.state_row(&state.name, state.locked)) as Boxed<'_, _>)
                .collect(),
            PARALLEL,
        )
        .await;

        let mut body = String::new();
        body.push_str("<h1>States</h1><div class=\"crumbs\"><a href=\"/ui/\">all</a>");
        let mut so_far = String::new();
        for segment in folder.split_terminator('/') {
            so_far.push_str(segment);
            so_far.push('/');
            let _ = write!(
                body,
                " / <a href=\"/ui/?prefix={}\">{}</a>",
                esc(&query_value(&so_far)),
                esc(segment)
            );
        }
        body.push_str("</div>");
        let _ = write!(
            body,
            "<form method=\"get\" action=\"/ui/\"><input type=\"hidden\" name=\"prefix\" value=\"{}\">\
             <input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"search names under this folder\" aria-label=\"search\"> \
             <input type=\"submit\" value=\"Search\"></form>",
            esc(folder),
            esc(search.unwrap_or("")),
        );
        if let Some(search) = search {
            let _ = write!(
                body,
                "<p class=\"muted\">States under <code>{}</code> whose name contains <b>{}</b> \
                 ({} keys read for this page).</p>",
                esc(if folder.is_empty() { "/" } else { folder }),
                esc(search),
                listing.keys_scanned
            );
        }
        body.push_str(
            "<table id=\"states\"><tr><th>State</th><th>Serial</th><th>Last writer</th>\
             <th>Last modified</th><th>Lock</th></tr>",
        );
        for sub in &listing.folders {
            let shown = &sub[folder.len()..];
            let _ = write!(
                body,
                "<tr class=\"folder\"><td colspan=\"5\"><a href=\"/ui/?prefix={}\">{}</a></td></tr>",
                esc(&query_value(sub)),
                esc(shown)
            );
        }
        for (state, row) in listing.states.iter().zip(&rows) {
            let lock = match row.locked {
                Some(true) => "<span class=\"locked\">locked</span>",
                Some(false) => "<span class=\"free\">free</span>",
                None => "<span class=\"muted\">?</span>",
            };
            let _ = write!(
                body,
                "<tr class=\"state\"><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{lock}</td></tr>",
                state_link(&state.name),
                row.serial.map_or_else(|| "—".into(), |s| s.to_string()),
                author_cell(row.author.as_deref()),
                state.last_modified.map(html::time).unwrap_or_default(),
            );
        }
        if listing.folders.is_empty() && listing.states.is_empty() {
            body.push_str(
                "<tr><td colspan=\"5\" class=\"muted\">No states here that you may read.</td></tr>",
            );
        }
        body.push_str("</table><div class=\"pager\">");
        if query.after.is_some() {
            let _ = write!(
                body,
                "<a href=\"/ui/?prefix={}&amp;q={}\">First page</a>",
                esc(&query_value(folder)),
                esc(&query_value(search.unwrap_or("")))
            );
        }
        if let Some(after) = &listing.next_after {
            let _ = write!(
                body,
                "<a id=\"next\" href=\"/ui/?prefix={}&amp;q={}&amp;after={}\">Next page</a>",
                esc(&query_value(folder)),
                esc(&query_value(search.unwrap_or(""))),
                esc(&query_value(after))
            );
        }
        body.push_str("</div>");
        self.page(StatusCode::OK, "States", &body)
    }

    /// Serial, author and (when the listing did not tell) lock status of one state: a HEAD,
    /// and a GET only for a state s3state did not write (no serial in its metadata).
    async fn state_row(&self, name: &str, locked: Option<bool>) -> StateRow {
        let store = self.store(name);
        let (mut serial, mut author) = (None, None);
        let metadata = match store.head().await {
            Ok(Headed::Found(head)) => Some(head.metadata),
            Ok(Headed::Absent) => None,
            _ => match store.get(None).await {
                Ok(Fetched::Found(object)) => {
                    serial = self.decode(&store, object.body).await.map(|s| s.serial);
                    Some(object.metadata)
                }
                _ => None,
            },
        };
        if let Some(metadata) = &metadata {
            author = author_of(metadata);
            if serial.is_none() {
                serial = crate::history::meta_from_metadata(metadata).map(|m| m.serial);
            }
            if serial.is_none()
                && let Ok(Fetched::Found(object)) = store.get(None).await
            {
                serial = self.decode(&store, object.body).await.map(|s| s.serial);
            }
        }
        let locked = match locked {
            Some(locked) => Some(locked),
            None => match self.manager(store).locker().current().await {
                Ok(holder) => Some(holder.is_some()),
                Err(crate::Error::Locked { .. }) => Some(true),
                Err(_) => None,
            },
        };
        StateRow {
            serial,
            author,
            locked,
        }
    }

    // -----------------------------------------------------------------------------------
    // One state: its lock and its history

    async fn state_page(&self, name: &str, request: &axum::http::Uri) -> Response {
        let query: PageQuery = match query(request) {
            Ok(query) => query,
            Err(message) => return error_page(self, StatusCode::BAD_REQUEST, &message),
        };
        let store = self.store(name);
        let manager = self.manager(store.clone());
        let holder = match manager.locker().current().await {
            Ok(holder) => Ok(holder),
            Err(crate::Error::Locked { holder, .. }) => Err(holder),
            Err(error) => return library_failed(self, &error),
        };
        let versions = match store.list_versions(1000).await {
            Ok(versions) => versions,
            Err(error) => return library_failed(self, &error),
        };
        let pages = versions.len().div_ceil(HISTORY_PAGE).max(1);
        let page = query.page.min(pages - 1);
        let shown = &versions[(page * HISTORY_PAGE).min(versions.len())
            ..((page + 1) * HISTORY_PAGE).min(versions.len())];
        // Each row is diffed with the next older version with content: read the page's
        // versions and that one, and no other.
        let older = versions[((page + 1) * HISTORY_PAGE).min(versions.len())..]
            .iter()
            .find(|v| !v.is_delete_marker);
        let read: Vec<Option<(Option<State>, ObjectMetadata)>> = bounded(
            shown
                .iter()
                .chain(older)
                .map(|version| Box::pin(read_version(&manager, version)) as Boxed<'_, _>)
                .collect(),
            PARALLEL / 2,
        )
        .await;
        let mut rows = Vec::new();
        for (index, version) in shown.iter().enumerate() {
            let this = read[index].as_ref();
            let previous = read[index + 1..].iter().flatten().next();
            let state = this.and_then(|(state, _)| state.as_ref());
            let counts = match (state, previous.and_then(|(state, _)| state.as_ref())) {
                (Some(new), Some(old)) => Some(resource_counts(&StateDiff::between(old, new))),
                // The oldest version: everything in it was added.
                (Some(new), None) => {
                    let added = new.instances().map(|i| i.len()).unwrap_or(0);
                    Some((added, 0, 0))
                }
                _ => None,
            };
            rows.push(VersionRow {
                version: version.clone(),
                serial: state.map(|s| s.serial),
                author: this.and_then(|(_, metadata)| author_of(metadata)),
                counts,
                outputs: state.map(|s| s.outputs.len()),
            });
        }

        let mut body = String::new();
        let _ = write!(
            body,
            "<div class=\"crumbs\"><a href=\"/ui/\">all states</a></div><h1>{}</h1>",
            esc(name)
        );
        body.push_str(&self.lock_box(name, &holder));
        let _ = write!(
            body,
            "<p><a id=\"outputs\" href=\"/ui/outputs/{}\">Current outputs</a></p>",
            esc(name)
        );
        let _ = write!(
            body,
            "<h2>History</h2><p class=\"muted\">{} versions, newest first; page {} of {}. \
             Pick two versions to compare them.</p>\
             <form method=\"get\" action=\"/ui/diff/{}\"><table id=\"history\"><tr><th>From</th><th>To</th>\
             <th>Version</th><th>Author</th><th>Time</th><th>Serial</th>\
             <th>Resources</th><th></th></tr>",
            versions.len(),
            page + 1,
            pages,
            esc(name)
        );
        for (index, row) in rows.iter().enumerate() {
            let id = &row.version.version_id;
            if row.version.is_delete_marker {
                let _ = write!(
                    body,
                    "<tr class=\"deleted\"><td></td><td></td><td class=\"mono\">{}</td><td>{}</td>\
                     <td>{}</td><td colspan=\"3\" class=\"removed\">deleted</td></tr>",
                    esc(id),
                    author_cell(row.author.as_deref()),
                    html::time(row.version.last_modified)
                );
                continue;
            }
            let counts = match row.counts {
                Some((added, changed, removed)) => format!(
                    "<span class=\"added\">+{added}</span> <span class=\"changed\">~{changed}</span> \
                     <span class=\"removed\">-{removed}</span>"
                ),
                None => "<span class=\"muted\">not a state</span>".into(),
            };
            let previous = shown[index + 1..]
                .iter()
                .chain(older)
                .find(|v| !v.is_delete_marker);
            let diff_link = match previous {
                Some(previous) => format!(
                    "<a class=\"diff\" href=\"/ui/diff/{}?from={}&amp;to={}\">diff</a> · ",
                    esc(name),
                    esc(&query_value(&previous.version_id)),
                    esc(&query_value(id))
                ),
                None => String::new(),
            };
            let _ = write!(
                body,
                "<tr class=\"version\"><td><input type=\"radio\" name=\"from\" value=\"{v}\" aria-label=\"from\"></td>\
                 <td><input type=\"radio\" name=\"to\" value=\"{v}\" aria-label=\"to\"></td>\
                 <td class=\"mono\">{v}{latest}</td><td>{author}</td><td>{time}</td><td class=\"num\">{serial}</td>\
                 <td>{counts}</td><td>{diff_link}<a href=\"/ui/outputs/{n}?version={vq}\">outputs ({outputs})</a></td></tr>",
                v = esc(id),
                vq = esc(&query_value(id)),
                n = esc(name),
                latest = if row.version.is_latest {
                    " <b>current</b>"
                } else {
                    ""
                },
                author = author_cell(row.author.as_deref()),
                time = html::time(row.version.last_modified),
                serial = row.serial.map_or_else(|| "—".into(), |s| s.to_string()),
                outputs = row.outputs.unwrap_or(0),
            );
        }
        if rows.is_empty() {
            body.push_str("<tr><td colspan=\"8\" class=\"muted\">No versions.</td></tr>");
        }
        body.push_str(
            "</table><p><input type=\"submit\" value=\"Compare\"></p></form><div class=\"pager\">",
        );
        if page > 0 {
            let _ = write!(
                body,
                "<a href=\"/ui/state/{}?page={}\">Newer</a>",
                esc(name),
                page - 1
            );
        }
        if page + 1 < pages {
            let _ = write!(
                body,
                "<a id=\"older\" href=\"/ui/state/{}?page={}\">Older</a>",
                esc(name),
                page + 1
            );
        }
        body.push_str("</div>");
        self.page(StatusCode::OK, name, &body)
    }

    /// The lock holder, and for admins the way to the force-unlock confirmation. A lock
    /// object that is not lock info is `Err(None)`.
    fn lock_box(
        &self,
        name: &str,
        holder: &Result<Option<crate::statemgr::LockInfo>, Option<Box<crate::statemgr::LockInfo>>>,
    ) -> String {
        let admin = self.principal.role_on(name) >= Some(Role::Admin);
        match holder {
            Ok(None) => {
                "<div class=\"box\" id=\"lock\"><span class=\"free\">Not locked.</span></div>"
                    .into()
            }
            Ok(Some(info)) => {
                let mut out = format!(
                    "<div class=\"box warn\" id=\"lock\"><span class=\"locked\">Locked</span> by <b>{}</b> \
                     for <code>{}</code> since {} <span class=\"muted\">(lock ID <code>{}</code>{})</span>",
                    esc(&info.who),
                    esc(&info.operation),
                    html::time(info.created),
                    esc(&info.id),
                    if info.info.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", esc(&info.info))
                    }
                );
                if admin {
                    let _ = write!(
                        out,
                        " <a id=\"force-unlock\" href=\"/ui/unlock/{}?id={}\">Force-unlock…</a>",
                        esc(name),
                        esc(&query_value(&info.id))
                    );
                }
                out.push_str("</div>");
                out
            }
            Err(_) => "<div class=\"box warn\" id=\"lock\"><span class=\"locked\">Locked</span>, \
                       by a lock object that is not lock info (clear it with the CLI).</div>"
                .into(),
        }
    }

    // -----------------------------------------------------------------------------------
    // A diff of two versions

    async fn diff_page(&self, name: &str, request: &axum::http::Uri) -> Response {
        let query: DiffQuery = match query(request) {
            Ok(query) => query,
            Err(message) => return error_page(self, StatusCode::BAD_REQUEST, &message),
        };
        if query.from.is_empty() || query.to.is_empty() {
            return error_page(
                self,
                StatusCode::BAD_REQUEST,
                "Pick two versions to compare (from and to).",
            );
        }
        let manager = self.manager(self.store(name));
        let (from, to) = futures::join!(
            manager.snapshot_at(&query.from),
            manager.snapshot_at(&query.to)
        );
        let (from, to) = match (from, to) {
            (Ok(from), Ok(to)) => (from, to),
            (Err(error), _) | (_, Err(error)) => return library_failed(self, &error),
        };
        let diff = StateDiff::between(&from.state, &to.state);
        let pages = diff.resources.len().div_ceil(DIFF_PAGE).max(1);
        let page = query.page.min(pages - 1);
        let shown = &diff.resources[(page * DIFF_PAGE).min(diff.resources.len())
            ..((page + 1) * DIFF_PAGE).min(diff.resources.len())];
        // Attributes: each side's instances read in one pass, only when a resource is shown.
        let views = |state: &State| -> HashMap<String, InstanceView> {
            if shown.is_empty() {
                return HashMap::new();
            }
            state
                .instance_views()
                .unwrap_or_default()
                .into_iter()
                .map(|(address, view)| (address.to_string(), view))
                .collect()
        };
        let (old_views, new_views) = (views(&from.state), views(&to.state));

        let mut body = String::new();
        let _ = write!(
            body,
            "<div class=\"crumbs\"><a href=\"/ui/\">all states</a> / {}</div>\
             <h1>Changes from serial {} to serial {}</h1>\
             <p class=\"muted\">version <code>{}</code> → <code>{}</code>{}</p>",
            state_link(name),
            diff.from.serial,
            diff.to.serial,
            esc(&from.version_id),
            esc(&to.version_id),
            if diff.from.lineage == diff.to.lineage {
                String::new()
            } else {
                format!(
                    "; <b>different lineages</b>: <code>{}</code> → <code>{}</code>",
                    esc(&diff.from.lineage),
                    esc(&diff.to.lineage)
                )
            }
        );
        if diff.resources.is_empty() && diff.outputs.is_empty() {
            body.push_str("<p id=\"no-changes\">No resource or output changed.</p>");
        }
        if !diff.resources.is_empty() {
            let _ = write!(
                body,
                "<h2>Resources</h2><p class=\"muted\">{} changed resource instances; page {} of {}.</p>",
                diff.resources.len(),
                page + 1,
                pages
            );
            body.push_str("<table id=\"resources\"><tr><th>Address</th><th>Attribute</th><th>Before</th><th>After</th></tr>");
            for change in shown {
                let (class, sign) = kind_class(change.kind);
                let attributes = attribute_changes(
                    old_views.get(&change.address),
                    new_views.get(&change.address),
                );
                let span = attributes.len().max(1);
                let _ = write!(
                    body,
                    "<tr class=\"resource {class}\"><td rowspan=\"{span}\" class=\"mono {class}\">{sign} {}</td>",
                    esc(&change.address)
                );
                if attributes.is_empty() {
                    body.push_str("<td colspan=\"3\" class=\"muted\">(no attribute differs: metadata such as dependencies changed)</td></tr>");
                }
                for (index, attribute) in attributes.iter().enumerate() {
                    if index > 0 {
                        body.push_str("<tr>");
                    }
                    let (class, _) = kind_class(attribute.kind);
                    let _ = write!(
                        body,
                        "<td class=\"mono attribute {class}\">{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&attribute.path),
                        html::value_cell(attribute.before.as_ref(), SENSITIVE_PLACEHOLDER),
                        html::value_cell(attribute.after.as_ref(), SENSITIVE_PLACEHOLDER),
                    );
                }
            }
            body.push_str("</table><div class=\"pager\">");
            for (label, target) in [("Previous", page.checked_sub(1)), ("Next", Some(page + 1))] {
                if let Some(target) = target.filter(|t| *t < pages) {
                    let _ = write!(
                        body,
                        "<a href=\"/ui/diff/{}?from={}&amp;to={}&amp;page={target}\">{label}</a>",
                        esc(name),
                        esc(&query_value(&query.from)),
                        esc(&query_value(&query.to))
                    );
                }
            }
            body.push_str("</div>");
        }
        if !diff.outputs.is_empty() {
            body.push_str("<h2>Outputs</h2><table id=\"output-changes\"><tr><th>Output</th><th>Before</th><th>After</th></tr>");
            for change in &diff.outputs {
                let (class, sign) = kind_class(change.kind);
                let masked = serde_json::Value::from(SENSITIVE_PLACEHOLDER);
                let side = |value: &Option<serde_json::Value>, present: bool| {
                    if change.sensitive && present {
                        html::value_cell(Some(&masked), SENSITIVE_PLACEHOLDER)
                    } else {
                        html::value_cell(value.as_ref(), SENSITIVE_PLACEHOLDER)
                    }
                };
                let _ = write!(
                    body,
                    "<tr><td class=\"mono {class}\">{sign} {}</td><td>{}</td><td>{}</td></tr>",
                    esc(&change.name),
                    side(&change.before, change.kind != ChangeKind::Added),
                    side(&change.after, change.kind != ChangeKind::Removed),
                );
            }
            body.push_str("</table>");
        }
        self.page(StatusCode::OK, &format!("Diff of {name}"), &body)
    }

    // -----------------------------------------------------------------------------------
    // Outputs

    async fn outputs_page(&self, name: &str, request: &axum::http::Uri) -> Response {
        let query: VersionQuery = match query(request) {
            Ok(query) => query,
            Err(message) => return error_page(self, StatusCode::BAD_REQUEST, &message),
        };
        let store = self.store(name);
        let (state, version) = match &query.version {
            Some(version) => match self.manager(store).snapshot_at(version).await {
                Ok(snapshot) => (snapshot.state, version.clone()),
                Err(error) => return library_failed(self, &error),
            },
            None => match store.get(None).await {
                Ok(Fetched::Found(object)) => {
                    match self.decode(&store, object.body.clone()).await {
                        Some(state) => {
                            (state, object.version_id.unwrap_or_else(|| "current".into()))
                        }
                        None => {
                            return error_page(
                                self,
                                StatusCode::CONFLICT,
                                "The current object is not a Terraform state.",
                            );
                        }
                    }
                }
                Ok(_) => {
                    return error_page(
                        self,
                        StatusCode::NOT_FOUND,
                        "This state has no current snapshot.",
                    );
                }
                Err(error) => return library_failed(self, &error),
            },
        };
        let mut body = String::new();
        let _ = write!(
            body,
            "<div class=\"crumbs\"><a href=\"/ui/\">all states</a> / {}</div>\
             <h1>Outputs at serial {}</h1><p class=\"muted\">version <code>{}</code></p>\
             <table id=\"outputs\"><tr><th>Output</th><th>Value</th></tr>",
            state_link(name),
            state.serial,
            esc(&version)
        );
        let masked = serde_json::Value::from(SENSITIVE_PLACEHOLDER);
        for (output, value) in &state.outputs {
            let shown = if value.sensitive {
                html::value_cell(Some(&masked), SENSITIVE_PLACEHOLDER)
            } else {
                html::value_cell(Some(&value.to_value()), SENSITIVE_PLACEHOLDER)
            };
            let _ = write!(
                body,
                "<tr><td class=\"mono\">{}</td><td>{shown}</td></tr>",
                esc(output)
            );
        }
        if state.outputs.is_empty() {
            body.push_str("<tr><td colspan=\"2\" class=\"muted\">No outputs.</td></tr>");
        }
        body.push_str("</table>");
        self.page(StatusCode::OK, &format!("Outputs of {name}"), &body)
    }

    // -----------------------------------------------------------------------------------
    // Force-unlock

    fn admin_only(&self, name: &str, what: &str) -> Option<Response> {
        if self.principal.role_on(name) >= Some(Role::Admin) {
            return None;
        }
        self.audit.record(Event {
            principal: Some(&self.principal.name),
            state: Some(name),
            outcome: &format!("refused: {what} needs admin (web UI)"),
            ..Event::default()
        });
        Some(error_page(
            self,
            StatusCode::FORBIDDEN,
            &format!("Force-unlock needs the admin role on {name:?}."),
        ))
    }

    async fn unlock_confirmation(&self, name: &str, request: &axum::http::Uri) -> Response {
        if let Some(refused) = self.admin_only(name, "force-unlock") {
            return refused;
        }
        let query: UnlockQuery = match query(request) {
            Ok(query) => query,
            Err(message) => return error_page(self, StatusCode::BAD_REQUEST, &message),
        };
        let holder = match self.manager(self.store(name)).locker().current().await {
            Ok(Some(holder)) => holder,
            Ok(None) => {
                return self.page(
                    StatusCode::OK,
                    "Not locked",
                    &format!(
                        "<p id=\"not-locked\">{} is not locked.</p>",
                        state_link(name)
                    ),
                );
            }
            Err(crate::Error::Locked { .. }) => {
                return error_page(
                    self,
                    StatusCode::CONFLICT,
                    "The lock object is not lock info; clear it with the CLI.",
                );
            }
            Err(error) => return library_failed(self, &error),
        };
        if !query.id.is_empty() && query.id != holder.id {
            return error_page(
                self,
                StatusCode::CONFLICT,
                "The lock changed since that page was shown; look at it again.",
            );
        }
        let body = format!(
            "<div class=\"crumbs\"><a href=\"/ui/\">all states</a> / {link}</div>\
             <h1>Force-unlock {name_text}?</h1>\
             <div class=\"box warn\">Held by <b>{who}</b> for <code>{operation}</code> since {since} \
             (lock ID <code>{id}</code>). If that run is still going, unlocking lets another \
             writer in beside it.</div>\
             <form method=\"post\" action=\"/ui/unlock/{name}\" id=\"unlock-form\">\
             <input type=\"hidden\" name=\"id\" value=\"{id}\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <p><label><input type=\"checkbox\" name=\"confirm\" value=\"yes\" id=\"confirm\" required> \
             I checked that no run holds this lock any more.</label></p>\
             <p><button type=\"submit\" id=\"unlock\">Force-unlock</button> \
             <a href=\"/ui/state/{name}\">Cancel</a></p></form>",
            link = state_link(name),
            name_text = esc(name),
            name = esc(name),
            who = esc(&holder.who),
            operation = esc(&holder.operation),
            since = html::time(holder.created),
            id = esc(&holder.id),
            csrf = csrf_token(&self.principal.name, name, &holder.id),
        );
        self.page(StatusCode::OK, "Force-unlock", &body)
    }

    async fn force_unlock(&self, name: &str, body: axum::body::Body) -> Response {
        let audit = |outcome: &str, lock_id: Option<&str>| {
            self.audit.record(Event {
                principal: Some(&self.principal.name),
                state: Some(name),
                lock_id,
                outcome,
                ..Event::default()
            });
        };
        // (The role was checked before: a POST needs admin.)
        let Ok(body) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return error_page(
                self,
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form is too large.",
            );
        };
        let form: UnlockForm = match std::str::from_utf8(&body)
            .ok()
            .and_then(|body| format!("/?{body}").parse::<axum::http::Uri>().ok())
            .and_then(|uri| axum::extract::Query::<UnlockForm>::try_from_uri(&uri).ok())
        {
            Some(axum::extract::Query(form)) => form,
            None => return error_page(self, StatusCode::BAD_REQUEST, "The form is not valid."),
        };
        let expected = csrf_token(&self.principal.name, name, &form.id);
        let token_ok = !form.id.is_empty()
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                expected.as_bytes(),
                form.csrf.as_bytes(),
            ));
        if !token_ok {
            audit(
                "refused: force-unlock without a valid CSRF token (web UI)",
                Some(&form.id)
                    .filter(|id| !id.is_empty())
                    .map(String::as_str),
            );
            return error_page(
                self,
                StatusCode::FORBIDDEN,
                "This form did not come from the confirmation page; nothing was unlocked.",
            );
        }
        if form.confirm != "yes" {
            audit(
                "refused: force-unlock not confirmed (web UI)",
                Some(&form.id),
            );
            return error_page(
                self,
                StatusCode::BAD_REQUEST,
                "Tick the confirmation to force-unlock; nothing was unlocked.",
            );
        }
        let unlocked = self
            .manager(self.store(name))
            .unlock_bound(Some(&form.id), &self.principal.name, true)
            .await;
        match unlocked {
            Ok(crate::remote::BoundUnlock::NotLocked) => {
                audit("not locked (web UI force-unlock)", Some(&form.id));
            }
            Ok(_) => audit("force-unlocked (web UI)", Some(&form.id)),
            Err(error) => {
                audit(
                    &format!("refused: {error} (web UI force-unlock)"),
                    Some(&form.id),
                );
                return match error {
                    crate::Error::LockRefused { .. } => error_page(
                        self,
                        StatusCode::CONFLICT,
                        &format!("{error}. Nothing was unlocked."),
                    ),
                    other => library_failed(self, &other),
                };
            }
        }
        redirect(&format!("/ui/state/{name}"))
    }
}

/// A future of a page's, boxed so that the handler's future stays `Send` for every lifetime
/// (a stream of borrowing closures is not, to the compiler).
type Boxed<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Runs `futures` at most `limit` at once; the outputs in order.
async fn bounded<T>(futures: Vec<Boxed<'_, T>>, limit: usize) -> Vec<T> {
    futures::stream::iter(futures)
        .buffered(limit.max(1))
        .collect()
        .await
}

/// A version's state (when its body is one) and metadata; `None` for a delete marker or a
/// version that could not be read.
async fn read_version(
    manager: &RemoteState<S3Store>,
    version: &ObjectVersion,
) -> Option<(Option<State>, ObjectMetadata)> {
    if version.is_delete_marker {
        return None;
    }
    let object = manager
        .store()
        .get_version(&version.version_id)
        .await
        .ok()?;
    let state = manager
        .decode_snapshot(object.body, &version.version_id)
        .await
        .ok();
    Some((state, object.metadata))
}

/// Resource instances added, changed and removed in a diff.
fn resource_counts(diff: &StateDiff) -> (usize, usize, usize) {
    let count = |kind| diff.resources.iter().filter(|r| r.kind == kind).count();
    (
        count(ChangeKind::Added),
        count(ChangeKind::Changed),
        count(ChangeKind::Removed),
    )
}

fn kind_class(kind: ChangeKind) -> (&'static str, &'static str) {
    match kind {
        ChangeKind::Added => ("added", "+"),
        ChangeKind::Removed => ("removed", "-"),
        ChangeKind::Changed => ("changed", "~"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_are_bound_to_principal_state_and_lock() {
        let token = csrf_token("admin", "app", "lock-1");
        assert_eq!(token.len(), 64);
        assert_eq!(token, csrf_token("admin", "app", "lock-1"));
        assert_ne!(token, csrf_token("reader", "app", "lock-1"));
        assert_ne!(token, csrf_token("admin", "app2", "lock-1"));
        assert_ne!(token, csrf_token("admin", "app", "lock-2"));
        // Length-prefixed parts: moving a boundary changes the token.
        assert_ne!(csrf_token("ab", "c", "x"), csrf_token("a", "bc", "x"));
    }
}
