//! The contract every [`Store`] and [`VersionedStore`] keeps, as test functions: for store
//! implementers.
//!
//! One public function per behaviour, after `object_store`'s integration suite. Each takes a
//! store, checks one behaviour on fresh objects beside it, and panics with a message naming the
//! object and what was expected when the store breaks the contract. A store's own tests call
//! [`run_all`] (or single functions) against a live instance: the in-memory store in
//! `tests/suite/store_contract/memory.rs`, [`crate::s3::S3Store`] against LocalStack in
//! `tests/suite/rules/conformance.rs`.
//!
//! The store passed in is only an anchor: every function writes to new objects named after it
//! (its key plus `.conformance-<behaviour>-<uuid>`, through [`Store::sibling`]), so it never
//! reads or changes the anchor's own object and may run beside other tests on the same bucket.
//! The objects it writes are left behind; point it at a bucket (or prefix) made for tests.
//!
//! Where S3 lets a store choose, the suite accepts every choice S3 makes:
//! - tags are opaque: identical bodies may or may not share a tag (S3 without KMS tags by
//!   content, under SSE-KMS per write), so no function relies on either;
//! - a conditional delete may be answered [`DeleteOutcome::ConditionalUnsupported`] (as
//!   LocalStack does), but only with nothing deleted.
//!
//! The functions are generic, so they add nothing to a binary that does not call them.
//!
//! ```
//! use s3state::store::{conformance, memory::MemoryStore};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! conformance::run_all(&MemoryStore::new("tests/anchor.tfstate")).await;
//! # });
//! ```

use crate::error::Error;
use crate::store::{
    DeleteOutcome, ETag, Fetched, Headed, ObjectMetadata, ObjectVersion, Precondition, PutOutcome,
    Store, StoredObject, VersionedStore, Written,
};
use bytes::Bytes;
use sha2::Digest as _;

/// The page size the suite lists versions with, unless a function tests paging itself.
const PAGE: u32 = 1000;

/// Runs every function of the suite against `store`, one after another.
///
/// # Panics
///
/// At the first behaviour the store gets wrong, or at any store error.
pub async fn run_all<S: VersionedStore>(store: &S) {
    conditional_create_succeeds_once(store).await;
    conditional_update_needs_the_current_tag(store).await;
    get_if_none_match_answers_not_modified_for_the_current_tag(store).await;
    get_of_an_absent_object_is_absent(store).await;
    head_describes_the_current_object_without_its_body(store).await;
    conditional_delete_honours_the_tag_or_deletes_nothing(store).await;
    siblings_are_separate_objects(store).await;
    unconditional_delete_leaves_a_delete_marker(store).await;
    metadata_round_trips(store).await;
    versions_are_listed_newest_first(store).await;
    get_version_of_an_unknown_id_is_version_not_found(store).await;
    get_version_of_a_delete_marker_is_version_not_found(store).await;
    delete_version_removes_exactly_that_version(store).await;
    a_versioned_store_offers_its_versions(store).await;
}

/// `put` with [`Precondition::Create`] (`If-None-Match: *`) writes an absent object once; a
/// second create is [`PutOutcome::PreconditionFailed`] and leaves the first body in place. A
/// create over a deleted object (a delete marker) succeeds again.
///
/// # Panics
///
/// When the store breaks this contract, or fails.
pub async fn conditional_create_succeeds_once<S: Store>(store: &S) {
    let object = fresh(store, "create");
    let first = put_written(
        &object,
        "first",
        &Precondition::Create,
        "a create of an absent object",
    )
    .await;
    let outcome = put(&object, "second", &Precondition::Create).await;
    assert!(
        outcome == PutOutcome::PreconditionFailed,
        "{}: a second create (If-None-Match: *) answered {outcome:?}; expected PreconditionFailed",
        object.location()
    );
    let current = found(&object, "after a refused create").await;
    assert_body(&object, &current, "first", "after a refused create");
    assert_eq!(
        current.etag,
        first.etag,
        "{}: the tag changed after a refused create",
        object.location()
    );

    delete_unconditionally(&object).await;
    put_written(
        &object,
        "third",
        &Precondition::Create,
        "a create over a deleted object",
    )
    .await;
    let current = found(&object, "after a create over a deleted object").await;
    assert_body(
        &object,
        &current,
        "third",
        "after a create over a deleted object",
    );
}

