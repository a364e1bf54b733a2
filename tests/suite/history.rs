//! History through S3 bucket versioning: list, read, diff, restore.

use crate::common;

use s3state::state::ChangeKind;
use s3state::{
    Error, HistoryOptions, Locker, OutputValue, PersistentMeta, Persister, Refresher, Transient,
    VersionSelector,
};

const KEY: &str = "a/b.tfstate";

use common::set_output as set;

#[tokio::test]
async fn eleven_hundred_versions_list_whole_and_in_order_across_pages() {
    const VERSIONS: u64 = 1100;
    let (bucket, writer) = common::bucket_and_manager(KEY).await;
    writer.refresh_state().await.unwrap();
    for n in 1..=VERSIONS {
        let mut state = writer
            .state()
            .unwrap_or_else(|| s3state::State::new(semver::Version::new(1, 15, 5)));
        state.outputs.insert("n".into(), OutputValue::new(&n));
        writer.write_state(state);
        writer.persist_state().await.unwrap();
    }

    for (page_size, expected_requests) in [(1000, 2), (100, 11)] {
        let (reader, recorder) = common::recorded_manager(&bucket, KEY).await;
        let history = reader
            .history(&HistoryOptions {
                page_size,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(history.len() as u64, VERSIONS);
        assert!(history[0].version.is_latest && history[1..].iter().all(|e| !e.version.is_latest));
        assert_eq!(
            recorder.take().len(),
            expected_requests,
            "page size {page_size}"
        );
    }

    let reader = common::manager(&bucket, KEY).await;
    let detailed = common::detailed_history(&reader, Some(16)).await;
    let serials: Vec<u64> = detailed
        .iter()
        .map(|e| e.meta.as_ref().unwrap().serial)
        .collect();
    let expected: Vec<u64> = (1..=VERSIONS).rev().collect();
    assert_eq!(serials, expected);
    assert!(detailed.iter().all(|e| e.meta.as_ref().unwrap().lineage == detailed[0].meta.as_ref().unwrap().lineage));
}

#[tokio::test]
async fn a_terraform_written_version_shows_its_serial_when_details_are_asked() {
    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, KEY, common::TERRAFORM_STATE).await;
    let manager = common::manager(&bucket, KEY).await;
    manager.update(set("extra", 1)).await.unwrap();

    let plain = manager.history(&HistoryOptions::default()).await.unwrap();
    assert!(
        plain.iter().all(|e| e.meta.is_none()),
        "no details unless asked"
    );
    let detailed = common::detailed_history(&manager, None).await;
    let serials: Vec<_> = detailed
        .iter()
        .map(|e| e.meta.as_ref().map(|m| m.serial))
        .collect();
    assert_eq!(serials, [Some(2), Some(1)]);
    assert_eq!(
        detailed[1].meta.as_ref().unwrap().lineage,
        "17be2140-cb35-fcbf-2b9f-a8e4e43cbc8b"
    );
    assert_eq!(
        detailed[1].version.size,
        common::TERRAFORM_STATE.len() as u64
    );
}

#[tokio::test]
async fn history_never_includes_keys_that_merely_share_the_prefix() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    manager.update(set("a", 1)).await.unwrap();
    let id = manager
        .lock(&s3state::LockInfo::new("OperationTypeApply"))
        .await
        .unwrap();
    manager.update(set("a", 2)).await.unwrap();
    manager.unlock(&id).await.unwrap();
    for neighbour in ["a/b.tfstate.tflock", "a/b.tfstate2", "a/b.tfstate.backup"] {
        common::put_raw(&bucket, neighbour, b"{}").await;
        common::put_raw(&bucket, neighbour, b"{}").await;
    }
    let history = manager
        .history(&HistoryOptions {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
}

/// A state with two versions, in the hookable store, whose listings lose every version in
/// pages smaller than `lose_below`.
async fn hooked_state_whose_listing_loses_versions(
    lose_below: u32,
) -> s3state::RemoteState<common::hooked::Hooked> {
    let store = common::hooked::Hooked::new(KEY);
    let manager = s3state::RemoteState::new(store.clone());
    manager.update(set("a", 1)).await.unwrap();
    manager.update(set("a", 2)).await.unwrap();
    store.lose_listed_versions_below(lose_below);
    manager
}

/// From issue 25: SeaweedFS's paged ListObjectVersions (prefix = the key, small max-keys)
/// never listed the key's own versions, and `history` showed an empty history with no error.
/// A listing that lists nothing of a state that exists is never an empty history: it is taken
/// again in whole pages, and where that still lists nothing, it is a typed error (history,
/// restore and prune alike: prune deletes nothing).
#[tokio::test]
async fn a_listing_that_loses_an_existing_states_versions_is_an_error_not_an_empty_history() {
    let manager = hooked_state_whose_listing_loses_versions(u32::MAX).await;
    let page_of_one = HistoryOptions {
        page_size: 1,
        ..Default::default()
    };
    let refused = manager.history(&page_of_one).await.unwrap_err();
    assert!(
        matches!(refused, Error::InconsistentListing { .. }),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("s3state probe"), "{refused}");
    let restore = manager
        .resolve_version(&VersionSelector::Back(1))
        .await
        .unwrap_err();
    assert!(
        matches!(restore, Error::InconsistentListing { .. }),
        "{restore:?}"
    );
    let prune = manager
        .prune(&s3state::PruneOptions {
            keep_newest: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(prune, Error::InconsistentListing { .. }),
        "{prune:?}"
    );
}

/// The same store where only small pages lose versions (as SeaweedFS's do, while one page of
/// 1,000 lists everything): the history is listed whole, from the second listing.
#[tokio::test]
async fn a_paged_listing_that_loses_versions_is_taken_again_in_whole_pages() {
    let manager = hooked_state_whose_listing_loses_versions(1000).await;
    let history = manager
        .history(&HistoryOptions {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history[0].version.is_latest);
}

/// A manager of `KEY` in a fresh bucket whose every ListObjectVersions answer is replaced by
/// one truncated page listing one version of `KEY`, with these next markers.
async fn manager_whose_listing_pages_say(
    next_key_marker: Option<&str>,
) -> s3state::RemoteState<s3state::S3Store> {
    let bucket = common::bucket(true).await;
    let marker = next_key_marker
        .map(|key| {
            format!(
                "<NextKeyMarker>{key}</NextKeyMarker><NextVersionIdMarker>v1</NextVersionIdMarker>"
            )
        })
        .unwrap_or_default();
    let page = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListVersionsResult><Name>{bucket}</Name>\
         <Prefix>{KEY}</Prefix><MaxKeys>1</MaxKeys><IsTruncated>true</IsTruncated>{marker}\
         <Version><Key>{KEY}</Key><VersionId>v1</VersionId><IsLatest>true</IsLatest>\
         <LastModified>2026-12-06T00:00:00.000Z</LastModified><ETag>\"0\"</ETag><Size>2</Size>\
         </Version></ListVersionsResult>"
    );
    let listing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = listing.clone();
    let hooks = common::hooks::Hooks::new("truncated-listing")
        .read_request(move |request| {
            seen.store(
                request.uri().contains("versions"),
                std::sync::atomic::Ordering::SeqCst,
            );
        })
        .modify_response(move |response| {
            if listing.swap(false, std::sync::atomic::Ordering::SeqCst) {
                *response.body_mut() = aws_sdk_s3::primitives::SdkBody::from(page.clone());
            }
        });
    let config = common::config_for(common::endpoint()).interceptor(hooks);
    common::manager_with_config(&bucket, KEY, config.build()).await
}

/// From issue 25: a truncated ListObjectVersions page must say where the next one starts, and
/// that must move. Without a marker the listing started over (for ever); a marker that does
/// not move would list the same page for ever. Both are a typed error.
#[tokio::test]
async fn a_truncated_listing_without_a_marker_or_with_one_that_does_not_move_is_an_error() {
    let one_page = HistoryOptions {
        page_size: 1,
        ..Default::default()
    };
    for next_key_marker in [None, Some(KEY)] {
        let manager = manager_whose_listing_pages_say(next_key_marker).await;
        let refused = manager.history(&one_page).await.unwrap_err();
        assert!(
            matches!(&refused, Error::InconsistentListing { evidence, .. }
                if evidence.contains("truncated")),
            "{next_key_marker:?}: {refused:?}"
        );
    }
}

#[tokio::test]
async fn a_past_snapshot_reads_back_and_an_unknown_version_is_a_typed_error() {
    let (_, manager) = common::bucket_and_manager(KEY).await;
    manager.update(set("n", 1)).await.unwrap();
    manager.update(set("n", 2)).await.unwrap();
    let history = manager.history(&HistoryOptions::default()).await.unwrap();

    let first = manager
        .snapshot_at(&history[1].version.version_id)
        .await
        .unwrap();
    assert_eq!(first.meta.serial, 1);
    assert_eq!(first.state.outputs["n"].to_value(), 1);

    let err = manager.snapshot_at("no-such-version").await.unwrap_err();
    assert!(
        matches!(&err, Error::VersionNotFound { version_id, .. } if version_id == "no-such-version"),
        "{err:?}"
    );
}

/// Each changed output's name and kind of change, in the diff's order.
fn output_kinds(diff: &s3state::state::StateDiff) -> Vec<(&str, ChangeKind)> {
    diff.outputs
        .iter()
        .map(|c| (c.name.as_str(), c.kind))
        .collect()
}

/// Each changed resource instance's address and kind of change, in the diff's order.
fn resource_kinds(diff: &s3state::state::StateDiff) -> Vec<(&str, ChangeKind)> {
    diff.resources
        .iter()
        .map(|c| (c.address.as_str(), c.kind))
        .collect()
}

#[tokio::test]
async fn a_diff_reports_exactly_the_changes_made() {
    let (_, manager) = common::bucket_and_manager(KEY).await;
    manager
        .update(|s| {
            s.outputs.insert("kept".into(), OutputValue::new(&1));
            s.outputs
                .insert("changed".into(), OutputValue::new("before"));
            s.outputs.insert("removed".into(), OutputValue::new(&true));
            s.outputs
                .insert("password".into(), OutputValue::new("old").sensitive());
        })
        .await
        .unwrap();
    manager
        .update(|s| {
            s.outputs.insert("changed".into(), OutputValue::new("after"));
            s.outputs.remove("removed");
            s.outputs.insert("added".into(), OutputValue::new(&[1, 2]));
            s.outputs.insert("password".into(), OutputValue::new("new").sensitive());
            s.resources = s3state::RawJson::parse(
                r#"[{"mode":"managed","type":"terraform_data","name":"x","instances":[{"index_key":0}]}]"#,
            )
            .unwrap();
        })
        .await
        .unwrap();

    let diff = manager
        .diff_versions(&VersionSelector::Back(1), &VersionSelector::Current)
        .await
        .unwrap();
    assert_eq!((diff.from.serial, diff.to.serial), (1, 2));
    assert_eq!(diff.from.lineage, diff.to.lineage);
    assert_eq!(
        output_kinds(&diff),
        [
            ("added", ChangeKind::Added),
            ("changed", ChangeKind::Changed),
            ("password", ChangeKind::Changed),
            ("removed", ChangeKind::Removed)
        ]
    );
    let password = diff.outputs.iter().find(|c| c.name == "password").unwrap();
    assert!(password.before.is_none() && password.after.is_none());
    let changed = diff.outputs.iter().find(|c| c.name == "changed").unwrap();
    assert_eq!(
        (changed.before.clone(), changed.after.clone()),
        (Some("before".into()), Some("after".into()))
    );
    assert_eq!(
        resource_kinds(&diff),
        [("terraform_data.x[0]", ChangeKind::Added)]
    );
}

#[tokio::test]
async fn restoring_a_past_version_writes_its_content_as_the_next_serial() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    for n in 1..=4 {
        manager.update(set("n", n)).await.unwrap();
    }
    let history = manager.history(&HistoryOptions::default()).await.unwrap();
    let version_2 = history[2].version.version_id.clone();
    let content_2 = manager.snapshot_at(&version_2).await.unwrap().state;

    let restorer = common::manager(&bucket, KEY).await;
    let restored = restorer.restore(&version_2, false).await.unwrap();
    assert!(restored.written);
    assert_eq!(restored.meta.serial, 5);
    assert_eq!(restored.meta.lineage, content_2.lineage);
    assert_eq!(common::version_count(&bucket, KEY).await, 5);

    manager.refresh_state().await.unwrap();
    let now = manager.state().unwrap();
    assert!(now.same_content(&content_2));
    assert_eq!(now.serial, 5);
}

/// A fresh state written twice (`n` = 1, then 2): the bucket, the manager and the version id
/// of the first write.
async fn n_1_then_2() -> (String, s3state::RemoteState<s3state::S3Store>, String) {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    manager.update(set("n", 1)).await.unwrap();
    manager.update(set("n", 2)).await.unwrap();
    let history = manager.history(&HistoryOptions::default()).await.unwrap();
    let first = history[1].version.version_id.clone();
    (bucket, manager, first)
}

#[tokio::test]
async fn a_restore_and_a_concurrent_write_cannot_both_succeed() {
    let (bucket, _manager, old) = n_1_then_2().await;

    // The restorer looks at the state, then someone writes, then the restore runs.
    let restorer = common::manager(&bucket, KEY).await;
    restorer.refresh_state().await.unwrap();
    let writer = common::manager(&bucket, KEY).await;
    writer.update(set("n", 3)).await.unwrap();
    let err = restorer.restore(&old, false).await.unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert_eq!(common::version_count(&bucket, KEY).await, 3);

    // The other order: the restore lands first, and the writer that read before it loses.
    restorer.refresh_state().await.unwrap();
    let late_writer = common::manager(&bucket, KEY).await;
    late_writer.refresh_state().await.unwrap();
    restorer.restore(&old, false).await.unwrap();
    common::assert_stale_write_refused(&late_writer, "n", 4).await;
    assert_eq!(common::version_count(&bucket, KEY).await, 4);
}

#[tokio::test]
async fn restoring_after_the_state_was_deleted_brings_it_back() {
    let (bucket, manager, version_1) = n_1_then_2().await;
    common::delete_object(&bucket, KEY).await;
    let history = manager.history(&HistoryOptions::default()).await.unwrap();
    assert!(history[0].version.is_delete_marker && history[0].version.is_latest);

    let restorer = common::manager(&bucket, KEY).await;
    let restored = restorer.restore(&version_1, false).await.unwrap();
    assert_eq!(
        restored.meta.serial, 3,
        "numbered after the last serial before the deletion"
    );
    restorer.refresh_state().await.unwrap();
    assert_eq!(restorer.state().unwrap().outputs["n"].to_value(), 1);
    assert_eq!(common::version_count(&bucket, KEY).await, 3);
}

#[tokio::test]
async fn restoring_another_lineage_is_refused_unless_forced() {
    let bucket = common::bucket(true).await;
    common::put_raw(&bucket, KEY, common::TERRAFORM_STATE).await;
    let terraform_version = common::manager(&bucket, KEY)
        .await
        .history(&HistoryOptions::default())
        .await
        .unwrap()[0]
        .version
        .version_id
        .clone();
    // Someone replaced it with an unrelated state.
    let replacer = common::manager(&bucket, KEY).await;
    replacer.refresh_state().await.unwrap();
    let mut unrelated = s3state::State::new(semver::Version::new(1, 15, 5));
    unrelated.lineage = uuid::Uuid::new_v4().to_string();
    unrelated
        .outputs
        .insert("other".into(), OutputValue::new(&1));
    replacer.write_state(unrelated);
    replacer.persist_state_forced().await.unwrap();
    let current = replacer.state_snapshot_meta().unwrap();
    assert_ne!(current.lineage, "17be2140-cb35-fcbf-2b9f-a8e4e43cbc8b");

    let restorer = common::manager(&bucket, KEY).await;
    let err = restorer
        .restore(&terraform_version, false)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LineageMismatch { .. }), "{err:?}");
    assert_eq!(common::version_count(&bucket, KEY).await, 2);

    let restored = restorer.restore(&terraform_version, true).await.unwrap();
    assert_eq!(
        restored.meta.lineage,
        "17be2140-cb35-fcbf-2b9f-a8e4e43cbc8b"
    );
    assert_eq!(restored.meta.serial, current.serial + 1);
    assert_eq!(common::version_count(&bucket, KEY).await, 3);
}

