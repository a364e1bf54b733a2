//! `RemoteState::push` (the CLI's `s3state push`) judges the stored snapshot from its head: it
//! reads the body only when the head cannot decide, and decides exactly as a push that reads
//! the stored state does, even over heads whose metadata do not describe their body. On the
//! in-memory store.

use crate::common;
use crate::common::hooked::{Hooked, OnPut};
use bytes::Bytes;
use s3state::remote::Pushed;
use s3state::remote::metadata_keys as keys;
use s3state::store::memory::MemoryStore;
use s3state::store::{ObjectMetadata, Precondition, PutOutcome, Store, VersionedStore};
use s3state::{Error, OutputValue, PersistentMeta, RemoteState, State, Transient};

fn with_output(mut state: State, name: &str, value: i64) -> State {
    state
        .outputs
        .insert(name.to_owned(), OutputValue::new(&value));
    state
}

/// A store holding serial 1 of a state s3state wrote, and a manager over it that has not read.
async fn stored_by_s3state(inner: MemoryStore) -> (Hooked, State) {
    let store = Hooked::over(inner);
    let writer = RemoteState::new(store.clone());
    writer.update(common::set_output("a", 1)).await.unwrap();
    let stored = writer.state().unwrap();
    store.reads();
    (store, stored)
}

#[tokio::test]
async fn a_push_of_the_stored_state_reads_no_body_and_writes_nothing() {
    let (store, stored) = stored_by_s3state(MemoryStore::new("same.tfstate")).await;
    let versions = store.inner.version_count();
    let manager = RemoteState::new(store.clone());

    let pushed = manager.push(stored.clone(), false).await.unwrap();
    assert!(!pushed.written);
    assert_eq!(pushed.stored.serial, 1);
    assert_eq!(store.reads(), (0, 1), "one head, no body");
    assert_eq!(store.inner.version_count(), versions);
    // The manager knows the stored snapshot now, so its next read is a conditional one.
    assert_eq!(manager.state(), Some(stored.clone()));
    assert_eq!(manager.state_snapshot_meta().unwrap().serial, 1);
    manager.update(common::set_output("b", 2)).await.unwrap();
    assert_eq!(store.reads(), (0, 0), "the update's read was answered 304");
    assert_eq!(store.stored().unwrap().serial, 2);
}

#[tokio::test]
async fn a_newer_push_over_a_state_s3state_wrote_reads_no_body() {
    let (store, stored) = stored_by_s3state(MemoryStore::new("newer.tfstate")).await;
    let manager = RemoteState::new(store.clone());

    let mut changed = with_output(stored.clone(), "b", 2);
    changed.serial = 2;
    let pushed = manager.push(changed.clone(), false).await.unwrap();
    assert!(pushed.written);
    assert_eq!(store.reads(), (0, 1), "one head, no body");
    // As when the stored state is read: a change is numbered after the pushed serial.
    assert_eq!(pushed.stored.serial, 3);
    let mut expected = changed;
    expected.serial = 3;
    assert_eq!(
        store.inner.current_body().unwrap(),
        Bytes::from(expected.to_bytes())
    );

    // The same content under a newer serial keeps that serial.
    let mut renumbered = expected.clone();
    renumbered.serial = 7;
    let pushed = manager.push(renumbered.clone(), false).await.unwrap();
    assert!(pushed.written);
    assert_eq!(pushed.stored.serial, 7);
    assert_eq!(store.reads(), (0, 1));
    assert_eq!(
        store.inner.current_body().unwrap(),
        Bytes::from(renumbered.to_bytes())
    );
}

#[tokio::test]
async fn a_push_over_a_state_terraform_wrote_reads_its_body() {
    let store = Hooked::over(MemoryStore::new("terraform.tfstate"));
    store
        .inner
        .put_unconditional(Bytes::from_static(common::TERRAFORM_STATE));
    let stored = store.stored().unwrap();
    let manager = RemoteState::new(store.clone());

    let pushed = manager.push(stored.clone(), false).await.unwrap();
    assert!(!pushed.written, "Terraform's own state: nothing to push");
    assert_eq!(
        store.reads(),
        (1, 1),
        "no serial in the head: the body is read"
    );

    let mut next = with_output(stored, "b", 2);
    next.serial += 1;
    let pushed = manager.push(next, false).await.unwrap();
    assert!(pushed.written);
    assert_eq!(store.reads(), (0, 1), "unchanged since read: 304, no body");
}

