//! An in-memory store whose next write (of the state, or of its `.tflock`) follows a script:
//! paused, answered and lost, applied and failed, or stalled and applied later. The lost-write
//! regressions and the unlock attacks use it to act at the exact moment that matters.

use async_trait::async_trait;
use bytes::Bytes;
use s3state::store::memory::MemoryStore;
use s3state::store::{
    DeleteOutcome, ETag, Fetched, Headed, ObjectMetadata, Precondition, PutOutcome, Store,
    VersionedStore,
};
use s3state::{Error, OutputValue, State};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// What the scripted store does to the next state write.
#[derive(Clone, Default)]
pub enum Script {
    /// Pass writes through.
    #[default]
    Normal,
    /// Hold the next write until `release` is notified, after telling `entered`.
    Pause {
        entered: Arc<Notify>,
        release: Arc<Notify>,
    },
    /// Apply the next write, lose its answer (the SDK's retry then meets it: 412), and let
    /// Terraform write on top before the caller looks.
    LoseAnswerThenTerraformWrites,
    /// Apply the next write and then fail without an answer.
    ApplyThenFail,
    /// Fail the next write without applying it.
    FailWithoutApplying,
    /// Fail the next write at once without an answer, and apply it `after` later (a request
    /// stuck in the network), recording whether the state's lock was still there then.
    StallThenLand {
        after: std::time::Duration,
        lock_held_when_it_landed: Arc<Mutex<Option<bool>>>,
    },
}

#[derive(Clone)]
pub struct Scripted {
    pub inner: MemoryStore,
    /// Applies to this object's next write.
    script: Arc<Mutex<Script>>,
    /// Applies to the next write of the `.tflock` sibling.
    lock_script: Arc<Mutex<Script>>,
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Scripted {
    pub fn new(key: &str) -> Self {
        Scripted {
            inner: MemoryStore::new(key),
            script: Arc::default(),
            lock_script: Arc::default(),
        }
    }

    /// What the next write of the state does.
    pub fn next_write(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }

    /// What the next write of the `.tflock` object does.
    pub fn next_lock_write(&self, script: Script) {
        *self.lock_script.lock().unwrap() = script;
    }

    /// The lock object's body, if a lock is held.
    pub fn lock_body(&self) -> Option<Bytes> {
        self.inner.sibling(".tflock").current_body()
    }

    pub fn stored(&self) -> Option<State> {
        self.inner
            .current_body()
            .map(|body| State::from_slice(&body).unwrap())
    }
}

pub fn ambiguous() -> Error {
    Error::Store {
        operation: "PutObject",
        location: "scripted".into(),
        message: "the connection was reset and the retries gave up".into(),
        source: None,
    }
}

#[async_trait]
impl Store for Scripted {
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
        let script = std::mem::take(&mut *self.script.lock().unwrap());
        match script {
            Script::Normal => self.inner.put(body, precondition, metadata).await,
            Script::Pause { entered, release } => {
                entered.notify_one();
                release.notified().await;
                self.inner.put(body, precondition, metadata).await
            }
            Script::LoseAnswerThenTerraformWrites => {
                self.inner.put(body, precondition, metadata).await?;
                let mut state = self.stored().unwrap();
                state.serial += 1;
                state
                    .outputs
                    .insert("terraform".into(), OutputValue::new(&"applied"));
                self.inner.put_unconditional(Bytes::from(state.to_bytes()));
                Ok(PutOutcome::PreconditionFailed)
            }
            Script::ApplyThenFail => {
                self.inner.put(body, precondition, metadata).await?;
                Err(ambiguous())
            }
            Script::FailWithoutApplying => Err(ambiguous()),
            Script::StallThenLand {
                after,
                lock_held_when_it_landed,
            } => {
                let inner = self.inner.clone();
                let (precondition, metadata) = (precondition.clone(), metadata.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let held = inner.sibling(".tflock").current_body().is_some();
                    *lock_held_when_it_landed.lock().unwrap() = Some(held);
                    inner.put(body, &precondition, &metadata).await
                });
                Err(ambiguous())
            }
        }
    }

    async fn delete(&self, if_match: Option<&ETag>) -> s3state::Result<DeleteOutcome> {
        self.inner.delete(if_match).await
    }

    fn sibling(&self, suffix: &str) -> Self {
        // The state's scripts apply to the state object; the lock's, to its `.tflock`.
        let script = if suffix == ".tflock" {
            Arc::clone(&self.lock_script)
        } else {
            Arc::default()
        };
        Scripted {
            inner: self.inner.sibling(suffix),
            script,
            lock_script: Arc::default(),
        }
    }

    fn location(&self) -> &str {
        self.inner.location()
    }

    fn path(&self) -> &str {
        self.inner.path()
    }

    fn as_versioned(&self) -> Option<&dyn VersionedStore> {
        Some(&self.inner)
    }

    fn identity(&self) -> Option<String> {
        self.inner.identity()
    }
}
