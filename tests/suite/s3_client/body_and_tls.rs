//! Review of two issue-16 changes, against a scripted S3 that answers over raw TCP:
//!
//! - 5dec4c9, `read_whole_body`: a GetObject body is read to its end (so the SDK's checksum
//!   check runs), a short or cut-off body is retried and never returned in part, a lying
//!   `Content-Length` neither extends the body nor makes the read fail unsafely.
//! - 4181f5a, the empty-trust-store client for an `http://` S3 endpoint: the SDK's endpoint
//!   rules send some buckets (an Outposts or Multi-Region Access Point ARN, virtual-hosted)
//!   to an `https://` URL even when the endpoint is `http://`, so the client that endpoint gets
//!   must refuse every certificate rather than trust one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use s3state::store::{Fetched, Store};
use s3state::{Error, S3Builder};
use sha2::Digest as _;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// One scripted answer to a GetObject: headers announce `content_length` and `checksum`, then
/// the body is written in `chunks` (each flushed on its own), then the connection is closed.
#[derive(Clone)]
struct Answer {
    content_length: u64,
    checksum: Option<String>,
    chunks: Vec<Vec<u8>>,
}

impl Answer {
    /// The whole `body` in `pieces` writes, announced with its true length and SHA-256.
    fn honest(body: &[u8], pieces: usize) -> Answer {
        Answer {
            content_length: body.len() as u64,
            checksum: Some(sha256_base64(body)),
            chunks: split(body, pieces),
        }
    }
}

fn sha256_base64(body: &[u8]) -> String {
    BASE64.encode(sha2::Sha256::digest(body))
}

/// A body of `size` bytes with one bit flipped at `at`, in `pieces` chunks, under the
/// checksum of the body as it was.
fn corrupted_answer(size: usize, at: usize, pieces: usize) -> Answer {
    let body = body_of(size);
    let mut corrupted = body.clone();
    corrupted[at] ^= 1;
    Answer {
        content_length: body.len() as u64,
        checksum: Some(sha256_base64(&body)),
        chunks: split(&corrupted, pieces),
    }
}

fn split(body: &[u8], pieces: usize) -> Vec<Vec<u8>> {
    let size = body.len().div_ceil(pieces.max(1)).max(1);
    body.chunks(size).map(<[u8]>::to_vec).collect()
}

/// A fake S3 on 127.0.0.1 that gives the scripted answers in order (the last one again once
/// the script runs out) and counts the GetObject requests it saw.
struct ScriptedS3 {
    endpoint: String,
    gets: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedS3 {
    async fn start(script: Vec<Answer>) -> ScriptedS3 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let gets = Arc::new(Mutex::new(0));
        let seen = gets.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let index = {
                    let mut gets = seen.lock().unwrap();
                    *gets += 1;
                    *gets - 1
                };
                let answer = script[index.min(script.len() - 1)].clone();
                let mut head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"0123456789abcdef0123456789abcdef\"\r\nx-amz-version-id: v{index}\r\nContent-Type: application/json\r\nConnection: close\r\n",
                    answer.content_length
                );
                if let Some(checksum) = &answer.checksum {
                    head.push_str(&format!("x-amz-checksum-sha256: {checksum}\r\n"));
                }
                head.push_str("\r\n");
                if socket.write_all(head.as_bytes()).await.is_err() {
                    continue;
                }
                for chunk in &answer.chunks {
                    if socket.write_all(chunk).await.is_err() || socket.flush().await.is_err() {
                        break;
                    }
                    // Let the client read each piece on its own, so the body arrives in chunks.
                    tokio::task::yield_now().await;
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                let _ = socket.shutdown().await;
            }
        });
        ScriptedS3 {
            endpoint,
            gets,
            task,
        }
    }

    fn gets(&self) -> usize {
        *self.gets.lock().unwrap()
    }

    async fn store(&self) -> s3state::S3Store {
        S3Builder::new()
            .with_endpoint_url(&self.endpoint)
            .with_region("us-east-1")
            .with_path_style(true)
            .with_static_credentials("test", "test")
            .with_bucket("tfstate")
            .with_key("review/terraform.tfstate")
            .with_versioning_required(false)
            .with_max_attempts(1)
            .build_store()
            .await
            .expect("building the store makes no request")
    }
}

