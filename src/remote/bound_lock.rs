//! Locks that a client holds across requests, for front ends that keep nothing between them.
//!
//! Terraform's `http` backend sends LOCK, then POSTs under `?ID=<lock id>`, then UNLOCK, each
//! perhaps to another replica of the gateway. What a later request needs is in the store, in
//! the lock object's metadata. Such a lock is the state's ordinary lock (the `.tflock`
//! object, plus the store's secondary lock), taken with three things recorded beside it:
//!
//! - its **binding**: the state's ETag (and, for messages, serial and lineage) when it was
//!   taken ([`keys::LOCK_STATE_ETAG`]);
//! - its **owner**: the principal that took it ([`keys::AUTHOR`]). Only the owner writes,
//!   repeats the LOCK or releases under it; anyone else is refused
//!   ([`LockRefusal::NotOwner`]), admin force-unlock aside;
//! - the nonce the locker writes anyway, which every snapshot written under the lock carries
//!   ([`keys::LOCK_NONCE`]).
//!
//! A write under the lock is **fenced**: accepted only onto the snapshot the lock is bound
//! to, or onto one written under the same lock. Anything else changed the state behind the
//! lock's back ([`LockRefusal::ChangedBehind`]). A lock without a binding was not taken this
//! way (an S3-backend Terraform's `.tflock`, `s3state lock`, a write's own lock): it is
//! **foreign**, no client of this kind holds it whatever ID it sends, and releasing it is a
//! force-unlock.
//!
//! The rules and the write itself are the library's: the verdict ([`super::verdict`],
//! [`Rules::AsSent`]) and the one write primitive ([`RemoteState::write_snapshot`]), under the
//! coordinator's release gate like any write under a caller's lock.

use super::bound_turns::BoundTurns;
use super::metadata::{self, keys};
use super::verdict::{self, Rules, Verdict};
use super::{Base, Outgoing, PersistError, RemoteState, WriteOutcome};
use crate::error::{Error, LockRefusal, Result};
use crate::lock::LOCK_NONCE_KEY;
use crate::state::State;
use crate::statemgr::{LockInfo, Locker};
use crate::store::{DeleteOutcome, ETag, Fetched, ObjectMetadata, Precondition, PutOutcome, Store};
use bytes::Bytes;

/// The ETag recorded for a lock taken while no state existed.
const NO_STATE: &str = "none";

/// What [`RemoteState::lock_bound`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BoundLockTaken {
    /// The lock was taken, bound to the snapshot stored now. Its info as stored.
    Taken(LockInfo),
    /// The caller already holds this very lock (a repeated LOCK whose first answer was lost).
    Repeated(LockInfo),
}

/// A state a client numbered and sends to be stored byte for byte (the body of a Terraform
/// `http` backend's POST), for [`RemoteState::write_sent`].
#[derive(Debug)]
pub struct SentState<'a> {
    /// The state, decoded from `body`.
    pub state: State,
    /// The bytes to store, exactly as sent.
    pub body: Bytes,
    /// The bound lock it is sent under (`?ID=`), or `None`: the write then takes a lock of its
    /// own, and is refused while anyone holds the lock.
    pub lock_id: Option<&'a str>,
    /// Who sends it: recorded as the snapshot's author, and compared with the lock's owner.
    pub author: &'a str,
}

/// What [`RemoteState::write_sent`] and [`RemoteState::delete_bound`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BoundWrite {
    /// Written (or deleted): the new version's id, when the store keeps versions.
    Done {
        /// The version written or deleted.
        version_id: Option<String>,
        /// The serial written (none for a delete).
        serial: Option<u64>,
    },
    /// Nothing to do: the store already held this snapshot (or, for a delete, no state).
    Unchanged {
        /// The version that holds it.
        version_id: Option<String>,
    },
}

/// What [`RemoteState::unlock_bound`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BoundUnlock {
    /// The holder released its lock.
    Released,
    /// An admin released someone else's lock.
    ForceReleased,
    /// No lock was held: a retried UNLOCK whose first answer was lost, or a lock released
    /// by someone else first.
    NotLocked,
}

