//! Contention across OS processes (not tasks): 4 processes × 50 increments of one counter,
//! once with the lock-free compare-and-swap `update()` and once with Terraform's
//! lock → refresh → change → persist → unlock. No increment may be lost, every increment is
//! exactly one new version, and the serials are unique and consecutive.
//!
//! This test has its own `main` (harness = false): it re-runs its own executable with
//! `--worker` to get separate processes.
//!
//! `cargo test --test soak -- --distributed` runs it on SeaweedFS as a distributed store
//! (`seaweedfs/cluster.sh`: master, two volume servers, filer and S3 gateway, each a process
//! of its own) and kills one volume server (SIGKILL) mid-run, restarting it seconds later. The
//! workers then meet errors: each failed increment is counted and tried again, an increment
//! whose outcome is unknown is counted apart, and at the end no acknowledged increment may be
//! missing (acknowledged ≤ counter ≤ acknowledged + unknown), every increment is one new
//! version and the serials are consecutive. It prints the errors, retries and time.

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

/// What a worker that tolerates errors saw, printed as its last line of output.
#[derive(Debug, Default)]
struct Tally {
    acknowledged: u64,
    /// Increments that failed and were tried again.
    retried: u64,
    /// Increments whose write may or may not have landed (not tried again).
    unknown: u64,
    /// The errors s3state returned, by kind.
    errors: std::collections::BTreeMap<String, u64>,
    /// The HTTP requests sent, and how many of them the store answered with a 5xx or not at
    /// all (each then retried by the SDK or by s3state).
    requests: u64,
    store_failures: u64,
    /// The store's answers, by HTTP status (`none`: no answer).
    statuses: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    fn line(&self) -> String {
        format!(
            "tally {} {} {} {} {} {} {}",
            self.acknowledged,
            self.retried,
            self.unknown,
            self.requests,
            self.store_failures,
            serde_json::to_string(&self.statuses).unwrap(),
            serde_json::to_string(&self.errors).unwrap()
        )
    }

    fn parse(line: &str) -> Option<Tally> {
        let mut parts = line.strip_prefix("tally ")?.splitn(7, ' ');
        let mut number = || parts.next()?.parse().ok();
        let (acknowledged, retried, unknown) = (number()?, number()?, number()?);
        let (requests, store_failures) = (number()?, number()?);
        let statuses = serde_json::from_str(parts.next()?).ok()?;
        let errors = serde_json::from_str(parts.next()?).ok()?;
        Some(Tally {
            acknowledged,
            retried,
            unknown,
            errors,
            requests,
            store_failures,
            statuses,
        })
    }

    /// Counts `err` as a failed attempt: unknown outcome, or to be tried again.
    fn failed(&mut self, err: &s3state::Error) {
        let kind = format!("{err:?}");
        let kind = kind.split([' ', '{', '(']).next().unwrap_or("?").to_owned();
        *self.errors.entry(kind).or_default() += 1;
        if matches!(err, s3state::Error::WriteOutcomeUnknown { .. }) {
            self.unknown += 1;
        } else {
            self.retried += 1;
        }
    }
}

/// One locked increment (lock → refresh → change → persist → unlock). The lock is always
/// given back: an unlock that fails is tried again, so the others are never left waiting.
async fn locked_increment(
    manager: &s3state::RemoteState<s3state::S3Store>,
) -> Result<(), s3state::Error> {
    let id = common::lock_within(manager, "OperationTypeApply", Duration::from_secs(300)).await?;
    let changed = async {
        manager.refresh_state().await?;
        let mut state = manager.state().expect("seeded");
        let next = counter(&state) + 1;
        state
            .outputs
            .insert("counter".into(), OutputValue::new(&next));
        manager.write_state(state);
        manager.persist_state().await
    }
    .await;
    let mut unlocked = manager.unlock(&id).await;
    for _ in 0..120 {
        if unlocked.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        unlocked = manager.unlock(&id).await;
    }
    unlocked.expect("the lock is given back within a minute");
    changed
}

