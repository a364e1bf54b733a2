//! Regression tests for the lost-write paths of issue 11, on the in-memory store: each one
//! failed on the code before the fix. A scripted wrapper around the store pauses a write or
//! makes another writer act at the exact moment that used to lose data.

use crate::common;

use common::hooked::{Hooked, OnPut};
use s3state::store::Store;
use s3state::store::memory::MemoryStore;
use s3state::{
    Error, LockInfo, Locker, OutputValue, Persister, Refresher, RemoteState, RemoteStateOptions,
    State, Transient, UpdateLocking,
};
use std::sync::{Arc, Mutex};

fn with_output(state: Option<State>, name: &str, value: u64) -> State {
    let mut state = state.unwrap_or_else(|| State::new(semver::Version::new(1, 15, 5)));
    state.outputs.insert(name.into(), OutputValue::new(&value));
    state
}

fn output(state: &State, name: &str) -> Option<u64> {
    state.outputs.get(name).and_then(|o| o.to_value().as_u64())
}

#[tokio::test]
async fn a_write_state_made_while_another_task_persists_is_persisted_by_the_next_persist() {
    let store = Hooked::new("shared.tfstate").forwarding_identity();
    let manager = Arc::new(RemoteState::new(store.clone()));
    manager.write_state(with_output(None, "a", 1));
    manager.persist_state().await.unwrap();

    // Task A persists a change; its PUT is held in flight.
    manager.write_state(with_output(manager.state(), "a", 2));
    let (entered, release) = store.pause_next_write();
    let task_a = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.persist_state().await }
    });
    entered.notified().await;

    // Task B writes while A's PUT is in flight, then A's PUT returns.
    manager.write_state(with_output(manager.state(), "b", 7));
    release.notify_one();
    task_a.await.unwrap().unwrap();

    // B's persist must send B's state, not find "nothing changed".
    manager.persist_state().await.unwrap();
    let stored = store.stored().unwrap();
    assert_eq!(
        output(&stored, "b"),
        Some(7),
        "task B's write_state was dropped"
    );
    assert_eq!(output(&stored, "a"), Some(2));
    assert_eq!(stored.serial, 3);
}

#[tokio::test]
async fn an_update_never_discards_a_write_state_another_task_made_during_it() {
    let store = Hooked::new("shared-update.tfstate").forwarding_identity();
    let manager = Arc::new(RemoteState::new(store.clone()));
    manager.update(common::set_output("a", 1)).await.unwrap();

    let (entered, release) = store.pause_next_write();
    let updating = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.update(common::set_output("u", 5)).await }
    });
    entered.notified().await;
    manager.write_state(with_output(manager.state(), "b", 9));
    release.notify_one();
    updating.await.unwrap().unwrap();

    assert_eq!(
        manager.state().and_then(|s| output(&s, "b")),
        Some(9),
        "the update replaced another task's unsaved write_state"
    );
    // The unsaved state was built before the update landed: persisting it now is refused as
    // a rollback (honestly), not silently applied or dropped.
    let refused = manager.persist_state().await.unwrap_err();
    assert!(
        matches!(refused, Error::SerialRegression { .. }),
        "{refused}"
    );
    assert_eq!(output(&store.stored().unwrap(), "u"), Some(5));
}

#[tokio::test]
async fn a_refresh_does_not_discard_a_write_state_no_persist_has_tried() {
    let store = MemoryStore::new("refresh.tfstate");
    let manager = RemoteState::new(store.clone());
    manager.write_state(with_output(None, "a", 1));
    manager.persist_state().await.unwrap();
    manager.write_state(with_output(manager.state(), "b", 2));
    manager.refresh_state().await.unwrap();
    manager.persist_state().await.unwrap();
    let stored = State::from_slice(&store.current_body().unwrap()).unwrap();
    assert_eq!(output(&stored, "b"), Some(2));
}

#[tokio::test]
async fn a_persist_whose_write_state_was_discarded_by_another_tasks_refresh_says_so() {
    let store = Hooked::new("discarded.tfstate").forwarding_identity();
    let manager = RemoteState::new(store.clone());
    manager.write_state(with_output(None, "a", 1));
    manager.persist_state().await.unwrap();
    // Another manager moves the state on, so this manager's next persist conflicts.
    let other = RemoteState::new(store.clone());
    other.update(common::set_output("other", 1)).await.unwrap();
    manager.write_state(with_output(manager.state(), "mine", 1));
    assert!(manager.persist_state().await.unwrap_err().is_conflict());
    // A second task had nothing to add but calls persist after the first task's refresh.
    manager.refresh_state().await.unwrap();
    let answer = manager.persist_state().await;
    assert!(
        matches!(answer, Err(Error::WriteDiscarded { .. })),
        "a persist answered {answer:?} for a write_state that was thrown away"
    );
    assert_eq!(output(&store.stored().unwrap(), "mine"), None);
}

