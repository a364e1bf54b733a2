//! Fair turns across processes: a queue of s3state's waiting writers, kept beside Terraform's
//! lock in an object Terraform never reads (`<key>.tflock.queue`).
//!
//! The rule, and the only place it is written:
//!
//! - **Look before locking.** An update that takes a lock of its own first reads the queue
//!   (a conditional GET, answered 304 when it has not changed, 404 when there is none). When
//!   no live ticket of another writer is in it, it tries the lock once, as before; only when
//!   it is refused does it queue. When others wait, it queues behind them at once, so a writer
//!   that has just released never takes the lock straight back from them.
//! - **Queue, then take the lock in turn.** A waiter appends a ticket to the queue (a
//!   compare-and-swap PUT: `If-Match` on the tag it read, `If-None-Match: *` to create it). The
//!   waiter whose ticket is first among the live ones, the *head*, polls the lock often (a
//!   conditional GET answered 304 while it is held) and takes it when it is free; the others
//!   watch the queue, more slowly the further back they are. A waiter that got the lock
//!   removes its ticket (in the background, while it works), and so does one that gives up.
//! - **Leases.** A waiter renews its ticket (a counter in it) every quarter of
//!   [`LockQueue::lease`]. An observer judges a ticket dead when its counter has not changed
//!   for a whole lease *on the observer's own monotonic clock*, and removes it. No wall clock
//!   of another machine is compared with ours, so clock skew between machines cannot make a
//!   live waiter look dead or a dead one live; the price is that an observer that has only
//!   just arrived needs a lease of its own watching before it removes a dead ticket. A waiter
//!   that died so leaves a gap of at most about one lease (plus a poll).
//!
//! The queue orders s3state writers only. Terraform (and any tool that does not read the
//! queue) takes the lock by its own rules, and the head simply finds it held a little
//! longer. Nothing here is needed for correctness: the `.tflock` and the conditional writes
//! still decide every race. A queue that cannot be read, parsed or written (a missing
//! permission, a bucket policy, a foreign body) makes the update wait as before this queue
//! existed, with one warning per object and process: never an error, never a lost write.
//! Every wait ends at the caller's lock timeout with [`crate::Error::Locked`].

use super::{PerObject, Shared};
use crate::error::Error;
use crate::lock::{LockAttempt, LockRetry, LockWait, LockWaited, StoreLocker};
use crate::statemgr::LockInfo;
use crate::store::{ETag, Fetched, ObjectMetadata, Precondition, PutOutcome, Store};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The suffix of the queue object beside the state (`<key>.tflock.queue`). Terraform and
/// OpenTofu never read it.
pub const QUEUE_SUFFIX: &str = ".tflock.queue";

/// How many times one change of the queue is tried against other writers' changes (or a
/// failing store) before the waiter carries on without it.
const CHANGE_ATTEMPTS: usize = 8;

/// How long the head polls the lock at `head_poll_interval`: long enough for any s3state
/// update to finish; a holder that keeps it longer (a Terraform apply) is then polled at the
/// pace of `update_lock_retry`, so a long apply does not cost a request every few ms.
const FAST_HEAD_POLLING: Duration = Duration::from_secs(2);

/// Fair turns across processes for the updates that take the lock
/// ([`crate::RemoteStateOptions::lock_queue`]): a queue of waiting s3state writers in the
/// object `<key>.tflock.queue`, beside Terraform's `.tflock`, which it never changes.
///
/// Build it from the default and change what you need:
/// `LockQueue { lease: Duration::from_secs(30), ..LockQueue::default() }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockQueue {
    /// Whether updates queue across processes. Off, they race for the lock as Terraform does
    /// (polling it on `update_lock_retry`). Default: on.
    pub enabled: bool,
    /// How long a waiter's ticket lives without renewal (it renews every quarter of this):
    /// the longest gap a waiter that died can leave. Judged on each observer's own clock.
    /// Default 10 s.
    pub lease: Duration,
    /// How often a waiter behind the head reads the queue, times its distance from the head
    /// (capped at half a second). Default 25 ms.
    pub poll_interval: Duration,
    /// How often the head of the queue polls the lock while it is held (a conditional GET,
    /// answered 304 without a body), for its first two seconds as the head; after that, at
    /// the pace of `update_lock_retry`. Default 15 ms.
    pub head_poll_interval: Duration,
}

impl Default for LockQueue {
    fn default() -> Self {
        LockQueue {
            enabled: true,
            lease: Duration::from_secs(10),
            poll_interval: Duration::from_millis(25),
            head_poll_interval: Duration::from_millis(15),
        }
    }
}

