//! Who goes next when several updates of one state wait: updates in one process queue first
//! come first served, processes take turns through the lock queue beside the `.tflock`, and a
//! process that has seen contention leaves a gap after releasing the lock for waiters that do
//! not read the queue. On the in-memory store, in paused time, so every interleaving is exact. Then the
//! turnstile attacked: timeouts, error honesty, the same bucket and key on two endpoints
//! (LocalStack, and moto as a second S3) kept apart, cancellation at every await point.

use crate::common;
use crate::common::hooked::Hooked;
use s3state::Store as _;
use s3state::store::memory::MemoryStore;
use s3state::{
    Error, LockInfo, LockRetry, Locker, OutputValue, Refresher, RemoteState, RemoteStateOptions,
    Transient, UpdateLocking,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "app/terraform.tfstate";

fn manager(store: &MemoryStore, timeout: Duration) -> RemoteState<MemoryStore> {
    RemoteState::with_options(store.clone(), options(timeout))
}

/// Sets output `name` to one more than it was.
#[tokio::test(start_paused = true)]
async fn a_process_that_was_refused_the_lock_leaves_a_gap_before_locking_again() {
    let store = MemoryStore::new(KEY);
    // Managers that do not share turns stand for separate processes.
    let terraform = manager(&store.clone().in_another_process(), Duration::from_secs(60));
    let hot = Arc::new(manager(
        &store.clone().in_another_process(),
        Duration::from_secs(60),
    ));
    let newcomer = Arc::new(manager(
        &store.clone().in_another_process(),
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
    let writer = manager(&store, Duration::from_secs(60));
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
    let terraform = manager(&store.clone().in_another_process(), Duration::from_secs(60));
    let patient = Arc::new(manager(&store, Duration::from_secs(600)));
    let hurried = manager(&store, Duration::from_secs(5));
    let id = terraform
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    // The patient update holds this process's turn while it waits for Terraform's lock.
    let waiting = spawn_bump(&patient, "patient");
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

// ---------------------------------------------------------------------------------------------
// The turnstile attacked
//
// Adversarial review of the process-wide update turnstile (commit 63c06f6): timeouts, error
// honesty, objects that share an identity, and cancellation at every await point.
//
// The in-memory tests run in paused time, so every interleaving is exact; the S3 tests use
// LocalStack, and moto as a second, unrelated S3 endpoint.
// ---------------------------------------------------------------------------------------------

fn options(timeout: Duration) -> RemoteStateOptions {
    RemoteStateOptions {
        update_locking: UpdateLocking::Lock { timeout },
        ..RemoteStateOptions::default()
    }
}

/// Sets output `name` to one more than it was, and returns the new value.
/// `bump(name)` run by `manager` in a task of its own.
fn spawn_bump<S: s3state::Store + 'static>(
    manager: &Arc<RemoteState<S>>,
    name: &'static str,
) -> tokio::task::JoinHandle<s3state::Result<u64>> {
    let manager = Arc::clone(manager);
    tokio::spawn(async move { manager.update(bump(name)).await })
}

fn bump(name: &'static str) -> impl FnMut(&mut s3state::State) -> u64 + Send {
    move |state| {
        let next = state
            .outputs
            .get(name)
            .and_then(|o| o.to_value().as_u64())
            .unwrap_or(0)
            + 1;
        state.outputs.insert(name.into(), OutputValue::new(&next));
        next
    }
}

async fn counter(store: &MemoryStore, name: &str) -> u64 {
    let reader = RemoteState::new(store.clone());
    reader.refresh_state().await.unwrap();
    reader
        .state()
        .and_then(|state| state.outputs.get(name).and_then(|o| o.to_value().as_u64()))
        .unwrap_or(0)
}

/// Makes this process see contention: an update through `manager` is refused the lock by a
/// holder in "another process" (a manager with turns of its own), which releases it after
/// 100 ms, and then lands.
async fn contend(store: &MemoryStore, manager: Arc<RemoteState<MemoryStore>>) {
    let other_process = RemoteState::with_options(
        store.clone().in_another_process(),
        options(Duration::from_secs(60)),
    );
    let id = other_process
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    let refused = tokio::spawn(async move { manager.update(bump("n")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    other_process.unlock(&id).await.unwrap();
    refused.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------------

/// From the adversarial review of the update turnstile (63c06f6, issue 16).
#[tokio::test(start_paused = true)]
async fn an_update_whose_lock_is_free_returns_within_its_timeout_after_contention() {
    // A caller who polls slowly for a long-held lock (Terraform's own schedule, 1 s doubling
    // to 16 s) and gives up after 2 s.
    let slow_poll = LockRetry {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(16),
    };
    let store = MemoryStore::new(KEY);
    let patient = Arc::new(RemoteState::with_options(
        store.clone(),
        RemoteStateOptions {
            update_lock_retry: slow_poll,
            ..options(Duration::from_secs(60))
        },
    ));
    let hurried = RemoteState::with_options(
        store.clone(),
        RemoteStateOptions {
            update_lock_retry: slow_poll,
            ..options(Duration::from_secs(2))
        },
    );
    contend(&store, Arc::clone(&patient)).await;

    // Nobody holds the lock now, and nobody is waiting for it.
    assert!(hurried.locker().current().await.unwrap().is_none());
    let started = tokio::time::Instant::now();
    hurried.update(bump("n")).await.unwrap();
    let took = started.elapsed();
    assert!(
        took <= Duration::from_secs(2),
        "an update with a 2 s timeout, whose lock was free, took {took:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Honest errors
// ---------------------------------------------------------------------------------------------

/// From the adversarial review of the update turnstile (63c06f6, issue 16).
#[tokio::test(start_paused = true)]
async fn an_update_that_times_out_in_the_queue_does_not_blame_an_unreadable_lock() {
    let store = MemoryStore::new(KEY);
    let terraform = RemoteState::with_options(
        store.clone().in_another_process(),
        options(Duration::from_secs(60)),
    );
    let patient = common::shared(store.clone(), options(Duration::from_secs(600)));
    let hurried = RemoteState::with_options(store.clone(), options(Duration::from_secs(5)));
    let id = terraform
        .lock(&LockInfo::new("OperationTypeApply").with_info("terraform apply"))
        .await
        .unwrap();
    let waiting = spawn_bump(&patient, "patient");
    tokio::time::sleep(Duration::from_millis(10)).await;

    let error = hurried.update(bump("hurried")).await.unwrap_err();
    let message = error.to_string();
    terraform.unlock(&id).await.unwrap();
    waiting.await.unwrap().unwrap();

    // The lock object holds Terraform's perfectly readable lock info.
    assert!(
        !message.contains("not readable"),
        "the error blames an unreadable lock object: {message}"
    );
    assert!(
        matches!(&error, Error::Locked { holder: Some(holder), .. } if holder.id == id),
        "the error does not name Terraform, who holds the lock: {error:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Two objects, one identity
// ---------------------------------------------------------------------------------------------

/// A manager for `bucket`/`key` on `endpoint`, with the test credentials and region.
async fn manager_on(
    endpoint: &str,
    bucket: &str,
    options: RemoteStateOptions,
) -> RemoteState<s3state::S3Store> {
    // From settings, as applications configure s3state: then the store knows its endpoint
    // and managers of one object share their update turns.
    common::settings_builder(endpoint, bucket, KEY)
        // moto answers GetBucketVersioning in a shape the SDK cannot parse; both buckets are
        // versioned.
        .with_versioning_required(false)
        .with_options(options)
        .build()
        .await
        .unwrap()
}

/// From the adversarial review of the update turnstile (63c06f6, issue 16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_on_one_endpoint_does_not_wait_for_a_lock_on_another_endpoint() {
    // The same bucket name and key, in the same region, on two unrelated S3 services.
    let bucket = common::bucket(true).await;
    let moto = aws_sdk_s3::Client::from_conf(common::config_for(common::moto_endpoint()).build());
    common::create_bucket_on(&moto, &bucket, true).await;

    // On moto, Terraform holds the lock, and an update there waits for it.
    let terraform_on_moto = manager_on(
        common::moto_endpoint(),
        &bucket,
        options(Duration::from_secs(60)),
    )
    .await;
    let id = terraform_on_moto
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    let waiter_on_moto = Arc::new(
        manager_on(
            common::moto_endpoint(),
            &bucket,
            options(Duration::from_secs(60)),
        )
        .await,
    );
    let waiting = spawn_bump(&waiter_on_moto, "moto");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // On LocalStack nobody holds the lock: an update there has nothing to wait for.
    let on_localstack =
        manager_on(common::endpoint(), &bucket, options(Duration::from_secs(3))).await;
    assert!(on_localstack.locker().current().await.unwrap().is_none());
    let outcome = on_localstack.update(bump("localstack")).await;

    terraform_on_moto.unlock(&id).await.unwrap();
    waiting.await.unwrap().unwrap();
    assert!(
        outcome.is_ok(),
        "an update of an unlocked state failed because a state of the same name on another \
         endpoint was locked: {}",
        outcome.unwrap_err()
    );
}

/// From the adversarial review of the update turnstile (63c06f6, issue 16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compare_and_swap_update_is_not_held_up_by_a_hung_request_to_another_endpoint() {
    let bucket = common::bucket(true).await;
    // An S3 endpoint that accepts connections and never answers (a hung proxy, a black-holed
    // route). Its sockets are kept open so that requests hang rather than fail.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_endpoint = format!("http://{}", listener.local_addr().unwrap());
    let black_hole = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let cas_only = RemoteStateOptions {
        update_locking: UpdateLocking::Disabled,
        ..RemoteStateOptions::default()
    };
    // The builder's versioning check would hang too: skip it for the hung endpoint.
    let hung = Arc::new(
        common::settings_builder(&hung_endpoint, &bucket, KEY)
            .with_versioning_required(false)
            .with_options(cas_only.clone())
            .build()
            .await
            .unwrap(),
    );
    let stuck = spawn_bump(&hung, "hung");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let healthy = manager_on(common::endpoint(), &bucket, cas_only).await;
    let outcome =
        tokio::time::timeout(Duration::from_secs(20), healthy.update(bump("healthy"))).await;
    stuck.abort();
    black_hole.abort();
    assert!(
        matches!(outcome, Ok(Ok(1))),
        "an update of a healthy state on LocalStack did not finish in 20 s while a request to \
         another endpoint hung: {outcome:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Cancellation at every await point
// ---------------------------------------------------------------------------------------------

/// A store where every request takes 1 ms (of paused time), so that an update can be
/// cancelled between any two of its requests. It answers no head.
fn slow(store: &MemoryStore) -> Hooked {
    Hooked::over(store.clone())
        .forwarding_identity()
        .without_heads()
        .with_latency(Duration::from_millis(1))
}

#[tokio::test(start_paused = true)]
async fn an_update_cancelled_at_any_moment_leaves_no_lock_and_no_turn_behind() {
    let store = MemoryStore::new(KEY);
    let in_another_process = slow(&store.clone().in_another_process());
    let slow = slow(&store);
    let manager = |timeout| Arc::new(RemoteState::with_options(slow.clone(), options(timeout)));
    let other_process =
        RemoteState::with_options(in_another_process, options(Duration::from_secs(60)));
    let mut landed_by_checkers = 0;
    for cancel_after_ms in 0..120 {
        // Another process holds the lock for 20 ms, so the cancelled update is refused, polls,
        // and leaves a courtesy gap on some rounds.
        let id = other_process
            .lock(&LockInfo::new("OperationTypeApply"))
            .await
            .unwrap();
        let cancelled = manager(Duration::from_secs(60));
        let queued_behind = manager(Duration::from_secs(60));
        let first = tokio::spawn({
            let cancelled = Arc::clone(&cancelled);
            async move {
                tokio::time::timeout(
                    Duration::from_millis(cancel_after_ms),
                    cancelled.update(bump("n")),
                )
                .await
            }
        });
        tokio::task::yield_now().await;
        let second = spawn_bump(&queued_behind, "n");
        tokio::time::sleep(Duration::from_millis(20)).await;
        other_process.unlock(&id).await.unwrap();
        let _ = first.await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(70), second)
            .await
            .unwrap_or_else(|_| {
                panic!("cancelled after {cancel_after_ms} ms: the queued update hung")
            })
            .unwrap();
        assert!(
            next.is_ok(),
            "cancelled after {cancel_after_ms} ms: {next:?}"
        );
        landed_by_checkers += 1;
        // The background release of a cancelled update's lock has run by now.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            other_process.locker().current().await.unwrap().is_none(),
            "cancelled after {cancel_after_ms} ms: a lock was left behind"
        );
    }
    assert!(counter(&store, "n").await >= landed_by_checkers);
}

// ---------------------------------------------------------------------------------------------
// Explicit lockers beside a busy queue
// ---------------------------------------------------------------------------------------------

/// From the adversarial review of the update turnstile (63c06f6, issue 16).
#[tokio::test(start_paused = true)]
async fn an_explicit_lock_with_timeout_is_not_starved_by_queued_updates_in_its_process() {
    let store = MemoryStore::new(KEY);
    let slow = slow(&store);
    let writers: Vec<_> = (0..3)
        .map(|_| common::shared(slow.clone(), options(Duration::from_secs(600))))
        .collect();
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut loops = Vec::new();
    for writer in &writers {
        let (writer, busy) = (Arc::clone(writer), Arc::clone(&busy));
        loops.push(tokio::spawn(async move {
            while busy.load(std::sync::atomic::Ordering::SeqCst) {
                writer.update(bump("n")).await.unwrap();
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    // An operator's tool in the same process takes the lock for a manual change, waiting up to
    // 30 s for it, as Terraform's -lock-timeout does.
    let operator = RemoteState::with_options(slow.clone(), options(Duration::from_secs(600)));
    let taken = operator
        .locker()
        .lock_with_timeout(
            &LockInfo::new("OperationTypeApply"),
            Duration::from_secs(30),
        )
        .await;
    busy.store(false, std::sync::atomic::Ordering::SeqCst);
    if let Ok(id) = &taken {
        operator.unlock(id).await.unwrap();
    }
    for task in loops {
        task.await.unwrap();
    }
    assert!(
        taken.is_ok(),
        "the explicit lock was never free in 30 s while {} updates ran: {}",
        counter(&store, "n").await,
        taken.unwrap_err()
    );
}

// ---------------------------------------------------------------------------------------------
// A process's own abandoned lock is not contention
// ---------------------------------------------------------------------------------------------

/// From the adversarial review of the update turnstile (63c06f6, issue 16).
#[tokio::test(start_paused = true)]
async fn a_lone_writer_leaves_no_courtesy_gaps_after_one_of_its_updates_panicked() {
    let store = MemoryStore::new(KEY);
    let slow = slow(&store);
    let panicking = common::shared(slow.clone(), options(Duration::from_secs(60)));
    let writer = common::shared(slow.clone(), options(Duration::from_secs(60)));
    let crashed = tokio::spawn({
        let panicking = Arc::clone(&panicking);
        async move {
            panicking
                .update(|_: &mut s3state::State| panic!("a bug in the caller's change"))
                .await
        }
    });
    tokio::task::yield_now().await;
    // Queued behind the update that is about to panic.
    let queued = spawn_bump(&writer, "n");
    assert!(crashed.await.unwrap_err().is_panic());
    queued.await.unwrap().unwrap();

    // No other process ever wanted the lock: this process's updates need leave no gaps.
    let started = tokio::time::Instant::now();
    for _ in 0..10 {
        writer.update(bump("n")).await.unwrap();
    }
    // Each update is five requests of 1 ms (a look at the lock queue, lock, read, write,
    // unlock).
    let took = started.elapsed();
    assert!(
        took <= Duration::from_millis(50),
        "ten uncontended updates took {took:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Fair turns across processes: the lock queue (`<key>.tflock.queue`)
//
// Issue 27: a writer that has just released must not take the lock straight back while other
// processes wait, a waiter that died must leave no gap longer than a lease, and a queue that
// cannot be used must leave updates as they were.
// ---------------------------------------------------------------------------------------------

/// A writer in a process of its own over `store`, whose requests take 1 ms of paused time.
fn writer_process(store: &MemoryStore, timeout: Duration) -> Arc<RemoteState<Hooked>> {
    common::shared(
        Hooked::over(store.clone().in_another_process())
            .forwarding_identity()
            .without_heads()
            .with_latency(Duration::from_millis(1)),
        options(timeout),
    )
}

#[tokio::test(start_paused = true)]
async fn writers_in_tight_loops_in_separate_processes_take_turns_through_the_queue() {
    const WRITERS: usize = 3;
    const UPDATES: usize = 8;
    let store = MemoryStore::new(KEY);
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut loops = Vec::new();
    // How many commits had landed when each writer started.
    let mut arrived = Vec::new();
    for name in ["a", "b", "c"] {
        arrived.push(order.lock().unwrap().len());
        let (writer, order) = (
            writer_process(&store, Duration::from_secs(60)),
            Arc::clone(&order),
        );
        loops.push(tokio::spawn(async move {
            for _ in 0..UPDATES {
                writer.update(bump(name)).await.unwrap();
                order.lock().unwrap().push(name);
            }
        }));
        // "a" starts alone and holds the lock when the others arrive: it is never refused,
        // so without the queue it would not know that anyone waits.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for writer in loops {
        writer.await.unwrap();
    }
    // The last waiter's ticket is removed in the background.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let order = order.lock().unwrap().clone();
    eprintln!("order of commits: {order:?}");
    // From a writer's arrival to its first commit, and between two of its commits, the
    // others commit at most twice each: without the queue, the writer that just released
    // takes the lock straight back.
    for (name, arrived) in ["a", "b", "c"].into_iter().zip(arrived) {
        let mut at: Vec<usize> = (0..order.len()).filter(|&i| order[i] == name).collect();
        at.insert(0, arrived.wrapping_sub(1));
        for pair in at.windows(2) {
            let waited_through = pair[1].wrapping_sub(pair[0]) - 1;
            assert!(
                waited_through <= 2 * (WRITERS - 1),
                "{name} waited through {waited_through} commits: {order:?}"
            );
        }
    }
    assert_eq!(order.len(), WRITERS * UPDATES);
    let queue = store.sibling(".tflock.queue").current_body().unwrap();
    let queue: serde_json::Value = serde_json::from_slice(&queue).unwrap();
    assert_eq!(queue["tickets"], serde_json::json!([]), "every waiter left");
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_died_in_the_queue_delays_the_next_writer_by_at_most_a_lease() {
    let store = MemoryStore::new(KEY);
    let queue = store.sibling(".tflock.queue");
    let dead = serde_json::json!({"s3state_lock_queue": 1, "tickets": [
        {"id": "dead", "owner": "a process that died", "renewals": 7}
    ]});
    queue
        .put(
            serde_json::to_vec(&dead).unwrap().into(),
            &s3state::store::Precondition::Create,
            &Default::default(),
        )
        .await
        .unwrap();
    let writer = writer_process(&store, Duration::from_secs(60));
    let lease = writer.options().lock_queue.lease;
    let started = tokio::time::Instant::now();
    writer.update(bump("n")).await.unwrap();
    let took = started.elapsed();
    // It waits behind the ticket until it has watched it unrenewed for a lease, on its own
    // clock, then removes it.
    assert!(
        took >= lease,
        "{took:?}: a ticket is not judged dead before a lease"
    );
    assert!(
        took <= lease + lease / 4,
        "{took:?}: the gap is bounded by the lease"
    );
    let left: serde_json::Value = serde_json::from_slice(&queue.current_body().unwrap()).unwrap();
    assert_eq!(left["tickets"], serde_json::json!([]));
}

#[tokio::test(start_paused = true)]
async fn a_queue_object_that_is_not_a_queue_leaves_updates_as_they_were() {
    let store = MemoryStore::new(KEY);
    let queue = store.sibling(".tflock.queue");
    queue
        .put(
            bytes::Bytes::from_static(b"{\"something\": \"else\"}"),
            &s3state::store::Precondition::Create,
            &Default::default(),
        )
        .await
        .unwrap();
    let terraform = manager(&store.clone().in_another_process(), Duration::from_secs(60));
    let id = terraform
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    let writer = writer_process(&store, Duration::from_secs(60));
    let waiting = spawn_bump(&writer, "n");
    tokio::time::sleep(Duration::from_millis(200)).await;
    terraform.unlock(&id).await.unwrap();
    assert_eq!(
        waiting.await.unwrap().unwrap(),
        1,
        "waited and wrote as before"
    );
    assert_eq!(
        queue.current_body().unwrap().as_ref(),
        b"{\"something\": \"else\"}",
        "a foreign object is never overwritten"
    );
}

#[tokio::test(start_paused = true)]
async fn a_writer_queued_behind_another_process_gives_up_at_its_timeout_naming_the_holder() {
    let store = MemoryStore::new(KEY);
    let terraform = manager(&store.clone().in_another_process(), Duration::from_secs(60));
    let id = terraform
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    // The head of the queue, waiting for Terraform.
    let head = writer_process(&store, Duration::from_secs(600));
    let waiting = spawn_bump(&head, "head");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let behind = writer_process(&store, Duration::from_secs(5));
    let started = tokio::time::Instant::now();
    let error = behind.update(bump("behind")).await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_millis(5100),
        "{waited:?}"
    );
    match &error {
        Error::Locked {
            holder: Some(holder),
            ..
        } => assert_eq!(holder.id, id),
        other => panic!("expected Locked naming Terraform's lock, got {other:?}"),
    }
    terraform.unlock(&id).await.unwrap();
    waiting.await.unwrap().unwrap();
    assert_eq!(counter(&store, "behind").await, 0);
}
