//! Who goes next when several updates of one state wait: updates in one process queue first
//! come first served, and a process that has seen contention leaves a gap after releasing the
//! lock. On the in-memory store, in paused time, so every interleaving is exact.

use s3state::store::memory::MemoryStore;
use s3state::{
    Error, LockInfo, Locker, OutputValue, Refresher, RemoteState, RemoteStateOptions, Transient,
    UpdateLocking, UpdateTurns,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "app/terraform.tfstate";

fn manager(store: &MemoryStore, turns: UpdateTurns, timeout: Duration) -> RemoteState<MemoryStore> {
    RemoteState::with_options(
        store.clone(),
        RemoteStateOptions {
            update_locking: UpdateLocking::Lock { timeout },
            update_turns: turns,
            ..RemoteStateOptions::default()
        },
    )
}

/// Sets output `name` to one more than it was.
fn bump(name: &'static str) -> impl FnMut(&mut s3state::State) + Send {
    move |state| {
        let next = state
            .outputs
            .get(name)
            .and_then(|o| o.to_value().as_u64())
            .unwrap_or(0)
            + 1;
        state.outputs.insert(name.into(), OutputValue::new(&next));
    }
}

#[tokio::test(start_paused = true)]
async fn a_process_that_was_refused_the_lock_leaves_a_gap_before_locking_again() {
    let store = MemoryStore::new(KEY);
    // Managers that do not share turns stand for separate processes.
    let terraform = manager(&store, UpdateTurns::PerManager, Duration::from_secs(60));
    let hot = Arc::new(manager(
        &store,
        UpdateTurns::PerManager,
        Duration::from_secs(60),
    ));
    let newcomer = Arc::new(manager(
        &store,
        UpdateTurns::PerManager,
        Duration::from_secs(60),
    ));
    let order = Arc::new(Mutex::new(Vec::new()));

    let id = terraform
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    let (first_done, mut first_landed) = tokio::sync::mpsc::unbounded_channel();
    let hot_loop = tokio::spawn({
        let (hot, order) = (Arc::clone(&hot), Arc::clone(&order));
        async move {
            // Refused while Terraform holds the lock: this process has seen contention.
            hot.update(bump("hot")).await.unwrap();
            order.lock().unwrap().push("hot");
            first_done.send(()).unwrap();
            // Straight back for the lock, as a tight loop does.
            hot.update(bump("hot")).await.unwrap();
            order.lock().unwrap().push("hot");
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    terraform.unlock(&id).await.unwrap();

    first_landed.recv().await.unwrap();
    // Another process arrives just as the hot one released: it gets the lock first.
    newcomer.update(bump("newcomer")).await.unwrap();
    order.lock().unwrap().push("newcomer");
    hot_loop.await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["hot", "newcomer", "hot"]);
}

#[tokio::test(start_paused = true)]
async fn a_lone_writer_never_waits_between_its_updates() {
    let store = MemoryStore::new(KEY);
    let writer = manager(&store, UpdateTurns::Process, Duration::from_secs(60));
    let started = tokio::time::Instant::now();
    for _ in 0..20 {
        writer.update(bump("n")).await.unwrap();
    }
    // Paused time moves only when a task sleeps: no back-off, poll or courtesy gap ran.
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_update_queued_behind_another_in_this_process_gives_up_at_its_own_timeout() {
    let store = MemoryStore::new(KEY);
    let terraform = manager(&store, UpdateTurns::PerManager, Duration::from_secs(60));
    let patient = Arc::new(manager(
        &store,
        UpdateTurns::Process,
        Duration::from_secs(600),
    ));
    let hurried = manager(&store, UpdateTurns::Process, Duration::from_secs(5));
    let id = terraform
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    // The patient update holds this process's turn while it waits for Terraform's lock.
    let waiting = tokio::spawn({
        let patient = Arc::clone(&patient);
        async move { patient.update(bump("patient")).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;

    let started = tokio::time::Instant::now();
    let error = hurried.update(bump("hurried")).await.unwrap_err();
    // It names who holds the lock, as the update ahead of it would.
    match &error {
        Error::Locked {
            holder: Some(holder),
            ..
        } => assert_eq!(holder.id, id),
        other => panic!("expected Locked naming Terraform's lock, got {other:?}"),
    }
    assert_eq!(started.elapsed(), Duration::from_secs(5));

    // Once Terraform is done, the patient one goes ahead; the hurried one wrote nothing.
    terraform.unlock(&id).await.unwrap();
    waiting.await.unwrap().unwrap();
    let reader = RemoteState::new(store.clone());
    reader.refresh_state().await.unwrap();
    let state = reader.state().unwrap();
    assert!(state.outputs.contains_key("patient"));
    assert!(!state.outputs.contains_key("hurried"));
}