#[tokio::test]
async fn a_push_of_the_stored_serial_with_other_content_reads_the_body_and_is_refused() {
    let (store, stored) = stored_by_s3state(MemoryStore::new("collision.tfstate")).await;
    let versions = store.inner.version_count();
    let manager = RemoteState::new(store.clone());

    let diverged = with_output(stored, "a", 9);
    let refused = manager.push(diverged.clone(), false).await.unwrap_err();
    assert!(
        matches!(refused, Error::SerialCollision { serial: 1, .. }),
        "{refused}"
    );
    assert_eq!(store.reads(), (1, 1), "other bytes: the body decides");
    assert_eq!(store.inner.version_count(), versions);

    let pushed = manager.push(diverged, true).await.unwrap();
    assert!(pushed.written);
    assert_eq!(pushed.stored.serial, 2);
}

#[tokio::test]
async fn a_store_without_checksums_has_the_body_read_only_when_the_sizes_agree() {
    let (store, stored) =
        stored_by_s3state(MemoryStore::new("no-checksum.tfstate").without_checksums()).await;
    let manager = RemoteState::new(store.clone());

    let pushed = manager.push(stored.clone(), false).await.unwrap();
    assert!(!pushed.written);
    assert_eq!(
        store.reads(),
        (1, 1),
        "same size, no checksum: the body is read"
    );

    let manager = RemoteState::new(store.clone());
    let mut longer = with_output(stored, "longer", 2);
    longer.serial = 2;
    let pushed = manager.push(longer, false).await.unwrap();
    assert!(pushed.written);
    assert_eq!(pushed.stored.serial, 3);
    assert_eq!(store.reads(), (0, 1), "another size is another content");
}

#[tokio::test]
async fn a_push_that_loses_a_race_after_the_head_overwrites_nothing() {
    let (store, stored) = stored_by_s3state(MemoryStore::new("race.tfstate")).await;
    let manager = RemoteState::new(store.clone());
    let mut next = with_output(stored, "b", 2);
    next.serial = 2;

    store.next_write(OnPut::terraform_writes_first(common::TERRAFORM_STATE));
    let refused = manager.push(next.clone(), false).await.unwrap_err();
    assert!(matches!(refused, Error::Conflict { .. }), "{refused}");
    assert_eq!(store.inner.current_body().unwrap(), common::TERRAFORM_STATE);

    // What won is what the manager now knows: the same push is judged against it.
    let again = manager.push(next, false).await.unwrap_err();
    assert!(matches!(again, Error::LineageMismatch { .. }), "{again}");
    assert_eq!(store.inner.current_body().unwrap(), common::TERRAFORM_STATE);
}

#[tokio::test]
async fn a_push_whose_answer_is_lost_is_found_in_the_store_and_not_written_again() {
    let (store, stored) = stored_by_s3state(MemoryStore::new("lost.tfstate")).await;
    let versions = store.inner.version_count();
    let manager = RemoteState::new(store.clone());
    let mut next = with_output(stored, "b", 2);
    next.serial = 2;

    store.next_write(OnPut::apply_then_fail());
    let pushed = manager.push(next.clone(), false).await.unwrap();
    assert!(pushed.written);
    assert_eq!(pushed.stored.serial, 3);
    assert_eq!(store.inner.version_count(), versions + 1, "written once");

    // Pushing the same file again is refused as older than what the push stored.
    let refused = manager.push(next, false).await.unwrap_err();
    assert!(
        matches!(
            refused,
            Error::SerialRegression {
                local: 2,
                remote: 3,
                ..
            }
        ),
        "{refused}"
    );
    assert_eq!(store.inner.version_count(), versions + 1);
}

/// The outcome of one push, comparable across stores: what was returned and what is stored.
#[derive(Debug, PartialEq)]
struct Outcome {
    answer: Result<Pushed, String>,
    body: Option<Bytes>,
    versions: usize,
}

