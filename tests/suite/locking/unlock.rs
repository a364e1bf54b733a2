//! Adversarial review of commit 6f32e6d ("unlock through the manager waits for its writes in
//! flight"): the manager's `unlock` now takes the I/O mutex, and an update that runs under the
//! caller's lock holds that mutex from its look at the lock through its write. After this
//! review, the wait is object-wide: the release gate (`src/remote/release_gate.rs`) is shared
//! by every manager over the object in the process.
//!
//! In-memory store only. A scripted wrapper pauses a state write (or the lock object's first
//! create) at the exact moment that matters. A "Terraform peer" locks through its own manager,
//! reads the state, and writes blindly (an unconditional PUT), as Terraform's S3 backend does.
//!
//! Each found problem was fixed and its test kept; the others are probes that document what
//! holds. Not tested here, because it is beyond any process's control (Terraform has the same
//! gap): a request already on the wire when its update is cancelled can still land after the
//! unlock.

use crate::common;

use bytes::Bytes;
use common::hooked::Hooked;
use s3state::store::memory::MemoryStore;
use s3state::{LockInfo, Locker, OutputValue, RemoteState, RemoteStateOptions, State};
use std::sync::Arc;
use std::time::Duration;

fn seeded(key: &str) -> Hooked {
    let store = Hooked::new(key).forwarding_identity();
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state.lineage = "review-lineage".into();
    state.serial = 1;
    store.inner.put_unconditional(Bytes::from(state.to_bytes()));
    store
}

fn output(state: &State, name: &str) -> Option<u64> {
    state.outputs.get(name).and_then(|o| o.to_value().as_u64())
}

/// `manager` takes the apply lock, then starts an update with `change` and waits until its
/// write is paused: the lock's ID, the update's task, and the notice that releases the write.
async fn lock_then_pause_an_update(
    store: &Hooked,
    manager: &Arc<RemoteState<Hooked>>,
    change: impl FnMut(&mut State) + Send + 'static,
) -> (
    String,
    tokio::task::JoinHandle<s3state::Result<()>>,
    Arc<tokio::sync::Notify>,
) {
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    let (entered, release) = store.pause_next_write();
    let update = tokio::spawn({
        let manager = Arc::clone(manager);
        async move { manager.update(change).await }
    });
    entered.notified().await;
    (id, update, release)
}

fn set_b(state: &mut State) {
    state.outputs.insert("b".into(), OutputValue::new(&1u64));
}

/// Terraform's S3 backend: takes the `.tflock` lock, reads the state, and later writes its own
/// result with a plain PUT built on what it read.
struct TerraformPeer {
    manager: RemoteState<MemoryStore>,
    id: String,
    read: State,
}

impl TerraformPeer {
    async fn lock_and_read(store: &Hooked) -> s3state::Result<Self> {
        let manager = RemoteState::new(store.inner.clone());
        let id = manager.lock(&LockInfo::new("OperationTypeApply")).await?;
        let read = store.stored().expect("seeded");
        Ok(TerraformPeer { manager, id, read })
    }

    async fn persist_blindly_and_unlock(self, store: &Hooked) {
        let mut state = self.read;
        state.serial += 1;
        state
            .outputs
            .insert("terraform".into(), OutputValue::new(&"applied"));
        store.inner.put_unconditional(Bytes::from(state.to_bytes()));
        self.manager.unlock(&self.id).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Findings
// ---------------------------------------------------------------------------------------------

/// The I/O mutex is per manager, but the lock is per object: `unlock` on any manager over the
/// same state releases a lock by its ID (a locker that did not take it deletes it after
/// checking the ID). `S3Backend::manager(ws)` builds a new manager on every call, so a
/// program that takes the lock through one and releases it through another (or hands the ID
/// to another component) gets the pre-fix window back, although both managers share the
/// process-wide turnstile for this object.
///
/// From the adversarial review of 6f32e6d (unlock waits for its writes in flight).
#[tokio::test]
async fn unlocking_through_a_second_manager_over_the_same_object_does_not_wait_for_the_write() {
    let store = seeded("two-managers.tfstate");
    let first = Arc::new(RemoteState::new(store.clone()));
    let second = RemoteState::new(store.clone());
    let (id, update, release) = lock_then_pause_an_update(&store, &first, set_b).await;

    // The lock's ID is all `unlock` needs; the second manager's unlock does not wait.
    let unlocked = tokio::time::timeout(Duration::from_millis(300), second.unlock(&id)).await;
    let peer = if unlocked.is_ok() {
        // Released mid-write: Terraform locks and reads the state the update is replacing.
        Some(TerraformPeer::lock_and_read(&store).await.unwrap())
    } else {
        None
    };
    release.notify_one();
    let applied = update.await.unwrap();
    assert!(applied.is_ok(), "{applied:?}");
    if let Some(peer) = peer {
        peer.persist_blindly_and_unlock(&store).await;
    }
    assert_eq!(
        output(&store.stored().unwrap(), "b"),
        Some(1),
        "update() returned Ok, but Terraform's blind write replaced its change"
    );
    assert!(
        unlocked.is_err(),
        "the lock was released while an update under it was writing"
    );
}

/// An update that waits at the store's lock held by this very manager's explicit lock (it
/// looked at the lock before the caller took it) holds no I/O mutex while it waits, so the
/// unlock does not deadlock with it, and the update then goes ahead under its own lock.
///
/// From the adversarial review of 6f32e6d (unlock waits for its writes in flight).
#[tokio::test]
async fn an_update_waiting_for_this_managers_own_explicit_lock_does_not_block_its_unlock() {
    let store = seeded("waits-for-own-lock.tfstate");
    let manager = Arc::new(RemoteState::with_options(
        store.clone(),
        RemoteStateOptions {
            update_locking: s3state::UpdateLocking::Lock {
                timeout: Duration::from_secs(5),
            },
            ..RemoteStateOptions::default()
        },
    ));
    // Hold the update's first attempt at the lock object, so the caller locks in between.
    let (entered, release) = store.pause_next_lock_write();
    let update = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.update(set_b).await }
    });
    entered.notified().await;
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    release.notify_one();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(
        !update.is_finished(),
        "the update waits for the caller's lock"
    );

    tokio::time::timeout(Duration::from_secs(1), manager.unlock(&id))
        .await
        .expect("the unlock deadlocked with an update waiting for that lock")
        .unwrap();
    update.await.unwrap().unwrap();
    assert_eq!(output(&store.stored().unwrap(), "b"), Some(1));
    assert_eq!(store.lock_body(), None);
}