impl Drop for ScriptedS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn body_of(size: usize) -> Vec<u8> {
    (0..size).map(|i| b"0123456789abcdef"[i % 16]).collect()
}

fn found(fetched: Fetched) -> Bytes {
    match fetched {
        Fetched::Found(object) => object.body,
        Fetched::NotModified => panic!("not modified"),
        Fetched::Absent => panic!("absent"),
    }
}

/// From the review of issue 16's 5dec4c9 (`read_whole_body`).
#[tokio::test]
async fn a_body_in_many_chunks_is_returned_whole_and_byte_for_byte() {
    let body = body_of(300_000);
    let s3 = ScriptedS3::start(vec![Answer::honest(&body, 40)]).await;
    let read = found(s3.store().await.get(None).await.unwrap());
    assert_eq!(read.len(), body.len());
    assert!(read == body[..], "the body differs from what was sent");
    assert_eq!(s3.gets(), 1);
}

/// From the review of issue 16's 5dec4c9 (`read_whole_body`).
#[tokio::test]
async fn a_corrupted_body_in_many_chunks_fails_its_checksum_and_is_never_returned() {
    let answer = corrupted_answer(200_000, 150_000, 25);
    let s3 = ScriptedS3::start(vec![answer]).await;
    let result = s3.store().await.get(None).await;
    let Err(err) = result else {
        panic!("a body whose SHA-256 differs from x-amz-checksum-sha256 was returned");
    };
    assert!(
        matches!(err, Error::Store { .. }),
        "a body that fails its checksum is a store error: {err:?}"
    );
    assert_eq!(s3.gets(), 3, "read three times, as a cut-off body is");
}

/// From the review of issue 16's 5dec4c9 (`read_whole_body`).
#[tokio::test]
async fn a_corrupted_body_in_one_chunk_fails_its_checksum_too() {
    let answer = corrupted_answer(1_000, 10, 1);
    let s3 = ScriptedS3::start(vec![answer]).await;
    assert!(
        s3.store().await.get(None).await.is_err(),
        "the one-chunk shortcut returned a body whose checksum does not match"
    );
}

/// From the review of issue 16's 5dec4c9 (`read_whole_body`).
#[tokio::test]
async fn a_body_cut_short_of_its_content_length_is_retried_and_the_whole_one_returned() {
    let body = body_of(250_000);
    let short = Answer {
        content_length: body.len() as u64,
        checksum: Some(sha256_base64(&body)),
        chunks: split(&body[..180_000], 20),
    };
    let s3 = ScriptedS3::start(vec![short.clone(), short, Answer::honest(&body, 20)]).await;
    let read = found(s3.store().await.get(None).await.unwrap());
    assert!(
        read == body[..],
        "a partial body was returned ({} bytes)",
        read.len()
    );
    assert_eq!(s3.gets(), 3);
}

/// From the review of issue 16's 5dec4c9 (`read_whole_body`).
#[tokio::test]
async fn a_body_always_cut_short_fails_without_a_partial_result() {
    let body = body_of(250_000);
    let short = Answer {
        content_length: body.len() as u64,
        checksum: None,
        chunks: split(&body[..100_000], 10),
    };
    let s3 = ScriptedS3::start(vec![short]).await;
    let err = s3.store().await.get(None).await.unwrap_err();
    assert!(
        err.to_string().contains("reading the body failed 3 times"),
        "{err}"
    );
}

/// From the review of issue 16's 5dec4c9 (`read_whole_body`).
#[tokio::test]
async fn an_absurd_content_length_with_a_short_body_is_an_error_not_an_abort() {
    // 2^50 bytes announced: the reservation is capped, and the cut-off body is an error.
    let answer = Answer {
        content_length: 1 << 50,
        checksum: None,
        chunks: split(&body_of(64_000), 8),
    };
    let s3 = ScriptedS3::start(vec![answer]).await;
    let err = s3.store().await.get(None).await.unwrap_err();
    assert!(matches!(err, Error::Store { .. }), "{err:?}");
}

