//! A fault-injecting HTTP proxy between the SDK and LocalStack, on 127.0.0.1.
//!
//! Tests script it per request (method, a substring of the path, "after the first N matching
//! requests", "this many times") to lose responses, reset connections, answer errors S3 gives
//! and the emulators do not, delay or truncate bodies. It can
//! also strip the conditional headers from writes, as a store that ignores them would. It
//! records every request it sees.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;
/// Something a rule does after forwarding and before faulting, such as another writer acting.
pub type Hook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What to do to a matching request.
#[derive(Clone)]
pub enum Fault {
    /// Forward it, let the store apply it, then close the connection without answering.
    DropResponse,
    /// Close the connection before forwarding: the store never sees it.
    ResetBeforeForward,
    /// Wait this long before forwarding.
    StallBeforeForward(Duration),
    /// Answer with this status and S3 error code, without forwarding.
    Status(u16, &'static str),
    /// Forward, then wait this long before answering.
    DelayResponse(Duration),
    /// Forward, then send only this many bytes of the body and close the connection.
    TruncateBody(usize),
    /// Accept the request and never answer, nor forward it: a proxy or load balancer that
    /// swallows requests. The connection stays open until the client gives up.
    Stall,
    /// Forward, send the answer's status and headers, then never send its body.
    StallBody,
}

/// When a fault applies.
#[derive(Clone)]
pub struct Rule {
    method: Option<&'static str>,
    path_contains: Option<String>,
    path_suffix: Option<String>,
    query_contains: Option<&'static str>,
    skip: usize,
    times: usize,
    fault: Fault,
    then: Option<Hook>,
}

impl Rule {
    pub fn new(fault: Fault) -> Rule {
        Rule {
            method: None,
            path_contains: None,
            path_suffix: None,
            query_contains: None,
            skip: 0,
            times: 1,
            fault,
            then: None,
        }
    }

    pub fn method(mut self, method: &'static str) -> Rule {
        self.method = Some(method);
        self
    }

    pub fn path(mut self, fragment: impl Into<String>) -> Rule {
        self.path_contains = Some(fragment.into());
        self
    }

    /// Only requests whose path ends with `suffix` (the state `…/terraform.tfstate`, not its
    /// `….tflock`).
    #[allow(dead_code)]
    pub fn path_ending(mut self, suffix: impl Into<String>) -> Rule {
        self.path_suffix = Some(suffix.into());
        self
    }

    /// Only requests whose query contains `fragment` (`versions`: ListObjectVersions, which
    /// shares its path with the bucket's other requests).
    pub fn query(mut self, fragment: &'static str) -> Rule {
        self.query_contains = Some(fragment);
        self
    }

    /// Let this many matching requests through untouched first.
    pub fn after(mut self, skip: usize) -> Rule {
        self.skip = skip;
        self
    }

    /// Apply to this many matching requests (then stop).
    pub fn times(mut self, times: usize) -> Rule {
        self.times = times;
        self
    }

    /// Run `hook` after forwarding, before the fault.
    pub fn then(mut self, hook: Hook) -> Rule {
        self.then = Some(hook);
        self
    }

    fn matches(&self, method: &str, path: &str, query: &str) -> bool {
        self.method.is_none_or(|m| m == method)
            && self.query_contains.is_none_or(|q| query.contains(q))
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
            && self
                .path_suffix
                .as_deref()
                .is_none_or(|suffix| path.ends_with(suffix))
    }
}

/// A way real S3-compatible stores refuse what the AWS SDKs send, emulated in front of the
/// store (their answers as the stores' users reported them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quirk {
    /// `400 XAmzContentSHA256Mismatch` to any request carrying a flexible checksum
    /// (`x-amz-checksum-*` other than `-mode`, `x-amz-sdk-checksum-algorithm`, an aws-chunked
    /// body or its trailer), as Ceph RGW releases do (hashicorp/terraform 34086, 37130).
    RefuseChecksumHeaders,
    /// `400 InvalidArgument` naming the header to a GET or HEAD with `x-amz-checksum-mode`
    /// (hashicorp/terraform 36704).
    RefuseChecksumMode,
    /// `501 NotImplemented` to a PUT or DELETE with `If-Match` or `If-None-Match`, as Backblaze
    /// B2 answered conditional writes.
    ConditionsNotImplemented,
}