/// A panic in `change` under the caller's lock lets go of the I/O mutex (tokio's mutex does
/// not poison), so the caller's unlock still goes through and nothing was written.
///
/// From the adversarial review of 6f32e6d (unlock waits for its writes in flight).
#[tokio::test]
async fn a_panicking_change_under_the_callers_lock_does_not_block_the_unlock() {
    let store = seeded("panicking-change.tfstate");
    let manager = Arc::new(RemoteState::new(store.clone()));
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    let before = store.inner.current_body();
    let update = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move {
            manager
                .update(|_state: &mut State| -> u8 { panic!("change panicked") })
                .await
        }
    });
    assert!(update.await.unwrap_err().is_panic());
    tokio::time::timeout(Duration::from_secs(1), manager.unlock(&id))
        .await
        .expect("the unlock hung after a panicking update")
        .unwrap();
    assert_eq!(store.inner.current_body(), before);
    assert_eq!(store.lock_body(), None);
    // The manager is still usable.
    manager.update(set_b).await.unwrap();
    assert_eq!(output(&store.stored().unwrap(), "b"), Some(1));
}

/// Updates queued for the I/O mutex before the unlock run under the caller's lock; one that
/// comes after the unlock finds the lock gone and takes its own. None of them deadlocks with
/// the unlock, and nothing is left locked.
///
/// From the adversarial review of 6f32e6d (unlock waits for its writes in flight).
#[tokio::test]
async fn updates_queued_around_an_unlock_all_finish_and_leave_no_lock() {
    let store = seeded("queued-around-unlock.tfstate");
    let manager = Arc::new(RemoteState::new(store.clone()));
    let bump = |state: &mut State| {
        let next = output(state, "n").unwrap_or(0) + 1;
        state.outputs.insert("n".into(), OutputValue::new(&next));
    };
    let (id, first, release) = lock_then_pause_an_update(&store, &manager, bump).await;
    let second = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.update(bump).await }
    });
    tokio::task::yield_now().await;
    let unlock = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.unlock(&id).await }
    });
    tokio::task::yield_now().await;
    let third = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.update(bump).await }
    });
    release.notify_one();
    let all = async {
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        unlock.await.unwrap().unwrap();
        third.await.unwrap().unwrap();
    };
    tokio::time::timeout(Duration::from_secs(5), all)
        .await
        .expect("updates queued around an unlock deadlocked");
    assert_eq!(output(&store.stored().unwrap(), "n"), Some(3));
    assert_eq!(store.lock_body(), None);
}

/// Found in the final review: an unlock cancelled while it waited for an update running under
/// the lock released the lock at once, in the background, with the update's write still on its
/// way. The background release now waits for such updates too.
///
/// From the adversarial review of 6f32e6d (unlock waits for its writes in flight).
#[tokio::test(start_paused = true)]
async fn a_cancelled_unlock_releases_only_after_the_update_under_that_lock() {
    let store = seeded("cancelled-unlock.tfstate");
    let manager = Arc::new(RemoteState::new(store.clone()));
    let (id, update, release) = lock_then_pause_an_update(&store, &manager, set_b).await;
    let cancelled = tokio::time::timeout(Duration::from_millis(100), manager.unlock(&id)).await;
    assert!(cancelled.is_err(), "the unlock waits for the update");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        store.lock_body().is_some(),
        "released while the update's write was on its way"
    );
    release.notify_one();
    update.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.lock_body(), None, "released after the update");
    assert_eq!(output(&store.stored().unwrap(), "b"), Some(1));
}
