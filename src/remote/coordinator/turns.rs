//! Turns for [`crate::RemoteState::update`]: who goes next when several updates of one state
//! are waiting.
//!
//! Two rules live here, and nowhere else:
//!
//! - **In process, first come, first served.** Managers over the same object (as
//!   [`crate::Store::identity`] names it) share one [`Turnstile`], and their updates queue on it
//!   (tokio's mutex is fair) before they touch the store. Polling the store's lock, or losing
//!   compare-and-swap rounds, against an update in the same process costs requests and lets
//!   a hot task starve the others; a queue costs nothing and is fair.
//! - **Across processes, a courtesy gap**, for waiters that do not read the lock queue
//!   (`queue`, which orders s3state's own writers and decides whether the gap applies: only
//!   when nobody is queued). An update that was refused the store's lock
//!   recently knows other processes want the state too. Its process's next update then waits
//!   a short gap after the last release before locking again, so that a waiter polling the
//!   lock finds it free. Without contention there is no gap, so a lone writer runs at full
//!   speed.
//!
//! Neither rule is needed for correctness: the store's lock and the conditional writes
//! decide every race. They only decide who waits, and how much that costs.

use super::{PerObject, Shared};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How long a refusal counts as evidence that another process is contending for the lock.
const CONTENTION_MEMORY: Duration = Duration::from_secs(5);

/// The longest poll interval a courtesy gap is sized for, so that a slow poll schedule (such
/// as Terraform's, up to 16 s) does not make every update under contention sleep that long.
const LONGEST_GAP_POLL: Duration = Duration::from_millis(100);

/// The queues and contention signals of one object, shared by every manager over it in this
/// process.
#[derive(Debug, Default)]
pub(crate) struct Turnstile {
    /// Locked updates queue here, then take the store's lock.
    locked: tokio::sync::Mutex<()>,
    /// Compare-and-swap-only updates queue here. A separate queue, so an update that opted out
    /// of the lock never waits behind one that waits for a lock Terraform holds; the two still
    /// settle their races through conditional writes.
    unlocked: tokio::sync::Mutex<()>,
    signals: Mutex<Signals>,
}

#[derive(Debug, Default)]
struct Signals {
    /// When an update through this turnstile was last refused the store's lock.
    last_refused: Option<Instant>,
    /// When an update through this turnstile last released the store's lock.
    last_released: Option<Instant>,
}

impl Shared for Turnstile {}

/// Every shared turnstile in the process, by object identity.
static SHARED: PerObject<Turnstile> = PerObject::new();

impl Turnstile {
    /// The turnstile for an object: the process-wide one for `identity`, or one of its own
    /// for a store without an identity.
    pub(crate) fn for_object(identity: Option<String>) -> Arc<Turnstile> {
        SHARED.for_object(identity)
    }

    /// Waits for this process's turn to take the store's lock, up to `timeout`. `None` when
    /// the time ran out first.
    pub(crate) async fn locked_turn(
        &self,
        timeout: Duration,
    ) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        tokio::time::timeout(timeout, self.locked.lock()).await.ok()
    }

    /// Waits for this process's turn at a compare-and-swap update.
    pub(crate) async fn unlocked_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.unlocked.lock().await
    }

    /// Records that an update was refused the store's lock: another process wants it.
    pub(crate) fn note_refused(&self) {
        self.signals().last_refused = Some(Instant::now());
    }

    /// Records that an update released the store's lock.
    pub(crate) fn note_released(&self) {
        self.signals().last_released = Some(Instant::now());
    }

    /// How long to wait before taking the store's lock again so that a process polling for
    /// it every `poll_interval` at most (capped at 100 ms) finds it free: zero unless this
    /// process was refused the lock within the last few seconds and released it less than a
    /// poll interval ago.
    pub(crate) fn courtesy_gap(&self, poll_interval: Duration) -> Duration {
        let poll_interval = poll_interval.min(LONGEST_GAP_POLL);
        let signals = self.signals();
        let now = Instant::now();
        let contended = signals
            .last_refused
            .is_some_and(|at| now.duration_since(at) < CONTENTION_MEMORY);
        match (contended, signals.last_released) {
            (true, Some(released)) => {
                // A little over one poll interval, so a waiter polling at its slowest still
                // polls inside the gap.
                let gap = poll_interval + poll_interval / 5;
                gap.saturating_sub(now.duration_since(released))
            }
            _ => Duration::ZERO,
        }
    }

    fn signals(&self) -> std::sync::MutexGuard<'_, Signals> {
        self.signals.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managers_over_the_same_object_share_one_turnstile_and_others_do_not() {
        let a = Turnstile::for_object(Some("object-a".into()));
        let a_again = Turnstile::for_object(Some("object-a".into()));
        let b = Turnstile::for_object(Some("object-b".into()));
        let anonymous = Turnstile::for_object(None);
        assert!(Arc::ptr_eq(&a, &a_again));
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &anonymous));
    }

    #[test]
    fn an_object_whose_managers_are_all_gone_gets_a_fresh_turnstile() {
        let first = Turnstile::for_object(Some("object-gone".into()));
        first.note_refused();
        drop(first);
        let second = Turnstile::for_object(Some("object-gone".into()));
        assert!(second.signals().last_refused.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_courtesy_gap_applies_only_after_a_refusal_and_a_recent_release() {
        let poll = Duration::from_millis(50);
        let turnstile = Turnstile::default();
        turnstile.note_released();
        assert_eq!(
            turnstile.courtesy_gap(poll),
            Duration::ZERO,
            "no contention seen"
        );
        turnstile.note_refused();
        turnstile.note_released();
        assert_eq!(turnstile.courtesy_gap(poll), Duration::from_millis(60));
        tokio::time::advance(Duration::from_millis(45)).await;
        assert_eq!(turnstile.courtesy_gap(poll), Duration::from_millis(15));
        tokio::time::advance(Duration::from_millis(45)).await;
        assert_eq!(turnstile.courtesy_gap(poll), Duration::ZERO, "gap over");
        tokio::time::advance(CONTENTION_MEMORY).await;
        turnstile.note_released();
        assert_eq!(
            turnstile.courtesy_gap(poll),
            Duration::ZERO,
            "the refusal is too old to count"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_poll_schedule_does_not_stretch_the_courtesy_gap() {
        let turnstile = Turnstile::default();
        turnstile.note_refused();
        turnstile.note_released();
        assert_eq!(
            turnstile.courtesy_gap(Duration::from_secs(16)),
            Duration::from_millis(120)
        );
    }
}
