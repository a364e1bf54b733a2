//! Ctrl-C in the CLI: one handler, and every lock it took released before it exits.

use crate::common;
use s3state::{LockInfo, Locker};
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

const KEY: &str = "cli/interrupt.tfstate";

/// From issue 23, item 11: Ctrl-C was ignored while the CLI waited for a lock (`push
/// --lock-timeout 25s`, SIGINT at 2 s, exit at 25 s): the handler was installed before the
/// wait but polled only after it. Now the wait gives way to the interrupt, and the holder's
/// lock is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_while_waiting_for_a_lock_stops_the_wait() {
    let bucket = common::bucket(true).await;
    let holder = common::manager(&bucket, KEY).await;
    holder
        .update(common::set_output("greeting", 1))
        .await
        .unwrap();
    let held = holder.lock(&LockInfo::new("held elsewhere")).await.unwrap();
    let file = common::temp_dir("s3state-interrupt").join("state.tfstate");
    std::fs::write(&file, common::TERRAFORM_STATE).unwrap();

    // A process whose SIGINT arrives before its handler is in place dies of it: try again,
    // waiting longer, rather than guess how long start-up takes on a loaded machine.
    let mut interrupted = None;
    for wait in [2, 5, 10] {
        let mut child = common::s3state_process(&bucket, KEY)
            .args(["push", "--force", "--lock-timeout", "10m"])
            .arg(&file)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_secs(wait)).await;
        std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        // Bounded: without the fix it would wait out the 10-minute lock timeout.
        let output = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                if child.try_wait().unwrap().is_some() {
                    return Some(child.wait_with_output().unwrap());
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    return None;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .await
        .unwrap()
        .expect("the CLI stops waiting for the lock when interrupted");
        if output.status.signal() == Some(2) {
            continue; // interrupted before its handler was in place
        }
        interrupted = Some(output);
        break;
    }
    let output = interrupted.expect("the CLI's handler was in place within 10 s");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("interrupted while waiting for the lock"),
        "{stderr}"
    );
    let still = holder
        .locker()
        .current()
        .await
        .unwrap()
        .expect("still locked");
    assert_eq!(still.id, held, "the holder's lock is left alone");
    holder.unlock(&held).await.unwrap();
}
