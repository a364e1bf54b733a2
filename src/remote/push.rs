//! Terraform's `state push` over a [`RemoteState`], judged from the stored object's head.
//!
//! Every snapshot s3state writes carries its serial and lineage in the object's metadata, and
//! the store keeps the SHA-256 of its body (s3state sends one with every write). That is enough
//! to apply the push rules without downloading a state of tens of megabytes: the body is read
//! only when the head cannot decide.

use super::verdict::{self, Rules, Stored, Verdict};
use super::{Base, PersistError, RemoteState, WriteOutcome, metadata};
use crate::error::Result;
use crate::state::State;
use crate::statemgr::SnapshotMeta;
use crate::store::{Headed, ObjectHead, Store};
use bytes::Bytes;
use sha2::Digest as _;
use std::ops::Range;
use std::sync::Arc;

/// What [`RemoteState::push`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pushed {
    /// The identity of the pushed snapshot as stored. Its serial is the one written, which is
    /// one above the pushed state's when the rules number it after the replaced snapshot.
    pub stored: SnapshotMeta,
    /// False when the store already held this very state, so nothing was written.
    pub written: bool,
}

/// How a pushed state compares with the stored snapshot, as far as the head tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bytewise {
    /// The pushed state, numbered as the stored snapshot, serialises to the stored bytes.
    Identical,
    /// It serialises to other bytes.
    Different,
    /// The store keeps no checksum, and the sizes agree: only the body can tell.
    Unknown,
}

impl<S: Store> RemoteState<S> {
    /// Terraform's `state push`: checks that `state` may replace what is stored, and persists
    /// it conditionally on what was checked. It does not lock; take the lock first, as
    /// `s3state push` does. [`RemoteState::push`] also says whether anything was written.
    ///
    /// Without `force`, a state of another lineage ([`crate::Error::LineageMismatch`]), with an older
    /// serial ([`crate::Error::SerialRegression`]), or with the same serial but other content
    /// ([`crate::Error::SerialCollision`]: it was not made from the stored snapshot) is refused. A
    /// state identical to the stored one writes nothing. Returns the identity of the pushed
    /// snapshot as stored.
    pub async fn push_state(&self, state: State, force: bool) -> Result<SnapshotMeta> {
        Ok(self.push(state, force).await?.stored)
    }

    /// [`RemoteState::push_state`], telling whether it wrote.
    ///
    /// The stored snapshot is judged from its head when the store offers one
    /// ([`Store::head`]): the serial and lineage s3state records beside every snapshot, and
    /// the SHA-256 the store keeps of the body. The body is read, as a refresh does, only for
    /// an object s3state did not write (Terraform records no serial in the metadata), on a
    /// store whose heads cannot be trusted alone, and for a push of the stored serial whose
    /// bytes differ from the stored ones (a collision, or the same content serialised
    /// otherwise). When a push of a newer serial serialises to other bytes than the stored
    /// snapshot (numbered alike), its content is taken as changed and it is numbered one
    /// higher, as [`Persister::persist_state`](crate::Persister::persist_state) numbers a
    /// change.
    pub async fn push(&self, state: State, force: bool) -> Result<Pushed> {
        let _io = self.io.lock().await;
        let head = match self.store.head().await? {
            Headed::Found(head) => head,
            // Nothing stored: the push creates the object, exactly as after a refresh that
            // found nothing.
            Headed::Absent => return self.push_on(Base::default(), state, force).await,
            Headed::Unsupported => return self.push_after_reading(state, force).await,
        };
        let Some(stored) = metadata::meta_describing_body(&head.metadata, head.size) else {
            // Not written by s3state (Terraform records nothing beside its state), or its
            // metadata do not describe this exact body (written by the gateway as the client
            // sent it, a lineage a header would alter, a body replaced under old metadata):
            // only the body says what it is.
            return self.push_after_reading(state, force).await;
        };
        let base = Base {
            etag: Some(head.etag.clone()),
            // Unknown until read; never remembered as the manager's base while unknown.
            state: None,
            version_id: head.version_id.clone(),
            size: head.size,
            write_id: metadata::write_id(&head.metadata),
            parent_write_id: metadata::parent_write_id(&head.metadata),
            metadata: head.metadata.clone(),
            needs_migration: false,
        };
        let known = self.lock_snapshots().base.clone();
        self.check_not_siblings(&known, &base).await?;
        self.push_on_head(base, &head, &stored, state, force).await
    }

