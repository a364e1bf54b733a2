//! Terraform's verdict on a candidate snapshot against the stored one: the one place the
//! serial and lineage rules are written.
//!
//! Every write path asks [`judge`]: `persist_state` and `update` (and `rm`/`mv`, which
//! persist), `push`, `restore`, and the gateway's POST. It decides whether the candidate is
//! written (and with which serial), is already stored, or is refused, and why:
//!
//! - another lineage (for a push, none counts as another): [`Error::LineageMismatch`]
//!   (unrelated states);
//! - an older serial: [`Error::SerialRegression`] (made from an out-of-date snapshot);
//! - the stored serial with other content, where the writer numbered it itself:
//!   [`Error::SerialCollision`] (one of them was not made from the other);
//! - no lineage on a snapshot that must be stored as sent: [`Error::MissingLineage`].
//!
//! It reads nothing and writes nothing: the content comparison is asked of the caller, and
//! only when the rules need it, because comparing two states of tens of megabytes (or
//! reading the stored one) is the expensive part.

use crate::error::{Error, Result};
use crate::state::State;

/// Which of Terraform's write paths a candidate comes from: it decides how the candidate is
/// numbered and what is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rules {
    /// Terraform's persist (`remote.State.PersistState`): a candidate made on the stored
    /// snapshot. Changed content is numbered after the candidate's serial; the same content
    /// writes nothing unless its serial is newer.
    Persist,
    /// Terraform's `state push`: as [`Rules::Persist`], except that the stored serial with
    /// other content is refused (the pushed state was not made from the stored snapshot), and
    /// so is a state without a lineage over a stored one (its lineage is not the stored one).
    Push,
    /// A snapshot its writer numbered itself and that is stored byte for byte (the state a
    /// Terraform `http` backend sends): a newer serial is written as sent, never renumbered,
    /// and the stored serial with other content is refused.
    AsSent,
    /// `-force` (`push --force`, a forced restore): another lineage or an older serial is
    /// accepted and numbered after the stored serial; otherwise as [`Rules::Persist`].
    Forced,
}

/// What the stored snapshot is, as far as the verdict needs to know.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored<'a> {
    /// Its lineage.
    pub(crate) lineage: &'a str,
    /// Its serial.
    pub(crate) serial: u64,
}

impl<'a> Stored<'a> {
    /// The identity of a stored state.
    pub(crate) fn of(state: &'a State) -> Self {
        Stored {
            lineage: &state.lineage,
            serial: state.serial,
        }
    }
}

/// The verdict on a candidate.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// The store already holds this snapshot (the candidate, its lineage filled in): nothing
    /// is written.
    Unchanged(State),
    /// Write this snapshot: the candidate, its lineage filled in and its serial numbered as
    /// the rules say.
    Write(State),
    /// Lineage and serial allow the write, but the content comparison could not tell (a
    /// comparison made from the stored object's head, without its body): the candidate comes
    /// back, lineage filled in, to be judged again against the stored body.
    Undecided(State),
}

