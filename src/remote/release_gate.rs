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
//!
//! The gate also remembers since when a write to the object may still land (it got no
//! answer, or was cancelled on the wire): an unlock waits until that cannot happen any more
//! (`RemoteStateOptions::unanswered_write_settle`).

use super::per_object::PerObject;
use std::sync::Arc;

/// The gate of one object, shared by every manager over it in this process.
#[derive(Debug, Default)]
pub(crate) struct ReleaseGate {
    gate: tokio::sync::RwLock<()>,
    /// Since when a write may still land; `None` when none can.
    unanswered_since: std::sync::Mutex<Option<tokio::time::Instant>>,
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

    /// Records that a write may still land, from now (`true`), or that none can any more
    /// (`false`: the state moved on from what such writes were conditional on).
    pub(crate) fn note_unanswered(&self, may_land: bool) {
        *self.since() = may_land.then(tokio::time::Instant::now);
    }

    /// What is left of `settle` after the last write that may still land; zero if none.
    pub(crate) fn settle_left(&self, settle: std::time::Duration) -> std::time::Duration {
        self.since().map_or(std::time::Duration::ZERO, |since| {
            (since + settle).saturating_duration_since(tokio::time::Instant::now())
        })
    }

    fn since(&self) -> std::sync::MutexGuard<'_, Option<tokio::time::Instant>> {
        // A plain value: a panic while it was held cannot leave it half-written.
        self.unanswered_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks a write as possibly still landing while it is on the wire; if it is dropped (its
/// caller was cancelled) before [`OnTheWire::answered`], the mark stays, dated from then.
pub(crate) struct OnTheWire {
    gate: Arc<ReleaseGate>,
    answered: bool,
}

impl OnTheWire {
    pub(crate) fn new(gate: &Arc<ReleaseGate>) -> Self {
        gate.note_unanswered(true);
        OnTheWire {
            gate: Arc::clone(gate),
            answered: false,
        }
    }

    /// The store answered: whether the write may still land is now the caller's to record.
    pub(crate) fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for OnTheWire {
    fn drop(&mut self) {
        if !self.answered {
            self.gate.note_unanswered(true);
        }
    }
}
