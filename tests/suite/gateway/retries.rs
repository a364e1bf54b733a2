//! A client's repeated requests through the gateway: a POST re-sent after a 5xx whose first
//! attempt lands after all is one write, answered as a success. In memory, through
//! `handle_state_request`.

use super::in_memory::Client;
use crate::common::hooked::{Hooked, OnPut, action};

const LINEAGE: &str = "0b8f6f2e-9c3e-4c1b-8d57-2f3f5a4e7d11";

/// From the adversarial review of the one write path (issue 22): go-retryablehttp re-sends a
/// POST answered 502. Here the first attempt's PUT got no answer (it stalled in the network)
/// and lands just before the retry's PUT, which is then refused (412) because the state is
/// already the very body it carries. The old gateway looked at the state after a refused PUT
/// and answered 200 when it held the body sent; the one write path answered 409 ("changed
/// during the write"), so Terraform reported a failed persist of a state that was stored.
#[tokio::test(start_paused = true)]
async fn a_retried_post_whose_first_attempt_lands_first_is_a_success() {
    let store = Hooked::new("review/retried-post.tfstate").forwarding_identity();
    let ci = Client::new(&store, "ci");
    ci.post(None, LINEAGE, 1, 1)
        .await
        .expect(200, "the first state");
    ci.lock("lock-1").await.expect(200, "LOCK");

    // The first attempt stalls: 502, and go-retryablehttp sends the same body again.
    store.next_write(OnPut::Stall);
    ci.post(Some("lock-1"), LINEAGE, 2, 2)
        .await
        .expect(502, "the attempt that got no answer");
    // The stalled attempt arrives just before the retry's PUT.
    store.next_write(OnPut::Before(action(|store: Hooked| async move {
        store.land_stalled().await;
    })));
    ci.post(Some("lock-1"), LINEAGE, 2, 2)
        .await
        .expect(200, "the retry of a write that is stored");

    let stored = store.stored().unwrap();
    assert_eq!(stored.serial, 2);
    assert_eq!(store.inner.version_count(), 2, "one version per write");
    ci.unlock("lock-1").await.expect(200, "UNLOCK");
}

/// From the adversarial review of the one write path (issue 22): a write in doubt is
/// conditional, so once another write lands the release gate forgets every doubt
/// (`none_can_land`): "the object moved on". A create (`If-None-Match: *`) is the exception:
/// it can land again as soon as the object is gone. Here the first POST of a new state stalls
/// (502), its retry lands, the client deletes the state under its lock and unlocks at once;
/// the stalled create may then still land under the next holder's lock, bringing the deleted
/// state back (a Terraform on the S3 backend would read "no state" and then find one, or
/// overwrite it). The UNLOCK should wait out the create's settle time, as it does for any
/// write in doubt.
#[tokio::test(start_paused = true)]
async fn an_unlock_after_a_delete_waits_for_a_create_still_in_doubt() {
    let store = Hooked::new("review/create-in-doubt.tfstate").forwarding_identity();
    let ci = Client::new(&store, "ci");
    ci.lock("lock-1").await.expect(200, "LOCK");
    store.next_write(OnPut::Stall);
    ci.post(Some("lock-1"), LINEAGE, 1, 1)
        .await
        .expect(502, "the create that got no answer");
    ci.post(Some("lock-1"), LINEAGE, 1, 1)
        .await
        .expect(200, "its retry");
    ci.delete(Some("lock-1"))
        .await
        .expect(200, "DELETE under the lock");
    assert_eq!(store.stalled(), 1, "the first create is still on its way");

    let unlocking = tokio::spawn({
        let ci = ci.clone();
        async move { ci.unlock("lock-1").await.status() }
    });
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(
        !unlocking.is_finished() && store.lock_held(),
        "the lock is released while a create it was sent under may still land"
    );
    assert_eq!(unlocking.await.unwrap(), 200);
}

/// From issue 23, item 4: the "may still land" mark of a write that got no answer lived only
/// in the replica that sent it, and the next UNLOCK (perhaps to another replica behind the
/// load balancer) released the lock at once, so the late write could land under the next
/// holder's lock. The mark is now recorded in the lock object, which every replica reads.
#[tokio::test(start_paused = true)]
async fn an_unlock_on_another_replica_waits_for_a_write_still_in_doubt() {
    let bucket = s3state::store::memory::MemoryStore::new("review/replicas.tfstate");
    // Two replicas share nothing but the store.
    let replica_a = Hooked::over(bucket.clone().in_another_process()).forwarding_identity();
    let replica_b = Hooked::over(bucket.clone().in_another_process()).forwarding_identity();
    let (ci_a, ci_b) = (Client::new(&replica_a, "ci"), Client::new(&replica_b, "ci"));
    ci_a.lock("lock-1").await.expect(200, "LOCK");
    ci_a.post(Some("lock-1"), LINEAGE, 1, 1)
        .await
        .expect(200, "the first state");
    replica_a.next_write(OnPut::Stall);
    ci_a.post(Some("lock-1"), LINEAGE, 2, 2)
        .await
        .expect(502, "a write that got no answer");

    let unlocking = tokio::spawn(async move { ci_b.unlock("lock-1").await.status() });
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(
        !unlocking.is_finished() && replica_b.lock_held(),
        "another replica released the lock while a write under it may still land"
    );
    assert_eq!(unlocking.await.unwrap(), 200);
    assert!(!replica_b.lock_held());
}
