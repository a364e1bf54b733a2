//! `RemoteState`'s rules, locking, history and restore on the in-memory store: the same
//! behaviour the LocalStack suites check, in milliseconds.

use crate::common;
use s3state::lock::LOCK_SUFFIX;
use s3state::state::ChangeKind;
use s3state::store::Store;
use s3state::store::memory::{MemoryOptions, MemoryStore};
use s3state::{
    Error, HistoryOptions, LockInfo, Locker, OutputValue, PersistentMeta, Persister, PruneOptions,
    Refresher, RemoteState, State, Transient, VersionSelector,
};

const KEY: &str = "app/terraform.tfstate";

fn terraform() -> semver::Version {
    semver::Version::new(1, 15, 5)
}

/// A manager on `store` (a handle on a shared bucket).
fn manager(store: &MemoryStore) -> RemoteState<MemoryStore> {
    RemoteState::new(store.clone())
}

/// `state` with output `name` set to `value`.
fn with_output(mut state: State, name: &str, value: i64) -> State {
    state.outputs.insert(name.into(), OutputValue::new(&value));
    state
}

/// Sets output `name` to `value` on the manager's state and persists it.
async fn persist_output(manager: &RemoteState<MemoryStore>, name: &str, value: i64) {
    manager.refresh_state().await.unwrap();
    let state = manager.state().unwrap_or_else(|| State::new(terraform()));
    manager.write_state(with_output(state, name, value));
    manager.persist_state().await.unwrap();
}

fn serial(manager: &RemoteState<MemoryStore>) -> u64 {
    manager.state_snapshot_meta().unwrap().serial
}

// The serial and lineage rules.

#[tokio::test]
async fn a_fresh_state_gets_a_lineage_and_serial_one_on_first_persist() {
    let store = MemoryStore::new(KEY);
    let manager = manager(&store);
    manager.refresh_state().await.unwrap();
    assert!(manager.state().is_none());

    manager.write_state(State::new(terraform()));
    manager.persist_state().await.unwrap();

    let meta = common::assert_first_snapshot(&manager);
    assert_eq!(store.version_count(), 1);
    let stored = State::from_slice(&store.current_body().unwrap()).unwrap();
    assert_eq!((stored.serial, stored.lineage), (1, meta.lineage));
}

#[tokio::test]
async fn the_serial_moves_by_one_for_each_change() {
    let store = MemoryStore::new(KEY);
    let manager = manager(&store);
    persist_output(&manager, "n", 1).await;
    let lineage = manager.state_snapshot_meta().unwrap().lineage;

    for n in 2..=4 {
        persist_output(&manager, "n", n).await;
        assert_eq!(serial(&manager), n as u64);
    }
    assert_eq!(manager.state_snapshot_meta().unwrap().lineage, lineage);
    assert_eq!(store.version_count(), 4);
}

#[tokio::test]
async fn a_persist_of_an_unchanged_state_writes_nothing() {
    let store = MemoryStore::new(KEY);
    let manager = manager(&store);
    persist_output(&manager, "n", 1).await;
    let before = manager.state_snapshot_meta().unwrap();

    manager.persist_state().await.unwrap();
    manager.write_state(manager.state().unwrap());
    manager.persist_state().await.unwrap();
    // The same content under the serial the manager already has: still nothing to write.
    persist_output(&manager, "n", 1).await;

    assert_eq!(store.version_count(), 1);
    assert_eq!(manager.state_snapshot_meta().unwrap(), before);
}

#[tokio::test]
async fn a_state_of_another_lineage_is_refused_and_nothing_is_written() {
    let store = MemoryStore::new(KEY);
    let manager = manager(&store);
    persist_output(&manager, "n", 1).await;
    let mut foreign = with_output(manager.state().unwrap(), "n", 2);
    foreign.lineage = "another-lineage".into();

    manager.write_state(foreign);
    let refused = manager.persist_state().await.unwrap_err();

    assert!(
        matches!(&refused, Error::LineageMismatch { local, .. } if local == "another-lineage"),
        "{refused}"
    );
    assert_eq!(store.version_count(), 1);
}