/// The queue object's body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct QueueBody {
    /// The format's version, so a later format is recognised (and not misread).
    #[serde(rename = "s3state_lock_queue")]
    format: u32,
    /// The waiters, first come first.
    tickets: Vec<Ticket>,
}

const FORMAT: u32 = 1;

/// One waiting writer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Ticket {
    /// Unique to one wait.
    id: String,
    /// Unique to the process (and object) that waits: a ticket of ours that is not the one
    /// we wait with now is a leftover, not a waiter.
    owner: String,
    /// Bumped at each renewal: a counter that stops moving for a lease is a dead waiter.
    renewals: u64,
}

/// What this process knows about one object's queue, shared by every manager over it.
#[derive(Debug)]
pub(crate) struct Waiters {
    owner: String,
    memory: Mutex<Memory>,
}

#[derive(Debug, Default)]
struct Memory {
    /// The queue as last read or written, with its tag: the next read is conditional on it.
    last: Option<(ETag, QueueBody)>,
    /// Each ticket's renewal counter and when we first saw it at that value, on our clock.
    seen: HashMap<String, (u64, Instant)>,
    /// The tickets this process waits with now (updates of one object queue in process
    /// first, so there is at most one; a set, so that no second line can make another's
    /// ticket look like a leftover).
    waiting: std::collections::HashSet<String>,
    /// The queue was found unusable and a warning was logged: once per object and process.
    warned: bool,
}

impl Default for Waiters {
    fn default() -> Self {
        Waiters {
            owner: uuid::Uuid::new_v4().to_string(),
            memory: Mutex::default(),
        }
    }
}

impl Shared for Waiters {}

static WAITERS: PerObject<Waiters> = PerObject::new();

impl Waiters {
    /// The queue memory for an object: the process-wide one for `identity`, or one of its
    /// own for a store without an identity.
    pub(crate) fn for_object(identity: Option<String>) -> Arc<Waiters> {
        WAITERS.for_object(identity)
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why the queue cannot be used now: the update then waits as if there were none.
struct Unusable(String);

/// Why a read of the queue failed.
enum ReadFailure {
    /// The store failed: another read may succeed.
    Store(String),
    /// The object is not a queue s3state can read.
    NotAQueue(String),
}

impl From<ReadFailure> for Unusable {
    fn from(failure: ReadFailure) -> Self {
        match failure {
            ReadFailure::Store(why) | ReadFailure::NotAQueue(why) => Unusable(why),
        }
    }
}

/// The queue of one object, as one update sees it.
struct Queue<'a, S: Store> {
    waiters: &'a Arc<Waiters>,
    object: &'a S,
    settings: &'a LockQueue,
}

/// What a look at the queue found ahead of a ticket (or of a newcomer).
struct Ahead {
    /// Live tickets of other waiters ahead.
    live: usize,
    /// Tickets ahead that are dead (no renewal for a lease) or our own leftovers.
    dead: Vec<String>,
    /// Our ticket is in the queue.
    present: bool,
}

impl<S: Store> Queue<'_, S> {
    /// Reads the queue, conditionally on what was read last, and notes each ticket's counter.
    async fn read(&self) -> std::result::Result<QueueBody, Unusable> {
        Ok(self.read_once().await?)
    }

    async fn read_once(&self) -> std::result::Result<QueueBody, ReadFailure> {
        let last_tag = self
            .waiters
            .memory()
            .last
            .as_ref()
            .map(|(tag, _)| tag.clone());
        let body = match self.object.get(last_tag.as_ref()).await {
            Ok(Fetched::Absent) => {
                self.waiters.memory().last = None;
                QueueBody::default()
            }
            Ok(Fetched::NotModified) => match &self.waiters.memory().last {
                Some((_, body)) => body.clone(),
                None => QueueBody::default(),
            },
            Ok(Fetched::Found(object)) => {
                let body: QueueBody = serde_json::from_slice(&object.body).map_err(|_| {
                    ReadFailure::NotAQueue(format!(
                        "{} does not hold a queue",
                        self.object.location()
                    ))
                })?;
                if body.format != FORMAT {
                    return Err(ReadFailure::NotAQueue(format!(
                        "{} holds a queue of another format ({})",
                        self.object.location(),
                        body.format
                    )));
                }
                self.waiters.memory().last = Some((object.etag, body.clone()));
                body
            }
            Err(error) => return Err(ReadFailure::Store(error.to_string())),
        };
        self.observe(&body);
        Ok(body)
    }

