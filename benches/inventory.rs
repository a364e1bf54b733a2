//! `s3state ls` on a bucket of many states (issue 15): how long the inventory takes and how
//! many requests it makes per state, at 1/10, 1/2 and all of the states, so that the growth
//! shows.
//!
//! The states are small and mixed as in a real bucket: two in three at plain keys, one in three
//! in a workspace (`env:/wsN/…`); nine in ten written through the library (with s3state's
//! metadata, so `ls` needs only a HEAD), one in ten written by a plain PUT as Terraform writes
//! (no metadata, so `ls` reads the body); one in twenty locked. They are created in parallel
//! on LocalStack, under a fresh versioned bucket.
//!
//! The inventory is the real command: the built `s3state ls --json` binary, run as a process,
//! its rows checked. Each size is timed straight against LocalStack, then run once more through
//! a recording proxy that counts the requests by kind. At full size `--resources` and
//! `--versions` are measured the same way, and at each size `--older-than 3650d`, which filters
//! every state out after the listing: what the listing alone costs.
//!
//! `cargo bench --bench inventory` (starts LocalStack like the tests do).
//! `S3STATE_BENCH_STATES=1000` sets the number of states (default 10,000);
//! `S3STATE_BENCH_EXTRAS=0` skips the `--resources` and `--versions` runs.
//! It runs only under `cargo bench` (which passes `--bench`), never under `cargo test`.

// The integration suite's harness, of which a bench uses a part.
#[path = "../tests/suite/common/mod.rs"]
#[allow(dead_code)]
mod common;

use futures::StreamExt;
use s3state::{LockInfo, Locker, OutputValue, Persister, S3Builder, State, Transient};
use std::process::Command;
use std::time::{Duration, Instant};

/// Flags that filter every state out after the listing: what the listing alone costs.
const LISTING_ONLY: &[&str] = &["--older-than", "3650d"];

/// How many states are created at once.
const CREATE_PARALLEL: usize = 32;

/// What one state is, from its index.
struct Spec {
    /// The workspace (`None`: default).
    workspace: Option<String>,
    /// The key in its workspace.
    key: String,
    /// Written by a plain PUT, as Terraform does (no s3state metadata).
    raw: bool,
    locked: bool,
}

fn spec(index: usize) -> Spec {
    let key = if index.is_multiple_of(2) {
        format!("team-{}/service-{index}/terraform.tfstate", index % 50)
    } else {
        format!("team-{}/service-{index}.tfstate", index % 50)
    };
    Spec {
        workspace: (index % 3 == 1).then(|| format!("ws{}", index % 7)),
        key,
        raw: index % 10 == 9,
        locked: index % 20 == 3,
    }
}

/// A small state with two outputs (what the library writes).
fn small_state(index: usize) -> State {
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state
        .outputs
        .insert("index".into(), OutputValue::new(&index));
    state
        .outputs
        .insert("name".into(), OutputValue::new(&format!("service-{index}")));
    state
}

/// A small state as Terraform writes it: one resource, one output, no s3state metadata.
fn terraform_body(index: usize) -> Vec<u8> {
    serde_json::to_vec_pretty(&serde_json::json!({
        "version": 4,
        "terraform_version": "1.15.5",
        "serial": 1 + index % 40,
        "lineage": uuid::Uuid::new_v4().to_string(),
        "outputs": {"name": {"value": format!("service-{index}"), "type": "string"}},
        "resources": [{
            "mode": "managed",
            "type": "terraform_data",
            "name": "this",
            "provider": "provider[\"terraform.io/builtin/terraform\"]",
            "instances": [{"schema_version": 0, "attributes": {"id": format!("id-{index}")}, "sensitive_attributes": []}]
        }],
        "check_results": null
    }))
    .unwrap()
}

