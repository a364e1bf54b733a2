//! The adversarial table (issue 23): one gateway with small limits, behind a fault proxy, and
//! a table of attacks, each with the answer it must get. After every row: nothing was written
//! (the state's versions, body and the bucket's keys are unchanged), no lock is left, and the
//! gateway still answers `GET /healthz` within a second (a liveness bound, not a benchmark).
//!
//! Every attack targets 127.0.0.1 and stops by itself; every wait has a safety net.

use crate::common;
use crate::common::gateway;
use crate::common::proxy::{Fault, FaultProxy, Rule};

use gateway::{
    READER, Running, TEAM_A, WRITER, dribble_headers, flood_without_reading, key, list_keys,
    lock_body, send, small_window_connection, state_body,
};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The attacked state: `TEAM_A` owns its lock in the theft rows, `WRITER` is the thief.
const TARGET: &str = "team-a/target";
const LINEAGE: &str = "a77ac4ed-2222-3333-4444-555555555555";
const OWNER_ID: &str = "a77ac4ed-0000-4000-8000-00000000000a";
const OWNER: &str = "owner@host";
/// The safety net of every wait on the gateway; generous, as the suite runs many tests at once.
const NET: Duration = Duration::from_secs(120);

/// What an attack does.
enum Attack {
    /// While `TEAM_A` holds the lock `OWNER_ID`, `WRITER` sends this method, path and body.
    Theft(&'static str, String, Vec<u8>),
    /// One request with these credentials.
    Request(
        &'static str,
        String,
        Option<(&'static str, &'static str)>,
        Vec<u8>,
    ),
    /// Headers one byte every 100 ms, never finished.
    SlowHeaders,
    /// Pipelined requests on a connection whose answers are never read.
    SlowRead,
    /// Three times `max_connections` connections that send nothing.
    ConnectionFlood,
    /// A chunked body dribbled past `max_body_bytes`.
    SlowOversizeBody,
    /// Headers and half the body announced, then the connection closed.
    HalfBodyThenClose,
    /// Wrong passwords until the per-address limit.
    LoginFlood,
    /// A read while S3 accepts the state's GETs and never answers them.
    StalledS3,
    /// A write while S3 resets the connection of every PUT under the state.
    ResetS3,
}

/// The answer an attack gets.
#[derive(Debug, PartialEq)]
enum Answer {
    Status(u16),
    /// A 5xx: the store failed (which one depends on which time limit fired first).
    StoreFailure,
    /// The gateway closed the connection(s).
    Closed,
    /// The attacker left; nothing to answer.
    Gone,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attacks_get_their_answer_write_nothing_leave_no_lock_and_the_gateway_stays_up() {
    let (gateway, proxy) = gateway::start_configured(true, |config| {
        config.limits.max_connections = 4;
        config.limits.header_timeout_secs = 1;
        config.limits.request_timeout_secs = 2;
        config.limits.write_timeout_secs = 1;
        config.limits.failed_logins_per_minute = 3;
        config.s3.connect_timeout = Some(Duration::from_secs(1));
        config.s3.read_timeout = Some(Duration::from_secs(1));
        config.s3.operation_attempt_timeout = Some(Duration::from_secs(1));
        config.s3.operation_timeout = Some(Duration::from_secs(2));
    })
    .await;
    let proxy = proxy.unwrap();
    let addr = gateway.addr;
    let path = format!("/{TARGET}");
    let written = state_body(LINEAGE, 1, 1);
    assert_eq!(
        send(addr, "POST", &path, Some(TEAM_A), &written)
            .await
            .status,
        200
    );
    // Every credential the rows use logs in once before the login flood.
    assert_eq!(
        send(addr, "GET", &path, Some(READER), b"").await.status,
        200
    );
    assert_eq!(
        send(addr, "GET", &path, Some(WRITER), b"").await.status,
        200
    );
    let next = || state_body(LINEAGE, 2, 2);
    let owner_lock = || lock_body(OWNER_ID, OWNER);
    let with_id = format!("{path}?ID={OWNER_ID}");
    let rows: Vec<(&str, Attack, Answer)> = vec![
        (
            "a POST with the owner's lock ID",
            Attack::Theft("POST", with_id.clone(), next()),
            Answer::Status(403),
        ),
        (
            "a DELETE with the owner's lock ID",
            Attack::Theft("DELETE", with_id.clone(), vec![]),
            Answer::Status(403),
        ),
        (
            "a repeated LOCK with the owner's lock info",
            Attack::Theft("LOCK", path.clone(), owner_lock()),
            Answer::Status(403),
        ),
        (
            "an UNLOCK with the owner's lock info",
            Attack::Theft("UNLOCK", path.clone(), owner_lock()),
            Answer::Status(403),
        ),
        (
            "a name with ..",
            Attack::Request("POST", "/team-a/x/../target".into(), Some(WRITER), next()),
            Answer::Status(400),
        ),
        (
            "a name with an encoded ..",
            Attack::Request(
                "POST",
                "/team-a/%2e%2e/team-a/target".into(),
                Some(WRITER),
                next(),
            ),
            Answer::Status(400),
        ),
        (
            "a lock object's name",
            Attack::Request("LOCK", format!("{path}.tflock"), Some(WRITER), owner_lock()),
            Answer::Status(400),
        ),
        (
            "a digest item's name",
            Attack::Request("POST", format!("{path}-md5"), Some(WRITER), next()),
            Answer::Status(400),
        ),
        (
            "a reserved name",
            Attack::Request("POST", format!("/_history{path}"), Some(WRITER), next()),
            Answer::Status(405),
        ),
        (
            "a double slash inside",
            Attack::Request("POST", "/team-a//target".into(), Some(WRITER), next()),
            Answer::Status(400),
        ),
        (
            "a leading double slash",
            Attack::Request("POST", format!("/{path}"), Some(WRITER), next()),
            Answer::Status(400),
        ),
        (
            "slow headers (slowloris)",
            Attack::SlowHeaders,
            Answer::Closed,
        ),
        (
            "a client that never reads",
            Attack::SlowRead,
            Answer::Closed,
        ),
        (
            "connections over max_connections",
            Attack::ConnectionFlood,
            Answer::Closed,
        ),
        (
            "a body over the limit, sent slowly",
            Attack::SlowOversizeBody,
            Answer::Status(413),
        ),
        (
            "a client gone mid-body",
            Attack::HalfBodyThenClose,
            Answer::Gone,
        ),
        ("a stalled S3", Attack::StalledS3, Answer::StoreFailure),
        ("a resetting S3", Attack::ResetS3, Answer::StoreFailure),
        // Last: it locks 127.0.0.1 out of new logins for a minute.
        ("a login flood", Attack::LoginFlood, Answer::Status(429)),
    ];

    let before = Snapshot::take(&gateway).await;
    for (what, attack, expected) in rows {
        let answer = attack_once(&gateway, &proxy, attack).await;
        assert_eq!(answer, expected, "{what}");
        before.unchanged(&gateway, what).await;
    }
}

/// What must not change.
struct Snapshot {
    versions: usize,
    body: Vec<u8>,
    keys: Vec<String>,
}

impl Snapshot {
    async fn take(gateway: &Running) -> Snapshot {
        Snapshot {
            versions: common::version_count(&gateway.bucket, &key(TARGET)).await,
            body: common::get_raw(&gateway.bucket, &key(TARGET)).await,
            keys: list_keys(&gateway.bucket).await,
        }
    }

