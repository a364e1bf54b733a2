//! Adversarial review of issue 11's fixes: scripted stores that make a write land, stall,
//! lose its answer or fail at the exact moment that matters, on the in-memory store.
//!
//! These pin down behaviour that held up under attack: lost answers under other writers,
//! delete markers, creates, stalled requests, and the lock around `update`.

use async_trait::async_trait;
use bytes::Bytes;
use s3state::store::memory::{ETagStyle, MemoryOptions, MemoryStore};
use s3state::store::{
    DeleteOutcome, ETag, Fetched, Headed, ObjectMetadata, ObjectVersion, Precondition, PutOutcome,
    Store, StoredObject, VersionedStore, Written,
};
use s3state::{
    Error, LockInfo, LockRetry, Locker, OutputValue, RemoteState, RemoteStateOptions, State,
    UpdateLocking,
};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

// ---------------------------------------------------------------------------------------------
// A scripted store
// ---------------------------------------------------------------------------------------------

type Action = Box<dyn FnOnce(Hooked) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

fn action<F, Fut>(f: F) -> Action
where
    F: FnOnce(Hooked) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Box::new(move |store| Box::pin(f(store)))
}

/// What happens to the next PUT of one object.
enum OnPut {
    /// Hold the request until `release`, after telling `entered`.
    Pause {
        entered: Arc<Notify>,
        release: Arc<Notify>,
    },
    /// Apply it, run `then`, and answer as if the response was lost: the SDK's retry met the
    /// object (`412`), or it gave up (an error).
    LandThen { then: Action, gave_up: bool },
    /// Run `first`, then apply the request normally.
    Before(Action),
    /// The request stalls in the network: it is kept (see [`Hooked::land_stalled`]) and the
    /// caller gets a timeout now.
    Stall,
    /// The first attempt stalls (kept), and the caller gets the SDK's retry's answer.
    StallThenRetry,
}

/// What happens to the next DELETE of one object.
enum OnDelete {
    /// Applied, the answer lost.
    ApplyThenFail,
    /// Not applied, an error.
    FailWithoutApplying,
}

#[derive(Default)]
struct Script {
    puts: HashMap<String, VecDeque<OnPut>>,
    deletes: HashMap<String, VecDeque<OnDelete>>,
    gets: HashMap<String, VecDeque<Action>>,
    stalled: Vec<(MemoryStore, Bytes, Precondition, ObjectMetadata)>,
    /// (key, version id) shown as S3's `"null"`: an object written before versioning was on.
    null_version: Option<(String, String)>,
}

#[derive(Clone)]
struct Hooked {
    inner: MemoryStore,
    script: Arc<Mutex<Script>>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

fn timeout_error(what: &'static str) -> Error {
    Error::Store {
        operation: what,
        location: "scripted".into(),
        message: "the request timed out and the retries gave up".into(),
        source: None,
    }
}

impl Hooked {
    fn new(key: &str) -> Self {
        Self::over(MemoryStore::new(key))
    }

    fn over(inner: MemoryStore) -> Self {
        Hooked {
            inner,
            script: Arc::default(),
        }
    }

    fn lock_key(&self) -> String {
        format!("{}.tflock", self.inner.key())
    }

    fn on_put(&self, key: &str, what: OnPut) {
        let mut script = self.script.lock().unwrap();
        script.puts.entry(key.into()).or_default().push_back(what);
    }

    fn on_delete(&self, key: &str, what: OnDelete) {
        let mut script = self.script.lock().unwrap();
        script
            .deletes
            .entry(key.into())
            .or_default()
            .push_back(what);
    }

    fn on_get(&self, key: &str, what: Action) {
        let mut script = self.script.lock().unwrap();
        script.gets.entry(key.into()).or_default().push_back(what);
    }

    /// Stalled requests arrive now, in the order they were sent.
    async fn land_stalled(&self) -> Vec<PutOutcome> {
        let stalled = std::mem::take(&mut self.script.lock().unwrap().stalled);
        let mut outcomes = Vec::new();
        for (store, body, precondition, metadata) in stalled {
            outcomes.push(store.put(body, &precondition, &metadata).await.unwrap());
        }
        outcomes
    }

