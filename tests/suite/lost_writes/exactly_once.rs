//! A write whose answer was lost is applied exactly once, on the in-memory store with the
//! hookable store making a write land, stall, lose its answer or fail at the exact moment that
//! matters: lost answers under other writers, delete markers, creates, stalled requests, and
//! the lock around `update`. From the adversarial review of issue 11's fixes.

use crate::common;
use crate::common::hooked::*;
use crate::common::memory::*;
use s3state::store::memory::{ETagStyle, MemoryOptions, MemoryStore};
use s3state::store::{PutOutcome, Store};
use s3state::{
    Error, LockInfo, Locker, Persister, RemoteState, RemoteStateOptions, State, Transient,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

// ---------------------------------------------------------------------------------------------
// Attacks that held up
// ---------------------------------------------------------------------------------------------

/// A lost answer, then two s3state writers in a row on top: the versions are searched and the
/// change is applied once, with either tag style.
///
/// From the adversarial review of issue 11's fixes.
#[tokio::test]
async fn a_lost_answer_under_two_writers_in_a_row_is_applied_once() {
    for etag_style in [ETagStyle::ContentMd5, ETagStyle::Opaque] {
        let store = Hooked::over(MemoryStore::with_options(
            "two-writers.tfstate",
            MemoryOptions {
                etag_style,
                conditional_delete: true,
            },
        ));
        seed_terraform_state(&store.inner);
        let manager = RemoteState::with_options(store.clone(), lock_free());
        store.on_put(
            "two-writers.tfstate",
            OnPut::LandThen {
                then: action(|s: Hooked| async move {
                    cas_update(s.inner.clone(), "other").await;
                    cas_update(s.inner.clone(), "other").await;
                }),
                gave_up: false,
            },
        );
        let mut rounds = 0;
        manager
            .update(|state| {
                rounds += 1;
                bump(state, "count");
            })
            .await
            .unwrap();
        let stored = store.stored().unwrap();
        assert_eq!((count(&stored, "count"), rounds), (1, 1), "{etag_style:?}");
        assert_eq!(count(&stored, "other"), 2);
    }
}

/// A lost answer (the SDK gave up), then a delete marker, then Terraform creating a state: the
/// search walks past the marker and finds our write, so nothing is applied twice.
///
/// From the adversarial review of issue 11's fixes.
#[tokio::test]
async fn a_lost_answer_then_a_delete_then_a_blind_create_is_not_reapplied() {
    let store = Hooked::new("deleted-between.tfstate");
    seed_terraform_state(&store.inner);
    let manager = RemoteState::with_options(store.clone(), lock_free());
    store.on_put(
        "deleted-between.tfstate",
        OnPut::LandThen {
            then: action(|s: Hooked| async move {
                s.inner.delete(None).await.unwrap();
                terraform_persist(&s.inner, None);
            }),
            gave_up: true,
        },
    );
    let mut rounds = 0;
    manager
        .update(|state| {
            rounds += 1;
            bump(state, "count");
        })
        .await
        .unwrap();
    assert_eq!(rounds, 1, "the change was applied again");
    assert_eq!(count(&store.stored().unwrap(), "count"), 0);
}

/// The very first write (a create on an absent base) lands, its answer is lost, and Terraform
/// writes on top: found among all versions, applied once.
///
/// From the adversarial review of issue 11's fixes.
#[tokio::test]
async fn a_lost_create_under_a_blind_write_is_applied_once() {
    let store = Hooked::new("create.tfstate");
    let manager = RemoteState::with_options(store.clone(), lock_free());
    store.on_put(
        "create.tfstate",
        OnPut::LandThen {
            then: action(|s: Hooked| async move {
                let read = s.stored();
                terraform_persist(&s.inner, read);
            }),
            gave_up: false,
        },
    );
    let mut rounds = 0;
    manager
        .update(|state| {
            rounds += 1;
            bump(state, "count");
        })
        .await
        .unwrap();
    assert_eq!(rounds, 1);
    let stored = store.stored().unwrap();
    assert_eq!(count(&stored, "count"), 1);
    assert!(stored.outputs.contains_key("terraform"));
}

/// A write that stalls, then lands between the next round's refresh and its PUT: that PUT is
/// refused, the stalled write is found as ours, and the round's change is not applied again.
///
/// From the adversarial review of issue 11's fixes.
#[tokio::test(start_paused = true)]
async fn a_stalled_write_landing_before_the_next_round_is_applied_once() {
    let store = Hooked::new("stall-next.tfstate");
    seed_terraform_state(&store.inner);
    let manager = RemoteState::with_options(store.clone(), lock_free());
    store.on_put("stall-next.tfstate", OnPut::Stall);
    store.on_put(
        "stall-next.tfstate",
        OnPut::Before(action(|s: Hooked| async move {
            s.land_stalled().await;
        })),
    );
    let mut rounds = 0;
    manager
        .update(|state| {
            rounds += 1;
            bump(state, "count");
        })
        .await
        .unwrap();
    assert_eq!(rounds, 2);
    assert_eq!(count(&store.stored().unwrap(), "count"), 1);
    assert_eq!(store.inner.version_count(), 2);
}

/// A lock delete whose answer was lost (it landed): the unlock's retry finds the lock gone and
/// succeeds, the manager no longer counts the lock as held, and its next update takes the lock
/// again (it waits for Terraform's).
///
/// From the adversarial review of issue 11's fixes.
#[tokio::test(start_paused = true)]
async fn an_unlock_whose_answer_was_lost_is_released_and_forgotten() {
    let store = Hooked::new("unlock-lost.tfstate");
    seed_terraform_state(&store.inner);
    store.on_delete(&store.lock_key(), OnDelete::ApplyThenFail);
    store.on_delete(&store.lock_key(), OnDelete::FailWithoutApplying);
    let manager = RemoteState::with_options(store.clone(), locking(Duration::from_millis(200)));
    manager.update(|s| set(s, "a", 1)).await.unwrap();
    assert!(store.inner.sibling(".tflock").current_body().is_none());
    let info = terraform_lock(&store.inner).await.unwrap();
    let refused = manager.update(|s| set(s, "a", 2)).await.unwrap_err();
    assert!(
        matches!(&refused, Error::Locked { holder: Some(h), .. } if h.id == info.id),
        "{refused}"
    );
    assert_eq!(count(&store.stored().unwrap(), "a"), 1);
}

/// Updates through separate managers each take the lock: while one holds it (its PUT in
/// flight), the other waits, then goes ahead; both changes are kept.
///
/// From the adversarial review of issue 11's fixes.
#[tokio::test]
async fn updates_through_separate_managers_take_turns_at_the_lock() {
    let store = Hooked::new("turns.tfstate");
    seed_terraform_state(&store.inner);
    let (entered, release) = store.pause_put("turns.tfstate");
    let first = common::shared(store.clone(), locking(Duration::from_secs(5)));
    let second = common::shared(store.clone(), locking(Duration::from_secs(5)));
    let a = tokio::spawn({
        let first = Arc::clone(&first);
        async move { first.update(|s| bump(s, "a")).await }
    });
    entered.notified().await;
    let b = tokio::spawn({
        let second = Arc::clone(&second);
        async move { second.update(|s| bump(s, "b")).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        count(&store.stored().unwrap(), "b"),
        0,
        "b wrote under a's lock"
    );
    release.notify_one();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    let stored = store.stored().unwrap();
    assert_eq!((count(&stored, "a"), count(&stored, "b")), (1, 1));
    assert!(store.inner.sibling(".tflock").current_body().is_none());
}

/// A default update holds the lock from before its read until after its write: a Terraform
/// that tries to lock at the moment the update reads is refused.
///
/// From the adversarial review of issue 11's fixes.
#[tokio::test]
async fn a_default_update_holds_the_lock_while_it_reads() {
    let store = Hooked::new("holds.tfstate");
    seed_terraform_state(&store.inner);
    let terraform_got_it = Arc::new(Mutex::new(None));
    store.on_get(
        "holds.tfstate",
        action({
            let got = Arc::clone(&terraform_got_it);
            move |s: Hooked| async move {
                *got.lock().unwrap() = Some(terraform_lock(&s.inner).await.is_some());
            }
        }),
    );
    let manager = RemoteState::new(store.clone());
    manager.update(|s| bump(s, "count")).await.unwrap();
    assert_eq!(*terraform_got_it.lock().unwrap(), Some(false));
    assert!(store.inner.sibling(".tflock").current_body().is_none());
}

/// A state write whose first attempt stalls while the SDK's retry lands: the stalled attempt,
/// arriving later, is refused by its precondition, and the change is applied once.
///
/// From the adversarial review of issue 11's fixes.
#[tokio::test]
async fn a_stalled_first_attempt_behind_a_successful_retry_is_refused_later() {
    let store = Hooked::new("retry-won.tfstate");
    seed_terraform_state(&store.inner);
    let manager = RemoteState::with_options(store.clone(), lock_free());
    store.on_put("retry-won.tfstate", OnPut::StallThenRetry);
    manager.update(|s| bump(s, "count")).await.unwrap();
    let late = store.land_stalled().await;
    assert_eq!(late, vec![PutOutcome::PreconditionFailed]);
    assert_eq!(count(&store.stored().unwrap(), "count"), 1);
}

/// An update inside a lock the caller took through the same manager runs under it, and
/// leaves the caller's lock in place for the caller to release.
///
/// From the adversarial review of issue 11's fixes.
#[tokio::test]
async fn an_update_inside_the_callers_own_lock_keeps_that_lock() {
    let store = MemoryStore::new("own-lock.tfstate");
    let manager = RemoteState::with_options(store.clone(), locking(Duration::from_millis(50)));
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    manager.update(|s| set(s, "x", 1)).await.unwrap();
    assert!(store.sibling(".tflock").current_body().is_some());
    manager.unlock(&id).await.unwrap();
    assert!(store.sibling(".tflock").current_body().is_none());
}

/// The OpenTofu #4405 case: the lock PUT landed, its answer was lost, and the SDK's retry got
/// 412 from our own lock. The lock is recognised as ours (body and nonce) and released.
///
/// From the adversarial review of issue 11's fixes.
#[tokio::test]
async fn a_lock_whose_retry_met_itself_is_ours_and_released() {
    let store = Hooked::new("tofu-4405.tfstate");
    store.on_put(
        &store.lock_key(),
        OnPut::LandThen {
            then: action(|_| async {}),
            gave_up: false,
        },
    );
    let manager = RemoteState::new(store.clone());
    let id = manager
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    manager.unlock(&id).await.unwrap();
    assert!(store.inner.sibling(".tflock").current_body().is_none());
}

/// Terraform holding the lock makes a default `update` wait and then fail with `Locked`,
/// naming Terraform, and write nothing.
///
/// From the adversarial review of issue 11's fixes.
#[tokio::test(start_paused = true)]
async fn a_default_update_never_writes_under_terraforms_lock() {
    let store = MemoryStore::new("tf-holds.tfstate");
    seed_terraform_state(&store);
    let info = terraform_lock(&store).await.unwrap();
    let before = store.version_count();
    let manager = RemoteState::with_options(store.clone(), locking(Duration::from_secs(2)));
    let refused = manager.update(|s| bump(s, "count")).await.unwrap_err();
    assert!(
        matches!(&refused, Error::Locked { holder: Some(h), .. } if h.id == info.id),
        "{refused}"
    );
    assert_eq!(store.version_count(), before);
}

// ---------------------------------------------------------------------------------------------
// Holes the review of issue 11's fixes found: these failed on the code under review. Each
// asserts the behaviour the issue promises.
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------

/// A state written before the bucket's versioning was enabled keeps the version id `"null"`
/// for ever. `find_landed` gives up ("not landed") whenever any `"null"` version is in the
/// listing, even one older than the base, so in such a bucket the exact lookup of issue 11,
/// bug 3 is off and a lost answer followed by other writers makes `update` apply twice.
///
/// From the review of issue 11's fixes: a hole it found in the code under review.
#[tokio::test]
async fn a_pre_versioning_null_version_disables_the_landed_lookup() {
    let store = Hooked::new("null.tfstate");
    let first = seed_terraform_state(&store.inner);
    store.show_as_null(first.version_id.unwrap());
    let manager = RemoteState::with_options(store.clone(), lock_free());
    // Our write lands, its answer is lost, and two other s3state writers build on it.
    store.on_put(
        "null.tfstate",
        OnPut::LandThen {
            then: action(|s: Hooked| async move {
                cas_update(s.inner.clone(), "other").await;
                cas_update(s.inner.clone(), "other").await;
            }),
            gave_up: false,
        },
    );
    let mut rounds = 0;
    manager
        .update(|state| {
            rounds += 1;
            bump(state, "count");
        })
        .await
        .unwrap();
    let stored = store.stored().unwrap();
    assert_eq!(count(&stored, "other"), 2);
    assert_eq!(
        (count(&stored, "count"), rounds),
        (1, 1),
        "the change was applied {} times in {rounds} rounds",
        count(&stored, "count")
    );
}

/// `update()` skips the lock when `holds_any()`: true also while *another task's update* on
/// the same shared manager holds the lock. The second update then runs with no lock at all
/// once the first releases it, so Terraform can lock and overwrite its acknowledged write.
///
/// From the review of issue 11's fixes: a hole it found in the code under review.
#[tokio::test]
async fn concurrent_updates_on_a_shared_manager_each_take_the_lock() {
    let store = Hooked::new("shared.tfstate");
    let manager = Arc::new(RemoteState::new(store.clone()));
    manager.update(|s| set(s, "a", 0)).await.unwrap();

    // Task A's update holds the lock; its PUT is in flight.
    let (entered, release) = store.pause_put("shared.tfstate");
    let a = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.update(|s| set(s, "a", 1)).await }
    });
    entered.notified().await;

    // Task B's update starts now, while A holds the lock.
    let b = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.update(|s| set(s, "b", 1)).await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    // When B first reads the state, Terraform starts an apply: it locks and reads.
    type Seen = Option<(LockInfo, Option<State>)>;
    let terraform: Arc<Mutex<Seen>> = Arc::default();
    store.on_get(
        "shared.tfstate",
        action({
            let terraform = Arc::clone(&terraform);
            move |s: Hooked| async move {
                if let Some(info) = terraform_lock(&s.inner).await {
                    *terraform.lock().unwrap() = Some((info, s.stored()));
                }
            }
        }),
    );
    release.notify_one();
    a.await.unwrap().unwrap();
    let b_answer = b.await.unwrap();

    // Terraform persists what it applied, as it does while it holds the lock.
    let taken = terraform.lock().unwrap().take();
    if let Some((_, read)) = taken {
        terraform_persist(&store.inner, read);
    }
    let stored = store.stored().unwrap();
    assert!(
        b_answer.is_err() || count(&stored, "b") == 1,
        "task B's update returned {b_answer:?} but its write is lost: it ran without the lock \
         (holds_any() was true because task A held it) and Terraform overwrote it"
    );
}

