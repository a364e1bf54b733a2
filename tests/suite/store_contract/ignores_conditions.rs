//! The library's free checks of the store's answers (issue 13): a store that accepts
//! conditional writes and ignores their conditions is caught from what s3state reads anyway,
//! and reported as `Error::StoreIgnoresConditions` instead of being trusted. Healthy stores,
//! faults and all, never trip the checks.

use crate::common;
use crate::common::hooked::{Action, Hooked, OnPut, Put, action, timeout_error};
use crate::common::memory::*;
use bytes::Bytes;
use s3state::store::memory::{ETagStyle, FaultPlan, MemoryOptions, MemoryStore};
use s3state::store::{PutOutcome, VersionedStore};
use s3state::{
    Error, OutputValue, Persister, Refresher, RemoteState, RemoteStateOptions, State, Store,
    Transient, UpdateLocking,
};
use std::sync::Arc;

const KEY: &str = "app/terraform.tfstate";

fn with_output(mut state: State, name: &str, value: i64) -> State {
    state.outputs.insert(name.into(), OutputValue::new(&value));
    state
}

async fn persist_output<S: Store>(
    manager: &RemoteState<S>,
    name: &str,
    value: i64,
) -> s3state::Result<()> {
    manager.refresh_state().await?;
    let state = manager
        .state()
        .unwrap_or_else(|| State::new(semver::Version::new(1, 15, 5)));
    manager.write_state(with_output(state, name, value));
    manager.persist_state().await
}

/// The write id of every version of the object, newest first.
async fn write_ids(store: &MemoryStore) -> Vec<String> {
    let mut ids = Vec::new();
    for version in store.list_versions(1000).await.unwrap() {
        if version.is_delete_marker {
            continue;
        }
        let metadata = store.version_metadata(&version.version_id).await.unwrap();
        ids.push(
            metadata
                .get("s3state-write-id")
                .cloned()
                .unwrap_or_default(),
        );
    }
    ids
}

/// Two managers on one bucket; the second writes through a handle that ignores conditions.
/// The honest one writes W1 and W2; the careless one, which last read W1, then writes W3 on
/// W1, which the store accepts over W2.
async fn careless_write_over_a_newer_snapshot(
    store: &MemoryStore,
) -> (RemoteState<MemoryStore>, RemoteState<MemoryStore>) {
    let honest = RemoteState::new(store.clone());
    let careless = RemoteState::new(store.clone().ignoring_conditions());
    persist_output(&honest, "a", 1).await.unwrap();
    careless.refresh_state().await.unwrap();
    persist_output(&honest, "a", 2).await.unwrap();

    let stale = careless.state().unwrap();
    careless.write_state(with_output(stale, "b", 1));
    careless
        .persist_state()
        .await
        .expect("the store accepts the write its condition should have refused");
    (honest, careless)
}

#[tokio::test]
async fn a_write_accepted_on_a_replaced_snapshot_fails_the_next_read_naming_both_writes() {
    let store = MemoryStore::new(KEY);
    let (honest, _careless) = careless_write_over_a_newer_snapshot(&store).await;
    let ids = write_ids(&store).await;
    let (w3, w2, w1) = (&ids[0], &ids[1], &ids[2]);

    let err = honest.refresh_state().await.unwrap_err();
    let Error::StoreIgnoresConditions { location, evidence } = &err else {
        panic!("expected StoreIgnoresConditions, got {err:?}");
    };
    assert_eq!(location, "memory://memory/app/terraform.tfstate");
    for id in [w1, w2, w3] {
        assert!(evidence.contains(id.as_str()), "{id} in {evidence}");
    }
    let message = err.to_string();
    assert!(message.contains("s3state probe"), "{message}");
    assert!(message.contains("by hand"), "{message}");
}

