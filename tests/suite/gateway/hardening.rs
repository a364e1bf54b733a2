//! The gateway on a network it does not trust (issue 23): clients that never read their
//! answers or dribble their headers do not hold the connection slots, a request that outlasts
//! its timeout is answered with a status Terraform retries and the retry meets the work, audit
//! lines are JSON, `/metrics` and 502 bodies say nothing to whoever asks, and failed logins
//! are rate-limited per client address.
//!
//! Every attack here targets 127.0.0.1 and stops by itself; every wait has a safety net.

use crate::common;
use crate::common::gateway;
use crate::common::proxy::{Fault, Rule};

use gateway::{
    ADMIN, READER, WRITER, dribble_headers, flood_without_reading, key, lock_body, send,
    small_window_connection, start_configured as start, state_body,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends a request as Terraform's client (go-retryablehttp) does: again after a 5xx, waiting
/// the `Retry-After` it was given, at most four more times. The replies, last one last.
async fn send_retrying(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Vec<gateway::Reply> {
    let mut replies = Vec::new();
    for _ in 0..5 {
        let reply = send(addr, method, path, Some(WRITER), body).await;
        let wait = reply
            .header("retry-after")
            .and_then(|seconds| seconds.parse().ok())
            .unwrap_or(1);
        let again = reply.status >= 500 && reply.status != 501;
        replies.push(reply);
        if !again {
            break;
        }
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_never_read_their_answers_do_not_hold_every_connection_slot() {
    let (gateway, _) = start(false, |config| {
        config.limits.max_connections = 4;
        config.limits.write_timeout_secs = 2;
    })
    .await;
    let mut attackers = Vec::new();
    for _ in 0..4 {
        let stream = small_window_connection(gateway.addr).await;
        attackers.push(tokio::spawn(flood_without_reading(stream)));
    }
    // Let them fill their windows and the gateway's buffers.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Generous nets: the gateway must first fill its send buffers (megabytes of answers,
    // each an unoptimised request), and the suite runs many tests at once on few cores.
    let healthy = tokio::time::timeout(
        Duration::from_secs(240),
        send(gateway.addr, "GET", "/healthz", None, b""),
    )
    .await
    .expect("a legitimate /healthz is answered while never-reading clients are connected");
    assert_eq!(healthy.status, 200);

    for attacker in attackers {
        let closed = tokio::time::timeout(Duration::from_secs(240), attacker)
            .await
            .expect("the gateway closes a connection that does not read its answers")
            .unwrap();
        assert!(closed, "the never-reading connection was closed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_dribbling_their_headers_do_not_hold_every_connection_slot() {
    let (gateway, _) = start(false, |config| {
        config.limits.max_connections = 4;
        config.limits.header_timeout_secs = 1;
    })
    .await;
    let mut attackers = Vec::new();
    for _ in 0..4 {
        let stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        attackers.push(tokio::spawn(dribble_headers(stream)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let healthy = tokio::time::timeout(
        Duration::from_secs(30),
        send(gateway.addr, "GET", "/healthz", None, b""),
    )
    .await
    .expect("a legitimate /healthz is answered while slow-header clients are connected");
    assert_eq!(healthy.status, 200);
    for attacker in attackers {
        let closed = tokio::time::timeout(Duration::from_secs(60), attacker)
            .await
            .expect("the attacker stops")
            .unwrap();
        assert!(closed, "a client dribbling its headers is disconnected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_keep_alive_connection_is_closed() {
    let (gateway, _) = start(false, |config| {
        config.limits.header_timeout_secs = 1;
    })
    .await;
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(30), async {
        while !seen.ends_with(b"ok\n") {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "closed before answering");
            seen.extend_from_slice(&buffer[..n]);
        }
    })
    .await
    .expect("answered");
    // Then nothing more is sent: the gateway closes the connection.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "an idle keep-alive connection was kept open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_whose_store_write_outlasts_the_request_timeout_is_503_and_its_retry_gets_it() {
    let (gateway, proxy) = start(true, |config| {
        config.limits.request_timeout_secs = 2;
    })
    .await;
    let proxy = proxy.unwrap();
    let lock_key = format!("{}.tflock", key("slow-lock"));
    proxy.inject(
        Rule::new(Fault::DelayResponse(Duration::from_secs(4)))
            .method("PUT")
            .path(lock_key.clone()),
    );
    let body = lock_body("slow-lock-id", "ci@runner");
    let replies = send_retrying(gateway.addr, "LOCK", "/slow-lock", &body).await;
    let first = &replies[0];
    assert_eq!(
        first.status,
        503,
        "a status Terraform's client retries: {}",
        first.text()
    );
    assert!(first.header("retry-after").is_some(), "{:?}", first.headers);

    // Terraform's retry of the same LOCK: the lock is the client's.
    let retry = replies.last().unwrap();
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert_eq!(retry.json()["ID"], "slow-lock-id");
    let stored = common::get_raw(&gateway.bucket, &lock_key).await;
    let stored: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored["ID"], "slow-lock-id");

    // And it unlocks it: no lock is left that no client holds.
    let unlock = send(gateway.addr, "UNLOCK", "/slow-lock", Some(WRITER), &body).await;
    assert_eq!(unlock.status, 200, "{}", unlock.text());
    assert!(
        common::client()
            .head_object()
            .bucket(&gateway.bucket)
            .key(&lock_key)
            .send()
            .await
            .is_err(),
        "the lock is released"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_whose_store_write_outlasts_the_request_timeout_is_503_and_its_retry_succeeds() {
    let (gateway, proxy) = start(true, |config| {
        config.limits.request_timeout_secs = 2;
    })
    .await;
    let proxy = proxy.unwrap();
    proxy.inject(
        Rule::new(Fault::DelayResponse(Duration::from_secs(4)))
            .method("PUT")
            .path(key("slow-write"))
            // The first PUT is the gateway's own lock.
            .after(1),
    );
    let body = state_body("31313131-2222-3333-4444-555555555555", 1, 1);
    let replies = send_retrying(gateway.addr, "POST", "/slow-write", &body).await;
    let first = &replies[0];
    assert_eq!(first.status, 503, "{}", first.text());
    assert!(first.header("retry-after").is_some(), "{:?}", first.headers);
    // The retry arrives while the first is still on its way to S3 (it gets the first's
    // outcome) or after (its state is already stored): either way, success, written once.
    let retry = replies.last().unwrap();
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert_eq!(
        common::version_count(&gateway.bucket, &key("slow-write")).await,
        1
    );
    assert_eq!(
        common::get_raw(&gateway.bucket, &key("slow-write")).await,
        body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_lines_are_json_objects_with_who_from_where_what_and_the_outcome() {
    let dir = common::temp_dir("s3state-gw-audit");
    let path = dir.join("audit.log");
    let (gateway, _) = start(false, |config| {
        config.audit_log = Some(path.clone());
    })
    .await;
    let addr = gateway.addr;
    let lineage = "41414141-2222-3333-4444-555555555555";
    let lock = lock_body("audit-lock", "ci@runner");
    assert_eq!(
        send(addr, "LOCK", "/audited", Some(WRITER), &lock)
            .await
            .status,
        200
    );
    let post = send(
        addr,
        "POST",
        "/audited?ID=audit-lock",
        Some(WRITER),
        &state_body(lineage, 3, 777_777),
    )
    .await;
    assert_eq!(post.status, 200, "{}", post.text());
    assert_eq!(
        send(addr, "UNLOCK", "/audited", Some(WRITER), &lock)
            .await
            .status,
        200
    );
    let refused = send(
        addr,
        "GET",
        "/audited",
        Some((READER.0, "a-wrong-password")),
        b"",
    )
    .await;
    assert_eq!(refused.status, 401);

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("an audit line is not JSON ({err}): {line:?}"))
        })
        .collect();
    let write = lines
        .iter()
        .find(|line| line["method"] == "POST")
        .unwrap_or_else(|| panic!("no audit line for the POST: {text}"));
    for field in ["time", "principal", "client", "method", "state", "outcome"] {
        assert!(write.get(field).is_some(), "no {field}: {write}");
    }
    assert_eq!(write["principal"], WRITER.0);
    assert!(
        write["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{write}"
    );
    assert_eq!(write["state"], "audited");
    assert_eq!(write["serial"], 3);
    assert!(write["version_id"].as_str().is_some(), "{write}");
    assert_eq!(write["outcome"], "written");
    time::OffsetDateTime::parse(
        write["time"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("an RFC 3339 time");
    assert!(
        lines
            .iter()
            .any(|line| line["method"] == "LOCK" && line["outcome"] == "locked"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line["method"] == "UNLOCK" && line["outcome"] == "unlocked"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line["outcome"] == "refused: unauthenticated"),
        "a failed login is audited: {text}"
    );
    // No secrets and no state content.
    assert!(!text.contains("a-wrong-password"), "{text}");
    assert!(!text.contains(WRITER.1), "{text}");
    assert!(!text.contains("777777"), "{text}");
    assert!(!text.contains("Authorization"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_are_for_admins_only() {
    let (gateway, _) = start(false, |_| {}).await;
    let addr = gateway.addr;
    for credentials in [READER, WRITER] {
        let refused = send(addr, "GET", "/metrics", Some(credentials), b"").await;
        assert_eq!(refused.status, 403, "{}: {}", credentials.0, refused.text());
        assert!(!refused.text().contains("s3state_gateway"));
    }
    let metrics = send(addr, "GET", "/metrics", Some(ADMIN), b"").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("s3state_gateway_requests_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_failure_is_a_short_502_with_a_request_id_and_no_internals() {
    let (gateway, proxy) = start(true, |_| {}).await;
    let proxy = proxy.unwrap();
    proxy.inject(
        Rule::new(Fault::Status(500, "InternalError"))
            .method("GET")
            .path(key("broken"))
            .times(100),
    );
    let reply = send(gateway.addr, "GET", "/broken", Some(READER), b"").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let text = reply.text();
    assert!(text.contains("request id "), "{text}");
    for internal in [
        "InternalError",
        "service error",
        "dispatch",
        gateway.bucket.as_str(),
        "127.0.0.1",
        "gw/broken",
    ] {
        assert!(!text.contains(internal), "{internal:?} in {text:?}");
    }
    assert!(text.len() < 200, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_logins_from_one_address_are_rate_limited_and_known_clients_go_on() {
    let (gateway, _) = start(false, |_| {}).await;
    let addr = gateway.addr;
    // A client that has logged in before.
    assert_eq!(
        send(addr, "GET", "/rl", Some(WRITER), b"").await.status,
        404
    );
    let mut statuses = Vec::new();
    for attempt in 0..12 {
        let user = if attempt % 2 == 0 { WRITER.0 } else { "nobody" };
        let reply = send(addr, "GET", "/rl", Some((user, "guessed-password")), b"").await;
        statuses.push(reply.status);
        if reply.status == 429 {
            assert!(reply.header("retry-after").is_some(), "{:?}", reply.headers);
        }
    }
    assert!(
        statuses[..5].iter().all(|status| *status == 401),
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // The client that logged in before is still served.
    assert_eq!(
        send(addr, "GET", "/rl", Some(WRITER), b"").await.status,
        404
    );
}

/// A careless client's state whose lineage holds a CR/LF, or is 3,000 characters long, or
/// whose Terraform version is, is written (what cannot be carried in S3's metadata is left to
/// the body) and read back as sent, and a lock taken on it keeps its metadata within S3's
/// 2 KB too. It was a 502 "retry" for the CR/LF, which no retry cures, and real S3 refuses a
/// PUT with more than 2 KB of user metadata (the emulators do not: the stored metadata are
/// measured). (Found attacking issue 26.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn odd_lineages_and_versions_are_written_and_keep_the_metadata_within_s3s_limit() {
    let (gateway, _) = start(false, |_| {}).await;
    let long_version = {
        let mut state: serde_json::Value =
            serde_json::from_slice(&state_body("0a1d0c5e-3333-4444-8555-666666666666", 1, 1))
                .unwrap();
        state["terraform_version"] = serde_json::json!(format!("1.15.5-{}", "a".repeat(3000)));
        serde_json::to_vec(&state).unwrap()
    };
    let bodies = [
        state_body("a\r\nb", 1, 1),
        state_body(&"l".repeat(3000), 1, 1),
        long_version,
    ];
    let client = common::client();
    for (n, body) in bodies.iter().enumerate() {
        let path = format!("/odd/{n}");
        let write = send(gateway.addr, "POST", &path, Some(WRITER), body).await;
        assert_eq!(write.status, 200, "{n}: {}", write.text());
        let read = send(gateway.addr, "GET", &path, Some(WRITER), b"").await;
        assert_eq!(read.status, 200, "{n}");
        assert_eq!(&read.body, body, "{n}: read back as sent");
        let lock = send(
            gateway.addr,
            "LOCK",
            &path,
            Some(WRITER),
            &lock_body(&format!("odd-{n}"), "writer@host"),
        )
        .await;
        assert_eq!(lock.status, 200, "{n}: {}", lock.text());
        for object in [key(&path[1..]), format!("{}.tflock", key(&path[1..]))] {
            let head = client
                .head_object()
                .bucket(&gateway.bucket)
                .key(&object)
                .send()
                .await
                .unwrap();
            let metadata = head.metadata().cloned().unwrap_or_default();
            let size: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
            assert!(size <= 2048, "{n}: {object}: {size} bytes of metadata");
        }
    }
}
