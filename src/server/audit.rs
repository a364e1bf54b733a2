//! The audit log: one JSON object per line for every state request and every refused login
//! or grant, to standard error or a file (`audit_log`), whatever the process's log filter.
//! A line names who (the principal), from where (the client address), what (method, state,
//! serial, version id, lock id) and the outcome; never a password, a hash or state content.

use super::config::ConfigError;
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The `tracing` target of audit events, where no audit log is configured (a gateway driven
/// without sockets, [`super::handle_state_request`]).
pub(crate) const TARGET: &str = "s3state::audit";

/// Where audit lines go.
pub(crate) struct AuditLog {
    out: Mutex<Box<dyn Write + Send>>,
}

impl AuditLog {
    /// Standard error when `path` is `None` or `-`; else the file, created if missing and
    /// appended to.
    pub(crate) fn open(path: Option<&Path>) -> Result<AuditLog, ConfigError> {
        let out: Box<dyn Write + Send> = match path {
            None => Box::new(std::io::stderr()),
            Some(path) if path == Path::new("-") => Box::new(std::io::stderr()),
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|err| ConfigError::Invalid {
                        field: "audit_log".into(),
                        message: format!("cannot open {} for appending: {err}", path.display()),
                    })?,
            ),
        };
        Ok(AuditLog {
            out: Mutex::new(out),
        })
    }

    fn write(&self, line: &Line<'_>) {
        let Ok(mut text) = serde_json::to_vec(line) else {
            return;
        };
        text.push(b'\n');
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line, so that lines from concurrent requests never interleave.
        if let Err(err) = out.write_all(&text).and_then(|()| out.flush()) {
            tracing::error!(error = %err, "cannot write the audit log");
        }
    }
}

/// One audit line.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    principal: Option<&'a str>,
    client: Option<String>,
    method: &'a str,
    state: Option<&'a str>,
    serial: Option<u64>,
    version_id: Option<&'a str>,
    lock_id: Option<&'a str>,
    outcome: &'a str,
}

/// What one request's audit lines share: the log (none without sockets), the client, and the
/// HTTP method.
#[derive(Clone, Default)]
pub(crate) struct Audit {
    log: Option<Arc<AuditLog>>,
    client: Option<SocketAddr>,
    method: &'static str,
}

/// What one audit line says about a request's outcome.
#[derive(Default)]
pub(crate) struct Event<'a> {
    pub(crate) principal: Option<&'a str>,
    pub(crate) state: Option<&'a str>,
    pub(crate) serial: Option<u64>,
    pub(crate) version_id: Option<&'a str>,
    pub(crate) lock_id: Option<&'a str>,
    pub(crate) outcome: &'a str,
}

impl Audit {
    pub(crate) fn new(
        log: Arc<AuditLog>,
        client: Option<SocketAddr>,
        method: &axum::http::Method,
    ) -> Audit {
        let method = match method.as_str() {
            "GET" => "GET",
            "HEAD" => "HEAD",
            "POST" => "POST",
            "PUT" => "PUT",
            "DELETE" => "DELETE",
            "LOCK" => "LOCK",
            "UNLOCK" => "UNLOCK",
            _ => "other",
        };
        Audit {
            log: Some(log),
            client,
            method,
        }
    }

    /// Writes one line (or, without a log, a `tracing` event with target [`TARGET`]).
    pub(crate) fn record(&self, event: Event<'_>) {
        let Some(log) = &self.log else {
            tracing::info!(target: TARGET, user = event.principal.unwrap_or("-"),
                state = event.state.unwrap_or("-"),
                serial = event.serial.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                version_id = event.version_id.unwrap_or("-"),
                lock_id = event.lock_id.unwrap_or("-"), outcome = event.outcome);
            return;
        };
        log.write(&Line {
            time: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            principal: event.principal,
            client: self.client.map(|addr| addr.to_string()),
            method: self.method,
            state: event.state,
            serial: event.serial,
            version_id: event.version_id,
            lock_id: event.lock_id,
            outcome: event.outcome,
        });
    }
}