#[tokio::test]
async fn prune_keeps_the_newest_snapshot_of_a_deleted_state_whatever_the_rules() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    for n in 1..=3 {
        manager.update(set("n", n)).await.unwrap();
    }
    common::delete_object(&bucket, KEY).await;

    // Every snapshot is older than the age kept, and the marker is the current version.
    let removed = manager
        .prune(&s3state::PruneOptions {
            keep_since: Some(time::OffsetDateTime::now_utc() + time::Duration::hours(1)),
            ..s3state::PruneOptions::default()
        })
        .await
        .unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert!(removed.iter().all(|v| !v.is_delete_marker));
    assert_eq!(common::version_count(&bucket, KEY).await, 1);

    let history = manager.history(&HistoryOptions::default()).await.unwrap();
    assert!(history[0].version.is_delete_marker);
    let restorer = common::manager(&bucket, KEY).await;
    let restored = restorer
        .restore(&history[1].version.version_id, false)
        .await;
    assert_eq!(restored.unwrap().meta.serial, 4);
    restorer.refresh_state().await.unwrap();
    assert_eq!(restorer.state().unwrap().outputs["n"].to_value(), 3);
}

#[tokio::test]
async fn prune_keep_counts_only_snapshots_and_keeps_the_delete_markers_among_them() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    manager.update(set("n", 1)).await.unwrap();
    manager.update(set("n", 2)).await.unwrap();
    // LocalStack's listing times have whole seconds: a delete marker tied with versions is
    // listed after them.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    common::delete_object(&bucket, KEY).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    common::manager(&bucket, KEY)
        .await
        .update(set("n", 3))
        .await
        .unwrap();
    common::delete_object(&bucket, KEY).await;
    // Newest first: marker, n=3, marker, n=2, n=1.
    let all = manager.history(&HistoryOptions::default()).await.unwrap();
    let markers: Vec<bool> = all.iter().map(|e| e.version.is_delete_marker).collect();
    assert_eq!(markers, [true, false, true, false, false]);

    let options = s3state::PruneOptions {
        keep_newest: Some(2),
        dry_run: true,
        ..s3state::PruneOptions::default()
    };
    let would = manager.prune(&options).await.unwrap();
    let removed = manager
        .prune(&s3state::PruneOptions {
            dry_run: false,
            ..options
        })
        .await
        .unwrap();
    let ids = |versions: &[s3state::store::ObjectVersion]| -> Vec<String> {
        versions.iter().map(|v| v.version_id.clone()).collect()
    };
    assert_eq!(ids(&would), [all[4].version.version_id.clone()]);
    assert_eq!(ids(&removed), ids(&would));
    let left = manager.history(&HistoryOptions::default()).await.unwrap();
    assert_eq!(
        left.iter()
            .map(|e| e.version.version_id.clone())
            .collect::<Vec<_>>(),
        all[..4]
            .iter()
            .map(|e| e.version.version_id.clone())
            .collect::<Vec<_>>()
    );
}