/// The lock as a front end sees it: the `.tflock` object and the store's secondary lock.
#[derive(Debug)]
struct HeldLock {
    /// `None` when the lock object is not lock info.
    info: Option<LockInfo>,
    metadata: ObjectMetadata,
    /// The lock object's tag and body (`None` and empty for a lock held only in the table).
    etag: Option<ETag>,
    body: Bytes,
    /// Held in the secondary lock (DynamoDB) by someone the `.tflock` object does not name (a
    /// Terraform that does not take the `.tflock`): never a client's bound lock.
    only_in_table: bool,
    /// The `.tflock` object is there but the secondary lock is not (taken halfway, or removed
    /// since): a Terraform locking through the table alone could take it at any moment.
    item_missing: bool,
}

impl HeldLock {
    fn id(&self) -> &str {
        self.info.as_ref().map(|i| i.id.as_str()).unwrap_or("")
    }

    fn describe(&self) -> String {
        match &self.info {
            Some(info) => info.to_string(),
            None => "an unreadable lock object".into(),
        }
    }

    /// Taken by [`RemoteState::lock_bound`]: only that binds the lock to a snapshot.
    fn is_bound(&self) -> bool {
        !self.only_in_table && self.metadata.contains_key(keys::LOCK_STATE_ETAG)
    }

    fn owner(&self) -> String {
        metadata::author(&self.metadata).unwrap_or_default()
    }

    /// The lock as [`Error::Locked`] names it.
    fn holder(&self) -> Option<Box<LockInfo>> {
        self.info.clone().map(Box::new)
    }

    /// Refuses `requester` unless it owns this bound lock.
    fn check_owner(&self, location: &str, requester: &str) -> Result<()> {
        if self.owner() == requester {
            return Ok(());
        }
        Err(refused(
            location,
            LockRefusal::NotOwner {
                owner: self.owner(),
                requester: requester.to_owned(),
                holder: self.describe(),
            },
        ))
    }

    /// How long until a write under this lock that got no answer can no longer land, as
    /// recorded in the lock ([`RemoteState::mark_lock_in_doubt`]); `None` when none may.
    fn in_doubt_left(&self) -> Option<std::time::Duration> {
        let until = self.metadata.get(keys::LOCK_WRITE_IN_DOUBT_UNTIL)?;
        let until =
            time::OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339)
                .ok()?;
        let left = until - time::OffsetDateTime::now_utc();
        std::time::Duration::try_from(left)
            .ok()
            .filter(|left| !left.is_zero())
    }

    /// The snapshot the lock was taken on, for messages.
    fn bound_snapshot(&self) -> String {
        match (
            self.metadata.get(keys::LOCK_STATE_SERIAL),
            self.metadata.get(keys::LOCK_STATE_LINEAGE),
        ) {
            (Some(serial), Some(lineage)) => format!("serial {serial} (lineage {lineage})"),
            // A lineage a header cannot carry is not recorded.
            (Some(serial), None) => format!("serial {serial}"),
            _ => "no state".into(),
        }
    }
}

/// A snapshot, for messages.
fn describe(state: Option<&State>) -> String {
    match state {
        Some(state) => format!("serial {} (lineage {})", state.serial, state.lineage),
        None => "no state".into(),
    }
}

/// Who wrote a stored snapshot, from its metadata, for messages.
fn writer_of(metadata: &ObjectMetadata) -> String {
    match metadata::author(metadata) {
        // A gateway's principal, or the author an s3state client recorded.
        Some(author) => format!("{author:?}"),
        None if metadata.contains_key(keys::WRITE_ID) => {
            "an s3state client writing to S3 directly".into()
        }
        None => "a writer outside the gateway (Terraform's S3 backend or another tool)".into(),
    }
}