/// After `FAILED_WRITES_BEFORE_GIVING_UP` rounds whose PUTs timed out, `update` returns
/// `WriteFailed` ("the state's versions show it was not applied"), not `WriteOutcomeUnknown`;
/// a stalled request of an earlier round can still land on the unchanged base afterwards. A
/// caller that trusts "not applied" and retries applies the change twice.
///
/// From the review of issue 11's fixes: a hole it found in the code under review.
#[tokio::test(start_paused = true)]
async fn update_giving_up_after_timeouts_does_not_claim_not_applied() {
    let store = Hooked::new("stalled.tfstate");
    seed_terraform_state(&store.inner);
    let manager = RemoteState::with_options(store.clone(), lock_free());
    for _ in 0..3 {
        store.on_put("stalled.tfstate", OnPut::Stall);
    }
    let error = manager.update(|s| bump(s, "count")).await.unwrap_err();
    // The first stalled request arrives now, on the base it was conditional on.
    let landed = store.land_stalled().await;
    assert!(matches!(landed[0], PutOutcome::Written(_)));
    assert_eq!(count(&store.stored().unwrap(), "count"), 1);
    assert!(
        matches!(error, Error::WriteOutcomeUnknown { .. }),
        "update answered `{error}` although a write of it was still in flight (and landed)"
    );
}