#[tokio::test]
async fn an_update_whose_answer_was_lost_and_that_terraform_wrote_on_top_of_is_applied_once() {
    let store = Hooked::new("lost-answer.tfstate").forwarding_identity();
    let manager = RemoteState::new(store.clone());
    manager
        .update(common::set_output("count", 0))
        .await
        .unwrap();
    store.next_write(OnPut::lose_answer_then_terraform_writes());
    let mut rounds = 0;
    manager
        .update(|state| {
            rounds += 1;
            let count = output(state, "count").unwrap();
            state
                .outputs
                .insert("count".into(), OutputValue::new(&(count + 1)));
        })
        .await
        .unwrap();
    let stored = store.stored().unwrap();
    assert_eq!(
        output(&stored, "count"),
        Some(1),
        "the change was applied twice"
    );
    assert_eq!(rounds, 1);
    assert!(stored.outputs.contains_key("terraform"));
}

#[tokio::test]
async fn a_persist_whose_answer_was_lost_but_landed_succeeds() {
    let store = Hooked::new("landed.tfstate").forwarding_identity();
    let manager = RemoteState::new(store.clone());
    manager.write_state(with_output(None, "a", 1));
    store.next_write(OnPut::apply_then_fail());
    manager.persist_state().await.unwrap();
    assert_eq!(output(&store.stored().unwrap(), "a"), Some(1));
    assert_eq!(store.inner.version_count(), 1);
}

#[tokio::test]
async fn a_write_that_failed_and_did_not_land_says_it_was_not_applied() {
    let store = Hooked::new("not-landed.tfstate").forwarding_identity();
    let manager = RemoteState::new(store.clone());
    manager.write_state(with_output(None, "a", 1));
    store.next_write(OnPut::Fail);
    let error = manager.persist_state().await.unwrap_err();
    assert!(matches!(error, Error::WriteFailed { .. }), "{error}");
    assert!(
        error.to_string().contains("not among the state's versions"),
        "{error}"
    );
    assert_eq!(store.stored(), None);
}

#[tokio::test]
async fn an_update_whose_write_failed_without_landing_is_retried_and_applied_once() {
    let store = Hooked::new("retried.tfstate").forwarding_identity();
    let manager = RemoteState::new(store.clone());
    store.next_write(OnPut::Fail);
    let mut rounds = 0;
    manager
        .update(|state| {
            rounds += 1;
            state.outputs.insert("x".into(), OutputValue::new(&1));
        })
        .await
        .unwrap();
    assert_eq!(rounds, 2);
    assert_eq!(output(&store.stored().unwrap(), "x"), Some(1));
    assert_eq!(store.inner.version_count(), 1);
}

#[tokio::test]
async fn pushing_a_different_state_with_the_same_serial_is_refused_and_writes_nothing() {
    let store = MemoryStore::new("push.tfstate");
    let manager = RemoteState::new(store.clone());
    manager.update(common::set_output("a", 1)).await.unwrap();
    let stored = manager.state().unwrap();
    let mut diverged = stored.clone();
    diverged
        .outputs
        .insert("a".into(), OutputValue::new(&"someone else's"));
    let versions = store.version_count();

    let refused = manager
        .push_state(diverged.clone(), false)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::SerialCollision { serial: 1, .. }),
        "{refused}"
    );
    assert_eq!(store.version_count(), versions);

    // With force it is written, numbered after the stored serial.
    let meta = manager.push_state(diverged, true).await.unwrap();
    assert_eq!(meta.serial, 2);
    // The same content again is not a collision: nothing to write.
    let same = manager.state().unwrap();
    manager.push_state(same, false).await.unwrap();
    assert_eq!(store.version_count(), versions + 1);
}

#[tokio::test]
async fn a_lock_with_an_empty_id_is_refused_and_nothing_is_written() {
    let store = MemoryStore::new("lock-empty.tfstate");
    let manager = RemoteState::new(store.clone());
    common::assert_empty_lock_id_refused(&manager).await;
    assert_eq!(store.sibling(".tflock").current_body(), None);
}

#[tokio::test]
async fn two_callers_reusing_one_lock_info_do_not_both_hold_the_lock() {
    let store = MemoryStore::new("lock-reuse.tfstate");
    let info = LockInfo::new("OperationTypeApply");
    let first = RemoteState::new(store.clone());
    let second = RemoteState::new(store.clone());
    first.lock(&info).await.unwrap();
    let refused = second.lock(&info).await.unwrap_err();
    assert!(matches!(refused, Error::Locked { .. }), "{refused}");
    // The same manager asked twice with the same info: still one holder.
    let again = first.lock(&info).await.unwrap_err();
    assert!(matches!(again, Error::Locked { .. }), "{again}");
    first.unlock(&info.id).await.unwrap();
    assert_eq!(store.sibling(".tflock").current_body(), None);
}