/// `put` with [`Precondition::Match`] (`If-Match`) writes only while the object has that tag:
/// the current tag succeeds and returns the tag a `get` then sees; an earlier tag, a made-up
/// tag, an absent object and a deleted object are [`PutOutcome::PreconditionFailed`] with
/// nothing written.
///
/// # Panics
///
/// When the store breaks this contract, or fails.
pub async fn conditional_update_needs_the_current_tag<S: Store>(store: &S) {
    let object = fresh(store, "update");
    let a = put_written(&object, "a", &Precondition::Create, "a create").await;
    let b = put_written(
        &object,
        "b",
        &Precondition::Match(a.etag.clone()),
        "an update with the current tag",
    )
    .await;
    let current = found(&object, "after an update").await;
    assert_body(
        &object,
        &current,
        "b",
        "after an update with the current tag",
    );
    assert_eq!(
        current.etag,
        b.etag,
        "{}: get returned another tag than the update did",
        object.location()
    );

    for (tag, what) in [
        (a.etag.clone(), "the previous tag"),
        (
            ETag::new("\"00000000000000000000000000000000\""),
            "a made-up tag",
        ),
    ] {
        let outcome = put(&object, "c", &Precondition::Match(tag)).await;
        assert!(
            outcome == PutOutcome::PreconditionFailed,
            "{}: an update with {what} answered {outcome:?}; expected PreconditionFailed",
            object.location()
        );
        let current = found(&object, "after a refused update").await;
        assert_body(
            &object,
            &current,
            "b",
            &format!("after an update with {what}"),
        );
    }

    let absent = fresh(store, "update-absent");
    let outcome = put(&absent, "c", &Precondition::Match(b.etag.clone())).await;
    assert!(
        outcome == PutOutcome::PreconditionFailed,
        "{}: an update (If-Match) of an absent object answered {outcome:?}; expected PreconditionFailed",
        absent.location()
    );
    assert_absent(&absent, "after a refused update of an absent object").await;

    delete_unconditionally(&object).await;
    let outcome = put(&object, "c", &Precondition::Match(b.etag)).await;
    assert!(
        outcome == PutOutcome::PreconditionFailed,
        "{}: an update (If-Match) of a deleted object with its last tag answered {outcome:?}; \
         expected PreconditionFailed",
        object.location()
    );
    assert_absent(&object, "after a refused update of a deleted object").await;
}

/// `get` with the current tag as `if_none_match` is [`Fetched::NotModified`]; with any other
/// tag it is the object; on an absent object it is [`Fetched::Absent`].
///
/// # Panics
///
/// When the store breaks this contract, or fails.
pub async fn get_if_none_match_answers_not_modified_for_the_current_tag<S: Store>(store: &S) {
    let object = fresh(store, "if-none-match");
    let a = put_written(&object, "a", &Precondition::Create, "a create").await;
    match get(&object, Some(&a.etag)).await {
        Fetched::NotModified => {}
        other => panic!(
            "{}: get with If-None-Match of the current tag answered {}; expected NotModified",
            object.location(),
            describe(&other)
        ),
    }
    let b = put_written(
        &object,
        "b",
        &Precondition::Match(a.etag.clone()),
        "an update",
    )
    .await;
    match get(&object, Some(&a.etag)).await {
        Fetched::Found(current) => {
            assert_body(
                &object,
                &current,
                "b",
                "from get with an outdated If-None-Match",
            );
            assert_eq!(
                current.etag,
                b.etag,
                "{}: get returned a stale tag",
                object.location()
            );
        }
        other => panic!(
            "{}: get with If-None-Match of an outdated tag answered {}; expected the object",
            object.location(),
            describe(&other)
        ),
    }

    let absent = fresh(store, "if-none-match-absent");
    match get(&absent, Some(&a.etag)).await {
        Fetched::Absent => {}
        other => panic!(
            "{}: get with If-None-Match of an absent object answered {}; expected Absent",
            absent.location(),
            describe(&other)
        ),
    }
}

/// `get` of an object never written, and of one whose latest version is a delete marker, is
/// [`Fetched::Absent`].
///
/// # Panics
///
/// When the store breaks this contract, or fails.
pub async fn get_of_an_absent_object_is_absent<S: Store>(store: &S) {
    let object = fresh(store, "absent");
    assert_absent(&object, "for an object never written").await;
    put_written(&object, "a", &Precondition::Create, "a create").await;
    delete_unconditionally(&object).await;
    assert_absent(&object, "after an unconditional delete").await;
}

