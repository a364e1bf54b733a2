//! The one coordinator of writes to one stored object in this process: who goes next, when a
//! lock may be let go, and which writes may still land. Every front end's write passes
//! through it the same way, because every front end writes through [`super::RemoteState`].
//!
//! # Words
//!
//! - **Land**: a write lands when the store applies it. A write *on the wire* has been sent
//!   and not answered yet. A write is *in doubt* when it got no answer (a timeout, a reset, a
//!   cancelled call) and was not found among the object's versions: it may still land, but
//!   only onto the snapshot it was conditional on.
//! - **Settle time** (`RemoteStateOptions::unanswered_write_settle`, 10 s): how long a write
//!   in doubt is assumed able to land. A lock is not released while one may (see
//!   [`release_gate`]). Only a write that landed (the object moved on) or a refusal of a write
//!   on the same snapshot (the object is not in that state) ends the doubt sooner.
//!   (Applying what a read found to a manager's snapshots is `RemoteState::apply_read`, and
//!   has nothing to do with this.)
//! - **Turn**: an update's place in this process's first-come-first-served line for an object
//!   ([`turns`]); across processes, its place in the *lock queue* ([`queue`]); and, for
//!   waiters that do not read the queue (Terraform, older s3state), the *courtesy gap* a
//!   process that saw contention leaves after releasing, so that their pollers find the lock
//!   free.
//! - **Lock queue** (`<key>.tflock.queue`, [`queue`]): s3state's waiting writers across
//!   processes, in one object beside the `.tflock` that Terraform never reads, changed only by
//!   compare-and-swap. A **ticket** is one waiter's place in it; the **head** is the first
//!   live ticket, the one waiter that polls the lock; a ticket is **live** while its renewal
//!   counter keeps moving, and **dead** once an observer has seen it unchanged for a **lease**
//!   (`LockQueue::lease`) on the observer's own clock.
//! - **Release gate**: held open (shared) by every write that relies on a lock a caller holds
//!   (a caller's lock through a manager, a client's bound lock), closed (exclusive) by every
//!   release of such a lock, which so waits for those writes.
//! - **Siblings**: two s3state writes made on the same parent snapshot; a store that stores
//!   both ignored `If-Match` (`Error::StoreIgnoresConditions`).
//!
//! # Lock order
//!
//! A write takes, in this order and never the reverse:
//!
//! 1. its **turn** ([`turns::Turnstile`]): only a write that takes a lock of its own, or a
//!    compare-and-swap write in its own line;
//! 2. its place in the **lock queue** ([`queue::lock_in_turn`]): only a write that takes a
//!    lock of its own, after its turn in process (so a process has at most one ticket per
//!    object). It holds nothing while it waits, and waiting in it ends with the store's lock
//!    taken (3), or with the caller's timeout; its ticket is removed in the background;
//! 3. the **release gate**, shared ([`release_gate::ReleaseGate`]): only a write under a lock
//!    someone else took (the caller's, a client's);
//! 4. the **store's lock** (`StoreLocker`: the `.tflock` object, then the store's secondary
//!    lock): only a write that takes its own, and never while holding the I/O lock;
//! 5. the manager's **I/O lock**, which keeps a manager's base snapshot and its tag changing
//!    together, and during which the write is on the wire.
//!
//! A release takes the release gate exclusively, then the I/O lock, then lets the store's lock
//! go. Waiting out the settle time is done holding none of them, so reads and other work go
//! on meanwhile. A write whose future is dropped releases its own lock in the background
//! (`ReleaseOnDrop`), after the gate and the settle time, like any release; a write dropped
//! on the wire marks itself in doubt ([`release_gate::OnTheWire`]). The store's lock keeps
//! its own bookkeeping of what it holds and of releases whose answer was lost (in
//! `StoreLocker`), which is about the lock object, not about writes.
//!
//! Everything here is shared by all managers over one object in the process, found by the
//! object's [`crate::Store::identity`] ([`PerObject`]); a store without an identity gets its
//! own. None of it is needed for correctness against other processes (the lock queue
//! included: a queue that cannot be used only makes waits unfair again): the store's lock and
//! the conditional writes decide every race. It decides who waits, and makes sure a lock is
//! never let go under a write that relies on it.

pub(crate) mod queue;
pub(crate) mod release_gate;
pub(crate) mod turns;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

/// What the registry asks of a shared value: whether it must outlive the managers that made
/// it. A release gate that remembers a write in doubt must: the next request over the object
/// (a gateway's UNLOCK after the POST whose write got no answer) may come when no manager of
/// the last one is left, and must still find the mark.
pub(crate) trait Shared: Default {
    /// True while the value holds something a later manager must see.
    fn must_outlive_managers(&self) -> bool {
        false
    }
}

/// A registry of `T`s by object identity, shared by every manager over that object in this
/// process. Managers are cheap and often made per call (`S3Backend::manager`, the gateway's
/// requests), so what must be common to them lives here. A value goes when its last manager
/// does, unless it must outlive them ([`Shared::must_outlive_managers`]); gone values are
/// swept at the next registration.
pub(crate) struct PerObject<T> {
    values: LazyLock<Mutex<HashMap<String, Arc<T>>>>,
}

impl<T: Shared> PerObject<T> {
    /// An empty registry, for a `static`.
    pub(crate) const fn new() -> Self {
        PerObject {
            values: LazyLock::new(empty),
        }
    }

    /// The value shared for `identity`, made on first use; a value of its own when the store
    /// has no identity (its object cannot be told apart from others).
    pub(crate) fn for_object(&self, identity: Option<String>) -> Arc<T> {
        let Some(identity) = identity else {
            return Arc::new(T::default());
        };
        let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        // Only the registry holds it, and nothing in it is still needed.
        values.retain(|_, value| Arc::strong_count(value) > 1 || value.must_outlive_managers());
        Arc::clone(
            values
                .entry(identity)
                .or_insert_with(|| Arc::new(T::default())),
        )
    }
}

fn empty<T>() -> Mutex<HashMap<String, Arc<T>>> {
    Mutex::new(HashMap::new())
}