#[tokio::test]
async fn a_state_with_an_older_serial_is_refused_and_nothing_is_written() {
    let store = MemoryStore::new(KEY);
    let manager = manager(&store);
    persist_output(&manager, "n", 1).await;
    let old = manager.state().unwrap();
    persist_output(&manager, "n", 2).await;
    persist_output(&manager, "n", 3).await;

    manager.write_state(with_output(old, "n", 4));
    let refused = manager.persist_state().await.unwrap_err();

    common::assert_serial_regression(&refused, 1, 3);
    assert_eq!(store.version_count(), 3);
}

#[tokio::test]
async fn a_persist_over_another_managers_write_is_a_conflict_and_overwrites_nothing() {
    let store = MemoryStore::new(KEY);
    let (first, second) = (manager(&store), manager(&store));
    persist_output(&first, "n", 1).await;
    second.refresh_state().await.unwrap();
    persist_output(&first, "n", 2).await;
    let winner = store.current_body().unwrap();

    second.write_state(with_output(second.state().unwrap(), "other", 1));
    let refused = second.persist_state().await.unwrap_err();

    match &refused {
        Error::Conflict {
            remote: Some(now), ..
        } => assert_eq!(now.serial, 2),
        other => panic!("expected a conflict naming serial 2, got {other}"),
    }
    assert_eq!(store.current_body().unwrap(), winner);
    assert_eq!(store.version_count(), 2);
}

#[tokio::test]
async fn a_refresh_after_a_conflict_lets_the_change_be_made_on_the_winner() {
    let store = MemoryStore::new(KEY);
    let (first, second) = (manager(&store), manager(&store));
    persist_output(&first, "n", 1).await;
    second.refresh_state().await.unwrap();
    persist_output(&first, "n", 2).await;
    second.write_state(with_output(second.state().unwrap(), "other", 1));
    assert!(second.persist_state().await.unwrap_err().is_conflict());

    second.refresh_state().await.unwrap();
    let refreshed = second.state().unwrap();
    assert!(
        !refreshed.outputs.contains_key("other"),
        "the refresh kept the refused change"
    );
    second.write_state(with_output(refreshed, "other", 1));
    second.persist_state().await.unwrap();

    assert_eq!(serial(&second), 3);
    first.refresh_state().await.unwrap();
    let both = first.state().unwrap();
    assert_eq!(both.outputs["n"].to_value(), 2);
    assert_eq!(both.outputs["other"].to_value(), 1);
}

#[tokio::test]
async fn update_retries_a_lost_race_and_applies_its_change_once() {
    let store = MemoryStore::new(KEY);
    let (first, second) = (manager(&store), manager(&store));
    persist_output(&first, "n", 1).await;
    let mut calls = 0;

    let value = second
        .update(|state| {
            calls += 1;
            if calls == 1 {
                // Another writer wins the race while this round is being built.
                let current = State::from_slice(&store.current_body().unwrap()).unwrap();
                let mut theirs = with_output(current, "rival", 1);
                theirs.serial += 1;
                store.put_unconditional(theirs.to_bytes().into());
            }
            let n = state
                .outputs
                .get("n")
                .map_or(0, |o| o.to_value().as_i64().unwrap());
            state
                .outputs
                .insert("n".into(), OutputValue::new(&(n + 10)));
            n + 10
        })
        .await
        .unwrap();

    assert_eq!((value, calls), (11, 2));
    let stored = State::from_slice(&store.current_body().unwrap()).unwrap();
    assert_eq!(stored.serial, 3);
    assert_eq!(stored.outputs["n"].to_value(), 11);
    assert_eq!(stored.outputs["rival"].to_value(), 1);
}

// Locking, with and without conditional deletes.

fn lock_stores() -> [MemoryStore; 2] {
    [true, false].map(|conditional_delete| {
        MemoryStore::with_options(
            KEY,
            MemoryOptions {
                conditional_delete,
                ..MemoryOptions::default()
            },
        )
    })
}