/// `delete` with `if_match`:
/// - the current tag deletes the object ([`DeleteOutcome::Deleted`]);
/// - another tag is [`DeleteOutcome::PreconditionFailed`], and the object stays;
/// - an absent or deleted object is [`DeleteOutcome::Absent`], and nothing is written.
///
/// A store that cannot delete conditionally may answer any of these
/// [`DeleteOutcome::ConditionalUnsupported`], but only with nothing deleted and nothing
/// written (when it keeps versions, the versions are unchanged).
///
/// # Panics
///
/// When the store breaks this contract, or fails.
pub async fn conditional_delete_honours_the_tag_or_deletes_nothing<S: Store>(store: &S) {
    let object = fresh(store, "conditional-delete");
    let a = put_written(&object, "a", &Precondition::Create, "a create").await;
    let b = put_written(
        &object,
        "b",
        &Precondition::Match(a.etag.clone()),
        "an update",
    )
    .await;

    // Another tag: refused, the object stays.
    let before = versions_if_any(&object).await;
    match delete(&object, Some(&a.etag)).await {
        DeleteOutcome::PreconditionFailed | DeleteOutcome::ConditionalUnsupported => {}
        other => panic!(
            "{}: a delete with If-Match of an outdated tag answered {other:?}; expected \
             PreconditionFailed (or ConditionalUnsupported)",
            object.location()
        ),
    }
    let current = found(&object, "after a delete with an outdated tag").await;
    assert_body(
        &object,
        &current,
        "b",
        "after a delete with an outdated tag",
    );
    assert_versions_unchanged(&object, &before, "a delete with an outdated tag").await;

    // The current tag: deleted, or (unsupported) nothing deleted.
    let before = versions_if_any(&object).await;
    match delete(&object, Some(&b.etag)).await {
        DeleteOutcome::Deleted => {
            assert_absent(&object, "after a delete with the current tag").await;
        }
        DeleteOutcome::ConditionalUnsupported => {
            let current = found(&object, "after a delete answered ConditionalUnsupported").await;
            assert_body(
                &object,
                &current,
                "b",
                "after a delete answered ConditionalUnsupported",
            );
            assert_versions_unchanged(&object, &before, "a delete answered ConditionalUnsupported")
                .await;
        }
        other => panic!(
            "{}: a delete with If-Match of the current tag answered {other:?}; expected Deleted \
             (or ConditionalUnsupported)",
            object.location()
        ),
    }

    // No object at all, and an object whose latest version is a delete marker.
    let never = fresh(store, "conditional-delete-absent");
    let deleted = fresh(store, "conditional-delete-deleted");
    let c = put_written(&deleted, "c", &Precondition::Create, "a create").await;
    delete_unconditionally(&deleted).await;
    for (absent, what) in [(&never, "never written"), (&deleted, "deleted")] {
        let before = versions_if_any(absent).await;
        match delete(absent, Some(&c.etag)).await {
            DeleteOutcome::Absent | DeleteOutcome::ConditionalUnsupported => {}
            other => panic!(
                "{}: a delete with If-Match of an object {what} answered {other:?}; expected \
                 Absent (or ConditionalUnsupported)",
                absent.location()
            ),
        }
        assert_absent(
            absent,
            &format!("after a conditional delete of an object {what}"),
        )
        .await;
        assert_versions_unchanged(
            absent,
            &before,
            &format!("a conditional delete of an object {what}"),
        )
        .await;
    }
}

/// Objects whose names share a prefix (`<key>` and `<key>.tflock`) are separate: writing or
/// deleting one leaves the other as it was, and each lists only its own versions.
///
/// # Panics
///
/// When the store breaks this contract, or fails.
pub async fn siblings_are_separate_objects<S: VersionedStore>(store: &S) {
    let state = fresh(store, "siblings");
    let lock = state.sibling(".tflock");
    put_written(&state, "state", &Precondition::Create, "a create").await;
    put_written(
        &lock,
        "lock",
        &Precondition::Create,
        "a create of a sibling",
    )
    .await;
    assert_ne!(
        state.location(),
        lock.location(),
        "a sibling has the same location as its object"
    );
    for (object, count) in [(&state, 1), (&lock, 1)] {
        let versions = list(object, PAGE).await;
        assert_eq!(
            versions.len(),
            count,
            "{}: lists {} versions after one write: {versions:#?}",
            object.location(),
            versions.len()
        );
    }
    delete_unconditionally(&lock).await;
    let current = found(&state, "after its sibling was deleted").await;
    assert_body(&state, &current, "state", "after its sibling was deleted");
    assert_eq!(
        list(&state, PAGE).await.len(),
        1,
        "{}: deleting a sibling changed this object's versions",
        state.location()
    );
}