    fn stored(&self) -> Option<State> {
        self.inner
            .current_body()
            .map(|body| State::from_slice(&body).unwrap())
    }

    fn show(&self, id: String) -> String {
        match &self.script.lock().unwrap().null_version {
            Some((key, null)) if key == self.inner.key() && *null == id => "null".into(),
            _ => id,
        }
    }

    fn unshow(&self, id: &str) -> String {
        match &self.script.lock().unwrap().null_version {
            Some((key, null)) if key == self.inner.key() && id == "null" => null.clone(),
            _ => id.to_owned(),
        }
    }

    fn show_written(&self, outcome: PutOutcome) -> PutOutcome {
        match outcome {
            PutOutcome::Written(Written { etag, version_id }) => PutOutcome::Written(Written {
                etag,
                version_id: version_id.map(|id| self.show(id)),
            }),
            other => other,
        }
    }
}

#[async_trait]
impl Store for Hooked {
    async fn get(&self, if_none_match: Option<&ETag>) -> s3state::Result<Fetched> {
        let hook = {
            let mut script = self.script.lock().unwrap();
            script
                .gets
                .get_mut(self.inner.key())
                .and_then(VecDeque::pop_front)
        };
        if let Some(hook) = hook {
            hook(self.clone()).await;
        }
        Ok(match self.inner.get(if_none_match).await? {
            Fetched::Found(mut object) => {
                object.version_id = object.version_id.map(|id| self.show(id));
                Fetched::Found(object)
            }
            other => other,
        })
    }

    async fn head(&self) -> s3state::Result<Headed> {
        Ok(match self.inner.head().await? {
            Headed::Found(mut head) => {
                head.version_id = head.version_id.map(|id| self.show(id));
                Headed::Found(head)
            }
            other => other,
        })
    }

    async fn put(
        &self,
        body: Bytes,
        precondition: &Precondition,
        metadata: &ObjectMetadata,
    ) -> s3state::Result<PutOutcome> {
        let what = {
            let mut script = self.script.lock().unwrap();
            script
                .puts
                .get_mut(self.inner.key())
                .and_then(VecDeque::pop_front)
        };
        let outcome = match what {
            None => self.inner.put(body, precondition, metadata).await?,
            Some(OnPut::Pause { entered, release }) => {
                entered.notify_one();
                release.notified().await;
                self.inner.put(body, precondition, metadata).await?
            }
            Some(OnPut::LandThen { then, gave_up }) => {
                self.inner.put(body, precondition, metadata).await?;
                then(self.clone()).await;
                if gave_up {
                    return Err(timeout_error("PutObject"));
                }
                PutOutcome::PreconditionFailed
            }
            Some(OnPut::Before(first)) => {
                first(self.clone()).await;
                self.inner.put(body, precondition, metadata).await?
            }
            Some(OnPut::Stall) => {
                self.script.lock().unwrap().stalled.push((
                    self.inner.clone(),
                    body,
                    precondition.clone(),
                    metadata.clone(),
                ));
                return Err(timeout_error("PutObject"));
            }
            Some(OnPut::StallThenRetry) => {
                self.script.lock().unwrap().stalled.push((
                    self.inner.clone(),
                    body.clone(),
                    precondition.clone(),
                    metadata.clone(),
                ));
                self.inner.put(body, precondition, metadata).await?
            }
        };
        Ok(self.show_written(outcome))
    }

    async fn delete(&self, if_match: Option<&ETag>) -> s3state::Result<DeleteOutcome> {
        let what = {
            let mut script = self.script.lock().unwrap();
            script
                .deletes
                .get_mut(self.inner.key())
                .and_then(VecDeque::pop_front)
        };
        match what {
            None => self.inner.delete(if_match).await,
            Some(OnDelete::ApplyThenFail) => {
                self.inner.delete(if_match).await?;
                Err(timeout_error("DeleteObject"))
            }
            Some(OnDelete::FailWithoutApplying) => Err(timeout_error("DeleteObject")),
        }
    }