impl<S: Store> RemoteState<S> {
    /// Takes the state's lock for a client that holds it across requests, bound to the
    /// snapshot stored now and owned by `owner` (see the module doc). A LOCK repeated by its
    /// owner with the same info is [`BoundLockTaken::Repeated`]; a held lock is
    /// [`Error::Locked`] naming its holder; the same ID from another principal is
    /// [`LockRefusal::NotOwner`].
    ///
    /// While a bound lock taken through this process is held, the LOCK first waits its turn
    /// in this process's line for the object, for at most
    /// [`RemoteStateOptions::bound_lock_wait`](super::RemoteStateOptions::bound_lock_wait),
    /// then asks the store, which decides (see `remote/bound_turns.rs`).
    pub async fn lock_bound(&self, info: &LockInfo, owner: &str) -> Result<BoundLockTaken> {
        if info.id.trim().is_empty() {
            return Err(Error::InvalidLockInfo {
                location: self.store.location().to_owned(),
                message: "the lock info has an empty ID".into(),
            });
        }
        let turns = BoundTurns::for_object(self.store.identity());
        // Kept until the store has answered, so the next in line asks after us.
        let _turn = turns.turn(self.options.bound_lock_wait).await;
        let taken = self.lock_bound_at_store(info, owner).await;
        if let Ok(BoundLockTaken::Taken(held) | BoundLockTaken::Repeated(held)) = &taken {
            turns.taken(&held.id);
        }
        taken
    }

    /// [`RemoteState::lock_bound`] without the line: the store's answer now.
    async fn lock_bound_at_store(&self, info: &LockInfo, owner: &str) -> Result<BoundLockTaken> {
        let location = self.store.location();
        for _ in 0..3 {
            // The snapshot the lock binds to.
            let bound = match self.store.get(None).await? {
                Fetched::Found(object) => Some(object),
                Fetched::Absent | Fetched::NotModified => None,
            };
            // Its serial and lineage, for messages: from the state, or from an OpenTofu
            // envelope's plaintext fields (no key needed).
            let bound_state = bound.as_ref().and_then(|object| {
                State::from_slice(&object.body)
                    .ok()
                    .map(|state| (state.serial, state.lineage))
                    .or_else(|| {
                        let envelope = crate::encryption::inspect(&object.body)?;
                        Some((envelope.serial?, envelope.lineage?))
                    })
            });
            let mut extra = ObjectMetadata::from([
                (
                    keys::LOCK_STATE_ETAG.to_owned(),
                    bound.as_ref().map_or(NO_STATE.to_owned(), |object| {
                        object.etag.as_str().to_owned()
                    }),
                ),
                metadata::for_lock_owner(owner),
            ]);
            if let Some((serial, lineage)) = &bound_state {
                extra.insert(keys::LOCK_STATE_SERIAL.to_owned(), serial.to_string());
                if let Some(lineage) = metadata::fits_a_header(lineage) {
                    extra.insert(keys::LOCK_STATE_LINEAGE.to_owned(), lineage.to_owned());
                }
            }
            match self.locker.lock_with_metadata(info, &extra).await {
                Ok(id) => {
                    // A writer that does not lock may have written between our read and the
                    // lock: then the lock is bound to a stale snapshot. Let go and bind again.
                    let after = self.store.get(bound.as_ref().map(|o| &o.etag)).await;
                    let unchanged = matches!(
                        (&after, &bound),
                        (Ok(Fetched::NotModified), Some(_)) | (Ok(Fetched::Absent), None)
                    );
                    if unchanged {
                        return Ok(BoundLockTaken::Taken(info.clone()));
                    }
                    self.locker.unlock(&id).await?;
                }
                Err(Error::Locked { holder, waited, .. }) => {
                    if holder.as_ref().is_none_or(|holder| holder.id != info.id) {
                        return Err(Error::Locked {
                            location: location.to_owned(),
                            holder,
                            waited,
                        });
                    }
                    // Perhaps a repeat of a LOCK whose answer was lost: it is the caller's
                    // only if it is a bound lock, its owner's, held in both places.
                    let Some(held) = self.read_held_lock().await? else {
                        // Released meanwhile: take it again.
                        continue;
                    };
                    if held.id() != info.id || !held.is_bound() {
                        return Err(Error::Locked {
                            location: location.to_owned(),
                            holder: held.holder(),
                            waited: None,
                        });
                    }
                    held.check_owner(location, owner)?;
                    if held.item_missing {
                        // Taken halfway: take the secondary lock now, or refuse.
                        match (self.locker.secondary(), held.info.as_ref()) {
                            (Some(secondary), Some(taken)) => secondary.lock(taken).await?,
                            _ => {
                                return Err(Error::Locked {
                                    location: location.to_owned(),
                                    holder: held.holder(),
                                    waited: None,
                                });
                            }
                        }
                    }
                    let info = held.info.expect("a bound lock is readable lock info");
                    return Ok(BoundLockTaken::Repeated(info));
                }
                Err(error) => return Err(error),
            }
        }
        Err(Error::LockRefused {
            location: location.to_owned(),
            refusal: LockRefusal::KeptChanging,
        })
    }