/// From the review of issue 16's 5dec4c9 (`read_whole_body`).
#[tokio::test]
async fn bytes_past_the_content_length_are_not_part_of_the_body() {
    let body = body_of(100_000);
    let mut longer = body.clone();
    longer.extend_from_slice(b"TRAILING GARBAGE PAST THE ANNOUNCED LENGTH");
    let answer = Answer {
        content_length: body.len() as u64,
        checksum: Some(sha256_base64(&body)),
        chunks: split(&longer, 10),
    };
    let s3 = ScriptedS3::start(vec![answer]).await;
    let read = found(s3.store().await.get(None).await.unwrap());
    assert!(read == body[..], "{} bytes read", read.len());
}

/// A TLS server on 127.0.0.1 with a self-signed certificate for `localhost`; counts the
/// handshakes that completed and the HTTP requests that arrived over them.
async fn tls_server() -> (u16, String, Arc<Mutex<(usize, usize)>>) {
    use tokio_rustls::rustls;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pem = cert.pem();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new((0, 0)));
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counts = counts.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else {
                    return;
                };
                counts.lock().unwrap().0 += 1;
                let mut buffer = [0u8; 4096];
                if let Ok(n) = tls.read(&mut buffer).await
                    && n > 0
                {
                    counts.lock().unwrap().1 += 1;
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                        )
                        .await;
                }
            });
        }
    });
    (port, pem, seen)
}

/// The client `plain_http_client` (src/s3/builder.rs) gives an `http://` endpoint: rustls with
/// aws-lc and a trust store with no root, optionally with `extra_root` added (the control).
fn no_roots_client(extra_root: Option<&str>) -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let mut store = TrustStore::empty();
    if let Some(pem) = extra_root {
        store = store.with_pem_certificate(pem.as_bytes());
    }
    let context = TlsContext::builder()
        .with_trust_store(store)
        .build()
        .unwrap();
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https()
}

async fn list_over(client: aws_sdk_s3::config::SharedHttpClient, port: u16) -> bool {
    let config = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "review",
        ))
        .endpoint_url(format!("https://localhost:{port}"))
        .force_path_style(true)
        .http_client(client)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(1))
        .build();
    aws_sdk_s3::Client::from_conf(config)
        .get_object()
        .bucket("tfstate")
        .key("k")
        .send()
        .await
        .is_ok()
}

/// From the review of issue 16's 4181f5a (the empty-trust-store client for http endpoints).
#[tokio::test]
async fn the_plain_http_endpoints_client_refuses_any_certificate_when_sent_to_https() {
    let (port, pem, seen) = tls_server().await;
    assert!(
        !list_over(no_roots_client(None), port).await,
        "an https request through the empty trust store succeeded"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        (0, 0),
        "no handshake completes and no request (with its signature) reaches the server"
    );
    // Control: the same server is reachable once its certificate is trusted, so the refusal
    // above is the certificate's, not a broken server's.
    let _ = list_over(no_roots_client(Some(&pem)), port).await;
    assert_eq!(seen.lock().unwrap().0, 1, "the control handshake completed");
}

/// From the review of issue 16's 4181f5a (the empty-trust-store client for http endpoints).
#[tokio::test]
async fn an_http_endpoint_still_sends_some_bucket_forms_to_https() {
    // Why the client of an `http://` endpoint must fail closed: the bucket setting accepts ARNs
    // (only '/' is refused), and with virtual-hosted addressing the SDK's endpoint rules send
    // an Outposts access point to `https://` on the endpoint's own authority, and a
    // Multi-Region Access Point to AWS over `https://`, whatever the endpoint's scheme.
    use aws_sdk_s3::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
    let resolved = |bucket: &str| {
        let params = Params::builder()
            .bucket(bucket)
            .region("us-east-1")
            .endpoint("http://localhost:4566")
            .force_path_style(false)
            .use_fips(false)
            .use_dual_stack(false)
            .accelerate(false)
            .build()
            .unwrap();
        async move {
            DefaultResolver::new()
                .resolve_endpoint(&params)
                .await
                .unwrap()
                .url()
                .to_owned()
        }
    };
    assert!(resolved("tfstate").await.starts_with("http://"));
    let outposts = resolved(
        "arn:aws:s3-outposts:us-east-1:123456789012:outpost:op-01234567890123456:accesspoint:myap",
    )
    .await;
    assert!(outposts.starts_with("https://"), "{outposts}");
    let mrap = resolved("arn:aws:s3::123456789012:accesspoint:mfzwi23gnjvgw.mrap").await;
    assert!(mrap.starts_with("https://"), "{mrap}");
}