    fn sibling(&self, suffix: &str) -> Self {
        Hooked {
            inner: self.inner.sibling(suffix),
            script: Arc::clone(&self.script),
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
impl VersionedStore for Hooked {
    async fn list_versions(&self, page_size: u32) -> s3state::Result<Vec<ObjectVersion>> {
        let versions = self.inner.list_versions(page_size).await?;
        Ok(versions
            .into_iter()
            .map(|mut version| {
                version.version_id = self.show(version.version_id);
                version
            })
            .collect())
    }

    async fn get_version(&self, version_id: &str) -> s3state::Result<StoredObject> {
        let mut object = self.inner.get_version(&self.unshow(version_id)).await?;
        object.version_id = object.version_id.map(|id| self.show(id));
        Ok(object)
    }

    async fn version_metadata(&self, version_id: &str) -> s3state::Result<ObjectMetadata> {
        self.inner.version_metadata(&self.unshow(version_id)).await
    }

    async fn delete_version(&self, version_id: &str) -> s3state::Result<()> {
        self.inner.delete_version(&self.unshow(version_id)).await
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn count(state: &State, name: &str) -> u64 {
    state
        .outputs
        .get(name)
        .and_then(|o| o.to_value().as_u64())
        .unwrap_or(0)
}

fn set(state: &mut State, name: &str, value: u64) {
    state.outputs.insert(name.into(), OutputValue::new(&value));
}

fn bump(state: &mut State, name: &str) {
    let next = count(state, name) + 1;
    set(state, name, next);
}

fn lock_free() -> RemoteStateOptions {
    RemoteStateOptions {
        update_locking: UpdateLocking::Disabled,
        ..RemoteStateOptions::default()
    }
}

fn locking(timeout: Duration) -> RemoteStateOptions {
    RemoteStateOptions {
        update_locking: UpdateLocking::Lock { timeout },
        update_lock_retry: LockRetry {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(50),
        },
        ..RemoteStateOptions::default()
    }
}

/// Terraform's lock: If-None-Match on `<key>.tflock`. True when taken.
async fn terraform_lock(state_object: &MemoryStore) -> Option<LockInfo> {
    let mut info = LockInfo::new("OperationTypeApply");
    info.path = state_object.path().to_owned();
    let body = Bytes::from(serde_json::to_vec(&info).unwrap());
    match state_object
        .sibling(".tflock")
        .put(body, &Precondition::Create, &ObjectMetadata::new())
        .await
        .unwrap()
    {
        PutOutcome::Written(_) => Some(info),
        PutOutcome::PreconditionFailed => None,
    }
}

/// Terraform's persist while it holds the lock: a plain PUT of the state it read at lock time,
/// with its own change.
fn terraform_persist(state_object: &MemoryStore, read: Option<State>) {
    let mut state = read.unwrap_or_else(|| {
        let mut fresh = State::new(semver::Version::new(1, 15, 5));
        fresh.lineage = uuid::Uuid::new_v4().to_string();
        fresh
    });
    state.serial += 1;
    state
        .outputs
        .insert("terraform".into(), OutputValue::new(&"applied"));
    state_object.put_unconditional(Bytes::from(state.to_bytes()));
}

/// Another s3state writer that updates with compare-and-swap only.
async fn cas_update(store: MemoryStore, name: &'static str) {
    RemoteState::with_options(store, lock_free())
        .update(|state| bump(state, name))
        .await
        .unwrap();
}

fn seed_terraform_state(store: &MemoryStore) -> Written {
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state.lineage = uuid::Uuid::new_v4().to_string();
    state.serial = 1;
    set(&mut state, "count", 0);
    store.put_unconditional(Bytes::from(state.to_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Attacks that held up
// ---------------------------------------------------------------------------------------------

/// A lost answer, then two s3state writers in a row on top: the versions are searched and the
/// change is applied once, with either tag style.
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
#[tokio::test]
async fn updates_through_separate_managers_take_turns_at_the_lock() {
    let store = Hooked::new("turns.tfstate");
    seed_terraform_state(&store.inner);
    let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    store.on_put(
        "turns.tfstate",
        OnPut::Pause {
            entered: Arc::clone(&entered),
            release: Arc::clone(&release),
        },
    );
    let first = Arc::new(RemoteState::with_options(
        store.clone(),
        locking(Duration::from_secs(5)),
    ));
    let second = Arc::new(RemoteState::with_options(
        store.clone(),
        locking(Duration::from_secs(5)),
    ));
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
// Holes found in review: these fail on the code under review (issue 11 follow-ups). Each
// asserts the behaviour the issue promises.
// ---------------------------------------------------------------------------------------------

mod review_findings {
    use super::*;
    use s3state::{Persister, Transient};

    impl Hooked {
        fn show_as_null(&self, version_id: String) {
            self.script.lock().unwrap().null_version =
                Some((self.inner.key().to_owned(), version_id));
        }
    }

    // ---------------------------------------------------------------------------------------------

    /// A state written before the bucket's versioning was enabled keeps the version id `"null"`
    /// for ever. `find_landed` gives up ("not landed") whenever any `"null"` version is in the
    /// listing, even one older than the base, so in such a bucket the exact lookup of issue 11,
    /// bug 3 is off and a lost answer followed by other writers makes `update` apply twice.
    #[tokio::test]
    async fn attack_a_pre_versioning_null_version_disables_the_landed_lookup() {
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
    #[tokio::test]
    async fn attack_concurrent_updates_on_a_shared_manager_each_take_the_lock() {
        let store = Hooked::new("shared.tfstate");
        let manager = Arc::new(RemoteState::new(store.clone()));
        manager.update(|s| set(s, "a", 0)).await.unwrap();

        // Task A's update holds the lock; its PUT is in flight.
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        store.on_put(
            "shared.tfstate",
            OnPut::Pause {
                entered: Arc::clone(&entered),
                release: Arc::clone(&release),
            },
        );
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
    #[tokio::test(start_paused = true)]
    async fn attack_update_giving_up_after_timeouts_does_not_claim_not_applied() {
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
    #[tokio::test(start_paused = true)]
    async fn attack_update_contention_after_a_timed_out_round_hides_the_doubt() {
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
    #[tokio::test(start_paused = true)]
    async fn attack_a_late_first_lock_attempt_is_not_left_orphaned() {
        let store = Hooked::new("late-lock.tfstate");
        seed_terraform_state(&store.inner);
        let holder = RemoteState::new(store.inner.clone());
        let held = holder
            .lock(&LockInfo::new("OperationTypeApply"))
            .await
            .unwrap();
        store.on_put(&store.lock_key(), OnPut::StallThenRetry);

        let manager = Arc::new(RemoteState::with_options(
            store.clone(),
            locking(Duration::from_secs(5)),
        ));
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
    #[tokio::test]
    async fn attack_unlock_does_not_delete_a_lock_another_holder_took_with_the_same_id() {
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
    #[tokio::test(start_paused = true)]
    async fn attack_a_failed_unlock_does_not_make_later_updates_lock_free() {
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
    #[tokio::test(start_paused = true)]
    async fn attack_a_panicking_change_does_not_orphan_the_lock() {
        let store = MemoryStore::new("panic.tfstate");
        seed_terraform_state(&store);
        let manager = Arc::new(RemoteState::with_options(
            store.clone(),
            locking(Duration::from_millis(200)),
        ));
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
    #[tokio::test(start_paused = true)]
    async fn attack_a_cancelled_update_does_not_orphan_the_lock_or_skip_it_later() {
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
    #[tokio::test]
    async fn attack_debug_of_a_read_object_does_not_print_secrets() {
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
}

// ---------------------------------------------------------------------------------------------
// Review of the store-ignores-conditions check, the waiting lock's conditional poll and the
// read-only commands (issue 13/16 follow-ups).
// ---------------------------------------------------------------------------------------------

mod ignores_conditions_review {
    use super::*;
    use s3state::Refresher;

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
}