/// Terraform's verdict on `candidate` over `stored` (`None`: nothing is stored, or an empty
/// object). `same_content` tells whether the candidate has the stored snapshot's content
/// (`None`: it cannot tell); it is called at most once, and only once lineage and serial allow
/// the write.
/// `location` names the state in errors.
pub(crate) fn judge(
    mut candidate: State,
    stored: Option<Stored<'_>>,
    same_content: impl FnOnce(&State) -> Option<bool>,
    rules: Rules,
    location: &dyn Fn() -> String,
) -> Result<Verdict> {
    if candidate.lineage.is_empty() && rules == Rules::AsSent {
        // Filling it in would store other bytes than were sent.
        return Err(Error::MissingLineage {
            location: location(),
        });
    }
    let Some(stored) = stored else {
        // Nothing is persisted: a brand-new state starts at serial 1 with a fresh lineage,
        // and a state brought from elsewhere (a push, a restore, a client's POST) keeps its
        // identity, so it is stored byte for byte.
        if candidate.lineage.is_empty() {
            candidate.lineage = uuid::Uuid::new_v4().to_string();
        }
        if rules != Rules::AsSent {
            candidate.serial = candidate.serial.max(1);
        }
        return Ok(Verdict::Write(candidate));
    };
    if candidate.lineage.is_empty() {
        if rules == Rules::Push {
            // Terraform's import check compares the lineage as sent: a state without one is
            // not the stored state's descendant.
            return Err(Error::LineageMismatch {
                location: location(),
                local: candidate.lineage,
                remote: stored.lineage.to_owned(),
            });
        }
        candidate.lineage = stored.lineage.to_owned();
    }
    let related = candidate.lineage == stored.lineage;
    if rules == Rules::Forced && (!related || candidate.serial < stored.serial) {
        candidate.serial = serial_after(candidate.serial.max(stored.serial), location)?;
        return Ok(Verdict::Write(candidate));
    }
    if !related {
        return Err(Error::LineageMismatch {
            location: location(),
            local: candidate.lineage,
            remote: stored.lineage.to_owned(),
        });
    }
    if candidate.serial < stored.serial {
        return Err(Error::SerialRegression {
            location: location(),
            local: candidate.serial,
            remote: stored.serial,
        });
    }
    let Some(same) = same_content(&candidate) else {
        return Ok(Verdict::Undecided(candidate));
    };
    let numbered_by_writer = matches!(rules, Rules::Push | Rules::AsSent);
    match (same, candidate.serial == stored.serial) {
        (true, true) => Ok(Verdict::Unchanged(candidate)),
        // The same content under a newer serial: stored as numbered.
        (true, false) => Ok(Verdict::Write(candidate)),
        (false, true) if numbered_by_writer => Err(Error::SerialCollision {
            location: location(),
            serial: candidate.serial,
        }),
        (false, false) if rules == Rules::AsSent => Ok(Verdict::Write(candidate)),
        // A change: numbered after the candidate's serial, as Terraform's persist does.
        (false, _) => {
            candidate.serial = serial_after(candidate.serial, location)?;
            Ok(Verdict::Write(candidate))
        }
    }
}

/// [`judge`] against a stored state read whole (`None`: nothing stored), comparing contents
/// directly: the verdict is never [`Verdict::Undecided`].
pub(crate) fn judge_whole(
    candidate: State,
    stored: Option<&State>,
    rules: Rules,
    location: &dyn Fn() -> String,
) -> Result<Verdict> {
    judge(
        candidate,
        stored.map(Stored::of),
        |candidate| Some(stored.is_some_and(|stored| candidate.same_content(stored))),
        rules,
        location,
    )
}