/// An unconditional `delete` answers [`DeleteOutcome::Deleted`] and leaves the content as an
/// older version below a delete marker: the newest version, latest, with no tag and size 0.
/// Deleting an absent object (never written, or already deleted) unconditionally also answers
/// `Deleted`, and adds a delete marker all the same, as S3 does in a versioned bucket.
///
/// # Panics
///
/// When the store breaks this contract, or fails.
pub async fn unconditional_delete_leaves_a_delete_marker<S: VersionedStore>(store: &S) {
    let object = fresh(store, "delete-marker");
    let a = put_written(&object, "a", &Precondition::Create, "a create").await;
    delete_unconditionally(&object).await;
    assert_absent(&object, "after an unconditional delete").await;

    let versions = list(&object, PAGE).await;
    let [marker, content] = versions.as_slice() else {
        panic!(
            "{}: expected two versions (a delete marker over the content) after a write and a \
             delete, got {versions:#?}",
            object.location()
        );
    };
    assert!(
        marker.is_delete_marker && marker.is_latest && marker.etag.is_none() && marker.size == 0,
        "{}: the newest version after a delete is not a latest delete marker without tag or \
         size: {marker:#?}",
        object.location()
    );
    assert!(
        !content.is_delete_marker && !content.is_latest,
        "{}: the deleted content is not an older content version: {content:#?}",
        object.location()
    );
    assert_eq!(
        Some(content.version_id.as_str()),
        a.version_id.as_deref(),
        "{}: the version below the delete marker is not the one written",
        object.location()
    );
    assert_eq!(
        content.etag.as_ref(),
        Some(&a.etag),
        "{}: the deleted version lost its tag",
        object.location()
    );

    let never = fresh(store, "delete-marker-absent");
    for markers in 1..=2 {
        delete_unconditionally(&never).await;
        assert_absent(&never, "after an unconditional delete of an absent object").await;
        let versions = list(&never, PAGE).await;
        let shape: Vec<(bool, bool)> = versions
            .iter()
            .map(|v| (v.is_delete_marker, v.is_latest))
            .collect();
        let mut expected = vec![(true, false); markers];
        expected[0].1 = true;
        assert_eq!(
            shape,
            expected,
            "{}: after {markers} unconditional deletes of an object never written, expected \
             {markers} delete markers, the newest latest; got {versions:#?}",
            never.location()
        );
    }
}

/// The metadata given to `put` comes back, exactly, from `get`, `get_version` and
/// `version_metadata`; a later write replaces it (it is not merged), and older versions keep
/// their own.
///
/// # Panics
///
/// When the store breaks this contract, or fails.
pub async fn metadata_round_trips<S: VersionedStore>(store: &S) {
    let object = fresh(store, "metadata");
    let first = ObjectMetadata::from([
        ("conformance-serial".to_owned(), "7".to_owned()),
        (
            "conformance-lineage".to_owned(),
            uuid::Uuid::new_v4().to_string(),
        ),
    ]);
    let a = put_with(
        &object,
        "a",
        &Precondition::Create,
        &first,
        "a create with metadata",
    )
    .await;
    let second = ObjectMetadata::from([("conformance-other".to_owned(), "x".to_owned())]);
    let b = put_with(
        &object,
        "b",
        &Precondition::Match(a.etag.clone()),
        &second,
        "an update with other metadata",
    )
    .await;

    let current = found(&object, "after writes with metadata").await;
    assert_eq!(
        current.metadata,
        second,
        "{}: get returned other metadata than the latest put",
        object.location()
    );
    for (written, expected) in [(&a, &first), (&b, &second)] {
        let id = version_id_of(&object, written);
        let read = object
            .get_version(id)
            .await
            .unwrap_or_else(|err| panic!("{}: get_version {id} failed: {err}", object.location()));
        assert_eq!(
            &read.metadata,
            expected,
            "{}: get_version {id} returned other metadata than its put",
            object.location()
        );
        let head = object.version_metadata(id).await.unwrap_or_else(|err| {
            panic!("{}: version_metadata {id} failed: {err}", object.location())
        });
        assert_eq!(
            &head,
            expected,
            "{}: version_metadata {id} returned other metadata than its put",
            object.location()
        );
    }

    let empty = fresh(store, "metadata-empty");
    put_written(
        &empty,
        "a",
        &Precondition::Create,
        "a create without metadata",
    )
    .await;
    let current = found(&empty, "after a write without metadata").await;
    assert!(
        current.metadata.is_empty(),
        "{}: an object written without metadata has metadata {:?}",
        empty.location(),
        current.metadata
    );
}