#[tokio::test]
async fn a_lock_excludes_a_second_manager_until_it_is_released() {
    for store in lock_stores() {
        let (first, second) = (manager(&store), manager(&store));
        let id = first
            .lock(&LockInfo::new("OperationTypeApply"))
            .await
            .unwrap();

        let refused = second
            .lock(&LockInfo::new("OperationTypePlan"))
            .await
            .unwrap_err();
        match &refused {
            Error::Locked {
                holder: Some(holder),
                ..
            } => {
                assert_eq!(holder.id, id);
                assert_eq!(holder.operation, "OperationTypeApply");
                assert_eq!(holder.path, store.path());
            }
            other => panic!("expected Locked naming the holder, got {other}"),
        }

        first.unlock(&id).await.unwrap();
        assert_eq!(store.sibling(LOCK_SUFFIX).current_body(), None);
        common::lock_and_unlock(&second, "OperationTypePlan").await;
    }
}

#[tokio::test]
async fn unlock_with_another_id_is_refused_and_leaves_the_lock() {
    for store in lock_stores() {
        let (holder, other) = (manager(&store), manager(&store));
        let id = holder
            .lock(&LockInfo::new("OperationTypeApply"))
            .await
            .unwrap();

        let refused = other.unlock("not-the-id").await.unwrap_err();

        match &refused {
            Error::LockIdMismatch { given, held, .. } => {
                assert_eq!((given.as_str(), held.as_str()), ("not-the-id", id.as_str()));
            }
            other => panic!("expected LockIdMismatch, got {other}"),
        }
        let current = holder.locker().current().await.unwrap().unwrap();
        assert_eq!(current.id, id);
    }
}

#[tokio::test]
async fn force_unlock_removes_a_lock_another_manager_holds() {
    for store in lock_stores() {
        let (holder, operator) = (manager(&store), manager(&store));
        let id = holder
            .lock(&LockInfo::new("OperationTypeApply"))
            .await
            .unwrap();

        let wrong = operator.locker().force_unlock("not-the-id").await;
        assert!(
            matches!(wrong, Err(Error::LockIdMismatch { .. })),
            "{wrong:?}"
        );
        operator.locker().force_unlock(&id).await.unwrap();

        assert_eq!(operator.locker().current().await.unwrap(), None);
        let again = operator.lock(&LockInfo::new("OperationTypeApply")).await;
        assert!(again.is_ok(), "{again:?}");
    }
}

#[tokio::test]
async fn a_lock_with_an_empty_id_is_refused_and_writes_nothing() {
    let store = MemoryStore::new(KEY);
    let manager = manager(&store);
    common::assert_empty_lock_id_refused(&manager).await;
    assert_eq!(store.sibling(LOCK_SUFFIX).version_count(), 0);
}

// History, diff, restore and prune.

/// A state with serials 1..=`n`, output `n` equal to the serial.
async fn history_of(n: i64) -> (MemoryStore, RemoteState<MemoryStore>) {
    let store = MemoryStore::new(KEY);
    let manager = manager(&store);
    for value in 1..=n {
        persist_output(&manager, "n", value).await;
    }
    (store, manager)
}

#[tokio::test]
async fn history_lists_versions_newest_first_with_their_serials() {
    let (store, manager) = history_of(3).await;
    store.delete(None).await.unwrap();

    let plain = manager.history(&HistoryOptions::default()).await.unwrap();
    let detailed = manager
        .history(&HistoryOptions {
            details: true,
            ..HistoryOptions::default()
        })
        .await
        .unwrap();

    let shape: Vec<(bool, bool)> = plain
        .iter()
        .map(|e| (e.version.is_delete_marker, e.version.is_latest))
        .collect();
    assert_eq!(
        shape,
        [(true, true), (false, false), (false, false), (false, false)]
    );
    assert!(plain.iter().all(|e| e.meta.is_none()));
    let serials: Vec<Option<u64>> = detailed
        .iter()
        .map(|e| e.meta.as_ref().map(|m| m.serial))
        .collect();
    assert_eq!(serials, [None, Some(3), Some(2), Some(1)]);
}