/// Who wrote each version, and what it holds (issue 26): the `Who` and `Operation` of the
/// caller's lock; the manager's own author (non-ASCII, kept exactly through S3's headers);
/// `update`'s and `restore`'s own locks; nothing for a persist without lock or author; and
/// unknown (never guessed) for a version Terraform wrote directly.
#[tokio::test]
async fn history_names_who_wrote_each_version_and_counts_its_resources() {
    let (bucket, manager) = common::bucket_and_manager(KEY).await;
    const LINEAGE: &str = "a0a0a0a0-1111-4222-8333-444444444444";
    common::put_raw(&bucket, KEY, &common::state_with_resources(LINEAGE, 1, 3)).await;

    // Under the caller's lock: its Who and Operation.
    manager.refresh_state().await.unwrap();
    let mut info = s3state::LockInfo::new("OperationTypeApply");
    info.who = "alice@laptop".into();
    let id = manager.lock(&info).await.unwrap();
    manager.update(set("by", "alice")).await.unwrap();
    manager.unlock(&id).await.unwrap();

    // `update` without the caller's lock: the lock it takes (user@host, "s3state update").
    manager.update(set("by", "update")).await.unwrap();

    // No lock and no author: nothing recorded.
    let unlocked = common::builder(&bucket, KEY)
        .with_options(s3state::RemoteStateOptions {
            update_locking: s3state::UpdateLocking::Disabled,
            ..Default::default()
        })
        .build()
        .await
        .unwrap();
    unlocked.update(set("by", "nobody")).await.unwrap();

    // The manager's own author, not ASCII.
    let author = "José Müller <ops@例え.jp>";
    let named = common::builder(&bucket, KEY)
        .with_options(s3state::RemoteStateOptions {
            author: Some(author.into()),
            ..Default::default()
        })
        .build()
        .await
        .unwrap();
    named.update(set("by", "josé")).await.unwrap();

    let history = manager
        .history(&HistoryOptions {
            details: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let authors: Vec<Option<&str>> = history.iter().map(|e| e.author.as_deref()).collect();
    let me = s3state::LockInfo::new("").who;
    assert_eq!(
        authors,
        [
            Some(author),
            None,
            Some(me.as_str()),
            Some("alice@laptop"),
            None
        ],
        "newest first; Terraform's own write is unknown"
    );
    let operations: Vec<Option<&str>> = history.iter().map(|e| e.operation.as_deref()).collect();
    assert_eq!(
        operations,
        [
            Some("s3state update"),
            Some("update"),
            Some("s3state update"),
            Some("OperationTypeApply"),
            None
        ]
    );
    assert!(
        history.iter().all(|e| e.resources == Some(3)),
        "counted from metadata, and from the body of Terraform's version: {history:?}"
    );
    let serials: Vec<u64> = history
        .iter()
        .map(|e| e.meta.as_ref().unwrap().serial)
        .collect();
    assert_eq!(serials, [5, 4, 3, 2, 1]);
}
