//! The release gate: a caller's unlock waits for the updates that run under that lock.
//!
//! An update whose caller already holds the state's lock (taken through a manager) runs under
//! it instead of taking its own. If another task released that lock between the update's look
//! and its write, or while the write was in flight, a Terraform could lock, read the old
//! state, and later overwrite the update's write with a blind PUT. So such an update holds the
//! gate open (shared), and an unlock through any manager over the same object in this process
//! closes it (exclusive) first, waiting until those updates are done.
//!
//! Acquire the gate before a manager's I/O lock, never after: an unlock that waits to close
//! the gate must not be waiting for something a gate holder holds.

use super::per_object::PerObject;
use std::sync::Arc;

/// The gate of one object, shared by every manager over it in this process.
#[derive(Debug, Default)]
pub(crate) struct ReleaseGate {
    gate: tokio::sync::RwLock<()>,
}

static GATES: PerObject<ReleaseGate> = PerObject::new();

impl ReleaseGate {
    /// The gate for an object: the process-wide one for `identity`, or one of its own for a
    /// store without an identity.
    pub(crate) fn for_object(identity: Option<String>) -> Arc<ReleaseGate> {
        GATES.for_object(identity)
    }

    /// Held by an update that relies on a lock the caller holds, for as long as it runs.
    pub(crate) async fn relying_on_lock(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().await
    }

    /// Held while a lock is released: waits for every update relying on a lock to finish.
    pub(crate) async fn releasing(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }
}