    /// Stores a state its client numbered, byte for byte, under the client's bound lock or a
    /// lock of the write's own: Terraform's verdict for such a state (`Rules::AsSent`), then
    /// the one write primitive. A repeat of a write already applied is
    /// [`BoundWrite::Unchanged`] (and repairs the store's bookkeeping, such as a digest the
    /// first attempt left stale).
    pub async fn write_sent(&self, sent: SentState<'_>) -> Result<BoundWrite> {
        let SentState {
            state,
            body,
            lock_id,
            author,
        } = sent;
        match lock_id {
            Some(id) => {
                // Held open from the look at the lock to the end of the write: an UNLOCK of
                // that lock through this process waits for it.
                let _relying = self.release_gate.relying_on_lock().await;
                let _io = self.io.lock().await;
                let held = self.bound_lock_for_write(id, author).await?;
                self.write_sent_holding_io(state, body, author, Some(&held))
                    .await
            }
            None => {
                let (lock, io) = self.take_write_lock("s3state gateway").await?;
                let written = self.write_sent_holding_io(state, body, author, None).await;
                drop(io);
                self.release_write_lock(lock).await;
                written
            }
        }
    }

    /// The lock named `id`, if `requester` may write under it; else why not.
    async fn bound_lock_for_write(&self, id: &str, requester: &str) -> Result<HeldLock> {
        let location = self.store.location();
        let Some(held) = self.read_held_lock().await? else {
            return Err(Error::LockRefused {
                location: location.to_owned(),
                refusal: LockRefusal::NotHeld { id: id.to_owned() },
            });
        };
        let refusal = if held.id() != id {
            LockRefusal::WrongId {
                given: id.to_owned(),
                holder: held.describe(),
            }
        } else if held.only_in_table {
            LockRefusal::OnlyInTable {
                holder: held.describe(),
            }
        } else if !held.is_bound() {
            LockRefusal::Foreign {
                holder: held.describe(),
            }
        } else if held.item_missing {
            LockRefusal::ItemMissing { id: id.to_owned() }
        } else {
            held.check_owner(location, requester)?;
            return Ok(held);
        };
        Err(refused(location, refusal))
    }

