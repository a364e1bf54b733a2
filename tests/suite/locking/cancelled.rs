//! A lock acquisition whose caller gives up while its request is on the wire.
//!
//! From issue 23, item 8: `StoreLocker::acquire` awaited the lock PUT with no guard, and
//! `update` armed its release only after the lock was taken, so `timeout(lock())` or
//! `timeout(update())` firing after the store applied the PUT, but before its answer came
//! back, left a `.tflock` that nobody held. The earlier cancellation tests could not see it:
//! their store waited *before* applying a request, never "applied, answer not yet back".

use crate::common;
use common::hooked::{Hooked, OnPut, Put};
use s3state::store::Store;
use s3state::{LockInfo, Locker, OutputValue, RemoteState};
use std::time::Duration;

const KEY: &str = "app/terraform.tfstate";

/// The next lock PUT is applied, and its answer never comes back.
fn applied_then_hangs() -> OnPut {
    OnPut::Answer(Box::new(|store: Hooked, put: Put| {
        Box::pin(async move {
            store
                .inner
                .put(put.body, &put.precondition, &put.metadata)
                .await?;
            std::future::pending().await
        })
    }))
}

/// A store whose next lock PUT is applied and never answered, and a manager of it.
fn lock_put_applied_then_hangs() -> (Hooked, RemoteState<Hooked>) {
    let store = Hooked::new(KEY);
    store.on_put(&store.lock_key(), applied_then_hangs());
    let manager = RemoteState::new(store.clone());
    (store, manager)
}

#[tokio::test(start_paused = true)]
async fn a_lock_given_up_after_its_put_was_applied_is_released_in_the_background() {
    let (store, manager) = lock_put_applied_then_hangs();
    let gave_up = tokio::time::timeout(
        Duration::from_secs(5),
        manager.lock(&LockInfo::new("apply")),
    )
    .await;
    assert!(gave_up.is_err(), "the caller gave up: {gave_up:?}");
    assert!(
        store.lock_held(),
        "the PUT was applied before the caller gave up"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !store.lock_held(),
        "the lock nobody holds is released in the background"
    );
    // And the state can be locked again at once.
    let id = manager.lock(&LockInfo::new("next")).await.unwrap();
    manager.unlock(&id).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_update_given_up_while_taking_its_lock_leaves_no_lock_behind() {
    let (store, manager) = lock_put_applied_then_hangs();
    let gave_up = tokio::time::timeout(
        Duration::from_secs(5),
        manager.update(|state| {
            state
                .outputs
                .insert("never".into(), OutputValue::new(&"written"));
        }),
    )
    .await;
    assert!(gave_up.is_err(), "the caller gave up: {gave_up:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!store.lock_held(), "no lock is left behind");
    assert!(store.stored().is_none(), "nothing was written");
}
