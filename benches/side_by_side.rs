//! Side-by-side benchmark, in one run on one LocalStack:
//! 1. the library against its floor: a raw aws-sdk-s3 PutObject/GetObject of exactly the bytes
//!    we store, on the same client, in the same process (and, as a second reference only, a
//!    raw PUT/GET plus one serde_json serialise/parse of a `Value` tree);
//! 2. the `s3state` CLI against a real Terraform 1.15.5, as whole commands (pull, push), with
//!    peak RSS;
//! 3. parse and serialise throughput;
//! 4. contention: aggregate commits per second of N tasks, each with its own manager, doing
//!    `update()` on one key, with the lock (the default) and without; the counts are asserted.
//!    Each twice: with the managers queueing in process (the default)
//!    and racing each other through the store as separate processes do (each manager over a client of its own).
//!    Then across OS processes (part `processes`): N processes (this benchmark's own binary
//!    re-run with `S3STATE_BENCH_CONTENTION_WORKER`), each one manager in a tight `update()`
//!    loop on one key, with the lock and the lock queue (the default), with the lock and no
//!    queue (as before the queue), and without the lock: commits per second, the median, p99
//!    and longest `update()` call, and the most other commits one update waited through; the
//!    counts are asserted.
//! 5. `s3state pull` as a whole command against a minimal process doing one raw GetObject of
//!    the same object to stdout (this benchmark's own binary, re-run with
//!    `S3STATE_BENCH_RAW_GET=bucket/key`), wall time and peak RSS, at each size (part `pull`;
//!    `S3STATE_BENCH_SIZES=1KB,50MB,200MB` is the set).
//! 6. `s3state push FILE` (with the lock, as by default, over a state s3state wrote) against
//!    a minimal process doing one raw PutObject of the same file (`S3STATE_BENCH_RAW_PUT`,
//!    default SDK settings: SigV4 payload hash and CRC32), wall time and peak RSS (part `push`).
//!
//! `cargo bench --bench side_by_side` (optimised build; peak RSS needs GNU time at
//! /usr/bin/time). Filters: `S3STATE_BENCH_SIZES=1KB,1MB` limits the sizes;
//! `S3STATE_BENCH_PARTS=floor,commands,codec,contention,processes,pull,push` picks parts
//! (default: all);
//! `S3STATE_BENCH_WRITERS=1,8` the writer counts (`1,2,4,8,16` for issue 27's table);
//! `S3STATE_BENCH_PROCESS_MODES=queue,no-queue,lock-off` the modes of part `processes`; `S3STATE_BENCH_TUNE=10,1000,5,250` overrides
//! the update back-off and update lock waits (ms) for tuning; `S3STATE_BENCH_QUICK=1` runs
//! fewer repetitions.

// The integration suite's harness, of which a bench uses a part.
#[path = "../tests/suite/common/mod.rs"]
#[allow(dead_code)]
mod common;

use s3state::{OutputValue, Persister, RawJson, Refresher, State, Transient};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "bench/terraform.tfstate";
const LINEAGE: &str = "6b0f3a52-4b1e-4f6e-9d5c-2f1b8f0c7a11";

/// A parser in the codec part and where its times go (`None` when it builds no `State`).
type TimedParser<'a> = (&'a mut Vec<Duration>, &'a dyn Fn() -> Option<State>);

struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    Stats {
        median: samples[samples.len() / 2],
        min: samples[0],
        max: *samples.last().unwrap(),
    }
}

fn ms(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn show(s: &Stats) -> String {
    format!("{} ({}–{})", ms(s.median), ms(s.min), ms(s.max))
}

fn ratio(ours: &Stats, theirs: &Stats) -> f64 {
    ours.median.as_secs_f64() / theirs.median.as_secs_f64()
}

/// A valid v4 state of about `target` bytes, made of `terraform_data` resources.
fn generate_state(target: usize) -> State {
    let resource = |i: usize| {
        let value = serde_json::json!({"n": i, "name": format!("resource-{i}"), "tags": {"team": "platform", "env": "bench", "index": i.to_string()}});
        let ty = serde_json::json!(["object", {"n": "number", "name": "string", "tags": ["object", {"env": "string", "index": "string", "team": "string"}]}]);
        serde_json::json!({
            "mode": "managed",
            "type": "terraform_data",
            "name": format!("r{i}"),
            "provider": "provider[\"terraform.io/builtin/terraform\"]",
            "instances": [{
                "schema_version": 0,
                "attributes": {
                    "id": format!("{:08x}-1234-b672-5a80-f1755fba0dab", i),
                    "input": {"value": value, "type": ty},
                    "output": {"value": value, "type": ty},
                    "triggers_replace": null
                },
                "sensitive_attributes": [],
                "identity_schema_version": 0
            }]
        })
    };
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state.lineage = LINEAGE.into();
    state.serial = 1;
    state.outputs.insert("count".into(), OutputValue::new(&0));
    let per_resource = {
        let mut probe = state.clone();
        probe.resources = RawJson::from_value(&vec![resource(0)]);
        probe
            .to_bytes()
            .len()
            .saturating_sub(state.to_bytes().len())
            .max(1)
    };
    let count = (target.saturating_sub(state.to_bytes().len()) / per_resource).max(1);
    state.resources = RawJson::from_value(&(0..count).map(resource).collect::<Vec<_>>());
    state
}

/// Runs a command, returning its wall time and peak RSS in bytes.
///
/// The RSS comes from GNU time, which runs the command as its own child: a child forked from
/// this (large) benchmark process would report this process's memory as its peak.
fn run_measured(command: &mut Command) -> (Duration, u64) {
    let mut timed = Command::new("/usr/bin/time");
    timed
        .args(["-f", "%M"])
        .arg(command.get_program())
        .args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => timed.env(name, value),
            None => timed.env_remove(name),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        timed.current_dir(dir);
    }
    let started = Instant::now();
    let output = timed
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("running /usr/bin/time");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?} failed: {stderr}");
    let kilobytes: u64 = stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("GNU time's %M");
    (elapsed, kilobytes * 1024)
}

