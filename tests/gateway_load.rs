//! A load test of the gateway as a Rust client (not Terraform): 16 concurrent clients do
//! lock → get → post → unlock on 4 states for a fixed number of rounds. Every update must
//! land exactly once (the counters are exact) and no lock may be left behind. Throughput and
//! latency are printed, beside the same work done with direct library calls; nothing is
//! asserted about timing.

mod common;
mod gateway_support;

use gateway_support::{WRITER, lock_body, send};
use s3state::{OutputValue, State};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const STATES: usize = 4;
const ROUNDS_PER_CLIENT: usize = 8;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn counter(body: &[u8]) -> (State, u64) {
    let state = State::from_slice(body).unwrap();
    let n = state
        .outputs
        .get("counter")
        .map(|o| o.to_value().as_u64().unwrap())
        .unwrap_or(0);
    (state, n)
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
    let got = send(addr, "GET", &path, Some(WRITER), b"").await;
    assert_eq!(got.status, 200, "{}", got.text());
    let (mut state, n) = counter(&got.body);
    state.serial += 1;
    state
        .outputs
        .insert("counter".into(), OutputValue::new(&(n + 1)));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_on_four_states_lose_no_update_and_leave_no_lock() {
    let gateway = gateway_support::start().await;
    let addr = gateway.addr;
    let names: Vec<String> = (0..STATES).map(|i| format!("load/state-{i}")).collect();
    // Each state starts at counter 0, serial 1.
    for name in &names {
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

    let latencies = Arc::new(Mutex::new(Vec::new()));
    let waits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let name = names[client % STATES].clone();
        let latencies = Arc::clone(&latencies);
        let waits = Arc::clone(&waits);
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS_PER_CLIENT {
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

    // Exact counters: every round's increment landed once.
    let per_state = CLIENTS / STATES * ROUNDS_PER_CLIENT;
    for name in &names {
        let got = send(addr, "GET", &format!("/{name}"), Some(WRITER), b"").await;
        let (state, n) = counter(&got.body);
        assert_eq!(n as usize, per_state, "{name}: lost updates");
        assert_eq!(state.serial as usize, per_state + 1, "{name}: serial");
        let lock = common::client()
            .head_object()
            .bucket(&gateway.bucket)
            .key(format!("{}.tflock", gateway_support::key(name)))
            .send()
            .await;
        assert!(lock.is_err(), "{name}: a lock was left behind");
    }

    let mut sorted = latencies.lock().unwrap().clone();
    sorted.sort();
    let rounds = sorted.len();
    println!(
        "gateway load: {CLIENTS} clients, {STATES} states, {rounds} rounds (lock+get+post+unlock) in {:.2?}: \
         {:.1} rounds/s; round latency p50 {:.1?}, p99 {:.1?}; {} LOCK attempts found the lock held",
        elapsed,
        rounds as f64 / elapsed.as_secs_f64(),
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.99),
        waits.load(std::sync::atomic::Ordering::Relaxed),
    );

    // The same work through the library directly (update() locks, refreshes, persists and
    // unlocks), for the gateway's overhead.
    let bucket = common::bucket(true).await;
    let direct_latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let bucket = bucket.clone();
        let latencies = Arc::clone(&direct_latencies);
        tasks.push(tokio::spawn(async move {
            let manager =
                common::manager(&bucket, &format!("direct/state-{}", client % STATES)).await;
            for _ in 0..ROUNDS_PER_CLIENT {
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
    let direct_elapsed = started.elapsed();
    let mut sorted = direct_latencies.lock().unwrap().clone();
    sorted.sort();
    println!(
        "direct library (update() with its lock): {} rounds in {:.2?}: {:.1} rounds/s; p50 {:.1?}, p99 {:.1?}",
        sorted.len(),
        direct_elapsed,
        sorted.len() as f64 / direct_elapsed.as_secs_f64(),
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.99),
    );
    for i in 0..STATES {
        let manager = common::manager(&bucket, &format!("direct/state-{i}")).await;
        let outputs = s3state::OutputReader::root_output_values(&manager)
            .await
            .unwrap();
        assert_eq!(
            outputs["counter"].to_value().as_u64().unwrap() as usize,
            per_state
        );
    }
}
