//! A state is sent `aws-chunked` with its SHA-256 in a trailer, computed while the body goes
//! out: S3 still verifies it, stores it as the object's SHA-256 checksum, and stores exactly
//! the state's bytes (not the chunk framing), whatever the client's checksum settings, with
//! SSE-C or KMS, and through a retry.

mod common;

use aws_sdk_s3::config::{
    ConfigBag, Intercept, RequestChecksumCalculation, RuntimeComponents,
    interceptors::BeforeTransmitInterceptorContextRef,
};
use aws_sdk_s3::types::ChecksumMode;
use base64::Engine as _;
use bytes::Bytes;
use common::proxy::{Fault, FaultProxy, Rule};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use s3state::store::{Fetched, ObjectMetadata, Precondition, PutOutcome, Store};
use s3state::{S3Builder, S3Store, ServerSideEncryption};
use sha2::Digest as _;
use std::sync::{Arc, Mutex};

const KEY: &str = "trailing/terraform.tfstate";

/// A body of several aws-chunked chunks (64 KiB each) and a partial last one, with a marker
/// in its middle that the corrupting proxy can find.
fn large_body() -> Bytes {
    let mut body = Vec::with_capacity(300_000);
    while body.len() < 150_000 {
        body.extend_from_slice(format!("{{\"line\": {}}}\n", body.len()).as_bytes());
    }
    body.extend_from_slice(b"MARKER-IN-THE-MIDDLE\n");
    while body.len() < 300_007 {
        body.push(b'x');
    }
    Bytes::from(body)
}

fn sha256_base64(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(body))
}

fn no_metadata() -> ObjectMetadata {
    ObjectMetadata::new()
}

async fn store_on(client: aws_sdk_s3::Client, bucket: &str) -> S3Store {
    common::builder(bucket, KEY)
        .with_client(client)
        .build_store()
        .await
        .unwrap()
}

/// The stored body and the SHA-256 that S3 reports for it, on GET and on HEAD.
async fn stored(bucket: &str) -> (Vec<u8>, Option<String>, Option<String>) {
    let client = common::client();
    let got = client
        .get_object()
        .bucket(bucket)
        .key(KEY)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    let get_checksum = got.checksum_sha256().map(str::to_owned);
    let body = got.body.collect().await.unwrap().into_bytes().to_vec();
    let head = client
        .head_object()
        .bucket(bucket)
        .key(KEY)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    (
        body,
        get_checksum,
        head.checksum_sha256().map(str::to_owned),
    )
}

/// One request's headers, names in lower case.
type Headers = Vec<(String, String)>;

/// The headers of every PUT the SDK sends, as signed.
#[derive(Debug, Clone, Default)]
struct PutHeaders(Arc<Mutex<Vec<Headers>>>);

