//! The gateway's web UI at scale (issue 26): the state list over 10,000 states, a history of
//! 1,000 versions, and the diff of two 10 MB versions, each page fetched over HTTP from a
//! running gateway on one LocalStack, as a browser would (basic auth, whole body read).
//!
//! `cargo bench --bench ui`. `S3STATE_BENCH_UI_STATES` (default 10,000),
//! `S3STATE_BENCH_UI_VERSIONS` (1,000) and `S3STATE_BENCH_UI_MB` (10) make it smaller.
//! Each page is fetched 7 times; the table shows the median and the range.

// The integration suite's harness, of which a bench uses a part.
#[path = "../tests/suite/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::gateway::{self, READER, Running, send};
use futures::StreamExt;
use std::time::{Duration, Instant};

const REPETITIONS: usize = 7;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small state, as the library writes it, with s3state's metadata beside it.
async fn put_small(bucket: &str, key: String, serial: u64) {
    let body = gateway::state_body("5f8a2c1e-0000-4000-8000-000000000001", serial, serial);
    common::client()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(body.into())
        .metadata("s3state-serial", serial.to_string())
        .metadata("s3state-lineage", "5f8a2c1e-0000-4000-8000-000000000001")
        .metadata("s3state-terraform-version", "1.15.5")
        .send()
        .await
        .expect("PUT");
}

/// A state of about `bytes` bytes: `terraform_data`-like resources of ~2.5 KB each, one
/// sensitive attribute apiece. `version` 2 changes every tenth resource.
fn big_state(bytes: usize, version: u64) -> Vec<u8> {
    let filler = "x".repeat(2_000);
    let count = bytes / 2_600;
    let resources: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            let changed = version == 2 && i % 10 == 0;
            serde_json::json!({
                "mode": "managed", "type": "aws_instance", "name": format!("r{i:05}"),
                "provider": "provider[\"registry.terraform.io/hashicorp/aws\"]",
                "instances": [{
                    "schema_version": 1,
                    "attributes": {
                        "id": format!("i-{i:08x}"),
                        "instance_type": if changed { "m5.large" } else { "t3.micro" },
                        "user_data": filler,
                        "tags": { "Name": format!("web-{i}"), "team": "platform" },
                        "password": format!("secret-{i}-v{}", if changed { 2 } else { 1 })
                    },
                    "sensitive_attributes": [[{ "type": "get_attr", "value": "password" }]],
                    "identity_schema_version": 0
                }]
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "version": 4, "terraform_version": "1.15.5", "serial": version,
        "lineage": "5f8a2c1e-0000-4000-8000-000000000002",
        "outputs": { "password": { "value": "s3cr3t", "type": "string", "sensitive": true } },
        "resources": resources, "check_results": null
    }))
    .unwrap()
}

struct Row {
    page: String,
    median: Duration,
    min: Duration,
    max: Duration,
    bytes: usize,
}

async fn measure(gateway: &Running, label: &str, path: &str, expect: &str) -> Row {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..REPETITIONS {
        let started = Instant::now();
        let reply = send(gateway.addr, "GET", path, Some(READER), b"").await;
        times.push(started.elapsed());
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert!(reply.text().contains(expect), "{path} lacks {expect:?}");
        bytes = reply.body.len();
    }
    times.sort();
    let row = Row {
        page: label.to_owned(),
        median: times[REPETITIONS / 2],
        min: times[0],
        max: times[REPETITIONS - 1],
        bytes,
    };
    eprintln!("{label}: {:?}", row.median);
    row
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let states = setting("S3STATE_BENCH_UI_STATES", 10_000);
    let versions = setting("S3STATE_BENCH_UI_VERSIONS", 1_000);
    let megabytes = setting("S3STATE_BENCH_UI_MB", 10);
    let gateway = gateway::start().await;
    let bucket = gateway.bucket.clone();
    let key = gateway::key;

    let started = Instant::now();
    futures::stream::iter(0..states)
        .map(|i| put_small(&bucket, key(&format!("flat/state-{i:05}.tfstate")), 1))
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    // One in twenty locked, as the `ls` bench does.
    futures::stream::iter((0..states).step_by(20))
        .map(|i| {
            let body = gateway::lock_body(&format!("lock-{i}"), "bench@host");
            let bucket = bucket.clone();
            async move {
                common::client()
                    .put_object()
                    .bucket(bucket)
                    .key(key(&format!("flat/state-{i:05}.tfstate.tflock")))
                    .body(body.into())
                    .send()
                    .await
                    .expect("PUT lock");
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    for serial in 1..=versions as u64 {
        put_small(&bucket, key("hist.tfstate"), serial).await;
    }
    let big = megabytes * 1_000_000;
    for version in [1, 2] {
        common::client()
            .put_object()
            .bucket(&bucket)
            .key(key("big.tfstate"))
            .body(big_state(big, version).into())
            .send()
            .await
            .expect("PUT big");
    }
    eprintln!("setup: {:?}", started.elapsed());
    let listed = send(
        gateway.addr,
        "GET",
        "/_history/big.tfstate",
        Some(READER),
        b"",
    )
    .await;
    let ids: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version_id"].as_str().unwrap().to_owned())
        .collect();
    let (new, old) = (&ids[0], &ids[1]);
    let middle = format!("flat/state-{:05}.tfstate", states / 2);
    let last_page = versions.div_ceil(20) - 1;

    let rows = vec![
        measure(&gateway, "state list, root (one folder)", "/ui/", "flat/").await,
        measure(
            &gateway,
            &format!("state list, first page of {states} in one folder"),
            "/ui/?prefix=flat/",
            "state-00000",
        )
        .await,
        measure(
            &gateway,
            "state list, a middle page",
            &format!("/ui/?prefix=flat/&after={middle}"),
            "id=\"next\"",
        )
        .await,
        measure(
            &gateway,
            // One match: a search reads keys until its page is full or it has read 10,000
            // (catalog::MAX_KEYS_SCANNED), so this is a search's whole cost.
            &format!("search matching 1 of {states} (reads up to 10,000 keys)"),
            &format!("/ui/?prefix=flat/&q=state-{:05}", states * 3 / 4),
            "class=\"state\"",
        )
        .await,
        measure(
            &gateway,
            &format!("history of {versions} versions, newest page"),
            "/ui/state/hist.tfstate",
            "id=\"older\"",
        )
        .await,
        measure(
            &gateway,
            "the same, oldest page",
            &format!("/ui/state/hist.tfstate?page={last_page}"),
            "Newer",
        )
        .await,
        measure(
            &gateway,
            &format!("diff of two {megabytes} MB versions, first page"),
            &format!("/ui/diff/big.tfstate?from={old}&to={new}"),
            "instance_type",
        )
        .await,
        measure(
            &gateway,
            "the same, last page",
            &format!("/ui/diff/big.tfstate?from={old}&to={new}&page=99"),
            "instance_type",
        )
        .await,
    ];
    println!("\n| page | median | min–max | HTML |");
    println!("|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {:.0?} | {:.0?}–{:.0?} | {} KB |",
            row.page,
            row.median,
            row.min,
            row.max,
            row.bytes / 1024
        );
    }
}
