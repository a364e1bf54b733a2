//! Adversarial review of the settle after unanswered writes (`unanswered_write_settle`, the
//! release gate's mark), the shared `take_write_lock`/`release_write_lock` of update and
//! restore, and `Store::secondary_lock`. On the in-memory store with paused time.
//!
//! Each test was written against a problem the review found, or as a probe of what holds;
//! the problems were fixed, and the tests assert the fixed behaviour.

use crate::common;

use async_trait::async_trait;
use bytes::Bytes;
use common::hooked::{Hooked, terraform_lock};
use s3state::store::PutOutcome;
use s3state::{
    Error, LockInfo, Locker, OutputReader, OutputValue, Refresher, RemoteState, RemoteStateOptions,
    SecondaryLock, State, Transient, UpdateLocking, VersionSelector,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

const LINEAGE: &str = "abababab-2222-3333-4444-555555555555";

fn settle() -> Duration {
    RemoteStateOptions::default().unanswered_write_settle
}

fn state_with(n: u64, serial: u64) -> State {
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state.lineage = LINEAGE.into();
    state.serial = serial;
    state.outputs.insert("n".into(), OutputValue::new(&n));
    state
}

fn set(state: &mut State, name: &str, value: u64) {
    state.outputs.insert(name.into(), OutputValue::new(&value));
}

/// A state at serial 1, locked by the caller through `manager`; then an update under that
/// lock whose three writes (all conditional on serial 1's successor, written first) get no
/// answer: `WriteOutcomeUnknown`, and the gate's mark is set.
async fn caller_lock_and_unanswered_update(
    store: &Hooked,
    manager: &RemoteState<Hooked>,
) -> String {
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    store.stall(3);
    let unknown = manager.update(|s| set(s, "b", 1)).await.unwrap_err();
    assert!(
        matches!(unknown, Error::WriteOutcomeUnknown { .. }),
        "{unknown}"
    );
    assert_eq!(store.stalled(), 3);
    id
}

/// Unlocking (`unlock`, already spawned) keeps the lock while the stalled requests can still
/// land: 5 s in, no Terraform can lock, and the stalled requests land under the caller's
/// lock; after the settle, the lock is free.
async fn assert_the_unlock_waits_out_the_settle(
    store: &Hooked,
    unlock: tokio::task::JoinHandle<s3state::Result<()>>,
) {
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        terraform_lock(&store.inner).await.is_none(),
        "the lock was released while a write that got no answer could still land"
    );
    let landed = store.land_stalled().await;
    assert!(
        landed.iter().any(|o| matches!(o, PutOutcome::Written(_))),
        "the stalled request lands, under the caller's lock"
    );
    unlock.await.unwrap().unwrap();
    assert!(
        terraform_lock(&store.inner).await.is_some(),
        "the lock is free after the settle"
    );
}

// ---------------------------------------------------------------------------------------------
// (a) A write landing under the next holder's lock
// ---------------------------------------------------------------------------------------------

/// Found, now fixed (high for the guarantee, medium in effect): `write_snapshot` clears the gate's mark
/// on any `412`, on the grounds that "the state is not what our writes were made on". That
/// holds only when the refused write was conditional on the same snapshot as the unanswered
/// one. `persist_state` writes conditionally on `made_on` (the base its `write_state` was made
/// on), which can be older than the base an update in between wrote on. Interleaving, one
/// manager, under the caller's lock:
///   refresh (serial 1) → write_state(X) [made on serial 1] → update a (serial 2) →
///   update b: its writes, If-Match serial 2, get no answer (mark set) →
///   persist_state_forced(X): If-Match serial 1 → 412 → mark cleared →
///   unlock: releases at once → a Terraform locks and reads serial 2 →
///   update b's request arrives: If-Match serial 2 holds, it lands under Terraform's lock
///   (and Terraform's next blind PUT throws it away).
///
/// From the adversarial review of the settle after unanswered writes.
#[tokio::test(start_paused = true)]
async fn a_refused_persist_on_an_older_base_keeps_the_mark_of_a_write_still_on_the_wire() {
    let store = Hooked::new("a1/terraform.tfstate").forwarding_identity();
    store
        .inner
        .put_unconditional(Bytes::from(state_with(1, 1).to_bytes()));
    let manager = Arc::new(RemoteState::new(store.clone()));
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    manager.refresh_state().await.unwrap();
    let mut x = manager.state().unwrap();
    set(&mut x, "x", 1);
    manager.write_state(x); // made on serial 1
    manager.update(|s| set(s, "a", 1)).await.unwrap(); // serial 2

    store.stall(3);
    let unknown = manager.update(|s| set(s, "b", 1)).await.unwrap_err();
    assert!(
        matches!(unknown, Error::WriteOutcomeUnknown { .. }),
        "{unknown}"
    );
    let refused = manager.persist_state_forced().await.unwrap_err();
    assert!(refused.is_conflict(), "{refused}");

    let unlock = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.unlock(&id).await }
    });
    assert_the_unlock_waits_out_the_settle(&store, unlock).await;
}