impl Quirk {
    /// The refusal this quirk gives `method` with these headers, if any: status, code, message.
    fn refusal(
        self,
        method: &str,
        headers: &hyper::HeaderMap,
    ) -> Option<(u16, &'static str, &'static str)> {
        match self {
            Quirk::RefuseChecksumHeaders => {
                let flexible = headers.keys().any(|name| {
                    let name = name.as_str();
                    (name.starts_with("x-amz-checksum-") && name != "x-amz-checksum-mode")
                        || name == "x-amz-sdk-checksum-algorithm"
                        || name == "x-amz-trailer"
                });
                let chunked = header_value(headers, "content-encoding")
                    .is_some_and(|value| value.contains("aws-chunked"))
                    || header_value(headers, "x-amz-content-sha256")
                        .is_some_and(|value| value.starts_with("STREAMING"));
                (flexible || chunked).then_some((400, "XAmzContentSHA256Mismatch", ""))
            }
            Quirk::RefuseChecksumMode => (matches!(method, "GET" | "HEAD")
                && headers.contains_key("x-amz-checksum-mode"))
            .then_some((
                400,
                "InvalidArgument",
                "the header x-amz-checksum-mode is not supported",
            )),
            Quirk::ConditionsNotImplemented => (matches!(method, "PUT" | "DELETE")
                && (headers.contains_key("if-match") || headers.contains_key("if-none-match")))
            .then_some((
                501,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
            )),
        }
    }
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub if_none_match: Option<String>,
    /// The request's `x-amz-*`, `content-md5` and `content-encoding` headers, names in lower
    /// case (what tells how a checksum was sent).
    pub headers: Vec<(String, String)>,
    /// What the client was told: a status, or `None` when the connection was cut.
    pub status: Option<u16>,
    pub fault: Option<&'static str>,
}

#[derive(Default)]
struct Shared {
    rules: Vec<Rule>,
    log: Vec<Recorded>,
    /// Forward PUT and DELETE requests without `If-Match`/`If-None-Match`: a store that
    /// accepts conditions and ignores them.
    strip_conditions: bool,
    /// Refusals of real stores, applied before forwarding.
    quirks: Vec<Quirk>,
}