/// `head` describes the current object as the last `put` left it, without its body: the tag
/// and version id `put` returned, the body's size, the metadata exactly (replaced, not merged,
/// by a later write), and the SHA-256 of the body when the store keeps one (never a checksum of
/// anything else). An absent or deleted object is [`Headed::Absent`]. A store may always answer
/// [`Headed::Unsupported`] instead; callers then read the body.
///
/// # Panics
///
/// When the store breaks this contract, or fails.
pub async fn head_describes_the_current_object_without_its_body<S: Store>(store: &S) {
    let object = fresh(store, "head");
    match head(&object).await {
        Headed::Unsupported => return,
        Headed::Absent => {}
        Headed::Found(found) => panic!(
            "{}: head of an absent object answered {found:?}; expected Absent",
            object.location()
        ),
    }
    let first = ObjectMetadata::from([("conformance-serial".to_owned(), "1".to_owned())]);
    let a = put_with(&object, "a", &Precondition::Create, &first, "a create").await;
    assert_head(&object, &a, "a", &first, "after a create").await;
    let second = ObjectMetadata::from([("conformance-other".to_owned(), "x".to_owned())]);
    let b = put_with(
        &object,
        "bb",
        &Precondition::Match(a.etag.clone()),
        &second,
        "an update",
    )
    .await;
    assert_head(&object, &b, "bb", &second, "after an update").await;
    delete_unconditionally(&object).await;
    match head(&object).await {
        Headed::Absent => {}
        other => panic!(
            "{}: head of a deleted object answered {other:?}; expected Absent",
            object.location()
        ),
    }
}

/// `list_versions` lists every version newest first, content and delete markers alike, with
/// `is_latest` on the newest only, the ids, tags and sizes the writes produced, and
/// non-increasing times; the same at any page size. `get` reports the latest version's id.
///
/// # Panics
///
/// When the store breaks this contract, or fails.
pub async fn versions_are_listed_newest_first<S: VersionedStore>(store: &S) {
    let object = fresh(store, "versions");
    let a = put_written(&object, "a", &Precondition::Create, "a create").await;
    let b = put_written(
        &object,
        "bb",
        &Precondition::Match(a.etag.clone()),
        "an update",
    )
    .await;
    // S3 lists versions and delete markers as two lists whose only common order is their
    // times, which some stores (LocalStack) give in whole seconds: the writes around the
    // marker are a second apart, so their order is decided.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    delete_unconditionally(&object).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let c = put_written(
        &object,
        "ccc",
        &Precondition::Create,
        "a create after a delete",
    )
    .await;

    let versions = list(&object, PAGE).await;
    let shape: Vec<(bool, bool)> = versions
        .iter()
        .map(|v| (v.is_delete_marker, v.is_latest))
        .collect();
    assert_eq!(
        shape,
        [(false, true), (true, false), (false, false), (false, false)],
        "{}: expected [content (latest), delete marker, content, content] newest first, got \
         {versions:#?}",
        object.location()
    );
    for (version, written, size) in [
        (&versions[0], &c, 3),
        (&versions[2], &b, 2),
        (&versions[3], &a, 1),
    ] {
        assert_eq!(
            Some(version.version_id.as_str()),
            written.version_id.as_deref(),
            "{}: the listing is out of order: {versions:#?}",
            object.location()
        );
        assert_eq!(
            (version.etag.as_ref(), version.size),
            (Some(&written.etag), size),
            "{}: version {} lists another tag or size than its write",
            object.location(),
            version.version_id
        );
    }
    assert!(
        versions
            .windows(2)
            .all(|pair| pair[0].last_modified >= pair[1].last_modified),
        "{}: versions are not newest first by time: {versions:#?}",
        object.location()
    );
    let current = found(&object, "after the writes").await;
    assert_eq!(
        current.version_id.as_deref(),
        c.version_id.as_deref(),
        "{}: get reports another version id than the latest write's",
        object.location()
    );

    let paged = list(&object, 1).await;
    assert_eq!(
        paged,
        versions,
        "{}: listing one version per page gives another list",
        object.location()
    );
}