/// The serial after `serial`; the largest serial has none, and wrapping to 0 would let any
/// older state replace it.
pub(crate) fn serial_after(serial: u64, location: &dyn Fn() -> String) -> Result<u64> {
    serial.checked_add(1).ok_or_else(|| Error::SerialExhausted {
        location: location(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{COMPATIBLE_TERRAFORM_VERSION, OutputValue};

    const LINEAGE: &str = "5f5c6b58-2a3c-4a56-9f57-2c7c4cf5f0b1";

    fn state(serial: u64, content: i64) -> State {
        let mut state = State::new(COMPATIBLE_TERRAFORM_VERSION);
        state.lineage = LINEAGE.into();
        state.serial = serial;
        state
            .outputs
            .insert("content".into(), OutputValue::new(&content));
        state
    }

    fn verdict(candidate: State, stored: &State, rules: Rules) -> Result<Option<u64>> {
        let location = || "test".to_owned();
        judge(
            candidate,
            Some(Stored::of(stored)),
            |c| Some(c.same_content(stored)),
            rules,
            &location,
        )
        .map(|verdict| match verdict {
            Verdict::Unchanged(_) => None,
            Verdict::Write(state) => Some(state.serial),
            Verdict::Undecided(_) => panic!("always decided here"),
        })
    }

    /// Unchanged (`Ok(None)`), written with this serial, or refused with this error kind.
    type Expected = std::result::Result<Option<u64>, &'static str>;

    /// The whole table, one row per (rules, case): what each write path does with each
    /// candidate over a stored snapshot at serial 5.
    #[test]
    fn every_write_path_numbers_and_refuses_as_terraform_does() {
        use Rules::*;
        let stored = state(5, 0);
        let other_lineage = || {
            let mut s = state(9, 1);
            s.lineage = "another".into();
            s
        };
        // (rules, candidate, expected: Ok(None) unchanged, Ok(Some(serial)) written, Err(kind))
        let collision = "SerialCollision";
        let cases: Vec<(Rules, State, Expected)> = vec![
            (Persist, state(5, 0), Ok(None)),
            (Push, state(5, 0), Ok(None)),
            (AsSent, state(5, 0), Ok(None)),
            (Forced, state(5, 0), Ok(None)),
            (Persist, state(6, 0), Ok(Some(6))),
            (AsSent, state(6, 0), Ok(Some(6))),
            (Persist, state(5, 1), Ok(Some(6))),
            (Forced, state(5, 1), Ok(Some(6))),
            (Push, state(5, 1), Err(collision)),
            (AsSent, state(5, 1), Err(collision)),
            (Persist, state(7, 1), Ok(Some(8))),
            (Push, state(7, 1), Ok(Some(8))),
            (AsSent, state(7, 1), Ok(Some(7))),
            (Persist, state(4, 1), Err("SerialRegression")),
            (AsSent, state(4, 0), Err("SerialRegression")),
            (Forced, state(4, 1), Ok(Some(6))),
            (Persist, other_lineage(), Err("LineageMismatch")),
            (AsSent, other_lineage(), Err("LineageMismatch")),
            (Forced, other_lineage(), Ok(Some(10))),
        ];
        for (rules, candidate, expected) in cases {
            let described = format!("{rules:?} serial {}", candidate.serial);
            let got = verdict(candidate, &stored, rules);
            match (&got, expected) {
                (Ok(got), Ok(expected)) => assert_eq!(*got, expected, "{described}"),
                (Err(error), Err(kind)) => {
                    assert!(
                        format!("{error:?}").starts_with(kind),
                        "{described}: {error:?}"
                    )
                }
                _ => panic!("{described}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn content_is_compared_only_once_lineage_and_serial_allow_the_write() {
        let stored = state(5, 0);
        let location = || "test".to_owned();
        let refused = judge(
            state(4, 0),
            Some(Stored::of(&stored)),
            |_| panic!("compared"),
            Rules::Persist,
            &location,
        );
        assert!(matches!(refused, Err(Error::SerialRegression { .. })));
    }

    #[test]
    fn a_state_sent_without_a_lineage_is_refused_rather_than_altered() {
        let mut sent = state(1, 0);
        sent.lineage.clear();
        let location = || "test".to_owned();
        for stored in [None, Some(state(1, 0))] {
            let verdict = judge(
                sent.clone(),
                stored.as_ref().map(Stored::of),
                |_| Some(false),
                Rules::AsSent,
                &location,
            );
            assert!(matches!(verdict, Err(Error::MissingLineage { .. })));
        }
        // A push over a stored state compares the lineage as sent.
        let pushed = judge(
            sent.clone(),
            Some(Stored::of(&state(1, 0))),
            |_| Some(false),
            Rules::Push,
            &location,
        );
        assert!(matches!(pushed, Err(Error::LineageMismatch { .. })));
        // The other paths fill it in.
        let Ok(Verdict::Write(filled)) =
            judge(sent, None, |_| Some(false), Rules::Persist, &location)
        else {
            panic!("written")
        };
        assert!(!filled.lineage.is_empty());
    }

    #[test]
    fn the_largest_serial_has_no_successor() {
        let stored = state(u64::MAX, 0);
        let refused = verdict(state(u64::MAX, 1), &stored, Rules::Persist);
        assert!(matches!(refused, Err(Error::SerialExhausted { .. })));
    }
}