#[tokio::test]
async fn a_refused_write_whose_lookup_finds_a_sibling_of_its_base_fails_and_writes_nothing() {
    let store = MemoryStore::new(KEY);
    let (honest, _careless) = careless_write_over_a_newer_snapshot(&store).await;
    let versions_before = store.version_count();

    // No refresh: the honest manager's write is conditional on W2, is refused (W3 is there),
    // and the lookup that follows reads W3, made on W1 like W2.
    let state = honest.state().unwrap();
    honest.write_state(with_output(state, "c", 1));
    let err = honest.persist_state().await.unwrap_err();
    assert!(
        matches!(err, Error::StoreIgnoresConditions { .. }),
        "expected StoreIgnoresConditions, got {err:?}"
    );
    assert_eq!(store.version_count(), versions_before, "nothing written");
}

/// The next write lands, has its answer lost, is sent again and accepted again over itself (a
/// store ignoring If-Match), after which Terraform writes on top; the caller gets the lost
/// answer's error.
fn retried_over_itself() -> OnPut {
    OnPut::Answer(Box::new(|store: Hooked, put: Put| {
        Box::pin(async move {
            let (body, precondition, metadata) = (put.body, put.precondition, put.metadata);
            let first = store
                .inner
                .put(body.clone(), &precondition, &metadata)
                .await?;
            assert!(matches!(first, PutOutcome::Written(_)), "{first:?}");
            let careless = store.inner.clone().ignoring_conditions();
            let again = careless.put(body, &precondition, &metadata).await?;
            assert!(matches!(again, PutOutcome::Written(_)), "{again:?}");
            store
                .inner
                .put_unconditional(Bytes::from_static(common::TERRAFORM_STATE));
            Err(timeout_error("PutObject"))
        })
    }))
}