/// `get_version` and `version_metadata` of an id the object does not have (a made-up id,
/// another object's version, any id of an object never written) are
/// [`Error::VersionNotFound`] with `is_delete_marker` false.
///
/// # Panics
///
/// When the store breaks this contract, or fails otherwise.
pub async fn get_version_of_an_unknown_id_is_version_not_found<S: VersionedStore>(store: &S) {
    let object = fresh(store, "unknown-version");
    put_written(&object, "a", &Precondition::Create, "a create").await;
    let other = fresh(store, "unknown-version-other");
    let written = put_written(&other, "b", &Precondition::Create, "a create").await;
    let foreign = version_id_of(&other, &written).to_owned();
    let never = fresh(store, "unknown-version-never");

    for (target, id, what) in [
        (&object, "conformance-no-such-version", "a made-up id"),
        (&object, foreign.as_str(), "another object's version id"),
        (
            &never,
            foreign.as_str(),
            "a version id, on an object never written",
        ),
    ] {
        let got = target.get_version(id).await.map(|_| ());
        expect_version_not_found(target, "get_version", id, what, got, false);
        let got = target.version_metadata(id).await.map(|_| ());
        expect_version_not_found(target, "version_metadata", id, what, got, false);
    }
}

/// `get_version` and `version_metadata` of a delete marker's id are
/// [`Error::VersionNotFound`] with `is_delete_marker` true: a marker has no content.
///
/// # Panics
///
/// When the store breaks this contract, or fails otherwise.
pub async fn get_version_of_a_delete_marker_is_version_not_found<S: VersionedStore>(store: &S) {
    let object = fresh(store, "marker-version");
    put_written(&object, "a", &Precondition::Create, "a create").await;
    delete_unconditionally(&object).await;
    let versions = list(&object, PAGE).await;
    let marker = versions
        .iter()
        .find(|v| v.is_delete_marker)
        .unwrap_or_else(|| {
            panic!(
                "{}: no delete marker listed after a delete: {versions:#?}",
                object.location()
            )
        });
    let id = marker.version_id.as_str();
    let got = object.get_version(id).await.map(|_| ());
    expect_version_not_found(&object, "get_version", id, "a delete marker", got, true);
    let got = object.version_metadata(id).await.map(|_| ());
    expect_version_not_found(
        &object,
        "version_metadata",
        id,
        "a delete marker",
        got,
        true,
    );
}

/// `delete_version` removes exactly the version named, for good: an older one leaves the
/// current object alone; the latest one makes the version below it current again; a delete
/// marker's removal brings the content below it back.
///
/// # Panics
///
/// When the store breaks this contract, or fails.
pub async fn delete_version_removes_exactly_that_version<S: VersionedStore>(store: &S) {
    let object = fresh(store, "delete-version");
    let a = put_written(&object, "a", &Precondition::Create, "a create").await;
    let b = put_written(
        &object,
        "b",
        &Precondition::Match(a.etag.clone()),
        "an update",
    )
    .await;
    let c = put_written(
        &object,
        "c",
        &Precondition::Match(b.etag.clone()),
        "an update",
    )
    .await;
    let ids = |written: &[&Written]| -> Vec<String> {
        written
            .iter()
            .map(|w| version_id_of(&object, w).to_owned())
            .collect()
    };

    remove_version(&object, version_id_of(&object, &b)).await;
    assert_eq!(
        listed_ids(&object).await,
        ids(&[&c, &a]),
        "{}: deleting the middle version did not remove exactly it",
        object.location()
    );
    let current = found(&object, "after deleting an older version").await;
    assert_body(&object, &current, "c", "after deleting an older version");
    let id = version_id_of(&object, &b);
    let got = object.get_version(id).await.map(|_| ());
    expect_version_not_found(&object, "get_version", id, "a deleted version", got, false);

    remove_version(&object, version_id_of(&object, &c)).await;
    let versions = list(&object, PAGE).await;
    assert!(
        versions.len() == 1 && versions[0].is_latest,
        "{}: after deleting the latest version, the one below should be the only and latest \
         version: {versions:#?}",
        object.location()
    );
    let current = found(&object, "after deleting the latest version").await;
    assert_body(&object, &current, "a", "after deleting the latest version");
    assert_eq!(
        current.etag,
        a.etag,
        "{}: the restored version has another tag",
        object.location()
    );

    delete_unconditionally(&object).await;
    assert_absent(&object, "after an unconditional delete").await;
    let versions = list(&object, PAGE).await;
    let marker = versions
        .first()
        .filter(|v| v.is_delete_marker)
        .unwrap_or_else(|| {
            panic!(
                "{}: no delete marker on top after a delete: {versions:#?}",
                object.location()
            )
        })
        .version_id
        .clone();
    remove_version(&object, &marker).await;
    let current = found(&object, "after deleting its delete marker").await;
    assert_body(&object, &current, "a", "after deleting its delete marker");
    assert_eq!(
        listed_ids(&object).await,
        ids(&[&a]),
        "{}: deleting the delete marker left other versions than the content",
        object.location()
    );
}

