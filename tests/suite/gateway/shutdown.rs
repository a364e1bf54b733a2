//! A graceful shutdown (what SIGTERM does) in the middle of load: 16 clients do LOCK → GET →
//! POST → UNLOCK rounds on 4 states; the gateway is shut down, then restarted on the same
//! bucket, and the clients finish their round there (as Terraform's client retries). Every
//! write acknowledged with 200 is in S3 exactly once, the stopped gateway's run returned
//! within its grace period plus the S3 time limit, and no lock is left.

use crate::common;
use crate::common::gateway;

use gateway::load::{counter, create_counters, incremented};
use gateway::{Reply, WRITER, key, lock_body, try_send};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const CLIENTS: usize = 16;
const STATES: usize = 4;
const GRACE_SECS: u64 = 10;
const S3_OPERATION: Duration = Duration::from_secs(10);

/// Sends until the gateway at the current address answers, and answers anything but 503 (a
/// refused or reset connection is a gateway stopping or not yet restarted).
async fn send_until_answered(
    addr: &watch::Receiver<SocketAddr>,
    method: &str,
    path: &str,
    body: &[u8],
) -> Reply {
    for _ in 0..600 {
        let current = *addr.borrow();
        match try_send(current, method, path, Some(WRITER), body).await {
            Some(reply) if reply.status != 503 => return reply,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("{method} {path}: no answer for a minute");
}

/// One round; it returns once its POST was acknowledged with 200 and its lock released.
async fn round(addr: &watch::Receiver<SocketAddr>, name: &str, client: usize) {
    let path = format!("/{name}");
    let lock = lock_body(
        &uuid::Uuid::new_v4().to_string(),
        &format!("c{client}@load"),
    );
    loop {
        let reply = send_until_answered(addr, "LOCK", &path, &lock).await;
        match reply.status {
            200 => break,
            423 => tokio::time::sleep(Duration::from_millis(fastrand::u64(1..20))).await,
            other => panic!("LOCK answered {other}: {}", reply.text()),
        }
    }
    let state = incremented(&send_until_answered(addr, "GET", &path, b"").await);
    let id: serde_json::Value = serde_json::from_slice(&lock).unwrap();
    let posted = format!("{path}?ID={}", id["ID"].as_str().unwrap());
    let posted = send_until_answered(addr, "POST", &posted, &state.to_bytes()).await;
    assert_eq!(posted.status, 200, "{}", posted.text());
    let unlocked = send_until_answered(addr, "UNLOCK", &path, &lock).await;
    assert_eq!(unlocked.status, 200, "{}", unlocked.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_shutdown_under_load_loses_no_acknowledged_write_and_leaves_no_lock() {
    let bucket = common::bucket(true).await;
    let config = || {
        let mut config = gateway::config(&bucket);
        config.limits.shutdown_grace_secs = GRACE_SECS;
        config.s3.operation_timeout = Some(S3_OPERATION);
        config
    };
    let mut first = gateway::start_with(config()).await;
    let names: Vec<String> = (0..STATES).map(|i| format!("shutdown/state-{i}")).collect();
    create_counters(first.addr, &names).await;

    let (publish, addr) = watch::channel(first.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let total = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let name = names[client % STATES].clone();
        let (addr, stop) = (addr.clone(), Arc::clone(&stop));
        let (acknowledged, total) = (Arc::clone(&acknowledged), Arc::clone(&total));
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                round(&addr, &name, client).await;
                *acknowledged
                    .lock()
                    .unwrap()
                    .entry(name.clone())
                    .or_default() += 1;
                total.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // In the middle of the load.
    while total.load(Ordering::SeqCst) < CLIENTS {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = first.take_shutdown().send(());
    let bound = Duration::from_secs(GRACE_SECS) + S3_OPERATION + Duration::from_secs(5);
    tokio::time::timeout(bound, first.stop())
        .await
        .expect("the gateway stops within its grace period plus the S3 time limit");

    // Every write acknowledged so far is in S3 (the clients' locks may be held: they unlock
    // through the next gateway).
    let so_far = acknowledged.lock().unwrap().clone();
    for (name, writes) in &so_far {
        let (_, n) = counter(&common::get_raw(&bucket, &key(name)).await);
        assert!(
            n as usize >= *writes,
            "{name}: {n} in S3, {writes} acknowledged"
        );
    }

    // The restart (on another port, published to the clients): they finish their rounds
    // there.
    let second = gateway::start_with(config()).await;
    publish.send(second.addr).unwrap();
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        tokio::time::timeout(Duration::from_secs(300), client)
            .await
            .expect("the clients finish their rounds")
            .unwrap();
    }

    // Each acknowledged increment exactly once, and no lock left.
    let acknowledged = acknowledged.lock().unwrap().clone();
    for name in &names {
        let writes = acknowledged.get(name).copied().unwrap_or(0);
        let (state, n) = counter(&common::get_raw(&bucket, &key(name)).await);
        assert_eq!(n as usize, writes, "{name}: lost or repeated updates");
        assert_eq!(state.serial as usize, writes + 1, "{name}: serial");
    }
    let locks: Vec<String> = gateway::list_keys(&bucket)
        .await
        .into_iter()
        .filter(|key| key.ends_with(".tflock"))
        .collect();
    assert!(locks.is_empty(), "locks left: {locks:?}");
    second.stop().await;
}