/// A worker that keeps going through the store's errors (the distributed soak): it stops
/// when `INCREMENTS` increments were acknowledged, or when an outcome is unknown (then it
/// counts it and goes on, not trying that increment again).
async fn tolerant_worker(bucket: &str, key: &str, mode: &str) -> Tally {
    let recorder = common::Recorder::default();
    let manager = common::builder(bucket, key)
        .with_client(common::client_with(Some(&recorder)))
        .with_options(options())
        .build()
        .await
        .unwrap();
    let mut tally = Tally::default();
    while tally.acknowledged + tally.unknown < INCREMENTS {
        let attempt = match mode {
            "cas" => manager
                .update(|s| {
                    let next = counter(s) + 1;
                    s.outputs.insert("counter".into(), OutputValue::new(&next));
                })
                .await
                .map(|_| ()),
            "lock" => locked_increment(&manager).await,
            other => panic!("unknown mode {other}"),
        };
        match attempt {
            Ok(()) => tally.acknowledged += 1,
            Err(err) => {
                tally.failed(&err);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let exchanges = recorder.take();
    tally.requests = exchanges.len() as u64;
    tally.store_failures = exchanges
        .iter()
        .filter(|e| e.status.is_none_or(|status| status >= 500))
        .count() as u64;
    for exchange in &exchanges {
        let status = exchange.status.map_or("none".into(), |s| s.to_string());
        *tally.statuses.entry(status).or_default() += 1;
    }
    tally
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

/// The seaweedfs/cluster.sh command `args`, which must succeed.
fn cluster(args: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seaweedfs/cluster.sh");
    let status = Command::new("bash")
        .arg(&script)
        .args(args)
        .status()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", script.display()));
    assert!(status.success(), "{} {args:?}: {status}", script.display());
}

/// In the distributed soak, what happens to the store while the workers run: volume server 2
/// is killed after `KILL_AFTER` and started again `DOWN_FOR` later.
const KILL_AFTER: Duration = Duration::from_millis(1500);
const DOWN_FOR: Duration = Duration::from_secs(5);

async fn scenario(mode: &str, distributed: bool) -> Result<String, String> {
    let bucket = common::bucket(true).await;
    let key = format!("soak-{mode}/terraform.tfstate");
    let seed = common::manager(&bucket, &key).await;
    seed.update(common::set_output("counter", 0)).await.unwrap();
    let started = Instant::now();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            let mut command = Command::new(std::env::current_exe().unwrap());
            command
                .args(["--worker", &bucket, &key, mode])
                .env("S3STATE_TEST_ENDPOINT", common::endpoint());
            if distributed {
                command.arg("tolerant").stdout(std::process::Stdio::piped());
            }
            command.spawn().expect("starting a worker process")
        })
        .collect();
    let fault = distributed.then(|| {
        std::thread::spawn(|| {
            std::thread::sleep(KILL_AFTER);
            cluster(&["kill-volume", "2"]);
            std::thread::sleep(DOWN_FOR);
            cluster(&["start-volume", "2"]);
        })
    });
    let mut tallies = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        if !output.status.success() {
            return Err(format!(
                "{mode}: a worker process failed: {}",
                output.status
            ));
        }
        if distributed {
            let stdout = String::from_utf8_lossy(&output.stdout);
            let tally = stdout.lines().rev().find_map(Tally::parse);
            tallies.push(tally.ok_or_else(|| format!("{mode}: a worker said: {stdout}"))?);
        }
    }
    let elapsed = started.elapsed();
    if let Some(fault) = fault {
        fault
            .join()
            .expect("the volume server was killed and started again");
    }

    seed.refresh_state().await.unwrap();
    let final_counter = counter(&seed.state().unwrap());
    let history = common::detailed_history(&seed, Some(16)).await;
    // Without faults every increment is acknowledged; with them, an increment whose outcome
    // was unknown may or may not be there, and nothing acknowledged may be missing.
    let acknowledged: u64 = tallies.iter().map(|t| t.acknowledged).sum();
    let unknown: u64 = tallies.iter().map(|t| t.unknown).sum();
    let total = if distributed {
        if final_counter < acknowledged || final_counter > acknowledged + unknown {
            return Err(format!(
                "{mode}: the counter is {final_counter}, but {acknowledged} increments were \
                 acknowledged and {unknown} had an unknown outcome"
            ));
        }
        final_counter
    } else {
        PROCESSES * INCREMENTS
    };
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
    let mut report = format!(
        "{mode}: {PROCESSES} processes × {INCREMENTS} increments: counter {final_counter}, {total} new versions, serials 2..={} consecutive, {:.1} s ({:.0} commits/s)",
        total + 1,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    if distributed {
        let mut errors = std::collections::BTreeMap::<String, u64>::new();
        for (kind, n) in tallies.iter().flat_map(|t| t.errors.iter()) {
            *errors.entry(kind.clone()).or_default() += n;
        }
        let retried: u64 = tallies.iter().map(|t| t.retried).sum();
        let requests: u64 = tallies.iter().map(|t| t.requests).sum();
        let failures: u64 = tallies.iter().map(|t| t.store_failures).sum();
        let mut statuses = std::collections::BTreeMap::<String, u64>::new();
        for (status, n) in tallies.iter().flat_map(|t| t.statuses.iter()) {
            *statuses.entry(status.clone()).or_default() += n;
        }
        report.push_str(&format!(
            "; volume server 2 killed at {:.1} s for {} s: {requests} requests, {failures} \
             answered 5xx or not at all (answers by status {statuses:?}); {acknowledged} \
             increments acknowledged, {retried} retried after an error, {unknown} of unknown \
             outcome; errors {errors:?}",
            KILL_AFTER.as_secs_f64(),
            DOWN_FOR.as_secs()
        ));
    }
    Ok(report)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--worker") {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        if args.get(5).map(String::as_str) == Some("tolerant") {
            let tally = runtime.block_on(tolerant_worker(&args[2], &args[3], &args[4]));
            println!("{}", tally.line());
        } else {
            runtime.block_on(worker(&args[2], &args[3], &args[4]));
        }
        return;
    }
    // `cargo test -- <filter>` passes its own arguments; this suite always runs whole, on the
    // test store, or with `--distributed` on a SeaweedFS cluster of its own.
    let distributed = args.iter().any(|arg| arg == "--distributed");
    if distributed {
        cluster(&["start"]);
        let port =
            std::env::var("S3STATE_SEAWEEDFS_CLUSTER_PORT").unwrap_or_else(|_| "8533".into());
        // SAFETY: no other thread exists yet (the runtime is made below), so nothing reads
        // the environment while it changes.
        unsafe { std::env::set_var("S3STATE_TEST_ENDPOINT", format!("http://127.0.0.1:{port}")) };
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut failed = false;
    for mode in ["cas", "lock"] {
        match runtime.block_on(scenario(mode, distributed)) {
            Ok(report) => println!("soak {report} ... ok"),
            Err(message) => {
                println!("soak {message} ... FAILED");
                failed = true;
            }
        }
    }
    if distributed {
        cluster(&["stop"]);
    }
    if failed {
        std::process::exit(1);
    }
    println!("soak: 2 scenarios passed");
}