/// A store that keeps versions says so: [`Store::as_versioned`] is `Some`, and lists what the
/// store lists.
///
/// # Panics
///
/// When the store breaks this contract, or fails.
pub async fn a_versioned_store_offers_its_versions<S: VersionedStore>(store: &S) {
    let object = fresh(store, "as-versioned");
    put_written(&object, "a", &Precondition::Create, "a create").await;
    let Some(versioned) = object.as_versioned() else {
        panic!(
            "{}: as_versioned() is None for a VersionedStore, so writes cannot be looked up \
             among the versions after a lost answer",
            object.location()
        );
    };
    let through = versioned
        .list_versions(PAGE)
        .await
        .unwrap_or_else(|err| panic!("{}: list_versions failed: {err}", object.location()));
    assert_eq!(
        through,
        list(&object, PAGE).await,
        "{}: as_versioned() lists other versions than the store",
        object.location()
    );
}

// Helpers. Each panics with the object's location and what was being done.

/// A new object beside `store`, unique to this call.
fn fresh<S: Store>(store: &S, behaviour: &str) -> S {
    store.sibling(&format!(
        ".conformance-{behaviour}-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

async fn put<S: Store>(object: &S, body: &str, precondition: &Precondition) -> PutOutcome {
    object
        .put(
            Bytes::from(body.to_owned()),
            precondition,
            &ObjectMetadata::new(),
        )
        .await
        .unwrap_or_else(|err| panic!("{}: put failed: {err}", object.location()))
}

async fn put_with<S: Store>(
    object: &S,
    body: &str,
    precondition: &Precondition,
    metadata: &ObjectMetadata,
    what: &str,
) -> Written {
    let outcome = object
        .put(Bytes::from(body.to_owned()), precondition, metadata)
        .await
        .unwrap_or_else(|err| panic!("{}: {what} failed: {err}", object.location()));
    match outcome {
        PutOutcome::Written(written) => written,
        PutOutcome::PreconditionFailed => panic!(
            "{}: {what} ({precondition:?}) answered PreconditionFailed; expected it to be written",
            object.location()
        ),
    }
}

async fn put_written<S: Store>(
    object: &S,
    body: &str,
    precondition: &Precondition,
    what: &str,
) -> Written {
    put_with(object, body, precondition, &ObjectMetadata::new(), what).await
}

async fn get<S: Store>(object: &S, if_none_match: Option<&ETag>) -> Fetched {
    object
        .get(if_none_match)
        .await
        .unwrap_or_else(|err| panic!("{}: get failed: {err}", object.location()))
}

async fn head<S: Store>(object: &S) -> Headed {
    object
        .head()
        .await
        .unwrap_or_else(|err| panic!("{}: head failed: {err}", object.location()))
}

/// Checks that `head` describes the object `written` left, with `body` and `metadata`.
async fn assert_head<S: Store>(
    object: &S,
    written: &Written,
    body: &str,
    metadata: &ObjectMetadata,
    when: &str,
) {
    let found = match head(object).await {
        Headed::Found(found) => found,
        other => panic!(
            "{}: head {when} answered {other:?}; expected the object's head",
            object.location()
        ),
    };
    let location = object.location();
    assert_eq!(found.etag, written.etag, "{location}: head {when}: tag");
    assert_eq!(
        found.version_id, written.version_id,
        "{location}: head {when}: version id"
    );
    assert_eq!(
        found.size,
        body.len() as u64,
        "{location}: head {when}: size"
    );
    assert_eq!(
        &found.metadata, metadata,
        "{location}: head {when}: metadata"
    );
    if let Some(sha256) = found.sha256 {
        let expected: [u8; 32] = sha2::Sha256::digest(body.as_bytes()).into();
        assert_eq!(
            sha256, expected,
            "{location}: head {when}: the checksum is not the body's SHA-256"
        );
    }
}

async fn found<S: Store>(object: &S, when: &str) -> StoredObject {
    match get(object, None).await {
        Fetched::Found(current) => current,
        other => panic!(
            "{}: get {when} answered {}; expected the object",
            object.location(),
            describe(&other)
        ),
    }
}

async fn assert_absent<S: Store>(object: &S, when: &str) {
    match get(object, None).await {
        Fetched::Absent => {}
        other => panic!(
            "{}: get {when} answered {}; expected Absent",
            object.location(),
            describe(&other)
        ),
    }
}

fn assert_body<S: Store>(object: &S, current: &StoredObject, expected: &str, when: &str) {
    assert_eq!(
        current.body,
        expected.as_bytes(),
        "{}: unexpected body {when}",
        object.location()
    );
}

async fn delete<S: Store>(object: &S, if_match: Option<&ETag>) -> DeleteOutcome {
    object
        .delete(if_match)
        .await
        .unwrap_or_else(|err| panic!("{}: delete failed: {err}", object.location()))
}

async fn delete_unconditionally<S: Store>(object: &S) {
    let outcome = delete(object, None).await;
    assert!(
        outcome == DeleteOutcome::Deleted,
        "{}: an unconditional delete answered {outcome:?}; expected Deleted",
        object.location()
    );
}

async fn list<S: VersionedStore>(object: &S, page_size: u32) -> Vec<ObjectVersion> {
    object
        .list_versions(page_size)
        .await
        .unwrap_or_else(|err| panic!("{}: list_versions failed: {err}", object.location()))
}

async fn listed_ids<S: VersionedStore>(object: &S) -> Vec<String> {
    list(object, PAGE)
        .await
        .into_iter()
        .map(|v| v.version_id)
        .collect()
}

async fn remove_version<S: VersionedStore>(object: &S, version_id: &str) {
    object
        .delete_version(version_id)
        .await
        .unwrap_or_else(|err| {
            panic!(
                "{}: delete_version {version_id} failed: {err}",
                object.location()
            )
        });
}

/// The object's versions when the store keeps them, to check that an operation changed none.
async fn versions_if_any<S: Store>(object: &S) -> Option<Vec<ObjectVersion>> {
    match object.as_versioned() {
        Some(versioned) => Some(
            versioned
                .list_versions(PAGE)
                .await
                .unwrap_or_else(|err| panic!("{}: list_versions failed: {err}", object.location())),
        ),
        None => None,
    }
}

async fn assert_versions_unchanged<S: Store>(
    object: &S,
    before: &Option<Vec<ObjectVersion>>,
    operation: &str,
) {
    let after = versions_if_any(object).await;
    assert_eq!(
        &after,
        before,
        "{}: {operation} changed the versions",
        object.location()
    );
}

fn version_id_of<'a, S: Store>(object: &S, written: &'a Written) -> &'a str {
    written.version_id.as_deref().unwrap_or_else(|| {
        panic!(
            "{}: a versioned store returned no version id from put",
            object.location()
        )
    })
}

fn expect_version_not_found<S: Store>(
    object: &S,
    operation: &str,
    id: &str,
    what: &str,
    got: crate::Result<()>,
    delete_marker: bool,
) {
    match got {
        Err(Error::VersionNotFound {
            version_id,
            is_delete_marker,
            ..
        }) if version_id == id && is_delete_marker == delete_marker => {}
        other => panic!(
            "{}: {operation} of {what} ({id}) answered {other:?}; expected \
             Error::VersionNotFound {{ version_id: {id:?}, is_delete_marker: {delete_marker} }}",
            object.location()
        ),
    }
}

/// A [`Fetched`] for messages, without the body.
fn describe(fetched: &Fetched) -> String {
    match fetched {
        Fetched::Found(object) => format!(
            "Found({} bytes, tag {}, version {:?})",
            object.body.len(),
            object.etag,
            object.version_id
        ),
        Fetched::NotModified => "NotModified".into(),
        Fetched::Absent => "Absent".into(),
    }
}