#[tokio::test]
async fn diff_versions_shows_what_changed_between_two_versions() {
    let (_store, manager) = history_of(2).await;
    persist_output(&manager, "added", 1).await;

    let diff = manager
        .diff_versions(&VersionSelector::Back(2), &VersionSelector::Current)
        .await
        .unwrap();

    assert_eq!((diff.from.serial, diff.to.serial), (1, 3));
    let changes: Vec<(&str, ChangeKind)> = diff
        .outputs
        .iter()
        .map(|c| (c.name.as_str(), c.kind))
        .collect();
    assert_eq!(
        changes,
        [("added", ChangeKind::Added), ("n", ChangeKind::Changed)]
    );
    let n = diff.outputs.iter().find(|c| c.name == "n").unwrap();
    assert_eq!(
        (n.before.clone(), n.after.clone()),
        (Some(serde_json::json!(1)), Some(serde_json::json!(2)))
    );
    assert!(diff.resources.is_empty());
}

#[tokio::test]
async fn restoring_an_older_version_writes_a_new_version_numbered_after_the_current() {
    let (store, manager) = history_of(3).await;
    let lineage = manager.state_snapshot_meta().unwrap().lineage;
    let first = manager
        .resolve_version(&VersionSelector::Back(2))
        .await
        .unwrap();

    let restored = manager.restore(&first, false).await.unwrap();

    assert!(restored.written);
    assert_eq!(restored.from_version, first);
    assert_eq!(
        (restored.meta.serial, &restored.meta.lineage),
        (4, &lineage)
    );
    assert_eq!(store.version_count(), 4);
    let stored = State::from_slice(&store.current_body().unwrap()).unwrap();
    assert_eq!(stored.outputs["n"].to_value(), 1);
    assert_eq!(stored.serial, 4);
    // Restoring what is already current writes nothing.
    let again = manager.restore(&first, false).await.unwrap();
    assert!(!again.written);
    assert_eq!(store.version_count(), 4);
}

#[tokio::test]
async fn restore_refuses_a_version_of_another_lineage_without_force() {
    let (store, manager) = history_of(2).await;
    let ours = manager
        .resolve_version(&VersionSelector::Current)
        .await
        .unwrap();
    let mut unrelated = with_output(State::new(terraform()), "unrelated", 1);
    unrelated.lineage = "unrelated-lineage".into();
    unrelated.serial = 7;
    store.put_unconditional(unrelated.to_bytes().into());
    manager.refresh_state().await.unwrap();

    let refused = manager.restore(&ours, false).await.unwrap_err();
    assert!(
        matches!(&refused, Error::LineageMismatch { remote, .. } if remote == "unrelated-lineage"),
        "{refused}"
    );
    assert_eq!(store.version_count(), 3);

    let forced = manager.restore(&ours, true).await.unwrap();
    assert!(forced.written);
    assert_ne!(forced.meta.lineage, "unrelated-lineage");
    assert_eq!(forced.meta.serial, 8);
    assert_eq!(store.version_count(), 4);
}

#[tokio::test]
async fn prune_dry_run_removes_nothing_and_a_real_prune_removes_what_it_reported() {
    let (store, manager) = history_of(5).await;
    let all = manager.history(&HistoryOptions::default()).await.unwrap();
    let options = PruneOptions {
        keep_newest: Some(2),
        dry_run: true,
        ..PruneOptions::default()
    };

    let would = manager.prune(&options).await.unwrap();
    assert_eq!(store.version_count(), 5);
    let removed = manager
        .prune(&PruneOptions {
            dry_run: false,
            ..options
        })
        .await
        .unwrap();

    let oldest: Vec<&str> = all[2..]
        .iter()
        .map(|e| e.version.version_id.as_str())
        .collect();
    let ids = |versions: &[s3state::store::ObjectVersion]| -> Vec<String> {
        versions.iter().map(|v| v.version_id.clone()).collect()
    };
    assert_eq!(ids(&would), oldest);
    assert_eq!(ids(&removed), oldest);
    assert_eq!(store.version_count(), 2);
    manager.refresh_state().await.unwrap();
    assert_eq!(serial(&manager), 5);
}
