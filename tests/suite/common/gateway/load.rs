//! The gateway under load, shared by the `gateway_load` test and the `gateway` benchmark:
//! `clients` concurrent Rust clients do LOCK → GET → POST → UNLOCK rounds on `states` states,
//! and the same work is done through the library's locked `update()` for reference. Both
//! check that every update landed exactly once and that no lock is left; neither asserts
//! anything about time.

use super::{WRITER, lock_body, send};
use crate::common;
use s3state::{OutputValue, State};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub clients: usize,
    pub states: usize,
    pub rounds: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    /// LOCK attempts answered 423 because the lock was held (gateway runs only).
    pub refused_locks: usize,
    /// The gateway's S3 requests by kind (`GET lock`, `PUT state`, ...), when its requests
    /// went through the recording proxy ([`through_gateway_counted`]).
    pub s3_requests: Vec<(String, usize)>,
}

impl LoadReport {
    pub fn rounds_per_second(&self) -> f64 {
        self.rounds as f64 / self.elapsed.as_secs_f64()
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} clients, {} states, {} rounds in {:.2?}: {:.1} rounds/s; round latency p50 {:.1?}, p99 {:.1?}; {} LOCK attempts found the lock held",
            self.clients,
            self.states,
            self.rounds,
            self.elapsed,
            self.rounds_per_second(),
            self.p50,
            self.p99,
            self.refused_locks
        )
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// A state body and its `counter` output (0 when it has none).
pub fn counter(body: &[u8]) -> (State, u64) {
    let state = State::from_slice(body).unwrap();
    let n = state
        .outputs
        .get("counter")
        .map(|o| o.to_value().as_u64().unwrap())
        .unwrap_or(0);
    (state, n)
}

/// The state a GET answered, with its counter + 1 and the next serial.
pub fn incremented(got: &super::Reply) -> State {
    assert_eq!(got.status, 200, "{}", got.text());
    let (mut state, n) = counter(&got.body);
    state.serial += 1;
    state
        .outputs
        .insert("counter".into(), OutputValue::new(&(n + 1)));
    state
}

/// How many rounds land on state `index` when client `c` works on state `c % states`.
fn expected_rounds(index: usize, clients: usize, states: usize, rounds_per_client: usize) -> usize {
    (0..clients).filter(|c| c % states == index).count() * rounds_per_client
}

/// One client round: lock (retrying while held), get, post the counter + 1, unlock.
/// Returns the number of LOCK attempts refused because the lock was held.
async fn round(addr: std::net::SocketAddr, name: &str, client: usize) -> usize {
    let id = uuid::Uuid::new_v4().to_string();
    let path = format!("/{name}");
    let mut waits = 0;
    loop {
        let reply = send(
            addr,
            "LOCK",
            &path,
            Some(WRITER),
            &lock_body(&id, &format!("client{client}@load")),
        )
        .await;
        match reply.status {
            200 => break,
            423 => {
                waits += 1;
                tokio::time::sleep(Duration::from_millis(fastrand::u64(1..20))).await;
            }
            other => panic!("LOCK answered {other}: {}", reply.text()),
        }
    }
    let state = incremented(&send(addr, "GET", &path, Some(WRITER), b"").await);
    let posted = send(
        addr,
        "POST",
        &format!("{path}?ID={id}"),
        Some(WRITER),
        &state.to_bytes(),
    )
    .await;
    assert_eq!(posted.status, 200, "{}", posted.text());
    let unlocked = send(
        addr,
        "UNLOCK",
        &path,
        Some(WRITER),
        &lock_body(&id, &format!("client{client}@load")),
    )
    .await;
    assert_eq!(unlocked.status, 200, "{}", unlocked.text());
    waits
}