    /// The push rules against a stored snapshot known by its head (`stored`, from its
    /// metadata), which is `base` for the write. The content is compared by bytes: the pushed
    /// state, numbered as the stored snapshot, against the checksum the store keeps.
    async fn push_on_head(
        &self,
        base: Base,
        head: &ObjectHead,
        stored: &SnapshotMeta,
        next: State,
        force: bool,
    ) -> Result<Pushed> {
        let location = || self.store.location().to_owned();
        // The candidate's bytes, once the comparison has serialised it, with their serial.
        let mut serialised: Option<(Vec<u8>, u64)> = None;
        let compare = |candidate: &State| {
            let bytes = candidate.to_bytes();
            let bytewise = match serial_digits(&bytes, candidate.serial) {
                Some(at) => compare_bytes(&bytes, &at, stored.serial, head),
                None => Bytewise::Unknown,
            };
            serialised = Some((bytes, candidate.serial));
            match bytewise {
                Bytewise::Identical => Some(true),
                // Other bytes under a newer serial: a change.
                Bytewise::Different if candidate.serial != stored.serial => Some(false),
                // Same serial but other bytes (a collision, or the same content serialised
                // otherwise), or no checksum to compare: the rare case where the body decides.
                Bytewise::Different | Bytewise::Unknown => None,
            }
        };
        let stored_identity = Stored {
            lineage: &stored.lineage,
            serial: stored.serial,
        };
        let lineage_was_empty = next.lineage.is_empty();
        match verdict::judge(
            next,
            Some(stored_identity),
            compare,
            push_rules(force),
            &location,
        )? {
            Verdict::Unchanged(next) => {
                // The stored bytes are these bytes: the stored snapshot is this state, and
                // the manager now knows it without reading it.
                let pushed = SnapshotMeta::of(&next);
                self.apply_read(Some(Base {
                    state: Some(Arc::new(next)),
                    ..base
                }));
                Ok(Pushed {
                    stored: pushed,
                    written: false,
                })
            }
            Verdict::Write(next) => {
                let bytes = match serialised {
                    Some((bytes, serial)) if serial == next.serial => bytes,
                    // Numbered after the candidate: only the serial's digits change.
                    Some((mut bytes, serial)) => match serial_digits(&bytes, serial) {
                        Some(at) => {
                            bytes.splice(at, next.serial.to_string().into_bytes());
                            bytes
                        }
                        None => next.to_bytes(),
                    },
                    None => next.to_bytes(),
                };
                self.write_pushed(next, bytes, &base).await
            }
            Verdict::Undecided(mut next) => {
                drop(serialised);
                if lineage_was_empty {
                    next.lineage.clear();
                }
                self.push_after_reading(next, force).await
            }
        }
    }

    /// The push as Terraform makes it: read the stored state, then apply the rules to it.
    async fn push_after_reading(&self, state: State, force: bool) -> Result<Pushed> {
        self.refresh_now().await?;
        let base = self.lock_snapshots().base.clone();
        self.push_on(base, state, force).await
    }

    /// The push rules against `base`, whose state (if any) was read whole.
    async fn push_on(&self, base: Base, state: State, force: bool) -> Result<Pushed> {
        let location = || self.store.location().to_owned();
        let current = base.state.as_deref();
        let verdict = verdict::judge_whole(state, current, push_rules(force), &location)?;
        match verdict {
            Verdict::Unchanged(next) => Ok(Pushed {
                stored: SnapshotMeta::of(&next),
                written: false,
            }),
            Verdict::Write(next) => {
                let bytes = next.to_bytes();
                self.write_pushed(next, bytes, &base).await
            }
            Verdict::Undecided(_) => unreachable!("whole states are always compared"),
        }
    }

    /// Writes `next` (serialised as `bytes`) conditionally on `base`, and remembers what the
    /// store holds afterwards, exactly as a persist does.
    async fn write_pushed(&self, next: State, bytes: Vec<u8>, base: &Base) -> Result<Pushed> {
        let pushed = SnapshotMeta::of(&next);
        match self
            .write_snapshot(
                super::Outgoing::canonical(next, Bytes::from(bytes), "push"),
                base,
                &mut Vec::new(),
            )
            .await
        {
            Ok(WriteOutcome::Landed { now, .. }) => {
                self.apply_read(Some(now));
                Ok(Pushed {
                    stored: pushed,
                    written: true,
                })
            }
            Ok(WriteOutcome::Unchanged) => unreachable!("write_snapshot always writes"),
            Err(PersistError::NotWritten { current, error, .. }) => {
                self.remember_base(*current);
                Err(error)
            }
            Err(PersistError::Other(error)) => Err(error),
        }
    }
}

/// The rules a push is judged by.
fn push_rules(force: bool) -> Rules {
    if force { Rules::Forced } else { Rules::Push }
}

/// The top-level `"serial": N` key as [`State::to_bytes`] writes it: one level of Go's
/// two-space indentation. Raw newlines never occur inside JSON strings, and deeper keys are
/// indented further, so this can only be the top-level key.
const SERIAL_KEY: &[u8] = b"\n  \"serial\": ";

/// The top-level serial comes after `version` and `terraform_version`, within this many bytes.
const HEADER_WINDOW: usize = 1024;