    /// Nothing written, no lock left (no new key at all), and `/healthz` answered within 1 s.
    async fn unchanged(&self, gateway: &Running, what: &str) {
        let now = Snapshot::take(gateway).await;
        assert_eq!(now.versions, self.versions, "{what}: a version was written");
        assert_eq!(now.body, self.body, "{what}: the state changed");
        assert_eq!(now.keys, self.keys, "{what}: a key (a lock?) was left");
        let healthy = tokio::time::timeout(
            Duration::from_secs(1),
            send(gateway.addr, "GET", "/healthz", None, b""),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: /healthz was not answered within a second"));
        assert_eq!(healthy.status, 200, "{what}");
    }
}

async fn attack_once(gateway: &Running, proxy: &FaultProxy, attack: Attack) -> Answer {
    let addr = gateway.addr;
    let path = format!("/{TARGET}");
    match attack {
        Attack::Theft(method, target, body) => {
            let lock_key = format!("{}.tflock", key(TARGET));
            let owner_lock = lock_body(OWNER_ID, OWNER);
            let locked = send(addr, "LOCK", &path, Some(TEAM_A), &owner_lock).await;
            assert_eq!(locked.status, 200, "{}", locked.text());
            let held = common::get_raw(&gateway.bucket, &lock_key).await;
            let reply = send(addr, method, &target, Some(WRITER), &body).await;
            // The owner's lock is intact, and the owner releases it.
            assert_eq!(common::get_raw(&gateway.bucket, &lock_key).await, held);
            let unlocked = send(addr, "UNLOCK", &path, Some(TEAM_A), &owner_lock).await;
            assert_eq!(unlocked.status, 200, "{}", unlocked.text());
            Answer::Status(reply.status)
        }
        Attack::Request(method, target, auth, body) => {
            Answer::Status(send(addr, method, &target, auth, &body).await.status)
        }
        Attack::SlowHeaders => {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            closed(dribble_headers(stream).await)
        }
        Attack::SlowRead => {
            let stream = small_window_connection(addr).await;
            let flood = tokio::time::timeout(NET, flood_without_reading(stream));
            closed(flood.await.expect("the flood stops"))
        }
        Attack::ConnectionFlood => {
            let mut flood = Vec::new();
            for _ in 0..12 {
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                flood.push(tokio::spawn(async move {
                    let mut rest = Vec::new();
                    tokio::time::timeout(NET, stream.read_to_end(&mut rest))
                        .await
                        .is_ok()
                }));
            }
            // The queued connections are served in turn: a legitimate request gets through.
            let healthy = tokio::time::timeout(NET, send(addr, "GET", "/healthz", None, b""));
            assert_eq!(healthy.await.expect("served during the flood").status, 200);
            let mut all = true;
            for connection in flood {
                all &= connection.await.unwrap();
            }
            closed(all)
        }
        Attack::SlowOversizeBody => {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut read, mut write) = stream.into_split();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
                gateway::basic(TEAM_A)
            );
            write.write_all(head.as_bytes()).await.unwrap();
            let sender = tokio::spawn(async move {
                let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
                // 4 MiB at most, 64 KiB every 50 ms; the limit is 1 MiB.
                for _ in 0..64 {
                    if write.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            let mut raw = Vec::new();
            let _ = tokio::time::timeout(NET, read.read_to_end(&mut raw)).await;
            sender.abort();
            Answer::Status(gateway::parse_reply(&raw).status)
        }
        Attack::HalfBodyThenClose => {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let body = state_body(LINEAGE, 2, 2);
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: a\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n",
                gateway::basic(TEAM_A),
                body.len()
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(&body[..body.len() / 2]).await.unwrap();
            drop(stream);
            // Give the gateway the time to see the connection end.
            tokio::time::sleep(Duration::from_millis(200)).await;
            Answer::Gone
        }
        Attack::LoginFlood => {
            let mut last = 0;
            for _ in 0..6 {
                let guess = (WRITER.0, "a-guessed-password");
                last = send(addr, "GET", &path, Some(guess), b"").await.status;
            }
            Answer::Status(last)
        }
        // The fault rules stay: the rows after these do not reach S3 through the gateway.
        Attack::StalledS3 => {
            proxy.inject(
                Rule::new(Fault::Stall)
                    .method("GET")
                    .path_ending(key(TARGET))
                    .times(1000),
            );
            store_failure(send(addr, "GET", &path, Some(READER), b"").await.status)
        }
        Attack::ResetS3 => {
            proxy.inject(
                Rule::new(Fault::ResetBeforeForward)
                    .method("PUT")
                    .path(key(TARGET))
                    .times(1000),
            );
            let body = state_body(LINEAGE, 2, 2);
            let status = send(addr, "POST", &path, Some(TEAM_A), &body).await.status;
            // A write that outlived its request finishes, or fails, within the S3 time limit.
            tokio::time::sleep(Duration::from_secs(3)).await;
            store_failure(status)
        }
    }
}

fn closed(closed: bool) -> Answer {
    if closed {
        Answer::Closed
    } else {
        Answer::Status(0)
    }
}

fn store_failure(status: u16) -> Answer {
    if (500..600).contains(&status) {
        Answer::StoreFailure
    } else {
        Answer::Status(status)
    }
}