    /// The write of a sent state, holding the I/O lock and the state's lock (`fence`: the
    /// client's bound lock; `None`: the write's own).
    async fn write_sent_holding_io(
        &self,
        state: State,
        body: Bytes,
        author: &str,
        fence: Option<&HeldLock>,
    ) -> Result<BoundWrite> {
        self.refresh_now().await?;
        let base = self.lock_snapshots().base.clone();
        if let Some(held) = fence {
            self.check_fence(held, &base)?;
        }
        let location = || self.store.location().to_owned();
        let stored = base.state.as_deref();
        let verdict = verdict::judge_whole(state, stored, Rules::AsSent, &location)?;
        let next = match verdict {
            Verdict::Unchanged(_) => {
                // A repeat of a write already applied (go-retryablehttp re-sends on 5xx), or
                // a persist with nothing new: what the first attempt left undone is done now.
                if let Err(error) = self.store.repair_bookkeeping().await {
                    tracing::warn!(location = %self.store.location(), %error,
                        "could not repair the store's bookkeeping of an unchanged state");
                }
                return Ok(BoundWrite::Unchanged {
                    version_id: base.version_id,
                });
            }
            Verdict::Write(next) => next,
            Verdict::Undecided(_) => unreachable!("whole states are always compared"),
        };
        let serial = next.serial;
        let mut extra = ObjectMetadata::new();
        if let Some(nonce) = fence.and_then(|held| held.metadata.get(LOCK_NONCE_KEY)) {
            extra.insert(keys::LOCK_NONCE.to_owned(), nonce.clone());
        }
        let sent_body = body.clone();
        let outgoing = Outgoing {
            state: next,
            body,
            canonical: false,
            extra,
            author: Some(author.to_owned()),
            // The client's lock says what it is doing (Terraform: `OperationTypeApply`).
            operation: fence
                .and_then(|held| held.info.as_ref())
                .map(|info| info.operation.clone())
                .filter(|operation| !operation.is_empty())
                .unwrap_or_else(|| "write".to_owned()),
        };
        match self.write_snapshot(outgoing, &base, &mut Vec::new()).await {
            Ok(WriteOutcome::Landed { now, .. }) => {
                let version_id = now.version_id.clone();
                self.remember_base(now);
                Ok(BoundWrite::Done {
                    version_id,
                    serial: Some(serial),
                })
            }
            Ok(WriteOutcome::Unchanged) => unreachable!("write_snapshot always writes"),
            Err(PersistError::NotWritten {
                current,
                error,
                in_doubt,
            }) => {
                // Refused, or no answer, and not ours: but the store may hold this very state
                // already, written by an earlier attempt of the same request (a POST re-sent
                // after a 5xx whose first attempt landed between our read and our write).
                // Then it is written, as a repeat that finds it stored is.
                let stored_already = current
                    .state
                    .as_deref()
                    .is_some_and(|stored| holds_sent(stored, &sent_body, &location));
                let version_id = current.version_id.clone();
                self.remember_base(*current);
                if stored_already {
                    // The state moved on from our base: nothing conditional on it can land.
                    self.release_gate.cannot_land(&base.precondition());
                    tracing::info!(location = %self.store.location(),
                        "the state sent is stored already (an earlier attempt of the same request)");
                    // That attempt got no answer, so it set no digest: set it now.
                    if let Err(error) = self.store.repair_bookkeeping().await {
                        tracing::warn!(location = %self.store.location(), %error,
                            "could not repair the store's bookkeeping of a state stored already");
                    }
                    return Ok(BoundWrite::Unchanged { version_id });
                }
                if in_doubt && let Some(held) = fence {
                    self.mark_lock_in_doubt(held).await;
                }
                Err(error)
            }
            Err(PersistError::Other(error)) => {
                if matches!(error, Error::WriteOutcomeUnknown { .. })
                    && let Some(held) = fence
                {
                    self.mark_lock_in_doubt(held).await;
                }
                Err(error)
            }
        }
    }

    /// Records in the lock object that a write under it got no answer and may still land
    /// until the settle time has passed. The mark in this process's release gate is not
    /// enough for a front end whose replicas share nothing but the store: the UNLOCK may come
    /// to another replica, which reads the mark here and waits it out
    /// ([`RemoteState::unlock_bound`]). Best effort: a lock object that changed meanwhile, or
    /// a store that fails, leaves the in-process mark only, and is logged.
    async fn mark_lock_in_doubt(&self, held: &HeldLock) {
        let Some(etag) = &held.etag else { return };
        let until = time::OffsetDateTime::now_utc()
            + time::Duration::try_from(self.options.unanswered_write_settle).unwrap_or_default();
        let Ok(until) = until.format(&time::format_description::well_known::Rfc3339) else {
            return;
        };
        let mut metadata = held.metadata.clone();
        metadata.insert(keys::LOCK_WRITE_IN_DOUBT_UNTIL.to_owned(), until);
        let marked = self
            .locker
            .lock_object()
            .put(
                held.body.clone(),
                &Precondition::Match(etag.clone()),
                &metadata,
            )
            .await;
        if !matches!(marked, Ok(PutOutcome::Written(_))) {
            tracing::warn!(location = %self.store.location(), id = %held.id(), outcome = ?marked.map(|_| ()),
                "could not record in the lock that a write under it may still land");
        }
    }

    /// Refuses a write under `held` when the state is neither the snapshot the lock was bound
    /// to nor one written under the same lock.
    fn check_fence(&self, held: &HeldLock, current: &Base) -> Result<()> {
        let Some(bound) = held.metadata.get(keys::LOCK_STATE_ETAG) else {
            return Ok(());
        };
        let nonce = held.metadata.get(LOCK_NONCE_KEY);
        let unchanged = match &current.etag {
            None => bound == NO_STATE,
            Some(etag) => {
                etag.as_str() == bound
                    || (nonce.is_some() && current.metadata.get(keys::LOCK_NONCE) == nonce)
            }
        };
        if unchanged {
            return Ok(());
        }
        let by = current
            .etag
            .as_ref()
            .map(|_| format!(", written by {}", writer_of(&current.metadata)))
            .unwrap_or_default();
        Err(refused(
            self.store.location(),
            LockRefusal::ChangedBehind {
                id: held.id().to_owned(),
                then: held.bound_snapshot(),
                now: describe(current.state.as_deref()),
                by,
            },
        ))
    }