/// Where the digits of the top-level serial (`serial`) are in `bytes`, or `None` when the
/// bytes are not laid out as expected (the caller then does without).
fn serial_digits(bytes: &[u8], serial: u64) -> Option<Range<usize>> {
    let header = &bytes[..bytes.len().min(HEADER_WINDOW)];
    let start = header
        .windows(SERIAL_KEY.len())
        .position(|window| window == SERIAL_KEY)?
        + SERIAL_KEY.len();
    let digits = serial.to_string();
    let end = start + digits.len();
    let whole_number =
        bytes.get(start..end) == Some(digits.as_bytes()) && bytes.get(end) == Some(&b',');
    whole_number.then_some(start..end)
}

/// Whether `bytes`, with the serial at `at` replaced by `stored_serial`, are the bytes `head`
/// describes. Sizes are compared first, so a changed state costs no hashing.
fn compare_bytes(
    bytes: &[u8],
    at: &Range<usize>,
    stored_serial: u64,
    head: &ObjectHead,
) -> Bytewise {
    let digits = stored_serial.to_string();
    let size = bytes.len() - at.len() + digits.len();
    if size as u64 != head.size {
        return Bytewise::Different;
    }
    let Some(stored_sha256) = head.sha256 else {
        return Bytewise::Unknown;
    };
    let mut hasher = sha2::Sha256::new();
    hasher.update(&bytes[..at.start]);
    hasher.update(digits.as_bytes());
    hasher.update(&bytes[at.end..]);
    let sha256: [u8; 32] = hasher.finalize().into();
    if sha256 == stored_sha256 {
        Bytewise::Identical
    } else {
        Bytewise::Different
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{COMPATIBLE_TERRAFORM_VERSION, OutputValue};

    fn state(serial: u64) -> State {
        let mut state = State::new(COMPATIBLE_TERRAFORM_VERSION);
        state.lineage = "5f5c6b58-2a3c-4a56-9f57-2c7c4cf5f0b1".into();
        state.serial = serial;
        // An output named like the key, to show that only the top-level key is found.
        state
            .outputs
            .insert("serial".into(), OutputValue::new(&serial.to_string()));
        state
    }

    #[test]
    fn renumbering_the_serial_in_place_gives_the_bytes_of_the_renumbered_state() {
        for (from, to) in [
            (0, 1),
            (9, 10),
            (99, 100),
            (5, 6),
            (12, 7),
            (u64::MAX - 1, u64::MAX),
        ] {
            let mut bytes = state(from).to_bytes();
            let at = serial_digits(&bytes, from).expect("the serial is found");
            bytes.splice(at, to.to_string().into_bytes());
            let mut renumbered = state(from);
            renumbered.serial = to;
            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                String::from_utf8(renumbered.to_bytes()).unwrap(),
                "{from} -> {to}"
            );
        }
    }

    #[test]
    fn a_serial_that_is_only_a_prefix_of_the_stored_digits_is_not_found() {
        let bytes = state(123).to_bytes();
        assert_eq!(serial_digits(&bytes, 12), None);
        assert_eq!(serial_digits(&bytes, 1234), None);
        assert!(serial_digits(&bytes, 123).is_some());
    }

    #[test]
    fn bytes_numbered_as_the_stored_snapshot_compare_identical_only_with_its_checksum() {
        let stored = state(4).to_bytes();
        let head = |body: &[u8], sha256: Option<[u8; 32]>| ObjectHead {
            etag: crate::store::ETag::new("\"t\""),
            version_id: None,
            size: body.len() as u64,
            metadata: Default::default(),
            sha256,
        };
        let checksum = Some(sha2::Sha256::digest(&stored).into());
        let pushed = state(4);
        let mut newer = pushed.clone();
        newer.serial = 5;
        let bytes = newer.to_bytes();
        let at = serial_digits(&bytes, 5).unwrap();
        assert_eq!(
            compare_bytes(&bytes, &at, 4, &head(&stored, checksum)),
            Bytewise::Identical
        );
        assert_eq!(
            compare_bytes(&bytes, &at, 4, &head(&stored, None)),
            Bytewise::Unknown,
            "same size, no checksum"
        );
        let mut other = state(4);
        other.outputs.insert("x".into(), OutputValue::new(&1));
        let other = other.to_bytes();
        assert_eq!(
            compare_bytes(&bytes, &at, 4, &head(&other, None)),
            Bytewise::Different,
            "another size needs no checksum"
        );
        let mut same_size = stored.clone();
        let last = same_size.len() - 3;
        same_size[last] ^= 1;
        let wrong = Some(sha2::Sha256::digest(&same_size).into());
        assert_eq!(
            compare_bytes(&bytes, &at, 4, &head(&stored, wrong)),
            Bytewise::Different
        );
    }
}