/// Creates each of `names` through the gateway at `addr`: counter 0, serial 1.
pub async fn create_counters(addr: std::net::SocketAddr, names: &[String]) {
    for name in names {
        let mut state = State::new(s3state::state::COMPATIBLE_TERRAFORM_VERSION);
        state.lineage = uuid::Uuid::new_v4().to_string();
        state.serial = 1;
        state.outputs.insert("counter".into(), OutputValue::new(&0));
        let reply = send(
            addr,
            "POST",
            &format!("/{name}"),
            Some(WRITER),
            &state.to_bytes(),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

/// Runs the load through a fresh gateway and checks the counters and locks afterwards.
pub async fn through_gateway(
    clients: usize,
    states: usize,
    rounds_per_client: usize,
) -> LoadReport {
    let gateway = super::start().await;
    run_through(gateway, None, clients, states, rounds_per_client).await
}

/// Like [`through_gateway`], with the gateway's S3 requests going through the recording
/// proxy, counted by kind (the proxy's own hop makes it slower: for counts, not times).
pub async fn through_gateway_counted(
    clients: usize,
    states: usize,
    rounds_per_client: usize,
) -> LoadReport {
    let (gateway, proxy) = super::start_through_proxy().await;
    run_through(gateway, Some(proxy), clients, states, rounds_per_client).await
}

/// An S3 request's kind, as the request-count tables name it: method, then `lock` for the
/// `.tflock` object, `state` for a state, `bucket` for the rest.
fn request_kind(request: &common::proxy::Recorded) -> String {
    let object = if request.path.ends_with(".tflock") {
        "lock"
    } else if request.path.contains("/load/") {
        "state"
    } else {
        "bucket"
    };
    let status = match request.status {
        Some(status) if status >= 300 => format!(" {status}"),
        Some(_) => String::new(),
        None => " (cut)".into(),
    };
    format!("{} {object}{status}", request.method)
}

async fn run_through(
    gateway: super::Running,
    proxy: Option<common::proxy::FaultProxy>,
    clients: usize,
    states: usize,
    rounds_per_client: usize,
) -> LoadReport {
    let addr = gateway.addr;
    let names: Vec<String> = (0..states).map(|i| format!("load/state-{i}")).collect();
    create_counters(addr, &names).await;
    if let Some(proxy) = &proxy {
        proxy.take_requests();
    }

    let latencies = Arc::new(Mutex::new(Vec::new()));
    let waits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let name = names[client % states].clone();
        let latencies = Arc::clone(&latencies);
        let waits = Arc::clone(&waits);
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds_per_client {
                let began = Instant::now();
                let waited = round(addr, &name, client).await;
                latencies.lock().unwrap().push(began.elapsed());
                waits.fetch_add(waited, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let mut s3_requests: Vec<(String, usize)> = Vec::new();
    if let Some(proxy) = &proxy {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for request in proxy.take_requests() {
            *counts.entry(request_kind(&request)).or_default() += 1;
        }
        s3_requests = counts.into_iter().collect();
    }

    // Exact counters: every round's increment landed once.
    for (index, name) in names.iter().enumerate() {
        let expected = expected_rounds(index, clients, states, rounds_per_client);
        let got = send(addr, "GET", &format!("/{name}"), Some(WRITER), b"").await;
        let (state, n) = counter(&got.body);
        assert_eq!(n as usize, expected, "{name}: lost updates");
        assert_eq!(state.serial as usize, expected + 1, "{name}: serial");
        let lock = common::client()
            .head_object()
            .bucket(&gateway.bucket)
            .key(format!("{}.tflock", super::key(name)))
            .send()
            .await;
        assert!(lock.is_err(), "{name}: a lock was left behind");
    }
    gateway.stop().await;
    LoadReport {
        s3_requests,
        ..report(
            clients,
            states,
            elapsed,
            &latencies,
            waits.load(std::sync::atomic::Ordering::Relaxed),
        )
    }
}

/// The same work through the library directly (`update()` locks, refreshes, persists and
/// unlocks), each client with its own manager, for the gateway's overhead.
pub async fn through_library(
    clients: usize,
    states: usize,
    rounds_per_client: usize,
) -> LoadReport {
    let bucket = common::bucket(true).await;
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let bucket = bucket.clone();
        let latencies = Arc::clone(&latencies);
        tasks.push(tokio::spawn(async move {
            let manager =
                common::manager(&bucket, &format!("direct/state-{}", client % states)).await;
            for _ in 0..rounds_per_client {
                let began = Instant::now();
                manager
                    .update(|state| {
                        let n = state
                            .outputs
                            .get("counter")
                            .and_then(|o| o.to_value().as_u64())
                            .unwrap_or(0);
                        state
                            .outputs
                            .insert("counter".into(), OutputValue::new(&(n + 1)));
                    })
                    .await
                    .unwrap();
                latencies.lock().unwrap().push(began.elapsed());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    for index in 0..states.min(clients) {
        let manager = common::manager(&bucket, &format!("direct/state-{index}")).await;
        let outputs = s3state::OutputReader::root_output_values(&manager)
            .await
            .unwrap();
        assert_eq!(
            outputs["counter"].to_value().as_u64().unwrap() as usize,
            expected_rounds(index, clients, states, rounds_per_client),
            "direct/state-{index}: lost updates"
        );
    }
    report(clients, states, elapsed, &latencies, 0)
}

fn report(
    clients: usize,
    states: usize,
    elapsed: Duration,
    latencies: &Mutex<Vec<Duration>>,
    refused_locks: usize,
) -> LoadReport {
    let mut sorted = latencies.lock().unwrap().clone();
    sorted.sort();
    LoadReport {
        clients,
        states,
        rounds: sorted.len(),
        elapsed,
        p50: percentile(&sorted, 0.50),
        p99: percentile(&sorted, 0.99),
        refused_locks,
        s3_requests: Vec::new(),
    }
}