struct Terraform {
    binary: PathBuf,
    dir: PathBuf,
}

impl Terraform {
    fn new(bucket: &str) -> Terraform {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/terraform/install.sh");
        let output = Command::new("bash")
            .arg(script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(output.status.success(), "installing Terraform failed");
        let binary = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
        let dir = std::env::temp_dir().join(format!(
            "s3state-bench-tf-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("main.tf"),
            common::terraform_backend_block(bucket, KEY),
        )
        .unwrap();
        let terraform = Terraform { binary, dir };
        run_measured(&mut terraform.command(&["init", "-input=false"]));
        terraform
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .current_dir(&self.dir)
            .env(
                "TF_CLI_CONFIG_FILE",
                self.binary.with_file_name("terraformrc"),
            )
            .env("CHECKPOINT_DISABLE", "1")
            .env("TF_IN_AUTOMATION", "1");
        command
    }
}

fn s3state_command(bucket: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_s3state"));
    command
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("S3STATE_ENDPOINT_URL", common::endpoint())
        .env("S3STATE_PATH_STYLE", "true")
        .env("S3STATE_BUCKET", bucket)
        .env("S3STATE_KEY", KEY)
        .current_dir(std::env::temp_dir());
    command
}

fn parse_size(text: &str) -> usize {
    let text = text.trim().to_ascii_uppercase();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: usize = number.parse().expect("a size such as 10MB");
    n * match unit {
        "KB" => 1_000,
        "MB" => 1_000_000,
        _ => 1,
    }
}

/// One run of the contention part: `writers` tasks, each with its own manager, each doing
/// `per_writer` updates of one key. Returns the aggregate commits per second, after checking
/// from the stored state that every commit landed exactly once.
async fn contention_run(
    bucket: &str,
    key: &str,
    writers: usize,
    per_writer: usize,
    locking: s3state::UpdateLocking,
    separate_processes: bool,
) -> f64 {
    let mut managers = Vec::new();
    for _ in 0..writers {
        managers.push(Arc::new(
            // From settings, as applications configure s3state (so the managers know their
            // endpoint and can share their update turns).
            common::process_builder(common::endpoint(), bucket, key, separate_processes)
                .with_options({
                    let mut options = s3state::RemoteStateOptions {
                        max_update_attempts: 1000,
                        update_locking: locking,
                        ..Default::default()
                    };
                    // S3STATE_BENCH_TUNE=a,b,c,d (ms) overrides initial_update_backoff,
                    // max_update_backoff, update_lock_retry.initial and .max, for tuning.
                    if let Ok(tune) = std::env::var("S3STATE_BENCH_TUNE") {
                        let v: Vec<u64> = tune.split(',').map(|x| x.parse().unwrap()).collect();
                        let d = Duration::from_millis;
                        options.initial_update_backoff = d(v[0]);
                        options.max_update_backoff = d(v[1]);
                        options.update_lock_retry.initial = d(v[2]);
                        options.update_lock_retry.max = d(v[3]);
                    }
                    options
                })
                .build()
                .await
                .unwrap(),
        ));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (writer, manager) in managers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mine = format!("w{writer}");
            for _ in 0..per_writer {
                manager
                    .update(|s| {
                        let get = |s: &State, name: &str| {
                            s.outputs
                                .get(name)
                                .and_then(|o| o.to_value().as_u64())
                                .unwrap_or(0)
                        };
                        let (total, own) = (get(s, "n"), get(s, &mine));
                        s.outputs.insert("n".into(), OutputValue::new(&(total + 1)));
                        s.outputs.insert(mine.clone(), OutputValue::new(&(own + 1)));
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    // No commit lost, none applied twice: the stored counters say exactly how many landed.
    let stored = State::from_slice(&common::get_raw(bucket, key).await).unwrap();
    let count = |name: &str| stored.outputs.get(name).and_then(|o| o.to_value().as_u64());
    assert_eq!(
        count("n"),
        Some((writers * per_writer) as u64),
        "total commits"
    );
    for writer in 0..writers {
        assert_eq!(
            count(&format!("w{writer}")),
            Some(per_writer as u64),
            "commits of writer {writer}"
        );
    }
    (writers * per_writer) as f64 / elapsed.as_secs_f64()
}

/// One writer process of the `processes` part: `per_writer` updates of one key, printing for
/// each the time its `update()` took and how many other commits landed meanwhile, and the
/// wall-clock times of its first start and last end (one machine, one clock).
async fn contention_worker(spec: &str) {
    let fields: Vec<&str> = spec.split(' ').collect();
    let [bucket, key, writer, per_writer, mode] = fields[..] else {
        panic!("S3STATE_BENCH_CONTENTION_WORKER: bucket key writer per_writer mode");
    };
    let per_writer: usize = per_writer.parse().unwrap();
    let mut options = s3state::RemoteStateOptions {
        max_update_attempts: 1000,
        ..Default::default()
    };
    match mode {
        "queue" => {}
        "no-queue" => options.lock_queue.enabled = false,
        "lock-off" => options.update_locking = s3state::UpdateLocking::Disabled,
        other => panic!("unknown mode {other}"),
    }
    if let Ok(tune) = std::env::var("S3STATE_BENCH_TUNE") {
        let v: Vec<u64> = tune.split(',').map(|x| x.parse().unwrap()).collect();
        let d = Duration::from_millis;
        options.initial_update_backoff = d(v[0]);
        options.max_update_backoff = d(v[1]);
        options.update_lock_retry.initial = d(v[2]);
        options.update_lock_retry.max = d(v[3]);
    }
    // S3STATE_BENCH_QUEUE=a,b (ms) overrides the lock queue's poll_interval and
    // head_poll_interval, for tuning.
    if let Ok(tune) = std::env::var("S3STATE_BENCH_QUEUE") {
        let v: Vec<u64> = tune.split(',').map(|x| x.parse().unwrap()).collect();
        options.lock_queue.poll_interval = Duration::from_millis(v[0]);
        options.lock_queue.head_poll_interval = Duration::from_millis(v[1]);
    }
    let manager = common::settings_builder(common::endpoint(), bucket, key)
        .with_options(options)
        .build()
        .await
        .unwrap();
    let get = |s: &State, name: &str| {
        s.outputs
            .get(name)
            .and_then(|o| o.to_value().as_u64())
            .unwrap_or(0)
    };
    manager.refresh_state().await.unwrap();
    let mut last = manager.state().map(|s| get(&s, "n")).unwrap_or(0);
    let mine = format!("w{writer}");
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    println!("start {}", unix());
    for _ in 0..per_writer {
        let started = Instant::now();
        let before = manager
            .update(|s| {
                let (total, own) = (get(s, "n"), get(s, &mine));
                s.outputs.insert("n".into(), OutputValue::new(&(total + 1)));
                s.outputs.insert(mine.clone(), OutputValue::new(&(own + 1)));
                total
            })
            .await
            .unwrap();
        println!(
            "update {} {}",
            started.elapsed().as_secs_f64(),
            before.saturating_sub(last)
        );
        last = before + 1;
    }
    println!("end {}", unix());
}

/// What one run of the `processes` part measured.
struct ProcessRun {
    commits_per_second: f64,
    /// Every `update()` call's duration.
    calls: Vec<Duration>,
    /// The most other commits one update waited through.
    most_waited_through: u64,
}

/// One run of the `processes` part: `writers` processes doing `per_writer` updates each.
async fn contention_processes(
    bucket: &str,
    key: &str,
    writers: usize,
    per_writer: usize,
    mode: &str,
) -> ProcessRun {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..writers)
        .map(|writer| {
            Command::new(&exe)
                .env(
                    "S3STATE_BENCH_CONTENTION_WORKER",
                    format!("{bucket} {key} {writer} {per_writer} {mode}"),
                )
                .env("S3STATE_TEST_ENDPOINT", common::endpoint())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let (mut first, mut last) = (f64::MAX, 0f64);
    let mut calls = Vec::new();
    let mut most_waited_through = 0;
    for output in outputs {
        assert!(output.status.success(), "a writer process failed");
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let mut words = line.split(' ');
            match words.next() {
                Some("start") => first = first.min(words.next().unwrap().parse().unwrap()),
                Some("end") => last = last.max(words.next().unwrap().parse().unwrap()),
                Some("update") => {
                    calls.push(Duration::from_secs_f64(
                        words.next().unwrap().parse().unwrap(),
                    ));
                    most_waited_through =
                        most_waited_through.max(words.next().unwrap().parse().unwrap());
                }
                _ => {}
            }
        }
    }
    // No commit lost, none applied twice.
    let stored = State::from_slice(&common::get_raw(bucket, key).await).unwrap();
    let count = |name: &str| stored.outputs.get(name).and_then(|o| o.to_value().as_u64());
    assert_eq!(count("n"), Some((writers * per_writer) as u64), "total");
    for writer in 0..writers {
        assert_eq!(count(&format!("w{writer}")), Some(per_writer as u64));
    }
    ProcessRun {
        commits_per_second: (writers * per_writer) as f64 / (last - first),
        calls,
        most_waited_through,
    }
}

fn median_min_max(mut rates: Vec<f64>) -> (f64, f64, f64) {
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (rates[rates.len() / 2], rates[0], *rates.last().unwrap())
}

/// The reference for `s3state pull`: the least a Rust program can do to print an object, one
/// GetObject whose body is copied to stdout as it arrives.
async fn raw_get_to_stdout(spec: &str) {
    use std::io::Write as _;
    let (bucket, key) = spec
        .split_once('/')
        .expect("S3STATE_BENCH_RAW_GET=bucket/key");
    // Not `common::client()`: finding the endpoint that way runs LocalStack's start script.
    let endpoint = std::env::var("S3STATE_BENCH_RAW_ENDPOINT").expect("the endpoint");
    let output = aws_sdk_s3::Client::from_conf(common::config_for(&endpoint).build())
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("the raw GetObject");
    let mut body = output.body;
    let mut stdout = std::io::stdout();
    while let Some(chunk) = body.try_next().await.expect("the raw GetObject's body") {
        stdout.write_all(&chunk).unwrap();
    }
    stdout.flush().unwrap();
}

/// The reference for `s3state push`: the least a Rust program can do to store a file, one
/// PutObject of its bytes with the SDK's default integrity (SigV4 payload hash, CRC32).
async fn raw_put_file(spec: &str) {
    let (target, file) = spec
        .split_once(':')
        .expect("S3STATE_BENCH_RAW_PUT=bucket/key:file");
    let (bucket, key) = target.split_once('/').expect("bucket/key");
    let endpoint = std::env::var("S3STATE_BENCH_RAW_ENDPOINT").expect("the endpoint");
    let body = std::fs::read(file).expect("the file to put");
    aws_sdk_s3::Client::from_conf(common::config_for(&endpoint).build())
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .send()
        .await
        .expect("the raw PutObject");
}

#[tokio::main]
async fn main() {
    if let Ok(spec) = std::env::var("S3STATE_BENCH_RAW_GET") {
        return raw_get_to_stdout(&spec).await;
    }
    if let Ok(spec) = std::env::var("S3STATE_BENCH_RAW_PUT") {
        return raw_put_file(&spec).await;
    }
    if let Ok(spec) = std::env::var("S3STATE_BENCH_CONTENTION_WORKER") {
        return contention_worker(&spec).await;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` would too. Nothing else is taken.
    let sizes: Vec<(String, usize)> = std::env::var("S3STATE_BENCH_SIZES")
        .unwrap_or_else(|_| "1KB,1MB,10MB,50MB".into())
        .split(',')
        .map(|s| (s.trim().to_owned(), parse_size(s)))
        .collect();
    let parts = std::env::var("S3STATE_BENCH_PARTS")
        .unwrap_or_else(|_| "floor,commands,codec,contention,processes,pull,push".into());
    let part = |name: &str| parts.split(',').any(|p| p.trim() == name);
    let writer_counts: Vec<usize> = std::env::var("S3STATE_BENCH_WRITERS")
        .unwrap_or_else(|_| "1,8".into())
        .split(',')
        .map(|s| s.trim().parse().expect("a writer count"))
        .collect();
    let quick = std::env::var_os("S3STATE_BENCH_QUICK").is_some();
    let reps = |bytes: usize| -> usize {
        let full = match bytes {
            0..=100_000 => 31,
            100_001..=2_000_000 => 15,
            2_000_001..=20_000_000 => 7,
            _ => 5,
        };
        if quick { full.min(3) } else { full }
    };

    let bucket = common::bucket(true).await;
    let client = common::client();
    let terraform = part("commands").then(|| Terraform::new(&bucket));
    let mut library = Vec::new();
    let mut commands = Vec::new();
    let mut cpu = Vec::new();
    let mut pulls = Vec::new();
    let mut pushes = Vec::new();

    for (label, target) in &sizes {
        if !(part("floor") || part("commands") || part("codec") || part("pull") || part("push")) {
            break;
        }
        let state = generate_state(*target);
        let bytes = state.to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let n = reps(bytes.len());
        eprintln!("bench: {label} ({} bytes), {n} repetitions", bytes.len());

        // Seed the key with this state.
        common::put_raw(&bucket, KEY, &bytes).await;

        // One client for everything, so no side pays for a new connection.
        let open = || {
            common::builder(&bucket, KEY)
                .with_client(client.clone())
                .build()
        };
        let manager = open().await.unwrap();
        manager.refresh_state().await.unwrap();

        // 1. Library against the floor: the raw SDK moving exactly the bytes we store.
        if part("floor") {
            let mut samples: [Vec<Duration>; 7] = Default::default();
            let [
                ours_put,
                raw_put,
                json_put,
                ours_get,
                raw_get,
                json_get,
                bare_put,
            ] = &mut samples;
            for i in 0..n {
                let mut next = manager.state().unwrap();
                next.outputs
                    .insert("count".into(), OutputValue::new(&(i + 1)));
                // Exactly the body persist_state sends (made outside the timed section): a
                // persisted change carries the next serial.
                let stored = {
                    let mut persisted = next.clone();
                    persisted.serial += 1;
                    bytes::Bytes::from(persisted.to_bytes())
                };
                // Alternate who goes first, so neither side always meets a warmer store.
                let raw_first = i % 2 == 1;
                for turn in 0..2 {
                    if (turn == 0) == raw_first {
                        let started = Instant::now();
                        client
                            .put_object()
                            .bucket(&bucket)
                            .key("bench/floor.tfstate")
                            .body(stored.clone().into())
                            .send()
                            .await
                            .unwrap();
                        raw_put.push(started.elapsed());
                    } else {
                        let started = Instant::now();
                        manager.write_state(next.clone());
                        manager.persist_state().await.unwrap();
                        ours_put.push(started.elapsed());
                    }
                }
                assert!(
                    common::get_raw(&bucket, KEY).await == stored,
                    "the floor must move exactly the bytes we store"
                );
                // The bare minimum: the same bytes with no hashing at all (no SigV4 payload
                // hash, no checksum), which gives up end-to-end integrity.
                let started = Instant::now();
                client
                    .put_object()
                    .bucket(&bucket)
                    .key("bench/floor.tfstate")
                    .body(stored.clone().into())
                    .customize()
                    .config_override(
                        aws_sdk_s3::config::Builder::default().request_checksum_calculation(
                            aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
                        ),
                    )
                    .disable_payload_signing()
                    .send()
                    .await
                    .unwrap();
                bare_put.push(started.elapsed());

                let reader = open().await.unwrap();
                for turn in 0..2 {
                    if (turn == 0) == raw_first {
                        let started = Instant::now();
                        let object = client
                            .get_object()
                            .bucket(&bucket)
                            .key(KEY)
                            .send()
                            .await
                            .unwrap();
                        let body = object.body.collect().await.unwrap().into_bytes();
                        raw_get.push(started.elapsed());
                        assert_eq!(body.len(), stored.len());
                    } else {
                        let started = Instant::now();
                        reader.refresh_state().await.unwrap();
                        ours_get.push(started.elapsed());
                        assert!(reader.state().is_some());
                    }
                }

                // The second reference: what a generic JSON tool would do.
                let started = Instant::now();
                let body = serde_json::to_vec_pretty(&value).unwrap();
                client
                    .put_object()
                    .bucket(&bucket)
                    .key("bench/floor.json")
                    .body(body.into())
                    .send()
                    .await
                    .unwrap();
                json_put.push(started.elapsed());
                let started = Instant::now();
                let object = client
                    .get_object()
                    .bucket(&bucket)
                    .key("bench/floor.json")
                    .send()
                    .await
                    .unwrap();
                let body = object.body.collect().await.unwrap().into_bytes();
                let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
                json_get.push(started.elapsed());
                assert!(parsed.is_object());
            }
            library.push((label.clone(), samples.map(stats)));
        }

        // 5. `s3state pull` against a minimal raw GET process, alternating who goes first.
        if part("pull") {
            common::put_raw(&bucket, KEY, &bytes).await;
            let raw_spec = format!("{bucket}/{KEY}");
            let raw = || {
                let mut command = Command::new(std::env::current_exe().unwrap());
                command
                    .env("S3STATE_BENCH_RAW_GET", &raw_spec)
                    .env("S3STATE_BENCH_RAW_ENDPOINT", common::endpoint())
                    .env("AWS_ACCESS_KEY_ID", "test")
                    .env("AWS_SECRET_ACCESS_KEY", "test")
                    .env("AWS_REGION", "us-east-1");
                command
            };
            let (mut ours, mut theirs) = (vec![], vec![]);
            let (mut our_rss, mut raw_rss) = (0u64, 0u64);
            for round in 0..n {
                let mut one = |ours_first: bool| {
                    if ours_first {
                        let (t, rss) = run_measured(&mut s3state_command(&bucket, &["pull"]));
                        ours.push(t);
                        our_rss = our_rss.max(rss);
                    } else {
                        let (t, rss) = run_measured(&mut raw());
                        theirs.push(t);
                        raw_rss = raw_rss.max(rss);
                    }
                };
                one(round % 2 == 0);
                one(round % 2 != 0);
            }
            pulls.push((
                label.clone(),
                bytes.len(),
                stats(ours),
                stats(theirs),
                our_rss,
                raw_rss,
            ));
        }

        // 6. `s3state push` against a minimal raw PUT process of the same file, alternating.
        if part("push") {
            let file = std::env::temp_dir().join(format!("s3state-bench-push-{label}.tfstate"));
            let mut pushed = state.clone();
            // Seed the key with an s3state push, so the measured pushes land on a state
            // s3state wrote: lineage and serial come from a HEAD, the body is not read.
            pushed.serial += 1;
            std::fs::write(&file, pushed.to_bytes()).unwrap();
            let seeded = s3state_command(&bucket, &["push", file.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(seeded.status.success(), "{seeded:?}");
            let raw_spec = format!("{bucket}/bench/raw-put.tfstate:{}", file.display());
            let raw = || {
                let mut command = Command::new(std::env::current_exe().unwrap());
                command
                    .env("S3STATE_BENCH_RAW_PUT", &raw_spec)
                    .env("S3STATE_BENCH_RAW_ENDPOINT", common::endpoint());
                command
            };
            let (mut ours, mut theirs) = (vec![], vec![]);
            let (mut our_rss, mut raw_rss) = (0u64, 0u64);
            for round in 0..n {
                // A newer serial each round, so every push writes.
                pushed.serial += 1;
                std::fs::write(&file, pushed.to_bytes()).unwrap();
                let mut one = |ours_first: bool| {
                    if ours_first {
                        let mut command =
                            s3state_command(&bucket, &["push", file.to_str().unwrap()]);
                        let (t, rss) = run_measured(&mut command);
                        ours.push(t);
                        our_rss = our_rss.max(rss);
                    } else {
                        let (t, rss) = run_measured(&mut raw());
                        theirs.push(t);
                        raw_rss = raw_rss.max(rss);
                    }
                };
                one(round % 2 == 0);
                one(round % 2 != 0);
            }
            // Every push landed: the stored serial is the last one pushed (or one more).
            let stored = State::from_slice(&common::get_raw(&bucket, KEY).await).unwrap();
            assert!(stored.serial >= pushed.serial, "the last push landed");
            let _ = std::fs::remove_file(&file);
            pushes.push((
                label.clone(),
                bytes.len(),
                stats(ours),
                stats(theirs),
                our_rss,
                raw_rss,
            ));
        }

        // 2. Whole commands: s3state against Terraform, same bucket and key.
        if let Some(terraform) = &terraform {
            let file = std::env::temp_dir().join(format!("s3state-bench-{label}.tfstate"));
            let (mut our_pull, mut tf_pull, mut our_push, mut tf_push) =
                (vec![], vec![], vec![], vec![]);
            let (mut our_rss, mut tf_rss) = ((0u64, 0u64), (0u64, 0u64));
            manager.refresh_state().await.unwrap();
            let mut serial = manager.state().unwrap().serial;
            for _ in 0..n {
                let (t, rss) = run_measured(&mut s3state_command(&bucket, &["pull"]));
                our_pull.push(t);
                our_rss.0 = our_rss.0.max(rss);
                let (t, rss) = run_measured(&mut terraform.command(&["state", "pull"]));
                tf_pull.push(t);
                tf_rss.0 = tf_rss.0.max(rss);

                // Each push carries a newer serial, so both tools accept it.
                let mut pushed = state.clone();
                serial += 1;
                pushed.serial = serial;
                std::fs::write(&file, pushed.to_bytes()).unwrap();
                let (t, rss) = run_measured(&mut s3state_command(
                    &bucket,
                    &["push", file.to_str().unwrap()],
                ));
                our_push.push(t);
                our_rss.1 = our_rss.1.max(rss);
                serial += 1;
                pushed.serial = serial;
                std::fs::write(&file, pushed.to_bytes()).unwrap();
                let (t, rss) = run_measured(&mut terraform.command(&[
                    "state",
                    "push",
                    file.to_str().unwrap(),
                ]));
                tf_push.push(t);
                tf_rss.1 = tf_rss.1.max(rss);
            }
            let _ = std::fs::remove_file(&file);
            commands.push((
                label.clone(),
                bytes.len(),
                stats(our_pull),
                stats(tf_pull),
                stats(our_push),
                stats(tf_push),
                our_rss,
                tf_rss,
            ));
        }

        // 3. CPU: parse and serialise throughput, byte-identical. Beside the one-pass parse:
        // the serde_json reader it replaced, and a serde_json `Value` parse as a yardstick of
        // the machine's speed in this very run (its load varies between runs).
        if part("codec") && bytes.len() >= 5_000_000 {
            let (mut parse, mut old, mut value_parse, mut write) = (vec![], vec![], vec![], vec![]);
            for round in 0..n {
                let mut parsers: [TimedParser; 3] = [
                    (&mut parse, &|| Some(State::from_slice(&bytes).unwrap())),
                    (&mut old, &|| {
                        Some(State::from_slice_with_serde_json(&bytes).unwrap())
                    }),
                    (&mut value_parse, &|| {
                        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                        assert!(value.is_object());
                        None
                    }),
                ];
                // Each parser goes first in turn.
                parsers.rotate_left(round % 3);
                let mut parsed = Vec::new();
                for (samples, parser) in parsers {
                    let started = Instant::now();
                    let state = parser();
                    samples.push(started.elapsed());
                    parsed.extend(state);
                }
                assert!(parsed.iter().all(|p| *p == state), "the parsers agree");
                let started = Instant::now();
                let written = parsed[0].to_bytes();
                write.push(started.elapsed());
                assert_eq!(written, bytes, "byte-identical");
            }
            cpu.push((
                label.clone(),
                bytes.len(),
                [stats(parse), stats(old), stats(value_parse)],
                stats(write),
            ));
        }
    }

    // 4. Contention: N managers doing update() on one small state, with and without the lock.
    let mut contention = Vec::new();
    if part("contention") {
        let runs = if quick { 1 } else { 3 };
        // The lock's waits are the default ones; only the give-up time is longer, because
        // tight update loops racing through the store are not fair to each other (a writer
        // that has just released can take the lock again at once) and on a loaded machine
        // one can wait past 60 s.
        let lock = s3state::UpdateLocking::Lock {
            timeout: Duration::from_secs(900),
        };
        let (process, racing) = (false, true);
        let modes = [
            ("lock (default), queued in process (default)", lock, process),
            (
                "lock off, queued in process",
                s3state::UpdateLocking::Disabled,
                process,
            ),
            ("lock, racing as processes", lock, racing),
            (
                "lock off, racing as processes",
                s3state::UpdateLocking::Disabled,
                racing,
            ),
        ];
        for (m, (mode, locking, turns)) in modes.into_iter().enumerate() {
            for &writers in &writer_counts {
                // Enough commits per run that start-up and the last straggler do not dominate.
                let per_writer = if quick { 5 } else { (48 / writers).max(6) };
                let mut rates = Vec::new();
                for run in 0..runs {
                    let key = format!("bench/contention-{m}-{writers}-{run}.tfstate");
                    rates.push(
                        contention_run(&bucket, &key, writers, per_writer, locking, turns).await,
                    );
                }
                eprintln!("bench: contention {mode}, {writers} writers: {rates:.0?}");
                contention.push((mode, writers, writers * per_writer, median_min_max(rates)));
            }
        }
    }

    // 4b. Contention across OS processes.
    let mut processes = Vec::new();
    if part("processes") {
        let modes = std::env::var("S3STATE_BENCH_PROCESS_MODES")
            .unwrap_or_else(|_| "queue,no-queue,lock-off".into());
        for mode in modes.split(',') {
            for &writers in &writer_counts {
                let per_writer = if quick { 5 } else { (48 / writers).max(6) };
                let key = format!("bench/processes-{mode}-{writers}.tfstate");
                let run = contention_processes(&bucket, &key, writers, per_writer, mode).await;
                eprintln!(
                    "bench: processes {mode}, {writers} writers: {:.1} commits/s",
                    run.commits_per_second
                );
                processes.push((mode.to_owned(), writers, writers * per_writer, run));
            }
        }
    }

    if !library.is_empty() {
        println!("\n## 1. Library against the floor (median, min–max)\n");
        println!(
            "The floor is a raw SDK PutObject/GetObject (default settings) of exactly the bytes we \
             store, on the same client. \"Unhashed\" is the same PUT with neither a SigV4 payload \
             hash nor a checksum. The serde_json columns are a second reference (raw PUT/GET plus building or \
             writing a `serde_json::Value` tree), not a floor.\n"
        );
        println!(
            "| state | persist | raw PUT | ratio | refresh | raw GET | ratio | ref: serde_json + PUT | ref: GET + serde_json | raw PUT, unhashed | persist / unhashed |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for (label, [op, rp, jp, og, rg, jg, bp]) in &library {
            let range = |ours: &Stats, raw: &Stats| {
                format!(
                    "{:.2}× ({:.2}–{:.2})",
                    ratio(ours, raw),
                    ours.min.as_secs_f64() / raw.min.as_secs_f64(),
                    ours.max.as_secs_f64() / raw.max.as_secs_f64()
                )
            };
            println!(
                "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                show(op),
                show(rp),
                range(op, rp),
                show(og),
                show(rg),
                range(og, rg),
                show(jp),
                show(jg),
                show(bp),
                range(op, bp)
            );
        }
        println!("\n(ratio: of medians; in brackets, of minima and of maxima)");
    }
    if !commands.is_empty() {
        println!(
            "\n## 2. Whole commands: `s3state` against `terraform` (median, min–max; peak RSS)\n"
        );
        println!(
            "| state | s3state pull | terraform state pull | speed-up | s3state push | terraform state push | speed-up | peak RSS pull s3state / terraform | peak RSS push s3state / terraform |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for (label, bytes, op, tp, ou, tu, our_rss, tf_rss) in &commands {
            let mb = |b: u64| format!("{:.0} MB", b as f64 / 1e6);
            let x = |b: u64| format!("{:.1}×", b as f64 / *bytes as f64);
            println!(
                "| {label} | {} | {} | {:.1}× | {} | {} | {:.1}× | {} ({}) / {} ({}) | {} ({}) / {} ({}) |",
                show(op),
                show(tp),
                1.0 / ratio(op, tp),
                show(ou),
                show(tu),
                1.0 / ratio(ou, tu),
                mb(our_rss.0),
                x(our_rss.0),
                mb(tf_rss.0),
                x(tf_rss.0),
                mb(our_rss.1),
                x(our_rss.1),
                mb(tf_rss.1),
                x(tf_rss.1)
            );
        }
    }
    if !pulls.is_empty() {
        println!(
            "\n## 5. `s3state pull` against one raw GetObject to stdout, whole processes (median, min–max; peak RSS)\n"
        );
        println!(
            "| state | s3state pull | raw GET process | ratio | peak RSS s3state | peak RSS raw |"
        );
        println!("|---|---|---|---|---|---|");
        for (label, _bytes, ours, raw, our_rss, raw_rss) in &pulls {
            let mb = |b: u64| format!("{:.0} MB", b as f64 / 1e6);
            println!(
                "| {label} | {} | {} | {:.2}× ({:.2}–{:.2}) | {} | {} |",
                show(ours),
                show(raw),
                ratio(ours, raw),
                ours.min.as_secs_f64() / raw.min.as_secs_f64(),
                ours.max.as_secs_f64() / raw.max.as_secs_f64(),
                mb(*our_rss),
                mb(*raw_rss)
            );
        }
    }
    if !pushes.is_empty() {
        println!(
            "\n## 6. `s3state push` (locked) against one raw PutObject of the file, whole processes (median, min–max; peak RSS)\n"
        );
        println!(
            "| state | s3state push | raw PUT process | ratio | peak RSS s3state | against the state | peak RSS raw |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (label, bytes, ours, raw, our_rss, raw_rss) in &pushes {
            let mb = |b: u64| format!("{:.0} MB", b as f64 / 1e6);
            println!(
                "| {label} | {} | {} | {:.2}× ({:.2}–{:.2}) | {} | {:.2}× | {} |",
                show(ours),
                show(raw),
                ratio(ours, raw),
                ours.min.as_secs_f64() / raw.min.as_secs_f64(),
                ours.max.as_secs_f64() / raw.max.as_secs_f64(),
                mb(*our_rss),
                *our_rss as f64 / *bytes as f64,
                mb(*raw_rss)
            );
        }
    }
    if !cpu.is_empty() {
        println!("\n## 3. Codec throughput (byte-identical output)\n");
        println!(
            "| state | parse (one pass) | MB/s | old parse (serde_json + compact pass) | MB/s | serde_json `Value` parse | MB/s | parse against `Value` | serialise | MB/s |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for (label, bytes, [parse, old, value_parse], write) in &cpu {
            let rate = |s: &Stats| *bytes as f64 / 1e6 / s.median.as_secs_f64();
            println!(
                "| {label} | {} | {:.0} | {} | {:.0} | {} | {:.0} | {:.2}× | {} | {:.0} |",
                show(parse),
                rate(parse),
                show(old),
                rate(old),
                show(value_parse),
                rate(value_parse),
                ratio(parse, value_parse),
                show(write),
                rate(write)
            );
        }
    }
    if !contention.is_empty() {
        println!(
            "\n## 4. Contention: `update()` on one key, each writer its own manager (commits/s, median, min–max)\n"
        );
        println!("| mode | writers | commits per run | commits/s | against 1 writer |");
        println!("|---|---|---|---|---|");
        for (mode, writers, commits, (median, min, max)) in &contention {
            let single = contention
                .iter()
                .find(|(m, w, ..)| m == mode && *w == 1)
                .map(|(.., (s, _, _))| *s);
            let against = single.map_or("–".to_owned(), |s| format!("{:.2}×", median / s));
            println!(
                "| {mode} | {writers} | {commits} | {median:.0} ({min:.0}–{max:.0}) | {against} |"
            );
        }
        println!(
            "\n(every run asserts that the stored counters equal the commits made: none lost, none applied twice)"
        );
    }
    if !processes.is_empty() {
        println!(
            "\n## 4b. Contention across OS processes: `update()` on one key, one process per writer (one run)\n"
        );
        println!(
            "| mode | processes | commits | commits/s | against 1 process | update() median | p99 | max | most other commits waited through |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for (mode, writers, commits, run) in &processes {
            let single = processes
                .iter()
                .find(|(m, w, ..)| m == mode && *w == 1)
                .map(|(.., r)| r.commits_per_second);
            let against = single.map_or("–".to_owned(), |s| {
                format!("{:.2}×", run.commits_per_second / s)
            });
            let mut calls = run.calls.clone();
            calls.sort();
            let at = |q: f64| calls[((calls.len() - 1) as f64 * q).round() as usize];
            let label = match mode.as_str() {
                "queue" => "lock + queue (default)",
                "no-queue" => "lock, no queue (before)",
                _ => "lock off",
            };
            println!(
                "| {label} | {writers} | {commits} | {:.1} | {against} | {} | {} | {} | {} |",
                run.commits_per_second,
                ms(at(0.5)),
                ms(at(0.99)),
                ms(at(1.0)),
                run.most_waited_through
            );
        }
    }
}