async fn push_on(
    inner: MemoryStore,
    stored: &State,
    by_terraform: bool,
    pushed: State,
    force: bool,
) -> Outcome {
    let store = Hooked::over(inner);
    if by_terraform {
        store
            .inner
            .put_unconditional(Bytes::from_static(common::TERRAFORM_STATE));
    } else {
        // Created by s3state, byte for byte, with its serial and lineage in the metadata.
        RemoteState::new(store.clone())
            .push(stored.clone(), false)
            .await
            .unwrap();
    }
    let manager = RemoteState::new(store.clone());
    let answer = manager
        .push(pushed, force)
        .await
        .map_err(|error| refusal(&error).unwrap_or_else(|| panic!("unexpected error: {error}")));
    Outcome {
        answer,
        body: store.inner.current_body(),
        versions: store.inner.version_count(),
    }
}

#[tokio::test]
async fn every_push_decides_as_a_push_that_reads_the_stored_state() {
    let terraform = State::from_slice(common::TERRAFORM_STATE).unwrap();
    let ours = {
        let (_, stored) = stored_by_s3state(MemoryStore::new("probe.tfstate")).await;
        stored
    };
    let mut cases = 0;
    for by_terraform in [false, true] {
        let stored = if by_terraform { &terraform } else { &ours };
        for lineage in ["same", "other", "empty"] {
            for serial in [0, stored.serial - 1, stored.serial, stored.serial + 1] {
                for changed in [false, true] {
                    for force in [false, true] {
                        let mut pushed = if changed {
                            with_output(stored.clone(), "pushed", 1)
                        } else {
                            stored.clone()
                        };
                        pushed.serial = serial;
                        pushed.lineage = match lineage {
                            "same" => stored.lineage.clone(),
                            "other" => "00000000-0000-0000-0000-000000000000".into(),
                            _ => String::new(),
                        };
                        let key = format!("matrix-{cases}.tfstate");
                        let by_head = push_on(
                            MemoryStore::new(key.clone()),
                            stored,
                            by_terraform,
                            pushed.clone(),
                            force,
                        )
                        .await;
                        let by_body = push_on(
                            MemoryStore::new(key).without_heads(),
                            stored,
                            by_terraform,
                            pushed,
                            force,
                        )
                        .await;
                        assert_eq!(
                            by_head, by_body,
                            "terraform: {by_terraform}, lineage: {lineage}, serial: {serial}, \
                             changed: {changed}, force: {force}"
                        );
                        cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cases, 96);
}

// ---------------------------------------------------------------------------------------------
// Heads whose metadata do not describe their body
//
// Adversarial review of the head-judged push (87e9567): `RemoteState::push` trusts the
// s3state metadata and the stored SHA-256 of the object it heads. These tests put objects in
// the store whose metadata does not describe the canonical bytes of their body, and compare
// the head-judged push with the same push on a store without heads (which reads the body, as
// the push did before).
// ---------------------------------------------------------------------------------------------

const LINEAGE: &str = "3d1c3a77-6f0e-4d5e-9a0b-3f8b2a1c9e42";

fn state(serial: u64, output: i64) -> State {
    common::answer_state(LINEAGE, serial, output)
}

/// The metadata s3state's gateway (src/server/protocol.rs) writes beside a body it stores as
/// it was sent: the identity of the state parsed from that body.
fn gateway_metadata(of: &State) -> ObjectMetadata {
    ObjectMetadata::from([
        (keys::SERIAL.to_owned(), of.serial.to_string()),
        (keys::LINEAGE.to_owned(), of.lineage.clone()),
        (
            keys::TERRAFORM_VERSION.to_owned(),
            of.terraform_version.to_string(),
        ),
        (keys::WRITE_ID.to_owned(), "gateway-write".to_owned()),
    ])
}

async fn put_with(store: &MemoryStore, body: Vec<u8>, metadata: &ObjectMetadata) {
    let outcome = store
        .put(Bytes::from(body), &Precondition::Create, metadata)
        .await
        .unwrap();
    assert!(matches!(outcome, PutOutcome::Written(_)));
}

/// What a push did, comparable between the head-judged and body-judged pushes.
#[derive(Debug, PartialEq)]
struct Judged {
    answer: Result<Pushed, String>,
    stored_serial: Option<u64>,
}

/// A push's refusal by its kind and numbers, not its wording; `None` for any other error.
fn refusal(error: &Error) -> Option<String> {
    match error {
        Error::LineageMismatch { .. } => Some("lineage".to_owned()),
        Error::SerialRegression { local, remote, .. } => Some(format!("older {local} {remote}")),
        Error::SerialCollision { serial, .. } => Some(format!("collision {serial}")),
        _ => None,
    }
}

/// `pushed` pushed over `body` stored at `key` with the gateway's metadata `described`:
/// judged by a store with heads (first) and by one without (second).
async fn judged_both(key: &str, body: Vec<u8>, described: &State, pushed: State) -> Vec<Judged> {
    let mut results = Vec::new();
    for store in [MemoryStore::new(key), MemoryStore::new(key).without_heads()] {
        put_with(&store, body.clone(), &gateway_metadata(described)).await;
        results.push(push(store, pushed.clone()).await);
    }
    results
}

async fn push(store: MemoryStore, pushed: State) -> Judged {
    let answer = RemoteState::new(store.clone())
        .push(pushed, false)
        .await
        .map_err(|error| refusal(&error).unwrap_or_else(|| format!("other: {error}")));
    Judged {
        answer,
        stored_serial: store
            .current_body()
            .map(|body| State::from_slice(&body).unwrap().serial),
    }
}

/// A state the gateway stored as its client sent it (compact JSON here: the gateway accepts
/// any JSON that parses as a state and stores the body unchanged), with its identity in the
/// metadata. A push of the same content under the next serial keeps that serial when the body
/// is read (same content), but the head path sees other bytes and numbers it one higher.
///
/// From the adversarial review of the head-judged push (87e9567).
#[tokio::test]
async fn a_push_over_a_state_the_gateway_stored_as_sent_numbers_it_as_a_push_that_reads_it() {
    let stored = state(3, 1);
    let canonical = stored.to_bytes();
    let compact =
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(&canonical).unwrap())
            .unwrap();
    assert_ne!(compact, canonical);
    assert_eq!(State::from_slice(&compact).unwrap(), stored);

    let results = judged_both("gateway.tfstate", compact.clone(), &stored, state(4, 1)).await;
    assert_eq!(
        results[0], results[1],
        "head-judged push (left) and body-judged push (right) disagree"
    );
    assert_eq!(results[1].stored_serial, Some(4));
}

/// An object whose s3state metadata does not describe its body (the body was replaced by a
/// writer that kept or copied the metadata). The body-reading push refuses an older serial;
/// the head-judged push trusts the metadata's serial 5 and writes serial 7 over serial 9.
///
/// From the adversarial review of the head-judged push (87e9567).
#[tokio::test]
async fn a_push_never_overwrites_a_newer_serial_whose_metadata_is_stale() {
    let described = state(5, 1);
    let actual = state(9, 2);
    let results = judged_both("stale.tfstate", actual.to_bytes(), &described, state(6, 3)).await;
    assert_eq!(results[1].answer, Err("older 6 9".to_owned()));
    assert_eq!(
        results[0], results[1],
        "head-judged push (left) and body-judged push (right) disagree"
    );
}

/// The versions of `store` whose body holds the pushed change (the output `pushed`).
async fn versions_with_the_change(store: &MemoryStore) -> usize {
    let versions = store.list_versions(1000).await.unwrap();
    let mut count = 0;
    for version in versions.iter().filter(|version| !version.is_delete_marker) {
        let body = store.get_version(&version.version_id).await.unwrap().body;
        if State::from_slice(&body)
            .unwrap()
            .outputs
            .contains_key("pushed")
        {
            count += 1;
        }
    }
    count
}

/// Under seeded faults on every request (lost answers, resets, 503s, stalled writes that land
/// late), a head-judged push is applied at most once, says it wrote only when it did, and a
/// second push of the same file (as an operator re-runs `s3state push` after an error) never
/// applies the change a second time.
///
/// From the adversarial review of the head-judged push (87e9567).
#[tokio::test]
async fn a_push_under_faults_is_applied_at_most_once_and_reported_as_it_happened() {
    use s3state::store::memory::FaultPlan;
    use std::sync::Arc;

    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for seed in 0..400 {
        let healthy = MemoryStore::new(format!("faults-{seed}.tfstate"));
        RemoteState::new(healthy.clone())
            .push(state(3, 1), false)
            .await
            .unwrap();
        let mut pushed = state(4, 1);
        pushed.outputs.insert("pushed".into(), OutputValue::new(&1));
        let faulty = healthy
            .clone()
            .with_faults(Arc::new(FaultPlan::new(seed, 40)));
        let answer = RemoteState::new(faulty).push(pushed.clone(), false).await;
        // Let a stalled write arrive.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let landed = versions_with_the_change(&healthy).await;
        assert!(
            landed <= 1,
            "seed {seed}: applied {landed} times: {answer:?}"
        );
        let kind = match &answer {
            Ok(done) => {
                assert!(
                    done.written,
                    "seed {seed}: a change reported as nothing to push"
                );
                assert_eq!(landed, 1, "seed {seed}: reported written, not stored");
                assert_eq!(done.stored.serial, 5, "seed {seed}");
                "written".to_owned()
            }
            Err(Error::WriteOutcomeUnknown { .. }) => "unknown".to_owned(),
            Err(Error::WriteFailed { .. }) => format!("failed, landed later: {landed}"),
            Err(Error::Store { operation, .. }) => {
                assert_eq!(landed, 0, "seed {seed}: {operation} failed, yet written");
                format!("{operation} failed")
            }
            Err(other) => panic!("seed {seed}: unexpected answer {other}"),
        };
        *outcomes.entry(kind).or_default() += 1;

        // The operator pushes the same file again, without faults.
        let again = RemoteState::new(healthy.clone()).push(pushed, false).await;
        let landed_after = versions_with_the_change(&healthy).await;
        assert_eq!(
            landed_after, 1,
            "seed {seed}: first {answer:?}, again {again:?}"
        );
        match again {
            Ok(done) => assert!(done.written && landed == 0, "seed {seed}: {done:?}"),
            Err(Error::SerialRegression { .. }) => assert_eq!(landed, 1, "seed {seed}"),
            Err(other) => panic!("seed {seed}: the second push answered {other}"),
        }
    }
    // The faults reached every branch worth checking.
    assert!(outcomes.contains_key("written"), "{outcomes:?}");
    assert!(
        outcomes.keys().any(|kind| kind.ends_with("failed")),
        "{outcomes:?}"
    );
    eprintln!("{outcomes:?}");
}

/// A push whose serial is the largest there is, with other content, would be numbered one
/// higher: it must be refused, not panic (debug builds) or wrap to serial 0 (release builds,
/// after which any older state would be accepted over it). Not new in 87e9567: the body path's
/// `next_snapshot` adds one the same way.
///
/// From the adversarial review of the head-judged push (87e9567).
#[tokio::test]
async fn a_push_at_the_largest_serial_is_refused_rather_than_numbered_past_it() {
    for store in [
        MemoryStore::new("largest.tfstate"),
        MemoryStore::new("largest.tfstate").without_heads(),
    ] {
        RemoteState::new(store.clone())
            .push(state(u64::MAX - 1, 1), false)
            .await
            .unwrap();
        let pushing = store.clone();
        let answer = tokio::spawn(async move {
            RemoteState::new(pushing)
                .push(state(u64::MAX, 2), false)
                .await
        })
        .await;
        let answer = answer.expect("the push answers instead of panicking");
        assert!(answer.is_err(), "{answer:?}");
        let stored = State::from_slice(&store.current_body().unwrap()).unwrap();
        assert_eq!(stored.serial, u64::MAX - 1);
    }
}

/// From the adversarial review of the one write path (issue 22): Terraform's `state push`
/// (`statemgr.CheckValidImport`) refuses a state whose lineage is not the stored one, and a
/// state without a lineage has another lineage than any stored state. The push rules used to
/// compare the lineage as sent; the one verdict fills an empty lineage in from the stored
/// snapshot first (as a persist does), so a lineage-less state was pushed over an unrelated
/// stored state, whether the stored snapshot was judged from its head or from its body.
#[tokio::test]
async fn a_push_without_a_lineage_over_a_stored_state_is_refused() {
    for heads in [true, false] {
        let (store, stored) = stored_by_s3state(MemoryStore::new("no-lineage.tfstate")).await;
        let store = if heads { store } else { store.without_heads() };
        let versions = store.inner.version_count();
        let mut pushed = with_output(stored.clone(), "unrelated", 1);
        pushed.lineage.clear();
        pushed.serial = stored.serial + 5;

        let refused = RemoteState::new(store.clone()).push(pushed, false).await;
        assert!(
            matches!(refused, Err(Error::LineageMismatch { .. })),
            "heads {heads}: {refused:?}"
        );
        assert_eq!(store.inner.version_count(), versions, "heads {heads}");
        assert_eq!(store.stored().unwrap(), stored, "heads {heads}");
    }
}
