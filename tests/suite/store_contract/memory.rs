//! The in-memory store against the store contract (`s3state::store::conformance`), in every
//! configuration it offers; and the suite itself, against a store that breaks the contract.

use crate::common::hooked::Hooked;
use bytes::Bytes;
use s3state::store::memory::{ETagStyle, MemoryOptions, MemoryStore};
use s3state::store::{
    DeleteOutcome, ETag, ObjectMetadata, Precondition, PutOutcome, Store, conformance,
};
use std::sync::Arc;

const ANCHOR: &str = "conformance/terraform.tfstate";

fn store(etag_style: ETagStyle, conditional_delete: bool) -> MemoryStore {
    MemoryStore::with_options(
        ANCHOR,
        MemoryOptions {
            etag_style,
            conditional_delete,
        },
    )
}

/// One test per configuration: the store built with `$style` and `$conditional_delete`
/// passes the whole contract.
macro_rules! keeps_the_store_contract {
    ($($name:ident: $style:expr, $conditional_delete:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            conformance::run_all(&store($style, $conditional_delete)).await;
        }
    )*};
}

keeps_the_store_contract! {
    content_md5_tags_with_conditional_deletes_keep_the_store_contract: ETagStyle::ContentMd5, true;
    opaque_tags_with_conditional_deletes_keep_the_store_contract: ETagStyle::Opaque, true;
    content_md5_tags_without_conditional_deletes_keep_the_store_contract: ETagStyle::ContentMd5, false;
    opaque_tags_without_conditional_deletes_keep_the_store_contract: ETagStyle::Opaque, false;
}

#[tokio::test]
async fn the_suite_writes_only_beside_the_anchor_object() {
    let anchor = store(ETagStyle::ContentMd5, true);
    conformance::run_all(&anchor).await;
    assert_eq!(anchor.version_count(), 0, "the anchor itself was written");
    let keys = anchor.keys();
    assert!(!keys.is_empty(), "the suite wrote nothing");
    assert!(
        keys.iter()
            .all(|key| key.starts_with(&format!("{ANCHOR}.conformance-"))),
        "{keys:?}"
    );
}

#[tokio::test]
async fn a_conditional_delete_is_honoured_or_answered_unsupported_as_configured() {
    for (conditional_delete, expected) in [
        (true, DeleteOutcome::Deleted),
        (false, DeleteOutcome::ConditionalUnsupported),
    ] {
        let object = store(ETagStyle::ContentMd5, conditional_delete);
        let PutOutcome::Written(written) = object
            .put(
                Bytes::from_static(b"a"),
                &Precondition::Create,
                &ObjectMetadata::new(),
            )
            .await
            .unwrap()
        else {
            panic!("a create of an absent object was refused");
        };
        assert_eq!(object.delete(Some(&written.etag)).await.unwrap(), expected);
        assert_eq!(
            object.current_body().is_none(),
            conditional_delete,
            "conditional_delete: {conditional_delete}"
        );
    }
}

#[tokio::test]
#[should_panic(expected = "get after a delete with an outdated tag answered Absent")]
async fn the_suite_rejects_a_store_that_deletes_when_it_answers_unsupported() {
    // A store that answers a conditional delete "unsupported" after deleting anyway: the one
    // outcome the suite must never accept.
    let lying = Hooked::new(ANCHOR).unversioned();
    lying.every_delete(Arc::new(|store: Hooked, if_match: Option<ETag>| {
        Box::pin(async move {
            if if_match.is_some() {
                store.inner.delete(None).await?;
                return Ok(DeleteOutcome::ConditionalUnsupported);
            }
            store.inner.delete(None).await
        })
    }));
    conformance::conditional_delete_honours_the_tag_or_deletes_nothing(&lying).await;
}