#[tokio::test]
async fn update_takes_the_lock_by_default_and_waits_for_its_holder() {
    let store = MemoryStore::new("update-lock.tfstate");
    let holder = RemoteState::new(store.clone());
    let info = LockInfo::new("OperationTypeApply");
    holder.lock(&info).await.unwrap();

    let updater = Arc::new(RemoteState::with_options(
        store.clone(),
        RemoteStateOptions {
            update_locking: UpdateLocking::Lock {
                timeout: std::time::Duration::from_millis(200),
            },
            ..RemoteStateOptions::default()
        },
    ));
    let refused = updater
        .update(common::set_output("x", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Locked { holder: Some(h), .. } if h.id == info.id),
        "{refused}"
    );
    assert_eq!(
        store.current_body(),
        None,
        "an update wrote under someone else's lock"
    );

    // Released meanwhile: the update waits for it and goes ahead.
    let waiting = tokio::spawn({
        let updater = Arc::clone(&updater);
        async move { updater.update(common::set_output("x", 1)).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    holder.unlock(&info.id).await.unwrap();
    waiting.await.unwrap().unwrap();
    assert!(store.current_body().is_some());
    assert_eq!(store.sibling(".tflock").current_body(), None);

    // Opting out writes without looking at the lock.
    holder
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    let unlocked = RemoteState::with_options(
        store.clone(),
        RemoteStateOptions {
            update_locking: UpdateLocking::Disabled,
            ..RemoteStateOptions::default()
        },
    );
    unlocked.update(common::set_output("y", 2)).await.unwrap();
}

#[tokio::test]
async fn unlocking_waits_for_an_update_that_another_task_runs_under_that_lock() {
    // Task A holds the lock through a shared manager; task B's update runs under it rather
    // than waiting for it. If A's unlock went through while B's write was in flight, a
    // Terraform could lock in that gap and later overwrite B's write blindly.
    let store = Hooked::new("unlock-mid-update.tfstate").forwarding_identity();
    let manager = Arc::new(RemoteState::new(store.clone()));
    let info = LockInfo::new("OperationTypeApply");
    let id = manager.lock(&info).await.unwrap();

    let (entered, release) = store.pause_next_write();
    let update = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.update(common::set_output("b", 1)).await }
    });
    entered.notified().await;

    let unlock = tokio::spawn({
        let manager = Arc::clone(&manager);
        let id = id.clone();
        async move { manager.unlock(&id).await }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        !unlock.is_finished(),
        "the lock was released while an update relying on it was writing"
    );
    let terraform = RemoteState::new(store.clone());
    let refused = terraform
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Locked { .. }), "{refused}");

    release.notify_one();
    update.await.unwrap().unwrap();
    unlock.await.unwrap().unwrap();
    assert_eq!(output(&store.stored().unwrap(), "b"), Some(1));
    assert_eq!(store.inner.sibling(".tflock").current_body(), None);
}

#[tokio::test(start_paused = true)]
async fn a_lock_is_kept_until_a_write_that_got_no_answer_can_no_longer_land() {
    // No state yet: a create that arrives after the lock is released would be adopted by a
    // Terraform that locked and read "no state" meanwhile, which would then drop its apply.
    let store = Hooked::new("late-create.tfstate").forwarding_identity();
    let manager = RemoteState::new(store.clone());
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    // The next write fails at once without an answer and lands 5 s later (a request stuck in
    // the network); whether the lock was still there then is recorded.
    let lock_held_when_it_landed = Arc::new(Mutex::new(None));
    store.next_write(OnPut::Stall);
    tokio::spawn({
        let (store, held) = (store.clone(), Arc::clone(&lock_held_when_it_landed));
        async move {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            *held.lock().unwrap() = Some(store.lock_held());
            store.land_stalled().await
        }
    });
    manager.write_state(with_output(None, "late", 1));
    let failed = manager.persist_state().await.unwrap_err();
    assert!(
        matches!(
            failed,
            Error::WriteOutcomeUnknown { .. } | Error::WriteFailed { .. }
        ),
        "{failed}"
    );

    manager.unlock(&id).await.unwrap();
    assert_eq!(
        *lock_held_when_it_landed.lock().unwrap(),
        Some(true),
        "the late write landed after the lock was released (or never landed)"
    );
    assert_eq!(store.inner.sibling(".tflock").current_body(), None);
    assert_eq!(output(&store.stored().unwrap(), "late"), Some(1));
}