    /// Releases the state's lock for a client: its bound lock, named by `id`, if `requester`
    /// owns it; any lock (a force-unlock) if `may_force`. It waits, as every unlock does,
    /// for writes under the lock in this process and for the settle of a write that got no
    /// answer, so that no such write lands under the next holder's lock.
    pub async fn unlock_bound(
        &self,
        id: Option<&str>,
        requester: &str,
        may_force: bool,
    ) -> Result<BoundUnlock> {
        let location = self.store.location();
        let Some(held) = self.read_held_lock().await? else {
            BoundTurns::for_object(self.store.identity()).released();
            return Ok(BoundUnlock::NotLocked);
        };
        let holds_it = id == Some(held.id()) && held.is_bound() && held.owner() == requester;
        if let Some(id) = id.filter(|id| *id != held.id()) {
            return Err(refused(
                location,
                LockRefusal::WrongId {
                    given: id.to_owned(),
                    holder: held.describe(),
                },
            ));
        }
        if !holds_it && !may_force {
            if id.is_some() && held.is_bound() {
                held.check_owner(location, requester)?;
            }
            return Err(refused(
                location,
                LockRefusal::ForceUnlockNeeded {
                    holder: held.describe(),
                },
            ));
        }
        // A write under the lock that got no answer, on whichever replica sent it, may still
        // land until the time recorded in the lock: wait it out (bounded by twice the settle
        // time, against a clock far ahead).
        if let Some(left) = held.in_doubt_left() {
            let left = left.min(self.options.unanswered_write_settle * 2);
            tracing::warn!(location = %location, wait = ?left,
                "a write under this lock got no answer and may still land; keeping the lock until it cannot");
            tokio::time::sleep(left).await;
        }
        // Closed while the lock goes: writes under it are done, and none that got no answer
        // can still land under the next holder's lock.
        let _closed = loop {
            let left = self.release_gate.settle_left();
            if !left.is_zero() {
                tracing::warn!(location = %location, wait = ?left,
                    "a write got no answer and may still land; keeping the lock until it cannot");
                tokio::time::sleep(left).await;
            }
            let closed = self.release_gate.releasing().await;
            if self.release_gate.settle_left().is_zero() {
                break closed;
            }
        };
        let released = match self.locker.force_unlock(held.id()).await {
            Ok(()) | Err(Error::NotLocked { .. }) if holds_it => Ok(BoundUnlock::Released),
            Ok(()) | Err(Error::NotLocked { .. }) => Ok(BoundUnlock::ForceReleased),
            Err(error) => Err(error),
        };
        if released.is_ok() {
            BoundTurns::for_object(self.store.identity()).released();
        }
        released
    }

    /// Deletes the stored snapshot (only the one it checked) under the client's bound lock
    /// `id`, or a lock of its own. `Unchanged`: there was no state.
    ///
    /// Under a bound lock the delete is fenced as a write is: only the snapshot the lock was
    /// bound to, or one written under it, is deleted. A lock `id` that is not held is refused
    /// ([`LockRefusal::NotHeld`]), as a write under it is.
    pub async fn delete_bound(&self, id: Option<&str>, requester: &str) -> Result<BoundWrite> {
        let location = self.store.location();
        let _relying = self.release_gate.relying_on_lock().await;
        let held = self.read_held_lock().await?;
        match (held, id) {
            (Some(held), Some(id)) if id == held.id() && !held.only_in_table => {
                if !held.is_bound() {
                    return Err(refused(
                        location,
                        LockRefusal::Foreign {
                            holder: held.describe(),
                        },
                    ));
                }
                held.check_owner(location, requester)?;
                if held.item_missing {
                    return Err(Error::Locked {
                        location: location.to_owned(),
                        holder: held.holder(),
                        waited: None,
                    });
                }
                let _io = self.io.lock().await;
                self.delete_current(Some(&held)).await
            }
            (Some(held), _) => Err(Error::Locked {
                location: location.to_owned(),
                holder: held.holder(),
                waited: None,
            }),
            (None, Some(id)) => Err(refused(
                location,
                LockRefusal::NotHeld { id: id.to_owned() },
            )),
            (None, None) => {
                drop(_relying);
                let (lock, io) = self.take_write_lock("s3state gateway delete").await?;
                let deleted = self.delete_current(None).await;
                drop(io);
                self.release_write_lock(lock).await;
                deleted
            }
        }
    }

