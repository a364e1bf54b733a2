//! The HTTP gateway's throughput as clients are added (issue 27's "a gateway that scales with
//! clients"), beside the same work through the library's locked `update()`, in one run on one
//! LocalStack. Each run checks that every update landed exactly once and that no lock is left.
//!
//! `cargo bench --bench gateway`. Every row does 128 rounds in all (LOCK → GET → POST →
//! UNLOCK), on one state shared by every client, and on many states (one per client).
//! `S3STATE_BENCH_CLIENTS=1,4,16,64` picks the client counts, `S3STATE_BENCH_LAYOUTS=one,many`
//! the layouts, and `S3STATE_BENCH_REQUESTS=1` adds a run per row through the recording proxy
//! that counts the gateway's S3 requests per round by kind (slower: for the counts only).

// The integration suite's harness, of which a bench uses a part.
#[path = "../tests/suite/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::gateway::load::{through_gateway, through_gateway_counted, through_library};

const TOTAL_ROUNDS: usize = 128;

fn list(var: &str, default: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let counts: Vec<usize> = list("S3STATE_BENCH_CLIENTS", "1,4,16,64")
        .iter()
        .map(|s| s.parse().expect("a client count"))
        .collect();
    let layouts = list("S3STATE_BENCH_LAYOUTS", "one,many");
    let count_requests = std::env::var("S3STATE_BENCH_REQUESTS").is_ok_and(|v| v == "1");
    let mut rows = Vec::new();
    let mut request_rows = Vec::new();
    for layout in &layouts {
        for (turn, &clients) in counts.iter().enumerate() {
            let states = match layout.as_str() {
                "one" => 1,
                "many" => clients,
                other => panic!("S3STATE_BENCH_LAYOUTS: {other:?} is not one or many"),
            };
            let rounds = (TOTAL_ROUNDS / clients).max(1);
            // Alternate who goes first, so that neither always meets a fresher LocalStack.
            let (gateway, direct) = if turn % 2 == 0 {
                let gateway = through_gateway(clients, states, rounds).await;
                (gateway, through_library(clients, states, rounds).await)
            } else {
                let direct = through_library(clients, states, rounds).await;
                (through_gateway(clients, states, rounds).await, direct)
            };
            eprintln!("gateway: {gateway}");
            eprintln!("library: {direct}");
            rows.push((gateway, direct));
            if count_requests {
                let counted = through_gateway_counted(clients, states, rounds).await;
                eprintln!("counted: {counted}");
                request_rows.push(counted);
            }
        }
    }
    println!(
        "\n## The HTTP gateway from {} to {} clients (rounds/s; p50 / p99 round latency)\n",
        counts.first().unwrap_or(&0),
        counts.last().unwrap_or(&0)
    );
    println!(
        "| clients | states | gateway | p50 / p99 | refused LOCKs | direct update() | p50 / p99 | gateway / direct |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (gateway, direct) in &rows {
        println!(
            "| {} | {} | {:.1} | {:.0?} / {:.0?} | {} | {:.1} | {:.0?} / {:.0?} | {:.2}× |",
            gateway.clients,
            gateway.states,
            gateway.rounds_per_second(),
            gateway.p50,
            gateway.p99,
            gateway.refused_locks,
            direct.rounds_per_second(),
            direct.p50,
            direct.p99,
            gateway.rounds_per_second() / direct.rounds_per_second()
        );
    }
    if !request_rows.is_empty() {
        println!("\n## The gateway's S3 requests per round (through the recording proxy)\n");
        println!(
            "| clients | states | rounds | refused LOCKs | S3 requests per round | by kind (per round) |"
        );
        println!("|---|---|---|---|---|---|");
        for counted in &request_rows {
            let rounds = counted.rounds.max(1) as f64;
            let total: usize = counted.s3_requests.iter().map(|(_, n)| n).sum();
            let kinds: Vec<String> = counted
                .s3_requests
                .iter()
                .map(|(kind, n)| format!("{kind} {:.2}", *n as f64 / rounds))
                .collect();
            println!(
                "| {} | {} | {} | {} | {:.2} | {} |",
                counted.clients,
                counted.states,
                counted.rounds,
                counted.refused_locks,
                total as f64 / rounds,
                kinds.join(", ")
            );
        }
    }
}