/// The same with a small attempt budget: `UpdateContention` ("each lost to a concurrent
/// writer") after one timed-out round, though nobody else wrote and the write landed later.
///
/// From the review of issue 11's fixes: a hole it found in the code under review.
#[tokio::test(start_paused = true)]
async fn update_contention_after_a_timed_out_round_hides_the_doubt() {
    let store = Hooked::new("stalled-one.tfstate");
    seed_terraform_state(&store.inner);
    let manager = RemoteState::with_options(
        store.clone(),
        RemoteStateOptions {
            max_update_attempts: 1,
            ..lock_free()
        },
    );
    store.on_put("stalled-one.tfstate", OnPut::Stall);
    let error = manager.update(|s| bump(s, "count")).await.unwrap_err();
    store.land_stalled().await;
    assert_eq!(count(&store.stored().unwrap(), "count"), 1);
    assert!(
        matches!(error, Error::WriteOutcomeUnknown { .. }),
        "update answered `{error}` although its write was in flight (and landed)"
    );
}

/// `lock_waiting` makes a fresh nonce for every `lock()` call. A first lock PUT that stalls
/// while the SDK's retry meets another holder (412), and that arrives after the holder
/// released, creates our lock with the old nonce: every later attempt sees "held by someone
/// else" (our own ID!), the update times out with `Locked`, and the lock is left orphaned.
///
/// From the review of issue 11's fixes: a hole it found in the code under review.
#[tokio::test(start_paused = true)]
async fn a_late_first_lock_attempt_is_not_left_orphaned() {
    let store = Hooked::new("late-lock.tfstate");
    seed_terraform_state(&store.inner);
    let holder = RemoteState::new(store.inner.clone());
    let held = holder
        .lock(&LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    store.on_put(&store.lock_key(), OnPut::StallThenRetry);

    let manager = common::shared(store.clone(), locking(Duration::from_secs(5)));
    let task = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move { manager.update(|s| bump(s, "count")).await }
    });
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    holder.unlock(&held).await.unwrap();
    // Our first lock attempt, stalled in the network, arrives now.
    let landed = store.land_stalled().await;
    assert!(matches!(landed[0], PutOutcome::Written(_)));
    let answer = task.await.unwrap();
    let left = store.inner.sibling(".tflock").current_body();
    assert!(
        left.is_none(),
        "update answered {answer:?} and left its own lock behind: {}",
        String::from_utf8_lossy(&left.unwrap())
    );
}