/// Control for the 412 findings next to it: without the refused persist, the same unlock
/// waits the settle out and the stalled request lands under the caller's lock, before any
/// Terraform can lock.
///
/// From the adversarial review of the settle after unanswered writes.
#[tokio::test(start_paused = true)]
async fn without_the_refused_persist_the_unlock_waits_the_settle_out() {
    let store = Hooked::new("a0/terraform.tfstate").forwarding_identity();
    store
        .inner
        .put_unconditional(Bytes::from(state_with(1, 1).to_bytes()));
    let manager = Arc::new(RemoteState::new(store.clone()));
    manager.update(|s| set(s, "a", 1)).await.unwrap(); // serial 2
    let id = caller_lock_and_unanswered_update(&store, &manager).await;
    let unlocking = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.unlock(&id).await }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(terraform_lock(&store.inner).await.is_none(), "still locked");
    let landed = store.land_stalled().await;
    assert!(landed.iter().any(|o| matches!(o, PutOutcome::Written(_))));
    unlocking.await.unwrap().unwrap();
    assert!(terraform_lock(&store.inner).await.is_some());
}

/// The same hole through a second manager over the object (same gate): any stale reader in
/// the process whose persist is refused clears the mark of the first manager's write.
///
/// From the adversarial review of the settle after unanswered writes.
#[tokio::test(start_paused = true)]
async fn a_stale_managers_refused_persist_keeps_the_mark_of_another_managers_write() {
    let store = Hooked::new("a2/terraform.tfstate").forwarding_identity();
    store
        .inner
        .put_unconditional(Bytes::from(state_with(1, 1).to_bytes()));
    let stale = RemoteState::new(store.clone());
    stale.refresh_state().await.unwrap(); // serial 1
    let manager = Arc::new(RemoteState::new(store.clone()));
    manager.update(|s| set(s, "a", 1)).await.unwrap(); // serial 2
    let id = caller_lock_and_unanswered_update(&store, &manager).await;

    let mut mine = stale.state().unwrap();
    set(&mut mine, "stale", 1);
    stale.write_state(mine);
    let refused = s3state::Persister::persist_state(&stale).await.unwrap_err();
    assert!(refused.is_conflict(), "{refused}");

    let unlock = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.unlock(&id).await }
    });
    assert_the_unlock_waits_out_the_settle(&store, unlock).await;
}

/// Found, now fixed (low): the mark is per object (shared by every manager in the process), but the
/// wait is computed with the unlocking manager's own `unanswered_write_settle`. A manager
/// built with a short settle (tests, a tool that opted out) releases a lock whose unanswered
/// write another manager made with the default 10 s.
///
/// From the adversarial review of the settle after unanswered writes.
#[tokio::test(start_paused = true)]
async fn an_unlock_through_a_manager_with_a_short_settle_keeps_the_writers_settle() {
    let store = Hooked::new("a3/terraform.tfstate").forwarding_identity();
    store
        .inner
        .put_unconditional(Bytes::from(state_with(1, 1).to_bytes()));
    let manager = RemoteState::new(store.clone());
    let id = caller_lock_and_unanswered_update(&store, &manager).await;
    let impatient = Arc::new(RemoteState::with_options(
        store.clone(),
        RemoteStateOptions {
            unanswered_write_settle: Duration::ZERO,
            ..RemoteStateOptions::default()
        },
    ));
    let unlock = tokio::spawn({
        let impatient = Arc::clone(&impatient);
        async move { impatient.unlock(&id).await }
    });
    assert_the_unlock_waits_out_the_settle(&store, unlock).await;
}

/// Holds: a later write of the same update that lands on the same base ends the doubt (the
/// stalled request can only meet a 412), so the lock goes at once.
///
/// From the adversarial review of the settle after unanswered writes.
#[tokio::test(start_paused = true)]
async fn a_later_write_on_the_same_base_ends_the_doubt_and_the_stalled_request_is_refused() {
    let store = Hooked::new("a4/terraform.tfstate").forwarding_identity();
    store
        .inner
        .put_unconditional(Bytes::from(state_with(1, 1).to_bytes()));
    let manager = RemoteState::new(store.clone());
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    store.stall(1);
    manager.update(|s| set(s, "b", 1)).await.unwrap();
    let started = Instant::now();
    manager.unlock(&id).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(terraform_lock(&store.inner).await.is_some());
    let landed = store.land_stalled().await;
    assert!(
        landed
            .iter()
            .all(|o| matches!(o, PutOutcome::PreconditionFailed)),
        "the stalled first attempt is refused"
    );
}