    /// Deletes the current snapshot only (If-Match its ETag; where the store cannot delete
    /// conditionally, a re-read under the lock first). Under a client's bound lock (`fence`),
    /// only a snapshot the fence admits.
    async fn delete_current(&self, fence: Option<&HeldLock>) -> Result<BoundWrite> {
        let changed = || Error::Conflict {
            location: self.store.location().to_owned(),
            remote: None,
        };
        let current = match self.store.get(None).await? {
            Fetched::Found(object) => object,
            _ => return Ok(BoundWrite::Unchanged { version_id: None }),
        };
        if let Some(held) = fence {
            let seen = Base {
                etag: Some(current.etag.clone()),
                state: State::from_slice(&current.body).ok().map(Into::into),
                metadata: current.metadata.clone(),
                ..Base::default()
            };
            self.check_fence(held, &seen)?;
        }
        let done = BoundWrite::Done {
            version_id: current.version_id.clone(),
            serial: None,
        };
        match self.store.delete(Some(&current.etag)).await? {
            DeleteOutcome::Deleted => Ok(done),
            DeleteOutcome::Absent => Ok(BoundWrite::Unchanged { version_id: None }),
            DeleteOutcome::PreconditionFailed => Err(changed()),
            DeleteOutcome::ConditionalUnsupported => {
                match self.store.get(Some(&current.etag)).await? {
                    Fetched::NotModified => {}
                    Fetched::Absent => return Ok(BoundWrite::Unchanged { version_id: None }),
                    Fetched::Found(_) => return Err(changed()),
                }
                self.store.delete(None).await?;
                Ok(done)
            }
        }
    }

    /// The lock as a front end sees it: the `.tflock` object and, when the store keeps one,
    /// the secondary lock, which a Terraform without `use_lockfile` takes alone. A lock is a
    /// client's only when both name the same holder.
    async fn read_held_lock(&self) -> Result<Option<HeldLock>> {
        let object = match self.locker.lock_object().get(None).await? {
            Fetched::Found(object) => Some(HeldLock {
                info: serde_json::from_slice(&object.body).ok(),
                metadata: object.metadata,
                etag: Some(object.etag),
                body: object.body,
                only_in_table: false,
                item_missing: false,
            }),
            Fetched::Absent | Fetched::NotModified => None,
        };
        let Some(secondary) = self.locker.secondary() else {
            return Ok(object);
        };
        let in_table = |info: LockInfo| HeldLock {
            info: Some(info),
            metadata: ObjectMetadata::new(),
            etag: None,
            body: Bytes::new(),
            only_in_table: true,
            item_missing: false,
        };
        Ok(match (object, secondary.current().await?) {
            (None, None) => None,
            (Some(held), Some(item)) if item.id == held.id() => Some(held),
            // The table's holder decides for the Terraforms that look only there.
            (_, Some(item)) => Some(in_table(item)),
            (Some(held), None) => Some(HeldLock {
                item_missing: true,
                ..held
            }),
        })
    }
}

/// Whether `stored` is the state sent as `body`: Terraform's verdict finds nothing to write.
fn holds_sent(stored: &State, body: &[u8], location: &dyn Fn() -> String) -> bool {
    let Ok(sent) = State::from_slice(body) else {
        return false;
    };
    matches!(
        verdict::judge_whole(sent, Some(stored), Rules::AsSent, location),
        Ok(Verdict::Unchanged(_))
    )
}

/// A refusal of a request under a client's lock.
fn refused(location: &str, refusal: LockRefusal) -> Error {
    Error::LockRefused {
        location: location.to_owned(),
        refusal,
    }
}