async fn create(client: &aws_sdk_s3::Client, bucket: &str, index: usize) {
    let spec = spec(index);
    if spec.raw {
        let full_key = match &spec.workspace {
            Some(workspace) => format!("env:/{workspace}/{}", spec.key),
            None => spec.key.clone(),
        };
        client
            .put_object()
            .bucket(bucket)
            .key(&full_key)
            .body(terraform_body(index).into())
            .send()
            .await
            .expect("a raw PUT");
        if !spec.locked {
            return;
        }
    }
    let mut builder = S3Builder::new()
        .with_client(client.clone())
        .with_bucket(bucket)
        .with_key(&spec.key);
    if let Some(workspace) = &spec.workspace {
        builder = builder.with_workspace(workspace);
    }
    let manager = builder.build().await.expect("opening a state");
    if !spec.raw {
        manager.write_state(small_state(index));
        manager.persist_state().await.expect("persisting a state");
    }
    if spec.locked {
        manager
            .lock(&LockInfo::new("OperationTypeApply").with_info("inventory bench"))
            .await
            .expect("locking a state");
    }
}

/// Creates states `range` in parallel.
async fn create_states(client: &aws_sdk_s3::Client, bucket: &str, range: std::ops::Range<usize>) {
    let started = Instant::now();
    let count = range.len();
    let mut done: usize = 0;
    let mut creating = futures::stream::iter(range)
        .map(|index| create(client, bucket, index))
        .buffer_unordered(CREATE_PARALLEL);
    while creating.next().await.is_some() {
        done += 1;
        if done.is_multiple_of(1000) {
            eprintln!("  created {done}/{count}");
        }
    }
    eprintln!(
        "  created {count} states in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// One `s3state ls --json` run against `endpoint`.
struct Run {
    wall: Duration,
    /// User plus system CPU time of the `s3state` process.
    cpu: f64,
    peak_rss_bytes: u64,
    rows: Vec<serde_json::Value>,
}

/// Runs `s3state ls --json` under GNU time (CPU time and peak RSS of that process alone).
fn run_ls(bucket: &str, endpoint: &str, extra: &[&str]) -> Run {
    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .args(["-f", "%U %S %M"])
        .arg(env!("CARGO_BIN_EXE_s3state"))
        .args(["ls", "--json"])
        .args(extra)
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("S3STATE_ENDPOINT_URL", endpoint)
        .env("S3STATE_PATH_STYLE", "true")
        .env("S3STATE_BUCKET", bucket)
        .output()
        .expect("running s3state ls under /usr/bin/time (GNU time)");
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "s3state ls failed: {stderr}");
    let measured: Vec<f64> = stderr
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .map(|field| field.parse().expect("GNU time's %U %S %M"))
        .collect();
    let [user, system, kilobytes] = measured[..] else {
        panic!("GNU time's %U %S %M: {stderr}");
    };
    Run {
        wall,
        cpu: user + system,
        peak_rss_bytes: kilobytes as u64 * 1024,
        rows: serde_json::from_slice(&output.stdout).expect("ls --json prints an array"),
    }
}

/// Requests by kind, as the proxy saw them.
#[derive(Default, Debug)]
struct Counts {
    list: usize,
    head: usize,
    get_state: usize,
    get_lock: usize,
    list_versions: usize,
    /// GetBucketVersioning, when the store is opened.
    bucket_check: usize,
    other: usize,
}

impl Counts {
    fn of(requests: &[common::proxy::Recorded]) -> Counts {
        let mut counts = Counts::default();
        for request in requests {
            let slot = match request.method.as_str() {
                "GET" if request.query.contains("list-type=2") => &mut counts.list,
                "GET" if request.query.contains("versioning") => &mut counts.bucket_check,
                "GET" if request.query.contains("versions") => &mut counts.list_versions,
                "GET" if request.path.ends_with(".tflock") => &mut counts.get_lock,
                "GET" if request.path.ends_with(".tfstate") => &mut counts.get_state,
                "HEAD" => &mut counts.head,
                _ => &mut counts.other,
            };
            *slot += 1;
        }
        counts
    }

    fn total(&self) -> usize {
        self.list
            + self.head
            + self.get_state
            + self.get_lock
            + self.list_versions
            + self.bucket_check
            + self.other
    }
}

fn expected_locked(states: usize) -> usize {
    (0..states).filter(|&index| spec(index).locked).count()
}

/// Times `ls` (with `extra` flags) directly and counts its requests through the proxy, and
/// checks its rows. Returns the markdown row.
async fn measure(
    bucket: &str,
    proxy: &common::proxy::FaultProxy,
    states: usize,
    extra: &'static [&'static str],
) -> String {
    let label = if extra.is_empty() {
        "ls --json".to_owned()
    } else {
        format!("ls --json {}", extra.join(" "))
    };
    let direct_bucket = bucket.to_owned();
    let direct_run =
        tokio::task::spawn_blocking(move || run_ls(&direct_bucket, common::endpoint(), extra))
            .await
            .unwrap();
    let (direct, rows) = (direct_run.wall, &direct_run.rows);
    // Nothing in a fresh bucket is ten years old.
    let expected_rows = if extra == LISTING_ONLY { 0 } else { states };
    assert_eq!(rows.len(), expected_rows, "every state is listed");
    let locked = rows
        .iter()
        .filter(|row| row["lock_holder"].is_string())
        .count();
    if expected_rows == states {
        assert_eq!(locked, expected_locked(states), "every lock is seen");
    }
    assert!(
        rows.iter().all(|row| row["serial"].is_u64()),
        "every serial is known"
    );
    if extra.contains(&"--resources") {
        assert!(rows.iter().all(|row| row["resources"].is_u64()));
    }
    if extra.contains(&"--versions") {
        assert!(rows.iter().all(|row| row["versions"] == 1));
    }

    proxy.take_requests();
    let (proxied_bucket, endpoint) = (bucket.to_owned(), proxy.endpoint().to_owned());
    let proxied_run =
        tokio::task::spawn_blocking(move || run_ls(&proxied_bucket, &endpoint, extra))
            .await
            .unwrap();
    assert_eq!(proxied_run.rows.len(), expected_rows);
    let proxied = proxied_run.wall;
    let counts = Counts::of(&proxy.take_requests());
    let per_thousand = direct.as_secs_f64() / states as f64 * 1000.0;
    let rss_mib = direct_run.peak_rss_bytes as f64 / (1024.0 * 1024.0);
    eprintln!(
        "{label} over {states} states: {:.2} s direct ({per_thousand:.2} s per 1,000; \
         s3state CPU {:.2} s, peak RSS {rss_mib:.0} MiB), {:.2} s through the proxy; \
         requests {counts:?}",
        direct.as_secs_f64(),
        direct_run.cpu,
        proxied.as_secs_f64()
    );
    format!(
        "| `{label}` | {states} | {:.2} s | {per_thousand:.2} s | {:.2} s | {rss_mib:.0} MiB | {:.2} s | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} |",
        direct.as_secs_f64(),
        direct_run.cpu,
        proxied.as_secs_f64(),
        counts.list,
        counts.head,
        counts.get_state,
        counts.get_lock,
        counts.list_versions,
        counts.bucket_check,
        counts.other,
        counts.total(),
        counts.total() as f64 / states as f64
    )
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` (or `--all-targets`) does not, and
    // must not spend minutes creating 10,000 states.
    if !std::env::args().any(|arg| arg == "--bench") {
        eprintln!("the inventory benchmark runs only under `cargo bench --bench inventory`");
        return;
    }
    let total: usize = std::env::var("S3STATE_BENCH_STATES")
        .map(|n| n.parse().expect("S3STATE_BENCH_STATES is a number"))
        .unwrap_or(10_000);
    assert!(total >= 10, "S3STATE_BENCH_STATES must be at least 10");
    let extras = std::env::var("S3STATE_BENCH_EXTRAS").map_or(true, |v| v != "0");
    let mut steps = vec![total / 10, total / 2, total];
    steps.dedup();

    let bucket = common::bucket(true).await;
    let client = common::client();
    let proxy = common::proxy::FaultProxy::start(common::endpoint()).await;
    eprintln!("bucket {bucket}, {total} states in steps {steps:?}");
    let mut table = vec![
        "| command | states | wall | per 1,000 | s3state CPU | peak RSS | wall through proxy | LIST | HEAD | GET state | GET lock | ListObjectVersions | bucket check | other | requests | per state |".to_owned(),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    let mut created = 0;
    for &step in &steps {
        create_states(&client, &bucket, created..step).await;
        created = step;
        table.push(measure(&bucket, &proxy, step, &[]).await);
        table.push(measure(&bucket, &proxy, step, LISTING_ONLY).await);
    }
    if extras {
        table.push(measure(&bucket, &proxy, total, &["--resources"]).await);
        table.push(measure(&bucket, &proxy, total, &["--versions"]).await);
    }
    println!("\n{}", table.join("\n"));
}