// ---------------------------------------------------------------------------------------------
// (b) Waits: cancellation and what the settle holds
// ---------------------------------------------------------------------------------------------

/// Found, now fixed (medium): `RemoteState::unlock` now sleeps up to 10 s before it deletes the lock,
/// with nothing armed to finish the job if it is dropped. A caller that bounds its unlock
/// (`timeout(5 s, manager.unlock(id))`, a shutdown deadline) or a CLI whose outer Ctrl-C
/// `select!` drops an inner `under_lock`'s release (`mv` across two states nests two
/// `under_lock`s, both of which see the same SIGINT) leaves the lock in the store for good:
/// an orphan that needs force-unlock. `release_write_lock` keeps its `ReleaseOnDrop` armed for
/// exactly this; the caller's unlock has no such guard.
///
/// From the adversarial review of the settle after unanswered writes.
#[tokio::test(start_paused = true)]
async fn an_unlock_cancelled_during_the_settle_still_releases_the_lock_after_it() {
    let store = Hooked::new("b1/terraform.tfstate").forwarding_identity();
    store
        .inner
        .put_unconditional(Bytes::from(state_with(1, 1).to_bytes()));
    let manager = RemoteState::new(store.clone());
    let id = caller_lock_and_unanswered_update(&store, &manager).await;
    let cut = tokio::time::timeout(Duration::from_secs(5), manager.unlock(&id)).await;
    assert!(cut.is_err(), "the unlock was cut off during the settle");
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(
        !store.lock_held(),
        "two minutes later the lock is still in the store: nobody will release it"
    );
}

/// Found, now fixed (low): the caller's unlock holds this manager's I/O lock (and the object's release
/// gate, exclusively) for the whole settle, so a plain read on the manager
/// (`root_output_values`, `refresh_state`) stalls for up to 10 s, and so does every
/// lock-mode `update` over the object in the process (they take the gate first, even those
/// that go on to take their own lock).
///
/// From the adversarial review of the settle after unanswered writes.
#[tokio::test(start_paused = true)]
async fn a_read_does_not_wait_for_another_tasks_unlock_to_sleep_out_the_settle() {
    let store = Hooked::new("b2/terraform.tfstate").forwarding_identity();
    store
        .inner
        .put_unconditional(Bytes::from(state_with(1, 1).to_bytes()));
    let manager = Arc::new(RemoteState::new(store.clone()));
    let id = caller_lock_and_unanswered_update(&store, &manager).await;
    let unlocking = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.unlock(&id).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = Instant::now();
    manager.root_output_values().await.unwrap();
    let waited = started.elapsed();
    unlocking.await.unwrap().unwrap();
    assert!(
        waited < Duration::from_secs(1),
        "a read of the state waited {waited:?} for another task's unlock"
    );
}

/// Holds: a restore cancelled with its write on the wire drops that write's `OnTheWire`
/// before its `ReleaseOnDrop`, so the background release waits the settle out.
///
/// From the adversarial review of the settle after unanswered writes.
#[tokio::test(start_paused = true)]
async fn a_cancelled_restore_keeps_its_lock_until_its_cut_write_can_no_longer_land() {
    let store = Hooked::new("b3/terraform.tfstate").forwarding_identity();
    store
        .inner
        .put_unconditional(Bytes::from(state_with(1, 1).to_bytes()));
    store
        .inner
        .put_unconditional(Bytes::from(state_with(2, 2).to_bytes()));
    let manager = RemoteState::new(store.clone());
    let previous = manager
        .resolve_version(&VersionSelector::Back(1))
        .await
        .unwrap();
    store.every_write(Some(true));
    let cut = tokio::time::timeout(Duration::from_secs(1), manager.restore(&previous, false)).await;
    assert!(cut.is_err(), "the restore was cancelled");
    assert_eq!(store.stalled(), 1, "its write was sent");
    tokio::time::sleep(settle() / 2).await;
    assert!(store.lock_held(), "released while the cut write could land");
    tokio::time::sleep(settle()).await;
    assert!(!store.lock_held(), "released after the settle");
}