    /// Notes when each ticket's counter was first seen at its value, on our clock.
    fn observe(&self, body: &QueueBody) {
        let now = Instant::now();
        let mut memory = self.waiters.memory();
        memory
            .seen
            .retain(|id, _| body.tickets.iter().any(|t| &t.id == id));
        for ticket in &body.tickets {
            let seen = memory
                .seen
                .entry(ticket.id.clone())
                .or_insert((ticket.renewals, now));
            if seen.0 != ticket.renewals {
                *seen = (ticket.renewals, now);
            }
        }
    }

    /// Who is ahead of ticket `mine` (of everyone, for `None`).
    fn ahead(&self, body: &QueueBody, mine: Option<&str>) -> Ahead {
        let now = Instant::now();
        let memory = self.waiters.memory();
        let mut ahead = Ahead {
            live: 0,
            dead: Vec::new(),
            present: false,
        };
        for ticket in &body.tickets {
            if Some(ticket.id.as_str()) == mine {
                ahead.present = true;
                break;
            }
            let leftover =
                ticket.owner == self.waiters.owner && !memory.waiting.contains(&ticket.id);
            let silent = memory
                .seen
                .get(&ticket.id)
                .is_some_and(|(_, since)| now.duration_since(*since) >= self.settings.lease);
            if leftover || silent {
                ahead.dead.push(ticket.id.clone());
            } else {
                ahead.live += 1;
            }
        }
        ahead
    }