impl Intercept for PutHeaders {
    fn name(&self) -> &'static str {
        "put-headers"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let request = context.request();
        if request.method() == "PUT" {
            let headers = request
                .headers()
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
                .collect();
            self.0.lock().unwrap().push(headers);
        }
        Ok(())
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_written_state_is_stored_byte_for_byte_with_its_sha256_checksum() {
    let bucket = common::bucket(true).await;
    let store = store_on(common::client(), &bucket).await;
    let body = large_body();

    let outcome = store
        .put(body.clone(), &Precondition::Create, &no_metadata())
        .await
        .unwrap();
    assert!(matches!(outcome, PutOutcome::Written(_)), "{outcome:?}");

    let (stored_body, get_checksum, head_checksum) = stored(&bucket).await;
    assert!(
        stored_body == body,
        "the stored bytes are the state, not its chunk framing"
    );
    let expected = sha256_base64(&body);
    assert_eq!(get_checksum.as_deref(), Some(expected.as_str()));
    assert_eq!(head_checksum.as_deref(), Some(expected.as_str()));
}

#[tokio::test]
async fn the_sha256_is_sent_as_a_trailer_of_an_aws_chunked_body_not_as_a_header() {
    let bucket = common::bucket(true).await;
    let seen = PutHeaders::default();
    let client = aws_sdk_s3::Client::from_conf(
        common::config_for(common::endpoint())
            .interceptor(seen.clone())
            .build(),
    );
    let store = store_on(client, &bucket).await;
    let body = large_body();
    store
        .put(body.clone(), &Precondition::Create, &no_metadata())
        .await
        .unwrap();

    let puts = seen.0.lock().unwrap().clone();
    assert_eq!(puts.len(), 1, "{puts:?}");
    let put = &puts[0];
    assert_eq!(header(put, "x-amz-trailer"), Some("x-amz-checksum-sha256"));
    assert_eq!(header(put, "content-encoding"), Some("aws-chunked"));
    assert_eq!(
        header(put, "x-amz-decoded-content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(header(put, "x-amz-checksum-sha256"), None, "{put:?}");
    assert_eq!(header(put, "x-amz-checksum-crc32"), None, "{put:?}");
}

#[tokio::test]
async fn a_client_set_to_checksum_only_when_required_still_sends_the_sha256() {
    let bucket = common::bucket(true).await;
    let client = aws_sdk_s3::Client::from_conf(
        common::config_for(common::endpoint())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build(),
    );
    let store = store_on(client, &bucket).await;
    let body = large_body();
    store
        .put(body.clone(), &Precondition::Create, &no_metadata())
        .await
        .unwrap();

    let (stored_body, get_checksum, _) = stored(&bucket).await;
    assert!(stored_body == body);
    assert_eq!(get_checksum, Some(sha256_base64(&body)));
}

#[tokio::test]
async fn a_put_retried_after_a_reset_connection_sends_the_whole_body_again() {
    let bucket = common::bucket(true).await;
    let proxy = FaultProxy::start(common::endpoint()).await;
    proxy.inject(Rule::new(Fault::ResetBeforeForward).method("PUT"));
    let store = store_on(
        aws_sdk_s3::Client::from_conf(common::config_for(proxy.endpoint()).build()),
        &bucket,
    )
    .await;
    let body = large_body();

    let outcome = store
        .put(body.clone(), &Precondition::Create, &no_metadata())
        .await
        .unwrap();
    assert!(matches!(outcome, PutOutcome::Written(_)), "{outcome:?}");

    let puts: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 2, "one reset, one retry: {puts:?}");
    assert_eq!(puts[0].body_bytes, puts[1].body_bytes, "{puts:?}");
    let (stored_body, get_checksum, _) = stored(&bucket).await;
    assert!(stored_body == body);
    assert_eq!(get_checksum, Some(sha256_base64(&body)));
}

#[tokio::test]
async fn an_sse_c_write_is_stored_with_its_sha256_and_reads_back_byte_for_byte() {
    let raw_key = [7u8; 32];
    let customer_key = base64::engine::general_purpose::STANDARD.encode(raw_key);
    let customer_key_md5 =
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(raw_key));
    let bucket = common::bucket(true).await;
    let store = common::builder(&bucket, KEY)
        .with_sse_customer_key(customer_key.clone())
        .build_store()
        .await
        .unwrap();
    let body = large_body();
    store
        .put(body.clone(), &Precondition::Create, &no_metadata())
        .await
        .unwrap();

    let head = common::client()
        .head_object()
        .bucket(&bucket)
        .key(KEY)
        .checksum_mode(ChecksumMode::Enabled)
        .sse_customer_algorithm("AES256")
        .sse_customer_key(&customer_key)
        .sse_customer_key_md5(customer_key_md5)
        .send()
        .await
        .unwrap();
    assert_eq!(head.checksum_sha256(), Some(sha256_base64(&body).as_str()));
    assert_eq!(head.sse_customer_algorithm(), Some("AES256"));
    match store.get(None).await.unwrap() {
        Fetched::Found(object) => assert!(object.body == body),
        other => panic!("{other:?}"),
    }
}

/// LocalStack here runs S3 alone, so SSE-KMS is written to moto (which has KMS).
#[tokio::test]
async fn an_sse_kms_write_is_stored_with_its_sha256_and_reads_back_byte_for_byte() {
    let client = aws_sdk_s3::Client::from_conf(common::config_for(common::moto_endpoint()).build());
    let bucket = format!(
        "s3state-kms-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    client.create_bucket().bucket(&bucket).send().await.unwrap();
    let store = S3Builder::new()
        .with_client(client.clone())
        .with_bucket(&bucket)
        .with_key(KEY)
        // moto answers GetBucketVersioning in a shape the SDK cannot parse.
        .with_versioning_required(false)
        .with_server_side_encryption(ServerSideEncryption::Kms { key_id: None })
        .build_store()
        .await
        .unwrap();
    let body = large_body();
    store
        .put(body.clone(), &Precondition::Create, &no_metadata())
        .await
        .unwrap();

    let head = client
        .head_object()
        .bucket(&bucket)
        .key(KEY)
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.server_side_encryption(),
        Some(&aws_sdk_s3::types::ServerSideEncryption::AwsKms)
    );
    assert_eq!(head.checksum_sha256(), Some(sha256_base64(&body).as_str()));
    match store.get(None).await.unwrap() {
        Fetched::Found(object) => assert!(object.body == body),
        other => panic!("{other:?}"),
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
type Upstream = HttpClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A proxy that passes requests to `upstream`, first applying `corrupt` to the body of every
/// PUT (the whole aws-chunked body, framing and trailer included).
async fn corrupting_proxy(
    upstream: &'static str,
    corrupt: fn(&mut [u8]),
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let client: Upstream = HttpClient::builder(TokioExecutor::new()).build_http();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let client = client.clone();
            let service = hyper::service::service_fn(move |request| {
                forward(request, client.clone(), upstream, corrupt)
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (endpoint, task)
}

async fn forward(
    request: Request<Incoming>,
    client: Upstream,
    upstream: &'static str,
    corrupt: fn(&mut [u8]),
) -> Result<Response<Full<Bytes>>, BoxError> {
    let (mut parts, body) = request.into_parts();
    let mut body = body.collect().await?.to_bytes().to_vec();
    if parts.method == "PUT" {
        corrupt(&mut body);
    }
    parts.uri = format!(
        "{upstream}{}",
        parts.uri.path_and_query().map_or("/", |pq| pq.as_str())
    )
    .parse()?;
    let response = client
        .request(Request::from_parts(parts, Full::new(Bytes::from(body))))
        .await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
        .expect("the marker is in the body")
}

/// Changes one byte of the state's data (not the chunk framing) on the way.
fn flip_a_data_byte(body: &mut [u8]) {
    let at = find(body, b"MARKER-IN-THE-MIDDLE");
    body[at] = b'N';
}

/// Replaces the trailing checksum with the SHA-256 of other bytes (same length), leaving the
/// data and its chunk signatures intact.
fn replace_the_trailing_checksum(body: &mut [u8]) {
    let name = b"x-amz-checksum-sha256:";
    let at = find(body, name) + name.len();
    let other = sha256_base64(b"other bytes");
    body[at..at + other.len()].copy_from_slice(other.as_bytes());
}

async fn a_corrupted_put_is_refused(corrupt: fn(&mut [u8])) {
    let bucket = common::bucket(true).await;
    let (endpoint, proxy) = corrupting_proxy(common::endpoint(), corrupt).await;
    let store = store_on(
        aws_sdk_s3::Client::from_conf(common::config_for(&endpoint).build()),
        &bucket,
    )
    .await;

    let put = store
        .put(large_body(), &Precondition::Create, &no_metadata())
        .await;
    proxy.abort();
    let err = put.expect_err("S3 must refuse a body that does not match its checksum");
    // BadDigest: refused by the checksum, not by a connection the proxy dropped.
    assert!(err.to_string().contains("BadDigest"), "{err}");
    let listed = common::client()
        .list_object_versions()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    assert!(
        listed.versions().is_empty(),
        "nothing is stored: {listed:?}"
    );
}

#[tokio::test]
async fn a_body_changed_on_the_way_is_refused_and_nothing_is_stored() {
    a_corrupted_put_is_refused(flip_a_data_byte).await;
}

#[tokio::test]
async fn a_trailing_checksum_changed_on_the_way_is_refused_and_nothing_is_stored() {
    a_corrupted_put_is_refused(replace_the_trailing_checksum).await;
}
