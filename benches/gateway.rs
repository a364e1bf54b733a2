//! The HTTP gateway's throughput as clients are added (issue 16's "scale"), beside the same
//! work through the library's locked `update()`, in one run on one LocalStack. Each run checks
//! that every update landed exactly once and that no lock is left.
//!
//! `cargo bench --bench gateway`; `S3STATE_BENCH_CLIENTS=1,2,4,8,16` picks the client counts.
//! Every run does 128 rounds in all (LOCK → GET → POST → UNLOCK) on 4 states (fewer when
//! there are fewer clients).

// The integration suite's harness, of which a bench uses a part.
#[path = "../tests/suite/common/mod.rs"]
#[allow(dead_code)]
mod common;

use common::gateway::load::{through_gateway, through_library};

const TOTAL_ROUNDS: usize = 128;

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let counts: Vec<usize> = std::env::var("S3STATE_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,2,4,8,16".into())
        .split(',')
        .map(|s| s.trim().parse().expect("a client count"))
        .collect();
    let mut rows = Vec::new();
    for &clients in &counts {
        let states = clients.min(4);
        let rounds = (TOTAL_ROUNDS / clients).max(1);
        let gateway = through_gateway(clients, states, rounds).await;
        eprintln!("gateway: {gateway}");
        let direct = through_library(clients, states, rounds).await;
        eprintln!("library: {direct}");
        rows.push((gateway, direct));
    }
    println!("\n## The HTTP gateway from 1 to 16 clients (rounds/s; p50 / p99 round latency)\n");
    println!(
        "| clients | states | gateway | p50 / p99 | direct update() | p50 / p99 | gateway / direct |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (gateway, direct) in &rows {
        println!(
            "| {} | {} | {:.1} | {:.0?} / {:.0?} | {:.1} | {:.0?} / {:.0?} | {:.2}× |",
            gateway.clients,
            gateway.states,
            gateway.rounds_per_second(),
            gateway.p50,
            gateway.p99,
            direct.rounds_per_second(),
            direct.p50,
            direct.p99,
            gateway.rounds_per_second() / direct.rounds_per_second()
        );
    }
}
