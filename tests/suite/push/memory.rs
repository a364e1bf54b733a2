//! `RemoteState::push` (the CLI's `s3state push`) judges the stored snapshot from its head: it
//! reads the body only when the head cannot decide, and decides exactly as a push that reads
//! the stored state does.

use crate::common;
use crate::common::hooked::{Hooked, OnPut};
use bytes::Bytes;
use s3state::remote::Pushed;
use s3state::store::memory::MemoryStore;
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
    writer
        .update(|state| {
            state.outputs.insert("a".into(), OutputValue::new(&1));
        })
        .await
        .unwrap();
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
    manager
        .update(|state| {
            state.outputs.insert("b".into(), OutputValue::new(&2));
        })
        .await
        .unwrap();
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
        .map_err(|error| match error {
            // The error's kind and numbers, not its wording.
            Error::LineageMismatch { .. } => "lineage".to_owned(),
            Error::SerialRegression { local, remote, .. } => format!("older {local} {remote}"),
            Error::SerialCollision { serial, .. } => format!("collision {serial}"),
            other => panic!("unexpected error: {other}"),
        });
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
