//! A load test of the gateway as a Rust client (not Terraform): 16 concurrent clients do
//! lock → get → post → unlock on 4 states, 4 rounds each. Every update must
//! land exactly once (the counters are exact) and no lock may be left behind. Throughput and
//! latency are printed, beside the same work done with direct library calls; nothing is
//! asserted about timing.

use crate::common::gateway;

use gateway::load::{through_gateway, through_library};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_on_four_states_lose_no_update_and_leave_no_lock() {
    // The counters and locks are checked inside; the figures are printed for BENCHMARKS.md
    // (`cargo bench --bench gateway` measures 1 to 16 clients).
    let gateway = through_gateway(16, 4, 4).await;
    println!("gateway load: {gateway}");
    let direct = through_library(16, 4, 4).await;
    println!("direct library (update() with its lock): {direct}");
}
