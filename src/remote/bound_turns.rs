//! The line of clients waiting, in this process, for a lock held across requests
//! ([`super::RemoteState::lock_bound`]) to be let go.
//!
//! A front end such as the gateway takes a client's lock at its LOCK and lets it go at its
//! UNLOCK. Without a line, every other client's LOCK meanwhile is refused by the store (a
//! read of the state, a refused lock PUT and a read of the holder: three requests) and the
//! client polls again on its own schedule, so that the polls of many clients crowd out the
//! holder's own requests at the store. With a line, a LOCK that finds a bound lock taken
//! through this process waits, first come first served and for at most
//! `RemoteStateOptions::bound_lock_wait`, until that lock is let go through this process, and
//! only then asks the store.
//!
//! Nothing here decides who holds the lock: the store does, at every attempt, as before. The
//! line only decides *when* a LOCK asks. A lock let go elsewhere (another replica, a
//! force-unlock from the CLI) is noticed when the wait runs out and the store is asked.
//!
//! Shared by every manager over one object in the process, like the coordinator's values
//! ([`super::coordinator::PerObject`]); kept while a bound lock taken here is held or anyone
//! waits, since the gateway makes a manager per request.

use super::coordinator::{PerObject, Shared};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The line for one object.
pub(crate) struct BoundTurns {
    /// LOCKs waiting here, first come first served (tokio's mutex queues fairly).
    line: tokio::sync::Mutex<()>,
    /// The ID of the bound lock taken through this process and not yet let go through it.
    held: tokio::sync::watch::Sender<Option<String>>,
    /// LOCKs in the line or waiting at its head.
    waiting: AtomicUsize,
}

impl Default for BoundTurns {
    fn default() -> Self {
        BoundTurns {
            line: tokio::sync::Mutex::new(()),
            held: tokio::sync::watch::Sender::new(None),
            waiting: AtomicUsize::new(0),
        }
    }
}

impl Shared for BoundTurns {
    fn must_outlive_managers(&self) -> bool {
        self.held.borrow().is_some() || self.waiting.load(Ordering::SeqCst) > 0
    }
}

static BOUND_TURNS: PerObject<BoundTurns> = PerObject::new();

impl BoundTurns {
    /// The line for the object with this identity (one of its own when it has none).
    pub(crate) fn for_object(identity: Option<String>) -> std::sync::Arc<BoundTurns> {
        BOUND_TURNS.for_object(identity)
    }

    /// Waits, for at most `wait`, for this LOCK's turn: its place at the head of the line, and
    /// no bound lock taken through this process still held. The guard keeps the place until
    /// the LOCK has its answer from the store, so the next in line asks after it. `None`
    /// when `wait` is zero or ran out: then the LOCK asks the store at once, as without a
    /// line.
    pub(crate) async fn turn(&self, wait: Duration) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        if wait.is_zero() {
            return None;
        }
        let deadline = tokio::time::Instant::now() + wait;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _counted = Counted(&self.waiting);
        let place = tokio::time::timeout_at(deadline, self.line.lock())
            .await
            .ok()?;
        let mut held = self.held.subscribe();
        tokio::time::timeout_at(deadline, held.wait_for(Option::is_none))
            .await
            .ok()?
            .ok()?;
        Some(place)
    }

    /// A bound lock with this ID was taken (or found already held by its caller) here.
    pub(crate) fn taken(&self, id: &str) {
        self.held.send_replace(Some(id.to_owned()));
    }

    /// The bound lock was let go, or found not held: the next in line may ask.
    pub(crate) fn released(&self) {
        self.held.send_replace(None);
    }
}

/// Counts a LOCK as waiting while it is in scope.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
