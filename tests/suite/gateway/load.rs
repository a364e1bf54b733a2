//! A load test of the gateway as a Rust client (not Terraform): 16 concurrent clients do
//! lock → get → post → unlock on 4 states, 4 rounds each. Every update must
//! land exactly once (the counters are exact) and no lock may be left behind. Throughput and
//! latency are printed, beside the same work done with direct library calls; nothing is
//! asserted about timing.

use crate::common::gateway;

use gateway::load::{create_counters, through_gateway, through_gateway_counted, through_library};
use gateway::{WRITER, lock_body, send};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_on_four_states_lose_no_update_and_leave_no_lock() {
    // The counters and locks are checked inside; the figures are printed for BENCHMARKS.md
    // (`cargo bench --bench gateway` measures 1 to 64 clients).
    let gateway = through_gateway(16, 4, 4).await;
    println!("gateway load: {gateway}");
    let direct = through_library(16, 4, 4).await;
    println!("direct library (update() with its lock): {direct}");
}

/// From issue 27: 16 clients on one state made 104 S3 requests per round through the
/// gateway (10 without contention), 94 of them LOCKs the store refused while clients polled.
/// Waiting clients now take turns in the gateway, so a round stays near the uncontended 10.
/// (Requests are counted through the recording proxy; nothing is timed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_on_one_state_take_turns_without_polling_s3() {
    let counted = through_gateway_counted(16, 1, 4).await;
    println!(
        "gateway load through the proxy: {counted}: {:?}",
        counted.s3_requests
    );
    let total: usize = counted.s3_requests.iter().map(|(_, n)| n).sum();
    let per_round = total as f64 / counted.rounds as f64;
    assert!(
        per_round <= 20.0,
        "{per_round:.1} S3 requests per round (10 without contention): {:?}",
        counted.s3_requests
    );
}

/// Refused lock PUTs the proxy saw (the store answering "held" to a lock attempt).
fn refused_lock_puts(proxy: &crate::common::proxy::FaultProxy) -> usize {
    proxy
        .take_requests()
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with(".tflock") && r.status == Some(412))
        .count()
}

/// From issue 27 ("a gateway that scales with clients"): at 16 clients on one state, 94 of
/// the gateway's 104 S3 requests per round were LOCKs refused by the store (each a read of
/// the state, a refused lock PUT and a read of the holder), sent again every few
/// milliseconds by every waiting client, crowding out the holder's own requests. A LOCK that
/// finds the state's lock taken through the gateway now waits its turn in the gateway
/// (`limits.lock_wait_secs`) and asks the store once the lock is let go: it is granted, and the
/// store refused no lock attempt. With `lock_wait_secs = 0` the same LOCK is refused at once,
/// as before. (Ordering only: the pause lets the second LOCK arrive; nothing is timed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_taken_through_the_gateway_is_waited_for_in_turn_not_polled() {
    for wait_secs in [2, 0] {
        let (gateway, proxy) = gateway::start_configured(true, |config| {
            config.limits.lock_wait_secs = wait_secs;
        })
        .await;
        let proxy = proxy.expect("the recording proxy");
        let addr = gateway.addr;
        create_counters(addr, &["turns/a".to_owned()]).await;
        let first = send(
            addr,
            "LOCK",
            "/turns/a",
            Some(WRITER),
            &lock_body("first", "a@ci"),
        )
        .await;
        assert_eq!(first.status, 200, "{}", first.text());
        proxy.take_requests();

        let second = tokio::spawn(async move {
            send(
                addr,
                "LOCK",
                "/turns/a",
                Some(WRITER),
                &lock_body("second", "b@ci"),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let answered_while_held = second.is_finished();
        let unlocked = send(
            addr,
            "UNLOCK",
            "/turns/a",
            Some(WRITER),
            &lock_body("first", "a@ci"),
        )
        .await;
        assert_eq!(unlocked.status, 200, "{}", unlocked.text());
        let second = second.await.unwrap();

        if wait_secs == 0 {
            assert_eq!(
                second.status,
                423,
                "no wait: refused at once: {}",
                second.text()
            );
            assert!(
                second.text().contains("first"),
                "names the holder: {}",
                second.text()
            );
            assert_eq!(refused_lock_puts(&proxy), 1, "the store was asked once");
        } else {
            assert!(
                !answered_while_held,
                "answered while the first client held the lock"
            );
            assert_eq!(second.status, 200, "granted in turn: {}", second.text());
            assert_eq!(
                refused_lock_puts(&proxy),
                0,
                "the store refused no lock attempt"
            );
            let unlocked = send(
                addr,
                "UNLOCK",
                "/turns/a",
                Some(WRITER),
                &lock_body("second", "b@ci"),
            )
            .await;
            assert_eq!(unlocked.status, 200, "{}", unlocked.text());
        }
        gateway.stop().await;
    }
}
