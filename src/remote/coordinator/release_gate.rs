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
//! The gate also remembers until when a write to the object may still land (it got no
//! answer, or was cancelled on the wire; `RemoteStateOptions::unanswered_write_settle` after
//! that): an unlock waits until none can. Only a write that landed (the object moved on) or
//! a refusal of a write on the same state (the object is not in that state) ends the doubt.

use super::{PerObject, Shared};
use crate::store::Precondition;
use std::sync::Arc;

/// The gate of one object, shared by every manager over it in this process.
#[derive(Debug, Default)]
pub(crate) struct ReleaseGate {
    gate: tokio::sync::RwLock<()>,
    /// Writes that got no answer, by the state they were conditional on: until when each may
    /// still land.
    in_doubt: std::sync::Mutex<std::collections::HashMap<String, tokio::time::Instant>>,
}

static GATES: PerObject<ReleaseGate> = PerObject::new();

impl Shared for ReleaseGate {
    /// A gate that remembers a write in doubt outlives its managers, so that the next
    /// release of the object's lock in this process waits it out.
    fn must_outlive_managers(&self) -> bool {
        !self.settle_left().is_zero()
    }
}

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

    /// Records that a write conditional on `condition` may still land until `until`.
    pub(crate) fn may_land(&self, condition: &Precondition, until: tokio::time::Instant) {
        let mut in_doubt = self.in_doubt();
        let deadline = in_doubt.entry(condition_key(condition)).or_insert(until);
        *deadline = (*deadline).max(until);
    }

    /// Records that no write conditional on `condition` can land any more: one was refused
    /// (412), so the object is not in that state.
    pub(crate) fn cannot_land(&self, condition: &Precondition) {
        self.in_doubt().remove(&condition_key(condition));
    }

    /// Records that a write landed: the object moved on from every snapshot that a write
    /// still on the wire was conditional on (`If-Match`), so none of them can land. A create
    /// (`If-None-Match: *`) stays in doubt for its settle time: it needs only the object to be
    /// absent, which a delete makes it again (from the adversarial review of the one write
    /// path: LOCK, a create in doubt, its retry lands, DELETE, UNLOCK released at once, and
    /// the late create brought the deleted state back under the next holder's lock).
    pub(crate) fn none_can_land(&self) {
        let create = condition_key(&Precondition::Create);
        self.in_doubt().retain(|condition, _| *condition == create);
    }

    /// Waits until a lock on the object can be let go: no write relies on it (the gate is
    /// closed, for a moment) and none that got no answer can still land.
    pub(crate) async fn until_releasable(&self) {
        loop {
            let left = self.settle_left();
            if !left.is_zero() {
                tokio::time::sleep(left).await;
            }
            let _closed = self.releasing().await;
            if self.settle_left().is_zero() {
                return;
            }
        }
    }

    /// How long until no write that got no answer can land; zero if none is in doubt.
    pub(crate) fn settle_left(&self) -> std::time::Duration {
        let now = tokio::time::Instant::now();
        self.in_doubt()
            .values()
            .map(|until| until.saturating_duration_since(now))
            .max()
            .unwrap_or_default()
    }

    fn in_doubt(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, tokio::time::Instant>> {
        // Plain values: a panic while it was held cannot leave it half-written.
        self.in_doubt.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The state a write was conditional on, as a key: its tag, or none for a create.
fn condition_key(condition: &Precondition) -> String {
    match condition {
        Precondition::Create => String::new(),
        Precondition::Match(etag) => etag.as_str().to_owned(),
    }
}

/// A write on the wire: if it is dropped (its caller was cancelled) before
/// [`OnTheWire::answered`], the write may still land, for `settle` after that. (A write
/// still on the wire needs no mark: an unlock waits for the I/O lock it holds.)
pub(crate) struct OnTheWire {
    gate: Arc<ReleaseGate>,
    condition: Precondition,
    settle: std::time::Duration,
    answered: bool,
}

impl OnTheWire {
    pub(crate) fn new(
        gate: &Arc<ReleaseGate>,
        condition: &Precondition,
        settle: std::time::Duration,
    ) -> Self {
        OnTheWire {
            gate: Arc::clone(gate),
            condition: condition.clone(),
            settle,
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
            self.gate
                .may_land(&self.condition, tokio::time::Instant::now() + self.settle);
        }
    }
}
