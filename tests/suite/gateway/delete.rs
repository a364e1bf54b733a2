//! DELETE through the gateway under a client's lock: held to what a POST under the same lock
//! is held to. In memory, through `handle_state_request`.

use super::in_memory::Client;
use crate::common::hooked::Hooked;
use crate::common::memory::{cas_update, count};
use s3state::server::StateMethod;

const LINEAGE: &str = "6d0c2b9a-3f41-4a7e-b1c5-8e2d9f0a4b37";

/// From the adversarial review of the one write path (issue 22): a write under a client's
/// lock is fenced (accepted only onto the snapshot the lock was taken on, or one written under
/// it), and a POST sent after the state changed behind the lock's back is refused (409). A
/// DELETE under the same lock was not fenced: it deleted whatever was current, so a snapshot
/// the client never saw (here a compare-and-swap writer's, made while the client held the
/// lock) was removed without a word.
#[tokio::test]
async fn a_delete_under_a_lock_is_refused_when_the_state_changed_behind_the_lock() {
    let store = Hooked::new("review/delete-fenced.tfstate").forwarding_identity();
    let ci = Client::new(&store, "ci");
    ci.post(None, LINEAGE, 1, 1)
        .await
        .expect(200, "the first state");
    ci.lock("lock-1").await.expect(200, "LOCK");

    // A writer that does not lock writes on top, behind the lock's back.
    cas_update(store.inner.clone(), "behind").await;
    assert_eq!(store.stored().unwrap().serial, 2);

    ci.post(Some("lock-1"), LINEAGE, 2, 2)
        .await
        .expect(409, "a POST under the lock onto the changed state");
    ci.delete(Some("lock-1"))
        .await
        .expect(409, "a DELETE under the lock of the changed state");

    let stored = store
        .stored()
        .expect("the snapshot written behind the lock is kept");
    assert_eq!(stored.serial, 2);
    assert_eq!(count(&stored, "behind"), 1);
    ci.unlock("lock-1").await.expect(200, "UNLOCK");
}

/// From the adversarial review of the one write path (issue 22): a POST sent under a lock ID
/// that is no longer held (an admin force-unlocked it) is refused (409, "not held"): the
/// client believes it holds a lock it does not. A DELETE sent under the same stale ID was
/// carried out under a lock the gateway took for it, as if no ID had been sent: the client
/// whose lock was taken away deleted the state.
#[tokio::test]
async fn a_delete_under_a_lock_that_is_no_longer_held_is_refused() {
    let store = Hooked::new("review/delete-stale-id.tfstate").forwarding_identity();
    let ci = Client::new(&store, "ci");
    let admin = Client::admin(&store, "admin");
    ci.post(None, LINEAGE, 1, 1)
        .await
        .expect(200, "the first state");
    ci.lock("lock-1").await.expect(200, "LOCK");
    admin
        .send(StateMethod::Unlock, None, b"")
        .await
        .expect(200, "the admin's force-unlock");

    ci.post(Some("lock-1"), LINEAGE, 2, 2)
        .await
        .expect(409, "a POST under the released lock");
    ci.delete(Some("lock-1"))
        .await
        .expect(409, "a DELETE under the released lock");

    assert_eq!(store.stored().expect("the state is kept").serial, 1);
    assert!(!store.lock_held(), "no lock is left behind");
}