#[tokio::test]
async fn a_lost_write_found_stored_twice_is_a_store_ignoring_conditions_not_a_success() {
    for locked in [false, true] {
        let inner = MemoryStore::new(KEY);
        let store = Hooked::over(inner.clone());
        let options = RemoteStateOptions {
            update_locking: if locked {
                UpdateLocking::default()
            } else {
                UpdateLocking::Disabled
            },
            ..RemoteStateOptions::default()
        };
        let manager = RemoteState::with_options(store.clone(), options);
        manager.update(common::set_output("a", 1)).await.unwrap();

        store.next_write(retried_over_itself());
        let err = manager
            .update(common::set_output("a", 2))
            .await
            .unwrap_err();
        let Error::StoreIgnoresConditions { evidence, .. } = &err else {
            panic!("locked={locked}: expected StoreIgnoresConditions, got {err:?}");
        };
        let ids = write_ids(&inner).await;
        // Terraform's write (no id), our write twice, then the first snapshot.
        assert_eq!(ids[0], "", "{ids:?}");
        assert_eq!(ids[1], ids[2], "{ids:?}");
        assert!(evidence.contains("stored twice"), "{evidence}");
        assert!(evidence.contains(ids[1].as_str()), "{evidence}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn healthy_stores_with_faults_and_racing_writers_never_trip_the_checks() {
    for seed in 0..40u64 {
        let plan = Arc::new(FaultPlan::new(seed, 25));
        let store = MemoryStore::new(KEY);
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let options = RemoteStateOptions {
                    update_locking: UpdateLocking::Disabled,
                    ..RemoteStateOptions::default()
                };
                RemoteState::with_options(store.clone().with_faults(Arc::clone(&plan)), options)
            })
            .collect();
        let rounds = writers
            .iter()
            .enumerate()
            .map(|(writer, manager)| async move {
                let mut errors = Vec::new();
                for round in 0..6 {
                    let name = format!("w{writer}");
                    if let Err(err) = manager
                        .update(move |state| {
                            state
                                .outputs
                                .insert(name.clone(), OutputValue::new(&(round as i64)));
                        })
                        .await
                    {
                        errors.push(err);
                    }
                }
                errors
            });
        for errors in futures::future::join_all(rounds).await {
            for err in errors {
                assert!(
                    !matches!(err, Error::StoreIgnoresConditions { .. }),
                    "seed {seed}: a healthy store was accused: {err}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// From the review of the store-ignores-conditions check, the waiting lock's conditional poll
// and the read-only commands (issue 13/16 follow-ups): what is not a broken store.
// ---------------------------------------------------------------------------------------------

/// Queues `actions` for the next GETs of `key`, in order (a `None` is a GET left alone).
fn on_gets(store: &Hooked, key: &str, actions: Vec<Option<Action>>) {
    for what in actions {
        store.on_get(key, what.unwrap_or_else(|| action(|_| async {})));
    }
}

/// An update whose first attempt (on P) timed out and was not found, then another writer
/// replaced P with X, then its second attempt (on X) timed out too and landed late, with
/// two more writers on top. The second attempt is found among the versions: it was
/// conditional on X and replaced X, which is what a healthy store does. The update landed;
/// nothing ignored a condition.
///
/// From the review of the store-ignores-conditions check and the waiting lock's poll (issues 13, 16).
#[tokio::test(start_paused = true)]
async fn a_late_write_made_on_a_newer_base_than_the_first_doubt_is_landed_not_a_broken_store() {
    for etag_style in [ETagStyle::ContentMd5, ETagStyle::Opaque] {
        let key = "doubt-two-bases.tfstate";
        let store = Hooked::over(MemoryStore::with_options(
            key,
            MemoryOptions {
                etag_style,
                conditional_delete: true,
            },
        ));
        cas_update(store.inner.clone(), "seed").await;
        let manager = RemoteState::with_options(store.clone(), lock_free());
        store.on_put(key, OnPut::Stall);
        store.on_put(key, OnPut::Stall);
        on_gets(
            &store,
            key,
            vec![
                None, // round 1: refresh
                None, // round 1: lookup after the timeout (not there)
                // round 2: refresh; another writer replaced P with X first.
                Some(action(|s: Hooked| async move {
                    cas_update(s.inner.clone(), "other").await;
                })),
                None, // round 2: lookup of the first attempt (X is built on P: not there)
                None, // round 2: lookup after the second timeout (not there yet)
                // round 3: refresh; the stalled requests arrive (the first is refused, the
                // second lands on X), and two writers build on it.
                Some(action(|s: Hooked| async move {
                    let landed = s.land_stalled().await;
                    assert_eq!(landed[0], PutOutcome::PreconditionFailed);
                    assert!(matches!(landed[1], PutOutcome::Written(_)));
                    cas_update(s.inner.clone(), "other").await;
                    cas_update(s.inner.clone(), "other").await;
                })),
            ],
        );
        let mut rounds = 0;
        let answer = manager
            .update(|state| {
                rounds += 1;
                bump(state, "count");
            })
            .await;
        let stored = store.stored().unwrap();
        assert!(
            answer.is_ok(),
            "{etag_style:?}: the update answered {answer:?} though its second attempt landed \
             on a healthy store"
        );
        assert_eq!(
            (count(&stored, "count"), count(&stored, "other"), rounds),
            (1, 3, 2),
            "{etag_style:?}"
        );
    }
}

/// An operator rolls back by deleting the newest version (S3's own way to restore the
/// previous one), and another tool writes on the restored snapshot. A long-lived manager
/// that had read the deleted version sees a write made on the same parent as the one it
/// knew; the store honoured every condition, so its next refresh and update go on.
///
/// From the review of the store-ignores-conditions check and the waiting lock's poll (issues 13, 16).
#[tokio::test]
async fn a_rollback_by_deleting_the_newest_version_does_not_accuse_the_store() {
    let store = MemoryStore::new("rollback.tfstate");
    let long_lived = RemoteState::with_options(store.clone(), lock_free());
    long_lived.update(|s| set(s, "a", 1)).await.unwrap();
    long_lived.update(|s| set(s, "a", 2)).await.unwrap();
    let newest = long_lived.persisted_object().unwrap().version_id.unwrap();
    store.delete_version(&newest).await.unwrap();
    cas_update(store.clone(), "other").await;

    let refreshed = long_lived.refresh_state().await;
    assert!(refreshed.is_ok(), "{refreshed:?}");
    long_lived.update(|s| set(s, "b", 1)).await.unwrap();
    let stored = State::from_slice(&store.current_body().unwrap()).unwrap();
    assert_eq!(
        (
            count(&stored, "a"),
            count(&stored, "other"),
            count(&stored, "b")
        ),
        (1, 1, 1)
    );
}