/// Holds: an update of its own whose writes got no answer releases its lock only after the
/// settle, and a release cut off during that settle still happens in the background.
///
/// From the adversarial review of the settle after unanswered writes.
#[tokio::test(start_paused = true)]
async fn an_own_locks_release_cut_during_the_settle_still_happens_after_it() {
    let store = Hooked::new("b4/terraform.tfstate").forwarding_identity();
    let manager = RemoteState::new(store.clone());
    store.stall(3);
    let cut =
        tokio::time::timeout(Duration::from_secs(3), manager.update(|s| set(s, "b", 1))).await;
    assert!(cut.is_err(), "cut off during the settle");
    assert!(store.lock_held());
    tokio::time::sleep(settle()).await;
    assert!(
        !store.lock_held(),
        "released in the background after the settle"
    );
}

// ---------------------------------------------------------------------------------------------
// (c) take_write_lock / release_write_lock
// ---------------------------------------------------------------------------------------------

/// Holds: restore under the lock its caller (the CLI's `under_lock`) took through the same
/// manager runs under it at once, without waiting for its own; with a Terraform holding the
/// lock it fails with `Locked` naming that Terraform.
///
/// From the adversarial review of the settle after unanswered writes.
#[tokio::test(start_paused = true)]
async fn restore_runs_under_the_callers_lock_and_names_a_terraform_holder() {
    let store = Hooked::new("c1/terraform.tfstate").forwarding_identity();
    store
        .inner
        .put_unconditional(Bytes::from(state_with(1, 1).to_bytes()));
    store
        .inner
        .put_unconditional(Bytes::from(state_with(2, 2).to_bytes()));
    let manager = RemoteState::new(store.clone());
    let previous = manager
        .resolve_version(&VersionSelector::Back(1))
        .await
        .unwrap();
    let id = manager
        .locker()
        .lock_with_timeout(&LockInfo::new("state-restore"), Duration::from_secs(1))
        .await
        .unwrap();
    let started = Instant::now();
    let restored = manager.restore(&previous, false).await.unwrap();
    assert!(restored.written);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "it waited for its own caller's lock"
    );
    manager.unlock(&id).await.unwrap();

    let terraform = terraform_lock(&store.inner).await.unwrap();
    let other = RemoteState::with_options(
        store.clone(),
        RemoteStateOptions {
            update_locking: UpdateLocking::Lock {
                timeout: Duration::from_secs(2),
            },
            ..RemoteStateOptions::default()
        },
    );
    match other.restore(&previous, true).await {
        Err(Error::Locked {
            holder: Some(holder),
            ..
        }) => assert_eq!(holder.id, terraform.id),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Store::secondary_lock
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Recording {
    name: &'static str,
    taken: Mutex<Vec<String>>,
}

#[async_trait]
impl SecondaryLock for Recording {
    fn location(&self) -> String {
        self.name.into()
    }
    async fn lock(&self, info: &LockInfo) -> s3state::Result<()> {
        self.taken.lock().unwrap().push(info.id.clone());
        Ok(())
    }
    async fn unlock(&self, id: &str) -> s3state::Result<()> {
        self.taken.lock().unwrap().retain(|taken| taken != id);
        Ok(())
    }
    async fn force_unlock(&self, id: &str) -> s3state::Result<()> {
        self.unlock(id).await
    }
    async fn current(&self) -> s3state::Result<Option<LockInfo>> {
        Ok(None)
    }
}

/// Found, now fixed (low): `with_secondary_lock` replaces the store's own second lock instead of adding
/// to it. On an S3 state with `dynamodb_table` (whose store now brings the table's lock item),
/// a caller adding a lock of its own silently stops taking Terraform's DynamoDB item, the very
/// regression 463451c fixed for `build_store()`; the doc says "takes both".
///
/// From the adversarial review of the settle after unanswered writes.
#[tokio::test(start_paused = true)]
async fn with_secondary_lock_keeps_the_stores_own_lock_item() {
    let table = Arc::new(Recording {
        name: "table",
        ..Recording::default()
    });
    let extra = Arc::new(Recording {
        name: "extra",
        ..Recording::default()
    });
    let store = Hooked::new("d1/terraform.tfstate")
        .forwarding_identity()
        .with_secondary(table.clone());
    let manager = RemoteState::new(store).with_secondary_lock(extra.clone());
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    assert_eq!(*extra.taken.lock().unwrap(), vec![id.clone()]);
    assert_eq!(
        *table.taken.lock().unwrap(),
        vec![id],
        "the store's lock item (Terraform's DynamoDB lock) was not taken"
    );
}
