//! Helpers for the tests on the in-memory store: counters in outputs, the options of a
//! compare-and-swap or a locking updater, and Terraform's plain writes.

use bytes::Bytes;
use s3state::store::Written;
use s3state::store::memory::MemoryStore;
use s3state::{LockRetry, OutputValue, RemoteState, RemoteStateOptions, State, UpdateLocking};
use std::time::Duration;

pub fn count(state: &State, name: &str) -> u64 {
    state
        .outputs
        .get(name)
        .and_then(|o| o.to_value().as_u64())
        .unwrap_or(0)
}

pub fn set(state: &mut State, name: &str, value: u64) {
    state.outputs.insert(name.into(), OutputValue::new(&value));
}

pub fn bump(state: &mut State, name: &str) {
    let next = count(state, name) + 1;
    set(state, name, next);
}

pub fn lock_free() -> RemoteStateOptions {
    RemoteStateOptions {
        update_locking: UpdateLocking::Disabled,
        ..RemoteStateOptions::default()
    }
}

pub fn locking(timeout: Duration) -> RemoteStateOptions {
    RemoteStateOptions {
        update_locking: UpdateLocking::Lock { timeout },
        update_lock_retry: LockRetry {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(50),
        },
        ..RemoteStateOptions::default()
    }
}

/// Terraform's persist while it holds the lock: a plain PUT of the state it read at lock time,
/// with its own change.
pub fn terraform_persist(state_object: &MemoryStore, read: Option<State>) {
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
pub async fn cas_update(store: MemoryStore, name: &'static str) {
    RemoteState::with_options(store, lock_free())
        .update(|state| bump(state, name))
        .await
        .unwrap();
}

pub fn seed_terraform_state(store: &MemoryStore) -> Written {
    let mut state = State::new(semver::Version::new(1, 15, 5));
    state.lineage = uuid::Uuid::new_v4().to_string();
    state.serial = 1;
    set(&mut state, "count", 0);
    store.put_unconditional(Bytes::from(state.to_bytes()))
}