pub struct FaultProxy {
    endpoint: String,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Mutex::new(Shared::default()));
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let state = Arc::clone(&shared);
        let task = serve_http1(listener, move || {
            let (state, client, upstream) = (Arc::clone(&state), client.clone(), upstream.clone());
            hyper::service::service_fn(move |request| {
                // Each request in a task of its own, so that it runs to completion at the store
                // even when the client hangs up first (as a real server does): a stalled
                // request still arrives late.
                let served = tokio::spawn(serve(
                    request,
                    Arc::clone(&state),
                    client.clone(),
                    upstream.clone(),
                ));
                async move { served.await? }
            })
        });
        FaultProxy {
            endpoint,
            shared,
            task,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn inject(&self, rule: Rule) {
        self.shared.lock().unwrap().rules.push(rule);
    }

    pub fn clear_rules(&self) {
        self.shared.lock().unwrap().rules.clear();
    }

    /// From now on, remove `If-Match` and `If-None-Match` from every PUT and DELETE before
    /// forwarding it (they are still recorded as sent), simulating a store that ignores them.
    pub fn strip_conditional_headers(&self) {
        self.shared.lock().unwrap().strip_conditions = true;
    }

    /// From now on, refuse what `quirk` refuses, as that store would.
    pub fn emulate(&self, quirk: Quirk) {
        self.shared.lock().unwrap().quirks.push(quirk);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().unwrap().log.clone()
    }

    pub fn take_requests(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.shared.lock().unwrap().log)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections on `listener` until the task is aborted, each served over HTTP/1 in a
/// task of its own by the service `make_service` makes for it.
pub fn serve_http1<S, B>(
    listener: tokio::net::TcpListener,
    make_service: impl Fn() -> S + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    S: hyper::service::HttpService<Incoming, ResBody = B> + Send + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = make_service();
            tokio::spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new();
                let _ = connection
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The header `name` of a request, when it is there and text.
pub fn header_value(headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    let value = headers.get(name)?.to_str().ok()?;
    Some(value.to_owned())
}

fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

async fn serve(
    request: Request<Incoming>,
    shared: Arc<Mutex<Shared>>,
    client: Client<HttpConnector, Full<Bytes>>,
    upstream: String,
) -> Result<Response<ProxyBody>, BoxError> {
    let (mut parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes();
    let method = parts.method.to_string();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let header = |name: &str| header_value(&parts.headers, name);

    // Pick the rule and record the request in one step, so concurrent requests count in order.
    let (rule, index, strip, quirk) = {
        let mut shared = shared.lock().unwrap();
        let mut chosen = None;
        for rule in shared.rules.iter_mut() {
            if rule.times == 0 || !rule.matches(&method, &path, &query) {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            rule.times -= 1;
            chosen = Some(rule.clone());
            break;
        }
        shared.log.push(Recorded {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            if_none_match: header("if-none-match"),
            headers: parts
                .headers
                .iter()
                .filter(|(name, _)| {
                    let name = name.as_str();
                    name.starts_with("x-amz-")
                        || name == "content-md5"
                        || name == "content-encoding"
                })
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        value.to_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
            status: None,
            fault: chosen.as_ref().map(|rule| fault_name(&rule.fault)),
        });
        (
            chosen,
            shared.log.len() - 1,
            shared.strip_conditions,
            shared
                .quirks
                .iter()
                .find_map(|quirk| quirk.refusal(&method, &parts.headers)),
        )
    };
    let record_status = |status: u16| shared.lock().unwrap().log[index].status = Some(status);

    if let Some((status, code, message)) = quirk {
        record_status(status);
        let body = if method == "HEAD" {
            Bytes::new()
        } else {
            Bytes::from(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
            ))
        };
        return Ok(Response::builder()
            .status(status)
            .header("content-type", "application/xml")
            .body(full(body))
            .unwrap());
    }

    if strip && matches!(method.as_str(), "PUT" | "DELETE") {
        parts.headers.remove("if-match");
        parts.headers.remove("if-none-match");
    }

    match rule.as_ref().map(|rule| &rule.fault) {
        Some(Fault::ResetBeforeForward) => return Err("reset before forwarding".into()),
        Some(Fault::Status(status, code)) => {
            record_status(*status);
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
            );
            return Ok(Response::builder()
                .status(*status)
                .header("content-type", "application/xml")
                .body(full(Bytes::from(xml)))
                .unwrap());
        }
        Some(Fault::StallBeforeForward(wait)) => tokio::time::sleep(*wait).await,
        Some(Fault::Stall) => std::future::pending::<()>().await,
        _ => {}
    }

    let uri = format!(
        "{upstream}{}",
        parts.uri.path_and_query().map_or("/", |pq| pq.as_str())
    );
    parts.uri = uri.parse()?;
    let response = client
        .request(Request::from_parts(parts, Full::new(body)))
        .await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    if let Some(hook) = rule.as_ref().and_then(|rule| rule.then.clone()) {
        hook().await;
    }
    match rule.map(|rule| rule.fault) {
        Some(Fault::DropResponse) => Err("response dropped by the test proxy".into()),
        Some(Fault::DelayResponse(wait)) => {
            tokio::time::sleep(wait).await;
            record_status(parts.status.as_u16());
            Ok(Response::from_parts(parts, full(body)))
        }
        Some(Fault::StallBody) => {
            record_status(parts.status.as_u16());
            let never = futures::stream::pending::<Result<Frame<Bytes>, BoxError>>();
            Ok(Response::from_parts(
                parts,
                BodyExt::boxed(StreamBody::new(never)),
            ))
        }
        Some(Fault::TruncateBody(keep)) => {
            record_status(parts.status.as_u16());
            let keep = keep.min(body.len().saturating_sub(1));
            let chunks: Vec<Result<Frame<Bytes>, BoxError>> = vec![
                Ok(Frame::data(body.slice(..keep))),
                Err("body truncated by the test proxy".into()),
            ];
            let stream = StreamBody::new(futures::stream::iter(chunks));
            Ok(Response::from_parts(parts, BodyExt::boxed(stream)))
        }
        _ => {
            record_status(parts.status.as_u16());
            Ok(Response::from_parts(parts, full(body)))
        }
    }
}

fn fault_name(fault: &Fault) -> &'static str {
    match fault {
        Fault::DropResponse => "drop-response",
        Fault::ResetBeforeForward => "reset-before-forward",
        Fault::StallBeforeForward(_) => "stall",
        Fault::Status(..) => "status",
        Fault::DelayResponse(_) => "delay",
        Fault::TruncateBody(_) => "truncate",
        Fault::Stall => "stall-forever",
        Fault::StallBody => "stall-body",
    }
}
