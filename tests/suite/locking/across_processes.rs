//! Fair turns across OS processes: eight writers, each a process of its own (this test binary
//! run again as a worker), in tight `update()` loops on one state in LocalStack, with the
//! default settings (the lock, its 60 s timeout, the lock queue). None may time out, no
//! commit may be lost or applied twice, and no writer may wait through more than twice as
//! many other commits as there are writers: a fairness bound counted in turns, not in
//! seconds, so a loaded machine does not make it fail.
//!
//! From issue 27 ("Performance that users feel"): before the lock queue, a writer that had
//! just released took the lock straight back, and one writer among eight could wait past the
//! 60 s default.

use crate::common;
use s3state::{OutputValue, Refresher, Transient};
use std::process::{Command, Stdio};

const WRITERS: usize = 8;
const UPDATES: u64 = 12;
const KEY: &str = "fair/terraform.tfstate";
/// Set for a worker process: `<bucket> <writer index>`.
const WORKER: &str = "S3STATE_FAIR_TURNS_WORKER";
/// What a worker prints for each update: how many other commits landed while it waited.
const WAITED: &str = "fair-turns waited-through=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_writer_processes_in_tight_update_loops_take_fair_turns() {
    // Run again by itself as one of the writers: it writes and reports, nothing more.
    if let Ok(spec) = std::env::var(WORKER) {
        return writer_process(&spec).await;
    }
    let bucket = common::bucket(true).await;
    let exe = std::env::current_exe().expect("the test binary");
    let children: Vec<_> = (0..WRITERS)
        .map(|writer| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "locking::across_processes::eight_writer_processes_in_tight_update_loops_take_fair_turns",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(WORKER, format!("{bucket} {writer}"))
                .env("S3STATE_TEST_ENDPOINT", common::endpoint())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawning a writer process")
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|child| child.wait_with_output().expect("a writer process"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();

    let mut waits = Vec::new();
    for (writer, output) in outputs.iter().enumerate() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "writer {writer} failed (a timeout is Error::Locked):\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mine: Vec<u64> = stdout
            .lines()
            .filter_map(|line| line.split_once(WAITED))
            .map(|(_, n)| n.trim().parse().expect("a count"))
            .collect();
        assert_eq!(mine.len() as u64, UPDATES, "writer {writer}:\n{stdout}");
        waits.push(mine);
    }
    let longest = waits.iter().flatten().max().copied().unwrap_or(0);
    eprintln!("other commits waited through, per writer: {waits:?}");
    assert!(
        longest <= 2 * WRITERS as u64,
        "a writer waited through {longest} other commits (bound {}): {waits:?}",
        2 * WRITERS
    );

    // No commit lost, none applied twice.
    let stored = s3state::State::from_slice(&common::get_raw(&bucket, KEY).await).unwrap();
    let count = |name: &str| stored.outputs.get(name).and_then(|o| o.to_value().as_u64());
    assert_eq!(count("n"), Some(WRITERS as u64 * UPDATES), "total commits");
    for writer in 0..WRITERS {
        assert_eq!(
            count(&format!("w{writer}")),
            Some(UPDATES),
            "writer {writer}"
        );
    }
    // The queue is left empty: every waiter removed its ticket.
    let queue: serde_json::Value =
        serde_json::from_slice(&common::get_raw(&bucket, &format!("{KEY}.tflock.queue")).await)
            .unwrap();
    assert_eq!(queue["tickets"], serde_json::json!([]), "{queue}");
}

/// One writer of [`eight_writer_processes_in_tight_update_loops_take_fair_turns`]: that test
/// run again in a process of its own, with `WORKER` set to `<bucket> <writer index>`. (Not a
/// test of its own, so no test is ever reported as ignored.)
async fn writer_process(spec: &str) {
    let (bucket, writer) = spec.split_once(' ').unwrap();
    let manager = common::settings_builder(common::endpoint(), bucket, KEY)
        .build()
        .await
        .unwrap();
    let get = |s: &s3state::State, name: &str| {
        s.outputs
            .get(name)
            .and_then(|o| o.to_value().as_u64())
            .unwrap_or(0)
    };
    manager.refresh_state().await.unwrap();
    // The total when this writer last committed (or started).
    let mut last = manager.state().map(|s| get(&s, "n")).unwrap_or(0);
    let mine = format!("w{writer}");
    for _ in 0..UPDATES {
        let before = manager
            .update(|s| {
                let (total, own) = (get(s, "n"), get(s, &mine));
                s.outputs.insert("n".into(), OutputValue::new(&(total + 1)));
                s.outputs.insert(mine.clone(), OutputValue::new(&(own + 1)));
                total
            })
            .await
            .expect("an update within the default lock timeout");
        println!("{WAITED}{}", before - last);
        last = before + 1;
    }
}