/// `unlock` recognises our lock by its tag, and `unlock_by_reading` by its ID alone. After
/// an operator's force-unlock, another holder that took the lock with the same ID (two
/// managers reusing one `LockInfo`, the case of issue 11 bug 5) loses its lock to our unlock:
/// with content-MD5 tags the bodies are identical, and with KMS tags the fallback read
/// matches the ID. Two parties can then hold the lock.
///
/// From the review of issue 11's fixes: a hole it found in the code under review.
#[tokio::test]
async fn unlock_does_not_delete_a_lock_another_holder_took_with_the_same_id() {
    let mut broken = Vec::new();
    for etag_style in [ETagStyle::ContentMd5, ETagStyle::Opaque] {
        let store = MemoryStore::with_options(
            "reuse.tfstate",
            MemoryOptions {
                etag_style,
                conditional_delete: true,
            },
        );
        let info = LockInfo::new("OperationTypeApply");
        let first = RemoteState::new(store.clone());
        let second = RemoteState::new(store.clone());
        let operator = RemoteState::new(store.clone());
        first.lock(&info).await.unwrap();
        operator.locker().force_unlock(&info.id).await.unwrap();
        second.lock(&info).await.unwrap();
        let answer = first.unlock(&info.id).await;
        if store.sibling(".tflock").current_body().is_none() {
            broken.push(format!(
                "{etag_style:?}: the first holder's unlock ({answer:?}) deleted the lock the \
                 second holder took"
            ));
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// When `unlock_patiently` gives up after an update (its deletes got no answer, though the
/// first one landed), the ID stays in `held`: `holds_any()` is then true for the life of the
/// manager, so every later `update()` skips the lock and writes while Terraform holds it.
///
/// From the review of issue 11's fixes: a hole it found in the code under review.
#[tokio::test(start_paused = true)]
async fn a_failed_unlock_does_not_make_later_updates_lock_free() {
    let store = Hooked::new("unlock-fails.tfstate");
    seed_terraform_state(&store.inner);
    let lock_key = store.lock_key();
    store.on_delete(&lock_key, OnDelete::ApplyThenFail);
    for _ in 0..9 {
        store.on_delete(&lock_key, OnDelete::FailWithoutApplying);
    }
    let manager = RemoteState::with_options(store.clone(), locking(Duration::from_millis(200)));
    manager.update(|s| set(s, "a", 1)).await.unwrap();
    assert!(
        store.inner.sibling(".tflock").current_body().is_none(),
        "the first delete landed"
    );

    // Terraform starts an apply.
    let info = terraform_lock(&store.inner)
        .await
        .expect("the lock is free");
    let read = store.stored();
    let second = manager.update(|s| set(s, "a", 2)).await;
    terraform_persist(&store.inner, read);
    assert!(
        matches!(&second, Err(Error::Locked { holder: Some(h), .. }) if h.id == info.id),
        "the second update answered {second:?} while Terraform held the lock; the state now \
         has a = {}",
        count(&store.stored().unwrap(), "a")
    );
}

/// `update()` releases its lock only on the normal path: a `change` closure that panics (in
/// a spawned task the process goes on) leaves the lock in the store and its ID in `held`, so
/// the lock is orphaned (nobody is told: the caller sees a panic) and `holds_any()` stays true:
/// every later update on this manager skips the lock.
///
/// From the review of issue 11's fixes: a hole it found in the code under review.
#[tokio::test(start_paused = true)]
async fn a_panicking_change_does_not_orphan_the_lock() {
    let store = MemoryStore::new("panic.tfstate");
    seed_terraform_state(&store);
    let manager = common::shared(store.clone(), locking(Duration::from_millis(200)));
    let panicked = tokio::spawn({
        let manager = Arc::clone(&manager);
        async move {
            manager
                .update(|_state| -> () { panic!("a bug in the caller's change") })
                .await
        }
    })
    .await;
    assert!(panicked.is_err());
    let left = store.sibling(".tflock").current_body();
    assert!(
        left.is_none(),
        "the lock was left behind by the panicking update: {}",
        String::from_utf8_lossy(&left.unwrap())
    );
}

/// The same with cancellation, e.g. `tokio::time::timeout(.., manager.update(..))`: the
/// future is dropped while it holds the lock. The lock is orphaned without a word, and the
/// manager's later updates run lock-free, so after an operator clears the orphan with
/// force-unlock, they write while Terraform holds the lock.
///
/// From the review of issue 11's fixes: a hole it found in the code under review.
#[tokio::test(start_paused = true)]
async fn a_cancelled_update_does_not_orphan_the_lock_or_skip_it_later() {
    let store = Hooked::new("cancel.tfstate");
    seed_terraform_state(&store.inner);
    let manager = RemoteState::with_options(store.clone(), locking(Duration::from_millis(200)));
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    store.on_put(
        "cancel.tfstate",
        OnPut::Pause {
            entered: Arc::clone(&entered),
            release,
        },
    );
    let timed_out =
        tokio::time::timeout(Duration::from_secs(1), manager.update(|s| set(s, "a", 1))).await;
    assert!(timed_out.is_err(), "the slow update was cancelled");
    // The cancelled update's lock is released in the background, once its write (cut off
    // on the wire) can no longer land: give that task its time.
    let settle = s3state::RemoteStateOptions::default().unanswered_write_settle;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        store.inner.sibling(".tflock").current_body().is_some(),
        "released while the cancelled write could still land"
    );
    tokio::time::sleep(settle).await;
    let orphan = store.inner.sibling(".tflock").current_body();

    // An operator clears the orphan (if any); Terraform starts an apply.
    if let Some(body) = &orphan {
        let info: LockInfo = serde_json::from_slice(body).unwrap();
        RemoteState::new(store.inner.clone())
            .locker()
            .force_unlock(&info.id)
            .await
            .unwrap();
    }
    let tf = terraform_lock(&store.inner)
        .await
        .expect("the lock is free");
    let second = manager.update(|s| set(s, "a", 2)).await;
    let mut problems = Vec::new();
    if orphan.is_some() {
        problems.push("the cancelled update left its lock behind".to_owned());
    }
    if !matches!(&second, Err(Error::Locked { holder: Some(h), .. }) if h.id == tf.id) {
        problems.push(format!(
            "the next update answered {second:?} while Terraform held the lock (a = {})",
            count(&store.stored().unwrap(), "a")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("; "));
}

/// `StoredObject` (and so `Fetched`) derives `Debug` and prints the whole body: a state's
/// resources, with their secrets, end up in any log of a read.
///
/// From the review of issue 11's fixes: a hole it found in the code under review.
#[tokio::test]
async fn debug_of_a_read_object_does_not_print_secrets() {
    let store = MemoryStore::new("secret.tfstate");
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state.resources = s3state::RawJson::from_value(&serde_json::json!([{
        "mode": "managed", "type": "aws_db_instance", "name": "db", "provider": "p",
        "instances": [{"attributes": {"password": "hunter2-super-secret"}}]
    }]));
    let manager = RemoteState::new(store.clone());
    manager.write_state(state);
    manager.persist_state().await.unwrap();
    let fetched = store.get(None).await.unwrap();
    let shown = format!("{fetched:?}");
    assert!(
        !shown.contains("hunter2-super-secret"),
        "Debug of a Fetched shows the body: {}",
        &shown[..shown.len().min(300)]
    );
}
