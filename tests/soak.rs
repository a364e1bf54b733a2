//! Contention across OS processes (not tasks): 4 processes × 50 increments of one counter,
//! once with the lock-free compare-and-swap `update()` and once with Terraform's
//! lock → refresh → change → persist → unlock. No increment may be lost, every increment is
//! exactly one new version, and the serials are unique and consecutive.
//!
//! This test has its own `main` (harness = false): it re-runs its own executable with
//! `--worker` to get separate processes.

// The suite's harness; soak uses only its LocalStack bucket and manager helpers.
#[path = "suite/common/mod.rs"]
#[allow(dead_code)]
mod common;

use s3state::{
    LockRetry, Locker, OutputValue, Persister, Refresher, RemoteStateOptions, Transient,
};
use std::process::Command;
use std::time::{Duration, Instant};

const PROCESSES: u64 = 4;
const INCREMENTS: u64 = 50;

use common::counter;

fn options() -> RemoteStateOptions {
    RemoteStateOptions {
        max_update_attempts: 1000,
        // Tight update loops are not fair to each other (a process that has just released
        // the lock takes it again at once), so on a loaded machine one process can wait past
        // update()'s 60 s default. The soak checks lost increments, so its wait is bounded by
        // the others finishing.
        update_locking: s3state::UpdateLocking::Lock {
            timeout: Duration::from_secs(900),
        },
        lock_retry: LockRetry {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(50),
        },
        ..Default::default()
    }
}

async fn worker(bucket: &str, key: &str, mode: &str) {
    let manager = common::builder(bucket, key)
        .with_options(options())
        .build()
        .await
        .unwrap();
    for _ in 0..INCREMENTS {
        match mode {
            "cas" => {
                manager
                    .update(|s| {
                        let next = counter(s) + 1;
                        s.outputs.insert("counter".into(), OutputValue::new(&next));
                    })
                    .await
                    .expect("update");
            }
            "lock" => {
                let id =
                    common::lock_within(&manager, "OperationTypeApply", Duration::from_secs(300))
                        .await
                        .expect("lock");
                manager.refresh_state().await.expect("refresh");
                let mut state = manager.state().expect("seeded");
                let next = counter(&state) + 1;
                state
                    .outputs
                    .insert("counter".into(), OutputValue::new(&next));
                manager.write_state(state);
                // Under the lock nobody else writes, so a conflict here would be a bug.
                manager
                    .persist_state()
                    .await
                    .expect("persist under the lock");
                manager.unlock(&id).await.expect("unlock");
            }
            other => panic!("unknown mode {other}"),
        }
    }
}

async fn scenario(mode: &str) -> Result<String, String> {
    let bucket = common::bucket(true).await;
    let key = format!("soak-{mode}/terraform.tfstate");
    let seed = common::manager(&bucket, &key).await;
    seed.update(common::set_output("counter", 0)).await.unwrap();
    let started = Instant::now();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--worker", &bucket, &key, mode])
                .env("S3STATE_TEST_ENDPOINT", common::endpoint())
                .spawn()
                .expect("starting a worker process")
        })
        .collect();
    for mut child in children {
        let status = child.wait().unwrap();
        if !status.success() {
            return Err(format!("{mode}: a worker process failed: {status}"));
        }
    }
    let elapsed = started.elapsed();

    seed.refresh_state().await.unwrap();
    let total = PROCESSES * INCREMENTS;
    let final_counter = counter(&seed.state().unwrap());
    let history = common::detailed_history(&seed, Some(16)).await;
    let mut serials: Vec<u64> = history
        .iter()
        .map(|e| e.meta.as_ref().unwrap().serial)
        .collect();
    serials.reverse();
    let expected: Vec<u64> = (1..=total + 1).collect();
    if final_counter != total {
        return Err(format!(
            "{mode}: the counter is {final_counter}, expected {total}"
        ));
    }
    if history.len() as u64 != total + 1 {
        return Err(format!(
            "{mode}: {} versions, expected {} (the seed plus one per increment)",
            history.len(),
            total + 1
        ));
    }
    if serials != expected {
        return Err(format!(
            "{mode}: serials are not unique and consecutive: {serials:?}"
        ));
    }
    Ok(format!(
        "{mode}: {PROCESSES} processes × {INCREMENTS} increments: counter {final_counter}, {total} new versions, serials 2..={} consecutive, {:.1} s ({:.0} commits/s)",
        total + 1,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    if args.get(1).map(String::as_str) == Some("--worker") {
        runtime.block_on(worker(&args[2], &args[3], &args[4]));
        return;
    }
    // `cargo test -- <filter>` passes its own arguments; this suite always runs whole.
    let mut failed = false;
    for mode in ["cas", "lock"] {
        match runtime.block_on(scenario(mode)) {
            Ok(report) => println!("soak {report} ... ok"),
            Err(message) => {
                println!("soak {message} ... FAILED");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
    println!("soak: 2 scenarios passed");
}