    /// Applies `change` to the queue by compare-and-swap, re-reading after a lost race.
    /// `change` must be idempotent (a write whose answer was lost is simply made again).
    async fn change(
        &self,
        change: impl Fn(&mut QueueBody) -> bool,
    ) -> std::result::Result<(), Unusable> {
        let mut failure = String::new();
        for _ in 0..CHANGE_ATTEMPTS {
            let mut body = match self.read_once().await {
                Ok(body) => body,
                Err(ReadFailure::Store(why)) => {
                    failure = why;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(not_a_queue) => return Err(not_a_queue.into()),
            };
            let tag = self.waiters.memory().last.as_ref().map(|(t, _)| t.clone());
            body.format = FORMAT;
            if !change(&mut body) {
                return Ok(());
            }
            let condition = match &tag {
                Some(tag) => Precondition::Match(tag.clone()),
                None => Precondition::Create,
            };
            let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
            match self
                .object
                .put(bytes, &condition, &ObjectMetadata::new())
                .await
            {
                Ok(PutOutcome::Written(written)) => {
                    self.waiters.memory().last = Some((written.etag, body));
                    return Ok(());
                }
                // Another waiter changed it first: read theirs and apply ours on top.
                Ok(PutOutcome::PreconditionFailed) => {}
                // No answer, or a refusal: read again and see; a write that landed anyway
                // makes `change` a no-op.
                Err(error) => {
                    failure = error.to_string();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        Err(Unusable(if failure.is_empty() {
            format!(
                "{} kept changing under us ({CHANGE_ATTEMPTS} attempts)",
                self.object.location()
            )
        } else {
            failure
        }))
    }

    fn warn(&self, why: &Unusable) {
        let mut memory = self.waiters.memory();
        if !memory.warned {
            memory.warned = true;
            tracing::warn!(queue = %self.object.location(), reason = %why.0,
                "the lock queue cannot be used; waiting for the lock without fair turns");
        }
    }
}

/// Removes a ticket in the background when its wait ends without the waiter doing it (a
/// cancelled update), and is how a waiter leaves once it has the lock.
struct Leave<S: Store> {
    object: Option<S>,
    waiters: Arc<Waiters>,
    id: String,
}

impl<S: Store> Leave<S> {
    fn now(mut self) {
        self.spawn();
    }

    fn spawn(&mut self) {
        let Some(object) = self.object.take() else {
            return;
        };
        {
            let mut memory = self.waiters.memory();
            memory.waiting.remove(&self.id);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (waiters, id) = (Arc::clone(&self.waiters), self.id.clone());
        runtime.spawn(async move {
            let settings = LockQueue::default();
            let queue = Queue {
                waiters: &waiters,
                object: &object,
                settings: &settings,
            };
            // Best effort: a ticket left behind is removed by the next observer, as a dead
            // waiter's is (sooner: a leftover of this process is recognised at once).
            let _ = queue.change(|q| remove(q, std::slice::from_ref(&id))).await;
        });
    }
}

impl<S: Store> Drop for Leave<S> {
    fn drop(&mut self) {
        self.spawn();
    }
}

/// The change that puts `ticket` in the queue (at the back) with its counter at `renewals`,
/// or renews it where it is.
fn joined(ticket: &Ticket, renewals: u64) -> impl Fn(&mut QueueBody) -> bool + use<> {
    let ticket = Ticket {
        renewals,
        ..ticket.clone()
    };
    move |q: &mut QueueBody| match q.tickets.iter_mut().find(|t| t.id == ticket.id) {
        Some(there) if there.renewals >= ticket.renewals => false,
        Some(there) => {
            there.renewals = ticket.renewals;
            true
        }
        None => {
            q.tickets.push(ticket.clone());
            true
        }
    }
}

fn remove(queue: &mut QueueBody, ids: &[String]) -> bool {
    let before = queue.tickets.len();
    queue.tickets.retain(|t| !ids.contains(&t.id));
    queue.tickets.len() != before
}

/// Takes the state's lock in this process's turn across processes: the queue's rule (see the
/// module doc). `how` is the wait without a queue (today's, the fallback); `courtesy_gap`
/// is slept before trying a lock nobody queues for (see `turns`). The answer's
/// `refused_by_other_tools` says whether a contender that may not read the queue was seen
/// (with the queue unusable, any contender): only those make the next courtesy gap.
pub(crate) async fn lock_in_turn<S: Store>(
    waiters: &Arc<Waiters>,
    queue_object: &S,
    locker: &StoreLocker<S>,
    info: &LockInfo,
    settings: &LockQueue,
    how: LockWait,
    courtesy_gap: Duration,
) -> LockWaited {
    let started = Instant::now();
    let remaining = || how.timeout.saturating_sub(started.elapsed());
    // One attempt through every wait below, so that a lock request of an earlier wait that
    // lands late is recognised as ours, not waited on (and orphaned).
    let attempt = LockAttempt::new(info);
    let attempt = &attempt;
    let queue = Queue {
        waiters,
        object: queue_object,
        settings,
    };
    let without_queue = |refused: bool| {
        let how = LockWait {
            timeout: remaining(),
            ..how
        };
        async move {
            let gap = courtesy_gap.min(how.timeout);
            if !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            let mut waited = locker.lock_waiting_as(attempt, &how).await;
            waited.was_refused |= refused;
            // Without the queue, every contender is one that needs the courtesy gap.
            waited.refused_by_other_tools = waited.was_refused;
            waited
        }
    };
    if !settings.enabled {
        return without_queue(false).await;
    }
    let ahead = match queue.read().await {
        Ok(body) => queue.ahead(&body, None),
        Err(why) => {
            queue.warn(&why);
            return without_queue(false).await;
        }
    };
    let mut refused = false;
    // Refused by something that may not read the queue (see `LockWaited`).
    let mut other_tools = false;
    if ahead.live == 0 {
        let gap = courtesy_gap.min(remaining());
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        let once = LockWait {
            timeout: Duration::ZERO,
            ..how
        };
        let tried = locker.lock_waiting_as(attempt, &once).await;
        if !matches!(tried.id, Err(Error::Locked { .. })) || remaining().is_zero() {
            return tried;
        }
        refused = true;
        other_tools = tried.refused_by_other_tools;
    }

    // Queue behind the others.
    let ticket = Ticket {
        id: uuid::Uuid::new_v4().to_string(),
        owner: waiters.owner.clone(),
        renewals: 0,
    };
    waiters.memory().waiting.insert(ticket.id.clone());
    let leave = Leave {
        object: Some(queue_object.sibling("")),
        waiters: Arc::clone(waiters),
        id: ticket.id.clone(),
    };
    let join = |renewals: u64| joined(&ticket, renewals);
    if let Err(why) = queue.change(join(0)).await {
        queue.warn(&why);
        drop(leave);
        return without_queue(refused).await;
    }
    let mut renewals = 0;
    let mut renewed_at = Instant::now();
    let renew_every = settings.lease / 4;
    let mut holder = None;
    // When this waiter became the head: it polls fast for a while, then (a long holder, such
    // as a Terraform apply) at the pace of a waiter without a queue.
    let mut head_since: Option<Instant> = None;
    loop {
        if remaining().is_zero() {
            drop(leave);
            if holder.is_none() {
                // Behind others the whole time: name who holds the lock, as the head would.
                holder = locker.current().await.ok().flatten().map(Box::new);
            }
            return LockWaited {
                id: Err(Error::Locked {
                    location: locker.location().to_owned(),
                    holder,
                    waited: Some(started.elapsed()),
                }),
                was_refused: refused,
                refused_by_other_tools: other_tools,
            };
        }
        if renewed_at.elapsed() >= renew_every {
            renewals += 1;
            renewed_at = Instant::now();
            if let Err(why) = queue.change(join(renewals)).await {
                tracing::debug!(reason = %why.0, "could not renew a lock queue ticket");
            }
        }
        let body = match queue.read().await {
            Ok(body) => body,
            Err(why) => {
                queue.warn(&why);
                drop(leave);
                return without_queue(refused).await;
            }
        };
        let ahead = queue.ahead(&body, Some(&ticket.id));
        if !ahead.dead.is_empty() {
            tracing::debug!(queue = %queue_object.location(), tickets = ahead.dead.len(),
                "removing lock queue tickets whose waiters stopped renewing them");
            let dead = ahead.dead.clone();
            let _ = queue.change(|q| remove(q, &dead)).await;
        }
        if !ahead.present {
            // Judged dead by someone (we were stalled past a lease), or the queue was reset:
            // queue again, at the back.
            renewals += 1;
            renewed_at = Instant::now();
            if let Err(why) = queue.change(join(renewals)).await {
                queue.warn(&why);
                drop(leave);
                return without_queue(refused).await;
            }
            continue;
        }
        if ahead.live == 0 {
            // The head: poll the lock often, for a slice of the wait, then renew and look.
            let since = *head_since.get_or_insert_with(Instant::now);
            let fast_for = FAST_HEAD_POLLING.saturating_sub(since.elapsed());
            let slice = if fast_for.is_zero() {
                LockWait {
                    timeout: remaining().min(renew_every),
                    ..how
                }
            } else {
                LockWait {
                    timeout: remaining().min(renew_every).min(fast_for),
                    retry: LockRetry {
                        initial: settings.head_poll_interval,
                        max: settings.head_poll_interval,
                    },
                    jitter: false,
                    ..how
                }
            };
            let waited = locker.lock_waiting_as(attempt, &slice).await;
            refused |= waited.was_refused;
            other_tools |= waited.refused_by_other_tools;
            match waited.id {
                Err(Error::Locked { holder: seen, .. }) => holder = seen,
                other => {
                    leave.now();
                    return LockWaited {
                        id: other,
                        was_refused: refused,
                        refused_by_other_tools: other_tools,
                    };
                }
            }
        } else {
            head_since = None;
            let behind = u32::try_from(ahead.live).unwrap_or(u32::MAX);
            let pause = (settings.poll_interval * behind)
                .min(Duration::from_millis(500))
                .min(renew_every)
                .min(remaining());
            tokio::time::sleep(pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn queue_of(store: &MemoryStore) -> MemoryStore {
        store.sibling(QUEUE_SUFFIX)
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticket_is_judged_dead_only_after_a_lease_without_renewal_on_our_clock() {
        let store = MemoryStore::new("k");
        let object = queue_of(&store);
        let waiters = Arc::new(Waiters::default());
        let settings = LockQueue::default();
        let queue = Queue {
            waiters: &waiters,
            object: &object,
            settings: &settings,
        };
        let other = Ticket {
            id: "other".into(),
            owner: "elsewhere".into(),
            renewals: 0,
        };
        queue
            .change(|q| {
                q.tickets.push(other.clone());
                true
            })
            .await
            .map_err(|u| u.0)
            .unwrap();
        let body = queue.read().await.map_err(|u| u.0).unwrap();
        assert_eq!(queue.ahead(&body, None).live, 1);
        tokio::time::advance(settings.lease - Duration::from_millis(1)).await;
        let body = queue.read().await.map_err(|u| u.0).unwrap();
        assert_eq!(queue.ahead(&body, None).live, 1, "not yet a lease");
        tokio::time::advance(Duration::from_millis(1)).await;
        let body = queue.read().await.map_err(|u| u.0).unwrap();
        assert_eq!(
            queue.ahead(&body, None).dead,
            ["other"],
            "a lease of silence"
        );
        // A renewal brings it back to life, whatever clock its writer keeps.
        queue
            .change(|q| {
                q.tickets[0].renewals += 1;
                true
            })
            .await
            .map_err(|u| u.0)
            .unwrap();
        let body = queue.read().await.map_err(|u| u.0).unwrap();
        assert_eq!(queue.ahead(&body, None).live, 1);
    }
}
