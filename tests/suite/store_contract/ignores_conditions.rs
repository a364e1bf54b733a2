//! The library's free checks of the store's answers (issue 13): a store that accepts
//! conditional writes and ignores their conditions is caught from what s3state reads anyway,
//! and reported as `Error::StoreIgnoresConditions` instead of being trusted. Healthy stores,
//! faults and all, never trip the checks.

use crate::common;
use async_trait::async_trait;
use bytes::Bytes;
use s3state::store::memory::{FaultPlan, MemoryStore};
use s3state::store::{
    DeleteOutcome, ETag, Fetched, Headed, ObjectMetadata, ObjectVersion, Precondition, PutOutcome,
    StoredObject, VersionedStore,
};
use s3state::{
    Error, OutputValue, Persister, Refresher, RemoteState, RemoteStateOptions, State, Store,
    Transient, UpdateLocking,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// A store whose next write lands, has its answer lost, is sent again and accepted again over
/// itself (a store ignoring If-Match), after which Terraform writes on top; the caller gets
/// the lost answer's error. Everything else goes to the bucket as is.
#[derive(Debug, Clone)]
struct RetriedOverItself {
    inner: MemoryStore,
    armed: Arc<AtomicBool>,
}

#[async_trait]
impl Store for RetriedOverItself {
    async fn get(&self, if_none_match: Option<&ETag>) -> s3state::Result<Fetched> {
        self.inner.get(if_none_match).await
    }

    async fn head(&self) -> s3state::Result<Headed> {
        self.inner.head().await
    }

    async fn put(
        &self,
        body: Bytes,
        precondition: &Precondition,
        metadata: &ObjectMetadata,
    ) -> s3state::Result<PutOutcome> {
        if !self.armed.swap(false, Ordering::SeqCst) {
            return self.inner.put(body, precondition, metadata).await;
        }
        let first = self.inner.put(body.clone(), precondition, metadata).await?;
        assert!(matches!(first, PutOutcome::Written(_)), "{first:?}");
        let careless = self.inner.clone().ignoring_conditions();
        let again = careless.put(body, precondition, metadata).await?;
        assert!(matches!(again, PutOutcome::Written(_)), "{again:?}");
        self.inner
            .put_unconditional(Bytes::from_static(common::TERRAFORM_STATE));
        Err(Error::Store {
            operation: "PutObject",
            location: self.inner.location().to_owned(),
            message: "simulated: the response was lost and the retries gave up".into(),
            source: None,
        })
    }

    async fn delete(&self, if_match: Option<&ETag>) -> s3state::Result<DeleteOutcome> {
        self.inner.delete(if_match).await
    }

    fn sibling(&self, suffix: &str) -> Self {
        RetriedOverItself {
            inner: self.inner.sibling(suffix),
            armed: Arc::new(AtomicBool::new(false)),
        }
    }

    fn location(&self) -> &str {
        self.inner.location()
    }

    fn path(&self) -> &str {
        self.inner.path()
    }

    fn as_versioned(&self) -> Option<&dyn VersionedStore> {
        Some(self)
    }
}

#[async_trait]
impl VersionedStore for RetriedOverItself {
    async fn list_versions(&self, page_size: u32) -> s3state::Result<Vec<ObjectVersion>> {
        self.inner.list_versions(page_size).await
    }

    async fn get_version(&self, version_id: &str) -> s3state::Result<StoredObject> {
        self.inner.get_version(version_id).await
    }

    async fn version_metadata(&self, version_id: &str) -> s3state::Result<ObjectMetadata> {
        self.inner.version_metadata(version_id).await
    }

    async fn delete_version(&self, version_id: &str) -> s3state::Result<()> {
        self.inner.delete_version(version_id).await
    }
}

#[tokio::test]
async fn a_lost_write_found_stored_twice_is_a_store_ignoring_conditions_not_a_success() {
    for locked in [false, true] {
        let inner = MemoryStore::new(KEY);
        let store = RetriedOverItself {
            inner: inner.clone(),
            armed: Arc::new(AtomicBool::new(false)),
        };
        let options = RemoteStateOptions {
            update_locking: if locked {
                UpdateLocking::default()
            } else {
                UpdateLocking::Disabled
            },
            ..RemoteStateOptions::default()
        };
        let manager = RemoteState::with_options(store.clone(), options);
        manager
            .update(|state| {
                state.outputs.insert("a".into(), OutputValue::new(&1));
            })
            .await
            .unwrap();

        store.armed.store(true, Ordering::SeqCst);
        let err = manager
            .update(|state| {
                state.outputs.insert("a".into(), OutputValue::new(&2));
            })
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
